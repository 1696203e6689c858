"""Triton kernels (te_gpu.kernels) against their torch paths, and the dispatch rules.

On CPU the kernels run under Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1); on a GPU machine run with TE_GPU_NO_INTERPRET=1 to test
the compiled kernels on CUDA tensors. The interpreter costs milliseconds per
program instance and per reduction, so the grids here are small, with block
sizes chosen to leave masked tails (N, D, C not multiples of the blocks) and
loops of several trips. Tolerances: relative to the largest magnitude of the
reference, 1e-12 in float64 and 1e-5 in float32.

The dispatch tests at the end need no Triton: the fallback must work without it.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import te_gpu
import te_gpu.reference

from te_gpu.engine import dispatch
from te_gpu.engine.evidence import EPS as _EPS
from te_gpu.engine.evidence import MAX_ITER as _MAX_ITER
from te_gpu.engine.evidence import TOL as _TOL
from te_gpu.engine.evidence import fixed_point_evidence
from te_gpu.engine.gaussians import bhattacharyya
from te_gpu.engine.gbc import floored_variances as class_variances, gbc_batched
from te_gpu.engine.logme import spectrum, spectrum_svd
from te_gpu.engine.sa import attract_delta, perturb
from te_gpu.engine.stats import Labels, class_means
from te_gpu.kernels._compat import HAVE_TRITON

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
CUDA = torch.cuda.is_available()
if not HAVE_TRITON:
    _SKIP = "Triton is not installed: the kernels cannot run (the torch fallback is tested below)"
elif not (INTERPRET or CUDA):
    _SKIP = ("no CUDA device and TRITON_INTERPRET is not 1 (tests/conftest.py sets it unless "
             "TE_GPU_NO_INTERPRET=1): the kernels cannot run here")
else:
    _SKIP = ""
needs_kernels = pytest.mark.skipif(bool(_SKIP), reason=_SKIP or "-")
DEVICE = torch.device("cuda" if CUDA and not INTERPRET else "cpu")
DTYPES = [torch.float64, torch.float32]
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    got, ref = got.double().cpu(), ref.double().cpu()
    assert got.shape == ref.shape
    assert bool(torch.isfinite(got).all())
    return float((got - ref).abs().max() / ref.abs().max().clamp(min=1e-300))


def assert_close(got, ref, dtype, tol=None):
    err = rel_err(got, ref)
    assert err <= (tol or TOL[dtype]), f"relative error {err:.3g} > {tol or TOL[dtype]:.1g}"


def make_codes(n: int, c: int, seed: int) -> torch.Tensor:
    """Codes in 0..c-1, every class present when n >= c, shuffled."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, c, (n,), generator=g)
    codes[: min(n, c)] = torch.arange(min(n, c))
    return codes[torch.randperm(n, generator=g)].to(DEVICE)


def make_features(b, n, d, codes, c, seed, dtype, spread=2.0, offset=0.0):
    """Class means plus Gaussian noise, built in float64, then cast."""
    g = torch.Generator().manual_seed(seed + 1)
    centres = torch.randn(b, c, d, generator=g, dtype=torch.float64) * spread + offset
    x = centres[:, codes.cpu()] + torch.randn(b, n, d, generator=g, dtype=torch.float64)
    return x.to(device=DEVICE, dtype=dtype)


# ----------------------------------------------------------------------------- class moments

@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,n,d,c,blocks", [
    (3, 101, 37, 2, dict(block_n=16, block_d=16)),     # C = 2; tails in N and D; several trips
    (1, 233, 5, 150, dict(block_n=2, block_d=8)),      # large C, small imbalanced classes
])
def test_class_moments(dtype, b, n, d, c, blocks):
    from te_gpu.kernels.class_stats import class_moments_triton

    codes = make_codes(n, c, seed=n + c)
    x = make_features(b, n, d, codes, c, seed=d, dtype=dtype)
    got = class_moments_triton(x, codes, c, **blocks)
    ref = dispatch.class_moments_torch(x, codes, c)
    assert torch.equal(got[0], ref[0])                 # counts are exact
    assert_close(got[1], ref[1], dtype)
    assert_close(got[2], ref[2], dtype)
    again = class_moments_triton(x, codes, c, **blocks)
    assert all(torch.equal(u, v) for u, v in zip(got, again))   # no atomics: reproducible


