"""Known answers: values public implementations give on public data (scikit-learn's
digits and iris), checked against te_gpu's reference, engine and "fast" engine.

Sources, each run locally on the data below (numpy 2.4.6, scipy 1.17.1,
scikit-learn 1.9.1, torch 2.14.1; nothing of their code is in te_gpu):
* thuml/LogME ``LogME.py`` at commit 56551ca (``LogME().fit``, the fixed-point fit), and
  at c15356c, the fix of pull request #24 that pads sigma to D when N < D.
* prafful-kumar/enhancing_TE ``metrics.py`` (the SA paper's released code):
  ``SFDA_Score``, ``LDA_Score``, ``get_gbc_score``, ``SA(x, y, 0.005, type=...)``
  and ``NCTI_Score`` (scikit-learn's default PCA solver, which is 'covariance_eigh'
  for digits, and current LinearDiscriminantAnalysis: te_gpu's ``lda_scaling="n"``).

digits = ``load_digits(return_X_y=True)`` as float64 raw pixels (N = 1797, D = 64,
three all-zero columns: rank 61); iris = ``load_iris(return_X_y=True)``.
Tolerances: LogME 1e-10 (the released values are reproduced to ~1e-14), SFDA, LDA
1e-9, GBC 1e-6 (the released code sums exp(-BD) into a float32 tensor), SA + metric
1e-9, NCTI parts 1e-9; "fast" 1e-3.
"""
import numpy as np
import pytest
from sklearn.datasets import load_digits, load_iris

import te_gpu
import te_gpu.reference as ref


def digits():
    x, y = load_digits(return_X_y=True)
    return x.astype(np.float64), y


def iris():
    return load_iris(return_X_y=True)


def regression_targets(x, y):
    """Three real targets on digits: the label, sin(label), a mean of squared pixels."""
    return np.stack([y.astype(float), np.sin(y), (x[:, 20:30] ** 2).mean(1) / 16], 1)


# (name, data, metric, options, sa, released value, tolerance)
KNOWN = [
    # thuml/LogME 56551ca
    ("logme-digits", digits, "logme", {}, None, 0.270277455465355, 1e-10),
    ("logme-iris", iris, "logme", {}, None, -0.1600602436621256, 1e-10),
    # enhancing_TE metrics.py
    ("sfda-digits", digits, "sfda", {}, None, 0.815309459567138, 1e-9),
    ("sfda-iris", iris, "sfda", {}, None, 0.876493434126652, 1e-9),
    ("lda-digits", digits, "lda", {}, None, 0.9049307469633956, 1e-9),
    ("lda-iris", iris, "lda", {}, None, 0.8173113443785145, 1e-9),
    ("gbc-digits", digits, "gbc", {}, None, -0.05520320311188698, 1e-6),
    ("gbc-diagonal-digits", digits, "gbc", {"gaussian": "diagonal"}, None,
     -0.000122818149975501, 1e-6),
    ("sa-logme-digits", digits, "logme", {}, "released", 0.1325239095784733, 1e-9),
    ("sa-sfda-digits", digits, "sfda", {}, "released", 0.8153829259124985, 1e-9),
    ("sa-lda-digits", digits, "lda", {}, "released", 0.9050659660788541, 1e-9),
    ("sa-gbc-digits", digits, "gbc", {}, "released", -0.058106765151023865, 1e-6),
]


@pytest.mark.parametrize("case", KNOWN, ids=[k[0] for k in KNOWN])
def test_released_value(case):
    _, data, metric, opts, sa, want, tol = case
    x, y = data()
    assert ref.score(x, y, metric=metric, sa=sa, **opts) == pytest.approx(want, rel=tol)
    assert te_gpu.score(x, y, metric=metric, sa=sa, **opts) == pytest.approx(want, rel=tol)
    fast = te_gpu.score(x, y, metric=metric, sa=sa, precision="fast", **opts)
    assert fast == pytest.approx(want, rel=1e-3)


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


def test_ncti_parts_digits():
    # enhancing_TE NCTI_Score with scikit-learn 1.9.1's defaults: its PCA(64) takes the
    # covariance's eigendecomposition for digits and clips the 3 zero variances to 0;
    # with a full SVD the released value moves to (727.443, 0.961073, 5.106804), noise
    # of those 3 components that the LDA's standardisation scales up (README, guards)
    x, y = digits()
    want = (727.0984274451337, 0.9610330272530853, 5.106678375239401)
    assert ref.ncti_parts(x, y, lda_scaling="n") == pytest.approx(want, rel=1e-9)
    assert te_gpu.ncti_parts(x, y, lda_scaling="n") == pytest.approx(want, rel=1e-9)
    assert te_gpu.ncti_parts(x, y, lda_scaling="n", precision="fast") == pytest.approx(want, rel=1e-3)
