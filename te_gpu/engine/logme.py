"""LogME for all classes of all models at once (SPEC 1; maths in te_gpu.reference.logme).

The spectrum comes from the batch's Gram matrix (N > D) or a thin SVD (N <= D);
the fixed point (te_gpu.engine.evidence, or its Triton kernel) then runs on
(B, T, k) tensors - every (model, target) pair at once - with a convergence
mask that freezes each pair at the iteration where the released code would
have stopped. Eleven fixed iterations, no host sync.
"""
from __future__ import annotations

import torch

from . import dispatch, linalg
from .stats import left


def _noise_floor(sigma_max: torch.Tensor, n: int, d: int) -> torch.Tensor:
    """Rounding-noise level of X^T X's eigenvalues (te_gpu.reference.logme.noise_floor)."""
    return max(n, d) * torch.finfo(torch.float64).eps * sigma_max.clamp(min=0)


def spectrum(x: torch.Tensor, gram: torch.Tensor | None, xty: torch.Tensor):
    """Eigenvalues sigma (B, D), term mask (B, D) and projections U^T Y (B, T, D), float64.

    ``xty`` is X^T Y as (B, T, D); ``gram`` is X^T X (B, D, D), N > D. As in
    te_gpu.reference.logme.spectrum, eigenvalues at rounding-noise level become
    exact zeros with zero projections and stay terms of the evidence; the
    released rank rule sqrt(sigma) > 1e-10 masks out only what is not noise.
    The factorisation is float64 also for float32 input (``precision="fast"``):
    a float32 eigensolver's noise, D eps32 sigma_max, is above real directions
    of raw-pixel features, which a float64 eigensolver resolves from the same
    float32 Gram.
    """
    gram, xty = gram.to(torch.float64), xty.to(torch.float64)
    b, n, d = x.shape
    if n > d:
        evals, v = linalg.eigh(gram)                      # ascending
        noise = evals <= _noise_floor(evals[:, -1:], n, d)
        valid = noise | (evals > 1e-20)
        sigma = torch.where(noise | ~valid, torch.zeros_like(evals), evals)
        root = torch.sqrt(torch.where(sigma > 0, sigma, torch.ones_like(sigma)))
        proj = linalg.matmul(xty, v) / root[:, None, :]   # (B, T, D)
        proj = torch.where((sigma > 0)[:, None, :], proj, torch.zeros_like(proj))
        return sigma, valid, proj
    raise AssertionError("use spectrum_svd for N <= D")


def spectrum_svd(x: torch.Tensor, targets: torch.Tensor):
    """N <= D: thin SVD of X in float64; sigma = s^2, noise singular values zeroed
    (numpy's rank tolerance), proj = U^T Y as (B, T, N)."""
    x = x.to(torch.float64)
    b, n, d = x.shape
    u, s, _ = torch.linalg.svd(x, full_matrices=False)   # u: (B, N, N)
    proj = left(targets.to(torch.float64).T, u)           # (T, N) @ (B, N, k) -> (B, T, k)
    noise = s <= max(n, d) * torch.finfo(torch.float64).eps * s[:, :1]
    sigma = torch.where(noise, torch.zeros_like(s), s * s)
    return sigma, torch.ones_like(sigma, dtype=torch.bool), proj


def logme_batched(x: torch.Tensor, targets: torch.Tensor, *, corrected: bool = False,
                  gram: torch.Tensor | None = None, xty: torch.Tensor | None = None) -> torch.Tensor:
    """LogME of B models (B, N, D) for targets (N, T) (one-hot for classes): (B,) float64.

    ``gram`` (X^T X) and ``xty`` (X^T Y as (B, T, D)) may be passed in when the
    caller already has them (the zoo engine does), saving a pass over x.
    """
    b, n, d = x.shape
    if n > d:
        if gram is None:
            gram = linalg.gram(x)
        if xty is None:
            xty = left(targets.T, x)
        sigma, valid, proj = spectrum(x, gram, xty)
    else:
        sigma, valid, proj = spectrum_svd(x, targets)
    if not bool((sigma.amax(-1) > 1e-20).all()):  # both branches: nothing above 1e-10
        raise ValueError("LogME: every singular value of the features is <= 1e-10, the released rank "
                         "threshold: all-zero (or vanishingly small) features carry no signal; rescale them")
    t_sq = (targets.to(torch.float64) ** 2).sum(0)
    # Triton kernel on CUDA where enabled (te_gpu.engine.dispatch), else fixed_point_evidence
    return dispatch.logme_evidence(sigma, valid, proj, t_sq, n, d, corrected).mean(-1)


def head(x: torch.Tensor, labels, shared, *, corrected: bool) -> torch.Tensor:
    """The catalogue's LogME head: one evidence per class (one-hot targets), or per
    column of ``shared.targets`` (regression). For N > D the spectrum comes from
    the batch's shared Gram and class sums."""
    b, n, d = x.shape
    if shared.targets is not None:
        return logme_batched(x, shared.targets, corrected=corrected)
    if n > d:
        st = shared.stats
        return logme_batched(x, labels.onehot, corrected=corrected, gram=st.gram(n),
                             xty=st.class_sums(labels))
    return logme_batched(x, labels.onehot, corrected=corrected)
