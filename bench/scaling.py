"""Strong scaling of score_zoo across ranks on the CPU, one thread per rank (issue 12).

    python bench/scaling.py OUT.json [--models 50] [--n 2000] [--d 768] [--ranks 1,2] [--repeats 3]

(from the repository root). Writes a zoo with ``bench/zoo_synth.write_zoo_to_disk``
(float32, C = 100) once, then, per repeat and per number of ranks K (the order of K
alternates between repeats, so a drift in the machine's load does not favour one K):
empties the page cache of the feature files, starts K ranks - one plain process for
K = 1, ``python -m torch.distributed.run --nproc-per-node=K`` on 127.0.0.1 otherwise -
each scoring the zoo's ``.npy`` paths with a fresh checkpoint, and records:

* ``seconds``: score_zoo's wall time on rank 0, timed from a barrier (so process start
  and the process group's set-up, recorded as ``launch_seconds``, are outside it); it
  ends after the final gather, so it is the slowest rank's time;
* per rank: models scored, the time its shard took (``shard_seconds``) and the bytes of
  the per-model entries it sends in the gather (pickled);
* ``gather_seconds``: the time of one more all_gather_object of the same entries, after
  the run (the collective alone, without waiting for a slower rank);
* the largest relative difference of any score to the K = 1 run of the same repeat, and
  whether every ranking is the same.

Efficiency = T1 / (K * TK), from the fastest and the median repeats; and from CPU time
(T1's CPU seconds over K times the busiest rank's), which a shared machine inflates less.
``--idle C`` waits before each run until C cores are idle (read from /proc/stat);
``--control`` also times, per repeat, one Gram + eigh loop alone and two copies at once:
the efficiency the machine itself gives two single-thread processes of this shape.
Internal: ``python bench/scaling.py --worker ZOO_JSON CKPT OUT`` is one rank.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
METRICS = ("logme", "sfda", "lda", "gbc", "ncti")
SA = [None, "released"]
ONE_THREAD = dict(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def worker(zoo_json: str, ckpt: str, out: str) -> None:
    """One rank: score the zoo from a barrier, then time one gather of the same entries."""
    import torch
    torch.set_num_threads(1)
    import torch.distributed as dist

    import te_gpu
    import te_gpu.zoo as zoo_module
    from te_gpu import distributed

    spec = json.loads(Path(zoo_json).read_text())
    import numpy as np
    labels = np.load(spec["labels"])
    shard = {}
    real = zoo_module._score_shard

    def timed(book, job, *a):
        t0, c0 = time.perf_counter(), time.process_time()
        entries = real(book, job, *a)
        shard.update(seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0,
                     models=len(job.entries), bytes=len(pickle.dumps(entries)))
        return entries

    zoo_module._score_shard = timed
    with distributed.joined("cpu") as world:
        if world.size > 1:
            dist.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        res = te_gpu.score_zoo(spec["paths"], labels, metrics=METRICS, sa=SA, device="cpu",
                               progress=False, checkpoint=ckpt)
        seconds = time.perf_counter() - t0
        shard["score_zoo_cpu_seconds"] = time.process_time() - c0
        gather = None
        if world.size > 1:
            payload = b"x" * shard["bytes"]
            dist.barrier()
            t1 = time.perf_counter()
            dist.all_gather_object([None] * world.size, payload)
            gather = time.perf_counter() - t1
        ranks = world.gather("bench", lambda: shard)
        if world.rank == 0:
            Path(out).write_text(json.dumps(dict(seconds=seconds, gather_seconds=gather,
                                                 per_rank=ranks, scores=res.scores)))


CONTROL = """
import time, numpy as np, torch
torch.set_num_threads(1)
x = torch.tensor(np.random.default_rng(0).normal(size=(2000, 768)))
t0 = time.perf_counter()
for _ in range(10):
    torch.linalg.eigh(x.T @ x)
