"""The batched torch engine against the float64 reference (issue: engine parity).

Tolerances (precision="exact", float64): LogME 1e-8 relative, every other score
and NCTI part 1e-6 relative (measured: ~1e-12 or better). With SA on float32
input both sides run the PCA in float32, on different BLAS code: 1e-4.
"precision='fast'" (float32) is checked for ranking equality, not values.
"""
import numpy as np
import pytest
import torch

import te_gpu
import te_gpu.reference as ref

from helpers import class_features

TOL = {"logme": 1e-8, "sfda": 1e-6, "lda": 1e-6, "gbc": 1e-6}

CASES = {
    "n>d": dict(seed=0, n=240, d=24, c=5, spread=0.3),
    "n<d": dict(seed=1, n=40, d=70, c=4, spread=0.3),
    "binary": dict(seed=2, n=90, d=12, c=2, spread=0.3),
    "imbalanced": dict(seed=3, n=0, d=16, sizes=[120, 25, 6, 3], spread=0.4),
    "many-classes": dict(seed=4, n=0, d=10, sizes=[3] * 150, spread=0.5),
    # D above NCTI's 64 PCA axes: on CPU the engine solves for the top eigenpairs only
    "wide": dict(seed=5, n=260, d=97, c=7, spread=0.3),
}


def rel(a, b):
    assert np.isfinite(a) and np.isfinite(b)
    return abs(a - b) / max(abs(b), 1e-300)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("metric", list(TOL))
@pytest.mark.parametrize("sa", [None, "released", "described", "pca-only"])
def test_metric_equals_reference(case, metric, sa):
    x, y = class_features(**CASES[case])
    x = 2.5 * x  # open the SA gate
    got = te_gpu.score(x, y, metric=metric, sa=sa)
    want = ref.score(x, y, metric=metric, sa=sa)
    assert rel(got, want) <= TOL[metric]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("scale", [3.0, 0.01])  # the 'svd' and the 'eigen' LDA branch
@pytest.mark.parametrize("lda_scaling", ["n_minus_c", "n"])
def test_ncti_parts_equal_reference(case, scale, lda_scaling):
    x, y = class_features(**CASES[case])
    got = te_gpu.ncti_parts(scale * x, y, lda_scaling=lda_scaling)
    want = ref.ncti_parts(scale * x, y, lda_scaling=lda_scaling)
    for g, w in zip(got, want):
        assert rel(g, w) <= 1e-6


def test_logme_corrected_and_regression_equal_reference():
    x, y = class_features(5, n=30, d=50, c=3, spread=0.3)
    assert rel(te_gpu.logme(x, y, corrected=True), ref.logme(x, y, corrected=True)) <= 1e-8
    t = np.random.default_rng(5).normal(size=(30, 2))
    assert rel(te_gpu.logme(x, t, regression=True), ref.logme(x, t, regression=True)) <= 1e-8


def test_gbc_diagonal_equals_reference():
    x, y = class_features(6, n=200, d=20, c=6, spread=0.3)
    assert rel(te_gpu.gbc(x, y, gaussian="diagonal"), ref.gbc(x, y, gaussian="diagonal")) <= 1e-6


@pytest.mark.parametrize("variant", ["released", "described", "pca-only"])
def test_spread_attract_features_equal_reference(variant):
    x, y = class_features(7, n=150, d=90, c=6, spread=0.4)
    x = 3 * x
    z, info = te_gpu.spread_attract(x, y, variant=variant)
    zr, info_r = ref.spread_attract(x, y, variant=variant)
    assert info["applied"] and info_r["applied"]
    assert info["pca_dim"] == info_r["pca_dim"] == 64
    assert torch.allclose(z, torch.as_tensor(zr), rtol=0, atol=1e-9 * np.abs(zr).max())
    assert info["gate_value"] == pytest.approx(info_r["gate_value"], rel=1e-10)
    assert info["displacement_norm"] == pytest.approx(info_r["displacement_norm"], rel=1e-8, abs=1e-12)


def test_sa_on_float32_input_follows_the_float32_pca():
    x, y = class_features(8, n=200, d=100, c=5, spread=0.4, dtype=np.float32)
    x = 3 * x
    for metric in ("logme", "sfda", "lda", "gbc"):
        assert rel(te_gpu.score(x, y, metric=metric, sa="released"),
                   ref.score(x, y, metric=metric, sa="released")) <= 1e-4


def ragged_zoo(seed, n=160, c=4, widths=(12, 30, 12, 20, 30)):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    zoo = {}
    for i, d in enumerate(widths):
        centres = rng.normal(scale=rng.uniform(0.1, 0.6), size=(c, d))
        zoo[f"model_{i}_{d}"] = 3 * (centres[y] + rng.normal(size=(n, d)))
    return zoo, y


