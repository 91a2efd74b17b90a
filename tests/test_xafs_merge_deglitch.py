"""Merging repeats, deglitching and energy calibration / alignment on synthetic data with known truth, and
on the packaged Cu foil spectrum with a known imposed shift."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from xafs_stream.data import SPECTRA_DIR
from xafs_stream.engines.errors import InputError
from xafs_stream.engines.xafs import align_energy, calibrate_energy, deglitch, merge_spectra, pre_edge
from xafs_stream.io import read_spectrum


def smooth_spectrum(e: np.ndarray, e0: float = 7112.0) -> np.ndarray:
    x = e - e0
    k = np.sqrt(np.maximum(x, 0) * 0.2625)
    return 0.3 + 0.5 * (1 + erf(x / 2.0)) * (1 + 0.05 * np.sin(2 * 2.5 * k) * np.exp(-0.02 * k * k))


@pytest.fixture(scope="module")
def cu():
    return read_spectrum(SPECTRA_DIR / "cu_metal_rt.xdi")


def test_merge_gives_mean_and_standard_error():
    e = np.linspace(7000, 7600, 500)
    truth = smooth_spectrum(e)
    sigma, n = 0.004, 8
    rng = np.random.default_rng(2)
    reps = truth[None, :] + rng.normal(0, sigma, (n, e.size))
    res = merge_spectra(e, reps)
    assert res.used == list(range(n)) and not res.excluded
    # standard error sigma / sqrt(n), estimated per point from 8 repeats: its median within 10 %
    assert np.median(res.noise) == pytest.approx(sigma / np.sqrt(n), rel=0.1)
    # the merge is closer to the truth than a single repeat, by about sqrt(n)
    assert np.std(res.mu - truth) == pytest.approx(sigma / np.sqrt(n), rel=0.15)


def test_merge_on_different_grids_with_shifts_and_bad_repeats():
    grids = [np.linspace(7000, 7600, 400), np.linspace(6990, 7590, 450), np.linspace(7005, 7650, 420)]
    shifts = [0.0, 1.5, -0.8]  # each repeat's energy scale is off by -shift
    mus = [smooth_spectrum(g + s) for g, s in zip(grids, shifts)]
    bad = mus[1].copy()
    bad[10] = np.nan
    res = merge_spectra(grids + [grids[1]], mus + [bad], shifts=shifts + [1.5])
    assert res.used == [0, 1, 2] and "NaN" in res.excluded[3]
    assert res.energy[0] >= 7000 and res.energy[-1] <= 7591.5
    err = np.abs(res.mu - smooth_spectrum(res.energy))
    edge = np.abs(res.energy - 7112.0) < 10
    assert err[~edge].max() < 2e-3 and err[edge].max() < 0.05  # linear interpolation error only
    unshifted = merge_spectra(grids, mus)
    edge_u = np.abs(unshifted.energy - 7112.0) < 10
    err_u = np.abs(unshifted.mu - smooth_spectrum(unshifted.energy))
    assert err_u[edge_u].max() > 2 * err[edge].max()  # the shifts matter
    with pytest.raises(InputError, match="share no energy range"):
        merge_spectra([np.linspace(7000, 7100, 50), np.linspace(7200, 7300, 50)], [np.ones(50), np.ones(50)])


def test_deglitch_finds_inserted_glitches_and_leaves_clean_data(cu):
    e, mu = cu.energy, cu.mu
    e0 = pre_edge(e, mu).e0
    base = deglitch(e, mu)
    rng = np.random.default_rng(7)
    far = np.flatnonzero((e - e0 > 60) | (e - e0 < -25))[2:-2]
    for trial in range(8):
        idx = np.sort(rng.choice(far, 3, replace=False))
        if np.min(np.diff(idx)) < 3:
            continue
        g = mu.copy()
        g[idx] += np.array([1, -1, 1]) * 0.05
        res = deglitch(e, g)
        assert set(idx) <= set(res.indices[0])
        assert set(res.indices[0]) - set(idx) <= set(base.indices[0])  # nothing new besides the inserted ones
        assert np.max(np.abs(res.mu[idx] - mu[idx])) < 0.01  # replaced by the cubic through the neighbours
        assert np.allclose(g[idx] - mu[idx], np.array([1, -1, 1]) * 0.05)  # input untouched


def test_deglitch_synthetic_stack_exact():
    e = np.r_[
        np.arange(6900.0, 7100.0, 5.0),
        np.arange(7100.0, 7140.0, 0.5),
        7112 + np.arange(5.3, 16, 0.05) ** 2 / 0.2625,
    ]
    rng = np.random.default_rng(9)
    stack = smooth_spectrum(e)[None, :] + rng.normal(0, 5e-4, (3, e.size))
    glitches = {0: [20, 300], 1: [], 2: [250]}
    for i, idx in glitches.items():
        stack[i, idx] += 0.02
    res = deglitch(e, stack)
    for i, idx in glitches.items():
        assert res.indices[i].tolist() == idx
    assert res.glitch.shape == stack.shape


def test_calibration_recovers_known_shift(cu):
    for shift in (-3.2, 0.0, 4.5):
        cal = calibrate_energy(cu.energy - shift, cu.mu, e0_reference=8979.0)
        measured_unshifted = pre_edge(cu.energy, cu.mu).e0
        assert cal.shift == pytest.approx(8979.0 - measured_unshifted + shift, abs=1e-9)
        assert cal.energy[0] == pytest.approx(cu.energy[0] - shift + cal.shift)


def test_alignment_recovers_sub_step_shift(cu):
    for shift in (-1.37, 0.21, 2.9):
        al = align_energy(cu.energy + shift, cu.mu, cu.energy, cu.mu)
        assert al.shift == pytest.approx(-shift, abs=0.02)
        assert al.scale == pytest.approx(1.0, abs=0.01)
