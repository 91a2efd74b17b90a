"""AUTOBK background, Fourier transforms and χ noise against synthetic spectra with known χ(k), R and noise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from xafs_stream.engines.errors import InputError
from xafs_stream.engines.xafs import (
    autobk,
    estimate_chi_noise,
    etok,
    ftwindow,
    ktoe,
    process_spectrum,
    xftf,
    xftr,
)

E0 = 8979.0
STEP = 1.2
SHELLS = [(12, 2.55, 0.0085), (24, 4.43, 0.012)]  # (N, R / Å, sigma² / Å²), well separated in R


def chi_true(k: np.ndarray) -> np.ndarray:
    """Toy EXAFS with constant phase (so |χ(R)| peaks sit at the true R), smoothly switched on at low k."""
    kk = np.maximum(k, 1e-9)
    onset = 0.5 * (1 + erf((kk - 1.5) / 0.5))
    out = np.zeros_like(kk)
    for n, r, s2 in SHELLS:
        out += 0.8 * n * np.exp(-2 * s2 * kk**2) * np.sin(2 * kk * r) / (kk * r**2) * np.exp(-2 * r / 8.0)
    return 0.1 * onset * out


def synthetic_mu(energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(μ, μ0): smooth atomic background times (1 + χ)."""
    x = energy - E0
    mu0 = 0.2 - 1e-4 * x + STEP * 0.5 * (1 + erf(x / 1.5)) * (1 - 5e-5 * np.maximum(x, 0))
    k = np.sqrt(np.maximum(x, 0) * 0.262468)
    return mu0 + STEP * chi_true(k) * (x > 0), mu0


@pytest.fixture(scope="module")
def grid():
    pre = np.arange(8780.0, 8960.0, 10.0)
    edge = np.arange(8960.0, 9010.0, 0.5)
    k = np.arange(etok(9010.0 - E0), 16.5, 0.05)
    return np.concatenate([pre, edge, E0 + ktoe(k)])


def test_etok_ktoe_constants():
    # hbar² / (2 m_e) = 3.80998 eV Å² (CODATA); k = 10 / Å is 380.998 eV above E0
    assert ktoe(10.0) == pytest.approx(380.998, abs=1e-3)
    assert etok(ktoe(7.3)) == pytest.approx(7.3)
    assert np.all(etok(np.array([-4.0, 0.0])) == np.array([-etok(4.0), 0.0]))


def test_autobk_recovers_known_chi_and_background(grid):
    mu, mu0 = synthetic_mu(grid)
    res = autobk(grid, mu, e0=E0, edge_step=STEP, rbkg=1.0, kweight=2)
    assert np.allclose(np.diff(res.k), 0.05) and res.k[0] == 0
    sel = (res.k >= 3) & (res.k <= 14)
    truth = chi_true(res.k) * (1 - 5e-5 * ktoe(res.k))  # χ rides on the (slowly falling) atomic background
    assert np.corrcoef(res.chi[sel] * res.k[sel] ** 2, truth[sel] * res.k[sel] ** 2)[0, 1] > 0.998
    assert np.max(np.abs(res.chi[sel] - truth[sel])) < 0.1 * np.max(np.abs(truth[sel]))
    exafs = grid > E0 + 30
    assert np.max(np.abs(res.bkg[exafs] - mu0[exafs])) < 0.01 * STEP
    assert res.params_used["nknots"] == 1 + int(2 * 1.0 * res.params_used["kmax"] / np.pi)


def test_chir_peaks_at_the_true_distances(grid):
    mu, _ = synthetic_mu(grid)
    res = process_spectrum(grid, mu, kmin=3, kmax=15, kweight=2, dk=1)
    mag = res.chir_mag
    for _, r_true, _ in SHELLS:
        near = np.abs(res.r - r_true) < 0.4
        r_peak = res.r[near][np.argmax(mag[near])]
        assert abs(r_peak - r_true) <= 0.035  # one R grid step (pi / 102.4 Å)


