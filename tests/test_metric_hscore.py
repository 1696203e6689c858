"""H-score: invariances, the engine's shared statistics, values public code gives on
public data, bad input."""
import numpy as np
import pytest
import torch

from te_gpu.engine.hscore import hscore_batched, regularized_hscore_batched
from te_gpu.engine.stats import batch_stats
from te_gpu.engine.transrate import transrate_batched
from te_gpu.reference.hscore import h_score

from helpers import class_features, digits, iris, labels_of, rel, stacked_copies


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
    # N <= D with centred rank N-1: every model scores C - 1
    xs, ys = class_features(13, n=30, d=60, c=4, spread=0.5)
    assert rel(h_score(xs, ys), 3.0) <= 1e-9
    assert rel(hscore_batched(torch.as_tensor(xs)[None], labels_of(ys)).item(), 3.0) <= 1e-9


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
    # tllib h_score
    ("hscore-digits", digits, {}, 5.917909336695526, 1e-10),
    ("hscore-iris", iris, {}, 1.1918988250416636, 1e-10),
]


@pytest.mark.parametrize("name,data,opts,value,tol", KNOWN, ids=[k[0] for k in KNOWN])
def test_known_answer(name, data, opts, value, tol):
    x, y = data()
    assert rel(h_score(x, y, **opts), value) <= tol
    got = hscore_batched(torch.as_tensor(x, dtype=torch.float64)[None], labels_of(y), **opts).item()
    assert rel(got, value) <= tol


# --------------------------------------------------------------------- bad input


def test_bad_options_and_inputs():
    x, y = class_features(21, n=30, d=4, c=3)
    with pytest.raises(ValueError, match="rcond"):
        h_score(x, y, rcond=-1.0)
    with pytest.raises(ValueError, match="rows"):
        h_score(x, y[:-1])
