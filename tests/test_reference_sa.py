"""Spread/Attract reference (SPEC 7): the gate, the PCA, Spread, Attract, the
variants and the score() entry point."""
import math

import numpy as np
import pytest
from scipy.linalg import hadamard

from te_gpu.reference import gbc, lda, logme, sfda
from te_gpu.reference.pca import randomized_pca
from te_gpu.reference.sa import (GATE_THRESHOLD, attract_delta, gate_value, spread,
                                 spread_attract)
from te_gpu.reference.score import score

from helpers import class_features, random_orthogonal






def loop_means(z, y, c):
    return np.stack([z[y == k].mean(axis=0) for k in range(c)])


def assert_finite_close(got, want, rel, what=""):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert got.shape == want.shape, what
    assert np.all(np.isfinite(got)) and np.all(np.isfinite(want)), what
    err = np.abs(got - want).max()
    assert err <= rel * np.abs(want).max(), f"{what}: max error {err:.3e}"


# ------------------------------------------------------------------------ gate

def test_gate_threshold_value():
    assert GATE_THRESHOLD == 9.0 * math.log(10.0) / 5.0
    assert GATE_THRESHOLD == pytest.approx(4.14465316738928, abs=1e-14)
    # the released test: max(exp(-5 m), 1e-10) < 1e-9  <=>  m > threshold
    assert math.exp(-5.0 * GATE_THRESHOLD) == pytest.approx(1e-9, rel=1e-12)


@pytest.mark.parametrize("seed,n,d", [(0, 60, 10), (1, 25, 40), (2, 100, 3)])
def test_gate_value_is_mean_of_top_two_covariance_eigenvalues(seed, n, d):
    x, y = class_features(seed, n=n, d=d, c=3, spread=2.0)
    evals = np.sort(np.linalg.eigvalsh(np.cov(x.T, bias=True)))
    want = 0.5 * (evals[-1] + evals[-2])
    assert gate_value(x) == pytest.approx(want, rel=1e-12)
    _, info = spread_attract(x, y)
    assert info["gate_value"] == pytest.approx(want, rel=1e-12)
    assert info["gate_margin"] == pytest.approx(want - GATE_THRESHOLD, rel=1e-12)


def test_gate_value_known_answer():
    # Zero-mean orthogonal Hadamard columns (population variance 1), scaled to
    # variances 9, 4, 1, 0.25: the covariance is diag(9, 4, 1, .25) and
    # m = (9 + 4) / 2 = 6.5, also after a rotation and a shift.
    h = hadamard(16).astype(np.float64)[:, 1:5]
    x = h * np.sqrt([9.0, 4.0, 1.0, 0.25])
    assert gate_value(x) == pytest.approx(6.5, rel=1e-13)
    q = random_orthogonal(3, 4)
    assert gate_value(x @ q - 11.0) == pytest.approx(6.5, rel=1e-12)


@pytest.mark.parametrize("seed", [4, 5])
def test_gate_flips_just_around_the_threshold(seed):
    x, y = class_features(seed, n=70, d=12, c=3)
    m0 = gate_value(x)
    above = x * np.sqrt(GATE_THRESHOLD * (1 + 1e-6) / m0)
    below = x * np.sqrt(GATE_THRESHOLD * (1 - 1e-6) / m0)
    out_a, info_a = spread_attract(above, y)
    out_b, info_b = spread_attract(below, y)
    assert info_a["applied"] is True and info_b["applied"] is False
    assert info_a["gate_margin"] == pytest.approx(GATE_THRESHOLD * 1e-6, rel=1e-6)
    assert info_b["gate_margin"] == pytest.approx(-GATE_THRESHOLD * 1e-6, rel=1e-6)
    assert info_a["gate_threshold"] == GATE_THRESHOLD
    # open: PCA + Attract; closed: the raw features, unchanged
    assert info_a["pca_dim"] == 12 and info_a["displacement_norm"] > 0
    assert out_b.dtype == np.float64 and np.array_equal(out_b, below)
    assert info_b["pca_dim"] is None and info_b["displacement_norm"] == 0.0


