"""LogME (SPEC 1): the reference's known answers, invariances and the evidence it maximises;
values public code gives on public data; invariances on rank-deficient features."""
import numpy as np
import pytest
from scipy.optimize import minimize

import te_gpu
import te_gpu.reference as ref
from te_gpu.reference import logme
from te_gpu.reference.logme import evidence, spectrum

from helpers import (RANK_DEFICIENT, check_known_answer, class_features, digits, iris,
                     random_orthogonal, rel)


def dense_log_evidence(x, t, alpha, beta):
    """log N(t; 0, I/beta + X X^T/alpha) / N, the Bayesian-regression evidence, densely."""
    n = x.shape[0]
    cov = np.eye(n) / beta + x @ x.T / alpha
    sign, logdet = np.linalg.slogdet(cov)
    assert sign > 0
    return (-0.5 * (logdet + t @ np.linalg.solve(cov, t) + n * np.log(2 * np.pi))) / n


def max_dense_evidence(x, t):
    f = lambda p: -dense_log_evidence(x, t, np.exp(p[0]), np.exp(p[1]))
    best = min((minimize(f, p0, method="Nelder-Mead",
                         options=dict(xatol=1e-10, fatol=1e-13, maxiter=4000))
                for p0 in ([0.0, 0.0], [2.0, 2.0], [-2.0, 1.0])), key=lambda r: r.fun)
    return -best.fun


def per_class_logme(x, y, corrected=False):
    n, d = x.shape
    onehot = np.eye(y.max() + 1)[y]
    sigma, proj = spectrum(x, onehot)
    return [evidence(sigma, proj[:, j], onehot[:, j].sum(), n, d, corrected)[0]
            for j in range(onehot.shape[1])]


@pytest.mark.parametrize("seed,n,d,c", [(0, 60, 5, 3), (1, 40, 8, 2)])
def test_logme_maximises_the_bayesian_evidence_full_rank(seed, n, d, c):
    # N > D, full rank: LogME's fixed point reaches the maximum of the dense evidence.
    x, y = class_features(seed, n=n, d=d, c=c, spread=1.0)
    got = per_class_logme(x, y)
    for j, value in enumerate(got):
        t = (y == j).astype(float)
        assert value == pytest.approx(max_dense_evidence(x, t), rel=2e-4, abs=1e-5)


def test_scaled_one_hot_features_known_answer():
    # X = c * one-hot(y): the spectrum is c^2 n_k, class j lives on one direction with
    # x_j^2 = n_j and nothing outside the span (r0 = 0). The evidence is unbounded
    # there (zero residual); the 1e-5 guards of SPEC 1 keep it finite. Written out
    # as a scalar recursion by hand:
    c, sizes = 2.5, np.array([10, 20, 30])
    y = np.repeat([0, 1, 2], sizes)
    x = c * np.eye(3)[y]
    n, d = x.shape
    sig = c ** 2 * sizes
    sigma, proj = spectrum(x, np.eye(3)[y])
    assert np.allclose(np.sort(sigma), sig, rtol=1e-12)
    assert np.allclose(np.sort(np.abs(proj).max(axis=0)), np.sqrt(sizes), rtol=1e-12)
    expected = []
    for j in range(3):
        a = b = 1.0
        for _ in range(11):
            t = a / b
            gamma = sum(s_ / (s_ + t) for s_ in sig)
            m2 = sig[j] * sizes[j] / (t + sig[j]) ** 2
            res2 = sizes[j] * t ** 2 / (t + sig[j]) ** 2
            a, b = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
            if abs(a / b - t) / t <= 1e-3:
                break
        ev = (d / 2 * np.log(a) + n / 2 * np.log(b) - 0.5 * sum(np.log(a + b * s_) for s_ in sig)
              - b / 2 * res2 - a / 2 * m2 - n / 2 * np.log(2 * np.pi)) / n
        expected.append(ev)
    assert per_class_logme(x, y) == pytest.approx(expected, rel=1e-9)
    assert logme(x, y) == pytest.approx(np.mean(expected), rel=1e-9)


