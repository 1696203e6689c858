"""The ties and saturation detector (te_gpu.ties) on constructed scores, and its one line per
metric in te-gpu score and te-gpu correlate."""
import json

import pytest

from te_gpu import ties
from te_gpu.cli import main


def groups(scores, **kw):
    return [(t.models, t.bound) for t in ties.find_ties(scores, **kw)]


def test_no_ties():
    assert ties.find_ties({"a": 1.0, "b": 2.0, "c": 3.0}) == []
    assert ties.find_ties({"a": 1.0}) == []
    assert ties.tie_line("logme", {"a": 1.0, "b": 2.0}) is None


def test_exact_ties_named_in_input_order_highest_group_first():
    scores = {"d": 0.5, "a": 0.9, "c": 0.5, "b": 0.9, "e": 0.1}
    found = ties.find_ties(scores, metric="logme")
    assert [(t.models, t.low, t.high, t.bound) for t in found] == [
        (("a", "b"), 0.9, 0.9, None), (("d", "c"), 0.5, 0.5, None)]


def test_near_ties_within_the_tolerance_and_not_beyond():
    # eps = 1e-6 * max |s| = 1e-5: 10.0 and 10.0 + 9e-6 tie; 5.0 and 5.0 + 2e-5 do not
    scores = {"a": 10.0, "b": 10.0 + 9e-6, "c": 5.0, "d": 5.0 + 2e-5, "e": 1.0}
    assert groups(scores) == [(("a", "b"), None)]
    assert groups(scores, rtol=1e-5) == [(("a", "b"), None), (("c", "d"), None)]
    assert groups(scores, rtol=0) == []
    with pytest.raises(ValueError, match="rtol"):
        ties.find_ties(scores, rtol=-1)


def test_single_linkage_chains_consecutive_scores():
    eps = 1e-6 * 100.0
    scores = {"a": 100.0, "b": 100.0 - 0.9 * eps, "c": 100.0 - 1.8 * eps, "d": 50.0}
    assert groups(scores) == [(("a", "b", "c"), None)]      # a-c is 1.8 eps apart, linked by b


def test_saturation_at_a_known_bound():
    # SFDA at its maximum 1, the demo's case
    sfda = {"lite0": 1.0, "lite1": 1.0, "lite2": 1.0, "stage3": 0.955, "stage2": 0.542}
    assert groups(sfda, metric="sfda") == [(("lite0", "lite1", "lite2"), "maximum 1")]
    # the same values for a metric without a bound at 1: a tie, not saturation
    assert groups(sfda, metric="logme") == [(("lite0", "lite1", "lite2"), None)]
    # GBC: -1e-26 .. -1e-11 differ pairwise by orders of magnitude, yet are 0 beside -3.7
    gbc = {"a": -2.0e-26, "b": -6.9e-25, "c": -1.4e-17, "d": -1.4e-11, "e": -5.7e-4, "f": -3.73}
    assert groups(gbc, metric="gbc") == [(("a", "b", "c", "d"), "maximum 0")]
    # kNN accuracy at its minimum 0
    assert groups({"a": 0.0, "b": 0.0, "c": 0.6}, metric="knn") == [(("a", "b"), "minimum 0")]
    # a tie away from the bound is not saturation
    assert groups({"a": 0.8, "b": 0.8, "c": 1.0}, metric="sfda") == [(("a", "b"), None)]


def test_all_zero_scores_and_ignored_entries():
    assert groups({"a": 0.0, "b": 0.0, "c": 0.0}) == [(("a", "b", "c"), None)]
    scores = {"a": 1.0, "b": 1.0, "c": float("nan"), "d": float("inf"), "duration": 1.0, "e": 0.3}
    assert groups(scores) == [(("a", "b"), None)]


