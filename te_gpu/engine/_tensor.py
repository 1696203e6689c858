"""Turning user input into validated torch tensors on the right device.

Labels are validated and remapped on the host (they are small); features are
checked for shape and finiteness with one reduction on their own device, then
cast to the working dtype there (a copy: inputs are never modified).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from .._checks import as_numpy, as_labels, check_values

PRECISIONS = {"exact": torch.float64, "fast": torch.float32}


def working_dtype(precision: str) -> torch.dtype:
    """``"exact"`` -> float64 (equals the reference), ``"fast"`` -> float32 (TF32 matmuls)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def resolve_device(device, *inputs) -> torch.device:
    """``device=None`` means the device of the first tensor input (else the CPU)."""
    if device is None:
        for x in inputs:
            if isinstance(x, torch.Tensor):
                return x.device
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: "
                             f"{torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type != "cpu":
        raise ValueError(f"device type {dev.type!r} is not supported (use 'cpu' or 'cuda')")
    return dev


def host_tensor(x, name: str = "features") -> torch.Tensor:
    """A tensor view of ``x`` (no copy where possible), refusing non-numeric data.

    numpy input goes through the same dtype checks as the reference's
    (``_checks.as_numpy``); read-only and memory-mapped arrays are viewed, not
    copied: every caller copies out of the view, never into it.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_complex():
            raise TypeError(f"{name} is complex; transferability scores need real features")
        return t
    arr = as_numpy(x, name)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "not writable": we only read it
        return torch.from_numpy(arr)


def features_tensor(x, device: torch.device, dtype: torch.dtype, name: str = "features",
                    check_finite: bool = True) -> torch.Tensor:
    """Validate one N x D feature matrix and return a fresh ``dtype`` tensor on ``device``."""
    t = host_tensor(x, name)
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (N samples x D dims), got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)}")
    out = t.to(device=device, dtype=dtype, copy=True)
    if check_finite:
        check_values(float(out.abs().max()), name,
                     "float64" if dtype == torch.float64 else "float32",
                     count_bad=lambda: int((~torch.isfinite(out)).sum()))
    return out


def labels_tensor(y, n: int, device: torch.device):
    """Labels -> (codes LongTensor on ``device``, classes ndarray); any integers accepted."""
    codes, classes = as_labels(y, n)
    return torch.as_tensor(codes, device=device), classes


def is_float32_input(x) -> bool:
    """SA's PCA runs in float32 for float32 input (as the released code)."""
    return str(getattr(x, "dtype", "")).replace("torch.", "") == "float32"
