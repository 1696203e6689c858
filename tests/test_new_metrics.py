"""H-score, shrinkage H-score, TransRate, kNN, LEEP and NCE: engine = reference, known
answers from public implementations on public data, and bad input.

Parity (float64): every engine head against the float64 reference, model by model,
on several shapes (N > D, N < D, C = 2, imbalanced, many small classes), widths that
differ from call to call, and rank-deficient features (all-zero columns, duplicated
columns, digits' raw pixels). Tolerance 1e-8 relative (measured: 1e-12 or better;
kNN is a count and must match exactly).

Known answers: the public code below, run locally on scikit-learn's data (numpy 2.4.6,
scipy 1.17.1, scikit-learn 1.9.1, torch 2.14.1; none of their code is in te_gpu):
* thuml/Transfer-Learning-Library (tllib) at commit c4aa59eb565650a552b809411601d0589efbbfe4:
  ``tllib/ranking/hscore.py`` (``h_score``, ``regularized_h_score``),
  ``tllib/ranking/transrate.py`` (``transrate``), ``tllib/ranking/leep.py``
  (``log_expected_empirical_prediction``), ``tllib/ranking/nce.py``
  (``negative_conditional_entropy`` of the argmax pseudo labels);
* thuml/LogME at commit 56551ca94a3295bcc37e6a01b1291911af985f07: ``LEEP.py`` and
  ``NCE.py`` (the same values as tllib's to the last digit);
* flairNLP/transformer-ranker at commit 43b42c1ba6927f3ae559e379c5a2084cc4d1415f:
  ``transformer_ranker/estimators/hscore.py`` (``HScore().fit`` on float64 tensors) and
  ``transformer_ranker/estimators/nearestneighbors.py`` (``NearestNeighbors(k).fit(...,
  distance_metric=...)``, micro-F1 = accuracy for C > 2, returned as float32; the
  counts below are its values times N).
"""
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, load_iris
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

import te_gpu.engine.knn as engine_knn
from te_gpu.engine.hscore import hscore_batched, regularized_hscore_batched
from te_gpu.engine.knn import knn_batched
from te_gpu.engine.leep import leep_batched, nce_batched
from te_gpu.engine.stats import Labels, batch_stats
from te_gpu.engine.transrate import transrate_batched
from te_gpu.reference.hscore import h_score, regularized_h_score
from te_gpu.reference.knn import knn
from te_gpu.reference.leep import leep, nce
from te_gpu.reference.transrate import transrate

from helpers import class_features, stacked_copies

