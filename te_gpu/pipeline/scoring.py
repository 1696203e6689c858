"""Resumable scoring of a zoo directory with :func:`te_gpu.score_zoo`.

One ``score_zoo`` call over the whole zoo, with its checkpoint in the output
folder (``checkpoint.json``, written after every batch of at most ``chunk``
models; on a CPU at most a few seconds of work, and the first batches hold 1,
2, 4, ... models). A rerun in the same folder reuses every score already there
whose model's features are unchanged (checked by hashing them), rescores models
whose features changed, and computes only the metrics / SA settings / options
that are new. Other labels (or N) are refused until ``restart``. A lock file
(``.te-gpu-score.lock``) keeps a second run out of the folder while one runs.

Outputs, in ``out``: ``{label}.json`` per metric (the public format
``{model: score, ..., "duration": s}``, the seconds of all runs on the
checkpoint), ``scores.csv``, ``result.json`` (te_gpu's full result: scores, NCTI
parts, SA diagnostics, options), and ``checkpoint.json``.
"""
from __future__ import annotations

import json
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path

from te_gpu import catalogue

from . import PipelineError

CHECKPOINT = "checkpoint.json"  # te_gpu.score_zoo's, in the output folder
FOLDER_LOCK = ".te-gpu-score.lock"  # held while a run writes the output folder


def parse_metrics(text) -> tuple:
    """``logme,sfda`` or ``all`` -> metric names of the catalogue."""
    try:
        return catalogue.metric_names(str(text))
    except ValueError as exc:
        raise PipelineError(f"{exc} (or all)") from None


def parse_sa(text) -> list:
    """``none,released`` -> [None, "released"] (none = raw features; ``ped``: PED)."""
    items = [s.strip().lower() for s in str(text).split(",") if s.strip()]
    out = []
    for s in items:
        if s in ("none", "raw", "off"):
            out.append(None)
        elif s in catalogue.PERTURBATIONS:
            out.append(s)
        elif s == "all":
            out += [None, *catalogue.SA_VARIANTS]
        else:
            raise PipelineError(f"unknown SA setting {s!r}; choose from none, "
                                f"{', '.join(catalogue.PERTURBATIONS)}, all")
    if not out:
        raise PipelineError("--sa is empty; use none for raw features only")
    return list(dict.fromkeys(out))


def settings_of(names, sa_opts: dict) -> list:
    """Setting names (None, SA variants, ``ped``) -> score_zoo's settings: SA's variants
    with SA's numbers, PED with its defaults (SA's numbers are not PED's)."""
    return [None if v is None else {"variant": v} if v == catalogue.PED
            else dict(sa_opts, variant=v) for v in names]


def sa_options(preset=None, **given) -> dict:
    """SA numbers (no variant): defaults, then the preset, then the options given (None = not given)."""
    try:
        opts = catalogue.sa_preset(preset) if preset else {}
        opts.update({k: v for k, v in given.items() if v is not None})
        opts = catalogue.resolve_sa(opts)
    except ValueError as exc:
        raise PipelineError(str(exc)) from None
    opts.pop("variant")
    return opts


def score_directory(zoo_dir, out, *, dataset=None, metrics=catalogue.DEFAULT_METRICS,
                    sa=(None, "released"), sa_opts=None, precision="exact", device=None,
                    batch_size=None, chunk=16, restart=False, progress=True, options=None,
                    models=None, log=print, ped_reference=None):
    """Score a zoo directory into ``out`` with :func:`te_gpu.score_zoo` (resuming) -> ZooResult.

    ``options``: {metric: {option: value}} (see :mod:`te_gpu.catalogue`). The
    models' own predictions (``{model}_{dataset}_prediction.npy``) are read
    where present, for LEEP and NCE. ``chunk`` caps the models per batch, hence
    between two checkpoints; ``restart`` discards the checkpoint of an earlier
    run. Warnings about the checkpoint (a model whose features changed, a stale
    lock taken over) and metrics skipped for want of an input go to ``log``.
    ``ped_reference``: a data set of the same folder whose features give PED's reference
    statistics (:func:`te_gpu.score_zoo`'s ``ped_reference``).

    Under torchrun (or in an initialised process group) every rank calls it:
    rank 0 reads the zoo's listing and labels, takes the folder's lock and
    writes the outputs; each rank scores its share of the models (see
    :mod:`te_gpu.distributed`) and logs only its own warnings, prefixed ``rank k:``.
    """
    import torch

    from te_gpu import distributed
    from te_gpu.locks import LockError

    if chunk < 1:
        raise PipelineError("--chunk must be at least 1")
    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    sa_opts = sa_options(**(sa_opts or {}))
    out = Path(out)
    try:
        with distributed.joined(device) as world, ExitStack() as held:
            rank = world.rank
            held.enter_context(_warnings_to(log if rank == 0 else
                                            (lambda msg: log(f"rank {rank}: {msg}")),
                                            zoo_level=rank == 0))
            zoo = world.share("opening the zoo", lambda: _open_on_rank0(
                zoo_dir, out, dataset, metrics, models, restart, log, held))
            result = _score_into(out, zoo_dir, zoo, writes=rank == 0, log=log, sa=sa,
                                 sa_opts=sa_opts, device=device, precision=precision,
                                 progress=progress, batch_size=min(batch_size or chunk, chunk),
                                 options=options, ped_reference=ped_reference)
    except LockError as exc:
        raise PipelineError(str(exc)) from None
    return result