print(time.perf_counter() - t0)
"""


def _control() -> dict:
    """The machine's own ceiling: seconds of a Gram + eigh loop (one thread, the zoo's model
    shape) alone, then of two copies at once; efficiency = alone / the slower copy."""
    env = dict(os.environ, **ONE_THREAD)

    def start():
        return subprocess.Popen([sys.executable, "-c", CONTROL], env=env, stdout=subprocess.PIPE,
                                text=True)

    alone = float(start().communicate(timeout=600)[0])
    pair = [start(), start()]
    both = [float(p.communicate(timeout=600)[0]) for p in pair]
    return dict(alone=round(alone, 3), pair=[round(t, 3) for t in both],
                efficiency=round(alone / max(both), 3))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _idle_cores(seconds: float = 2.0) -> float:
    """Cores left idle by everything on the machine over ``seconds`` (/proc/stat)."""
    def sample():
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)   # idle + iowait, total (in ticks)
    (i0, t0), _ = sample(), time.sleep(seconds)
    i1, t1 = sample()
    return (os.cpu_count() or 1) * (i1 - i0) / max(1, t1 - t0)


def _wait_for_quiet(cores: float, patience: float) -> float:
    """Wait (up to ``patience`` s) until ``cores`` cores are idle; the idle cores seen last."""
    deadline = time.time() + patience
    idle = _idle_cores()
    while idle < cores and time.time() < deadline:
        idle = _idle_cores()
    return idle


def _launch(k: int, zoo_json: Path, ckpt: Path, out: Path) -> float:
    me = [str(Path(__file__).resolve()), "--worker", str(zoo_json), str(ckpt), str(out)]
    cmd = ([sys.executable, *me] if k == 1 else
           [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={k}",
            "--master-addr=127.0.0.1", f"--master-port={_free_port()}", *me])
    env = dict(os.environ, **ONE_THREAD, GLOO_SOCKET_IFNAME="lo")
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, timeout=3600)
    return time.perf_counter() - t0


def _compare(one: dict, other: dict) -> tuple:
    """(largest relative difference of any score, every ranking the same)."""
    worst, same = 0.0, True
    for label, table in one.items():
        got = other[label]
        worst = max([worst] + [abs(got[m] - v) / max(abs(v), 1e-300) for m, v in table.items()])
        same &= sorted(got, key=lambda m: (-got[m], m)) == sorted(table, key=lambda m: (-table[m], m))
    return worst, same


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("--models", type=int, default=50)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--ranks", default="1,2")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--idle", type=float, default=0.0,
                   help="before each run, wait until this many cores are idle (shared machines)")
    p.add_argument("--patience", type=float, default=600.0, help="longest such wait, seconds")
    p.add_argument("--control", action="store_true",
                   help="per repeat, also time two copies of a Gram + eigh loop against one "
                        "(what the machine itself gives two processes)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(BENCH))
    import numpy as np
    import torch

    import zoo_synth
    from run import evict, machine_info

    root = Path(tempfile.gettempdir()) / f"te_gpu_scaling_{args.models}x{args.n}x{args.d}"
    z = zoo_synth.write_zoo_to_disk(root / "zoo", args.models, args.n, args.d)
    paths = {m: str(p) for m, p in zoo_synth.zoo_paths(root / "zoo", z["models"]).items()}
    np.save(root / "labels.npy", z["labels"])
    zoo_json = root / "zoo.json"
    zoo_json.write_text(json.dumps(dict(paths=paths, labels=str(root / "labels.npy"))))
    ks = [int(k) for k in args.ranks.split(",")]
    runs = []
    for rep in range(args.repeats):
        scores = {}
        if args.control:
            if args.idle:
                _wait_for_quiet(args.idle, args.patience)
            control = _control()
            print(json.dumps(dict(repeat=rep, control=control)), flush=True)
        for k in (ks if rep % 2 == 0 else ks[::-1]):
            ckpt = root / f"ckpt_{k}.json"
            for f in root.glob(f"ckpt_{k}.json*"):
                f.unlink()
            evict(list(paths.values()))
            idle = _wait_for_quiet(args.idle, args.patience) if args.idle else _idle_cores()
            load = os.getloadavg()[0]
            launch = _launch(k, zoo_json, ckpt, root / "out.json")
            got = json.loads((root / "out.json").read_text())
            scores[k] = got.pop("scores")
            runs.append(dict(repeat=rep, ranks=k, control=control if args.control else None, launch_seconds=round(launch, 3),
                             idle_cores_before=round(idle, 2), load_before=load, load_after=os.getloadavg()[0], **got))
            print(json.dumps({key: v for key, v in runs[-1].items() if key != "per_rank"}
                             | dict(models_per_rank=[r["models"] for r in got["per_rank"]])),
                  flush=True)
        for run in runs[-len(ks):]:
            run["max_rel_diff_to_1"], run["rankings_same_as_1"] = _compare(scores[1], scores[run["ranks"]])
    summary = {}
    for k in ks:
        times = sorted(r["seconds"] for r in runs if r["ranks"] == k)
        # the busiest rank's CPU seconds: what the wall time would be on cores of its own
        busiest = [max(p["cpu_seconds"] for p in r["per_rank"]) for r in runs if r["ranks"] == k]
        summary[k] = dict(fastest=times[0], median=statistics.median(times),
                          busiest_rank_cpu_median=statistics.median(busiest))
    for k in ks:
        summary[k].update(
            efficiency_fastest=summary[1]["fastest"] / (k * summary[k]["fastest"]),
            efficiency_median=summary[1]["median"] / (k * summary[k]["median"]),
            efficiency_cpu_median=(summary[1]["busiest_rank_cpu_median"]
                                   / (k * summary[k]["busiest_rank_cpu_median"])))
    print(json.dumps(summary, indent=1))
    Path(args.out).write_text(json.dumps(dict(
        meta=dict(machine_info(), models=args.models, n=args.n, d=args.d, c=zoo_synth.N_CLASSES,
                  metrics=METRICS, sa=SA, threads_per_rank=1, torch=torch.__version__),
        runs=runs, summary=summary), indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(*sys.argv[2:5])
    else:
        main()
