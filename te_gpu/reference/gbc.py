r"""GBC, the Gaussian Bhattacharyya coefficient (Pandy et al., CVPR 2022); SPEC 5.

Per class c: mean :math:`\mu_c` and unbiased per-dimension variance floored at
:math:`10^{-4}`. ``spherical`` (default) replaces the variances by their mean
:math:`s_c` (a scalar); ``diagonal`` keeps them per dimension. With
:math:`s=(s_a+s_b)/2`,

.. math::
    BD(a,b)=\sum_d\frac{(\mu_a-\mu_b)_d^2}{8s}+\tfrac12\Big[\sum\log s
      -\tfrac12\sum\log s_a-\tfrac12\sum\log s_b\Big],

where, in the spherical case, the log terms are of the scalars (not times D),
as released. :math:`GBC=-\sum_{a\neq b}e^{-BD(a,b)}` over ordered pairs
(higher, i.e. closer to 0, means better separated classes).
"""
from __future__ import annotations

import numpy as np

from .._checks import as_features, as_labels, check_min_class_size


def class_gaussians(x: np.ndarray, codes: np.ndarray, n_classes: int):
    """Class means (C x D) and unbiased variances floored at 1e-4 (C x D)."""
    means = np.stack([x[codes == c].mean(axis=0) for c in range(n_classes)])
    var = np.stack([x[codes == c].var(axis=0, ddof=1) for c in range(n_classes)])
    return means, np.maximum(var, 1e-4)


def bhattacharyya(means: np.ndarray, var: np.ndarray, spherical: bool) -> np.ndarray:
    """C x C matrix of Bhattacharyya distances (diagonal included, unused)."""
    if spherical:
        s_c = var.mean(axis=1)                          # C
        s = 0.5 * (s_c[:, None] + s_c[None, :])         # C x C
        sq = ((means[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
        logs = np.log(s) - 0.5 * np.log(s_c)[:, None] - 0.5 * np.log(s_c)[None, :]
        return sq / (8.0 * s) + 0.5 * logs
    # one row at a time: a C x C x D block would not fit for C ~ 400, D ~ 2048
    logv = np.log(var).sum(axis=1)
    out = np.empty((means.shape[0], means.shape[0]))
    for a in range(means.shape[0]):
        s = 0.5 * (var[a][None, :] + var)               # C x D
        quad = ((means[a][None, :] - means) ** 2 / s).sum(axis=1) / 8.0
        out[a] = quad + 0.5 * (np.log(s).sum(axis=1) - 0.5 * logv[a] - 0.5 * logv)
    return out


def gbc(features, labels, *, gaussian: str = "spherical") -> float:
    """GBC score of one model (higher is better, at most 0)."""
    if gaussian not in ("spherical", "diagonal"):
        raise ValueError(f"gaussian must be 'spherical' or 'diagonal', got {gaussian!r}")
    x = as_features(features)
    codes, classes = as_labels(labels, x.shape[0])
    check_min_class_size(codes, 2, "GBC (unbiased class variances)")
    means, var = class_gaussians(x, codes, classes.size)
    bd = bhattacharyya(means, var, gaussian == "spherical")
    off = ~np.eye(classes.size, dtype=bool)
    return float(-np.exp(-bd[off]).sum())
