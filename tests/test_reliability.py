"""Reliability: clear errors for bad input, finite results for degenerate input,
bit-identical reruns, resumable zoo runs, and retries on out-of-memory."""
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import te_gpu
import te_gpu.reference as ref

from helpers import class_features, width_zoo

PER_MODEL = ("logme", "sfda", "lda", "gbc")
APIS = {"engine": te_gpu, "reference": ref}


def base(seed=0):
    x, y = class_features(seed, n=60, d=8, c=3, spread=0.5)
    return 3 * x, y


BAD = {
    "nan in features": (lambda x, y: (np.where(x > 2, np.nan, x), y), ValueError, "non-finite"),
    "inf in features": (lambda x, y: (np.where(x > 2, np.inf, x), y), ValueError, "non-finite"),
    "rows differ": (lambda x, y: (x, y[:-1]), ValueError, "entries"),
    "1-D features": (lambda x, y: (x[:, 0], y), ValueError, "2-D"),
    "3-D features": (lambda x, y: (x[None], y), ValueError, "2-D"),
    "empty features": (lambda x, y: (x[:, :0], y), ValueError, "empty"),
    "non-integer labels": (lambda x, y: (x, y + 0.5), ValueError, "integer"),
    "nan labels": (lambda x, y: (x, np.where(y == 0, np.nan, y)), ValueError, "non-finite"),
    "one class": (lambda x, y: (x, np.zeros_like(y)), ValueError, "at least 2"),
    "complex features": (lambda x, y: (x + 0j, y), TypeError, "complex"),
    "object features": (lambda x, y: (x.astype(object), y), TypeError, "object"),
    "string labels": (lambda x, y: (x, y.astype(str)), TypeError, "non-numeric"),
    "huge values": (lambda x, y: (x * 1e60, y), ValueError, "overflow"),
}


@pytest.mark.parametrize("api", list(APIS))
@pytest.mark.parametrize("metric", PER_MODEL + ("nleep",))
@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_clear_error(api, metric, case):
    make, exc, match = BAD[case]
    x, y = make(*base())
    with pytest.raises(exc, match=match):
        APIS[api].score(x, y, metric=metric)


@pytest.mark.parametrize("api", list(APIS))
def test_bad_names_and_zoos(api):
    lib = APIS[api]
    x, y = base()
    with pytest.raises(ValueError, match="unknown metric"):
        lib.score(x, y, metric="leap")
    with pytest.raises(ValueError, match="unknown SA variant"):
        lib.score(x, y, metric="lda", sa="spread")
    with pytest.raises(ValueError, match="unknown SA option"):
        lib.score(x, y, metric="lda", sa={"alpah": 0.1})
    with pytest.raises(ValueError, match="zoo-level"):
        lib.score(x, y, metric="ncti")
    with pytest.raises(ValueError):
        lib.ncti({}, y)
    with pytest.raises(ValueError, match="at least 2 models"):
        lib.ncti({"a": x}, y)
    with pytest.raises(ValueError, match="equal across the zoo"):
        lib.ncti({"a": x, "b": x.copy()}, y)
    with pytest.raises(ValueError, match="more samples"):
        lib.ncti({"a": x[:3], "b": x[3:6]}, np.arange(3))
    with pytest.raises(ValueError, match="at least 2 samples per class"):
        lib.gbc(x[:4], [0, 0, 1, 2])


def test_zoo_level_errors():
    x, y = base()
    with pytest.raises(ValueError, match="disagree on the number of samples"):
        te_gpu.score_zoo({"a": x, "b": x[:-1]}, y, progress=False)
    with pytest.raises(ValueError, match="empty"):
        te_gpu.score_zoo({}, y, progress=False)
    with pytest.raises(ValueError, match="unknown metric"):
        te_gpu.score_zoo({"a": x, "b": 2 * x}, y, metrics=("logme", "no-such-metric"), progress=False)
    with pytest.raises(FileNotFoundError, match="no file"):
        te_gpu.score_zoo({"a": "/nonexistent/a.npy", "b": x}, y, progress=False)
    with pytest.raises(ValueError, match="model 'b'"):
        te_gpu.score_zoo({"a": x, "b": np.where(x > 2, np.nan, x)}, y, progress=False)
    with pytest.raises(ValueError, match="device"):
        te_gpu.score_zoo({"a": x, "b": 2 * x}, y, device="nope", progress=False)


