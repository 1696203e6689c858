r"""PARC (Bolya et al., NeurIPS 2021), float64, one model at a time (SPEC 10.7).

PARC compares two dissimilarity matrices over the N target samples:

* features: :math:`1 - \mathrm{corr}(s_i, s_j)`, the Pearson correlation of
  samples i and j across the k columns of ``S``, the features reduced by PCA
  (``pca_dim`` components; 0 keeps the raw features) and standardised per column;
* labels: :math:`1 - \mathrm{corr}(e_{y_i}, e_{y_j})` of the one-hot labels,
  which is 0 for a pair of one class and :math:`C/(C-1)` otherwise.

The score is 100 times Spearman's rank correlation (average ranks for ties)
between the two over the N(N-1)/2 pairs i < j. The label side takes the exact
two values here; the released code computes it with ``np.corrcoef``, whose
rounding splits the same-class pairs into 0 and 2.2e-16 for some classes (SPEC
10.7 says what that changes).

Rows equal in exact arithmetic get their exact-arithmetic dissimilarities: rows
with equal features (and, in :func:`parc_grouped`, the copies of one sample in a
bootstrap redraw) share one row of the matrix, computed once, and are exactly 0
apart, where rounding would otherwise give them values 1 ulp apart and order
their ties at random (SPEC 10.7).
"""
from __future__ import annotations

import numpy as np
import scipy.stats

from .._checks import as_features, as_labels
from .pca import randomized_pca
from .sa import pca_signal

PCA_DIM = 32


def check_pca_dim(pca_dim) -> int:
    """``pca_dim`` as an int >= 0 (0: no PCA); ValueError naming the option otherwise."""
    if isinstance(pca_dim, bool) or not isinstance(pca_dim, (int, np.integer)) or pca_dim < 0:
        raise ValueError(f"pca_dim must be an integer >= 0 (0: no PCA), got {pca_dim!r}")
    return int(pca_dim)


def reduced_features(x: np.ndarray, pca_dim: int) -> np.ndarray:
    """The released code's PCA: scikit-learn's randomized PCA (seed 1919, one power
    iteration) to min(pca_dim, N, D) components, with components of zero variance in
    exact arithmetic (rounding noise, SPEC 7.2) set to their exact value, zero."""
    if pca_dim == 0:
        return x
    n, d = x.shape
    z, _, s = randomized_pca(x, min(pca_dim, n, d))
    return z * pca_signal(s, n, d, np.float64)[None, :]


def standardise(z: np.ndarray) -> np.ndarray:
    """Columns centred and divided by their population std; a constant column
    (max == min) becomes zero, as scikit-learn's StandardScaler leaves it."""
    constant = z.max(axis=0) == z.min(axis=0)
    std = np.where(constant, 1.0, z.std(axis=0))
    return np.where(constant[None, :], 0.0, (z - z.mean(axis=0)) / std)


def first_equal(keys: np.ndarray) -> np.ndarray:
    """(N,) the first row with an equal row of ``keys`` (N, K)."""
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return first[inverse.ravel()]


def first_rows(x: np.ndarray, groups=None) -> np.ndarray:
    """(N,) the first row each row is merged with: rows with equal features and the
    copies of one sample (equal ``groups`` ids), whose features a perturbation after the
    redraw (SA) may have made unequal by rounding only."""
    if groups is not None:
        x = x[first_equal(np.asarray(groups).reshape(-1, 1))]
    return first_equal(x)


def feature_dissimilarity(s: np.ndarray, first: np.ndarray | None = None) -> np.ndarray:
    """N x N matrix 1 - corr(s_i, s_j) (correlation across columns, clipped to [-1, 1]
    as ``np.corrcoef``); with ``first`` (:func:`first_rows`) each pair of merged rows
    takes the value of their first rows' pair, and a row with its copy is 0."""
    if s.shape[1] < 2:
        raise ValueError(f"PARC correlates samples across at least 2 feature columns, "
                         f"got {s.shape[1]}")
    c = s - s.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(c, axis=1)
    flat = np.flatnonzero(norm == 0)
    if flat.size:
        raise ValueError(f"PARC: {flat.size} sample(s) (first: row {flat[0]}) have equal "
                         "standardised features; their correlation is undefined")
    u = c / norm[:, None]
    if first is None:
        return 1.0 - np.clip(u @ u.T, -1.0, 1.0)
    distinct, at = np.unique(first, return_inverse=True)
    upper = np.triu(1.0 - np.clip(u[distinct] @ u[distinct].T, -1.0, 1.0), 1)
    return (upper + upper.T)[np.ix_(at, at)]


def check_pairs(codes: np.ndarray, n_classes: int):
    """Counts of same-class and cross-class pairs; both must be positive."""
    counts = np.bincount(codes, minlength=n_classes)
    n = codes.size
    same = int((counts * (counts - 1) // 2).sum())
    cross = n * (n - 1) // 2 - same
    if same == 0:
        raise ValueError("PARC needs a class with at least 2 samples (a same-class pair)")
    return same, cross


def parc(features, labels, *, pca_dim: int = PCA_DIM) -> float:
    """PARC of one model (x 100; higher is better)."""
    return parc_grouped(features, labels, None, pca_dim=pca_dim)


def parc_grouped(features, labels, groups, *, pca_dim: int = PCA_DIM) -> float:
    """PARC of one model whose rows with equal ``groups`` ids are copies of one sample
    (a bootstrap redraw; None: no copies beyond rows with equal features)."""
    pca_dim = check_pca_dim(pca_dim)
    x = as_features(features)
    codes, classes = as_labels(labels, x.shape[0])
    check_pairs(codes, classes.size)
    if groups is not None and np.shape(groups) != (x.shape[0],):
        raise ValueError(f"groups must hold one id per sample ({x.shape[0]}), "
                         f"got shape {np.shape(groups)}")
    first = first_rows(x, groups)
    dist = feature_dissimilarity(standardise(reduced_features(x, pca_dim)), first)
    iu = np.triu_indices(x.shape[0], 1)
    cross = (codes[:, None] != codes[None, :])[iu]
    feats = dist[iu]
    if feats.min() == feats.max():
        raise ValueError("PARC: every pair of samples is equally dissimilar; the rank "
                         "correlation is undefined")
    return 100.0 * float(scipy.stats.spearmanr(feats, cross.astype(np.float64)).statistic)
