"""te-gpu extract across processes: torch.distributed with gloo on the CPU.

A zoo of four forward passes shared out between two torchrun ranks, one model whose
images two ranks split, and a rank killed mid-run whose job three ranks resume; every
feature is held against one process's, bit for bit (CPU float32, the same batches).
Small random-init timm models at 32 px on 48 digits images, one thread per rank; the
processes are started, bounded in time and stopped as in test_distributed.py.
"""
import json
import os
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from te_gpu.cli import main as te_gpu_main
from te_gpu.pipeline import extract
from test_distributed import RUN_S, _env, _free_port, _Processes, _torchrun

timm = pytest.importorskip("timm")

# four passes (one of two depths); batches of 8 so that two and three ranks split 48 images
# into whole batches
ZOO = ["--model", "resnet10t,size=32,stages=2,final,name=a", "--model", "resnet10t,size=32,seed=1,name=b",
       "--model", "resnet10t,size=16,seed=2,name=c", "--model", "resnet10t,size=32,seed=3,name=d"]
DATA = ["--data", "digits", "--n-images", "48", "--batch-size", "8"]
# what differs between runs of the same extraction: how long it took, and on how many ranks
TIMES = {"seconds", "cpu_seconds", "forward_seconds", "images_per_s", "ranks"}

# One rank of a test job: te-gpu's command, recording in $TEST_RECORD/rank<k>.json the
# passes this rank ran (models, images). TEST_SLOW_RANK sleeps after each save of that
# rank's list of finished models.
DRIVER = textwrap.dedent("""
    import atexit, json, os, sys, time
    import torch
    torch.set_num_threads(1)
    import te_gpu.pipeline.extract as extract
    from te_gpu.cli import main

    rank = int(os.environ.get("RANK", 0))
    passes = []
    real_pass, real_save = extract.run_pass, extract._Book.save

    def recorded(specs, data, **kw):
        passes.append(dict(models=[s.name for s in specs], n=len(data)))
        return real_pass(specs, data, **kw)

    def slow_save(self):
        real_save(self)
        time.sleep(60)

    extract.run_pass = recorded
    if os.environ.get("TEST_SLOW_RANK") == str(rank):
        extract._Book.save = slow_save

    def dump():
        with open(os.path.join(os.environ["TEST_RECORD"], f"rank{rank}.json"), "w") as fh:
            json.dump(passes, fh)
    atexit.register(dump)
    sys.exit(main(sys.argv[1:]))
""")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The driver script and one process's extraction of the zoo (one thread, as every rank)."""
    root = tmp_path_factory.mktemp("extract-dist")
    (root / "driver.py").write_text(DRIVER)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert te_gpu_main(["extract", *DATA, *ZOO, "--out", str(root / "one"), "-q"]) == 0
    finally:
        torch.set_num_threads(threads)
    return root


def _extract(job, out, *models) -> list:
    return [str(job / "driver.py"), "extract", *DATA, *(models or ZOO), "--out", str(out)]


def _run(job, ranks: int, args: list, record: str) -> tuple:
    with _Processes() as ps:
        proc = ps.start(_torchrun(f"--nproc-per-node={ranks}", "--master-addr=127.0.0.1",
                                  f"--master-port={_free_port()}", *args),
                        _env(ps.tag, job / record), job)
        return ps.finish(proc)


def _passes(job, record: str) -> list:
    """Each rank's recorded passes: [(models, images), ...] per rank."""
    return [[(tuple(p["models"]), p["n"]) for p in json.loads(f.read_text())]
            for f in sorted((job / record).glob("rank*.json"))]


def _listed(out: Path, manifest=extract.MANIFEST) -> dict:
    return json.loads((out / manifest).read_text())["datasets"]["digits"]["models"]


def _without_times(entry: dict) -> dict:
    shared = {k: v for k, v in entry["shared_pass"].items() if k not in TIMES}
    return dict({k: v for k, v in entry.items() if k not in TIMES}, shared_pass=shared)


def _same_as_one_process(job, out: Path, models=None, resumed=False) -> None:
    """The models' files equal one process's bit for bit, and so do their manifest entries
    (but for times); nothing else is in ``out``: no shard, slice or temporary file."""
    one = _listed(job / "one")
    models = list(one) if models is None else models
    got = _listed(out)
    # listed in the order one process lists them; after a resume, those of the first run first
    assert (sorted(got) == sorted(models)) if resumed else (list(got) == models)
    expected = {extract.MANIFEST}
    for model in models:
        assert _without_times(got[model]) == _without_times(one[model]), model
        for path in (job / "one").glob(f"{model}_digits_*.npy"):
            expected.add(path.name)
            assert np.array_equal(np.load(path), np.load(out / path.name)), path.name
    assert {p.name for p in out.iterdir()} == expected


# --------------------------------------------------------------------------
# in one process: slices, costs, taking in what a killed job left
# --------------------------------------------------------------------------

def test_ranks_split_images_in_whole_batches():
    assert extract._slices(48, 8, 2) == [(0, 24), (24, 48)]
    assert extract._slices(50, 8, 3) == [(0, 24), (24, 40), (40, 50)]   # 7 batches: 3, 2, 2
    assert extract._slices(5, 64, 2) == [(0, 5), (5, 5)]   # one batch: rank 1 has none


