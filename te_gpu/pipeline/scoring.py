"""Resumable scoring of a zoo directory with :func:`te_gpu.score_zoo`.

Models are scored in chunks; after each chunk the raw per-model values (NCTI's
three parts, not its zoo-normalised score) go to ``progress.json`` in the output
folder, atomically. A rerun with the same options scores only the models that
are missing, whose feature file changed, or that lack a requested metric or SA
variant; NCTI's min-max over the zoo is recomputed from the stored parts.

Outputs, in ``out``: ``{label}.json`` per metric (the public format
``{model: score, ..., "duration": s}``), ``scores.csv``, ``result.json``
(te_gpu's full result: scores, NCTI parts, SA diagnostics, options).
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np

from . import PipelineError

METRICS = ("logme", "sfda", "lda", "gbc", "nleep", "ncti")
VARIANTS = ("released", "described", "pca-only")
SA_DEFAULTS = dict(alpha=0.005, sigma=0.6, force=1.0, pca_dim=64, gate=True)
# the public scripts' SA settings for the two zoos of the papers (SPEC 7)
PRESETS = {
    "supervised": dict(alpha=0.005, sigma=0.6, force=1.0, pca_dim=64),
    "self-supervised": dict(alpha=0.1, sigma=0.6, force=1.0, pca_dim=64),
}
PRESET_ALIASES = {"group1": "supervised", "group2": "self-supervised"}
PROGRESS = "progress.json"


def parse_metrics(text) -> tuple:
    items = [m.strip().lower() for m in str(text).split(",") if m.strip()]
    if items == ["all"]:
        return METRICS
    bad = [m for m in items if m not in METRICS]
    if bad or not items:
        raise PipelineError(f"unknown metric(s) {bad or text!r}; choose from {', '.join(METRICS)} or all")
    return tuple(dict.fromkeys(items))


def parse_sa(text) -> list:
    """``none,released`` -> [None, "released"] (none = raw features)."""
    items = [s.strip().lower() for s in str(text).split(",") if s.strip()]
    out = []
    for s in items:
        if s in ("none", "raw", "off"):
            out.append(None)
        elif s in VARIANTS:
            out.append(s)
        elif s == "all":
            out += [None, *VARIANTS]
        else:
            raise PipelineError(f"unknown SA setting {s!r}; choose from none, {', '.join(VARIANTS)}, all")
    if not out:
        raise PipelineError("--sa is empty; use none for raw features only")
    return list(dict.fromkeys(out))


def sa_options(preset=None, **given) -> dict:
    """SA numbers: defaults, then the preset, then the options given (None = not given)."""
    opts = dict(SA_DEFAULTS)
    if preset:
        key = PRESET_ALIASES.get(preset, preset)
        if key not in PRESETS:
            raise PipelineError(f"unknown preset {preset!r}; choose from "
                                f"{', '.join(list(PRESETS) + list(PRESET_ALIASES))}")
        opts.update(PRESETS[key])
    opts.update({k: v for k, v in given.items() if v is not None})
    for k in ("alpha", "sigma", "force"):
        if not np.isfinite(opts[k]):
            raise PipelineError(f"--{k} must be finite")
    if int(opts["pca_dim"]) != opts["pca_dim"] or opts["pca_dim"] < 1:
        raise PipelineError("--pca-dim must be a positive integer")
    opts["pca_dim"] = int(opts["pca_dim"])
    return opts


def label_of(metric: str, variant) -> str:
    return metric if variant is None else f"{metric}+{variant}"


def _labels_digest(labels) -> str:
    return hashlib.sha1(np.ascontiguousarray(np.asarray(labels, dtype=np.int64)).tobytes()).hexdigest()


def _file_stamp(directory: Path, model: str, dataset: str):
    p = directory / f"{model}_{dataset}_feature.npy"
    try:
        st = p.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _chunks(todo: list, size: int, need_pairs: bool, zoo_models: list) -> list:
    out = [todo[i:i + size] for i in range(0, len(todo), size)]
    if need_pairs and out and len(out[-1]) == 1:
        if len(out) > 1:
            last = out.pop()
            out[-1] = out[-1] + last
        else:  # NCTI's parts need >= 2 models per call: add a companion (its parts do not change)
            companion = next(m for m in zoo_models if m != out[0][0])
            out[0] = [out[0][0], companion]
    return out


def score_directory(zoo_dir, out, *, dataset=None, metrics=("logme", "sfda", "lda", "gbc", "ncti"),
                    sa=(None, "released"), sa_opts=None, precision="exact", device=None,
                    batch_size=None, chunk=16, restart=False, progress=True, lda_scaling="n_minus_c",
                    corrected=False, seed=0, models=None, log=print):
    """Score a zoo directory into ``out`` (resuming) -> ZooResult."""
    import torch

    from te_gpu import score_zoo
    from te_gpu.engine.ncti import minmax_combine
    from te_gpu.results import ZooResult

    from .extract import open_zoo

    zoo, labels, dataset = open_zoo(zoo_dir, dataset, models=models)
    zoo_models = list(zoo)
    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    metrics = tuple(metrics)
    sa = list(sa)
    sa_opts = dict(sa_opts or SA_DEFAULTS)
    if "ncti" in metrics and len(zoo_models) < 2:
        raise PipelineError("NCTI normalises over a zoo and needs at least 2 models; "
                            "drop it from --metrics")
    if chunk < 1:
        raise PipelineError("--chunk must be at least 1")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PipelineError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = dict(dataset=dataset, n=int(labels.shape[0]), labels=_labels_digest(labels),
                       precision=precision, sa_options=sa_opts, lda_scaling=lda_scaling,
                       corrected=bool(corrected), seed=int(seed))
    state_path = out / PROGRESS
    state = None
    if state_path.is_file() and not restart:
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            log(f"note: {state_path} is unreadable; starting afresh")
            state = None
        if state is not None and state.get("fingerprint") != json.loads(json.dumps(fingerprint)):
            old = state.get("fingerprint", {})
            diff = sorted(k for k in set(old) | set(fingerprint)
                          if json.dumps(old.get(k)) != json.dumps(fingerprint.get(k)))
            raise PipelineError(f"{out} holds scores computed with other settings ({', '.join(diff)}); "
                                "pass --restart to discard them, or choose another --out")
    if state is None:
        state = dict(format="te_gpu-score-progress", version=1, fingerprint=fingerprint, raw={},
                     sa={}, stamps={}, seconds=0.0, device=None)

    directory = Path(zoo_dir)
    labels_wanted = [label_of(m, v) for v in sa for m in metrics]
    stamps = {m: _file_stamp(directory, m, dataset) for m in zoo_models}
    todo = []
    for m in zoo_models:
        fresh = state["stamps"].get(m) == stamps[m]
        if not fresh:
            for table in state["raw"].values():
                table.pop(m, None)
        if not fresh or any(m not in state["raw"].get(lbl, {}) for lbl in labels_wanted):
            todo.append(m)
    done_before = len(zoo_models) - len(todo)
    if done_before and todo:
        log(f"resuming: {done_before} of {len(zoo_models)} models already scored in {out}")
    elif not todo:
        log(f"all {len(zoo_models)} models already scored in {out}")

    settings = [None if v is None else dict(sa_opts, variant=v) for v in sa]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), unit="model", desc="scoring", disable=not progress or not todo)
    try:
        for part in _chunks(todo, chunk, "ncti" in metrics, zoo_models):
            t0 = time.perf_counter()
            try:
                res = score_zoo({m: zoo[m] for m in part}, labels, metrics=metrics, sa=settings,
                                device=device, precision=precision, batch_size=batch_size,
                                progress=False, lda_scaling=lda_scaling, corrected=corrected,
                                seed=seed)
            except ValueError as exc:
                if "NCTI: component" in str(exc):  # min-max over a chunk; parts are fine
                    res = _score_ncti_parts_only(score_zoo, zoo, part, labels, metrics, settings,
                                                 device, precision, batch_size, lda_scaling,
                                                 corrected, seed)
                else:
                    raise PipelineError(f"scoring {', '.join(part)}: {exc}") from None
            state["seconds"] += time.perf_counter() - t0
            state["device"] = res.device
            for lbl in res.labels:
                table = state["raw"].setdefault(lbl, {})
                if lbl.split("+")[0] == "ncti":
                    table.update({m: list(res.ncti_parts[lbl][m]) for m in part})
                else:
                    table.update({m: res.scores[lbl][m] for m in part})
            for variant, infos in res.sa.items():
                state["sa"].setdefault(variant, {}).update({m: _jsonable(infos[m]) for m in part})
            for m in part:
                state["stamps"][m] = stamps[m]
            _write_json(state_path, state)
            bar.update(len([m for m in part if m in todo]))
    finally:
        bar.close()

    result = ZooResult(models=zoo_models, device=state.get("device") or "cpu", precision=precision,
                       options=dict(metrics=list(metrics), sa=list(sa),
                                    sa_options=sa_opts, lda_scaling=lda_scaling, dataset=dataset,
                                    zoo=str(directory)))
    for lbl in labels_wanted:
        raw = state["raw"][lbl]
        if lbl.split("+")[0] == "ncti":
            parts = torch.tensor([raw[m] for m in zoo_models], dtype=torch.float64)
            try:
                combined = minmax_combine(parts[:, 0], parts[:, 1], parts[:, 2])
            except ValueError as exc:
                warnings.warn(f"{lbl} left out: {exc}")
                continue
            result.ncti_parts[lbl] = {m: tuple(raw[m]) for m in zoo_models}
            result.scores[lbl] = {m: float(v) for m, v in zip(zoo_models, combined.tolist())}
        else:
            result.scores[lbl] = {m: float(raw[m]) for m in zoo_models}
    result.sa = {v: {m: state["sa"].get(v, {}).get(m) for m in zoo_models}
                 for v in sa if v is not None}
    result.timings = dict(total=state["seconds"])
    for lbl in result.labels:
        result.to_public_json(lbl, out / f"{lbl}.json", duration=state["seconds"])
    result.to_csv(out / "scores.csv")
    result.to_json(out / "result.json")
    return result


def _score_ncti_parts_only(score_zoo, zoo, part, labels, metrics, settings, device, precision,
                           batch_size, lda_scaling, corrected, seed):
    """A chunk whose NCTI parts are constant within it (score_zoo's min-max fails there):
    the other metrics by score_zoo, NCTI's parts model by model with the public API."""
    import te_gpu
    from te_gpu.results import ZooResult

    others = tuple(m for m in metrics if m != "ncti")
    if others:
        res = score_zoo({m: zoo[m] for m in part}, labels, metrics=others, sa=settings,
                        device=device, precision=precision, batch_size=batch_size, progress=False,
                        corrected=corrected, seed=seed)
    else:
        res = ZooResult(models=list(part))
    for s in settings:
        lbl = ZooResult.label("ncti", s)
        res.ncti_parts[lbl] = {}
        res.scores[lbl] = {}
        for m in part:
            x = np.asarray(zoo[m])
            if s is not None:
                x, _ = te_gpu.spread_attract(x, labels, device=device, precision=precision, **s)
            res.ncti_parts[lbl][m] = tuple(te_gpu.ncti_parts(x, labels, lda_scaling=lda_scaling,
                                                             device=device, precision=precision))
    return res


def _jsonable(info):
    if info is None:
        return None
    out = {}
    for k, v in info.items():
        if isinstance(v, (np.generic,)):
            v = v.item()
        if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
            v = v.item()
        out[k] = v
    return out


def _write_json(path: Path, data) -> None:
    from te_gpu.io import _atomic_write

    text = json.dumps(data, indent=1, allow_nan=False)
    _atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


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
            f for f in path.glob("*.json") if f.name not in (PROGRESS,))
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
    rows = sorted(models, key=lambda m: -result_scores[order_label][m])
    head = ["rank", "model"] + labels + ([extra_name] if extra else [])
    body = []
    for i, m in enumerate(rows, 1):
        cells = [str(i), m] + [f"{result_scores[l][m]:.5g}" for l in labels]
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
        title = "without SA" if variant is None else f"after SA ({variant})"
        parts.append(f"{title}, best first by {order}:\n" + format_table(table, models, order))
    return "\n\n".join(parts)
