"""Every option of `te-gpu`, walked from build_parser(): each is run with a valid value on a
tiny zoo (RUNS below), or named in COVERED_ELSEWHERE with the test that runs it, so an option
added without a test fails here. Each option with a typed value (a number, a choice, a
comma-separated list) refuses one invalid value with exit 2 and one line naming the option.

The zoo: 3 models x 60 samples x 8 dimensions x 3 classes, generated; everything runs on the
CPU, in-process (te_gpu.cli.main)."""
import argparse
import ast
import functools
import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers import class_features  # noqa: E402

from te_gpu import catalogue, cli, save_zoo  # noqa: E402
from te_gpu.cli import build_parser, main  # noqa: E402

TESTS = Path(__file__).parent
MODELS = ("m0", "m1", "m2")
# what a message must never show: Python's own words instead of the option's
INTERNALS = ("Traceback", "not supported between", "has no attribute", "object is not",
             "invalid checked value", "invalid int value", "invalid float value")


# ---------------------------------------------------------------- the parser's options

def subcommands(parser, path=()):
    """(command path, its parser) for the top level and every subcommand."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommands(sub, path + (name,))


def optional_actions(parser):
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def key(path, action) -> str:
    """``"score --models"``: the command and the option's first long name."""
    longs = [s for s in action.option_strings if s.startswith("--")]
    return " ".join(path + ((longs or action.option_strings)[0],))


def all_options() -> dict:
    return {key(path, a): (path, a) for path, p in subcommands(build_parser())
            for a in optional_actions(p)}


def options_in(argv) -> set:
    """Keys of the options an argv gives (short forms included)."""
    argv = [str(a) for a in argv]
    by_command = dict(subcommands(build_parser()))
    path = ()
    for token in argv:
        if path + (token,) in by_command:
            path += (token,)
    strings = {s: key(path, a) for a in optional_actions(by_command[path]) for s in a.option_strings}
    return {strings[t.split("=")[0]] for t in argv if t.split("=")[0] in strings}


# ---------------------------------------------------------------- the tiny workspace