def test_tie_line_names_models_bound_and_what_helps():
    line = ties.tie_line("sfda", {"m1": 1.0, "m2": 1.0, "m3": 0.7, "m4": 1.0})
    assert line.startswith("ties: sfda gives 3 models one score (1 = its maximum: saturated): m1, m2, m4;")
    assert "SA (--sa released" in line and "more samples (N > D)" in line and "PCA" in line
    assert "\n" not in line
    line = ties.tie_line("sfda+released", {"m1": 0.8, "m2": 0.8, "m3": 0.7})
    assert "--pca-dim" in line and "--sa released" not in line
    line = ties.tie_line("gbc", {"a": -1e-25, "b": -1e-17, "c": -3.0})
    assert "one score to 1e-06 of its largest |score| (-1e-17 to -1e-25 = its maximum 0: saturated)" in line
    line = ties.tie_line("hscore", {"a": 9.0, "b": 9.0 + 1e-14, "c": 7.4})
    assert "C - 1" in line
    # one line for several groups of one metric
    line = ties.tie_line("knn", {"a": 0.8, "b": 0.8, "c": 0.5, "d": 0.5, "e": 0.9})
    assert line.count("\n") == 0 and "2 models one score (0.8): a, b; 2 models one score (0.5): c, d" in line


def test_tie_lines_restricted_to_models():
    scores = {"sfda": {"a": 1.0, "b": 1.0, "c": 0.5}, "logme": {"a": 1.0, "b": 2.0, "c": 3.0}}
    lines = ties.tie_lines(scores)
    assert len(lines) == 1 and lines[0].startswith("ties: sfda gives 2 models")
    assert ties.tie_lines(scores, {"sfda": ["a", "c"], "logme": ["a", "b", "c"]}) == []
    assert ties.tie_lines(scores, ["b", "c"]) == []


# --------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------

def test_score_prints_the_saturated_models(tmp_path, capsys):
    pytest.importorskip("torch")
    from helpers import class_features

    from te_gpu import save_zoo

    # N = 40 < D: every such model separates the 4 classes and SFDA reaches 1; D = 4 does not
    _, y = class_features(0, n=40, d=4, c=4)
    zoo = {f"wide{k}": class_features(k, n=40, d=96, c=4)[0] for k in range(3)}
    zoo["narrow"] = class_features(3, n=40, d=4, c=4, noise=3.0)[0]
    save_zoo(tmp_path / "zoo", "toy", zoo, y)
    code = main(["score", str(tmp_path / "zoo"), "--metrics", "sfda,logme", "--sa", "none",
                 "--out", str(tmp_path / "scores"), "--device", "cpu"])
    out, _ = capsys.readouterr()
    assert code == 0
    lines = out.splitlines()
    tie = [line for line in lines if line.startswith("ties:")]
    assert len(tie) == 1 and tie[0].startswith(
        "ties: sfda gives 3 models one score (1 = its maximum: saturated): wide0, wide1, wide2;")
    assert lines.index(tie[0]) > max(i for i, line in enumerate(lines) if line.startswith("rank"))
    res = json.loads((tmp_path / "scores" / "result.json").read_text())
    assert [res["scores"]["sfda"][f"wide{k}"] for k in range(3)] == [1.0, 1.0, 1.0]


def test_correlate_explains_a_tie(tmp_path, capsys):
    from te_gpu import write_scores

    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"a": 90.0, "b": 80.0, "c": 70.0, "d": 60.0, "e": 50.0}))
    write_scores(tmp_path / "sfda.json", {"a": 0.9, "b": 1.0, "c": 1.0, "d": 1.0, "e": 0.2}, duration=1.0)
    write_scores(tmp_path / "logme.json", {"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0, "e": 1.0}, duration=1.0)
    code = main(["correlate", str(tmp_path / "sfda.json"), str(tmp_path / "logme.json"),
                 "--truth", str(truth)])
    out, _ = capsys.readouterr()
    assert code == 0
    tie = [line for line in out.splitlines() if line.startswith("ties:")]
    assert len(tie) == 1 and tie[0].startswith(
        "ties: sfda gives 3 models one score (1 = its maximum: saturated): b, c, d;")