def _open_on_rank0(zoo_dir, out: Path, dataset, metrics, models, restart, log, held) -> dict:
    """The zoo's models, labels, data set, the metrics it can take and its prediction files;
    the output folder made and locked (the lock in ``held``), an old checkpoint removed on
    ``restart``. Run by rank 0 alone; the other ranks get what it returns."""
    from te_gpu.io import prediction_path
    from te_gpu.locks import exclusive_lock
    from te_gpu.checkpoint import checkpoint_files

    from .extract import open_zoo

    zoo, labels, dataset = open_zoo(zoo_dir, dataset, models=models)
    if out.exists() and not out.is_dir():
        raise PipelineError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    held.enter_context(exclusive_lock(out / FOLDER_LOCK, f"output folder {out}"))
    found = checkpoint_files(out / CHECKPOINT)
    if restart:
        for f in found:
            f.unlink(missing_ok=True)
    elif found:
        log(f"{found[0]} found: what is already scored there is reused once each model's features "
            "are checked unchanged (hashed); only what is missing is computed")
    # paths, not arrays: each rank memory-maps its models' files and reads them batch by batch
    predictions = {m: p for m in zoo if (p := prediction_path(zoo_dir, m, dataset)).is_file()}
    return dict(models=list(zoo), labels=labels, dataset=dataset, metrics=tuple(metrics),
                predictions=predictions)


def _score_into(out: Path, zoo_dir, zoo: dict, *, writes: bool, log, sa, sa_opts,
                ped_reference=None, **kw):
    """score_zoo on the zoo's feature files with the checkpoint in ``out``; then, where
    ``writes`` (rank 0), the outputs."""
    from te_gpu import score_zoo
    from te_gpu.checkpoint import CheckpointError

    from .extract import ped_reference_paths, store_paths

    dataset = zoo["dataset"]
    if ped_reference is not None:
        kw["ped_reference"] = ped_reference_paths(zoo_dir, zoo["models"], ped_reference)
    try:
        result = score_zoo({m: store_paths(Path(zoo_dir), m, dataset)[0] for m in zoo["models"]},
                           zoo["labels"], metrics=zoo["metrics"],
                           sa=settings_of(sa, sa_opts),
                           predictions=zoo["predictions"], checkpoint=out / CHECKPOINT, **kw)
    except CheckpointError as exc:
        raise PipelineError(f"{exc} (te-gpu score: pass --restart to discard it, or choose another "
                            "--out)") from None
    result.options.update(sa=list(sa), sa_options=sa_opts, dataset=dataset, zoo=str(zoo_dir))
    if not writes:
        return result
    for lbl, reasons in result.skipped.items():
        log(f"note: {lbl} skipped for {len(reasons)} model(s): {next(iter(reasons.values()))}")
    for lbl, why in result.undefined.items():
        log(f"note: {lbl} is undefined for this zoo and was not written: {why}")
    if not result.scores and result.undefined:
        lbl, why = next(iter(result.undefined.items()))
        raise PipelineError(f"{lbl} is undefined for this zoo ({why}), and nothing else was "
                            "asked for")
    for lbl in result.labels:
        result.to_public_json(lbl, out / f"{lbl}.json")
    result.to_csv(out / "scores.csv")
    result.to_json(out / "result.json")
    return result


