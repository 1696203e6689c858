"""LogME's fixed point for every (model, target) pair of a batch in one launch.

Input is the spectrum the engine already has (te_gpu.engine.logme.spectrum or
spectrum_svd): sigma (B, k) and its validity mask, the projections
proj = U^T Y (B, T, k) and the squared target norms t_sq (T,). Output is the
maximised evidence / N for every pair, (B, T), equal to
te_gpu.engine.evidence.fixed_point_evidence up to the order of the sums over k.

Semantics (SPEC 1, and the engine's convergence mask): alpha = beta = 1; at
most 11 updates; a pair freezes alpha, beta, m2 and res2 at the first update
where |alpha/beta - t|/t <= 1e-3 (that update is kept, as the released loop
keeps it before breaking); the evidence uses the frozen values and the log-det
sum over the valid eigenvalues only; ``corrected`` adds the (D - k) missing
log alpha terms (thuml/LogME issue 23).

Program layout: one program per (model, block of BLOCK_T targets). It streams
the model's sigma and its targets' projections over k in BLOCK_K chunks: once
for r0 = |t|^2 - sum x^2, once per update (gamma, m2, res2 for the BLOCK_T
pairs at once), and once for the log-det. The per-model data (T x k values)
stays in L2 between the passes, so HBM sees it about once, where the torch
path writes and reads several (B, T, k) temporaries per update. A block stops
iterating as soon as all its pairs have frozen: frozen values never change, so
this saves work without changing a bit. Every sum has a fixed order: results
are reproducible run to run.
"""
from __future__ import annotations

import math

import torch

from ._compat import cdiv, jit, next_pow2, require_float, require_launchable, tl

MAX_ITER = 11
EPS = 1e-5
TOL = 1e-3


