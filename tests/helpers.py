"""Synthetic features, predictions and zoos for the tests (generated, never stored),
and the public data sets the known answers are computed on.

One module for every test that generates inputs. Several generators draw in
different orders; each test's asserted values depend on its data, so a generator
is kept under its own name rather than rewritten (same seed, same bits).
"""
import numpy as np


# ------------------------------------------------------------------ public data

def digits():
    """scikit-learn's digits as float64 raw pixels: N = 1797, D = 64, three all-zero
    columns (rank 61)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.astype(np.float64), y


def iris():
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True)


# ------------------------------------------------------------------ one model's features

def class_features(seed, n=200, d=32, c=4, spread=3.0, noise=1.0, sizes=None, dtype=np.float64,
                   scale=1.0):
    """Features = ``scale`` x (class mean + Gaussian noise); every class present, labels
    shuffled; ``sizes`` fixes (imbalanced) class counts."""
    rng = np.random.default_rng(seed)
    if sizes is None:
        y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    else:
        y = np.repeat(np.arange(len(sizes)), sizes)
        c = len(sizes)
    rng.shuffle(y)
    centres = rng.normal(scale=spread, size=(c, d))
    x = scale * (centres[y] + rng.normal(scale=noise, size=(y.size, d)))
    return x.astype(dtype), y


def random_orthogonal(seed, d):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def dead_unit_features(seed, n, d, c):
    """Class-structured ReLU features as real CNNs give them: 3 dead units (all zero) and a
    duplicated column; rank-deficient with N > D."""
    x, y = class_features(seed, n=n, d=d, c=c, spread=1.5)
    x = 2.0 * np.maximum(x, 0.0)
    x[:, :3] = 0.0
    x[:, 5] = x[:, 6]
    return x, y


def deficient_features(seed, n, d, c=5, dead=0, dup=0, sizes=None):
    """Class features with ``dead`` all-zero columns and ``dup`` exact copies (x2) of others."""
    x, y = class_features(seed, n=n, d=d, c=c, spread=1.0, sizes=sizes)
    rng = np.random.default_rng(seed)
    cols = rng.permutation(d)
    x[:, cols[:dead]] = 0.0
    for j in cols[dead:dead + dup]:
        x[:, j] = 2.0 * x[:, cols[-1 - (j % 5)]]
    return x, y


def relu_features(seed, n, d, c=6, dead=0, dup=0, collinear=0, tiny=0, scale=3.0):
    """Class-structured ReLU features of rank < D: ``dead`` all-zero columns, ``dup``
    duplicated columns, ``collinear`` columns that are combinations of two others,
    ``tiny`` columns scaled by 1e-6 (a real direction far below the others)."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    z = 1.5 * rng.normal(size=(c, 24))[y] + rng.normal(size=(n, 24))
    x = scale * np.maximum(z @ rng.normal(size=(24, d)) / 5 + 0.3 * rng.normal(size=d), 0.0)
    cols = rng.permutation(d)
    x[:, cols[:dead]] = 0.0
    for j in cols[dead:dead + dup]:
        x[:, j] = x[:, rng.integers(d)]
    for j in cols[dead + dup:dead + dup + collinear]:
        a, b = rng.choice(d, 2, replace=False)
        x[:, j] = 0.7 * x[:, a] - 1.3 * x[:, b]
    x[:, cols[dead + dup + collinear:dead + dup + collinear + tiny]] *= 1e-6
    return x, y


def spectrum_features(seed, n, d, decay=0.7, shift=5.0, dtype=np.float64):
    """N x D features with a geometric spectrum, a random rotation and a mean offset."""
    rng = np.random.default_rng(seed)
    scales = 3.0 * decay ** np.arange(d)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    x = (rng.normal(size=(n, d)) * scales) @ q.T + shift * rng.normal(size=d)
    return x.astype(dtype)


# ------------------------------------------------------------------ source-model predictions

def softmax_predictions(seed, n=90, k=6, c=3):
    """Softmax rows over ``k`` source classes, the first ``c`` boosted for their target class."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    logits = rng.normal(size=(n, k)) + 2.0 * np.eye(c, k)[y]
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), y


def dirichlet_predictions(seed, n, k, *, unused=0, ties=0):
    """Dirichlet softmax rows of B = 3 source models; ``unused`` source classes get no
    mass at all, ``ties`` rows are uniform (argmax ties)."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(k, 0.3), size=(3, n))
    if unused:
        p[:, :, :unused] = 0.0
        p /= p.sum(-1, keepdims=True)
    p[:, :ties] = 1.0 / k
    return p


# ------------------------------------------------------------------ zoos

