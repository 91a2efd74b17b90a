"""Errors of a refinement with several minima (engines/spm/minima.py).

The mixture rule is checked on constructed minima whose weights and spread are known by construction; the
engine's use of it on the FeO-like pair at 1 % noise is tested in test_spm_crb.py (coverage), and here that
it leaves the errors alone where the data rule the other minima out (0.05 % noise: the errors are the
asymptotic covariance of the engine's least squares at the truth, benchmarks/spm_crb.py ``ls_fit``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from xafs_stream.engines.spm import Shell, ShellFit, spm_fit
from xafs_stream.engines.spm.minima import SAME_MINIMUM, combine_minima, distinct_minima
from xafs_stream.io.feff import read_feff_dir

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["shell1.N", "shell1.R", "shell1.sigma2", "de0"]

pytestmark = pytest.mark.usefixtures("one_blas_thread")


def fake_fit(theta, sd, rss, *, unit=1.0, pair="Fe-O") -> ShellFit:
    """A one-shell ShellFit with parameters ``theta``, independent standard errors ``sd`` and residual."""
    theta = np.asarray(theta, float)
    cov = np.diag(np.asarray(sd, float) ** 2)
    shell = Shell(
        pair=pair, n=theta[0], r=theta[1], sigma2=theta[2], n_err=sd[0], r_err=sd[1], sigma2_err=sd[2]
    )
    return ShellFit(
        shells=[shell], de0=theta[3], de0_err=sd[3], s02=1.0, s02_err=0.0, r_factor=0.1, redchi=1.0,
        noise=0.001, sigma_resid=0.001, n_independent=10.0, n_params=4, theta=theta, covariance=cov,
        param_names=list(NAMES), model_chi=np.zeros(3), success=True, message="", rss=rss, deviance_unit=unit,
    )  # fmt: skip


SD = np.array([0.2, 0.005, 0.0005, 0.5])
BEST = [4.0, 2.00, 0.005, 0.0]
OTHER = [4.6, 2.04, 0.012, -2.0]  # 3-10 standard errors away in every parameter


def test_two_minima_mixture_weights_and_spread():
    """Equal local covariances and a deviance 2 ln 3 above the returned minimum: weights 3/4 and 1/4, so
    each variance is σ² + (θ_other - θ̂)²/4; the returned parameters are unchanged."""
    best = fake_fit(BEST, SD, rss=10.0, unit=0.5)
    other = fake_fit(OTHER, SD, rss=10.0 + 0.5 * 2 * np.log(3.0), unit=0.5)
    out, notes = combine_minima(best, [other])
    shift = np.subtract(OTHER, BEST)
    expected = np.sqrt(SD**2 + shift**2 / 4)
    got = [out.shells[0].n_err, out.shells[0].r_err, out.shells[0].sigma2_err, out.de0_err]
    assert np.allclose(got, expected, rtol=1e-9)
    assert np.allclose(out.covariance, np.diag(SD**2) + np.outer(shift, shift) / 4)
    assert np.array_equal(out.theta, best.theta) and out.shells[0].r == best.shells[0].r
    assert len(notes) == 1
    assert notes[0]["weight"] == pytest.approx(0.25) and notes[0]["deviance"] == pytest.approx(2 * np.log(3))


def test_better_and_broader_minimum_weighs_more():
    """A minimum with a lower residual (deviance -2) and twice the standard errors in every parameter (16x
    the volume) carries the weight e·16/(1 + e·16) of the posterior mass (Laplace approximation)."""
    best = fake_fit(BEST, SD, rss=10.0)
    other = fake_fit(OTHER, 2 * SD, rss=8.0)
    _, notes = combine_minima(best, [other])
    w = np.e * 16
    assert notes[0]["weight"] == pytest.approx(w / (1 + w))


def test_far_or_same_or_other_model_minima_change_nothing():
    """A minimum 40 deviance units up adds < 1e-8 of its spread; a solution within SAME_MINIMUM standard
    errors of the returned one is that minimum; a fit of another model (other pair) is ignored."""
    best = fake_fit(BEST, SD, rss=10.0)
    far = fake_fit(OTHER, SD, rss=50.0)
    out, notes = combine_minima(best, [far])
    assert notes[0]["weight"] < 3e-9
    assert np.allclose(out.covariance, best.covariance, rtol=1e-6)
    near = fake_fit(np.add(BEST, 0.5 * SAME_MINIMUM * SD / np.sqrt(4)), SD, rss=9.0)
    other_model = fake_fit(OTHER, SD, rss=5.0, pair="Fe-Fe")
    assert distinct_minima(best, [near, other_model, best]) == []
    out, notes = combine_minima(best, [near, other_model])
    assert notes == [] and out is best


def test_duplicates_of_one_other_minimum_count_once():
    best = fake_fit(BEST, SD, rss=10.0)
    other = fake_fit(OTHER, SD, rss=10.0)
    twin = fake_fit(np.add(OTHER, 0.1 * SD), SD, rss=10.1)
    assert distinct_minima(best, [twin, other]) == [other]
    _, notes = combine_minima(best, [other, twin])
    assert len(notes) == 1 and notes[0]["weight"] == pytest.approx(0.5)


def _load_crb():
    spec = importlib.util.spec_from_file_location("spm_crb", ROOT / "benchmarks" / "spm_crb.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("spm_crb", mod)
    spec.loader.exec_module(mod)
    return mod


def test_feo_low_noise_errors_are_the_local_covariance():
    """FeO-like pair (Fe-O 4 @ 2.00 + Fe-Fe 4 @ 2.10 Å, σ² 0.005), default R-space k² fit at 0.05 % noise,
    3 realisations: any other minimum is ruled out (weight < 1e-3) and every reported error is within
    0.6-1.6x the engine estimator's asymptotic standard error at the truth (``ls_fit`` with the true ε)."""
    crb = _load_crb()
    paths = read_feff_dir(crb.FEO_DIR).paths
    pp, truth = [paths[0], paths[1]], [(4.0, 2.00, 0.005), (4.0, 2.10, 0.005)]
    eps = crb.noise_sigma(pp, truth, 0.0005, kmin=3.0, kmax=14.0)
    b = crb.bounds(pp, truth, eps=eps, kmin=3.0, kmax=14.0, space="r", rmin=1.0, rmax=2.6)["ls_fit"]
    expected = np.column_stack([b.n, b.r, b.sigma2])
    k = np.where(crb.K > 0, crb.K, 1e-3)
    for seed in range(3):
        chi = crb.model_chi(pp, truth, k) + np.random.default_rng(700 + seed).normal(0.0, eps, k.shape)
        res = spm_fit(crb.K, chi, paths, kmin=3, kmax=14, kweight=2, space="r", rmin=1.0, rmax=2.6,
                      structure_window=None, max_n_factor=None)  # Fe-Fe at 2.10 Å: not the path set's 3.06 Å
        shells = {s.pair: s for s in res.shells}
        assert sorted(shells) == ["Fe-Fe", "Fe-O"], res.shell_table()
        others = res.diagnostics["other_minima"]
        assert all(n["weight"] < 1e-3 for n in others), others
        err = np.array([[shells[p].n_err, shells[p].r_err, shells[p].sigma2_err] for p in ("Fe-O", "Fe-Fe")])
        ratio = err / expected
        assert np.all((ratio > 0.6) & (ratio < 1.6)), np.round(ratio, 2)
