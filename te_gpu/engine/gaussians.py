"""GBC's C x C part (SPEC 5): Bhattacharyya distances between class Gaussians and
their summed overlaps; the torch path of the ``gbc_pairwise`` op, beside the
Triton kernel in ``te_gpu.kernels.gbc_pairwise``.
"""
from __future__ import annotations

import torch


def bhattacharyya(means: torch.Tensor, var: torch.Tensor, spherical: bool,
                  block: int = 64) -> torch.Tensor:
    """(B, C, C) Bhattacharyya distances; the diagonal is 0."""
    if spherical:
        s_c = var.mean(-1)                                # (B, C)
        s = 0.5 * (s_c[:, :, None] + s_c[:, None, :])
        d2 = torch.cdist(means, means, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
        logs = torch.log(s) - 0.5 * torch.log(s_c)[:, :, None] - 0.5 * torch.log(s_c)[:, None, :]
        return d2 / (8 * s) + 0.5 * logs
    b, c, d = means.shape
    logv = torch.log(var).sum(-1)                         # (B, C)
    out = torch.empty((b, c, c), dtype=means.dtype, device=means.device)
    for a0 in range(0, c, block):                         # bounded (B, block, C, D) memory
        a1 = min(a0 + block, c)
        s = 0.5 * (var[:, a0:a1, None, :] + var[:, None, :, :])
        diff2 = (means[:, a0:a1, None, :] - means[:, None, :, :]).pow(2)
        quad = (diff2 / s).sum(-1) / 8
        out[:, a0:a1] = quad + 0.5 * (torch.log(s).sum(-1) - 0.5 * logv[:, a0:a1, None]
                                      - 0.5 * logv[:, None, :])
    return out


def gbc_from_gaussians(means: torch.Tensor, var: torch.Tensor, spherical: bool) -> torch.Tensor:
    """GBC (B,) = -sum over ordered pairs a != b of exp(-BD(a, b))."""
    bd = bhattacharyya(means, var, spherical)
    off = ~torch.eye(means.shape[1], dtype=torch.bool, device=means.device)
    return -(torch.exp(-bd) * off).sum((-1, -2))
