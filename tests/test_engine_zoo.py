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

from helpers import class_features, heads_called, ragged_zoo


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


@pytest.mark.parametrize("checkpointed", [False, True])
def test_only_scores_the_labels_asked_for_and_equals_the_full_product(
        checkpointed, tmp_path, monkeypatch):
    """only=: the labels of a regime's set, not every metric in every setting; the scores
    are those of the full product, and a checkpoint of them serves a later full run."""
    zoo, y = ragged_zoo(12)
    # a model whose SA gate stays shut (small variance): its scores after SA are its raw ones
    zoo["shut"] = 0.2 * np.maximum(zoo["model_1_30"], 0.0)
    zoo["shut"][:, :4] = 0.0                              # dead units
    args = dict(metrics=("knn", "sfda", "ncti"), sa=[None, "released"], progress=False)
    ck = tmp_path / "ck.json" if checkpointed else None
    full = te_gpu.score_zoo(zoo, y, **args)
    calls = heads_called(monkeypatch)

    def ran():
        return [(p, m) for p, m, _ in calls]

    only = ["knn", "sfda+released", "ncti+released"]
    part = te_gpu.score_zoo(zoo, y, only=only, checkpoint=ck, **args)
    assert sorted(part.scores) == sorted(only) and part.options["only"] == only
    for label in only:
        assert part.scores[label] == full.scores[label]
    assert part.sa["released"] == full.sa["released"]
    assert ("sa_", "knn") not in ran()                    # kNN after SA was not asked for
    closed = [m for m, info in full.sa["released"].items() if not info["applied"]]
    # raw SFDA only where SA left the features as they were (its score there is the raw one)
    assert ran().count(("", "sfda")) == 1 and closed == ["shut"]
    if checkpointed:                                      # the rest, from the same checkpoint
        calls.clear()
        again = te_gpu.score_zoo(zoo, y, checkpoint=ck, **args)
        assert ("sa_", "sfda") not in ran() and ("sa_", "ncti") not in ran()
        assert ran().count(("", "knn")) == 1              # raw kNN of the shut model only
        for label in full.scores:
            assert again.scores[label] == pytest.approx(full.scores[label], rel=1e-12)


def test_only_refuses_labels_outside_the_product():
    zoo, y = ragged_zoo(13)
    with pytest.raises(ValueError, match=r"\['knn\+released'\] is not among the labels"):
        te_gpu.score_zoo(zoo, y, metrics=("knn",), only=["knn+released"], progress=False)
    with pytest.raises(ValueError, match="nothing"):
        te_gpu.score_zoo(zoo, y, metrics=("knn",), only=[], progress=False)
    with pytest.raises(TypeError, match="list of labels"):
        te_gpu.score_zoo(zoo, y, metrics=("knn",), only="knn", progress=False)
