"""score_zoo and te-gpu score across processes: torch.distributed with gloo on the CPU.

Jobs of 2 and 3 ranks (torchrun, ``python -m te_gpu``), two torchrun "nodes" meeting
at a c10d rendezvous on 127.0.0.1, ranks started by hand with torchrun's environment
variables (as srun scripts do), a rank killed mid-run and the job resumed on another
number of ranks; every result is held against one process's. Each process runs one
thread. Every process started here is bounded in time and, whatever happens, killed
in a ``finally`` (torchrun starts its workers in sessions of their own, so they are
found by a tag in their environment).
"""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

import te_gpu
from te_gpu import distributed
from te_gpu.cli import main as te_gpu_main
from te_gpu.zoo import _work_estimate

DATASET = "toy"
METRICS = "logme,sfda,ncti,nleep"
# same-width models, so that batches hold different models in one process and per rank
WIDTHS = (16, 16, 16, 16, 16, 24, 24, 24, 12)
RUN_S = 120   # no test job here takes a tenth of this; it only bounds a hang

# One rank of a test job: te-gpu's command (or score_zoo in a process group this script
# initialises itself), recording in $TEST_RECORD/rank<k>.json which models this rank
# opened and scored. TEST_SLOW_RANK sleeps after each checkpoint save of that rank;
# TEST_ROLL_RANK gives that rank other labels.
DRIVER = textwrap.dedent("""
    import atexit, json, os, sys, time
    import torch
    torch.set_num_threads(1)
    import te_gpu.checkpoint as checkpoint
    import te_gpu.zoo as zoo
    from te_gpu.cli import main

    rank = int(os.environ.get("RANK", 0))
    record = dict(opened=[], scored=[])
    real_open, real_store, real_save = zoo.open_features, zoo._store, checkpoint.Checkpoint.save

    def opened(name, item):
        record["opened"].append(name)
        return real_open(name, item)

    def stored(book, job, chunk, i, *a):
        if i == 0:
            record["scored"].extend(chunk)
        return real_store(book, job, chunk, i, *a)

    def slow_save(self, *a):
        real_save(self, *a)
        time.sleep(60)

    zoo.open_features, zoo._store = opened, stored
    if os.environ.get("TEST_SLOW_RANK") == str(rank):
        checkpoint.Checkpoint.save = slow_save

    def dump():
        with open(os.path.join(os.environ["TEST_RECORD"], f"rank{rank}.json"), "w") as fh:
            json.dump(record, fh)
    atexit.register(dump)

    if sys.argv[1] != "api":
        sys.exit(main(sys.argv[1:]))
    import numpy as np, te_gpu, torch.distributed as dist
    z, y = te_gpu.load_zoo(sys.argv[2], "toy", mmap=True)
    if os.environ.get("TEST_ROLL_RANK") == str(rank):
        y = np.roll(y, 1)
    dist.init_process_group("gloo")
    try:
        te_gpu.score_zoo(z, y, metrics=("logme",), sa=None, checkpoint=sys.argv[3], progress=False)
    except ValueError as exc:
        print(f"{type(exc).__name__}: {exc}", flush=True)
        sys.exit(3)
    finally:
        dist.destroy_process_group()
""")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A saved zoo, the driver script, and one process's te-gpu score of the zoo."""
    root = tmp_path_factory.mktemp("dist")
    rng = np.random.default_rng(3)
    n, c = 150, 4
    y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    zoo = {f"m{i}": (rng.normal(scale=0.7, size=(c, d))[y] + rng.normal(size=(n, d))).astype(np.float32)
           for i, d in enumerate(WIDTHS)}
    te_gpu.save_zoo(root / "zoo", DATASET, zoo, y)
    (root / "driver.py").write_text(DRIVER)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as every rank
    try:
        assert te_gpu_main(["score", str(root / "zoo"), "--out", str(root / "one"),
                            "--metrics", METRICS, "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tag: str, record: Path, **extra) -> dict:
    record.mkdir(exist_ok=True)
    return dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", TE_GPU_DIST_TIMEOUT="60",
                TE_GPU_TEST_TAG=tag, TEST_RECORD=str(record), **extra)


def _torchrun(*args) -> list:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def _score_args(job, out) -> list:
    return ["score", str(job / "zoo"), "--out", str(out), "--metrics", METRICS]


class _Processes:
    """Processes of one test, stopped on the way out: each, then any worker that carries
    the test's tag in its environment (torchrun's workers live in sessions of their own)."""

    def __init__(self):
        self.tag, self.procs = uuid.uuid4().hex, []

    def start(self, cmd, env, cwd) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        return proc

    def finish(self, proc) -> tuple:
        out, _ = proc.communicate(timeout=RUN_S)
        return proc.returncode, out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        for pid in _tagged(self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _tagged(tag: str) -> list:
    mark = f"TE_GPU_TEST_TAG={tag}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _same_as_one_process(job, out: Path) -> float:
    """Every score of ``out`` within 1e-12 (relative) of one process's, rankings and NCTI
    parts alike; returns the largest relative difference seen."""
    one = json.loads((job / "one" / "result.json").read_text())
    many = json.loads((out / "result.json").read_text())
    assert many["models"] == one["models"] and set(many["scores"]) == set(one["scores"])
    worst = 0.0
    for label, table in one["scores"].items():
        got = many["scores"][label]
        for model, v in table.items():
            worst = max(worst, abs(got[model] - v) / max(abs(v), 1e-300))
        assert sorted(got, key=lambda m: (-got[m], m)) == sorted(table, key=lambda m: (-table[m], m))
    for label, parts in one["parts"].items():
        for model, p in parts.items():
            np.testing.assert_allclose(many["parts"][label][model], p, rtol=1e-12, atol=0)
    assert many["sa"] == one["sa"]
    assert worst <= 1e-12, worst
    return worst


def _records(folder: Path) -> list:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("rank*.json"))]


