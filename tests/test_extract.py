"""Extraction at speed (issue 16): every depth of a model from one forward pass, images
decoded once per input size, resumable per model, out-of-memory retry; and the linear
probe reading cached features (issue 15). Tiny random-init timm models at 32 px."""
import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from te_gpu.pipeline import PipelineError  # noqa: E402
from te_gpu.pipeline import datasets, extract, models  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

QUIET = dict(progress=False, log=lambda *a: None)


def _images(n=24, c=3, size=12, seed=0, rgb=False):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    shape = (n, size, size, 3) if rgb else (n, size, size)
    x = rng.integers(0, 256, size=shape, dtype=np.uint8)
    return datasets.ImageSet(name="toy", labels=y.astype(np.int64), classes=[str(i) for i in range(c)],
                             arrays=x, source="test", split="train")


def _folder(tmp_path, n_per_class=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(n_per_class):
            size = (20 + 7 * i, 30)
            Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(
                tmp_path / "imgs" / c / f"{i}.png")
    return datasets.load_data(str(tmp_path / "imgs"), split="all")


# --------------------------------------------------------------------------
# specs with several depths
# --------------------------------------------------------------------------

def test_stages_spec_names_each_depth():
    specs = models.parse_specs("resnet10t,size=32,stages=2,4,final")
    assert [(s.name, s.stage) for s in specs] == [("resnet10t-random-stage2-32px", 2),
                                                   ("resnet10t-random-stage4-32px", 4),
                                                   ("resnet10t-random-32px", None)]
    # the default names are those of single-depth specs: a store of those is reused
    assert specs[0].name == models.parse_spec("resnet10t,size=32,stage=2").name
    named = models.parse_specs("resnet10t,stages=1+final,name=r10,size=32")
    assert [s.name for s in named] == ["r10-stage1", "r10"]
    assert len({s.pass_key() for s in specs + named}) == 1
    assert models.parse_spec("resnet10t,stage=final").stage is None
    assert models.specs_from_dict({"arch": "resnet10t", "stages": [3, "final"], "name": "x"})[0].name == "x-stage3"
    for bad, message in (("resnet10t,stages=2,2", "twice"), ("resnet10t,stage=1,stages=2", "not both"),
                         ("resnet10t,stages=", "at least one"), ("resnet10t,stages=a", "integer")):
        with pytest.raises(PipelineError, match=message):
            models.parse_specs(bad)
    with pytest.raises(PipelineError, match="several depths"):
        models.parse_spec("resnet10t,stages=1,2")


def test_zoo_file_with_stages(tmp_path):
    path = tmp_path / "zoo.json"
    path.write_text(json.dumps([{"arch": "resnet10t", "size": 32, "stages": "1,final", "name": "a"},
                                "resnet10t,size=32,seed=1,stages=3,final,name=b"]))
    assert [s.name for s in models.read_zoo_file(path)] == ["a-stage1", "a", "b-stage3", "b"]
    path.write_text(json.dumps([3]))
    with pytest.raises(PipelineError, match="spec string or an object"):
        models.read_zoo_file(path)


def test_unknown_stage_lists_the_stages(tmp_path):
    spec = models.ModelSpec(arch="resnet10t", size=32, stage=7)
    with pytest.raises(PipelineError) as err:
        extract.extract_zoo([spec], _images(), tmp_path / "zoo", **QUIET)
    text = str(err.value)
    assert "stage 7 does not exist" in text and "5 stages: 0 (act1, 64 ch, /2)" in text
    assert "4 (layer4, 512 ch, /32)" in text and "final" in text
    assert not (tmp_path / "zoo").exists()  # a failed extraction leaves no folder behind


def test_plan_groups_depths_and_sizes():
    specs = [models.ModelSpec(arch="resnet10t", size=32, stage=1),
             models.ModelSpec(arch="resnet10t", size=16),
             models.ModelSpec(arch="resnet10t", size=32, seed=1),
             models.ModelSpec(arch="resnet10t", size=32)]
    plan = extract.plan_passes(specs)
    assert [[s.name for s in g] for g in plan] == [
        ["resnet10t-random-stage1-32px", "resnet10t-random-32px"],
        ["resnet10t-random1-32px"], ["resnet10t-random-16px"]]


# --------------------------------------------------------------------------
# one pass = separate passes
# --------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["resnet10t", "mobilenetv3_small_050"])
def test_shared_pass_equals_separate_passes(arch):
    data = _images(n=10)
    specs = models.parse_specs(f"{arch},size=32,stages=0,1,2,3,-1,final")
    shared = extract.run_pass(specs, data, batch_size=4, progress=False)
    assert shared.names == [s.name for s in specs] and set(shared.predictions) == {specs[-1].name}
    for spec in specs:
        alone = extract.run_pass([spec], data, batch_size=4, progress=False)
        # CPU float32: the same operations on the same batches, so exactly equal
        assert np.array_equal(shared.features[spec.name], alone.features[spec.name]), spec.name
        if spec.stage is None:
            assert np.array_equal(shared.predictions[spec.name], alone.predictions[spec.name])
    # stage -1 is the last stage, read from the same intermediate as stage 4
    last = models.parse_spec(f"{arch},size=32,stage=4")
    assert np.array_equal(shared.features[specs[4].name],
                          extract.run_pass([last], data, batch_size=4, progress=False).features[last.name])


def test_extract_zoo_one_pass_per_model(tmp_path, monkeypatch):
    built = []
    real = extract.build_model
    monkeypatch.setattr(extract, "build_model", lambda spec: built.append(spec.name) or real(spec))
    data = _images()
    specs = models.parse_specs("resnet10t,size=32,stages=1,3,final,name=r") + \
        [models.ModelSpec(arch="resnet10t", size=32, seed=1, name="other")]
    status = extract.extract_zoo(specs, data, tmp_path, **QUIET)
    assert status == {"r-stage1": "extracted", "r-stage3": "extracted", "r": "extracted",
                      "other": "extracted"}
    assert len(built) == 2  # one network per pass
    entries = json.loads((tmp_path / extract.MANIFEST).read_text())["datasets"]["toy"]["models"]
    assert entries["r-stage3"]["shared_pass"]["candidates"] == ["r-stage1", "r-stage3", "r"]
    assert entries["other"]["shared_pass"]["candidates"] == ["other"]
    assert entries["r-stage1"]["dim"] == 64 and entries["r"]["classes"] == 1000
    assert entries["r-stage1"]["classes"] is None and entries["r"]["shared_pass"]["images_per_s"] > 0
    # feature width and parameter count (issue 13): params counts the whole network that ran
    params = sum(p.numel() for p in real(specs[-1])[0].parameters())
    assert [entries[m]["params"] for m in ("r-stage1", "r", "other")] == [params] * 3
    assert entries["r"]["dim"] == 512 and entries["r"]["shared_pass"]["ranks"] == 1
    preds = sorted(p.name for p in tmp_path.glob("*_prediction.npy"))
    assert preds == ["other_toy_prediction.npy", "r_toy_prediction.npy"]
    # a depth added later: only it is extracted, the others stay cached
    more = models.parse_specs("resnet10t,size=32,stages=1,2,3,final,name=r")
    status = extract.extract_zoo(more, data, tmp_path, **QUIET)
    assert status == {"r-stage1": "cached", "r-stage2": "extracted", "r-stage3": "cached", "r": "cached"}


# --------------------------------------------------------------------------
# images decoded once per input size
# --------------------------------------------------------------------------

def test_images_decoded_once_per_size(tmp_path, monkeypatch):
    calls = []
    real = extract._resized_arrays
    monkeypatch.setattr(extract, "_resized_arrays",
                        lambda images, size, bs: calls.append(size) or real(images, size, bs))
    data = _images()
    specs = [models.ModelSpec(arch="resnet10t", size=32), models.ModelSpec(arch="resnet10t", size=16),
             models.ModelSpec(arch="resnet10t", size=32, seed=1)]
    extract.extract_zoo(specs, data, tmp_path / "kept", **QUIET)
    assert sorted(calls) == [16, 32]
    kept = extract.open_zoo(tmp_path / "kept")[0]
    # without the cache (budget 0) every pass decodes again: the same features
    calls.clear()
    monkeypatch.setenv(extract.CACHE_ENV, "0")
    extract.extract_zoo(specs, data, tmp_path / "streamed", **QUIET)
    assert sorted(calls) == [16, 32, 32]
    streamed = extract.open_zoo(tmp_path / "streamed")[0]
    assert all(np.array_equal(kept[m], streamed[m]) for m in kept)


def test_image_cache_drops_least_recent_beyond_budget():
    data = _images(n=24, size=12)  # grey: 4 bytes a pixel, one channel
    big, small = 24 * 32 * 32 * 4, 24 * 16 * 16 * 4
    cache = extract.ImageCache(budget=big + small)
    a = cache.get(data, 32, 0.9)
    list(a.batches(10))
    b = cache.get(data, 16, 0.9)
    assert a.complete and cache.get(data, 32, 0.5) is a  # arrays: the crop does not matter
    tight = extract.ImageCache(budget=big)
    a = tight.get(data, 32, 0.9)
    tight.get(data, 16, 0.9)
    assert tight.get(data, 32, 0.9) is not a  # dropped for the 16 px images
    assert not extract.ImageCache(budget=big - 1).get(data, 32, 0.9).keep
    assert b.nbytes() == small


@pytest.mark.parametrize("rgb", [False, True])
def test_array_batches_unchanged(rgb):
    """Grey images are resized on one channel and expanded on the device: the same values as
    expanding first (the earlier pipeline)."""
    import torch.nn.functional as F

    data = _images(n=5, rgb=rgb)
    new = torch.cat(list(extract._array_batches(data.arrays, 32, 2)))
    x = torch.from_numpy(data.arrays).float().div_(255.0)
    x = x[:, None].expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    old = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(new, old.clamp(0, 1))


def test_image_files_decoded_once_as_totensor(tmp_path, monkeypatch):
    data = _folder(tmp_path)
    loaders = []
    real = extract._file_loader
    monkeypatch.setattr(extract, "_file_loader", lambda *a, **k: loaders.append(a[1]) or real(*a, **k))
    cache = extract.ImageCache()
    decoded = cache.get(data, 32, 0.875)
    first = torch.cat([extract._as_rgb_float(x) for x in decoded.batches(4)])
    again = torch.cat([extract._as_rgb_float(x) for x in cache.get(data, 32, 0.875).batches(3)])
    assert loaders == [32] and torch.equal(first, again)
    reference = torch.cat(list(extract.image_batches(data, 32, 4, 0.875)))  # ToTensor, as before
    assert torch.equal(first, reference)


# --------------------------------------------------------------------------
# out of memory, progress, resume
# --------------------------------------------------------------------------

def test_out_of_memory_halves_the_batch():
    data = _images(n=11)
    decoded = extract.DecodedImages(data, 8, 1.0)
    seen = []

    def forward(x):
        if x.shape[0] > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        seen.append(x.shape[0])
        return {"sum": x.flatten(1).sum(1)}

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    chunks, size = extract._run_batches(forward, decoded, 8, bar, torch.device("cpu"))
    assert size == 2 and bar.n == 11 and sum(seen) == 11
    expected = torch.cat(list(decoded.batches(11))).flatten(1).sum(1)
    assert torch.equal(torch.cat(chunks["sum"]), expected)
    with pytest.raises(PipelineError, match="one image per batch"):
        extract._run_batches(lambda x: forward(torch.zeros(5)), decoded, 8, Bar(), torch.device("cpu"))


def test_progress_bar_names_the_split(monkeypatch):
    seen = []

    class Bar:
        def __init__(self, **kw):
            seen.append(kw["desc"])

        def update(self, k):
            pass

        def close(self):
            pass

    monkeypatch.setattr(extract, "_tqdm", Bar)
    data = _images(n=4)
    for split in ("train", "test"):
        data.split = split
        extract.run_pass(models.parse_specs("resnet10t,size=32,stages=2,final,name=r"), data)
    assert seen == ["train r (+1 depths)", "test r (+1 depths)"]


def test_log_line_of_a_pass_names_the_split(tmp_path):
    lines = []
    data = _images(n=4)
    for split in ("train", "test"):
        data.split = split
        extract.extract_zoo(models.parse_specs("resnet10t,size=32,name=r"), data, tmp_path / split,
                            progress=False, log=lines.append)
    assert [line.split(" (")[0] for line in lines] == ["  r 512-d: 4 train images",
                                                       "  r 512-d: 4 test images"]


def test_killed_extraction_keeps_finished_models(tmp_path, monkeypatch):
    data = _images()
    specs = [models.ModelSpec(arch="resnet10t", size=32, name="a"),
             models.ModelSpec(arch="resnet10t", size=32, seed=1, name="b")]
    real, passes = extract.run_pass, []

    def killed_on_second(group, *a, **k):
        passes.append([s.name for s in group])
        if len(passes) == 2:
            raise KeyboardInterrupt
        return real(group, *a, **k)

    monkeypatch.setattr(extract, "run_pass", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        extract.extract_zoo(specs, data, tmp_path, **QUIET)
    listed = json.loads((tmp_path / extract.MANIFEST).read_text())["datasets"]["toy"]["models"]
    assert list(listed) == ["a"] and not list(tmp_path.glob(".*tmp"))
    monkeypatch.setattr(extract, "run_pass", real)
    assert extract.extract_zoo(specs, data, tmp_path, **QUIET) == {"a": "cached", "b": "extracted"}


def test_model_being_rewritten_is_unlisted(tmp_path, monkeypatch):
    """Killed while a model's files are rewritten: the manifest no longer vouches for them."""
    import te_gpu.io

    data = _images()
    spec = models.ModelSpec(arch="resnet10t", size=32, name="a")
    extract.extract_zoo([spec], data, tmp_path, **QUIET)

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(te_gpu.io, "save_zoo", killed)
    with pytest.raises(KeyboardInterrupt):
        extract.extract_zoo([spec], data, tmp_path, overwrite=True, **QUIET)
    listed = json.loads((tmp_path / extract.MANIFEST).read_text())["datasets"]["toy"]["models"]
    assert listed == {}
    monkeypatch.undo()
    assert extract.extract_zoo([spec], data, tmp_path, **QUIET) == {"a": "extracted"}


# --------------------------------------------------------------------------
# the linear probe reads cached features
# --------------------------------------------------------------------------

def test_probe_reads_matching_stores(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    from te_gpu.pipeline.finetune import probe_zoo

    train = datasets.load_data("digits", split="train", n=40)
    test = datasets.load_data("digits", split="test", n=30)
    specs = models.parse_specs("resnet10t,size=32,stages=2,final,name=r")
    extract.extract_zoo(specs, train, tmp_path / "zoo", **QUIET)
    extract.extract_zoo(specs, test, tmp_path / "zoo-test", dataset="renamed", **QUIET)
    fresh = dict(probe_zoo(specs, train, test, progress=False))
    assert all(r["features"] == {"train": "extracted", "test": "extracted"} for r in fresh.values())

    def no_pass(*a, **k):
        raise AssertionError("features were extracted again")

    monkeypatch.setattr(extract, "run_pass", no_pass)
    stores = [tmp_path / "zoo", tmp_path / "zoo-test"]
    cached = dict(probe_zoo(specs, train, test, stores=stores, progress=False))
    for name, res in cached.items():
        assert res["features"] == {"train": str(stores[0]), "test": str(stores[1])}
        assert res["accuracy"] == fresh[name]["accuracy"] and res["wd"] == fresh[name]["wd"]
        assert round(res["accuracy"], 4) == res["accuracy"] and "val_accuracy" in res
    # other samples (another subset) do not match: extracted
    monkeypatch.undo()
    other = datasets.load_data("digits", split="train", n=50)
    res = dict(probe_zoo(specs[:1], other, test, stores=stores, progress=False))
    assert res["r-stage2"]["features"] == {"train": "extracted", "test": str(stores[1])}


def test_cli_finetune_reuses_extract_stores(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from te_gpu.cli import main

    model = ["--model", "resnet10t,size=32,stages=3,final,name=r"]
    for split, out, n in (("train", "zoo", "40"), ("test", "zoo-test", "30")):
        assert main(["extract", "--data", "digits", "--split", split, "--n", n, *model,
                     "--out", str(tmp_path / out), "-q"]) == 0
    capsys.readouterr()
    assert main(["finetune", "--data", "digits", "--n-train", "40", "--n-test", "30", *model,
                 "--features", str(tmp_path / "zoo"), "--features", str(tmp_path / "zoo-test"),
                 "--out", str(tmp_path / "gt.json")]) == 0
    text = capsys.readouterr().out
    assert text.count(f"train from {tmp_path / 'zoo'}, test from {tmp_path / 'zoo-test'}") == 2
    assert "val (in the sweep)" in text and "best val" in text
    gt = json.loads((tmp_path / "gt.json").read_text())
    acc = gt["groups"]["custom"]["regimes"]["lft"]["digits"]
    details = gt["_details"]["custom"]["lft"]["digits"]["r"]
    assert set(acc) == {"r-stage3", "r"}
    assert all(round(v, 4) == v for v in [*acc.values(), *details["sweep"].values()])
    assert main(["finetune", "--data", "digits", *model, "--features", str(tmp_path / "nope")]) == 2


def test_cli_help_and_failed_extract_leave_no_folder(tmp_path, monkeypatch, capsys):
    from te_gpu.cli import main

    assert main(["finetune", "--help"]) == 0
    out = capsys.readouterr().out
    assert "accuracies (%)" in out and "%%" not in out
    monkeypatch.chdir(tmp_path)
    assert main(["extract", "--data", "digits", "--model", "not_a_model_xyz,size=32"]) == 2
    assert main(["extract", "--data", "digits", "--model", "resnet10t,size=32,stage=9"]) == 2
    assert "stage 9 does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no empty features/ folder


def test_a_store_being_written_is_refused_to_a_second_run(tmp_path):
    import socket

    out = tmp_path / "zoo"
    out.mkdir()
    holder = dict(pid=os.getpid(), host=socket.gethostname(), time=0)
    (out / extract.STORE_LOCK).write_text(json.dumps(holder))   # a live run holds it
    spec = models.parse_spec("resnet10t,size=32")
    with pytest.raises(PipelineError, match="in use by another run"):
        extract.extract_zoo([spec], _images(n=8), out, progress=False, log=lambda *a: None)
    assert sorted(p.name for p in out.iterdir()) == [extract.STORE_LOCK]   # nothing written
    (out / extract.STORE_LOCK).unlink()
    assert extract.extract_zoo([spec], _images(n=8), out, progress=False,
                               log=lambda *a: None) == {spec.name: "extracted"}
    assert not (out / extract.STORE_LOCK).exists()   # released at the end
