"""``te-gpu bench``: time :func:`te_gpu.score_zoo` on a synthetic zoo, on CPU and GPU."""
from __future__ import annotations

import time

import numpy as np

from . import PipelineError


def synthetic_zoo(models: int, n: int, dim: int, classes: int, seed: int = 0):
    """Class-structured float32 features whose separability grows along the zoo."""
    if min(models, n, dim, classes) < 1 or classes < 2:
        raise PipelineError("bench needs models >= 1, n >= 1, dim >= 1 and classes >= 2")
    if n < 2 * classes:
        raise PipelineError(f"n={n} is too small for {classes} classes (at least 2 per class)")
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    rng.shuffle(y)
    zoo = {}
    for i in range(models):
        centres = rng.normal(size=(classes, dim)) * (0.3 + 1.5 * (i + 1) / models)
        x = centres[y] + rng.normal(size=(n, dim))
        zoo[f"model{i:04d}"] = x.astype(np.float32)
    return zoo, y


def available_devices() -> list:
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def run_bench(*, models=16, n=1000, dim=256, classes=10, metrics=("logme", "sfda", "lda", "gbc", "ncti"),
              sa=(None, "released"), devices=None, precisions=("exact",), repeat=1, seed=0,
              log=print) -> list:
    """Time each device x precision; rows of {device, precision, seconds, models_per_s,
    speedup (vs the first row), max_rel_diff (scores vs the first row)}."""
    import torch

    from te_gpu import score_zoo

    zoo, y = synthetic_zoo(models, n, dim, classes, seed)
    devices = list(devices or available_devices())
    for dev in devices:
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise PipelineError(f"device {dev} asked for, but torch sees no CUDA GPU")
    rows, first = [], None
    for dev in devices:
        for precision in precisions:
            if dev.startswith("cuda"):  # warm-up: CUDA context, kernels, allocator
                warm = dict(list(zoo.items())[:2])
                score_zoo(warm, y, metrics=metrics, sa=list(sa), device=dev, precision=precision,
                          progress=False)
                torch.cuda.synchronize()
            best, res = float("inf"), None
            for _ in range(max(1, repeat)):
                t0 = time.perf_counter()
                res = score_zoo(zoo, y, metrics=metrics, sa=list(sa), device=dev,
                                precision=precision, progress=False)
                if dev.startswith("cuda"):
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
            row = dict(device=dev, precision=precision, seconds=best, models_per_s=models / best,
                       stages={k: round(v, 4) for k, v in res.timings.items()})
            if first is None:
                first = (row, res)
                row["speedup"] = 1.0
                row["max_rel_diff"] = 0.0
            else:
                row["speedup"] = first[0]["seconds"] / best
                row["max_rel_diff"] = _max_rel_diff(first[1].scores, res.scores)
            rows.append(row)
            log(f"  {dev:6s} {precision:5s} {best:9.3f} s  ({row['models_per_s']:.2f} models/s)")
    return rows


def _max_rel_diff(a: dict, b: dict) -> float:
    worst = 0.0
    for lbl in a:
        x = np.array([a[lbl][m] for m in a[lbl]])
        z = np.array([b[lbl][m] for m in a[lbl]])
        scale = max(np.abs(x).max(), 1e-12)
        worst = max(worst, float(np.abs(x - z).max() / scale))
    return worst


def format_rows(rows) -> str:
    head = ["device", "precision", "seconds", "models/s", "speed-up", "max rel. diff"]
    body = [[r["device"], r["precision"], f"{r['seconds']:.3f}", f"{r['models_per_s']:.2f}",
             f"{r['speedup']:.2f}x", f"{r['max_rel_diff']:.1e}"] for r in rows]
    widths = [max(len(x[j]) for x in [head] + body) for j in range(len(head))]
    lines = ["  ".join(c.rjust(w) if j >= 2 else c.ljust(w) for j, (c, w) in enumerate(zip(x, widths)))
             for x in [head] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
