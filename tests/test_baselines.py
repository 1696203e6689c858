"""Static baselines (te_gpu.baselines, te-gpu baselines, correlate's comparison): the issue's
three means from the shipped data, per-data-set values against scipy, the shipped facts against
torchvision's metadata, the random ranking against exact enumeration, bad priors, CLI output."""
import itertools
import json
import math

import numpy as np
import pytest

from te_gpu import baselines, rank
from te_gpu.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------
# the issue's numbers, from the shipped data
# --------------------------------------------------------------------------

@pytest.mark.parametrize("regime, expected", [
    ("finetune", {"imagenet_top1": 0.654, "params": 0.578, "feature_width": 0.472}),
    ("lbft", {"imagenet_top1": 0.512, "params": 0.507, "feature_width": 0.457}),
    ("lft", {"imagenet_top1": 0.455, "params": 0.346, "feature_width": 0.342}),
])
def test_group1_means_per_regime(regime, expected):
    table = baselines.baseline_table(rank.ground_truth("group1", regime),
                                     baselines.static_rankings("group1"), draws=200, seed=0)
    assert {name: round(res["mean"], 3) for name, res in table["rankings"].items()} == expected
    assert len(table["datasets"]) == 11


def test_per_dataset_values_equal_scipy():
    stats = pytest.importorskip("scipy.stats")
    facts = baselines.facts("group1")
    truth = rank.ground_truth("group1", "finetune")
    table = baselines.baseline_table(truth, baselines.static_rankings("group1"), draws=200, seed=0)
    for fact in ("imagenet_top1", "params", "feature_width"):
        for ds, acc in truth.items():
            models = list(acc)
            want = stats.weightedtau([facts[m][fact] for m in models], [acc[m] for m in models])[0]
            assert table["rankings"][fact]["tau_w"][ds] == pytest.approx(want, abs=1e-12)
    by_top1 = table["rankings"]["imagenet_top1"]["tau_w"]
    assert round(by_top1["cifar10"], 3) == 0.775 and round(by_top1["flowers"], 3) == 0.252
    assert round(table["rankings"]["params"]["tau_w"]["aircraft"], 3) == 0.671


def test_group1_facts_equal_torchvision_metadata():
    torch = pytest.importorskip("torch")
    models = pytest.importorskip("torchvision.models")
    for name, fact in baselines.facts("group1").items():
        weights_class, version = fact["weights"].rsplit(".", 2)[-2:]
        weights = getattr(getattr(models, weights_class), version)
        assert version == "IMAGENET1K_V1"
        assert fact["params"] == weights.meta["num_params"]
        assert fact["imagenet_top1"] == weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
        kwargs = {"init_weights": False} if name in ("googlenet", "inception_v3") else {}
        if name == "googlenet":
            kwargs["aux_logits"] = False        # as the weights' num_params counts it
        with torch.device("meta"):
            net = getattr(models, name)(**kwargs)
        classifier = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
        assert fact["feature_width"] == classifier.in_features, name
        assert fact["params"] == sum(p.numel() for p in net.parameters()), name
    assert set(baselines.facts("group1")) == set(rank.list_ground_truth()["group1"]["models"])


def test_group2_static_rankings_are_undefined_not_zero():
    facts = baselines.facts("group2")
    assert set(facts) == set(rank.list_ground_truth()["group2"]["models"])
    assert {f["params"] for f in facts.values()} == {23508032}
    assert {f["feature_width"] for f in facts.values()} == {2048}
    rankings = baselines.static_rankings("group2")
    assert list(rankings) == ["params", "feature_width"]       # no ImageNet top-1 shipped
    table = baselines.baseline_table(rank.ground_truth("group2", "finetune"), rankings, draws=100, seed=0)
    for res in table["rankings"].values():
        assert "mean" not in res and "constant ranking" in res["undefined"]
    assert "23,508,032" in table["rankings"]["params"]["undefined"]
    assert baselines.fact_sources("group2")["params"].startswith("ResNet-50")


