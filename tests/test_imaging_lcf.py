"""Linear-combination fitting: exact against scipy's NNLS and SLSQP, exact on the noise-free phantom."""

import numpy as np
import pytest
from scipy.optimize import minimize, nnls
from xafs_stream.simulated_devices.phantom import make_phantom

from xafs_stream.engines.errors import InputError
from xafs_stream.engines.imaging.lcf import fit_lcf, refs_on_energy


def _refs(n_e=80):
    e = np.linspace(0.0, 1.0, n_e)
    refs = np.vstack([np.tanh((e - 0.3) * 20) + 1, np.tanh((e - 0.5) * 20) + 1, np.exp(-((e - 0.6) ** 2) / 0.01)])
    return e, refs


def test_matches_scipy_nnls_with_free_constant():
    rng = np.random.default_rng(0)
    e, refs = _refs()
    w = np.clip(rng.uniform(-0.4, 1.0, (3, 300)), 0, None)
    y = w.T @ refs + 0.2 + rng.normal(0, 0.05, (300, e.size))
    fit = fit_lcf(y, refs, background="constant")
    # reference: NNLS with the free constant split into two non-negative columns (+1 and -1)
    design = np.vstack([refs, np.ones(e.size), -np.ones(e.size)]).T
    ref = np.array([nnls(design, row)[0] for row in y])
    np.testing.assert_allclose(fit.weights.T, ref[:, :3], atol=1e-9)
    np.testing.assert_allclose(fit.offset, ref[:, 3] - ref[:, 4], atol=1e-9)
    assert np.all(fit.weights >= 0)


def test_sum_to_one_matches_slsqp():
    rng = np.random.default_rng(1)
    e, refs = _refs()
    f = rng.dirichlet([1, 1, 1], 6).T
    y = f.T @ refs + 0.1 + rng.normal(0, 0.03, (6, e.size))
    fit = fit_lcf(y, refs, background="constant", sum_to_one=True)
    np.testing.assert_allclose(fit.weights.sum(axis=0), 1.0, atol=1e-12)
    for i in range(6):
        row = y[i]
        res = minimize(lambda c, row=row: np.sum((row - c[:3] @ refs - c[3]) ** 2), [0.3, 0.3, 0.4, 0.0],
                       method="SLSQP", bounds=[(0, None)] * 3 + [(None, None)],
                       constraints=[{"type": "eq", "fun": lambda c: c[:3].sum() - 1}],
                       options={"ftol": 1e-14, "maxiter": 1000})
        np.testing.assert_allclose(fit.weights[:, i], res.x[:3], atol=1e-5)


def test_linear_background_recovers_phantom_fractions_and_thickness():
    ph = make_phantom((16, 16), seed=2)
    mu = ph.absorption_stack().reshape(ph.energy.size, -1).T  # sloped pre-edge x thickness + XANES
    fit = fit_lcf(mu, ph.refs, energy=ph.energy, background="linear")
    np.testing.assert_allclose(fit.fractions, ph.fractions.reshape(3, -1), atol=1e-9)
    np.testing.assert_allclose(fit.total, ph.thickness.ravel(), atol=1e-9)
    np.testing.assert_allclose(fit.weights_ls, fit.weights, atol=1e-9)


def test_unconstrained_weights_have_the_stated_covariance():
    rng = np.random.default_rng(3)
    e, refs = _refs(120)
    y = np.tile(np.array([0.5, 0.3, 0.2]) @ refs, (4000, 1)) + rng.normal(0, 0.1, (4000, e.size))
    fit = fit_lcf(y, refs, background="constant")
    cov = np.cov(fit.weights_ls)
    np.testing.assert_allclose(np.diag(cov), 0.01 * np.diag(fit.cov_ls), rtol=0.08)
    np.testing.assert_allclose(cov, 0.01 * fit.cov_ls, atol=3e-5)  # 3 sampling standard errors
    assert np.median(fit.rms) == pytest.approx(0.1, rel=0.03)


def test_nan_rows_give_nan_and_others_are_unaffected():
    e, refs = _refs()
    y = np.vstack([refs[0] + 0.1, np.full(e.size, np.nan)])
    fit = fit_lcf(y, refs)
    assert np.isnan(fit.weights[:, 1]).all()
    np.testing.assert_allclose(fit.weights[:, 0], [1, 0, 0], atol=1e-9)


def test_bad_input_names_the_problem():
    e, refs = _refs()
    with pytest.raises(InputError, match="spectra must have shape"):
        fit_lcf(np.zeros((3, e.size + 1)), refs)
    with pytest.raises(InputError, match="linearly dependent"):
        fit_lcf(np.zeros((3, e.size)), np.vstack([refs, refs[0]]))
    with pytest.raises(InputError, match="energy of shape"):
        fit_lcf(np.zeros((3, e.size)), refs, background="linear")
    with pytest.raises(InputError, match="covers 0.00-1.00 eV"):
        refs_on_energy(e, refs[0], np.linspace(0.5, 1.5, 10), name="ref A")
