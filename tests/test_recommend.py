"""te-gpu recommend (te_gpu.recommend): the consensus, the plain verdict, the command on a
zoo directory (with and without accuracies, plots, clean errors), and the figures'
error bars, name placement and regime labels."""
import json

import numpy as np
import pytest

from te_gpu import save_zoo
from te_gpu.bootstrap import BootstrapResult, bootstrap_zoo
from te_gpu.cli import main
from te_gpu.recommend import DEFAULT_METRICS, format_recommendation, from_bootstrap, recommend

from helpers import class_features


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _result(samples, point, method="percentile"):
    models = list(next(iter(samples.values())))
    b = len(next(iter(next(iter(samples.values())).values())))
    return BootstrapResult(models=models, replicates=b, seed=0, level=0.9, method=method,
                           point=point, samples={lb: {m: np.asarray(v, float) for m, v in d.items()}
                                                 for lb, d in samples.items()})


def test_verdict_when_the_metrics_agree():
    s = {"x": {"a": [3, 3, 3, 1], "b": [2, 2, 1, 2], "c": [1, 1, 2, 3]},
         "y": {"a": [9, 9, 9, 9], "b": [5, 6, 7, 8], "c": [1, 1, 1, 1]}}
    rec = from_bootstrap(_result(s, {"x": {"a": 3, "b": 2, "c": 1}, "y": {"a": 9, "b": 6, "c": 1}}),
                         k=2)
    assert rec.order == ["a", "b", "c"] and rec.picks == {"x": "a", "y": "a"}
    # consensus per redraw (mean rank): a first on redraws 0-2; on redraw 3 all three tie
    assert rec.p_first == pytest.approx({"a": (3 + 1 / 3) / 4, "b": 1 / 12, "c": 1 / 12})
    assert rec.lines[0] == "a: first in 83 % of resamples, in the top 2 in 100 %; the metrics agree"
    assert rec.lines[1] == "also first in some resamples: b (8 %), c (8 %)"
    text = format_recommendation(rec, top=2)
    assert "first %" in text and "... 1 more model(s)" in text and rec.lines[0] in text


def test_verdict_when_the_metrics_disagree_and_no_model_is_clearly_first():
    # 10 redraws, first places: a on 4, b on 4, c on 1, d on 1 (both labels alike)
    x = {"a": [5] * 4 + [3] * 6, "b": [2] * 4 + [5] * 4 + [2] * 2, "c": [1] * 8 + [5, 1],
         "d": [0] * 9 + [5]}
    rec = from_bootstrap(_result({"x": x, "y": x}, {"x": {"a": 4, "b": 3, "c": 2, "d": 1},
                                                   "y": {"a": 3, "b": 4, "c": 2, "d": 1}}))
    assert rec.picks == {"x": "a", "y": "b"} and rec.best == "a"
    assert rec.p_first == pytest.approx({"a": 0.4, "b": 0.4, "c": 0.1, "d": 0.1})
    assert rec.lines[0] == ("a: first in 40 % of resamples, in the top 3 in 100 %; the metrics "
                            "disagree: x picks a (first in 40 %); y picks b (first in 40 %)")
    assert rec.lines[1] == ("no clear winner: fine-tune the top 3 (a, b, c): one of them is first "
                            "in 90 % of resamples")
    assert len(rec.lines) == 2


def test_recommend_finds_the_clearly_best_model():
    x, y = class_features(0, n=90, d=6, c=3, spread=1.0)
    rng = np.random.default_rng(1)
    zoo = {"weak": x + rng.normal(scale=3.0, size=x.shape), "mid": x + rng.normal(size=x.shape),
           "strong": 3.0 * x}
    rec = recommend(zoo, y, replicates=30, seed=3, progress=False)
    assert rec.best == "strong" and rec.p_first["strong"] > 0.9
    assert rec.lines[0].startswith("strong: first in ") and "the metrics agree" in rec.lines[0]
    assert rec.labels == ["lda", "ncti", "knn"]
    assert set(rec.to_dict()["p_first"]) == set(zoo)


