"""Read and write model zoos and score files in the public layout.

The public code of the transferability-estimation papers (SFDA, PED, ...)
stores one zoo per target dataset as two ``.npy`` files per model::

    {directory}/{model}_{dataset}_feature.npy   # N x D float features
    {directory}/{model}_{dataset}_label.npy     # N labels (N x T for VOC)

and the scores of one metric as a JSON object
``{model: score, ..., "duration": seconds}``.

Arrays are always loaded with ``allow_pickle=False``: a pickled ``.npy`` can
run arbitrary code when loaded, and zoos are often downloaded from strangers.
Files are written to a temporary name and renamed into place, so a crash
mid-write never leaves a truncated file behind (the lock files that keep a
second run off a checkpoint, store or output folder: :mod:`te_gpu.locks`).
"""
from __future__ import annotations

import json
import math
import numbers
import os
import uuid
from pathlib import Path

import numpy as np

from te_gpu._checks import as_features

__all__ = ["load_zoo", "save_zoo", "read_scores", "write_scores", "atomic_write"]

_FEATURE = "_{dataset}_feature.npy"
_LABEL = "_{dataset}_label.npy"


# --------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------

def atomic_write(path: Path, write) -> None:
    """Call ``write(fh)`` on a temp file beside ``path``, then rename it over ``path``.

    ``os.replace`` within one directory is atomic, so readers see either the
    old file or the complete new one. ``os.open`` with mode 0o666 lets the
    umask decide the final permissions, as for an ordinary ``open``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------
# zoo files
# --------------------------------------------------------------------------

def _check_name(name, what: str) -> str:
    """A model or dataset name must be usable as part of one file name."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty string, got {name!r}")
    if "/" in name or os.sep in name or (os.altsep and os.altsep in name) or name in (".", ".."):
        raise ValueError(f"{what} {name!r} cannot contain a path separator")
    return name


def _read_header(path: Path):
    """dtype of a ``.npy`` file from its header, or None for an unknown version.

    Reading only the header lets a pickled (object) array be refused without
    loading a single byte of its pickle.
    """
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
        except ValueError as exc:
            raise ValueError(
                f"{path} is not a .npy file ({exc}); pickles and other formats are refused"
            ) from None
        readers = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            return None  # np.load still refuses object arrays in that case
        try:
            _, _, dtype = readers[version](fh)
        except ValueError as exc:
            raise ValueError(f"{path} is truncated or corrupt: {exc}") from None
    return dtype


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    """``np.load`` that refuses pickles and names the file in every error."""
    dtype = _read_header(path)
    if dtype is not None and dtype.hasobject:
        raise ValueError(
            f"{path} holds a pickled object array (dtype {dtype}); pickled arrays are "
            "refused because loading them can run arbitrary code"
        )
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, EOFError) as exc:
        raise ValueError(f"{path} is truncated or corrupt: {exc}") from None


def _collapse_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    """N or N x 1 labels -> N; N x T multi-label (VOC) -> argmax per row.

    Multi-label rows become the index of their largest entry, i.e. the first
    positive class of a 0/1 row (0 for a row with no positive), because the
    metrics score single-label classification.
    """
    if labels.ndim == 2:
        labels = labels[:, 0] if labels.shape[1] == 1 else np.argmax(labels, axis=1)
    if labels.ndim != 1:
        raise ValueError(f"{path}: labels must be 1-D or 2-D (multi-label), got shape {labels.shape}")
    return labels


def _discover(directory: Path, dataset: str) -> list[str]:
    """Models that have a feature file for ``dataset``, sorted.

    Model names may contain underscores, so the name is everything before
    the known suffix rather than the first field of an ``_``-split.
    """
    suffix = _FEATURE.format(dataset=dataset)
    found = [p.name[: -len(suffix)] for p in directory.iterdir()
             if p.is_file() and p.name.endswith(suffix)]
    return sorted(m for m in found if m)


def _describe(directory: Path) -> str:
    """Short listing of a directory's .npy files for an error message."""
    names = sorted(p.name for p in directory.iterdir() if p.name.endswith(".npy"))
    if not names:
        return "it holds no .npy files"
    shown = ", ".join(names[:20])
    more = f" and {len(names) - 20} more" if len(names) > 20 else ""
    return f"it holds: {shown}{more}"


