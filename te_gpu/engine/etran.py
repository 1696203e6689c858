"""ETran's per-model parts batched over models (maths: te_gpu.reference.etran, SPEC 10.8).

Both parts are O(N D C): a log-sum-exp per sample with a partial sort for the
energy, and one (N x D) @ (D x C) product for the identity-covariance classifier.
"""
from __future__ import annotations

import torch

from .stats import Labels, class_sums, softmax_true_class


def energy_part(x: torch.Tensor, per_mille: int) -> torch.Tensor:
    """(B, N, D) -> (B,): mean of the max(1, per_mille N // 1000) lowest log-sum-exps."""
    n = x.shape[1]
    lowest = torch.topk(torch.logsumexp(x, -1), max(1, per_mille * n // 1000), dim=-1,
                        largest=False, sorted=True).values
    return lowest.mean(-1)


def lda_part(x: torch.Tensor, labels: Labels) -> torch.Tensor:
    """(B, N, D) -> (B,): mean true-class probability of the Gaussian classifier with the
    class means, the class frequencies and an identity covariance."""
    counts = labels.counts.to(x.dtype)
    means = class_sums(x, labels) / counts[None, :, None]           # (B, C, D)
    bias = -0.5 * means.pow(2).sum(-1) + torch.log(counts / labels.n)
    logits = torch.bmm(x, means.mT) + bias[:, None, :]
    return softmax_true_class(logits, labels.codes)


def head(x: torch.Tensor, labels: Labels, shared, *, energy_per_mille: int):
    """The catalogue's ETran head: the per-model parts (energy, lda), each (B,)."""
    ok = isinstance(energy_per_mille, int) and not isinstance(energy_per_mille, bool)
    if not ok or not 1 <= energy_per_mille <= 1000:
        raise ValueError(f"energy_per_mille must be an integer in [1, 1000], got {energy_per_mille!r}")
    return energy_part(x, energy_per_mille), lda_part(x, labels)
