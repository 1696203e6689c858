r"""PED, potential energy descent (Li et al., ICCV 2023), float64 reference (SPEC 10.9).

A perturbation of the features applied before a metric (the released scripts:
SFDA by default, also NLEEP or LogME), the nearest relative of Spread/Attract.

1. Rescale by a reference distribution of the same model's features (the
   released scripts: its ImageNet validation features):
   :math:`z = (x - m) / \max(s, \epsilon)`, m and s the reference's per-dimension
   mean and population std, :math:`\epsilon = 10^{-3}`.
2. One step, on the class statistics of z: means :math:`\mu_c`, radii
   :math:`R_c = \sqrt{\sum_d \mathrm{Var}_c[z_d]}` (population). For each pair of
   classes a < b, :math:`d_{ab} = |\mu_b - \mu_a|`, overlap
   :math:`F_{ab} = \max(\nu (R_a + R_b) - d_{ab}, 0)` (:math:`\nu` = ``nsigma``)
   and displacement :math:`s_{ab} = \min(\tfrac12 \tau^2 k F_{ab}, F_{ab})`
   (:math:`\tau` = ``time_step``, k = ``constant``): class a moves by
   :math:`-s_{ab} u_{ab}` and class b by :math:`+s_{ab} u_{ab}`,
   :math:`u_{ab} = (\mu_b - \mu_a)/d_{ab}`: overlapping classes push each other
   apart. Every sample moves with its class; then :math:`x = z s' + m` with
   :math:`s' = \max(s, \epsilon)`.
3. Steps repeat from the moved features while the step's total move
   :math:`\sum_{c,d} |\delta_{cd}|` (in rescaled units) exceeds ``exit_ratio``
   times the first step's, at most ``max_steps`` (6) times; a step that falls
   to the ratio or below is discarded.

Classes with equal means have no direction between them and exert no force on
each other (the released code divides 0 by 0 there).
"""
from __future__ import annotations

import numpy as np

from .._checks import as_features, as_labels, check_ped_options
from ._common import class_means, class_radii


def class_moves(z: np.ndarray, codes: np.ndarray, n_classes: int, time_step: float,
                nsigma: float, constant: float) -> np.ndarray:
    """One step's displacement of each class (C x D), in rescaled units."""
    counts, means = class_means(z, codes, n_classes)
    radius = class_radii(z, codes, means, counts)
    moves = np.zeros_like(means)
    for a in range(n_classes):
        for b in range(a + 1, n_classes):
            gap = means[b] - means[a]
            d = float(np.sqrt((gap ** 2).sum()))
            overlap = max(abs(nsigma) * (radius[a] + radius[b]) - d, 0.0)
            if d == 0.0 or overlap == 0.0:
                continue
            step = min(0.5 * time_step ** 2 * constant * overlap, overlap)
            moves[a] -= step * gap / d
            moves[b] += step * gap / d
    return moves


def ped(features, labels, *, reference_features=None, time_step: float = 0.1,
        exit_ratio: float = 0.5, nsigma: float = 0.6, constant: float = 1.0,
        eps: float = 1e-3, max_steps: int = 6):
    """PED-moved features of one model and ``info`` (``steps`` taken, ``first_move``).

    ``reference_features``: the same model's features on the reference data set
    (any number of rows, the same D), which set the rescaling; None: the features
    themselves (te_gpu's default where no reference set is at hand, SPEC 10.9).
    """
    check_ped_options(time_step, exit_ratio, nsigma, constant, eps, max_steps)
    x = as_features(features)
    codes, classes = as_labels(labels, x.shape[0])
    ref = x if reference_features is None else as_features(reference_features, "reference_features")
    if ref.shape[1] != x.shape[1]:
        raise ValueError(f"reference_features have {ref.shape[1]} columns, features {x.shape[1]}")
    centre, scale = ref.mean(axis=0), np.maximum(ref.std(axis=0), eps)
    first, steps = None, 0
    while steps < max_steps:
        moves = class_moves((x - centre) / scale, codes, classes.size, time_step, nsigma, constant)
        total = float(np.abs(moves).sum())
        if first is None:
            first = total
        if first == 0.0 or total / first <= exit_ratio:   # the released test, as a ratio
            break
        x = ((x - centre) / scale + moves[codes]) * scale + centre
        steps += 1
    return x, dict(steps=steps, first_move=first)