@contextmanager
def _warnings_to(log, zoo_level: bool = True):
    """te_gpu's checkpoint, lock and zoo-level warnings as one ``log`` line each, as they
    happen. Every rank combines the same zoo-level scores: ``zoo_level=False`` (ranks
    other than 0) keeps their identical warnings out of the log."""
    from te_gpu.combine import ZooLevelWarning
    from te_gpu.locks import StaleLockWarning
    from te_gpu.checkpoint import CheckpointWarning

    ours = (CheckpointWarning, StaleLockWarning, ZooLevelWarning)
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, ours):
                log(f"warning: {message}")
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        for category in ours:
            warnings.simplefilter("always", category)
        if not zoo_level:
            warnings.simplefilter("ignore", ZooLevelWarning)
        yield


# --------------------------------------------------------------------------
# reading scores back
# --------------------------------------------------------------------------

def read_score_inputs(paths) -> dict:
    """Score files or folders -> {label: {model: score}}.

    A folder contributes every ``*.json`` of the public format in it (its label is
    the file name), or its ``result.json``; a file is a public score JSON
    (label = file stem) or a te_gpu ``result.json`` (all its labels).
    """
    from te_gpu.io import read_scores

    out = {}
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise PipelineError(f"scores {p}: no such file or directory")
        files = [path] if path.is_file() else sorted(
            f for f in path.glob("*.json") if f.name != CHECKPOINT)
        if path.is_dir() and (path / "result.json").is_file():
            files = [path / "result.json"]
        if not files:
            raise PipelineError(f"scores {p}: no .json score files in it")
        for f in files:
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise PipelineError(f"{f} is not valid JSON: {exc}") from None
            if isinstance(data, dict) and isinstance(data.get("scores"), dict) and "models" in data:
                for lbl, table in data["scores"].items():
                    out[lbl] = {m: float(v) for m, v in table.items()}
                continue
            try:
                scores, _ = read_scores(f)
            except (ValueError, TypeError) as exc:
                raise PipelineError(str(exc)) from None
            scalars = {m: v for m, v in scores.items() if isinstance(v, float)}
            if not scalars:
                raise PipelineError(f"{f}: no per-model scores in it")
            label = f.stem
            if label.endswith("_metrics"):
                label = label[: -len("_metrics")]
            out[label] = scalars
    return out


def format_table(result_scores: dict, models: list, order_label: str | None = None,
                 extra: dict | None = None, extra_name: str = "") -> str:
    """A plain-text table: one row per model (best first by ``order_label``), one column per label."""
    labels = list(result_scores)
    order_label = order_label or labels[0]
    # a model without a score (LEEP and NCE need the model's own predictions) sorts last
    order = catalogue.oriented(order_label, result_scores[order_label])
    rows = sorted(models, key=lambda m: -order.get(m, -float("inf")))
    head = ["rank", "model"] + labels + ([extra_name] if extra else [])
    body = []
    for i, m in enumerate(rows, 1):
        cells = [str(i), m] + [f"{result_scores[l][m]:.5g}" if m in result_scores[l] else "-"
                               for l in labels]
        if extra:
            v = extra.get(m)
            cells.append("-" if v is None else f"{v:.2f}")
        body.append(cells)
    widths = [max(len(r[j]) for r in [head] + body) for j in range(len(head))]

    def line(cells):
        return "  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in body])


def format_tables(scores: dict, models: list, accuracy: dict | None = None,
                  accuracy_name: str = "accuracy %") -> str:
    """One table per SA setting (raw features first), rows best first by the accuracy
    when given, else by the table's first score."""
    groups = {}
    for lbl in scores:
        groups.setdefault(lbl.split("+", 1)[1] if "+" in lbl else None, []).append(lbl)
    parts = []
    for variant, lbls in groups.items():
        table = {lbl: scores[lbl] for lbl in lbls}
        order = lbls[0]
        if accuracy:
            table = {accuracy_name: accuracy, **table}
            order = accuracy_name
        title = ("without SA" if variant is None else "after PED" if variant == catalogue.PED
                 else f"after SA ({variant})")
        parts.append(f"{title}, best first by {order}:\n" + format_table(table, models, order))
    return "\n\n".join(parts)