def ragged_zoo(seed, n=160, c=4, widths=(12, 30, 12, 20, 30)):
    """Models of several widths on one label vector; each model's class spread is drawn."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    zoo = {}
    for i, d in enumerate(widths):
        centres = rng.normal(scale=rng.uniform(0.1, 0.6), size=(c, d))
        zoo[f"model_{i}_{d}"] = 3 * (centres[y] + rng.normal(size=(n, d)))
    return zoo, y


def width_zoo(seed, n, widths, *, spread, names=None, dtype=None, c=3):
    """Models of the given widths, 3 x (class mean + noise), one label vector (unshuffled
    draws: labels, then each model's centres and noise). ``names`` default to m0, m1, ..."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    names = names or [f"m{i}" for i in range(len(widths))]
    zoo = {}
    for name, d in zip(names, widths):
        x = 3 * (rng.normal(scale=spread, size=(c, d))[y] + rng.normal(size=(n, d)))
        zoo[name] = x if dtype is None else x.astype(dtype)
    return zoo, y


def three_model_zoo(seed, n=80, c=4):
    """Three models sharing one (shuffled) label vector, different widths and scales."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    rng.shuffle(y)
    zoo = {}
    for name, d, spread, scale in (("r18", 12, 0.4, 4.0), ("r50", 20, 1.0, 3.0),
                                   ("vit", 9, 2.0, 2.5)):
        centres = rng.normal(scale=spread, size=(c, d))
        zoo[name] = scale * (centres[y] + rng.normal(size=(n, d)))
    return zoo, y


def stacked_copies(x):
    """Three same-width models as one batch: the features, 0.3 x them, their columns reversed."""
    return np.stack([x, 0.3 * x, x[:, ::-1].copy()])


# ------------------------------------------------------------------ comparisons

def rel(a, b):
    """max relative difference of ``a`` from ``b`` (scalars or sequences); NaN never passes."""
    a, b = np.atleast_1d(np.asarray(a, float)), np.atleast_1d(np.asarray(b, float))
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b)), (a, b)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def labels_of(y):
    """The engine's Labels of integer labels (any integers: codes by sorted value)."""
    import torch

    from te_gpu.engine.stats import Labels

    codes = torch.as_tensor(np.unique(y, return_inverse=True)[1].reshape(-1))
    return Labels.from_codes(codes, int(codes.max()) + 1, torch.float64)


def check_known_answer(metric, x, y, want, tol, sa=None, **opts):
    """The reference and the engine give a published value within ``tol`` (relative),
    the "fast" engine within 1e-3."""
    import pytest

    import te_gpu
    import te_gpu.reference as ref

    assert ref.score(x, y, metric=metric, sa=sa, **opts) == pytest.approx(want, rel=tol)
    assert te_gpu.score(x, y, metric=metric, sa=sa, **opts) == pytest.approx(want, rel=tol)
    fast = te_gpu.score(x, y, metric=metric, sa=sa, precision="fast", **opts)
    assert fast == pytest.approx(want, rel=1e-3)


# rank-deficient inputs for invariances that hold in exact arithmetic
RANK_DEFICIENT = {
    "digits": digits,
    "duplicated": lambda: relu_features(1, 500, 96, dup=16),
    "n_below_d": lambda: relu_features(4, 90, 140, dead=14, dup=6),
}


# ------------------------------------------------------------------ source models on public data

def lda_source(x, y_source, fit_rows=slice(None)):
    """A deterministic public "source model": scikit-learn's closed-form shrinkage LDA
    (lsqr solver, Ledoit-Wolf), trained on a different label set; its predict_proba.
    (LogisticRegression was tried: lbfgs's stopping point moved LEEP by 4e-8.)"""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    return LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(
        x[fit_rows], y_source[fit_rows]).predict_proba(x)


def digits_source_mod5():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return lda_source(x / 16.0, y % 5), y                       # K = 5 source, C = 10 target


def digits_source_half():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return lda_source(x / 16.0, y, slice(None, None, 2)), (y >= 5).astype(int)  # K = 10, C = 2


def iris_source_setosa():
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return lda_source(x, (y == 0).astype(int)), y              # K = 2, C = 3


# ------------------------------------------------------------------ oracles written out

# small cases for the SFDA / LDA solvers: N > D, N < D, imbalanced, binary
SOLVER_CASES = [
    dict(seed=0, n=150, d=12, c=3, spread=1.0),          # N > D
    dict(seed=1, n=40, d=60, c=4, spread=0.5),           # N < D
    dict(seed=2, n=0, d=8, sizes=[60, 9, 3], spread=0.7),  # imbalanced
    dict(seed=3, n=80, d=10, c=2, spread=0.4),           # binary
]


def class_stats(x, y):
    """Class means, priors and the prior-weighted within-class scatter (numpy, by loops)."""
    c = y.max() + 1
    means = np.stack([x[y == k].mean(0) for k in range(c)])
    priors = np.bincount(y) / len(y)
    sw = sum(priors[k] * np.cov(x[y == k].T, bias=True) for k in range(c))
    return means, priors, np.atleast_2d(sw)


def heads_called(monkeypatch) -> list:
    """[(prefix, metric, models)] of every engine head run (core.metric_heads), in order:
    prefix "" on raw features, "sa_" after SA; models: the batch's size."""
    from te_gpu.engine import core

    calls, real = [], core.metric_heads

    def spy(shared, metrics, opts, *, timer=None, prefix=""):
        calls.extend((prefix, m, shared.x.shape[0]) for m in metrics)
        return real(shared, metrics, opts, timer=timer, prefix=prefix)

    monkeypatch.setattr(core, "metric_heads", spy)
    return calls
