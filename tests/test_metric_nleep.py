"""NLEEP (SPEC 6): the reference score given posteriors by hand, the seeded mixture,
and a statistical comparison with scikit-learn's GaussianMixture."""
import numpy as np
import pytest

from te_gpu.reference import nleep
from te_gpu.reference.nleep import gmm_posteriors, nleep_from_posteriors
from te_gpu.reference.pca import pca_keep_variance

from helpers import class_features


def test_nleep_from_posteriors_by_hand():
    # Two samples per class, two components.
    q = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.5, 0.5]])
    y = np.array([0, 0, 1, 1])
    # p(y,z) = [[1.5, .5], [.5, 1.5]] / 4 -> p(y|z) = [[.75, .25], [.25, .75]]
    # per sample sum_z Q p(y_i|z): .75, .5, .75, .5 -> mean .625
    assert nleep_from_posteriors(q, y, 2) == pytest.approx(0.625, rel=1e-15)


def test_empty_component_does_not_make_nan():
    q = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert nleep_from_posteriors(q, np.array([0, 1]), 2) == pytest.approx(1.0)


def test_well_separated_classes_score_one():
    x, y = class_features(0, n=120, d=4, c=3, spread=50.0, noise=0.1)
    assert nleep(x, y, components_per_class=1, seed=0) == pytest.approx(1.0, abs=1e-6)


def test_seeded_and_deterministic():
    x, y = class_features(1, n=150, d=10, c=3, spread=1.0)
    a = nleep(x, y, seed=3)
    assert a == nleep(x, y, seed=3)
    assert 0.0 < a <= 1.0


def test_posteriors_are_distributions():
    x, _ = class_features(2, n=100, d=3, c=2)
    q = gmm_posteriors(x, 4, seed=0)
    assert q.shape == (100, 4)
    assert np.allclose(q.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(q >= 0)


def test_statistically_equal_to_sklearn_mixture():
    # The mixture is random: compare the spread of scores over seeds.
    from sklearn.mixture import GaussianMixture

    x, y = class_features(3, n=240, d=12, c=3, spread=1.2)
    ours = [nleep(x, y, components_per_class=2, seed=s) for s in range(6)]
    z = pca_keep_variance(x, 0.8)
    theirs = []
    for s in range(6):
        gm = GaussianMixture(n_components=6, reg_covar=1e-6, tol=1e-3, max_iter=100,
                             random_state=s).fit(z)
        theirs.append(nleep_from_posteriors(gm.predict_proba(z), y, 3))
    spread = max(np.std(ours), np.std(theirs), 0.01)
    assert abs(np.mean(ours) - np.mean(theirs)) < 4 * spread


def test_too_few_samples_for_components():
    x, y = class_features(4, n=19, d=5, c=4)
    with pytest.raises(ValueError, match="mixture components"):
        nleep(x, y, components_per_class=5)
    with pytest.raises(ValueError, match="positive integer"):
        nleep(x, y, components_per_class=0)
