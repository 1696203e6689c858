"""NCTI's per-model parts (seli, ncc, vc) batched over models (SPEC 4).

The exact PCA-64 comes from the eigendecomposition of the centred Gram that
the batch statistics already hold; the within and total scatter of the PCA
scores are projections of the full-space ones (V^T S V), so the LDA of either
solver costs O(64^3) per model plus products with the N x 64 scores. The
solver SPEC prescribes is chosen per model (one host sync per batch) and each
branch runs on its own models.
"""
from __future__ import annotations

import math

import torch

from . import linalg
from .stats import (TOP_EIGENPAIRS, BatchStats, Labels, class_padding_index, class_sums, shrink,
                    spectrum, true_class, weighted_rows, within_from_gram)

PCA_DIM = TOP_EIGENPAIRS  # 64 (SPEC 4)
_SVD_TOL = 1e-4


def pca_noise_floor(top_variance: torch.Tensor, n: int, d: int) -> torch.Tensor:
    """Variance below which a principal component is rounding noise (float64 terms)."""
    return max(n, d) * torch.finfo(torch.float64).eps * top_variance


def _eigen_branch(z, means_z, sw_z, st_z, labels: Labels, tau, max_comp):
    """scikit-learn's 'eigen' solver with shrinkage tau: (transform, logits)."""
    sw_s = shrink(sw_z, tau)
    st_s = shrink(st_z, tau)
    chol, info = torch.linalg.cholesky_ex(sw_s)
    eye = torch.eye(sw_s.shape[-1], dtype=z.dtype, device=z.device)
    # a failed factorisation is reported by the caller; keep the algebra finite
    chol = torch.where((info == 0)[:, None, None], chol, eye)
    linv = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False)
    a = linv @ (st_s - sw_s) @ linv.mT
    evals, u = torch.linalg.eigh(0.5 * (a + a.mT))
    w = linv.mT @ u.flip(-1)                              # descending generalised eigvecs
    scalings = w[:, :, :max_comp]
    coef = torch.cholesky_solve(means_z.mT, chol).mT      # M S_w'^{-1}: (B, C, n)
    prior = torch.log(labels.counts / labels.n)
    intercept = -0.5 * (means_z * coef).sum(-1) + prior
    return z @ scalings, z @ coef.mT + intercept[:, None, :], info


def _svd_branch(z, means_z, labels: Labels, fac, max_comp):
    """scikit-learn's 'svd' solver (two SVD stages, rank tol 1e-4): (transform, logits)."""
    n, c = labels.n, labels.c
    priors = labels.counts / n
    within = z - means_z[:, labels.codes]
    # singular values and right vectors of the N x n scaled data sqrt(fac) within / std
    # from the R factor of ``within``: scaling columns scales R's columns (Q R D = Q (R D)),
    # and the column norms of R are those of ``within``, so std needs no pass over N rows
    # (QR is backward stable; U, which scikit-learn computes and drops, is never formed)
    r = torch.linalg.qr(within, mode="r").R
    std = (r.pow(2).sum(1) / n).sqrt()
    std = torch.where(std == 0, torch.ones_like(std), std)
    r = r * (math.sqrt(fac) / std)[:, None, :]
    _, s, vt = torch.linalg.svd(r, full_matrices=False)
    keep = s > _SVD_TOL
    s_safe = torch.where(keep, s, torch.ones_like(s))
    scalings = (vt / std[:, None, :]).mT / s_safe[:, None, :]
    scalings = torch.where(keep[:, None, :], scalings, torch.zeros_like(scalings))
    xbar = weighted_rows(priors, means_z)                 # (B, n)
    fac_b = 1.0 / (c - 1)
    centres = torch.sqrt(n * priors * fac_b)[None, :, None] * (means_z - xbar[:, None, :])
    _, s2, vt2 = torch.linalg.svd(centres @ scalings, full_matrices=False)
    keep2 = s2 > _SVD_TOL * s2[:, :1]
    full = scalings @ vt2.mT
    full = torch.where(keep2[:, None, :], full, torch.zeros_like(full))
    coef = (means_z - xbar[:, None, :]) @ full            # (B, C, r)
    intercept = -0.5 * coef.pow(2).sum(-1) + torch.log(priors)
    coef_full = coef @ full.mT                            # (B, C, n)
    intercept = intercept - (xbar[:, None, :] * coef_full).sum(-1)
    transform = (z - xbar[:, None, :]) @ full[:, :, :max_comp]
    return transform, z @ coef_full.mT + intercept[:, None, :]


