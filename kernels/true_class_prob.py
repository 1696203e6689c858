"""True-class probability of a linear softmax classifier without the N x C logits.

For features x (B, N, D), coefficients W (B, D, C), intercepts c (B, C) and
codes y (N,), returns p[b, i] = softmax(x[b, i] W[b] + c[b])[y_i], or with
``double_softmax`` the same entry of softmax(softmax(.)) (SFDA's ConfMix
weight). The callers: SFDA (both fits), the SA repo's LDA score (W = M^T,
c = -|mu|^2/2 + log prior) and the mean that NCTI's ncc takes.

Program layout: one program per (model, block of BLOCK_N samples). It walks
the classes in BLOCK_C blocks; each block of logits is a tl.dot over D in
BLOCK_D steps (IEEE precision by default: float32 stays float32, not TF32),
folded into an online softmax (running max, rescaled running sum) and the
true-class logit picked out by comparing the column with the code. The double
softmax needs the first softmax's normaliser before it can start, so it walks
the classes a second time (its max is 1/sum: the first softmax's largest
entry is exp(0)/sum). The x rows of a program are re-read from L1/L2 once per
class block; HBM sees x and W about once and nothing of size N x C is written.
Sums have a fixed order: results are reproducible run to run.
"""
from __future__ import annotations

import torch

from ._compat import cdiv, jit, next_pow2, require_float, require_launchable, tl


