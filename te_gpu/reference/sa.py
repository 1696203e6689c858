r"""Spread/Attract feature perturbation (Khoba et al., WACV 2025); SPEC 7.

1. Gate: :math:`m` = mean of the two largest eigenvalues of the population
   covariance of the raw features. SA applies iff
   :math:`m > 9\ln 10/5` (the released test ``max(e^{-5m},10^{-10}) < 10^{-9}``).
2. Randomized PCA to :math:`n=\min(\text{pca\_dim},N,D)` dims, seed 1919
   (:func:`te_gpu.reference.pca.randomized_pca`).
3. Spread (variant ``"described"`` only; the released code computes it and
   discards it): :math:`x\leftarrow x+f\,(x-\mu_c)/|x-\mu_c|`.
4. Attract on the class statistics of the current features:
   :math:`R_c=\sqrt{\sum_d\mathrm{Var}_c[x_d]}` (population),
   :math:`d_{ab}=|\mu_a-\mu_b|`, :math:`W_{ab}=(d_{ab}-\sigma(R_a+R_b))/d_{ab}`,
   :math:`W_{aa}=0`, and
   :math:`\Delta=\alpha(\mathrm{diag}(W\mathbf 1)M-WM)`; every sample of class c
   moves by :math:`\Delta_c` (``"released"``) or :math:`-\Delta_c` (``"described"``:
   a true attraction, as the paper's words say). Classes with identical means
   have no direction between them and exert no force on each other.

Variant ``"pca-only"`` stops after step 2: the ablation that separates the
PCA's effect from Attract's.
"""
from __future__ import annotations

import numpy as np

from .._checks import as_features, as_labels
from ..catalogue import GATE_THRESHOLD, resolve_sa
from ._common import class_means, class_radii
from .pca import randomized_pca


def gate_value(x: np.ndarray) -> float:
    """Mean of the two largest eigenvalues of the population covariance (float64)."""
    xc = x - x.mean(axis=0)
    evals = np.linalg.eigvalsh(xc.T @ xc / x.shape[0])
    return float(evals[-2:].mean())


def pca_signal(s: np.ndarray, n: int, d: int, dtype) -> np.ndarray:
    """Which PCA components carry signal: ``s > sqrt(max(N, D)) eps s_max`` (eps of the
    PCA's precision).

    Features of rank r < pca_dim (dead units, duplicated or collinear columns,
    D < 64 raw pixels) leave pca_dim - r components whose exact scores are zero;
    the PCA returns them at rounding level (about 1e-16 s_max in float64, 1e-7 in
    float32), different in every implementation. Metrics that whiten (SFDA's
    1e-10 shrinkage, NCTI's standardisation) scale that noise up, so the released
    score hinged on it. Those components get their exact-arithmetic scores, zero;
    the floor sits about 20x above the noise measured at N = 1,500-1,800 and
    below the smallest real component of digits' pixels in float32 (1.2e-4 s_max).
    """
    return s > np.sqrt(max(n, d)) * np.finfo(dtype).eps * s[0]


def attract_delta(z: np.ndarray, codes: np.ndarray, n_classes: int, alpha: float,
                  sigma: float) -> np.ndarray:
    """Per-class displacement Delta (C x D) of the released Attract."""
    counts, means = class_means(z, codes, n_classes)
    radius = class_radii(z, codes, means, counts)
    dist = np.sqrt(((means[:, None, :] - means[None, :, :]) ** 2).sum(axis=2))
    with np.errstate(divide="ignore", invalid="ignore"):
        w = (dist - sigma * (radius[:, None] + radius[None, :])) / dist
    w[dist == 0] = 0.0  # includes the diagonal
    return alpha * (w.sum(axis=1)[:, None] * means - w @ means)


def spread(z: np.ndarray, codes: np.ndarray, n_classes: int, force: float) -> np.ndarray:
    """Push each sample ``force`` further from its class mean (a copy)."""
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    means = np.zeros((n_classes, z.shape[1]))
    np.add.at(means, codes, z)
    means /= counts[:, None]
    direction = z - means[codes]
    norm = np.linalg.norm(direction, axis=1, keepdims=True)
    step = np.divide(direction, norm, out=np.zeros_like(direction), where=norm > 0)
    return z + force * step


def spread_attract(features, labels, *, alpha: float = 0.005, sigma: float = 0.6,
                   force: float = 1.0, pca_dim: int = 64, gate: bool = True,
                   variant: str = "released"):
    """Perturb one model's features; returns ``(perturbed, info)``.

    ``info``: ``gate_value`` (m), ``gate_threshold``, ``gate_margin`` (m minus
    the threshold), ``applied`` (bool), ``variant``, ``pca_dim`` (the n used, or
    None), ``displacement_norm`` (Frobenius norm of the move in PCA space,
    Spread and Attract together; 0 when not applied).
    When the gate is closed the raw features come back (as float64).
    """
    kw = resolve_sa(dict(alpha=alpha, sigma=sigma, force=force, pca_dim=pca_dim, gate=gate,
                         variant=variant))  # validated once, by the catalogue's declaration
    alpha, sigma, force, pca_dim, gate = (kw[k] for k in ("alpha", "sigma", "force", "pca_dim", "gate"))
    # float32 input keeps a float32 PCA (as scikit-learn, and so the released code)
    is_f32 = str(getattr(features, "dtype", "")).replace("torch.", "") == "float32"
    x = as_features(features)
    codes, classes = as_labels(labels, x.shape[0])
    n, d = x.shape
    m = gate_value(x)
    applied = (m > GATE_THRESHOLD) if gate else True
    info = dict(gate_value=m, gate_threshold=GATE_THRESHOLD, gate_margin=m - GATE_THRESHOLD,
                applied=bool(applied), variant=variant, pca_dim=None, displacement_norm=0.0)
    if not applied:
        return x, info
    n_comp = int(min(pca_dim, n, d))
    z, _, s = randomized_pca(x.astype(np.float32) if is_f32 else x, n_comp)
    z[:, ~pca_signal(s, n, d, np.float32 if is_f32 else np.float64)] = 0.0
    info["pca_dim"] = n_comp
    if variant == "pca-only":
        return z, info
    out = z
    if variant == "described":
        out = spread(out, codes, classes.size, force)
    delta = attract_delta(out, codes, classes.size, alpha, sigma)
    out = out + (delta if variant == "released" else -delta)[codes]
    info["displacement_norm"] = float(np.linalg.norm(out - z))
    return out, info
