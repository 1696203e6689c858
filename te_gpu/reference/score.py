"""One entry point for every per-model metric of the catalogue, with optional
Spread/Attract (SPEC 7.5) or PED (SPEC 10.9)."""
from __future__ import annotations

from .. import catalogue
from .ped import ped
from .sa import resolve_sa, spread_attract


def perturbed(features, labels, sa_kw):
    """The features after the resolved SA or PED setting ``sa_kw`` (PED rescaled by the
    features' own statistics, as the engine's settings)."""
    if sa_kw["variant"] == catalogue.PED:
        return ped(features, labels, **{k: v for k, v in sa_kw.items() if k != "variant"})[0]
    return spread_attract(features, labels, **sa_kw)[0]


def get_metric(metric: str):
    """The reference function of a per-model metric, by (case-insensitive) name."""
    m = catalogue.get(metric)
    if m.zoo_level:
        raise ValueError(f"{m.title} is a zoo-level score (min-max over models): use "
                         f"{m.name}(zoo, labels) or {m.name}_parts(features, labels)")
    return m.reference_fn()


def score(features, labels, *, metric: str, sa=None, **metric_options) -> float:
    """Score one model with ``metric`` (features, or the source model's predictions for
    LEEP and NCE), optionally after SA.

    ``sa``: None (raw features), a variant name (``"released"``,
    ``"described"``, ``"pca-only"``, or ``"ped"`` for PED) with the default options, or a
    dict of :func:`spread_attract` (or, with ``variant="ped"``, PED's) options. Extra
    keywords are the metric's options
    (e.g. ``gaussian="diagonal"`` for GBC, ``seed`` for NLEEP) and, for LogME,
    ``regression``.
    """
    fn = get_metric(metric)
    m = catalogue.get(metric)
    regression = metric_options.pop("regression", False)
    if regression and not m.regression:
        raise ValueError(f"{m.title} is defined for class labels only; it has no regression form")
    options = m.resolve(metric_options)
    sa_kw = resolve_sa(sa)
    if sa_kw is not None:
        if not m.sa:
            raise ValueError(f"Spread/Attract perturbs features; {m.title} reads the source "
                             "model's predictions")
        features = perturbed(features, labels, sa_kw)
    if regression:
        return fn(features, labels, regression=True, **options)
    return fn(features, labels, **options)


def zoo_score(metric: str, zoo, labels, *, sa=None, **metric_options) -> dict:
    """A zoo-level metric (NCTI, ETran) of every model of ``zoo`` (mapping name ->
    features): each model's parts, optionally after SA, combined over the zoo by
    :func:`te_gpu.combine.combine_zoo` (a part equal across the zoo left out with a
    warning). Raises ``ValueError`` where the metric is undefined for the zoo."""
    from ..combine import combine_zoo

    m = catalogue.get(metric)
    if not m.zoo_level:
        raise ValueError(f"{m.title} is a per-model score: use score(features, labels, "
                         f"metric={m.name!r})")
    if not hasattr(zoo, "items") or len(zoo) == 0:
        raise ValueError("zoo must be a non-empty mapping of model name -> features")
    options = m.resolve(metric_options)
    sa_kw = resolve_sa(sa)
    parts = {}
    for name, feats in zoo.items():
        if sa_kw is not None:
            feats = perturbed(feats, labels, sa_kw)
        parts[name] = m.reference_fn()(feats, labels, **options)
    return combine_zoo(m, parts, strict=True).scores
