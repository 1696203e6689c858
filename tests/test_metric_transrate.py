"""TransRate: invariance to zero columns, values public code gives on public data, bad input."""
import numpy as np
import pytest
import torch

from te_gpu.engine.transrate import transrate_batched
from te_gpu.reference.transrate import transrate

from helpers import class_features, digits, iris, labels_of, rel


def test_zero_columns_change_nothing():
    # zero columns add nothing to any Gram: TransRate is unchanged
    x, y = class_features(12, n=150, d=20, c=4, spread=0.5)
    zero_padded = np.concatenate([x, np.zeros((150, 7))], 1)
    assert rel(transrate(zero_padded, y), transrate(x, y)) <= 1e-12
    lab = labels_of(y)
    got = transrate_batched(torch.as_tensor(zero_padded)[None], lab).item()
    assert rel(got, transrate(x, y)) <= 1e-10


# ------------------------------------------------------------------ known answers
# The public code below, run locally on scikit-learn's data (numpy 2.4.6, scipy 1.17.1,
# scikit-learn 1.9.1, torch 2.14.1; none of their code is in te_gpu):
# * thuml/Transfer-Learning-Library (tllib) at commit c4aa59eb565650a552b809411601d0589efbbfe4:
#   ``tllib/ranking/hscore.py`` (``h_score``, ``regularized_h_score``),
#   ``tllib/ranking/transrate.py`` (``transrate``), ``tllib/ranking/leep.py``
#   (``log_expected_empirical_prediction``), ``tllib/ranking/nce.py``
#   (``negative_conditional_entropy`` of the argmax pseudo labels);

# (name, data, options, public value, tolerance)
KNOWN = [
    # tllib transrate
    ("transrate-digits", digits, {}, 50.279312261335235, 1e-10),
    ("transrate-digits-eps1e-2", digits, {"eps": 1e-2}, 32.835661932300695, 1e-10),
    ("transrate-iris", iris, {}, 0.5894054063746488, 1e-10),
    ("transrate-iris-eps1e-2", iris, {"eps": 1e-2}, 0.45753568183280713, 1e-10),
]


@pytest.mark.parametrize("name,data,opts,value,tol", KNOWN, ids=[k[0] for k in KNOWN])
def test_known_answer(name, data, opts, value, tol):
    x, y = data()
    assert rel(transrate(x, y, **opts), value) <= tol
    got = transrate_batched(torch.as_tensor(x, dtype=torch.float64)[None], labels_of(y), **opts).item()
    assert rel(got, value) <= tol


# --------------------------------------------------------------------- bad input


def test_bad_options():
    x, y = class_features(21, n=30, d=4, c=3)
    for eps in (0, -1e-4, float("nan"), "1e-4", True):
        with pytest.raises(ValueError, match="eps"):
            transrate(x, y, eps=eps)
    with pytest.raises(ValueError, match="class_weights"):
        transrate(x, y, class_weights="size")
    lab = labels_of(np.array([0, 1] * 3))
    with pytest.raises(ValueError, match="class_weights"):
        transrate_batched(torch.zeros((1, 6, 2), dtype=torch.float64), lab, class_weights="size")
