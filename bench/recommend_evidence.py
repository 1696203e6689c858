"""Evidence for the default metric set of ``te-gpu recommend``: how well each metric (and
each candidate set, combined by mean rank) finds the best model and orders a zoo, on
synthetic zoos with a measured truth and on the demo zoo, with bootstrap shares.

python bench/recommend_evidence.py OUT.json --zoos 10 --replicates 50 [--demo te_gpu_demo]
(from the repository root)

Synthetic zoo ``s`` (seeded): L = 8 models share a task of C = 10 classes whose centres
live in a 16-d latent space. Model k draws its own: class separation (0.45-0.9), width
(64/128/256), a random ReLU embedding of the latent (features = relu(W h + b) plus
noise), a share of dead units (0-40 %), and "confusing" noise along the direction of a
random other class (0-2): it lowers linear separability in a way class-mean statistics
see only in part. The target set has N = 500 samples; the truth is a linear probe
(te_gpu.pipeline.finetune.linear_probe: standardised features, weight decay chosen on a
validation split) trained on those 500 and tested on 3,000 fresh samples, as the demo's
lft truth is measured.

Per metric (raw features and after SA "released"): weighted tau against the truth, top-1
hit (its first model is the truly best), rel@1 (accuracy of its first model / the best).
Per candidate set: the same for the mean-rank consensus, and with the bootstrap, the
mean share of first places of the truly best model and how often the consensus's most
frequent first model is the truly best.
"""
import argparse
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--zoos", type=int, default=10)
ap.add_argument("--replicates", type=int, default=50)
ap.add_argument("--demo", default=None, help="a te-gpu demo folder (features + ground_truth.json)")
ap.add_argument("--metrics", default="logme,sfda,lda,gbc,ncti,hscore,reg_hscore,transrate,knn,nleep")
ap.add_argument("--boot-metrics", default="logme,sfda,lda,gbc,ncti,hscore,reg_hscore,transrate,knn")
ap.add_argument("--threads", type=int, default=2)
args = ap.parse_args()
os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

import torch  # noqa: E402

torch.set_num_threads(args.threads)
import te_gpu  # noqa: E402
from te_gpu import rank  # noqa: E402
from te_gpu.bootstrap import bootstrap_zoo, first_places  # noqa: E402
from te_gpu.pipeline.finetune import linear_probe  # noqa: E402

L, C, R, N, N_TEST = 8, 10, 16, 500, 3000


