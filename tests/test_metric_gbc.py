"""GBC (SPEC 5): the reference's hand-derived answers and invariances; values public code
gives on public data."""
import numpy as np
import pytest

from te_gpu.reference import gbc
from te_gpu.reference.gbc import bhattacharyya, class_gaussians

from helpers import check_known_answer, class_features, digits, random_orthogonal


def two_cross_classes(shift):
    # Each class: the four points (+-1, 0), (0, +-1) around its mean, so the
    # unbiased per-dimension variance is (1 + 1 + 0 + 0) / 3 = 2/3.
    cross = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
    x = np.vstack([cross, cross + np.array([shift, 0.0])])
    return x, np.repeat([0, 1], 4)


@pytest.mark.parametrize("gaussian", ["spherical", "diagonal"])
def test_two_spherical_classes_known_answer(gaussian):
    # s_a = s_b = s = 2/3: BD = shift^2 / (8 s) + 0 = 9 / (16/3) = 27/16 for shift 3.
    x, y = two_cross_classes(3.0)
    assert gbc(x, y, gaussian=gaussian) == pytest.approx(-2 * np.exp(-27 / 16), rel=1e-12)


def test_unequal_spherical_variances_known_answer():
    # class 0: variance 2/3 per dim; class 1 scaled by 2 -> 8/3 per dim.
    cross = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
    x = np.vstack([cross, 2 * cross + np.array([4.0, 0])])
    y = np.repeat([0, 1], 4)
    sa, sb = 2 / 3, 8 / 3
    s = (sa + sb) / 2
    bd = 16 / (8 * s) + 0.5 * (np.log(s) - 0.5 * np.log(sa) - 0.5 * np.log(sb))
    assert gbc(x, y) == pytest.approx(-2 * np.exp(-bd), rel=1e-12)
    bd_diag = 16 / (8 * s) + 0.5 * 2 * (np.log(s) - 0.5 * np.log(sa) - 0.5 * np.log(sb))
    assert gbc(x, y, gaussian="diagonal") == pytest.approx(-2 * np.exp(-bd_diag), rel=1e-12)


def test_variance_floor():
    # Identical points have zero variance, floored to 1e-4.
    x = np.array([[0.0, 0.0]] * 3 + [[0.01, 0.0]] * 3)
    y = np.repeat([0, 1], 3)
    means, var = class_gaussians(x, y, 2)
    assert np.all(var == 1e-4)
    assert gbc(x, y) == pytest.approx(-2 * np.exp(-(1e-4) / (8e-4)), rel=1e-12)


def test_matrix_form_is_symmetric_and_zero_on_the_diagonal():
    x, y = class_features(1, n=90, d=6, c=5)
    means, var = class_gaussians(x, y, 5)
    for spherical in (True, False):
        bd = bhattacharyya(means, var, spherical)
        assert np.allclose(bd, bd.T, rtol=1e-12)
        assert np.allclose(np.diag(bd), 0.0, atol=1e-12)
        assert np.all(bd[~np.eye(5, dtype=bool)] > 0)


def test_spherical_gbc_invariant_under_rotation_and_translation():
    x, y = class_features(2, n=120, d=10, c=4, spread=1.0)
    q = random_orthogonal(3, 10)
    assert gbc(x @ q + 5.0, y) == pytest.approx(gbc(x, y), rel=1e-9)


def test_separation_orders_scores():
    x, y = class_features(4, n=120, d=10, c=4, spread=1.0)
    near, _ = class_features(4, n=120, d=10, c=4, spread=0.3)
    far, _ = class_features(4, n=120, d=10, c=4, spread=3.0)
    assert gbc(far, y) > gbc(near, y)
    assert gbc(far, y) <= 0.0


def test_needs_two_samples_per_class():
    x = np.arange(10.0).reshape(5, 2)
    with pytest.raises(ValueError, match="at least 2 samples per class"):
        gbc(x, [0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="spherical"):
        gbc(x, [0, 0, 1, 1, 1], gaussian="full")


# ------------------------------------------------------------------ known answers
# Values public implementations give on public data, checked against te_gpu's reference,
# engine and "fast" engine (1e-3). Sources, each run locally on the data below (numpy 2.4.6,
# scipy 1.17.1, scikit-learn 1.9.1, torch 2.14.1; nothing of their code is in te_gpu):
# * prafful-kumar/enhancing_TE ``metrics.py`` (the SA paper's released code):
#   ``SFDA_Score``, ``LDA_Score``, ``get_gbc_score``, ``SA(x, y, 0.005, type=...)``
#   and ``NCTI_Score`` (scikit-learn's default PCA solver, which is 'covariance_eigh'
#   for digits, and current LinearDiscriminantAnalysis: te_gpu's ``lda_scaling="n"``).
# digits = ``load_digits(return_X_y=True)`` as float64 raw pixels (N = 1797, D = 64,
# three all-zero columns: rank 61); iris = ``load_iris(return_X_y=True)``.
# Tolerance: GBC 1e-6 (the released code sums exp(-BD) into a float32 tensor).

METRIC = "gbc"
# (name, data, options, sa, released value, tolerance)
KNOWN = [
    # enhancing_TE metrics.py
    ("gbc-digits", digits, {}, None, -0.05520320311188698, 1e-6),
    ("gbc-diagonal-digits", digits, {"gaussian": "diagonal"}, None,
     -0.000122818149975501, 1e-6),
    ("sa-gbc-digits", digits, {}, "released", -0.058106765151023865, 1e-6),
]


@pytest.mark.parametrize("case", KNOWN, ids=[k[0] for k in KNOWN])
def test_released_value(case):
    _, data, opts, sa, want, tol = case
    x, y = data()
    check_known_answer(METRIC, x, y, want, tol, sa=sa, **opts)
