"""Reading batches of models into memory one batch ahead of the compute.

A zoo larger than the device's memory (or than RAM: ``.npy`` files are
memory-mapped) is scored batch by batch. While the device works on batch k,
a worker thread reads batch k+1 from its arrays or files into host memory -
page-locked on CUDA, so the copy to the device is asynchronous - in the
features' own precision (float32 features travel as float32, half the bytes).
Validation (shape, finiteness, magnitude) happens on the device, per model.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import torch

from ._checks import check_values
from .engine._tensor import features_tensor, host_tensor


class BatchReader:
    """Stages batches of models on the host (pinned for CUDA) in a worker thread."""

    def __init__(self, entries: dict, n: int, device: torch.device, dtype: torch.dtype):
        self.entries = entries
        self.n = n
        self.device = device
        self.dtype = dtype
        self.pin = device.type == "cuda" and torch.cuda.is_available()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="te_gpu-reader")

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _stage(self, names, d, source_f32: bool):
        # float32 sources stay float32 on the host and across the bus
        host_dtype = torch.float32 if (source_f32 or self.dtype == torch.float32) else torch.float64
        if any(isinstance(self.entries[m][0], torch.Tensor) and self.entries[m][0].device == self.device
               for m in names):
            return None  # already on the device: nothing to stage
        buf = torch.empty((len(names), self.n, d), dtype=host_dtype, pin_memory=self.pin)
        for j, name in enumerate(names):
            buf[j].copy_(host_tensor(self.entries[name][0], f"features of model {name!r}"))
        return buf

    def prefetch(self, names, d, source_f32: bool) -> Future:
        return self.pool.submit(self._stage, list(names), d, source_f32)

    def to_device(self, future: Future, names, d) -> torch.Tensor:
        """The staged batch on the device in the working dtype, validated per model."""
        host = future.result()
        if host is None:
            x = torch.empty((len(names), self.n, d), dtype=self.dtype, device=self.device)
            for j, name in enumerate(names):
                x[j] = features_tensor(self.entries[name][0], self.device, self.dtype,
                                       name=f"features of model {name!r}")
            return x
        x = host.to(self.device, non_blocking=self.pin).to(self.dtype)
        amax = x.abs().flatten(1).amax(1)   # one read of the batch, one sync
        for name, top in zip(names, amax.tolist()):
            check_values(top, f"features of model {name!r}",
                         "float64" if self.dtype == torch.float64 else "float32")
        return x
