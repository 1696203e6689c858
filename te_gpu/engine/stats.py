"""Per-model statistics shared by every metric head, for a batch of same-width models.

A batch is a tensor ``x`` of shape (B, N, D): B models, one target set of N
samples, D feature dims each. Labels are shared by all models of a zoo, so the
one-hot matrix (N x C) and the class counts are computed once per zoo.

Everything here is a matrix product or a batched factorisation: class sums are
``Y^T X`` (a one-hot matmul on CUDA, deterministic there; ``index_add_`` on
CPU), the centred Gram ``Xc^T Xc`` and its top eigenpairs come from
:mod:`te_gpu.engine.linalg`, and the within-class scatter follows from them
without another pass over the features:

.. math::
    S_w = \\frac1N\\Big(X_c^TX_c - \\sum_k n_k(\\mu_k-\\bar x)(\\mu_k-\\bar x)^T\\Big).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import linalg

# Eigenpairs of the centred Gram any head reads: NCTI's PCA keeps 64 axes (and
# sums the top 32 variances), the SA gate reads the top 2.
TOP_EIGENPAIRS = 64


def left(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``a @ x[b]`` for every b: (P, Q) @ (B, Q, R) -> (B, P, R).

    An explicit ``bmm`` with ``a`` broadcast: a plain ``a @ x`` folds the batch
    into one GEMM whose shape - and so whose rounding - depends on B, and the
    engine promises bit-identical scores whatever the batch size.
    """
    return torch.bmm(a.expand(x.shape[0], *a.shape), x)


