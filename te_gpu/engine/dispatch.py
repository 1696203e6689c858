"""Triton kernel or torch path, per operation (the kernels live in te_gpu.kernels).

Each function here has the engine's calling convention and returns what the
torch path returns (up to the stated rounding tolerance when a kernel runs):

==================  ===================================================  ======================
op                  function                                             torch path
==================  ===================================================  ======================
class_moments       class_moments(x, codes, C) -> counts, sums, sumsq    one-hot matmuls
logme_evidence      logme_evidence(sigma, valid, proj, t_sq, n, d, corr) evidence.fixed_point_evidence
attract_delta       attract_delta(z, labels, alpha, sigma)               sa.attract_delta
perturb             perturb(z, labels, alpha=, sigma=, force=, variant=)  sa.perturb
gbc_pairwise        gbc_pairwise(means, var, spherical) -> (B,) GBC      gaussians.gbc_from_gaussians
true_class_prob     true_class_prob(x, coef, intercept, codes)           softmax + gather
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
    "attract_delta": False,
    "perturb": False,
    "gbc_pairwise": False,
    "true_class_prob": False,
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


def _use_kernel(op: str, kernel, tensors, force_kernel) -> bool:
    from te_gpu.kernels import _compat

    if force_kernel is False:
        return False
    floats = all(t.dtype in _FLOATS for t in tensors if t.is_floating_point())
    if force_kernel is True:
        if not floats:
            raise TypeError(f"{op}: the kernel takes float32 or float64 tensors")
        _compat.require_launchable(kernel, *tensors)
        return True
    if force_kernel is not None:
        raise TypeError(f"force_kernel must be None, True or False, got {force_kernel!r}")
    return (op in enabled_ops() and floats and _compat.HAVE_TRITON
            and all(t.is_cuda for t in tensors))


def _module(name: str):
    """The kernel module (imported on first use; it imports without Triton too)."""
    import importlib

    return importlib.import_module(f"te_gpu.kernels.{name}")


def class_moments(x: torch.Tensor, codes: torch.Tensor, n_classes: int, *, force_kernel=None):
    """(counts (C,), sums (B, C, D), centred sums of squares (B, C, D)) of a batch."""
    k = _module("class_stats")
    if _use_kernel("class_moments", k._class_moments_kernel, (x, codes), force_kernel):
        return k.class_moments_triton(x, codes, n_classes)
    return k.class_moments_torch(x, codes, n_classes)


def logme_evidence(sigma: torch.Tensor, valid: torch.Tensor, proj: torch.Tensor,
                   t_sq: torch.Tensor, n: int, d: int, corrected: bool, *, force_kernel=None):
    """Maximised evidence / N (B, T), as te_gpu.engine.evidence.fixed_point_evidence."""
    k = _module("logme_fixed_point")
    if _use_kernel("logme_evidence", k._logme_kernel, (sigma, valid, proj, t_sq),
                   force_kernel):
        return k.logme_evidence_triton(sigma, valid, proj, t_sq, n, d, corrected)
    return fixed_point_evidence(sigma, valid, proj, t_sq, n, d, corrected)


def attract_delta(z: torch.Tensor, labels: Labels, alpha: float, sigma: float, *,
                  force_kernel=None) -> torch.Tensor:
    """Per-class Attract displacement (B, C, n), as te_gpu.engine.sa.attract_delta."""
    k = _module("spread_attract")
    if _use_kernel("attract_delta", k._attract_kernel, (z, labels.codes), force_kernel):
        return k.attract_delta_triton(z, labels.codes, labels.c, alpha, sigma)
    return sa.attract_delta(z, labels, alpha, sigma)


def perturb(z: torch.Tensor, labels: Labels, *, alpha: float, sigma: float, force: float,
            variant: str, force_kernel=None):
    """(perturbed scores, displacement norm (B,)), as te_gpu.engine.sa.perturb."""
    k = _module("spread_attract")
    if _use_kernel("perturb", k._sa_update_kernel, (z, labels.codes), force_kernel):
        return k.perturb_triton(z, labels.codes, labels.c, alpha=alpha, sigma=sigma, force=force,
                                variant=variant)
    return sa.perturb(z, labels, alpha=alpha, sigma=sigma, force=force, variant=variant)


def gbc_pairwise(means: torch.Tensor, var: torch.Tensor, spherical: bool, *,
                 force_kernel=None) -> torch.Tensor:
    """GBC (B,) = -sum_{a != b} exp(-BD(a, b)) from class means and floored variances."""
    k = _module("gbc_pairwise")
    if _use_kernel("gbc_pairwise", k._gbc_kernel, (means, var), force_kernel):
        return k.gbc_pairwise_triton(means, var, spherical)
    return gbc_from_gaussians(means, var, spherical)


def true_class_prob(x: torch.Tensor, coef: torch.Tensor, intercept: torch.Tensor,
                    codes: torch.Tensor, *, double_softmax: bool = False,
                    force_kernel=None) -> torch.Tensor:
    """softmax(x W + c)[i, y_i] (softmax applied twice with ``double_softmax``): (B, N)."""
    k = _module("true_class_prob")
    if _use_kernel("true_class_prob", k._true_class_kernel, (x, coef, intercept, codes),
                   force_kernel):
        return k.true_class_prob_triton(x, coef, intercept, codes, double_softmax=double_softmax)
    return k.true_class_prob_torch(x, coef, intercept, codes, double_softmax=double_softmax)
