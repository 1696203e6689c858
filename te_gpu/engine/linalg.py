"""The engine's large dense linear algebra, one entry point per operation and device.

Grams and symmetric eigendecompositions are most of the engine's work at
D >= 512. On CUDA they are batched torch calls (cuBLAS, cuSOLVER). On CPU they
go model by model to numpy/scipy's LAPACK, for measured reasons
(bench/RESULTS.md, "CPU linear algebra through LAPACK"): numpy computes
``A^T A`` with the symmetric rank-k update (half the flops of torch's general
``bmm``); scipy's ``syevr`` computes only the top eigenpairs NCTI's PCA and the
SA gate read, where ``torch.linalg.eigh`` always computes all D of them; and
OpenBLAS's GEMM, ``syevd`` and ``posv`` ran 1.5-2x faster than torch's MKL
calls on the AMD CPU measured. All are deterministic and per model, so a
model's result does not depend on the batch it is in. ``syevr`` is called
through scipy's Cython LAPACK API, which lets other threads run meanwhile
(scipy's own wrapper holds the GIL): the bootstrap's CPU workers solve at once.

Below ``HOST_MIN_DIM`` the torch path is kept on CPU too: OpenBLAS's worker
threads spin for a while after each call (about 0.1 s by default), taking
cores from the torch operations that follow, and for small matrices that
costs more than syrk/syevr save (zoo a at scale 0.1, D <= 205: 2.0 s -> 3.4 s
with every call on the host path). At D = 768 the host path wins with or
without the spinning (``OPENBLAS_THREAD_TIMEOUT=4`` stops it; it changed
nothing measurable there).
"""
from __future__ import annotations

import ctypes
import functools

import numpy as np
import scipy.linalg
import scipy.linalg.lapack
import torch


HOST_MIN_DIM = 256


def _on_host(t: torch.Tensor, k: int) -> bool:
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and k >= HOST_MIN_DIM


def _host_views(t: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor, copied only if its matrices are not BLAS-ready.

    Row- or column-major matrices (a transposed view, a broadcast batch) go to
    BLAS as they are; anything else would send numpy to its slow generic loop.
    """
    t = t.detach()
    m = t[(0,) * (t.dim() - 2)] if t.dim() > 2 and t.numel() > 0 else t
    if not (m.is_contiguous() or m.mT.is_contiguous()):
        t = t.contiguous()
    return t.numpy()


def gram(x: torch.Tensor, *, samples: bool = False) -> torch.Tensor:
    """``x^T x`` (B, D, D) of a (B, N, D) batch, or ``x x^T`` (B, N, N) with ``samples``.

    Exactly symmetric on both devices (the eigensolvers and Cholesky that follow
    read one triangle).
    """
    k = x.shape[1] if samples else x.shape[2]
    if not _on_host(x, k):
        g = x @ x.mT if samples else x.mT @ x
        return 0.5 * (g + g.mT)
    xn = _host_views(x)
    out = np.empty((x.shape[0], k, k), dtype=xn.dtype)
    for i, a in enumerate(xn):
        # numpy recognises a product of an array with its own transpose and
        # calls syrk, which also fills both triangles identically
        if samples:
            np.matmul(a, a.T, out=out[i])
        else:
            np.matmul(a.T, a, out=out[i])
    return torch.from_numpy(out)


def eigh(g: torch.Tensor):
    """All eigenpairs of a batch of symmetric matrices: (evals ascending (B, k), vecs (B, k, k))."""
    if not _on_host(g, g.shape[-1]):
        return torch.linalg.eigh(g)
    gn = _host_views(g)
    b, k, _ = gn.shape
    evals = np.empty((b, k), dtype=gn.dtype)
    vecs = np.empty((b, k, k), dtype=gn.dtype)
    for i, a in enumerate(gn):
        evals[i], vecs[i] = scipy.linalg.eigh(a, driver="evd", check_finite=False)
    return torch.from_numpy(evals), torch.from_numpy(vecs)


def eigh_top(g: torch.Tensor, top: int):
    """The ``top`` largest eigenpairs (ascending, as :func:`eigh`): ((B, t), (B, k, t)).

    ``t = min(top, k)``. CPU: LAPACK's ``syevr`` restricted to those indices
    (one tridiagonal reduction, then t eigenvectors instead of k). CUDA: torch
    has no subset solver, so the full decomposition is sliced.
    """
    k = g.shape[-1]
    t = min(top, k)
    if not _on_host(g, k) or t == k:
        evals, vecs = eigh(g)
        return evals[:, k - t:], vecs[:, :, k - t:]
    gn = _host_views(g)
    b = gn.shape[0]
    evals = np.empty((b, t), dtype=gn.dtype)
    vecs = np.empty((b, k, t), dtype=gn.dtype)
    for i, a in enumerate(gn):
        evals[i], vecs[i] = _syevr_top(a, t)
    return torch.from_numpy(evals), torch.from_numpy(vecs)


def _syevr_top(a: np.ndarray, t: int):
    """The ``t`` largest eigenpairs of symmetric ``a`` by LAPACK's ``syevr``, without the GIL.

    scipy's ``eigh`` calls ``syevr`` through an f2py wrapper that holds the GIL for the
    whole factorisation, so per-model eigensolvers in worker threads (the bootstrap's
    weighted path) ran one at a time (measured: four D = 1,280 solves took 0.58 s on one
    thread and 0.55 s on two). The same routine with the same arguments (range 'I', abstol
    0, the workspace LAPACK asks for) is called here through scipy's Cython LAPACK API by
    ctypes, which releases the GIL; the results are scipy's, bit for bit. Falls back to
    scipy where that API is missing.
    """
    k = a.shape[-1]
    fn = _nogil_syevr(a.dtype.char)
    if fn is None:
        return scipy.linalg.eigh(a, driver="evr", subset_by_index=(k - t, k - 1),
                                 check_finite=False)
    # a C-ordered symmetric matrix is its own Fortran-ordered transpose; scipy reads the
    # lower triangle ('U' would take another path through the reduction, other rounding)
    work_a = np.array(a, dtype=a.dtype, order="C", copy=True)
    real = ctypes.c_double if a.dtype == np.float64 else ctypes.c_float
    w = np.empty(k, dtype=a.dtype)
    z = np.empty((t, k), dtype=a.dtype)                 # Fortran (k, t): eigenvector columns
    isuppz = np.empty(2 * max(1, t), dtype=np.intc)
    n, lda, il, iu, ldz, m, info = (ctypes.c_int(v) for v in (k, k, k - t + 1, k, k, 0, 0))
    vl = vu = abstol = real(0.0)

    def call(work, lwork, iwork, liwork):
        fn(b"V", b"I", b"L", ctypes.byref(n), work_a.ctypes.data, ctypes.byref(lda),
           ctypes.byref(vl), ctypes.byref(vu), ctypes.byref(il), ctypes.byref(iu),
           ctypes.byref(abstol), ctypes.byref(m), w.ctypes.data, z.ctypes.data,
           ctypes.byref(ldz), isuppz.ctypes.data, work.ctypes.data, ctypes.byref(lwork),
           iwork.ctypes.data, ctypes.byref(liwork), ctypes.byref(info))

    query_w, query_i = np.empty(1, dtype=a.dtype), np.empty(1, dtype=np.intc)
    call(query_w, ctypes.c_int(-1), query_i, ctypes.c_int(-1))
    lwork, liwork = int(query_w[0]), int(query_i[0])
    call(np.empty(lwork, dtype=a.dtype), ctypes.c_int(lwork), np.empty(liwork, dtype=np.intc),
         ctypes.c_int(liwork))
    if info.value != 0 or m.value != t:
        raise np.linalg.LinAlgError(f"syevr failed (info {info.value}, {m.value} of {t} "
                                    "eigenpairs)")
    return w[:t].copy(), np.ascontiguousarray(z.T)


@functools.lru_cache(maxsize=None)
def _nogil_syevr(char: str):
    """ctypes handle on scipy.linalg.cython_lapack's ``dsyevr``/``ssyevr`` (None if absent)."""
    name = {"d": "dsyevr", "f": "ssyevr"}.get(char)
    try:
        from scipy.linalg import cython_lapack
        capsule = cython_lapack.__pyx_capi__[name]
    except (ImportError, AttributeError, KeyError):
        return None
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object,
                                                                  ctypes.c_char_p]
    signature = get_name(capsule)
    if _argument_kinds(signature.decode()) != _SYEVR_KINDS.replace("r", char):
        return None        # another ABI (e.g. 64-bit integers): scipy's own wrapper then
    address = get_pointer(capsule, signature)
    return ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 21)(address)


