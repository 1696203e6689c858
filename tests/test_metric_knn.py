"""kNN (leave-one-out accuracy): tie rules, chunked queries, cosine on zero rows, values
public code gives on public data, bad input."""
import numpy as np
import pytest
import torch

import te_gpu.engine.knn as engine_knn
from te_gpu.engine.knn import knn_batched
from te_gpu.reference.knn import knn

from helpers import class_features, digits, iris, labels_of


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The matrices here are small: a second thread only adds contention (on a busy
    2-core machine torch's kNN blocks ran ~80x slower with two). Restored after."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


def test_knn_tie_rules():
    """Points -1, 0, 1 on a line (indices 2, 0, 1): exact distance ties."""
    x = np.array([[0.0], [1.0], [-1.0]])
    y = np.array([0, 0, 1])
    lab = labels_of(y)
    # k = 1: sample 0 is equally far from 1 (class 0) and 2 (class 1): the lower index
    # wins, so samples 0 and 1 are right, sample 2 wrong
    # k = 2: samples 0 and 1 see one vote per class: the smaller class 0 wins
    for k in (1, 2):
        assert knn(x, y, k=k) == pytest.approx(2 / 3, abs=0)
        assert knn_batched(torch.as_tensor(x)[None], lab, k=k).item() == pytest.approx(2 / 3, abs=0)


def test_knn_engine_never_builds_an_n_by_n_block(monkeypatch):
    x, y = class_features(15, n=300, d=8, c=3, spread=0.5)
    shapes = []
    original = engine_knn._keys

    def spy(q, xx, sq):
        out = original(q, xx, sq)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(engine_knn, "_keys", spy)
    got = knn_batched(torch.as_tensor(x)[None], labels_of(y), k=5, chunk=32)
    assert max(s[1] for s in shapes) == 32 and len(shapes) == 10
    assert got.item() == knn(x, y, k=5, chunk=1000)


def test_knn_cosine_zero_rows():
    x, y = class_features(16, n=60, d=6, c=2, spread=1.0)
    x[:5] = 0.0
    for k in (1, 3):
        want = knn(x, y, k=k, distance="cosine")
        got = knn_batched(torch.as_tensor(x)[None], labels_of(y), k=k, distance="cosine")
        assert got.item() == want


# ------------------------------------------------------------------ known answers
# The public code below, run locally on scikit-learn's data (numpy 2.4.6, scipy 1.17.1,
# scikit-learn 1.9.1, torch 2.14.1; none of its code is in te_gpu):
# * flairNLP/transformer-ranker at commit 43b42c1ba6927f3ae559e379c5a2084cc4d1415f:
#   ``transformer_ranker/estimators/nearestneighbors.py`` (``NearestNeighbors(k).fit(...,
#   distance_metric=...)``, micro-F1 = accuracy for C > 2, returned as float32; the
#   counts below are its values times N).

# transformer-ranker NearestNeighbors: correct leave-one-out votes out of N
KNN_KNOWN = [
    ("digits", "euclidean", {1: 1776, 3: 1777, 5: 1775, 13: 1769}),
    ("digits", "cosine", {1: 1777, 3: 1773, 5: 1775, 13: 1764}),
    ("iris", "euclidean", {1: 144, 3: 144, 5: 145, 13: 145}),
    ("iris", "cosine", {1: 144, 3: 147, 5: 145, 13: 145}),
]


@pytest.mark.parametrize("data,distance,counts", KNN_KNOWN, ids=[f"{d}-{m}" for d, m, _ in KNN_KNOWN])
def test_knn_known_answer(data, distance, counts):
    x, y = {"digits": digits, "iris": iris}[data]()
    xt, lab = torch.as_tensor(x, dtype=torch.float64)[None], labels_of(y)
    for k, count in counts.items():
        want = count / y.size
        # transformer-ranker returns float32
        assert np.float32(want) == np.float32(count / y.size)
        assert knn(x, y, k=k, distance=distance) == want
        assert knn_batched(xt, lab, k=k, distance=distance, chunk=512).item() == want


# --------------------------------------------------------------------- bad input


def test_bad_options():
    x, y = class_features(21, n=30, d=4, c=3)
    with pytest.raises(ValueError, match="distance"):
        knn(x, y, distance="manhattan")
    for k in (0, 2.5, True):
        with pytest.raises(ValueError, match="k must"):
            knn(x, y, k=k)
    with pytest.raises(ValueError, match="at least 31 samples"):
        knn(x, y, k=30)
    with pytest.raises(ValueError, match="chunk"):
        knn(x, y, chunk=0)


def test_engine_refuses_unknown_options():
    x, lab = torch.zeros((1, 6, 2), dtype=torch.float64), labels_of(np.array([0, 1] * 3))
    with pytest.raises(ValueError, match="distance"):
        knn_batched(x, lab, distance="manhattan")
    with pytest.raises(ValueError, match="at least 7 samples"):
        knn_batched(x, lab, k=6)
