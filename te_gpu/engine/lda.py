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


def lda_weighted(x: torch.Tensor, labels: Labels, w: torch.Tensor) -> torch.Tensor:
    """(R,) LDA scores of R resamples of one model's (N, D) features, given as multiplicities
    ``w`` (R, N) (:func:`te_gpu.engine.stats.weighted_class_means`).

    Only the class means depend on the resample; a row's softmax term is the same for all
    its copies, so each distinct row is scored once and counted w times.
    """
    from .stats import true_class, weighted_class_means

    means, _ = weighted_class_means(x, labels, w)
    prior = torch.log(labels.counts / labels.n)
    logits = x @ means.mT - 0.5 * (means * means).sum(-1)[:, None, :] + prior   # (R, N, C)
    p = true_class(torch.softmax(logits, dim=-1), labels.codes)                  # (R, N)
    return (w.to(p.dtype) * p).sum(-1) / labels.n


class Redraws:
    """The catalogue's redraw hook (te_gpu.bootstrap): the LDA score of each redraw from its
    multiplicities ``w`` (R, N) (:func:`lda_weighted`)."""

    def __init__(self, x: torch.Tensor, labels: Labels, redraw_labels: Labels):
        self.x, self.labels = x, labels

    def __call__(self, w: torch.Tensor, idx: torch.Tensor) -> list:
        return lda_weighted(self.x, self.labels, w).tolist()
