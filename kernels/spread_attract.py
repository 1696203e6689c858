"""Spread/Attract (SPEC 7 steps 3-4) on the PCA scores of a batch, fused.

z (B, N, n) are the PCA scores of B models, codes (N,) the classes. The torch
path (te_gpu.engine.sa) runs about twenty small kernels; here it is:

1. class moments of z (kernels.class_stats: one read of z), radii from them;
2. ``described`` only: Spread, s = z + f (z - mu_c)/|z - mu_c|, written once
   by the update kernel so that its class moments can be taken (step 1 on s);
3. the Attract kernel: for a block of classes a, the distances to every class
   b by direct differences (equal means give 0 exactly, as torch.cdist's
   non-matmul mode), the weights W_ab = (d_ab - sigma (R_a + R_b))/d_ab (0 on
   the diagonal and for d_ab = 0), and Delta_a = alpha (sum_b W_ab mu_a -
   sum_b W_ab mu_b), without materialising the C x C matrix in memory;
4. the update kernel: out = z (+ Spread recomputed from z, bit for bit as in
   step 2) + Delta[y] (``released``) or - Delta[y] (``described``), with the
   squared displacement |out - z|^2 summed per program.

Program layouts: Attract, one program per (model, block of classes a, block of
output dims), looping over blocks of classes b (a block of dims recomputes the
distances: n is 64 by default, so there is one). Update, one program per
(model, block of samples) holding whole rows (the Spread norm needs the row).
The displacement norm is the sum of the per-program partial sums, taken by
torch in a fixed order: no atomics anywhere, results are reproducible.
"""
from __future__ import annotations

import torch

from ._compat import cdiv, jit, next_pow2, require_float, require_launchable, tl
from .class_stats import class_moments_triton

VARIANTS = ("released", "described", "pca-only")


