r"""Tied and saturated scores: models a metric cannot tell apart.

A metric that gives several models the same score cannot order them, and
:math:`\tau_w` then depends on how the tie happens to fall against the
accuracies (it can turn negative with nothing else wrong). The usual cause is
saturation: with fewer samples than feature dimensions (N < D) the classes of
the target set are linearly separable in every model's features, so SFDA
(a mean probability of the true class) reaches its maximum 1, GBC
(:math:`-\sum \exp(-BD)`) its maximum 0 to 1e-17 and H-score its maximum C - 1,
for every good model alike.

Definition. For the scores :math:`s_1..s_n` one metric gives n models, let
:math:`\epsilon = 10^{-6} \max_l |s_l|`. Sort the scores; consecutive scores
closer than or equal to :math:`\epsilon` belong to one group (single linkage);
a group of two or more models is a *tie*. It is *saturated* when every score
of the group is within :math:`\epsilon` of a known bound of the metric
(declared in :mod:`te_gpu.catalogue`, ``Metric.bounds``).

Why :math:`10^{-6}` of the largest magnitude: te_gpu's engine agrees with its
float64 reference to 1e-6 relative (the catalogue's default parity tolerance;
``precision="fast"`` only to 1.5e-5), so a difference below that is within
te_gpu's own numerical uncertainty and the order it gives is rounding, not
signal. The scale is the zoo's largest magnitude rather than each pair's: a
saturated GBC of -1e-25 against -1e-17 differs by orders of magnitude
pairwise, yet both are 0 to 17 digits beside a model at -3.7.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RELATIVE_TOLERANCE", "Tie", "find_ties", "tie_line", "tie_lines"]

RELATIVE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Tie:
    """Models whose scores are equal within the tolerance (see the module's docstring)."""
    models: tuple
    low: float
    high: float
    bound: str | None = None     # e.g. "maximum 1" when saturated


def _declared(metric):
    """The catalogue's declaration of ``metric`` (its bounds), or None for a name it lacks."""
    from te_gpu import catalogue

    return catalogue.METRICS.get(str(metric).lower()) if metric else None


def _metric_of(label: str) -> str:
    """``"sfda+released"`` -> ``"sfda"``."""
    return str(label).split("+", 1)[0].lower()


def find_ties(scores: dict, *, metric: str | None = None, rtol: float = RELATIVE_TOLERANCE) -> list:
    r"""The ties among ``{model: score}`` (list of :class:`Tie`, best scores first: the
    highest, or the lowest for a ``metric`` whose lower scores are better).

    ``metric`` (e.g. ``"sfda"``) names the known bounds to test for saturation.
    Non-finite scores and a ``"duration"`` entry are ignored. All scores 0:
    one tie at 0 (:math:`\epsilon = 0`, exact equality).
    """
    if not (isinstance(rtol, (int, float)) and rtol >= 0 and math.isfinite(rtol)):
        raise ValueError(f"rtol must be a finite number >= 0, got {rtol!r}")
    values = {m: float(v) for m, v in scores.items()
              if m != "duration" and isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(v)}
    if len(values) < 2:
        return []
    order = list(values)                                 # the input's order, for the names
    eps = rtol * max(abs(v) for v in values.values())
    ranked = sorted(values, key=values.get)
    groups, current = [], [ranked[0]]
    for prev, model in zip(ranked, ranked[1:]):
        if values[model] - values[prev] <= eps:
            current.append(model)
        else:
            groups.append(current)
            current = [model]
    groups.append(current)
    bounds = _declared(metric).bounds if _declared(metric) else ()
    ties = []
    from te_gpu.catalogue import orientation

    best_first = reversed(groups) if orientation(metric or "") > 0 else groups
    for group in best_first:
        if len(group) < 2:
            continue
        low, high = values[group[0]], values[group[-1]]
        bound = next((f"{side} {b:g}" for b, side in bounds
                      if max(abs(values[m] - b) for m in group) <= eps), None)
        ties.append(Tie(tuple(sorted(group, key=order.index)), low, high, bound))
    return ties


def _describe(tie: Tie, rtol: float) -> str:
    """``5 models one score (1 = its maximum: saturated): a, b, c, d, e``."""
    if tie.low == tie.high:
        value, within = f"{tie.low:.6g}", ""
    else:
        low, high = f"{tie.low:.3g}", f"{tie.high:.3g}"
        value = low if low == high else f"{low} to {high}"
        within = f" to {rtol:g} of its largest |score|"
    if tie.bound:
        side, bound = tie.bound.split(" ", 1)
        value += f" = its {side}{'' if tie.low == tie.high else ' ' + bound}: saturated"
    return f"{len(tie.models)} models one score{within} ({value}): {', '.join(tie.models)}"


def tie_line(label: str, scores: dict, models=None, *, rtol: float = RELATIVE_TOLERANCE) -> str | None:
    """One line naming the tied models of one score and what helps, or None without ties.

    ``models`` restricts the scores to those models (e.g. the ones with an accuracy).
    """
    if models is not None:
        chosen = set(models)
        scores = {m: v for m, v in scores.items() if m in chosen}
    metric = _metric_of(label)
    ties = find_ties(scores, metric=metric, rtol=rtol)
    if not ties:
        return None
    if "+" in str(label):
        helps = "more samples (N > D) or a smaller SA dimension (--pca-dim)"
    else:
        helps = "SA (--sa released: PCA to 64 dimensions first), more samples (N > D) or PCA"
    declared = _declared(metric)
    note = f" ({declared.bound_note})" if declared and declared.bound_note else ""
    return (f"ties: {label} gives " + "; ".join(_describe(t, rtol) for t in ties)
            + f"{note}; it cannot order them. Try {helps}.")


def tie_lines(scores_by_label: dict, models=None, *, rtol: float = RELATIVE_TOLERANCE) -> list:
    """:func:`tie_line` of every label that has ties, in the order given.

    ``models``: None (all), a list for every label, or ``{label: [models]}``.
    """
    lines = []
    for label, scores in scores_by_label.items():
        chosen = models.get(label) if isinstance(models, dict) else models
        line = tie_line(label, scores, chosen, rtol=rtol)
        if line:
            lines.append(line)
    return lines
