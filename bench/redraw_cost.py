"""CPU cost of one round of bootstrap redraws on the weighted path, per model and metric.

python bench/redraw_cost.py ZOO DATASET OUT.json [--redraws 10] [--metrics lda,ncti,knn]
(from the repository root; PYTHONPATH chooses the te_gpu tree, so two trees can be
compared by running this once with each, alternately, under the same load)

For every model of the store: each metric's redraw hook (``Metric.redraws``) is built
from the full target set, then called on ``--redraws`` class-stratified redraws (seed 0),
one thread and one BLAS thread, as the bootstrap's CPU workers run. Records per model
and metric the build's and the redraws' process CPU seconds (``time.process_time``).
"""
import argparse
import json
import os
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from te_gpu import catalogue, io
from te_gpu._checks import as_labels
from te_gpu.bootstrap import resample_indices
from te_gpu.engine.stats import Labels

ap = argparse.ArgumentParser()
ap.add_argument("zoo")
ap.add_argument("dataset")
ap.add_argument("out")
ap.add_argument("--redraws", type=int, default=10)
ap.add_argument("--metrics", default="lda,ncti,knn")
args = ap.parse_args()
torch.set_num_threads(1)
metrics = args.metrics.split(",")
zoo, labels = io.load_zoo(args.zoo, args.dataset)
codes, classes = as_labels(labels)
idx_np, rcodes = resample_indices(codes, args.redraws, 0)
idx = torch.as_tensor(idx_np)
dt = torch.float64
lab = Labels.from_codes(torch.as_tensor(rcodes), classes.size, dt)
src = Labels.from_codes(torch.as_tensor(codes), classes.size, dt)
opts = catalogue.resolve_options(metrics, None)
w = torch.zeros(idx.shape, dtype=dt)
w.scatter_add_(1, idx, torch.ones_like(idx, dtype=dt))
rows = []
with threadpool_limits(1, user_api="blas"):
    for name, feats in zoo.items():
        x = torch.as_tensor(np.asarray(feats), dtype=dt)
        for m in metrics:
            t0 = time.process_time()
            hook = catalogue.get(m).redraws_fn()(x, src, lab, **opts[m])
            t1 = time.process_time()
            hook(w, idx)
            t2 = time.process_time()
            rows.append(dict(model=name, shape=list(x.shape), metric=m, build_cpu_s=t1 - t0,
                             per_redraw_cpu_s=(t2 - t1) / args.redraws))
        print(name, tuple(x.shape), {r["metric"]: round(r["per_redraw_cpu_s"] * 1000) for r in rows
                                     if r["model"] == name}, "ms/redraw", flush=True)
total = {m: sum(r["per_redraw_cpu_s"] for r in rows if r["metric"] == m) for m in metrics}
print("per redraw of the zoo (CPU s):", {m: round(v, 3) for m, v in total.items()},
      "all:", round(sum(total.values()), 3))
with open(args.out, "w") as fh:
    json.dump(dict(zoo=args.zoo, redraws=args.redraws, load=os.getloadavg()[0], rows=rows,
                   per_redraw_zoo_cpu_s=total), fh, indent=1)
