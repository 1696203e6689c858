r"""PARC batched over models (maths: te_gpu.reference.parc, SPEC 10.7).

The label side of PARC takes two values (0 for a same-class pair, C/(C-1)
otherwise), so Spearman's correlation against it is a point-biserial one:
with the feature side's average ranks :math:`r_p` over the M = N(N-1)/2 pairs,
:math:`R_1 = \sum_{p\ \text{cross-class}} r_p`, :math:`n_0` same-class and
:math:`n_1` cross-class pairs and :math:`T = \sum_g (t_g^3 - t_g)` over the
groups of tied feature values,

.. math::
    \rho = \frac{R_1 - n_1 (M+1)/2}
                {\sqrt{\frac{M^3 - M - T}{12}\cdot\frac{n_0 n_1}{M}}}.

An average rank only needs, for each pair, the number of pairs below its value
and the number tied with it, so no model ever holds its M pair values at once:

* rows equal in exact arithmetic (equal features, or copies of one sample in a
  bootstrap redraw) are merged first into one distinct row with a multiplicity
  and its class counts, so every pair of copies has one value, computed once,
  and a row with its copy is exactly 0 (the rule the reference applies too);
* the pairs of distinct rows are computed in row blocks of ``PAIRS_PER_BLOCK``
  and counted into ``BINS`` equal-width bins of [0, 2] (the values' range);
  consecutive bins form buckets of about ``PAIRS_PER_BUCKET`` pairs;
* each bucket is gathered in a further pass over the blocks, sorted, and ranked:
  a bin is a value interval, so every tie group lies inside one bucket, and the
  pairs below a bucket are the weights of the buckets before it.

A model whose pairs fit one bucket takes one pass. Memory per model: a block
and a bucket (plus the largest bin), never the M pairs; ``pair_memory`` states
it for the batch-size chooser. Weights and doubled rank sums are exact integers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .sa import drop_noise_components, randomized_pca_batched
from .stats import Labels, sample_copies

PAIRS_PER_BLOCK = 1 << 20     # pair values per model computed at a time
PAIRS_PER_BUCKET = 1 << 23    # pair values per model gathered and sorted at a time
BINS = 1 << 16                # value bins that buckets are cut from


def standardised_scores(x: torch.Tensor, pca_dim: int) -> torch.Tensor:
    """(B, N, D) -> (B, N, k): randomized PCA (noise components zeroed), then each
    column centred and scaled to unit population std; a constant column becomes 0."""
    b, n, d = x.shape
    if pca_dim:
        z = randomized_pca_batched(x - x.mean(1, keepdim=True), min(pca_dim, n, d))
        z = drop_noise_components(z, d)
    else:
        z = x
    constant = (z.amax(1) == z.amin(1))[:, None, :]
    std = torch.where(constant, 1.0, z.std(1, correction=0, keepdim=True))
    return torch.where(constant, 0.0, (z - z.mean(1, keepdim=True)) / std)


def unit_rows(s: torch.Tensor) -> torch.Tensor:
    """Rows centred across columns and scaled to norm 1: their dot products are the
    samples' Pearson correlations."""
    if s.shape[-1] < 2:
        raise ValueError(f"PARC correlates samples across at least 2 feature columns, "
                         f"got {s.shape[-1]}")
    c = s - s.mean(-1, keepdim=True)
    norm = torch.linalg.vector_norm(c, dim=-1, keepdim=True)
    flat = int((norm == 0).sum())
    if flat:
        raise ValueError(f"PARC: {flat} sample(s) have equal standardised features; "
                         "their correlation is undefined")
    return c / norm


