"""The float64 numpy/scipy reference implementation of every te_gpu score.

It follows ``SPEC.md`` literally, one model at a time, and is the oracle the
batched engine is proven against; clarity beats speed here.
"""
from .gbc import gbc
from .lda import lda
from .logme import logme
from .ncti import ncti, ncti_parts
from .nleep import nleep
from .sa import spread_attract
from .score import score
from .sfda import sfda

__all__ = ["logme", "sfda", "lda", "gbc", "nleep", "ncti_parts", "ncti",
           "spread_attract", "score"]