def test_group_with_facts_and_unknown_models():
    assert baselines.group_with_facts(["resnet50", "googlenet"]) == "group1"
    assert baselines.group_with_facts(["byol", "swav"]) == "group2"
    assert baselines.group_with_facts(["resnet50", "byol"]) is None
    assert baselines.group_with_facts([]) is None
    with pytest.raises(ValueError, match="no group1 facts for models \\['vit'\\]"):
        baselines.static_rankings("group1", ["resnet50", "vit"])
    with pytest.raises(ValueError, match="no model facts for 'group3'"):
        baselines.facts("group3")


# --------------------------------------------------------------------------
# the random ranking
# --------------------------------------------------------------------------

def _exact_random(acc):
    """Mean and sd of tau_w over every permutation (a direct computation)."""
    taus = [rank.weighted_tau(np.array(p, dtype=float), acc)
            for p in itertools.permutations(range(len(acc)))]
    return float(np.mean(taus)), float(np.std(taus))


@pytest.mark.parametrize("acc", [[70.0, 80.0, 75.0, 90.0, 60.0],            # no ties
                                 [70.0, 80.0, 80.0, 90.0, 60.0, 70.0]])     # tied accuracies
def test_random_ranking_against_exact_enumeration(acc):
    acc = np.array(acc)
    mean, sd = _exact_random(acc)
    draws = 20000
    res = baselines.random_ranking({"d": {f"m{i}": a for i, a in enumerate(acc)}}, draws=draws, seed=3)
    got = res["per_dataset"]["d"]
    assert abs(got["mean"] - mean) < 4 * sd / math.sqrt(draws)
    assert got["sd"] == pytest.approx(sd, rel=0.03)
    assert res["draws"] == draws and res["seed"] == 3


def test_weighted_tau_of_orders_equals_rank_row_by_row():
    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 12):
        acc = rng.integers(0, 3, n).astype(float)
        acc[0] = 5.0                                           # not constant
        orders = rng.random((50, n)).argsort(axis=1).astype(float) * 1.5 - 2
        got = baselines.weighted_tau_of_orders(orders, acc)
        want = [rank.weighted_tau(o, acc) for o in orders]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="distinct"):
        baselines.weighted_tau_of_orders(np.array([[1.0, 1.0, 2.0]]), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="accuracies are equal"):
        baselines.weighted_tau_of_orders(np.array([[1.0, 2.0]]), [1.0, 1.0])


def test_random_ranking_seeded_and_mean_over_datasets():
    truth = rank.ground_truth("group1", "finetune")
    a = baselines.random_ranking(truth, draws=500, seed=7)
    b = baselines.random_ranking(truth, draws=500, seed=7)
    c = baselines.random_ranking(truth, draws=500, seed=8)
    assert a == b and a != c
    per = [v["mean"] for v in a["per_dataset"].values()]
    assert a["mean"]["mean"] == pytest.approx(np.mean(per), abs=1e-12)   # linearity
    # one order for every data set: the mean over data sets spreads more than independent draws
    independent = math.sqrt(sum(v["sd"] ** 2 for v in a["per_dataset"].values())) / len(per)
    assert a["mean"]["sd"] > 1.5 * independent
    with pytest.raises(ValueError, match="draws"):
        baselines.random_ranking(truth, draws=1, seed=0)
    with pytest.raises(TypeError, match="seed"):
        baselines.random_ranking(truth, draws=10, seed=None)


# --------------------------------------------------------------------------
# priors
# --------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    ('{"a": 1, "b": "high"}', "value of 'b' must be a number"),
    ('{"a": 1, "b": true}', "value of 'b' must be a number"),
    ('{"a": 1, "b": null}', "value of 'b' must be a number"),
    ('{"a": 1, "b": NaN}', "value of 'b' is not finite"),
    ('[1, 2]', "expected a JSON object"),
    ('{"a": 1,', "not valid JSON"),
    ('{"_note": "empty"}', "no models in it"),
])
def test_bad_prior_files(tmp_path, content, message):
    path = tmp_path / "prior.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        baselines.read_prior(path)


