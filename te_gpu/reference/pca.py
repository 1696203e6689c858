"""PCA in the three flavours SPEC uses (float64 unless stated).

* :func:`randomized_pca` - SA's PCA-64 (SPEC 7.2): scikit-learn's randomized
  PCA with ``random_state=1919, iterated_power=1, n_oversamples=10``,
  reproduced step by step, in the input's precision.
* :func:`exact_pca` - NCTI's PCA-64 (SPEC 4.1): a full SVD. The public code's
  randomized PCA there is unseeded (nondeterministic); te_gpu uses the exact
  decomposition instead, which NCTI's parts do not depend on up to signs.
* :func:`pca_keep_variance` - NLEEP's "keep 80 % of the variance" (SPEC 6).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

SA_PCA_SEED = 1919


def flip_signs(u: np.ndarray, vt: np.ndarray):
    """Make the largest-magnitude entry of each row of ``vt`` positive.

    scikit-learn's current convention (``svd_flip(u_based_decision=False)``);
    the same sign is applied to the matching column of ``u``.
    """
    idx = np.argmax(np.abs(vt), axis=1)
    signs = np.sign(vt[np.arange(vt.shape[0]), idx])
    signs[signs == 0] = 1.0
    return u * signs[None, :], vt * signs[:, None]


def _working_dtype(x: np.ndarray):
    # scikit-learn keeps float32 input in float32 and turns anything else into float64.
    return np.float32 if x.dtype == np.float32 else np.float64


def randomized_pca(x, n_components: int, *, seed: int = SA_PCA_SEED,
                   n_oversamples: int = 10, n_iter: int = 1):
    r"""Randomized PCA scores ``Z = U_n S_n`` of ``x`` (N x D).

    Steps (Halko et al.; as scikit-learn 1.x with ``power_iteration_normalizer``
    'none', which is what it picks for ``n_iter <= 2``):

    1. :math:`A = X - \bar x` in the input's precision; if N < D work on A^T.
    2. :math:`\Omega \sim \mathcal N(0,1)^{cols \times (n+p)}` from
       ``RandomState(seed)``, cast to A's dtype.
    3. ``n_iter`` times :math:`Q = A^T (A Q)`; then :math:`Q = \mathrm{qr}(A Q)`.
    4. :math:`B = Q^T A = \hat U S V^T`, :math:`U = Q \hat U`.
    5. Undo the transpose, keep n components, fix signs on V^T.

    Returns ``(Z, vt, s)`` with ``Z`` float64 of shape N x n.
    """
    x = np.asarray(x)
    dt = _working_dtype(x)
    xw = np.array(x, dtype=dt, copy=True)
    n_samples, n_features = xw.shape
    if not 1 <= n_components <= min(n_samples, n_features):
        raise ValueError(f"n_components={n_components} must be in [1, min(N, D)="
                         f"{min(n_samples, n_features)}]")
    a = xw - xw.mean(axis=0)
    transpose = n_samples < n_features
    m = a.T if transpose else a
    rng = np.random.RandomState(seed)
    q = rng.normal(size=(m.shape[1], n_components + n_oversamples)).astype(dt, copy=False)
    for _ in range(n_iter):
        q = m @ q
        q = m.T @ q
    q, _ = scipy.linalg.qr(m @ q, mode="economic", check_finite=False)
    b = q.T @ m
    uh, s, vt = scipy.linalg.svd(b, full_matrices=False, lapack_driver="gesdd")
    u = q @ uh
    if transpose:
        u, vt = vt[:n_components].T, u[:, :n_components].T
    else:
        u, vt = u[:, :n_components], vt[:n_components]
    s = s[:n_components]
    u, vt = flip_signs(u, vt)
    z = (u * s).astype(np.float64)
    return z, vt.astype(np.float64), s.astype(np.float64)


def exact_pca(x: np.ndarray, n_components: int):
    """Exact PCA of float64 ``x``: ``(Z, explained_variance, vt)``.

    ``explained_variance`` holds all min(N, D) values ``s_i^2 / (N - 1)``
    (ddof = 1, as scikit-learn); Z keeps the first ``n_components``.
    """
    a = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    u, vt = flip_signs(u, vt)
    ev = s ** 2 / (x.shape[0] - 1)
    return u[:, :n_components] * s[:n_components], ev, vt[:n_components]


def pca_keep_variance(x: np.ndarray, fraction: float = 0.8) -> np.ndarray:
    """Scores on the fewest components whose explained-variance ratio reaches
    ``fraction`` (scikit-learn's rule: ``searchsorted(cumsum, f, 'right') + 1``)."""
    a = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    ev = s ** 2
    total = ev.sum()
    if total <= 0.0:
        raise ValueError("features have zero variance; PCA cannot keep a fraction of it")
    k = int(np.searchsorted(np.cumsum(ev / total), fraction, side="right")) + 1
    k = min(k, s.size)
    return u[:, :k] * s[:k]