def _scaled_batch(seed, shapes_and_gates):
    """Models (one batch, one N) whose gate values are the ones given: features scaled."""
    xs = []
    for k, (d, m) in enumerate(shapes_and_gates):
        x, y = class_features(seed + k, n=60, d=d, c=3, spread=0.5)
        if d > 4:
            x[:, :2] = 0.0                                  # dead units
        xs.append(x * np.sqrt(m / gate_value(x)))
    return xs, y


@pytest.mark.parametrize("d", [1, 2, 9, 90])
def test_gate_bounds_bracket_the_gate_value(d):
    import torch

    from te_gpu.engine.sa import gate_bounds

    xs, _ = _scaled_batch(3, [(d, m) for m in (0.1, 4.0, 40.0)])
    lower, upper = gate_bounds(torch.as_tensor(np.stack(xs)))
    for lo, hi, x in zip(lower.tolist(), upper.tolist(), xs):
        m = gate_value(x)
        assert lo <= m * (1 + 1e-12) and m <= hi * (1 + 1e-12), (lo, m, hi)
    if d == 1:                                              # one variance: it is the value
        assert lower.tolist() == pytest.approx(upper.tolist(), rel=1e-12)


def test_redraws_gate_decides_by_bounds_where_they_are_clear(monkeypatch):
    """exact_gate=False (the bootstrap's redraws): the same decisions, the spectrum only
    for the models the bounds leave undecided, their values exact, the others None."""
    import torch

    from te_gpu import catalogue
    from te_gpu.engine import core
    from te_gpu.engine.stats import Labels

    gates = [0.2, GATE_THRESHOLD * (1 - 1e-7), GATE_THRESHOLD * (1 + 1e-7), 50.0, 5.0]
    xs, y = _scaled_batch(8, [(12, m) for m in gates])
    x = torch.as_tensor(np.stack(xs))
    lab = Labels.from_codes(torch.as_tensor(y), 3, torch.float64)
    sa_kw = catalogue.resolve_sa("released")
    exact = core.sa_split(x, lab, sa_kw, shared=core.Shared(x, lab), pca_float32=False)
    sizes, real = [], core.spectrum
    monkeypatch.setattr(core, "spectrum", lambda xx, st: sizes.append(xx.shape[0]) or real(xx, st))
    fast = core.sa_split(x, lab, sa_kw, shared=core.Shared(x, lab), pca_float32=False,
                         exact_gate=False)
    assert fast[0] == exact[0] == [False, False, True, True, True]
    assert torch.equal(fast[1], exact[1])
    valued = [i for i, info in enumerate(fast[2]) if info["gate_value"] is not None]
    assert sizes == [len(valued)] and 1 in valued and 2 in valued and 3 not in valued
    for i in valued:
        assert fast[2][i]["gate_value"] == pytest.approx(exact[2][i]["gate_value"], rel=1e-13)
    sizes.clear()
    open_all = core.sa_split(x, lab, dict(sa_kw, gate=False), shared=core.Shared(x, lab),
                             pca_float32=False, exact_gate=False)
    assert open_all[0] == [True] * 5 and sizes == []        # no gate: no spectrum at all


def test_closed_gate_returns_raw_features_as_float64():
    x, y = class_features(6, n=50, d=8, c=3, spread=0.5, noise=0.3)
    assert gate_value(x) < GATE_THRESHOLD
    for variant in ("released", "described", "pca-only"):
        out, info = spread_attract(x, y, variant=variant)
        assert not info["applied"]
        assert out.dtype == np.float64 and np.array_equal(out, x)
        assert out is not x
    x32 = x.astype(np.float32)
    out, info = spread_attract(x32, y)
    assert not info["applied"]
    assert out.dtype == np.float64 and np.array_equal(out, x32.astype(np.float64))