@needs_kernels
def test_class_moments_feed_the_engine():
    """Means, GBC's floored variances and SA's radii follow from the three outputs."""
    from te_gpu.kernels.class_stats import class_moments_triton

    b, n, d, c = 2, 77, 11, 3
    codes = make_codes(n, c, seed=5)
    # large means: the centred sums of squares must not cancel (E[x^2] - mu^2 would)
    x = make_features(b, n, d, codes, c, seed=6, dtype=torch.float64, offset=1e4)
    labels = Labels.from_codes(codes, c, x.dtype)
    counts, sums, sumsq = class_moments_triton(x, codes, c, block_n=8)
    means_ref, _ = class_means(x, labels)
    means = sums / counts[None, :, None]
    assert_close(means, means_ref, torch.float64)
    var = torch.clamp(sumsq / (counts - 1)[None, :, None], min=1e-4)
    assert_close(var, class_variances(x, labels, means_ref), torch.float64, tol=1e-10)


@needs_kernels
def test_class_moments_strided_input_and_empty_class():
    from te_gpu.kernels.class_stats import class_moments_triton

    b, n, d, c = 2, 45, 9, 4
    codes = make_codes(n, 3, seed=7)                   # class 3 is empty
    base = make_features(b, d, n, codes[:d], 3, seed=8, dtype=torch.float64)
    x = base.transpose(1, 2)                           # (B, N, D) view with stride_d != 1
    got = class_moments_triton(x, codes, c, block_n=8, block_d=4)
    ref = dispatch.class_moments_torch(x, codes, c)
    assert float(got[0][3]) == 0.0
    assert bool((got[1][:, 3] == 0).all()) and bool((got[2][:, 3] == 0).all())
    for u, v in zip(got[1:], ref[1:]):
        assert_close(u, v, torch.float64)


# ----------------------------------------------------------------------------- LogME

def _logme_inputs(b, n, d, c, dtype, seed, rank=None):
    codes = make_codes(n, c, seed)
    x = make_features(b, n, d, codes, c, seed, torch.float64)
    if rank is not None:                               # rank-deficient: masked eigenvalues
        x = x[..., :rank] @ torch.randn(rank, d, dtype=torch.float64,
                                        generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    x = x.to(dtype)
    y = torch.nn.functional.one_hot(codes, c).to(dtype)
    if n > d:
        sigma, valid, proj = spectrum(x, x.mT @ x, y.T @ x)
    else:
        sigma, valid, proj = spectrum_svd(x, y)
    if rank is not None:
        # the spectrum keeps noise eigenvalues as exact-zero terms; the kernel's
        # mask path (terms the released rank rule drops) is exercised by hand
        assert bool((sigma == 0).any()) and bool(valid.all())
        valid = valid.clone()
        valid[0, :3] = False
        sigma = torch.where(valid, sigma, torch.zeros_like(sigma))
    # the engine hands the kernel float64 spectra; the kernel takes float32 too
    return sigma.to(dtype), valid, proj.to(dtype), (y * y).sum(0)


def test_logme_constants_match_the_engine():
    from te_gpu.kernels import logme_fixed_point as k

    assert (k.MAX_ITER, k.EPS, k.TOL) == (_MAX_ITER, _EPS, _TOL)


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,n,d,c,rank", [
    (2, 101, 37, 2, None),      # N > D (eigh), C = 2
    (2, 90, 37, 5, 30),         # N > D, rank 30 < D: noise eigenvalues zero, some masked
    (2, 30, 45, 3, None),       # N <= D (thin SVD): k = N < D, `corrected` matters
    (1, 160, 21, 150, None),    # large C: several target blocks, the last one partial
])
def test_logme_evidence(dtype, b, n, d, c, rank):
    from te_gpu.kernels.logme_fixed_point import logme_evidence_triton

    sigma, valid, proj, t_sq = _logme_inputs(b, n, d, c, dtype, seed=n + d, rank=rank)
    if rank is not None:
        assert not bool(valid.all())
    for corrected in (False, True):
        bt = 32 if c > 100 else 4                      # few programs under the interpreter
        got = logme_evidence_triton(sigma, valid, proj, t_sq, n, d, corrected, block_t=bt,
                                    block_k=16)
        ref = fixed_point_evidence(sigma, valid, proj, t_sq, n, d, corrected)
        if dtype == torch.float64:
            assert_close(got, ref, dtype)
        else:
            # the fixed point amplifies rounding (most for N <= D, where r0 = |t|^2 - sum x^2
            # cancels to noise): the float32 torch path itself can be 1e-5..1e-4 off. Compare
            # both with float64 on the same inputs: the kernel must be as accurate as torch.
            s64, p64, t64 = sigma.double(), proj.double(), t_sq.double()
            exact = fixed_point_evidence(s64, valid, p64, t64, n, d, corrected)
            own = rel_err(ref, exact)
            assert rel_err(got, exact) <= max(TOL[dtype], 2 * own), (rel_err(got, exact), own)


