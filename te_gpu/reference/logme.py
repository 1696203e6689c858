r"""LogME (You et al., ICML 2021), fixed-point form (arXiv 2110.10545); SPEC 1.

For one target vector :math:`t \in \mathbb R^N` and features
:math:`X \in \mathbb R^{N\times D}` (float64, no centring, no bias column),
Bayesian linear regression with prior :math:`w\sim\mathcal N(0,\alpha^{-1}I)` and
noise precision :math:`\beta` has log evidence

.. math::
    \mathcal L = \tfrac D2\log\alpha + \tfrac N2\log\beta
      - \tfrac12\sum_i\log(\alpha+\beta\sigma_i) - \tfrac\beta2\,\mathrm{res}^2
      - \tfrac\alpha2\,|m|^2 - \tfrac N2\log 2\pi,

where :math:`\sigma_i` are the eigenvalues of :math:`X^TX`. With
:math:`x = U^T t` (U the left singular vectors) and :math:`\tau=\alpha/\beta`,
:math:`\gamma=\sum\sigma/(\sigma+\tau)`, :math:`|m|^2=\sum\sigma x^2/(\tau+\sigma)^2`,
:math:`\mathrm{res}^2=\sum x^2/(1+\sigma/\tau)^2 + (|t|^2-|x|^2)`, the fixed point
:math:`\alpha=\gamma/(|m|^2+\epsilon)`, :math:`\beta=(N-\gamma)/(\mathrm{res}^2+\epsilon)`
(:math:`\epsilon=10^{-5}`) runs at most 11 times, stopping when
:math:`|\tau_{new}-\tau|/\tau\le10^{-3}`. LogME is the mean of :math:`\mathcal L/N`
over classes (one-hot targets) or target columns (regression).

Known upstream defect (thuml/LogME issue 23): when N <= D the thin SVD gives
k = N eigenvalues and the sum over :math:`\log(\alpha+\beta\sigma_i)` runs over those
only, omitting :math:`(D-N)\log\alpha`. ``corrected=False`` (default) reproduces the
released value; ``corrected=True`` adds the missing terms (thuml/LogME PR #24
pads sigma with zeros), which is the true evidence. For N > D every one of the
D eigenvalues is a term, zero eigenvalues of a rank-deficient X included (as
released: their computed values are rounding noise, kept).
"""
from __future__ import annotations

import math

import numpy as np

from .._checks import as_features, as_labels, as_targets

_MAX_ITER = 11
_EPS = 1e-5
_TOL = 1e-3


def noise_floor(sigma_max: float, n: int, d: int, eps: float) -> float:
    """Largest eigenvalue of a computed X^T X that is rounding noise.

    An eigenvalue that is zero in exact arithmetic (a dead unit, a duplicated
    or collinear column) comes out of the Gram product and the eigensolver as
    ``O(max(N, D) eps sigma_max)``.
    """
    return max(n, d) * eps * max(sigma_max, 0.0)