def _outputs(out: Path) -> set:
    return {p.name for p in out.iterdir()}


def _one_owner_each(records, models):
    """Each model opened by exactly one rank (a rank touches no file of another's shard)."""
    opened = [m for r in records for m in r["opened"]]
    assert sorted(opened) == sorted(models)


# --------------------------------------------------------------------------
# in one process: sharing out, estimating cost, absorbing shard files
# --------------------------------------------------------------------------

def test_models_go_longest_first_to_the_least_loaded_rank():
    costs = [5, 9, 1, 9, 3, 7]
    assert distributed.assign(costs, 2) == [1, 0, 0, 1, 1, 0]   # 9 9 | 7 5 | 3 1: 17 and 17
    assert distributed.assign(costs, 1) == [0] * 6
    assert sorted(distributed.assign(costs, 8)) == [0, 1, 2, 3, 4, 5]   # more ranks than models
    worlds = [distributed.World(rank, 3) for rank in range(3)]
    names = [f"m{i}" for i in range(6)]
    shards = [w.shard(names, costs) for w in worlds]
    assert sorted(sum(shards, [])) == names and all(shards)


def test_cost_of_a_file_comes_from_its_size_without_opening_it(tmp_path, monkeypatch):
    x = np.zeros((200, 64), np.float32)
    np.save(tmp_path / "a.npy", x)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("a file was opened"))
    assert _work_estimate(tmp_path / "a.npy", 200) == pytest.approx(_work_estimate(x, 200), rel=0.02)
    assert _work_estimate(tmp_path / "missing.npy", 200) == 0.0


