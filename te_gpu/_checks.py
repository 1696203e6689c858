"""Input validation shared by the reference and the engine.

Every public function passes its inputs through here first, so bad input gets
one clear ``ValueError``/``TypeError`` naming the problem instead of a NaN or a
crash from deep inside numpy.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["as_features", "as_labels", "as_targets", "check_min_class_size", "check_magnitude",
           "check_values", "MAX_ABS"]

# Beyond these magnitudes products of Gram matrices (entries ~ N x^2, and SFDA's
# power iteration multiplies by them twice) overflow the dtype.
MAX_ABS = {"float64": 1e50, "float32": 1e12}


def check_magnitude(amax: float, name: str, dtype: str = "float64") -> None:
    """Refuse features whose Gram matrices would overflow in ``dtype``."""
    limit = MAX_ABS[dtype]
    if amax > limit:
        hint = "" if dtype == "float64" else ' or use precision="exact"'
        raise ValueError(f"{name} has values up to {amax:.3g}; beyond {limit:.0e} the {dtype} "
                         f"Gram matrices overflow: rescale the features{hint}")


def as_numpy(x, name):
    """Anything array-like (numpy, torch tensor on any device, lists) -> ndarray."""
    if x is None:
        raise TypeError(f"{name} is None")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor: no torch import needed
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16",):
            x = x.float()
        x = x.numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} cannot be read as an array: {exc}") from None
    if arr.dtype == object:
        raise TypeError(f"{name} has dtype object; pass a numeric array")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} is complex; transferability scores need real features")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} has non-numeric dtype {arr.dtype}")
    return arr


def check_int(value, name: str, minimum: int) -> int:
    """An integer (not a bool) >= ``minimum``, as int; else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_values(amax: float, name: str, dtype: str = "float64", count_bad=None) -> None:
    """Finiteness and magnitude from one reduction: max |x| is NaN or inf iff some
    value is (max propagates NaN), so the features are read once, not twice.
    ``count_bad`` (called only on failure) counts the non-finite values for the message."""
    if not math.isfinite(amax):
        count = f"{count_bad()} " if count_bad is not None else ""
        raise ValueError(f"{name} holds {count}non-finite values (NaN or inf)")
    check_magnitude(amax, name, dtype)


def as_features(x, name: str = "features", dtype=np.float64) -> np.ndarray:
    """Validate an N x D feature matrix and return a fresh float array.

    The result never aliases the input, so no caller can see its data change.
    """
    arr = as_numpy(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N samples x D dims), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    out = np.array(arr, dtype=dtype, copy=True)
    check_values(float(np.abs(out).max()), name,
                 count_bad=lambda: int(np.size(out) - np.count_nonzero(np.isfinite(out))))
    return out


def as_labels(y, n: int | None = None, name: str = "labels"):
    """Validate class labels and map them to 0..C-1.

    Any integer labels are accepted (e.g. {3, 7, 100} or negative ones); floats
    are accepted only when every value is integral. Returns ``(codes, classes)``
    where ``classes[codes] == y``.
    """
    arr = as_numpy(y, name)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class per sample), got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but features have {n} rows")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} holds non-finite values")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must be integer class ids; got non-integral values")
        arr = arr.astype(np.int64)
    classes, codes = np.unique(arr, return_inverse=True)
    if classes.size < 2:
        raise ValueError(f"{name} hold {classes.size} class; at least 2 are needed")
    return codes.reshape(-1).astype(np.int64), classes


def as_targets(y, n: int, name: str = "targets") -> np.ndarray:
    """Validate regression targets: N or N x T real values -> float64 N x T."""
    arr = as_numpy(y, name)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows but features have {n}")
    out = np.array(arr, dtype=np.float64, copy=True)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} holds non-finite values")
    return out


def check_min_class_size(codes: np.ndarray, minimum: int, what: str) -> np.ndarray:
    """Raise unless every class has at least ``minimum`` samples; return counts."""
    counts = np.bincount(codes)
    small = np.flatnonzero(counts < minimum)
    if small.size:
        raise ValueError(
            f"{what} needs at least {minimum} samples per class; "
            f"{small.size} class(es) have fewer (smallest has {int(counts.min())})"
        )
    return counts


# float32 softmax rows sum to 1 within a few 1e-7; logits or unnormalised scores do not
ROW_SUM_TOL = 1e-3


def as_probabilities(p, n: int | None = None, name: str = "predictions") -> np.ndarray:
    """Validate an N x K matrix of probabilities (non-negative rows summing to 1)."""
    arr = as_features(p, name)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows but labels have {n} entries")
    if arr.min() < 0:
        raise ValueError(f"{name} holds negative values: pass the source model's softmax "
                         "probabilities, not its logits")
    worst = float(np.abs(arr.sum(axis=1) - 1.0).max())
    if worst > ROW_SUM_TOL:
        raise ValueError(f"{name} rows must sum to 1 (softmax probabilities); the worst row "
                         f"is off by {worst:.3g}")
    return arr


def check_ped_options(time_step, exit_ratio, nsigma, constant, eps, max_steps) -> None:
    """PED's step options (te_gpu.reference.ped, te_gpu.engine.ped); ValueError naming the bad one."""
    for name, v in (("time_step", time_step), ("exit_ratio", exit_ratio), ("nsigma", nsigma),
                    ("constant", constant), ("eps", eps)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"PED option {name} must be a finite number, got {v!r}")
    if eps <= 0:
        raise ValueError(f"PED option eps must be positive, got {eps!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"PED option max_steps must be an integer >= 1, got {max_steps!r}")
