"""Tests of te_gpu.io: the public zoo layout and score files."""
import json
import math

import numpy as np
import pytest

from te_gpu.io import load_zoo, read_scores, save_zoo, write_scores


def _zoo(rng, n=20):
    return {
        "resnet_50": rng.normal(size=(n, 4)),
        "mobilenet_v2_x": rng.normal(size=(n, 3)),
        "vit": rng.normal(size=(n, 5)),
    }


def test_round_trip_with_underscored_names(tmp_path):
    rng = np.random.default_rng(0)
    zoo = _zoo(rng)
    labels = rng.integers(0, 4, 20)
    save_zoo(tmp_path, "cifar_10", zoo, labels)
    assert (tmp_path / "mobilenet_v2_x_cifar_10_feature.npy").is_file()
    assert (tmp_path / "resnet_50_cifar_10_label.npy").is_file()
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind

    loaded, got_labels = load_zoo(tmp_path, "cifar_10")
    assert list(loaded) == ["mobilenet_v2_x", "resnet_50", "vit"]  # sorted
    for model, features in zoo.items():
        assert loaded[model].dtype == np.float32
        np.testing.assert_array_equal(loaded[model], features.astype(np.float32))
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_labels, labels)

    subset, _ = load_zoo(tmp_path, "cifar_10", models=["vit", "resnet_50"], mmap=True)
    assert list(subset) == ["vit", "resnet_50"]
    assert isinstance(subset["vit"], np.memmap)
    np.testing.assert_array_equal(subset["vit"], zoo["vit"].astype(np.float32))


def test_dataset_suffix_not_confused(tmp_path):
    # "cifar10" files must not be picked up as dataset "10" or the other way round
    rng = np.random.default_rng(1)
    save_zoo(tmp_path, "cifar10", {"a_b": rng.normal(size=(6, 2))}, np.arange(6) % 2)
    save_zoo(tmp_path, "10", {"m": rng.normal(size=(6, 2))}, np.arange(6) % 3)
    zoo10, labels10 = load_zoo(tmp_path, "10")
    assert list(zoo10) == ["m"]
    np.testing.assert_array_equal(labels10, np.arange(6) % 3)
    assert list(load_zoo(tmp_path, "cifar10")[0]) == ["a_b"]


def test_multilabel_collapsed_by_argmax(tmp_path):
    labels = np.array([[0, 1, 0], [1, 0, 1], [0, 0, 1], [0, 0, 0]])
    save_zoo(tmp_path, "voc2007", {"m": np.ones((4, 2))}, labels)
    _, got = load_zoo(tmp_path, "voc2007")
    np.testing.assert_array_equal(got, [1, 0, 2, 0])


def test_label_mismatch_names_models(tmp_path):
    rng = np.random.default_rng(2)
    save_zoo(tmp_path, "pets", {"alpha": rng.normal(size=(5, 2))}, [0, 1, 0, 1, 0])
    save_zoo(tmp_path, "pets", {"beta": rng.normal(size=(5, 2))}, [0, 1, 1, 1, 0])
    with pytest.raises(ValueError, match="'beta'.*'alpha'"):
        load_zoo(tmp_path, "pets")


def test_row_count_mismatch(tmp_path):
    save_zoo(tmp_path, "dtd", {"m": np.ones((4, 2))}, [0, 1, 0, 1])
    np.save(tmp_path / "m_dtd_feature.npy", np.ones((3, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="3 rows"):
        load_zoo(tmp_path, "dtd")


@pytest.mark.parametrize("which", ["feature", "label"])
@pytest.mark.parametrize("mmap", [False, True])
def test_pickled_object_array_refused(tmp_path, which, mmap):
    save_zoo(tmp_path, "food", {"m": np.ones((2, 2))}, [0, 1])
    np.save(tmp_path / f"m_food_{which}.npy", np.array([{"x": 1}, 2], dtype=object),
            allow_pickle=True)
    with pytest.raises(ValueError, match="pickled arrays are refused"):
        load_zoo(tmp_path, "food", mmap=mmap)


def test_plain_pickle_refused(tmp_path):
    import pickle

    save_zoo(tmp_path, "food", {"m": np.ones((2, 2))}, [0, 1])
    (tmp_path / "m_food_feature.npy").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="m_food_feature.npy.*refused"):
        load_zoo(tmp_path, "food")


@pytest.mark.parametrize("keep", [0, 20, 0.5])
@pytest.mark.parametrize("mmap", [False, True])
def test_truncated_file(tmp_path, keep, mmap):
    save_zoo(tmp_path, "cars", {"m": np.ones((50, 8))}, np.arange(50) % 2)
    path = tmp_path / "m_cars_feature.npy"
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:cut])
    with pytest.raises(ValueError, match="m_cars_feature.npy"):
        load_zoo(tmp_path, "cars", mmap=mmap)


