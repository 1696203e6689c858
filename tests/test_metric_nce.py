"""NCE (reads the source model's predictions): bounds, values public code gives on
public data, bad predictions."""
import numpy as np
import pytest
import torch

from te_gpu.engine.leep import nce_batched
from te_gpu.reference.leep import nce

from helpers import digits_source_half, digits_source_mod5, iris_source_setosa, labels_of, rel


def test_bounds():
    """A source model that predicts the target label exactly: NCE = 0."""
    y = np.repeat(np.arange(4), 5)
    p = np.eye(4)[y]
    assert nce(p, y) == 0.0
    assert nce_batched(torch.as_tensor(p)[None], labels_of(y)).item() == 0.0


# ------------------------------------------------------------------ known answers
# The public code below, run locally on scikit-learn's data (numpy 2.4.6, scipy 1.17.1,
# scikit-learn 1.9.1, torch 2.14.1; none of their code is in te_gpu):
# * thuml/Transfer-Learning-Library (tllib) at commit c4aa59eb565650a552b809411601d0589efbbfe4:
#   ``tllib/ranking/hscore.py`` (``h_score``, ``regularized_h_score``),
#   ``tllib/ranking/transrate.py`` (``transrate``), ``tllib/ranking/leep.py``
#   (``log_expected_empirical_prediction``), ``tllib/ranking/nce.py``
#   (``negative_conditional_entropy`` of the argmax pseudo labels);
# * thuml/LogME at commit 56551ca94a3295bcc37e6a01b1291911af985f07: ``LEEP.py`` and
#   ``NCE.py`` (the same values as tllib's to the last digit);

# (name, data, options, public value, tolerance)
KNOWN = [
    # tllib negative_conditional_entropy = thuml/LogME NCE, on the argmax pseudo labels
    ("nce-digits-mod5", digits_source_mod5, {}, -0.9960245554231326, 1e-10),
    ("nce-digits-half", digits_source_half, {}, -0.10083763778244054, 1e-10),
    ("nce-iris", iris_source_setosa, {}, -0.4620981203732964, 1e-10),
]


@pytest.mark.parametrize("name,data,opts,value,tol", KNOWN, ids=[k[0] for k in KNOWN])
def test_known_answer(name, data, opts, value, tol):
    x, y = data()
    assert rel(nce(x, y, **opts), value) <= tol
    got = nce_batched(torch.as_tensor(x, dtype=torch.float64)[None], labels_of(y), **opts).item()
    assert rel(got, value) <= tol


# --------------------------------------------------------------------- bad input


def test_bad_predictions():
    y = np.array([0, 1, 2, 0, 1, 2])
    good = np.full((6, 4), 0.25)
    assert np.isfinite(nce(good, y))
    with pytest.raises(ValueError, match="logits"):
        nce(good - 0.5, y)
    with pytest.raises(ValueError, match="sum to 1"):
        nce(2 * good, y)
    with pytest.raises(ValueError, match="rows but labels"):
        nce(good[:5], y)
    with pytest.raises(ValueError, match="2-D"):
        nce(good[:, 0], y)
    nan = good.copy()
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        nce(nan, y)