def test_gate_false_applies_anyway():
    x, y = class_features(7, n=50, d=8, c=3, spread=0.5, noise=0.3)
    assert gate_value(x) < GATE_THRESHOLD
    out, info = spread_attract(x, y, gate=False, alpha=0.1)
    assert info["applied"] is True and info["gate_margin"] < 0
    z = randomized_pca(x, 8)[0]
    want = z + attract_delta(z, y, 3, 0.1, 0.6)[y]
    assert_finite_close(out, want, 1e-12, "gate=False")
    assert info["displacement_norm"] == pytest.approx(np.linalg.norm(want - z), rel=1e-12)


def test_info_fields():
    x, y = class_features(8, n=80, d=20)
    _, info = spread_attract(x, y, variant="described")
    for key in ("gate_value", "gate_threshold", "gate_margin", "applied", "variant",
                "pca_dim", "displacement_norm"):
        assert key in info
    assert info["variant"] == "described"
    assert isinstance(info["applied"], bool)
    assert np.isfinite(info["gate_value"]) and np.isfinite(info["displacement_norm"])
    assert info["gate_margin"] == pytest.approx(info["gate_value"] - GATE_THRESHOLD, abs=1e-12)


# --------------------------------------------------------------------- Attract

def two_class_plus(mu, radius_coord):
    """Four points mu +- r e1, mu +- r e2: per-dim population variance r^2/2 each."""
    r = radius_coord
    return mu + np.array([[r, 0.0], [-r, 0.0], [0.0, r], [0.0, -r]])


def test_attract_known_answer_two_classes():
    # Class 0 around mu0 = (0, 0) with r = 1: variances (1/2, 1/2), R0 = 1.
    # Class 1 around mu1 = (5, 0) with r = 2: variances (2, 2),     R1 = 2.
    # d = 5.
    # sigma = 0.6: W01 = (5 - 0.6 * 3) / 5 = 0.64; alpha = 0.1:
    #   Delta_0 = 0.1 * 0.64 * (mu0 - mu1) = (-0.32, 0), Delta_1 = (0.32, 0)
    #   (farther apart than sigma (R0 + R1): pushed apart).
    # sigma = 2: W01 = (5 - 6) / 5 = -0.2:
    #   Delta_0 = 0.1 * -0.2 * (-5, 0) = (0.1, 0), Delta_1 = (-0.1, 0)
    #   (closer than sigma (R0 + R1): pulled together).
    z = np.vstack([two_class_plus(np.array([0.0, 0.0]), 1.0),
                   two_class_plus(np.array([5.0, 0.0]), 2.0)])
    codes = np.repeat([0, 1], 4)
    d1 = attract_delta(z, codes, 2, alpha=0.1, sigma=0.6)
    assert np.allclose(d1, [[-0.32, 0.0], [0.32, 0.0]], rtol=0, atol=1e-14)
    d2 = attract_delta(z, codes, 2, alpha=0.1, sigma=2.0)
    assert np.allclose(d2, [[0.1, 0.0], [-0.1, 0.0]], rtol=0, atol=1e-14)


@pytest.mark.parametrize("seed,c", [(9, 3), (10, 5)])
def test_attract_matches_pairwise_sum(seed, c):
    # Delta_a = alpha sum_{b != a} W_ab (mu_a - mu_b), written as a plain loop.
    z, y = class_features(seed, n=90, d=6, c=c, spread=1.5)
    alpha, sigma = 0.07, 0.45
    mu = loop_means(z, y, c)
    radius = np.array([np.sqrt(z[y == k].var(axis=0).sum()) for k in range(c)])
    want = np.zeros((c, z.shape[1]))
    for a in range(c):
        for b in range(c):
            if a != b:
                dist = np.linalg.norm(mu[a] - mu[b])
                w = (dist - sigma * (radius[a] + radius[b])) / dist
                want[a] += alpha * w * (mu[a] - mu[b])
    got = attract_delta(z, y, c, alpha, sigma)
    assert_finite_close(got, want, 1e-12, "pairwise Attract")


def test_attract_equivariance():
    z, y = class_features(11, n=60, d=7, c=4, spread=1.0)
    q = random_orthogonal(12, 7)
    b = np.random.default_rng(13).normal(scale=5.0, size=7)
    base = attract_delta(z, y, 4, 0.05, 0.6)
    moved = attract_delta(z @ q + b, y, 4, 0.05, 0.6)
    assert_finite_close(moved, base @ q, 1e-10, "Attract under rotation + translation")