TOL = 1e-8


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The matrices here are small: a second thread only adds contention (on a busy
    2-core machine torch's kNN blocks ran ~80x slower with two). Restored after."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


def rel(a, b):
    assert np.isfinite(a) and np.isfinite(b)
    return abs(a - b) / max(abs(b), 1e-300)


def labels_of(y) -> Labels:
    codes = torch.as_tensor(np.unique(y, return_inverse=True)[1].reshape(-1))
    return Labels.from_codes(codes, int(codes.max()) + 1, torch.float64)


def digits():
    x, y = load_digits(return_X_y=True)
    return x.astype(np.float64), y


def iris():
    return load_iris(return_X_y=True)


def test_hscore_engine_shares_batch_stats_and_widths_vary_across_calls():
    for seed, d in enumerate([5, 19, 64]):
        x, y = class_features(10 + seed, n=120, d=d, c=4, spread=0.5)
        xt, lab = torch.as_tensor(stacked_copies(x)), labels_of(y)
        st = batch_stats(xt, lab)
        for head in (hscore_batched, regularized_hscore_batched):
            assert torch.allclose(head(xt, lab, st=st), head(xt, lab), rtol=1e-12, atol=0)
        assert torch.allclose(transrate_batched(xt, lab, gram_c=st.gram_c),
                              transrate_batched(xt, lab), rtol=1e-12, atol=0)


def test_invariances_that_hold_in_exact_arithmetic():
    x, y = class_features(12, n=150, d=20, c=4, spread=0.5)
    wider = np.concatenate([x, np.zeros((150, 5)), x[:, :6], -3 * x[:, 2:4]], 1)
    # H-score is invariant under any injective linear map of the features
    assert rel(h_score(wider, y), h_score(x, y)) <= 1e-9
    mixed = x @ np.random.default_rng(0).normal(size=(20, 20))
    assert rel(h_score(mixed, y), h_score(x, y)) <= 1e-8
    # zero columns add nothing to any Gram: TransRate is unchanged
    zero_padded = np.concatenate([x, np.zeros((150, 7))], 1)
    assert rel(transrate(zero_padded, y), transrate(x, y)) <= 1e-12
    lab = labels_of(y)
    got = transrate_batched(torch.as_tensor(zero_padded)[None], lab).item()
    assert rel(got, transrate(x, y)) <= 1e-10
    # N <= D with centred rank N-1: every model scores C - 1
    xs, ys = class_features(13, n=30, d=60, c=4, spread=0.5)
    assert rel(h_score(xs, ys), 3.0) <= 1e-9
    assert rel(hscore_batched(torch.as_tensor(xs)[None], labels_of(ys)).item(), 3.0) <= 1e-9


# ---------------------------------------------------------------- kNN conventions

def test_knn_tie_rules():
    """Points -1, 0, 1 on a line (indices 2, 0, 1): exact distance ties."""
    x = np.array([[0.0], [1.0], [-1.0]])
    y = np.array([0, 0, 1])
    lab = labels_of(y)
    # k = 1: sample 0 is equally far from 1 (class 0) and 2 (class 1): the lower index
    # wins, so samples 0 and 1 are right, sample 2 wrong
    # k = 2: samples 0 and 1 see one vote per class: the smaller class 0 wins
    for k in (1, 2):
        assert knn(x, y, k=k) == pytest.approx(2 / 3, abs=0)
        assert knn_batched(torch.as_tensor(x)[None], lab, k=k).item() == pytest.approx(2 / 3, abs=0)


def test_knn_engine_never_builds_an_n_by_n_block(monkeypatch):
    x, y = class_features(15, n=300, d=8, c=3, spread=0.5)
    shapes = []
    original = engine_knn._keys

    def spy(q, xx, sq):
        out = original(q, xx, sq)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(engine_knn, "_keys", spy)
    got = knn_batched(torch.as_tensor(x)[None], labels_of(y), k=5, chunk=32)
    assert max(s[1] for s in shapes) == 32 and len(shapes) == 10
    assert got.item() == knn(x, y, k=5, chunk=1000)


def test_knn_cosine_zero_rows():
    x, y = class_features(16, n=60, d=6, c=2, spread=1.0)
    x[:5] = 0.0
    for k in (1, 3):
        want = knn(x, y, k=k, distance="cosine")
        got = knn_batched(torch.as_tensor(x)[None], labels_of(y), k=k, distance="cosine")
        assert got.item() == want


# ------------------------------------------------------------------ LEEP and NCE

def test_leep_nce_bounds():
    """A source model that predicts the target label exactly: NCE = 0 and LEEP = 0."""
    y = np.repeat(np.arange(4), 5)
    p = np.eye(4)[y]
    assert nce(p, y) == 0.0 and leep(p, y) == 0.0
    assert nce_batched(torch.as_tensor(p)[None], labels_of(y)).item() == 0.0


# ----------------------------------------------------------------- known answers

def lda_source(x, y_source, fit_rows=slice(None)):
    """A deterministic public "source model": scikit-learn's closed-form shrinkage LDA
    (lsqr solver, Ledoit-Wolf), trained on a different label set; its predict_proba.
    (LogisticRegression was tried: lbfgs's stopping point moved LEEP by 4e-8.)"""
    return LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(
        x[fit_rows], y_source[fit_rows]).predict_proba(x)


def digits_source_mod5():
    x, y = load_digits(return_X_y=True)
    return lda_source(x / 16.0, y % 5), y                       # K = 5 source, C = 10 target


def digits_source_half():
    x, y = load_digits(return_X_y=True)
    return lda_source(x / 16.0, y, slice(None, None, 2)), (y >= 5).astype(int)  # K = 10, C = 2


def iris_source_setosa():
    x, y = load_iris(return_X_y=True)
    return lda_source(x, (y == 0).astype(int)), y              # K = 2, C = 3


# (name, data, te_gpu reference function, options, public value, tolerance)
KNOWN = [
    # tllib h_score
    ("hscore-digits", digits, h_score, {}, 5.917909336695526, 1e-10),
    ("hscore-iris", iris, h_score, {}, 1.1918988250416636, 1e-10),
    # tllib regularized_h_score
    ("reg-hscore-digits", digits, regularized_h_score, {}, 5.851432997953625, 1e-10),
    ("reg-hscore-iris", iris, regularized_h_score, {}, 1.177842499331281, 1e-10),
    # transformer-ranker HScore: tllib's formula with two float32 roundings (torch.sqrt
    # of the integer class counts, the float32 identity of the shrinkage target):
    # 6e-9 from tllib on digits, 1.3e-9 on iris
    ("reg-hscore-digits-transformer-ranker", digits, regularized_h_score, {},
     5.8514329618882295, 1e-8),
    ("reg-hscore-iris-transformer-ranker", iris, regularized_h_score, {}, 1.1778424981805544, 1e-8),
    # tllib transrate
    ("transrate-digits", digits, transrate, {}, 50.279312261335235, 1e-10),
    ("transrate-digits-eps1e-2", digits, transrate, {"eps": 1e-2}, 32.835661932300695, 1e-10),
    ("transrate-iris", iris, transrate, {}, 0.5894054063746488, 1e-10),
    ("transrate-iris-eps1e-2", iris, transrate, {"eps": 1e-2}, 0.45753568183280713, 1e-10),
    # tllib log_expected_empirical_prediction = thuml/LogME LEEP
    ("leep-digits-mod5", digits_source_mod5, leep, {}, -0.9531827074971546, 1e-10),
    ("leep-digits-half", digits_source_half, leep, {}, -0.08409251269375051, 1e-10),
    ("leep-iris", iris_source_setosa, leep, {}, -0.4621094904896794, 1e-10),
    # tllib negative_conditional_entropy = thuml/LogME NCE, on the argmax pseudo labels
    ("nce-digits-mod5", digits_source_mod5, nce, {}, -0.9960245554231326, 1e-10),
    ("nce-digits-half", digits_source_half, nce, {}, -0.10083763778244054, 1e-10),
    ("nce-iris", iris_source_setosa, nce, {}, -0.4620981203732964, 1e-10),
]

ENGINE = {h_score: hscore_batched, regularized_h_score: regularized_hscore_batched,
          transrate: transrate_batched, leep: leep_batched, nce: nce_batched}


@pytest.mark.parametrize("name,data,fn,opts,value,tol", KNOWN, ids=[k[0] for k in KNOWN])
def test_known_answer(name, data, fn, opts, value, tol):
    x, y = data()
    assert rel(fn(x, y, **opts), value) <= tol
    got = ENGINE[fn](torch.as_tensor(x, dtype=torch.float64)[None], labels_of(y), **opts).item()
    assert rel(got, value) <= tol


# transformer-ranker NearestNeighbors: correct leave-one-out votes out of N
KNN_KNOWN = [
    ("digits", "euclidean", {1: 1776, 3: 1777, 5: 1775, 13: 1769}),
    ("digits", "cosine", {1: 1777, 3: 1773, 5: 1775, 13: 1764}),
    ("iris", "euclidean", {1: 144, 3: 144, 5: 145, 13: 145}),
    ("iris", "cosine", {1: 144, 3: 147, 5: 145, 13: 145}),
]


@pytest.mark.parametrize("data,distance,counts", KNN_KNOWN, ids=[f"{d}-{m}" for d, m, _ in KNN_KNOWN])
def test_knn_known_answer(data, distance, counts):
    x, y = {"digits": digits, "iris": iris}[data]()
    xt, lab = torch.as_tensor(x, dtype=torch.float64)[None], labels_of(y)
    for k, count in counts.items():
        want = count / y.size
        # transformer-ranker returns float32
        assert np.float32(want) == np.float32(count / y.size)
        assert knn(x, y, k=k, distance=distance) == want
        assert knn_batched(xt, lab, k=k, distance=distance, chunk=512).item() == want


# --------------------------------------------------------------------- bad input

@pytest.mark.parametrize("fn", [h_score, regularized_h_score, transrate, knn, leep, nce])
def test_regression_is_refused(fn):
    x, y = class_features(20, n=30, d=4, c=3)
    p = np.full((30, 3), 1 / 3)
    with pytest.raises(ValueError, match="class labels only"):
        fn(p if fn in (leep, nce) else x, y.astype(float) + 0.5, regression=True)
    with pytest.raises(ValueError, match="integer class ids"):
        fn(p if fn in (leep, nce) else x, y + 0.5)


def test_bad_options_and_inputs():
    x, y = class_features(21, n=30, d=4, c=3)
    for eps in (0, -1e-4, float("nan"), "1e-4", True):
        with pytest.raises(ValueError, match="eps"):
            transrate(x, y, eps=eps)
    with pytest.raises(ValueError, match="class_weights"):
        transrate(x, y, class_weights="size")
    with pytest.raises(ValueError, match="distance"):
        knn(x, y, distance="manhattan")
    for k in (0, 2.5, True):
        with pytest.raises(ValueError, match="k must"):
            knn(x, y, k=k)
    with pytest.raises(ValueError, match="at least 31 samples"):
        knn(x, y, k=30)
    with pytest.raises(ValueError, match="chunk"):
        knn(x, y, chunk=0)
    for fn in (h_score, regularized_h_score):
        with pytest.raises(ValueError, match="rcond"):
            fn(x, y, rcond=-1.0)
    bad = x.copy()
    bad[3, 1] = np.nan
    for fn in (h_score, regularized_h_score, transrate, knn):
        with pytest.raises(ValueError, match="non-finite"):
            fn(bad, y)
    with pytest.raises(ValueError, match="rows"):
        h_score(x, y[:-1])


@pytest.mark.parametrize("fn", [leep, nce])
def test_bad_predictions(fn):
    y = np.array([0, 1, 2, 0, 1, 2])
    good = np.full((6, 4), 0.25)
    assert np.isfinite(fn(good, y))
    with pytest.raises(ValueError, match="logits"):
        fn(good - 0.5, y)
    with pytest.raises(ValueError, match="sum to 1"):
        fn(2 * good, y)
    with pytest.raises(ValueError, match="rows but labels"):
        fn(good[:5], y)
    with pytest.raises(ValueError, match="2-D"):
        fn(good[:, 0], y)
    nan = good.copy()
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fn(nan, y)


def test_engine_refuses_unknown_options():
    x, lab = torch.zeros((1, 6, 2), dtype=torch.float64), labels_of(np.array([0, 1] * 3))
    with pytest.raises(ValueError, match="distance"):
        knn_batched(x, lab, distance="manhattan")
    with pytest.raises(ValueError, match="at least 7 samples"):
        knn_batched(x, lab, k=6)
    with pytest.raises(ValueError, match="class_weights"):
        transrate_batched(x, lab, class_weights="size")


@pytest.mark.parametrize("d", [1, 2, 7, 40])
def test_ledoit_wolf_shrinkage_equals_scikit_learn(d):
    """The shrinkage weight against scikit-learn's own ``ledoit_wolf_shrinkage`` (which
    tllib's ``regularized_h_score`` calls through ``LedoitWolf``), including D = 1."""
    from sklearn.covariance import ledoit_wolf_shrinkage

    from te_gpu.engine.hscore import ledoit_wolf_batched
    from te_gpu.reference.hscore import ledoit_wolf

    x, _ = class_features(30 + d, n=25, d=d, c=2, spread=0.5)
    xc = x - x.mean(0)
    want = ledoit_wolf_shrinkage(xc)
    _, alpha, _ = ledoit_wolf(xc)
    xt = torch.as_tensor(x)[None]
    xbar = xt.mean(1)
    got, _ = ledoit_wolf_batched(xt, xbar, (xt - xbar).mT @ (xt - xbar))
    assert abs(alpha - want) <= 1e-12 * max(want, 1e-3)
    assert abs(got.item() - want) <= 1e-12 * max(want, 1e-3)