def test_corrected_evidence_is_the_true_evidence_when_n_below_d():
    # N <= D: the released sum omits (D - k) log(alpha); corrected=True restores it.
    x, y = class_features(3, n=12, d=30, c=2, spread=0.5)
    released = per_class_logme(x, y)
    corrected = per_class_logme(x, y, corrected=True)
    for j in range(2):
        t = (y == j).astype(float)
        best = max_dense_evidence(x, t)
        assert corrected[j] == pytest.approx(best, rel=2e-3, abs=2e-4)
        assert abs(released[j] - best) > 10 * abs(corrected[j] - best)
    assert logme(x, y, corrected=True) == pytest.approx(np.mean(corrected), rel=1e-14)


def test_corrected_equals_released_at_full_rank():
    x, y = class_features(4, n=100, d=10, c=3)
    assert logme(x, y, corrected=True) == pytest.approx(logme(x, y), rel=1e-14)


@pytest.mark.parametrize("seed,n,d", [(5, 150, 20), (6, 30, 50)])
def test_rotation_invariance(seed, n, d):
    x, y = class_features(seed, n=n, d=d, c=4)
    q = random_orthogonal(seed + 100, d)
    assert logme(x @ q, y) == pytest.approx(logme(x, y), rel=1e-9)


def test_label_remap_and_dtypes():
    x, y = class_features(7, n=120, d=16, c=3)
    base = logme(x, y)
    assert logme(x, np.array([3, 7, 100])[y]) == pytest.approx(base, rel=1e-14)
    assert logme(x, np.array([-5, 0, 2])[y]) == pytest.approx(base, rel=1e-14)
    assert logme(x.astype(np.float32), y) == pytest.approx(
        logme(x.astype(np.float32).astype(np.float64), y), rel=1e-14)


def test_regression_one_evidence_per_column():
    x, y = class_features(8, n=90, d=12, c=3)
    onehot = np.eye(3)[y]
    assert logme(x, onehot, regression=True) == pytest.approx(logme(x, y), rel=1e-12)
    col = logme(x, onehot[:, 1], regression=True)
    assert col == pytest.approx(per_class_logme(x, y)[1], rel=1e-12)


def test_better_features_score_higher():
    x_good, y = class_features(9, n=200, d=16, c=4, spread=4.0)
    rng = np.random.default_rng(9)
    x_bad = rng.normal(size=x_good.shape)
    assert logme(x_good, y) > logme(x_bad, y)


def test_inputs_not_modified_and_finite():
    x, y = class_features(10, n=50, d=80, c=5)
    x0, y0 = x.copy(), y.copy()
    value = logme(x, y)
    assert np.isfinite(value)
    assert np.array_equal(x, x0) and np.array_equal(y, y0)


def test_bad_input_errors():
    x, y = class_features(11, n=50, d=8, c=2)
    with pytest.raises(ValueError, match="non-finite"):
        logme(np.where(np.arange(8) == 3, np.nan, x), y)
    with pytest.raises(ValueError, match="entries"):
        logme(x, y[:-1])
    with pytest.raises(ValueError, match="at least 2"):
        logme(x, np.zeros(50, int))
    with pytest.raises(ValueError, match="all-zero"):
        logme(np.zeros_like(x), y)


# ------------------------------------------------------------------ known answers
# Values public implementations give on public data, checked against te_gpu's reference,
# engine and "fast" engine (1e-3). Sources, each run locally on the data below (numpy 2.4.6,
# scipy 1.17.1, scikit-learn 1.9.1, torch 2.14.1; nothing of their code is in te_gpu):
# * thuml/LogME ``LogME.py`` at commit 56551ca (``LogME().fit``, the fixed-point fit), and
#   at c15356c, the fix of pull request #24 that pads sigma to D when N < D.
# * prafful-kumar/enhancing_TE ``metrics.py`` (the SA paper's released code):
#   ``SFDA_Score``, ``LDA_Score``, ``get_gbc_score``, ``SA(x, y, 0.005, type=...)``
#   and ``NCTI_Score`` (scikit-learn's default PCA solver, which is 'covariance_eigh'
#   for digits, and current LinearDiscriminantAnalysis: te_gpu's ``lda_scaling="n"``).
# digits = ``load_digits(return_X_y=True)`` as float64 raw pixels (N = 1797, D = 64,
# three all-zero columns: rank 61); iris = ``load_iris(return_X_y=True)``.
# Tolerances: LogME 1e-10 (the released values are reproduced to ~1e-14), SA + metric 1e-9.

