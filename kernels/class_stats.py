"""Per-class counts, sums and centred sums of squares in one read of the features.

For a batch x (B, N, D) and class codes (N,) in 0..C-1 shared by the B models:

    counts[c]      = #{i : y_i = c}                                   (C,)
    sums[b, c]     = sum_{y_i = c} x[b, i]                            (B, C, D)
    sumsq[b, c]    = sum_{y_i = c} (x[b, i] - mu[b, c])^2             (B, C, D)

with mu = sums / counts. The third output is the *centred* sum of squares (the
per-dimension scatter about the class mean), not sum x^2: the engine derives
variances, radii and GBC's Gaussians from it, and E[x^2] - mu^2 cancels
catastrophically when the means are large (te_gpu.engine.gbc says why).

Program layout: one program per (model, class, block of dims). The samples are
sorted by class once (a stable argsort of the codes, shared by every model),
so a program walks the rows of its own class, BLOCK_N at a time, gathering
each row's BLOCK_D contiguous values (coalesced), and owns its output tile.
Each tile of rows is reduced to (count, sum, centred sum of squares) and
merged into the running totals with Chan's parallel-variance update, which is
exact in exact arithmetic and stable in floating point. The features are read
once, there are no atomics, and the order of every sum is fixed by the block
sizes: results are bit-reproducible from run to run.
"""
from __future__ import annotations

import torch

from ._compat import cdiv, jit, next_pow2, require_float, require_launchable, tl


@jit
def _class_moments_kernel(x_ptr, order_ptr, starts_ptr, counts_ptr, sums_ptr, sumsq_ptr,
                          n_classes, n_dims,
                          stride_xb, stride_xn, stride_xd,
                          BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_bc = tl.program_id(0)                      # model * C + class
    pid_d = tl.program_id(1)
    b = pid_bc // n_classes
    c = pid_bc % n_classes
    acc_t = sums_ptr.dtype.element_ty
    start = tl.load(starts_ptr + c)
    count = tl.load(counts_ptr + c)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = offs_d < n_dims
    x_base = x_ptr + b.to(tl.int64) * stride_xb
    col = offs_d.to(tl.int64)[None, :] * stride_xd

    total = tl.zeros([BLOCK_D], dtype=acc_t)       # running sum
    scat = tl.zeros([BLOCK_D], dtype=acc_t)        # running centred sum of squares
    seen = tl.zeros([1], dtype=acc_t)              # rows merged so far
    for j0 in range(0, count, BLOCK_N):
        rows = j0 + tl.arange(0, BLOCK_N)
        rmask = rows < count
        idx = tl.load(order_ptr + start + rows, mask=rmask, other=0).to(tl.int64)
        m2d = rmask[:, None] & dmask[None, :]
        tile = tl.load(x_base + idx[:, None] * stride_xn + col, mask=m2d, other=0.0).to(acc_t)
        n_t = tl.zeros([1], dtype=acc_t) + tl.minimum(count - j0, BLOCK_N)  # rows in this tile
        t_sum = tl.sum(tile, 0)
        t_mean = t_sum / n_t
        dev = tl.where(m2d, tile - t_mean[None, :], 0.0)
        t_scat = tl.sum(dev * dev, 0)
        # Chan et al.: M2 = M2_a + M2_t + delta^2 n_a n_t / (n_a + n_t)
        mean_a = total / tl.maximum(seen, 1.0)
        delta = t_mean - mean_a
        scat = scat + t_scat + delta * delta * (seen * n_t / (seen + n_t))
        total = total + t_sum
        seen = seen + n_t
    out = (b.to(tl.int64) * n_classes + c) * n_dims + offs_d
    tl.store(sums_ptr + out, total, mask=dmask)
    tl.store(sumsq_ptr + out, scat, mask=dmask)


def class_layout(codes: torch.Tensor, n_classes: int):
    """(order, starts, counts): samples sorted by class (stable), each class's first
    position in that order and its size; int32, on the codes' device."""
    codes = codes.reshape(-1)
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= n_classes):
        raise ValueError(f"codes must lie in 0..{n_classes - 1}")
    order = torch.argsort(codes, stable=True).to(torch.int32)
    counts = torch.bincount(codes, minlength=n_classes).to(torch.int32)
    starts = (torch.cumsum(counts, 0, dtype=torch.int32) - counts).to(torch.int32)
    return order, starts, counts


def class_moments_triton(x: torch.Tensor, codes: torch.Tensor, n_classes: int, *,
                         block_n: int = 32, block_d: int | None = None, num_warps: int = 4):
    """(counts (C,), sums (B, C, D), sumsq (B, C, D)) of a (B, N, D) batch; see the module."""
    dtype = require_float(x)
    require_launchable(_class_moments_kernel, x, codes)
    b, n, d = x.shape
    order, starts, counts = class_layout(codes, n_classes)
    sums = torch.empty((b, n_classes, d), dtype=dtype, device=x.device)
    sumsq = torch.empty_like(sums)
    bd = block_d or min(128, next_pow2(d))
    grid = (b * n_classes, cdiv(d, bd))
    _class_moments_kernel[grid](x, order, starts, counts, sums, sumsq, n_classes, d,
                                x.stride(0), x.stride(1), x.stride(2),
                                BLOCK_N=block_n, BLOCK_D=bd, num_warps=num_warps)
    return counts.to(dtype), sums, sumsq
