"""Tests of te_gpu.rank: agreement measures and the shipped ground truth."""
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from te_gpu import rank
from te_gpu.rank import (
    correlate,
    ground_truth,
    kendall_tau,
    list_ground_truth,
    pearson,
    published_tau_w,
    recall_at_k,
    rel_at_k,
    weighted_pearson,
    weighted_tau,
)


def _random_case(rng, n, ties_x, ties_y):
    """Scores/accuracies, with heavy ties (a 3-value range) where asked."""
    x = rng.integers(0, 3, n).astype(float) if ties_x else rng.normal(size=n)
    y = rng.integers(0, 3, n).astype(float) if ties_y else rng.normal(size=n)
    return x, y


CASES = [
    (seed, n, ties_x, ties_y)
    for seed, n in enumerate([2, 3, 4, 5, 7, 11, 12, 30, 64, 257] * 2)
    for ties_x in (False, True)
    for ties_y in (False, True)
]  # 80 cases


# ---------------------------------------------------------------- weighted tau

@pytest.mark.parametrize("seed,n,ties_x,ties_y", CASES)
def test_weighted_tau_matches_scipy(seed, n, ties_x, ties_y):
    rng = np.random.default_rng(seed)
    x, y = _random_case(rng, n, ties_x, ties_y)
    expected = stats.weightedtau(x, y).statistic
    if math.isnan(expected):  # a constant array (small n with ties): te_gpu raises
        with pytest.raises(ValueError, match="all equal"):
            weighted_tau(x, y)
    else:
        assert weighted_tau(x, y) == pytest.approx(expected, abs=1e-12)


def test_weighted_tau_joint_ties_and_duplicates_match_scipy():
    # exact (x, y) duplicates: the weights depend on how ties are ordered
    rng = np.random.default_rng(123)
    for _ in range(30):
        n = int(rng.integers(2, 40))
        x = rng.integers(0, 2, n).astype(float)
        y = rng.integers(0, 2, n).astype(float)
        if np.all(x == x[0]) or np.all(y == y[0]):
            continue
        assert weighted_tau(x, y) == pytest.approx(stats.weightedtau(x, y).statistic, abs=1e-12)


