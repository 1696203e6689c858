r"""H-score (Bao et al., ICIP 2019) and the shrinkage H-score (Ibrahim et al., ICLR 2022).

Notation: :math:`X_c` the globally centred features (N x D), :math:`\bar x` the
global mean, :math:`\mu_k, n_k` the class means and counts, and the two
scatters :math:`S_t = X_c^TX_c` and
:math:`S_b=\sum_k n_k(\mu_k-\bar x)(\mu_k-\bar x)^T`.

**H-score** :math:`\mathcal H=\mathrm{tr}(\mathrm{cov}(f)^{+}\,\mathrm{cov}(E[f|y]))`.
Both sample covariances carry the same 1/(N-1), which cancels:

.. math::
    \mathcal H=\mathrm{tr}(S_t^{+}S_b)
      =\sum_{i:\,|\lambda_i|>r\lambda_{\max}}\frac{|V_i^TB^T|^2}{\lambda_i},

with :math:`S_t=V\Lambda V^T` and the rows of B the vectors
:math:`\sqrt{n_k}(\mu_k-\bar x)`. Eigenvalues up to ``rcond`` (r = 1e-15) times
the largest are dropped, as ``np.linalg.pinv(cov, rcond=1e-15)`` does in tllib.
The projected form never forms :math:`S_t^+`: a direction that rounding alone
keeps (duplicated or dead columns) meets B only at rounding level, and
contributes its square. On N <= D features of rank N-1 the score saturates at
C-1 for every model; the shrinkage form below does not.

**Regularized H-score**: the population covariance :math:`\Sigma=S_t/N` is
shrunk towards :math:`m I`, :math:`m=\mathrm{tr}\,\Sigma/D`, with the
Ledoit-Wolf weight (scikit-learn's ``ledoit_wolf_shrinkage``):

.. math::
    \delta=\frac{\|\Sigma\|_F^2-(\mathrm{tr}\,\Sigma)^2/D}{D},\quad
    \beta=\frac{\frac1N\sum_n|x_{c,n}|^4-\|\Sigma\|_F^2}{DN},\quad
    \alpha=\frac{\min(\beta,\delta)}{\delta}\ (0\text{ if }\min(\beta,\delta)=0),

.. math::
    \mathcal H_\alpha=(1-\alpha)\,\mathrm{tr}\Big(\big[(1-\alpha)\Sigma+\alpha mI\big]^{+}
      \frac{S_b}{N-1}\Big).

The 1/N of the shrunk covariance against the 1/(N-1) of the between term is
as released (tllib's ``regularized_h_score``, transformer-ranker's ``HScore``):
kept. Both scores are classification-only.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from .._checks import as_features, as_labels

RCOND = 1e-15


def _refuse_regression(regression: bool, name: str) -> None:
    if regression:
        raise ValueError(f"{name} is defined for class labels only; it has no regression form")


def between_rows(xc: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    r"""Rows :math:`\sqrt{n_k}(\mu_k-\bar x)` (C x D) of centred features: :math:`S_b=B^TB`."""
    sums = np.zeros((n_classes, xc.shape[1]))
    np.add.at(sums, codes, xc)
    return sums / np.sqrt(np.bincount(codes, minlength=n_classes))[:, None]


def pinv_quadratic(evals: np.ndarray, evecs: np.ndarray, b: np.ndarray, rcond: float) -> float:
    r""":math:`\mathrm{tr}(B A^{+} B^T)` for :math:`A=V\,\mathrm{diag}(\lambda)V^T`,
    dropping :math:`|\lambda_i|\le` rcond :math:`\max|\lambda|` (pinv's rule)."""
    top = np.abs(evals).max()
    keep = np.abs(evals) > rcond * top
    if not keep.any():
        return 0.0
    w = evecs[:, keep].T @ b.T                          # r x C
    return float(((w * w).sum(axis=1) / evals[keep]).sum())


def _centred(features, labels, name, regression, rcond):
    _refuse_regression(regression, name)
    if isinstance(rcond, bool) or not isinstance(rcond, (int, float)) or not 0 <= rcond < 1:
        raise ValueError(f"rcond must be a number in [0, 1), got {rcond!r}")
    x = as_features(features)
    codes, classes = as_labels(labels, x.shape[0])
    xc = x - x.mean(axis=0)
    return xc, codes, classes.size


def h_score(features, labels, *, rcond: float = RCOND, regression: bool = False) -> float:
    """H-score of one model (higher is better), as tllib's ``h_score``."""
    xc, codes, c = _centred(features, labels, "H-score", regression, rcond)
    evals, evecs = scipy.linalg.eigh(xc.T @ xc)
    return pinv_quadratic(evals, evecs, between_rows(xc, codes, c), rcond)


def ledoit_wolf(xc: np.ndarray):
    """(population covariance, shrinkage alpha, target scale m) of centred features."""
    n, d = xc.shape
    cov = xc.T @ xc / n
    tr = np.trace(cov)
    fro2 = float((cov * cov).sum())
    delta = (fro2 - tr * tr / d) / d
    row4 = float(((xc * xc).sum(axis=1) ** 2).sum())
    beta = min((row4 / n - fro2) / (d * n), delta)
    alpha = 0.0 if beta <= 0 else beta / delta
    return cov, alpha, tr / d


def regularized_h_score(features, labels, *, rcond: float = RCOND,
                        regression: bool = False) -> float:
    """Ledoit-Wolf shrinkage H-score of one model (higher is better), as tllib's
    ``regularized_h_score``."""
    xc, codes, c = _centred(features, labels, "the regularized H-score", regression, rcond)
    n = xc.shape[0]
    cov, alpha, m = ledoit_wolf(xc)
    # the shrunk covariance has the eigenvectors of cov: shift its eigenvalues
    evals, evecs = scipy.linalg.eigh(cov)
    evals = (1.0 - alpha) * evals + alpha * m
    b = between_rows(xc, codes, c)
    return float((1.0 - alpha) * pinv_quadratic(evals, evecs, b, rcond) / (n - 1))
