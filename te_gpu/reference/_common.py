"""Small float64 building blocks shared by the reference metrics."""
from __future__ import annotations

import numpy as np
import scipy.linalg


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so that exp never overflows."""
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def class_means(x: np.ndarray, codes: np.ndarray, n_classes: int):
    """Counts ``n_k`` and means ``mu_k`` (C x D) of each class."""
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    sums = np.zeros((n_classes, x.shape[1]))
    np.add.at(sums, codes, x)
    return counts, sums / counts[:, None]


def class_radii(x: np.ndarray, codes: np.ndarray, means: np.ndarray,
                counts: np.ndarray) -> np.ndarray:
    """R_c = sqrt(sum over dimensions of class c's population variance) (C,): the class
    radius that SA's Attract and PED's forces compare with the distances between means."""
    sq = np.zeros_like(means)
    np.add.at(sq, codes, (x - means[codes]) ** 2)
    return np.sqrt((sq / counts[:, None]).sum(axis=1))


def within_scatter(x: np.ndarray, codes: np.ndarray, means: np.ndarray) -> np.ndarray:
    r"""Population within-class scatter :math:`S_w = \sum_k \pi_k \mathrm{Cov}_k`.

    With every sample centred on its class mean this is ``Xc^T Xc / N``.
    """
    xc = x - means[codes]
    return xc.T @ xc / x.shape[0]


def population_cov(x: np.ndarray) -> np.ndarray:
    """Covariance with the 1/N normalisation (``np.cov(x.T, bias=True)``)."""
    xc = x - x.mean(axis=0)
    return xc.T @ xc / x.shape[0]


def shrink(s: np.ndarray, lam: float) -> np.ndarray:
    r""":math:`(1-\lambda) S + \lambda\, \mathrm{tr}(S)/D\; I`."""
    d = s.shape[0]
    out = (1.0 - lam) * s
    out[np.diag_indices(d)] += lam * np.trace(s) / d
    return out


def power_iteration_top(s: np.ndarray, rounds: int = 3) -> float:
    r"""SFDA's estimate of the largest eigenvalue of a symmetric matrix.

    Starts at the row sums ``x = S 1`` and runs ``rounds`` double steps
    ``y = Sx/|Sx|, x = Sy/|Sy|``; returns :math:`x^T S y`. With three rounds it
    under-estimates the top eigenvalue and depends on the basis; SPEC keeps it
    because the released scores were computed with it.
    """
    x = s.sum(axis=1)
    y = x
    for _ in range(rounds):
        # y and x are normalised, so x may be rescaled first: it keeps S x in range
        # for large-scale features without changing the result beyond rounding
        top = np.abs(x).max()
        t = s @ (x / top) if top > 0 else s @ x
        nt = scipy.linalg.norm(t)  # BLAS nrm2: no overflow in the sum of squares
        if nt == 0.0:  # S annihilates the start vector (e.g. S == 0): no spread
            return 0.0
        y = t / nt
        t = s @ y
        x = t / scipy.linalg.norm(t)
    return float(x @ s @ y)


def nuclear_norm(a: np.ndarray) -> float:
    """Sum of singular values."""
    if a.size == 0:
        return 0.0
    return float(np.linalg.svd(a, compute_uv=False).sum())