def _truth_file(path):
    """A te-gpu finetune file with two groups and two regimes: --group and --regime must be read."""
    acc = {"m0": 60.0, "m1": 70.0, "m2": 90.0}
    table = {"regimes": {"lft": {"toy": acc}, "lbft": {"toy": {m: 100 - v for m, v in acc.items()}}}}
    path.write_text(json.dumps({"groups": {"a": table, "b": table}}))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A zoo of 3 models (m2 the most class-separated), its truth, a prior, a score folder."""
    root = tmp_path_factory.mktemp("options")
    zoo = {}
    for i, m in enumerate(MODELS):
        x, y = class_features(i, n=60, d=8, c=3, spread=1.0 + i)
        zoo[m] = x
    save_zoo(root / "zoo", "toy", zoo, y)
    # a store with PED reference features beside the target's (data set "ref")
    save_zoo(root / "zoo_ped", "toy", zoo, y)
    save_zoo(root / "zoo_ped", "ref", {m: 2.0 * x[:40] + 1.0 for m, x in zoo.items()}, y[:40])
    _truth_file(root / "truth.json")
    (root / "prior.json").write_text(json.dumps({"m0": 1.0, "m1": 2.0, "m2": 3.0}))
    (root / "base.json").write_text(json.dumps({"ImageNet top-1": 0.3}))
    (root / "zoo.json").write_text(json.dumps([{"arch": "resnet10t", "size": 32, "name": "zf"}]))
    assert main(["score", str(root / "zoo"), "--metrics", "logme,knn", "--sa", "none,released",
                 "--device", "cpu", "--out", str(root / "scores"), "-q"]) == 0
    return root


def _json(path):
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------- runs with valid values
# Each run: an argv ("{ws}" is the workspace) and a check of what its options did.

def _score_subset(ws, out):
    res = _json(ws / "s1" / "result.json")
    assert out == ""                                                    # --quiet
    assert set(res["scores"]) == {"logme", "knn", "logme+described", "knn+described"}
    assert all(set(v) == {"m0", "m2"} for v in res["scores"].values())  # --models m0,m2
    opts = res["options"]
    assert opts["options"]["knn"] == {"k": 5, "distance": "euclidean"}
    assert res["precision"] == "fast" and res["device"] == "cpu" and opts["dataset"] == "toy"
    assert opts["sa_options"] == dict(alpha=0.1, sigma=0.5, force=2.0, pca_dim=4, gate=False)
    assert (ws / "s1.csv").read_text().splitlines()[0].startswith("model,logme,")


def _score_ped_reference(ws, out):
    """--ped-reference: PED rescaled by each model's features on the folder's "ref" data."""
    import te_gpu
    from te_gpu import load_zoo

    zoo, y = load_zoo(ws / "zoo_ped", "toy")
    ref, _ = load_zoo(ws / "zoo_ped", "ref")
    want = te_gpu.score_zoo(zoo, y, metrics=["sfda"], sa="ped", ped_reference=ref, progress=False)
    own = te_gpu.score_zoo(zoo, y, metrics=["sfda"], sa="ped", progress=False)
    got = _json(ws / "sp" / "result.json")["scores"]["sfda+ped"]
    for m in zoo:
        assert got[m] == pytest.approx(want.scores["sfda+ped"][m], rel=1e-12)
    assert got != own.scores["sfda+ped"]


def _recommend_ped_reference(ws, out):
    assert set(_json(ws / "rec_ped.json")["p_first"]) == {"m0", "m1", "m2"}


def _score_restart(ws, out):
    res = _json(ws / "s1" / "result.json")
    assert set(res["scores"]) == {"logme"} and set(res["scores"]["logme"]) == set(MODELS)
    assert res["options"]["sa_options"]["alpha"] == 0.2 and "rank" in out


def _recommend_transfer(ws, out):
    from te_gpu import regimes

    rec = _json(ws / "rec_lbft.json")
    assert rec["transfer"] == "lbft" and rec["labels"] == list(regimes.REGIMES["lbft"].labels)
    assert rec["verdict"][0].startswith("for fine-tuning the last block (--transfer lbft")


def _recommend(ws, out):
    rec = _json(ws / "rec.json")
    boot = rec["bootstrap"]
    assert boot["replicates"] == 4 and boot["seed"] == 3 and boot["level"] == 0.8
    assert boot["options"]["redraws"] == dict(done=4, cap=4,
                                              stopped_by="all the redraws asked for (-B)")
    assert boot["models"] == list(MODELS) and rec["k"] == 2
    assert rec["labels"] == ["lda", "knn", "lda+released", "knn+released", "lda+ped", "knn+ped"]
    opts = boot["options"]
    assert opts["options"]["knn"]["k"] == 1 and opts["precision"] == "fast"
    assert opts["sa"][1] == dict(alpha=0.01, sigma=0.5, force=1.5, pca_dim=4, gate=False, variant="released")
    assert opts["sa"][2] == dict(variant="ped", **catalogue.PED_DEFAULTS)   # SA's numbers are not PED's
    assert rec["truth"]["info"]["group"] == "a" and rec["truth"]["info"]["regime"] == "lft"
    assert (ws / "plots" / "tau_w.png").stat().st_size > 1000
    assert out.count("\n") > 3                                          # the table, the verdict


def _recommend_defaults(ws, out):
    from te_gpu import bootstrap, recommend

    rec = _json(ws / "rec_default.json")
    assert rec["labels"] == list(recommend.DEFAULT_METRICS)
    assert rec["bootstrap"]["level"] == bootstrap.DEFAULT_LEVEL
    assert rec["bootstrap"]["replicates"] == 5


def _correlate(ws, out):
    rows = _json(ws / "corr.json")["rows"]
    assert [r["label"] for r in rows] == ["logme", "knn"]               # --labels, in that order
    assert {"rel@1", "rel@2"} <= set(rows[0]) and "rel@3" not in rows[0]
    assert "a/lft/toy" in out and "prior" in out


def _correlate_list(ws, out):
    assert "group1:" in out and "group2:" in out


def _baselines(ws, out):
    report = _json(ws / "base_out.json")
    assert report["random"]["draws"] == 50 and report["truth"]["group"] == "a"
    assert "prior" in report["rankings"]


def _bench(ws, out):
    rows = _json(ws / "bench.json")["rows"]
    assert [(r["device"], r["precision"]) for r in rows] == [("cpu", "fast")]


def _plot_scores(ws, out):
    assert (ws / "ps.png").stat().st_size > 1000 and "wrote" in out


def _plot_features(ws, out):
    assert (ws / "pf.png").stat().st_size > 1000 and "SA applied" in out


def _version(ws, out):
    assert out.startswith("te_gpu ")


def _extract(ws, out):
    from te_gpu import load_zoo

    zoo, y = load_zoo(ws / "x_train", "dg")
    assert sorted(zoo) == ["r", "zf"] and y.shape == (30,)


def _extract_overwrite(ws, out):
    assert "cached" not in out and "2 model(s)" in out


def _finetune(ws, out):
    data = _json(ws / "gt.json")
    assert set(data["groups"]["g"]["regimes"]["lft"]["dg"]) == {"r", "zf"}
    assert out.count("[features: ") == 2                                # read from the stores


ZOO, WS = "{ws}/zoo", "{ws}"
TIMM = ["--data", "digits", "--n", "30", "--seed", "1", "--model", "resnet10t,size=32,name=r",
        "--zoo-file", "{ws}/zoo.json", "--dataset", "dg", "--batch-size", "16", "--workers", "1",
        "--device", "cpu", "--no-amp"]
RUNS = {
    "score subset": (["score", ZOO, "--dataset", "toy", "--models", "m0,m2", "--metrics", "logme,knn",
                      "--opt", "knn.k=5", "--sa", "none,described", "--preset", "group2",
                      "--sigma", "0.5", "--force", "2", "--pca-dim", "4", "--no-gate",
                      "--precision", "fast", "--device", "cpu", "--batch-size", "1", "--chunk", "1",
                      "--out", "{ws}/s1", "--csv", "{ws}/s1.csv", "--quiet"], _score_subset),
    "score ped reference": (["score", "{ws}/zoo_ped", "--dataset", "toy", "--metrics", "sfda",
                             "--sa", "ped", "--ped-reference", "ref", "--out", "{ws}/sp", "-q"],
                            _score_ped_reference),
    "recommend ped reference": (["recommend", "{ws}/zoo_ped", "--dataset", "toy", "--metrics", "lda",
                                 "--sa", "ped", "--ped-reference", "ref", "-B", "3", "--device", "cpu",
                                 "--json", "{ws}/rec_ped.json", "-q"], _recommend_ped_reference),
    "score restart": (["score", ZOO, "--metrics", "logme", "--sa", "none", "--alpha", "0.2",
                       "--out", "{ws}/s1", "--restart"], _score_restart),
    "recommend": (["recommend", ZOO, "--dataset", "toy", "--models", "m0,m1,m2", "--metrics", "lda,knn",
                   "--opt", "knn.k=1", "--sa", "none,released,ped", "--preset", "supervised",
                   "--alpha", "0.01", "--sigma", "0.5", "--force", "1.5", "--pca-dim", "4", "--no-gate",
                   "-B", "4", "--mc-error", "0", "--seed", "3", "--level", "0.8", "--k", "2",
                   "--top", "2", "--precision", "fast", "--device", "cpu", "--batch-size", "3",
                   "-t", "{ws}/truth.json", "--regime", "lft", "--group", "a", "--plots", "{ws}/plots",
                   "--baselines", "{ws}/base.json", "--json", "{ws}/rec.json", "-q"], _recommend),
    "recommend defaults": (["recommend", ZOO, "-B", "5", "--device", "cpu",
                            "--json", "{ws}/rec_default.json", "-q"], _recommend_defaults),
    "recommend transfer": (["recommend", ZOO, "--transfer", "lbft", "-B", "4", "--device", "cpu",
                            "--json", "{ws}/rec_lbft.json", "-q"], _recommend_transfer),
    "correlate": (["correlate", "{ws}/scores", "--truth", "{ws}/truth.json", "--regime", "lft",
                   "--group", "a", "--dataset", "toy", "--labels", "logme,knn", "--k", "1,2",
                   "--json", "{ws}/corr.json", "--prior", "{ws}/prior.json"], _correlate),
    "correlate list": (["correlate", "--list"], _correlate_list),
    "baselines": (["baselines", "--truth", "{ws}/truth.json", "--regime", "lft", "--group", "a",
                   "--dataset", "toy", "--prior", "{ws}/prior.json", "--draws", "50", "--seed", "2",
                   "--json", "{ws}/base_out.json"], _baselines),
    "bench": (["bench", "--models", "2", "--n", "30", "--dim", "4", "--classes", "3", "--metrics", "lda",
               "--sa", "none", "--devices", "cpu", "--precision", "fast", "--repeat", "2", "--seed", "1",
               "--json", "{ws}/bench.json", "-q"], _bench),
    "plot scores": (["plot", "scores", "{ws}/scores", "-t", "{ws}/truth.json", "--metric", "logme",
                     "--variants", "released", "--regime", "lbft", "--dataset", "toy", "--group", "b",
                     "--out", "{ws}/ps.png"], _plot_scores),
    "plot features": (["plot", "features", ZOO, "--model", "m0", "--dataset", "toy", "--variant", "described",
                       "--preset", "self-supervised", "--alpha", "0.05", "--sigma", "0.5", "--force", "2",
                       "--pca-dim", "4", "--no-gate", "--out", "{ws}/pf.png"], _plot_features),
    "version": (["--version"], _version),
    # timm at 32 px on 30 images of scikit-learn's digits
    "extract": (["extract", *TIMM, "--split", "train", "--out", "{ws}/x_train", "-q"], _extract),
    "extract test split": (["extract", *TIMM, "--split", "test", "--out", "{ws}/x_test", "--overwrite"],
                           _extract_overwrite),
    "finetune": (["finetune", "--data", "digits", "--n-train", "30", "--n-test", "30", "--seed", "1",
                  "--model", "resnet10t,size=32,name=r", "--zoo-file", "{ws}/zoo.json", "--regime", "lft",
                  "--features", "{ws}/x_train", "--features", "{ws}/x_test", "--wd", "0.01",
                  "--workers", "0", "--group", "g", "--dataset", "dg", "--out", "{ws}/gt.json",
                  "--device", "cpu", "--no-amp"], _finetune),
}
NEEDS_TIMM = {"extract", "extract test split", "finetune"}

# Options run by another test (which names the option in its own source, or in a fixture or
# constant it uses). An option is here, or in RUNS, or this suite fails.
COVERED_ELSEWHERE = {
    "extract --demo-zoo": "test_cli_options.py::test_demo_zoo_and_its_size",
    "extract --demo-size": "test_cli_options.py::test_demo_zoo_and_its_size",
    "finetune --demo-zoo": "test_cli_options.py::test_demo_zoo_and_its_size",
    "finetune --demo-size": "test_cli_options.py::test_demo_zoo_and_its_size",
    "finetune --lr": "test_cli.py::test_finetune_lbft_and_full_sweep",
    "finetune --epochs": "test_cli.py::test_finetune_lbft_and_full_sweep",
    "finetune --train-seeds": "test_cli.py::test_finetune_lbft_and_full_sweep",
    "finetune --batch-size": "test_cli.py::test_finetune_lbft_and_full_sweep",
    "finetune --quiet": "test_cli.py::test_finetune_lbft_and_full_sweep",
    "demo --out": "test_cli.py::test_demo_small_run",
    "demo --data": "test_cli.py::test_demo_small_run",
    "demo --n-train": "test_cli.py::test_demo_small_run",
    "demo --n-test": "test_cli.py::test_demo_small_run",
    "demo --size": "test_cli.py::test_demo_small_run",
    "demo --metrics": "test_cli.py::test_demo_small_run",
    "demo --sa": "test_cli.py::test_demo_small_run",
    "demo --precision": "test_cli.py::test_demo_small_run",
    "demo --batch-size": "test_cli.py::test_demo_small_run",
    "demo --seed": "test_cli.py::test_demo_small_run",
    "demo --no-plots": "test_cli.py::test_demo_small_run",
    "demo --device": "test_cli.py::test_demo_small_run",
    "demo --quiet": "test_cli.py::test_demo_small_run",
}


def _argv(argv, ws):
    return [str(a).replace("{ws}", str(ws)) for a in argv]


@pytest.mark.parametrize("name", list(RUNS))
def test_option_runs_with_a_valid_value(ws, capsys, name):
    if name in NEEDS_TIMM:
        pytest.importorskip("timm")
        pytest.importorskip("sklearn")
    argv, check = RUNS[name]
    code = main(_argv(argv, ws))
    out, err = capsys.readouterr()
    assert code == 0, err
    check(ws, out)


@functools.lru_cache(maxsize=None)
def _definitions(filename: str) -> dict:
    """{name: source} of a test module's top-level functions and assignments."""
    lines = (TESTS / filename).read_text().splitlines()
    defs = {}
    for node in ast.parse("\n".join(lines)).body:
        if isinstance(node, (ast.FunctionDef, ast.Assign)):
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            text = "\n".join(lines[first - 1:node.end_lineno])
            names = [node.name] if isinstance(node, ast.FunctionDef) else \
                [t.id for t in node.targets if isinstance(t, ast.Name)]
            defs.update({n: text for n in names})
    return defs


