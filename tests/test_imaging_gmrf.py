"""GMRF: hyperparameters recovered from data drawn from the model; exact solves; posterior sd."""

import numpy as np
import pytest
from scipy.fft import idctn

from xafs_stream.engines.imaging.gmrf import (
    BlockStats,
    GmrfParams,
    block_eigenvalues,
    block_power,
    grid_edges,
    learn_params,
    posterior_sd,
    solve_map,
    window_terms,
)
from xafs_stream.engines.imaging.incremental import local_gmrf


def _dense_precision(valid, labels, lam, eta):
    ny, nx = valid.shape
    n = ny * nx
    a = np.zeros((n, n))
    h, v = grid_edges(valid, labels)
    idx = np.arange(n).reshape(ny, nx)
    pairs = [(idx[i, j], idx[i, j + 1]) for i, j in zip(*np.nonzero(h))]
    pairs += [(idx[i, j], idx[i + 1, j]) for i, j in zip(*np.nonzero(v))]
    for p, q in pairs:
        a[p, p] += lam
        a[q, q] += lam
        a[p, q] -= lam
        a[q, p] -= lam
    a += np.diag(np.where(valid.ravel(), 1.0 + eta, 1.0))
    return a


@pytest.mark.parametrize("lam, s2", [(20.0, 0.01), (3.0, 0.25)])
def test_learns_noise_and_smoothing_of_the_generating_model(lam, s2):
    """Blocks drawn exactly from the intrinsic block GMRF + white noise: s2 within 5 %, lam within 35 %."""
    rng = np.random.default_rng(0)
    b = 16
    mu = block_eigenvalues((b, b))
    alpha = lam / s2
    stats = BlockStats()
    for _ in range(300):
        c = np.zeros((b, b))
        c.ravel()[1:] = rng.normal(size=b * b - 1) / np.sqrt(alpha * mu.ravel()[1:])
        y = idctn(c, norm="ortho") + rng.normal(0, np.sqrt(s2), (b, b))
        stats.add(block_power(y))
    p = learn_params(stats)
    assert p.s2 == pytest.approx(s2, rel=0.05)
    assert p.lam == pytest.approx(lam, rel=0.35)
    assert p.eta == 0.0


def test_solve_matches_dense_solution_with_cuts_and_mask():
    rng = np.random.default_rng(1)
    valid = np.ones((12, 14), bool)
    valid[3:5, 4:9] = False
    labels = np.zeros((12, 14), int)
    labels[:, 8:] = 1
    y = rng.normal(size=(12, 14)) + labels
    p = GmrfParams(s2=0.5, lam=4.0, eta=0.1)
    mean = np.where(labels == 1, 1.0, 0.0)
    x, _ = solve_map(y, valid, p, mean=mean, labels=labels, rtol=1e-12)
    a = _dense_precision(valid, labels, 4.0, 0.1)
    rhs = np.where(valid, y + 0.1 * mean, 0.0).ravel()
    ref = np.linalg.solve(a, rhs).reshape(12, 14)
    np.testing.assert_allclose(x[valid], ref[valid], atol=1e-8)
    assert np.isnan(x[~valid]).all()


def test_whole_map_solve_above_the_matrix_transform_size_matches_a_sparse_direct_solve():
    """Above the matrix-transform size the preconditioner uses scipy's fast transforms: a whole-map solve
    still reaches a tight tolerance (against a sparse direct solve, with a mask, cuts, a long smoothing length
    and values far from zero)."""
    from scipy import sparse
    from scipy.sparse.linalg import spsolve

    from xafs_stream.engines.imaging.gmrf import MATRIX_TRANSFORM_MAX_SIDE

    ny, nx = MATRIX_TRANSFORM_MAX_SIDE + 22, MATRIX_TRANSFORM_MAX_SIDE + 12
    rng = np.random.default_rng(7)
    valid = rng.random((ny, nx)) > 0.1
    labels = np.zeros((ny, nx), int)
    labels[:, nx // 2:] = 1
    y = rng.normal(size=(ny, nx)) + 7112.0 + 3 * labels  # an edge energy, eV, far from zero
    lam, eta = 30.0, 0.01
    x, _ = solve_map(y, valid, GmrfParams(s2=0.1, lam=lam, eta=eta), labels=labels, rtol=1e-10)
    h, v = grid_edges(valid, labels)
    idx = np.arange(ny * nx).reshape(ny, nx)
    p = np.concatenate([idx[:, :-1][h], idx[:-1, :][v]])
    q = np.concatenate([idx[:, 1:][h], idx[1:, :][v]])
    a = sparse.coo_matrix((np.repeat([lam, lam, -lam, -lam], p.size), (np.concatenate([p, q, p, q]),
                          np.concatenate([p, q, q, p]))), shape=(ny * nx,) * 2).tocsr()
    a = a + sparse.diags(np.where(valid.ravel(), 1.0 + eta, 1.0))
    mean = y[valid].mean()  # the prior mean solve_map uses by default
    ref = spsolve(a.tocsc(), np.where(valid, y + eta * mean, 0.0).ravel()).reshape(ny, nx)
    np.testing.assert_allclose(x[valid], ref[valid], rtol=0, atol=1e-6)


def test_posterior_sd_against_exact_inverse():
    """Exact at interior and straight-edge pixels; within 30 % everywhere on a map with cuts."""
    valid = np.ones((20, 20), bool)
    labels = np.zeros((20, 20), int)
    labels[:, 11:] = 1
    labels[5:9, 2:6] = 2
    p = GmrfParams(s2=0.3, lam=2.0, eta=0.0)
    exact = np.sqrt(np.diag(np.linalg.inv(_dense_precision(valid, labels, 2.0, 0.0))) * 0.3).reshape(20, 20)
    approx = posterior_sd(valid, labels, p)
    rel = np.abs(approx / exact - 1)
    assert rel.max() < 0.3
    assert rel[15, 5] < 0.02  # deep inside a domain


def test_window_solve_with_fixed_boundary_equals_global_solve():
    rng = np.random.default_rng(2)
    y = rng.normal(size=(40, 40))
    valid = np.ones((40, 40), bool)
    labels = (np.arange(40)[None, :] > 25).astype(int) * np.ones((40, 1), int)
    p = GmrfParams(s2=1.0, lam=5.0, eta=0.0)
    full, _ = solve_map(y, valid, p, labels=labels, rtol=1e-12)
    # change the data in a tile; the windowed update must reproduce the global solve of the new data
    y2 = y.copy()
    y2[10:20, 10:20] += 2.0
    new_full, _ = solve_map(y2, valid, p, labels=labels, rtol=1e-12)
    upd, win, _ = local_gmrf(y2, valid, full, p, (slice(10, 20), slice(10, 20)), mean=None, labels=labels,
                             tol=1e-6, rtol=1e-12)
    assert np.max(np.abs(upd - new_full)) < 1e-5
    bsum, bcnt = window_terms(full, valid, labels, (slice(0, 40), slice(0, 40)))
    assert not bcnt.any() and not bsum.any()  # a full-map window has no outside neighbours
