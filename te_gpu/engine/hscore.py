"""H-score and the Ledoit-Wolf shrinkage H-score, batched (maths: te_gpu.reference.hscore).

Both read one eigendecomposition of the centred Gram per model: the shrunk
covariance (1 - a) G/N + a m I has G's eigenvectors, so only its eigenvalues
move. Everything after the Gram is in float64, also for float32 features: the
pseudo-inverse's cut-off sits at 1e-15 of the top eigenvalue, far below
float32's resolution.
"""
from __future__ import annotations

import torch

from . import linalg
from .stats import BatchStats, Labels, class_means

RCOND = 1e-15


def _moments(x: torch.Tensor, labels: Labels, st: BatchStats | None):
    """(class means, global mean, centred Gram), reusing a BatchStats when given."""
    if st is not None:
        return st.means, st.xbar, st.gram_c
    means, xbar = class_means(x, labels)
    return means, xbar, linalg.gram(x - xbar[:, None, :])


def _projections(means, xbar, gram_c, labels: Labels):
    """Eigenvalues of the centred Gram (B, D) and |V_i^T B^T|^2 (B, D), float64.

    B's rows are sqrt(n_k)(mu_k - xbar), so B^T B is the between scatter.
    """
    evals, vecs = linalg.eigh(gram_c.to(torch.float64))
    b = ((means - xbar[:, None, :]).to(torch.float64)
         * labels.counts.to(torch.float64).sqrt()[None, :, None])
    w = linalg.matmul(vecs.mT, b.mT)                     # (B, D, C)
    return evals, (w * w).sum(-1)


def _pinv_sum(evals: torch.Tensor, w2: torch.Tensor, rcond: float) -> torch.Tensor:
    """sum_i w2_i / lambda_i over |lambda_i| > rcond max|lambda| (pinv's rule): (B,)."""
    mag = evals.abs()
    keep = mag > rcond * mag.amax(-1, keepdim=True)
    return torch.where(keep, w2 / torch.where(keep, evals, 1.0), 0.0).sum(-1)


def hscore_batched(x: torch.Tensor, labels: Labels, *, st: BatchStats | None = None,
                   rcond: float = RCOND) -> torch.Tensor:
    """(B, N, D) features -> (B,) H-score tr(S_t^+ S_b), float64."""
    evals, w2 = _projections(*_moments(x, labels, st), labels)
    return _pinv_sum(evals, w2, rcond)


def ledoit_wolf_batched(x: torch.Tensor, xbar: torch.Tensor, gram_c: torch.Tensor):
    """Ledoit-Wolf shrinkage alpha (B,) and target scale m = tr(Sigma)/D (B,), float64.

    The fourth-moment term sum_n |x_n - xbar|^4 needs the rows' squared norms:
    one pass over the features; the rest reads the Gram.
    """
    n, d = x.shape[1], x.shape[2]
    g = gram_c.to(torch.float64)
    fro2 = (g * g).sum((-2, -1)) / (n * n)
    tr = torch.diagonal(g, dim1=-2, dim2=-1).sum(-1) / n
    delta = (fro2 - tr * tr / d) / d
    xc = (x - xbar[:, None, :]).to(torch.float64)
    row4 = (xc * xc).sum(-1).square().sum(-1)
    beta = torch.minimum((row4 / n - fro2) / (d * n), delta)
    alpha = torch.where(beta > 0, beta / torch.where(beta > 0, delta, 1.0), 0.0)
    return alpha, tr / d


def regularized_hscore_batched(x: torch.Tensor, labels: Labels, *,
                               st: BatchStats | None = None,
                               rcond: float = RCOND) -> torch.Tensor:
    """(B, N, D) features -> (B,) shrinkage H-score, float64."""
    n = x.shape[1]
    means, xbar, gram_c = _moments(x, labels, st)
    alpha, m = ledoit_wolf_batched(x, xbar, gram_c)
    evals, w2 = _projections(means, xbar, gram_c, labels)
    shrunk = (1 - alpha)[:, None] * evals / n + (alpha * m)[:, None]
    return (1 - alpha) * _pinv_sum(shrunk, w2, rcond) / (n - 1)


def head(x: torch.Tensor, labels: Labels, shared, *, rcond: float) -> torch.Tensor:
    """The catalogue's H-score head."""
    return hscore_batched(x, labels, st=shared.stats, rcond=rcond)


def regularized_head(x: torch.Tensor, labels: Labels, shared, *, rcond: float) -> torch.Tensor:
    """The catalogue's regularized H-score head."""
    return regularized_hscore_batched(x, labels, st=shared.stats, rcond=rcond)
