r"""Zoo-level scores: per-model parts combined over the models of one zoo.

A zoo-level metric (NCTI, SPEC 4; ETran, SPEC 10.8) scores each model by a tuple
of *parts* and then normalises every part over the zoo's models before adding
them with the weights its catalogue entry declares (``part_weights``: NCTI's
1, 1, -1; ETran's 0.15, 0.85):

.. math::  s_l = \sum_p w_p \, \frac{v_{lp} - \min_m v_{mp}}{\max_m v_{mp} - \min_m v_{mp}}.

Min-max normalisation is undefined for a part that is equal across the zoo,
and it is worse than undefined for a part that differs only by rounding: on an
easy task every model's NCTI ``vc`` can agree to 15 digits, and min-max turns
those last digits into a full 0-1 spread that decides the ranking. A part is
therefore *constant* when all its values are equal within the rule of
:mod:`te_gpu.ties` (consecutive sorted values at most 1e-6 of the zoo's largest
|value| apart: below te_gpu's own numerical agreement with its reference), and a
constant part is left out of the sum: it carries no information about the
order. The released evaluation script would divide rounding noise by rounding
noise there (or by zero, giving NaN); te_gpu departs from it only in that case.

Left with no part (every part constant, or a zoo of one model), the metric is
*undefined for this zoo*: the caller marks it so and keeps every other score.

Bootstrap (SPEC 11): the parts left out on the target set are left out on every
redraw (each redraw measures the same combination as the point estimate); a part
kept on the target set but constant on some redraw adds nothing on that redraw.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .ties import RELATIVE_TOLERANCE

__all__ = ["Combined", "ZooLevelWarning", "constant_parts", "minmax_sum", "combine_zoo"]


class ZooLevelWarning(UserWarning):
    """A part of a zoo-level score left out, or the score undefined, for this zoo."""


@dataclass
class Combined:
    """A zoo-level score on one zoo: ``scores`` {model: value}, or ``None`` when it is
    undefined (``reason`` says why); ``dropped`` {part: why it was left out}."""
    scores: dict | None
    parts: tuple
    dropped: dict = field(default_factory=dict)
    reason: str = ""

    @property
    def kept(self) -> np.ndarray:
        return np.array([p not in self.dropped for p in self.parts])


def constant_parts(values: np.ndarray, rtol: float = RELATIVE_TOLERANCE) -> np.ndarray:
    """(..., L, P) -> (..., P) bool: the parts whose L values are all equal within
    ``rtol`` times their largest magnitude (single linkage of the sorted values, as
    :func:`te_gpu.ties.find_ties`)."""
    v = np.asarray(values, dtype=np.float64)
    if v.shape[-2] < 2:
        return np.ones(v.shape[:-2] + v.shape[-1:], dtype=bool)
    eps = rtol * np.abs(v).max(axis=-2)
    gaps = np.diff(np.sort(v, axis=-2), axis=-2)
    return (gaps <= eps[..., None, :]).all(axis=-2)


def minmax_sum(values: np.ndarray, weights, keep=None) -> np.ndarray:
    """(..., L, P) parts -> (..., L): the weighted sum of the parts min-max normalised over
    the L models; parts outside ``keep`` (P,) and parts constant along L add nothing."""
    v = np.asarray(values, dtype=np.float64)
    use = ~constant_parts(v)
    if keep is not None:
        use &= np.asarray(keep, dtype=bool)
    lo, hi = v.min(axis=-2, keepdims=True), v.max(axis=-2, keepdims=True)
    span = np.where(use[..., None, :], hi - lo, 1.0)
    mm = np.where(use[..., None, :], (v - lo) / span, 0.0)
    return (mm * np.asarray(weights, dtype=np.float64)).sum(-1)


def combine_zoo(metric, parts_by_model: dict, *, label: str | None = None,
                strict: bool = False) -> Combined:
    """``metric``'s combination over the zoo ``{model: parts tuple}`` (its catalogue
    entry names the parts and their weights). A constant part is left out with a
    :class:`ZooLevelWarning`; with no part left, the result is undefined (``scores``
    None, ``reason`` set) and the warning says so, or, with ``strict`` (a caller that
    asked for this score alone), ``ValueError`` says so."""
    from . import catalogue

    m = catalogue.get(metric) if isinstance(metric, str) else metric
    name = label or m.name
    names = list(parts_by_model)
    if len(names) < 2:
        return _undefined(m, name, f"it normalises over a zoo and needs at least 2 models, got "
                          f"{len(names)}", {}, strict)
    v = np.array([parts_by_model[k] for k in names], dtype=np.float64)   # (L, P)
    if v.shape[1] != len(m.parts):
        raise ValueError(f"{name}: each model needs {len(m.parts)} parts {m.parts}, got {v.shape[1]}")
    if not np.isfinite(v).all():
        bad = [k for k, row in zip(names, v) if not np.isfinite(row).all()]
        raise ValueError(f"{name}: non-finite parts for model(s) {bad}")
    flat = constant_parts(v)
    dropped = {p: _why_constant(v[:, j]) for j, p in enumerate(m.parts) if flat[j]}
    if len(dropped) == len(m.parts):
        return _undefined(m, name, f"every part ({', '.join(m.parts)}) is equal across the zoo "
                          "within 1e-6 of its largest |value|", dropped, strict)
    if dropped:
        warnings.warn(f"{name}: part(s) {', '.join(dropped)} left out of the combination: equal "
                      "across the zoo within 1e-6 of the largest |value| (min-max would rank "
                      "rounding noise)", ZooLevelWarning, stacklevel=2)
    scores = minmax_sum(v, m.part_weights)
    return Combined({k: float(s) for k, s in zip(names, scores)}, m.parts, dropped)


def _undefined(m, name, why, dropped, strict) -> Combined:
    if strict:
        raise ValueError(f"{m.title} is undefined for this zoo: {why}")
    warnings.warn(f"{name} is undefined for this zoo: {why}", ZooLevelWarning, stacklevel=3)
    return Combined(None, m.parts, dropped, why)


def _why_constant(col: np.ndarray) -> str:
    return f"equal across the zoo (from {col.min():.17g} to {col.max():.17g})"
