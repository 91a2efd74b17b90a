"""E0, pre-edge / post-edge normalisation, flattening, batching and per-spectrum errors (synthetic truth)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from xafs_stream.engines.errors import InputError
from xafs_stream.engines.xafs import find_e0, pre_edge

E0_TRUE = 7112.0
STEP_TRUE = 1.7


def synthetic(
    energy: np.ndarray,
    e0: float = E0_TRUE,
    step: float = STEP_TRUE,
    width: float = 1.0,
    pre=(0.30, -2e-4),
    post=(1.5e-4, -6e-8),
) -> np.ndarray:
    """μ = pre-edge line + step * edge(E - e0) * (1 + post-edge quadratic): the exact model pre_edge fits.

    The erf edge is 0 / 1 to machine precision more than 6 eV from e0, i.e. inside both fit ranges.
    """
    x = energy - e0
    edge = 0.5 * (1 + erf(x / width))
    return pre[0] + pre[1] * x + step * edge * (1 + post[0] * x + post[1] * x**2)


@pytest.fixture
def exafs_grid():
    # typical step scan: coarse pre-edge, 0.25 eV through the edge, ~constant k steps above
    pre = np.arange(6900.0, 7080.0, 10.0)
    edge = np.arange(7080.0, 7150.0, 0.25)
    k = np.arange(np.sqrt((7150.0 - E0_TRUE) * 0.2625), 16.0, 0.05)
    return np.concatenate([pre, edge, E0_TRUE + k**2 / 0.2625])


def test_exact_model_gives_true_e0_step_and_flat(exafs_grid):
    mu = synthetic(exafs_grid)
    res = pre_edge(exafs_grid, mu)
    assert res.e0 == pytest.approx(E0_TRUE, abs=0.25)  # the grid point at the derivative maximum
    # the post-edge polynomial evaluated at E0 is the true step up to the tiny polynomial slope
    assert res.edge_step == pytest.approx(STEP_TRUE, rel=2e-4)
    above = exafs_grid > E0_TRUE + 10
    assert np.allclose(res.flat[above], 1.0, atol=2e-4)
    below = exafs_grid < E0_TRUE - 10
    assert np.allclose(res.norm[below], 0.0, atol=1e-9)
    assert np.allclose(res.pre_edge_line, 0.30 - 2e-4 * (exafs_grid - E0_TRUE), atol=1e-9)
    assert res.params_used["nnorm"] == 2 and res.params_used["pre1"] < res.params_used["pre2"] < 0


def test_find_e0_follows_the_edge_on_a_uniform_grid():
    e = np.arange(8900.0, 9100.0, 0.5)
    for e0 in (8970.0, 8979.0, 8991.5):
        assert find_e0(e, synthetic(e, e0=e0)) == pytest.approx(e0, abs=0.5)


def test_user_parameters_are_used_and_reported(exafs_grid):
    mu = synthetic(exafs_grid)
    res = pre_edge(exafs_grid, mu, e0=7112.0, pre1=-150, pre2=-40, norm1=60, norm2=600, nnorm=1)
    p = res.params_used
    assert (p["pre1"], p["pre2"], p["norm1"], p["norm2"], p["nnorm"]) == (-150, -40, 60, 600, 1)
    assert res.e0 == 7112.0 and p["e0_given"]
    fixed = pre_edge(exafs_grid, mu, e0=7112.0, edge_step=2.0)
    assert fixed.edge_step == 2.0
    assert np.allclose(fixed.norm * 2.0, res.norm * res.edge_step)


def test_short_xanes_range_adapts_ranges():
    """A μ-XANES map stack: 100 energies around the edge; the ranges must stay inside the data."""
    e = np.linspace(7090.0, 7190.0, 100)
    rng = np.random.default_rng(3)
    mu = synthetic(e)[None, :] * rng.uniform(0.2, 3.0, (50, 1)) + rng.normal(0, 0.002, (50, e.size))
    res = pre_edge(e, mu)
    assert res.ok.all()
    p = res.params_used
    assert np.all(p["pre1"] >= e[0] - res.e0) and np.all(p["norm2"] <= e[-1] - res.e0)
    assert np.all(p["nnorm"] <= 1)
    assert np.allclose(res.e0, E0_TRUE, atol=1.1)
    # flattened spectra are ~1 in the post-edge whatever the thickness
    assert np.allclose(np.median(res.flat[:, e > 7130], axis=1), 1.0, atol=0.02)


def test_batch_equals_single_spectrum_results(exafs_grid):
    rng = np.random.default_rng(1)
    stack = np.stack(
        [
            synthetic(exafs_grid, e0=E0_TRUE + d, step=s) + rng.normal(0, 1e-3, exafs_grid.size)
            for d, s in [(-3, 1.0), (0, 2.0), (2.5, 0.7), (5, 1.3)]
        ]
    )
    batch = pre_edge(exafs_grid, stack)
    for i, row in enumerate(stack):
        one = pre_edge(exafs_grid, row)
        assert batch.e0[i] == one.e0
        assert batch.edge_step[i] == pytest.approx(one.edge_step, rel=1e-12)
        assert np.allclose(batch.norm[i], one.norm, atol=1e-12)
        assert np.allclose(batch.flat[i], one.flat, atol=1e-12)
        assert np.allclose(batch.post_edge_curve[i], one.post_edge_curve, atol=1e-12)


def test_bad_spectra_in_a_batch_are_flagged_not_fatal(exafs_grid):
    good = synthetic(exafs_grid)
    rng = np.random.default_rng(0)
    nan_row = good.copy()
    nan_row[40] = np.nan
    stack = np.stack([good, nan_row, np.zeros_like(good), -good, rng.normal(0, 1, good.size), 2 * good])
    res = pre_edge(exafs_grid, stack)
    assert res.ok.tolist() == [True, False, False, False, False, True]
    assert "NaN" in res.errors[1] and f"{exafs_grid[40]:.2f}" in res.errors[1]
    assert "no edge" in res.errors[2]
    assert "no edge" in res.errors[3] and "not positive" in res.errors[3]
    assert "no edge" in res.errors[4]
    assert np.isnan(res.e0[1:5]).all() and np.isnan(res.norm[1:5]).all()
    assert res.edge_step[5] == pytest.approx(2 * res.edge_step[0])
    assert np.isnan(find_e0(exafs_grid, stack)[1])


def test_e0_outside_the_data_is_a_per_spectrum_error(exafs_grid):
    mu = np.stack([synthetic(exafs_grid)] * 3)
    res = pre_edge(exafs_grid, mu, e0=np.array([7112.0, 5000.0, np.nan]))
    assert res.ok.tolist() == [True, False, False]
    assert "outside the data" in res.errors[1]
    with pytest.raises(InputError, match="e0: 5000.00 eV is outside the data"):
        pre_edge(exafs_grid, mu[0], e0=5000.0)


@pytest.mark.parametrize(
    "energy, match",
    [
        (np.r_[np.arange(7000.0, 7100.0, 5.0), 7090.0, np.arange(7100.0, 7300.0, 5.0)], "not increasing"),
        (np.r_[np.arange(7000.0, 7100.0, 5.0), 7095.0, np.arange(7100.0, 7300.0, 5.0)], "duplicate energies"),
        (np.arange(7000.0, 7040.0, 5.0), "too few points"),
        (np.r_[np.arange(7000.0, 7100.0, 5.0), np.inf], "non-finite"),
    ],
)
def test_bad_energy_grid_raises_clear_error(energy, match):
    mu = np.linspace(0, 1, energy.size)
    with pytest.raises(InputError, match=match):
        pre_edge(energy, mu)


def test_single_spectrum_failure_raises(exafs_grid):
    with pytest.raises(InputError, match="no edge"):
        pre_edge(exafs_grid, np.ones_like(exafs_grid))
    with pytest.raises(InputError, match="mu: last axis has"):
        pre_edge(exafs_grid, np.ones((2, exafs_grid.size + 1)))
    with pytest.raises(InputError, match="nnorm"):
        pre_edge(exafs_grid, synthetic(exafs_grid), nnorm=7)
