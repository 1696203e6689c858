"""The accuracies measured on the weight-wheel zoos (the shipped ``wheels`` ground truth),
their models' facts, `te-gpu correlate/baselines --truth wheels`, and the metric set each
transfer regime declares (te_gpu.regimes) against the evidence that chose it."""
import json
import math
import os
from importlib import resources
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from te_gpu import baselines, catalogue, rank, recommend, regimes, write_scores  # noqa: E402
from te_gpu.cli import main  # noqa: E402

ZOOS = ("fmnist32", "digits48", "fmnist5c32", "fmnist64", "digits64", "fmnist64n6k",
        "fmnist5c64n6k")
MEASURED = ("lft", "lbft", "finetune")
EVIDENCE = Path(__file__).resolve().parent.parent / "bench" / "results" / "regime_evidence_B20.json"
# the zoos fully fine-tuned for 10 epochs too (wheels_e10), and budget's files and verdicts
E10_ZOOS = ("fmnist32", "fmnist64", "fmnist5c32", "digits48")
# the zoos fine-tuned with lr up to 0.1, three runs each (wheels_lr), and their runs
LR_ZOOS = ("fmnist5l32", "fmnist32s6", "digits32", "fmnist32", "fmnist5c32", "digits48", "digits64",
           "fmnist64")                                      # the last block and the whole network
