"""Triton kernels of te_gpu, installed as ``te_gpu.kernels``.

Each kernel equals a torch function of the engine (te_gpu.engine.dispatch names
it beside the kernel's op); the engine picks the kernel on CUDA where it
measures faster and falls back to torch otherwise (te_gpu.engine.dispatch holds
that policy). The kernels import nothing of the engine.

=====================  =================================================  ==========================
module                 kernel launcher / torch path                       replaces in the engine
=====================  =================================================  ==========================
``class_stats``        class_moments_triton                               one-hot sums, centred
                       (counts, sums, centred sums of squares per class)  class variances (GBC, SA)
``logme_fixed_point``  logme_evidence_triton                              evidence.fixed_point_evidence
``spread_attract``     perturb_triton                                     sa.perturb (Attract inside)
``gbc_pairwise``       gbc_pairwise_triton                                gaussians.gbc_from_gaussians
=====================  =================================================  ==========================

All take float32 or float64 and accumulate in the input's precision. None uses
atomics: every program owns its output tile (or writes one partial sum that
torch adds in a fixed order), so results are bit-reproducible run to run.
The modules import without Triton (``_compat``); their kernels then refuse to
launch and only the torch paths work. ``python -m te_gpu.kernels.compile_check``
compiles every kernel for sm_90 without a GPU and reports register use.
"""
