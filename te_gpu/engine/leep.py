"""LEEP and NCE batched over source models (maths: te_gpu.reference.leep).

Input: (B, N, K) softmax predictions of B source models with the same number
K of source classes, and the shared target labels. The C x K joints are class
sums over samples; nothing loops over classes.
"""
from __future__ import annotations

import torch

from .stats import Labels, class_sums, true_class


def leep_batched(probs: torch.Tensor, labels: Labels) -> torch.Tensor:
    """(B, N, K) probabilities -> (B,) LEEP, float64."""
    p = probs.to(torch.float64)
    joint = class_sums(p, labels.to(torch.float64)) / labels.n     # (B, C, K)
    col = joint.sum(1, keepdim=True)
    cond = joint / torch.where(col > 0, col, 1.0)                  # P(y|z); 0 where z is unused
    eep = true_class(p @ cond.mT, labels.codes)                    # (B, N): sum_z theta(z) P(y_i|z)
    return torch.log(eep).mean(-1)


def nce_batched(probs: torch.Tensor, labels: Labels) -> torch.Tensor:
    """(B, N, K) probabilities -> (B,) NCE of the argmax pseudo labels, float64."""
    b, n, k = probs.shape
    z = probs.argmax(-1)                                           # first maximum on ties
    cell = labels.codes[None, :] * k + z                           # (B, N) index of (y, z)
    # counts of small integers: exact in float64 whatever the order of the additions
    joint = torch.zeros((b, labels.c * k), dtype=torch.float64, device=probs.device)
    joint.scatter_add_(1, cell, torch.ones_like(cell, dtype=torch.float64))
    joint = joint.view(b, labels.c, k) / n
    pz = joint.sum(1, keepdim=True)
    ratio = joint / torch.where(pz > 0, pz, 1.0)
    return torch.xlogy(joint, ratio).sum((-2, -1))


def head(probs: torch.Tensor, labels: Labels, shared) -> torch.Tensor:
    """The catalogue's LEEP head (input: the source model's predictions)."""
    return leep_batched(probs, labels)


def nce_head(probs: torch.Tensor, labels: Labels, shared) -> torch.Tensor:
    """The catalogue's NCE head (input: the source model's predictions)."""
    return nce_batched(probs, labels)