def test_score_zoo_ragged_widths_equal_reference():
    zoo, y = ragged_zoo(9)
    res = te_gpu.score_zoo(zoo, y, metrics=("logme", "sfda", "lda", "gbc", "ncti"),
                           sa=[None, "released"], progress=False)
    for sa in (None, "released"):
        for metric in ("logme", "sfda", "lda", "gbc"):
            label = res.label(metric, sa)
            for name, x in zoo.items():
                assert rel(res[label][name], ref.score(x, y, metric=metric, sa=sa)) <= TOL[metric]
        want = ref.ncti(zoo, y, sa=sa)
        got = res[res.label("ncti", sa)]
        for name in zoo:
            assert got[name] == pytest.approx(want[name], rel=1e-6, abs=1e-9)
    assert set(res.sa["released"]) == set(zoo)
    assert res.timings["total"] > 0


def test_score_zoo_batch_size_does_not_change_scores():
    zoo, y = ragged_zoo(10)
    a = te_gpu.score_zoo(zoo, y, metrics=("logme", "sfda", "ncti"), batch_size=1, progress=False)
    b = te_gpu.score_zoo(zoo, y, metrics=("logme", "sfda", "ncti"), batch_size=8, progress=False)
    for label in a.labels:
        for name in zoo:
            assert a[label][name] == pytest.approx(b[label][name], rel=1e-12, abs=1e-14)


def test_fast_precision_ranks_like_exact():
    zoo, y = ragged_zoo(11, widths=(16, 16, 24, 24, 32, 8))
    exact = te_gpu.score_zoo(zoo, y, metrics=("logme", "sfda", "lda", "gbc", "ncti"), progress=False)
    fast = te_gpu.score_zoo(zoo, y, metrics=("logme", "sfda", "lda", "gbc", "ncti"),
                            precision="fast", progress=False)
    for label in exact.labels:
        assert [m for m, _ in exact.ranking(label)] == [m for m, _ in fast.ranking(label)]
        for name in zoo:
            assert fast[label][name] == pytest.approx(exact[label][name], rel=1e-3, abs=1e-4)


def test_tensor_inputs_and_labels_any_integers():
    x, y = class_features(12, n=100, d=10, c=3, spread=0.3)
    t = torch.as_tensor(x, dtype=torch.float32).requires_grad_(True)
    got = te_gpu.sfda(t, torch.as_tensor(np.array([3, 7, 100])[y]))
    assert rel(got, ref.sfda(x.astype(np.float32), y)) <= 1e-6
    assert t.grad is None


def test_unknown_device_and_precision():
    x, y = class_features(13, n=50, d=5, c=2)
    with pytest.raises(ValueError, match="precision"):
        te_gpu.lda(x, y, precision="half")
    with pytest.raises(ValueError, match="device"):
        te_gpu.lda(x, y, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            te_gpu.lda(x, y, device="cuda")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("case", list(CASES))
def test_cuda_equals_reference(case):
    x, y = class_features(**CASES[case])
    x = 2.5 * x
    for metric, tol in TOL.items():
        for sa in (None, "released"):
            got = te_gpu.score(x, y, metric=metric, sa=sa, device="cuda")
            assert rel(got, ref.score(x, y, metric=metric, sa=sa)) <= tol
    for g, w in zip(te_gpu.ncti_parts(x, y, device="cuda"), ref.ncti_parts(x, y)):
        assert rel(g, w) <= 1e-6


@cuda
def test_cuda_zoo_equals_cpu_zoo():
    zoo, y = ragged_zoo(14)
    a = te_gpu.score_zoo(zoo, y, sa=[None, "released"], device="cuda", progress=False)
    b = te_gpu.score_zoo(zoo, y, sa=[None, "released"], device="cpu", progress=False)
    for label in a.labels:
        for name in zoo:
            assert a[label][name] == pytest.approx(b[label][name], rel=1e-8, abs=1e-12)


def test_fast_precision_with_n_below_d_is_finite_and_close():
    # N < D: the float32 within scatter is singular/indefinite; SFDA stays float64
    x, y = class_features(15, n=60, d=150, c=3, spread=0.2)
    for metric in ("logme", "sfda", "lda", "gbc"):
        fast = te_gpu.score(x, y, metric=metric, precision="fast")
        exact = te_gpu.score(x, y, metric=metric)
        assert np.isfinite(fast)
        assert fast == pytest.approx(exact, rel=2e-3, abs=1e-4)