def test_prior_reading_and_missing_models(tmp_path):
    path = tmp_path / "prior.json"
    path.write_text('{"_source": "mine", "a": 1, "b": 2.5, "c": 0}')
    prior = baselines.read_prior(path)
    assert prior == {"a": 1.0, "b": 2.5, "c": 0.0}
    assert baselines.check_prior(prior, ["b", "a"]) == {"b": 2.5, "a": 1.0}
    with pytest.raises(ValueError, match="no value for 2 of the 3 models: d, e"):
        baselines.check_prior(prior, ["a", "d", "e"])
    with pytest.raises(FileNotFoundError, match="no such file"):
        baselines.read_prior(tmp_path / "nothing.json")


def test_static_tau_undefined_cases():
    acc = {"a": 1.0, "b": 3.0, "c": 2.0}
    assert baselines.static_tau({"a": 1, "b": 3, "c": 2}, acc)["tau_w"] == pytest.approx(1.0)
    res = baselines.static_tau({"a": 5, "b": 5, "c": 5}, acc)
    assert res["tau_w"] is None and "same value (5)" in res["undefined"]
    res = baselines.static_tau({"a": 1, "b": 2, "c": 3}, {"a": 1.0, "b": 1.0, "c": 1.0})
    assert res["tau_w"] is None and "same accuracy" in res["undefined"]
    assert baselines.static_tau({"a": 1}, acc)["tau_w"] is None


# --------------------------------------------------------------------------
# te-gpu baselines
# --------------------------------------------------------------------------

def _mean_row(out):
    return next(line for line in out.splitlines() if line.startswith("mean of 11")).split()


def test_cli_baselines_group1_reproduces_the_issue(capsys, tmp_path):
    code, out, _ = run(capsys, "baselines", "--truth", "group1", "--draws", "500",
                       "--json", str(tmp_path / "b.json"))
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("data set"))
    assert "ImageNet top-1" in header and "parameters" in header and "feature width" in header
    assert _mean_row(out)[3:6] == ["+0.654", "+0.578", "+0.472"]
    assert "LogME +0.509" in out and "SFDA +0.710" in out
    assert "500 permutations (seed 0)" in out
    report = json.loads((tmp_path / "b.json").read_text())
    assert round(report["rankings"]["ImageNet top-1"]["mean"], 3) == 0.654
    assert report["facts"] == "group1" and "IMAGENET1K_V1" in report["sources"]["imagenet_top1"]


def test_cli_baselines_regime_dataset_and_prior(capsys, tmp_path):
    code, out, _ = run(capsys, "baselines", "--truth", "group1", "--regime", "lft", "--draws", "100")
    assert code == 0 and _mean_row(out)[3:6] == ["+0.455", "+0.346", "+0.342"]
    assert "sun397" in out and "implausible" in out
    prior = tmp_path / "prior.json"
    # a prior equal to the pets accuracies ranks perfectly there
    prior.write_text(json.dumps(rank.ground_truth("group1", "finetune", "pets")))
    code, out, _ = run(capsys, "baselines", "--truth", "group1", "--dataset", "pets", "--prior",
                       str(prior), "--draws", "100")
    assert code == 0
    header, _, row = [line for line in out.splitlines() if line.startswith(("data set", "---", "pets"))][:3]
    assert header.split()[-3] == "prior" and row.split()[5] == "+1.000"   # after the 4 facts


def test_cli_baselines_group2_says_undefined(capsys):
    code, out, _ = run(capsys, "baselines", "--truth", "group2", "--draws", "100")
    assert code == 0
    assert "parameters: tau_w undefined - all 12 models have the same value (23,508,032)" in out
    assert "feature width: tau_w undefined" in out and "--prior FILE.json" in out
    assert "nan" not in out.lower()


@pytest.mark.parametrize("content, message", [
    ('{"resnet50": 1}', "prior has no value for 10 of the 11 models"),
    ('{"resnet50": "big"}', "value of 'resnet50' must be a number"),
])
def test_cli_bad_prior_exits_2(capsys, tmp_path, content, message):
    prior = tmp_path / "p.json"
    prior.write_text(content)
    code, _, err = run(capsys, "baselines", "--truth", "group1", "--prior", str(prior))
    assert code == 2 and message in err and "Traceback" not in err
    code, _, err = run(capsys, "baselines")
    assert code == 2 and "--truth is required" in err


