"""SFDA and LDA references (SPEC 2, 3) against the released formulations written out."""
import numpy as np
import pytest
import scipy.linalg

from te_gpu.reference import lda, sfda
from te_gpu.reference._common import power_iteration_top, shrink, softmax
from te_gpu.reference.sfda import fit_logits

from helpers import class_features


def _class_stats(x, y):
    c = y.max() + 1
    means = np.stack([x[y == k].mean(0) for k in range(c)])
    priors = np.bincount(y) / len(y)
    sw = sum(priors[k] * np.cov(x[y == k].T, bias=True) for k in range(c))
    return means, priors, np.atleast_2d(sw)


def released_fda_logits(x, y, lam=None):
    """The released route: generalised eigenproblem eigh(S_b, S_w'), all directions."""
    means, priors, sw = _class_stats(x, y)
    if lam is None:
        lam = max(np.exp(-5 * power_iteration_top(sw)), 1e-10)
    st = shrink(np.cov(x.T, bias=True), lam)
    sw_s = shrink(sw, lam)
    evals, evecs = scipy.linalg.eigh(st - sw_s, sw_s)
    evecs = evecs[:, np.argsort(evals)[::-1]]
    coef = means @ evecs @ evecs.T
    intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
    return x @ coef.T + intercept, lam


def released_sfda(x, y):
    n, c = len(y), y.max() + 1
    logits, lam = released_fda_logits(x, y)
    p = softmax(softmax(logits))
    means = np.stack([x[y == k].mean(0) for k in range(c)])
    outer = np.stack([(means.sum(0) - means[k]) / (c - 1) for k in range(c)])
    mixed = x.copy()
    for k in range(c):
        idx = np.flatnonzero(y == k)
        pk = p[idx, k][:, None]
        mixed[idx] = pk * x[idx] + (1 - pk) * outer[k]
    logits2, _ = released_fda_logits(mixed, y, lam)
    return softmax(logits2)[np.arange(n), y].mean()


def released_lda(x, y):
    """The SA repo's LDA_Score route: eigh on the non-symmetric inv(S_w') S_b."""
    n = len(y)
    means, priors, sw = _class_stats(x, y)
    lam = max(np.exp(-5 * power_iteration_top(sw)), 1e-10)
    st = shrink(np.cov(x.T, bias=True), lam)
    sw_s = shrink(sw, lam)
    _, evecs = np.linalg.eigh(np.linalg.inv(sw_s) @ (st - sw_s))
    coef = means @ evecs @ evecs.T
    intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
    return softmax(x @ coef.T + intercept)[np.arange(n), y].mean()


CASES = [
    dict(seed=0, n=150, d=12, c=3, spread=1.0),          # N > D
    dict(seed=1, n=40, d=60, c=4, spread=0.5),           # N < D
    dict(seed=2, n=0, d=8, sizes=[60, 9, 3], spread=0.7),  # imbalanced
    dict(seed=3, n=80, d=10, c=2, spread=0.4),           # binary
]


@pytest.mark.parametrize("case", CASES)
def test_fda_cholesky_equals_released_eigh_route(case):
    x, y = class_features(**case)
    got, lam = fit_logits(x, y, y.max() + 1, None)[:2]
    want, lam_want = released_fda_logits(x, y)
    assert lam == pytest.approx(lam_want, rel=1e-12)
    # two backward-stable routes through S_w' agree to about eps * cond(S_w'): 1e-7 for
    # N < D, where lambda = 1e-10 leaves cond ~ 1e10 (the bound, not rounding luck: an
    # Intel CPU gave 2e-7 where an AMD one gave < 1e-7)
    xc = x - np.stack([x[y == k].mean(0) for k in range(y.max() + 1)])[y]
    cond = np.linalg.cond(shrink(xc.T @ xc / len(y), lam))
    tol = max(1e-7, 10 * np.finfo(float).eps * cond)
    assert np.allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("case", CASES)
def test_sfda_equals_released_route(case):
    x, y = class_features(**case)
    assert sfda(x, y) == pytest.approx(released_sfda(x, y), rel=1e-8)


@pytest.mark.parametrize("case", CASES)
def test_lda_equals_released_route(case):
    x, y = class_features(**case)
    assert lda(x, y) == pytest.approx(released_lda(x, y), rel=1e-8)


def test_power_iteration_known_answer_and_underestimate():
    # Diagonal S: the row-sum start is (4, 1); the iteration is done by hand here.
    s = np.diag([4.0, 1.0])
    x = np.array([4.0, 1.0])
    for _ in range(3):
        yv = s @ x / np.linalg.norm(s @ x)
        x = s @ yv / np.linalg.norm(s @ yv)
    assert power_iteration_top(s) == pytest.approx(x @ s @ yv, rel=1e-15)
    rng = np.random.default_rng(5)
    a = rng.normal(size=(30, 30))
    sym = a @ a.T
    assert power_iteration_top(sym) <= np.linalg.eigvalsh(sym)[-1] * (1 + 1e-12)


def test_scores_are_probabilities_and_inputs_untouched():
    x, y = class_features(6, n=100, d=20, c=5)
    x0 = x.copy()
    for fn in (sfda, lda):
        v = fn(x, y)
        assert 0.0 < v <= 1.0
    assert np.array_equal(x, x0)


def test_label_remap():
    x, y = class_features(7, n=90, d=10, c=3, spread=0.5)
    for fn in (sfda, lda):
        assert fn(x, np.array([3, 7, 100])[y]) == pytest.approx(fn(x, y), rel=1e-14)


def test_lda_is_the_nearest_mean_softmax_by_hand():
    # Two classes at +-1 on a line, priors 1/2: logit_k = x mu_k - mu_k^2/2 + log 1/2.
    x = np.array([[-1.0], [-1.0], [1.0], [1.0]])
    y = np.array([0, 0, 1, 1])
    p_true = 1 / (1 + np.exp(-2.0))  # softmax of (1 - 1/2, -1 - 1/2)
    assert lda(x, y) == pytest.approx(p_true, rel=1e-14)
