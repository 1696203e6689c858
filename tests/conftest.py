"""Test session set-up.

Triton kernels cannot launch on a CPU; its interpreter runs them there. It must
be switched on before any kernel is decorated, so it is set here, before the
tests import te_gpu. A real GPU run sets TE_GPU_NO_INTERPRET=1 to test the
compiled kernels instead.
"""
import os

if os.environ.get("TE_GPU_NO_INTERPRET") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