# --------------------------------------------------------------------------
# te-gpu correlate: baselines beside each metric
# --------------------------------------------------------------------------

def _scores(tmp_path, name, values):
    from te_gpu import write_scores

    write_scores(tmp_path / f"{name}.json", values, duration=1.0)
    return str(tmp_path / f"{name}.json")


def test_cli_correlate_marks_metrics_below_the_best_static(capsys, tmp_path):
    acc = rank.ground_truth("group1", "finetune", "pets")
    good = _scores(tmp_path, "good", dict(acc))                              # tau_w = 1
    bad = _scores(tmp_path, "bad", {m: -v for m, v in acc.items()})          # tau_w = -1
    code, out, _ = run(capsys, "correlate", good, bad, "--truth", "group1", "--dataset", "pets")
    assert code == 0
    lines = out.splitlines()
    assert "vs best static" in lines[1]
    good_row = next(line for line in lines if line.startswith("good"))
    bad_row = next(line for line in lines if line.startswith("bad"))
    assert good_row.rstrip().endswith("+0.275") and bad_row.rstrip().endswith("-1.725 *")   # 1 - 0.725
    assert ("static rankings of these 11 models, no target data (group1 facts): ImageNet top-1 "
            "+0.725, parameters +0.694, feature width +0.533") in out
    assert "* does not beat the best static ranking (ImageNet top-1, +0.725): bad" in out
    random_line = next(line for line in lines if line.startswith("random ranking of these 11 models"))
    mean, sd = (float(v) for v in random_line.split("tau_w ")[1].split(" (")[0].split(" +- "))
    assert abs(mean) < 0.02 and 0.25 < sd < 0.30


def test_cli_correlate_with_prior_and_without_facts(capsys, tmp_path):
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"a": 90.0, "b": 80.0, "c": 70.0, "d": 60.0}))
    scores = _scores(tmp_path, "logme", {"a": 4.0, "b": 3.0, "c": 1.0, "d": 2.0})
    code, out, _ = run(capsys, "correlate", scores, "--truth", str(truth))
    assert code == 0 and "vs best static" not in out
    assert "static rankings: none defined for these models; give --prior FILE.json" in out
    assert "random ranking of these 4 models" in out
    prior = tmp_path / "prior.json"
    prior.write_text(json.dumps({"a": 3, "b": 4, "c": 2, "d": 1}))
    code, out, _ = run(capsys, "correlate", scores, "--truth", str(truth), "--prior", str(prior))
    assert code == 0 and "vs best static" in out and "(--prior): prior +" in out
    prior.write_text(json.dumps({"a": 3, "b": 4}))
    code, _, err = run(capsys, "correlate", scores, "--truth", str(truth), "--prior", str(prior))
    assert code == 2 and "prior has no value for 2 of the 4 models: c, d" in err


def test_recommend_plots_draw_the_shipped_baselines_of_a_shipped_group():
    from te_gpu import rank
    from te_gpu.baselines import static_rankings, static_tau
    from te_gpu.cli import _static_baselines

    acc = rank.ground_truth("group1", "finetune", "cifar10")
    got = _static_baselines(acc, dict(group="group1"))
    facts = static_rankings("group1", list(acc))
    want = {fact: static_tau(values, acc)["tau_w"] for fact, values in facts.items()}
    want["width reversed"] = static_tau({m: -v for m, v in facts["feature_width"].items()}, acc)["tau_w"]
    assert sorted(got.values()) == pytest.approx(sorted(want.values()), abs=0)
    assert got["ImageNet top-1"] == pytest.approx(0.775, abs=5e-4)
    assert got["feature width, narrowest first"] == want["width reversed"]
    assert _static_baselines({"x": 1.0, "y": 2.0}, dict(group=None)) == {}   # no facts: none
