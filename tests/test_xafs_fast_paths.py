"""The single-spectrum fast paths of the preprocessing engine against their references.

Each shortcut taken for speed is checked against what it replaces: the not-a-knot interpolation against
FITPACK (scipy's splrep / splev, which Larch uses), the AUTOBK fit against a general least-squares solver on
Larch's objective, the partial DFT against the FFT, the one-spectrum paths of pre_edge / autobk and the
one-row Lorentzian smoothing against the stack paths, and χ(k) against xraylarch itself.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.interpolate import splev, splrep
from scipy.optimize import least_squares

from xafs_stream.data import SPECTRA_DIR
from xafs_stream.engines.errors import InputError
from xafs_stream.engines.xafs import autobk, pre_edge
from xafs_stream.engines.xafs._smooth import LorentzSmoother
from xafs_stream.io import read_spectrum

# the module, not the function that xafs_stream.engines.xafs re-exports under the same name
_autobk = importlib.import_module("xafs_stream.engines.xafs.autobk")

FIXTURES = Path(__file__).parent / "fixtures" / "larch_preprocess"


@pytest.fixture(scope="module")
def cu():
    return read_spectrum(SPECTRA_DIR / "cu_metal_rt.xdi")


@pytest.mark.parametrize("n", [4, 5, 9, 300])
def test_not_a_knot_spline_equals_fitpack_interpolation(n):
    rng = np.random.default_rng(n)
    x = np.sort(rng.uniform(-0.3, 16.0, n))
    y = rng.normal(size=(n, 3))
    xo = np.linspace(-0.6, 16.4, 91)  # inside and beyond both ends (end pieces extended)
    ref = np.column_stack([splev(xo, splrep(x, y[:, j], k=3, s=0)) for j in range(3)])
    scale = np.abs(ref).max()
    assert np.abs(_autobk._not_a_knot(x, y, xo) - ref).max() <= 1e-12 * scale
    assert np.abs(_autobk._not_a_knot(x, y[:, 1], xo) - ref[:, 1]).max() <= 1e-12 * scale


def _larch_objective(y, a, wz, wd):
    """Larch's AUTOBK residual vector: χ(R) part, then the clamps scaled by 0.1 + 10 mean(χ(R)²)."""

    def residual(c):
        r1 = y - a @ c
        return np.concatenate([r1, (0.1 + 10.0 * (r1 @ r1) / y.size) * (wz - wd @ c)])

    return residual


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clamped_fit_reaches_the_minimum_of_larchs_objective(seed):
    rng = np.random.default_rng(seed)
    n, nspl = 66, 12
    a = rng.normal(size=(n, nspl)) * np.logspace(0, 2, nspl)  # badly scaled columns, like k²-weighted ones
    y = a @ rng.normal(size=nspl) + rng.normal(0.0, 0.3, n)
    wd = rng.normal(size=(6, nspl)) * 20.0  # both ends clamped, heavily: a strongly non-linear objective
    wz = rng.normal(size=6)
    start = rng.normal(size=nspl)
    residual = _larch_objective(y, a, wz, wd)
    c, chisqr, nfev = _autobk._fit_clamped(y, a, wz, wd, start)
    assert chisqr == pytest.approx(float(residual(c) @ residual(c)), rel=1e-10)
    assert nfev < 60
    # Levenberg-Marquardt (what Larch uses) from the start or from our answer finds nothing lower
    for x0 in (start, c):
        ref = least_squares(residual, x0, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=2000)
        assert chisqr <= 2.0 * ref.cost * (1.0 + 1e-9)  # least_squares' cost is half the sum of squares
    assert np.allclose(ref.x, c, rtol=1e-5, atol=1e-7 * np.abs(c).max())
    # the fallback (MINPACK from the start) reaches a stationary point no lower
    _, chisqr2, _ = _autobk._fit_clamped_lstsq(y, a, wz, wd, start)
    assert chisqr <= chisqr2 * (1.0 + 1e-9)