def test_xftf_of_a_sine_and_round_trip():
    k = 0.05 * np.arange(321)
    chi = np.sin(2 * k * 3.0) / np.maximum(k, 0.05) ** 2
    ft = xftf(k, chi, kmin=2, kmax=14, kweight=2, dk=1, window="hanning")
    assert ft.r[np.argmax(ft.chir_mag)] == pytest.approx(3.0, abs=0.031)
    assert np.allclose(ft.chir_mag, np.hypot(ft.chir_re, ft.chir_im))
    back = xftr(ft.r, ft.chir, rmin=0.0, rmax=9.5, dr=0.5, window="hanning")
    q = back.q[: k.size]
    assert np.allclose(q, k)
    inside = (q > 3) & (q < 13)
    target = (chi * k**2 * ft.kwin)[inside]
    assert np.max(np.abs(back.chiq_re[: k.size][inside] - target)) < 0.02 * np.max(np.abs(target))


def test_xftf_interpolates_non_uniform_k():
    k_uniform = 0.05 * np.arange(301)
    k_raw = np.sort(np.r_[0.0, np.random.default_rng(2).uniform(0.01, 15.0, 700), 15.0])

    def chi(k):
        return np.sin(2 * k * 2.2) * np.exp(-0.01 * k * k)

    ref = xftf(k_uniform, chi(k_uniform), kmin=3, kmax=13, kweight=2)
    res = xftf(k_raw, chi(k_raw), kmin=3, kmax=13, kweight=2, kstep=0.05)
    assert np.max(np.abs(res.chir - ref.chir)) < 0.01 * np.max(np.abs(ref.chir))


def test_batched_ft_equals_single():
    k = 0.05 * np.arange(300)
    rng = np.random.default_rng(5)
    chis = rng.normal(size=(4, k.size))
    batch = xftf(k, chis, kmin=3, kmax=13, kweight=1)
    for i in range(4):
        assert np.allclose(batch.chir[i], xftf(k, chis[i], kmin=3, kmax=13, kweight=1).chir)


def test_hanning_window_shape():
    k = 0.05 * np.arange(400)
    w = ftwindow(k, xmin=3, xmax=14, dx=1, window="hanning")
    assert (
        w[k < 2.5 - 1e-9].max() == 0
        and w[(k > 3.5) & (k < 13.5)].min() == 1
        and w[k > 14.5 + 1e-9].max() == 0
    )
    assert w[np.isclose(k, 3.0)][0] == pytest.approx(0.5)
    with pytest.raises(InputError, match="unknown window"):
        ftwindow(k, xmin=3, xmax=14, window="triangle")


def test_noise_estimate_recovers_white_noise_level():
    k = 0.05 * np.arange(341)
    rng = np.random.default_rng(11)
    for sigma in (0.002, 0.01):
        chis = chi_true(k)[None, :] + rng.normal(0, sigma, (30, k.size))
        est = estimate_chi_noise(k, chis).epsilon_k
        assert est.shape == (30,)
        # the high-R method is known to run a little high (window leakage); within 20 %
        assert np.median(est) == pytest.approx(sigma, rel=0.2)


def test_autobk_errors(grid):
    mu, _ = synthetic_mu(grid)
    short = grid < E0 + 3  # XANES only: k < 1 / Å, no EXAFS to fit
    with pytest.raises(InputError, match="k range"):
        autobk(grid[short], mu[short], e0=E0, edge_step=STEP)
    stack = np.stack([mu, np.full_like(mu, np.nan), mu * 2])
    res = autobk(grid, stack, e0=E0, edge_step=np.array([STEP, STEP, 2 * STEP]))
    assert res.ok.tolist() == [True, False, True]
    assert np.isnan(res.chi[1]).all() and "NaN" in res.errors[1]
    assert np.allclose(res.chi[0], res.chi[2], atol=1e-8)
    with pytest.raises(InputError, match="rbkg"):
        autobk(grid, mu, e0=E0, rbkg=-1)
