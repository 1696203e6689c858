"""SFDA batched over models (SPEC 2; maths in te_gpu.reference.sfda).

Both discriminant fits are Cholesky solves on the shrunk within scatter
(coef = M S_w'^{-1}); the within scatter of the ConfMix features comes from
their own centred Gram, so SFDA costs two Grams and two N x D x C products.
"""
from __future__ import annotations

import torch

from . import linalg
from .stats import Labels, batch_stats, power_iteration_top, shrink, true_class


def fda_logits(x, labels: Labels, means, sw, lam):
    """Logits of the regularised FDA (B, N, C) given shrinkage lam (B,)."""
    coef, ok = linalg.solve_spd(shrink(sw, lam), means.mT)   # (B, D, C)
    if not bool(ok.all()):
        raise ValueError("SFDA: the shrunk within-class scatter is not positive definite "
                         "(features have no within-class variance)")
    intercept = -0.5 * (means.mT * coef).sum(1) + torch.log(labels.counts / labels.n)
    return linalg.matmul(x, coef) + intercept[:, None, :]


def shrinkage(sw: torch.Tensor) -> torch.Tensor:
    rho = power_iteration_top(sw, rounds=3)
    return torch.clamp(torch.exp(-5.0 * rho), min=1e-10)


def sfda_batched(x: torch.Tensor, labels: Labels, means: torch.Tensor, sw: torch.Tensor) -> torch.Tensor:
    """(B, N, D) features with their class means and within scatter -> (B,) SFDA.

    SFDA always computes in float64, also for ``precision="fast"``: its shrinkage
    goes down to 1e-10, and a float32 within scatter of N < D features is
    indefinite at rounding level, which no such shrinkage repairs (the Cholesky
    fails). Its cost is two Grams; the other metrics keep float32.
    """
    if x.dtype != torch.float64:
        x64, lab64 = x.to(torch.float64), labels.to(torch.float64)
        st = batch_stats(x64, lab64)
        return sfda_batched(x64, lab64, st.means, st.sw).to(x.dtype)
    c = labels.c
    lam = shrinkage(sw)
    p = torch.softmax(torch.softmax(fda_logits(x, labels, means, sw, lam), -1), -1)
    p_true = true_class(p, labels.codes)[..., None]       # (B, N, 1)
    outer = (means.sum(1, keepdim=True) - means) / (c - 1)
    # p x + (1 - p) outer_y, as one interpolation into the gathered outer means
    mixed = outer.index_select(1, labels.codes).lerp_(x, p_true)
    st2 = batch_stats(mixed, labels)
    logits2 = fda_logits(mixed, labels, st2.means, st2.sw, lam)
    return true_class(torch.softmax(logits2, -1), labels.codes).mean(-1)


def head(x: torch.Tensor, labels: Labels, shared) -> torch.Tensor:
    """The catalogue's SFDA head."""
    return sfda_batched(x, labels, shared.stats.means, shared.stats.sw)
