"""Batched NLEEP engine (te_gpu.engine.nleep) against the float64 reference
(te_gpu.reference.nleep, SPEC 6), model by model with the same seed.

Tolerances: float64 ("exact") 1e-6 relative to the reference score (measured
about 1e-15: the engine reproduces the reference's k-means++ stream, so both
take the same discrete decisions, and k-means ties are measure-zero on random
data); float32 ("fast") 1e-2 relative (measured up to about 2e-3).
"""
from functools import lru_cache

import numpy as np
import pytest
import torch

import te_gpu.engine.nleep as engine_nleep
from te_gpu.engine.nleep import (
    gmm_posteriors_batched,
    kmeans_batched,
    nleep_batched,
    nleep_from_posteriors_batched,
    nleep_memory_bytes,
    pca_keep_variance_batched,
)
from te_gpu.reference.nleep import gmm_posteriors, kmeans, nleep, nleep_from_posteriors
from te_gpu.reference.pca import pca_keep_variance

EXACT_RTOL = 1e-6
FAST_RTOL = 1e-2


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These matrices are tiny: multi-threaded BLAS only adds contention (on a busy
    machine it made this file ~5x slower). Restored after the module."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


def zoo(seed, b, n, d, c, sizes=None):
    """B models of width D on the same labelled samples, each with its own spectrum.

    Each model: class means + noise, both scaled by exp(-decay * j) with a
    per-model decay (so the number of PCA dims kept for 80 % differs between
    models), rotated by a random orthogonal matrix and shifted.
    """
    rng = np.random.default_rng(seed)
    if sizes is None:
        y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    else:
        y = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(y)
    xs = []
    for _ in range(b):
        scale = np.exp(-rng.uniform(0.05, 0.6) * np.arange(d))
        centres = rng.normal(scale=1.5, size=(c, d)) * scale
        x = centres[y] + rng.normal(size=(n, d)) * scale
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        xs.append(x @ q.T + 3.0 * rng.normal(size=d))
    return np.stack(xs), y.astype(np.int64)


def reference_scores(x, y, r, seed):
    return np.array([nleep(x[m], y, components_per_class=r, seed=seed) for m in range(len(x))])


@lru_cache(maxsize=None)
def case(name):
    """(x, y, C, r, seed, reference scores) of a named case, computed once per session."""
    seed, b, n, d, c, r, sizes = CASES[name]
    x, y = zoo(seed, b, n, d, c, sizes)
    return x, y, c, r, seed, reference_scores(x, y, r, seed)


def engine_scores(x, y, c, r, seed, dtype=torch.float64, device="cpu", **kw):
    xt = torch.as_tensor(x, dtype=dtype, device=device)
    yt = torch.as_tensor(y, device=device)
    out = nleep_batched(xt, yt, c, components_per_class=r, seed=seed, **kw)
    assert out.dtype == dtype and out.shape == (len(x),) and out.device == xt.device
    return out


def max_rel(a, b):
    return float(np.max(np.abs(np.asarray(a) / np.asarray(b) - 1.0)))