def test_one_process_takes_in_the_shard_files_of_an_interrupted_job(tmp_path, monkeypatch):
    """What the ranks of a killed job left in <checkpoint>.rank<k> is reused by a run of
    any number of ranks (here one), and the shard files are gone after it."""
    from te_gpu.zoo import _store

    rng = np.random.default_rng(0)
    y = np.arange(80) % 3
    zoo = {f"m{i}": rng.normal(size=(80, 6 + i)) + y[:, None] for i in range(5)}
    ckpt = tmp_path / "ck.json"
    kw = dict(metrics=("logme", "ncti"), sa=None, progress=False, checkpoint=ckpt)
    whole = te_gpu.score_zoo(zoo, y, **kw)
    saved = json.loads(ckpt.read_text())
    shard = dict(saved, models={m: saved["models"].pop(m) for m in ("m1", "m3")}, elapsed=9.0)
    ckpt.write_text(json.dumps(saved))
    ckpt.with_name("ck.json.rank2").write_text(json.dumps(shard))
    scored = []
    monkeypatch.setattr("te_gpu.zoo._store", lambda book, job, chunk, *a: (scored.extend(chunk),
                                                                          _store(book, job, chunk, *a)))
    again = te_gpu.score_zoo(zoo, y, **kw)
    assert scored == [] and again.scores == whole.scores
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.json"]
    assert again.timings["total"] == pytest.approx(9.0 + again.timings["run"])


# --------------------------------------------------------------------------
# jobs of several processes
# --------------------------------------------------------------------------

def test_two_ranks_of_python_m_te_gpu_match_one_process(job):
    out = job / "two"
    with _Processes() as ps:
        proc = ps.start(_torchrun("--nproc-per-node=2", "--master-addr=127.0.0.1",
                                  f"--master-port={_free_port()}", "-m", "te_gpu",
                                  *_score_args(job, out)),
                        _env(ps.tag, job / "rec-two"), job)
        rc, log = ps.finish(proc)
    assert rc == 0, log
    assert log.count("best first by") == 2   # rank 0's two tables (raw, after SA), no one else's
    assert _outputs(out) == _outputs(job / "one")   # no shard file, lock or temporary file left
    _same_as_one_process(job, out)


def test_two_nodes_meet_at_a_rendezvous(job):
    out, port = job / "nodes", _free_port()
    with _Processes() as ps:
        env = _env(ps.tag, job / "rec-nodes")
        nodes = [ps.start(_torchrun("--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
                                    f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=te-gpu-test",
                                    "--local-addr=127.0.0.1", str(job / "driver.py"),
                                    *_score_args(job, out)), env, job)
                 for _ in range(2)]
        results = [ps.finish(node) for node in nodes]
    assert [rc for rc, _ in results] == [0, 0], results
    _one_owner_each(_records(job / "rec-nodes"), [f"m{i}" for i in range(len(WIDTHS))])
    _same_as_one_process(job, out)


def test_a_killed_rank_fails_the_job_by_name_and_three_ranks_resume_it(job):
    """Two ranks started by hand with torchrun's variables; rank 1 is killed after its first
    checkpoint. Rank 0 names it and writes no output; three ranks then score only the rest."""
    out, models = job / "killed", [f"m{i}" for i in range(len(WIDTHS))]
    with _Processes() as ps:
        env = _env(ps.tag, job / "rec-killed", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(_free_port()), WORLD_SIZE="2", TEST_SLOW_RANK="1")
        ranks = [ps.start([sys.executable, str(job / "driver.py"), *_score_args(job, out)],
                          dict(env, RANK=str(r), LOCAL_RANK=str(r)), job) for r in range(2)]
        shard = out / "checkpoint.json.rank1"
        deadline = time.time() + RUN_S
        while not shard.exists():
            assert ranks[1].poll() is None and time.time() < deadline
            time.sleep(0.05)
        ranks[1].kill()
        rc, log = ps.finish(ranks[0])
    assert rc == 2 and "rank 1 never reached it" in log, log
    assert _outputs(out) == {"checkpoint.json", "checkpoint.json.rank1"}   # no lock, nothing half-written
    done = {m for f in _outputs(out) for m in json.loads((out / f).read_text())["models"]}
    assert done and json.loads(shard.read_text())["models"]

    with _Processes() as ps:
        proc = ps.start(_torchrun("--nproc-per-node=3", "--master-addr=127.0.0.1",
                                  f"--master-port={_free_port()}", str(job / "driver.py"),
                                  *_score_args(job, out)),
                        _env(ps.tag, job / "rec-resume"), job)
        rc, log = ps.finish(proc)
    assert rc == 0, log
    records = _records(job / "rec-resume")
    assert len(records) == 3
    _one_owner_each(records, models)
    scored = [m for r in records for m in r["scored"]]
    assert sorted(scored) == sorted(set(models) - done)   # only what was missing, once
    assert _outputs(out) == _outputs(job / "one")
    _same_as_one_process(job, out)