def test_clamped_fit_with_a_rank_deficient_transform_uses_the_clamps():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(40, 8))
    a[:, 7] = a[:, 6]  # two splines with the same χ(R): only the clamps tell them apart
    y = rng.normal(size=40)
    wd = np.zeros((3, 8))
    wd[:, 5:] = rng.normal(size=(3, 3)) * 5
    wz = rng.normal(size=3)
    residual = _larch_objective(y, a, wz, wd)
    c, chisqr, _ = _autobk._fit_clamped(y, a, wz, wd, np.zeros(8))
    ref = least_squares(residual, np.zeros(8), method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    assert np.all(np.isfinite(c))
    assert chisqr == pytest.approx(2.0 * ref.cost, rel=1e-6)


def test_partial_dft_rows_equal_the_fft():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(330, 4))
    ft = np.fft.rfft(x, n=2048, axis=0)[:33]
    rows = _autobk._dft_rows(33, 330, 2048)
    assert np.allclose(rows @ x, np.concatenate([ft.real, ft.imag]), rtol=0, atol=1e-11)
    assert not rows.flags.writeable  # shared between calls


def test_one_row_smoothing_equals_the_stack_path():
    rng = np.random.default_rng(2)
    x = 7000.0 + np.cumsum(rng.uniform(0.2, 3.0, 150))
    y = rng.normal(size=(4, 150))
    for sigma in (0.3, 0.7):
        smoother = LorentzSmoother(x, sigma=sigma, xstep=sigma)
        stack = smoother(y)
        for i in range(4):
            assert np.allclose(smoother(y[i : i + 1])[0], stack[i], rtol=0, atol=1e-12)


def test_single_autobk_equals_the_stack_path(cu):
    e, mu = cu.energy, cu.mu
    pre = pre_edge(e, mu)
    stack = np.stack([mu, 2.0 * mu + 0.1])
    steps = np.array([pre.edge_step, 2.0 * pre.edge_step])
    many = autobk(e, stack, e0=pre.e0, edge_step=steps, rbkg=1.1, kweight=3, clamp_lo=1.0)
    for i in range(2):
        one = autobk(e, stack[i], e0=pre.e0, edge_step=steps[i], rbkg=1.1, kweight=3, clamp_lo=1.0)
        assert np.allclose(one.chi, many.chi[i], rtol=0, atol=1e-12)
        assert np.allclose(one.bkg, many.bkg[i], rtol=1e-12)
        assert one.params_used["nknots"] == many.params_used["nknots"][i]
        assert one.diagnostics[0]["chisqr"] == pytest.approx(many.diagnostics[i]["chisqr"], rel=1e-12)
    # e0 and the step found by pre_edge when not given: the same as passing them
    found = autobk(e, mu, rbkg=1.1, kweight=3, clamp_lo=1.0)
    assert np.allclose(found.chi, many.chi[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("bad", ["e0", "edge_step", "nan", "nan+e0"])
def test_single_and_stack_paths_give_the_same_errors(cu, bad):
    """A spectrum that fails alone raises the message that the stack path records for it."""
    e, mu = cu.energy, cu.mu.copy()
    pre = pre_edge(e, cu.mu)
    one, both = {}, {}
    if bad == "e0":
        one, both = {"e0": 5000.0}, {"e0": np.array([5000.0, pre.e0])}
    elif bad == "edge_step":
        one = {"e0": pre.e0, "edge_step": -1.0}
        both = {"e0": pre.e0, "edge_step": np.array([-1.0, pre.edge_step])}
    else:
        mu[100] = np.nan
        if bad == "nan+e0":
            one = both = {"e0": pre.e0, "edge_step": pre.edge_step}
    for func in (pre_edge, autobk):
        batch = func(e, np.stack([mu, cu.mu]), **both)
        assert batch.ok.tolist() == [False, True]
        with pytest.raises(InputError) as info:
            func(e, mu, **one)
        assert str(info.value) == batch.errors[0]


def test_chi_equals_larch_closely():
    """χ(k) of the packaged spectra equals Larch's to 1e-5 of its largest k²χ (it is ~1e-8): a much
    tighter check than the k²χ correlation of the acceptance test."""
    meta = json.loads((FIXTURES / "README.json").read_text())
    for name in meta["spectra"]:
        spec = read_spectrum(SPECTRA_DIR / name)
        with np.load(FIXTURES / f"{Path(name).stem}.npz") as f:
            ref_k, ref_chi = f["k"], f["chi"]
        pre = pre_edge(spec.energy, spec.mu)
        res = autobk(spec.energy, spec.mu, e0=pre.e0, edge_step=pre.edge_step, **meta["autobk"])
        n = min(res.k.size, ref_k.size)
        ours, theirs = res.chi[:n] * res.k[:n] ** 2, ref_chi[:n] * ref_k[:n] ** 2
        assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()
