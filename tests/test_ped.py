"""PED (SPEC 10.9): the float64 reference's known answers from the released code on
digits (and a rank-deficient variant), the motion's invariants, refusals, and the
batched engine (te_gpu.engine.ped) equal to the reference.

Tolerance: 1e-12 relative on the moved features and 1e-12 on the scores read after
them (the same float64 operations in another order; measured 1e-15); engine vs
reference 1e-10 relative to the features' scale, and equal step counts.
"""
import importlib
import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import te_gpu
import te_gpu.reference as ref
from te_gpu import catalogue
from te_gpu.engine.ped import ped_batched, reference_statistics
from te_gpu.engine.stats import Labels

from helpers import class_features, dead_unit_features

ped_module = importlib.import_module("te_gpu.reference.ped")
ped = ped_module.ped


def digits(rank_deficient=False):
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float64)
    if rank_deficient:
        x[:, 8:12] = 0.0
        x[:, 40] = x[:, 41]
        x[:, 50:52] = x[:, 20:22]
    return x, y


def reference_set(x):
    """The rescaling's reference features (the released scripts read ImageNet's)."""
    return np.sqrt(x[::3]) * 4.0


# The released code, run locally: lixiaotong97/PED metrics.py (commit e5af6e7),
# PED_Score(X, y, general_X=reference_set(X), exit_ratio=0.5, constant=1.0, ...)
# (SFDA or LogME after the motion) and One_Step_PED for the first step's move.
RELEASED = [
    # (rank_deficient, time_step, nsigma, metric, score, steps taken)
    (False, 0.1, 0.6, "sfda", 0.9114321026559793, 6),
    (False, 0.1, 0.3, "sfda", 0.8676554005492084, 6),
    (False, 0.3, 0.6, "sfda", 0.9645000651990645, 2),
    (False, 0.4, 0.6, "sfda", 0.9816428040753808, 1),
    (False, 0.1, 0.6, "logme", 0.4717569653761073, 6),
    (True, 0.1, 0.6, "sfda", 0.9017852990309121, 6),
    (True, 0.1, 0.3, "sfda", 0.8609650922015797, 6),
]
FIRST_STEP = {False: (29.539287990405597, 561709.5788784069,
                      [-0.09051724690750307, -0.00032647256839536795, 0.0, -0.0437059596054139]),
              True: (28.42679237856005, 516927.1428573885,
                     [-0.08605195265910881, -0.0003270500699687832, 0.0, -0.04875313717046481])}


@pytest.mark.parametrize("case", RELEASED, ids=lambda c: f"rd{int(c[0])}-t{c[1]}-s{c[2]}-{c[3]}")
def test_known_answers_from_the_released_code(case):
    deficient, time_step, nsigma, metric, want, steps = case
    x, y = digits(deficient)
    moved, info = ped(x, y, reference_features=reference_set(x), time_step=time_step,
                      nsigma=nsigma)
    assert info["steps"] == steps
    got = ref.score(moved, y, metric=metric)
    assert abs(got - want) <= 1e-12 * abs(want)


@pytest.mark.parametrize("deficient", [False, True])
def test_first_step_equals_the_released_one(deficient):
    x, y = digits(deficient)
    move, total, row = FIRST_STEP[deficient]
    moved, info = ped(x, y, reference_features=reference_set(x), max_steps=1)
    assert info["steps"] == 1
    assert abs(info["first_move"] - move) <= 1e-12 * move
    assert abs(moved.sum() - total) <= 1e-12 * total
    np.testing.assert_allclose(moved[5, 30:34], row, rtol=1e-12, atol=1e-18)


