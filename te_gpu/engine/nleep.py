r"""NLEEP batched over models (SPEC 6); equals ``te_gpu.reference.nleep``.

For B models of the same width D (features ``x`` of shape B x N x D) and one
set of class codes:

1. PCA keeping 80 % of the variance, per model. The number of kept
   dimensions :math:`k_b` differs between models, so the scores are
   zero-padded to :math:`k_{max}=\max_b k_b` columns and a mask marks the real
   ones. Zero columns add nothing to squared distances or to the covariances
   of the real dimensions; the padded block of every covariance is set to the
   identity (not ``reg_covar``), so it adds exactly 0 to the Mahalanobis terms
   and to the log-determinants, and the :math:`d\log 2\pi` term uses the real
   :math:`k_b`: log densities, and hence the EM stopping rule, are those of the
   unpadded model.
2. Greedy k-means++ seeding with the reference's explicit stream:
   ``1 + (k-1) L`` uniforms (L = 2 + floor(ln k) candidates per centre) drawn
   once on the host and shared by every model (as calling the reference per
   model with ``seed``).
3. Lloyd iterations (at most 300) with a per-model convergence mask: a model
   whose centres moved less than its threshold stops changing.
4. EM for a full-covariance Gaussian mixture of ``K = r C`` components,
   ``reg_covar`` 1e-6, tolerance 1e-3 on the mean log-likelihood, at most 100
   iterations, per-model convergence, then a final E step. Both steps are
   products with each sample's moment column :math:`[1, z, z_a z_b\ (a \le b)]`
   (width :math:`w = 1 + d + d(d+1)/2`, built once per model, samples along the
   last axis): the E step's ``theta cols`` gives every component's log density
   (``theta`` holds the packed precision matrix, the linear and the constant
   coefficients), the M step's ``resp cols^T`` every component's mass, mean and
   scatter (the scatter about the mean from the raw second moment). That is the
   floor's arithmetic, 2 K N d(d+1) flops per iteration, with no (B, K, N, d)
   tensor (bench/RESULTS.md, "NLEEP near its floor"). On the CPU the M step
   skips responsibilities under 1e-30 of their component's largest when at most
   15 % of them are left (:func:`_sparse_moments`: 2-14 % at d >= 37 on a real
   zoo, a third (d = 51) to a thirteenth (d = 84) of the dense product's time).
   Raw moments cancel where a component sits far from the origin compared with
   its spread (about eps (|mu|/sigma)^2 relative); past |mu|/sigma = 1e3 on some
   axis (:func:`_cancels`) the EM takes the reference's centred formulation instead.
   Below it, in float64, the scores of the tests' zoos moved by at most 5e-15
   and those of a real 13-model zoo by at most 1e-13 relative.
5. NLEEP from the posteriors, :func:`nleep_from_posteriors_batched`.

Nothing loops over classes in Python, nor over models or mixture components off
the CPU; the loops are over centres (k-means++ is sequential), Lloyd and EM
iterations, sample blocks and (building the moment columns) the d kept
dimensions; on the CPU also over models (numpy's BLAS per model) and, in the
sparse M step, over components. Off the CPU the host is asked whether every
model has converged only every few iterations; on the CPU every iteration, and
the catalogue head scores one model at a time there (no padding, no frozen
models computed). Whether raw moments would cancel (:func:`_cancels`, then the
batch switches to the reference's centred EM) is asked after every iteration on
every device, until it answers yes.

Memory. With :math:`d=k_{max}` and K components, the EM holds the moment
columns ``B * N * w`` (kept while one model's fit 512 MiB, else built per block
of samples), ``4 * B * N * K`` for log densities and posteriors and about
``6 * B * K * d * d`` for covariances, factors and precisions; k-means needs
``B * N * K``; the PCA needs ``B * N * D`` plus ``B * min(N, D)**2`` for the
Gram matrix (:func:`nleep_memory_bytes`). In bytes, multiply by 8 (float64) or
4 (float32). Pass ``models_per_chunk`` to bound it: models are independent, so
chunking changes nothing but the peak memory.

Determinism: no atomics anywhere; off the CPU class and cluster sums are one-hot
matmuls (on the CPU ``index_add_``, which adds rows in order), centre picks are
``gather``, and the k-means++ cumulative sums avoid ``torch.cumsum`` off the CPU
(see :func:`_cdf`). Same inputs and seed on the same device give bit-identical
scores.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import linalg
from .stats import left, right

__all__ = [
    "nleep_batched",
    "pca_keep_variance_batched",
    "kmeans_batched",
    "gmm_posteriors_batched",
    "nleep_from_posteriors_batched",
    "nleep_memory_bytes",
]

_REG_COVAR = 1e-6
_EM_TOL = 1e-3
_EM_MAX_ITER = 100
_KMEANS_MAX_ITER = 300
_KMEANS_TOL = 1e-4
_FRACTION = 0.8
_BLOCK_BYTES = 1 << 22  # per model: a block of the EM's (rows x width) slabs
_RAW_MOMENT_LIMIT = 1e6  # see _cancels
_EXP_FLOOR = -708.0  # exp(-708) = 3.3e-308, the smallest normal double's neighbourhood
_NEGLIGIBLE = 1e-30  # responsibilities under this times their component's largest: see _moments
_SPARSE_DENSITY = 0.15  # ... and the share of the others below which the M step skips them
_MOMENT_ROWS_BYTES = 1 << 29  # per model: the EM's moment columns are kept up to this size
_CHECK_EVERY = 4  # iterations between host checks of "has every model converged?" off the CPU


def _check_every(device: torch.device) -> int:
    """Iterations between checks of "has every model converged?". A check is a host
    sync, which costs nothing on the CPU, where iterating past convergence costs
    up to 3 wasted iterations (frozen models are still computed)."""
    return 1 if device.type == "cpu" else _CHECK_EVERY


def nleep_memory_bytes(b: int, n: int, d_in: int, k: int, d_kept: int,
                       dtype: torch.dtype = torch.float64) -> int:
    """Rough peak working memory of :func:`nleep_batched` for one chunk of ``b`` models.

    ``d_in`` is the feature width D, ``d_kept`` the largest number of PCA
    dimensions kept (at most ``min(n, d_in)``), ``k`` the mixture components.
    Counts working tensors only, not the input ``x`` itself.
    """
    item = torch.empty((), dtype=dtype).element_size()
    m = min(n, d_in)
    pca = b * (n * d_in + 2 * m * m + n * m)
    km = b * (3 * n * k + 2 * k * d_kept)
    width = 1 + d_kept + d_kept * (d_kept + 1) // 2
    rows = n if n * width * item <= _MOMENT_ROWS_BYTES else _samples_per_block(n, width)
    em = b * (rows * width + 4 * n * k + 6 * k * d_kept * d_kept + 2 * k * width)
    return item * max(pca, km + em)


# --------------------------------------------------------------------------- PCA
def _top_guess(side: int) -> int:
    """How many top eigenpairs to ask for first: on the CPU LAPACK computes only those
    (``syevr``), about half the time of all of them at D = 1280."""
    return min(side, max(64, side // 8))


def _kept_dims(gram: torch.Tensor, total: torch.Tensor, fraction: float, top: int):
    """(dims (B,), evals (B, top) descending >= 0, evecs (B, side, top)) from the ``top``
    largest eigenpairs, or (None, None, None) when they hold ``fraction`` of the
    variance for not every model (the rule needs a cumulative ratio above it)."""
    side = gram.shape[-1]
    evals, evecs = linalg.eigh(gram) if top >= side else linalg.eigh_top(gram, top)
    evals = evals.flip(-1).clamp_min(0.0)                   # descending
    evecs = evecs.flip(-1)
    ratio = evals / torch.where(total > 0, total, torch.ones_like(total))[:, None]
    cum = _cdf(ratio)                                      # float64, deterministic on CUDA
    if top < side and not bool((cum[:, -1] > fraction).all()):
        return None, None, None
    target = torch.full((cum.shape[0], 1), fraction, dtype=cum.dtype, device=cum.device)
    dims = torch.searchsorted(cum, target, right=True)[:, 0] + 1
    return dims.clamp_max(side), evals, evecs


def pca_keep_variance_batched(x: torch.Tensor, fraction: float = _FRACTION, *,
                              centred_gram: torch.Tensor | None = None,
                              mean: torch.Tensor | None = None):
    """Per-model PCA scores on the fewest components reaching ``fraction`` of the variance.

    ``x`` is (B, N, D). Returns ``(z, dims)``: ``z`` (B, N, k_max) with model b's
    scores in its first ``dims[b]`` columns and zeros after them, ``dims`` (B,)
    int64. The rule is scikit-learn's (and the reference's):
    ``k = searchsorted(cumsum(ratio), fraction, 'right') + 1``, capped at min(N, D).

    The decomposition is the eigen-decomposition of the smaller Gram matrix
    (D x D, or N x N when N < D): its top max(64, side/8) eigenpairs first, all
    of them only when those hold less than ``fraction`` of the trace. Scores are defined up to the sign of each
    component (and a rotation inside repeated eigenvalues); every later step
    (distances, full-covariance Gaussians with an isotropic ``reg_covar``) is
    invariant to an orthogonal change of basis of the kept subspace.

    ``centred_gram`` (B, D, D) and ``mean`` (B, D): the Gram of x about ``mean``
    where the caller has it (the catalogue head: other metrics' shared
    statistics), read when N >= D instead of computing it (N D^2, 0.2 s at
    6000 x 1280 on one CPU thread).
    """
    b, n, dim = x.shape
    samples_side = n < dim
    if centred_gram is None or samples_side:
        a = x - x.mean(dim=1, keepdim=True)
        gram = linalg.gram(a, samples=samples_side)
    else:
        a, gram = x - mean[:, None, :], centred_gram
    side = gram.shape[-1]
    total = torch.diagonal(gram, dim1=-2, dim2=-1).sum(-1)  # = the sum of all eigenvalues
    dims, evals, evecs = _kept_dims(gram, total, fraction, _top_guess(side))
    if dims is None:  # some model needs more than the guessed top eigenpairs
        dims, evals, evecs = _kept_dims(gram, total, fraction, side)
    stats = torch.stack([(total <= 0).any().to(dims.dtype), dims.max()]).tolist()  # one sync
    if stats[0]:
        bad = torch.nonzero(total <= 0).flatten().tolist()
        raise ValueError(f"features of model(s) {bad} have zero variance; "
                         "PCA cannot keep a fraction of it")
    k_max = int(stats[1])
    if samples_side:
        z = evecs[..., :k_max] * evals[:, None, :k_max].sqrt()
    else:
        z = linalg.matmul(a, evecs[..., :k_max])
    keep = torch.arange(k_max, device=x.device)[None, :] < dims[:, None]   # (B, k_max)
    z = torch.where(keep[:, None, :], z, torch.zeros((), dtype=z.dtype, device=z.device))
    return z, dims


# ----------------------------------------------------------------------- k-means
def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for (B, n, k) @ (B, k, r). On the CPU per model through numpy's BLAS,
    which ran k-means' and the EM's products about 1.5-2x faster than torch's ``bmm`` on
    this project's test CPU (bench/RESULTS.md, "NLEEP near its floor")."""
    if a.device.type != "cpu":
        return a @ b
    an, bn = a.numpy(), b.numpy()
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=an.dtype)
    for i in range(a.shape[0]):
        np.matmul(an[i], bn[i], out=out[i])
    return torch.from_numpy(out)


