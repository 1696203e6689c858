"""Real and rank-deficient features: every metric and SA variant, reference = engine.

Real CNN features are rank-deficient: dead ReLU units (all-zero columns), pixels
that are zero in every image, duplicated or collinear channels. Gaussian blobs
hid a LogME defect there (noise eigenvalues dropped instead of zeroed). Each
input below is generated here, never stored; each metric is checked

* engine (``precision="exact"``) against the float64 reference: LogME 1e-8
  relative, every other score and NCTI part 1e-6;
* ``precision="fast"`` against "exact": 1e-3 relative (measured: 2e-5 at most);
* for invariances that hold in exact arithmetic (zero columns change nothing).

Known answers from public implementations on public data are in
test_known_answers.py.
"""
import numpy as np
import pytest
from sklearn.datasets import load_digits

import te_gpu
import te_gpu.reference as ref

TOL = {"logme": 1e-8, "sfda": 1e-6, "lda": 1e-6, "gbc": 1e-6, "nleep": 1e-6}
FAST_TOL = 1e-3
SA_SETTINGS = [None, "released", "described", "pca-only"]


def relu_features(seed, n, d, c=6, dead=0, dup=0, collinear=0, tiny=0, scale=3.0):
    """Class-structured ReLU features of rank < D: ``dead`` all-zero columns, ``dup``
    duplicated columns, ``collinear`` columns that are combinations of two others,
    ``tiny`` columns scaled by 1e-6 (a real direction far below the others)."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    z = 1.5 * rng.normal(size=(c, 24))[y] + rng.normal(size=(n, 24))
    x = scale * np.maximum(z @ rng.normal(size=(24, d)) / 5 + 0.3 * rng.normal(size=d), 0.0)
    cols = rng.permutation(d)
    x[:, cols[:dead]] = 0.0
    for j in cols[dead:dead + dup]:
        x[:, j] = x[:, rng.integers(d)]
    for j in cols[dead + dup:dead + dup + collinear]:
        a, b = rng.choice(d, 2, replace=False)
        x[:, j] = 0.7 * x[:, a] - 1.3 * x[:, b]
    x[:, cols[dead + dup + collinear:dead + dup + collinear + tiny]] *= 1e-6
    return x, y


def digits_pixels():
    """scikit-learn's digits as raw pixels: N = 1797, D = 64, three all-zero columns, rank 61."""
    x, y = load_digits(return_X_y=True)
    return x.astype(np.float64), y


INPUTS = {
    "digits": digits_pixels,
    "dead_units": lambda: relu_features(0, 500, 96, dead=12),
    "duplicated": lambda: relu_features(1, 500, 96, dup=16),
    "collinear": lambda: relu_features(2, 500, 96, collinear=8),
    "tiny_direction": lambda: relu_features(3, 500, 96, dead=4, tiny=1),
    "n_below_d": lambda: relu_features(4, 90, 140, dead=14, dup=6),
    "odd_d": lambda: relu_features(5, 400, 37, c=2, dead=3, dup=4),
}
_CACHE = {}


def features(name):
    if name not in _CACHE:
        _CACHE[name] = INPUTS[name]()
    x, y = _CACHE[name]
    return x.copy(), y


def rel(a, b):
    a, b = np.atleast_1d(np.asarray(a, float)), np.atleast_1d(np.asarray(b, float))
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b)), (a, b)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def test_inputs_are_rank_deficient_and_open_the_sa_gate():
    for name in INPUTS:
        x, y = features(name)
        n, d = x.shape
        assert np.linalg.matrix_rank(x) < d, name
        assert ref.spread_attract(x, y)[1]["applied"], name


@pytest.mark.parametrize("name", list(INPUTS))
@pytest.mark.parametrize("metric", ["logme", "sfda", "lda", "gbc"])
@pytest.mark.parametrize("sa", SA_SETTINGS)
def test_engine_equals_reference(name, metric, sa):
    x, y = features(name)
    want = ref.score(x, y, metric=metric, sa=sa)
    assert rel(te_gpu.score(x, y, metric=metric, sa=sa), want) <= TOL[metric]
    fast = te_gpu.score(x, y, metric=metric, sa=sa, precision="fast")
    assert rel(fast, want) <= FAST_TOL


@pytest.mark.parametrize("name", list(INPUTS))
@pytest.mark.parametrize("sa", SA_SETTINGS)
@pytest.mark.parametrize("lda_scaling", ["n_minus_c", "n"])
def test_ncti_parts_equal_reference(name, sa, lda_scaling):
    x, y = features(name)
    if sa is not None:
        x = ref.spread_attract(x, y, variant=sa)[0]
    want = ref.ncti_parts(x, y, lda_scaling=lda_scaling)
    assert rel(te_gpu.ncti_parts(x, y, lda_scaling=lda_scaling), want) <= 1e-6
    assert rel(te_gpu.ncti_parts(x, y, lda_scaling=lda_scaling, precision="fast"), want) <= FAST_TOL


