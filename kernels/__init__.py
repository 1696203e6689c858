"""Triton kernels of te_gpu, installed as ``te_gpu.kernels``.

Each kernel equals a torch function of the engine (or, for the two standalone
ops, a torch reference beside it); the engine picks the kernel on CUDA where it
measures faster and falls back to torch otherwise (te_gpu.engine.dispatch holds
that policy). The kernels import nothing of the engine.

=====================  =================================================  ==========================
module                 kernel launcher / torch path                       replaces in the engine
=====================  =================================================  ==========================
``class_stats``        class_moments_triton / class_moments_torch         one-hot sums, centred
                       (counts, sums, centred sums of squares per class)  class variances (GBC, SA)
``logme_fixed_point``  logme_evidence_triton                              evidence.fixed_point_evidence
``spread_attract``     attract_delta_triton, perturb_triton               sa.attract_delta, sa.perturb
``gbc_pairwise``       gbc_pairwise_triton                                gaussians.gbc_from_gaussians
``true_class_prob``    true_class_prob_triton / true_class_prob_torch     softmax + gather (SFDA, LDA)
=====================  =================================================  ==========================

All take float32 or float64 and accumulate in the input's precision. None uses
atomics: every program owns its output tile (or writes one partial sum that
torch adds in a fixed order), so results are bit-reproducible run to run.
The modules import without Triton (``_compat``); their kernels then refuse to
launch and only the torch paths work. ``python -m te_gpu.kernels.compile_check``
compiles every kernel for sm_90 without a GPU and reports register use.
"""
