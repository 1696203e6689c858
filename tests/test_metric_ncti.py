"""NCTI (SPEC 4): the reference's zoo normalisation, the LDA it fits, its branches and its
invariances (scikit-learn, test-only, is the oracle for PCA and LDA); the parts public code
gives on digits; invariance to dead units.
"""
import importlib

import numpy as np
import pytest

# te_gpu.reference re-exports the function ncti, which shadows the submodule
# attribute of the same name: fetch the module itself.
ncti_mod = importlib.import_module("te_gpu.reference.ncti")
from te_gpu.reference.ncti import _LinearDiscriminant, minmax_combine, ncti, ncti_parts
from te_gpu.reference.sa import spread_attract

import te_gpu

from helpers import RANK_DEFICIENT, class_features, digits, rel, three_model_zoo


def rel_err(got, want):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    assert np.all(np.isfinite(got)) and np.all(np.isfinite(want))
    return np.abs(got - want).max() / np.abs(want).max()


def align_columns(got, want):
    signs = np.sign((got * want).sum(axis=0))
    signs[signs == 0] = 1.0
    return got * signs


def assert_parts_close(got, want, rel):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert got.shape == (3,) and np.all(np.isfinite(got)) and np.all(np.isfinite(want))
    assert np.allclose(got, want, rtol=rel, atol=0), f"{got} != {want} (rel {rel:g})"


@pytest.fixture
def solver_log(monkeypatch):
    """Record the shrinkage each _LinearDiscriminant is built with (None = 'svd')."""
    calls = []

    class Recording(_LinearDiscriminant):
        def __init__(self, z, codes, n_classes, shrinkage, lda_scaling):
            calls.append(shrinkage)
            super().__init__(z, codes, n_classes, shrinkage, lda_scaling)

    monkeypatch.setattr(ncti_mod, "_LinearDiscriminant", Recording)
    return calls


def sklearn_parts(x, y, shrinkage):
    """(seli, ncc, vc, tau) computed with scikit-learn's PCA and LDA."""
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    n, d = x.shape
    pca = PCA(n_components=min(64, n - 1, d), svd_solver="full")
    z = pca.fit_transform(x)
    tau = max(float(np.exp(-pca.explained_variance_[:32].sum())), 1e-10)
    if shrinkage == "tau":
        lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=tau)
    else:
        lda = LinearDiscriminantAnalysis(solver="svd")
    lda.fit(z, y)
    f = lda.transform(z)
    f = f - f.mean(axis=0)
    seli = np.linalg.svd(f, compute_uv=False).sum()
    p = lda.predict_proba(z)
    ncc = p[np.arange(n), y].mean()
    vc = np.log(sum(np.linalg.svd(p[y == c], compute_uv=False).sum() for c in np.unique(y)))
    return np.array([seli, ncc, vc]), tau


# ---------------------------------------------------------------- minmax_combine

def test_minmax_combine_known_answer():
    # parts = (seli, ncc, vc):
    #   a = (2.0, 0.30, 0.9), b = (6.0, 0.80, 0.4), c = (3.0, 0.55, 0.6)
    # seli: min 2, max 6  -> mm = a 0,  b 1, c (3-2)/4       = 0.25
    # ncc:  min .3, max .8 -> mm = a 0,  b 1, c (.55-.3)/.5  = 0.5
    # vc:   min .4, max .9 -> mm = a 1,  b 0, c (.6-.4)/.5   = 0.4
    # NCTI = mm(ncc) + mm(seli) - mm(vc):
    #   a = 0 + 0 - 1 = -1,  b = 1 + 1 - 0 = 2,  c = 0.5 + 0.25 - 0.4 = 0.35
    parts = {"a": (2.0, 0.30, 0.9), "b": (6.0, 0.80, 0.4), "c": (3.0, 0.55, 0.6)}
    got = minmax_combine(parts)
    assert list(got) == ["a", "b", "c"]
    assert got["a"] == pytest.approx(-1.0, abs=1e-12)
    assert got["b"] == pytest.approx(2.0, abs=1e-12)
    assert got["c"] == pytest.approx(0.35, abs=1e-12)


def test_minmax_combine_needs_two_models():
    with pytest.raises(ValueError, match="2"):
        minmax_combine({"only": (1.0, 0.5, 0.2)})
    with pytest.raises(ValueError):
        minmax_combine({})


