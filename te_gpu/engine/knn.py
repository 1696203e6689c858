"""Leave-one-out kNN accuracy batched over models (maths: te_gpu.reference.knn).

Query rows go ``chunk`` at a time: a (B, chunk, N) block of ranking keys,
never the N x N matrix. The k nearest are found without sorting: the k-th
smallest key t (from ``topk``; its order among ties does not matter here)
splits each row into the keys below t, all taken, and those equal to t, taken
in index order until k are chosen (the reference's stable-sort tie rule). The
chosen set is a 0/1 mask whose product with the one-hot labels gives the
votes; ``argmax`` returns the first maximum, i.e. the smallest class on a
tied vote.

``groups`` (B, N), optional: rows with equal ids are copies of one sample (the
rows of a bootstrap resample, :mod:`te_gpu.bootstrap`), and a query leaves out
its whole group, not only itself: a copy at distance 0 would otherwise vote for
the query's own class. None: each row its own group (plain leave-one-out).
"""
from __future__ import annotations

import torch

from .stats import Labels, right

CHUNK = 1024
# On a CPU the (B, chunk, N) key block is kept near 2^20 entries (8 MB in float64): with 16
# models of N = 1,000 in one block of 1,024 queries (131 MB) a model took 0.047 s, against
# 0.023-0.026 s with blocks of 1-2 M entries (bench/RESULTS.md, "Bootstrap"). Queries are
# independent, so the block size changes no score.
CPU_BLOCK = 1 << 20


def _keys(q: torch.Tensor, x: torch.Tensor, sq: torch.Tensor | None) -> torch.Tensor:
    """Ranking keys (B, q, N), smaller = nearer: |x_j|^2 - 2 q.x_j, or -q.x_j (unit rows)."""
    dots = q @ x.mT
    return -dots if sq is None else sq[:, None, :] - 2.0 * dots


def _kth(keys: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest key per row (B, q, 1)."""
    return torch.topk(keys, k, dim=-1, largest=False).values[..., -1:]   # faster than kthvalue


def _nearest_votes(keys: torch.Tensor, k: int, onehot: torch.Tensor,
                   kth: torch.Tensor | None = None) -> torch.Tensor:
    """Votes (B, q, C) of the k smallest keys per row, ties at the k-th key by index."""
    kth = _kth(keys, k) if kth is None else kth
    below = keys < kth
    tied = keys == kth
    room = k - below.sum(-1, keepdim=True)                 # tied slots still free
    chosen = below | (tied & (torch.cumsum(tied, -1) <= room))
    return right(chosen.to(onehot.dtype), onehot)


def knn_batched(x: torch.Tensor, labels: Labels, *, k: int = 3, distance: str = "euclidean",
                chunk: int = CHUNK, groups: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N, D) features -> (B,) leave-one-out kNN accuracy, float64 (``groups``: see above)."""
    if distance not in ("euclidean", "cosine"):
        raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
    if not 1 <= k < x.shape[1]:
        raise ValueError(f"k = {k} neighbours need at least {k + 1} samples, got {x.shape[1]}")
    b, n, _ = x.shape
    if not x.is_cuda:
        chunk = max(1, min(chunk, CPU_BLOCK // (b * n)))
    if distance == "cosine":
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        x = x / torch.where(norm > 0, norm, 1.0)
        sq = None
    else:
        sq = (x * x).sum(-1)
    onehot = labels.onehot.to(x.dtype)
    correct = torch.zeros(b, dtype=torch.float64, device=x.device)
    short = torch.zeros((), dtype=torch.bool, device=x.device)   # checked once, after the loop
    for i0 in range(0, n, chunk):
        i1 = min(i0 + chunk, n)
        keys = _keys(x[:, i0:i1], x, sq)
        rows = torch.arange(i1 - i0, device=x.device)
        kth = None
        if groups is None:
            keys[:, rows, rows + i0] = float("inf")        # leave the sample out
        else:                                              # leave its group out
            keys.masked_fill_(groups[:, i0:i1, None] == groups[:, None, :], float("inf"))
            kth = _kth(keys, k)
            short |= torch.isinf(kth).any()                # no GPU sync inside the loop
        pred = _nearest_votes(keys, k, onehot, kth).argmax(-1)  # (B, q)
        correct += (pred == labels.codes[i0:i1]).sum(-1)
    if groups is not None and bool(short):
        raise ValueError(f"kNN with k = {k}: a sample has fewer than {k} neighbours "
                         "outside its group of copies")
    return correct / n


def head(x: torch.Tensor, labels: Labels, shared, *, k: int, distance: str) -> torch.Tensor:
    """The catalogue's kNN head; rows of a bootstrap resample leave their copies out
    (``shared.groups``)."""
    return knn_batched(x, labels, k=k, distance=distance, groups=getattr(shared, "groups", None))
