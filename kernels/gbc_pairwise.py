"""GBC's pairwise Bhattacharyya sum: -sum_{a != b} exp(-BD(a, b)) per model.

Inputs are the class Gaussians the engine already has: means (B, C, D) and the
floored unbiased variances var (B, C, D) (te_gpu.engine.gbc.floored_variances).
SPEC 5:

    spherical: s_c = mean_d var[c];  s = (s_a + s_b)/2
               BD = |mu_a - mu_b|^2 / (8 s) + 1/2 [log s - 1/2 log s_a - 1/2 log s_b]
    diagonal:  s = (var_a + var_b)/2 per dimension
               BD = sum_d (mu_a - mu_b)^2 / (8 s) + 1/2 [sum_d log s - 1/2 sum_d log var_a
                                                    - 1/2 sum_d log var_b]

The torch path builds (B, 64, C, D) temporaries in blocks and the C x C matrix;
here one program per (model, block of classes a, block of classes b) streams
the two blocks' rows over D and keeps the (BLOCK_A x BLOCK_B) partial sums in
registers, so nothing of size C^2 D or C^2 touches memory. The per-class
scalars (s_c, or sum_d log var) come from torch exactly as the torch path
computes them. BD is symmetric, so only blocks with b-block >= a-block work
(the others exit at once) and off-diagonal blocks count twice: half the
logarithms of the diagonal form. Each program writes one partial sum; torch
adds them in a fixed order. No atomics: results are reproducible.
"""
from __future__ import annotations

import torch

from ._compat import cdiv, jit, next_pow2, require_float, require_launchable, tl


@jit
def _gbc_kernel(means_ptr, var_ptr, cls_ptr, part_ptr, n_classes, n_dims,
                stride_mb, stride_mc, stride_md, stride_vb, stride_vc, stride_vd,
                SPHERICAL: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
                BLOCK_D: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    pid_a = tl.program_id(1)
    pid_b = tl.program_id(2)
    acc_t = part_ptr.dtype.element_ty
    active = pid_b >= pid_a
    d_end = tl.where(active, n_dims, 0)            # lower-triangle blocks skip the D loop
    offs_a = pid_a * BLOCK_A + tl.arange(0, BLOCK_A)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    amask = offs_a < n_classes
    bmask = offs_b < n_classes
    # per-class scalars: s_c (spherical) or sum_d log var (diagonal); 1 on padding
    c_a = tl.load(cls_ptr + b * n_classes + offs_a, mask=amask, other=1.0).to(acc_t)
    c_b = tl.load(cls_ptr + b * n_classes + offs_b, mask=bmask, other=1.0).to(acc_t)
    ma_base = means_ptr + b * stride_mb + offs_a[:, None] * stride_mc
    mb_base = means_ptr + b * stride_mb + offs_b[:, None] * stride_mc
    va_base = var_ptr + b * stride_vb + offs_a[:, None] * stride_vc
    vb_base = var_ptr + b * stride_vb + offs_b[:, None] * stride_vc

    quad = tl.zeros([BLOCK_A, BLOCK_B], dtype=acc_t)    # sum d^2, or sum d^2 / s
    logs = tl.zeros([BLOCK_A, BLOCK_B], dtype=acc_t)    # sum log s (diagonal)
    for d0 in range(0, d_end, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < n_dims
        am = amask[:, None] & dmask[None, :]
        bm = bmask[:, None] & dmask[None, :]
        mu_a = tl.load(ma_base + offs_d[None, :] * stride_md, mask=am, other=0.0).to(acc_t)
        mu_b = tl.load(mb_base + offs_d[None, :] * stride_md, mask=bm, other=0.0).to(acc_t)
        diff = mu_a[:, None, :] - mu_b[None, :, :]
        diff2 = diff * diff
        if SPHERICAL:
            quad += tl.sum(diff2, 2)
        else:
            # padding loads var = 1 on both sides: s = 1, log s = 0, diff = 0
            v_a = tl.load(va_base + offs_d[None, :] * stride_vd, mask=am, other=1.0).to(acc_t)
            v_b = tl.load(vb_base + offs_d[None, :] * stride_vd, mask=bm, other=1.0).to(acc_t)
            s = 0.5 * (v_a[:, None, :] + v_b[None, :, :])
            quad += tl.sum(diff2 / s, 2)
            logs += tl.sum(tl.log(s), 2)
    if SPHERICAL:
        s = 0.5 * (c_a[:, None] + c_b[None, :])
        dist = tl.sqrt(quad)                       # the torch path squares cdist's distance
        lg = tl.log(s) - 0.5 * tl.log(c_a)[:, None] - 0.5 * tl.log(c_b)[None, :]
        bd = dist * dist / (8 * s) + 0.5 * lg
    else:
        bd = quad / 8 + 0.5 * (logs - 0.5 * c_a[:, None] - 0.5 * c_b[None, :])
    pair = amask[:, None] & bmask[None, :] & (offs_a[:, None] != offs_b[None, :])
    e = tl.where(pair, tl.exp(-bd), 0.0)
    weight = tl.where(active, tl.where(pid_a == pid_b, 1.0, 2.0), 0.0)
    total = tl.sum(tl.sum(e, 1), 0) * weight
    tl.store(part_ptr + (b * tl.num_programs(1) + pid_a) * tl.num_programs(2) + pid_b, total)


def gbc_pairwise_triton(means: torch.Tensor, var: torch.Tensor, spherical: bool, *,
                        block_c: int = 8, block_d: int | None = None, num_warps: int = 4):
    """GBC (B,) = -sum_{a != b} exp(-BD(a, b)) from class means and variances (B, C, D)."""
    dtype = require_float(means, var)
    require_launchable(_gbc_kernel, means, var)
    if means.shape != var.shape or means.dim() != 3:
        raise ValueError(f"means and var must both be (B, C, D), got {tuple(means.shape)}, "
                         f"{tuple(var.shape)}")
    b, c, d = means.shape
    per_class = (var.mean(-1) if spherical else torch.log(var).sum(-1)).contiguous()
    nb = cdiv(c, block_c)
    part = torch.empty((b, nb, nb), dtype=dtype, device=means.device)
    # 8 x 8 class blocks: C = 100 gives 13 x 13 programs (91 doing work) for one model
    bd = block_d or min(32, next_pow2(d))
    _gbc_kernel[(b, nb, nb)](means, var, per_class, part, c, d,
                             means.stride(0), means.stride(1), means.stride(2),
                             var.stride(0), var.stride(1), var.stride(2),
                             SPHERICAL=bool(spherical), BLOCK_A=block_c, BLOCK_B=block_c,
                             BLOCK_D=bd, num_warps=num_warps)
    return -part.sum((-1, -2))
