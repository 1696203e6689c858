r"""NCTI (Wang et al., ICCV 2023), a zoo-level score; SPEC 4.

Per model a tuple (seli, ncc, vc):

1. :math:`Z` = exact PCA of the features to :math:`n=\min(64,N-1,D)` dims
   (centred data has rank at most N-1: a further component would be rounding
   noise, which the LDA's standardisation would blow up).
2. :math:`\tau=\max(e^{-\sum_{i\le32}\lambda_i},10^{-10})` with :math:`\lambda_i` the
   explained variances (ddof 1). If :math:`\tau=10^{-10}` an LDA with
   scikit-learn's 'svd' solver semantics (rank tol :math:`10^{-4}`), else the
   'eigen' solver with shrinkage :math:`\tau`.
3. :math:`F` = LDA transform of Z (min(C-1, n) columns), centred;
   seli = :math:`\|F\|_*`. :math:`P` = LDA posteriors;
   ncc = :math:`\frac1N\sum_i P_{i,y_i}`; vc = :math:`\log\sum_c\|P_{y=c}\|_*`.

Over the zoo, :math:`NCTI_l=\mathrm{mm}(ncc)_l+\mathrm{mm}(seli)_l-\mathrm{mm}(vc)_l` with
min-max normalisation across models (:mod:`te_gpu.combine`): a component equal
across the zoo (within 1e-6 of its largest magnitude) is left out of the sum
with a warning, and with none left NCTI is undefined for that zoo.

'svd' semantics scale the within-class-centred, column-standardised data by
:math:`\sqrt{fac}`; ``lda_scaling="n_minus_c"`` (default) uses
:math:`fac=1/(N-C)` as scikit-learn 1.0.x did when NCTI was published, ``"n"``
uses :math:`1/N` as current scikit-learn does. The scaling changes seli and
ncc, so scores are comparable only under one convention.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from .._checks import as_features, as_labels
from ._common import class_means, nuclear_norm, population_cov, shrink, softmax, within_scatter
from .pca import exact_pca

PCA_DIM = 64
_SVD_TOL = 1e-4
LDA_SCALINGS = ("n_minus_c", "n")


def signal_components(explained: np.ndarray, n: int, d: int) -> np.ndarray:
    """Which principal components carry variance: ``explained > max(N, D) eps explained[0]``.

    A component of zero variance in exact arithmetic (a dead unit, a duplicated
    column, all of them when D <= 64) comes out of an SVD or of the covariance's
    eigendecomposition with scores of rounding size, and the 'svd' solver's
    standardisation would scale that noise to unit variance and fit the LDA to
    it. Its exact scores are zero, whose standard deviation the solver treats
    as 1: the component then plays no part. Below this floor the covariance
    route (scikit-learn's PCA for N >= 10 D, te_gpu's engine) cannot tell a
    real variance from noise.
    """
    return explained > max(n, d) * np.finfo(np.float64).eps * explained[0]


class _LinearDiscriminant:
    """The two scikit-learn LDA solvers NCTI uses, reduced to what it needs."""

    def __init__(self, z, codes, n_classes, shrinkage, lda_scaling):
        self.n_classes = n_classes
        counts, self.means = class_means(z, codes, n_classes)
        self.priors = counts / z.shape[0]
        self.max_components = min(n_classes - 1, z.shape[1])
        if shrinkage is None:
            self._fit_svd(z, codes, lda_scaling)
        else:
            self._fit_eigen(z, codes, shrinkage)

    def _fit_eigen(self, z, codes, tau):
        # shrink() is linear in S, so shrinking each class covariance (as
        # scikit-learn does) and averaging equals shrinking the average.
        sw = shrink(within_scatter(z, codes, self.means), tau)
        st = shrink(population_cov(z), tau)
        evals, evecs = scipy.linalg.eigh(st - sw, sw)
        evecs = evecs[:, np.argsort(evals)[::-1]]
        self.scalings = evecs[:, :self.max_components]
        self.offset = np.zeros(z.shape[1])  # the eigen solver's transform does not centre
        self.coef = self.means @ evecs @ evecs.T
        self.intercept = -0.5 * np.einsum("kd,kd->k", self.means, self.coef) + np.log(self.priors)

    def _fit_svd(self, z, codes, lda_scaling):
        n, c = z.shape[0], self.n_classes
        xc = z - self.means[codes]
        std = xc.std(axis=0)
        std[std == 0] = 1.0
        fac = 1.0 / (n - c) if lda_scaling == "n_minus_c" else 1.0 / n
        _, s, vt = scipy.linalg.svd(np.sqrt(fac) * (xc / std), full_matrices=False)
        rank = int((s > _SVD_TOL).sum())
        scalings = (vt[:rank] / std).T / s[:rank]
        xbar = self.priors @ self.means
        fac_b = 1.0 / (c - 1)
        centres = (np.sqrt(n * self.priors * fac_b) * (self.means - xbar).T).T @ scalings
        _, s2, vt2 = scipy.linalg.svd(centres, full_matrices=False)
        rank2 = int((s2 > _SVD_TOL * s2[0]).sum())
        self.scalings = (scalings @ vt2.T[:, :rank2])[:, :self.max_components]
        full = scalings @ vt2.T[:, :rank2]
        self.offset = xbar
        coef = (self.means - xbar) @ full
        self.intercept = -0.5 * (coef ** 2).sum(axis=1) + np.log(self.priors)
        self.coef = coef @ full.T
        self.intercept = self.intercept - xbar @ self.coef.T

    def transform(self, z):
        return (z - self.offset) @ self.scalings

    def predict_proba(self, z):
        return softmax(z @ self.coef.T + self.intercept)


def ncti_parts(features, labels, *, lda_scaling: str = "n_minus_c"):
    """NCTI's per-model tuple ``(seli, ncc, vc)``; combine over a zoo with :func:`ncti`."""
    if lda_scaling not in LDA_SCALINGS:
        raise ValueError(f"lda_scaling must be one of {LDA_SCALINGS}, got {lda_scaling!r}")
    x = as_features(features)
    codes, classes = as_labels(labels, x.shape[0])
    n, d = x.shape
    n_classes = classes.size
    if n <= n_classes:
        raise ValueError(f"NCTI needs more samples ({n}) than classes ({n_classes})")
    z, explained, _ = exact_pca(x, min(PCA_DIM, n - 1, d))
    z[:, ~signal_components(explained[:z.shape[1]], n, d)] = 0.0
    tau = max(float(np.exp(-explained[:32].sum())), 1e-10)
    lda_model = _LinearDiscriminant(z, codes, n_classes,
                                    None if tau == 1e-10 else tau, lda_scaling)
    f = lda_model.transform(z)
    f = f - f.mean(axis=0)
    seli = nuclear_norm(f)
    p = lda_model.predict_proba(z)
    ncc = float(p[np.arange(n), codes].mean())
    vc = float(np.log(sum(nuclear_norm(p[codes == c]) for c in range(n_classes))))
    return seli, ncc, vc


def minmax_combine(parts: dict) -> dict:
    """Zoo normalisation ``mm(ncc) + mm(seli) - mm(vc)`` per model (``parts``: model ->
    (seli, ncc, vc)), through :func:`te_gpu.combine.combine_zoo`: a part equal across the
    zoo is left out with a warning. Raises ``ValueError`` when nothing can be combined
    (fewer than two models, or every part constant)."""
    from ..combine import combine_zoo

    return combine_zoo("ncti", parts, strict=True).scores


def ncti(zoo, labels, *, lda_scaling: str = "n_minus_c", sa=None) -> dict:
    """NCTI of every model of a zoo (mapping name -> features): {model: score}
    (:func:`te_gpu.reference.score.zoo_score`); ``sa`` applies Spread/Attract first."""
    from .score import zoo_score

    return zoo_score("ncti", zoo, labels, sa=sa, lda_scaling=lda_scaling)