CASES = {
    # name: (seed, B, N, D, C, r, class sizes)
    "ragged_dims": (0, 4, 150, 16, 3, 2, None),
    "n_less_than_d_two_classes": (1, 3, 40, 60, 2, 3, None),
    "imbalanced": (2, 4, 120, 12, 3, 2, [80, 25, 15]),
    "imbalanced_two_classes": (14, 3, 90, 30, 2, 5, [70, 20]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_nleep_batched_equals_reference_nleep(name):
    x, y, c, r, seed, ref = case(name)
    got = engine_scores(x, y, c, r, seed).numpy()
    assert max_rel(got, ref) < EXACT_RTOL


def test_batch_has_ragged_pca_dims():
    # The parity cases really mix models keeping different numbers of PCA dims.
    for name in ("ragged_dims", "n_less_than_d_two_classes", "imbalanced"):
        seed, b, n, d, c, _, sizes = CASES[name]
        x, _ = zoo(seed, b, n, d, c, sizes)
        _, dims = pca_keep_variance_batched(torch.from_numpy(x))
        expect = [pca_keep_variance(x[m], 0.8).shape[1] for m in range(b)]
        assert dims.tolist() == expect
        assert len(set(expect)) > 1


def test_pca_scores_match_reference_up_to_basis_and_pad_with_zeros():
    x, _ = zoo(3, 3, 80, 20, 2)
    z, dims = pca_keep_variance_batched(torch.from_numpy(x))
    assert z.shape == (3, 80, int(dims.max()))
    for m in range(3):
        k = int(dims[m])
        ref = pca_keep_variance(x[m], 0.8)
        zm = z[m, :, :k].numpy()
        # scores are defined up to the sign of each component: compare Gram matrices
        scale = np.abs(ref).max() ** 2
        np.testing.assert_allclose(zm @ zm.T, ref @ ref.T, rtol=0, atol=1e-9 * scale)
        assert torch.all(z[m, :, k:] == 0)


def test_kmeans_and_posteriors_equal_reference():
    x, _ = zoo(4, 3, 100, 14, 3)
    z, dims = pca_keep_variance_batched(torch.from_numpy(x))
    k, seed = 6, 7
    u = np.random.default_rng(seed).random(1 + (k - 1) * (2 + int(np.log(k))))  # greedy k-means++
    labels = kmeans_batched(z, dims, k, u)
    q = gmm_posteriors_batched(z, dims, k, seed)
    for m in range(3):
        zm = pca_keep_variance(x[m], 0.8)
        ref_labels = kmeans(zm, k, np.random.default_rng(seed))
        assert np.array_equal(labels[m].numpy(), ref_labels)
        np.testing.assert_allclose(q[m].numpy(), gmm_posteriors(zm, k, seed), rtol=0, atol=1e-9)


def test_nleep_from_posteriors_batched_with_empty_component():
    rng = np.random.default_rng(5)
    q = rng.dirichlet(np.ones(4), size=(2, 30))
    q[1, :, 2] = 0.0                     # an empty component in the second model
    q[1] /= q[1].sum(-1, keepdims=True)
    codes = rng.integers(0, 3, 30)
    got = nleep_from_posteriors_batched(torch.from_numpy(q), torch.from_numpy(codes), 3)
    want = [nleep_from_posteriors(q[m], codes, 3) for m in range(2)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-14)


def test_blocked_cumulative_sum_matches_cumsum():
    # The scan used off the CPU (torch.cumsum on CUDA floats is nondeterministic).
    gen = torch.Generator().manual_seed(12)
    for n in (1, 2, 7, 16, 17, 150, 1000):
        v = torch.rand(3, n, dtype=torch.float64, generator=gen) ** 4
        v[1, : n // 2] = 0.0
        blocked = engine_nleep._cdf(v, blocked=True)
        torch.testing.assert_close(blocked, v.cumsum(1), rtol=1e-13, atol=0)
        assert bool((blocked[:, 1:] >= blocked[:, :-1]).all())
    assert engine_nleep._cdf(v.float(), blocked=True).dtype == torch.float64


def test_blocked_scan_path_equals_reference(monkeypatch):
    # The whole CUDA code path's seeding, run on the CPU.
    cdf = engine_nleep._cdf
    monkeypatch.setattr(engine_nleep, "_cdf", lambda v, blocked=None: cdf(v, blocked=True))
    x, y, c, r, seed, ref = case("imbalanced")
    assert max_rel(engine_scores(x, y, c, r, seed).numpy(), ref) < EXACT_RTOL


def test_float32_fast_is_close_to_reference():
    x, y, c, r, seed, ref = case("ragged_dims")
    got = engine_scores(x, y, c, r, seed, dtype=torch.float32).double().numpy()
    assert max_rel(got, ref) < FAST_RTOL


def test_deterministic_and_chunking_changes_nothing():
    seed, b, n, d, c, r, sizes = CASES["n_less_than_d_two_classes"]
    x, y = zoo(seed, b, n, d, c, sizes)
    a = engine_scores(x, y, c, r, seed)
    assert torch.equal(a, engine_scores(x, y, c, r, seed))
    chunked = engine_scores(x, y, c, r, seed, models_per_chunk=2)
    torch.testing.assert_close(chunked, a, rtol=1e-12, atol=0)


def test_seed_is_shared_by_every_model_of_the_batch():
    # Copies of one model in a batch score alike, and equal the reference with that seed.
    x, y, c, r, seed, ref = case("n_less_than_d_two_classes")
    s = engine_scores(np.stack([x[2], x[0], x[2]]), y, c, r, seed)
    assert s[0] == s[2]
    np.testing.assert_allclose(s.numpy(), ref[[2, 0, 2]], rtol=EXACT_RTOL)
    other = engine_scores(x[:1], y, c, r, seed + 1)
    assert other[0] != s[1]  # the seed matters


def test_well_separated_classes_score_one():
    rng = np.random.default_rng(8)
    y = np.repeat(np.arange(3), 40)
    centres = rng.normal(scale=50.0, size=(3, 4))
    x = np.stack([centres[y] + 0.1 * rng.normal(size=(120, 4)) for _ in range(2)])
    s = engine_scores(x, y, 3, 1, seed=0)
    np.testing.assert_allclose(s.numpy(), 1.0, atol=1e-6)


def test_too_many_components_and_bad_arguments():
    x = torch.randn(2, 19, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    y = torch.arange(19) % 4
    with pytest.raises(ValueError, match="mixture components"):
        nleep_batched(x, y, 4, components_per_class=5)
    with pytest.raises(ValueError, match="positive integer"):
        nleep_batched(x, y, 4, components_per_class=0)
    with pytest.raises(ValueError, match="codes must lie"):
        nleep_batched(x, y + 1, 4, components_per_class=1)
    with pytest.raises(ValueError, match="must be"):
        nleep_batched(x[0], y, 4, components_per_class=1)
    z = x.clone()
    z[1] = 1.0                               # a constant model
    with pytest.raises(ValueError, match="zero variance"):
        nleep_batched(z, y, 4, components_per_class=1)


def test_memory_estimate_grows_with_batch():
    one = nleep_memory_bytes(1, 1000, 512, 50, 40)
    assert nleep_memory_bytes(4, 1000, 512, 50, 40) == 4 * one
    assert nleep_memory_bytes(1, 1000, 512, 50, 40, torch.float32) * 2 == one


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_reference_and_is_deterministic():
    for name in ("ragged_dims", "n_less_than_d_two_classes", "imbalanced"):
        x, y, c, r, seed, ref = case(name)
        got = engine_scores(x, y, c, r, seed, device="cuda")
        assert max_rel(got.cpu().numpy(), ref) < EXACT_RTOL
        assert torch.equal(got, engine_scores(x, y, c, r, seed, device="cuda"))
        fast = engine_scores(x, y, c, r, seed, dtype=torch.float32, device="cuda")
        assert max_rel(fast.double().cpu().numpy(), ref) < FAST_RTOL


def test_moment_rows_built_block_by_block_equal_reference(monkeypatch):
    # Rows too large to keep are rebuilt per block of samples (here ~16 rows).
    monkeypatch.setattr(engine_nleep, "_MOMENT_ROWS_BYTES", 0)
    monkeypatch.setattr(engine_nleep, "_BLOCK_BYTES", 20_000)
    x, y, c, r, seed, ref = case("ragged_dims")
    assert max_rel(engine_scores(x, y, c, r, seed).numpy(), ref) < EXACT_RTOL


def far_clusters(spread, seed=21):
    """Two models; three groups of samples about 1e3 apart, each holding all three
    classes, the classes offset by 1.5 spread inside a group: components of spread
    about ``spread`` far from the origin."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), 60)
    rng.shuffle(y)
    group = np.arange(180) % 3
    centres = rng.normal(scale=1e3, size=(3, 6))
    shift = 1.5 * (y[:, None] == np.arange(6) % 3)
    x = np.stack([centres[group] + spread * (rng.normal(size=(180, 6)) + shift) for _ in range(2)])
    return x, y


@pytest.mark.parametrize("spread", [30.0, 1e-2])
def test_tight_components_far_from_the_origin_equal_reference(spread, monkeypatch):
    # Raw moments (S2/nk - mu mu^T) lose about eps (|mu| / sigma)^2 relative: measured
    # 1.4e-8 at spread 0.1 and 1e-6 at 0.01 here. Past _RAW_MOMENT_LIMIT the EM takes
    # the centred path (spread 0.01: 4e-12 from the reference); spread 30 stays on the
    # fast path (ratio about 1e3, as real CNN features).
    calls = []
    centred = engine_nleep._m_step_centred
    monkeypatch.setattr(engine_nleep, "_m_step_centred",
                        lambda *a: calls.append(1) or centred(*a))
    x, y = far_clusters(spread)
    ref = reference_scores(x, y, 2, 3)
    assert max_rel(engine_scores(x, y, 3, 2, 3).numpy(), ref) < EXACT_RTOL
    assert bool(calls) == (spread < 1)


def rank_deficient_zoo(seed=3, n=240):
    """Two ReLU models with dead units, duplicated and collinear columns (rank < D); the
    second has 10 more dead units and a shift."""
    from helpers import relu_features

    x, y = relu_features(seed, n, 40, c=4, dead=5, dup=4, collinear=3)
    other = x.copy()
    other[:, 10:20] = 0.0
    return np.stack([x, other + 0.2]), y.astype(np.int64)


@pytest.mark.parametrize("path", ["dense", "sparse"])
@pytest.mark.parametrize("name", ["imbalanced", "n_less_than_d_two_classes", "rank_deficient"])
def test_m_step_sums_dense_or_sparse_equal_reference(name, path, monkeypatch):
    # On the CPU the M step's sums skip negligible responsibilities when few count
    # (_sparse_moments); the test data mostly take the dense product, so each path is
    # forced here: every sum sparse (share 1.0) or every sum dense (share -1).
    monkeypatch.setattr(engine_nleep, "_SPARSE_DENSITY", 1.0 if path == "sparse" else -1.0)
    if name == "rank_deficient":
        x, y = rank_deficient_zoo()
        c, r, seed = 4, 3, 5
        ref = reference_scores(x, y, r, seed)
    else:
        x, y, c, r, seed, ref = case(name)
    assert max_rel(engine_scores(x, y, c, r, seed).numpy(), ref) < EXACT_RTOL


def test_sparse_moments_equal_dense_product_less_the_negligible():
    # Exactly the dense product's sums over the responsibilities that count, in the
    # moment columns' order; those left out (under 1e-30 of their component's largest)
    # change no sum beyond rounding.
    gen = torch.Generator().manual_seed(13)
    z = torch.randn(1, 300, 5, dtype=torch.float64, generator=gen) * 3 + 1
    r = torch.rand(1, 4, 300, dtype=torch.float64, generator=gen)
    r[0, 1, ::3] = 1e-40            # negligible next to that component's largest
    r[0, 2] = 0.0
    r[0, 2, 7] = 1e-200             # a (near-)empty component keeps its only sample
    cols = engine_nleep._MomentColumns(z)
    dense = engine_nleep._matmul(r, cols.full.mT)
    rn = r[0].numpy()
    counts = rn > engine_nleep._NEGLIGIBLE * rn.max(-1, keepdims=True)
    sparse = engine_nleep._sparse_moments(rn, counts, cols.z1[0].numpy())
    assert not counts[1, ::3].any() and counts[2].sum() == 1
    np.testing.assert_allclose(sparse, dense[0].numpy(), rtol=1e-13, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_head_reads_the_shared_centred_gram_in_float64(dtype):
    # At N >= D the catalogue head's PCA reads the other metrics' centred Gram (float64
    # features only); the scores equal those of the engine's own Gram and the reference.
    from te_gpu.engine.core import Shared
    from te_gpu.engine.stats import Labels

    x, y = rank_deficient_zoo()                                  # N = 240 > D = 40
    xt = torch.from_numpy(x).to(dtype)
    lab = Labels.from_codes(torch.from_numpy(y), 4, dtype)
    shared = Shared(xt, lab)
    got = engine_nleep.head(xt, lab, shared, components_per_class=3, seed=5)
    assert got.dtype == torch.float64
    assert shared.used == ({"stats"} if dtype == torch.float64 else set())
    own = engine_scores(xt.double().numpy(), y, 4, 3, 5)
    assert max_rel(got.numpy(), own.numpy()) < 1e-12
    assert max_rel(got.numpy(), reference_scores(xt.double().numpy(), y, 3, 5)) < EXACT_RTOL


def test_device_paths_of_columns_and_cluster_sums_run_on_the_cpu():
    # The paths taken off the CPU (torch's products for the moment columns, one-hot
    # products for Lloyd's cluster sums), forced here, equal the CPU's numpy ones.
    gen = torch.Generator().manual_seed(17)
    z = torch.randn(2, 90, 6, dtype=torch.float64, generator=gen)
    z[1, :, 4:] = 0.0                                        # zero padding of a smaller model
    cols = engine_nleep._MomentColumns(z)
    torch.testing.assert_close(cols._build(cols.zt, host=False), cols._build(cols.zt, host=True),
                               rtol=0, atol=0)
    rows = torch.cat([torch.ones(2, 90, 1, dtype=torch.float64), z], dim=-1)
    upper = torch.triu_indices(7, 7)
    want = (rows[..., :, None] * rows[..., None, :])[..., upper[0], upper[1]].mT
    torch.testing.assert_close(cols.full, want, rtol=0, atol=0)
    labels = torch.randint(0, 5, (2, 90), generator=gen)
    labels[0, labels[0] == 3] = 4                            # an empty cluster
    counts, sums = engine_nleep._cluster_sums(z, labels, 5, host=True)
    counts_dev, sums_dev = engine_nleep._cluster_sums(z, labels, 5, host=False)
    torch.testing.assert_close(counts, counts_dev, rtol=0, atol=0)
    torch.testing.assert_close(sums, sums_dev, rtol=1e-14, atol=1e-14)
    assert counts[0, 3] == 0 and bool((sums[0, 3] == 0).all())