def _test_source(reference: str) -> str:
    """The source of a test function and of the module-level fixtures/constants it names
    (two levels deep: a fixture's own constants count)."""
    filename, _, name = reference.partition("::")
    defs = _definitions(filename)
    assert name in defs, f"{reference}: no such test"
    seen, frontier = {name}, [defs[name]]
    for _ in range(2):
        trees = [ast.parse(textwrap.dedent(src)) for src in frontier]
        named = {n.id for t in trees for n in ast.walk(t) if isinstance(n, ast.Name)} | {
            a.arg for t in trees for n in ast.walk(t) if isinstance(n, ast.FunctionDef) for a in n.args.args}
        frontier = [defs[n] for n in named - seen if n in defs]
        seen |= named
    return "\n".join(defs[n] for n in seen if n in defs)


def test_every_option_is_run_by_a_test():
    options = all_options()
    in_runs = set().union(*(options_in(argv) for argv, _ in RUNS.values()))
    missing = sorted(set(options) - in_runs - set(COVERED_ELSEWHERE))
    assert not missing, f"options no test runs: {missing}; add them to RUNS or COVERED_ELSEWHERE"
    stale = sorted(set(COVERED_ELSEWHERE) - set(options))
    assert not stale, f"COVERED_ELSEWHERE names options te-gpu no longer has: {stale}"
    for option, reference in COVERED_ELSEWHERE.items():
        _, action = options[option]
        source = _test_source(reference)
        assert any(f'"{s}"' in source for s in action.option_strings), \
            f"{reference} does not run {option}"


