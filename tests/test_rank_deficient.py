"""Real and rank-deficient features: invariances that hold in exact arithmetic.

Real CNN features are rank-deficient: dead ReLU units (all-zero columns), pixels
that are zero in every image, duplicated or collinear channels. Gaussian blobs
hid a LogME defect there (noise eigenvalues dropped instead of zeroed). Engine =
reference on such inputs is asserted in the shared tester (test_catalogue.py).
"""
import numpy as np
import pytest

import te_gpu
import te_gpu.reference as ref

from helpers import digits, rel, relu_features

INPUTS = {
    "digits": digits,
    "duplicated": lambda: relu_features(1, 500, 96, dup=16),
    "n_below_d": lambda: relu_features(4, 90, 140, dead=14, dup=6),
}


def features(name):
    return INPUTS[name]()


def digits_pixels():
    return digits()


# ------------------------------------------------------------------- invariances

@pytest.mark.parametrize("name", ["digits", "duplicated", "n_below_d"])
def test_dead_units_change_neither_logme_nor_lda_nor_ncti(name):
    # A zero column adds a zero eigenvalue, whose evidence term log(alpha) cancels
    # the column's share of D/2 log(alpha): the evidence of [X, 0] is that of X when
    # N > D. (Dropping the term instead made a model score higher for its dead units.)
    # LDA's dot products and NCTI's PCA do not see zero columns at all.
    x, y = features(name)
    padded = np.hstack([x, np.zeros((x.shape[0], 5))])
    if x.shape[0] > padded.shape[1]:
        assert rel(ref.logme(padded, y), ref.logme(x, y)) <= 1e-12
        assert rel(te_gpu.logme(padded, y), ref.logme(x, y)) <= 1e-10
    else:  # N <= D: the corrected evidence has the same invariance
        assert rel(ref.logme(padded, y, corrected=True), ref.logme(x, y, corrected=True)) <= 1e-12
    assert rel(ref.lda(padded, y), ref.lda(x, y)) <= 1e-12
    assert rel(te_gpu.ncti_parts(padded, y), ref.ncti_parts(x, y)) <= 1e-9


def test_noise_eigenvalues_are_zero_terms_not_missing_terms():
    # digits: 3 all-zero pixel columns. Every one of the D = 64 eigenvalues is a
    # term of the evidence; the 3 noise ones are exact zeros with zero projections.
    from te_gpu.reference.logme import spectrum

    x, y = digits_pixels()
    sigma, proj = spectrum(x, np.eye(10)[y])
    assert sigma.size == 64
    assert np.count_nonzero(sigma == 0.0) == 3
    assert np.all(proj[sigma == 0.0] == 0.0)
    assert np.all(sigma[sigma > 0] > 0.5)   # the smallest real eigenvalue is 0.74