def test_motion_moves_whole_classes_and_keeps_their_centre():
    x, y = class_features(0, n=120, d=6, c=3, spread=0.5)
    moved, info = ped(x, y, reference_features=x, max_steps=1)
    shift = moved - x
    for c in range(3):                      # every sample of a class moves alike
        rows = shift[y == c]
        np.testing.assert_allclose(rows, np.broadcast_to(rows[0], rows.shape), atol=1e-12)
    # pairwise pushes cancel over the classes (unweighted): sum of class moves is 0
    per_class = np.array([shift[y == c][0] for c in range(3)])
    np.testing.assert_allclose(per_class.sum(0), 0.0, atol=1e-12)
    assert info["first_move"] > 0


def test_separated_classes_do_not_move():
    x, y = class_features(1, n=90, d=4, c=3, spread=50.0, noise=0.1)
    moved, info = ped(x, y, reference_features=x)
    assert info == {"steps": 0, "first_move": 0.0}
    assert np.array_equal(moved, x)


def test_equal_class_means_exert_no_force():
    # two classes with one mean: no direction between them (the released code: 0/0)
    base = np.random.default_rng(2).normal(size=(40, 3))
    x = np.concatenate([base, -base, base + 0.5])
    y = np.repeat([0, 1, 2], 40)            # classes 0 and 1 share the mean 0
    moved, _ = ped(x, y, reference_features=x, max_steps=1)
    assert np.all(np.isfinite(moved))


def test_refusals():
    x, y = class_features(3, n=30, d=5, c=3)
    with pytest.raises(ValueError, match="columns"):
        ped(x, y, reference_features=x[:, :4])
    for name, bad in (("time_step", float("nan")), ("eps", 0.0), ("max_steps", 0),
                      ("nsigma", "0.6"), ("max_steps", 2.5)):
        with pytest.raises(ValueError, match=name):
            ped(x, y, reference_features=x, **{name: bad})
    with pytest.raises(ValueError):
        ped(np.where(x > 1, np.nan, x), y, reference_features=x)


# ------------------------------------------------------------------ the batched engine

def engine_cases():
    dup, dup_y = class_features(5, n=90, d=12, c=3, spread=0.6)
    dup[:, 6:] = dup[:, :6]                                    # duplicated columns
    return {
        "n<d": class_features(1, n=40, d=60, c=3, spread=0.5),
        "binary": class_features(2, n=80, d=8, c=2, spread=0.4),
        "imbalanced": class_features(3, n=0, d=10, sizes=[60, 12, 5], spread=0.5),
        "dead-units": dead_unit_features(4, n=120, d=16, c=4),
        "duplicated-columns": (dup, dup_y),
        "digits": digits(),
    }


def labels_of(y):
    codes = np.unique(y, return_inverse=True)[1]
    return codes, Labels.from_codes(torch.as_tensor(codes), int(codes.max()) + 1, torch.float64)


def close(got, want):
    return float(np.max(np.abs(got - want))) <= 1e-10 * max(1.0, float(np.max(np.abs(want))))


@pytest.mark.parametrize("case", list(engine_cases()))
@pytest.mark.parametrize("given", [False, True], ids=["own-statistics", "reference-set"])
@pytest.mark.parametrize("time_step", [0.1, 0.35])
def test_engine_equals_reference(case, given, time_step):
    x, y = engine_cases()[case]
    codes, lab = labels_of(y)
    # models that stop after different numbers of steps (the last: classes far apart,
    # none), batched together
    models = [x, 1.7 * x + 0.3, np.sqrt(np.abs(x)) + x, x + 40.0 * codes[:, None]]
    kw = {}
    refs = [np.abs(m[::3]) * 1.5 + 0.1 if given else None for m in models]   # another set
    if given:
        kw = dict(zip(("centre", "spread"), (torch.stack(t) for t in zip(
            *[reference_statistics(torch.as_tensor(r[None]), 1e-3) for r in refs]))))
        kw = {k: v[:, 0] for k, v in kw.items()}
    moved, info = ped_batched(torch.as_tensor(np.stack(models)), lab, time_step=time_step, **kw)
    for i, m in enumerate(models):
        want, want_info = ped(m, codes, reference_features=refs[i], time_step=time_step)
        assert int(info["steps"][i]) == want_info["steps"], (case, i)
        assert close(moved[i].numpy(), want), (case, i)
        assert abs(float(info["first_move"][i]) - want_info["first_move"]) <= \
            1e-10 * max(1.0, want_info["first_move"])