def test_the_walk_catches_an_option_without_a_test(monkeypatch):
    def parser_with_a_new_option():
        parser = cli.build_parser()
        dict(subcommands(parser))[("score",)].add_argument("--shiny", type=cli.COUNT)
        return parser

    monkeypatch.setattr(sys.modules[__name__], "build_parser", parser_with_a_new_option)
    with pytest.raises(AssertionError, match=r"options no test runs: \['score --shiny'\]"):
        test_every_option_is_run_by_a_test()


def test_the_copied_constants_are_their_modules():
    from te_gpu.engine._tensor import PRECISIONS
    from te_gpu.pipeline.finetune import REGIMES

    assert cli.PRECISIONS == tuple(PRECISIONS) and cli.REGIMES == REGIMES
    from te_gpu import regimes

    assert cli.TRANSFERS == tuple(regimes.REGIMES)
    from te_gpu import rank

    assert cli.SHIPPED_TRUTH == tuple(rank.list_ground_truth())


def test_typed_options_use_checked_types():
    # a bare int or float accepts 0, -1, nan and inf: each number says its range
    bare = sorted(k for k, (_, a) in all_options().items() if a.type in (int, float))
    assert not bare, f"give these a checked type (te_gpu.cli.COUNT, ...): {bare}"


# the least each command needs to reach its own checks (the argv is refused before any work)
MINIMAL = {
    ("extract",): ["--data", "digits"], ("finetune",): ["--data", "digits"],
    ("score",): [ZOO], ("recommend",): [ZOO], ("correlate",): [], ("baselines",): [], ("bench",): [],
    ("demo",): [], ("plot", "scores"): ["{ws}/scores", "--truth", "t.json", "--metric", "logme"],
    ("plot", "features"): [ZOO, "--model", "m0"],
}
TYPED = sorted(k for k, (_, a) in all_options().items() if a.type is not None or a.choices is not None)


