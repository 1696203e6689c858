"""Synthetic, class-structured features for tests (generated, never stored)."""
import numpy as np


def class_features(seed, n=200, d=32, c=4, spread=3.0, noise=1.0, sizes=None, dtype=np.float64):
    """Features = class mean + Gaussian noise; ``sizes`` fixes (imbalanced) class counts."""
    rng = np.random.default_rng(seed)
    if sizes is None:
        y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    else:
        y = np.repeat(np.arange(len(sizes)), sizes)
        c = len(sizes)
    rng.shuffle(y)
    centres = rng.normal(scale=spread, size=(c, d))
    x = centres[y] + rng.normal(scale=noise, size=(y.size, d))
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
