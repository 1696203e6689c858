"""Cost of a bootstrap redraw against one plain scoring pass, on the CPU.

python bench/bootstrap_cost.py OUT.json --threads 1 --models 8 --n 1000 --dim 256 \
    --classes 10 --replicates 50 --repeats 3 --metrics logme,sfda,lda [--naive 10] [--device cuda]
(from the repository root)

Per repeat, in this order:
1. ``score_zoo`` of the zoo (one plain pass);
2. ``bootstrap_zoo`` with B redraws: its redraw part (``timings["bootstrap"]``, the plain
   pass it starts with excluded) over B x models gives the seconds per redraw per model;
3. with ``--naive K``: K separate ``score_zoo`` calls, one per redraw, on the resampled
   features (what one would do without the batch dimension), for comparison.
Wall and process CPU time, the 1-minute load before and after, and the stage timings of
every pass are written to OUT.json; the fastest repeat of each is what RESULTS.md quotes.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--models", type=int, default=8)
ap.add_argument("--n", type=int, default=1000)
ap.add_argument("--dim", type=int, default=256)
ap.add_argument("--classes", type=int, default=10)
ap.add_argument("--replicates", type=int, default=50)
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--metrics", default="logme,sfda,lda")
ap.add_argument("--sa", default="none")
ap.add_argument("--naive", type=int, default=0)
ap.add_argument("--device", default="cpu")
args = ap.parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(args.threads)
import te_gpu  # noqa: E402
import zoo_synth as zs  # noqa: E402
from te_gpu.bootstrap import bootstrap_zoo, resample_indices  # noqa: E402
from te_gpu.pipeline.scoring import parse_sa  # noqa: E402

zoo, y = zs.make_zoo([args.dim] * args.models, args.n, args.classes, seed=0, dtype=np.float64)
metrics = args.metrics.split(",")
sa = parse_sa(args.sa)
KW = dict(metrics=metrics, sa=sa, device=args.device, progress=False)
rows = []


def timed(what, fn):
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows.append(dict(what=what, wall=round(wall, 4), cpu=round(cpu, 4), load_before=load0,
                     load_after=os.getloadavg()[0]))
    return out, rows[-1]


for rep in range(args.repeats):
    plain, row = timed("plain score_zoo", lambda: te_gpu.score_zoo(zoo, y, **KW))
    row["stages"] = {k: round(v, 4) for k, v in plain.timings.items()}
    print(row, flush=True)
    boot, row = timed(f"bootstrap_zoo B={args.replicates}",
                      lambda: bootstrap_zoo(zoo, y, replicates=args.replicates, seed=rep, **KW))
    row["stages"] = {k: round(v, 4) for k, v in boot.timings.items()}
    row["per_redraw_per_model"] = boot.timings["bootstrap"] / (args.replicates * args.models)
    row["plain_per_model"] = plain.timings["run"] / args.models
    print({k: v for k, v in row.items() if k != "stages"}, flush=True)
    if args.naive:
        idx, codes = resample_indices(y, args.naive, seed=rep)

        def naive():
            for r in range(args.naive):
                te_gpu.score_zoo({m: x[idx[r]] for m, x in zoo.items()}, codes, **KW)

        _, row = timed(f"{args.naive} separate score_zoo calls", naive)
        row["per_redraw_per_model"] = row["wall"] / (args.naive * args.models)
        print(row, flush=True)

cpu = [ln for ln in open("/proc/cpuinfo") if ln.startswith("model name")][0].split(":")[1].strip()
Path(args.out).write_text(json.dumps(dict(
    args=vars(args), cpu=cpu, cores=os.cpu_count(), torch=torch.__version__, rows=rows,
    commit=os.popen("git rev-parse --short HEAD").read().strip()), indent=1) + "\n")
print("wrote", args.out)