def test_attract_identical_means_exert_no_force():
    # Classes 0 and 1 both have mean (0, 0) exactly; class 2 has mean (6, 0).
    z = np.vstack([two_class_plus(np.array([0.0, 0.0]), 1.0),
                   two_class_plus(np.array([0.0, 0.0]), 2.0),
                   two_class_plus(np.array([6.0, 0.0]), 1.0)])
    codes = np.repeat([0, 1, 2], 4)
    got = attract_delta(z, codes, 3, alpha=0.1, sigma=0.6)
    # only the pairs (0, 2) and (1, 2) act; R = 1, 2, 1 and d = 6:
    # W02 = (6 - 0.6 * 2) / 6 = 0.8, W12 = (6 - 0.6 * 3) / 6 = 0.7
    # Delta_0 = 0.1 * 0.8 * (-6, 0) = (-0.48, 0); Delta_1 = 0.1 * 0.7 * (-6, 0) = (-0.42, 0)
    # Delta_2 = 0.1 * (0.8 + 0.7) * (6, 0) = (0.9, 0)
    want = np.array([[-0.48, 0.0], [-0.42, 0.0], [0.9, 0.0]])
    assert np.all(np.isfinite(got))
    assert np.allclose(got, want, rtol=0, atol=1e-14)
    same = attract_delta(z[:8], codes[:8], 2, alpha=0.1, sigma=0.6)
    assert np.array_equal(same, np.zeros((2, 2)))


def test_identical_class_means_give_a_finite_result():
    # Class 1 is class 0 mirrored through the common mean: identical means.
    rng = np.random.default_rng(14)
    half = rng.normal(scale=3.0, size=(30, 10))
    half -= half.mean(axis=0)
    x = np.vstack([half, -half, rng.normal(scale=3.0, size=(30, 10)) + 4.0]) + 2.0
    y = np.repeat([0, 1, 2], 30)
    for variant in ("released", "described"):
        out, info = spread_attract(x, y, variant=variant, alpha=0.1)
        assert info["applied"]
        assert np.all(np.isfinite(out)) and np.isfinite(info["displacement_norm"])


# ---------------------------------------------------------------------- Spread

@pytest.mark.parametrize("force", [1.0, 2.5])
def test_spread_moves_each_sample_by_force_away_from_its_mean(force):
    z, y = class_features(15, n=40, d=5, c=3, spread=2.0)
    z_keep = z.copy()
    out = spread(z, y, 3, force)
    assert np.array_equal(z, z_keep)
    mu = loop_means(z, y, 3)
    step = out - z
    offset = z - mu[y]
    assert np.allclose(np.linalg.norm(step, axis=1), force, rtol=1e-12, atol=0)
    unit = offset / np.linalg.norm(offset, axis=1, keepdims=True)
    assert np.allclose(step, force * unit, rtol=0, atol=1e-12)


def test_spread_leaves_a_sample_at_its_class_mean():
    # class 0: mu + v, mu - v, mu (mean exactly mu); class 1: two other points
    mu, v = np.array([2.0, -1.0, 4.0]), np.array([1.0, 2.0, 0.0])
    z = np.array([mu + v, mu - v, mu, [10.0, 0.0, 0.0], [12.0, 0.0, 0.0]])
    codes = np.array([0, 0, 0, 1, 1])
    out = spread(z, codes, 2, 1.5)
    assert np.array_equal(out[2], mu)
    assert np.allclose(out[0], mu + v + 1.5 * v / np.linalg.norm(v), rtol=0, atol=1e-14)
    assert np.allclose(out[1], mu - v - 1.5 * v / np.linalg.norm(v), rtol=0, atol=1e-14)
    # class 1: mean (11, 0, 0); 10 -> 10 - 1.5 = 8.5 and 12 -> 12 + 1.5 = 13.5
    assert np.allclose(out[3:], [[8.5, 0.0, 0.0], [13.5, 0.0, 0.0]], rtol=0, atol=1e-14)


