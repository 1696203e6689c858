r"""The SA repository's ``LDA_Score``; SPEC 3.

The released code inverts the shrunk within scatter and hands the
non-symmetric product to a symmetric eigensolver, whose eigenvectors form an
orthogonal matrix E, so :math:`\mathrm{coef}=M E E^T=M`. The score therefore
reduces exactly to a nearest-class-mean softmax:

.. math::
    \mathrm{LDA}=\frac1N\sum_i\mathrm{softmax}_k\big(x_i\cdot\mu_k-\tfrac12|\mu_k|^2
    +\log\pi_k\big)[y_i].
"""
from __future__ import annotations

import numpy as np

from .._checks import as_features, as_labels
from ._common import class_means, softmax


def lda(features, labels) -> float:
    """LDA score of one model (higher is better)."""
    x = as_features(features)
    codes, classes = as_labels(labels, x.shape[0])
    n = x.shape[0]
    counts, means = class_means(x, codes, classes.size)
    logits = x @ means.T - 0.5 * (means ** 2).sum(axis=1) + np.log(counts / n)
    return float(softmax(logits)[np.arange(n), codes].mean())
