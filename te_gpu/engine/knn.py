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
the query's own class. None: each row its own group (plain leave-one-out). With
groups the work is done on the distinct samples (a resample holds about 63 % of
them, so 40 % of the N x N keys): all copies of a sample answer alike, and a
neighbour counts as many times as it has copies (:func:`_knn_distinct`).
"""
from __future__ import annotations

import math

import torch

from .stats import Labels, right, sample_copies

CHUNK = 1024
# On a CPU the (B, chunk, N) key block is kept near 2^20 entries (8 MB in float64): with 16
# models of N = 1,000 in one block of 1,024 queries (131 MB) a model took 0.047 s, against
# 0.023-0.026 s with blocks of 1-2 M entries (bench/RESULTS.md, "Bootstrap"). Queries are
# independent, so the block size changes no score.
CPU_BLOCK = 1 << 20
# grouped kNN: keys this many units of rounding (of the largest squared norm) apart are
# treated as tied and scored exactly (equal vectors can round a few units apart in a
# matrix product; real features hold duplicate images)
TIE_ULPS = 64


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
    if groups is not None:
        return _knn_distinct(x, sq, labels, k, groups, chunk)
    onehot = labels.onehot.to(x.dtype)
    correct = torch.zeros(b, dtype=torch.float64, device=x.device)
    for i0 in range(0, n, chunk):
        i1 = min(i0 + chunk, n)
        keys = _keys(x[:, i0:i1], x, sq)
        rows = torch.arange(i1 - i0, device=x.device)
        keys[:, rows, rows + i0] = float("inf")            # leave the sample out
        pred = _nearest_votes(keys, k, onehot).argmax(-1)  # (B, q)
        correct += (pred == labels.codes[i0:i1]).sum(-1)
    return correct / n


def _knn_distinct(x, sq, labels: Labels, k: int, groups: torch.Tensor, chunk: int):
    """Leave-group-out kNN accuracy (B,) from the distinct samples of each row of groups.

    A sample's first copy stands for all of them (SA's PCA can leave copies apart in
    their last bits; a copy is the same sample). A distinct query walks its nearest
    other samples, k + 1 of them, taking each one's copies until k are taken: the k
    nearest rows of the resampled set. Where that cannot decide - the k-th row's key
    within rounding of another sample's (the resampled set breaks ties by row
    position, and a matrix product can give two equal feature vectors keys a few units
    in the last place apart) - the query is scored on the rows themselves, with keys
    that are equal for equal vectors (:func:`_exact_predictions`).
    """
    b, n, _ = x.shape
    first, count, of_row = sample_copies(groups)
    m = first.shape[1]
    xd = torch.gather(x, 1, first[..., None].expand(-1, -1, x.shape[-1]))
    sqd = None if sq is None else torch.gather(sq, 1, first)
    codes = labels.codes[first]                             # (B, M)
    absent = count == 0
    scale = 1.0 if sqd is None else 2.0 * sqd.amax(-1)[:, None, None]
    tol = TIE_ULPS * torch.finfo(x.dtype).eps * scale
    take_n = min(k + 1, m)
    chunk = chunk if x.is_cuda else max(1, min(chunk, CPU_BLOCK // (b * m)))
    correct = torch.zeros(b, dtype=torch.float64, device=x.device)
    undecided = []
    for i0 in range(0, m, chunk):
        i1 = min(i0 + chunk, m)
        keys = _keys(xd[:, i0:i1], xd, sqd)                  # (B, q, M)
        rows = torch.arange(i1 - i0, device=x.device)
        keys[:, rows, rows + i0] = float("inf")             # leave the sample (all copies) out
        keys.masked_fill_(absent[:, None, :], float("inf"))
        v, j = torch.topk(keys, take_n, dim=-1, largest=False)        # ascending
        cnt = torch.where(torch.isinf(v), 0.0, torch.gather(count[:, None].expand_as(keys), -1, j))
        cum = torch.cumsum(cnt, -1)
        take = torch.minimum(cnt, (k - (cum - cnt)).clamp(min=0))
        votes = torch.zeros((b, i1 - i0, labels.c), dtype=take.dtype, device=x.device)
        votes.scatter_add_(2, torch.gather(codes[:, None].expand_as(keys), -1, j), take)
        at = torch.searchsorted(cum, torch.full_like(cum[..., :1], float(k))).clamp(max=take_n - 1)
        kth = torch.gather(v, -1, at)
        tied = (((v - kth).abs() <= tol) & (cnt > 0)).sum(-1) > 1
        unsure = ~absent[:, i0:i1] & ((cum[..., -1] < k) | tied)
        hit = (votes.argmax(-1) == codes[:, i0:i1]) & ~unsure
        correct += (count[:, i0:i1] * hit).sum(-1)
        undecided.append(unsure)
    undecided = torch.cat(undecided, 1).nonzero()           # one host sync, after the loop
    for bb in undecided[:, 0].unique().tolist():            # rare: near-ties at the k-th key
        queries = undecided[undecided[:, 0] == bb, 1]
        pred = _exact_predictions(xd[bb], sqd is None, of_row[bb], queries, labels, k, chunk)
        correct[bb] += (count[bb, queries] * (pred == codes[bb, queries])).sum()
    return correct / n


def _exact_predictions(xd, cosine: bool, of_row, queries, labels: Labels, k: int, chunk: int):
    """Predictions for distinct samples ``queries`` on the resampled rows (``of_row``: the
    distinct sample of each row), ties by row position. Keys are taken against each
    distinct vector once and spread to its rows, so that equal vectors tie exactly."""
    xu, of_vector = torch.unique(xd, dim=0, return_inverse=True)
    to_row = of_vector[of_row]                              # each row's vector
    sq = None if cosine else (xu * xu).sum(-1)[None]
    onehot = labels.onehot.to(xd.dtype)
    chunk = max(1, min(chunk, CPU_BLOCK // of_row.numel()))
    preds = []
    for q0 in range(0, queries.numel(), chunk):
        q = queries[q0:q0 + chunk]
        keys = _keys(xd[q][None], xu[None], sq)[0][:, to_row]          # (q, N)
        keys.masked_fill_(of_row[None, :] == q[:, None], float("inf"))
        kth = _kth(keys, k)
        if bool(torch.isinf(kth).any()):
            raise ValueError(f"kNN with k = {k}: a sample has fewer than {k} neighbours "
                             "outside its group of copies")
        preds.append(_nearest_votes(keys[None], k, onehot, kth[None]).argmax(-1)[0])
    return torch.cat(preds)


def head(x: torch.Tensor, labels: Labels, shared, *, k: int, distance: str) -> torch.Tensor:
    """The catalogue's kNN head; rows of a bootstrap resample leave their copies out
    (``shared.groups``)."""
    return knn_batched(x, labels, k=k, distance=distance, groups=getattr(shared, "groups", None))


# --------------------------------------------------------------------------
# bootstrap redraws from neighbour lists computed once (te_gpu.bootstrap)
# --------------------------------------------------------------------------

# A redraw holds each sample with probability 1 - (1 - 1/n_c)^n_c >= 1 - 1/e; lists are made
# deep enough that a query finds k present neighbours in them but for this probability.
SHORT_LIST = 1e-7


def list_depth(k: int, n: int) -> int:
    """Neighbours per list: the least L with P(Binomial(L, 1 - 1/e) < k) < SHORT_LIST (<= N - 1)."""
    from scipy.stats import binom

    p = 1.0 - math.exp(-1.0)
    depth = k
    while depth < n - 1 and binom.cdf(k - 1, depth, p) >= SHORT_LIST:
        depth += 1
    return min(depth, n - 1)


class NeighbourLists:
    """Each sample's nearest other samples on the full target set, for many redraws.

    ``keys`` (N, L) ascending ranking keys (as :func:`_keys`; ties in sample
    order), ``index`` (N, L) their samples, ``next_key`` (N,) the (L+1)-th key
    (inf when the list holds every other sample): one N x N pass per model, the
    cost of one leave-one-out score. A redraw is a multiplicity vector w (how many
    times each sample is in it); a present query i takes the w_j copies of its
    nearest present samples j != i in list order until k are taken, exactly the
    k nearest rows of the resampled set (its own copies left out), and all its
    copies predict the same. Where the list cannot decide - fewer than k copies
    in it, or the k-th key tied with another present sample's or with
    ``next_key`` (ties go by row position in the resampled set, which lists do
    not know) - :meth:`accuracy` scores that query exactly on the resampled rows.
    """

    def __init__(self, x: torch.Tensor, labels: Labels, *, k: int, distance: str,
                 depth: int | None = None, chunk: int = CHUNK):
        if distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
        n = x.shape[0]
        if not 1 <= k < n:
            raise ValueError(f"k = {k} neighbours need at least {k + 1} samples, got {n}")
        self.k, self.labels = k, labels
        depth = min(depth or list_depth(k, n), n - 1)
        if distance == "cosine":
            norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
            x = x / torch.where(norm > 0, norm, 1.0)
            self.sq = None
        else:
            self.sq = (x * x).sum(-1)
        self.x = x
        take = min(depth + 1, n - 1)
        if not x.is_cuda:
            chunk = max(1, min(chunk, CPU_BLOCK // n))
        keys, index = [], []
        for i0 in range(0, n, chunk):
            i1 = min(i0 + chunk, n)
            kk = self.query_keys(slice(i0, i1))
            rows = torch.arange(i1 - i0, device=x.device)
            kk[rows, rows + i0] = float("inf")                 # leave the sample out
            v, j = torch.topk(kk, take, dim=-1, largest=False)
            # ties in sample order: sort by index, then stably by key
            j, order = torch.sort(j, dim=-1)
            v = torch.gather(v, -1, order)
            v, order = torch.sort(v, dim=-1, stable=True)
            keys.append(v)
            index.append(torch.gather(j, -1, order))
        keys, index = torch.cat(keys), torch.cat(index)
        self.keys, self.index = keys[:, :depth], index[:, :depth]
        inf = torch.full((n,), float("inf"), dtype=keys.dtype, device=keys.device)
        self.next_key = keys[:, depth] if take > depth else inf

    def query_keys(self, rows) -> torch.Tensor:
        """Ranking keys of the queries ``rows`` against every sample (q, N)."""
        return _keys(self.x[None, rows], self.x[None], None if self.sq is None else self.sq[None])[0]

    def accuracy(self, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """(R,) kNN accuracies of R redraws: ``w`` (R, N) multiplicities, ``idx`` (R, N) rows."""
        k, codes = self.k, self.labels.codes
        r, n = w.shape
        cnt = w[:, self.index]                                  # (R, N, L) copies of each neighbour
        cum = torch.cumsum(cnt, -1)
        take = torch.minimum(cnt, (k - (cum - cnt)).clamp(min=0))
        votes = torch.zeros((r, n, self.labels.c), dtype=w.dtype, device=w.device)
        votes.scatter_add_(2, codes[self.index].expand(r, -1, -1), take)
        pred = votes.argmax(-1)                                 # first max: the smallest class
        # where the list cannot decide: too few copies, or a tie at the k-th key
        filled = cum[..., -1] >= k
        at = torch.searchsorted(cum, torch.full((r, n, 1), float(k), dtype=cum.dtype,
                                                device=cum.device)).clamp(max=cum.shape[-1] - 1)
        kth = torch.gather(self.keys.expand(r, -1, -1), -1, at)          # (R, N, 1)
        tied = ((self.keys == kth) & (cnt > 0)).sum(-1) > 1
        tied |= self.next_key == kth[..., 0]
        undecided = (w > 0) & (~filled | tied)
        for rr, i in undecided.nonzero().tolist():
            pred[rr, i] = self._exact(i, idx[rr])
        right_ = (pred == codes).to(torch.float64)
        return (w.to(torch.float64) * right_).sum(-1) / n

    def _exact(self, i: int, rows: torch.Tensor) -> int:
        """The prediction for sample i on the resampled rows ``rows`` (as knn_batched)."""
        keys = self.query_keys(slice(i, i + 1))[0][rows]
        keys = keys.masked_fill(rows == i, float("inf"))
        if bool(torch.isinf(torch.sort(keys).values[self.k - 1])):
            raise ValueError(f"kNN with k = {self.k}: a sample has fewer than {self.k} "
                             "neighbours outside its group of copies")
        onehot = self.labels.onehot[rows].to(keys.dtype)        # labels of the resampled rows
        return int(_nearest_votes(keys[None, None], self.k, onehot).argmax(-1))


KNN_REDRAWS = 16     # redraws per walk of the neighbour lists (R x N x L entries at once)


class Redraws:
    """The catalogue's redraw hook (``Metric.redraws``, te_gpu.bootstrap): each row's
    neighbour list built once from the full target set; a redraw, given as multiplicities
    ``w`` (R, N) and rows ``idx`` (R, N), walks them (:class:`NeighbourLists`)."""

    def __init__(self, x: torch.Tensor, labels: Labels, redraw_labels: Labels, *, k: int,
                 distance: str):
        self.lists = NeighbourLists(x, labels, k=k, distance=distance)

    def __call__(self, w: torch.Tensor, idx: torch.Tensor) -> list:
        return [v for r0 in range(0, w.shape[0], KNN_REDRAWS)
                for v in self.lists.accuracy(w[r0:r0 + KNN_REDRAWS],
                                             idx[r0:r0 + KNN_REDRAWS]).tolist()]