# -------------------------------------------------------------------- variants

def test_released_variant_is_pca_plus_delta():
    x, y = class_features(16, n=90, d=30, c=4)
    out, info = spread_attract(x, y, alpha=0.2, sigma=0.5)
    z = randomized_pca(x, 30)[0]
    want = z + attract_delta(z, y, 4, 0.2, 0.5)[y]
    assert_finite_close(out, want, 1e-12, "released")
    assert info["displacement_norm"] == pytest.approx(np.linalg.norm(want - z), rel=1e-12)


def test_described_variant_spreads_then_uses_minus_delta():
    x, y = class_features(17, n=90, d=30, c=4)
    out, info = spread_attract(x, y, variant="described", alpha=0.2, sigma=0.5, force=1.7)
    z = randomized_pca(x, 30)[0]
    s = spread(z, y, 4, 1.7)
    want = s - attract_delta(s, y, 4, 0.2, 0.5)[y]
    assert_finite_close(out, want, 1e-12, "described")
    assert info["displacement_norm"] == pytest.approx(np.linalg.norm(want - z), rel=1e-12)
    # with no Spread the two variants move every sample in opposite directions
    rel, _ = spread_attract(x, y, variant="released", alpha=0.2, sigma=0.5)
    des, _ = spread_attract(x, y, variant="described", alpha=0.2, sigma=0.5, force=0.0)
    assert_finite_close(des - z, -(rel - z), 1e-10, "described = -released at force 0")
    assert np.abs(rel - z).max() > 1e-3


def test_pca_only_variant_is_exactly_the_randomized_pca():
    x, y = class_features(18, n=70, d=90, c=3)
    out, info = spread_attract(x, y, variant="pca-only")
    assert info["applied"] and info["pca_dim"] == 64
    assert np.array_equal(out, randomized_pca(x, 64)[0])
    assert info["displacement_norm"] == 0.0


@pytest.mark.parametrize("n,d,pca_dim,want", [
    (40, 100, 64, 40),   # N < 64 (and N < D)
    (100, 20, 64, 20),   # D < 64
    (30, 25, 64, 25),    # both below 64
    (100, 80, 8, 8),     # pca_dim itself
    (90, 90, 64, 64),
])
def test_pca_dim_is_clamped_to_n_and_d(n, d, pca_dim, want):
    x, y = class_features(19 + n + d, n=n, d=d, c=3)
    for variant in ("released", "pca-only"):
        out, info = spread_attract(x, y, pca_dim=pca_dim, variant=variant)
        assert info["applied"]
        assert info["pca_dim"] == want
        assert out.shape == (n, want)
        assert np.all(np.isfinite(out))
    z = randomized_pca(x, want)[0]
    if want == n:
        # centred data has rank N - 1: the last component's exact scores are zero and
        # the PCA returns rounding noise there, which SA replaces by the zeros
        assert np.abs(z[:, -1]).max() < 1e-10 * np.abs(z).max()
        assert np.array_equal(out[:, -1], np.zeros(n))
        out, z = out[:, :-1], z[:, :-1]
    assert np.array_equal(out, z)


def test_bad_options_are_rejected():
    x, y = class_features(20, n=80, d=20)
    with pytest.raises(ValueError, match="variant"):
        spread_attract(x, y, variant="attract-only")
    with pytest.raises(ValueError):
        spread_attract(x, y, alpha=float("nan"))
    with pytest.raises(ValueError):
        spread_attract(x, y, pca_dim=0)


# ------------------------------------------------------------- no mutation

@pytest.mark.parametrize("variant", ["released", "described", "pca-only"])
def test_inputs_are_never_modified(variant):
    x, y = class_features(21, n=60, d=12, c=3)
    xk, yk = x.copy(), y.copy()
    spread_attract(x, y, variant=variant, alpha=0.3)
    assert np.array_equal(x, xk) and np.array_equal(y, yk)
    x.setflags(write=False)
    y.setflags(write=False)
    out, _ = spread_attract(x, y, variant=variant, alpha=0.3)
    assert np.array_equal(x, xk) and np.array_equal(y, yk)
    assert out.flags.writeable
    score(x, y, metric="lda", sa=variant)
    assert np.array_equal(x, xk) and np.array_equal(y, yk)


