"""TransRate batched over models (maths: te_gpu.reference.transrate).

The class coding rates need one log-determinant per (model, class). Classes
are grouped by size (counts within a factor of two share a group) and each
group's rows are gathered into a zero-padded (B, classes, m, D) block: a zero
row adds an identity row and column to I + A A^T/(n eps), so it leaves the
determinant unchanged, and every group's rates come from one batched log-determinant.
Padding at most doubles a group, so memory stays O(N D) per model; the Python
loop runs over the log2(N) size groups, never over classes.
"""
from __future__ import annotations

import torch

from . import linalg
from .stats import Labels

EPS = 1e-4


def half_logdet_eye_plus(g: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """1/2 log det(I + scale g) of symmetric PSD matrices (..., k, k), float64.

    An LU log-determinant, not a Cholesky one: a Gram of large features is PSD
    only up to rounding, and scale g can reach 1e13, where that rounding can
    exceed the 1 added on the diagonal; LU needs no definiteness.
    """
    a = g.to(torch.float64) * scale[..., None, None]
    torch.diagonal(a, dim1=-2, dim2=-1).add_(1.0)
    return 0.5 * torch.linalg.slogdet(a).logabsdet


def block_rates(blocks: torch.Tensor, n_rows: torch.Tensor, eps: float) -> torch.Tensor:
    """Coding rates of (B, P, m, D) row blocks, each of n_rows[p] real rows: (B, P)."""
    b, p, m, d = blocks.shape
    flat = blocks.reshape(b * p, m, d)
    g = linalg.gram(flat, samples=m < d)                 # the smaller side (Sylvester)
    g = g.reshape(b, p, *g.shape[1:])
    return half_logdet_eye_plus(g, 1.0 / (n_rows.to(torch.float64) * eps)[None, :].expand(b, p))


def size_groups(labels: Labels):
    """[(classes (P,), row index (P, m) with N as padding)] grouped by class size.

    One host transfer of the C counts per call (the group shapes depend on them).
    """
    codes = labels.codes
    n = codes.shape[0]
    counts = torch.bincount(codes, minlength=labels.c)
    order = torch.argsort(codes, stable=True)            # rows grouped by class
    starts = torch.cumsum(counts, 0) - counts
    host = counts.tolist()
    keys = [max(c - 1, 0).bit_length() for c in host]     # ceil(log2(count))
    groups = []
    for key in sorted(set(keys)):
        members = [k for k, kk in enumerate(keys) if kk == key]
        cls = torch.tensor(members, device=codes.device)
        j = torch.arange(max(host[k] for k in members), device=codes.device)
        pos = starts[cls][:, None] + j[None, :]
        real = j[None, :] < counts[cls][:, None]
        idx = torch.where(real, order[pos.clamp(max=n - 1)], n)
        groups.append((cls, idx))
    return groups


def transrate_batched(x: torch.Tensor, labels: Labels, *, eps: float = EPS,
                      class_weights: str = "uniform",
                      gram_c: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N, D) features -> (B,) TransRate, float64. ``gram_c``: the centred Gram if known."""
    if class_weights not in ("uniform", "proportional"):
        raise ValueError("class_weights must be 'uniform' or 'proportional', "
                         f"got {class_weights!r}")
    b, n, d = x.shape
    z = x - x.mean(1, keepdim=True)
    if n < d:
        g = linalg.gram(z, samples=True)
    else:
        g = gram_c if gram_c is not None else linalg.gram(z)
    total = half_logdet_eye_plus(g, torch.full((b,), 1.0 / (n * eps), dtype=torch.float64,
                                               device=x.device))
    counts = labels.counts.to(torch.float64)
    if class_weights == "proportional":
        weights = counts / n
    else:
        weights = torch.full_like(counts, 1.0 / labels.c)
    zp = torch.cat([z, z.new_zeros(b, 1, d)], 1)          # row N: the zero padding row
    for cls, idx in size_groups(labels):
        rates = block_rates(zp[:, idx], counts[cls], eps)  # (B, P)
        total = total - rates @ weights[cls]
    return total


def head(x: torch.Tensor, labels: Labels, shared, *, eps: float, class_weights: str) -> torch.Tensor:
    """The catalogue's TransRate head (reads the shared centred Gram when N >= D)."""
    gram_c = shared.stats.gram_c if x.shape[1] >= x.shape[2] else None
    return transrate_batched(x, labels, eps=eps, class_weights=class_weights, gram_c=gram_c)
