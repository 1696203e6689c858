"""NLEEP's cost per model against its floor and against the released code's mixture.

python bench/nleep_cost.py ZOO OUT.json [--threads 1] [--models a,b] [--no-sklearn]
(from the repository root; ZOO is a folder of {model}_{dataset}_feature.npy and
_label.npy, e.g. the fashion-mnist zoo of issue 21, see bench/RESULTS.md
"NLEEP near its floor")

Per model, float64 on the CPU, one model at a time (as the catalogue head runs there):
1. te_gpu's stages, wall and process CPU seconds: PCA keeping 80 % of the variance,
   greedy k-means++ and Lloyd, EM (k-means excluded), the score; the number of
   EM iterations (M steps after the initial one) and Lloyd iterations.
2. The floor: the stages' flops (below) over the rate of a dense float64 GEMM
   measured in the same run and thread setting (numpy's 1024^3 product).
   - PCA: the centred Gram N D^2 (symmetric rank-k update) + 4/3 D^3 (the
     tridiagonal reduction every symmetric eigensolver starts with);
   - k-means: 2 N d (K-1) L for the seeding's candidates, 2 N K d per Lloyd iteration;
   - EM: per iteration every component's Mahalanobis terms (a quadratic form in d
     dims per sample and component, d(d+1)/2 multiply-adds with the products
     z_a z_b shared) and its weighted second moment (d(d+1)/2 multiply-adds per
     sample and component): 2 K N d(d+1) flops; iterations + 1 E steps and
     iterations + 1 M steps.
3. The released code's path: scikit-learn's GaussianMixture(n_components=K,
   covariance_type='full', tol=1e-3, reg_covar=1e-6, max_iter=100, random_state=0)
   fitted on the same PCA scores, then predict_proba; its seconds, iterations and
   the NLEEP of its posteriors (a different initialisation: equal statistically,
   not to the digit).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("zoo")
ap.add_argument("out")
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--models", default="", help="comma-separated model names (default: all)")
ap.add_argument("--no-sklearn", action="store_true")
ap.add_argument("--components-per-class", type=int, default=5)
args = ap.parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import te_gpu.engine.nleep as engine  # noqa: E402
from te_gpu.reference.nleep import nleep_from_posteriors, n_local_trials  # noqa: E402

torch.set_num_threads(args.threads)


def clock():
    return time.perf_counter(), time.process_time()


def since(t0):
    w, c = clock()
    return {"wall_s": round(w - t0[0], 4), "cpu_s": round(c - t0[1], 4)}


def gemm_rate() -> float:
    """Flop/s of a float64 1024^3 numpy product, best of 3, per CPU second (as the
    stages' CPU times, which a shared machine inflates less than their wall times)."""
    a = np.random.default_rng(0).random((1024, 1024))
    best = 1e9
    for _ in range(3):
        t = time.process_time()
        a @ a
        best = min(best, time.process_time() - t)
    return 2 * 1024 ** 3 / best


class Counting:
    """Calls of a module function, counted while the with-block runs; optionally timed."""

    def __init__(self, name):
        self.name, self.calls, self.wall, self.cpu = name, 0, 0.0, 0.0

    def __enter__(self):
        self.orig = getattr(engine, self.name)

        def wrapped(*a, **k):
            t0 = clock()
            try:
                return self.orig(*a, **k)
            finally:
                s = since(t0)
                self.calls += 1
                self.wall += s["wall_s"]
                self.cpu += s["cpu_s"]
        setattr(engine, self.name, wrapped)
        return self

    def __exit__(self, *exc):
        setattr(engine, self.name, self.orig)


def te_gpu_stages(x: torch.Tensor, codes: torch.Tensor, c: int, k: int) -> dict:
    t0 = clock()
    z, dims = engine.pca_keep_variance_batched(x[None])
    out = {"pca": since(t0), "d_kept": int(dims[0])}
    m_step = "_params_from_moments" if hasattr(engine, "_params_from_moments") else "_m_step"
    t0 = clock()
    fallback = "_m_step_centred" if hasattr(engine, "_m_step_centred") else m_step
    with Counting("kmeans_batched") as km, Counting(m_step) as ms, Counting("_sq_dist") as sq, \
            Counting(fallback) as fb:
        q = engine.gmm_posteriors_batched(z, dims, k, seed=0)
    gmm = since(t0)
    out["kmeans"] = {"wall_s": round(km.wall, 4), "cpu_s": round(km.cpu, 4)}
    out["em"] = {"wall_s": round(gmm["wall_s"] - km.wall, 4),
                 "cpu_s": round(gmm["cpu_s"] - km.cpu, 4)}
    out["em_iterations"] = max(ms.calls, fb.calls) - 1   # M steps after the initial one
    out["centred_fallback_m_steps"] = fb.calls if fallback != m_step else None
    # _sq_dist: once per Lloyd iteration, once for the final labels, and (engines without
    # _candidate_sq_dist) 1 + (k-1) times in the seeding
    seeding = 0 if hasattr(engine, "_candidate_sq_dist") else 1 + (k - 1)
    out["lloyd_iterations"] = sq.calls - seeding - 1
    t0 = clock()
    out["score"] = float(engine.nleep_from_posteriors_batched(q, codes, c)[0])
    out["nleep_from_posteriors"] = since(t0)
    out["total"] = {key: round(sum(out[s][key] for s in ("pca", "kmeans", "em",
                                                          "nleep_from_posteriors")), 4)
                    for key in ("wall_s", "cpu_s")}
    return out, z[0, :, :int(dims[0])].numpy()


def floor_flops(n, dim, d, k, lloyd, em_iter) -> dict:
    pca = n * dim * dim + 4 / 3 * dim ** 3
    km = 2 * n * d * (k - 1) * n_local_trials(k) + lloyd * 2 * n * k * d
    em = (em_iter + 1) * 2 * k * n * d * (d + 1)
    return {"pca": pca, "kmeans": km, "em": em, "total": pca + km + em}


def sklearn_path(z: np.ndarray, codes: np.ndarray, c: int, k: int) -> dict:
    from sklearn.mixture import GaussianMixture

    t0 = clock()
    gm = GaussianMixture(n_components=k, covariance_type="full", tol=1e-3, reg_covar=1e-6,
                         max_iter=100, random_state=0).fit(z)
    q = gm.predict_proba(z)
    out = since(t0)
    out.update(iterations=int(gm.n_iter_), converged=bool(gm.converged_),
               score=nleep_from_posteriors(q, codes, c))
    return out


def main():
    load_before = os.getloadavg()[0]
    zoo = Path(args.zoo)
    feats = sorted(zoo.glob("*_feature.npy"))
    wanted = set(filter(None, args.models.split(",")))
    rate = gemm_rate()
    rows = []
    for f in feats:
        name = f.name.rsplit("_", 2)[0]
        if wanted and name not in wanted:
            continue
        x = torch.from_numpy(np.load(f)).to(torch.float64)
        y = np.load(str(f).replace("_feature.npy", "_label.npy"))
        classes, codes = np.unique(y, return_inverse=True)
        c = classes.size
        k = args.components_per_class * c
        ours, z = te_gpu_stages(x, torch.from_numpy(codes.astype(np.int64)), c, k)
        flops = floor_flops(x.shape[0], x.shape[1], ours["d_kept"], k,
                            ours["lloyd_iterations"], ours["em_iterations"])
        row = {"model": name, "n": x.shape[0], "dim": x.shape[1], "classes": c, "k": k,
               "te_gpu": ours, "floor_flops": flops,
               "floor_cpu_s": {s: round(v / rate, 4) for s, v in flops.items()}}
        if not args.no_sklearn:
            row["sklearn"] = sklearn_path(z, codes, c, k)
        rows.append(row)
        t = ours["total"]
        msg = (f"{name:16s} D={x.shape[1]:5d} d={ours['d_kept']:4d} "
               f"pca {ours['pca']['cpu_s']:.2f} kmeans {ours['kmeans']['cpu_s']:.2f} "
               f"({ours['lloyd_iterations']} it) em {ours['em']['cpu_s']:.2f} "
               f"({ours['em_iterations']} it) total cpu {t['cpu_s']:.2f} wall {t['wall_s']:.2f}"
               f" floor {row['floor_cpu_s']['total']:.2f}")
        if "sklearn" in row:
            msg += f" | sklearn cpu {row['sklearn']['cpu_s']:.2f} ({row['sklearn']['iterations']} it)"
        print(msg, flush=True)
    out = {"zoo": str(zoo), "threads": args.threads, "gemm_flops_per_s": rate,
           "load_1min_before_after": [load_before, os.getloadavg()[0]], "torch": torch.__version__, "models": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
