"""PCA reference (SPEC 4.1, 6, 7.2): randomized, exact and keep-a-fraction PCA.

scikit-learn is the oracle here (test-only dependency, imported inside the
tests). Every comparison states its tolerance; every helper asserts finiteness
so that a NaN can never slip through a comparison.
"""
import numpy as np
import pytest
from scipy.linalg import hadamard

from te_gpu.reference.pca import exact_pca, flip_signs, pca_keep_variance, randomized_pca

from helpers import spectrum_features




def assert_close(got, want, rel, what):
    """max |got - want| <= rel * max |want|, both finite and of the same shape."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values in the result"
    assert np.all(np.isfinite(want)), f"{what}: non-finite values in the oracle"
    scale = np.abs(want).max()
    assert scale > 0
    err = np.abs(got - want).max()
    assert err <= rel * scale, f"{what}: max error {err:.3e} > {rel:g} * {scale:.3e}"


def align_columns(got, want):
    """Flip the columns of ``got`` to the sign of the matching column of ``want``."""
    signs = np.sign((got * want).sum(axis=0))
    signs[signs == 0] = 1.0
    return got * signs


def sklearn_randomized(x, n):
    from sklearn.decomposition import PCA

    pca = PCA(n_components=n, svd_solver="randomized", random_state=1919, iterated_power=1)
    z = pca.fit_transform(x)
    return z, pca


# (seed, N, D, n): N > D, N < D (the transposed path), n = min(N, D) both ways.
RANDOMIZED_CASES = [
    (0, 90, 24, 8),
    (1, 30, 70, 10),
    (2, 50, 16, 16),
    (3, 18, 45, 18),
    (4, 40, 40, 12),
]


@pytest.mark.parametrize("seed,n,d,k", RANDOMIZED_CASES)
def test_randomized_pca_matches_sklearn_float64(seed, n, d, k):
    x = spectrum_features(seed, n, d)
    want, pca = sklearn_randomized(x, k)
    z, vt, s = randomized_pca(x, k)
    assert z.dtype == np.float64 and z.shape == (n, k)
    # first up to per-column signs (absolute values), then with the signs themselves
    assert_close(np.abs(z), np.abs(want), 1e-9, "|Z|")
    assert_close(z, want, 1e-9, "Z with signs")
    assert_close(vt, pca.components_, 1e-9, "components")
    assert_close(s, pca.singular_values_, 1e-9, "singular values")


@pytest.mark.parametrize("seed,n,d,k", RANDOMIZED_CASES)
def test_randomized_pca_sign_rule(seed, n, d, k):
    # The largest-magnitude entry of each row of the components is positive.
    x = spectrum_features(seed + 100, n, d)
    _, vt, _ = randomized_pca(x, k)
    rows = np.arange(vt.shape[0])
    top = vt[rows, np.argmax(np.abs(vt), axis=1)]
    assert np.all(top > 0)


@pytest.mark.parametrize("seed,n,d,k", RANDOMIZED_CASES)
def test_randomized_pca_float32_runs_in_float32(seed, n, d, k):
    x32 = spectrum_features(seed + 7, n, d, dtype=np.float32)
    want32, _ = sklearn_randomized(x32, k)
    assert want32.dtype == np.float32  # the oracle does run in float32
    z32, _, _ = randomized_pca(x32, k)
    z64, _, s64 = randomized_pca(x32.astype(np.float64), k)
    assert_close(z32, want32, 1e-4, "float32 Z vs sklearn float32")
    # the power step cubes the spectrum, so float32 resolves components only down to
    # about eps32^(1/3) = 5e-3 s_max; below that they depend on the BLAS kernels (an
    # Intel CPU gave 6e-3 max error at 4e-3 s_max, an AMD one passed 1e-3)
    resolved = s64 >= 0.02 * s64[0]
    assert_close(z32[:, resolved], z64[:, resolved], 1e-3, "float32 Z vs float64 Z")
    # The float32 computation is visible: it differs from the float64 one and
    # agrees with scikit-learn's float32 run far better than with float64.
    gap64 = np.abs(z32 - z64).max()
    gap32 = np.abs(z32 - want32.astype(np.float64)).max()
    assert gap64 > 1e-9 * np.abs(z64).max()
    assert gap32 <= 0.1 * gap64


def test_randomized_pca_recovers_a_dominant_subspace():
    # Independent of scikit-learn: with a sharply decaying spectrum and a big
    # gap, the randomized scores equal the exact PCA scores (signs by the rule).
    rng = np.random.default_rng(11)
    n, d, k = 120, 30, 4
    scales = np.r_[[40.0, 25.0, 15.0, 9.0], 1e-3 * np.ones(d - k)]
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    x = (rng.normal(size=(n, d)) * scales) @ q.T + 3.0
    z, _, _ = randomized_pca(x, k)
    a = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    u, vt = flip_signs(u, vt)
    assert_close(z, u[:, :k] * s[:k], 1e-6, "randomized vs exact on a gapped spectrum")


def test_randomized_pca_rejects_too_many_components():
    x = spectrum_features(5, 20, 8)
    with pytest.raises(ValueError):
        randomized_pca(x, 9)
    with pytest.raises(ValueError):
        randomized_pca(x, 0)


def test_randomized_pca_does_not_modify_input():
    x = spectrum_features(6, 30, 50)
    keep = x.copy()
    x.setflags(write=False)
    randomized_pca(x, 5)
    assert np.array_equal(x, keep)


@pytest.mark.parametrize("seed,n,d", [(20, 80, 12), (21, 25, 40), (22, 33, 33)])
def test_exact_pca_matches_sklearn_full(seed, n, d):
    from sklearn.decomposition import PCA

    x = spectrum_features(seed, n, d, decay=0.85)
    k = min(n, d)
    pca = PCA(n_components=k, svd_solver="full")
    want = pca.fit_transform(x)
    z, ev, vt = exact_pca(x, k)
    assert ev.shape == (k,)
    # all min(N, D) explained variances (ddof = 1); for N <= D the last one is
    # ~0, hence the absolute part of the tolerance
    assert np.all(np.isfinite(ev))
    assert np.allclose(ev, pca.explained_variance_, rtol=1e-10, atol=1e-12 * ev.max())
    assert_close(align_columns(z, want), want, 1e-9, "exact Z up to signs")
    # components: only those with non-zero variance are determined (for N <= D
    # the centred data has rank N - 1 and the last one is any null direction)
    r = min(n - 1, d)
    assert_close(align_columns(vt[:r].T, pca.components_[:r].T), pca.components_[:r].T,
                 1e-8, "exact components up to signs")


def test_exact_pca_truncates_scores_but_keeps_every_variance():
    from sklearn.decomposition import PCA

    x = spectrum_features(23, 60, 20, decay=0.8)
    z, ev, vt = exact_pca(x, 5)
    assert z.shape == (60, 5) and vt.shape == (5, 20) and ev.shape == (20,)
    full = PCA(svd_solver="full").fit(x)
    assert np.allclose(ev, full.explained_variance_, rtol=1e-10, atol=0)
    # the variance of each score column is its explained variance (ddof 1)
    assert np.allclose(z.var(axis=0, ddof=1), ev[:5], rtol=1e-10)


# A few spectra: geometric decays, a flat one, a few dominant directions.
KEEP_CASES = [
    (30, 100, 20, 0.9 ** np.arange(20)),
    (31, 100, 20, 0.6 ** np.arange(20)),
    (32, 60, 15, np.ones(15)),
    (33, 80, 25, np.r_[[10.0, 8.0, 6.0], 0.5 * np.ones(22)]),
    (34, 20, 50, 0.95 ** np.arange(50)),  # N < D
]


@pytest.mark.parametrize("seed,n,d,scales", KEEP_CASES)
def test_pca_keep_variance_component_count_matches_sklearn(seed, n, d, scales):
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    x = (rng.normal(size=(n, d)) * scales) @ q.T - 2.0
    pca = PCA(n_components=0.8, svd_solver="full")
    want = pca.fit_transform(x)
    z = pca_keep_variance(x, 0.8)
    assert z.shape[1] == pca.n_components_
    assert_close(align_columns(z, want), want, 1e-9, "kept scores up to signs")
    # the fewest components whose cumulative ratio exceeds 0.8
    ratio = np.cumsum(np.linalg.svd(x - x.mean(axis=0), compute_uv=False) ** 2)
    ratio /= ratio[-1]
    k = z.shape[1]
    assert ratio[k - 1] > 0.8
    assert k == 1 or ratio[k - 2] <= 0.8


def test_pca_keep_variance_known_answer():
    # Orthogonal, zero-mean Hadamard columns with population variances
    # 4, 3, 2, 1 (ratios .4, .3, .2, .1): cumulative .4, .7, .9, 1.0, so 0.8
    # keeps 3 components, 0.65 keeps 2 and 0.95 keeps all 4.
    h = hadamard(8).astype(np.float64)[:, 1:5]
    x = h * np.sqrt([4.0, 3.0, 2.0, 1.0]) + 7.0
    assert pca_keep_variance(x, 0.8).shape == (8, 3)
    assert pca_keep_variance(x, 0.65).shape == (8, 2)
    assert pca_keep_variance(x, 0.95).shape == (8, 4)
    z = pca_keep_variance(x, 0.8)
    # the scores are the centred columns themselves, up to sign
    want = h[:, :3] * np.sqrt([4.0, 3.0, 2.0])
    assert_close(align_columns(z, want), want, 1e-12, "Hadamard scores")


def test_pca_keep_variance_rejects_constant_features():
    with pytest.raises(ValueError):
        pca_keep_variance(np.full((10, 3), 2.5), 0.8)


def test_flip_signs_known_answer():
    vt = np.array([
        [1.0, -3.0, 2.0],   # largest |.| is -3: flip
        [0.5, 0.2, -0.1],   # largest is 0.5 > 0: keep
        [-2.0, 2.0, 1.0],   # tie: argmax takes the first (-2): flip
        [0.0, 0.0, 0.0],    # all zero: sign 0 counts as +1, keep
    ])
    u = np.arange(1.0, 13.0).reshape(3, 4)
    u_out, vt_out = flip_signs(u, vt)
    want_vt = np.array([
        [-1.0, 3.0, -2.0],
        [0.5, 0.2, -0.1],
        [2.0, -2.0, -1.0],
        [0.0, 0.0, 0.0],
    ])
    want_u = u * np.array([-1.0, 1.0, -1.0, 1.0])
    assert np.array_equal(vt_out, want_vt)
    assert np.array_equal(u_out, want_u)
    # the product U diag(s) Vt is unchanged and the inputs are untouched
    s = np.array([3.0, 2.0, 1.0, 0.5])
    assert np.allclose((u_out * s) @ vt_out, (u * s) @ vt, rtol=0, atol=1e-12)
    assert vt[0, 1] == -3.0 and u[0, 0] == 1.0


def test_flip_signs_agrees_with_sklearn_svd_flip():
    from sklearn.utils.extmath import svd_flip

    rng = np.random.default_rng(40)
    u, _, vt = np.linalg.svd(rng.normal(size=(12, 7)), full_matrices=False)
    want_u, want_vt = svd_flip(u.copy(), vt.copy(), u_based_decision=False)
    got_u, got_vt = flip_signs(u, vt)
    assert np.array_equal(got_vt, want_vt)
    assert np.array_equal(got_u, want_u)