def test_weighted_tau_scipy_doc_example_and_n2():
    assert weighted_tau([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) == pytest.approx(
        -0.56694968153682723, abs=1e-12
    )
    assert weighted_tau([1.0, 2.0], [3.0, 4.0]) == pytest.approx(1.0, abs=1e-12)
    assert weighted_tau([1.0, 2.0], [4.0, 3.0]) == pytest.approx(-1.0, abs=1e-12)


def test_weighted_tau_mixed_int_float_and_identity():
    x = [3, 1, 2, 5, 4]
    y = [0.3, 0.1, 0.25, 0.9, 0.4]
    assert weighted_tau(x, y) == pytest.approx(stats.weightedtau(x, y).statistic, abs=1e-12)
    assert weighted_tau(y, y) == pytest.approx(1.0, abs=1e-12)


def test_weighted_tau_large_block_path_matches_scipy(monkeypatch):
    # force many small row blocks in the O(n^2) concordance count
    monkeypatch.setattr(rank, "_PAIRS_PER_BLOCK", 7)
    rng = np.random.default_rng(9)
    x, y = _random_case(rng, 50, True, False)
    assert weighted_tau(x, y) == pytest.approx(stats.weightedtau(x, y).statistic, abs=1e-12)


def test_weighted_tau_constant_raises():
    # scipy returns NaN here; te_gpu refuses to put a NaN in a results table
    assert math.isnan(stats.weightedtau([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]).statistic)
    with pytest.raises(ValueError, match="all equal"):
        weighted_tau([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="all equal"):
        weighted_tau([1.0, 2.0, 3.0], [5, 5, 5])


@pytest.mark.parametrize("func", [weighted_tau, kendall_tau, pearson, weighted_pearson])
def test_validation(func):
    with pytest.raises(ValueError, match="3 values but accuracies has 2"):
        func([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        func([1.0], [2.0])
    with pytest.raises(ValueError, match="non-finite"):
        func([1.0, np.nan, 2.0], [1, 2, 3])
    with pytest.raises(ValueError, match="non-finite"):
        func([1.0, 2.0, 3.0], [1, np.inf, 3])
    with pytest.raises(TypeError):
        func(["a", "b"], [1, 2])
    with pytest.raises(TypeError):
        func([1, 2], [None, 2])
    with pytest.raises(ValueError, match="1-D"):
        func([[1, 2], [3, 4]], [1, 2])


# ------------------------------------------------------- other correlations

@pytest.mark.parametrize("seed", range(10))
def test_kendall_and_pearson_match_scipy(seed):
    rng = np.random.default_rng(seed)
    x, y = _random_case(rng, 5 + 3 * seed, seed % 2 == 0, seed % 3 == 0)
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)


def test_weighted_pearson_hand_computed():
    # default weights 3, 2, 1 -> normalised 1/2, 1/3, 1/6
    s = [1.0, 2.0, 4.0]
    a = [1.0, 3.0, 2.0]
    # means: s = 1/2 + 2/3 + 4/6 = 11/6; a = 1/2 + 1 + 1/3 = 11/6
    ds = np.array([-5, 1, 13]) / 6
    da = np.array([-5, 7, 1]) / 6
    w = np.array([3, 2, 1]) / 6
    expected = (w @ (ds * da)) / math.sqrt((w @ ds**2) * (w @ da**2))
    # by hand: cov = 17/36, var_s = 41/36, var_a = 29/36
    assert expected == pytest.approx(17 / math.sqrt(41 * 29), abs=1e-12)
    assert weighted_pearson(s, a) == pytest.approx(expected, abs=1e-12)
    assert weighted_pearson(s, a, weights=[3, 2, 1]) == pytest.approx(expected, abs=1e-12)
    # order matters with positional weights: reversed inputs weigh differently
    assert weighted_pearson(s[::-1], a[::-1]) != pytest.approx(expected, abs=1e-6)


def test_weighted_pearson_equal_weights_is_pearson():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=9), rng.normal(size=9)
    assert weighted_pearson(x, y, weights=np.full(9, 2.5)) == pytest.approx(pearson(x, y), abs=1e-12)


def test_weighted_pearson_bad_weights():
    with pytest.raises(ValueError, match="2 values but there are 3"):
        weighted_pearson([1, 2, 3], [1, 3, 2], weights=[1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        weighted_pearson([1, 2, 3], [1, 3, 2], weights=[1, -1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        weighted_pearson([1, 2, 3], [1, 3, 2], weights=[0, 0, 0])


def test_constant_inputs_raise():
    with pytest.raises(ValueError, match="all equal"):
        pearson([1, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="all equal"):
        kendall_tau([1, 2, 3], [2, 2, 2])


# ---------------------------------------------------------------- top-k

SCORES = [0.9, 0.1, 0.5, 0.7]
ACCS = [80.0, 90.0, 60.0, 85.0]


def test_rel_at_k_hand():
    # top-1 by score is model 0 (80); best overall is 90
    assert rel_at_k(SCORES, ACCS, 1) == pytest.approx(80 / 90)
    # top-2 = models 0, 3 -> best 85
    assert rel_at_k(SCORES, ACCS, 2) == pytest.approx(85 / 90)
    assert rel_at_k(SCORES, ACCS, 4) == pytest.approx(1.0)


def test_recall_at_k_hand():
    # model 0 (80) is the 3rd most accurate
    assert recall_at_k(SCORES, ACCS, 1) == 0.0
    assert recall_at_k(SCORES, ACCS, 2) == 0.0
    assert recall_at_k(SCORES, ACCS, 3) == 1.0
    # ties with the k-th accuracy count as a hit
    assert recall_at_k([1.0, 0.0, 0.5], [70.0, 70.0, 50.0], 1) == 1.0


def test_top_k_bad_k():
    with pytest.raises(ValueError, match="between 1 and"):
        rel_at_k(SCORES, ACCS, 0)
    with pytest.raises(ValueError, match="between 1 and"):
        recall_at_k(SCORES, ACCS, 5)
    with pytest.raises(TypeError):
        rel_at_k(SCORES, ACCS, 1.5)
    with pytest.raises(ValueError, match="> 0"):
        rel_at_k([1, 2], [0.0, 0.0])


# ---------------------------------------------------------------- correlate

def test_correlate_aligns_and_warns():
    acc = {"a": 80.0, "b": 90.0, "c": 60.0, "d": 85.0, "only_acc": 50.0}
    scores = {"d": 0.7, "c": 0.5, "b": 0.1, "a": 0.9, "only_score": 3.0, "duration": 12.5}
    with pytest.warns(UserWarning) as record:
        out = correlate(scores, acc)
    message = str(record[0].message)
    assert "only_score" in message and "only_acc" in message
    assert "duration" not in message
    assert out["models"] == ["a", "d", "c", "b"]  # by decreasing score, as public score files
    s, a = [0.9, 0.7, 0.5, 0.1], [80.0, 85.0, 60.0, 90.0]
    assert out["tau_w"] == pytest.approx(stats.weightedtau(s, a).statistic, abs=1e-12)
    assert out["kendall"] == pytest.approx(stats.kendalltau(s, a).statistic, abs=1e-12)
    assert out["pearson"] == pytest.approx(stats.pearsonr(s, a).statistic, abs=1e-12)
    assert out["weighted_pearson"] == pytest.approx(weighted_pearson(s, a), abs=1e-12)
    # the same numbers whatever order the score dict has
    shuffled = {m: scores[m] for m in ("b", "a", "c", "d")}
    with pytest.warns(UserWarning):
        again = correlate(shuffled, acc)
    assert again["weighted_pearson"] == pytest.approx(out["weighted_pearson"])
    assert out["rel@1"] == pytest.approx(80 / 90)
    assert out["rel@3"] == pytest.approx(85 / 90)  # top-3 by score: a, d, c
    assert out["recall@1"] == 0.0
    assert out["recall@3"] == 1.0
    assert set(out) == {"tau_w", "kendall", "pearson", "weighted_pearson",
                        "rel@1", "rel@3", "recall@1", "recall@3", "models"}


def test_correlate_no_warning_when_aligned_and_custom_k():
    acc = {"a": 1.0, "b": 2.0, "c": 3.0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = correlate({"a": 0.1, "b": 0.2, "c": 0.3, "duration": 1.0}, acc, k=2)
    assert out["tau_w"] == pytest.approx(1.0)
    assert out["rel@2"] == 1.0 and out["recall@2"] == 1.0
    assert "rel@1" not in out


def test_correlate_errors():
    with pytest.warns(UserWarning):
        with pytest.raises(ValueError, match="share 1 model"):
            correlate({"a": 1.0, "x": 2.0}, {"a": 1.0, "b": 2.0})
    with pytest.raises(ValueError, match="'b'"):
        correlate({"a": 1.0, "b": float("nan")}, {"a": 1.0, "b": 2.0})
    with pytest.raises(TypeError, match="'a'"):
        correlate({"a": [1.0, 2.0], "b": 1.0}, {"a": 1.0, "b": 2.0})
    with pytest.raises(ValueError, match="between 1 and"):
        correlate({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0})  # default k=3 > 2 models


# ---------------------------------------------------------------- ground truth

def test_ground_truth_known_values():
    aircraft = ground_truth("group1", "finetune", "aircraft")
    assert aircraft["resnet34"] == 84.06
    assert len(aircraft) == 11
    tables = ground_truth()
    assert tables["aircraft"] == aircraft
    assert set(ground_truth("group2", "lft")) == set(tables)


def test_ground_truth_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="unknown group 'group3'.*group1, group2"):
        ground_truth("group3")
    with pytest.raises(ValueError, match="unknown regime.*finetune, lbft, lft"):
        ground_truth("group1", "probe")
    with pytest.raises(ValueError, match="unknown dataset.*aircraft"):
        ground_truth("group1", "finetune", "imagenet")


def test_ground_truth_returns_fresh_copies():
    ground_truth("group1", "finetune", "aircraft")["resnet34"] = -1.0
    assert ground_truth("group1", "finetune", "aircraft")["resnet34"] == 84.06


def test_list_ground_truth():
    listing = list_ground_truth()
    assert set(listing) == {"group1", "group2", "wheels", "wheels_e10", "wheels_heldout", "wheels_lr"}
    g1 = listing["group1"]
    assert g1["regimes"] == ["finetune", "lbft", "lft"]
    assert "aircraft" in g1["datasets"] and len(g1["datasets"]) == 11
    assert "resnet34" in g1["models"] and len(g1["models"]) == 11
    assert all(g1["measured"][r] == g1["datasets"] for r in g1["regimes"])
    for group, info in listing.items():
        for regime in info["regimes"]:
            assert info["measured"][regime] and set(info["measured"][regime]) <= set(info["datasets"])
            for dataset in info["measured"][regime]:
                names = set(ground_truth(group, regime, dataset))
                # the measured wheels zoos differ in their candidates (tests/test_regimes.py)
                assert names <= set(info["models"]) if group.startswith("wheels") else names == set(info["models"])


def test_published_tau_w():
    g1 = published_tau_w("group1_finetune")
    assert g1["SFDA"]["aircraft"] == 0.615
    assert g1["LogME"]["cifar10"] == 0.852
    every = published_tau_w()
    assert set(every) == {"group1_finetune", "group2_finetune"}
    assert every["group1_finetune"] == g1
    with pytest.raises(ValueError, match="group1_finetune, group2_finetune"):
        published_tau_w("group3")