def ncti_parts_batched(x: torch.Tensor, labels: Labels, st: BatchStats, *,
                       eig=None, lda_scaling: str = "n_minus_c", class_index=None, scores=None):
    """(seli, ncc, vc), each (B,), for a (B, N, D) batch with its statistics.

    ``eig``: the batch's :class:`~te_gpu.engine.stats.Spectrum` if the caller has it;
    ``scores``: the PCA scores (B, N, min(64, N - 1, D)) on its top eigenvectors if the
    caller has them (``x`` is then read for its shape only).
    """
    b, n, d = x.shape
    c = labels.c
    if n <= c:
        raise ValueError(f"NCTI needs more samples ({n}) than classes ({c})")
    n_comp = min(PCA_DIM, n - 1, d)  # centred data has rank <= N-1
    if eig is None:
        eig = spectrum(x, st)
    explained = eig.evals.flip(-1) / (n - 1)              # descending, float64
    tau = torch.clamp(torch.exp(-explained[:, :32].sum(-1)), min=1e-10).to(x.dtype)
    use_svd = tau == 1e-10
    z = eig.pca_scores(x, st.xbar, n_comp) if scores is None else scores   # (B, N, n), centred
    # components of zero variance in exact arithmetic get exact zero scores
    # (te_gpu.reference.ncti.signal_components)
    signal = explained[:, :n_comp] > pca_noise_floor(explained[:, :1], n, d)
    z = z * signal[:, None, :].to(z.dtype)
    # class means and scatters of the scores: O(N n^2), whichever Gram gave the axes
    means_z = class_sums(z, labels) / labels.counts[None, :, None]
    gram_z = linalg.gram(z)
    st_z = gram_z / n
    sw_z = within_from_gram(gram_z, means_z, weighted_rows(labels.counts, means_z) / n, labels)
    max_comp = min(c - 1, n_comp)
    fac = 1.0 / (n - c) if lda_scaling == "n_minus_c" else 1.0 / n
    # SPEC picks the solver per model; evaluate each branch on its models only
    # (one host sync per batch)
    branch = use_svd.tolist()
    f = torch.empty((b, n, max_comp), dtype=x.dtype, device=x.device)
    logits = torch.empty((b, n, c), dtype=x.dtype, device=x.device)
    for want, fit in ((False, "eigen"), (True, "svd")):
        rows = [i for i, u in enumerate(branch) if u == want]
        if not rows:
            continue
        sel = slice(None) if len(rows) == b else torch.as_tensor(rows, device=x.device)
        if fit == "eigen":
            f_b, logit_b, info = _eigen_branch(z[sel], means_z[sel], sw_z[sel], st_z[sel], labels,
                                               tau[sel], max_comp)
            if bool((info != 0).any()):
                raise ValueError("NCTI: the shrunk within-class scatter of the PCA scores is "
                                 "not positive definite")
        else:
            f_b, logit_b = _svd_branch(z[sel], means_z[sel], labels, fac, max_comp)
        f[sel] = f_b
        logits[sel] = logit_b
    f = f - f.mean(1, keepdim=True)
    seli = nuclear_norm(f)
    p = torch.softmax(logits, -1)
    ncc = true_class(p, labels.codes).mean(-1)
    if class_index is None:
        class_index = class_padding_index(labels.codes, c)
    idx, mask = class_index
    p_pad = p[:, idx] * mask[None, :, :, None].to(p.dtype)   # (B, C, n_max, C)
    vc = torch.log(nuclear_norm(p_pad).sum(-1))
    return seli, ncc, vc


def nuclear_norm(a: torch.Tensor) -> torch.Tensor:
    """Sum of singular values over the last two dims: (..., m, n) -> (...).

    The singular values of the square R factor of a QR of the taller
    orientation, which are those of ``a`` (Q is orthonormal); a QR then a small
    SVD costs about 2/3 of ``svdvals`` on NCTI's per-class (n_c x C) blocks.
    """
    tall = a if a.shape[-2] >= a.shape[-1] else a.mT
    return torch.linalg.svdvals(torch.linalg.qr(tall, mode="r").R).sum(-1)


def head(x: torch.Tensor, labels: Labels, shared, *, lda_scaling: str):
    """The catalogue's NCTI head: the per-model parts (seli, ncc, vc), each (B,)."""
    return ncti_parts_batched(x, labels, shared.stats, eig=shared.spectrum,
                              lda_scaling=lda_scaling, class_index=shared.class_index)


