"""Triton kernels of te_gpu, installed as ``te_gpu.kernels``.

Each kernel sits beside the torch function it must equal; the engine picks the
kernel on CUDA where it measures faster and falls back to torch otherwise.
"""