@pytest.mark.parametrize("flat,index", [("seli", 0), ("ncc", 1), ("vc", 2)])
def test_minmax_combine_leaves_out_a_constant_component(flat, index):
    # te_gpu.combine: a part equal across the zoo carries no order; the others combine
    rng = np.random.default_rng(index)
    parts = {}
    for name in ("m1", "m2", "m3"):
        t = list(rng.uniform(0.1, 5.0, size=3))
        t[index] = 0.75 * (1 + 1e-13 * rng.normal())   # equal up to rounding
        parts[name] = tuple(t)
    with pytest.warns(UserWarning, match=flat):
        got = minmax_combine(parts)
    arr = np.array(list(parts.values()))
    mm = (arr - arr.min(0)) / (arr.max(0) - arr.min(0))
    want = sum(sign * mm[:, j] for j, sign in enumerate((1, 1, -1)) if j != index)
    np.testing.assert_allclose(list(got.values()), want, rtol=0, atol=1e-12)


def test_minmax_combine_with_every_component_constant_is_an_error():
    with pytest.raises(ValueError, match="undefined.*every part"):
        minmax_combine({"a": (1.0, 0.5, 0.2), "b": (1.0, 0.5, 0.2)})


def test_minmax_combine_never_returns_nan():
    parts = {"a": (2.0, 0.3, 0.9), "b": (6.0, float("nan"), 0.4), "c": (3.0, 0.55, 0.6)}
    with pytest.raises(ValueError):
        minmax_combine(parts)


# ------------------------------------------------- _LinearDiscriminant vs sklearn

# (seed, N, D, C, sizes): C = 2 (the logistic form), C = 6 imbalanced, D < 64.
LDA_CASES = [
    (0, 70, 6, 2, None),
    (1, 80, 9, 2, [60, 20]),
    (2, 90, 12, 6, [40, 20, 12, 8, 6, 4]),
    (3, 60, 40, 6, [25, 12, 9, 6, 5, 3]),
    (4, 45, 20, 4, None),
]


@pytest.mark.parametrize("tau", [1e-3, 0.2, 0.9])
@pytest.mark.parametrize("seed,n,d,c,sizes", LDA_CASES)
def test_eigen_lda_matches_sklearn(seed, n, d, c, sizes, tau):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, y = class_features(seed, n, d, c, sizes=sizes, spread=1.0 / np.sqrt(d))
    ours = _LinearDiscriminant(x, y, c, tau, "n_minus_c")
    ref = LinearDiscriminantAnalysis(solver="eigen", shrinkage=tau).fit(x, y)
    p, p_ref = ours.predict_proba(x), ref.predict_proba(x)
    assert np.all(np.isfinite(p))
    assert np.allclose(p.sum(axis=1), 1.0, atol=1e-12)
    assert np.abs(p - p_ref).max() <= 1e-8
    # not a degenerate case where every posterior is saturated at 0 or 1
    assert np.mean(p_ref.max(axis=1) < 0.99) >= 0.05
    t, t_ref = ours.transform(x), ref.transform(x)
    assert t.shape == (n, min(c - 1, d))
    assert rel_err(align_columns(t, t_ref), t_ref) <= 1e-8


@pytest.mark.parametrize("seed,n,d,c,sizes", LDA_CASES)
def test_svd_lda_with_1_over_n_matches_current_sklearn(seed, n, d, c, sizes):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, y = class_features(seed + 50, n, d, c, sizes=sizes, spread=1.0 / np.sqrt(d))
    ours = _LinearDiscriminant(x, y, c, None, "n")
    ref = LinearDiscriminantAnalysis(solver="svd").fit(x, y)
    p, p_ref = ours.predict_proba(x), ref.predict_proba(x)
    assert np.all(np.isfinite(p))
    assert np.abs(p - p_ref).max() <= 1e-8
    # not a degenerate case where every posterior is saturated at 0 or 1
    assert np.mean(p_ref.max(axis=1) < 0.99) >= 0.05
    t, t_ref = ours.transform(x), ref.transform(x)
    assert t.shape == t_ref.shape == (n, min(c - 1, d))
    assert rel_err(align_columns(t, t_ref), t_ref) <= 1e-8


