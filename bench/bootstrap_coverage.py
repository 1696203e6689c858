"""Do the bootstrap intervals cover what they claim? Synthetic zoos of known order.

python bench/bootstrap_coverage.py OUT.json --seeds 40 --replicates 100 --level 0.9
(from the repository root; one thread)

Four models whose class separation grows (0.5, 0.8, 1.1, 1.4 times the class centres of a
5-d task, C = 3, N = 90, unit Gaussian noise): the true order is the order of the models.
A model's population value is the score's expectation at this N, the mean over 300 fresh
target sets. For each seed, a target set is drawn and bootstrapped; recorded per metric:
how often the 'centred' and the 'percentile' intervals cover the population value (of 4
models x seeds), how often the model with the most first places is the truly best one,
the truly best model's mean share of first places, and how often it is first on the
target set itself (the share P(first) estimates).
"""
import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
import te_gpu  # noqa: E402
from te_gpu.bootstrap import bootstrap_zoo  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--seeds", type=int, default=40)
ap.add_argument("--replicates", type=int, default=100)
ap.add_argument("--level", type=float, default=0.9)
ap.add_argument("--metrics", default="logme,sfda,lda,gbc,ncti,hscore,reg_hscore,transrate,knn")
args = ap.parse_args()
METRICS = args.metrics.split(",")
SEPS, D, C, N, FRESH = (0.5, 0.8, 1.1, 1.4), 5, 3, 90, 300
MU = np.random.default_rng(123).normal(size=(C, D))
L = len(SEPS)


def draw(seed):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), N // C)
    noise = rng.normal(size=(L, N, D))
    return {f"s{k}": sep * MU[y] + noise[k] for k, sep in enumerate(SEPS)}, y


t0 = time.perf_counter()
population = {}
per_model = [m for m in METRICS if m != "ncti"]       # NCTI's value is zoo-relative
fresh = {}
for j in range(FRESH):
    z, y = draw(10_000 + j)
    fresh.update({f"{j}/{k}": v for k, v in z.items()})
res = te_gpu.score_zoo(fresh, y, metrics=per_model, progress=False)
for m in per_model:
    population[m] = {f"s{k}": float(np.mean([res[m][f"{j}/s{k}"] for j in range(FRESH)]))
                     for k in range(L)}
covered = {(m, kind): 0 for m in per_model for kind in ("centred", "percentile")}
found = dict.fromkeys(METRICS, 0.0)
share = dict.fromkeys(METRICS, 0.0)
first_on_target = dict.fromkeys(METRICS, 0.0)
loads = []
for s in range(args.seeds):
    loads.append(os.getloadavg()[0])
    z, y = draw(s)
    boot = bootstrap_zoo(z, y, metrics=METRICS, replicates=args.replicates, seed=s,
                         level=args.level, progress=False)
    for m in METRICS:
        if m in population:
            for kind in ("centred", "percentile"):
                iv = boot.interval(m, method=kind)
                covered[(m, kind)] += sum(iv[k][0] <= population[m][k] <= iv[k][1] for k in iv)
        pf = boot.p_first(m)
        found[m] += (max(pf, key=pf.get) == "s3") / args.seeds
        share[m] += pf["s3"] / args.seeds
        first_on_target[m] += (max(boot.point[m], key=boot.point[m].get) == "s3") / args.seeds
cases = args.seeds * L
out = dict(args=vars(args), seconds=time.perf_counter() - t0, load=loads,
           population=population,
           coverage={m: {kind: covered[(m, kind)] / cases for kind in ("centred", "percentile")}
                     for m in per_model},
           recommended_is_best=found, mean_share_of_best=share, best_first_on_target=first_on_target)
Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
print(f"{args.seeds} seeds x {args.replicates} redraws, level {args.level}, "
      f"{out['seconds']:.0f} s, load {min(loads):.1f}-{max(loads):.1f}")
print(f"{'metric':11s} centred  percentile  most-first=best  mean P(first) best  best first on target")
for m in METRICS:
    cov = out["coverage"].get(m, {})
    print(f"{m:11s} {cov.get('centred', float('nan')):7.3f}  {cov.get('percentile', float('nan')):10.3f}"
          f"  {found[m]:15.3f}  {share[m]:18.3f}  {first_on_target[m]:20.3f}")