def test_engine_known_answer_and_options():
    x, y = digits()
    codes, lab = labels_of(y)
    r = torch.as_tensor(reference_set(x)[None])
    centre, spread = reference_statistics(r, 1e-3)
    for time_step, nsigma, metric, want, steps in [(0.1, 0.6, "sfda", 0.9114321026559793, 6),
                                                   (0.4, 0.6, "sfda", 0.9816428040753808, 1)]:
        moved, info = ped_batched(torch.as_tensor(x[None]), lab, centre=centre, spread=spread,
                                  time_step=time_step, nsigma=nsigma)
        assert int(info["steps"][0]) == steps
        got = ref.score(moved[0].numpy(), y, metric=metric)
        assert abs(got - want) <= 1e-10 * abs(want)


def test_engine_separated_classes_and_refusals():
    x, y = class_features(1, n=90, d=4, c=3, spread=50.0, noise=0.1)
    _, lab = labels_of(y)
    xt = torch.as_tensor(x[None])
    moved, info = ped_batched(xt, lab)
    assert torch.equal(moved, xt) and int(info["steps"][0]) == 0
    with pytest.raises(ValueError, match="both"):
        ped_batched(xt, lab, centre=xt[:, 0])
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        ped_batched(xt, lab, centre=xt[:, 0, :3], spread=xt[:, 0, :3])
    with pytest.raises(ValueError, match="max_steps"):
        ped_batched(xt, lab, max_steps=0)


# ------------------------------------------------------------------ PED as a setting beside SA

def small_zoo():
    x, y = class_features(12, n=60, d=8, c=3, spread=0.5)
    return {"a": x, "b": 2.0 * x + np.abs(x), "c": x[:, :5] * 0.5}, y


FEATURE_METRICS = [m for m in catalogue.METRICS if catalogue.get(m).inputs == "features"]


def test_score_zoo_ped_equals_the_reference_for_every_feature_metric():
    zoo, y = small_zoo()
    opts = {"nleep": {"components_per_class": 1}}
    res = te_gpu.score_zoo(zoo, y, metrics=FEATURE_METRICS, sa=[None, "ped"], options=opts,
                           progress=False)
    for m in FEATURE_METRICS:
        meta = catalogue.get(m)
        if meta.zoo_level:
            want = ref.zoo_score(m, zoo, y, sa="ped")
        else:
            want = {k: ref.score(f, y, metric=m, sa="ped", **opts.get(m, {}))
                    for k, f in zoo.items()}
        for k in zoo:
            got = res.scores[f"{m}+ped"][k]
            assert abs(got - want[k]) <= max(meta.tolerance, 1e-9) * max(1.0, abs(want[k])), (m, k)
    assert res.sa["ped"]["a"]["steps"] == ped(zoo["a"], y)[1]["steps"] > 0
    # per model, and PED's own options through a dict
    one = te_gpu.score(zoo["b"], y, metric="sfda", sa=dict(variant="ped", time_step=0.3))
    assert abs(one - ref.score(zoo["b"], y, metric="sfda",
                               sa=dict(variant="ped", time_step=0.3))) <= 1e-9


