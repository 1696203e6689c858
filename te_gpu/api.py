"""te_gpu's public per-model functions, one per metric of :mod:`te_gpu.catalogue`, with
the reference's names and keywords, computed with torch on any device.

Each takes a numpy array or a torch tensor (any device, any real dtype), plus
``device`` (None: the input's device) and ``precision``: ``"exact"`` computes in
float64 and equals ``te_gpu.reference`` to the tolerances its tests state;
``"fast"`` keeps the features in float32 (see the README for what stays
float64). ``te_gpu.logme``, ``te_gpu.hscore``, ... are made here from the
catalogue's declarations: a metric added there is a function here, with the
docstring of :func:`te_gpu._stubs.metric_doc`; ``api.pyi`` (generated, kept equal
by a test) writes them out for grep, IDEs and type checkers.
"""
from __future__ import annotations

import inspect

import torch

from . import catalogue
from ._stubs import metric_doc, public_name, zoo_doc
from .engine import core
from .engine._tensor import (features_tensor, is_float32_input, labels_tensor, resolve_device,
                             working_dtype)
from .engine.stats import Labels


def _prepare(features, labels, device, precision, dtype=None):
    dev = resolve_device(device, features)
    dtype = dtype or working_dtype(precision)
    x = features_tensor(features, dev, dtype)
    codes, classes = labels_tensor(labels, x.shape[0], dev)
    return x[None], Labels.from_codes(codes, classes.size, dtype), is_float32_input(features)


def _inputs_check(m: catalogue.Metric, features, labels):
    """What the reference checks of a metric's inputs beyond features and labels."""
    if m.min_class_size > 1:
        from ._checks import as_labels, check_min_class_size

        codes, _ = as_labels(labels)
        check_min_class_size(codes, m.min_class_size, f"{m.title}")
    if m.inputs == "predictions":
        from ._checks import as_probabilities

        as_probabilities(features)


def score(features, labels, *, metric: str, sa=None, device=None, precision: str = "exact",
          regression: bool = False, **metric_options):
    """Any per-model metric by name, optionally after SA; see :func:`te_gpu.reference.score`.

    ``features``: the model's features (N x D), or for ``leep`` and ``nce`` the
    source model's softmax predictions (N x K).
    """
    m = catalogue.get(metric)
    if m.zoo_level:
        raise ValueError(f"{m.title} is a zoo-level score (min-max over models): use "
                         f"{m.name}(zoo, labels) or {m.name}_parts(features, labels)")
    return _score_one(m, features, labels, sa, device, precision, regression, metric_options)


def _score_one(m: catalogue.Metric, features, labels, sa, device, precision, regression,
               metric_options):
    """One model's value of ``m`` (a zoo-level metric: its per-model parts)."""
    options = m.resolve(metric_options)
    sa_kw = catalogue.resolve_sa(sa)
    if sa_kw is not None and not m.sa:
        raise ValueError(f"Spread/Attract perturbs features; {m.title} reads the source "
                         "model's predictions")
    if regression:
        return _regression(m, features, labels, device, precision, options)
    working_dtype(precision)
    _inputs_check(m, features, labels)
    x, lab, f32 = _prepare(features, labels, device, precision)
    lists, _ = core.score_batch(x, lab, (m.name,), sa_kw=sa_kw, opts={m.name: options},
                                pca_float32=f32)
    return lists[m.name][0]


def _regression(m: catalogue.Metric, features, labels, device, precision, options) -> float:
    """Real-valued targets (N or N x T), in float64 under either precision: a target
    the features fit almost exactly leaves a residual far below float32 rounding."""
    from ._checks import as_targets

    if not m.regression:
        raise ValueError(f"{m.title} is defined for class labels only; it has no regression form")
    working_dtype(precision)  # validates the name
    dev = resolve_device(device, features)
    x = features_tensor(features, dev, torch.float64)
    t = torch.as_tensor(as_targets(labels, x.shape[0]), device=dev, dtype=torch.float64)
    shared = core.Shared(x[None], None, targets=t)
    return float(m.engine_fn()(x[None], None, shared, **options)[0])


def spread_attract(features, labels, *, alpha: float = 0.005, sigma: float = 0.6,
                   force: float = 1.0, pca_dim: int = 64, gate: bool = True,
                   variant: str = "released", device=None, precision: str = "exact"):
    """Perturbed features (a tensor) and diagnostics; see :func:`te_gpu.reference.spread_attract`."""
    sa_kw = catalogue.resolve_sa(dict(alpha=alpha, sigma=sigma, force=force, pca_dim=pca_dim,
                                      gate=gate, variant=variant))
    x, lab, f32 = _prepare(features, labels, device, precision)
    open_mask, z, infos = core.sa_split(x, lab, sa_kw, shared=core.Shared(x, lab),
                                        pca_float32=f32)
    return (z[0] if open_mask[0] else x[0]), infos[0]


def _per_model_function(m: catalogue.Metric):
    """``te_gpu.<name>(features, labels, *, <options>, [regression,] device, precision)``."""
    def fn(features, labels, *, sa=None, device=None, precision="exact", regression=False, **kw):
        return _score_one(m, features, labels, sa, device, precision, regression, kw)

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("predictions" if m.inputs == "predictions" else "features",
                                inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("labels", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(o.name, kw, default=o.default) for o in m.options]
    if m.sa:
        params.append(inspect.Parameter("sa", kw, default=None))
    if m.regression:
        params.append(inspect.Parameter("regression", kw, default=False))
    params += [inspect.Parameter("device", kw, default=None),
               inspect.Parameter("precision", kw, default="exact")]
    fn.__signature__ = inspect.Signature(params)
    fn.__name__ = fn.__qualname__ = public_name(m)
    fn.__doc__ = metric_doc(m, "api")
    return fn


def _zoo_function(m: catalogue.Metric):
    """``te_gpu.<name>(zoo, labels, *, <options>, sa, device, precision)`` of a zoo-level metric."""
    def fn(zoo, labels, *, sa=None, device=None, precision="exact", **kw):
        from .zoo import score_zoo

        res = score_zoo(zoo, labels, metrics=(m.name,), sa=sa, device=device,
                        precision=precision, options={m.name: kw}, progress=False)
        label = res.label(m.name, sa)
        if label in res.undefined:     # the only score asked for: nothing else to keep
            raise ValueError(f"{m.title} is undefined for this zoo: {res.undefined[label]}")
        return res.scores[label]

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("zoo", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("labels", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(o.name, kw, default=o.default) for o in m.options]
    params += [inspect.Parameter("sa", kw, default=None), inspect.Parameter("device", kw, default=None),
               inspect.Parameter("precision", kw, default="exact")]
    fn.__signature__ = inspect.Signature(params)
    fn.__name__ = fn.__qualname__ = m.name
    fn.__doc__ = zoo_doc(m)
    return fn


def _exports() -> dict:
    metrics = list(catalogue.METRICS.values())
    per_model = {f.__name__: f for f in map(_per_model_function, metrics)}
    return {**per_model, **{m.name: _zoo_function(m) for m in metrics if m.zoo_level}}


globals().update(_exports())
__all__ = [*_exports(), "spread_attract", "score"]