def test_svd_lda_with_a_zero_within_class_std_column_matches_sklearn():
    # One column is constant inside every class (2 * class id): its within-class
    # std is exactly 0, reset to 1, and the SVD rank cut drops it.
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, y = class_features(5, 70, 6, 3, spread=0.4)
    x = np.column_stack([x, 2.0 * y])
    ours = _LinearDiscriminant(x, y, 3, None, "n")
    ref = LinearDiscriminantAnalysis(solver="svd").fit(x, y)
    p, p_ref = ours.predict_proba(x), ref.predict_proba(x)
    assert np.all(np.isfinite(p)) and np.abs(p - p_ref).max() <= 1e-8
    t, t_ref = ours.transform(x), ref.transform(x)
    assert rel_err(align_columns(t, t_ref), t_ref) <= 1e-8


@pytest.mark.parametrize("seed,n,d,c,sizes", LDA_CASES)
def test_svd_lda_scalings_scale_with_inverse_sqrt_fac(seed, n, d, c, sizes):
    # The first SVD's singular values scale with sqrt(fac), so the scalings
    # (and the transform) scale with 1/sqrt(fac): T(N-C) = T(N) sqrt((N-C)/N).
    x, y = class_features(seed + 80, n, d, c, sizes=sizes, spread=1.0 / np.sqrt(d))
    t_n = _LinearDiscriminant(x, y, c, None, "n").transform(x)
    t_nc = _LinearDiscriminant(x, y, c, None, "n_minus_c").transform(x)
    want = t_n * np.sqrt((n - c) / n)
    assert rel_err(align_columns(t_nc, want), want) <= 1e-9


# ------------------------------------------------------------------- branches

def test_lda_scaling_relation_in_the_svd_branch(solver_log):
    # Large-scale features: the top-32 explained variances sum far above
    # -ln(1e-10) = 23.03, so tau == 1e-10 and the 'svd' solver is used.
    n, c = 90, 5
    x, y = class_features(7, n, 20, c, spread=0.6, scale=10.0)
    from sklearn.decomposition import PCA

    assert PCA(svd_solver="full").fit(x).explained_variance_[:32].sum() > 23.03
    seli_c, ncc_c, vc_c = ncti_parts(x, y, lda_scaling="n_minus_c")
    seli_n, ncc_n, vc_n = ncti_parts(x, y, lda_scaling="n")
    assert solver_log == [None, None]
    for v in (seli_c, ncc_c, vc_c, seli_n, ncc_n, vc_n):
        assert np.isfinite(v)
    assert seli_c == pytest.approx(seli_n * np.sqrt((n - c) / n), rel=1e-9)
    assert abs(ncc_c - ncc_n) > 1e-4
    assert 1.0 / c < ncc_n < 1.0 and 1.0 / c < ncc_c < 1.0


@pytest.mark.parametrize("seed,n,d,c", [(8, 120, 10, 4), (9, 150, 80, 5), (10, 90, 70, 3)])
def test_svd_branch_matches_sklearn_pipeline(seed, n, d, c, solver_log):
    x, y = class_features(seed, n, d, c, spread=0.5, scale=3.0)
    want, tau = sklearn_parts(x, y, "svd")
    assert tau == 1e-10
    got = ncti_parts(x, y, lda_scaling="n")
    assert solver_log == [None]
    assert_parts_close(got, want, 1e-8)


@pytest.mark.parametrize("seed,n,d,c,scale", [
    (11, 120, 10, 4, 1e-2),
    (12, 150, 80, 5, 0.12),   # D > 64: PCA to 64, tau from the top 32 of them
    (13, 100, 40, 3, 0.2),
])
def test_eigen_branch_for_small_features_matches_sklearn_pipeline(seed, n, d, c, scale,
                                                                  solver_log):
    x, y = class_features(seed, n, d, c, spread=1.5, scale=scale)
    want, tau = sklearn_parts(x, y, "tau")
    assert 1e-10 < tau < 1.0
    got = ncti_parts(x, y)
    assert len(solver_log) == 1 and solver_log[0] is not None
    assert solver_log[0] == pytest.approx(tau, rel=1e-10)
    assert_parts_close(got, want, 1e-8)
    # the eigen branch does not depend on lda_scaling
    assert_parts_close(ncti_parts(x, y, lda_scaling="n"), got, 1e-12)


