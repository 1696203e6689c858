"""``higher_is_better=False`` is honoured by every ranking, tie, share, consensus and
correlation: a toy metric, minus the LDA score, registered for these tests only, must order
a zoo exactly as LDA does everywhere te_gpu orders models."""
import numpy as np
import pytest

import te_gpu
import te_gpu.reference as ref
from te_gpu import catalogue, rank
from te_gpu.bootstrap import bootstrap_zoo, tau_w_interval
from te_gpu.engine import lda as engine_lda
from te_gpu.recommend import recommend
from te_gpu.ties import find_ties

from helpers import class_features


def minus_lda_reference(features, labels):
    return -ref.lda(features, labels)


def minus_lda_head(x, labels, shared):
    return -engine_lda.head(x, labels, shared)


@pytest.fixture
def minus_lda(monkeypatch):
    m = catalogue.Metric("minus_lda", "minus LDA", "test only",
                         "test_lower_is_better:minus_lda_reference",
                         "test_lower_is_better:minus_lda_head", needs=frozenset({"stats"}),
                         higher_is_better=False)
    monkeypatch.setitem(catalogue.METRICS, m.name, m)
    return m


def zoo_of_four():
    x, y = class_features(2, n=120, d=8, c=3, spread=1.0)
    rng = np.random.default_rng(4)
    return {f"m{i}": x + rng.normal(scale=0.5 + i, size=x.shape) for i in range(4)}, y


def test_zoo_ranking_ties_and_correlation(minus_lda):
    zoo, y = zoo_of_four()
    res = te_gpu.score_zoo(zoo, y, metrics=("lda", "minus_lda"), progress=False)
    assert [m for m, _ in res.ranking("minus_lda")] == [m for m, _ in res.ranking("lda")]
    for m in zoo:
        assert res["minus_lda"][m] == pytest.approx(-res["lda"][m], rel=1e-12)
    acc = {m: 90.0 - 5 * i for i, m in enumerate(zoo)}
    tau = rank.correlate(catalogue.oriented("minus_lda", res["minus_lda"]), acc)["tau_w"]
    assert tau == pytest.approx(rank.correlate(res["lda"], acc)["tau_w"]) and tau > 0
    tied = {"a": -0.5, "b": -0.5 * (1 + 1e-9), "c": -0.9}
    assert find_ties(tied, metric="minus_lda")[0].models == ("a", "b")
    best_first = find_ties({"a": -0.5, "b": -0.5, "c": -0.9, "d": -0.9}, metric="minus_lda")
    assert [t.models for t in best_first] == [("c", "d"), ("a", "b")]   # lower scores first


def test_bootstrap_shares_consensus_tau_and_recommend(minus_lda):
    zoo, y = zoo_of_four()
    boot = bootstrap_zoo(zoo, y, metrics=("lda", "minus_lda"), replicates=12, seed=1,
                         progress=False)
    assert boot.p_first("minus_lda") == pytest.approx(boot.p_first("lda"))
    assert boot.p_top("minus_lda", 2) == pytest.approx(boot.p_top("lda", 2))
    models, a, pa = boot.consensus(["lda"])
    _, b, pb = boot.consensus(["minus_lda"])
    np.testing.assert_array_equal(a, b)
    assert pa == pb
    acc = {m: 90.0 - 5 * i for i, m in enumerate(zoo)}
    ta, tb = tau_w_interval(boot, "lda", acc), tau_w_interval(boot, "minus_lda", acc)
    assert tb["tau_w"] == pytest.approx(ta["tau_w"]) and tb["p_best_first"] == ta["p_best_first"]
    np.testing.assert_allclose(tb["samples"], ta["samples"])
    one = recommend(zoo, y, metrics=("minus_lda",), replicates=12, seed=1, progress=False,
                    mc_error=None)
    other = recommend(zoo, y, metrics=("lda",), replicates=12, seed=1, progress=False,
                      mc_error=None)
    assert one.order == other.order and one.picks["minus_lda"] == other.picks["lda"]
    assert one.p_first == pytest.approx(other.p_first)