# and the two 96 px zoos held out from every choice, so fine-tuned to judge the sets
LR_HELD_OUT = ("fmnist96", "fmnist5c96")
LR_SHIPPED = LR_ZOOS + LR_HELD_OUT
BUDGET_FILES = Path(__file__).resolve().parent.parent / "bench" / "results" / "finetune_budget"
BUDGET = BUDGET_FILES.parent / "regime_budget_e10.json"
SWEEP = BUDGET_FILES.parent / "regime_sweep_lr.json"      # budget's verdicts on the wider lr sweep
SWEEP_LBFT = BUDGET_FILES.parent / "regime_sweep_lr_lbft.json"
SWEEP_FILES = BUDGET_FILES.parent / "finetune_sweep"
SWEEP_MEANS = BUDGET_FILES.parent / "regime_sweep_lr_means.json"   # the same, finetune, three runs
# the 10-epoch means judged again with the wider sweep's pick beside the sets
BUDGET_WIDE_SET = BUDGET_FILES.parent / "regime_budget_e10_wide_set.json"
# that pick, and the sets, judged on the 96 px zoos held out from it (means of three wider
# runs; both regimes)
HELD_OUT_WIDE = BUDGET_FILES.parent / "regime_sweep_lr_96px.json"
WIDE_PICK = "knn,sfda+released,transrate+released"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _evidence_script():
    """bench/regime_evidence.py, loaded as a module (bench/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "regime_evidence", Path(__file__).resolve().parent.parent / "bench" / "regime_evidence.py")
    ev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ev)
    return ev


def _shipped() -> dict:
    return json.loads(resources.files("te_gpu").joinpath("data", "wheels_accuracy.json").read_text())


def test_wheels_is_listed_with_every_regime_and_zoo():
    listing = rank.list_ground_truth()
    assert set(listing) == {"group1", "group2", "wheels", "wheels_e10", "wheels_heldout", "wheels_lr"}
    assert listing["wheels"]["regimes"] == list(MEASURED)
    assert listing["wheels"]["datasets"] == list(ZOOS)
    assert len(listing["wheels"]["models"]) == 13
    assert listing["wheels_e10"]["regimes"] == ["finetune"]
    assert listing["wheels_e10"]["datasets"] == list(E10_ZOOS)
    assert listing["wheels_e10"]["models"] == listing["wheels"]["models"]


@pytest.mark.parametrize("dataset", ZOOS)
def test_wheels_tables_name_one_zoo_in_every_regime(dataset):
    tables = {r: rank.ground_truth("wheels", r, dataset) for r in MEASURED}
    models = set(tables["lft"])
    assert len(models) >= 9 and "mnv2-random" in models and "lite0" in models
    for regime, table in tables.items():
        assert set(table) == models, regime
        assert all(isinstance(v, float) and math.isfinite(v) and 0 < v <= 100 for v in table.values())
        assert len(set(table.values())) > 1          # an order to compare with
    how = _shipped()["_how_measured"]["datasets"][dataset]
    assert {"seed", "n_train", "n_test", "commands", "seconds"} <= set(how)
    for regime in MEASURED:
        cmd = how["commands"][f"finetune {regime}"]
        assert cmd.startswith("te-gpu finetune") and f"--regime {regime}" in cmd
        assert f"--seed {how['seed']}" in cmd and f"--n-train {how['n_train']}" in cmd
    details = _shipped()["_details"]["finetune"][dataset]
    assert set(details) == models
    assert all(len(d["sweep"]) == 2 and d["lr"] in (0.01, 0.001) for d in details.values())


@pytest.mark.parametrize("dataset", ZOOS)
def test_a_re_run_regime_ships_the_mean_of_its_training_runs(dataset):
    """Where a zoo was fine-tuned again with other training seeds, its table is each model's
    mean over the runs; the zoo's own seed's run is the one its sweep details describe, and
    the commands that made the other runs name their seeds and measured the re-run models
    (a command may measure more networks than the zoo's candidates)."""
    how = _shipped()["_how_measured"]["datasets"][dataset]
    re_run = how.get("training_runs", {})
    assert set(re_run) <= set(MEASURED) - {"lft"}       # the probe is deterministic
    for regime, said in re_run.items():
        table, details = rank.ground_truth("wheels", regime, dataset), _shipped()["_details"][regime][dataset]
        runs = {m: details[m]["runs"] for m in table}
        assert next(iter(said["train_seeds"])) == how["seed"] and len(said["train_seeds"]) >= 2
        for m, acc in table.items():
            assert list(runs[m])[0] == str(how["seed"]) and set(runs[m]) <= set(map(str, said["train_seeds"]))
            assert acc == round(sum(runs[m].values()) / len(runs[m]), 2), m
            chosen = details[m]["sweep"][f"lr={details[m]['lr']},wd={details[m]['wd']}"]
            assert runs[m][str(how["seed"])] == chosen["test"], m
        measured = {m for c in said["commands"] for m in c["models"]} & set(table)
        assert measured == {m for m in runs if len(runs[m]) > 1}
        for c in said["commands"]:
            assert c["command"].startswith("te-gpu finetune") and f"--regime {regime}" in c["command"]
            assert f"--seed {how['seed']} " in c["command"] and "--train-seeds " in c["command"]


def test_the_held_out_zoos_stay_out_of_the_evidence_and_ship_apart():
    """bench/regime_evidence.py's held-out zoos judge the chosen sets only: evaluate and ship
    default to the evidence zoos, held-out to the held-out ones; they ship apart, as
    wheels_heldout, and never in the wheels tables the sets were chosen on."""
    import argparse

    ev = _evidence_script()
    assert set(ev.HELD_OUT) <= set(ev.ZOOS) and ev.EVIDENCE_ZOOS == ZOOS
    listing = rank.list_ground_truth()
    assert not set(ev.HELD_OUT) & set(listing["wheels"]["datasets"])
    assert set(listing[ev.HELD_OUT_GROUP]["datasets"]) <= set(ev.HELD_OUT)
    assert listing[ev.HELD_OUT_GROUP]["models"] == listing["wheels"]["models"]
    sub = next(a for a in ev.parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert sub["evaluate"].get_default("zoos") == ",".join(ZOOS)
    assert sub["ship"].get_default("group") == "wheels"
    assert sub["held-out"].get_default("zoos") == ",".join(ev.HELD_OUT)


HELD_OUT_VERDICTS = EVIDENCE.parent


def test_the_shipped_held_out_tables_are_the_truth_their_verdicts_judged():
    """wheels_heldout ships, per zoo and regime, the accuracies `held-out` judged the sets
    against (bench/results/regime_heldout_ZOO.json; re-run regimes as their means, rounded to
    the 2 decimals shipped), and each shipped zoo has its verdict file."""
    shipped = rank.list_ground_truth()["wheels_heldout"]
    assert shipped["regimes"] == list(MEASURED) and len(shipped["datasets"]) >= 3
    for dataset in shipped["datasets"]:
        verdict = json.loads((HELD_OUT_VERDICTS / f"regime_heldout_{dataset}.json").read_text())[dataset]
        # a zoo measured in some regimes only (fmnist5c96: lft, lbft) is judged in those
        assert set(verdict) == {r for r in MEASURED if dataset in shipped["measured"][r]}, dataset
        for regime, judged in verdict.items():
            table = rank.ground_truth("wheels_heldout", regime, dataset)
            assert table == {m: round(v, 2) for m, v in judged["accuracy"].items()}, (dataset, regime)
            best = max(table.values())
            assert sorted(m for m in table if table[m] == best) == judged["best"], (dataset, regime)


def test_regime_evidence_ship_held_out_group_reuses_the_wheels_facts(tmp_path, monkeypatch):
    """ship --group wheels_heldout writes te_gpu/data/wheels_heldout_accuracy.json with the
    held-out note, leaves model_facts.json alone, and refuses a store whose parameters or
    widths disagree with the wheels facts it reuses."""
    import shutil

    from te_gpu.pipeline import extract

    ev = _evidence_script()
    name, data = ev.HELD_OUT[0], tmp_path / "data"
    data.mkdir()
    shutil.copy(resources.files("te_gpu").joinpath("data", "model_facts.json"), data / "model_facts.json")
    before = (data / "model_facts.json").read_text()
    monkeypatch.setattr(ev, "DATA", data)
    models = ev.candidate_names(name)
    acc = {m: 50.0 + k for k, m in enumerate(models)}
    (tmp_path / name).mkdir()
    (tmp_path / name / "truth.json").write_text(json.dumps({
        "groups": {name: {"regimes": {r: {name: acc} for r in MEASURED}}},
        "_details": {name: {r: {name: {m: {"lr": 0.01} for m in models}} for r in MEASURED}}}))
    (tmp_path / name / "timing.json").write_text(json.dumps({"extract train": dict(
        wall_s=1.0, cpu_s=1.0, command=f"-m te_gpu extract --out {tmp_path}/{name}/train")}))
    wheels = baselines.facts("wheels")
    store = {m: dict(params=wheels[m]["params"], dim=wheels[m]["feature_width"]) for m in models}
    monkeypatch.setattr(extract, "read_manifest", lambda path: {"datasets": {name: {"models": store}}})
    path = ev.ship(tmp_path, [name], group=ev.HELD_OUT_GROUP)
    got = json.loads(path.read_text())
    assert path == data / "wheels_heldout_accuracy.json" and "Held-out zoos" in got["_source"]
    assert got["groups"] == {"wheels_heldout": {"models": models, "regimes": {r: {name: acc} for r in MEASURED}}}
    assert got["_how_measured"]["datasets"][name]["commands"] == {
        "extract train": f"te-gpu extract --out WORK/{name}/train"}
    assert (data / "model_facts.json").read_text() == before
    store[models[0]] = dict(store[models[0]], dim=7)
    with pytest.raises(ValueError, match=f"{models[0]}: parameters or width differ"):
        ev.ship(tmp_path, [name], group=ev.HELD_OUT_GROUP)


def test_baselines_and_correlate_read_the_held_out_tables(capsys):
    code, out, err = run(capsys, "baselines", "--truth", "wheels_heldout", "--regime", "lft")
    assert code == 0, err
    assert "static rankings against wheels_heldout/lft" in out and "facts: wheels" in out
    dataset = rank.list_ground_truth()["wheels_heldout"]["datasets"][0]
    assert dataset in out


@pytest.mark.skipif(not EVIDENCE.is_file(), reason="the evidence file is not in this checkout")
def test_the_shipped_tables_are_the_truth_the_evidence_judged():
    """The regime sets were chosen against the accuracies te-gpu ships (re-run regimes as
    their means, rounded to the 2 decimals shipped)."""
    zoos = json.loads(EVIDENCE.read_text())["zoos"]
    assert set(zoos) == set(ZOOS)
    for dataset, z in zoos.items():
        for regime, judged in z["truth"].items():
            shipped = rank.ground_truth("wheels", regime, dataset)
            assert shipped == {m: round(v, 2) for m, v in judged.items()}, (dataset, regime)


def _shipped_group(group: str) -> dict:
    return json.loads(resources.files("te_gpu").joinpath("data", f"{group}_accuracy.json").read_text())


def _shipped_e10() -> dict:
    return _shipped_group("wheels_e10")


def _wheels_group_of(dataset: str) -> str:
    """The shipped 3-epoch table a zoo belongs to: the evidence's, or the held-out one."""
    return "wheels" if dataset in rank.list_ground_truth()["wheels"]["datasets"] else "wheels_heldout"


# each shipped table of another budget: (group, regime, its zoos, what its commands say)
BUDGET_TABLES = (("wheels_e10", "finetune", E10_ZOOS, " --epochs 10 "),
                 ("wheels_lr", "lbft", LR_SHIPPED, " --lr 0.1,0.03,0.01 --wd 1e-4 --epochs 3 "),
                 ("wheels_lr", "finetune", LR_SHIPPED, " --lr 0.1,0.03,0.01 --wd 1e-4 --epochs 3 "))


@pytest.mark.parametrize("group,regime,dataset,said_budget",
                         [(g, r, d, b) for g, r, zoos, b in BUDGET_TABLES for d in zoos])
def test_a_budget_table_ships_each_zoo_as_the_mean_of_its_runs(group, regime, dataset, said_budget):
    """wheels_e10 and wheels_lr: a zoo of the 3-epoch tables (same candidates, images and
    hold-out) fine-tuned for 10 epochs, or with a wider lr sweep, each model's mean over
    three training runs, each run the test accuracy at the setting its own sweep kept, and
    the commands that made them (a command without --train-seeds trained with its --seed)."""
    wheels = _wheels_group_of(dataset)
    table = rank.ground_truth(group, regime, dataset)
    # the 3-epoch table of that regime, or the probe's where it was not so fine-tuned (fmnist5c96)
    measured = rank.list_ground_truth()[wheels]["measured"]
    assert set(table) == set(rank.ground_truth(wheels, regime if dataset in measured[regime] else "lft",
                                               dataset))
    shipped = _shipped_group(group)
    details = shipped["_details"][regime][dataset]
    how = shipped["_how_measured"]["datasets"][dataset]
    said = how["training_runs"][regime]
    assert len(said["train_seeds"]) == 3
    for m, acc in table.items():
        runs, settings = details[m]["runs"], details[m]["settings"]
        assert list(runs) == list(map(str, said["train_seeds"])) == list(settings)
        assert acc == round(sum(runs.values()) / 3, 2), m
        for seed, run_acc in runs.items():
            kept = settings[seed]
            assert kept["sweep"][f"lr={kept['lr']},wd={kept['wd']}"] == dict(val=kept["val_accuracy"], test=run_acc)
    wheels_how = _shipped_group(wheels)["_how_measured"]["datasets"][dataset]
    assert {k: how[k] for k in ("data", "seed", "n_train", "n_test")} == \
        {k: wheels_how[k] for k in ("data", "seed", "n_train", "n_test")}
    for seed in said["train_seeds"]:
        ran = [c for c in said["commands"] if f"--train-seeds {seed} " in c["command"] or
               ("--train-seeds" not in c["command"] and seed == how["seed"])]
        assert {m for c in ran for m in c["models"]} == set(table), seed
        for c in ran:
            assert c["command"].startswith("te-gpu finetune") and said_budget in c["command"]
            assert f"--regime {regime} " in c["command"]
            assert f"--seed {how['seed']} " in c["command"] and f"--n-train {how['n_train']} " in c["command"]
    assert said_budget.split("--epochs")[-1].strip() + " epochs" in shipped["_how_measured"]["training"]


# budget's verdicts against a shipped table of another budget: (verdicts, regime, group)
JUDGED_TABLES = ((BUDGET, "finetune", "wheels_e10"), (BUDGET_WIDE_SET, "finetune", "wheels_e10"),
                 (SWEEP_LBFT, "lbft", "wheels_lr"), (SWEEP_MEANS, "finetune", "wheels_lr"),
                 (HELD_OUT_WIDE, "lbft", "wheels_lr"), (HELD_OUT_WIDE, "finetune", "wheels_lr"))


@pytest.mark.parametrize("verdicts,regime,group", JUDGED_TABLES)
def test_a_budget_table_is_the_target_budget_judged(verdicts, regime, group):
    """The verdicts of bench/RESULTS.md under another budget or sweep were judged against
    the tables shipped (budget's target, the runs' mean, to the 2 decimals shipped)."""
    if not verdicts.is_file():
        pytest.skip("budget's verdicts are not in this checkout")
    judged = json.loads(verdicts.read_text())[regime]
    measured = rank.list_ground_truth()[group]["measured"][regime]
    # every zoo of the table judged by one file or another (wheels_lr: evidence, held out)
    assert set(judged) <= set(measured)
    assert set(measured) == {z for f, r, g in JUDGED_TABLES if (r, g) == (regime, group) and f.is_file()
                             for z in json.loads(f.read_text())[r]}
    for dataset, v in judged.items():
        at = list(v["judged"]).index(v["target"])
        assert rank.ground_truth(group, regime, dataset) == {
            m: round(acc[at], 2) for m, acc in v["accuracy"].items()}, dataset


def _passes_against_target(path: Path, regime: str) -> tuple:
    """(zoos where the regime's chosen set passes against budget's target, zoos judged)."""
    chosen = ",".join(regimes.REGIMES[regime].labels)
    judged = json.loads(path.read_text())[regime]
    return (sum(v["judged"][v["target"]]["sets"][chosen]["passes"] for v in judged.values()),
            len(judged))


def _beaten_by_width_reversed(path: Path, regime: str) -> int:
    """Zoos where the ranking by width, narrowest first, has a higher tau_w than the
    regime's chosen set against budget's target."""
    chosen = ",".join(regimes.REGIMES[regime].labels)
    return sum(v["judged"][v["target"]]["static"]["width reversed"]["tau_w"] >
               v["judged"][v["target"]]["sets"][chosen]["tau_w"]
               for v in json.loads(path.read_text())[regime].values())


def _top3_kept(path: Path, regime: str) -> int:
    """Zoos where the chosen set keeps the most accurate model in its top 3 often enough."""
    chosen = ",".join(regimes.REGIMES[regime].labels)
    return sum(v["judged"][v["target"]]["sets"][chosen]["p_best_top"] >= regimes.TOP3_NEEDED
               for v in json.loads(path.read_text())[regime].values())


@pytest.mark.skipif(not all(f.is_file() for f in (BUDGET, SWEEP, SWEEP_LBFT, SWEEP_MEANS, HELD_OUT_WIDE)),
                    reason="budget's verdicts are not in this checkout")
def test_caveats_count_the_zoos_of_the_other_budget_and_the_wider_sweep():
    """The finetune and lbft caveats' counts are budget's verdicts: the chosen set against
    the 10-epoch means, and against the means of three runs fine-tuned with lr up to 0.1
    (each run judged too, beside the shipped run and the shipped mean)."""
    e10, n10 = _passes_against_target(BUDGET, "finetune")
    wide, n_wide = _passes_against_target(SWEEP_MEANS, "finetune")
    caveat = regimes.REGIMES["finetune"].caveat
    assert f"passed on {e10} of {n10} zoos fine-tuned for 10 epochs" in caveat
    assert f"and on {wide} of {n_wide} fine-tuned with lr up to 0.1 (means of three runs), where " \
           f"it kept the most accurate model in its top 3 on {_top3_kept(SWEEP_MEANS, 'finetune')} " \
           "but the ranking by feature width, narrowest first, ordered the models better on " \
           f"{_beaten_by_width_reversed(SWEEP_MEANS, 'finetune')}; " in caveat
    held, n_held = _passes_against_target(HELD_OUT_WIDE, "finetune")
    on_both = json.loads(HELD_OUT_WIDE.read_text())["rule"]["finetune"]["sets_passing"][str(n_held)]
    assert n_held == 2 and on_both == 0
    assert (f"on two zoos at 96 px held out from it, it passed on {held} of {n_held} (no set "
            "passed on both):") in caveat
    wide, n_wide = _passes_against_target(SWEEP_LBFT, "lbft")
    assert f"passed on {wide} of {n_wide} zoos whose last block was fine-tuned with lr up to " \
           "0.1 (means of three runs), where the ranking by feature width, narrowest first, " \
           f"beat it on {_beaten_by_width_reversed(SWEEP_LBFT, 'lbft')}, " in regimes.REGIMES["lbft"].caveat
    held, n_held = _passes_against_target(HELD_OUT_WIDE, "lbft")
    assert n_held == 2 and json.loads(HELD_OUT_WIDE.read_text())["rule"]["lbft"]["sets_passing"]["2"] == 0
    assert (f"and on {held} of {n_held} such zoos at 96 px held out from it, where that ranking "
            f"beat it on {_beaten_by_width_reversed(HELD_OUT_WIDE, 'lbft')}:") in regimes.REGIMES["lbft"].caveat
    for regime in ("lbft", "finetune"):
        assert regimes.REGIMES[regime].look_also == ("width reversed",)
    for name, v in json.loads(SWEEP.read_text())["finetune"].items():     # one wider run
        assert list(v["judged"]) == ["shipped run", "mean of runs", v["target"]] and \
            v["target"] == f"{name}_lr"
    for path, regime, kind in ((SWEEP_LBFT, "lbft", "lbft_lr"), (SWEEP_MEANS, "finetune", "lr")):
        judged = json.loads(path.read_text())[regime]
        assert tuple(judged) == LR_ZOOS
        for name, v in judged.items():                                   # three wider runs
            runs = list(v["judged"])[2:-1]
            assert len(runs) == 3 and runs[0] == f"{name}_{kind}" and \
                all(r.startswith(f"{name}_{kind}_s") for r in runs[1:])
            assert list(v["judged"]) == ["shipped run", "mean of runs", *runs, v["target"]]
            assert v["target"] == "mean of " + ", ".join(runs)


@pytest.mark.skipif(not all(f.is_file() for f in (SWEEP_MEANS, HELD_OUT_WIDE, BUDGET_WIDE_SET)),
                    reason="budget's verdicts are not in this checkout")
def test_the_wider_sweeps_finetune_pick_was_judged_on_a_held_out_zoo():
    """On the eight wider means the choice rule picks WIDE_PICK, with any one zoo left out
    too; on fmnist96, held out from it (96 px, the mean of its wider runs), it fails and
    the finetune set does better: the reason the set stays (te_gpu.regimes says so). On
    fmnist5c96, a second 96 px zoo, both fail, and the rule's pick on either 96 px zoo
    fails on the other."""
    rule = json.loads(SWEEP_MEANS.read_text())["rule"]["finetune"]
    assert rule["zoos"] == list(LR_ZOOS) and rule["chosen"] == WIDE_PICK
    assert {h["chosen_on_others"] for h in rule["leave_one_zoo_out"].values()} == {WIDE_PICK}
    assert rule["merit"][0] > rule["shown"]["knn,sfda+released"][0]
    held = json.loads(HELD_OUT_WIDE.read_text())["finetune"]
    assert list(held) == ["fmnist96", "fmnist5c96"] and not set(held) & set(LR_ZOOS)
    v = held["fmnist96"]
    assert v["target"] == "mean of fmnist96_lr, fmnist96_lr_s9, fmnist96_lr_s10"
    sets = v["judged"][v["target"]]["sets"]
    chosen = ",".join(regimes.REGIMES["finetune"].labels)
    assert not sets[WIDE_PICK]["passes"] and chosen != WIDE_PICK
    for key in ("tau_w", "p_best_top"):                  # the set kept does better on both
        assert sets[chosen][key] > sets[WIDE_PICK][key]
    wide = sets[WIDE_PICK]
    said = (f"(tau_w {wide['tau_w']:.3f},\n# the most accurate model in its top 3 on "
            f"{100 * wide['p_best_top']:.0f} % of redraws)")
    assert said in Path(regimes.__file__).read_text()
    v = held["fmnist5c96"]
    assert v["target"] == "mean of fmnist5c96_lr, fmnist5c96_lr_s10, fmnist5c96_lr_s11"
    sets = v["judged"][v["target"]]["sets"]
    assert not sets[chosen]["passes"] and not sets[WIDE_PICK]["passes"]
    on_96 = json.loads(HELD_OUT_WIDE.read_text())["rule"]["finetune"]
    assert on_96["zoos"] == list(held) and on_96["sets_passing"]["2"] == 0
    assert not any(h["passes"] for h in on_96["leave_one_zoo_out"].values())


@pytest.mark.skipif(not BUDGET_FILES.is_dir(), reason="budget's files are not in this checkout")
def test_regime_evidence_ship_budget_rebuilds_wheels_e10_and_refuses_a_stopped_run(tmp_path):
    """bench/regime_evidence.py ship-budget, from the runs in bench/results/finetune_budget,
    writes the shipped file (the software line aside: it names the installed versions); a
    run that stopped before measuring every candidate, a training seed given twice, or runs
    of another budget are refused."""
    ev = _evidence_script()
    files = [BUDGET_FILES / f"{z}_e10_seed{s}.json" for z, seeds in
             (("fmnist32", (0, 1, 2)), ("fmnist64", (2, 3, 4)), ("fmnist5c32", (2, 3, 4)), ("digits48", (0, 1, 2)))
             for s in seeds]
    got = json.loads(ev.ship_budget(files, out=tmp_path / "e10.json").read_text())
    shipped = _shipped_e10()
    for d in (got, shipped):
        d["_how_measured"].pop("software")
    assert got == shipped
    with pytest.raises(ValueError, match="lacks 6 of the zoo's 13 candidates"):
        ev.ship_budget(files + [BUDGET_FILES / "digits64_e10_stopped.json"], out=tmp_path / "x.json")
    with pytest.raises(ValueError, match="digits48 finetune lite0-stage4 has a run with training seed 2 already"):
        ev.ship_budget(files + files[-1:], out=tmp_path / "x.json")
    other = tmp_path / "digits48_e5_seed9.json"
    run = json.loads(files[-1].read_text())
    for d in run["_details"]["digits48"]["finetune"]["digits48"].values():
        d["train_seeds"] = [9]
    other.write_text(json.dumps(run))
    other.with_suffix(".sh").write_text(files[-1].with_suffix(".sh").read_text().replace("--epochs 10", "--epochs 5"))
    with pytest.raises(ValueError, match=r"different budgets: --epochs \['10', '5'\]"):
        ev.ship_budget(files + [other], out=tmp_path / "x.json")
    other.with_suffix(".sh").write_text(files[-1].with_suffix(".sh").read_text().replace("--epochs 10 ", ""))
    with pytest.raises(ValueError, match="a command without --epochs"):
        ev.ship_budget(files + [other], out=tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def _lr_files() -> list:
    """wheels_lr's runs in the order shipped: lbft then finetune, zoo by zoo, the run at
    the zoo's seed first."""
    return [f for kind in ("lbft_lr", "lr") for z in LR_SHIPPED
            for f in sorted(SWEEP_FILES.glob(f"{z}_{kind}*.json"))]


@pytest.mark.skipif(not SWEEP_FILES.is_dir(), reason="the sweep's files are not in this checkout")
def test_regime_evidence_ship_budget_rebuilds_wheels_lr_and_refuses_another_sweep(tmp_path):
    """ship-budget --group wheels_lr, from the runs in bench/results/finetune_sweep, writes
    the shipped file (the software line aside), the run at each zoo's seed included; a run
    of the narrow sweep among them is refused."""
    ev = _evidence_script()
    files = _lr_files()
    assert len(files) == 3 * 2 * len(LR_SHIPPED)
    got = json.loads(ev.ship_budget(files, "wheels_lr", out=tmp_path / "lr.json").read_text())
    shipped = _shipped_group("wheels_lr")
    for d in (got, shipped):
        d["_how_measured"].pop("software")
    assert got == shipped
    assert "lr swept over 0.1, 0.03, 0.01 (the wheels tables: 0.01, 0.001)" in got["_source"]
    narrow = tmp_path / "fmnist32_lr_s99.json"
    run = json.loads(files[-1].read_text())
    name = next(iter(run["_details"]))
    for d in run["_details"][name]["finetune"][name].values():
        d["train_seeds"] = [99]                       # a seed no shipped run has
    narrow.write_text(json.dumps(run))
    narrow.with_suffix(".sh").write_text(files[-1].with_suffix(".sh").read_text().replace(
        "--lr 0.1,0.03,0.01", "--lr 0.01,0.001"))
    with pytest.raises(ValueError, match=r"different budgets: --lr \['0.01,0.001', '0.1,0.03,0.01'\]"):
        ev.ship_budget(files + [narrow], "wheels_lr", out=tmp_path / "x.json")
    with pytest.raises(ValueError, match="no bench/RESULTS.md section is named for 'wheels_x'"):
        ev.ship_budget(files, "wheels_x", out=tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_baselines_cli_reads_the_10_epoch_tables_with_the_wheels_facts(capsys):
    code, out, err = run(capsys, "baselines", "--truth", "wheels_e10")
    assert code == 0, err
    assert "static rankings against wheels_e10/finetune" in out and "facts: wheels" in out
    assert f"mean of {len(E10_ZOOS)}" in out and "feature width" in out
    code, _, err = run(capsys, "baselines", "--truth", "wheels_e10", "--regime", "lft")
    assert code == 2 and "unknown regime 'lft' for wheels_e10" in err


def test_baselines_and_correlate_cli_read_the_wider_sweep_tables(capsys, tmp_path):
    """--truth wheels_lr: lbft and finetune on ten zoos, the wheels facts; no probe table."""
    for regime in ("lbft", "finetune"):
        code, out, err = run(capsys, "baselines", "--truth", "wheels_lr", "--regime", regime)
        assert code == 0, err
        assert f"static rankings against wheels_lr/{regime}" in out and "facts: wheels" in out
        assert f"mean of {len(LR_SHIPPED)}" in out and all(z in out for z in LR_SHIPPED)
    code, _, err = run(capsys, "baselines", "--truth", "wheels_lr", "--regime", "lft")
    assert code == 2 and "unknown regime 'lft' for wheels_lr" in err
    acc = rank.ground_truth("wheels_lr", "finetune", "digits64")
    write_scores(tmp_path / "oracle.json", acc, duration=1.0)
    code, out, err = run(capsys, "correlate", str(tmp_path / "oracle.json"), "--truth", "wheels_lr",
                         "--dataset", "digits64", "--regime", "finetune")
    assert code == 0, err
    assert next(line for line in out.splitlines() if line.startswith("oracle")).split()[2] == "+1.000"


def test_wheels_facts_name_every_model():
    facts = baselines.facts("wheels")
    assert set(facts) == set(rank.list_ground_truth()["wheels"]["models"])
    for m, f in facts.items():
        assert isinstance(f["params"], int) and isinstance(f["feature_width"], int), m
    # the depths of one network count the whole network: they tie on parameters
    assert facts["lite0-stage3"]["params"] == facts["lite0"]["params"] != facts["lite2"]["params"]
    assert facts["lite0"]["feature_width"] == 1280 and facts["mnv2-stage3"]["feature_width"] == 96
    assert baselines.group_with_facts(["lite0", "mnv2-random"]) == "wheels"
    assert baselines.group_with_facts(["resnet50", "googlenet"]) == "group1"


def test_baselines_cli_reads_the_wheels_tables(capsys):
    code, out, err = run(capsys, "baselines", "--truth", "wheels", "--regime", MEASURED[-1])
    assert code == 0, err
    assert f"static rankings against wheels/{MEASURED[-1]}" in out and "facts: wheels" in out
    for dataset in ZOOS:
        assert any(line.startswith(dataset) for line in out.splitlines())
    assert f"mean of {len(ZOOS)}" in out


@pytest.mark.skipif(not EVIDENCE.is_file(), reason="the evidence file is not in this checkout")
def test_baselines_cli_gives_the_static_rankings_the_evidence_judged_against(capsys, tmp_path):
    """te-gpu baselines --truth wheels shows the three static rankings of the regimes'
    evidence (parameters, width, width reversed: the one regimes.weak_line points at) with
    the tau_w the evidence computed, in every regime and zoo."""
    zoos = json.loads(EVIDENCE.read_text())["zoos"]
    names = {"parameters": "parameters", "width": "feature width",
             "width reversed": regimes.STATIC_NAMES["width reversed"]}
    for regime in MEASURED:
        code, out, err = run(capsys, "baselines", "--truth", "wheels", "--regime", regime,
                             "--draws", "10", "--json", str(tmp_path / "b.json"))
        assert code == 0, err
        shown = json.loads((tmp_path / "b.json").read_text())["rankings"]
        for dataset, z in zoos.items():
            for name, judged in z["regimes"][regime]["static"].items():
                assert shown[names[name]]["tau_w"][dataset] == pytest.approx(judged["tau_w"], abs=1e-12), \
                    (regime, dataset, name)


def test_a_zoo_measured_in_some_regimes_only(capsys, monkeypatch):
    """A shipped group's zoo need not be measured in every regime: the listing names each
    regime's zoos, `baselines` reads those, `correlate --list` says which."""
    import copy

    shipped = copy.deepcopy(rank._shipped_groups())
    del shipped["wheels"]["regimes"]["lbft"]["fmnist64"]
    monkeypatch.setattr(rank, "_shipped_groups", lambda: copy.deepcopy(shipped))
    listing = rank.list_ground_truth()["wheels"]
    assert "fmnist64" in listing["datasets"] and "fmnist64" in listing["measured"]["finetune"]
    assert "fmnist64" not in listing["measured"]["lbft"]
    code, out, err = run(capsys, "baselines", "--truth", "wheels", "--regime", "lbft")
    assert code == 0, err
    assert f"mean of {len(ZOOS) - 1}" in out and not any(line.startswith("fmnist64 ") for line in out.splitlines())
    code, out, err = run(capsys, "correlate", "--list")
    assert code == 0 and ("lbft measured on fmnist32, digits48, fmnist5c32, digits64, "
                          "fmnist64n6k, fmnist5c64n6k") in out
    assert "finetune measured on fmnist32" not in out          # wheels' finetune is whole
    # the held-out fmnist5c96 was measured for lft and lbft only (its full fine-tuning with
    # the wider sweep)
    assert "finetune measured on fmnist5l32, fmnist32s6, digits32, fmnist96 only" in out


def test_correlate_cli_against_a_wheels_table(capsys, tmp_path):
    acc = rank.ground_truth("wheels", "lbft", "fmnist32")
    write_scores(tmp_path / "oracle.json", acc, duration=1.0)
    code, out, err = run(capsys, "correlate", str(tmp_path / "oracle.json"), "--truth", "wheels",
                         "--dataset", "fmnist32", "--regime", "lbft")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("oracle"))
    assert row.split()[2] == "+1.000"                # the accuracies rank themselves perfectly
    assert "(wheels facts): parameters" in out and "vs best static" in out
    code, _, err = run(capsys, "correlate", str(tmp_path / "oracle.json"), "--truth", "wheels",
                       "--dataset", "cifar10", "--regime", "lbft")
    assert code == 2 and "unknown dataset" in err and "fmnist32" in err


# --------------------------------------------------------------------------
# te_gpu.regimes
# --------------------------------------------------------------------------

def test_metrics_and_sa_covers_mixed_labels():
    assert regimes.metrics_and_sa(("sfda+released", "lda", "logme+released")) == \
        (("sfda", "lda", "logme"), ["released", None])
    assert regimes.metrics_and_sa(("lda", "ncti", "knn")) == (("lda", "ncti", "knn"), [None])
    with pytest.raises(ValueError, match="bogus"):
        regimes.metrics_and_sa(("lda+bogus",))
    with pytest.raises(ValueError):
        regimes.metrics_and_sa(("nosuchmetric",))
    with pytest.raises(ValueError, match="lft, lbft, finetune"):
        regimes.get("probe")


@pytest.mark.parametrize("name", ["lft", "lbft", "finetune"])
def test_each_regime_declares_a_valid_set(name):
    r = regimes.get(name)
    assert r.name == name and r.labels
    metrics, settings = regimes.metrics_and_sa(r.labels)
    product = {catalogue.label(m, s) for m in metrics for s in settings}
    assert set(r.labels) <= product
    assert set(r.weak) <= set(ZOOS)
    assert set(r.weak.values()) | set(r.held_out_below.values()) <= set(regimes.STATIC_NAMES)
    line = regimes.weak_line(name)
    if r.weak or r.held_out_below:      # one line for both (issue 26, deliverable 4)
        assert line.startswith(f"weak evidence for {name}: {', '.join(r.labels)} ordered")
        assert all(z in line for z in [*r.weak, *r.held_out_below])
        assert all(regimes.STATIC_NAMES[s] in line for s in [*r.weak.values(), *r.held_out_below.values()])
        assert (f"on {len(r.weak)} of {len(ZOOS)} evidence zoos" in line) == bool(r.weak)
        assert ("--truth wheels_heldout" in line) == bool(r.held_out_below)
    else:
        assert line is None


@pytest.mark.skipif(not EVIDENCE.is_file(), reason="the evidence file is not in this checkout")
@pytest.mark.parametrize("name", ["lft", "lbft", "finetune"])
def test_each_regime_declares_what_its_evidence_chose(name):
    choice = json.loads(EVIDENCE.read_text())["choice"][name]
    r = regimes.get(name)
    assert choice["chosen"] == ",".join(r.labels)
    assert choice["below_best_static"] == r.weak
    # chosen on the zoos of the rounds before, judged on each later round's zoos
    rounds = choice["rounds"]
    assert rounds[0]["on"] == sorted(ZOOS[:3]) and set(rounds[0]["judged"]) == set(ZOOS[3:6])
    for before, later in zip(rounds, rounds[1:]):
        assert set(later["on"]) == set(before["on"]) | set(before["judged"])
    assert all(isinstance(j["passes"], bool) for r in rounds for j in r["judged"].values())


@pytest.mark.parametrize("name", ["lft", "lbft", "finetune"])
def test_each_regime_declares_where_held_out_zoos_found_it_below_a_static_ranking(name):
    """Regime.held_out_below is what `held-out` measured (bench/results/regime_heldout_ZOO.json,
    one per shipped wheels_heldout zoo): the zoos where the regime's set scored a tau_w not
    above the best static ranking, and that ranking; weak_line says so, counting the
    shipped held-out zoos (weak_line's second part)."""
    r = regimes.get(name)
    held = rank.list_ground_truth()["wheels_heldout"]["measured"][name]
    below = {}
    for dataset in held:
        v = json.loads((HELD_OUT_VERDICTS / f"regime_heldout_{dataset}.json").read_text())[dataset][name]
        assert v["chosen"] == ",".join(r.labels), dataset      # the set judged is the set declared
        if not v["sets"][v["chosen"]]["tau_w"] > max(v["static"].values()):
            below[dataset] = max(v["static"], key=v["static"].get)
    assert r.held_out_below == below
    if below:
        assert (f"on {len(below)} of {len(held)} held-out zoos, built after it was chosen "
                f"({', '.join(below)}; te-gpu baselines --truth wheels_heldout --regime {name})"
                ) in regimes.weak_line(name)


@pytest.mark.skipif(not EVIDENCE.is_file(), reason="the evidence file is not in this checkout")
def test_the_default_sets_note_counts_its_fine_tuning_evidence():
    """recommend's note without --transfer says on how many evidence zoos the fast default
    passed issue 26's check for full fine-tuning: the evidence file's count."""
    import re

    from te_gpu.recommend import DEFAULT_NOTE

    ev = _evidence_script()
    zoos = json.loads(EVIDENCE.read_text())["zoos"]
    passed = sum(ev.passes(ev.rows_of(z["regimes"]["finetune"])["lda,ncti,knn"],
                           z["regimes"]["finetune"]) for z in zoos.values())
    said = re.search(r"ordered (\d+) of (\d+) evidence zoos well for full fine-tuning", DEFAULT_NOTE)
    assert said and (int(said[1]), int(said[2])) == (passed, len(zoos))


def _no_subprocesses(monkeypatch) -> list:
    """subprocess.Popen replaced by a stub that succeeds at once; returns the list of the
    commands started."""
    import subprocess

    started = []

    class Done:
        def __init__(self, args):
            started.append(args)
            self.args, self.returncode = args, 0

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Done)
    return started


def test_regime_evidence_build_runs_the_regimes_asked_for_split_by_network(tmp_path, monkeypatch):
    """bench/regime_evidence.py build --regimes R --processes P: extraction always, then the
    regimes asked for, the fine-tuning ones as P processes at once over disjoint networks
    (their union the zoo's candidates), each command's time recorded."""
    ev = _evidence_script()
    started = _no_subprocesses(monkeypatch)
    ev.build("fmnist64n6k", tmp_path, regimes=("lft", "finetune"), processes=2)
    timing = json.loads((tmp_path / "fmnist64n6k" / "timing.json").read_text())
    assert list(timing) == ["extract train", "extract test", "finetune lft", "finetune finetune"]
    assert [timing[k]["processes"] for k in timing] == [1, 1, 1, 2]
    runs = [a for a in started if "--regime" in a and a[a.index("--regime") + 1] == "finetune"]
    specs = [[a[i + 1] for i, v in enumerate(a) if v == "--model"] for a in runs]
    assert len(runs) == 2 and all(specs) and not set(specs[0]) & set(specs[1])
    assert specs[0] + specs[1] == ev.ZOOS["fmnist64n6k"]["models"]
    started.clear()
    ev.build("fmnist64n6k", tmp_path, regimes=("lbft",), processes=1)   # the rest, once
    assert [a[a.index("--regime") + 1] for a in started] == ["lbft"]
    assert json.loads((tmp_path / "fmnist64n6k" / "timing.json").read_text())["finetune lbft"]["processes"] == 1


@pytest.mark.parametrize("name", list(ZOOS) + ["fmnist5l32", "fmnist32s6", "digits32", "fmnist96", "fmnist5c96"])
def test_regime_evidence_restore_gives_back_the_run_that_ship_shipped(tmp_path, monkeypatch, name):
    """bench/regime_evidence.py restore ZOO: extraction only (no fine-tuning), and a
    truth.json holding the run of the zoo's own seed, from which ship's means come back:
    each re-run regime's mean over that run and the others (kept in the details) is the
    shipped table (2 decimals), and a regime not re-run is the shipped table itself."""
    ev = _evidence_script()
    started = _no_subprocesses(monkeypatch)
    monkeypatch.setattr(ev, "fmnist_subset", lambda path, classes: None)   # no data needed
    path = ev.restore(name, tmp_path)
    assert [a[a.index("--split") + 1] for a in started] == ["train", "test"]
    assert all("finetune" not in a for a in started)
    got = json.loads(path.read_text())
    group = "wheels_heldout" if name in ev.HELD_OUT else "wheels"
    assert got["groups"][name]["models"] == ev.candidate_names(name)
    regimes = got["groups"][name]["regimes"]
    assert set(regimes) == {r for r in ev.REGIMES if name in rank.list_ground_truth()[group]["measured"][r]}
    own = str(ev.ZOOS[name]["seed"])
    for regime, tables in regimes.items():
        run, table = tables[name], rank.ground_truth(group, regime, name)
        details = got["_details"][name][regime][name]
        runs = {m: {int(s): a for s, a in d["runs"].items() if s != own}
                for m, d in details.items() if "runs" in d}
        means = ev.mean_of_runs(name, {regime: run}, {regime: runs} if runs else {})[regime]
        assert set(run) == set(table)
        for m in table:
            assert means[m] == pytest.approx(table[m], abs=0.005), (regime, m)
        if not runs:
            assert run == table


def test_regime_evidence_sweep_compares_a_wider_sweep_with_the_shipped_run(tmp_path):
    """bench/regime_evidence.py sweep WIDER.json: against the shipped run of the zoo's seed,
    the lrs kept, the shared sweep entries reproduced, each model's move, the tables' tau_w
    and their best models; a file missing a candidate is refused."""
    ev = _evidence_script()
    name = "fmnist5l32"
    ship = ev.shipped_run(name)
    narrow = ship["groups"][name]["regimes"]["finetune"][name]
    before = ship["_details"][name]["finetune"][name]
    models = list(narrow)
    first, second = models[0], models[1]
    wide = {m: narrow[m] + (30.0 if m == first else 0.0) for m in models}
    said = {m: dict(lr=0.03 if m == first else 0.01, sweep={
        "lr=0.03,wd=0.0001": dict(val=0.0, test=0.0),
        "lr=0.01,wd=0.0001": dict(before[m]["sweep"]["lr=0.01,wd=0.0001"])}) for m in models}
    said[second]["sweep"]["lr=0.01,wd=0.0001"]["test"] += 1.0       # not reproduced
    path = tmp_path / "wide.json"
    path.write_text(json.dumps({"groups": {name: {"regimes": {"finetune": {name: wide}}}},
                                "_details": {name: {"finetune": {name: said}}}}))
    got = ev.sweep_edge([path])["finetune"][name]
    assert got["lrs"] == [0.01, 0.03] and got["kept"] == {"0.01": len(models) - 1, "0.03": 1}
    assert (got["reproduced"], got["shared_runs"]) == (len(models) - 1, len(models))
    assert got["largest_move"] == 30.0 and got["moves"][second] == 0.0
    assert got["best"]["wide"] == [first] and got["best"]["narrow"] == sorted(
        m for m in models if narrow[m] == max(narrow.values()))
    assert got["tau_w"] == pytest.approx(rank.weighted_tau([wide[m] for m in models], list(narrow.values())), abs=1e-3)
    assert got["tau_w"] < 1.0
    assert "| finetune | fmnist5l32 | 0.01: 12, 0.03: 1 | 12 of 13 | +30.0 |" in \
        ev.sweep_edge_markdown({"finetune": {name: got}})
    del wide[second]
    path.write_text(json.dumps({"groups": {name: {"regimes": {"finetune": {name: wide}}}},
                                "_details": {name: {"finetune": {name: said}}}}))
    with pytest.raises(ValueError, match="the zoo"):
        ev.sweep_edge([path])


def test_regime_evidence_ship_truth_runs_ships_the_means(tmp_path, monkeypatch):
    """bench/regime_evidence.py ship --truth-runs RUNS: the files reach ship; a re-run
    regime's table becomes each model's mean over its runs (the zoo's own seed's run first,
    a model not re-run keeps its one run), and each file's command (comments left out) is
    listed with the models it measured."""
    ev = _evidence_script()
    own = ev.ZOOS["fmnist64"]["seed"]
    runs_file = tmp_path / "runs.json"
    runs_file.write_text(json.dumps({
        "groups": {"fmnist64": {"regimes": {"lbft": {"fmnist64": {"a": 81.0}}}}},
        "_details": {"fmnist64": {"lbft": {"fmnist64": {
            "a": {"runs": [81.0, 84.0], "train_seeds": [own + 1, own + 2]}}}}}}))
    runs_file.with_suffix(".sh").write_text("# how it ran\nte-gpu finetune --seed 2\n  --regime lbft\n")
    tables = {"lbft": {"fmnist64": {"a": 80.0, "b": 70.0}}, "lft": {"fmnist64": {"a": 1.0, "b": 2.0}}}
    details = {"lbft": {"fmnist64": {"a": {"lr": 0.01}, "b": {"lr": 0.01}}}}
    said = ev.ship_runs("fmnist64", tables, details, ev.training_runs([runs_file])["fmnist64"], [runs_file])
    assert tables["lbft"]["fmnist64"] == {"a": 81.67, "b": 70.0} and tables["lft"]["fmnist64"] == {"a": 1.0, "b": 2.0}
    assert details["lbft"]["fmnist64"]["a"]["runs"] == {str(own): 80.0, str(own + 1): 81.0, str(own + 2): 84.0}
    assert details["lbft"]["fmnist64"]["b"]["runs"] == {str(own): 70.0}
    assert said == {"lbft": {"train_seeds": [own, own + 1, own + 2],
                             "commands": [{"command": "te-gpu finetune --seed 2 --regime lbft", "models": ["a"]}]}}
    shipped = []
    monkeypatch.setattr(ev, "ship", lambda work, zoos, runs_files, group: shipped.append((zoos, runs_files, group)))
    ev.main(["ship", "--work", str(tmp_path), "--zoos", "fmnist64", "--truth-runs", str(runs_file)])
    ev.main(["ship", "--work", str(tmp_path), "--zoos", "fmnist64", "--group", "wheels_heldout"])
    ev.main(["ship", "--work", str(tmp_path)])                       # the zoos follow the group
    ev.main(["ship", "--work", str(tmp_path), "--group", "wheels_heldout"])
    assert shipped == [(["fmnist64"], [runs_file], "wheels"), (["fmnist64"], [], "wheels_heldout"),
                       (list(ZOOS), [], "wheels"), (list(ev.HELD_OUT), [], "wheels_heldout")]


def test_regime_evidence_seeds_judges_each_training_run(tmp_path, monkeypatch):
    """bench/regime_evidence.py seeds: the shipped table is the run of the zoo's own seed,
    a re-run of that seed must reproduce it, models not re-run keep their accuracy, and
    each run (and the runs' mean) judges a set's consensus and the other runs."""
    ev = _evidence_script()
    models = ["a", "b", "c", "d", "e"]
    shipped = {"a": 90.0, "b": 89.0, "c": 80.0, "d": 70.0, "e": 60.0}
    records = {m: dict(params=1000 + i, dim=[64, 32, 128, 16, 256][i]) for i, m in enumerate(models)}
    good = {m: float(5 - i) for i, m in enumerate(models)}     # orders a, b, c, d, e
    bad = {m: float(i) for i, m in enumerate(models)}          # the reverse

    class Boot:
        def consensus(self, labels):
            return models, None, good if labels == ["lda", "ncti", "knn"] else bad

    monkeypatch.setattr(ev, "open_evidence_zoo", lambda work, name: (None, None, {"finetune": shipped}, records))
    monkeypatch.setattr(ev, "bootstrap", lambda *a: Boot())
    own = ev.ZOOS["fmnist64"]["seed"]
    runs_file = tmp_path / "runs.json"
    runs_file.write_text(json.dumps({
        "groups": {"fmnist64": {"regimes": {"finetune": {"fmnist64": {**shipped, "a": 89.0, "b": 90.0}}}}},
        "_details": {"fmnist64": {"finetune": {"fmnist64": {
            "a": {"runs": [90.0, 88.0], "train_seeds": [own, own + 1]},
            "b": {"runs": [89.0, 91.0], "train_seeds": [own, own + 1]}}}}}}))
    evidence = tmp_path / "evidence.json"
    evidence.write_text(json.dumps({"choice": {"finetune": {"chosen": "knn"}}}))
    got = ev.training_noise(tmp_path, evidence, [runs_file])["finetune"]["fmnist64"]
    assert got["train_seeds"] == [own, own + 1] and got["reproduces"] == 0.0
    assert got["re_run"] == ["a", "b"] and got["not_re_run"] == ["c", "d", "e"]
    assert got["best_per_run"] == [["a"], ["b"]]
    assert got["range_over_runs"]["a"] == [88.0, 90.0] and got["range_over_runs"]["c"] == [80.0, 80.0]
    assert got["mean"]["a"] == 89.0 and got["mean"]["b"] == 90.0
    # each run's ranking has the other run's best (a or b) in its top 3
    assert got["one_run_predicts_another"]["top3"] == 1.0
    fast, chosen = got["sets"]["lda,ncti,knn"], got["sets"]["knn"]
    assert [r["top3"] for r in fast["per_run"]] == [True, True] and fast["mean"]["top3"]
    assert fast["mean"]["tau_w"] > 0.5 > -0.5 > chosen["mean"]["tau_w"]
    assert not any(r["top3"] or r["passes"] for r in chosen["per_run"])
    row = ev.seeds_markdown({"finetune": {"fmnist64": got}}).splitlines()[-1]
    assert row.startswith(f"| fmnist64 | {own}, {own + 1} (a, b) | a; b | ") and "0 of 2 pass" in row
    # evaluate --truth-runs judges a re-run regime against the means, the others as shipped
    probe = {"a": 1.0, "b": 2.0}
    means = ev.mean_of_runs("fmnist64", {"finetune": shipped, "lft": probe},
                            ev.training_runs([runs_file])["fmnist64"])
    assert means["lft"] == probe and means["finetune"] == {**shipped, "a": 89.0, "b": 90.0}


def test_regime_evidence_means_of_equal_sums_tie():
    """Two models whose runs sum alike tie exactly, whatever order float addition takes
    (held-out fmnist5l32: 92.4667 for lite2 and mnv2 under full fine-tuning)."""
    import numpy as np

    ev = _evidence_script()
    own = ev.ZOOS["fmnist5l32"]["seed"]
    runs = {"finetune": {"lite2": {own + 1: 92.8, own + 2: 92.8}, "mnv2": {own + 1: 92.2, own + 2: 91.8}}}
    means = ev.mean_of_runs("fmnist5l32", {"finetune": {"lite2": 91.8, "mnv2": 93.4}}, runs)["finetune"]
    assert np.mean([91.8, 92.8, 92.8]) != np.mean([93.4, 92.2, 91.8])      # the noise this removes
    assert means["lite2"] == means["mnv2"] == pytest.approx(92.4667, abs=1e-4)


def test_regime_evidence_bootstrap_adds_missing_labels_on_the_same_redraws(tmp_path, monkeypatch):
    """bench/regime_evidence.py's redraw cache: labels added to METRICS / SA later are computed
    on the cached redraws (seed 0) and merged; the cached labels are not recomputed."""
    import numpy as np

    from te_gpu.bootstrap import bootstrap_zoo

    ev = _evidence_script()
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(3), [30, 20, 10])                      # imbalanced
    zoo = {f"m{i}": np.maximum(rng.normal(size=(60, 6 + 5 * i)) + 0.6 * i * y[:, None], 0)
           for i in range(3)}
    zoo["m0"][:, :2] = 0.0                                         # dead units
    (tmp_path / "z").mkdir()
    monkeypatch.setattr(ev, "METRICS", ("lda", "hscore"))
    monkeypatch.setattr(ev, "SA", (None, "released"))
    first = ev.bootstrap(tmp_path, "z", zoo, y, 3)
    assert first.labels == ["lda", "lda+released", "hscore+released"]
    cached = (tmp_path / "z" / "boot_B3.json").read_text()
    again = ev.bootstrap(tmp_path, "z", zoo, y, 3)                 # read back, not rewritten
    assert (tmp_path / "z" / "boot_B3.json").read_text() == cached
    assert all(np.array_equal(again.samples[lb][m], first.samples[lb][m])
               for lb in first.labels for m in zoo)
    monkeypatch.setattr(ev, "METRICS", ("lda", "hscore", "parc", "etran"))
    monkeypatch.setattr(ev, "SA", (None, "released", "ped"))
    grown = ev.bootstrap(tmp_path, "z", zoo, y, 3)
    assert set(grown.labels) == set(ev.redrawn_labels()) and "hscore+ped" not in grown.labels
    assert [a["labels"] for a in grown.timings["added"]] == \
        [["parc", "etran", "parc+released", "etran+released", "lda+ped", "parc+ped", "etran+ped"]]
    assert (tmp_path / "z" / "boot_B3.json").read_text() != cached
    fresh = bootstrap_zoo(zoo, y, metrics=("lda", "hscore", "parc", "etran"),
                          sa=[None, "released", "ped"], replicates=3, seed=0, progress=False)
    for lb in grown.labels:
        got = np.array([grown.samples[lb][m] for m in zoo])
        want = np.array([fresh.samples[lb][m] for m in zoo])
        # equal up to the order of floating-point sums (batches of other metrics beside)
        assert np.isfinite(got).all() and np.allclose(got, want, rtol=1e-9, atol=0), lb
        assert np.allclose([grown.point[lb][m] for m in zoo], [fresh.point[lb][m] for m in zoo],
                           rtol=1e-9, atol=0), lb


def test_regime_evidence_keeps_costly_sets_out_of_a_regime_choice():
    """PARC and PED are judged but a regime may not choose them (they would cost every
    resample of recommend seconds per model); the best set with them is reported beside."""
    ev = _evidence_script()
    assert ev.eligible("lda,sfda+released,knn") and ev.eligible("etran+released")
    assert not ev.eligible("lda,parc") and not ev.eligible("parc+released")
    assert not ev.eligible("knn,lda+ped")

    def zres(scores, acc):
        rows = {k: dict(tau_w=v, p_best_top=1.0, p_best_first=1.0) for k, v in scores.items()}
        return dict(labels=rows, sets={}, static={"width": dict(tau_w=acc)})

    scores = {"parc": 0.9, "lda+ped": 0.8, "lda": 0.5, "knn": 0.4}
    zoos = {z: dict(regimes={"lft": zres(scores, 0.1)}) for z in ("a", "b")}
    assert ev.pick(zoos, "lft") == "lda"
    assert ev.pick(zoos, "lft", among=lambda k: True) == "parc"


def test_regime_evidence_budget_judges_sets_against_another_training_budget(tmp_path, monkeypatch):
    """bench/regime_evidence.py budget: files of the zoo's sweep under another budget are
    tables beside the shipped run (with their mean the target when there are several); each
    chosen set's consensus is judged on the redraws against each, the shipped budget against
    the target, and the other budget's runs against each other."""
    import numpy as np

    ev = _evidence_script()
    models = ["a", "b", "c", "d", "e"]
    shipped = {"a": 90.0, "b": 89.0, "c": 80.0, "d": 70.0, "e": 60.0}
    longer = {"a": 85.0, "b": 86.0, "c": 91.0, "d": 72.0, "e": 40.0}     # c first, e last
    again = {"a": 87.0, "b": 86.0, "c": 85.0, "d": 72.0, "e": 42.0}      # a first
    records = {m: dict(params=1000 + i, dim=[64, 32, 128, 16, 256][i]) for i, m in enumerate(models)}
    good = {m: float(5 - i) for i, m in enumerate(models)}               # a, b, c, d, e

    class Boot:                        # the same order on every redraw
        replicates, seed, level, labels = 4, 0, 0.9, ["lda", "knn"]

        def consensus(self, labels):
            return models, np.tile([[good[m]] for m in models], (1, 4)), good

    monkeypatch.setattr(ev, "open_evidence_zoo", lambda work, name: (None, None, {"finetune": shipped}, records))
    monkeypatch.setattr(ev, "bootstrap", lambda *a: Boot())
    evidence = tmp_path / "evidence.json"
    evidence_zoos = ["fmnist32", "digits48", "fmnist64"]       # the zoos it was chosen on
    evidence.write_text(json.dumps({"choice": {"finetune": {"chosen": "knn,sfda+released"},
                                               "lft": {"chosen": "lda"}, "across_regimes": {}},
                                    "zoos": {n: {} for n in evidence_zoos}}))

    def budget_file(stem, table):
        path = tmp_path / f"{stem}.json"
        path.write_text(json.dumps({"groups": {"fmnist64": {"regimes": {"finetune": {"fmnist64": table}}}}}))
        return path

    first = budget_file("e10_s2", longer)
    got = ev.training_budget(tmp_path, evidence, [first])["finetune"]["fmnist64"]
    assert got["target"] == "e10_s2" and got["budget_runs_predict_each_other"] == []
    assert got["best"] == {"shipped run": ["a"], "e10_s2": ["c"]}
    assert got["accuracy"]["c"] == [80.0, 91.0]
    # the chosen sets, the fast default (recommend's without --transfer), and every label alone
    assert ev.FAST_DEFAULT == ",".join(recommend.DEFAULT_METRICS)
    assert list(got["judged"]["e10_s2"]["sets"]) == ["knn,sfda+released", "lda", "lda,ncti,knn", "knn"]
    on_long = got["judged"]["e10_s2"]["sets"]["lda"]
    on_shipped = got["judged"]["shipped run"]["sets"]["lda"]
    assert on_shipped["tau_w"] == pytest.approx(1.0) and on_shipped["p_best_first"] == 1.0
    want = rank.weighted_tau([good[m] for m in models], [longer[m] for m in models])
    assert on_long["tau_w"] == pytest.approx(want, abs=1e-4) and 0 < want < 1
    assert on_long["p_best_first"] == 0.0 and on_long["p_best_top"] == 1.0   # c is third
    ahead = got["budget_predicts_budget"]["shipped run"]
    assert ahead["top3"] and ahead["tau_w"] == pytest.approx(want, abs=1e-4)
    widest = got["judged"]["e10_s2"]["static"]["width"]
    assert widest["p_best_first"] == 0.0 and widest["p_best_top"] == 1.0    # e, c widest
    # the choice rule on the target, over every set of the labels (lda, knn, lda+knn: all
    # one order here, so the first and smallest is chosen), with the chosen sets' merit
    rule = ev.training_budget(tmp_path, evidence, [first])["rule"]["finetune"]
    assert rule["zoos"] == ["fmnist64"] and rule["chosen"] == "lda"
    assert rule["merit"] == (int(on_long["passes"]), pytest.approx(want, abs=1e-4), 1.0)
    assert sum(rule["sets_passing"].values()) == 3 and list(rule["shown"]) == ["lda"]
    # --also: a set judged and shown beside the evidence's choices
    also = ev.training_budget(tmp_path, evidence, [first], also=["lda,knn", "lda"])
    assert list(also["finetune"]["fmnist64"]["judged"]["e10_s2"]["sets"]) == \
        ["knn,sfda+released", "lda", "lda,knn", "lda,ncti,knn", "knn"]
    assert list(also["rule"]["finetune"]["shown"]) == ["lda", "lda,knn"]

    second = budget_file("e10_s3", again)
    both = ev.training_budget(tmp_path, evidence, [first, second])["finetune"]["fmnist64"]
    assert both["target"] == "mean of e10_s2, e10_s3"
    assert both["accuracy"]["c"] == [80.0, 91.0, 85.0, 88.0] and both["best"][both["target"]] == ["c"]
    pairs = {(c["ranking"], c["truth"]): c for c in both["budget_runs_predict_each_other"]}
    assert set(pairs) == {("e10_s2", "e10_s3"), ("e10_s3", "e10_s2")}
    # e10_s3 ranks c (e10_s2's best) third, and e10_s2 ranks a (e10_s3's best) third
    assert pairs[("e10_s3", "e10_s2")]["top3"] and pairs[("e10_s2", "e10_s3")]["top3"]
    assert pairs[("e10_s3", "e10_s2")]["tau_w"] == pytest.approx(
        rank.weighted_tau([again[m] for m in models], [longer[m] for m in models]), abs=1e-4)
    table = ev.budget_markdown({"finetune": {"fmnist64": both}})
    assert "| lda | +1.000, 1.00, 1.00 (passes) |" in table
    assert "the choice rule" not in table
    ruled = ev.budget_markdown(ev.training_budget(tmp_path, evidence, [first, second]))
    assert "finetune, the choice rule on fmnist64: eligible sets passing" in ruled
    assert "| lda (the rule's choice) |" in ruled
    # with the evidence zoos (evaluate's verdicts) beside the targets: knn passes on each
    # evidence zoo and lda on none, so the rule picks knn there, and picks it with any one left out
    def row(tau):
        return dict(tau_w=tau, p_best_first=1.0, p_best_top=1.0)

    judged = dict(regimes={"finetune": dict(static={"width": dict(tau_w=0.5)}, labels={},
                                            sets={"lda": row(0.1), "knn": row(0.9), "lda,knn": row(0.4)})})
    asked = set()

    def evaluate_zoo(work, name, replicates, runs, regimes):
        asked.add(regimes)
        return judged

    monkeypatch.setattr(ev, "evaluate_zoo", evaluate_zoo)
    wide = ev.training_budget(tmp_path, evidence, [first], with_evidence=True)["rule_with_evidence"]["finetune"]
    assert asked == {("finetune",)}                  # only the budget's regimes are judged
    assert wide["zoos"] == [*evidence_zoos, "fmnist64 (other budget)"] and wide["chosen"] == "knn"
    assert all(wide["leave_one_zoo_out"][n] == dict(chosen_on_others="knn", passes=True) for n in evidence_zoos)
    assert wide["merit"][0] == len(evidence_zoos) + int(got["judged"]["e10_s2"]["sets"]["knn"]["passes"])
    ruled_file = tmp_path / "ruled.json"            # the command line's flag
    ev.main(["budget", str(evidence), str(first), "--work", str(tmp_path), "--with-evidence",
             "--out", str(ruled_file)])
    assert json.loads(ruled_file.read_text())["rule_with_evidence"]["finetune"]["zoos"] == wide["zoos"]
    tau = pairs[("e10_s3", "e10_s2")]["tau_w"]
    assert f"| e10_s3 as a ranking (no redraws) | - | {tau:+.3f}, top 3: yes" in table   # e10_s2's column
    out = tmp_path / "budget.json"                    # the command line: the same verdicts
    ev.main(["budget", str(evidence), str(first), str(second), "--work", str(tmp_path),
             "--out", str(out)])
    assert json.loads(out.read_text())["finetune"]["fmnist64"]["accuracy"] == both["accuracy"]
    with pytest.raises(ValueError, match="has"):
        ev.training_budget(tmp_path, evidence, [budget_file("short", {"a": 1.0, "b": 2.0})])
    # a zoo with no shipped table for the regime (measured under the other budget only):
    # judged against its runs alone, its candidates those of the store
    monkeypatch.setattr(ev, "open_evidence_zoo", lambda work, name: (None, None, {}, records))
    # training runs of the shipped protocol need its table: without one they are not averaged
    monkeypatch.setattr(ev, "training_runs", lambda files: {"fmnist64": {"finetune": {m: {7: 50.0} for m in models}}})
    alone = ev.training_budget(tmp_path, evidence, [first, second])["finetune"]["fmnist64"]
    assert alone["best"] == {k: v for k, v in both["best"].items() if k != "shipped run"}
    assert alone["accuracy"]["c"] == [91.0, 85.0, 88.0] and alone["budget_predicts_budget"] == {}
    assert alone["judged"][both["target"]] == both["judged"][both["target"]]
    with pytest.raises(ValueError, match="has"):
        ev.training_budget(tmp_path, evidence, [budget_file("short", {"a": 1.0, "b": 2.0})])


def test_regime_evidence_held_out_judges_the_chosen_sets_on_a_zoo_they_were_not_chosen_on(tmp_path, monkeypatch):
    """bench/regime_evidence.py held-out: each regime's chosen set (from the evidence file)
    and the fast default, judged on a new zoo in every regime it has accuracies for, beside
    its static rankings, with how many eligible sets pass there and the training runs."""
    ev = _evidence_script()
    name = ev.HELD_OUT[0]
    evidence = tmp_path / "evidence.json"
    evidence.write_text(json.dumps({"choice": {"lft": {"chosen": "lda"}, "finetune": {"chosen": "knn"},
                                               "across_regimes": {}}}))

    def row(tau, top):
        return dict(tau_w=tau, lo=tau - 0.1, hi=tau + 0.1, p_best_first=0.5, p_best_top=top)

    def judged(taus):
        lda, knn, fast, both = taus
        return dict(static={"width reversed": dict(tau_w=0.5, p_best_first=0.0, p_best_top=1.0)},
                    labels={"lda": row(lda, 1.0), "knn": row(knn, 1.0)},
                    sets={"lda": row(lda, 1.0), "knn": row(knn, 1.0), ev.FAST_DEFAULT: row(fast, 0.8),
                          "lda,knn": row(both, 0.95)})

    means = {"a": 81.0, "b": 90.0}                 # the finetune runs' mean: b first
    zoo = dict(truth={"lft": {"a": 70.0, "b": 60.0}, "finetune": means},
               regimes={"lft": judged((0.6, 0.4, 0.7, 0.55)), "finetune": judged((0.3, 0.8, 0.2, 0.45))})
    seen = []

    def evaluate_zoo(work, zoo_name, replicates, runs):
        seen.append((zoo_name, replicates, runs))
        return zoo

    monkeypatch.setattr(ev, "evaluate_zoo", evaluate_zoo)
    (tmp_path / name).mkdir()
    (tmp_path / name / "truth.json").write_text(json.dumps({"groups": {name: {"regimes": {
        "finetune": {name: {"a": 80.0, "b": 91.0}}}}}}))
    runs_file = tmp_path / "runs.json"
    runs_file.write_text(json.dumps({"groups": {name: {"regimes": {"finetune": {name: {"a": 82.0, "b": 89.0}}}}},
                                     "_details": {name: {"finetune": {name: {
                                         "a": {"train_seeds": [6], "runs": [82.0]},
                                         "b": {"train_seeds": [6], "runs": [89.0]}}}}}}))
    got = ev.held_out(tmp_path, evidence, [name], [runs_file])[name]
    assert seen == [(name, 20, {"finetune": {"a": {6: 82.0}, "b": {6: 89.0}}})]
    lft, ft = got["lft"], got["finetune"]
    assert list(lft["sets"]) == ["lda", "knn", ev.FAST_DEFAULT] and lft["chosen"] == "lda"
    assert list(ft["sets"]) == ["knn", "lda", ev.FAST_DEFAULT] and ft["chosen"] == "knn"
    assert [v["passes"] for v in lft["sets"].values()] == [True, False, False]   # fast: top 3 0.8
    assert [v["passes"] for v in ft["sets"].values()] == [False if k != "knn" else True for k in ft["sets"]]
    assert lft["best"] == ["a"] and ft["best"] == ["b"] and lft["best_static"] == "width reversed"
    assert lft["eligible_passing"] == 2 and lft["eligible_sets"] == 4 and lft["rule_on_this_zoo"] == "lda"
    assert ft["rule_on_this_zoo"] == "knn" and lft["runs"] == {}
    assert ft["runs"] == {"a": {"5": 80.0, "6": 82.0}, "b": {"5": 91.0, "6": 89.0}}   # the zoo's seed first
    table = ev.held_out_markdown({name: got})
    assert "| lda (lft's set) | +0.600, 0.50, 1.00 (passes) | +0.300, 0.50, 1.00 |" in table
    assert "| static: width reversed | +0.500 | +0.500 |" in table
    out = tmp_path / "held.json"
    ev.main(["held-out", str(evidence), "--work", str(tmp_path), "--truth-runs", str(runs_file),
             "--out", str(out)])
    assert json.loads(out.read_text())[name]["finetune"]["runs"] == ft["runs"]
