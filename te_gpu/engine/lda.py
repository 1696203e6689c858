"""The SA repository's LDA score, batched (SPEC 3): a nearest-class-mean softmax."""
from __future__ import annotations

import torch

from . import linalg
from .stats import Labels, softmax_true_class


def lda_batched(x: torch.Tensor, labels: Labels, means: torch.Tensor) -> torch.Tensor:
    """(B, N, D) features and their class means (B, C, D) -> (B,) scores."""
    prior = torch.log(labels.counts / labels.n)
    logits = linalg.matmul(x, means.mT) - 0.5 * (means * means).sum(-1)[:, None, :] + prior
    return softmax_true_class(logits, labels.codes)


def head(x: torch.Tensor, labels: Labels, shared) -> torch.Tensor:
    """The catalogue's LDA-score head."""
    return lda_batched(x, labels, shared.stats.means)
