r"""NLEEP (Li et al., CVPR 2021) as in the SFDA lineage; SPEC 6.

1. PCA keeping 80 % of the variance.
2. A Gaussian mixture of :math:`K=rC` full-covariance components: k-means++
   then Lloyd iterations for the initial responsibilities, then EM
   (``reg_covar`` :math:`10^{-6}`, tolerance :math:`10^{-3}` on the mean
   log-likelihood, at most 100 iterations), all seeded.
3. With posteriors :math:`Q_{iz}`: :math:`p(y,z)=\frac1N\sum_{i:y_i=y}Q_{iz}`,
   :math:`p(y|z)=p(y,z)/\sum_{y'}p(y',z)`, and
   :math:`\mathrm{NLEEP}=\frac1N\sum_i\sum_z Q_{iz}\,p(y_i|z)` (no log).

The mixture is random: another implementation agrees statistically, not bit
for bit. Given the same ``seed`` this one is deterministic.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.special import logsumexp

from .._checks import as_features, as_labels
from .pca import pca_keep_variance

_REG_COVAR = 1e-6
_EM_TOL = 1e-3
_EM_MAX_ITER = 100


def _sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def n_local_trials(k: int) -> int:
    """Candidates per centre of greedy k-means++ (as scikit-learn's KMeans)."""
    return 2 + int(np.log(k))


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, max_iter: int = 300,
           tol: float = 1e-4) -> np.ndarray:
    """Greedy k-means++ seeding then Lloyd iterations; returns the labels (N,).

    Seeding (greedy k-means++, the initialisation scikit-learn's GaussianMixture
    gets from KMeans; plain one-candidate k-means++ biased NLEEP upwards): the
    first centre is sample ``floor(u_0 N)``; for each further centre, L =
    2 + floor(ln k) candidates are drawn with probability proportional to the
    squared distance to the nearest chosen centre, and the one that leaves the
    smallest total squared distance is kept. All ``1 + (k-1) L`` uniforms are
    drawn up front, ``u = rng.random(...)``, so the batched engine can replay
    the same stream. Lloyd stops when the centres move less than ``tol`` times
    the mean feature variance (squared distance, summed over centres); an empty
    cluster keeps its centre.
    """
    n = x.shape[0]
    trials = n_local_trials(k)
    u = rng.random(1 + (k - 1) * trials)
    centers = np.empty((k, x.shape[1]))
    centers[0] = x[min(int(u[0] * n), n - 1)]
    closest = _sq_dist(x, centers[:1])[:, 0]
    for j in range(1, k):
        uj = u[1 + (j - 1) * trials: 1 + j * trials]
        cdf = np.cumsum(closest)
        if cdf[-1] <= 0:  # every sample sits on a centre already
            cand = np.minimum((uj * n).astype(np.int64), n - 1)
        else:
            cand = np.minimum(np.searchsorted(cdf, uj * cdf[-1], side="right"), n - 1)
        dist = _sq_dist(x, x[cand])                       # N x L
        potential = np.minimum(closest[:, None], dist).sum(axis=0)
        best = int(np.argmin(potential))
        centers[j] = x[cand[best]]
        closest = np.minimum(closest, dist[:, best])
    threshold = np.mean(np.var(x, axis=0)) * tol
    for _ in range(max_iter):
        labels = _sq_dist(x, centers).argmin(axis=1)
        onehot = np.zeros((n, k))
        onehot[np.arange(n), labels] = 1.0
        counts = onehot.sum(axis=0)
        sums = onehot.T @ x
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1.0)[:, None], centers)
        shift = ((new - centers) ** 2).sum()
        centers = new
        if shift <= threshold:
            break
    return _sq_dist(x, centers).argmin(axis=1)


def _m_step(x: np.ndarray, resp: np.ndarray):
    nk = resp.sum(axis=0) + 10 * np.finfo(float).eps
    means = resp.T @ x / nk[:, None]
    d = x.shape[1]
    chols = np.empty((resp.shape[1], d, d))
    for j in range(resp.shape[1]):
        diff = x - means[j]
        cov = (resp[:, j, None] * diff).T @ diff / nk[j]
        cov[np.diag_indices(d)] += _REG_COVAR
        chols[j] = scipy.linalg.cholesky(cov, lower=True)
    return nk / x.shape[0], means, chols


def _log_joint(x: np.ndarray, weights, means, chols) -> np.ndarray:
    """log pi_z + log N(x | mu_z, Sigma_z), N x K."""
    n, d = x.shape
    out = np.empty((n, means.shape[0]))
    for j in range(means.shape[0]):
        z = scipy.linalg.solve_triangular(chols[j], (x - means[j]).T, lower=True)
        logdet = 2.0 * np.log(np.diag(chols[j])).sum()
        out[:, j] = -0.5 * ((z * z).sum(0) + logdet + d * np.log(2 * np.pi))
    return out + np.log(weights)[None, :]


def gmm_posteriors(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Posteriors Q (N x K) of a seeded full-covariance Gaussian mixture."""
    rng = np.random.default_rng(seed)
    labels = kmeans(x, k, rng)
    resp = np.zeros((x.shape[0], k))
    resp[np.arange(x.shape[0]), labels] = 1.0
    params = _m_step(x, resp)
    lower = -np.inf
    for _ in range(_EM_MAX_ITER):
        lj = _log_joint(x, *params)
        norm = logsumexp(lj, axis=1)
        resp = np.exp(lj - norm[:, None])
        params = _m_step(x, resp)
        new_lower = norm.mean()
        if abs(new_lower - lower) < _EM_TOL:
            break
        lower = new_lower
    lj = _log_joint(x, *params)  # final E step with the final parameters
    return np.exp(lj - logsumexp(lj, axis=1)[:, None])


def nleep_from_posteriors(q: np.ndarray, codes: np.ndarray, n_classes: int) -> float:
    """NLEEP given mixture posteriors Q (N x K) and class codes."""
    n = q.shape[0]
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), codes] = 1.0
    pyz = onehot.T @ q / n                     # C x K
    mass = pyz.sum(axis=0, keepdims=True)
    # an empty component has Q[:, z] == 0 everywhere, so its column never counts
    py_given_z = pyz / np.where(mass > 0, mass, 1.0)
    return float((q * py_given_z[codes]).sum() / n)


def nleep(features, labels, *, components_per_class: int = 5, seed: int = 0) -> float:
    """NLEEP score of one model (higher is better)."""
    if int(components_per_class) != components_per_class or components_per_class < 1:
        raise ValueError("components_per_class must be a positive integer")
    x = as_features(features)
    codes, classes = as_labels(labels, x.shape[0])
    k = int(components_per_class) * classes.size
    if k > x.shape[0]:
        raise ValueError(f"NLEEP needs at least {k} samples for {k} mixture components "
                         f"({components_per_class} per class), got {x.shape[0]}")
    z = pca_keep_variance(x, 0.8)
    q = gmm_posteriors(z, k, seed)
    return nleep_from_posteriors(q, codes, classes.size)