def load_zoo(directory, dataset: str, *, models=None, mmap: bool = False):
    """Load a zoo's features and the shared labels for one target dataset.

    Parameters
    ----------
    directory : str or Path
        Folder with ``{model}_{dataset}_feature.npy`` (N x D) and
        ``{model}_{dataset}_label.npy`` (N, or N x T multi-label) files.
    dataset : str
        Target dataset name, e.g. ``"aircraft"``.
    models : sequence of str, optional
        Models to load, in this order. Default: every model with a feature
        file for ``dataset``, sorted by name.
    mmap : bool
        Memory-map the features read-only (``mmap_mode="r"``) instead of
        reading them: for zoos larger than memory.

    Returns
    -------
    zoo : dict model -> ndarray (N x D, dtype as stored; not checked for
        finiteness here -- the metrics validate their inputs).
    labels : ndarray (N,)
        The labels all models share. N x T multi-label (VOC) labels are
        collapsed by argmax along T: each sample keeps the first of its
        largest entries, i.e. its first positive class.

    Raises
    ------
    FileNotFoundError
        Missing directory, missing file of a requested model (the path is
        named), or no model at all for ``dataset`` (the directory's .npy
        files are listed).
    ValueError
        Pickled/object arrays (refused), truncated or corrupt files, wrong
        shapes, or labels that differ between models (both models named).
    """
    directory = Path(directory)
    dataset = _check_name(dataset, "dataset")
    if not directory.is_dir():
        raise FileNotFoundError(f"zoo directory {directory} does not exist or is not a directory")
    if models is None:
        models = _discover(directory, dataset)
        if not models:
            raise FileNotFoundError(
                f"no '*{_FEATURE.format(dataset=dataset)}' file in {directory}; {_describe(directory)}"
            )
    else:
        if isinstance(models, str):
            models = [models]  # one name, not a sequence of characters
        models = [_check_name(m, "model name") for m in models]
        if not models:
            raise ValueError("models is empty; pass None to load every model found")
        if len(set(models)) != len(models):
            raise ValueError(f"models lists a name more than once: {models}")

    zoo = {}
    labels = first = None
    for model in models:
        feature_path = directory / f"{model}{_FEATURE.format(dataset=dataset)}"
        label_path = directory / f"{model}{_LABEL.format(dataset=dataset)}"
        for path in (feature_path, label_path):
            if not path.is_file():
                raise FileNotFoundError(f"missing file for model {model!r}: {path}")
        model_labels = _load_npy(label_path, mmap=False)
        if labels is None:
            labels, first = model_labels, model
        elif not np.array_equal(labels, model_labels):
            raise ValueError(
                f"labels of model {model!r} ({label_path}) differ from those of model "
                f"{first!r}; all models of a zoo must share the same samples"
            )
        features = _load_npy(feature_path, mmap)
        if features.ndim != 2:
            raise ValueError(f"{feature_path}: features must be 2-D (N x D), got shape {features.shape}")
        if features.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{feature_path} has {features.shape[0]} rows but the labels have {labels.shape[0]}"
            )
        zoo[model] = features
    return zoo, _collapse_labels(labels, label_path)


def prediction_path(directory, model: str, dataset: str) -> Path:
    """Where a model's own softmax (N x K float32) lies beside its features:
    ``{model}_{dataset}_prediction.npy`` (written by te-gpu extract; LEEP and NCE read it)."""
    return Path(directory) / f"{model}_{dataset}_prediction.npy"


def load_predictions(directory, dataset: str, *, models=None, mmap: bool = False) -> dict:
    """``{model: N x K array}``: the softmax of each model's own classifier on ``dataset``,
    for the models (default: every model with a feature file) that have a prediction file.

    The result is ``score_zoo``'s ``predictions=`` argument; a model without one is left
    out, and ``score_zoo`` skips it for LEEP and NCE with its reason. Shapes and values are
    checked by the metrics (N rows, probabilities).
    """
    directory = Path(directory)
    dataset = _check_name(dataset, "dataset")
    if not directory.is_dir():
        raise FileNotFoundError(f"zoo directory {directory} does not exist or is not a directory")
    names = _discover(directory, dataset) if models is None else \
        [_check_name(m, "model name") for m in ([models] if isinstance(models, str) else models)]
    found = {m: prediction_path(directory, m, dataset) for m in names}
    return {m: _load_npy(path, mmap) for m, path in found.items() if path.is_file()}