@needs_kernels
def test_logme_pairs_freeze_at_different_iterations():
    """Pairs converge at different iterations; a pair frozen early must stay frozen
    (iterating on would change its value), as the engine's mask does."""
    from te_gpu.kernels.logme_fixed_point import logme_evidence_triton

    n, d, c = 120, 25, 6
    sigma, valid, proj, t_sq = _logme_inputs(1, n, d, c, torch.float64, seed=3)
    proj = proj * torch.linspace(0.2, 3.0, c, dtype=proj.dtype, device=proj.device)[None, :, None]
    t_sq = torch.maximum(t_sq, (proj * proj).sum(-1)[0] * 1.01)
    ref = fixed_point_evidence(sigma, valid, proj, t_sq, n, d, False)
    got = logme_evidence_triton(sigma, valid, proj, t_sq, n, d, False, block_t=4, block_k=8)
    assert_close(got, ref, torch.float64)
    # the iteration at which each pair froze differs across pairs
    iters = _freeze_iterations(sigma, proj, t_sq, n)
    assert len(set(iters)) > 1, iters


def _freeze_iterations(sigma, proj, t_sq, n):
    sig = sigma[0].double()
    out = []
    for t_i in range(proj.shape[1]):
        x2 = proj[0, t_i].double() ** 2
        r0 = float(t_sq[t_i]) - float(x2.sum())
        alpha = beta = 1.0
        for it in range(_MAX_ITER):
            t = alpha / beta
            gamma = float((sig / (sig + t)).sum())
            m2 = float((sig * x2 / (t + sig) ** 2).sum())
            res2 = float((x2 / (1 + sig / t) ** 2).sum()) + r0
            alpha, beta = gamma / (m2 + _EPS), (n - gamma) / (res2 + _EPS)
            if abs(alpha / beta - t) / t <= _TOL:
                break
        out.append(it)
    return out


# ----------------------------------------------------------------------------- Spread/Attract

@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,n,d,c", [(2, 67, 13, 2), (1, 170, 5, 150), (2, 53, 70, 5)])
def test_attract_delta(dtype, b, n, d, c):
    from te_gpu.kernels.spread_attract import _attract, _means_radius

    codes = make_codes(n, c, seed=c)
    z = make_features(b, n, d, codes, c, seed=d, dtype=dtype)
    labels = Labels.from_codes(codes, c, dtype)
    blocks = dict(block_a=64, block_b=64) if c > 100 else dict(block_d=8, block_o=32)
    got = _attract(*_means_radius(z, codes, c), 0.1, 0.6, **blocks)   # perturb's Attract
    assert_close(got, attract_delta(z, labels, 0.1, 0.6), dtype)


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant,b,n,d,c", [
    ("released", 2, 67, 13, 2), ("described", 2, 67, 13, 2), ("pca-only", 2, 67, 13, 2),
    # large C: "described" runs every piece "released" does (moments, Attract, update)
    ("described", 1, 170, 5, 150),
])
def test_perturb(dtype, variant, b, n, d, c):
    from te_gpu.kernels.spread_attract import perturb_triton

    codes = make_codes(n, c, seed=c + 1)
    z = make_features(b, n, d, codes, c, seed=d + 1, dtype=dtype)
    labels = Labels.from_codes(codes, c, dtype)
    kw = dict(alpha=0.005 if c > 100 else 0.1, sigma=0.6, force=1.0, variant=variant)
    out, disp = perturb_triton(z, codes, c, **kw, block_c=64 if c > 100 else 16)
    out_ref, disp_ref = perturb(z, labels, **kw)
    assert_close(out, out_ref, dtype)
    if variant == "pca-only":
        assert bool((disp == 0).all())
    else:
        assert_close(disp, disp_ref, dtype)