def test_tau_uses_only_the_top_32_variances(solver_log):
    # D = 60: with all 60 variances tau would be smaller by exp(-rest).
    x, y = class_features(14, 200, 60, 4, spread=1.0, scale=0.1)
    from sklearn.decomposition import PCA

    ev = PCA(svd_solver="full").fit(x).explained_variance_
    ncti_parts(x, y)
    assert solver_log[0] == pytest.approx(np.exp(-ev[:32].sum()), rel=1e-10)
    assert np.exp(-ev.sum()) < 0.9 * solver_log[0]


# ----------------------------------------------------------------- invariances

@pytest.mark.parametrize("seed,n,d,c,scale", [
    (15, 100, 16, 4, 5.0),    # 'svd' branch
    (16, 100, 16, 4, 0.1),    # 'eigen' branch
    (17, 90, 70, 5, 2.0),     # D > 64
    (24, 40, 50, 3, 0.1),     # 'eigen' branch with N <= D (shrinkage absorbs the null direction)
])
def test_ncti_parts_invariant_under_rotation_and_translation(seed, n, d, c, scale):
    x, y = class_features(seed, n, d, c, spread=0.8, scale=scale)
    rng = np.random.default_rng(seed + 1000)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    b = rng.normal(scale=10.0 * scale, size=d)
    for lda_scaling in ("n_minus_c", "n"):
        base = ncti_parts(x, y, lda_scaling=lda_scaling)
        moved = ncti_parts(x @ q + b, y, lda_scaling=lda_scaling)
        assert_parts_close(moved, base, 1e-8)


@pytest.mark.parametrize("seed,n,d,c", [(10, 50, 70, 3), (25, 40, 40, 3), (26, 64, 100, 4)])
def test_svd_branch_with_n_le_d_ignores_the_null_pca_direction(seed, n, d, c):
    # Regression test for a reference bug found while writing these tests
    # (ncti_parts once took n = min(64, N, D) PCA components). With
    # N <= min(64, D), centred data has rank <= N - 1, so an N-th score column
    # is rounding noise (std ~1e-30). The 'svd' LDA standardises every column
    # (only an exact 0 std is reset to 1), which blew that noise up to unit
    # variance: seli/ncc/vc depended on rounding (a rotation of the features
    # changed seli by ~80 %). Fix: n = min(64, N - 1, D). Tested here:
    # rotation/translation invariance, and agreement with scikit-learn's LDA
    # on the N - 1 meaningful PCA scores.
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, y = class_features(seed, n, d, c, spread=0.5, scale=3.0)
    rng = np.random.default_rng(seed + 2000)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    got = ncti_parts(x, y, lda_scaling="n")
    moved = ncti_parts(x @ q + 1.0, y, lda_scaling="n")
    pca = PCA(n_components=min(64, n - 1, d), svd_solver="full")
    z = pca.fit_transform(x)
    assert pca.explained_variance_[:32].sum() > 23.03  # the 'svd' branch
    lda = LinearDiscriminantAnalysis(solver="svd").fit(z, y)
    f = lda.transform(z)
    f = f - f.mean(axis=0)
    p = lda.predict_proba(z)
    want = [np.linalg.svd(f, compute_uv=False).sum(), p[np.arange(n), y].mean(),
            np.log(sum(np.linalg.svd(p[y == k], compute_uv=False).sum() for k in range(c)))]
    assert np.allclose(moved, got, rtol=1e-8, atol=0), (
        f"ncti_parts not rotation invariant for N={n} <= D={d}: {got} vs {moved} "
        "(reference bug: null PCA component kept, see comment)")
    assert_parts_close(got, want, 1e-8)


def test_label_values_do_not_matter():
    x, y = class_features(18, 90, 12, 3, spread=0.8, scale=2.0)
    base = ncti_parts(x, y)
    for mapping in ([3, 7, 100], [-5, -1, 2], [100, 3, 7], [-1, -7, 0]):
        relabelled = np.asarray(mapping)[y]
        assert_parts_close(ncti_parts(x, relabelled), base, 1e-10)
    assert_parts_close(ncti_parts(x, y.astype(np.float64)), base, 1e-12)