def test_pickled_and_truncated_files_refused(tmp_path):
    x, y = base()
    pickled = tmp_path / "p.npy"
    np.save(pickled, np.array([x, "oops"], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        te_gpu.score_zoo({"a": str(pickled), "b": x}, y, progress=False)
    good = tmp_path / "g.npy"
    np.save(good, x)
    truncated = tmp_path / "t.npy"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError):
        te_gpu.score_zoo({"a": str(truncated), "b": x}, y, progress=False)


DEGENERATE = {
    "N < D": lambda x, y: (np.random.default_rng(1).normal(size=(30, 50)) * 3, np.arange(30) % 3),
    "duplicated samples": lambda x, y: (np.repeat(x[::3], 3, 0), np.repeat(y[::3], 3)),
    "constant columns": lambda x, y: (np.c_[x, np.ones((len(y), 3))], y),
    "labels 3, 7, 100": lambda x, y: (x, np.array([3, 7, 100])[y]),
    "negative labels": lambda x, y: (x, np.array([-4, -1, 0])[y]),
    "scale 1e45": lambda x, y: (x * 1e45, y),
    "scale 1e-60": lambda x, y: (x * 1e-60, y),
    "float16": lambda x, y: (x.astype(np.float16), y),
    "integers": lambda x, y: ((x * 10).astype(np.int64), y),
    "read-only": lambda x, y: (_readonly(x), _readonly(y)),
    "non-contiguous view": lambda x, y: (np.asfortranarray(np.c_[x, x])[:, ::2], y),
    "tensor requiring grad": lambda x, y: (torch.tensor(x, requires_grad=True), torch.as_tensor(y)),
    "bfloat16 tensor": lambda x, y: (torch.tensor(x).to(torch.bfloat16), torch.as_tensor(y)),
}


def _readonly(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


@pytest.mark.parametrize("metric", PER_MODEL)
@pytest.mark.parametrize("case", list(DEGENERATE))
def test_degenerate_input_is_finite_and_engine_equals_reference(metric, case):
    x, y = DEGENERATE[case](*base())
    if case == "scale 1e-60" and metric == "logme":
        with pytest.raises(ValueError, match="1e-10"):  # documented: below LogME's rank threshold
            te_gpu.logme(x, y)
        return
    before = np.array(x.detach().float().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    got = te_gpu.score(x, y, metric=metric)
    assert np.isfinite(got)
    after = np.array(x.detach().float().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    assert np.array_equal(np.asarray(before, dtype=np.float64), after)  # never modified
    xr = x.detach().float().numpy() if isinstance(x, torch.Tensor) else x
    yr = y.numpy() if isinstance(y, torch.Tensor) else y
    want = ref.score(xr, yr, metric=metric)
    assert got == pytest.approx(want, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("metric", PER_MODEL + ("nleep",))
def test_reruns_are_bit_identical(metric):
    x, y = class_features(2, n=80, d=10, c=3, spread=0.4)
    a = te_gpu.score(3 * x, y, metric=metric, sa="released")
    b = te_gpu.score(3 * x, y, metric=metric, sa="released")
    assert a == b


def _zoo(seed=3, n=90, widths=(6, 10, 6, 14, 10, 8)):
    return width_zoo(seed, n, widths, spread=0.5)


def test_zoo_reruns_bit_identical_and_batch_size_changes_last_bits_only():
    zoo, y = _zoo()
    a = te_gpu.score_zoo(zoo, y, sa=[None, "released"], progress=False)
    b = te_gpu.score_zoo(zoo, y, sa=[None, "released"], progress=False)
    assert a.scores == b.scores and a.parts == b.parts and a.sa == b.sa
    c = te_gpu.score_zoo(zoo, y, sa=[None, "released"], batch_size=1, progress=False)
    for label in a.labels:
        for name in zoo:
            assert c[label][name] == pytest.approx(a[label][name], rel=1e-12, abs=1e-14)


def _out_of_memory_above_one(monkeypatch) -> list:
    """The engine runs out of memory (simulated) on any batch of more than one model or
    redraw; returns the batch sizes it was given, in order."""
    from te_gpu.engine import core

    real = core.score_settings
    seen = []

    def flaky(x, *args, **kw):
        seen.append(x.shape[0])
        if x.shape[0] > 1:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return real(x, *args, **kw)

    monkeypatch.setattr(core, "score_settings", flaky)
    return seen


def test_simulated_out_of_memory_retries_with_smaller_batches(monkeypatch):
    zoo, y = _zoo(widths=(6,) * 6)   # one width: batches of 1, 2 and 3 on a CPU (they ramp up)
    want = te_gpu.score_zoo(zoo, y, batch_size=1, progress=False)
    seen = _out_of_memory_above_one(monkeypatch)
    got = te_gpu.score_zoo(zoo, y, batch_size=4, progress=False)
    assert got.scores == want.scores  # every model ended up scored alone, as in `want`
    assert max(seen) > 1 and seen.count(1) >= len(zoo)


def test_out_of_memory_with_one_model_is_a_clear_error(monkeypatch):
    from te_gpu.engine import core

    def always(x, *a, **k):
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(core, "score_settings", always)
    zoo, y = _zoo()
    with pytest.raises(MemoryError, match="does not fit"):
        te_gpu.score_zoo(zoo, y, batch_size=2, progress=False)


SCRIPT = textwrap.dedent("""
    import sys, time, numpy as np, te_gpu
    from te_gpu.engine import core
    directory, ckpt, out, slow = sys.argv[1:5]
    zoo, y = te_gpu.load_zoo(directory, "toy")
    if slow == "1":  # give the parent time to kill us between batches
        real = core.score_settings
        def slowed(*a, **k):
            time.sleep(0.4)
            return real(*a, **k)
        core.score_settings = slowed
    res = te_gpu.score_zoo(zoo, y, sa=[None, "released"], batch_size=2, checkpoint=ckpt,
                           progress=False)
    res.to_json(out)
""")


def _n_scored(ckpt, label="logme"):
    """Models whose score ``label`` (raw features) the checkpoint holds."""
    models = json.loads(ckpt.read_text())["models"]
    return sum(any(k.startswith(label + "@") for k in e["scores"]) for e in models.values())


def test_killed_run_resumes_to_the_same_json(tmp_path):
    zoo, y = _zoo(seed=4, widths=(6, 8, 6, 8, 6, 8, 6, 8))
    te_gpu.save_zoo(tmp_path, "toy", zoo, y)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    full = tmp_path / "full.json"
    subprocess.run([sys.executable, str(script), str(tmp_path), str(tmp_path / "ck_full.json"),
                    str(full), "0"], check=True, env=env, timeout=300)

    ckpt = tmp_path / "ck.json"
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(ckpt),
                             str(tmp_path / "never.json"), "1"], env=env)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if ckpt.exists() and _n_scored(ckpt) >= 2:
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    partial = _n_scored(ckpt)
    assert 2 <= partial < len(zoo), "the run must be killed part-way"
    assert not (tmp_path / "never.json").exists()
    assert (tmp_path / "ck.json.lock").exists()  # the killed run's lock: stale, taken over below

    resumed = tmp_path / "resumed.json"
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(ckpt), str(resumed), "0"],
                          check=True, env=env, timeout=300, capture_output=True, text=True)
    assert "no longer running" in done.stderr and not (tmp_path / "ck.json.lock").exists()
    a, b = json.loads(full.read_text()), json.loads(resumed.read_text())
    for key in ("scores", "parts", "sa", "models"):
        assert a[key] == b[key]


def test_bootstrap_out_of_memory_retries_with_smaller_batches_and_says_when_one_redraw_cannot_fit(
        monkeypatch):
    """The bootstrap's gathered path shares score_zoo's executor: a batch of (model, redraw)
    pairs that runs out of memory is halved down to one pair, with the same redraws."""
    from te_gpu.bootstrap import bootstrap_zoo
    from te_gpu.engine import core

    zoo, y = _zoo(widths=(6,) * 3)
    kw = dict(metrics=["logme", "sfda"], replicates=4, seed=3, progress=False)
    want = bootstrap_zoo(zoo, y, batch_size=1, **kw)
    real = core.score_settings
    seen = _out_of_memory_above_one(monkeypatch)
    got = bootstrap_zoo(zoo, y, batch_size=8, **kw)
    assert max(seen) == 8 and seen.count(1) >= len(zoo) * 4     # (the point pass adds its own)
    for label in want.samples:
        for name in zoo:
            np.testing.assert_array_equal(got.samples[label][name], want.samples[label][name])

    point_done = []                    # the point estimates pass; every redraw fails
    real_score_zoo = te_gpu.zoo.score_zoo

    def point_then_flag(*a, **k):
        out = real_score_zoo(*a, **k)
        point_done.append(True)
        return out

    def after_the_point(x, *a, **k):
        if point_done:
            raise torch.OutOfMemoryError("simulated")
        return real(x, *a, **k)

    monkeypatch.setattr(te_gpu.zoo, "score_zoo", point_then_flag)
    monkeypatch.setattr(core, "score_settings", after_the_point)
    with pytest.raises(MemoryError, match="one redraw of a model of width 6 .* does not fit"):
        bootstrap_zoo(zoo, y, batch_size=2, **kw)
