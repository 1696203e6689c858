r"""LEEP (Nguyen et al., ICML 2020) and NCE (Tran et al., ICCV 2019), from the source
model's predictions.

Input: :math:`\theta_i\in\Delta^{K}`, the source model's softmax over its own K
classes for target sample i (N x K, rows summing to 1), and the target labels.

**LEEP**: the empirical joint of target label y and source class z, the
conditional, and the log of the "expected empirical prediction":

.. math::
    \hat P(y,z)=\frac1N\sum_{i:y_i=y}\theta_i(z),\quad
    \hat P(y|z)=\frac{\hat P(y,z)}{\sum_{y'}\hat P(y',z)},\quad
    \mathrm{LEEP}=\frac1N\sum_i\log\sum_z\theta_i(z)\hat P(y_i|z).

A source class no sample gives any mass has :math:`\hat P(\cdot|z)` := 0
(tllib and thuml/LogME divide 0 by 0 and return NaN); its
:math:`\theta_i(z)` are all 0, so it adds nothing.

**NCE**: the source model's hard predictions :math:`z_i=\arg\max_z\theta_i(z)`
(first maximum on ties) as pseudo labels; with the count joint
:math:`\hat P(y,z)=\#\{i:y_i=y,z_i=z\}/N`,

.. math::
    \mathrm{NCE}=-H(Y|Z)=\sum_{y,z}\hat P(y,z)\log\frac{\hat P(y,z)}{\hat P(z)}
    \quad(0\log 0=0).

(tllib and thuml/LogME add 1e-20 inside the log: a change below 1e-18.)
Both scores are at most 0 and classification-only.
"""
from __future__ import annotations

import numpy as np

from .._checks import as_labels, as_probabilities


def _inputs(predictions, labels, name: str, regression: bool):
    if regression:
        raise ValueError(f"{name} is defined for class labels only; it has no regression form")
    codes, classes = as_labels(labels)
    return as_probabilities(predictions, codes.size), codes, classes.size


def leep(predictions, labels, *, regression: bool = False) -> float:
    """LEEP of one source model (higher is better, at most 0)."""
    theta, codes, c = _inputs(predictions, labels, "LEEP", regression)
    n = theta.shape[0]
    joint = np.zeros((c, theta.shape[1]))
    np.add.at(joint, codes, theta / n)
    col = joint.sum(axis=0)
    cond = joint / np.where(col > 0, col, 1.0)            # P(y|z), 0 on unused source classes
    eep = (theta * cond[codes]).sum(axis=1)
    return float(np.log(eep).mean())


def nce(predictions, labels, *, regression: bool = False) -> float:
    """NCE of one source model from its argmax predictions (higher is better, at most 0)."""
    theta, codes, c = _inputs(predictions, labels, "NCE", regression)
    n, k = theta.shape
    z = theta.argmax(axis=1)
    joint = np.bincount(codes * k + z, minlength=c * k).reshape(c, k) / n
    pz = joint.sum(axis=0)
    cond = joint / np.where(pz > 0, pz, 1.0)               # P(y|z)
    used = joint > 0                                       # 0 log 0 = 0
    return float((joint[used] * np.log(cond[used])).sum())
