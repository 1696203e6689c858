r"""SFDA (Shao et al., ECCV 2022) as released; SPEC 2.

1. Within scatter :math:`S_w=\sum_k\pi_k\mathrm{Cov}_k` (population covariances);
   shrinkage :math:`\lambda=\max(e^{-5\rho},10^{-10})` with :math:`\rho` from three
   rounds of power iteration on :math:`S_w` started at its row sums.
2. Regularised Fisher discriminant: the released code solves
   ``eigh(S_b, S_w')`` and keeps every direction, so
   :math:`\mathrm{coef}=M W W^T = M S_w'^{-1}` with
   :math:`S_w'=(1-\lambda)S_w+\lambda\,\mathrm{tr}(S_w)/D\,I`; here a Cholesky solve.
   Logits :math:`x\cdot\mathrm{coef}_k-\tfrac12\mu_k\cdot\mathrm{coef}_k+\log\pi_k`.
3. ConfMix: :math:`p=\mathrm{softmax}(\mathrm{softmax}(\text{logits}))` (a softmax of
   probabilities, as released); each sample of class k moves to
   :math:`p_k x+(1-p_k)\,\bar\mu_{\neg k}` with
   :math:`\bar\mu_{\neg k}=(\sum_j\mu_j-\mu_k)/(C-1)`, on a copy.
4. Refit on the mixed features with the first :math:`\lambda`;
   SFDA is the mean probability of the true class (no log).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from .._checks import as_features, as_labels
from ._common import class_means, power_iteration_top, shrink, softmax, within_scatter


def shrinkage_of(sw: np.ndarray) -> float:
    """SFDA's adaptive shrinkage from the (basis-dependent) 3-round power iteration."""
    rho = power_iteration_top(sw, rounds=3)
    return max(float(np.exp(-5.0 * rho)), 1e-10)


def fit_logits(x: np.ndarray, codes: np.ndarray, n_classes: int, lam: float | None):
    """One regularised FDA fit; returns (logits N x C, lambda used, class means)."""
    n = x.shape[0]
    counts, means = class_means(x, codes, n_classes)
    sw = within_scatter(x, codes, means)
    if lam is None:
        lam = shrinkage_of(sw)
    sw_shrunk = shrink(sw, lam)
    try:
        chol = scipy.linalg.cho_factor(sw_shrunk, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        raise ValueError("SFDA: the shrunk within-class scatter is not positive definite "
                         "(features have no within-class variance)") from None
    coef = scipy.linalg.cho_solve(chol, means.T, check_finite=False).T  # C x D
    if not np.all(np.isfinite(coef)):  # a subnormal scatter factors, but its inverse overflows
        raise ValueError("SFDA: the shrunk within-class scatter is not positive definite "
                         "(features have no within-class variance)")
    intercept = -0.5 * np.einsum("kd,kd->k", means, coef) + np.log(counts / n)
    return x @ coef.T + intercept, lam, means


def sfda(features, labels) -> float:
    """SFDA score of one model (higher is better); inputs are never modified."""
    x = as_features(features)
    codes, classes = as_labels(labels, x.shape[0])
    n_classes = classes.size
    n = x.shape[0]
    logits, lam, means = fit_logits(x, codes, n_classes, None)
    p = softmax(softmax(logits))
    outer = (means.sum(axis=0)[None, :] - means) / (n_classes - 1)
    p_true = p[np.arange(n), codes][:, None]
    mixed = p_true * x + (1.0 - p_true) * outer[codes]
    logits2, _, _ = fit_logits(mixed, codes, n_classes, lam)
    p2 = softmax(logits2)
    return float(p2[np.arange(n), codes].mean())
