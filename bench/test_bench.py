"""pytest-benchmark cases: te_gpu's zoo engine, the reference and the Gram + eigh floor.

Run on demand, not by the test suite (``pytest.ini`` collects ``tests/`` only)::

    python -m pytest bench/ --benchmark-only

Sizes are small so the whole file takes a few minutes on a 2-core CPU. Each
benchmark checks that its result is complete, never how long it took; the
timing comparisons with targets live in ``bench/run.py`` and ``bench/RESULTS.md``.
CUDA cases skip when no GPU is present.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")
torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench_run  # noqa: E402
import zoo_synth  # noqa: E402

import te_gpu  # noqa: E402

WIDTHS = (32, 64, 64, 48, 96)      # zoo (a)'s mix of widths, shrunk
N, C, SEED = 1000, 10, 0
METRICS = te_gpu.catalogue.DEFAULT_METRICS
SA = [None, "released"]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


@pytest.fixture(scope="module")
def small_zoo():
    mapping, labels = zoo_synth.make_zoo(WIDTHS, N, C, seed=SEED)
    return bench_run.Zoo("a", list(mapping), WIDTHS, N, C, labels, mapping, "memory")


@pytest.fixture(scope="module")
def disk_zoo(tmp_path_factory):
    directory = tmp_path_factory.mktemp("zoo_b")
    info = zoo_synth.write_zoo_to_disk(directory, 8, 500, 64, C, seed=SEED)
    return bench_run.Zoo("b", info["models"], [64] * 8, 500, C, info["labels"], None, "disk",
                         directory=directory)


def _score(zoo, device):
    mapping, labels = zoo.open()
    return te_gpu.score_zoo(mapping, labels, metrics=METRICS, sa=SA, device=device,
                            precision="exact", progress=False)


def _check(res, zoo):
    expected = {te_gpu.ZooResult.label(m, s) for m in METRICS for s in SA}
    assert set(res.scores) == expected
    assert all(len(v) == len(zoo.names) for v in res.scores.values())


def test_score_zoo_cpu(benchmark, small_zoo):
    res = benchmark.pedantic(_score, args=(small_zoo, "cpu"), rounds=3, iterations=1)
    _check(res, small_zoo)


def test_reference_cpu(benchmark, small_zoo):
    out = benchmark.pedantic(bench_run.run_reference, args=(small_zoo, METRICS, SA,
                                                            small_zoo.names),
                             rounds=1, iterations=1)
    assert len(out["per_model"]) == len(small_zoo.names)
    assert not out["extrapolated"]


def test_floor_cpu(benchmark, small_zoo):
    out = benchmark.pedantic(bench_run.run_floor, args=(small_zoo, torch.device("cpu"), "exact",
                                                        None),
                             rounds=5, iterations=1)
    assert np.isfinite(out["checksum"]) and out["compute"] > 0


def test_score_zoo_cpu_from_disk(benchmark, disk_zoo):
    res = benchmark.pedantic(_score, args=(disk_zoo, "cpu"), rounds=3, iterations=1)
    _check(res, disk_zoo)


def test_read_bandwidth(benchmark, disk_zoo):
    out = benchmark.pedantic(bench_run.read_bandwidth, args=(disk_zoo.paths, 500, 64),
                             rounds=5, iterations=1)
    assert out["bytes"] == 8 * 500 * 64 * 4


@cuda
def test_score_zoo_cuda(benchmark, small_zoo):
    _score(small_zoo, "cuda")                 # warm-up: CUDA context, cuBLAS/cuSOLVER handles
    res = benchmark.pedantic(_score, args=(small_zoo, "cuda"), rounds=5, iterations=1)
    _check(res, small_zoo)


@cuda
def test_floor_cuda(benchmark, small_zoo):
    dev = torch.device("cuda")
    bench_run.run_floor(small_zoo, dev, "exact", None)
    out = benchmark.pedantic(bench_run.run_floor, args=(small_zoo, dev, "exact", None),
                             rounds=5, iterations=1)
    assert np.isfinite(out["checksum"])


def test_zoo_synth_is_deterministic_and_chunk_invariant(tmp_path):
    """Not a benchmark (skipped by --benchmark-only): the zoos are what they claim."""
    a, ya = zoo_synth.make_zoo((16, 40), 300, C, seed=3)
    b, yb = zoo_synth.make_zoo((16, 40), 300, C, seed=3)
    assert np.array_equal(ya, yb) and all(np.array_equal(a[k], b[k]) for k in a)
    small_chunks = zoo_synth.make_model(1, 40, ya, C, 3, chunk_bytes=4 * 40 * 7)
    assert np.array_equal(small_chunks, a["m0001_d40"])
    info = zoo_synth.write_zoo_to_disk(tmp_path, 3, 300, 40, C, seed=3, chunk_bytes=4 * 40 * 11)
    loaded, labels = te_gpu.load_zoo(tmp_path, zoo_synth.DATASET)
    mem, _ = zoo_synth.make_zoo((40,) * 3, 300, C, seed=3)
    assert np.array_equal(labels, ya)
    assert all(np.array_equal(loaded[m], mem[m]) for m in info["models"])
    assert zoo_synth.write_zoo_to_disk(tmp_path, 3, 300, 40, C, seed=3)["written"] is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the run without a GPU")
def test_run_without_the_requested_device_says_so(tmp_path):
    """Not a benchmark: asking for CUDA on a CPU machine is a message and exit 0, never an error."""
    import subprocess

    out = tmp_path / "x.json"
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve().parent / "run.py"), "--zoo", "b",
                           "--models", "2", "--n", "120", "--width", "16", "--classes", "3",
                           "--zoo-dir", str(tmp_path / "zoo"), "--devices", "cuda", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "nothing was measured" in proc.stdout and "GPU numbers pending" in proc.stdout
    assert out.exists()
