r"""Leave-one-out k-nearest-neighbour accuracy (the kNN estimator of transformer-ranker).

Each sample i is classified by a majority vote of its k nearest *other*
samples and the score is the fraction classified correctly:

.. math::
    \mathrm{kNN}=\frac1N\sum_i 1\Big[\arg\max_c\,\#\{j\in\mathcal N_k(i): y_j=c\}=y_i\Big].

Distances: ``euclidean`` ranks by :math:`|x_j|^2-2x_i\cdot x_j` (the squared
distance less the constant :math:`|x_i|^2`: the same order, no square root,
exact for integer-valued features such as raw pixels); ``cosine`` ranks by
:math:`-\hat x_i\cdot\hat x_j` with :math:`\hat x=x/|x|` (a zero row has
similarity 0 to every sample). Deterministic ties: among samples at the k-th
distance the lower sample index is taken, and a tied vote goes to the
smallest class (as ``torch.mode`` in transformer-ranker and scikit-learn's
``KNeighborsClassifier``). Rows are processed ``chunk`` at a time, so memory
is O(chunk N). transformer-ranker returns micro-F1, which is this accuracy for
C > 2 but the positive class's F1 for C = 2; te_gpu always returns accuracy.
Classification only.

:func:`knn_grouped` is the same with groups of rows that are copies of one
sample (a bootstrap resample, :mod:`te_gpu.bootstrap`): a query leaves its whole
group out, so that a copy at distance 0 does not vote for its own class.
"""
from __future__ import annotations

import numpy as np

from .._checks import as_features, as_labels

DISTANCES = ("euclidean", "cosine")
CHUNK = 1024


def check_options(k, distance, chunk, n: int | None = None) -> None:
    """Validate kNN's options (k against N when N is known)."""
    for name, v in (("k", k), ("chunk", chunk)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    if n is not None and k > n - 1:
        raise ValueError(f"k = {k} neighbours need at least {k + 1} samples, got {n}")


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows stay zero."""
    norm = np.sqrt((x * x).sum(axis=1, keepdims=True))
    return x / np.where(norm > 0, norm, 1.0)


def knn(features, labels, *, k: int = 3, distance: str = "euclidean", chunk: int = CHUNK,
        regression: bool = False) -> float:
    """Leave-one-out kNN accuracy of one model (higher is better)."""
    if regression:
        raise ValueError("kNN accuracy is defined for class labels only; "
                         "te_gpu has no regression form of it")
    x = as_features(features)
    codes, classes = as_labels(labels, x.shape[0])
    return _loo_accuracy(x, codes, classes.size, k, distance, chunk, None)


def knn_grouped(features, labels, groups, *, k: int = 3, distance: str = "euclidean",
                chunk: int = CHUNK) -> float:
    """kNN accuracy leaving out, for each sample, every sample of its group (``groups``:
    N ids, equal for copies of one sample); ``groups = arange(N)`` is :func:`knn`."""
    x = as_features(features)
    codes, classes = as_labels(labels, x.shape[0])
    groups = np.asarray(groups)
    if groups.shape != (x.shape[0],):
        raise ValueError(f"groups must have one id per sample ({x.shape[0]}), got shape {groups.shape}")
    return _loo_accuracy(x, codes, classes.size, k, distance, chunk, groups)


def _loo_accuracy(x, codes, n_classes, k, distance, chunk, groups) -> float:
    n = x.shape[0]
    check_options(k, distance, chunk, n)
    if distance == "cosine":
        x = unit_rows(x)
    # keys against each distinct vector, then spread to its rows: equal vectors (copies,
    # duplicate images) get equal keys, and their ties go by index as stated above (a
    # matrix product may round two equal columns apart)
    xu, of = np.unique(x, axis=0, return_inverse=True)
    of = of.reshape(-1)
    squ = (xu * xu).sum(axis=1)
    correct = 0
    for i0 in range(0, n, chunk):
        i1 = min(i0 + chunk, n)
        if distance == "euclidean":
            s = (squ[None, :] - 2.0 * (x[i0:i1] @ xu.T))[:, of]
        else:
            s = (-(x[i0:i1] @ xu.T))[:, of]
        if groups is None:
            s[np.arange(i1 - i0), np.arange(i0, i1)] = np.inf  # leave the sample out
        else:
            s[groups[i0:i1, None] == groups[None, :]] = np.inf  # leave its copies out
        nearest = np.argsort(s, axis=1, kind="stable")[:, :k]  # stable: lower index first
        if groups is not None and np.isinf(np.take_along_axis(s, nearest, 1)).any():
            raise ValueError(f"kNN with k = {k}: a sample has fewer than {k} neighbours "
                             "outside its group of copies")
        votes = np.zeros((i1 - i0, n_classes), dtype=np.int64)
        np.add.at(votes, (np.repeat(np.arange(i1 - i0), k), codes[nearest].ravel()), 1)
        correct += int((votes.argmax(axis=1) == codes[i0:i1]).sum())  # first max: smallest class
    return correct / n
