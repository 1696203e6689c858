r"""TransRate (Huang et al., ICML 2022), as released with the paper and in tllib.

With :math:`Z = X - \bar x` (one global centring; a class's rows
:math:`Z_c` are not re-centred) and the coding rate of an n x D block

.. math::
    R(A,\epsilon)=\tfrac12\log\det\Big(I_D+\frac{1}{n\epsilon}A^TA\Big)
      =\tfrac12\log\det\Big(I_n+\frac{1}{n\epsilon}AA^T\Big)

(Sylvester's identity: the smaller side is used),

.. math::
    \mathrm{TrR}=R(Z,\epsilon)-\frac1C\sum_c R(Z_c,\epsilon),\qquad \epsilon=10^{-4}.

Each block is normalised by its own row count. The paper's text writes the
rate of maximal coding-rate reduction (Yu et al. 2020), with
:math:`d/(n\epsilon^2)` in place of :math:`1/(n\epsilon)` (the same family:
:math:`\epsilon\to\epsilon^2/d`) and class weights :math:`n_c/N`; its released
code, which produced its numbers, takes the plain mean over classes.
``class_weights="proportional"`` gives the :math:`n_c/N` weighting. The score
depends on the features' scale (eps is absolute). Classification only.
"""
from __future__ import annotations

import math

import numpy as np

from .._checks import as_features, as_labels

EPS = 1e-4
CLASS_WEIGHTS = ("uniform", "proportional")


def check_options(eps, class_weights) -> float:
    """Validate TransRate's options; returns eps as a float."""
    number = isinstance(eps, (int, float)) and not isinstance(eps, bool)
    if not number or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    if class_weights not in CLASS_WEIGHTS:
        raise ValueError(f"class_weights must be one of {CLASS_WEIGHTS}, got {class_weights!r}")
    return float(eps)


def coding_rate(a: np.ndarray, eps: float) -> float:
    r""":math:`\frac12\log\det(I+A^TA/(n\epsilon))` of an n x D block, on its smaller Gram."""
    n, d = a.shape
    g = a @ a.T if n < d else a.T @ a
    sign, logdet = np.linalg.slogdet(np.eye(g.shape[0]) + g / (n * eps))
    return 0.5 * float(logdet)


def transrate(features, labels, *, eps: float = EPS, class_weights: str = "uniform",
              regression: bool = False) -> float:
    """TransRate of one model (higher is better)."""
    if regression:
        raise ValueError("TransRate is defined for class labels only; it has no regression form")
    eps = check_options(eps, class_weights)
    x = as_features(features)
    codes, classes = as_labels(labels, x.shape[0])
    z = x - x.mean(axis=0)
    counts = np.bincount(codes)
    rates = np.array([coding_rate(z[codes == c], eps) for c in range(classes.size)])
    if class_weights == "proportional":
        w = counts / counts.sum()
    else:
        w = np.full(classes.size, 1.0 / classes.size)
    return coding_rate(z, eps) - float(w @ rates)
