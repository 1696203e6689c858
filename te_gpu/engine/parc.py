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

Each model's M pair values are computed in row blocks (never the whole N x N
product at once) and sorted once; average ranks and tie sizes then come from
the sorted values a block at a time: inside a block a tie group's bounds are
running maxima / minima of the positions where the value changes, and only the
block's first and last groups, which may reach outside it, are found by a
binary search. Sums of doubled ranks are kept as exact integers.
"""
from __future__ import annotations

import torch

from .sa import drop_noise_components, randomized_pca_batched
from .stats import Labels

PAIRS_PER_BLOCK = 1 << 22      # pair values per model computed or ranked at a time


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
    (rows, N - first - 1) marks columns j > i among columns first+1..N-1. Blocks are
    consecutive in row-major (``triu_indices``) order."""
    step = max(1, PAIRS_PER_BLOCK // max(n, 1))
    cols = torch.arange(n, device=device)
    for r0 in range(0, n - 1, step):
        r1 = min(n - 1, r0 + step)
        rows = torch.arange(r0, r1, device=device)
        yield r0, r1, cols[None, r0 + 1:] > rows[:, None]


def upper_dissimilarities(u: torch.Tensor) -> torch.Tensor:
    """(B, N, k) unit rows -> (B, M): 1 - clip(corr) of every pair i < j, row-major."""
    b, n, _ = u.shape
    out = torch.empty((b, n * (n - 1) // 2), dtype=u.dtype, device=u.device)
    at = 0
    for r0, r1, keep in row_blocks(n, u.device):
        corr = torch.bmm(u[:, r0:r1], u[:, r0 + 1:].mT)
        piece = (1.0 - corr.clamp_(-1.0, 1.0))[:, keep]
        out[:, at:at + piece.shape[1]] = piece
        at += piece.shape[1]
    return out


def cross_class_pairs(codes: torch.Tensor) -> torch.Tensor:
    """(M,) bool: pair i < j (row-major) joins two classes."""
    n = codes.shape[0]
    out = torch.empty(n * (n - 1) // 2, dtype=torch.bool, device=codes.device)
    at = 0
    for r0, r1, keep in row_blocks(n, codes.device):
        piece = (codes[r0:r1, None] != codes[None, r0 + 1:])[keep]
        out[at:at + piece.numel()] = piece
        at += piece.numel()
    return out


def rank_sums(values: torch.Tensor, cross: torch.Tensor):
    """Doubled average-rank sum of the cross-class pairs (B,) int64, and the tie term
    T (B,) float64, of (B, M) pair values."""
    sv, order = torch.sort(values, dim=-1)
    b, m = sv.shape
    doubled = torch.zeros(b, dtype=torch.int64, device=sv.device)
    ties = torch.zeros(b, dtype=torch.float64, device=sv.device)
    for a in range(0, m, PAIRS_PER_BLOCK):
        e = min(m, a + PAIRS_PER_BLOCK)
        v = sv[:, a:e]
        first = torch.searchsorted(sv, v[:, :1].contiguous())             # group of v[a] starts
        stop = torch.searchsorted(sv, v[:, -1:].contiguous(), right=True)  # group of v[e-1] ends
        pos = torch.arange(a + 1, e, device=sv.device).expand(b, -1)
        change = v[:, 1:] != v[:, :-1]                    # a new group starts at a+1..e-1
        start = torch.cat([first, torch.where(change, pos, first)], 1).cummax(1).values
        nxt = torch.cat([torch.where(change, pos, stop), stop], 1)
        end = nxt.flip(1).cummin(1).values.flip(1)        # exclusive
        c = cross[order[:, a:e]]
        doubled += ((start + end + 1) * c).sum(1)          # rank = (start + 1 + end) / 2
        ties += ((end - start).to(torch.float64) ** 2 - 1.0).sum(1)
    if bool((sv[:, 0] == sv[:, -1]).any()):
        raise ValueError("PARC: every pair of samples is equally dissimilar; the rank "
                         "correlation is undefined")
    return doubled, ties


def spearman_binary(values: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
    """Spearman's rho (B,) float64 between (B, M) values and the (M,) two-valued pairs."""
    m = cross.numel()
    n1 = int(cross.sum())
    n0 = m - n1
    if n0 == 0:
        raise ValueError("PARC needs a class with at least 2 samples (a same-class pair)")
    doubled, ties = rank_sums(values, cross)
    numerator = (doubled - n1 * (m + 1)).to(torch.float64) / 2.0
    mf = float(m)
    spread = (mf ** 3 - mf - ties) / 12.0 * (n0 * n1 / mf)
    return numerator / spread.sqrt()


def parc_batched(x: torch.Tensor, labels: Labels, *, pca_dim: int = 32) -> torch.Tensor:
    """(B, N, D) -> (B,) PARC (x 100)."""
    if isinstance(pca_dim, bool) or not isinstance(pca_dim, int) or pca_dim < 0:
        raise ValueError(f"pca_dim must be an integer >= 0 (0: no PCA), got {pca_dim!r}")
    cross = cross_class_pairs(labels.codes)
    values = upper_dissimilarities(unit_rows(standardised_scores(x, pca_dim)))
    return 100.0 * spearman_binary(values, cross)


def head(x: torch.Tensor, labels: Labels, shared, *, pca_dim: int) -> torch.Tensor:
    """The catalogue's PARC head (reads no shared statistics)."""
    return parc_batched(x, labels, pca_dim=pca_dim)
