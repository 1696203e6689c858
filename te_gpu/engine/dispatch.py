"""Triton kernel or torch path, per operation (the kernels live in te_gpu.kernels).

Each function here has the engine's calling convention and returns what the
torch path returns (up to the stated rounding tolerance when a kernel runs):

==================  ===================================================  ======================
op                  function                                             torch path
==================  ===================================================  ======================
class_moments       class_moments(x, codes, C) -> counts, sums, sumsq    one-hot matmuls
logme_evidence      logme_evidence(sigma, valid, proj, t_sq, n, d, corr) evidence.fixed_point_evidence
perturb             perturb(z, labels, alpha=, sigma=, force=, variant=)  sa.perturb
gbc_pairwise        gbc_pairwise(means, var, spherical) -> (B,) GBC      gaussians.gbc_from_gaussians
==================  ===================================================  ======================

A kernel runs when all of these hold: Triton imports; the tensors are float32
or float64 on CUDA; and the op is enabled, by ``KERNEL_ENABLED`` or by the
``TE_GPU_KERNELS`` environment variable (``all``, ``none`` or a comma list of
op names, which then is the exact set enabled; read at each call, for
benchmarking). Otherwise the torch path runs: on CPU, without Triton, or for
a disabled op the result is the torch path's, bit for bit.

``force_kernel`` (keyword of every function): None follows the rules above;
False always takes the torch path; True always takes the kernel, whatever the
policy, and raises if it cannot launch (no Triton, or CPU tensors while the
kernels were not decorated under TRITON_INTERPRET=1). Tests use True with the
interpreter on CPU; benchmarks use it or ``TE_GPU_KERNELS``.

A kernel module is imported only when its kernel is about to run, so the torch
paths need no ``te_gpu.kernels`` at all: a plain checkout on ``PYTHONPATH``
(where the top-level ``kernels/`` folder is not installed as ``te_gpu.kernels``)
scores everything. An op enabled by the policy whose module cannot be imported
takes the torch path; ``force_kernel=True`` raises instead.

The only module-level state is the read-only policy below. The torch paths
live in engine modules that do not import this one, and the kernels import
nothing of the engine: no import cycles.
"""
from __future__ import annotations

import os
from types import MappingProxyType

import torch

from . import sa
from .evidence import fixed_point_evidence
from .gaussians import gbc_from_gaussians
from .stats import Labels

# A kernel is switched on here only after a measurement on an H100/H200 shows
# it faster than its torch path at the zoo shapes (bench/RESULTS.md). None has
# been measured yet, so every op takes the torch path by default.
KERNEL_ENABLED = MappingProxyType({
    "class_moments": False,
    "logme_evidence": False,
    "perturb": False,
    "gbc_pairwise": False,
})
ENV_VAR = "TE_GPU_KERNELS"
_FLOATS = (torch.float32, torch.float64)


def enabled_ops() -> frozenset:
    """The ops enabled now: ``TE_GPU_KERNELS`` if set, else ``KERNEL_ENABLED``."""
    spec = os.environ.get(ENV_VAR, "").strip().lower()
    if not spec:
        return frozenset(op for op, on in KERNEL_ENABLED.items() if on)
    if spec == "all":
        return frozenset(KERNEL_ENABLED)
    if spec == "none":
        return frozenset()
    names = frozenset(s.strip() for s in spec.split(",") if s.strip())
    unknown = names - set(KERNEL_ENABLED)
    if unknown:
        raise ValueError(f"{ENV_VAR}: unknown op(s) {sorted(unknown)}; expected 'all', 'none' "
                         f"or names from {sorted(KERNEL_ENABLED)}")
    return names