@needs_kernels
def test_spread_leaves_a_sample_at_its_class_mean():
    """x = mu_c has no Spread direction: it stays (SPEC 7.3)."""
    from te_gpu.kernels.spread_attract import perturb_triton

    codes = torch.tensor([0, 0, 1, 1, 1], device=DEVICE)
    z = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [0.0, 0.0], [1.0, 1.0], [0.5, 0.5]]],
                     dtype=torch.float64, device=DEVICE)   # class 1's mean is sample 4
    labels = Labels.from_codes(codes, 2, z.dtype)
    kw = dict(alpha=0.1, sigma=0.6, force=1.0, variant="described")
    out, disp = perturb_triton(z, codes, 2, **kw)
    out_ref, disp_ref = perturb(z, labels, **kw)
    assert_close(out, out_ref, torch.float64)
    assert_close(disp, disp_ref, torch.float64)


# ----------------------------------------------------------------------------- GBC

@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spherical", [True, False])
@pytest.mark.parametrize("b,d,c", [(3, 37, 2), (1, 5, 150), (2, 19, 33)])
def test_gbc_pairwise(dtype, spherical, b, d, c):
    from te_gpu.kernels.gbc_pairwise import gbc_pairwise_triton

    g = torch.Generator().manual_seed(d + c)
    means = (torch.randn(b, c, d, generator=g, dtype=torch.float64) * 0.4).to(DEVICE, dtype)
    var = (torch.rand(b, c, d, generator=g, dtype=torch.float64) + 0.05).to(DEVICE, dtype)
    got = gbc_pairwise_triton(means, var, spherical, block_c=64 if c > 100 else 16, block_d=8)
    bd = bhattacharyya(means, var, spherical)
    off = ~torch.eye(c, dtype=torch.bool, device=DEVICE)
    assert_close(got, -(torch.exp(-bd) * off).sum((-1, -2)), dtype)


@needs_kernels
def test_gbc_pairwise_equals_gbc_batched():
    from te_gpu.kernels.gbc_pairwise import gbc_pairwise_triton

    b, n, d, c = 2, 90, 13, 4
    codes = make_codes(n, c, seed=11)
    x = make_features(b, n, d, codes, c, seed=12, dtype=torch.float64, spread=0.5)
    labels = Labels.from_codes(codes, c, x.dtype)
    means, _ = class_means(x, labels)
    var = class_variances(x, labels, means)
    for gaussian in ("spherical", "diagonal"):
        got = gbc_pairwise_triton(means, var, gaussian == "spherical")
        assert_close(got, gbc_batched(x, labels, means, gaussian=gaussian), torch.float64)


# ----------------------------------------------------------------------------- dispatch

def _dispatch_inputs(dtype=torch.float64):
    b, n, d, c = 2, 40, 6, 3
    codes = make_codes(n, c, seed=31)
    x = make_features(b, n, d, codes, c, seed=32, dtype=dtype)
    return x, codes, Labels.from_codes(codes, c, dtype), c


def _all_ops(x, codes, labels, c, **kw):
    """Every dispatch op on one batch (with the inputs each needs), as a dict."""
    b, n, d = x.shape
    means, _ = class_means(x, labels)
    var = class_variances(x, labels, means)
    sigma, valid, proj = spectrum(x, x.mT @ x, labels.onehot.T @ x)
    sa_kw = dict(alpha=0.1, sigma=0.6, force=1.0)
    return {
        "class_moments": dispatch.class_moments(x, codes, c, **kw),
        "logme_evidence": dispatch.logme_evidence(sigma, valid, proj, labels.counts.to(sigma.dtype),
                                                  n, d, True, **kw),
        "perturb": dispatch.perturb(x, labels, variant="described", **sa_kw, **kw),
        "gbc_pairwise": dispatch.gbc_pairwise(means, var, False, **kw),
    }