def _labels_for_saving(labels) -> np.ndarray:
    """Labels as int64 (N or N x T); floats only if integral."""
    arr = np.asarray(labels)
    if arr.ndim not in (1, 2) or arr.shape[0] == 0:
        raise ValueError(f"labels must be a non-empty 1-D or 2-D array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise TypeError(f"labels must be integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError("labels must be integral class ids")
    return arr.astype(np.int64)


def save_zoo(directory, dataset: str, zoo: dict, labels) -> None:
    """Write a zoo in the public layout (inverse of :func:`load_zoo`).

    Features are stored as float32 N x D, labels as int64 (the same file
    content for every model, as the layout requires). The directory is
    created if needed; each file is written atomically.
    """
    directory = Path(directory)
    dataset = _check_name(dataset, "dataset")
    if not isinstance(zoo, dict) or not zoo:
        raise ValueError("zoo must be a non-empty dict {model: N x D features}")
    label_arr = _labels_for_saving(labels)
    # validate everything before writing anything, so a bad model leaves no half zoo
    arrays = {}
    for model, features in zoo.items():
        _check_name(model, "model name")
        arr = as_features(features, name=f"features of {model!r}", dtype=np.float32)
        if arr.shape[0] != label_arr.shape[0]:
            raise ValueError(
                f"features of {model!r} have {arr.shape[0]} rows but labels have {label_arr.shape[0]}"
            )
        arrays[model] = arr
    directory.mkdir(parents=True, exist_ok=True)
    for model, arr in arrays.items():
        for suffix, data in ((_FEATURE, arr), (_LABEL, label_arr)):
            path = directory / f"{model}{suffix.format(dataset=dataset)}"
            atomic_write(path, lambda fh, data=data: np.save(fh, data, allow_pickle=False))


# --------------------------------------------------------------------------
# score files
# --------------------------------------------------------------------------

def _finite_number(value, what: str) -> float:
    """A real, finite number (bools are not scores)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a real number, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{what} is not finite ({out}); refusing to write it")
    return out


def _score_value(value, model):
    """A score: one number, or a (nested) list of numbers for per-item scores."""
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value)
        if arr.dtype == object or arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) \
                or np.iscomplexobj(arr):
            raise TypeError(f"score of {model!r} must be numbers, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"score of {model!r} holds non-finite values; refusing to write it")
        return arr.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    return _finite_number(value, f"score of {model!r}")


def read_scores(path):
    """Read a public score file ``{model: score, ..., "duration": seconds}``.

    Returns
    -------
    scores : dict model -> float, or -> list for metrics storing several
        values per model; in file order.
    duration : float or None
        The ``"duration"`` entry (seconds), None if the file has none.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object {{model: score}}, got {type(data).__name__}")
    duration = data.pop("duration", None)
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, numbers.Real):
            raise ValueError(f"{path}: duration must be a number, got {duration!r}")
        duration = float(duration)
    scores = {}
    for model, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (numbers.Real, list)):
            raise ValueError(f"{path}: score of {model!r} must be a number or a list, got {value!r}")
        scores[model] = float(value) if isinstance(value, numbers.Real) else value
    return scores, duration


def write_scores(path, scores: dict, duration: float | None = None) -> None:
    """Write ``{model: score, ..., "duration": seconds}`` atomically.

    Parameters
    ----------
    path : str or Path
    scores : dict model -> number (or list of numbers)
        A ``"duration"`` key is taken as the duration when ``duration`` is
        not given.
    duration : float, optional
        Seconds the scoring took; omitted from the file when None.

    Raises
    ------
    ValueError
        Any non-finite value: JSON has no NaN, and a NaN score would silently
        corrupt every ranking computed from the file.
    """
    if not isinstance(scores, dict):
        raise TypeError("scores must be a dict {model: score}")
    scores = dict(scores)
    if "duration" in scores:
        if duration is not None:
            raise ValueError("duration given both as an argument and as a key of scores")
        duration = scores.pop("duration")
    out = {}
    for model, value in scores.items():
        if not isinstance(model, str):
            raise TypeError(f"model names must be strings, got {model!r}")
        out[model] = _score_value(value, model)
    if duration is not None:
        if isinstance(duration, np.generic):
            duration = duration.item()
        out["duration"] = _finite_number(duration, "duration")
    # allow_nan=False: a second guard so no NaN token can ever reach the file
    text = json.dumps(out, indent=1, allow_nan=False) + "\n"
    atomic_write(Path(path), lambda fh: fh.write(text.encode("utf-8")))
