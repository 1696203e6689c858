"""LogME's fixed point for every (model, target) pair at once (SPEC 1; maths in
te_gpu.reference.logme.evidence): the torch path of the ``logme_evidence`` op,
beside the Triton kernel in ``te_gpu.kernels.logme_fixed_point``.
"""
from __future__ import annotations

import math

import torch

MAX_ITER = 11
EPS = 1e-5
TOL = 1e-3


def fixed_point_evidence(sigma, valid, proj, t_sq, n: int, d: int, corrected: bool):
    """Maximised evidence / N for every (model, target): (B, T).

    sigma, valid: (B, k); proj: (B, T, k); t_sq: (T,) squared target norms.
    """
    dtype = sigma.dtype
    sig = sigma[:, None, :]                               # (B, 1, k)
    x2 = proj * proj                                      # (B, T, k)
    r0 = (t_sq[None, :] - x2.sum(-1)).clamp(min=0)        # (B, T) a squared residual, >= 0
    shape = x2.shape[:2]
    alpha = torch.ones(shape, dtype=dtype, device=sigma.device)
    beta = torch.ones_like(alpha)
    m2 = torch.zeros_like(alpha)
    res2 = torch.zeros_like(alpha)
    done = torch.zeros(shape, dtype=torch.bool, device=sigma.device)
    for _ in range(MAX_ITER):
        t = (alpha / beta)[..., None]                     # (B, T, 1)
        gamma = (sig / (sig + t)).sum(-1)
        # N - gamma without cancellation (see te_gpu.reference.logme.evidence);
        # masked entries have sigma = 0 and add 1 to both terms, so they cancel
        rest = (n - sig.shape[-1]) + (t / (sig + t)).sum(-1)
        m2_new = (sig * x2 / (t + sig) ** 2).sum(-1)
        res2_new = (x2 / (1 + sig / t) ** 2).sum(-1) + r0
        a_new = gamma / (m2_new + EPS)
        b_new = rest / (res2_new + EPS)
        conv = (a_new / b_new - t[..., 0]).abs() / t[..., 0] <= TOL
        alpha = torch.where(done, alpha, a_new)
        beta = torch.where(done, beta, b_new)
        m2 = torch.where(done, m2, m2_new)
        res2 = torch.where(done, res2, res2_new)
        done = done | conv
    logdet = torch.where(valid[:, None, :], torch.log(alpha[..., None] + beta[..., None] * sig),
                         torch.zeros((), dtype=dtype, device=sigma.device)).sum(-1)
    ev = (d / 2.0 * torch.log(alpha) + n / 2.0 * torch.log(beta) - 0.5 * logdet
          - beta / 2.0 * res2 - alpha / 2.0 * m2 - n / 2.0 * math.log(2 * math.pi))
    if corrected:
        k = valid.sum(-1).to(dtype)[:, None]
        ev = ev - 0.5 * (d - k) * torch.log(alpha)
    return ev / n
