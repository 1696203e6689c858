"""The float64 numpy/scipy reference implementation of every te_gpu score.

It follows ``SPEC.md`` literally, one model at a time, and is the oracle the
batched engine is proven against; clarity beats speed here. Every metric of
:mod:`te_gpu.catalogue` is exported under its catalogue name (a zoo-level
metric's per-model parts as ``NAME_parts`` and its score over a whole zoo as
``NAME``, :func:`score.zoo_score`), beside ``score`` and ``spread_attract``.
"""
import functools as _functools

from .. import catalogue as _catalogue
from .sa import spread_attract
from .score import score, zoo_score


def _zoo_function(m):
    fn = _functools.partial(zoo_score, m.name)
    fn.__doc__ = f"{m.title} of every model of a zoo: zoo_score({m.name!r}, zoo, labels, ...)."
    return fn


def _exports() -> dict:
    metrics = list(_catalogue.METRICS.values())
    per_model = {(m.name + "_parts" if m.zoo_level else m.name): m.reference_fn() for m in metrics}
    return {**per_model, **{m.name: _zoo_function(m) for m in metrics if m.zoo_level}}


globals().update(_exports())
__all__ = [*_exports(), "spread_attract", "score", "zoo_score"]
