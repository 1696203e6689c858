"""Zoo-level scores (te_gpu.combine): a part that cannot be normalised over the zoo is left
out, a score with nothing left is marked undefined, and no other score is ever lost."""
import json
import warnings

import numpy as np
import pytest

import te_gpu
import te_gpu.reference as ref
from te_gpu import catalogue
from te_gpu.bootstrap import bootstrap_zoo, resample_indices
from te_gpu.cli import main as te_gpu_main
from te_gpu.combine import ZooLevelWarning, combine_zoo, constant_parts, minmax_sum
from te_gpu.ties import find_ties

NCTI = catalogue.get("ncti")


def easy_zoo(models=24, c=20, per_class=8, d=24, seed=0):
    """Every model separates the classes by far (nearest-centroid accuracy 1): NCTI's ncc is 1
    and vc is log sum_c sqrt(n_c) for every model, up to rounding; seli differs with the scale."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(c), per_class)
    means = rng.normal(size=(c, d)) * 50.0
    zoo = {f"m{i:02d}": ((1.0 + 0.1 * i) * (means[y] + 0.01 * rng.normal(size=(y.size, d))))
           .astype(np.float32) for i in range(models)}
    return zoo, y


def mixed_zoo(seed=1, n=90, c=3, d=8):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    zoo = {f"m{i}": rng.normal(scale=0.5 + i, size=(c, d))[y] + rng.normal(size=(n, d))
           for i in range(4)}
    return zoo, y


# ------------------------------------------------------------------ the rule

def test_constant_parts_follow_the_ties_rule():
    rng = np.random.default_rng(5)
    for _ in range(200):
        scale = 10.0 ** rng.integers(-3, 4)
        base = rng.normal() * scale
        v = base + scale * rng.choice([1e-16, 1e-8, 1e-7, 2e-6, 1e-3]) * rng.normal(size=5)
        one_group = (len(ties := find_ties(dict(enumerate(v)))) == 1
                     and len(ties[0].models) == v.size)
        assert constant_parts(v[:, None])[0] == one_group, v


def test_rounding_noise_is_constant_and_a_real_spread_is_not():
    vc = np.array([5.297129730981647, 5.297129730981648, 5.297129730981646])
    assert constant_parts(vc[:, None])[0]
    assert not constant_parts(np.array([[1.0], [1.0 + 1e-5]]))[0]
    assert constant_parts(np.zeros((3, 1)))[0]       # all zero: exact equality


def test_minmax_sum_batches_over_redraws_and_drops_per_redraw():
    rng = np.random.default_rng(2)
    parts = rng.normal(size=(4, 5, 3))                 # (redraws, models, parts)
    parts[1, :, 2] = 0.25                              # vc constant on redraw 1 only
    got = minmax_sum(parts, NCTI.part_weights)
    for r in range(4):
        mm = (parts[r] - parts[r].min(0)) / np.where(np.ptp(parts[r], 0) > 0, np.ptp(parts[r], 0), 1)
        want = mm[:, 0] + mm[:, 1] - (mm[:, 2] if r != 1 else 0.0)
        np.testing.assert_allclose(got[r], want, rtol=0, atol=1e-14)
    kept = minmax_sum(parts, NCTI.part_weights, keep=[True, False, True])   # ncc left out
    mm0 = (parts[0] - parts[0].min(0)) / np.ptp(parts[0], 0)
    np.testing.assert_allclose(kept[0], mm0[:, 0] - mm0[:, 2], rtol=0, atol=1e-14)


def test_combine_refuses_non_finite_parts():
    with pytest.raises(ValueError, match="non-finite parts for model"):
        combine_zoo("ncti", {"a": (1.0, np.nan, 0.2), "b": (2.0, 0.5, 0.3)})


# ------------------------------------------------------------------ score_zoo

def test_easy_task_zoo_keeps_seli_and_every_other_score():
    zoo, y = easy_zoo()
    with pytest.warns(ZooLevelWarning, match=r"ncti: part\(s\) ncc, vc left out"):
        res = te_gpu.score_zoo(zoo, y, metrics=("logme", "sfda", "ncti", "knn"), progress=False)
    assert set(res.scores) == {"logme", "sfda", "ncti", "knn"} and not res.undefined
    assert set(res.dropped["ncti"]) == {"ncc", "vc"}
    seli = np.array([res.parts["ncti"][m][0] for m in zoo])
    want = (seli - seli.min()) / np.ptp(seli)          # NCTI = mm(seli) alone
    np.testing.assert_allclose([res.scores["ncti"][m] for m in zoo], want, rtol=0, atol=1e-12)
    assert all(res.scores["knn"][m] == 1.0 for m in zoo)


def test_one_part_constant_combines_the_others():
    zoo, y = mixed_zoo()
    plain = te_gpu.score_zoo(zoo, y, metrics=("ncti",), progress=False)
    parts = {m: list(plain.parts["ncti"][m]) for m in zoo}
    for i, m in enumerate(parts):
        parts[m][2] = 4.0 * (1 + 1e-12 * i)            # vc equal up to rounding
    with pytest.warns(ZooLevelWarning, match="vc"):
        got = combine_zoo("ncti", parts)
    arr = np.array(list(parts.values()))[:, :2]
    mm = (arr - arr.min(0)) / np.ptp(arr, 0)
    np.testing.assert_allclose(list(got.scores.values()), mm[:, 0] + mm[:, 1], atol=1e-12)
    assert list(got.dropped) == ["vc"] and got.kept.tolist() == [True, True, False]
    assert not plain.dropped                           # the real parts all differ


def test_zoo_of_one_model_marks_ncti_undefined():
    zoo, y = mixed_zoo()
    one = {"m0": zoo["m0"]}
    with pytest.warns(ZooLevelWarning, match="undefined for this zoo.*at least 2 models"):
        res = te_gpu.score_zoo(one, y, metrics=("lda", "ncti"), progress=False)
    assert "ncti" not in res.scores and "at least 2 models" in res.undefined["ncti"]
    assert res.scores["lda"]["m0"] == pytest.approx(ref.lda(zoo["m0"], y), rel=1e-6)
    json.dumps(res.to_dict(), allow_nan=False)        # written as usual
    with pytest.raises(ValueError, match="undefined"):  # the one-score function has nothing else
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ZooLevelWarning)
            te_gpu.ncti(one, y)


def test_every_part_constant_marks_ncti_undefined():
    zoo, y = mixed_zoo()
    same = {"a": zoo["m1"], "b": zoo["m1"].copy()}
    with pytest.warns(ZooLevelWarning, match="every part"):
        res = te_gpu.score_zoo(same, y, metrics=("logme", "ncti"), sa=[None, "released"],
                               progress=False)
    assert set(res.undefined) == {"ncti", "ncti+released"}
    assert set(res.scores) == {"logme", "logme+released"}


# ------------------------------------------------------------------ the command

def _save(tmp_path, zoo, y, name="toy"):
    te_gpu.save_zoo(tmp_path / "zoo", name, zoo, y)
    return tmp_path / "zoo"


def test_cli_easy_task_writes_every_score_and_names_what_ncti_left_out(tmp_path, capsys):
    zoo, y = easy_zoo()
    rc = te_gpu_main(["score", str(_save(tmp_path, zoo, y)), "--dataset", "toy", "--metrics",
                      "logme,sfda,ncti,knn", "--sa", "none", "--out", str(tmp_path / "s"),
                      "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    written = {p.name for p in (tmp_path / "s").iterdir()}
    assert {"logme.json", "sfda.json", "ncti.json", "knn.json", "scores.csv",
            "result.json"} <= written
    text = out.out + out.err
    assert "ncti: part(s) ncc, vc left out" in text and text.count("left out") == 1
    assert json.loads((tmp_path / "s" / "result.json").read_text())["dropped"]["ncti"].keys() \
        == {"ncc", "vc"}


def test_cli_zoo_of_one_model_scores_the_rest(tmp_path, capsys):
    zoo, y = mixed_zoo()
    rc = te_gpu_main(["score", str(_save(tmp_path, {"m0": zoo["m0"]}, y)), "--metrics",
                      "lda,ncti", "--sa", "none", "--out", str(tmp_path / "s"), "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert (tmp_path / "s" / "lda.json").is_file() and not (tmp_path / "s" / "ncti.json").exists()
    assert "ncti is undefined for this zoo" in out.out + out.err
    assert "undefined" in json.loads((tmp_path / "s" / "result.json").read_text())
    csv = (tmp_path / "s" / "scores.csv").read_text().splitlines()
    assert csv[0] == "model,lda"


# ------------------------------------------------------------------ the bootstrap

def test_bootstrap_keeps_the_target_sets_parts_on_every_redraw():
    zoo, y = easy_zoo(models=4, c=5, per_class=6)
    b, seed = 3, 4
    with pytest.warns(ZooLevelWarning):
        res = bootstrap_zoo(zoo, y, metrics=("ncti", "lda"), replicates=b, seed=seed,
                            progress=False, device="cpu")
    assert set(res.dropped["ncti"]) == {"ncc", "vc"}
    idx, codes = resample_indices(y, b, seed)
    for r in range(b):   # each redraw: the reference's seli, min-max over the zoo, alone
        seli = np.array([ref.ncti_parts(zoo[m][idx[r]], codes)[0] for m in zoo])
        want = (seli - seli.min()) / np.ptp(seli)
        got = [res.samples["ncti"][m][r] for m in zoo]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_bootstrap_of_an_undefined_zoo_level_metric_keeps_the_others():
    zoo, y = mixed_zoo()
    with pytest.warns(ZooLevelWarning):
        res = bootstrap_zoo({"m0": zoo["m0"]}, y, metrics=("ncti", "lda"), replicates=2,
                            progress=False, device="cpu")
    assert res.labels == ["lda"] and "ncti" in res.undefined


def test_cli_recommend_on_a_zoo_of_one_model_recommends_from_the_rest(tmp_path, capsys):
    zoo, y = mixed_zoo()
    two = {"m0": zoo["m0"], "m0b": zoo["m0"].copy()}   # NCTI: every part equal
    rc = te_gpu_main(["recommend", str(_save(tmp_path, two, y)), "--metrics", "lda,ncti",
                      "-B", "3", "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "ncti is undefined for this zoo" in out.out + out.err