def row_blocks(n: int, device):
    """(first row, last row + 1, mask) blocks of the strict upper triangle; the mask
    (rows, N - first - 1) marks columns j > i among columns first+1..N-1."""
    step = max(1, PAIRS_PER_BLOCK // max(n, 1))
    cols = torch.arange(n, device=device)
    for r0 in range(0, n - 1, step):
        r1 = min(n - 1, r0 + step)
        rows = torch.arange(r0, r1, device=device)
        yield r0, r1, cols[None, r0 + 1:] > rows[:, None]


def first_equal(keys: torch.Tensor) -> torch.Tensor:
    """(B, N, K) -> (B, N): the first row of its model with an equal key row."""
    b, n = keys.shape[:2]
    model = torch.arange(b, device=keys.device).repeat_interleave(n)[:, None]
    _, inverse = torch.unique(torch.cat([model.to(keys.dtype), keys.reshape(b * n, -1)], 1),
                              dim=0, return_inverse=True)
    rows = torch.arange(n, device=keys.device).repeat(b)
    first = torch.full((int(inverse.max()) + 1,), n, dtype=torch.int64, device=keys.device)
    first.scatter_reduce_(0, inverse, rows, reduce="amin")
    return first[inverse].view(b, n)


def representatives(x: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
    """(B, N) the first row that each row is merged with: rows with equal features, and
    copies of one sample (equal ``groups`` ids, a bootstrap redraw), which a perturbation
    after the redraw (SA) may have told apart by rounding only. Equal in exact arithmetic,
    such rows must not be ordered by the rounding of the products below."""
    if groups is not None:      # each row as its sample's first copy, then equal rows
        first, _, of_row = sample_copies(groups)
        x = x.gather(1, first.gather(1, of_row)[..., None].expand_as(x))
    return first_equal(x)


@dataclass
class DistinctRows:
    """The distinct rows of B models, padded to the largest count G by rows of weight 0."""
    u: torch.Tensor          # (B, G, k) unit rows
    weight: torch.Tensor     # (B, G) int64: rows merged into each
    counts: torch.Tensor     # (B, G, C) float64: their classes
    code: torch.Tensor | None  # (B, G) their one class, or None where some mix classes


def distinct_rows(u: torch.Tensor, rep: torch.Tensor, codes: torch.Tensor, n_classes: int):
    """Each model's rows merged by ``rep`` (:func:`representatives`), in order of first rows."""
    b, n, k = u.shape
    first = rep == torch.arange(n, device=u.device)
    slot_of_first = first.cumsum(1) - 1
    slot = slot_of_first.gather(1, rep)
    g = int(first.sum(1).max())
    weight = torch.zeros((b, g), dtype=torch.int64, device=u.device)
    weight.scatter_add_(1, slot, torch.ones_like(slot))
    onehot = torch.nn.functional.one_hot(codes, n_classes).to(torch.float64)
    counts = torch.zeros((b, g, n_classes), dtype=torch.float64, device=u.device)
    counts.scatter_add_(1, slot[..., None].expand(b, n, n_classes), onehot.expand(b, n, n_classes))
    bi, ri = first.nonzero(as_tuple=True)
    rows = u.new_zeros((b, g, k))
    rows[bi, slot_of_first[bi, ri]] = u[bi, ri]
    pure = bool((counts.amax(-1) == weight).all())
    return DistinctRows(rows, weight, counts, counts.argmax(-1) if pure else None)


def pair_blocks(rows: DistinctRows, codes: torch.Tensor):
    """Blocks of (values, same-class count, pair count), each (B or 1, P): the pairs of
    distinct rows g < h, row-block by row-block (count 0 below the diagonal), then each
    row with its copies (value exactly 0). Where no model merged rows the counts are
    the (1, P) booleans of the pairs and their classes, shared by the models."""
    u, w = rows.u, rows.weight
    b, g, _ = u.shape
    merged = g < codes.shape[0] or bool((w != 1).any())
    for r0, r1, keep in row_blocks(g, u.device):
        corr = torch.bmm(u[:, r0:r1], u[:, r0 + 1:].mT)
        values = (1.0 - corr.clamp_(-1.0, 1.0)).view(b, -1)
        if not merged:
            same = keep & (codes[r0:r1, None] == codes[None, r0 + 1:])
            yield values, same.view(1, -1), keep.view(1, -1)
            continue
        total = torch.where(keep, w[:, r0:r1, None] * w[:, None, r0 + 1:], 0)
        if rows.code is None:
            same = torch.bmm(rows.counts[:, r0:r1], rows.counts[:, r0 + 1:].mT).round().long()
            same = torch.where(keep, same, 0)
        else:
            same = torch.where(rows.code[:, r0:r1, None] == rows.code[:, None, r0 + 1:], total, 0)
        yield values, same.view(b, -1), total.view(b, -1)
    if merged:
        within = (rows.counts * (rows.counts - 1.0) / 2.0).sum(-1).round().long()
        yield torch.zeros(w.shape, dtype=u.dtype, device=u.device), within, w * (w - 1) // 2


def value_bin(v: torch.Tensor) -> torch.Tensor:
    """Bin of each pair value in [0, 2]: BINS equal bins, bin k = [2k/BINS, 2(k+1)/BINS)
    exactly (a power-of-two scale rounds nothing)."""
    return (v * (BINS // 2)).long().clamp_(max=BINS - 1)


def bucket_bounds(blocks, b: int, device):
    """Value bounds (R, B, 2) of each model's buckets, consecutive bins of about
    ``PAIRS_PER_BUCKET`` pairs, and each bucket's largest size over the models."""
    counts = torch.zeros((b, BINS), dtype=torch.int64, device=device)
    for v, _, total in blocks():
        live = total.expand(b, -1) if total.dtype == torch.bool else total > 0
        counts.scatter_add_(1, value_bin(v), live.long())
    bucket = (counts.cumsum(1) - counts) // PAIRS_PER_BUCKET       # (B, BINS), non-decreasing
    r = int(bucket.max()) + 1
    sizes = torch.zeros((b, r), dtype=torch.int64, device=device).scatter_add_(1, bucket, counts)
    wanted = torch.arange(r + 1, device=device).expand(b, -1).contiguous()
    first_bin = torch.searchsorted(bucket, wanted)                  # each bucket's first bin
    edges = torch.where(first_bin < BINS, 2.0 * first_bin.to(torch.float64) / BINS,
                        torch.inf).mT                               # (R + 1, B); the last
    # bin holds 2.0 too, so a model's last bucket reaches +inf
    return torch.stack([edges[:-1], edges[1:]], -1), sizes.amax(0).tolist()


def gather_bucket(blocks, bounds, size: int, b: int, device, dtype):
    """(B, size) values (+inf past a model's last), same-class and pair counts of the pairs
    in [bounds[:, 0], bounds[:, 1]) (B, 2) (all pairs if None)."""
    vals = torch.full((b, size), torch.inf, dtype=dtype, device=device)
    same = torch.zeros((b, size), dtype=torch.int64, device=device)
    total = torch.zeros_like(same)
    filled = torch.zeros(b, dtype=torch.int64, device=device)      # per model, so far
    first_slot = torch.arange(b, device=device) * size
    for v, s, t in blocks():
        shared = t.dtype == torch.bool            # (1, P) pairs and classes of every model
        take = t.expand(b, -1).contiguous() if shared else t > 0
        if bounds is not None:
            lo, hi = bounds.to(v.dtype).unbind(-1)
            take &= v >= lo[:, None]
            take &= v < hi[:, None]
        taken = take.sum(1)
        # model by model, in order (the order within a model is free: the bucket is sorted)
        shift = first_slot + filled - (taken.cumsum(0) - taken)
        slot = torch.arange(int(taken.sum()), device=device) + shift.repeat_interleave(taken)
        vals.view(-1)[slot] = v[take]
        if shared:
            same.view(-1)[slot] = (s & take)[take].long()
            total.view(-1)[slot] = 1
        else:
            same.view(-1)[slot] = s[take]
            total.view(-1)[slot] = t[take]
        filled += taken
    return vals, same, total


def bucket_sums(vals, same, total, below_bucket):
    """One bucket's doubled cross-class rank sum (B,) int64, tie term (B,) float64 and
    largest tie group (B,) int64; ``below_bucket``: (B,) pairs below the bucket."""
    sv, order = torch.sort(vals, dim=-1)
    t = total.gather(1, order)
    cross = t - same.gather(1, order)
    upto = t.cumsum(1)                                   # pairs up to each, inclusive
    b, size = sv.shape
    pos = torch.arange(size, device=sv.device).expand(b, size)
    change = sv[:, 1:] != sv[:, :-1]
    edge = torch.ones((b, 1), dtype=torch.bool, device=sv.device)
    start = torch.where(torch.cat([edge, change], 1), pos, 0).cummax(1).values
    last = torch.where(torch.cat([change, edge], 1), pos, size - 1).flip(1).cummin(1).values.flip(1)
    below = (upto - t).gather(1, start)
    equal = upto.gather(1, last) - below                 # pairs tied with each (itself too)
    doubled = (cross * (2 * (below_bucket[:, None] + below) + equal + 1)).sum(1)
    ties = (t.to(torch.float64) * (equal.to(torch.float64) ** 2 - 1.0)).sum(1)
    return doubled, ties, equal.amax(1)


def spearman_pairs(blocks, n_same: int, m: int, most_pairs: int) -> torch.Tensor:
    """Spearman's rho (B,) float64 between the pair values that ``blocks()`` yields (a fresh
    iterator per pass, of (B, P) values, same-class counts and pair counts, M pairs per
    model) and the same-class / cross-class indicator. ``most_pairs``: a bound on the
    (value, count) entries of a model (one bucket when it fits)."""
    v0 = next(iter(blocks()))[0]                         # the batch's shape and dtype
    b, device, dtype = v0.shape[0], v0.device, v0.dtype
    if most_pairs <= PAIRS_PER_BUCKET:
        plan = [(None, most_pairs)]
    else:
        bounds, sizes = bucket_bounds(blocks, b, device)
        plan = [(bounds[r], size) for r, size in enumerate(sizes) if size]
    # the doubled rank sum grows as N^4: int64 within a bucket (checked), Python integers
    # across buckets, so it stays exact where an int64 total would wrap (N > ~65,000)
    doubled = [0] * b
    ties = torch.zeros(b, dtype=torch.float64, device=device)
    below = torch.zeros(b, dtype=torch.int64, device=device)
    widest = torch.zeros_like(below)
    for bounds, size in plan:
        vals, same, total = gather_bucket(blocks, bounds, size, b, device, dtype)
        if int(total.sum(1).max()) * (2 * m + 1) >= 2 ** 63:
            raise ValueError(f"PARC: {m} pairs per model are too many for its exact rank sums "
                             "(int64); subsample the target set")
        d, t, w = bucket_sums(vals, same, total, below)
        doubled = [acc + part for acc, part in zip(doubled, d.tolist())]
        ties += t
        widest = torch.maximum(widest, w)
        below += total.sum(1)
    if bool((widest == m).any()):
        raise ValueError("PARC: every pair of samples is equally dissimilar; the rank "
                         "correlation is undefined")
    n1 = m - n_same
    numerator = torch.tensor([(dd - n1 * (m + 1)) / 2.0 for dd in doubled], dtype=torch.float64,
                             device=device)
    mf = float(m)
    spread = (mf ** 3 - mf - ties) / 12.0 * (n_same * n1 / mf)
    return numerator / spread.sqrt()


def same_class_pairs(labels: Labels) -> int:
    """Pairs i < j of one class (n_0); ValueError where there are none."""
    sizes = torch.bincount(labels.codes, minlength=labels.c)
    same = int((sizes * (sizes - 1) // 2).sum())
    if same == 0:
        raise ValueError("PARC needs a class with at least 2 samples (a same-class pair)")
    return same


def pair_memory(n: int, d: int, c: int, item: int) -> int:
    """Bytes one model's pairs take at most (a block and a bucket with their work arrays),
    declared in the catalogue for the batch-size chooser."""
    pairs = n * (n - 1) // 2 + n
    return (min(PAIRS_PER_BLOCK, pairs) * (2 * item + 48)
            + min(PAIRS_PER_BUCKET, pairs) * (2 * item + 88))


def parc_batched(x: torch.Tensor, labels: Labels, *, pca_dim: int = 32,
                 groups: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N, D) -> (B,) PARC (x 100); ``groups`` (B, N): ids of copies of one sample."""
    if isinstance(pca_dim, bool) or not isinstance(pca_dim, int) or pca_dim < 0:
        raise ValueError(f"pca_dim must be an integer >= 0 (0: no PCA), got {pca_dim!r}")
    n_same = same_class_pairs(labels)
    u = unit_rows(standardised_scores(x, pca_dim))
    rows = distinct_rows(u, representatives(x, groups), labels.codes, labels.c)
    n, g = x.shape[1], rows.u.shape[1]
    rho = spearman_pairs(lambda: pair_blocks(rows, labels.codes), n_same, n * (n - 1) // 2,
                         g * (g - 1) // 2 + g)
    return 100.0 * rho


def head(x: torch.Tensor, labels: Labels, shared, *, pca_dim: int) -> torch.Tensor:
    """The catalogue's PARC head (reads ``shared.groups`` in a bootstrap redraw)."""
    return parc_batched(x, labels, pca_dim=pca_dim, groups=getattr(shared, "groups", None))
