"""``score_zoo``: every requested metric for every model of a zoo, batched.

Models are grouped by feature width (and input precision, which SA's PCA
follows), each group is cut into batches sized from the device's memory, and
each batch goes through :func:`te_gpu.engine.core.score_settings` (all SA
settings at once, sharing the batch statistics) while the next batch is read
(from arrays or memory-mapped ``.npy`` files) into pinned host memory by a
worker thread. NCTI's min-max (te_gpu.combine) runs over the whole zoo at the end. An
out-of-memory error halves the batch and retries it.

With ``checkpoint``, the scores of each finished batch are written to a JSON
file, per model and per *score key* (metric, SA setting, the options that
metric reads, precision), beside a fingerprint of the model's content (a
SHA-256 of its bytes). A rerun reuses a model's scores only after re-hashing
its features; a model whose features changed is rescored, and only the keys
a rerun asks for that are not yet there are computed. On the CPU, batches hold
a few seconds of work at most (batching gains little beyond that there), and the
first ones of each width 1, 2, 4, ... models, so an interruption loses little.
A lock file beside the checkpoint keeps a second run off it.

In a job of several processes (torchrun, srun, or a process group the caller
initialised; :mod:`te_gpu.distributed`), every rank calls ``score_zoo`` with the
same arguments: the models are shared out by estimated cost, each rank opens and
scores only its own, the per-model results are gathered, NCTI's min-max runs on
the whole zoo, and every rank returns the same result. Rank 0 alone holds the
checkpoint (and its lock); the other ranks write their progress to shard files
beside it, ``<checkpoint>.rank<k>``, which the next run takes in, whatever its
number of ranks.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import catalogue, executor
from ._checks import as_features, as_labels, check_min_class_size
from ._loader import BatchReader, content_fingerprint, shape_and_dtype
from .engine import core
from .engine._tensor import resolve_device, working_dtype
from .checkpoint import Checkpoint, CheckpointWarning, labels_sha1, shard_path
from .combine import combine_zoo
from .engine.stats import class_padding_index
from .engine.stats import Labels
from .locks import exclusive_lock
from .catalogue import resolve_sa
from .distributed import joined
from .results import ZooResult

DEFAULT_METRICS = catalogue.DEFAULT_METRICS


def open_features(name, item):
    """A zoo entry -> (array-like, shape, is_float32) without reading a file into memory."""
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"features of model {name!r}: no file {path}")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"features of model {name!r} ({path}): {exc} "
                             "(pickled arrays are refused)") from None
        item = arr
    if isinstance(item, torch.Tensor):
        return item, tuple(item.shape), item.dtype == torch.float32
    if not hasattr(item, "shape"):
        item = np.asarray(item)
    return item, tuple(item.shape), str(item.dtype) == "float32"


def sa_settings(sa):
    settings = list(sa) if isinstance(sa, (list, tuple)) else [sa]
    if not settings:
        raise ValueError("sa=[] asks for nothing; use None for raw features")
    return [resolve_sa(s) for s in settings]


def _is_ped(setting) -> bool:
    return setting is not None and setting.get("variant") == catalogue.PED


@dataclass(frozen=True)
class ReferenceStats:
    """One model's PED reference statistics: the per-dimension mean and population std
    (D,) of its features on the reference data. A value of ``ped_reference`` may be one
    instead of the features (the statistics are all PED reads of them)."""
    mean: np.ndarray
    std: np.ndarray


def ped_reference_stats(zoo, ped_reference, settings):
    """({model: :class:`ReferenceStats`} of each model's PED reference, their digest), or
    (None, None) without ``ped_reference``; checked against the zoo."""
    if ped_reference is None:
        return None, None
    if not any(_is_ped(s) for s in settings):
        raise ValueError("ped_reference is given but no setting is PED (sa='ped')")
    if not hasattr(ped_reference, "items"):
        raise TypeError("ped_reference must be a mapping of model name -> reference features")
    unknown = sorted(set(ped_reference) - set(zoo))
    missing = [name for name in zoo if name not in ped_reference]
    if unknown or missing:
        raise ValueError(f"ped_reference must hold every model of the zoo and no other: "
                         f"unknown {unknown}, missing {missing}")
    stats, digest = {}, hashlib.sha1()
    for name in zoo:
        d = open_features(name, zoo[name])[1][1]
        what = f"PED reference features of model {name!r}"
        given = ped_reference[name]
        if isinstance(given, ReferenceStats):
            mean, std = (np.asarray(v, dtype=np.float64) for v in (given.mean, given.std))
        else:
            ref = as_features(np.asarray(open_features(what, given)[0]), what)
            mean, std = ref.mean(0), ref.std(0)
        if mean.shape != (d,) or std.shape != (d,):
            raise ValueError(f"{what} have {mean.shape[-1]} columns, its features {d}")
        stats[name] = ReferenceStats(mean, std)
        for part in (name.encode(), mean.tobytes(), std.tobytes()):
            digest.update(part)
    return stats, digest.hexdigest()[:10]


def ped_batch_stats(stats, names, device):
    """(mean, std), each (B, D) float64 on ``device``, of the models ``names``; None without."""
    if stats is None:
        return None
    return tuple(torch.as_tensor(np.stack([getattr(stats[name], k) for name in names]),
                                 device=device) for k in ("mean", "std"))


def score_zoo(zoo, labels=None, *, metrics=catalogue.DEFAULT_METRICS, sa=None, device=None,
              precision: str = "exact", batch_size: int | None = None, progress: bool = True,
              options: dict | None = None, predictions: dict | None = None,
              checkpoint=None, distributed: bool | None = None,
              ped_reference: dict | None = None, only=None) -> ZooResult:
    """Score every model of ``zoo`` with every metric in ``metrics``.

    Parameters
    ----------
    zoo : mapping model name -> features (N x D array, tensor, or path to a ``.npy``),
        or the ``(zoo, labels)`` pair that :func:`te_gpu.load_zoo` returns.
    labels : N integer class ids shared by every model.
    metrics : names of :mod:`te_gpu.catalogue` metrics, or ``"all"``.
    sa : None (raw features), an SA variant name or options dict, or a list of
        such settings (``[None, "released"]`` scores both); ``"ped"``: PED.
    ped_reference : {model: its features on PED's reference data (array, tensor or
        ``.npy`` path; the released scripts: ImageNet validation images), or their
        :class:`ReferenceStats`}, for every model, when a setting is PED: PED rescales
        by their mean and std instead of the target features' own (SPEC 10.9).
    device : None (the first tensor's device, else CPU), ``"cpu"``, ``"cuda"``, ...
    precision : ``"exact"`` (float64) or ``"fast"`` (float32 features).
    options : {metric: {option: value}}, e.g. ``{"gbc": {"gaussian": "diagonal"}}``;
        every option not given takes its catalogue default.
    predictions : {model: N x K softmax of the model's own classifier (array,
        tensor or ``.npy`` path)}, the input of LEEP and NCE. A model without
        them is skipped for those metrics, its reason in ``result.skipped``.
    batch_size : models per batch; None sizes batches from the device's memory.
        On the CPU, batches are also capped at a few seconds of work (beyond that
        batching gains little there and an interruption loses more), and the
        first ones of each width ramp up (1, 2, 4, ... models) to that size.
    checkpoint : optional path of a JSON file written (atomically) after every
        batch, holding each model's scores with a fingerprint of its features.
        A rerun with the same labels reuses the scores of every model whose
        features are unchanged (it re-reads and hashes them to check), rescores
        the models whose features changed (a :class:`CheckpointWarning` says so),
        and computes only the metrics / SA settings / options not there yet; so a
        killed run resumes and ends with the same scores. Other labels raise
        :class:`te_gpu.checkpoint.CheckpointError`. A second run on the same
        checkpoint raises :class:`te_gpu.locks.LockError` while the first is alive.
    distributed : None: share the zoo out between the ranks of an initialised process
        group, or of the torchrun environment (then initialise gloo, with NCCL on
        CUDA, and destroy it on the way out); every rank must call ``score_zoo``.
        False: this process scores the whole zoo alone (a call made by one rank only).
        Pass ``.npy`` paths (or memory maps) so that each rank reads only its models.
    only : None (every metric in every setting), or the result labels to compute out of
        ``metrics`` x ``sa`` (``metric`` or ``metric+variant``, as ``scores`` names them):
        ``["knn", "sfda+released"]`` scores kNN raw and after SA, SFDA after SA only.

    Returns
    -------
    ZooResult with ``scores[label][model]`` (label ``metric`` or ``metric+variant``),
    zoo-level parts (``parts``), SA diagnostics per model and timings per stage;
    ``timings["total"]`` adds up every run on the checkpoint, ``timings["run"]`` is
    this run alone. A zoo-level metric (NCTI) that cannot combine over this zoo
    (one model, or every part equal across it: :mod:`te_gpu.combine`) has no
    scores; ``undefined[label]`` says why and a :class:`te_gpu.combine.ZooLevelWarning`
    is issued, and a part left out is named in ``dropped[label]``. Every other
    score is returned as usual.
    """
    t_start = time.perf_counter()
    if labels is None and isinstance(zoo, tuple) and len(zoo) == 2:
        zoo, labels = zoo
    if not hasattr(zoo, "items"):
        raise TypeError("zoo must be a mapping of model name -> features")
    if len(zoo) == 0:
        raise ValueError("the zoo is empty")
    names = catalogue.metric_names(metrics)
    opts = catalogue.resolve_options(names, options)
    metrics = tuple(m for m in names if catalogue.get(m).inputs == "features")
    from_predictions = tuple(m for m in names if catalogue.get(m).inputs == "predictions")
    unknown = set(predictions or {}) - set(zoo) if from_predictions else set()
    if unknown:
        raise ValueError(f"predictions given for model(s) not in the zoo: {sorted(unknown)}")
    settings = sa_settings(sa)
    only, wanted = wanted_keys(metrics, settings, only, from_predictions)
    if wanted is not None:
        from_predictions = tuple(m for m in from_predictions if m in only)
    ped_stats, ped_digest = ped_reference_stats(zoo, ped_reference, settings)
    dtype = working_dtype(precision)
    dev = resolve_device(device, *(v for v in zoo.values() if isinstance(v, torch.Tensor)))
    with joined(dev, enabled=distributed is not False) as world:
        dev = world.device(dev)
        codes_np, classes = as_labels(labels)
        costs = [_work_estimate(item, codes_np.size) for item in zoo.values()] if world.size > 1 else []
        # before any work: the ranks must agree on what they share out, or they would deadlock
        world.check_same(labels=labels_sha1(codes_np), zoo=_digest([list(zoo), costs]),
                         settings=_digest(sorted(_score_keys(metrics, settings, opts,
                                                             ped_digest, precision,
                                                             wanted).values())))
        mine = world.shard(list(zoo), costs) if world.size > 1 else list(zoo)
        entries, n = _open_models(world, zoo, mine)
        if codes_np.size != n:
            raise ValueError(f"labels has {codes_np.size} entries but features have {n} rows")
        for m in names:
            check_min_class_size(codes_np, catalogue.get(m).min_class_size, catalogue.get(m).title)
        result = ZooResult(models=list(zoo), device=str(dev), precision=precision,
                           options=dict(metrics=list(names), options=opts, sa=list(settings),
                                        **({} if only is None else {"only": list(only)})))
        job = _Job(entries=entries, n=n, codes=codes_np, c=classes.size, device=dev, dtype=dtype,
                   metrics=metrics, settings=settings, opts=opts, precision=precision,
                   batch_size=batch_size, ped_stats=ped_stats, ped_digest=ped_digest,
                   wanted=wanted)
        timer = core.Timer(dev)
        with ExitStack() as held:   # rank 0 holds the checkpoint's lock to the end
            book = _open_checkpoint(world, held, checkpoint, n, codes_np, mine)
            book.describe({key: dict(metric=m, sa=job.settings[i], precision=job.precision,
                                     options=_options_of(m, job.opts))
                           for (m, i), key in job.keys.items()})
            shards = world.gather("gathering the scores", lambda: dict(
                models=_score_shard(book, job, timer, progress and world.rank == 0, t_start),
                predictions=_prediction_scores(mine, from_predictions, predictions or {}, job,
                                               timer)))
            _merge_shards(world, book, [s["models"] for s in shards], t_start)

    _fill_result(result, book, job)
    if from_predictions:
        _fill_predictions(result, from_predictions, [s["predictions"] for s in shards])
    run = time.perf_counter() - t_start
    result.timings = dict(timer.stages, run=run, total=book.elapsed + run)
    result.check_finite()
    return result


def _work_estimate(item, n: int) -> float:
    """Cost of scoring a model, about N D^2 + D^3, for sharing a zoo out between ranks.

    From the shape of an array, and from the size of a ``.npy`` file taken as float32
    (``os.stat``: a rank opens no file of another rank's shard). Only who scores what
    depends on it, never a score.
    """
    if isinstance(item, (str, os.PathLike)):
        try:
            d = os.stat(item).st_size / (4 * max(n, 1))
        except OSError:
            d = 0.0   # missing: the rank that owns it says so
    else:
        shape = tuple(item.shape) if hasattr(item, "shape") else np.shape(item)
        d = float(shape[1]) if len(shape) == 2 else 0.0
    return n * d * d + d ** 3


def _open_models(world, zoo, mine: list) -> tuple:
    """(this rank's models opened - files memory-mapped, not read - and N), N being the number
    of rows every model of the zoo shares (all ranks' shapes are gathered to check it)."""
    entries = {}

    def open_mine():
        for name in mine:
            arr, shape, f32 = open_features(name, zoo[name])
            if len(shape) != 2:
                raise ValueError(f"features of model {name!r} must be 2-D (N x D), got shape {shape}")
            entries[name] = (arr, shape, f32)
        return {name: shape for name, (_, shape, _) in entries.items()}

    shapes = {}
    for part in world.gather("opening the models", open_mine):
        shapes.update(part)
    sizes = {shape[0] for shape in shapes.values()}
    if len(sizes) != 1:
        detail = {name: shapes[name][0] for name in zoo}
        raise ValueError(f"models disagree on the number of samples N: {detail}")
    return entries, sizes.pop()


def _open_checkpoint(world, held, checkpoint, n: int, codes: np.ndarray, mine: list):
    """The checkpoint, opened (and locked, in ``held``) by rank 0, which merges in what the ranks
    of an interrupted run left in their shard files; every other rank gets its models' entries
    and writes its progress to its own shard file, ``<checkpoint>.rank<k>``."""
    path = Path(checkpoint) if checkpoint is not None else None

    def on_rank0():
        if path is not None:
            held.enter_context(exclusive_lock(path.with_name(path.name + ".lock"),
                                              f"checkpoint {path}"))
        book = Checkpoint.open(path, n, codes)
        book.absorb_shards()
        return book

    book = world.share("reading the checkpoint", on_rank0)
    if world.rank != 0:
        book.path = shard_path(path, world.rank) if path is not None else None
        book.models = {name: book.models[name] for name in mine if name in book.models}
    return book


def _score_shard(book, job: "_Job", timer, show_progress: bool, t_start: float) -> dict:
    """Score what this rank's models miss (checkpointing as it goes) -> their entries."""
    bar = executor.progress_bar(len(job.entries), show_progress, unit="model", desc="scoring")
    try:
        with timer.stage("verify"):
            missing, verified = _plan_models(book, job, bar)
        _score_missing(book, job, missing, verified, timer, bar, t_start)
    finally:
        bar.close()
    # (a run of prediction metrics only has no entries)
    return {name: book.models[name] for name in job.entries if name in book.models}


def _merge_shards(world, book, shards: list, t_start: float) -> None:
    """Every rank's entries into every rank's book (the result is made from it); rank 0 writes
    the whole checkpoint, then removes the shard files it now holds."""
    if world.size == 1:
        return
    for entries in shards:
        book.models.update(entries)
    if world.rank == 0 and book.path is not None:
        book.save(time.perf_counter() - t_start)
        book.remove_shards()


@dataclass
class _Job:
    """What one score_zoo call scores, and how; ``keys``/``sa_keys`` name its scores in a checkpoint."""
    entries: dict
    n: int
    codes: np.ndarray
    c: int
    device: torch.device
    dtype: torch.dtype
    metrics: tuple
    settings: list
    opts: dict
    precision: str
    batch_size: int | None
    ped_stats: dict | None = None       # {model: (mean, std)} of PED's reference features
    ped_digest: str | None = None       # ... and their digest, which keys the PED scores
    wanted: set | None = None           # {(metric, setting index)} to score; None: all

    def __post_init__(self):
        self.keys = _score_keys(self.metrics, self.settings, self.opts, self.ped_digest,
                                self.precision, self.wanted)
        self.sa_keys = {i: _sa_key(s, self.ped_digest, self.precision)
                        for i, s in enumerate(self.settings)
                        if s is not None and any(k[1] == i for k in self.keys)}


def _score_missing(book, job: _Job, missing: dict, verified: set, timer, bar, t_start) -> None:
    """Score, batch by batch, every model that misses a score key; checkpoint after each batch."""
    dev, n, c = job.device, job.n, job.c
    codes = torch.as_tensor(job.codes, device=dev)
    lab = Labels.from_codes(codes, c, job.dtype)
    class_index = (class_padding_index(codes, c)
                   if any("class_index" in catalogue.get(m).needs for m in job.metrics) else None)
    groups = executor.width_groups(job.entries)

    def plan(key, names, bs):
        """Batches of one group, cut at fixed places (so no score depends on what a
        checkpoint held); a batch with nothing missing is skipped."""
        return [ch for ch in executor.cut(names, bs, ramp=dev.type != "cuda")
                if any(missing[m] for m in ch)]

    queue = deque()  # (group key, models, batch size)
    for key, names in groups.items():
        bs = job.batch_size or executor.memory_batch_size(dev, n, key[0], c, job.dtype,
                                                          job.metrics)
        if dev.type != "cuda":   # a given size too: larger CPU batches gain little, lose more
            bs = min(bs, executor.cpu_batch_cap(n, key[0], c))
        queue.extend((key, ch, bs) for ch in plan(key, names, bs))

    def attempt(key, chunk, staged):
        # only the scores some model of the batch lacks (metrics x settings covering them)
        wanted = set().union(*(missing[m] for m in chunk))
        metrics = [m for m in job.metrics if any(k[0] == m for k in wanted)]
        settings = [i for i in range(len(job.settings)) if any(k[1] == i for k in wanted)]
        with timer.stage("load"):
            x, prints = reader.to_device(staged, chunk, key[0])
        outputs = core.score_settings(x, lab, metrics, [job.settings[i] for i in settings],
                                      opts=job.opts, pca_float32=key[1], timer=timer,
                                      class_index=class_index,
                                      ped_stats=ped_batch_stats(job.ped_stats, chunk, dev),
                                      wanted=[[m for m in metrics if (m, i) in wanted]
                                              for i in settings])
        return prints, metrics, zip(settings, outputs)

    def finish(key, chunk, outputs):
        prints, metrics, per_setting = outputs
        for name, fp in prints.items():
            book.bind(name, fp)
        for i, (lists, infos) in per_setting:
            _store(book, job, chunk, i, lists, infos)
        newly = [m for m in chunk if missing[m]]
        for m in newly:
            missing[m] = set()
        bar.update(len(newly))
        book.save(time.perf_counter() - t_start)

    # fingerprints only matter to a checkpoint; verified models have theirs already
    reader = BatchReader(job.entries, n, dev, job.dtype,
                         fingerprint=frozenset(job.entries) - verified if book.path else frozenset())
    try:
        executor.run_batches(
            queue, attempt=attempt, finish=finish, replan=plan, device=dev,
            prefetch=lambda key, chunk: reader.prefetch(chunk, *key),
            too_big=lambda key: f"one model of width {key[0]} (N={n}) does not fit in the "
                                f"memory of {dev}")
    finally:
        reader.close()


def _prediction_scores(names, metrics, predictions: dict, job: "_Job", timer) -> dict:
    """{label: {model: score}} of the metrics of the source models' own predictions (LEEP,
    NCE) for the models ``names`` that have them, model by model in float64 (a C x K table
    each: no batching needed)."""
    from ._checks import as_probabilities

    if not metrics:
        return {}
    with timer.stage("predictions"):
        lab = Labels.from_codes(torch.as_tensor(job.codes, device=job.device), job.c, torch.float64)
        probs = {}
        for name in names:
            if name in predictions:
                arr, shape, _ = open_features(name, predictions[name])
                p = as_probabilities(np.asarray(arr), job.codes.size, f"predictions of model {name!r}")
                probs[name] = torch.as_tensor(p, dtype=torch.float64, device=job.device)[None]
        scores = {}
        for m in metrics:
            head = catalogue.get(m).engine_fn()
            scores[ZooResult.label(m, None)] = {name: float(head(p, lab, None, **job.opts[m])[0])
                                                for name, p in probs.items()}
    return scores


def _fill_predictions(result: ZooResult, metrics, shards: list) -> None:
    """The prediction metrics' scores of all shards into ``result``; models without
    predictions are skipped, with the reason."""
    for m in metrics:
        label = ZooResult.label(m, None)
        scored = {name: v for part in shards for name, v in part[label].items()}
        result.scores[label] = {name: scored[name] for name in result.models if name in scored}
        absent = {name: f"no predictions of the model's own classifier ({catalogue.get(m).title} "
                        "reads them; te-gpu extract writes {model}_{dataset}_prediction.npy "
                        "for models with a classification head)"
                  for name in result.models if name not in scored}
        if absent:
            result.skipped[label] = absent
        if not result.scores[label]:
            del result.scores[label]


def _store(book, job: _Job, chunk, i: int, lists, infos) -> None:
    """One SA setting's scores of a batch into the checkpoint, refusing non-finite values."""
    for m in lists:
        for name, v in zip(chunk, lists[m]):
            if not np.all(np.isfinite(v)):
                raise FloatingPointError(
                    f"{ZooResult.label(m, job.settings[i])} of model {name!r} is not finite ({v}); "
                    "this is a bug or an input te_gpu failed to reject")
            book.put(name, job.keys[(m, i)], v)
    if infos is not None:
        for name, info in zip(chunk, infos):
            book.put_sa(name, job.sa_keys[i], info)


def _fill_result(result: ZooResult, book, job: _Job) -> None:
    """Scores of the zoo's models from the checkpoint's entries; a zoo-level metric's
    combination over exactly these models (te_gpu.combine), recomputed every time
    from their raw parts: a part equal across the zoo is left out, and a metric with
    nothing left is marked undefined (a warning; the other scores stand)."""
    names = result.models
    for (m, i), key in job.keys.items():                # setting by setting
        lbl = ZooResult.label(m, job.settings[i])
        vals = {name: book.models[name]["scores"][key] for name in names}
        if not catalogue.get(m).zoo_level:
            result.scores[lbl] = {name: float(vals[name]) for name in names}
            continue
        result.parts[lbl] = {name: tuple(vals[name]) for name in names}
        got = combine_zoo(m, vals, label=lbl)
        if got.dropped:
            result.dropped[lbl] = got.dropped
        if got.scores is None:
            result.undefined[lbl] = got.reason
        else:
            result.scores[lbl] = got.scores
    for i, sa_key in job.sa_keys.items():
        result.sa[job.settings[i]["variant"]] = {name: book.models[name]["sa"][sa_key]
                                                 for name in names}


# --------------------------------------------------------------------------
# the checkpoint: per model, a content fingerprint and scores by key
# --------------------------------------------------------------------------

def _digest(spec) -> str:
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _canonical_sa(s):
    """An SA setting with numbers in one spelling (alpha=1 and alpha=1.0 are one setting)."""
    if s is None:
        return None
    return {k: float(v) if k in ("alpha", "sigma", "force") else int(v) if k == "pca_dim" else v
            for k, v in s.items()}


def wanted_keys(metrics, settings, only, from_predictions=()) -> tuple:
    """``(only as a list, {(metric, setting index)})`` of the labels ``only`` of
    ``metrics`` x ``settings`` (LEEP/NCE, ``from_predictions``, on raw predictions only);
    ``(None, None)``: all of them."""
    if only is None:
        return None, None
    if hasattr(only, "__iter__") and not isinstance(only, str):      # a generator too
        only = list(only)
    if not isinstance(only, list) or not all(isinstance(lb, str) for lb in only):
        raise TypeError(f"only must be a list of labels such as ['knn', 'sfda+released'], "
                        f"got {only!r}")
    product = {ZooResult.label(m, s): (m, i) for i, s in enumerate(settings) for m in metrics}
    unknown = [lb for lb in only if lb not in product and lb not in from_predictions]
    if unknown or not only:
        raise ValueError(f"only: {unknown or 'nothing'} is not among the labels of the metrics "
                         f"x SA settings asked for ({', '.join([*product, *from_predictions])})")
    return only, {product[lb] for lb in only if lb in product}


def _score_keys(metrics, settings, opts: dict, ped_digest, precision: str,
                wanted: set | None = None) -> dict:
    """{(metric, setting index): key}: ``label@hash`` of all a score depends on (a PED
    setting's: also its reference statistics' digest, where given); only those ``wanted``."""
    keys = {}
    for i, s in enumerate(settings):
        for m in metrics:
            if wanted is not None and (m, i) not in wanted:
                continue
            spec = dict(metric=m, sa=_canonical_sa(s), precision=precision,
                        options=_options_of(m, opts), **_reference_of(s, ped_digest))
            keys[(m, i)] = f"{ZooResult.label(m, s)}@{_digest(spec)}"
    return keys


def _options_of(metric: str, opts: dict) -> dict:
    """The options ``metric`` reads (its catalogue options), which key its stored scores."""
    return dict(opts[metric])


def _sa_key(s, ped_digest, precision: str) -> str:
    """Key of one SA setting's diagnostics (gate value, displacement, ...)."""
    spec = dict(sa=_canonical_sa(s), precision=precision, **_reference_of(s, ped_digest))
    return f"{s['variant']}@{_digest(spec)}"


def _reference_of(setting, ped_digest) -> dict:
    """What a setting's scores depend on beyond its numbers: PED's reference, where given."""
    return dict(reference=ped_digest) if _is_ped(setting) and ped_digest is not None else {}


def _plan_models(book, job: _Job, bar) -> tuple:
    """({model: score keys (metric, setting) it still needs}, models verified against the checkpoint).

    A model the checkpoint holds scores of is re-read and hashed (in parallel
    threads: reading is far cheaper than scoring); a model whose shape, dtype or
    digest changed is rescored whole.
    """
    wanted, entries = set(job.keys), job.entries
    missing, to_verify = {}, []
    for name, (arr, shape, f32) in entries.items():
        entry = book.models.get(name)
        have = {k for k in wanted if entry and _holds(entry, job, k)}
        missing[name] = wanted - have
        if not have:
            continue
        old = entry["content"]
        if [old["shape"], old["dtype"]] != list(shape_and_dtype(arr)):  # fast check: certainly changed
            _changed(book, name, f"shape/dtype {old['shape']} {old['dtype']} -> "
                                 f"{list(shape)} {shape_and_dtype(arr)[1]}")
            missing[name] = set(wanted)
        else:
            to_verify.append(name)
    verified = set()
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for name, fp in zip(to_verify, pool.map(lambda m: content_fingerprint(entries[m][0]), to_verify)):
            if fp == book.models[name]["content"]:
                verified.add(name)
                bar.update(0 if missing[name] else 1)
            else:
                _changed(book, name, "content")
                missing[name] = set(wanted)
    return missing, verified


def _holds(entry: dict, job: _Job, key: tuple) -> bool:
    """The entry has the score ``key`` (metric, setting), and that setting's SA diagnostics."""
    sa_key = job.sa_keys.get(key[1])
    return job.keys[key] in entry["scores"] and (sa_key is None or sa_key in entry["sa"])


def _changed(book, name: str, what: str) -> None:
    warnings.warn(f"model {name!r}: features changed since checkpoint {book.path} was written "
                  f"({what}); rescoring it", CheckpointWarning, stacklevel=4)
    del book.models[name]
