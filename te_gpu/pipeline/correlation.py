"""Scores against ground truth, for every label: ``te_gpu.rank.correlate`` plus the
published weighted tau of the same metric (shipped tables) beside ours."""
from __future__ import annotations

import warnings

from . import PipelineError


def published_for(metric: str, info: dict):
    """The published tau_w of ``metric`` (no SA) for the shipped table of ``info``, or None."""
    from te_gpu import rank

    if not info.get("shipped") or info.get("regime") != "finetune":
        return None
    tables = rank.published_tau_w()
    table = tables.get(f"{info['group']}_finetune")
    if table is None:
        return None
    for name, per_dataset in table.items():
        if name.lower() == metric.lower():
            return per_dataset.get(info["dataset"])
    return None


def correlate_all(scores_by_label: dict, accuracy: dict, info: dict, k=(1, 3)) -> list:
    """One row per label: tau_w, kendall, pearson, weighted_pearson, rel@k, recall@k,
    published (tau_w of the metric without SA, when the truth is a shipped table)."""
    from te_gpu import rank

    rows = []
    for label, scores in scores_by_label.items():
        common = [m for m in scores if m in accuracy]
        if len(common) < 2:
            raise PipelineError(f"{label}: {len(common)} model(s) have both a score and an accuracy; "
                                f"scores name {sorted(scores)[:5]}..., the truth {sorted(accuracy)[:5]}...")
        ks = tuple(kk for kk in k if kk <= len(common))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = rank.correlate(scores, accuracy, k=ks)
            except ValueError as exc:
                raise PipelineError(f"{label}: {exc}") from None
        dropped = [str(w.message) for w in caught]
        row = dict(label=label, n=len(res["models"]), **{key: v for key, v in res.items() if key != "models"})
        row["published_tau_w"] = published_for(label.split("+")[0], info)
        row["dropped"] = dropped
        rows.append(row)
    return rows


def format_rows(rows: list) -> str:
    keys = ["tau_w", "kendall", "pearson", "weighted_pearson"]
    extra = [key for key in rows[0] if key.startswith("rel@") or key.startswith("recall@")]
    head = ["scores", "models", "tau_w", "kendall", "pearson", "w.pearson"] + extra + ["published tau_w"]
    body = []
    for r in rows:
        pub = r.get("published_tau_w")
        body.append([r["label"], str(r["n"])] + [f"{r[key]:+.3f}" for key in keys] +
                    [f"{r.get(key, float('nan')):.3f}" for key in extra] +
                    ["-" if pub is None else f"{pub:+.3f}"])
    widths = [max(len(x[j]) for x in [head] + body) for j in range(len(head))]
    lines = ["  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(x, widths)))
             for x in [head] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