METRIC = "logme"
# (name, data, options, sa, released value, tolerance)
KNOWN = [
    # thuml/LogME 56551ca
    ("logme-digits", digits, {}, None, 0.270277455465355, 1e-10),
    ("logme-iris", iris, {}, None, -0.1600602436621256, 1e-10),
    # enhancing_TE metrics.py
    ("sa-logme-digits", digits, {}, "released", 0.1325239095784733, 1e-9),
]


@pytest.mark.parametrize("case", KNOWN, ids=[k[0] for k in KNOWN])
def test_released_value(case):
    _, data, opts, sa, want, tol = case
    x, y = data()
    check_known_answer(METRIC, x, y, want, tol, sa=sa, **opts)


def regression_targets(x, y):
    """Three real targets on digits: the label, sin(label), a mean of squared pixels."""
    return np.stack([y.astype(float), np.sin(y), (x[:, 20:30] ** 2).mean(1) / 16], 1)


def test_logme_regression_digits():
    # thuml/LogME 56551ca, LogME(regression=True).fit(x, targets)
    x, y = digits()
    t = regression_targets(x, y)
    want = -0.9587815344711794
    assert ref.logme(x, t, regression=True) == pytest.approx(want, rel=1e-10)
    for precision in ("exact", "fast"):
        assert te_gpu.logme(x, t, regression=True, precision=precision) == pytest.approx(want, rel=1e-10)


def test_logme_corrected_is_thuml_pull_request_24():
    # N = 50 < D = 64: thuml/LogME at 56551ca gives 1.4325751955183552 (D - N log(alpha)
    # terms missing); its fix c15356c pads sigma with zeros: 0.08193108088953605
    x, y = digits()
    x, y = x[:50], y[:50]
    for impl in (ref.logme, te_gpu.logme):
        assert impl(x, y) == pytest.approx(1.4325751955183552, rel=1e-10)
        assert impl(x, y, corrected=True) == pytest.approx(0.08193108088953605, rel=1e-10)
    # for N > D the released code already sums all D terms: corrected changes nothing
    x, y = digits()
    assert ref.logme(x, y, corrected=True) == pytest.approx(0.270277455465355, rel=1e-10)


# ------------------------------------------------------------------ rank-deficient features

@pytest.mark.parametrize("name", ["digits", "duplicated", "n_below_d"])
def test_dead_units_do_not_change_logme(name):
    # A zero column adds a zero eigenvalue, whose evidence term log(alpha) cancels
    # the column's share of D/2 log(alpha): the evidence of [X, 0] is that of X when
    # N > D. (Dropping the term instead made a model score higher for its dead units.)
    x, y = RANK_DEFICIENT[name]()
    padded = np.hstack([x, np.zeros((x.shape[0], 5))])
    if x.shape[0] > padded.shape[1]:
        assert rel(ref.logme(padded, y), ref.logme(x, y)) <= 1e-12
        assert rel(te_gpu.logme(padded, y), ref.logme(x, y)) <= 1e-10
    else:  # N <= D: the corrected evidence has the same invariance
        assert rel(ref.logme(padded, y, corrected=True), ref.logme(x, y, corrected=True)) <= 1e-12


def test_noise_eigenvalues_are_zero_terms_not_missing_terms():
    # digits: 3 all-zero pixel columns. Every one of the D = 64 eigenvalues is a
    # term of the evidence; the 3 noise ones are exact zeros with zero projections.
    from te_gpu.reference.logme import spectrum

    x, y = digits()
    sigma, proj = spectrum(x, np.eye(10)[y])
    assert sigma.size == 64
    assert np.count_nonzero(sigma == 0.0) == 3
    assert np.all(proj[sigma == 0.0] == 0.0)
    assert np.all(sigma[sigma > 0] > 0.5)   # the smallest real eigenvalue is 0.74