def _invalid(action) -> str:
    if action.choices is not None:
        return "bogus"
    return getattr(action.type, "invalid", "x")


def _refuse_work(monkeypatch):
    """A command that starts means the value passed the parser: its type should refuse it."""
    def reached(args):
        raise AssertionError("an invalid value reached the command")
    for name in dir(cli):
        if name.startswith("cmd_"):
            monkeypatch.setattr(cli, name, reached)


@pytest.mark.parametrize("option", TYPED)
def test_an_invalid_value_is_refused_in_one_line(ws, capsys, monkeypatch, option):
    path, action = all_options()[option]
    _refuse_work(monkeypatch)
    bad = _invalid(action)
    code = main([*path, *_argv(MINIMAL[path], ws), action.option_strings[0], bad])
    out, err = capsys.readouterr()
    assert code == 2, (option, bad, err)
    assert err.endswith("\n") and err.count("\n") == 1, err                # one line
    assert f"argument {'/'.join(action.option_strings)}:" in err, err      # names the option
    assert not any(word in err for word in INTERNALS), err


def test_the_invalid_values_are_invalid_for_every_checked_type():
    # the walk above feeds each type its own `invalid`: it must be refused by the type itself
    options = all_options()
    for option in TYPED:
        _, action = options[option]
        if action.choices is None:
            with pytest.raises(argparse.ArgumentTypeError):
                action.type(_invalid(action))


