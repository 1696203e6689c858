"""``score_zoo``: every requested metric for every model of a zoo, batched.

Models are grouped by feature width (and input precision, which SA's PCA
follows), each group is cut into batches sized from the device's memory, and
each batch goes through :func:`te_gpu.engine.core.score_settings` (all SA
settings at once, sharing the batch statistics) while the next batch is read (from arrays or memory-mapped ``.npy``
files) into pinned host memory by a worker thread. NCTI's min-max runs over
the whole zoo at the end. An out-of-memory error halves the batch and retries
it; with ``checkpoint`` nothing already scored is lost to an interruption.
"""
from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from ._checks import as_labels
from ._loader import BatchReader
from .engine import core
from .engine._tensor import resolve_device, working_dtype
from .engine.ncti import class_padding_index, minmax_combine
from .engine.stats import Labels
from .reference.sa import resolve_sa
from .results import ZooResult

DEFAULT_METRICS = ("logme", "sfda", "lda", "gbc", "ncti")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: unreadable, or from another zoo or settings."""


def _open(name, item):
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


def _sa_settings(sa):
    settings = list(sa) if isinstance(sa, (list, tuple)) else [sa]
    if not settings:
        raise ValueError("sa=[] asks for nothing; use None for raw features")
    return [resolve_sa(s) for s in settings]


def _batch_size(device: torch.device, n: int, d: int, c: int, dtype: torch.dtype) -> int:
    """Models per batch: a few copies of the features, Grams and N x C per model.

    Sized from the device's *total* memory, not its free memory, so that the same
    zoo on the same device is always cut into the same batches: batch boundaries
    can change the last bits of a score (reduction orders), and reruns must be
    bit-identical. If other work leaves too little free, the out-of-memory retry
    halves the batch.
    """
    item = torch.finfo(dtype).bits // 8
    per_model = item * (6 * n * d + 8 * d * d + 6 * n * c + 4 * n * 64)
    if device.type == "cuda":
        _, total = torch.cuda.mem_get_info(device)
        budget = 0.5 * total
    else:
        try:
            budget = 0.25 * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            budget = 2 * 2 ** 30
    return int(min(256, max(1, budget // per_model)))


def score_zoo(zoo, labels=None, *, metrics=DEFAULT_METRICS, sa=None, device=None,
              precision: str = "exact", batch_size: int | None = None, progress: bool = True,
              corrected: bool = False, gaussian: str = "spherical", components_per_class: int = 5,
              seed: int = 0, lda_scaling: str = "n_minus_c", checkpoint=None) -> ZooResult:
    """Score every model of ``zoo`` with every metric in ``metrics``.

    Parameters
    ----------
    zoo : mapping model name -> features (N x D array, tensor, or path to a ``.npy``),
        or the ``(zoo, labels)`` pair that :func:`te_gpu.load_zoo` returns.
    labels : N integer class ids shared by every model.
    metrics : names among ``logme, sfda, lda, gbc, nleep, ncti``.
    sa : None (raw features), an SA variant name or options dict, or a list of
        such settings (``[None, "released"]`` scores both).
    device : None (the first tensor's device, else CPU), ``"cpu"``, ``"cuda"``, ...
    precision : ``"exact"`` (float64) or ``"fast"`` (float32).
    batch_size : models per batch; None sizes batches from free memory.
    checkpoint : optional path of a JSON file written (atomically) after every
        batch. A rerun with the same zoo, labels and settings skips the models it
        holds, so a killed run resumes and ends with the same scores.

    Returns
    -------
    ZooResult with ``scores[label][model]`` (label ``metric`` or ``metric+variant``),
    NCTI parts, SA diagnostics per model and timings per stage.
    """
    t_start = time.perf_counter()
    if labels is None and isinstance(zoo, tuple) and len(zoo) == 2:
        zoo, labels = zoo
    if not hasattr(zoo, "items"):
        raise TypeError("zoo must be a mapping of model name -> features")
    if len(zoo) == 0:
        raise ValueError("the zoo is empty")
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(m.lower() for m in metrics)
    unknown = [m for m in metrics if m not in core.METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(core.METRICS)}")
    if "ncti" in metrics and len(zoo) < 2:
        raise ValueError("NCTI normalises across a zoo: it needs at least 2 models")
    if gaussian not in ("spherical", "diagonal"):
        raise ValueError(f"gaussian must be 'spherical' or 'diagonal', got {gaussian!r}")
    if lda_scaling not in ("n_minus_c", "n"):
        raise ValueError(f"lda_scaling must be 'n_minus_c' or 'n', got {lda_scaling!r}")
    settings = _sa_settings(sa)
    dtype = working_dtype(precision)

    entries = {}
    for name, item in zoo.items():
        arr, shape, f32 = _open(name, item)
        if len(shape) != 2:
            raise ValueError(f"features of model {name!r} must be 2-D (N x D), got shape {shape}")
        entries[name] = (arr, shape, f32)
    sizes = {shape[0] for _, shape, _ in entries.values()}
    if len(sizes) != 1:
        detail = {name: shape[0] for name, (_, shape, _) in entries.items()}
        raise ValueError(f"models disagree on the number of samples N: {detail}")
    n = sizes.pop()
    codes_np, classes = as_labels(labels, n)
    if "gbc" in metrics and np.bincount(codes_np).min() < 2:
        raise ValueError("GBC (unbiased class variances) needs at least 2 samples per class")
    dev = resolve_device(device, *(a for a, _, _ in entries.values()))
    codes = torch.as_tensor(codes_np, device=dev)
    lab = Labels.from_codes(codes, classes.size, dtype)
    class_index = class_padding_index(codes, classes.size) if "ncti" in metrics else None
    opts = dict(corrected=corrected, gaussian=gaussian, components_per_class=components_per_class,
                seed=seed, lda_scaling=lda_scaling)

    timer = core.Timer(dev)
    labels_of = [ZooResult.label(m, s) for s in settings for m in metrics]
    result = ZooResult(models=list(entries), device=str(dev), precision=precision,
                       options=dict(opts, metrics=list(metrics),
                                    sa=[s for s in settings]))
    raw_scores = {lbl: {} for lbl in labels_of}
    sa_info = {s["variant"]: {} for s in settings if s is not None}
    fingerprint = _fingerprint(result, n, codes_np, entries, zoo)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    done = _load_checkpoint(ckpt, fingerprint, raw_scores, sa_info) if ckpt else set()

    groups: dict = {}  # (width, float32 input) -> models
    for name, (arr, shape, f32) in entries.items():
        groups.setdefault((shape[1], f32), []).append(name)

    def plan(names, bs):
        """Batches of one group, cut at fixed places; those finished before are skipped."""
        chunks = [names[i:i + bs] for i in range(0, len(names), bs)]
        return [c for c in chunks if not all(m in done for m in c)]

    queue = deque()  # (group key, models, batch size)
    for key, names in groups.items():
        bs = batch_size or _batch_size(dev, n, key[0], classes.size, dtype)
        queue.extend((key, c, bs) for c in plan(names, bs))

    reader = BatchReader(entries, n, dev, dtype)
    bar = _progress(len(entries), progress)
    bar.update(len(done))
    try:
        ahead = reader.prefetch(queue[0][1], *queue[0][0]) if queue else None
        while queue:
            (d, f32), chunk, bs = queue.popleft()
            staged = ahead
            ahead = reader.prefetch(queue[0][1], *queue[0][0]) if queue else None
            try:
                with timer.stage("load"):
                    x = reader.to_device(staged, chunk, d)
                outputs = core.score_settings(x, lab, metrics, settings, opts=opts,
                                              pca_float32=f32, timer=timer,
                                              class_index=class_index)
                for s, (lists, infos) in zip(settings, outputs):
                    for m in metrics:
                        lbl = ZooResult.label(m, s)
                        for name, v in zip(chunk, lists[m]):
                            if not np.all(np.isfinite(v)):
                                raise FloatingPointError(
                                    f"{lbl} of model {name!r} is not finite ({v}); "
                                    "this is a bug or an input te_gpu failed to reject")
                            raw_scores[lbl][name] = v
                    if infos is not None:
                        for name, info in zip(chunk, infos):
                            sa_info[s["variant"]][name] = info
            except (torch.OutOfMemoryError, MemoryError):
                x = None
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                if bs == 1:
                    raise MemoryError(f"one model of width {d} (N={n}) does not fit in the "
                                      f"memory of {dev}") from None
                # re-cut this batch and the rest of its group at half the size
                rest = [c for k, c, _ in queue if k == (d, f32)]
                others = [item for item in queue if item[0] != (d, f32)]
                left = [m for c in [chunk] + rest for m in c]
                queue = deque([((d, f32), c, max(1, bs // 2)) for c in plan(left, max(1, bs // 2))]
                              + others)
                if ahead is not None:
                    ahead.cancel()
                ahead = reader.prefetch(queue[0][1], *queue[0][0]) if queue else None
                continue
            bar.update(len([m for m in chunk if m not in done]))
            if ckpt is not None:
                _save_checkpoint(ckpt, fingerprint, raw_scores, sa_info)
    finally:
        bar.close()
        reader.close()

    for lbl in labels_of:
        vals = raw_scores[lbl]
        if lbl.split("+")[0] == "ncti":
            names = result.models
            parts = torch.tensor([vals[m] for m in names], dtype=torch.float64)
            combined = minmax_combine(parts[:, 0], parts[:, 1], parts[:, 2])
            result.ncti_parts[lbl] = {m: tuple(vals[m]) for m in names}
            result.scores[lbl] = {m: float(v) for m, v in zip(names, combined.tolist())}
        else:
            result.scores[lbl] = {m: float(vals[m]) for m in result.models}
    result.sa = sa_info
    result.timings = dict(timer.stages, total=time.perf_counter() - t_start)
    result.check_finite()
    return result


def _fingerprint(result: ZooResult, n: int, codes: np.ndarray, entries: dict, zoo) -> dict:
    """What a checkpoint must agree on to be resumed: settings, labels, model shapes,
    and for models given as files their size and modification time."""
    import hashlib

    files = {m: [os.stat(item).st_size, os.stat(item).st_mtime_ns]
             for m, item in zoo.items() if isinstance(item, (str, os.PathLike))}
    return dict(options=result.options, precision=result.precision, n=n,
                labels_sha1=hashlib.sha1(np.ascontiguousarray(codes).tobytes()).hexdigest(),
                shapes={m: list(shape) for m, (_, shape, _) in entries.items()}, files=files)


def _load_checkpoint(path: Path, fingerprint: dict, raw_scores: dict, sa_info: dict) -> set:
    """Fill raw_scores/sa_info from a matching checkpoint; return the models it holds."""
    import json

    if not path.exists():
        return set()
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc}); delete it to start afresh") from None
    if saved.get("fingerprint") != json.loads(json.dumps(fingerprint)):
        raise CheckpointError(f"checkpoint {path} was written for another zoo, labels or settings; "
                         "delete it or choose another path")
    done = None
    for lbl, vals in saved["scores"].items():
        raw_scores[lbl].update({m: tuple(v) if isinstance(v, list) else v for m, v in vals.items()})
        done = set(vals) if done is None else done & set(vals)
    for variant, infos in saved.get("sa", {}).items():
        sa_info[variant].update(infos)
    return done or set()


def _save_checkpoint(path: Path, fingerprint: dict, raw_scores: dict, sa_info: dict) -> None:
    import json

    from .io import atomic_write

    text = json.dumps(dict(fingerprint=fingerprint, scores=raw_scores, sa=sa_info), allow_nan=False)
    atomic_write(path, lambda fh: fh.write(text.encode()))


class _NoBar:
    def update(self, k):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a dependency, but a bar is not worth failing over
        return _NoBar()
    return tqdm(total=total, unit="model", desc="scoring", leave=False)