def _sq_dist(x: torch.Tensor, c: torch.Tensor, x_sq: torch.Tensor) -> torch.Tensor:
    """(B, N, d), (B, M, d) -> (B, N, M) squared distances, floored at 0 (as the reference).

    ``x_sq`` (B, N, 1) is ``(x * x).sum(-1)``, computed once by the caller (k-means
    asks for distances to the same samples about 100 times)."""
    # in place, in the reference's order: (x_sq - 2 x.c) + c_sq, each step rounded as
    # there (x.(-2c) is -2 (x.c) exactly: scaling by a power of two)
    d = _matmul(x, c.mT * -2.0).add_(x_sq).add_((c * c).sum(-1)[:, None, :])
    return d.clamp_min_(0.0)


def _argmin(v: torch.Tensor) -> torch.Tensor:
    """``v.argmin(-1)`` (the first of equal minima, as numpy's); numpy's on the CPU,
    4x faster there than torch's over rows of K = 50 values."""
    if v.device.type != "cpu":
        return v.argmin(-1)
    return torch.from_numpy(v.numpy().argmin(-1))


def _cluster_sums(z: torch.Tensor, labels: torch.Tensor, k: int, host: bool | None = None):
    """(counts (B, K), sums (B, K, d)) of the samples of each cluster.

    CPU: ``bincount`` and ``index_add_`` (rows added in order, O(N d)); elsewhere a
    one-hot product (deterministic, no atomics), O(N K d). On the CPU the product
    and its one-hot took 0.6 (d = 20) to 1.5 ms (d = 84) of each Lloyd iteration at
    N x K = 6000 x 50, these 0.35-0.45 ms. ``host`` forces one path (tests)."""
    b, n, d = z.shape
    if not (z.device.type == "cpu" if host is None else host):
        onehot = _onehot(labels, k, z.dtype)
        return onehot.sum(1), _matmul(onehot.mT, z)
    flat = (labels + torch.arange(b)[:, None] * k).reshape(-1)             # (B N,)
    counts = torch.bincount(flat, minlength=b * k).to(z.dtype).view(b, k)
    sums = z.new_zeros(b * k, d).index_add_(0, flat, z.reshape(b * n, d)).view(b, k, d)
    return counts, sums


