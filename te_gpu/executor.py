"""The batch executor that ``score_zoo`` and the bootstrap share.

Work items (models, or a model's redraws) of one feature width are cut into batches
sized from the device's memory (:func:`memory_batch_size`) and run one after the
other by :func:`run_batches`; a batch that runs out of memory is cut in half, with
the rest of its width group, and retried, down to one item. Sizes depend on shapes
and on the device's *total* memory only, so the same zoo on the same device is
always cut into the same batches (batch boundaries can change the last bits of a
score, and reruns must be bit-identical).
"""
from __future__ import annotations

import os
from collections import deque
from typing import Callable

import torch

from . import catalogue

# CPU batch budget in units of model_work: 8 models of 2,000 x 768 x 100 classes,
# 3 of 10,000 x 768. On the 2-core Xeon of bench/RESULTS.md ("Checkpoint"), 16
# models of 2,000 x 768 took 12.8 s one per batch, 7.5-8.0 s eight per batch and
# 6.6-7.0 s sixteen per batch with 2 threads (7.1-8.4 s for all three with 1
# thread): larger batches gain little, and a batch is what an interruption loses
CPU_BATCH_WORK = 6.4e10


def memory_batch_size(device: torch.device, n: int, d: int, c: int, dtype: torch.dtype,
                      metrics=()) -> int:
    """Models per batch: a few copies of the features, Grams and N x C per model, plus
    the largest ``memory`` that one of ``metrics`` declares in the catalogue (PARC's pairs).

    Sized from the device's *total* memory, not its free memory (see the module's
    docstring); if other work leaves too little free, :func:`run_batches` halves the
    batch. On the CPU the batch is also capped at ``CPU_BATCH_WORK``
    (:func:`cpu_batch_cap`), which depends on shapes only.
    """
    item = torch.finfo(dtype).bits // 8
    per_model = item * (6 * n * d + 8 * d * d + 6 * n * c + 4 * n * 64)
    per_model += max((catalogue.get(m).memory_bytes(n, d, c, item) for m in metrics), default=0)
    if device.type == "cuda":
        _, total = torch.cuda.mem_get_info(device)
        budget = 0.5 * total
    else:
        try:
            budget = 0.25 * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            budget = 2 * 2 ** 30
    size = int(min(256, max(1, budget // per_model)))
    return size if device.type == "cuda" else min(size, cpu_batch_cap(n, d, c))


def cpu_batch_cap(n: int, d: int, c: int) -> int:
    """The most models a CPU batch holds: ``CPU_BATCH_WORK`` of work, at least one model."""
    return int(max(1, CPU_BATCH_WORK // model_work(n, d, c)))


def model_work(n: int, d: int, c: int) -> int:
    """Rough flops of scoring one model: Grams (2 N D^2), eigensolves (~10 D^3), N x D x C heads."""
    return 2 * n * d * d + 10 * d ** 3 + 4 * n * d * c


def cut(items: list, size: int, ramp: bool = False) -> list:
    """``items`` in batches of ``size``; with ``ramp`` the first ones hold 1, 2, 4, ...
    items, so the first checkpoint (and move of the progress bar) comes after one."""
    chunks, i, step = [], 0, 1 if ramp else size
    while i < len(items):
        chunks.append(items[i:i + step])
        i, step = i + step, min(size, 2 * step)
    return chunks


def width_groups(entries: dict) -> dict:
    """{(width, float32 input): [names]} of ``entries`` = {name: (features, shape,
    is_float32)} (``te_gpu.zoo.open_features``), in order."""
    groups: dict = {}
    for name, (_, shape, f32) in entries.items():
        groups.setdefault((shape[1], f32), []).append(name)
    return groups


_OUT_OF_MEMORY = object()


def run_batches(queue: deque, *, attempt: Callable, finish: Callable, replan: Callable,
                too_big: Callable, device: torch.device, prefetch: Callable | None = None) -> None:
    """Run every batch of ``queue`` = deque of (group key, items, batch size), in order.

    ``attempt(key, items, staged)`` computes a batch (``staged``: what ``prefetch(key,
    items)`` returned for it, started while the batch before ran; None without
    ``prefetch``); ``finish(key, items, outputs)`` keeps its results. On running out of
    memory the batch and the rest of its group are re-cut by ``replan(key, items,
    size)`` at half the batch's size; a batch of one item raises
    ``MemoryError(too_big(key))``.
    """
    def stage(head):
        return prefetch(head[0], head[1]) if prefetch is not None and head is not None else None

    ahead = stage(queue[0] if queue else None)
    while queue:
        key, items, size = queue.popleft()
        staged, ahead = ahead, stage(queue[0] if queue else None)
        try:
            outputs = attempt(key, items, staged)
        except (torch.OutOfMemoryError, MemoryError):
            outputs = _OUT_OF_MEMORY      # handled below, once the traceback (which holds
        if outputs is _OUT_OF_MEMORY:     # the failed batch's tensors) is gone
            staged = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if len(items) == 1:
                raise MemoryError(too_big(key)) from None
            half = max(1, len(items) // 2)
            rest = [it for k, chunk, _ in queue if k == key for it in chunk]
            others = [entry for entry in queue if entry[0] != key]
            queue = deque([(key, chunk, half) for chunk in replan(key, items + rest, half)]
                          + others)
            if ahead is not None:
                ahead.cancel()
            ahead = stage(queue[0] if queue else None)
            continue
        finish(key, items, outputs)


class NoBar:
    """A progress bar that shows nothing (progress off, or tqdm missing)."""

    def update(self, k):
        pass

    def close(self):
        pass


def progress_bar(total: int, enabled: bool, *, unit: str, desc: str):
    """A tqdm bar over ``total`` units (with its rate and time left), or a :class:`NoBar`."""
    if not enabled:
        return NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a dependency, but a bar is not worth failing over
        return NoBar()
    return tqdm(total=total, unit=unit, desc=desc, leave=False)
