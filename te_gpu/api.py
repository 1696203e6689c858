"""te_gpu's public per-model functions: the reference's names and keywords, computed
with torch on any device.

Each takes a numpy array or a torch tensor (any device, any real dtype), plus
``device`` (None: the input's device) and ``precision``: ``"exact"`` computes in
float64 and equals ``te_gpu.reference`` to the tolerances its tests state;
``"fast"`` computes in float32.
"""
from __future__ import annotations

import torch

from .engine import core
from .engine import sa as sa_ops
from .engine._tensor import (features_tensor, is_float32_input, labels_tensor, resolve_device,
                             working_dtype)
from .engine.ncti import minmax_combine
from .engine.stats import Labels, batch_stats, spectrum
from .reference.sa import resolve_sa
from .reference.score import get_metric

__all__ = ["logme", "sfda", "lda", "gbc", "nleep", "ncti_parts", "ncti", "spread_attract", "score"]


def _prepare(features, labels, device, precision):
    dev = resolve_device(device, features)
    dtype = working_dtype(precision)
    x = features_tensor(features, dev, dtype)
    codes, classes = labels_tensor(labels, x.shape[0], dev)
    return x[None], Labels.from_codes(codes, classes.size, dtype), is_float32_input(features)


def _single(metric, features, labels, device, precision, sa=None, **opts):
    x, lab, f32 = _prepare(features, labels, device, precision)
    options = dict(core.DEFAULT_OPTIONS, **opts)
    lists, _ = core.score_batch(x, lab, (metric,), sa_kw=resolve_sa(sa), opts=options,
                                pca_float32=f32)
    return lists[metric][0]


def logme(features, labels, *, regression: bool = False, corrected: bool = False,
          device=None, precision: str = "exact") -> float:
    """LogME (SPEC 1); see :func:`te_gpu.reference.logme`."""
    if not regression:
        return _single("logme", features, labels, device, precision, corrected=corrected)
    from ._checks import as_targets
    from .engine.logme import logme_batched

    dev = resolve_device(device, features)
    working_dtype(precision)  # validates the name
    # float64 under either precision: a target the features fit (almost) exactly
    # leaves a residual at the 1e-5 guard's scale, far below float32 rounding of X^T t
    x = features_tensor(features, dev, torch.float64)
    t = torch.as_tensor(as_targets(labels, x.shape[0]), device=dev, dtype=torch.float64)
    return float(logme_batched(x[None], t, corrected=corrected)[0])


def sfda(features, labels, *, device=None, precision: str = "exact") -> float:
    """SFDA (SPEC 2); see :func:`te_gpu.reference.sfda`."""
    return _single("sfda", features, labels, device, precision)


def lda(features, labels, *, device=None, precision: str = "exact") -> float:
    """The SA repository's LDA score (SPEC 3); see :func:`te_gpu.reference.lda`."""
    return _single("lda", features, labels, device, precision)


def gbc(features, labels, *, gaussian: str = "spherical", device=None,
        precision: str = "exact") -> float:
    """GBC (SPEC 5); see :func:`te_gpu.reference.gbc`."""
    if gaussian not in ("spherical", "diagonal"):
        raise ValueError(f"gaussian must be 'spherical' or 'diagonal', got {gaussian!r}")
    _min_class_size(labels, 2, "GBC (unbiased class variances)")
    return _single("gbc", features, labels, device, precision, gaussian=gaussian)


def nleep(features, labels, *, components_per_class: int = 5, seed: int = 0, device=None,
          precision: str = "exact") -> float:
    """NLEEP (SPEC 6), seeded; see :func:`te_gpu.reference.nleep`."""
    return _single("nleep", features, labels, device, precision,
                   components_per_class=components_per_class, seed=seed)


def ncti_parts(features, labels, *, lda_scaling: str = "n_minus_c", device=None,
               precision: str = "exact"):
    """NCTI's (seli, ncc, vc) of one model (SPEC 4)."""
    _check_scaling(lda_scaling)
    return _single("ncti", features, labels, device, precision, lda_scaling=lda_scaling)


def ncti(zoo, labels, *, lda_scaling: str = "n_minus_c", sa=None, device=None,
         precision: str = "exact") -> dict:
    """NCTI of every model of a zoo: {model: score} (min-max over the zoo)."""
    from .zoo import score_zoo

    _check_scaling(lda_scaling)
    res = score_zoo(zoo, labels, metrics=("ncti",), sa=sa, device=device, precision=precision,
                    lda_scaling=lda_scaling, progress=False)
    return res.scores[res.label("ncti", sa)]


def spread_attract(features, labels, *, alpha: float = 0.005, sigma: float = 0.6,
                   force: float = 1.0, pca_dim: int = 64, gate: bool = True,
                   variant: str = "released", device=None, precision: str = "exact"):
    """Perturbed features (a tensor) and diagnostics; see :func:`te_gpu.reference.spread_attract`."""
    sa_kw = resolve_sa(dict(alpha=alpha, sigma=sigma, force=force, pca_dim=pca_dim, gate=gate,
                            variant=variant))
    _check_sa_numbers(sa_kw)
    x, lab, f32 = _prepare(features, labels, device, precision)
    st = batch_stats(x, lab)
    eig = spectrum(x, st)
    open_mask, z, infos = core.sa_split(x, lab, sa_kw, eig=eig, pca_float32=f32)
    return (z[0] if open_mask[0] else x[0]), infos[0]


def score(features, labels, *, metric: str, sa=None, device=None, precision: str = "exact",
          **metric_options) -> float:
    """Any per-model metric by name, optionally after SA; see :func:`te_gpu.reference.score`."""
    get_metric(metric)  # validates the name (and refuses NCTI, a zoo-level score)
    key = metric.lower()
    unknown = set(metric_options) - _OPTIONS_OF.get(key, set())
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for metric {key!r}")
    if key == "gbc":
        _min_class_size(labels, 2, "GBC (unbiased class variances)")
    sa_kw = resolve_sa(sa)
    if sa_kw is not None:
        _check_sa_numbers(sa_kw)
    return _single(key, features, labels, device, precision, sa=sa_kw, **metric_options)


_OPTIONS_OF = {"logme": {"corrected"}, "gbc": {"gaussian"}, "nleep": {"components_per_class", "seed"},
               "sfda": set(), "lda": set()}


def _check_scaling(lda_scaling):
    if lda_scaling not in ("n_minus_c", "n"):
        raise ValueError(f"lda_scaling must be 'n_minus_c' or 'n', got {lda_scaling!r}")


def _check_sa_numbers(sa_kw):
    import math

    for name in ("alpha", "sigma", "force"):
        if not math.isfinite(sa_kw[name]):
            raise ValueError(f"SA option {name} must be finite, got {sa_kw[name]}")
    p = sa_kw["pca_dim"]
    if int(p) != p or p < 1:
        raise ValueError(f"pca_dim must be a positive integer, got {p}")


def _min_class_size(labels, minimum, what):
    from ._checks import as_labels, check_min_class_size

    codes, _ = as_labels(labels)
    check_min_class_size(codes, minimum, what)
