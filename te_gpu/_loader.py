"""Reading batches of models into memory one batch ahead of the compute.

A zoo larger than the device's memory (or than RAM: ``.npy`` files are
memory-mapped) is scored batch by batch. While the device works on batch k,
a worker thread reads batch k+1 from its arrays or files into host memory -
page-locked on CUDA, so the copy to the device is asynchronous - in the
features' own precision (float32 features travel as float32, half the bytes).
Validation (shape, finiteness, magnitude) happens on the device, per model.

The reader also fingerprints the models it is asked to (:func:`content_fingerprint`):
it has just read their bytes, so hashing them costs one more pass over memory
that is already in the page cache, on worker threads (hashlib releases the GIL;
up to 4 models are hashed at once, so a fast GPU does not wait on one hashing
thread), while the device computes.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from ._checks import check_values
from .engine._tensor import features_tensor, host_tensor


def content_fingerprint(x) -> dict:
    """{shape, dtype, sha256} of an array, tensor (any device) or memory-mapped ``.npy``.

    The digest covers dtype, shape and every byte of the values in C order, so it
    changes when any feature value changes. The same values as a numpy array or a
    torch tensor of the same dtype get the same fingerprint. SHA-256 because
    OpenSSL runs it on the CPU's SHA instructions (x86 SHA-NI, ARMv8): 1.2-1.3 GB/s
    on the Xeon of bench/RESULTS.md ("Checkpoint"), against 0.65-0.75 GB/s for blake2b.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach().to("cpu").contiguous()
        dtype, shape = str(t.dtype).replace("torch.", ""), tuple(t.shape)
        data = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
    else:
        arr = np.ascontiguousarray(x)  # a C-ordered array or memmap is viewed, not copied
        if arr.dtype.hasobject:
            raise TypeError("object arrays have no fingerprint: features must be numeric")
        dtype, shape = arr.dtype.name, arr.shape
        data = arr.reshape(-1).view(np.uint8) if arr.size else b""
    h = hashlib.sha256(f"{dtype}{list(shape)}".encode())
    h.update(data)
    return dict(shape=list(shape), dtype=dtype, sha256=h.hexdigest())


def shape_and_dtype(x) -> tuple:
    """(shape list, dtype name) as :func:`content_fingerprint` writes them, without reading values."""
    if isinstance(x, torch.Tensor):
        return list(x.shape), str(x.dtype).replace("torch.", "")
    return list(x.shape), np.dtype(x.dtype).name


class BatchReader:
    """Stages batches of models on the host (pinned for CUDA) in a worker thread."""

    def __init__(self, entries: dict, n: int, device: torch.device, dtype: torch.dtype,
                 fingerprint=frozenset()):
        self.entries = entries
        self.fingerprint = fingerprint  # models whose content fingerprint is wanted
        self.n = n
        self.device = device
        self.dtype = dtype
        self.pin = device.type == "cuda" and torch.cuda.is_available()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="te_gpu-reader")
        self.hashers = ThreadPoolExecutor(max_workers=max(1, min(4, (os.cpu_count() or 2) // 2)),
                                          thread_name_prefix="te_gpu-hash") if fingerprint else None

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.hashers is not None:
            self.hashers.shutdown(wait=True, cancel_futures=True)

    def _hash(self, name) -> Future:
        return self.hashers.submit(content_fingerprint, self.entries[name][0])

    def _stage(self, names, d, source_f32: bool):
        """(host batch or None, {model: fingerprint}) for the models asked."""
        # float32 sources stay float32 on the host and across the bus
        host_dtype = torch.float32 if (source_f32 or self.dtype == torch.float32) else torch.float64
        hashing = {}
        if any(isinstance(self.entries[m][0], torch.Tensor) and self.entries[m][0].device == self.device
               for m in names):
            # already on the device: nothing to stage, but hash them
            hashing = {m: self._hash(m) for m in names if m in self.fingerprint}
            return None, {m: f.result() for m, f in hashing.items()}
        buf = torch.empty((len(names), self.n, d), dtype=host_dtype, pin_memory=self.pin)
        for j, name in enumerate(names):
            buf[j].copy_(host_tensor(self.entries[name][0], f"features of model {name!r}"))
            if name in self.fingerprint:  # its pages were just read: hash them while cached
                hashing[name] = self._hash(name)
        return buf, {m: f.result() for m, f in hashing.items()}

    def prefetch(self, names, d, source_f32: bool) -> Future:
        return self.pool.submit(self._stage, list(names), d, source_f32)

    def to_device(self, future: Future, names, d) -> tuple:
        """(the staged batch on the device in the working dtype, validated per model,
        {model: content fingerprint} for the models asked at construction)."""
        host, prints = future.result()
        if host is None:
            x = torch.empty((len(names), self.n, d), dtype=self.dtype, device=self.device)
            for j, name in enumerate(names):
                x[j] = features_tensor(self.entries[name][0], self.device, self.dtype,
                                       name=f"features of model {name!r}")
            return x, prints
        x = host.to(self.device, non_blocking=self.pin).to(self.dtype)
        amax = x.abs().flatten(1).amax(1)   # one read of the batch, one sync
        for name, top in zip(names, amax.tolist()):
            check_values(top, f"features of model {name!r}",
                         "float64" if self.dtype == torch.float64 else "float32")
        return x, prints