def _torch_paths(x, codes, labels, c):
    """The engine's torch functions on the same inputs."""
    b, n, d = x.shape
    means, _ = class_means(x, labels)
    sigma, valid, proj = spectrum(x, x.mT @ x, labels.onehot.T @ x)
    return {
        "class_moments": dispatch.class_moments_torch(x, codes, c),
        "logme_evidence": fixed_point_evidence(sigma, valid, proj, labels.counts, n, d, True),
        "perturb": perturb(x, labels, alpha=0.1, sigma=0.6, force=1.0, variant="described"),
        "gbc_pairwise": gbc_batched(x, labels, means, gaussian="diagonal"),
    }


def _flat(v):
    return list(v) if isinstance(v, tuple) else [v]


def test_default_policy_is_torch_everywhere(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    assert set(dispatch.KERNEL_ENABLED) == {"class_moments", "logme_evidence", "perturb",
                                            "gbc_pairwise"}
    assert not any(dispatch.KERNEL_ENABLED.values())
    assert dispatch.enabled_ops() == frozenset()
    with pytest.raises(TypeError):
        dispatch.KERNEL_ENABLED["class_moments"] = True     # read-only


def test_env_override(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "all")
    assert dispatch.enabled_ops() == frozenset(dispatch.KERNEL_ENABLED)
    monkeypatch.setenv(dispatch.ENV_VAR, "none")
    assert dispatch.enabled_ops() == frozenset()
    monkeypatch.setenv(dispatch.ENV_VAR, " class_moments, gbc_pairwise ")
    assert dispatch.enabled_ops() == {"class_moments", "gbc_pairwise"}
    monkeypatch.setenv(dispatch.ENV_VAR, "class_moments,warp_drive")
    with pytest.raises(ValueError, match="warp_drive"):
        dispatch.enabled_ops()


@pytest.mark.parametrize("env", [None, "all"])
def test_dispatch_falls_back_to_torch_on_cpu(monkeypatch, env):
    """CPU tensors take the torch path, bit for bit, even with every kernel enabled."""
    if env is None:
        monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(dispatch.ENV_VAR, env)
    x, codes, labels, c = _dispatch_inputs()
    x, codes, labels = x.cpu(), codes.cpu(), Labels.from_codes(codes.cpu(), c, x.dtype)
    got = _all_ops(x, codes, labels, c)
    ref = _torch_paths(x, codes, labels, c)
    for op in got:
        for u, v in zip(_flat(got[op]), _flat(ref[op])):
            assert torch.equal(u, v), op


def test_force_kernel_false_is_torch(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "all")
    x, codes, labels, c = _dispatch_inputs()
    got = _all_ops(x, codes, labels, c, force_kernel=False)
    ref = _torch_paths(x, codes, labels, c)
    for op in got:
        for u, v in zip(_flat(got[op]), _flat(ref[op])):
            assert torch.equal(u, v), op


def test_force_kernel_without_triton_raises(monkeypatch):
    from te_gpu.kernels import _compat

    monkeypatch.setattr(_compat, "HAVE_TRITON", False)
    x, codes, labels, c = _dispatch_inputs()
    with pytest.raises(RuntimeError, match="Triton is not installed"):
        dispatch.class_moments(x, codes, c, force_kernel=True)
    # and the default quietly takes the torch path
    monkeypatch.setenv(dispatch.ENV_VAR, "all")
    counts, sums, sumsq = dispatch.class_moments(x, codes, c)
    assert torch.equal(sums, labels.onehot.T @ x)


@pytest.mark.skipif(INTERPRET or not HAVE_TRITON,
                    reason="needs Triton with the interpreter off (TE_GPU_NO_INTERPRET=1)")
def test_force_kernel_on_cpu_tensors_without_interpreter_raises(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "all")
    x, codes, labels, c = _dispatch_inputs()
    x, codes = x.cpu(), codes.cpu()
    with pytest.raises(RuntimeError, match="not on CUDA"):
        dispatch.class_moments(x, codes, c, force_kernel=True)
    counts, sums, _ = dispatch.class_moments(x, codes, c)      # default: torch, quietly
    assert torch.equal(sums, torch.nn.functional.one_hot(codes, c).to(x.dtype).T @ x)


def test_unsupported_dtype_takes_torch_or_raises_when_forced():
    x, codes, labels, c = _dispatch_inputs()
    xh = x.to(torch.bfloat16)
    counts, sums, _ = dispatch.class_moments(xh, codes, c)
    assert sums.dtype == torch.bfloat16
    with pytest.raises(TypeError):
        dispatch.class_moments(xh, codes, c, force_kernel=True)
    with pytest.raises(TypeError):
        dispatch.class_moments(x, codes, c, force_kernel="yes")


@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES)
def test_force_kernel_runs_the_kernels(monkeypatch, dtype):
    """force_kernel=True takes every kernel (each launcher is called) and agrees with torch."""
    import te_gpu.kernels.class_stats as cs
    import te_gpu.kernels.gbc_pairwise as gp
    import te_gpu.kernels.logme_fixed_point as lf
    import te_gpu.kernels.spread_attract as sa_k

    calls = []

    def spy(module, name):
        real = getattr(module, name)

        def wrapped(*a, **k):
            calls.append(name)
            return real(*a, **k)
        monkeypatch.setattr(module, name, wrapped)

    for module, name in [(cs, "class_moments_triton"), (lf, "logme_evidence_triton"),
                         (sa_k, "perturb_triton"), (gp, "gbc_pairwise_triton")]:
        spy(module, name)
    monkeypatch.setenv(dispatch.ENV_VAR, "none")         # force_kernel overrides the policy
    x, codes, labels, c = _dispatch_inputs(dtype)
    got = _all_ops(x, codes, labels, c, force_kernel=True)
    assert sorted(calls) == sorted(["class_moments_triton", "logme_evidence_triton",
                                    "perturb_triton", "gbc_pairwise_triton"])
    ref = _torch_paths(x, codes, labels, c)
    for op in got:
        for u, v in zip(_flat(got[op]), _flat(ref[op])):
            assert_close(u, v, dtype)


