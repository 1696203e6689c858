"""score_zoo's checkpoint: bound to each model's content, keyed per score, one run at a time.

Models get distinct widths so that a recorded batch (B, N, D) tells which model
was scored. Runs that start processes bound them in time and stop them.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch

import te_gpu
from te_gpu.locks import LockError, StaleLockWarning, exclusive_lock
from te_gpu.executor import memory_batch_size
from te_gpu.checkpoint import CheckpointError, CheckpointWarning

from helpers import width_zoo

WIDTHS = (6, 7, 8, 9, 10)
KW = dict(metrics=("logme", "sfda", "ncti"), sa=[None, "released"], progress=False)


def _zoo(seed=5, n=90, widths=WIDTHS):
    return width_zoo(seed, n, widths, spread=0.6, names=[f"m{d}" for d in widths], dtype=np.float32)


@pytest.fixture
def scored(monkeypatch):
    """Records each batch the engine scores: (models by width, metrics, SA settings)."""
    from te_gpu.engine import core

    real, calls = core.score_settings, []

    def record(x, labels, metrics, settings, **k):
        calls.append(([f"m{x.shape[2]}"] * x.shape[0], tuple(metrics),
                      tuple(None if s is None else s["variant"] for s in settings)))
        return real(x, labels, metrics, settings, **k)

    monkeypatch.setattr(core, "score_settings", record)
    return calls


def _models(calls):
    return sorted(m for names, _, _ in calls for m in names)


def _fresh(zoo, y, **kw):
    return te_gpu.score_zoo(zoo, y, **dict(KW, **kw))


def _same(a, b):
    assert a.scores == b.scores and a.parts == b.parts and a.sa == b.sa


# --------------------------------------------------------------------------
# content fingerprints
# --------------------------------------------------------------------------

def test_features_changed_in_memory_are_rescored_with_a_warning(tmp_path, scored):
    zoo, y = _zoo()
    ckpt = tmp_path / "ck.json"
    first = te_gpu.score_zoo(zoo, y, checkpoint=ckpt, **KW)
    changed = dict(zoo, m7=3 * zoo["m7"] + 1)   # same shape and dtype, other values
    scored.clear()
    with pytest.warns(CheckpointWarning, match="'m7'.*changed.*rescoring"):
        again = te_gpu.score_zoo(changed, y, checkpoint=ckpt, **KW)
    assert _models(scored) == ["m7"]
    _same(again, _fresh(changed, y))
    assert again.scores["logme"]["m7"] != first.scores["logme"]["m7"]
    assert again.scores["logme"]["m6"] == first.scores["logme"]["m6"]


def test_one_changed_value_is_enough(tmp_path, scored):
    zoo, y = _zoo()
    ckpt = tmp_path / "ck.json"
    te_gpu.score_zoo(zoo, y, checkpoint=ckpt, **KW)
    x = zoo["m9"].copy()
    x[17, 3] = np.nextafter(x[17, 3], np.float32(np.inf))   # one ulp of one value
    scored.clear()
    with pytest.warns(CheckpointWarning, match="'m9'"):
        te_gpu.score_zoo(dict(zoo, m9=x), y, checkpoint=ckpt, **KW)
    assert _models(scored) == ["m9"]


def test_tensor_changed_in_place_is_rescored(tmp_path, scored):
    zoo, y = _zoo()
    tensors = {m: torch.from_numpy(x.copy()) for m, x in zoo.items()}
    ckpt = tmp_path / "ck.json"
    te_gpu.score_zoo(tensors, y, checkpoint=ckpt, **KW)
    tensors["m10"].mul_(3).add_(1)
    scored.clear()
    with pytest.warns(CheckpointWarning, match="'m10'"):
        again = te_gpu.score_zoo(tensors, y, checkpoint=ckpt, **KW)
    assert _models(scored) == ["m10"]
    _same(again, _fresh(tensors, y))
    # the same values as numpy arrays of the same dtype: the same fingerprint, nothing rescored
    scored.clear()
    te_gpu.score_zoo({m: t.numpy() for m, t in tensors.items()}, y, checkpoint=ckpt, **KW)
    assert scored == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensor_changed_is_rescored(tmp_path, scored):
    zoo, y = _zoo()
    tensors = {m: torch.from_numpy(x.copy()).cuda() for m, x in zoo.items()}
    ckpt = tmp_path / "ck.json"
    te_gpu.score_zoo(tensors, y, checkpoint=ckpt, **KW)
    tensors["m6"].mul_(3).add_(1)
    scored.clear()
    with pytest.warns(CheckpointWarning, match="'m6'"):
        te_gpu.score_zoo(tensors, y, checkpoint=ckpt, **KW)
    assert _models(scored) == ["m6"]


def test_file_rewritten_with_its_mtime_restored_is_rescored(tmp_path, scored):
    zoo, y = _zoo()
    te_gpu.save_zoo(tmp_path / "zoo", "toy", zoo, y)
    paths = {m: tmp_path / "zoo" / f"{m}_toy_feature.npy" for m in zoo}
    ckpt = tmp_path / "ck.json"
    te_gpu.score_zoo(paths, y, checkpoint=ckpt, **KW)

    before = os.stat(paths["m8"])
    new = (3 * zoo["m8"] + 1).astype(np.float32)
    np.save(paths["m8"], new)                                   # same size, new values
    os.utime(paths["m8"], ns=(before.st_atime_ns, before.st_mtime_ns))   # as cp -p / rsync -t
    after = os.stat(paths["m8"])
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    scored.clear()
    with pytest.warns(CheckpointWarning, match="'m8'"):
        again = te_gpu.score_zoo(paths, y, checkpoint=ckpt, **KW)
    assert _models(scored) == ["m8"]
    _same(again, _fresh(dict(zoo, m8=new), y))
    # touching a file (new mtime, same bytes) rescores nothing
    os.utime(paths["m6"])
    scored.clear()
    te_gpu.score_zoo(paths, y, checkpoint=ckpt, **KW)
    assert scored == []


def test_models_added_and_removed_between_runs(tmp_path, scored):
    zoo, y = _zoo(widths=(6, 7, 8, 9, 10, 11))
    first = {m: zoo[m] for m in ("m6", "m7", "m8", "m9")}
    ckpt = tmp_path / "ck.json"
    te_gpu.score_zoo(first, y, checkpoint=ckpt, **KW)
    second = {m: zoo[m] for m in ("m6", "m7", "m8", "m10", "m11")}   # m9 out, m10 and m11 in
    scored.clear()
    res = te_gpu.score_zoo(second, y, checkpoint=ckpt, **KW)
    assert _models(scored) == ["m10", "m11"]
    # NCTI's min-max runs over this zoo: equal to a fresh run on it, not to the first run
    _same(res, _fresh(second, y))
    assert res.models == list(second) and set(res.scores["ncti"]) == set(second)
    # m9's entry stayed in the checkpoint: bringing it back scores nothing
    scored.clear()
    back = te_gpu.score_zoo(zoo, y, checkpoint=ckpt, **KW)
    assert scored == []
    _same(back, _fresh(zoo, y))


def test_other_labels_are_refused(tmp_path):
    zoo, y = _zoo()
    ckpt = tmp_path / "ck.json"
    te_gpu.score_zoo(zoo, y, checkpoint=ckpt, **KW)
    with pytest.raises(CheckpointError, match="other labels"):
        te_gpu.score_zoo(zoo, np.roll(y, 1), checkpoint=ckpt, **KW)
    ckpt.write_text(json.dumps({"fingerprint": {}, "scores": {}}))   # an earlier te_gpu's
    with pytest.raises(CheckpointError, match="earlier te_gpu"):
        te_gpu.score_zoo(zoo, y, checkpoint=ckpt, **KW)
    ckpt.write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        te_gpu.score_zoo(zoo, y, checkpoint=ckpt, **KW)
    te_gpu.score_zoo(zoo, y, checkpoint=ckpt.with_name("ok.json"), **KW)
    saved = json.loads(ckpt.with_name("ok.json").read_text())
    saved["models"]["m6"]["content"] = None
    ckpt.write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match="malformed"):
        te_gpu.score_zoo(zoo, y, checkpoint=ckpt, **KW)


# --------------------------------------------------------------------------
# scores keyed by (model, metric, SA setting, options): reuse what is there
# --------------------------------------------------------------------------

def test_subset_and_superset_of_metrics_and_settings(tmp_path, scored):
    zoo, y = _zoo()
    ckpt = tmp_path / "ck.json"
    kw = dict(progress=False, checkpoint=ckpt)
    te_gpu.score_zoo(zoo, y, metrics=("logme", "sfda"), sa=None, **kw)
    scored.clear()
    te_gpu.score_zoo(zoo, y, metrics=("logme", "sfda"), sa=[None, "released"], **kw)
    assert {(ms, ss) for _, ms, ss in scored} == {(("logme", "sfda"), ("released",))}
    scored.clear()
    more = te_gpu.score_zoo(zoo, y, metrics=("logme", "sfda", "ncti"), sa=[None, "released"], **kw)
    assert {(ms, ss) for _, ms, ss in scored} == {(("ncti",), (None, "released"))}
    assert _models(scored) == sorted(zoo)
    fresh = _fresh(zoo, y)
    for lbl in fresh.scores:   # equal to a fresh run (closed-gate SA models may differ in last bits)
        for m in zoo:
            assert more.scores[lbl][m] == pytest.approx(fresh.scores[lbl][m], rel=1e-12, abs=1e-12)
    assert more.sa == fresh.sa
    scored.clear()
    sub = te_gpu.score_zoo(zoo, y, metrics=("sfda",), sa=[None], **kw)
    assert scored == [] and sub.scores["sfda"] == more.scores["sfda"]


def test_changed_options_recompute_only_the_metrics_that_read_them(tmp_path, scored):
    zoo, y = _zoo()
    ckpt = tmp_path / "ck.json"
    kw = dict(metrics=("logme", "gbc", "sfda"), sa=None, progress=False)
    te_gpu.score_zoo(zoo, y, checkpoint=ckpt, **kw)
    scored.clear()
    diag = te_gpu.score_zoo(zoo, y, options={"gbc": {"gaussian": "diagonal"}}, checkpoint=ckpt, **kw)
    assert {ms for _, ms, _ in scored} == {("gbc",)}
    assert diag.scores["gbc"] == te_gpu.score_zoo(zoo, y, options={"gbc": {"gaussian": "diagonal"}}, **kw).scores["gbc"]
    scored.clear()
    te_gpu.score_zoo(zoo, y, metrics=("logme",), sa={"variant": "released", "alpha": 0.1},
                     progress=False, checkpoint=ckpt)
    assert {ss for _, _, ss in scored} == {("released",)}   # another SA setting is another key


def test_integer_and_float_sa_numbers_are_one_setting(tmp_path, scored):
    zoo, y = _zoo()
    ckpt = tmp_path / "ck.json"
    kw = dict(metrics=("logme",), progress=False, checkpoint=ckpt)
    te_gpu.score_zoo(zoo, y, sa={"variant": "described", "force": 1}, **kw)
    scored.clear()
    te_gpu.score_zoo(zoo, y, sa={"variant": "described", "force": 1.0}, **kw)
    assert scored == []


# --------------------------------------------------------------------------
# resume at the grain of a model; duration over all runs
# --------------------------------------------------------------------------

def test_cpu_batches_are_a_few_seconds_of_work_fixed_by_shape():
    from te_gpu.executor import CPU_BATCH_WORK, model_work

    cpu = torch.device("cpu")
    for n, d, c in [(2000, 768, 100), (10_000, 768, 100), (50_000, 2048, 100), (1000, 128, 10)]:
        size = memory_batch_size(cpu, n, d, c, torch.float64)
        assert size == 1 or size * model_work(n, d, c) <= CPU_BATCH_WORK
        assert size == memory_batch_size(cpu, n, d, c, torch.float64)
    assert memory_batch_size(cpu, 2000, 768, 100, torch.float64) == 8
    assert memory_batch_size(cpu, 50_000, 2048, 100, torch.float64) == 1
    assert memory_batch_size(cpu, 300, 40, 5, torch.float64) >= 64   # small models batch widely


def test_cpu_batches_ramp_up_from_one_model():
    from te_gpu.executor import cut

    names = [f"m{i}" for i in range(12)]
    assert [len(c) for c in cut(names, 4, ramp=True)] == [1, 2, 4, 4, 1]
    assert [len(c) for c in cut(names, 4, ramp=False)] == [4, 4, 4]
    assert sum(cut(names, 5, ramp=True), []) == names


def test_interrupted_after_the_first_model_keeps_it_and_sums_durations(tmp_path, monkeypatch):
    """The first batch is one model: an interruption after it leaves it in the checkpoint."""
    from te_gpu.engine import core

    rng = np.random.default_rng(1)
    y = np.arange(60) % 3
    zoo = {m: rng.normal(size=(60, 20)) + y[:, None] for m in ("a", "b", "c", "d")}
    ckpt = tmp_path / "ck.json"
    kw = dict(metrics=("logme", "lda"), sa=None, progress=False, checkpoint=ckpt)
    real, calls = core.score_settings, []

    def interrupted(x, *a, **k):
        calls.append(x.shape[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(x, *a, **k)

    monkeypatch.setattr(core, "score_settings", interrupted)
    with pytest.raises(KeyboardInterrupt):
        te_gpu.score_zoo(zoo, y, **kw)
    saved = json.loads(ckpt.read_text())
    assert calls == [1, 2] and list(saved["models"]) == ["a"]
    assert not (tmp_path / "ck.json.lock").exists()   # released on the way out
    calls.clear()

    def counted(x, *a, **k):
        calls.append(x.shape[0])
        return real(x, *a, **k)

    monkeypatch.setattr(core, "score_settings", counted)
    res = te_gpu.score_zoo(zoo, y, **kw)
    assert calls == [2, 1]                             # b, c then d: cut where they were
    assert res.timings["total"] == pytest.approx(saved["elapsed"] + res.timings["run"])
    assert res.timings["total"] > res.timings["run"]
    _same(res, te_gpu.score_zoo(zoo, y, **dict(kw, checkpoint=None)))


# --------------------------------------------------------------------------
# one run at a time: the lock file
# --------------------------------------------------------------------------

SLOW = textwrap.dedent("""
    import sys, time, json, te_gpu
    from te_gpu.engine import core
    directory, ckpt, out = sys.argv[1:4]
    zoo, y = te_gpu.load_zoo(directory, "toy")
    real = core.score_settings
    def slowed(*a, **k):
        time.sleep(0.5)
        return real(*a, **k)
    core.score_settings = slowed
    res = te_gpu.score_zoo(zoo, y, metrics=("logme", "ncti"), sa=[None, "released"],
                           batch_size=1, checkpoint=ckpt, progress=False)
    res.to_json(out)