def test_bootstrap_ped_equals_the_reference_on_each_redraw():
    from te_gpu.bootstrap import bootstrap_zoo, resample_indices
    from te_gpu.reference.knn import knn_grouped
    from te_gpu.reference.parc import parc_grouped

    zoo, y = small_zoo()
    metrics = ["logme", "sfda", "parc", "knn"]
    res = bootstrap_zoo(zoo, y, metrics=metrics, replicates=3, seed=5, sa=[None, "ped"],
                        progress=False)
    idx, codes = resample_indices(y, 3, 5)
    for m in metrics:
        for k, f in zoo.items():
            for r in range(3):
                moved = ped(f[idx[r]], codes)[0]
                grouped = {"parc": parc_grouped, "knn": knn_grouped}.get(m)
                want = (grouped(moved, codes, idx[r]) if grouped
                        else ref.score(f[idx[r]], codes, metric=m, sa="ped"))
                assert abs(res.samples[f"{m}+ped"][k][r] - want) <= 1e-6 * max(1.0, abs(want))
    assert set(res.sa_applied) == {"ped"}


def test_ped_settings_are_checked_and_keyed_apart():
    assert catalogue.resolve_sa("ped") == dict(variant="ped", **catalogue.PED_DEFAULTS)
    for bad, match in ((dict(variant="ped", alpha=0.1), "unknown PED option"),
                       (dict(variant="ped", time_step=-1.0), "time_step"),
                       (dict(variant="ped", max_steps=1.5), "max_steps"),
                       ("pde", "unknown SA variant")):
        with pytest.raises(ValueError, match=match):
            catalogue.resolve_sa(bad)



def test_ped_scores_are_checkpointed_and_reused(tmp_path):
    zoo, y = small_zoo()
    path = tmp_path / "ck.json"
    first = te_gpu.score_zoo(zoo, y, metrics=["sfda"], sa=[None, "ped"], checkpoint=path,
                             progress=False)
    book = json.loads(path.read_text())
    keys = {k.split("@")[0] for e in book["models"].values() for k in e["scores"]}
    assert keys == {"sfda", "sfda+ped"}
    other = te_gpu.score_zoo(zoo, y, metrics=["sfda"], sa=[dict(variant="ped", time_step=0.3)],
                             checkpoint=path, progress=False)   # another PED: new scores
    again = te_gpu.score_zoo(zoo, y, metrics=["sfda"], sa=[None, "ped"], checkpoint=path,
                             progress=False)
    assert again.scores == first.scores
    assert other.scores["sfda+ped"] != first.scores["sfda+ped"]


