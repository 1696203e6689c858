"""Property-based tests (hypothesis): SPEC's invariances, and "never a silent NaN"."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import te_gpu
import te_gpu.reference as ref
from te_gpu.engine.sa import attract_delta
from te_gpu.engine.stats import Labels

from helpers import random_orthogonal

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def labelled_features(draw, min_n=12, max_n=40, max_d=9, max_c=4):
    c = draw(st.integers(2, max_c))
    per = draw(st.lists(st.integers(3, max_n // c), min_size=c, max_size=c))
    d = draw(st.integers(2, max_d))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(c), per)
    scale = draw(st.sampled_from([0.05, 1.0, 20.0]))
    x = scale * (rng.normal(size=(c, d))[y] + rng.normal(size=(y.size, d)))
    return x, y, seed


@SETTINGS
@given(labelled_features())
def test_logme_rotation_invariant(case):
    x, y, seed = case
    q = random_orthogonal(seed, x.shape[1])
    a, b = te_gpu.logme(x, y), te_gpu.logme(x @ q, y)
    assert np.isfinite(a) and b == pytest.approx(a, rel=1e-7, abs=1e-9)


@SETTINGS
@given(labelled_features(), st.floats(-50, 50))
def test_spherical_gbc_rotation_and_translation_invariant(case, shift):
    x, y, seed = case
    q = random_orthogonal(seed, x.shape[1])
    # the 1e-4 floor acts per dimension, so invariance holds only above it
    for z in (x, x @ q):
        assume(min(z[y == c].var(axis=0, ddof=1).min() for c in np.unique(y)) > 1e-4)
    a, b = te_gpu.gbc(x, y), te_gpu.gbc(x @ q + shift, y)
    assert np.isfinite(a) and b == pytest.approx(a, rel=1e-7, abs=1e-12)


@SETTINGS
@given(labelled_features(min_n=16))
def test_ncti_parts_rotation_invariant(case):
    x, y, seed = case
    q = random_orthogonal(seed, x.shape[1])
    for g, w in zip(te_gpu.ncti_parts(x @ q, y), te_gpu.ncti_parts(x, y)):
        assert np.isfinite(w) and g == pytest.approx(w, rel=1e-6, abs=1e-9)


@SETTINGS
@given(labelled_features(), st.floats(1e-3, 0.5), st.floats(0.0, 2.0))
def test_attract_is_rotation_and_translation_equivariant(case, alpha, sigma):
    z, y, seed = case
    q = torch.as_tensor(random_orthogonal(seed, z.shape[1]))
    zt = torch.as_tensor(z)[None]
    lab = Labels.from_codes(torch.as_tensor(y), int(y.max()) + 1, torch.float64)
    d0 = attract_delta(zt, lab, alpha, sigma)
    d1 = attract_delta(zt @ q + 3.0, lab, alpha, sigma)
    assert torch.allclose(d1, d0 @ q, rtol=1e-8, atol=1e-9 * (1 + d0.abs().max()))


@SETTINGS
@given(labelled_features())
def test_engine_equals_reference(case):
    x, y, _ = case
    for metric in ("logme", "sfda", "lda", "gbc"):
        assert te_gpu.score(x, y, metric=metric) == pytest.approx(
            ref.score(x, y, metric=metric), rel=1e-6, abs=1e-10)


# Anything at all: each call must give a finite score or a clear ValueError/TypeError.
wild_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                        st.sampled_from([0.0, 1.0, -1.0, 1e-300, 1e300, 1e45]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 5)), elements=wild_values),
       st.lists(st.integers(-3, 3), min_size=1, max_size=12),
       st.sampled_from(["logme", "sfda", "lda", "gbc"]),
       st.sampled_from([None, "released"]))
def test_never_a_silent_nan(x, labels, metric, sa):
    y = np.resize(np.asarray(labels), x.shape[0])
    for lib in (te_gpu, ref):
        try:
            value = lib.score(x, y, metric=metric, sa=sa)
        except (ValueError, TypeError):
            continue
        assert np.isfinite(value), (lib.__name__, metric, sa, value)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays(np.float64, st.tuples(st.integers(2, 10), st.integers(1, 4)), elements=wild_values),
       st.integers(2, 3))
def test_never_a_silent_nan_zoo(x, n_models):
    y = np.arange(x.shape[0]) % 2
    with np.errstate(over="ignore"):
        zoo = {f"m{i}": x * (i + 1) for i in range(n_models)}
    try:
        res = te_gpu.score_zoo(zoo, y, progress=False)
    except (ValueError, TypeError):
        return
    for label in res.labels:
        assert all(np.isfinite(v) for v in res[label].values())