def right(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``x[b] @ a`` for every b: (B, P, Q) @ (Q, R) -> (B, P, R), as :func:`left`."""
    return torch.bmm(x, a.expand(x.shape[0], *a.shape))


def weighted_rows(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``w @ x[b]`` for a vector w: (Q,) @ (B, Q, R) -> (B, R)."""
    return left(w[None, :], x)[:, 0]


def class_sums(v: torch.Tensor, labels: "Labels") -> torch.Tensor:
    """Per-class sums of a (B, N, D) batch: (B, C, D).

    CUDA: a one-hot matrix product (tensor cores; deterministic, unlike a
    scatter with atomics). CPU: ``index_add_``, O(N D) instead of O(N C D) and
    deterministic there (rows are added in order).
    """
    if v.is_cuda:
        return left(labels.onehot.T, v)
    out = torch.zeros((v.shape[0], labels.c, v.shape[2]), dtype=v.dtype, device=v.device)
    return out.index_add_(1, labels.codes, v)


@dataclass
class Labels:
    """Labels of a zoo on one device: codes (N,), one-hot (N, C), counts (C,)."""
    codes: torch.Tensor
    onehot: torch.Tensor
    counts: torch.Tensor

    @property
    def n(self) -> int:
        return self.codes.shape[0]

    @property
    def c(self) -> int:
        return self.onehot.shape[1]

    @classmethod
    def from_codes(cls, codes: torch.Tensor, n_classes: int, dtype: torch.dtype) -> "Labels":
        onehot = torch.nn.functional.one_hot(codes, n_classes).to(dtype)
        return cls(codes, onehot, onehot.sum(0))

    def to(self, dtype: torch.dtype) -> "Labels":
        return Labels(self.codes, self.onehot.to(dtype), self.counts.to(dtype))


@dataclass
class BatchStats:
    """Class means, global mean, centred Gram and within scatter of B models."""
    means: torch.Tensor     # (B, C, D)
    xbar: torch.Tensor      # (B, D)
    gram_c: torch.Tensor    # (B, D, D)  Xc^T Xc
    sw: torch.Tensor        # (B, D, D)  population within-class scatter

    def gram(self, n: int) -> torch.Tensor:
        """The uncentred Gram X^T X = Xc^T Xc + N xbar xbar^T, in float64.

        The rank-one mean term is added in float64 also to a float32 centred
        Gram: in float32 its rounding (eps32 N |xbar|^2) would swamp the small
        eigenvalues LogME reads.
        """
        xbar = self.xbar.to(torch.float64)
        return self.gram_c.to(torch.float64) + n * xbar[:, :, None] * xbar[:, None, :]

    def class_sums(self, labels: Labels) -> torch.Tensor:
        """X^T Y as (B, C, D): the class sums."""
        return self.means * labels.counts[None, :, None]


def class_means(x: torch.Tensor, labels: Labels):
    """(means (B, C, D), xbar (B, D)) from one one-hot matmul."""
    sums = class_sums(x, labels)                    # (B, C, D)
    means = sums / labels.counts[None, :, None]
    xbar = weighted_rows(labels.counts, means) / labels.n  # weighted mean of class means
    return means, xbar


def class_variances(x: torch.Tensor, labels: Labels, means: torch.Tensor, ddof: int = 0) -> torch.Tensor:
    """Per-dimension class variances (B, C, D) about the class means, 1/(n_k - ddof).

    A second pass over the deviations rather than E[x^2] - mu^2, which cancels
    catastrophically when the means are large. The one class-moments routine of
    the engine (SA's radii: ddof 0; GBC: ddof 1), besides its Triton kernel.
    """
    dev = x - means[:, labels.codes]
    return class_sums(dev * dev, labels) / (labels.counts - ddof)[None, :, None]


def within_from_gram(gram_c, means, xbar, labels: Labels) -> torch.Tensor:
    """S_w from an exactly symmetric centred Gram (:func:`linalg.gram`).

    The between-class part is itself a Gram (of sqrt(n_k)(mu_k - xbar)), so the
    result is exactly symmetric, as the Cholesky/eigh that follow need, without a
    transposed pass over D x D.
    """
    mc = (means - xbar[:, None, :]) * labels.counts.sqrt()[None, :, None]
    return torch.sub(gram_c, linalg.gram(mc)).div_(labels.n)


def batch_stats(x: torch.Tensor, labels: Labels) -> BatchStats:
    """Every shared statistic of a (B, N, D) batch in two passes over the features."""
    means, xbar = class_means(x, labels)
    xc = x - xbar[:, None, :]
    gram_c = linalg.gram(xc)
    return BatchStats(means, xbar, gram_c, within_from_gram(gram_c, means, xbar, labels))


@dataclass
class Spectrum:
    """Top eigenpairs of the centred Gram, for NCTI's PCA and the SA gate (float64).

    ``evals`` ascending (B, t): the t = min(TOP_EIGENPAIRS, k) largest. Primal
    (N > D): ``vecs`` (B, D, t) eigenvectors of Xc^T Xc. Dual (N <= D): ``vecs``
    (B, N, t) eigenvectors of Xc Xc^T, whose nonzero eigenvalues are the same;
    the PCA scores are then U sqrt(lambda) directly, and the D x D problem (D^3)
    is never solved. The eigensolver runs in float64 also for a float32 Gram
    (``precision="fast"``): a float32 solver's noise (D eps32 lambda_max) is
    above the smallest real variances of raw-pixel features.
    """
    evals: torch.Tensor
    vecs: torch.Tensor
    dual: bool

    def subset(self, idx) -> "Spectrum":
        return Spectrum(self.evals[idx], self.vecs[idx], self.dual)

    def pca_scores(self, x: torch.Tensor, xbar: torch.Tensor, n_comp: int) -> torch.Tensor:
        """Scores on the top ``n_comp`` principal axes (B, N, n_comp) in x's dtype, up to signs."""
        if self.dual:
            lam = self.evals.flip(-1)[:, :n_comp].clamp(min=0)
            return (self.vecs.flip(-1)[:, :, :n_comp] * lam.sqrt()[:, None, :]).to(x.dtype)
        return linalg.matmul(x - xbar[:, None, :], self.vecs.flip(-1)[:, :, :n_comp].to(x.dtype))


def spectrum(x: torch.Tensor, st: BatchStats, top: int = TOP_EIGENPAIRS) -> Spectrum:
    """The centred Gram's top eigenpairs, through the smaller of the two Grams."""
    b, n, d = x.shape
    if n <= d:
        g = linalg.gram(x - st.xbar[:, None, :], samples=True)
        return Spectrum(*linalg.eigh_top(g.to(torch.float64), top), dual=True)
    return Spectrum(*linalg.eigh_top(st.gram_c.to(torch.float64), top), dual=False)


def shrink(s: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """(1 - lam) S + lam tr(S)/D I for a batch (lam: (B,))."""
    d = s.shape[-1]
    tr = torch.diagonal(s, dim1=-2, dim2=-1).sum(-1)
    out = (1 - lam)[:, None, None] * s
    torch.diagonal(out, dim1=-2, dim2=-1).add_((lam * tr / d)[:, None])
    return out


def power_iteration_top(s: torch.Tensor, rounds: int = 3) -> torch.Tensor:
    """SFDA's 3-round power estimate of the top eigenvalue, batched: (B, D, D) -> (B,)."""
    x = s.sum(-1)
    y = x
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    for _ in range(rounds):
        # rescaling x (y and x are normalised) keeps S x in range for large features
        top = x.abs().amax(-1, keepdim=True)
        t = (s @ (x / torch.where(top > 0, top, 1))[..., None])[..., 0]
        nt = torch.linalg.vector_norm(t, dim=-1, keepdim=True)
        y = torch.where(nt > 0, t / torch.where(nt > 0, nt, 1), zero)
        t = (s @ y[..., None])[..., 0]
        nt = torch.linalg.vector_norm(t, dim=-1, keepdim=True)
        x = torch.where(nt > 0, t / torch.where(nt > 0, nt, 1), zero)
    return torch.einsum("bi,bij,bj->b", x, s, y)


def softmax_true_class(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Mean over samples of softmax(logits)[i, y_i]: (B, N, C) -> (B,)."""
    p = torch.softmax(logits, dim=-1)
    return true_class(p, codes).mean(-1)


def true_class(p: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """p[b, i, y_i] as (B, N)."""
    idx = codes[None, :, None].expand(p.shape[0], -1, 1)
    return torch.gather(p, 2, idx)[..., 0]


def weighted_class_means(x: torch.Tensor, labels: Labels, w: torch.Tensor):
    """Class means and mean of R resamples given as multiplicities, without gathering rows.

    ``x`` (N, D) the target set, ``w`` (R, N): how many times each row is in each resample
    (a class-stratified resample keeps the class sizes, ``labels.counts``). Returns
    (means (R, C, D), xbar (R, D)): one (R C, N) @ (N, D) product (the per-class sums of
    the weighted rows), with no per-class loop or index look-up.
    """
    r, c = w.shape[0], labels.c
    per_class = w.to(x.dtype)[:, None, :] * labels.onehot.T.to(x.dtype)     # (R, C, N)
    sums = linalg.matmul(per_class.reshape(1, r * c, -1), x[None])[0]      # one GEMM
    means = sums.view(r, c, -1) / labels.counts.to(x.dtype)[:, None]
    xbar = weighted_rows(labels.counts, means) / labels.n
    return means, xbar


def sample_copies(groups: torch.Tensor):
    """The distinct samples of each row of ``groups`` (B, N; equal ids: copies of one
    sample, as in a bootstrap resample): ``first`` (B, M) the row of each one's first
    copy, ``count`` (B, M) its copies, float64 (0 pads a row with fewer than M),
    ``of_row`` (B, N) which distinct sample each row is."""
    b, n = groups.shape
    ids, order = torch.sort(groups, dim=-1, stable=True)    # copies side by side, in row order
    new = torch.ones_like(ids, dtype=torch.bool)
    new[:, 1:] = ids[:, 1:] != ids[:, :-1]
    slot = torch.cumsum(new, -1) - 1
    m = int(slot[:, -1].max()) + 1                          # one host sync per batch
    first = torch.zeros((b, m), dtype=order.dtype, device=groups.device)
    first.scatter_reduce_(1, slot, order, "amin", include_self=False)
    count = torch.zeros((b, m), dtype=torch.float64, device=groups.device)
    count.scatter_add_(1, slot, torch.ones_like(slot, dtype=torch.float64))
    of_row = torch.empty_like(slot).scatter_(1, order, slot)
    return first, count, of_row


def class_padding_index(codes: torch.Tensor, n_classes: int):
    """Gather index (C, n_max) of each class's samples, padded with 0, and its mask.

    Lets per-class matrices of ragged sizes be stacked into one (C, n_max, ...)
    tensor whose padding rows are zero (zero rows do not change singular values).
    """
    order = torch.argsort(codes, stable=True)
    counts = torch.bincount(codes, minlength=n_classes)
    n_max = int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(n_max, device=codes.device)
    mask = pos[None, :] < counts[:, None]
    flat = (starts[:, None] + pos[None, :]).clamp(max=codes.numel() - 1)
    idx = torch.where(mask, order[flat], torch.zeros_like(flat))
    return idx, mask
