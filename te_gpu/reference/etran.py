r"""ETran (Gholami et al., ICCV 2023) as released for classification (SPEC 10.8).

Two per-model parts, combined over the zoo:

* energy: the features read as logits, :math:`e_n = \log\sum_d \exp x_{nd}`
  (the negative free energy at temperature 1); the part is the mean of the
  :math:`k = \max(1, \lfloor m N / 1000 \rfloor)` smallest :math:`e_n`
  (``energy_per_mille`` m = 5: the lowest 0.5 % of the samples, as released);
* lda: the mean over samples of the probability a Gaussian classifier with the
  class means :math:`\mu_c`, the class frequencies :math:`\pi_c` and an identity
  covariance gives the true class,
  :math:`p(c\mid x)\propto\pi_c\exp(x^T\mu_c-\tfrac12\lVert\mu_c\rVert^2)`.
  The released "LDA" reduces to this: its coefficients are
  :math:`M V V^T` for the full orthogonal eigenvector matrix V of ``eigh``,
  i.e. M itself (SPEC 10.8).

ETran of model l is :math:`0.15\,\mathrm{mm}(\text{energy}) + 0.85\,\mathrm{mm}(\text{lda})`
with mm the min-max over the zoo (:mod:`te_gpu.combine`).
"""
from __future__ import annotations

import numpy as np
import scipy.special

from .._checks import as_features, as_labels
from ._common import class_means, softmax

ENERGY_PER_MILLE = 5


def check_per_mille(energy_per_mille) -> int:
    """``energy_per_mille`` as an int in [1, 1000]; ValueError naming the option."""
    ok = isinstance(energy_per_mille, (int, np.integer)) and not isinstance(energy_per_mille, bool)
    if not ok or not 1 <= energy_per_mille <= 1000:
        raise ValueError(f"energy_per_mille must be an integer in [1, 1000], got {energy_per_mille!r}")
    return int(energy_per_mille)


def lowest_count(n: int, per_mille: int) -> int:
    """How many of the N samples the energy part averages (at least one)."""
    return max(1, per_mille * n // 1000)


def energy_part(x: np.ndarray, per_mille: int = ENERGY_PER_MILLE) -> float:
    """Mean of the lowest per-sample log-sum-exp of the features."""
    e = np.sort(scipy.special.logsumexp(x, axis=1))
    return float(e[:lowest_count(x.shape[0], per_mille)].mean())


def lda_part(x: np.ndarray, codes: np.ndarray, n_classes: int) -> float:
    """Mean true-class probability of the identity-covariance Gaussian classifier."""
    counts, means = class_means(x, codes, n_classes)
    logits = x @ means.T - 0.5 * (means ** 2).sum(axis=1) + np.log(counts / x.shape[0])
    p = softmax(logits)
    return float(p[np.arange(x.shape[0]), codes].mean())


def etran_parts(features, labels, *, energy_per_mille: int = ENERGY_PER_MILLE):
    """ETran's per-model parts ``(energy, lda)``; both higher is better."""
    per_mille = check_per_mille(energy_per_mille)
    x = as_features(features)
    codes, classes = as_labels(labels, x.shape[0])
    return energy_part(x, per_mille), lda_part(x, codes, classes.size)


def etran(zoo: dict, labels, *, energy_per_mille: int = ENERGY_PER_MILLE) -> dict:
    """ETran of every model of ``zoo`` ({name: features}): {name: score}.

    A part equal across the zoo is left out (:mod:`te_gpu.combine`); ValueError
    where nothing is left (one model, or every part equal).
    """
    from .score import zoo_score

    return zoo_score("etran", zoo, labels, energy_per_mille=energy_per_mille)