def _kernel_module(op: str, module: str, tensors, force_kernel):
    """The kernel module of ``op`` when its kernel is to run, else None (the torch path).
    Nothing of ``te_gpu.kernels`` is imported unless the kernel may run."""
    if force_kernel is False:
        return None
    floats = all(t.dtype in _FLOATS for t in tensors if t.is_floating_point())
    if force_kernel is True:
        if not floats:
            raise TypeError(f"{op}: the kernel takes float32 or float64 tensors")
        return _module(module)
    if force_kernel is not None:
        raise TypeError(f"force_kernel must be None, True or False, got {force_kernel!r}")
    if not (op in enabled_ops() and floats and all(t.is_cuda for t in tensors)):
        return None
    try:
        k = _module(module)
    except ImportError:
        return None
    from te_gpu.kernels import _compat

    return k if _compat.HAVE_TRITON else None


def _launchable(k, kernel_name: str, tensors, force_kernel) -> bool:
    if k is None:
        return False
    if force_kernel is True:
        from te_gpu.kernels import _compat

        _compat.require_launchable(getattr(k, kernel_name), *tensors)
    return True


def _module(name: str):
    """The kernel module (imported on first use; it imports without Triton too)."""
    import importlib

    return importlib.import_module(f"te_gpu.kernels.{name}")


def class_moments(x: torch.Tensor, codes: torch.Tensor, n_classes: int, *, force_kernel=None):
    """(counts (C,), sums (B, C, D), centred sums of squares (B, C, D)) of a batch."""
    k = _kernel_module("class_moments", "class_stats", (x, codes), force_kernel)
    if _launchable(k, "_class_moments_kernel", (x, codes), force_kernel):
        return k.class_moments_triton(x, codes, n_classes)
    return class_moments_torch(x, codes, n_classes)


def logme_evidence(sigma: torch.Tensor, valid: torch.Tensor, proj: torch.Tensor,
                   t_sq: torch.Tensor, n: int, d: int, corrected: bool, *, force_kernel=None):
    """Maximised evidence / N (B, T), as te_gpu.engine.evidence.fixed_point_evidence."""
    tensors = (sigma, valid, proj, t_sq)
    k = _kernel_module("logme_evidence", "logme_fixed_point", tensors, force_kernel)
    if _launchable(k, "_logme_kernel", tensors, force_kernel):
        return k.logme_evidence_triton(sigma, valid, proj, t_sq, n, d, corrected)
    return fixed_point_evidence(sigma, valid, proj, t_sq, n, d, corrected)


def perturb(z: torch.Tensor, labels: Labels, *, alpha: float, sigma: float, force: float,
            variant: str, force_kernel=None):
    """(perturbed scores, displacement norm (B,)), as te_gpu.engine.sa.perturb."""
    k = _kernel_module("perturb", "spread_attract", (z, labels.codes), force_kernel)
    if _launchable(k, "_sa_update_kernel", (z, labels.codes), force_kernel):
        return k.perturb_triton(z, labels.codes, labels.c, alpha=alpha, sigma=sigma, force=force,
                                variant=variant)
    return sa.perturb(z, labels, alpha=alpha, sigma=sigma, force=force, variant=variant)


def gbc_pairwise(means: torch.Tensor, var: torch.Tensor, spherical: bool, *,
                 force_kernel=None) -> torch.Tensor:
    """GBC (B,) = -sum_{a != b} exp(-BD(a, b)) from class means and floored variances."""
    k = _kernel_module("gbc_pairwise", "gbc_pairwise", (means, var), force_kernel)
    if _launchable(k, "_gbc_kernel", (means, var), force_kernel):
        return k.gbc_pairwise_triton(means, var, spherical)
    return gbc_from_gaussians(means, var, spherical)


def class_moments_torch(x: torch.Tensor, codes: torch.Tensor, n_classes: int):
    """The torch path of :func:`class_moments`: one-hot matmuls, two passes over x.
    Empty classes get zero sums and zero sumsq (the kernel's convention)."""
    onehot = torch.nn.functional.one_hot(codes, n_classes).to(x.dtype)
    counts = onehot.sum(0)
    sums = onehot.T @ x                                   # (C, N) @ (B, N, D) -> (B, C, D)
    means = sums / torch.clamp(counts, min=1)[None, :, None]
    dev = x - means[:, codes]
    sumsq = onehot.T @ (dev * dev)
    return counts, sums, sumsq
