"""NLEEP of every model of a zoo by two copies of te_gpu/engine/nleep.py in one process,
interleaved model by model (so both see the same machine load), best of R runs each.

python bench/nleep_ab.py ZOO OTHER_NLEEP_PY OUT.json [--repeats 2] [--threads 1]
(from the repository root; OTHER_NLEEP_PY is e.g. another checkout's
te_gpu/engine/nleep.py, loaded beside this tree's engine with this tree's linalg and
stats modules). Per model: process CPU seconds (user + system) of nleep_batched
with one model per chunk, as the catalogue head runs on the CPU, and the relative
difference of the two scores.
"""
import argparse
import importlib.util
import json
import os
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("zoo")
ap.add_argument("other")
ap.add_argument("out")
ap.add_argument("--repeats", type=int, default=2)
ap.add_argument("--threads", type=int, default=1)
args = ap.parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import te_gpu.engine.nleep as this  # noqa: E402

torch.set_num_threads(args.threads)
spec = importlib.util.spec_from_file_location("te_gpu.engine.nleep_other", args.other)
other = importlib.util.module_from_spec(spec)
spec.loader.exec_module(other)


def cpu_seconds(fn):
    t0 = os.times()
    out = fn()
    t1 = os.times()
    return t1.user - t0.user + t1.system - t0.system, out


rows = []
for f in sorted(Path(args.zoo).glob("*_feature.npy")):
    x = torch.from_numpy(np.load(f)).to(torch.float64)[None]
    _, codes = np.unique(np.load(str(f).replace("_feature.npy", "_label.npy")), return_inverse=True)
    codes = torch.from_numpy(codes.astype(np.int64))
    c = int(codes.max()) + 1
    best, score = {}, {}
    for _ in range(args.repeats):
        for label, mod in (("other", other), ("this", this)):
            s, v = cpu_seconds(lambda: mod.nleep_batched(x, codes, c, models_per_chunk=1))
            best[label] = min(best.get(label, float("inf")), s)
            score[label] = float(v[0])
    row = {"model": f.name.rsplit("_", 2)[0], "cpu_s": best, "score": score,
           "rel_diff": abs(score["this"] / score["other"] - 1)}
    rows.append(row)
    print(f"{row['model']:16s} other {best['other']:.2f} this {best['this']:.2f} "
          f"rel {row['rel_diff']:.1e}", flush=True)
total = {k: sum(r["cpu_s"][k] for r in rows) for k in ("other", "this")}
print(f"total other {total['other']:.2f} this {total['this']:.2f} "
      f"max rel {max(r['rel_diff'] for r in rows):.1e}")
Path(args.out).write_text(json.dumps({"zoo": args.zoo, "other": args.other, "repeats": args.repeats,
                                      "threads": args.threads, "load_1min_end": os.getloadavg()[0],
                                      "total_cpu_s": total, "models": rows}, indent=1))