def test_missing_directory(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_zoo(missing, "cars")


def test_no_model_lists_directory(tmp_path):
    save_zoo(tmp_path, "cars", {"m": np.ones((2, 2))}, [0, 1])
    with pytest.raises(FileNotFoundError, match="m_cars_feature.npy"):
        load_zoo(tmp_path, "aircraft")


def test_missing_files_of_requested_model(tmp_path):
    save_zoo(tmp_path, "cars", {"m": np.ones((2, 2))}, [0, 1])
    with pytest.raises(FileNotFoundError, match="other_cars_feature.npy"):
        load_zoo(tmp_path, "cars", models=["m", "other"])
    (tmp_path / "m_cars_label.npy").unlink()
    with pytest.raises(FileNotFoundError, match="m_cars_label.npy"):
        load_zoo(tmp_path, "cars")


def test_save_zoo_validates(tmp_path):
    with pytest.raises(ValueError, match="rows"):
        save_zoo(tmp_path, "x", {"m": np.ones((3, 2))}, [0, 1])
    with pytest.raises(ValueError, match="separator"):
        save_zoo(tmp_path, "x", {"a/b": np.ones((2, 2))}, [0, 1])
    with pytest.raises(ValueError, match="non-finite"):
        save_zoo(tmp_path, "x", {"m": np.array([[np.nan, 1.0], [1.0, 1.0]])}, [0, 1])
    assert not any(tmp_path.iterdir())  # nothing written


def test_scores_round_trip(tmp_path):
    path = tmp_path / "scores.json"
    scores = {"resnet_50": 1.5, "vit": np.float32(-2.25), "per_class": [0.5, 1.0]}
    write_scores(path, scores, duration=3.5)
    raw = json.loads(path.read_text())
    assert list(raw) == ["resnet_50", "vit", "per_class", "duration"]
    got, duration = read_scores(path)
    assert got == {"resnet_50": 1.5, "vit": -2.25, "per_class": [0.5, 1.0]}
    assert duration == 3.5
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]

    write_scores(path, {"a": 1, "b": 2})
    assert read_scores(path) == ({"a": 1.0, "b": 2.0}, None)


def test_duration_key_in_scores(tmp_path):
    path = tmp_path / "s.json"
    write_scores(path, {"a": 1.0, "duration": 7.0})
    assert read_scores(path) == ({"a": 1.0}, 7.0)
    with pytest.raises(ValueError, match="both"):
        write_scores(path, {"a": 1.0, "duration": 7.0}, duration=1.0)


@pytest.mark.parametrize("bad", [
    {"a": float("nan")},
    {"a": float("inf")},
    {"a": [1.0, float("nan")]},
])
def test_non_finite_refused_and_old_file_kept(tmp_path, bad):
    path = tmp_path / "s.json"
    write_scores(path, {"a": 1.0}, duration=2.0)
    with pytest.raises(ValueError, match="not finite|non-finite"):
        write_scores(path, bad)
    assert read_scores(path) == ({"a": 1.0}, 2.0)  # untouched
    with pytest.raises(ValueError, match="not finite"):
        write_scores(path, {"a": 1.0}, duration=math.nan)
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_read_scores_errors(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        read_scores(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        read_scores(path)
    path.write_text('{"a": "high"}')
    with pytest.raises(ValueError, match="'a'"):
        read_scores(path)


def test_load_predictions_reads_the_models_that_have_them(tmp_path):
    from te_gpu.io import load_predictions, prediction_path

    rng = np.random.default_rng(0)
    y = np.arange(30) % 3
    save_zoo(tmp_path, "toy", {m: rng.normal(size=(30, 4)) for m in ("a", "b", "c")}, y)
    probs = {m: rng.dirichlet(np.ones(5), size=30).astype(np.float32) for m in ("a", "c")}
    for m, p in probs.items():
        np.save(prediction_path(tmp_path, m, "toy"), p)
    got = load_predictions(tmp_path, "toy")
    assert sorted(got) == ["a", "c"]                      # b has no classifier's softmax
    assert all(np.array_equal(got[m], probs[m]) for m in got)
    assert list(load_predictions(tmp_path, "toy", models="c", mmap=True)) == ["c"]
    assert load_predictions(tmp_path, "other") == {}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_predictions(tmp_path / "nope", "toy")


def test_load_predictions_feeds_score_zoo(tmp_path):
    pytest.importorskip("torch")
    import te_gpu
    from te_gpu.io import load_predictions, prediction_path

    rng = np.random.default_rng(1)
    y = np.arange(40) % 4
    save_zoo(tmp_path, "toy", {m: rng.normal(size=(40, 6)) for m in ("a", "b")}, y)
    p = rng.dirichlet(np.ones(7), size=40)
    np.save(prediction_path(tmp_path, "a", "toy"), p)
    zoo, labels = te_gpu.load_zoo(tmp_path, "toy")
    res = te_gpu.score_zoo(zoo, labels, metrics=("leep",), predictions=load_predictions(tmp_path, "toy"),
                           progress=False)
    assert res.scores["leep"]["a"] == pytest.approx(te_gpu.reference.leep(p, labels), rel=1e-12)
    assert "b" not in res.scores["leep"] and "b" in res.skipped["leep"]
