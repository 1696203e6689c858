"""ETran (SPEC 10.8): known answers from the released code, engine = reference on
fresh inputs, the zoo combination and its constant-part rule, and refusals.

Tolerances: parts, engine vs reference and vs the released values, 1e-12
relative (float64; the same O(N D C) sums in another order); combined scores
1e-9 relative (a min-max of those parts).
"""
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits

import te_gpu
import te_gpu.reference as ref
from te_gpu.combine import ZooLevelWarning
from te_gpu.reference.etran import etran

from helpers import class_features, dead_unit_features


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b)), (a, b)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def digits_zoo():
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float64)
    deficient = x.copy()
    deficient[:, 8:12] = 0.0                      # dead units
    deficient[:, 40] = deficient[:, 41]           # duplicated columns
    deficient[:, 50:52] = deficient[:, 20:22]
    return {"a": x, "b": deficient, "c": np.sqrt(x)}, y


# The released code, run locally: mgholamikn/ETran (commit d4551ed) metrics.py
# Energy_Score(X, 0.5, 'bot') and LDA_Score(X, y), then tw.py's 'etran'
# combination (min-max each, 0.15 energy + 0.85 lda); numpy 2.4.6, torch 2.14.1.
RELEASED_PARTS = {"a": (15.912861951228948, 0.9049307469633956),
                  "b": (15.601929232660265, 0.8994008330755043),
                  "c": (6.475355097564771, 0.8890862015285663)}
RELEASED_ETRAN = {"a": 1.0, "b": 0.6983990391925821, "c": 0.0}


def test_known_answers_from_the_released_code():
    zoo, y = digits_zoo()
    for name, x in zoo.items():
        assert rel(te_gpu.etran_parts(x, y), RELEASED_PARTS[name]) <= 1e-12
        assert rel(ref.etran_parts(x, y), RELEASED_PARTS[name]) <= 1e-12
    res = te_gpu.score_zoo(zoo, y, metrics=("etran",), progress=False)
    for got in (res.scores["etran"], etran(zoo, y)):
        assert got["a"] == 1.0 and got["c"] == 0.0
        assert rel(got["b"], RELEASED_ETRAN["b"]) <= 1e-9


CASES = {
    "n<d": lambda: class_features(1, n=40, d=60, c=3, spread=1.0),
    "binary-imbalanced": lambda: class_features(2, n=0, d=8, sizes=[300, 12], spread=1.0),
    "dead-units": lambda: dead_unit_features(3, n=250, d=20, c=4),
    "large-scale": lambda: (30.0 * class_features(4, n=220, d=16, c=5)[0],
                            class_features(4, n=220, d=16, c=5)[1]),
}


@pytest.mark.parametrize("per_mille", [5, 1, 1000])
@pytest.mark.parametrize("case", list(CASES))
def test_engine_equals_reference(case, per_mille):
    x, y = CASES[case]()
    want = ref.etran_parts(x, y, energy_per_mille=per_mille)
    assert rel(te_gpu.etran_parts(x, y, energy_per_mille=per_mille), want) <= 1e-12
    assert rel(te_gpu.etran_parts(x, y, energy_per_mille=per_mille, precision="fast"), want) <= 1e-3


def test_energy_part_counts():
    x, y = class_features(5, n=150, d=6, c=3)
    e = np.sort(np.log(np.exp(x).sum(1)))
    # N < 200: the released 0.5 % is no sample (NaN there); te_gpu averages one
    assert te_gpu.etran_parts(x, y)[0] == pytest.approx(e[0], rel=1e-12)
    assert te_gpu.etran_parts(x, y, energy_per_mille=1000)[0] == pytest.approx(e.mean(), rel=1e-12)
    assert te_gpu.etran_parts(x, y, energy_per_mille=100)[0] == pytest.approx(e[:15].mean(), rel=1e-12)


def test_zoo_combination_weights_and_constant_part():
    x, y = class_features(6, n=240, d=10, c=3, spread=1.5)
    rng = np.random.default_rng(0)
    shuffled = np.take_along_axis(x, rng.permuted(np.tile(np.arange(10), (240, 1)), axis=1), 1)
    zoo = {"a": x, "b": 0.5 * x, "c": shuffled}
    res = te_gpu.score_zoo(zoo, y, metrics=("etran",), progress=False)
    parts = np.array([res.parts["etran"][k] for k in zoo])
    mm = (parts - parts.min(0)) / (parts.max(0) - parts.min(0))
    want = 0.15 * mm[:, 0] + 0.85 * mm[:, 1]
    assert np.allclose([res.scores["etran"][k] for k in zoo], want, rtol=1e-9, atol=1e-12)
    # a row-wise shuffle of the columns keeps every sample's log-sum-exp: the energy
    # part is equal over {x, shuffled} and is left out with a warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res2 = te_gpu.score_zoo({"a": x, "c": shuffled}, y, metrics=("etran",), progress=False)
    assert any(issubclass(w.category, ZooLevelWarning) and "energy" in str(w.message) for w in caught)
    assert "energy" in res2.dropped["etran"]
    assert sorted(res2.scores["etran"].values()) == [0.0, 0.85]


def test_refusals():
    x, y = class_features(7, n=60, d=8, c=3)
    for impl in (te_gpu.etran_parts, ref.etran_parts):
        for bad in (0, 1001, 2.5, True):
            with pytest.raises(ValueError, match="energy_per_mille"):
                impl(x, y, energy_per_mille=bad)
    with pytest.raises(ValueError, match="zoo-level"):
        te_gpu.score(x, y, metric="etran")
    with pytest.raises(ValueError, match="undefined"):
        etran({"a": x}, y)