class Redraws:
    """The catalogue's redraw hook (te_gpu.bootstrap): NCTI's parts of each redraw from the
    multiplicities ``w`` (R, N) of the rows it holds, then the unchanged head on the redraw's
    row order (``redraw_labels``).

    N > D (the primal Gram): a redraw's centred Gram is sum_j w_j (x_j - xbar_r)(x_j - xbar_r)^T,
    i.e. the rows it holds (about 63 % of N), about the full set's mean and scaled by sqrt(w_j)
    (gathered, then centred and scaled in place: no centred copy of the features is kept),
    less the rank-one shift n (xbar_r - centre)(xbar_r - centre)^T to its own mean. Its top
    eigenpairs give the PCA axes; the PCA scores of those same rows (unscaled) are laid out in
    the redraw's row order by an index, so each distinct row is projected once.
    N <= D: the dual Gram of the gathered rows (``ncti_parts_batched``).
    """

    def __init__(self, x: torch.Tensor, labels: Labels, redraw_labels: Labels, *,
                 lda_scaling: str):
        self.x, self.labels, self.redraw_labels = x, labels, redraw_labels
        self.centre = x.mean(0)                # the target set's mean, once per model
        self.kw = dict(lda_scaling=lda_scaling,
                       class_index=class_padding_index(redraw_labels.codes, redraw_labels.c))

    def __call__(self, w: torch.Tensor, idx: torch.Tensor) -> list:
        from .stats import BatchStats, weighted_class_means

        n = self.x.shape[0]
        step = max(1, int(2 ** 24 // self.x.numel()))   # redraws of about 128 MB at once
        parts = []
        for r0 in range(0, w.shape[0], step):
            ww, ii = w[r0:r0 + step], idx[r0:r0 + step]
            means, xbar = weighted_class_means(self.x, self.labels, ww)
            st = BatchStats(means, xbar, None, None)
            if n <= self.x.shape[1]:                     # N <= D: dual, on the gathered rows
                out = ncti_parts_batched(self.x[ii], self.redraw_labels, st, **self.kw)
            else:       # the head reads x for its shape only: a view, no copy
                eig, scores = self._primal(ww, ii, xbar)
                out = ncti_parts_batched(self.x[None].expand(ii.shape[0], -1, -1),
                                         self.redraw_labels, st, eig=eig, scores=scores,
                                         **self.kw)
            parts.extend(zip(*(part.tolist() for part in out)))
        return parts

    def _primal(self, w: torch.Tensor, idx: torch.Tensor, xbar: torch.Tensor):
        """(Spectrum, PCA scores (R, N, n_comp) in redraw order) of redraws ``idx``.

        One redraw at a time through buffers allocated once per call: a fresh (n_p, D)
        gather per redraw (39 MB at D = 1,280) is above glibc's mmap threshold, so each
        one paid its page faults again (33 ms of a 330 ms redraw, measured)."""
        from .stats import Spectrum

        n, d = self.x.shape
        dtype, dev = self.x.dtype, self.x.device
        n_comp = min(TOP_EIGENPAIRS, n - 1, d)
        top = min(TOP_EIGENPAIRS, d)
        b = w.shape[0]
        rows_buf = torch.empty((n, d), dtype=dtype, device=dev)
        evals = torch.empty((b, top), dtype=torch.float64, device=dev)
        vecs = torch.empty((b, d, top), dtype=torch.float64, device=dev)
        scores = torch.empty((b, n, n_comp), dtype=dtype, device=dev)
        position = torch.empty(n, dtype=torch.long, device=dev)
        for r in range(b):
            rows = (w[r] > 0).nonzero()[:, 0]
            root = w[r, rows].to(dtype).sqrt()
            scaled = torch.index_select(self.x, 0, rows, out=rows_buf[:rows.shape[0]])
            scaled.sub_(self.centre).mul_(root[:, None])     # as (x - centre)[rows], exactly
            shift = xbar[r] - self.centre
            gram = linalg.gram(scaled[None]) - n * shift[:, None] * shift[None, :]
            evals[r], vecs[r] = (t[0] for t in linalg.eigh_top(gram.to(torch.float64),
                                                               TOP_EIGENPAIRS))
            axes = vecs[r].flip(-1)[:, :n_comp].to(dtype)                     # (D, n)
            z = linalg.matmul(scaled[None], axes[None])[0] / root[:, None] - shift @ axes
            position[rows] = torch.arange(rows.shape[0], device=dev)
            torch.index_select(z, 0, position[idx[r]], out=scores[r])
        return Spectrum(evals, vecs, dual=False), scores