@jit
def _logit_block(acc, x_base, w_base, bias_base, rows, rmask, cols, cmask, n_dims,
                 stride_xn, stride_xd, stride_wd, stride_wc, stride_bc,
                 PRECISION: tl.constexpr, BLOCK_D: tl.constexpr):
    """acc (zeros, BLOCK_N x BLOCK_C) + x[rows] W[:, cols] + c[cols]; -inf past the last class."""
    acc_t = acc.dtype
    for d0 in range(0, n_dims, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < n_dims
        xt = tl.load(x_base + rows[:, None] * stride_xn + offs_d[None, :] * stride_xd,
                     mask=rmask[:, None] & dmask[None, :], other=0.0).to(acc_t)
        wt = tl.load(w_base + offs_d[:, None] * stride_wd + cols[None, :] * stride_wc,
                     mask=dmask[:, None] & cmask[None, :], other=0.0).to(acc_t)
        acc = tl.dot(xt, wt, acc, input_precision=PRECISION)
    bias = tl.load(bias_base + cols * stride_bc, mask=cmask, other=0.0).to(acc_t)
    return tl.where(cmask[None, :], acc + bias[None, :], float("-inf"))


@jit
def _true_class_kernel(x_ptr, w_ptr, bias_ptr, codes_ptr, out_ptr,
                       n_samples, n_dims, n_classes,
                       stride_xb, stride_xn, stride_xd, stride_wb, stride_wd, stride_wc,
                       stride_bb, stride_bc,
                       DOUBLE: tl.constexpr, PRECISION: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1)
    acc_t = out_ptr.dtype.element_ty
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < n_samples
    code = tl.load(codes_ptr + rows, mask=rmask, other=-1)
    x_base = x_ptr + b * stride_xb
    w_base = w_ptr + b * stride_wb
    bias_base = bias_ptr + b * stride_bb

    run_max = tl.full([BLOCK_N], float("-inf"), acc_t)
    run_sum = tl.zeros([BLOCK_N], dtype=acc_t)
    true_logit = tl.zeros([BLOCK_N], dtype=acc_t)
    for c0 in range(0, n_classes, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        cmask = cols < n_classes
        logits = _logit_block(tl.zeros([BLOCK_N, BLOCK_C], dtype=acc_t), x_base, w_base,
                              bias_base, rows, rmask, cols, cmask, n_dims,
                              stride_xn, stride_xd, stride_wd, stride_wc, stride_bc,
                              PRECISION, BLOCK_D)
        new_max = tl.maximum(run_max, tl.max(logits, 1))
        run_sum = (run_sum * tl.exp(run_max - new_max)
                   + tl.sum(tl.exp(logits - new_max[:, None]), 1))
        true_logit += tl.sum(tl.where(cols[None, :] == code[:, None], logits, 0.0), 1)
        run_max = new_max
    p_true = tl.exp(true_logit - run_max) / run_sum
    if DOUBLE:
        # the second softmax needs the first one's normaliser over all classes, known
        # only now: recompute the logit blocks rather than keep N x C of them
        top = 1.0 / run_sum                        # the largest first-softmax probability
        sum2 = tl.zeros([BLOCK_N], dtype=acc_t)
        for c0 in range(0, n_classes, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            cmask = cols < n_classes
            logits = _logit_block(tl.zeros([BLOCK_N, BLOCK_C], dtype=acc_t), x_base, w_base,
                                  bias_base, rows, rmask, cols, cmask, n_dims,
                                  stride_xn, stride_xd, stride_wd, stride_wc, stride_bc,
                                  PRECISION, BLOCK_D)
            p1 = tl.exp(logits - run_max[:, None]) / run_sum[:, None]
            sum2 += tl.sum(tl.where(cmask[None, :], tl.exp(p1 - top[:, None]), 0.0), 1)
        p_true = tl.exp(p_true - top) / sum2
    tl.store(out_ptr + b * n_samples + rows, p_true, mask=rmask)


def true_class_prob_triton(x: torch.Tensor, coef: torch.Tensor, intercept: torch.Tensor,
                           codes: torch.Tensor, *, double_softmax: bool = False,
                           precision: str = "ieee", block_n: int = 32, block_c: int | None = None,
                           block_d: int | None = None, num_warps: int = 4) -> torch.Tensor:
    """p[b, i] of softmax(x W + c) (twice with ``double_softmax``) at y_i: (B, N).

    ``precision`` is tl.dot's input precision for float32 ("ieee", or "tf32"
    to match the engine's TF32 matmuls); float64 is always exact.
    """
    dtype = require_float(x, coef, intercept)
    require_launchable(_true_class_kernel, x, coef, intercept, codes)
    b, n, d = x.shape
    c = coef.shape[-1]
    if coef.shape != (b, d, c) or intercept.shape != (b, c) or codes.shape != (n,):
        raise ValueError(f"shapes do not match: x {tuple(x.shape)}, coef {tuple(coef.shape)}, "
                         f"intercept {tuple(intercept.shape)}, codes {tuple(codes.shape)}")
    out = torch.empty((b, n), dtype=dtype, device=x.device)
    bc = block_c or max(16, min(64, next_pow2(c)))
    # float64 keeps the D step at 16: 32 spills registers on sm_90 (tl.dot uses DMMA there)
    bd = block_d or max(16, min(32 if dtype == torch.float32 else 16, next_pow2(d)))
    grid = (b, cdiv(n, block_n))
    _true_class_kernel[grid](x, coef, intercept, codes, out, n, d, c,
                             x.stride(0), x.stride(1), x.stride(2),
                             coef.stride(0), coef.stride(1), coef.stride(2),
                             intercept.stride(0), intercept.stride(1),
                             DOUBLE=bool(double_softmax), PRECISION=precision,
                             BLOCK_N=block_n, BLOCK_C=bc, BLOCK_D=bd, num_warps=num_warps)
    return out


def true_class_prob_torch(x: torch.Tensor, coef: torch.Tensor, intercept: torch.Tensor,
                          codes: torch.Tensor, *, double_softmax: bool = False) -> torch.Tensor:
    """The torch path: logits x W + c (as te_gpu.engine.sfda.fda_logits), softmax, gather."""
    logits = x @ coef + intercept[:, None, :]
    p = torch.softmax(logits, -1)
    if double_softmax:
        p = torch.softmax(p, -1)
    idx = codes[None, :, None].expand(p.shape[0], -1, 1)
    return torch.gather(p, 2, idx)[..., 0]
