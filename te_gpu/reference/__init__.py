"""The float64 numpy/scipy reference implementation of every te_gpu score.

It follows ``SPEC.md`` literally, one model at a time, and is the oracle the
batched engine is proven against; clarity beats speed here. Every metric of
:mod:`te_gpu.catalogue` is exported under its catalogue name (a zoo-level
metric's per-model parts as ``NAME_parts``), beside ``score``, ``ncti`` (a
whole zoo) and ``spread_attract``.
"""
from .. import catalogue as _catalogue
from .ncti import ncti
from .sa import spread_attract
from .score import score


def _exports() -> dict:
    return {(m.name + "_parts" if m.zoo_level else m.name): m.reference_fn()
            for m in _catalogue.METRICS.values()}


globals().update(_exports())
__all__ = [*_exports(), "ncti", "spread_attract", "score"]
