"""One entry point for every per-model metric, with optional Spread/Attract (SPEC 7.5)."""
from __future__ import annotations

from .gbc import gbc
from .lda import lda
from .logme import logme
from .nleep import nleep
from .sa import resolve_sa, spread_attract
from .sfda import sfda

METRICS = {"logme": logme, "sfda": sfda, "lda": lda, "gbc": gbc, "nleep": nleep}


def get_metric(metric: str):
    """Look a metric function up by (case-insensitive) name."""
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a name, got {type(metric).__name__}")
    key = metric.lower()
    if key == "ncti":
        raise ValueError("NCTI is a zoo-level score (min-max over models): use "
                         "ncti(zoo, labels) or ncti_parts(features, labels)")
    if key not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)} (or ncti)")
    return METRICS[key]


def score(features, labels, *, metric: str, sa=None, **metric_options) -> float:
    """Score one model's features with ``metric``, optionally after SA.

    ``sa``: None (raw features), a variant name (``"released"``,
    ``"described"``, ``"pca-only"``) with the default options, or a dict of
    :func:`spread_attract` options. Extra keywords go to the metric
    (e.g. ``gaussian="diagonal"`` for GBC, ``seed`` for NLEEP).
    """
    fn = get_metric(metric)
    sa_kw = resolve_sa(sa)
    if sa_kw is not None:
        features, _ = spread_attract(features, labels, **sa_kw)
    return fn(features, labels, **metric_options)