def test_ncti_parts_rejects_bad_arguments():
    x, y = class_features(19, 40, 5, 3)
    with pytest.raises(ValueError):
        ncti_parts(x, y, lda_scaling="1/N")
    with pytest.raises(ValueError):
        ncti_parts(x[:3], np.array([0, 1, 2]))  # N <= C


def test_ncti_parts_does_not_modify_inputs():
    x, y = class_features(20, 60, 8, 3, scale=3.0)
    xk, yk = x.copy(), y.copy()
    x.setflags(write=False)
    y.setflags(write=False)
    ncti_parts(x, y)
    assert np.array_equal(x, xk) and np.array_equal(y, yk)


# ------------------------------------------------------------------------ zoo


@pytest.mark.parametrize("lda_scaling", ["n_minus_c", "n"])
def test_ncti_is_minmax_of_the_parts(lda_scaling):
    zoo, y = three_model_zoo(21)
    got = ncti(zoo, y, lda_scaling=lda_scaling)
    parts = {m: ncti_parts(f, y, lda_scaling=lda_scaling) for m, f in zoo.items()}
    want = minmax_combine(parts)
    assert set(got) == set(zoo)
    for m in zoo:
        assert np.isfinite(got[m])
        assert got[m] == pytest.approx(want[m], abs=1e-12)
    # min-max normalised: each component spans [0, 1], so scores lie in [-1, 2]
    assert all(-1.0 - 1e-12 <= v <= 2.0 + 1e-12 for v in got.values())


def test_ncti_zoo_size_errors():
    zoo, y = three_model_zoo(22)
    with pytest.raises(ValueError):
        ncti({"one": zoo["r18"]}, y)
    with pytest.raises(ValueError):
        ncti({}, y)


def test_ncti_with_released_sa_equals_parts_on_perturbed_features():
    zoo, y = three_model_zoo(23)
    got = ncti(zoo, y, sa="released")
    parts = {}
    for m, f in zoo.items():
        out, info = spread_attract(f, y, variant="released")
        assert info["applied"]  # features are large enough to open the gate
        parts[m] = ncti_parts(out, y)
    want = minmax_combine(parts)
    raw = ncti(zoo, y)
    for m in zoo:
        assert got[m] == pytest.approx(want[m], abs=1e-12)
    # SA did change something, so the equality above is not vacuous
    assert max(abs(got[m] - raw[m]) for m in zoo) > 1e-9


# ------------------------------------------------------------------ known answers
# prafful-kumar/enhancing_TE ``metrics.py`` (the SA paper's released code) ``NCTI_Score``
# (scikit-learn's default PCA solver, which is 'covariance_eigh' for digits, and current
# LinearDiscriminantAnalysis: te_gpu's ``lda_scaling="n"``), run locally (numpy 2.4.6,
# scipy 1.17.1, scikit-learn 1.9.1, torch 2.14.1; nothing of its code is in te_gpu) on
# digits = ``load_digits(return_X_y=True)`` as float64 raw pixels. Tolerance: NCTI parts
# 1e-9; "fast" 1e-3.

def test_ncti_parts_digits():
    # enhancing_TE NCTI_Score with scikit-learn 1.9.1's defaults: its PCA(64) takes the
    # covariance's eigendecomposition for digits and clips the 3 zero variances to 0;
    # with a full SVD the released value moves to (727.443, 0.961073, 5.106804), noise
    # of those 3 components that the LDA's standardisation scales up (README, guards)
    x, y = digits()
    want = (727.0984274451337, 0.9610330272530853, 5.106678375239401)
    assert ncti_parts(x, y, lda_scaling="n") == pytest.approx(want, rel=1e-9)
    assert te_gpu.ncti_parts(x, y, lda_scaling="n") == pytest.approx(want, rel=1e-9)
    assert te_gpu.ncti_parts(x, y, lda_scaling="n", precision="fast") == pytest.approx(want, rel=1e-3)


@pytest.mark.parametrize("name", ["digits", "duplicated", "n_below_d"])
def test_dead_units_do_not_change_ncti_parts(name):
    # NCTI's PCA does not see zero columns at all
    x, y = RANK_DEFICIENT[name]()
    padded = np.hstack([x, np.zeros((x.shape[0], 5))])
    assert rel(te_gpu.ncti_parts(padded, y), ncti_parts(x, y)) <= 1e-9