def test_ranks_given_other_labels_or_a_checkpoint_of_other_labels_stop_before_any_work(job):
    """score_zoo in a group the caller initialised: labels that differ between ranks are
    refused on every rank before a model is opened; so is a checkpoint of other labels."""
    zoo_dir = job / "zoo"
    z, y = te_gpu.load_zoo(zoo_dir, DATASET)
    other = job / "other-labels.json"
    te_gpu.score_zoo({m: z[m] for m in ("m0", "m8")}, np.roll(y, 2), metrics=("logme",), sa=None,
                     checkpoint=other, progress=False)

    def run(ckpt, record, **extra):
        with _Processes() as ps:
            env = _env(ps.tag, job / record, MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(_free_port()), WORLD_SIZE="2", **extra)
            ranks = [ps.start([sys.executable, str(job / "driver.py"), "api", str(zoo_dir), str(ckpt)],
                              dict(env, RANK=str(r), LOCAL_RANK=str(r)), job) for r in range(2)]
            return [ps.finish(rank) for rank in ranks]

    for rc, log in run(job / "never.json", "rec-labels", TEST_ROLL_RANK="1"):
        assert rc == 3 and "the ranks were given different labels: rank(s) 1 differ" in log, log
    assert not list(job.glob("never.json*"))
    assert all(r == dict(opened=[], scored=[]) for r in _records(job / "rec-labels"))

    for rc, log in run(other, "rec-other"):
        assert rc == 3 and f"rank 0: checkpoint {other} holds scores for other labels" in log, log
    assert all(r["scored"] == [] for r in _records(job / "rec-other"))


def test_two_ranks_leave_out_a_constant_ncti_part_and_write_every_score(tmp_path):
    """Issue 27's easy task under torchrun: NCTI's ncc and vc are equal across the zoo;
    rank 0 says so once, every requested score is written, and the job exits 0."""
    from test_zoo_level import easy_zoo

    zoo, y = easy_zoo(models=6)
    te_gpu.save_zoo(tmp_path / "zoo", DATASET, zoo, y)
    out = tmp_path / "s"
    with _Processes() as ps:
        proc = ps.start(_torchrun("--nproc-per-node=2", "--master-addr=127.0.0.1",
                                  f"--master-port={_free_port()}", "-m", "te_gpu", "score",
                                  str(tmp_path / "zoo"), "--out", str(out), "--metrics",
                                  "logme,sfda,ncti,knn", "--sa", "none"),
                        _env(ps.tag, tmp_path / "rec"), tmp_path)
        rc, log = ps.finish(proc)
    assert rc == 0, log
    assert log.count("ncti: part(s) ncc, vc left out") == 1, log
    assert {"logme.json", "sfda.json", "ncti.json", "knn.json", "scores.csv",
            "result.json"} <= _outputs(out)
    one = te_gpu.score_zoo(zoo, y, metrics=("logme", "sfda", "ncti", "knn"), progress=False)
    got = json.loads((out / "result.json").read_text())
    for label, table in one.scores.items():
        np.testing.assert_allclose([got["scores"][label][m] for m in zoo],
                                   [table[m] for m in zoo], rtol=1e-12, atol=1e-12)
