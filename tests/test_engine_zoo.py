"""The batched engine over zoos: batch sizes, precisions, devices.

Engine = reference is asserted in the shared tester (test_catalogue.py) only; here
the engine is compared with itself: batch_size changes no score (1e-12), "fast"
(float32) ranks a zoo as "exact" does (values within 1e-3 relative or 1e-4), a CUDA
zoo equals the CPU one (1e-8).
"""
import numpy as np
import pytest
import torch

import te_gpu

from helpers import class_features, ragged_zoo


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
