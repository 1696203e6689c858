"""Compile every kernel for an NVIDIA target without a GPU: ``python -m te_gpu.kernels.compile_check``.

Triton's interpreter (the CPU test path) runs kernels through numpy, so it lets
through what the real compiler rejects: loop-carried values that change type,
ops without a float64 lowering, tl.dot shapes below the MMA minimum. This
module compiles each kernel to a cubin for sm_90 (H100/H200) with the ptxas
that ships in the Triton wheel, and reports registers and stack (spills) per
thread from ``cuobjdump``, at the launchers' default block sizes.

It must run in a process where TRITON_INTERPRET is off: under the interpreter
Triton's own library functions (tl.sum, ...) are wrapped for numpy and cannot
be compiled. tests/test_kernels.py runs it in a subprocess.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile


def _specs(dt: str):
    """(module, kernel, argument types, [constexpr variants]) for element type ``dt``."""
    f, i = f"*{dt}", "i32"
    wide = dt == "fp64"
    return [
        ("class_stats", "_class_moments_kernel",
         dict(x_ptr=f, order_ptr="*i32", starts_ptr="*i32", counts_ptr="*i32", sums_ptr=f,
              sumsq_ptr=f, n_classes=i, n_dims=i, stride_xb="i64", stride_xn=i, stride_xd=i),
         [dict(BLOCK_N=32, BLOCK_D=128)]),
        ("logme_fixed_point", "_logme_kernel",
         dict(sigma_ptr=f, valid_ptr="*i8", proj_ptr=f, tsq_ptr=f, out_ptr=f, n_targets=i,
              k_dim=i, n=i, d=i, stride_sb=i, stride_sk=i, stride_vb=i, stride_vk=i,
              stride_pb=i, stride_pt=i, stride_pk=i),
         [dict(MAX_ITER=11, EPS=1e-5, TOL=1e-3, LOG_2PI=math.log(2 * math.pi), CORRECTED=c,
               BLOCK_T=2, BLOCK_K=128 if wide else 512) for c in (False, True)]),
        ("spread_attract", "_attract_kernel",
         dict(means_ptr=f, radius_ptr=f, delta_ptr=f, n_classes=i, n_dims=i, stride_mb=i,
              stride_mc=i, stride_md=i),
         [dict(ALPHA=0.005, SIGMA=0.6, BLOCK_A=16, BLOCK_B=16, BLOCK_D=32, BLOCK_O=64)]),
        ("spread_attract", "_sa_update_kernel",
         dict(z_ptr=f, codes_ptr="*i64", means_ptr=f, delta_ptr=f, out_ptr=f, part_ptr=f,
              n_samples=i, n_dims=i, n_classes=i, stride_zb=i, stride_zn=i, stride_zd=i),
         [dict(FORCE=1.0, SPREAD=s, SIGN=g, BLOCK_N=32, BLOCK_D=64)
          for s, g in ((False, 1), (True, 0), (True, -1))]),
        ("gbc_pairwise", "_gbc_kernel",
         dict(means_ptr=f, var_ptr=f, cls_ptr=f, part_ptr=f, n_classes=i, n_dims=i,
              stride_mb=i, stride_mc=i, stride_md=i, stride_vb=i, stride_vc=i, stride_vd=i),
         [dict(SPHERICAL=s, BLOCK_A=8, BLOCK_B=8, BLOCK_D=32) for s in (True, False)]),
    ]


def _resource_usage(cubin: bytes):
    """(registers, stack bytes) per thread from cuobjdump, or None if it is unavailable."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as fh:
            fh.write(cubin)
        out = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True,
                             text=True).stdout
    m = re.search(r"REG:(\d+).*?STACK:(\d+)", out, re.S)
    return (int(m.group(1)), int(m.group(2))) if m else None


def compile_all(arch: int = 90, dtypes=("fp64", "fp32"), num_warps: int = 4, first_only=False):
    """Compile every kernel variant; returns [(kernel, dtype, variant, regs, stack)]."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("compile_check needs TRITON_INTERPRET off (run it in its own process)")
    import importlib

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile as triton_compile

    target = GPUTarget("cuda", arch, 32)
    rows = []
    for dt in dtypes:
        for mod_name, kernel_name, sig, variants in _specs(dt):
            kernel = getattr(importlib.import_module(f"te_gpu.kernels.{mod_name}"), kernel_name)
            for consts in variants[:1] if first_only else variants:
                src = ASTSource(fn=kernel, signature={**sig, **{k: "constexpr" for k in consts}},
                                constexprs=consts)
                out = triton_compile(src, target=target, options={"num_warps": num_warps})
                usage = _resource_usage(out.asm["cubin"]) or (None, None)
                flags = {k: v for k, v in consts.items()
                         if k in ("CORRECTED", "SPREAD", "SIGN", "SPHERICAL", "DOUBLE")}
                rows.append((kernel_name, dt, flags, *usage))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100/H200)")
    ap.add_argument("--dtype", action="append", choices=("fp64", "fp32"),
                    help="element types to compile (default both)")
    ap.add_argument("--first-only", action="store_true",
                    help="one variant per kernel (the quick check the tests run)")
    args = ap.parse_args(argv)
    rows = compile_all(args.arch, tuple(args.dtype or ("fp64", "fp32")),
                       first_only=args.first_only)
    for name, dt, flags, regs, stack in rows:
        print(f"{name:24s} {dt}  regs {regs!s:>4}  stack {stack!s:>4} B  {flags}")
    spills = [r for r in rows if r[4]]
    if spills:
        print(f"{len(spills)} variant(s) use stack (register spills)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