def test_cli_defaults_are_the_modules(capsys):
    # te-gpu recommend keeps no copy of these defaults: its --help reads the modules' own
    from te_gpu import bootstrap, recommend as rmod

    assert main(["recommend", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {','.join(rmod.DEFAULT_METRICS)})" in text
    assert f"(fewer once the verdict is settled) (default: {bootstrap.DEFAULT_REPLICATES})" in text
    assert f"(default: {rmod.MC_ERROR:g})" in text
    assert f"level of the intervals (default: {bootstrap.DEFAULT_LEVEL:g})" in text


def test_settled_reads_the_monte_carlo_error():
    from te_gpu.recommend import MIN_REDRAWS, settled

    def boot(first):                     # "a" scores 1 where first[r] says a, else "b" does
        a = np.array([1.0 if f == "a" else 0.0 for f in first])
        return _result({"s": {"a": a, "b": 1 - a, "c": np.full(len(first), -1.0)}},
                       {"s": {"a": 1, "b": 0, "c": -1}})

    # always the same first: settled as soon as the minimum is reached
    reason, _ = settled(boot("a" * MIN_REDRAWS), k=1, error=0.05)
    assert reason is not None and "0.05" in reason
    reason, wanted = settled(boot("a" * 10), k=1, error=0.05)   # p read as 11/12 after 10
    assert reason is None and wanted == int(np.ceil(11 / 144 / 0.0025)) == 31
    # first 75 % of the time: p (1 - p) / E^2 = 0.1875 / 0.0025 = 75 redraws (p read as
    # (pR + 1)/(R + 2)); at R = 40 it asks for about that many, and is settled at 80
    reason, wanted = settled(boot(("aaab" * 10)), k=1, error=0.05)
    p = (0.75 * 40 + 1) / 42
    assert reason is None and wanted == int(np.ceil(p * (1 - p) / 0.0025))
    assert settled(boot("aaab" * 20), k=1, error=0.05)[0] is not None
    # two models sharing the first place: shares of 1/2 need 0.25 / 0.05^2 = 100 redraws
    reason, wanted = settled(boot("ab" * 30), k=1, error=0.05)
    assert reason is None and 95 <= wanted <= 100
    assert settled(boot("ab" * 50), k=1, error=0.05)[0] is not None
    assert settled(boot("ab" * 50), k=1, error=0.02)[0] is None


def test_recommend_stops_when_settled_and_says_so():
    x, y = class_features(0, n=90, d=6, c=3, spread=1.0)
    rng = np.random.default_rng(1)
    zoo = {"weak": x + rng.normal(scale=3.0, size=x.shape), "mid": x + rng.normal(size=x.shape),
           "strong": 3.0 * x}
    rec = recommend(zoo, y, replicates=200, seed=3, progress=False)
    done = rec.redraws["done"]
    assert 20 <= done < 200 and rec.boot.replicates == done
    assert rec.redraws["cap"] == 200 and "settled" in rec.redraws["stopped_by"]
    assert f"{done} resamples of at most 200: the verdict is settled" in format_recommendation(rec)
    full = recommend(zoo, y, replicates=done, seed=3, progress=False, mc_error=None)
    assert full.redraws == dict(done=done, cap=done, stopped_by="all the redraws asked for (-B)")
    for lb in rec.labels:                # the same redraws as a run asked for exactly that many
        for m in zoo:
            np.testing.assert_allclose(rec.boot.samples[lb][m], full.boot.samples[lb][m],
                                       rtol=1e-12)
    with pytest.raises(ValueError, match="mc_error"):
        recommend(zoo, y, replicates=20, progress=False, mc_error=0.7)


@pytest.fixture
def zoo_dir(tmp_path):
    x, y = class_features(2, n=60, d=5, c=3, spread=1.0)
    rng = np.random.default_rng(0)
    zoo = {"alpha": 3.0 * x, "beta": x + rng.normal(size=x.shape),
           "gamma": x + rng.normal(scale=3.0, size=x.shape)}
    save_zoo(tmp_path / "zoo", "toy", zoo, y)
    (tmp_path / "truth.json").write_text(json.dumps({"alpha": 90.0, "beta": 70.0, "gamma": 40.0}))
    return tmp_path


def test_recommend_reads_the_models_own_predictions_for_leep(zoo_dir, capsys):
    from te_gpu.io import prediction_path

    y = np.load(zoo_dir / "zoo" / "alpha_toy_label.npy")
    p = np.full((y.size, 3), 0.1)
    p[np.arange(y.size), y] = 0.8                    # alpha's own classifier is right
    np.save(prediction_path(zoo_dir / "zoo", "alpha", "toy"), p)
    np.save(prediction_path(zoo_dir / "zoo", "beta", "toy"), np.full((y.size, 3), 1 / 3))
    code, out, err = run(capsys, "recommend", str(zoo_dir / "zoo"), "--metrics", "leep", "-B", "10",
                         "--json", str(zoo_dir / "rec.json"))
    assert code == 0, err
    saved = json.loads((zoo_dir / "rec.json").read_text())
    assert "alpha: first in 100 %" in out
    assert "note: leep skipped for 1 model(s)" in out   # gamma: no predictions, said so
    assert saved["order"] == ["alpha", "beta"] and set(saved["bootstrap"]["point"]["leep"]) == {"alpha", "beta"}


def test_recommend_command(zoo_dir, capsys):
    tmp = zoo_dir
    code, out, err = run(capsys, "recommend", str(tmp / "zoo"), "-B", "20", "-q",
                         "--json", str(tmp / "rec.json"))
    assert code == 0, err
    assert "alpha: first in " in out and "the metrics agree" in out
    saved = json.loads((tmp / "rec.json").read_text())
    assert saved["best"] == "alpha" and saved["dataset"] == "toy"
    assert len(saved["bootstrap"]["samples"]["knn"]["beta"]) == 20
    (tmp / "base.json").write_text(json.dumps({"ImageNet top-1": 0.2, "parameters": -0.4}))
    code, out, err = run(capsys, "recommend", str(tmp / "zoo"), "-B", "20", "-q", "--metrics", "lda,knn",
                         "--truth", str(tmp / "truth.json"), "--regime", "lft",
                         "--plots", str(tmp / "plots"), "--baselines", str(tmp / "base.json"))
    assert code == 0, err
    assert "against the accuracies of truth.json (the most accurate: alpha" in out
    assert "consensus  tau_w" in out
    for name in ("lda_vs_accuracy.png", "knn_vs_accuracy.png", "tau_w.png"):
        assert (tmp / "plots" / name).stat().st_size > 1000


def test_recommend_plots_the_rankings_the_store_knows(zoo_dir, capsys, monkeypatch):
    """The tau_w figure draws the manifest's parameters and feature width as lines; the
    accuracy axis says (%) for percentages only."""
    import te_gpu.pipeline.plots as plots
    from te_gpu.pipeline.extract import FORMAT, write_manifest

    tmp = zoo_dir
    write_manifest(tmp / "zoo", {"format": FORMAT, "version": 1, "datasets": {"toy": {"models": {
        "alpha": {"params": 3e6, "dim": 5}, "beta": {"params": 2e6, "dim": 5},
        "gamma": {"params": 1e6, "dim": 4}}}}})
    seen = []
    monkeypatch.setattr(plots, "tau_figure", lambda rows, path, **kw: seen.append(kw) or path)
    monkeypatch.setattr(plots, "score_figure", lambda panels, acc, path, **kw: seen.append(kw) or path)
    code, out, err = run(capsys, "recommend", str(tmp / "zoo"), "-B", "20", "-q", "--metrics", "lda",
                         "--truth", str(tmp / "truth.json"), "--plots", str(tmp / "plots"))
    assert code == 0, err
    score_kw, tau_kw = seen
    from te_gpu.baselines import static_tau

    acc = {"alpha": 90.0, "beta": 70.0, "gamma": 40.0}
    assert tau_kw["baselines"] == {
        "parameters": static_tau({"alpha": 3e6, "beta": 2e6, "gamma": 1e6}, acc)["tau_w"],
        "feature width": static_tau({"alpha": 5, "beta": 5, "gamma": 4}, acc)["tau_w"],
        "feature width, narrowest first": static_tau({"alpha": -5, "beta": -5, "gamma": -4}, acc)["tau_w"]}
    assert score_kw["xlabel"] == "accuracy (%)" and "accuracy (%)" in tau_kw["title"]
    (tmp / "frac.json").write_text(json.dumps({"alpha": 0.9, "beta": 0.7, "gamma": 0.4}))
    seen.clear()
    code, out, err = run(capsys, "recommend", str(tmp / "zoo"), "-B", "20", "-q", "--metrics", "lda",
                         "--truth", str(tmp / "frac.json"), "--plots", str(tmp / "plots"))
    assert code == 0, err
    assert seen[0]["xlabel"] == "accuracy" and "(%)" not in seen[1]["title"]
    from te_gpu.pipeline.plots import accuracy_label

    assert accuracy_label("lft", percent=False) == "linear-probe accuracy"


def test_recommend_truth_runs_the_check_the_regimes_sets_were_chosen_by(zoo_dir, capsys):
    """With --truth, recommend gives the rankings that ignore the target data (the store's
    parameters and widths, both ways) on the same models, and whether the consensus passes
    the check: the most accurate model in its top 3 on >= 90 % of resamples, and a tau_w
    above every static ranking (a user's --baselines replace them)."""
    from te_gpu import regimes
    from te_gpu.baselines import static_tau
    from te_gpu.pipeline.extract import FORMAT, write_manifest

    tmp = zoo_dir
    write_manifest(tmp / "zoo", {"format": FORMAT, "version": 1, "datasets": {"toy": {"models": {
        "alpha": {"params": 3e6, "dim": 6}, "beta": {"params": 2e6, "dim": 5},
        "gamma": {"params": 1e6, "dim": 4}}}}})
    args = ["recommend", str(tmp / "zoo"), "-B", "20", "-q", "--metrics", "lda,knn", "--truth",
            str(tmp / "truth.json"), "--json", str(tmp / "r.json")]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    acc = {"alpha": 90.0, "beta": 70.0, "gamma": 40.0}
    statics = {"parameters": static_tau({"alpha": 3e6, "beta": 2e6, "gamma": 1e6}, acc)["tau_w"],
               "feature width": static_tau({"alpha": 6, "beta": 5, "gamma": 4}, acc)["tau_w"],
               "feature width, narrowest first": static_tau({"alpha": -6, "beta": -5, "gamma": -4}, acc)["tau_w"]}
    assert statics["parameters"] == pytest.approx(1.0) and statics["feature width, narrowest first"] < 0
    truth = json.loads((tmp / "r.json").read_text())["truth"]
    assert truth["static"] == pytest.approx(statics)
    assert ("static rankings (no target data): parameters +1.000, feature width +1.000, "
            f"feature width, narrowest first {statics['feature width, narrowest first']:+.3f}") in out
    check = truth["check"]           # nothing beats a static ranking that orders them exactly
    assert check["label"] == "consensus" and check["best_static"] == "parameters"
    assert check["passes"] is False and check["above_static"] is False and check["top_ok"] is True
    assert check["tau_w"] == truth["rows"][-1]["tau_w"]
    assert (f"for consensus: the most accurate model in the top 3 in 100 % of resamples (>= 90 %), "
            f"tau_w {check['tau_w']:+.3f} not above the best static ranking (parameters, +1.000): fails") in out
    (tmp / "base.json").write_text(json.dumps({"ImageNet top-1": -0.25}))
    code, out, err = run(capsys, *args, "--baselines", str(tmp / "base.json"))
    assert code == 0, err
    truth = json.loads((tmp / "r.json").read_text())["truth"]
    assert truth["static"] == {"ImageNet top-1": -0.25} and truth["check"]["tau_w"] > -0.25
    assert truth["check"]["passes"] is True and "(ImageNet top-1, -0.250): passes" in out
    assert regimes.STATIC_NAMES["width reversed"] == "feature width, narrowest first"


def test_the_check_needs_the_top_share_and_a_tau_w_strictly_above_the_best_static():
    from te_gpu import regimes

    def row(top, tau):
        return dict(label="consensus", k=3, p_best_top=top, tau_w=tau)

    statics = {"parameters": 0.4, "feature width, narrowest first": 0.6}
    assert regimes.check(row(0.9, 0.61), statics)["passes"] is True
    assert regimes.check(row(0.89, 0.9), statics)["passes"] is False        # top 3 too rarely
    level = regimes.check(row(1.0, 0.6), statics)                            # a tie is not above
    assert level["passes"] is False and level["best_static"] == "feature width, narrowest first"
    assert "below 90 %" in regimes.check_line(regimes.check(row(0.5, 0.9), statics))
    undecided = regimes.check(row(1.0, 0.9), {})
    assert undecided["passes"] is None and undecided["best_static"] is None
    assert regimes.check_line(undecided).endswith("undecided")


@pytest.mark.parametrize("argv, message", [
    (["--plots", "p"], "give --truth too"),
    (["--baselines", "b.json"], "--baselines are tau_w against accuracies: give --truth too"),
    (["-B", "1"], "argument --replicates/-B: needs at least 2 resamples"),
    (["--level", "95"], "argument --level: must lie strictly between 0 and 1"),
    (["--k", "0"], "argument --k: must be a positive integer"),
    (["--top", "0"], "argument --top: must be a positive integer"),
    (["--metrics", "nope"], "unknown metric"),
    (["--baselines", "/no/such.json", "--truth", "x.json", "--plots", "p"], "--baselines"),
])
def test_recommend_errors(zoo_dir, capsys, argv, message):
    code, _, err = run(capsys, "recommend", str(zoo_dir / "zoo"), "-q", *argv)
    assert code == 2 and message in err and "Traceback" not in err, err


def test_recommend_needs_two_models(tmp_path, capsys):
    x, y = class_features(0, n=30, d=4, c=3)
    save_zoo(tmp_path / "z", "a", {"m": x}, y)
    code, _, err = run(capsys, "recommend", str(tmp_path / "z"), "-q")
    assert code == 2 and "at least 2" in err
    code, _, err = run(capsys, "recommend", str(tmp_path / "nothing"), "-q")
    assert code == 2 and "no such directory" in err


# ------------------------------------------------------------------ figures

def test_place_labels_keeps_names_apart_and_off_obstacles():
    from te_gpu.pipeline.plots import place_labels

    boxes = [(10, 50, 40, 12, -30)] * 6 + [(190, 50, 40, 12, 120)]
    obstacles = [(60, 40, 20, 30)]
    where = place_labels(boxes, (0, 0, 200, 200), obstacles=obstacles)
    rects = [(x, y, b[2], b[3]) for (x, y), b in zip(where, boxes)]
    for i, (x, y, w, h) in enumerate(rects):
        assert 0 <= x and x + w <= 200 and 0 <= y and y + h <= 200
        for (px, py, pw, ph) in rects[:i] + obstacles:
            assert not (x < px + pw and px < x + w and y < py + ph and py < y + h)
    assert where[0] == (10, 50)            # the first one keeps its place
    assert where[-1][0] == 120             # no room on the right: the mirror side


def test_figures_with_intervals_names_and_regime(tmp_path):
    from PIL import Image

    from te_gpu.pipeline.plots import accuracy_label, score_figure, tau_figure

    assert accuracy_label("lft") == "linear-probe accuracy (%)"
    assert accuracy_label("finetune") == "fine-tune accuracy (%)"
    assert accuracy_label("lbft") == "last-block fine-tune accuracy (%)"
    assert accuracy_label(None) == "accuracy (%)"
    acc = {"a": 70.0, "b": 70.5, "c": 71.0}
    scores = {"a": 1.0, "b": 1.01, "c": 1.02}
    p = score_figure([("s", scores)], acc, tmp_path / "s.png", xlabel=accuracy_label("lft"),
                     intervals=[{m: (v - 0.1, v + 0.1) for m, v in scores.items()}], names=True)
    assert Image.open(p).size[0] > 500
    with pytest.raises(ValueError, match="one per panel"):
        score_figure([("s", scores)], acc, tmp_path / "t.png", intervals=[None, None])
    q = tau_figure([("logme", 0.5, 0.2, 0.8), ("sfda+released", 0.7, None, None)],
                   tmp_path / "tau.png", baselines={"ImageNet top-1": 0.4, "width": 0.41})
    assert Image.open(q).size[1] == 460
    with pytest.raises(ValueError):
        tau_figure([], tmp_path / "none.png")


def test_plot_scores_names_the_regimes_axis(tmp_path, capsys, monkeypatch):
    import te_gpu.pipeline.plots as plots

    seen = {}
    real = plots.score_figure
    monkeypatch.setattr(plots, "score_figure", lambda *a, **k: seen.update(k) or real(*a, **k))
    (tmp_path / "logme.json").write_text(json.dumps({"a": 1.0, "b": 0.5, "c": 0.7}))
    (tmp_path / "truth.json").write_text(json.dumps({"a": 90, "b": 50, "c": 60}))
    code, _, err = run(capsys, "plot", "scores", str(tmp_path / "logme.json"), "--truth",
                       str(tmp_path / "truth.json"), "--metric", "logme", "--out", str(tmp_path / "p.png"))
    assert code == 0, err
    assert seen["xlabel"] == "accuracy (%)"
    from te_gpu.pipeline.finetune import write_ground_truth

    for regime, label in (("lft", "linear-probe accuracy (%)"), ("finetune", "fine-tune accuracy (%)")):
        write_ground_truth(tmp_path / f"{regime}.json", group="g", regime=regime, dataset="d",
                           accuracies={"a": 90, "b": 50, "c": 60})
        code, _, err = run(capsys, "plot", "scores", str(tmp_path / "logme.json"), "--truth",
                           str(tmp_path / f"{regime}.json"), "--metric", "logme",
                           "--out", str(tmp_path / "q.png"))
        assert code == 0, err
        assert seen["xlabel"] == label


def test_bootstrap_result_round_trips_through_json(tmp_path):
    x, y = class_features(1, n=40, d=4, c=2)
    res = bootstrap_zoo({"a": x, "b": 2 * x + np.random.default_rng(0).normal(size=x.shape)}, y,
                        metrics=["lda"], replicates=5, progress=False)
    res.to_json(tmp_path / "b.json")
    back = BootstrapResult.from_dict(json.loads((tmp_path / "b.json").read_text()))
    assert back.interval("lda") == res.interval("lda") and back.p_first("lda") == res.p_first("lda")
    with pytest.raises(ValueError, match="no redraw scores"):
        BootstrapResult.from_dict(res.to_dict(samples=False))


def _three_model_zoo():
    x, y = class_features(0, n=90, d=6, c=3, spread=1.0)
    rng = np.random.default_rng(1)
    return {"weak": x + rng.normal(scale=3.0, size=x.shape), "mid": x + rng.normal(size=x.shape),
            "strong": 3.0 * x}, y


def test_the_static_ranking_a_regime_names_is_shown_from_the_feature_widths():
    """The ranking by width the regimes' evidence names is read off the zoo's own feature
    widths: its top k, with the models tied with the k-th; none for the default set or
    without widths (from_bootstrap alone); the widths go to to_dict."""
    from te_gpu.recommend import from_bootstrap, static_lines

    x, y = class_features(2, n=60, d=8, c=3, spread=1.0)
    rng = np.random.default_rng(3)
    zoo = {"w8": x, "w3": x[:, :3] + rng.normal(size=(60, 3)), "w5": x[:, :5],
           "w5b": x[:, 3:] + rng.normal(size=(60, 5)), "w7": x[:, :7] * 2}
    rec = recommend(zoo, y, transfer="lbft", replicates=20, progress=False)
    assert rec.widths == {"w8": 8, "w3": 3, "w5": 5, "w5b": 5, "w7": 7}
    tied = sorted(["w5", "w5b"], key=rec.order.index)           # a tie: the consensus's order
    assert rec.lines[-1] == ("feature width, narrowest first, on this zoo (no target data): "
                             f"w3 (3), {tied[0]} (5), {tied[1]} (5)")
    rec.k = 2                                                    # the tie at the edge is shown
    assert static_lines(rec, ["width reversed"])[0].endswith(f"w3 (3), {tied[0]} (5), {tied[1]} (5)")
    rec.k = 1
    assert static_lines(rec, ["width"]) == [
        "feature width, widest first, on this zoo (no target data): w8 (8)"]
    assert static_lines(rec, ["parameters"]) == []               # not in the features
    assert rec.to_dict()["widths"] == rec.widths
    plain = recommend(zoo, y, replicates=20, progress=False)
    assert not any("on this zoo" in line for line in plain.lines)
    bare = from_bootstrap(rec.boot, rec.labels, transfer="lbft")
    assert bare.widths == {} and not any("on this zoo" in line for line in bare.lines)


def test_transfer_takes_the_regimes_set_and_names_the_regime():
    from te_gpu import regimes
    from te_gpu.recommend import DEFAULT_NOTE, recommend_per_regime

    zoo, y = _three_model_zoo()
    rec = recommend(zoo, y, transfer="finetune", replicates=20, progress=False)
    assert rec.labels == list(regimes.REGIMES["finetune"].labels) and rec.transfer == "finetune"
    assert sorted(rec.boot.labels) == sorted(rec.labels)    # those only, not metrics x settings
    assert rec.lines[0] == ("for fine-tuning the whole network (--transfer finetune; the other "
                            "regimes: --transfer lft, lbft)")
    assert (regimes.weak_line("finetune") in rec.lines) == bool(regimes.REGIMES["finetune"].weak)
    assert rec.best == "strong" and DEFAULT_NOTE not in rec.lines
    # full fine-tuning's own accuracies move with the training run: the verdict says so, then
    # shows the static ranking its evidence names (every model 6 wide here: all tie)
    width_line = "feature width, narrowest first, on this zoo (no target data): "
    assert regimes.REGIMES["finetune"].caveat and rec.lines[-2] == regimes.REGIMES["finetune"].caveat
    assert rec.lines[-1] == width_line + "strong (6), mid (6), weak (6)"
    probe = recommend(zoo, y, transfer="lft", replicates=20, progress=False)
    assert probe.lines[-2] == regimes.weak_line("lft") and not regimes.REGIMES["lft"].caveat
    assert "narrowest first" in probe.lines[-2] and "held-out zoos" in probe.lines[-2]
    assert probe.lines[-1].startswith(width_line)
    lbft = recommend(zoo, y, transfer="lbft", replicates=20, progress=False)
    assert not any(line.startswith("weak evidence") for line in lbft.lines)
    plain = recommend(zoo, y, replicates=20, progress=False)      # neither: the fast default
    assert plain.labels == list(DEFAULT_METRICS) and plain.transfer is None
    assert plain.lines[-1] == DEFAULT_NOTE
    with pytest.raises(ValueError, match="either transfer"):
        recommend(zoo, y, transfer="lft", metrics=("lda",), progress=False)
    with pytest.raises(ValueError, match="unknown transfer regime"):
        recommend(zoo, y, transfer="probe", progress=False)
    every = recommend_per_regime(zoo, y, replicates=20, progress=False)
    assert list(every) == list(regimes.REGIMES)
    assert len({id(r.boot) for r in every.values()}) == 1          # one set of redraws
    assert set(next(iter(every.values())).boot.labels) == {
        lb for r in regimes.REGIMES.values() for lb in r.labels}
    for name, r in every.items():
        assert r.labels == list(regimes.REGIMES[name].labels) and r.transfer == name


def test_cli_transfer_all_answers_each_regime(tmp_path, capsys):
    zoo, y = _three_model_zoo()
    save_zoo(tmp_path / "z", "toy", zoo, y)
    assert main(["recommend", str(tmp_path / "z"), "--transfer", "all", "-B", "4", "--device",
                 "cpu", "-q", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    for name in ("lft", "lbft", "finetune"):
        assert f"(--transfer {name};" in out
    # each regime's evidence names the ranking by width: shown from the store's features
    assert out.count("feature width, narrowest first, on this zoo (no target data): ") == 3
    saved = json.loads((tmp_path / "r.json").read_text())
    assert set(saved["regimes"]) == {"lft", "lbft", "finetune"}
    assert saved["widths"] == {m: x.shape[1] for m, x in zoo.items()}
    (tmp_path / "acc.json").write_text(json.dumps({"strong": 90.0, "mid": 80.0, "weak": 50.0}))
    (tmp_path / "base.json").write_text(json.dumps({"prior": 0.5}))
    assert main(["recommend", str(tmp_path / "z"), "--transfer", "all", "-B", "4", "--device", "cpu",
                 "-q", "--truth", str(tmp_path / "acc.json"), "--baselines", str(tmp_path / "base.json"),
                 "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    truth = json.loads((tmp_path / "r.json").read_text())["truth"]
    assert set(truth["regimes"]) == set(truth["checks"]) == {"lft", "lbft", "finetune"}
    for name, c in truth["checks"].items():
        assert c["tau_w"] == truth["regimes"][name][-1]["tau_w"] and c["best_static"] == "prior"
        assert c["passes"] == (c["top_share"] >= 0.9 and c["tau_w"] > 0.5)
    assert out.count("the check the regimes' sets were chosen by") == 3
    assert main(["recommend", str(tmp_path / "z"), "--transfer", "lft", "--metrics", "lda"]) == 2
    assert "--transfer chooses the metric set" in capsys.readouterr().err


def test_cli_transfer_is_judged_against_its_own_regimes_accuracies(tmp_path, capsys):
    """recommend --transfer R --truth T judges R's set against T's R table (the check its set
    was chosen by), not T's default one; --regime judges it against another, with a note;
    --transfer all judges each regime against its own table and leaves out, with a note,
    a regime T has no table for; one regime T lacks is an error that names --regime."""
    from te_gpu.pipeline.finetune import write_ground_truth

    zoo, y = _three_model_zoo()
    save_zoo(tmp_path / "z", "toy", zoo, y)
    truth = tmp_path / "t.json"
    write_ground_truth(truth, group="g", regime="lft", dataset="toy",
                       accuracies={"strong": 90.0, "mid": 80.0, "weak": 50.0})
    write_ground_truth(truth, group="g", regime="finetune", dataset="toy",
                       accuracies={"strong": 50.0, "mid": 80.0, "weak": 90.0})
    base = ["recommend", str(tmp_path / "z"), "-B", "4", "--device", "cpu", "--truth", str(truth)]

    def judged(*extra):
        code, out, err = run(capsys, *base, *extra, "-q", "--json", str(tmp_path / "r.json"))
        assert code == 0, err
        return out, json.loads((tmp_path / "r.json").read_text())["truth"]

    out, t = judged("--transfer", "lft")
    assert t["info"]["regime"] == "lft" and t["rows"][0]["best"] == ["strong"]
    assert "against the accuracies of t.json (g/lft/toy) (the most accurate: strong;" in out and "note:" not in out
    out, t = judged("--transfer", "lft", "--regime", "finetune")
    assert t["info"]["regime"] == "finetune" and t["rows"][0]["best"] == ["weak"]
    assert "note: judged against finetune accuracies (--regime), not lft's" in out
    out, t = judged("--transfer", "all")
    assert {n: i["regime"] for n, i in t["infos"].items()} == {"lft": "lft", "finetune": "finetune"}
    assert set(t["checks"]) == set(t["statics"]) == {"lft", "finetune"}
    assert t["regimes"]["lft"][0]["best"] == ["strong"] and t["regimes"]["finetune"][0]["best"] == ["weak"]
    code, out, err = run(capsys, *base, "--transfer", "all")     # the log, which -q silences
    assert code == 0 and "note: --transfer lbft not judged:" in out and "no regime 'lbft'" in out
    code, _, err = run(capsys, *base, "--transfer", "lbft")
    assert code == 2 and "no regime 'lbft'" in err and "--regime R judges it against another" in err