@jit
def _attract_kernel(means_ptr, radius_ptr, delta_ptr, n_classes, n_dims,
                    stride_mb, stride_mc, stride_md,
                    ALPHA: tl.constexpr, SIGMA: tl.constexpr,
                    BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
                    BLOCK_O: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    pid_a = tl.program_id(1)
    pid_o = tl.program_id(2)
    acc_t = delta_ptr.dtype.element_ty
    offs_a = pid_a * BLOCK_A + tl.arange(0, BLOCK_A)
    amask = offs_a < n_classes
    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    omask = offs_o < n_dims
    m_base = means_ptr + b * stride_mb
    r_a = tl.load(radius_ptr + b * n_classes + offs_a, mask=amask, other=0.0).to(acc_t)

    w_sum = tl.zeros([BLOCK_A], dtype=acc_t)
    w_mu = tl.zeros([BLOCK_A, BLOCK_O], dtype=acc_t)
    for b0 in range(0, n_classes, BLOCK_B):
        offs_b = b0 + tl.arange(0, BLOCK_B)
        bmask = offs_b < n_classes
        d2 = tl.zeros([BLOCK_A, BLOCK_B], dtype=acc_t)
        for d0 in range(0, n_dims, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            dmask = offs_d < n_dims
            mu_a = tl.load(m_base + offs_a[:, None] * stride_mc + offs_d[None, :] * stride_md,
                           mask=amask[:, None] & dmask[None, :], other=0.0).to(acc_t)
            mu_b = tl.load(m_base + offs_b[:, None] * stride_mc + offs_d[None, :] * stride_md,
                           mask=bmask[:, None] & dmask[None, :], other=0.0).to(acc_t)
            diff = mu_a[:, None, :] - mu_b[None, :, :]
            d2 += tl.sum(diff * diff, 2)
        dist = tl.sqrt(d2)
        r_b = tl.load(radius_ptr + b * n_classes + offs_b, mask=bmask, other=0.0).to(acc_t)
        pos = dist > 0
        w = (dist - SIGMA * (r_a[:, None] + r_b[None, :])) / tl.where(pos, dist, 1.0)
        w = tl.where(pos & amask[:, None] & bmask[None, :], w, 0.0)   # no direction, no force
        w_sum += tl.sum(w, 1)
        mu_o = tl.load(m_base + offs_b[:, None] * stride_mc + offs_o[None, :] * stride_md,
                       mask=bmask[:, None] & omask[None, :], other=0.0).to(acc_t)
        w_mu = tl.dot(w, mu_o, w_mu, input_precision="ieee")     # sum_b W_ab mu_b
    mu_ao = tl.load(m_base + offs_a[:, None] * stride_mc + offs_o[None, :] * stride_md,
                    mask=amask[:, None] & omask[None, :], other=0.0).to(acc_t)
    delta = ALPHA * (w_sum[:, None] * mu_ao - w_mu)
    out = (b * n_classes + offs_a)[:, None] * n_dims + offs_o[None, :]
    tl.store(delta_ptr + out, delta, mask=amask[:, None] & omask[None, :])


@jit
def _sa_update_kernel(z_ptr, codes_ptr, means_ptr, delta_ptr, out_ptr, part_ptr,
                      n_samples, n_dims, n_classes,
                      stride_zb, stride_zn, stride_zd,
                      FORCE: tl.constexpr, SPREAD: tl.constexpr, SIGN: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    acc_t = out_ptr.dtype.element_ty
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < n_samples
    offs_d = tl.arange(0, BLOCK_D)
    mask = rmask[:, None] & (offs_d < n_dims)[None, :]
    code = tl.load(codes_ptr + rows, mask=rmask, other=0).to(tl.int64)
    z = tl.load(z_ptr + b * stride_zb + rows.to(tl.int64)[:, None] * stride_zn
                + offs_d[None, :] * stride_zd, mask=mask, other=0.0).to(acc_t)
    cls = (b * n_classes + code)[:, None] * n_dims + offs_d[None, :]   # row of (B, C, n)
    out = z
    if SPREAD:
        mu = tl.load(means_ptr + cls, mask=mask, other=0.0).to(acc_t)
        dev = tl.where(mask, z - mu, 0.0)
        norm = tl.sqrt(tl.sum(dev * dev, 1))
        pos = norm > 0
        step = tl.where(pos[:, None], dev / tl.where(pos, norm, 1.0)[:, None], 0.0)
        out = z + FORCE * step
    if SIGN > 0:
        out = out + tl.load(delta_ptr + cls, mask=mask, other=0.0).to(acc_t)
    if SIGN < 0:
        out = out + (-tl.load(delta_ptr + cls, mask=mask, other=0.0).to(acc_t))
    tl.store(out_ptr + (b * n_samples + rows)[:, None] * n_dims + offs_d[None, :], out, mask=mask)
    moved = tl.where(mask, out - z, 0.0)
    tl.store(part_ptr + b * tl.num_programs(1) + pid_n, tl.sum(tl.sum(moved * moved, 1), 0))


def _update(z, codes, n_classes, *, means=None, delta=None, sign=0, force=1.0,
            block_n=None, num_warps=4):
    """out (B, N, n) and the per-model squared displacement |out - z|^2 (B,)."""
    b, n, d = z.shape
    out = torch.empty((b, n, d), dtype=z.dtype, device=z.device)
    bd = next_pow2(d)
    bn = block_n or max(1, min(64, 2048 // bd))   # 2048-value tiles: no spills on sm_90
    grid = (b, cdiv(n, bn))
    part = torch.empty(grid, dtype=z.dtype, device=z.device)
    dummy = out  # never read when its constexpr switch is off
    _sa_update_kernel[grid](z, codes, means if means is not None else dummy,
                            delta if delta is not None else dummy, out, part,
                            n, d, n_classes, z.stride(0), z.stride(1), z.stride(2),
                            FORCE=float(force), SPREAD=means is not None, SIGN=int(sign),
                            BLOCK_N=bn, BLOCK_D=bd, num_warps=num_warps)
    return out, part.sum(-1)


def _means_radius(z, codes, n_classes):
    counts, sums, sumsq = class_moments_triton(z, codes, n_classes)
    means = sums / counts[None, :, None]
    radius = (sumsq / counts[None, :, None]).sum(-1).sqrt()     # (B, C)
    return means.contiguous(), radius.contiguous()


def _attract(means, radius, alpha, sigma, *, block_a=16, block_b=16, block_d=None,
             block_o=None, num_warps=4):
    b, c, d = means.shape
    delta = torch.empty((b, c, d), dtype=means.dtype, device=means.device)
    bd = block_d or min(32, next_pow2(d))
    bo = block_o or max(16, min(64, next_pow2(d)))
    if min(block_a, block_b, bo) < 16:
        raise ValueError("Attract blocks must be >= 16 (tl.dot's smallest tile)")
    grid = (b, cdiv(c, block_a), cdiv(d, bo))
    _attract_kernel[grid](means, radius, delta, c, d,
                          means.stride(0), means.stride(1), means.stride(2),
                          ALPHA=float(alpha), SIGMA=float(sigma), BLOCK_A=block_a,
                          BLOCK_B=block_b, BLOCK_D=bd, BLOCK_O=bo, num_warps=num_warps)
    return delta


def _check(z, codes):
    require_float(z)
    require_launchable(_attract_kernel, z, codes)
    if z.dim() != 3 or codes.shape != (z.shape[1],):
        raise ValueError(f"z must be (B, N, n) and codes (N,), got {tuple(z.shape)}, "
                         f"{tuple(codes.shape)}")


def perturb_triton(z: torch.Tensor, codes: torch.Tensor, n_classes: int, *, alpha: float,
                   sigma: float, force: float, variant: str, block_c: int = 16):
    """(perturbed scores (B, N, n), displacement norm (B,)), as te_gpu.engine.sa.perturb.

    ``block_c``: classes per Attract program, on both sides of the C x C loop.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    _check(z, codes)
    if variant == "pca-only":
        return z, torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
    codes = codes.contiguous()
    blocks = dict(block_a=block_c, block_b=block_c)
    if variant == "released":
        delta = _attract(*_means_radius(z, codes, n_classes), alpha, sigma, **blocks)
        out, moved2 = _update(z, codes, n_classes, delta=delta, sign=+1)
        return out, moved2.sqrt()
    # described: Spread, Attract on the spread scores, then -Delta
    means_z = _means_radius(z, codes, n_classes)[0]
    spread, _ = _update(z, codes, n_classes, means=means_z, force=force)
    delta = _attract(*_means_radius(spread, codes, n_classes), alpha, sigma, **blocks)
    out, moved2 = _update(z, codes, n_classes, means=means_z, delta=delta, sign=-1, force=force)
    return out, moved2.sqrt()