# syevr's 21 arguments as scipy's Cython API declares them: c = char *, i = int *,
# r = real * (d: double, f: float), all by pointer (LAPACK's Fortran convention)
_SYEVR_KINDS = "cccirirriirirriiriiii"


def _argument_kinds(signature: str) -> str:
    """'void (char *, int *, ..._d *)' -> 'cid' (anything else -> '?')."""
    kinds = []
    for arg in signature[signature.index("(") + 1:signature.rindex(")")].split(","):
        arg = arg.strip()
        kinds.append("c" if arg == "char *" else "i" if arg == "int *" else
                     "d" if arg.endswith("_d *") or arg == "double *" else
                     "f" if arg.endswith("_s *") or arg == "float *" else "?")
    return "".join(kinds)


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for (B, n, k) @ (B, k, r); on CPU per model through numpy when k is large.

    OpenBLAS's GEMM ran about twice as fast as torch's on this project's AMD
    test CPU for the engine's (2000 x 768) @ (768 x 100) products.
    """
    k = a.shape[-1]
    if not _on_host(a, k) or b.dtype != a.dtype:
        return a @ b
    an, bn = _host_views(a), _host_views(b)
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=an.dtype)
    for i in range(a.shape[0]):
        np.matmul(an[i], bn[i], out=out[i])
    return torch.from_numpy(out)


def solve_spd(a: torch.Tensor, b: torch.Tensor):
    """``a^{-1} b`` through a Cholesky factorisation, for symmetric positive definite a.

    a: (B, k, k), b: (B, k, r). Returns (solution (B, k, r), ok (B,) bool):
    ok is False where a is not positive definite (its solution is then garbage).
    CPU: LAPACK's ``posv`` per model (factor and solve in one call).
    """
    k = a.shape[-1]
    if not _on_host(a, k):
        chol, info = torch.linalg.cholesky_ex(a)
        return torch.cholesky_solve(b, chol), info == 0
    an, bn = _host_views(a), _host_views(b)
    posv = scipy.linalg.lapack.get_lapack_funcs("posv", (an,))
    out = np.empty_like(bn)
    ok = np.empty(an.shape[0], dtype=bool)
    for i in range(an.shape[0]):
        # a[i] is symmetric, so its transpose is the same matrix in the
        # column-major order LAPACK wants: no copy
        _, out[i], info = posv(an[i].T, bn[i])
        ok[i] = info == 0
    return torch.from_numpy(out), torch.from_numpy(ok)
