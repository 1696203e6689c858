"""te_gpu.engine.linalg: the CPU LAPACK path against torch's batched calls.

Every test runs twice: with the numpy/scipy host path forced for all sizes
(``HOST_MIN_DIM = 0``) and with the torch path. Float64 tolerances, relative to
the largest entry or eigenvalue: Grams 1e-13, eigenvalues 1e-12,
eigen-residuals |A v - lambda v| 1e-11, orthonormality 1e-12. The engine's
scores on either path are checked against the reference in the shared tester
(test_catalogue.py).
"""
import numpy as np
import pytest
import torch

from te_gpu.engine import linalg


@pytest.fixture(autouse=True, params=["host", "torch"])
def path(request, monkeypatch):
    monkeypatch.setattr(linalg, "HOST_MIN_DIM", 0 if request.param == "host" else 10**9)
    return request.param

SHAPES = [(3, 50, 20), (2, 30, 80), (4, 200, 97), (1, 7, 7), (2, 120, 2)]


def batch(shape, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    b, n, d = shape
    # unequal column scales and a shared offset: a spread spectrum, as real features
    x = torch.randn(shape, generator=g, dtype=torch.float64) * torch.logspace(0, -3, d, dtype=torch.float64)
    return (x + 0.5).to(dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("samples", [False, True])
def test_gram_equals_torch_and_is_exactly_symmetric(shape, samples):
    x = batch(shape, 0)
    got = linalg.gram(x, samples=samples)
    want = x @ x.mT if samples else x.mT @ x
    assert got.shape == want.shape and got.dtype == x.dtype
    assert torch.equal(got, got.mT)
    assert (got - want).abs().max() <= 1e-13 * want.abs().max()


def test_gram_of_one_model_does_not_depend_on_the_batch(path):
    x = batch((5, 64, 33), 1)
    one, many = linalg.gram(x[3:4])[0], linalg.gram(x)[3]
    if path == "host":  # one call per model: bit-identical
        assert torch.equal(many, one)
    else:               # a batched GEMM may block differently
        assert (many - one).abs().max() <= 1e-14 * one.abs().max()


def test_gram_accepts_non_contiguous_and_float32():
    x = batch((3, 40, 12), 2).mT.contiguous().mT            # non-contiguous view
    assert not x.is_contiguous()
    assert torch.allclose(linalg.gram(x), x.mT @ x, rtol=1e-13, atol=0)
    x32 = x.float()
    g32 = linalg.gram(x32)
    assert g32.dtype == torch.float32
    assert (g32.double() - x.mT @ x).abs().max() <= 1e-5 * (x.mT @ x).abs().max()


def _check_pairs(a, evals, vecs):
    scale = evals.abs().amax(-1, keepdim=True)[..., None]
    resid = a @ vecs - vecs * evals[:, None, :]
    assert torch.isfinite(evals).all() and torch.isfinite(vecs).all()
    assert (resid.abs() / scale).max() <= 1e-11
    eye = torch.eye(vecs.shape[-1], dtype=vecs.dtype)
    assert (vecs.mT @ vecs - eye).abs().max() <= 1e-12


@pytest.mark.parametrize("shape", SHAPES)
def test_eigh_equals_torch(shape):
    a = linalg.gram(batch(shape, 3))
    evals, vecs = linalg.eigh(a)
    want = torch.linalg.eigvalsh(a)
    assert (evals - want).abs().max() <= 1e-12 * want.abs().max()
    assert torch.all(evals[:, 1:] >= evals[:, :-1])
    _check_pairs(a, evals, vecs)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("top", [1, 2, 64])
def test_eigh_top_is_the_top_of_the_full_decomposition(shape, top):
    a = linalg.gram(batch(shape, 4))
    k = a.shape[-1]
    evals, vecs = linalg.eigh_top(a, top)
    t = min(top, k)
    assert evals.shape == (a.shape[0], t) and vecs.shape == (a.shape[0], k, t)
    want = torch.linalg.eigvalsh(a)[:, k - t:]
    assert (evals - want).abs().max() <= 1e-12 * want.abs().max()
    _check_pairs(a, evals, vecs)


def test_eigh_top_with_repeated_and_zero_eigenvalues():
    # rank 3 in 90 dimensions: 87 zero eigenvalues below the top ones
    g = torch.Generator().manual_seed(5)
    u = torch.linalg.qr(torch.randn(90, 90, generator=g, dtype=torch.float64)).Q
    lam = torch.zeros(90, dtype=torch.float64)
    lam[-3:] = torch.tensor([2.0, 2.0, 5.0], dtype=torch.float64)
    a = ((u * lam) @ u.T)[None]
    a = 0.5 * (a + a.mT)
    evals, vecs = linalg.eigh_top(a, 4)
    assert np.allclose(evals[0].numpy(), [0.0, 2.0, 2.0, 5.0], atol=1e-13)
    _check_pairs(a, evals, vecs)


@pytest.mark.parametrize("shape", [(3, 40, 7), (2, 500, 260), (1, 30, 1)])
def test_matmul_equals_torch(shape):
    a = batch(shape, 7)
    b = batch((shape[0], shape[2], 5), 8)
    got = linalg.matmul(a, b)
    want = a @ b
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-13 * (a.abs() @ b.abs()).max()


@pytest.mark.parametrize("k", [5, 64, 300])
def test_solve_spd_solves_and_flags_indefinite_matrices(k):
    x = batch((3, 2 * k + 10, k), 9)
    a = linalg.gram(x) + 1e-3 * torch.eye(k, dtype=torch.float64)
    a[1] = -a[1]                                           # negative definite
    a[2, 0, 0] = -1.0                                      # indefinite in one entry
    a[2] = 0.5 * (a[2] + a[2].mT)
    b = batch((3, k, 4), 10)
    sol, ok = linalg.solve_spd(a, b)
    assert sol.shape == b.shape and ok.dtype == torch.bool
    assert ok.tolist() == [True, False, False]
    want = torch.linalg.solve(a[0], b[0])
    # forward error of a backward-stable solve: a small multiple of eps cond(a)
    err = torch.linalg.norm(sol[0] - want) / torch.linalg.norm(want)
    assert err <= 1e-13 * torch.linalg.cond(a[0])


@pytest.mark.parametrize("shape", [(2, 3, 50, 20), (2, 3, 20, 50), (4, 9, 9), (1, 3, 7)])
def test_ncti_nuclear_norm_equals_the_sum_of_singular_values(shape):
    from te_gpu.engine.ncti import nuclear_norm

    a = torch.softmax(3 * torch.randn(shape, generator=torch.Generator().manual_seed(11),
                                      dtype=torch.float64), -1)
    a[..., :2, :] = 0.0                                     # padded rows, as NCTI's class blocks
    want = torch.linalg.svdvals(a).sum(-1)
    got = nuclear_norm(a)
    assert got.shape == want.shape
    assert ((got - want).abs() / want).max() <= 1e-13


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k, top, rank", [(300, 64, 300), (300, 64, 40), (97, 96, 97), (130, 64, 20)])
def test_gil_free_syevr_is_scipys_bit_for_bit(path, dtype, k, top, rank):
    """eigh_top's LAPACK call without the GIL (ctypes on scipy's Cython LAPACK) returns
    exactly what scipy.linalg.eigh(driver='evr') returns: same routine, same arguments;
    rank-deficient Grams (duplicated columns) included."""
    import scipy.linalg

    if path == "torch":
        pytest.skip("host path only")
    rng = np.random.default_rng(k + rank)
    x = rng.standard_normal((400, k)) * np.logspace(0, -3, k)
    x[:, rank:] = x[:, : k - rank]                       # duplicated columns: rank <= max(rank, k - rank)
    g = (x.T @ x).astype(dtype)
    got_vals, got_vecs = linalg._syevr_top(g, top)
    want_vals, want_vecs = scipy.linalg.eigh(g, driver="evr", subset_by_index=(k - top, k - 1),
                                             check_finite=False)
    assert got_vals.dtype == dtype and got_vecs.shape == (k, top)
    np.testing.assert_array_equal(got_vals, want_vals)
    np.testing.assert_array_equal(got_vecs, want_vecs)



def test_gil_free_syevr_checks_the_declared_arguments(path):
    """The Cython API's declaration must be syevr's 21 pointers with 32-bit integers;
    another (e.g. a 64-bit-integer build) is not called through ctypes."""
    assert linalg._argument_kinds("void (char *, int *, __pyx_t_x_d *, float *, long *)") == "cidf?"
    # the scipy that CI pins declares exactly that: the GIL-free path is the one in use
    assert linalg._nogil_syevr("d") is not None and linalg._nogil_syevr("f") is not None