def _onehot(labels: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """(..., N) int64 -> (..., N, k) one-hot in ``dtype``: one write per row (``scatter_``
    without accumulation, so no atomics; a comparison with ``arange(k)`` and a cast
    took about 2 ms of each of Lloyd's iterations at N x K = 6000 x 50 on the CPU)."""
    out = torch.zeros(labels.shape + (k,), dtype=dtype, device=labels.device)
    return out.scatter_(-1, labels[..., None], 1.0)


def _n_local_trials(k: int) -> int:
    """Candidates per centre of greedy k-means++ (the reference's rule)."""
    return 2 + int(np.log(k))


def _uniforms(k: int, seed: int) -> np.ndarray:
    """The reference's greedy k-means++ stream: ``default_rng(seed).random(1 + (k-1) L)``."""
    return np.random.default_rng(seed).random(1 + (k - 1) * _n_local_trials(k))


def _cdf(v: torch.Tensor, blocked: bool | None = None) -> torch.Tensor:
    """Row-wise inclusive cumulative sums of non-negative (B, N) values, in float64.

    On the CPU this is ``torch.cumsum`` (sequential, as numpy's). ``torch.cumsum``
    on CUDA floats is not deterministic (PyTorch lists it so), so elsewhere the
    rows are cut into blocks of about sqrt(N): within-block prefixes and block
    offsets are two float64 matmuls with triangular ones matrices (fixed order,
    unaffected by TF32), made non-decreasing again with ``cummax`` (exact, so
    order-free). ``blocked`` forces one path (tests).
    """
    v = v.to(torch.float64)
    if blocked is None:
        blocked = v.device.type != "cpu"
    if not blocked:
        return v.cumsum(1)
    b, n = v.shape
    bs = math.isqrt(n - 1) + 1 if n > 1 else 1       # ceil(sqrt(n))
    nb = -(-n // bs)
    vb = torch.nn.functional.pad(v, (0, nb * bs - n)).view(b, nb, bs)
    ones = torch.ones((), dtype=v.dtype, device=v.device)
    within = right(vb, ones.expand(bs, bs).triu())               # (B, nb, bs)
    offsets = right(within[:, None, :, -1], ones.expand(nb, nb).triu(1))[:, 0]  # exclusive prefix
    cdf = (within + offsets[..., None]).reshape(b, nb * bs)[:, :n]
    return torch.cummax(cdf, dim=1).values


def _candidate_sq_dist(cand: torch.Tensor, zt: torch.Tensor, z_sq: torch.Tensor) -> torch.Tensor:
    """(B, L, d) candidates, (B, d, N) samples -> (B, L, N) squared distances, as
    :func:`_sq_dist` (same rounding steps). Candidates by samples: the product
    with L = 5 rows ran 1.6x faster than samples by candidates at d = 84-109."""
    d = _matmul(cand * -2.0, zt).add_(z_sq[:, None, :]).add_((cand * cand).sum(-1)[..., None])
    return d.clamp_min_(0.0)


def _seed_centres(z: torch.Tensor, k: int, u: np.ndarray) -> torch.Tensor:
    """Greedy k-means++ centres (B, K, d) from the reference's uniform stream ``u``."""
    b, n, d = z.shape
    dev = z.device
    zt = z.mT.contiguous()                                               # (B, d, N)
    z_sq = (z * z).sum(-1)                                               # (B, N)
    u_dev = torch.as_tensor(u, dtype=torch.float64, device=dev)
    trials = _n_local_trials(k)
    # every sample sits on a centre already: the reference falls back to floor(u N)
    fallback = torch.as_tensor(np.minimum((u[1:] * n).astype(np.int64), n - 1),
                               device=dev).view(k - 1, 1, trials)
    centers = torch.empty((b, k, d), dtype=z.dtype, device=dev)
    centers[:, 0] = z[:, min(int(u[0] * n), n - 1)]
    closest = _candidate_sq_dist(centers[:, :1], zt, z_sq)[:, 0]        # (B, N)
    for j in range(1, k):
        cdf = _cdf(closest)                                              # float64 (B, N)
        total = cdf[:, -1:]                                              # (B, 1)
        draws = u_dev[None, 1 + (j - 1) * trials:1 + j * trials] * total
        idx = torch.searchsorted(cdf, draws, right=True).clamp_max_(n - 1)
        idx = torch.where(total > 0, idx, fallback[j - 1])              # (B, L) candidates
        cand = torch.gather(z, 1, idx[:, :, None].expand(b, trials, d))  # (B, L, d)
        dist = _candidate_sq_dist(cand, zt, z_sq)                        # (B, L, N)
        best = torch.minimum(closest[:, None, :], dist).sum(-1).argmin(-1)  # (B,)
        centers[:, j] = torch.gather(cand, 1, best[:, None, None].expand(b, 1, d))[:, 0]
        picked = torch.gather(dist, 1, best[:, None, None].expand(b, 1, n))[:, 0]  # (B, N)
        closest = torch.minimum(closest, picked)
    return centers


def _mean_variance(z: torch.Tensor, dims: torch.Tensor) -> torch.Tensor:
    """(B,) mean over the real dimensions of the population variance of z (two passes,
    as numpy's var; torch's one-pass var took 3 ms at 6000 x 84)."""
    dev = z - z.mean(1, keepdim=True)
    return (dev * dev).sum((1, 2)) / (z.shape[1] * dims.to(z.dtype))


def kmeans_batched(z: torch.Tensor, dims: torch.Tensor, k: int, u: np.ndarray, *,
                   max_iter: int = _KMEANS_MAX_ITER, tol: float = _KMEANS_TOL) -> torch.Tensor:
    """Greedy k-means++ seeding (uniforms ``u``, shared by all models) then Lloyd; labels (B, N).

    ``z`` is zero-padded beyond ``dims[b]`` columns; the stopping threshold is
    ``tol`` times the mean per-dimension variance over the real dimensions only.
    """
    b, n, d = z.shape
    centers = _seed_centres(z, k, np.asarray(u, dtype=np.float64))
    z_sq = (z * z).sum(-1)[:, :, None]
    threshold = _mean_variance(z, dims) * tol                              # (B,)
    done = torch.zeros(b, dtype=torch.bool, device=z.device)
    check = _check_every(z.device)
    for it in range(max_iter):
        labels = _argmin(_sq_dist(z, centers, z_sq))                       # (B, N)
        counts, sums = _cluster_sums(z, labels, k)                         # (B, K), (B, K, d)
        new = torch.where(counts[..., None] > 0, sums / counts.clamp_min(1.0)[..., None],
                          centers)
        shift = ((new - centers) ** 2).sum((1, 2))
        centers = torch.where(done[:, None, None], centers, new)
        done = done | (shift <= threshold)
        if (it + 1) % check == 0 and bool(done.all()):
            break
    return _argmin(_sq_dist(z, centers, z_sq))


# --------------------------------------------------------------------------- EM
def _blocks(n: int, cols: int):
    return [(s, min(s + cols, n)) for s in range(0, n, cols)]


def _samples_per_block(n: int, width: int) -> int:
    """Samples of one block whose (width x samples) slab is about ``_BLOCK_BYTES`` per
    model. Depends on N and the width only, never on the batch size, so a model's
    rounding does not depend on the batch it is in."""
    return max(1, min(n, _BLOCK_BYTES // (8 * max(width, 1))))


class _MomentColumns:
    r"""Per sample the column :math:`[1, z, z_a z_b\ (a \le b)]`, (B, width, N),
    width 1 + d + d(d+1)/2.

    Both EM steps are products with these columns: ``theta cols`` is every
    component's log density (:func:`_log_density_coefficients`), ``resp cols^T``
    (resp (B, K, N)) every component's mass, first moment and second moment
    (upper triangle; :func:`_moments`, which on the CPU may take the samples'
    ``z1 = [1, z]`` rows instead). They do not change between iterations, so they
    are built once and kept while they fit ``_MOMENT_ROWS_BYTES`` per model, else
    rebuilt block by block of samples.

    Samples run along the last axis: every product z_a z_{a..d-1} is written as
    contiguous rows, and ``theta cols`` (K x N out) ran at 40-43 GFLOP/s against
    28-32 for ``rows theta^T`` (N x K out) with one OpenBLAS thread
    (bench/RESULTS.md, "NLEEP near its floor", second part).
    """

    def __init__(self, z: torch.Tensor):
        b, n, d = z.shape
        self.zt, self.d = z.mT.contiguous(), d                            # (B, d, N)
        self.z1 = torch.cat([torch.ones_like(z[..., :1]), z], dim=-1)    # (B, N, 1 + d)
        self.width = 1 + d + d * (d + 1) // 2
        kept = n * self.width * z.element_size() <= _MOMENT_ROWS_BYTES
        self.full = self._build(self.zt) if kept else None
        self.cols = n if kept else _samples_per_block(n, self.width)

    def _build(self, zt: torch.Tensor, host: bool | None = None) -> torch.Tensor:
        """The columns of samples ``zt`` (B, d, n); ``host`` forces numpy's products
        (the CPU's) or torch's (elsewhere), for the tests."""
        # one slice product per dimension a, z_a * z_{a..d-1}: a gather of the
        # d(d+1)/2 index pairs ran 4x slower on the CPU
        out = torch.empty((zt.shape[0], self.width, zt.shape[2]), dtype=zt.dtype, device=zt.device)
        # numpy's multiply on the CPU: torch's broadcast one ran 3x slower here
        if host is None:
            host = zt.device.type == "cpu"
        src, dst, mul = (zt.numpy(), out.numpy(), np.multiply) if host else (zt, out, torch.mul)
        dst[:, 0] = 1.0
        dst[:, 1:1 + self.d] = src
        at = 1 + self.d
        for a in range(self.d):
            mul(src[:, a:a + 1], src[:, a:], out=dst[:, at:at + self.d - a])
            at += self.d - a
        return out

    def blocks(self):
        """(start, end, columns of samples start..end-1) covering every sample."""
        for s, e in _blocks(self.zt.shape[2], self.cols):
            yield s, e, (self.full[..., s:e] if self.full is not None
                         else self._build(self.zt[..., s:e].contiguous()))

    def moments(self, resp: torch.Tensor) -> torch.Tensor:
        """sum_i resp_ki [1, z_i, z_a z_b (a <= b)]: (B, K, width) for resp (B, K, N)."""
        return sum(_moments(resp[..., s:e], cb, self.z1[:, s:e]) for s, e, cb in self.blocks())


def _moments(resp: torch.Tensor, cb: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    """``resp cb^T`` (B, K, width) for one block: resp (B, K, n), moment columns cb
    (B, width, n), and the samples' [1, z] rows z1 (B, n, 1 + d).

    On the CPU, per model, a model whose responsibilities are mostly negligible takes
    :func:`_sparse_moments` (2-14 % of them count at d >= 37 on a real zoo, and the
    dense product spends 2 K n width flops on all of them; below 15 % the sparse
    sums cost less, bench/RESULTS.md)."""
    if resp.device.type != "cpu":
        return _matmul(resp, cb.mT)
    rn, cn, zn = resp.numpy(), cb.numpy(), z1.numpy()
    out = np.empty((rn.shape[0], rn.shape[1], cn.shape[1]), dtype=rn.dtype)
    for b in range(rn.shape[0]):
        counts = rn[b] > _NEGLIGIBLE * rn[b].max(-1, keepdims=True)
        if np.count_nonzero(counts) <= _SPARSE_DENSITY * counts.size:
            out[b] = _sparse_moments(rn[b], counts, zn[b])
        else:
            np.matmul(rn[b], cn[b].T, out=out[b])
    return torch.from_numpy(out)


def _sparse_moments(r: np.ndarray, counts: np.ndarray, z1: np.ndarray) -> np.ndarray:
    """:func:`_moments` of one model from the responsibilities that count (numpy).

    Component k's sums are the upper triangle of sum_i r_ki z1_i z1_i^T, z1 = [1, z]
    (row by row: [mass, first moment, second moment], the moment columns' order),
    one (1 + d) x (1 + d) product of sqrt(r_k) z1 with itself over the samples where
    ``counts[k]``. Left out: responsibilities under ``_NEGLIGIBLE`` times their
    component's largest, together at most N * 1e-30 of that component's mass."""
    comp, idx = np.nonzero(counts)                                         # by component
    rows = z1[idx]                                                         # (nnz, 1 + d)
    rows *= np.sqrt(r[comp, idx])[:, None]     # sqrt(r) z1: each product a^T a is a syrk
    k, p = r.shape[0], z1.shape[1]
    bounds = np.searchsorted(comp, np.arange(k + 1))
    full = np.zeros((k, p, p), dtype=r.dtype)
    for j in range(k):   # one product per component, 0.01-0.1 ms each
        a = rows[bounds[j]:bounds[j + 1]]
        if a.shape[0]:
            np.matmul(a.T, a, out=full[j])
    upper = np.triu_indices(p)
    return full[:, upper[0], upper[1]]


def _params_from_moments(moments: torch.Tensor, n: int, d: int, pad_diag: torch.Tensor):
    """Weights (B, K), means (B, K, d), Cholesky factors (B, K, d, d), failures (B,).

    ``moments`` (B, K, 1 + d + d(d+1)/2) are sum_i r_ik [1, z_i, z_i z_i^T] (upper
    triangle, row by row). With nk = s0 + 10 eps and mu = s1 / nk (the
    reference's), the weighted scatter about mu is S2 - 2 nk mu mu^T + s0 mu mu^T.
    ``pad_diag`` (B, 1, d) is ``reg_covar`` on real dimensions and 1 on padded
    ones, so the padded block of every covariance is the identity.
    """
    s0 = moments[..., 0]
    nk = s0 + 10 * torch.finfo(moments.dtype).eps                        # (B, K)
    means = moments[..., 1:1 + d] / nk[..., None]                        # (B, K, d)
    upper = torch.triu_indices(d, d, device=moments.device)
    second = moments.new_zeros(moments.shape[:2] + (d, d))
    second[..., upper[0], upper[1]] = moments[..., 1 + d:] / nk[..., None]
    # Cholesky reads the lower triangle: the transpose of the upper one
    cov = second.mT - (2.0 - s0 / nk)[..., None, None] * (means[..., :, None] * means[..., None, :])
    cov = cov + torch.diag_embed(pad_diag)
    chol, info = torch.linalg.cholesky_ex(cov)
    return (nk / n, means, chol), (info != 0).any(-1)


def _log_density_coefficients(params, log2pi_d: torch.Tensor) -> torch.Tensor:
    r"""theta (B, K, width): log pi_k + log N(z | mu_k, Sigma_k) of a sample is
    ``theta_k . col(z)``.

    With the precision P = L^{-T} L^{-1}, (z - mu)^T P (z - mu) = mu^T P mu
    - 2 (P mu)^T z + sum_{a<=b} c_ab z_a z_b, c_aa = P_aa, c_ab = P_ab + P_ba; theta
    holds -1/2 of each coefficient, and the constant column log pi_k - (log det
    Sigma_k + d log 2 pi + mu^T P mu) / 2.
    """
    weights, means, chol = params
    d = chol.shape[-1]
    eye = torch.eye(d, dtype=chol.dtype, device=chol.device).expand_as(chol)
    inv = torch.linalg.solve_triangular(chol, eye, upper=False)          # L^{-1}
    prec = inv.mT @ inv
    sym = prec + prec.mT
    upper = torch.triu_indices(d, d, device=chol.device)
    quad = sym[..., upper[0], upper[1]].mul_(-0.5)
    quad[..., (upper[0] == upper[1]).nonzero()[:, 0]] *= 0.5              # -P_aa / 2
    lin = (sym @ means[..., None])[..., 0].mul_(0.5)                      # P mu
    cst = (means * (prec @ means[..., None])[..., 0]).sum(-1, keepdim=True)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (B, K)
    const = torch.log(weights) - 0.5 * (logdet + log2pi_d[:, None])
    return torch.cat([const[..., None] - 0.5 * cst, lin, quad], dim=-1)


def _em_sweep(cols: _MomentColumns, params, log2pi_d: torch.Tensor):
    """An E step and the next M step's sums in one sweep over the samples:
    (moments (B, K, width), mean log-likelihood (B,))."""
    theta = _log_density_coefficients(params, log2pi_d)
    moments, loglik = 0, 0
    for s, end, cb in cols.blocks():
        lj = _matmul(theta, cb)                                           # (B, K, n)
        top = lj.amax(-2, keepdim=True)
        # exp(t) for t < -708 is subnormal or 0, and ran 5-20x slower on the CPU;
        # responsibilities under 3e-308 change no sum, so they are floored there
        e = lj.sub_(top).clamp_min_(_EXP_FLOOR).exp_()
        total = e.sum(-2, keepdim=True)
        moments = moments + _moments(e.div_(total), cb, cols.z1[:, s:end])
        loglik = loglik + (top + torch.log(total)).sum((-2, -1))
    return moments, loglik / cols.zt.shape[2]


def _cancels(params) -> torch.Tensor:
    """(B,) bool: a component's mean is so far from the origin, compared with its
    spread, that raw moments would lose digits (max_k,a mu_ka^2 / Sigma_k,aa over
    ``_RAW_MOMENT_LIMIT``: the rounding of S2/nk - mu mu^T relative to Sigma is
    about eps times that ratio). Real CNN features stay below 1e3."""
    _, means, chol = params
    var = (chol * chol).sum(-1)                                           # diag(L L^T) (B, K, d)
    return (means * means / var).amax((1, 2)) > _RAW_MOMENT_LIMIT


def _m_step_centred(z: torch.Tensor, resp: torch.Tensor, pad_diag: torch.Tensor):
    """:func:`_params_from_moments` from the scatter about each mean, as the reference,
    for responsibilities ``resp`` (B, K, N) (holds B K N d values: the fallback where
    :func:`_cancels`)."""
    n = z.shape[1]
    nk = resp.sum(-1) + 10 * torch.finfo(z.dtype).eps                    # (B, K)
    means = (resp @ z) / nk[..., None]                                    # (B, K, d)
    diff = z[:, None, :, :] - means[:, :, None, :]                         # (B, K, N, d)
    cov = (resp[..., None] * diff).mT @ diff / nk[..., None, None]        # (B, K, d, d)
    chol, info = torch.linalg.cholesky_ex(cov + torch.diag_embed(pad_diag))
    return (nk / n, means, chol), (info != 0).any(-1)


def _log_joint_centred(z: torch.Tensor, params, log2pi_d: torch.Tensor) -> torch.Tensor:
    """log pi_k + log N(z_i | mu_k, Sigma_k) (B, K, N) from each sample's whitened
    difference to each mean."""
    weights, means, chol = params
    diff = z[:, None, :, :] - means[:, :, None, :]                         # (B, K, N, d)
    w = torch.linalg.solve_triangular(chol, diff.mT, upper=False)        # (B, K, d, N)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (B, K)
    out = -0.5 * ((w * w).sum(-2) + logdet[..., None] + log2pi_d[:, None, None])
    return out + torch.log(weights)[..., None]


def gmm_posteriors_batched(z: torch.Tensor, dims: torch.Tensor, k: int, seed: int = 0,
                           *, u: np.ndarray | None = None) -> torch.Tensor:
    """Posteriors Q (B, N, K) of a seeded full-covariance Gaussian mixture per model."""
    b, n, d = z.shape
    dev, dt = z.device, z.dtype
    if u is None:
        u = _uniforms(k, seed)
    resp = _onehot(kmeans_batched(z, dims, k, u), k, dt).mT               # (B, K, N)
    cols = _MomentColumns(z)
    real = torch.arange(d, device=dev)[None, :] < dims[:, None]
    pad_diag = torch.where(real, torch.tensor(_REG_COVAR, dtype=dt, device=dev),
                           torch.tensor(1.0, dtype=dt, device=dev))[:, None, :]
    log2pi_d = dims.to(dt) * math.log(2 * math.pi)

    params, failed = _params_from_moments(
        cols.moments(resp), n, d, pad_diag)
    exact = bool(_cancels(params).any())   # from here on the whole batch takes the centred path
    if exact:
        params, failed = _m_step_centred(z, resp, pad_diag)
    lower = torch.full((b,), -math.inf, dtype=dt, device=dev)
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    check = _check_every(dev)
    for it in range(_EM_MAX_ITER):
        if exact:
            lj = _log_joint_centred(z, params, log2pi_d)
            norm = torch.logsumexp(lj, dim=-2, keepdim=True)              # (B, 1, N)
            new, bad = _m_step_centred(z, torch.exp(lj - norm), pad_diag)
            new_lower = norm.mean((-2, -1))
        else:
            moments, new_lower = _em_sweep(cols, params, log2pi_d)
            new, bad = _params_from_moments(moments, n, d, pad_diag)
        keep = done
        params = tuple(torch.where(keep.view(-1, *([1] * (o.dim() - 1))), o, nw)
                       for o, nw in zip(params, new))
        failed = failed | (bad & ~keep)
        converged = (new_lower - lower).abs() < _EM_TOL
        lower = torch.where(keep, lower, new_lower)
        done = done | converged
        if (it + 1) % check == 0 and bool(done.all()):
            break
        if not exact and bool(_cancels(params).any()):
            exact = True  # the next E step and the M steps after it
    if bool(failed.any()):
        bad_models = torch.nonzero(failed).flatten().tolist()
        raise ValueError(f"NLEEP mixture of model(s) {bad_models}: a component covariance is "
                         "not positive definite even with reg_covar=1e-6")
    # final E step with the final parameters
    if exact:
        lj = _log_joint_centred(z, params, log2pi_d)
    else:
        theta = _log_density_coefficients(params, log2pi_d)
        lj = torch.cat([_matmul(theta, cb) for _, _, cb in cols.blocks()], dim=-1)
    q = torch.exp(lj - torch.logsumexp(lj, dim=-2, keepdim=True))
    return q.mT.contiguous()


# ------------------------------------------------------------------------ score
def nleep_from_posteriors_batched(q: torch.Tensor, codes: torch.Tensor,
                                  n_classes: int) -> torch.Tensor:
    """NLEEP (B,) from posteriors Q (B, N, K) and class codes (N,).

    p(y, z) = (1/N) sum_{i: y_i = y} Q_iz; p(y|z) normalised over y, with an
    empty component (zero column) left at 0 instead of 0/0.
    """
    n = q.shape[1]
    onehot = _onehot(codes, n_classes, q.dtype)                           # (N, C)
    pyz = left(onehot.T, q) / n                                            # (B, C, K)
    mass = pyz.sum(1, keepdim=True)
    py_given_z = pyz / torch.where(mass > 0, mass, torch.ones_like(mass))
    per_sample = left(onehot, py_given_z)                                  # (B, N, K): p(y_i | z)
    return (q * per_sample).sum((1, 2)) / n


# ------------------------------------------------------------------------ entry
@torch.no_grad()
def nleep_batched(x: torch.Tensor, codes: torch.Tensor, n_classes: int, *,
                  components_per_class: int = 5, seed: int = 0,
                  models_per_chunk: int | None = None, centred_gram: torch.Tensor | None = None,
                  mean: torch.Tensor | None = None) -> torch.Tensor:
    """NLEEP of B models at once: (B, N, D) features, (N,) int64 codes -> (B,) scores.

    ``x`` is float64 ("exact", equal to the reference up to rounding) or float32
    ("fast"); the scores come back in ``x``'s dtype on ``x``'s device. Every
    model uses the same ``seed``, as calling ``te_gpu.reference.nleep(x[b], y,
    seed=seed)`` per model. ``models_per_chunk`` processes the batch in chunks of
    that many models to bound memory (see the module docstring). ``centred_gram``
    and ``mean``: see :func:`pca_keep_variance_batched`.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(codes, torch.Tensor):
        raise TypeError("x and codes must be torch tensors")
    if x.dim() != 3:
        raise ValueError(f"x must be (B models, N samples, D dims), got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x must be float32 or float64, got {x.dtype}")
    b, n, _ = x.shape
    if b == 0 or n == 0 or x.shape[2] == 0:
        raise ValueError(f"x is empty: shape {tuple(x.shape)}")
    if codes.dim() != 1 or codes.shape[0] != n:
        raise ValueError(f"codes must be (N,) = ({n},), got shape {tuple(codes.shape)}")
    if codes.dtype != torch.int64:
        raise TypeError(f"codes must be int64, got {codes.dtype}")
    if codes.device != x.device:
        raise ValueError(f"codes are on {codes.device} but x is on {x.device}")
    if isinstance(n_classes, bool) or int(n_classes) != n_classes or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    n_classes = int(n_classes)
    if (isinstance(components_per_class, bool) or int(components_per_class) != components_per_class
            or components_per_class < 1):
        raise ValueError("components_per_class must be a positive integer")
    k = int(components_per_class) * n_classes
    if k > n:
        raise ValueError(f"NLEEP needs at least {k} samples for {k} mixture components "
                         f"({components_per_class} per class), got {n}")
    lo, hi = torch.stack([codes.min(), codes.max()]).tolist()
    if lo < 0 or hi >= n_classes:
        raise ValueError(f"codes must lie in [0, {n_classes}), got values in [{lo}, {hi}]")
    if models_per_chunk is not None and (int(models_per_chunk) != models_per_chunk
                                         or models_per_chunk < 1):
        raise ValueError("models_per_chunk must be a positive integer or None")

    u = _uniforms(k, seed)
    step = b if models_per_chunk is None else int(models_per_chunk)
    out = []
    for s in range(0, b, step):
        chunk = slice(s, s + step)
        z, dims = pca_keep_variance_batched(
            x[chunk], _FRACTION, centred_gram=None if centred_gram is None else centred_gram[chunk],
            mean=None if mean is None else mean[chunk])
        q = gmm_posteriors_batched(z, dims, k, u=u)
        out.append(nleep_from_posteriors_batched(q, codes, n_classes))
    return torch.cat(out)


def head(x: torch.Tensor, labels, shared, *, components_per_class: int, seed: int) -> torch.Tensor:
    """The catalogue's NLEEP head, in float64 under either precision: the mixture's
    covariance regularisation (reg_covar = 1e-6) is at float32's resolution of
    unit-scale variances, and float32 Cholesky factors fail there.

    On the CPU the models go one at a time: batched, every model pays for the
    widest model's PCA dimensions (zero padding) and for the iterations of the
    slowest to converge, and a CPU gains nothing from the batch. At N >= D and in
    float64 the PCA reads the centred Gram of the shared statistics, which the
    other metrics of a ``score`` have computed already."""
    per_chunk = 1 if x.device.type == "cpu" else None
    gram = mean = None
    if x.dtype == torch.float64 and x.shape[1] >= x.shape[2]:
        gram, mean = shared.stats.gram_c, shared.stats.xbar
    return nleep_batched(x.to(torch.float64), labels.codes, labels.c,
                         components_per_class=components_per_class, seed=seed,
                         models_per_chunk=per_chunk, centred_gram=gram, mean=mean)
