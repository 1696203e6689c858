"""Spread/Attract batched over models (SPEC 7; maths in te_gpu.reference.sa).

The gate reads the top two eigenvalues of each model's covariance (from the
centred Gram's eigendecomposition, shared with NCTI); the randomized PCA is
three thin matrix products, one batched QR and one small SVD; Attract is a
handful of C x C products on the class statistics of the PCA scores.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import linalg
from .stats import Labels, class_sums, class_variances

GATE_THRESHOLD = 9.0 * math.log(10.0) / 5.0
SA_PCA_SEED = 1919


def gate_values(evals_c: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of the two largest eigenvalues of the population covariance: (B,).

    ``evals_c``: ascending eigenvalues of the centred Gram (B, D).
    """
    return evals_c[:, -2:].mean(-1) / n


# A bound decides the gate only this far (relative) from the threshold: beyond rounding
# of a variance summed over N rows in either precision
GATE_BOUND_MARGIN = 1e-3


def gate_bounds(x: torch.Tensor) -> tuple:
    """Bounds (lower, upper), each (B,), on the gate value of (B, N, D) features, for the
    cost of their column variances (N D, against N D^2 for the covariance's spectrum).

    The gate value m is the mean of the covariance's two largest eigenvalues. By Ky Fan's
    principle their sum is at least the sum of any two diagonal entries, the two largest
    variances; and the eigenvalues are non-negative, so it is at most the trace.
    """
    d = x.shape[-1]
    xc = x - x.mean(1, keepdim=True)
    var = (xc * xc).mean(1)                                    # population variances (B, D)
    two = min(2, d)
    return var.topk(two, dim=-1).values.sum(-1) / two, var.sum(-1) / two


def randomized_pca_batched(xc: torch.Tensor, n_comp: int, *, seed: int = SA_PCA_SEED,
                           n_oversamples: int = 10, n_iter: int = 1,
                           copies: tuple | None = None) -> torch.Tensor:
    """Scores of scikit-learn's randomized PCA for B centred models (B, N, D) -> (B, N, n).

    The Gaussian test matrix comes from ``numpy.random.RandomState(seed)`` so the
    result equals the reference (and scikit-learn) up to floating-point rounding.

    ``copies``: None, or ``(count, of_row)`` of :func:`te_gpu.engine.stats.sample_copies`
    when ``xc`` (B, M, D) holds the distinct samples of N-row resamples (centred on the
    resample, padding rows zero): the scores of the N rows, for the cost of M. A resample
    is S A with A the distinct rows scaled by the square roots of their counts and S
    (N x M) a matrix of orthonormal columns, so its products, QR and SVD are A's (the test
    matrix of the N < D form becoming S^T Omega) and its scores S times A's.
    """
    b, rows, d = xc.shape
    n = rows if copies is None else copies[1].shape[-1]
    transpose = n < d
    omega = np.random.RandomState(seed).normal(size=(n if transpose else d, n_comp + n_oversamples))
    omega = torch.as_tensor(omega, device=xc.device).to(xc.dtype).expand(b, *omega.shape)
    if copies is not None:
        count, of_row = copies
        root = count.sqrt().to(xc.dtype)                               # (B, M), 0 on padding
        xc = xc * root[..., None]
        if transpose:        # S^T Omega: each sample's copies' rows summed, over its root
            at = of_row[..., None].expand(b, n, omega.shape[-1])
            omega = torch.zeros((b, rows, omega.shape[-1]), dtype=xc.dtype,
                                device=xc.device).scatter_add_(1, at, omega)
            omega = omega / torch.where(root > 0, root, 1.0)[..., None]
    m = xc.mT if transpose else xc
    # the N x D products go through linalg.matmul (OpenBLAS on CPU, per model)
    q = linalg.matmul(m, omega)
    for _ in range(n_iter):
        q = linalg.matmul(m.mT, q)
        q = linalg.matmul(m, q)
    q, _ = torch.linalg.qr(q, mode="reduced")
    uh, s, vt = torch.linalg.svd(linalg.matmul(q.mT, m), full_matrices=False)
    u = q @ uh
    if transpose:
        u, vt = vt[:, :n_comp].mT, u[:, :, :n_comp].mT
    else:
        u, vt = u[:, :, :n_comp], vt[:, :n_comp]
    s = s[:, :n_comp]
    idx = vt.abs().argmax(-1, keepdim=True)
    signs = torch.sign(torch.gather(vt, -1, idx))[..., 0]
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    scores = u * (s * signs)[:, None, :]
    if copies is None:
        return scores
    at = of_row[..., None].expand(b, n, scores.shape[-1])
    scores = torch.gather(scores / torch.where(root > 0, root, 1.0)[..., None], 1, at)
    # M distinct rows have at most M components: those past them are rounding noise in
    # the N-row form, which drop_noise_components zeroes
    return torch.nn.functional.pad(scores, (0, n_comp - scores.shape[-1]))


def drop_noise_components(z: torch.Tensor, d: int) -> torch.Tensor:
    """PCA scores (B, N, n) of D-dim features with the noise components zeroed
    (te_gpu.reference.sa.pca_signal); a component's singular value is the norm
    of its score column.
    """
    n = z.shape[1]
    s = torch.linalg.vector_norm(z, dim=1)                 # (B, n)
    floor = math.sqrt(max(n, d)) * torch.finfo(z.dtype).eps * s.amax(-1, keepdim=True)
    return z * (s > floor)[:, None, :].to(z.dtype)


def _class_means(z: torch.Tensor, labels: Labels) -> torch.Tensor:
    return class_sums(z, labels) / labels.counts[None, :, None]


def attract_delta(z: torch.Tensor, labels: Labels, alpha: float, sigma: float) -> torch.Tensor:
    """Per-class displacement (B, C, n) of the released Attract."""
    means = _class_means(z, labels)
    radius = class_variances(z, labels, means).sum(-1).sqrt()  # (B, C), population variances
    # direct differences (not the |a|^2+|b|^2-2ab expansion), so equal means give 0 exactly
    dist = torch.cdist(means, means, compute_mode="donot_use_mm_for_euclid_dist")
    safe = torch.where(dist > 0, dist, torch.ones_like(dist))
    w = (dist - sigma * (radius[:, :, None] + radius[:, None, :])) / safe
    w = torch.where(dist > 0, w, torch.zeros_like(w))      # no direction, no force
    return alpha * (w.sum(-1)[..., None] * means - w @ means)


def spread(z: torch.Tensor, labels: Labels, force: float) -> torch.Tensor:
    dev = z - _class_means(z, labels)[:, labels.codes]
    norm = torch.linalg.vector_norm(dev, dim=-1, keepdim=True)
    step = torch.where(norm > 0, dev / torch.where(norm > 0, norm, 1), torch.zeros_like(dev))
    return z + force * step


def perturb(z: torch.Tensor, labels: Labels, *, alpha: float, sigma: float, force: float,
            variant: str):
    """Spread (``described``) and Attract on PCA scores: (perturbed, displacement norm (B,))."""
    if variant == "pca-only":
        return z, torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
    out = spread(z, labels, force) if variant == "described" else z
    delta = attract_delta(out, labels, alpha, sigma)
    out = out + (delta if variant == "released" else -delta)[:, labels.codes]
    return out, torch.linalg.vector_norm(out - z, dim=(-2, -1))