""")


def _wait_for(path, proc, seconds=120):
    deadline = time.time() + seconds
    while not path.exists():
        assert proc.poll() is None, "the first run ended before taking its lock"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_second_run_on_a_checkpoint_in_use_is_refused(tmp_path):
    zoo, y = _zoo()
    te_gpu.save_zoo(tmp_path / "zoo", "toy", zoo, y)
    script = tmp_path / "slow.py"
    script.write_text(SLOW)
    ckpt, out = tmp_path / "ck.json", tmp_path / "first.json"
    kw = dict(metrics=("logme", "ncti"), sa=[None, "released"], progress=False)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "zoo"), str(ckpt), str(out)])
    try:
        _wait_for(tmp_path / "ck.json.lock", proc)
        with pytest.raises(LockError, match=rf"in use by another run \(pid {proc.pid} on "):
            te_gpu.score_zoo(zoo, y, checkpoint=ckpt, **kw)
        assert proc.wait(timeout=240) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    first = json.loads(out.read_text())
    fresh = te_gpu.score_zoo(zoo, y, **kw)
    assert first["scores"] == json.loads(json.dumps(fresh.scores))
    assert not (tmp_path / "ck.json.lock").exists()
    again = te_gpu.score_zoo(zoo, y, checkpoint=ckpt, **kw)   # free again: resumes from it
    _same(again, fresh)


def test_second_score_directory_on_a_folder_in_use_is_refused(tmp_path):
    from te_gpu.pipeline import PipelineError
    from te_gpu.pipeline.scoring import FOLDER_LOCK, score_directory

    zoo, y = _zoo()
    te_gpu.save_zoo(tmp_path / "zoo", "toy", zoo, y)
    out = tmp_path / "scores"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:   # a live process holds the folder's lock
        (out / FOLDER_LOCK).write_text(json.dumps(dict(pid=holder.pid, host=socket.gethostname(),
                                                       time=time.time())))
        with pytest.raises(PipelineError, match="output folder .* is in use by another run"):
            score_directory(tmp_path / "zoo", out, metrics=("logme",), sa=[None], progress=False,
                            log=lambda *a: None)
        assert not (out / "checkpoint.json").exists() and (out / FOLDER_LOCK).exists()
    finally:
        holder.kill()
        holder.wait(timeout=60)
    seen = []
    score_directory(tmp_path / "zoo", out, metrics=("logme",), sa=[None], progress=False,
                    log=seen.append)
    assert any("no longer running" in s for s in seen) and not (out / FOLDER_LOCK).exists()


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=60)
    return proc.pid


def test_stale_lock_of_a_killed_run_is_taken_over(tmp_path):
    zoo, y = _zoo()
    ckpt = tmp_path / "ck.json"
    lock = tmp_path / "ck.json.lock"
    lock.write_text(json.dumps(dict(pid=_dead_pid(), host=socket.gethostname(), time=time.time())))
    with pytest.warns(StaleLockWarning, match="no longer running"):
        res = te_gpu.score_zoo(zoo, y, checkpoint=ckpt, **KW)
    _same(res, _fresh(zoo, y))
    assert not lock.exists() and ckpt.exists()


def test_lock_rules(tmp_path):
    lock = tmp_path / "x.lock"
    me = dict(host=socket.gethostname(), time=time.time())
    # a pid now used by another process (our own, started at another time): stale
    lock.write_text(json.dumps(dict(me, pid=os.getpid(), start=-1)))
    with pytest.warns(StaleLockWarning), exclusive_lock(lock):
        held = json.loads(lock.read_text())
        assert held["pid"] == os.getpid() and held["start"] != -1
        with pytest.raises(LockError, match="in use by another run"):   # not re-entrant
            with exclusive_lock(lock):
                pass
    assert not lock.exists()
    # another host's lock is never taken over, even with a dead pid
    lock.write_text(json.dumps(dict(me, host=socket.gethostname() + "-other", pid=_dead_pid())))
    with pytest.raises(LockError, match="delete .*x.lock"):
        with exclusive_lock(lock):
            pass
    # an empty lock is one being written: in use, until it is a minute old
    lock.write_text("")
    with pytest.raises(LockError, match="being taken"):
        with exclusive_lock(lock):
            pass
    os.utime(lock, (time.time() - 3600, time.time() - 3600))
    with pytest.warns(StaleLockWarning, match="unreadable"), exclusive_lock(lock):
        pass
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with exclusive_lock(tmp_path / "no" / "x.lock"):
            pass


def test_lock_taken_over_by_another_run_is_not_removed(tmp_path):
    lock = tmp_path / "x.lock"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with exclusive_lock(lock):
            lock.write_text("someone else's")   # as if a run had judged ours stale
    assert lock.read_text() == "someone else's"


# --------------------------------------------------------------------------
# te-gpu score's output folder
# --------------------------------------------------------------------------

def test_score_directory_reuses_keys_and_rescores_changed_files(tmp_path, scored):
    from te_gpu.pipeline import PipelineError
    from te_gpu.pipeline.scoring import score_directory

    zoo, y = _zoo()
    te_gpu.save_zoo(tmp_path / "zoo", "toy", zoo, y)
    out = tmp_path / "scores"
    kw = dict(metrics=("logme", "sfda", "ncti"), sa=[None, "released"], progress=False)
    full = score_directory(tmp_path / "zoo", out, log=lambda *a: None, **kw)
    # a subset of metrics and settings: nothing computed, files of that subset written
    scored.clear()
    sub = score_directory(tmp_path / "zoo", out, metrics=("logme", "sfda"), sa=[None],
                          progress=False, log=lambda *a: None)
    assert scored == [] and sub.labels == ["logme", "sfda"]
    assert sub.scores["sfda"] == full.scores["sfda"]
    # other SA numbers: only the SA scores are computed
    scored.clear()
    other = dict(alpha=0.1, sigma=0.6, force=1.0, pca_dim=64, gate=True)
    alt = score_directory(tmp_path / "zoo", out, sa_opts=other, log=lambda *a: None, **kw)
    assert {ss for _, _, ss in scored} == {("released",)} and len(_models(scored)) == len(zoo)
    assert alt.scores["logme"] == full.scores["logme"]
    # a rewritten feature file (same size, mtime kept): rescored, and said so in the log
    path = tmp_path / "zoo" / "m6_toy_feature.npy"
    before = os.stat(path)
    np.save(path, (zoo["m6"][::-1]).astype(np.float32))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    seen = []
    scored.clear()
    score_directory(tmp_path / "zoo", out, log=seen.append, **kw)
    assert _models(scored) == ["m6"]
    assert sum("'m6'" in s and "rescoring" in s for s in seen) == 1
    # other labels: refused until restart
    for m in zoo:
        np.save(tmp_path / "zoo" / f"{m}_toy_label.npy", np.roll(y, 1))
    with pytest.raises(PipelineError, match="other labels.*--restart"):
        score_directory(tmp_path / "zoo", out, log=lambda *a: None, **kw)
    score_directory(tmp_path / "zoo", out, restart=True, log=lambda *a: None, **kw)