@pytest.mark.parametrize("name", ["dead_units", "n_below_d", "odd_d"])
@pytest.mark.parametrize("sa", [None, "released"])
def test_nleep_equals_reference(name, sa):
    # the engine replays the reference's seeded mixture, so values agree
    x, y = features(name)
    want = ref.score(x, y, metric="nleep", sa=sa, components_per_class=1)
    got = te_gpu.score(x, y, metric="nleep", sa=sa, components_per_class=1)
    assert rel(got, want) <= TOL["nleep"]


@pytest.mark.parametrize("name", ["digits", "dead_units", "n_below_d"])
def test_zoo_engine_equals_reference_and_fast_ranks_identically(name):
    # a zoo of one input under several column scalings: same ranking in both precisions
    # (NCTI's parts are checked above: on these separable inputs its ncc is 1 for every
    # model, and its min-max over the zoo is refused as undefined)
    x, y = features(name)
    rng = np.random.default_rng(7)
    zoo = {f"m{i}": x * rng.uniform(0.2, 3.0, size=x.shape[1]) for i in range(4)}
    metrics = ("logme", "sfda", "lda", "gbc")
    exact = te_gpu.score_zoo(zoo, y, metrics=metrics, sa=[None, "released"], progress=False)
    fast = te_gpu.score_zoo(zoo, y, metrics=metrics, sa=[None, "released"], precision="fast",
                            progress=False)
    for label, scores in exact.scores.items():
        metric, _, variant = label.partition("+")
        for m, v in scores.items():
            want = ref.score(zoo[m], y, metric=metric, sa=variant or None)
            assert rel(v, want) <= TOL[metric], (label, m)
        assert rel(list(fast.scores[label].values()), list(scores.values())) <= FAST_TOL, label
        # same order for every pair of models whose scores differ beyond the tolerance
        # (SFDA saturates at 1.0 on separable features: its ties have no order)
        e, f = exact.scores[label], fast.scores[label]
        for a in e:
            for b in e:
                if e[a] - e[b] > FAST_TOL * max(abs(e[a]), abs(e[b])):
                    assert f[a] > f[b], (label, a, b)


# ------------------------------------------------------------------- invariances

@pytest.mark.parametrize("name", ["digits", "duplicated", "n_below_d"])
def test_dead_units_change_neither_logme_nor_lda_nor_ncti(name):
    # A zero column adds a zero eigenvalue, whose evidence term log(alpha) cancels
    # the column's share of D/2 log(alpha): the evidence of [X, 0] is that of X when
    # N > D. (Dropping the term instead made a model score higher for its dead units.)
    # LDA's dot products and NCTI's PCA do not see zero columns at all.
    x, y = features(name)
    padded = np.hstack([x, np.zeros((x.shape[0], 5))])
    if x.shape[0] > padded.shape[1]:
        assert rel(ref.logme(padded, y), ref.logme(x, y)) <= 1e-12
        assert rel(te_gpu.logme(padded, y), ref.logme(x, y)) <= 1e-10
    else:  # N <= D: the corrected evidence has the same invariance
        assert rel(ref.logme(padded, y, corrected=True), ref.logme(x, y, corrected=True)) <= 1e-12
    assert rel(ref.lda(padded, y), ref.lda(x, y)) <= 1e-12
    assert rel(te_gpu.ncti_parts(padded, y), ref.ncti_parts(x, y)) <= 1e-9


def test_noise_eigenvalues_are_zero_terms_not_missing_terms():
    # digits: 3 all-zero pixel columns. Every one of the D = 64 eigenvalues is a
    # term of the evidence; the 3 noise ones are exact zeros with zero projections.
    from te_gpu.reference.logme import spectrum

    x, y = digits_pixels()
    sigma, proj = spectrum(x, np.eye(10)[y])
    assert sigma.size == 64
    assert np.count_nonzero(sigma == 0.0) == 3
    assert np.all(proj[sigma == 0.0] == 0.0)
    assert np.all(sigma[sigma > 0] > 0.5)   # the smallest real eigenvalue is 0.74


def test_sa_pca_noise_components_are_zero():
    # digits has rank 61 < 64: SA's PCA returns 3 components at rounding level,
    # which SA replaces by exact zeros (reference and engine alike)
    x, y = digits_pixels()
    z_ref, info = ref.spread_attract(x, y, variant="pca-only")
    z_eng, _ = te_gpu.spread_attract(x, y, variant="pca-only")
    z_eng = z_eng.numpy()
    assert info["pca_dim"] == 64
    assert np.count_nonzero(np.abs(z_ref).max(0) == 0) == 3
    assert np.count_nonzero(np.abs(z_eng).max(0) == 0) == 3
    assert np.abs(z_ref - z_eng).max() <= 1e-9 * np.abs(z_ref).max()