def test_cli_scores_with_ped(tmp_path, capsys):
    from te_gpu import save_zoo
    from te_gpu.cli import main

    zoo, y = small_zoo()
    save_zoo(tmp_path / "zoo", "toy", zoo, y)
    assert main(["score", str(tmp_path / "zoo"), "--metrics", "sfda,parc", "--sa", "none,ped",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "after PED" in out and "PED: moved the classes of 3 of 3 models" in out
    res = json.loads((tmp_path / "out" / "result.json").read_text())
    want = ref.score(zoo["b"], y, metric="parc", sa="ped")
    assert abs(res["scores"]["parc+ped"]["b"] - want) <= 1e-9 * abs(want)


# ------------------------------------------------------------------ PED's reference statistics

def reference_zoo(zoo):
    """Each model's features on other data (as the released scripts' ImageNet features):
    other rows, scale and offset (a dead unit stays constant there: its spread is floored)."""
    rng = np.random.default_rng(3)
    return {k: 1.5 * f[rng.permutation(len(f))[:40]] + rng.normal(size=f.shape[1])
            for k, f in zoo.items()}


def test_score_zoo_ped_reference_equals_the_reference_for_every_per_model_metric():
    zoo, y = small_zoo()
    dead = 2.0 * np.maximum(zoo["a"], 0.0)        # ReLU features: dead units, a duplicated one
    dead[:, :2] = 0.0
    dead[:, 3] = dead[:, 4]
    zoo["dead"] = dead
    refs = reference_zoo(zoo)
    metrics = ["sfda", "logme", "lda", "gbc", "knn"]
    res = te_gpu.score_zoo(zoo, y, metrics=metrics, sa=[None, "ped"], ped_reference=refs,
                           progress=False)
    own = te_gpu.score_zoo(zoo, y, metrics=["sfda"], sa="ped", progress=False)
    for k, f in zoo.items():
        moved = ped(f, y, reference_features=refs[k])[0]
        for m in metrics:
            want = ref.score(moved, y, metric=m)
            got = res.scores[f"{m}+ped"][k]
            assert abs(got - want) <= 1e-8 * max(1.0, abs(want)), (m, k, got, want)
    assert res.scores["sfda+ped"] != own.scores["sfda+ped"]
    assert res.scores["sfda"] == te_gpu.score_zoo(zoo, y, metrics=["sfda"], progress=False).scores["sfda"]


def test_ped_reference_is_checked_and_keys_the_checkpoint(tmp_path):
    zoo, y = small_zoo()
    refs = reference_zoo(zoo)
    for kw, match in ((dict(sa="released"), "no setting is PED"),
                      (dict(sa="ped", ped_reference={"a": refs["a"]}), "missing"),
                      (dict(sa="ped", ped_reference=dict(refs, z=refs["a"])), "unknown"),
                      (dict(sa="ped", ped_reference=dict(refs, a=refs["c"])), "columns")):
        kw.setdefault("ped_reference", refs)
        with pytest.raises(ValueError, match=match):
            te_gpu.score_zoo(zoo, y, metrics=["sfda"], progress=False, **kw)
    path = tmp_path / "ck.json"
    first = te_gpu.score_zoo(zoo, y, metrics=["sfda"], sa="ped", ped_reference=refs,
                             checkpoint=path, progress=False)
    other_refs = {k: v * 3.0 for k, v in refs.items()}
    second = te_gpu.score_zoo(zoo, y, metrics=["sfda"], sa="ped", ped_reference=other_refs,
                              checkpoint=path, progress=False)      # new reference: rescored
    fresh = te_gpu.score_zoo(zoo, y, metrics=["sfda"], sa="ped", ped_reference=other_refs,
                             progress=False)
    assert second.scores == fresh.scores != first.scores
    again = te_gpu.score_zoo(zoo, y, metrics=["sfda"], sa="ped", ped_reference=refs,
                             checkpoint=path, progress=False)
    assert again.scores == first.scores


def test_bootstrap_ped_reference_equals_the_reference_on_each_redraw():
    """The reference statistics are the model's, not the redraw's: not resampled."""
    from te_gpu.bootstrap import bootstrap_zoo, resample_indices

    zoo, y = small_zoo()
    refs = reference_zoo(zoo)
    res = bootstrap_zoo(zoo, y, metrics=["sfda", "lda"], replicates=3, seed=2, sa="ped",
                        ped_reference=refs, progress=False, batch_size=2)
    idx, codes = resample_indices(y, 3, 2)
    for k, f in zoo.items():
        for r in range(3):
            moved = ped(f[idx[r]], codes, reference_features=refs[k])[0]
            for m in ("sfda", "lda"):
                want = ref.score(moved, codes, metric=m)
                assert abs(res.samples[f"{m}+ped"][k][r] - want) <= 1e-6 * max(1.0, abs(want))


def test_ped_reference_takes_the_statistics_instead_of_the_features():
    from te_gpu.zoo import ReferenceStats

    zoo, y = small_zoo()
    refs = reference_zoo(zoo)
    stats = {k: ReferenceStats(r.mean(0), r.std(0)) for k, r in refs.items()}
    by_features = te_gpu.score_zoo(zoo, y, metrics=["sfda"], sa="ped", ped_reference=refs,
                                   progress=False)
    by_stats = te_gpu.score_zoo(zoo, y, metrics=["sfda"], sa="ped", ped_reference=stats,
                                progress=False)
    assert by_stats.scores == by_features.scores
    with pytest.raises(ValueError, match="columns"):
        te_gpu.score_zoo(zoo, y, metrics=["sfda"], sa="ped", progress=False,
                         ped_reference=dict(stats, a=ReferenceStats(np.zeros(3), np.ones(3))))