def synthetic_zoo(seed):
    rng = np.random.default_rng([7, seed])
    mu = rng.normal(size=(C, R))
    y = np.repeat(np.arange(C), N // C)
    y_test = np.repeat(np.arange(C), N_TEST // C)
    zoo, test = {}, {}
    for k in range(L):
        sep = rng.uniform(0.45, 0.9)
        d = int(rng.choice([64, 128, 256]))
        w = rng.normal(size=(R, d)) / np.sqrt(R)
        b = rng.normal(scale=0.5, size=d)
        dead = rng.random(d) < rng.uniform(0.0, 0.4)
        confuse = rng.uniform(0.0, 2.0)

        def feats(labels, g):
            other = mu[g.integers(0, C, labels.size)] - mu[labels]
            h = sep * mu[labels] + g.normal(size=(labels.size, R)) \
                + confuse * g.normal(size=(labels.size, 1)) * other / np.sqrt(R)
            f = np.maximum(h @ w + b, 0.0) + 0.05 * g.normal(size=(labels.size, d))
            f[:, dead] = 0.0
            return f

        name = f"m{k}_d{d}"
        zoo[name] = feats(y, np.random.default_rng([7, seed, k, 0]))
        test[name] = feats(y_test, np.random.default_rng([7, seed, k, 1]))
    truth = {m: linear_probe(zoo[m], y, test[m], y_test)["accuracy"] for m in zoo}
    return zoo, y, truth


def demo_zoo(folder):
    from te_gpu.pipeline.extract import open_zoo
    from te_gpu.pipeline.finetune import read_ground_truth

    zoo, y, dataset = open_zoo(Path(folder) / "features")
    truth, _ = read_ground_truth(str(Path(folder) / "ground_truth.json"), group="demo",
                                 regime="lft", dataset=dataset)
    zoo = {m: np.asarray(v, dtype=np.float64) for m, v in zoo.items() if m in truth}
    return zoo, y, truth


def judge(scores: dict, truth: dict) -> dict:
    models = list(truth)
    s = np.array([scores[m] for m in models])
    a = np.array([truth[m] for m in models])
    first = models[int(np.argmax(s))]
    return dict(tau_w=rank.weighted_tau(s, a), top1=float(truth[first] == a.max()),
                rel1=truth[first] / a.max())


def evaluate(name, zoo, y, truth):
    t0 = time.perf_counter()
    metrics = args.metrics.split(",")
    res = te_gpu.score_zoo(zoo, y, metrics=metrics, sa=[None, "released"], progress=False)
    per_label = {lb: judge(res.scores[lb], truth) for lb in res.labels}
    boot_metrics = args.boot_metrics.split(",")
    boot = bootstrap_zoo(zoo, y, metrics=boot_metrics, replicates=args.replicates, seed=0,
                         progress=False)
    best = [m for m in truth if truth[m] == max(truth.values())]
    shares = {lb: sum(boot.p_first(lb)[m] for m in best) for lb in boot.labels}
    sets = {}
    for size in (1, 2, 3):
        for combo in itertools.combinations(boot_metrics, size):
            models, samples, point = boot.consensus(combo)
            pf = dict(zip(models, first_places(samples).mean(1)))
            top = max(models, key=lambda m: (point[m], pf[m]))
            sets[",".join(combo)] = dict(
                judge(point, truth), p_best_first=float(sum(pf[m] for m in best)),
                recommended_p_first=float(pf[top]))
    print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)
    return dict(truth=truth, per_label=per_label, boot_share_of_best=shares, sets=sets,
                n=int(len(y)), widths={m: int(v.shape[1]) for m, v in zoo.items()})


out = dict(args=vars(args), zoos={}, load=[])
t_start = time.perf_counter()
for s in range(args.zoos):
    out["load"].append(os.getloadavg()[0])
    zoo, y, truth = synthetic_zoo(s)
    out["zoos"][f"synthetic{s}"] = evaluate(f"synthetic{s}", zoo, y, truth)
if args.demo:
    zoo, y, truth = demo_zoo(args.demo)
    out["zoos"]["demo"] = evaluate("demo", zoo, y, truth)
out["seconds"] = time.perf_counter() - t_start


Path(args.out).write_text(json.dumps(out, indent=1, default=float) + "\n")   # the raw numbers first


def _stat(fn, values):
    return float(fn(values)) if len(values) else float("nan")


def table(keys, field):
    rows = {}
    for key in keys:
        vals = {z: d[field][key] for z, d in out["zoos"].items() if key in d[field]}
        syn = [v for z, v in vals.items() if z.startswith("synthetic")]
        rows[key] = dict(
            tau_w_mean=_stat(np.mean, [v["tau_w"] for v in syn]),
            tau_w_min=_stat(np.min, [v["tau_w"] for v in syn]),
            top1=_stat(np.mean, [v["top1"] for v in syn]),
            rel1=_stat(np.mean, [v["rel1"] for v in syn]),
            demo=vals.get("demo"))
        if field == "sets":
            rows[key]["p_best_first"] = _stat(np.mean, [v["p_best_first"] for v in syn])
    return rows


labels = list(next(iter(out["zoos"].values()))["per_label"])
out["summary_metrics"] = table(labels, "per_label")
out["summary_sets"] = table(list(next(iter(out["zoos"].values()))["sets"]), "sets")
for lb in labels:
    out["summary_metrics"][lb]["boot_share_of_best"] = _stat(np.mean,
        [d["boot_share_of_best"][lb] for z, d in out["zoos"].items()
         if z.startswith("synthetic") and lb in d["boot_share_of_best"]]) \
        if lb in next(iter(out["zoos"].values()))["boot_share_of_best"] else None
Path(args.out).write_text(json.dumps(out, indent=1, default=float) + "\n")


def _order(r):
    return -(r["tau_w_mean"] if r["tau_w_mean"] == r["tau_w_mean"] else (r["demo"] or {}).get("tau_w", 0))


print(f"{'metric':22s} tau_w mean   min  top1  rel@1  P(best 1st)  demo tau_w top1")
for lb, r in sorted(out["summary_metrics"].items(), key=lambda kv: _order(kv[1])):
    demo = r["demo"] or {}
    share = r["boot_share_of_best"]
    print(f"{lb:22s} {r['tau_w_mean']:6.3f} {r['tau_w_min']:6.3f} {r['top1']:5.2f} {r['rel1']:6.3f}"
          f"  {share if share is None else round(share, 3)!s:>10}  {demo.get('tau_w', float('nan')):6.3f}"
          f" {demo.get('top1', float('nan')):4.1f}")
print(f"\n{'set (mean rank)':32s} tau_w mean   min  top1  rel@1 P(best 1st) demo tau_w top1")
for key, r in sorted(out["summary_sets"].items(), key=lambda kv: _order(kv[1]))[:25]:
    demo = r["demo"] or {}
    print(f"{key:32s} {r['tau_w_mean']:6.3f} {r['tau_w_min']:6.3f} {r['top1']:5.2f} {r['rel1']:6.3f}"
          f" {r['p_best_first']:8.3f}  {demo.get('tau_w', float('nan')):6.3f} {demo.get('top1', float('nan')):4.1f}")
print("wrote", args.out, f"({out['seconds']:.0f} s, load {out['load']})")