def test_pass_costs_count_flops_on_the_meta_device():
    from te_gpu.pipeline.models import parse_specs

    def cost(text):
        return extract.pass_costs([parse_specs(text)])[0]

    big, small = cost("resnet10t,size=128"), cost("resnet10t,size=64")
    assert big == pytest.approx(4 * small, rel=0.05)   # convolutions: FLOPs grow with the pixels
    assert cost("resnet10t,size=128,stage=1") < big * 0.6   # stops early
    # a ViT refusing another input size: 2 x parameters x pixels / 256
    with torch.device("meta"):
        params = sum(p.numel() for p in timm.create_model("vit_tiny_patch16_224").parameters())
    assert cost("vit_tiny_patch16_224,size=64") == pytest.approx(2 * params * 64 * 64 / 256)
    # an unknown architecture (its owner will say so): the median of the others
    assert extract.pass_costs([parse_specs("resnet10t,size=128"), parse_specs("no_such_net_x"),
                               parse_specs("resnet10t,size=64")])[1] == pytest.approx((big + small) / 2)


def test_one_process_takes_in_what_a_killed_job_left(tmp_path, monkeypatch):
    """Rank 1's shard of a killed job is taken into the manifest, with no pass run again;
    its slices and temporaries are removed."""
    from te_gpu.pipeline.datasets import load_data
    from te_gpu.pipeline.models import parse_specs

    data = load_data("digits", split="train", n=16)
    specs = parse_specs("resnet10t,size=16,name=a") + parse_specs("resnet10t,size=16,seed=1,name=b")
    quiet = dict(progress=False, log=lambda *a: None)
    extract.extract_zoo(specs, data, tmp_path, **quiet)
    manifest = json.loads((tmp_path / extract.MANIFEST).read_text())
    whole = json.loads(json.dumps(manifest))
    models = manifest["datasets"]["digits"]["models"]
    shard = dict(manifest, datasets={"digits": dict(manifest["datasets"]["digits"],
                                                    models={"b": models.pop("b")})})
    (tmp_path / extract.MANIFEST).write_text(json.dumps(manifest))
    (tmp_path / f"{extract.MANIFEST}.rank1").write_text(json.dumps(shard))
    leftovers = [".te_gpu_part.0.rank1.npz", f".b_digits_feature.npy.{'0' * 32}.tmp"]
    for name in leftovers:
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setattr(extract, "run_pass", lambda *a, **k: pytest.fail("a pass ran again"))
    assert extract.extract_zoo(specs, data, tmp_path, **quiet) == {"a": "cached", "b": "cached"}
    assert json.loads((tmp_path / extract.MANIFEST).read_text()) == whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") or "rank" in p.name]


# --------------------------------------------------------------------------
# jobs of several processes
# --------------------------------------------------------------------------

def test_two_ranks_share_the_passes_and_match_one_process(job):
    rc, log = _run(job, 2, _extract(job, job / "two"), "rec-two")
    assert rc == 0, log
    assert log.count("done:") == 1 and "sharing 4 forward passes across 2 ranks" in log
    ranks = _passes(job, "rec-two")
    assert len(ranks) == 2 and all(ranks)   # both worked
    assert sorted(p for r in ranks for p in r) == [(("a-stage2", "a"), 48), (("b",), 48),
                                                   (("c",), 48), (("d",), 48)]   # each pass once
    assert all(f"rank 1: {models[-1]} 512-d" in log for models, _ in ranks[1])   # rank 0 logs them
    _same_as_one_process(job, job / "two")
    assert _listed(job / "two")["a"]["params"] == sum(
        p.numel() for p in extract.build_model(extract.ModelSpec(arch="resnet10t", size=32))[0].parameters())


def test_one_model_splits_its_images_across_ranks(job):
    rc, log = _run(job, 2, _extract(job, job / "split", *ZOO[:2]), "rec-split")
    assert rc == 0, log
    assert _passes(job, "rec-split") == [[(("a-stage2", "a"), 24)]] * 2   # each rank half
    _same_as_one_process(job, job / "split", ["a-stage2", "a"])   # softmax included
    assert _listed(job / "split")["a"]["shared_pass"]["ranks"] == 2


def test_a_killed_rank_fails_the_job_by_name_and_one_process_resumes_it(job, monkeypatch):
    """Two ranks started by hand with torchrun's variables; rank 1 is killed once it has
    listed its first pass in its shard. Rank 0 names it; every file there is whole; one
    process then takes the shard in and extracts only the pass that is missing."""
    out = job / "killed"
    with _Processes() as ps:
        env = _env(ps.tag, job / "rec-killed", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(_free_port()), WORLD_SIZE="2", TEST_SLOW_RANK="1")
        ranks = [ps.start([sys.executable, *_extract(job, out)],
                          dict(env, RANK=str(r), LOCAL_RANK=str(r)), job) for r in range(2)]
        shard = out / f"{extract.MANIFEST}.rank1"
        deadline = time.time() + RUN_S
        while not shard.exists():
            assert ranks[1].poll() is None and time.time() < deadline
            time.sleep(0.05)
        ranks[1].kill()
        rc, log = ps.finish(ranks[0])
    assert rc == 2 and "rank 1 never reached it" in log, log
    done = {**_listed(out), **_listed(out, shard.name)}
    assert set(done) == {"a-stage2", "a", "b", "d"}   # c, rank 1's second pass, is missing
    files = {p.name for p in out.iterdir()} - {extract.MANIFEST, shard.name}
    assert files == {p.name for m in done for p in (job / "one").glob(f"{m}_digits_*.npy")}
    for name in files:   # nothing half-written: each file whole, and no temporary left
        assert np.array_equal(np.load(out / name), np.load(job / "one" / name)), name

    ran, real = [], extract.run_pass
    monkeypatch.setattr(extract, "run_pass", lambda specs, data, **kw: ran.append(
        ([s.name for s in specs], len(data))) or real(specs, data, **kw))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as the one-process extraction
    try:
        assert te_gpu_main(["extract", *DATA, *ZOO, "--out", str(out), "-q"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert ran == [(["c"], 48)]
    _same_as_one_process(job, out, resumed=True)
