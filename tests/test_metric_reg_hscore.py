"""Shrinkage (regularised) H-score: the Ledoit-Wolf weight against scikit-learn, values
public code gives on public data, bad input."""
import pytest
import torch

from te_gpu.engine.hscore import regularized_hscore_batched
from te_gpu.reference.hscore import regularized_h_score

from helpers import class_features, digits, iris, labels_of, rel


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


# ------------------------------------------------------------------ known answers
# The public code below, run locally on scikit-learn's data (numpy 2.4.6, scipy 1.17.1,
# scikit-learn 1.9.1, torch 2.14.1; none of their code is in te_gpu):
# * thuml/Transfer-Learning-Library (tllib) at commit c4aa59eb565650a552b809411601d0589efbbfe4:
#   ``tllib/ranking/hscore.py`` (``h_score``, ``regularized_h_score``),
#   ``tllib/ranking/transrate.py`` (``transrate``), ``tllib/ranking/leep.py``
#   (``log_expected_empirical_prediction``), ``tllib/ranking/nce.py``
#   (``negative_conditional_entropy`` of the argmax pseudo labels);
# * flairNLP/transformer-ranker at commit 43b42c1ba6927f3ae559e379c5a2084cc4d1415f:
#   ``transformer_ranker/estimators/hscore.py`` (``HScore().fit`` on float64 tensors)

# (name, data, options, public value, tolerance)
KNOWN = [
    # tllib regularized_h_score
    ("reg-hscore-digits", digits, {}, 5.851432997953625, 1e-10),
    ("reg-hscore-iris", iris, {}, 1.177842499331281, 1e-10),
    # transformer-ranker HScore: tllib's formula with two float32 roundings (torch.sqrt
    # of the integer class counts, the float32 identity of the shrinkage target):
    # 6e-9 from tllib on digits, 1.3e-9 on iris
    ("reg-hscore-digits-transformer-ranker", digits, {},
     5.8514329618882295, 1e-8),
    ("reg-hscore-iris-transformer-ranker", iris, {}, 1.1778424981805544, 1e-8),
]


@pytest.mark.parametrize("name,data,opts,value,tol", KNOWN, ids=[k[0] for k in KNOWN])
def test_known_answer(name, data, opts, value, tol):
    x, y = data()
    assert rel(regularized_h_score(x, y, **opts), value) <= tol
    got = regularized_hscore_batched(torch.as_tensor(x, dtype=torch.float64)[None], labels_of(y), **opts).item()
    assert rel(got, value) <= tol


# --------------------------------------------------------------------- bad input


def test_bad_rcond():
    x, y = class_features(21, n=30, d=4, c=3)
    with pytest.raises(ValueError, match="rcond"):
        regularized_h_score(x, y, rcond=-1.0)
