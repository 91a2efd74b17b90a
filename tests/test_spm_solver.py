"""The non-negative LASSO path, its active-set kernel and the cross-validation, against scipy/scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import nnls

from xafs_stream.data import FEFF_DIR
from xafs_stream.engines.spm import build_dictionary, make_fit_space, nn_lasso_cv, nn_lasso_path
from xafs_stream.engines.spm.solver import alpha_grid, compress_columns, nnqp
from xafs_stream.io.feff import read_feff_dir


pytestmark = pytest.mark.usefixtures("one_blas_thread")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nnqp_equals_scipy_nnls(seed):
    """min ½xᵀQx - hᵀx, x ≥ 0 with Q = AᵀA, h = Aᵀb is NNLS(A, b)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(40, 15))
    b = rng.normal(size=40)
    ref, _ = nnls(a, b)
    x = nnqp(a.T @ a, a.T @ b)
    assert np.allclose(x, ref, atol=1e-8)
    # warm start from a wrong feasible point gives the same answer
    assert np.allclose(nnqp(a.T @ a, a.T @ b, x0=np.abs(rng.normal(size=15))), ref, atol=1e-8)


def _objective(x, y, c, alpha):
    return 0.5 / x.shape[0] * np.sum((y - x @ c) ** 2) + alpha * np.sum(c)


def test_path_matches_sklearn_positive_lasso():
    """Same objective, same solutions as scikit-learn's Lasso(positive=True) at every α of the path."""
    from sklearn.linear_model import Lasso

    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 120))
    truth = np.zeros(120)
    truth[[5, 17, 60]] = [1.5, 0.7, 2.0]
    y = x @ truth + 0.1 * rng.normal(size=80)
    alphas = alpha_grid(x, y, n_alphas=12, eps=1e-2)
    path = nn_lasso_path(x, y, alphas, tol=1e-10)
    for alpha, coef in zip(alphas, path.coefs, strict=True):
        sk = Lasso(alpha=alpha, positive=True, fit_intercept=False, tol=1e-12, max_iter=100000).fit(x, y)
        assert _objective(x, y, coef, alpha) <= _objective(x, y, sk.coef_, alpha) + 1e-9
        assert np.allclose(coef, sk.coef_, atol=1e-5)
    assert np.all(path.coefs >= 0)
    assert np.count_nonzero(path.coefs[0]) == 0  # α_max gives the empty solution


def test_compressed_dictionary_reproduces_columns():
    paths = read_feff_dir(FEFF_DIR / "cu_fcc_a3.615_feff6l").paths
    fs = make_fit_space(0.05, space="k", kmin=3, kmax=14, kweight=2, k_limit=20)
    d = build_dictionary(paths, fs, r_range=(2.0, 3.0))
    a = d.matrix / np.linalg.norm(d.matrix, axis=0)
    u, w = compress_columns(a)
    assert u.shape[1] < 80  # band-limited: a few tens of directions for ~3000 columns
    assert np.max(np.abs(u @ w - a)) < 1e-6
    assert np.allclose(u.T @ u, np.eye(u.shape[1]), atol=1e-10)


def test_cv_recovers_a_sparse_support():
    """Random dictionary, 4 true atoms, noise: the cross-validated solution contains them, with few extras."""
    rng = np.random.default_rng(4)
    n, m = 200, 300
    atoms = rng.normal(size=(n, m))
    truth = np.zeros(m)
    support = [10, 50, 120, 250]
    truth[support] = [1.0, 2.0, 1.5, 0.8]
    data = atoms @ truth + 0.3 * rng.normal(size=n)
    cv = nn_lasso_cv(atoms, data, np.ones(n), n_folds=5, n_alphas=30, eps=1e-3)
    active = set(np.nonzero(cv.coef > 1e-8)[0])
    assert set(support) <= active
    assert len(active) <= 15
    assert cv.cv_mean.shape == cv.alphas.shape and cv.cv_se.shape == cv.alphas.shape
    # 1-SE rule: the chosen α is at least the one with the smallest mean CV error
    assert cv.alpha >= cv.alphas[np.argmin(cv.cv_mean)]


def test_cv_rule_min_and_bad_rule():
    rng = np.random.default_rng(5)
    atoms = np.abs(rng.normal(size=(60, 40)))
    data = atoms[:, 3] * 2 + 0.05 * rng.normal(size=60)
    cv = nn_lasso_cv(atoms, data, np.ones(60), rule="min", n_alphas=15)
    assert cv.alpha == cv.alphas[np.argmin(cv.cv_mean)]
    with pytest.raises(ValueError, match="rule"):
        nn_lasso_cv(atoms, data, np.ones(60), rule="best")
