"""What every kernel module shares: Triton if it imports, and launch checks.

The torch references beside each kernel must stay importable without Triton
(the engine falls back to them), so Triton is imported here under a guard.
Without it, ``tl`` is a stand-in that only answers the ``tl.constexpr``
annotations evaluated when the kernels are defined, and ``jit`` turns a kernel
into an object that refuses to launch.
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
    HAVE_TRITON = True
except ImportError:  # pragma: no cover - exercised only where Triton is absent
    triton = None
    HAVE_TRITON = False

    class _NoTriton:
        constexpr = object

    tl = _NoTriton()

FLOAT_DTYPES = (torch.float32, torch.float64)


class _Unavailable:
    def __init__(self, fn):
        self.fn = fn
        self.__name__ = fn.__name__

    def __getitem__(self, grid):
        raise RuntimeError(f"{self.__name__}: Triton is not installed")


def jit(fn):
    """``triton.jit`` where Triton imports, else a kernel that refuses to launch."""
    return triton.jit(fn) if HAVE_TRITON else _Unavailable(fn)


def interpreted(kernel) -> bool:
    """Was ``kernel`` decorated under TRITON_INTERPRET=1 (so it runs on CPU tensors)?"""
    return type(kernel).__name__ == "InterpretedFunction"


def launchable(kernel, *tensors: torch.Tensor) -> bool:
    """Can ``kernel`` run on these tensors: compiled and all on CUDA, or interpreted?"""
    if not HAVE_TRITON or isinstance(kernel, _Unavailable):
        return False
    if interpreted(kernel):
        return True
    return all(t.is_cuda for t in tensors)


def require_launchable(kernel, *tensors: torch.Tensor) -> None:
    if not launchable(kernel, *tensors):
        why = ("Triton is not installed" if not HAVE_TRITON else
               "tensors are not on CUDA and the kernel was not decorated under TRITON_INTERPRET=1")
        raise RuntimeError(f"{kernel.__name__} cannot launch: {why}")


def require_float(*tensors: torch.Tensor) -> torch.dtype:
    """The common float32/float64 dtype of ``tensors`` (the kernels support these two)."""
    dtype = tensors[0].dtype
    for t in tensors:
        if t.dtype != dtype or dtype not in FLOAT_DTYPES:
            raise TypeError(f"kernels take float32 or float64 tensors of one dtype, "
                            f"got {[str(u.dtype) for u in tensors]}")
    return dtype


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