@jit
def _logme_kernel(sigma_ptr, valid_ptr, proj_ptr, tsq_ptr, out_ptr,
                  n_targets, k_dim, n, d,
                  stride_sb, stride_sk, stride_vb, stride_vk, stride_pb, stride_pt, stride_pk,
                  MAX_ITER: tl.constexpr, EPS: tl.constexpr, TOL: tl.constexpr,
                  LOG_2PI: tl.constexpr, CORRECTED: tl.constexpr,
                  BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    pid_t = tl.program_id(1)
    acc_t = out_ptr.dtype.element_ty
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    tmask = offs_t < n_targets
    s_base = sigma_ptr + b * stride_sb
    v_base = valid_ptr + b * stride_vb
    p_base = proj_ptr + b * stride_pb + offs_t.to(tl.int64)[:, None] * stride_pt
    zero = tl.zeros([BLOCK_T], dtype=acc_t)
    nf = zero + n                                  # exact int -> float conversions
    df = zero + d

    # r0 = |t|^2 - sum_k x^2
    sx2 = zero
    for k0 in range(0, k_dim, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        pm = tmask[:, None] & (offs_k < k_dim)[None, :]
        p = tl.load(p_base + offs_k[None, :] * stride_pk, mask=pm, other=0.0).to(acc_t)
        sx2 += tl.sum(p * p, 1)
    r0 = tl.maximum(tl.load(tsq_ptr + offs_t, mask=tmask, other=0.0).to(acc_t) - sx2, 0.0)

    alpha = zero + 1.0
    beta = zero + 1.0
    m2 = zero
    res2 = zero
    done = offs_t >= n_targets                     # padding pairs count as frozen
    n_open = tl.sum(tmask.to(tl.int32), 0)
    it = 0
    while (it < MAX_ITER) & (n_open > 0):
        t = alpha / beta
        tt = t[:, None]
        gamma = zero
        rest = zero
        m2_new = zero
        res2_new = zero
        for k0 in range(0, k_dim, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            kmask = offs_k < k_dim
            # masked entries load sigma = 0 and x = 0 and add exactly 0 to every sum
            sig = tl.load(s_base + offs_k * stride_sk, mask=kmask, other=0.0).to(acc_t)[None, :]
            p = tl.load(p_base + offs_k[None, :] * stride_pk, mask=tmask[:, None] & kmask[None, :],
                        other=0.0).to(acc_t)
            x2 = p * p
            den = tt + sig
            q = 1.0 + sig / tt
            gamma += tl.sum(sig / (sig + tt), 1)
            # N - gamma without cancellation: (N - k) + sum t/(sigma + t) over real entries
            rest += tl.sum(tl.where(kmask[None, :], tt / (sig + tt), 0.0), 1)
            m2_new += tl.sum(sig * x2 / (den * den), 1)
            res2_new += tl.sum(x2 / (q * q), 1)
        res2_new = res2_new + r0
        a_new = gamma / (m2_new + EPS)
        b_new = (nf - k_dim + rest) / (res2_new + EPS)
        conv = tl.abs(a_new / b_new - t) / t <= TOL
        alpha = tl.where(done, alpha, a_new)
        beta = tl.where(done, beta, b_new)
        m2 = tl.where(done, m2, m2_new)
        res2 = tl.where(done, res2, res2_new)
        done = done | conv
        n_open = tl.sum(tl.where(done, 0, 1), 0)
        it += 1

    # evidence with the frozen values; log-det over the valid eigenvalues only
    logdet = zero
    n_valid = zero
    for k0 in range(0, k_dim, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        kmask = offs_k < k_dim
        sig = tl.load(s_base + offs_k * stride_sk, mask=kmask, other=0.0).to(acc_t)
        ok = tl.load(v_base + offs_k * stride_vk, mask=kmask, other=0) != 0
        term = tl.log(alpha[:, None] + beta[:, None] * sig[None, :])
        logdet += tl.sum(tl.where(ok[None, :], term, 0.0), 1)
        if CORRECTED:
            n_valid += tl.sum(ok.to(acc_t), 0)
    log_a = tl.log(alpha)
    ev = (df / 2.0 * log_a + nf / 2.0 * tl.log(beta) - 0.5 * logdet
          - beta / 2.0 * res2 - alpha / 2.0 * m2 - nf / 2.0 * LOG_2PI)
    if CORRECTED:
        ev = ev - 0.5 * (df - n_valid) * log_a
    tl.store(out_ptr + b * n_targets + offs_t, ev / nf, mask=tmask)


def logme_evidence_triton(sigma: torch.Tensor, valid: torch.Tensor, proj: torch.Tensor,
                          t_sq: torch.Tensor, n: int, d: int, corrected: bool, *,
                          block_t: int = 2, block_k: int | None = None, num_warps: int = 4):
    """Evidence / N (B, T) for sigma, valid (B, k), proj (B, T, k), t_sq (T,)."""
    dtype = require_float(sigma, proj, t_sq)
    require_launchable(_logme_kernel, sigma, proj, t_sq)
    b, n_t, k = proj.shape
    if sigma.shape != (b, k) or valid.shape != (b, k) or t_sq.shape != (n_t,):
        raise ValueError(f"shapes do not match: sigma {tuple(sigma.shape)}, valid "
                         f"{tuple(valid.shape)}, proj {tuple(proj.shape)}, t_sq {tuple(t_sq.shape)}")
    ok = valid.to(torch.int8)
    out = torch.empty((b, n_t), dtype=dtype, device=proj.device)
    # 2 targets a program: B * T / 2 programs fill an H100 even for one model (T = 100);
    # tiles of 1024 (float32) or 256 (float64) values: no register spills on sm_90
    # (float64 at 512 spilled once N - gamma got its own, cancellation-free sum)
    bk = block_k or min(512 if dtype == torch.float32 else 128, next_pow2(k))
    grid = (b, cdiv(n_t, block_t))
    _logme_kernel[grid](sigma, ok, proj, t_sq, out, n_t, k, int(n), int(d),
                        sigma.stride(0), sigma.stride(1), ok.stride(0), ok.stride(1),
                        proj.stride(0), proj.stride(1), proj.stride(2),
                        MAX_ITER=MAX_ITER, EPS=EPS, TOL=TOL, LOG_2PI=math.log(2 * math.pi),
                        CORRECTED=bool(corrected), BLOCK_T=block_t, BLOCK_K=bk,
                        num_warps=num_warps)
    return out