def spectrum(x: np.ndarray, targets: np.ndarray):
    """Eigenvalues ``sigma`` (k,) of X^T X and projections ``U^T targets`` (k x T).

    Every eigenvalue the released code sums over is returned, so the evidence
    has its ``log(alpha + beta sigma)`` term. Eigenvalues at rounding-noise
    level (:func:`noise_floor`) come back as exact zeros with zero projections:
    their term is then ``log(alpha)``, the exact-arithmetic value, where the
    released code adds ``log(alpha + beta * noise)``, the same number to
    rounding, and its projections of noise directions, which rounding decides.

    N > D: eigendecompose the Gram matrix; the released rank rule
    ``sqrt(sigma) > 1e-10`` drops an eigenvalue only where it is not noise (the
    released code keeps noise eigenvalues, whose computed values are above
    1e-20 unless X is tiny). N <= D: a thin SVD of X, k = N terms, no rule.
    """
    n, d = x.shape
    eps = np.finfo(np.float64).eps
    if n > d:
        evals, v = np.linalg.eigh(x.T @ x)
        order = np.argsort(evals)[::-1]
        evals, v = evals[order], v[:, order]
        noise = evals <= noise_floor(evals[0], n, d, eps)
        keep = noise | (evals > 1e-20)
        sigma, v, noise = np.where(noise, 0.0, evals)[keep], v[:, keep], noise[keep]
        root = np.sqrt(np.where(noise, 1.0, sigma))
        proj = (v.T @ (x.T @ targets)) / root[:, None]
        proj[noise] = 0.0
    else:
        u, s, _ = np.linalg.svd(x, full_matrices=False)
        sigma = s ** 2
        # singular values at noise level (numpy's matrix_rank tolerance): a
        # target's component along such a left null direction is residual either
        # way; the zero makes the term log(alpha) exactly
        sigma[s <= max(n, d) * eps * s[0]] = 0.0
        proj = u.T @ targets
    return sigma, proj


def evidence(sigma: np.ndarray, x: np.ndarray, t_sq: float, n: int, d: int,
             corrected: bool = False):
    """Maximised log evidence / N for one target, and the final (alpha, beta).

    ``x`` = U^T t (k,), ``t_sq`` = |t|^2.
    """
    x2 = x * x
    # |t|^2 minus its projection on the column space: a squared residual, >= 0;
    # clamped so that rounding cannot make it negative when a target is fit exactly
    r0 = max(t_sq - x2.sum(), 0.0)
    alpha, beta = 1.0, 1.0
    for _ in range(_MAX_ITER):
        t = alpha / beta
        gamma = (sigma / (sigma + t)).sum()
        # N - gamma as (N - k) + sum t/(sigma + t): the same number, without the
        # cancellation that turns it into 0 or less (and beta into NaN) when N <= D
        # and the features fit every target exactly
        rest = (n - sigma.size) + (t / (sigma + t)).sum()
        m2 = (sigma * x2 / (t + sigma) ** 2).sum()
        res2 = (x2 / (1.0 + sigma / t) ** 2).sum() + r0
        alpha = gamma / (m2 + _EPS)
        beta = rest / (res2 + _EPS)
        if abs(alpha / beta - t) / t <= _TOL:
            break
    ev = (d / 2.0 * math.log(alpha) + n / 2.0 * math.log(beta)
          - 0.5 * np.log(alpha + beta * sigma).sum()
          - beta / 2.0 * res2 - alpha / 2.0 * m2 - n / 2.0 * math.log(2 * math.pi))
    if corrected:
        ev -= 0.5 * (d - sigma.size) * math.log(alpha)
    return ev / n, alpha, beta


def logme(features, labels, *, regression: bool = False, corrected: bool = False) -> float:
    """LogME score of one model (higher is better).

    Parameters
    ----------
    features : array-like, N x D
    labels : N integer class ids, or, with ``regression=True``, N or N x T real targets.
    regression : treat ``labels`` as real targets, one evidence per column.
    corrected : include the (D - k) log(alpha) terms that the released code omits.
    """
    x = as_features(features)
    n, d = x.shape
    if regression:
        targets = as_targets(labels, n)
    else:
        codes, classes = as_labels(labels, n)
        targets = np.zeros((n, classes.size))
        targets[np.arange(n), codes] = 1.0
    sigma, proj = spectrum(x, targets)
    if sigma.size == 0 or sigma.max() <= 1e-20:
        raise ValueError("LogME: every singular value of the features is <= 1e-10, the released rank "
                         "threshold: all-zero (or vanishingly small) features carry no signal; rescale them")
    t_sq = (targets ** 2).sum(axis=0)
    scores = [evidence(sigma, proj[:, j], t_sq[j], n, d, corrected)[0]
              for j in range(targets.shape[1])]
    return float(np.mean(scores))