# ----------------------------------------------------------------------------- compilation for sm_90

def _cannot_compile_sm90() -> str:
    if not HAVE_TRITON:
        return "Triton is not installed"
    try:
        from triton.backends import backends
    except ImportError:
        return "this Triton has no backend registry"
    return "" if "nvidia" in backends else "Triton's NVIDIA backend is not installed"


@pytest.mark.skipif(bool(_cannot_compile_sm90()), reason=_cannot_compile_sm90() or "-")
def test_kernels_compile_for_sm90():
    """Every kernel compiles to a cubin for an H100 (sm_90), float64 and float32, without
    spilling registers, with the ptxas in the Triton wheel: no GPU needed. It catches what
    the interpreter lets through. Runs in a subprocess: the interpreter must be off."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "te_gpu.kernels.compile_check", "--first-only"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if "regs" in ln]
    assert len(lines) == 10, proc.stdout                # 5 kernels x 2 dtypes
    assert "register spills" not in proc.stderr, proc.stdout


def test_a_plain_checkout_scores_without_the_kernels_package(tmp_path):
    """PYTHONPATH=<checkout>, nothing installed: ``te_gpu.kernels`` does not exist there (the
    top-level kernels/ folder is installed under that name by setup.py only), and every torch
    path, SA and LogME included, must still run. The installed te_gpu is kept out of the way."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = textwrap.dedent("""
        import sys
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__
                            and "editable" not in repr(f)]
        import numpy as n, te_gpu, importlib.util
        assert importlib.util.find_spec("te_gpu.kernels") is None, "installed kernels visible"
        x = n.random.default_rng(0).normal(size=(60, 12)); y = n.arange(60) % 3
        print(te_gpu.logme(x, y, sa="released"), te_gpu.gbc(x, y, sa="released"))
        """)
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET",)}
    env.update(PYTHONPATH=str(root), TE_GPU_KERNELS="all")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = [float(v) for v in proc.stdout.split()]
    x = np.random.default_rng(0).normal(size=(60, 12))
    y = np.arange(60) % 3
    want = [te_gpu.reference.score(x, y, metric=m, sa="released") for m in ("logme", "gbc")]
    np.testing.assert_allclose(got, want, rtol=1e-6)