def test_attract_and_spread_do_not_modify_their_arguments():
    z, y = class_features(22, n=40, d=4, c=3)
    zk = z.copy()
    z.setflags(write=False)
    attract_delta(z, y, 3, 0.1, 0.6)
    spread(z, y, 3, 1.0)
    assert np.array_equal(z, zk)


# ------------------------------------------------------------------- score()

METRICS = {"logme": logme, "sfda": sfda, "lda": lda, "gbc": gbc}


@pytest.mark.parametrize("variant", ["released", "described"])
@pytest.mark.parametrize("name", sorted(METRICS))
def test_score_is_metric_of_spread_attract(name, variant):
    x, y = class_features(23, n=80, d=16, c=4, spread=1.0)
    got = score(x, y, metric=name, sa=variant)
    want = METRICS[name](spread_attract(x, y, variant=variant)[0], y)
    assert np.isfinite(got) and np.isfinite(want)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-14)
    # and without sa, the metric of the raw features
    raw = score(x, y, metric=name)
    assert raw == pytest.approx(METRICS[name](x, y), rel=1e-12, abs=1e-14)
    assert got != raw


def test_score_with_sa_options_dict():
    x, y = class_features(24, n=80, d=16, c=4, spread=1.0)
    opts = {"variant": "described", "alpha": 0.1, "sigma": 0.3, "force": 0.5, "pca_dim": 10}
    got = score(x, y, metric="sfda", sa=opts)
    want = sfda(spread_attract(x, y, **opts)[0], y)
    assert np.isfinite(got) and got == pytest.approx(want, rel=1e-12)
    assert score(x, y, metric="lda", sa={}) == pytest.approx(
        lda(spread_attract(x, y)[0], y), rel=1e-12)


def test_score_rejects_bad_sa_and_ncti():
    x, y = class_features(25, n=60, d=8, c=3)
    with pytest.raises(ValueError, match="variant"):
        score(x, y, metric="lda", sa="spread-only")
    with pytest.raises(ValueError, match="alpah"):
        score(x, y, metric="lda", sa={"alpah": 0.1})
    with pytest.raises(ValueError):
        score(x, y, metric="lda", sa={"variant": "spread-only"})
    with pytest.raises(ValueError, match="(?i)ncti"):
        score(x, y, metric="ncti")
    with pytest.raises(ValueError, match="(?i)ncti"):
        score(x, y, metric="NCTI", sa="released")
    with pytest.raises(ValueError):
        score(x, y, metric="leep")


# -------------------------------------------------------------------- float32

@pytest.mark.parametrize("n,d", [(80, 24), (30, 70)])
def test_float32_input_runs_the_pca_in_float32(n, d):
    x, y = class_features(26, n=n, d=d, c=3, dtype=np.float32)
    k = min(64, n, d)
    out32, info32 = spread_attract(x, y, variant="pca-only")
    out64, info64 = spread_attract(x.astype(np.float64), y, variant="pca-only")
    assert info32["applied"] and info32["pca_dim"] == k
    # the gate itself is computed in float64 either way
    assert info32["gate_value"] == info64["gate_value"]
    z = randomized_pca(x, k)[0]
    if k == n:  # rank N - 1 after centring: the last component is noise, zeroed by SA
        assert np.abs(z[:, -1]).max() < 1e-4 * np.abs(z).max()
        z[:, -1] = 0.0
    assert np.array_equal(out32, z)
    assert_finite_close(out32, out64, 1e-4, "float32 vs float64 PCA")
    assert not np.array_equal(out32, out64)
    # the released variant builds on the same float32 PCA
    rel32, _ = spread_attract(x, y)
    assert_finite_close(rel32, z + attract_delta(z, y, 3, 0.005, 0.6)[y], 1e-12, "float32 SA")