# ---------------------------------------------------------------- --models of score and recommend

@pytest.mark.parametrize("command", ["score", "recommend"])
def test_models_names_an_unknown_model_and_those_known(ws, capsys, command):
    code = main([command, str(ws / "zoo"), "--models", "m0,m9", "--device", "cpu", "-q",
                 "--out" if command == "score" else "--json", str(ws / f"unused_{command}")])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1, err
    assert "no model 'm9'" in err and "it holds: m0, m1, m2" in err


def test_recommend_ranks_only_the_models_asked_for(ws, capsys):
    code = main(["recommend", str(ws / "zoo"), "--models", "m1,m2", "-B", "4", "--device", "cpu",
                 "--json", str(ws / "rec_sub.json"), "-q"])
    assert code == 0, capsys.readouterr().err
    rec = _json(ws / "rec_sub.json")
    assert rec["bootstrap"]["models"] == ["m1", "m2"] and set(rec["p_first"]) == {"m1", "m2"}


def test_bench_models_is_a_count(ws, capsys):
    # bench's --models is a number of synthetic models, score's a list of names: one check each
    assert main(["bench", "--models", "m0,m1"]) == 2
    assert "argument --models: expected an integer, got 'm0,m1'" in capsys.readouterr().err


# ---------------------------------------------------------------- --demo-zoo without the forward passes

def test_demo_zoo_and_its_size(ws, capsys, monkeypatch):
    """--demo-zoo --demo-size give the demo's zoo at that size (the extraction itself is the
    demo's test: the weight wheels' models are too slow for this walk)."""
    import te_gpu.pipeline.extract as extract
    import te_gpu.pipeline.finetune as finetune
    from te_gpu.pipeline.models import demo_zoo

    seen = {}
    monkeypatch.setattr(extract, "extract_zoo", lambda specs, *a, **k: seen.setdefault("extract", specs))
    monkeypatch.setattr(finetune, "probe_zoo", lambda specs, *a, **k: seen.setdefault("finetune", specs) and [])
    expected = [(s.name, s.size) for s in demo_zoo(40)]   # the random control at least
    assert main(["extract", "--data", "digits", "--n", "10", "--demo-zoo", "--demo-size", "40",
                 "--out", str(ws / "unused_dz"), "-q"]) == 0
    assert main(["finetune", "--data", "digits", "--n-train", "10", "--n-test", "10", "--demo-zoo",
                 "--demo-size", "40", "--out", str(ws / "unused_dz.json"), "-q"]) == 0, capsys.readouterr().err
    for command in ("extract", "finetune"):
        assert [(s.name, s.size) for s in seen[command]] == expected and expected[-1][1] == 40


@pytest.mark.parametrize("argv, command", [
    (["plot", "features", "z", "--model", "m0", "--seed", "1"], "te-gpu plot features"),
    (["score", "z", "--replicates", "5"], "te-gpu score"),
    (["--shiny"], "te-gpu"),
])
def test_an_unknown_option_is_named_by_its_command(capsys, argv, command):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{command}: error: unrecognized arguments: ") and err.count("\n") == 1, err
    assert f"(see {command} --help)" in err


def test_an_unwritable_output_is_one_line(ws, capsys):
    # a --json whose folder is a file passes the parser (it cannot know) and fails writing
    code = main(["correlate", str(ws / "scores"), "--truth", str(ws / "truth.json"), "--group", "a",
                 "--regime", "lft", "--json", str(ws / "prior.json" / "corr.json")])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "prior.json" in err, err
    assert not any(word in err for word in INTERNALS)


def test_ped_reference_needs_ped_and_the_reference_files(ws, capsys):
    for argv, match in ((["--sa", "released", "--ped-reference", "ref"], "add ped to --sa"),
                        (["--sa", "ped", "--ped-reference", "nowhere"], "no reference features")):
        for cmd in (["score", str(ws / "zoo_ped"), "--dataset", "toy", "--metrics", "lda",
                     "--out", str(ws / "sp_bad")],
                    ["recommend", str(ws / "zoo_ped"), "--dataset", "toy", "--metrics", "lda",
                     "-B", "2", "--device", "cpu"]):
            assert main(cmd + argv) == 2
            err = capsys.readouterr().err
            assert match in err and "Traceback" not in err, err

