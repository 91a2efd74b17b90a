"""The noise of χ at high k as an adaptive target (issue 21): ε from the points' own variances against hand
computation, the scatter check against noise the counts do not show, and the agent's stated ε against the
error it really made, over noise realisations of a spectrum with known χ."""

import numpy as np
import pytest

from xafs_stream.engines.adaptive import AdaptiveXanes
from xafs_stream.engines.adaptive.high_k import chi_noise, grid_energies
from xafs_stream.engines.adaptive.simulate import run_simulated
from xafs_stream.engines.errors import InputError

E0 = 8979.0


def mu_of(energy):
    """An arctan edge (step 1 on a 0.3 pre-edge) times 1 + χ, χ a damped single shell at 2.55 Å."""
    e = np.asarray(energy, float)
    edge = 0.5 + np.arctan((e - E0) / 1.5) / np.pi
    k = np.sqrt(np.clip(e - E0, 0, None) * 0.2625)
    return 0.3 + edge * (1 + 0.3 * np.exp(-0.01 * k ** 2) * np.sin(5.1 * k) / np.maximum(k, 1) ** 1.5)


def test_grid_and_epsilon_follow_the_points_variances():
    k, energy = grid_energies(E0, (10.0, 10.3))
    np.testing.assert_allclose(k, [10.0, 10.05, 10.1, 10.15, 10.2, 10.25, 10.3])
    np.testing.assert_allclose(np.sqrt((energy - E0) * 0.262468), k, atol=2e-4)  # E = E0 + ħ²k²/2m
    e = np.concatenate([energy, energy[:2], [energy[0] + 1.0]])  # two repeats, one point off the grid
    var = np.concatenate([np.full(7, 4e-6), [4e-6, 1e-6], [1e-9]])
    y = mu_of(e)  # noiseless: the scatter check finds nothing to scale
    res = chi_noise(e, y, var, np.ones(e.size), energy, step=2.0)
    expect = np.array([2e-6, 8e-7] + [4e-6] * 5) / 4.0  # inverse-variance means, over step²; off-grid ignored
    np.testing.assert_allclose(res.var, expect)
    assert res.eps == pytest.approx(np.sqrt(expect.mean()))
    assert res.scale == 1.0
    unmeasured = chi_noise(e[1:7], y[1:7], var[1:7], np.ones(6), energy, step=2.0)
    assert not np.isfinite(unmeasured.eps) and np.isnan(unmeasured.scale)


def test_scatter_the_counts_do_not_show_scales_epsilon_up():
    _, energy = grid_energies(E0)
    rng = np.random.default_rng(0)
    stated = 1e-3
    y = mu_of(energy) + rng.normal(0, 2 * stated, energy.size)  # twice the noise the counts claim
    res = chi_noise(energy, y, np.full(energy.size, stated ** 2), np.ones(energy.size), energy, step=1.0)
    assert 2.5 < res.scale < 6.0  # ~4 = (2 x)² with 33 degrees of freedom
    assert res.eps == pytest.approx(stated * np.sqrt(res.scale))


def _run(seed, noise, target, claimed=1.0):
    agent = AdaptiveXanes(E0, {"chi_noise": target}, max_time_s=3000, max_points=2000)
    report = run_simulated(agent, mu_of, noise, np.random.default_rng(seed), batch=10, told_sd=claimed)
    # the error really made: each grid point's mean against the noiseless μ, in the agent's χ units
    _, grid = grid_energies(E0)
    e, y, t = np.array(agent.energy), np.array(agent.mu), np.array(agent.dwell)  # variance ∝ 1 / dwell
    err = [(np.average(y[np.isclose(e, g)], weights=t[np.isclose(e, g)]) - mu_of(g)) for g in grid]
    return report, float(np.sqrt(np.mean(np.square(err)))) / report["chi_noise"]["step"]


def test_the_stated_noise_covers_the_error_made_over_realisations():
    ratios = []
    for seed in range(5):
        report, real = _run(seed, noise=0.002, target=1e-3)
        assert report["done"] and report["reason"].startswith("targets met: χ noise"), report["reason"]
        assert report["sd"]["chi_noise"] <= 1e-3 and report["verdict"] == "ok", report["verdict_reasons"]
        assert report["chi_noise"]["measured"] == report["chi_noise"]["grid_points"] == 81
        ratios.append(real / report["sd"]["chi_noise"])
    # RMS over 81 points: one realisation's ratio scatters by ~8 %
    assert 0.75 < min(ratios) and max(ratios) < 1.25 and 0.85 < np.mean(ratios) < 1.15, ratios


def test_noise_the_counts_understate_is_found_and_said():
    report, real = _run(1, noise=0.002, target=1e-3, claimed=0.5)  # the counts claim half the real noise
    assert report["chi_noise"]["scale"] > 2.5
    assert any("scatters" in r for r in report["verdict_reasons"]) and report["verdict"] == "warn"
    assert real < 1.25 * report["sd"]["chi_noise"]  # the scaled ε still covers the error made


def test_bad_chi_noise_settings_are_one_line_errors():
    with pytest.raises(InputError, match="target 'chi_noise' must be > 0, got"):
        AdaptiveXanes(E0, {"chi_noise": 0})
    with pytest.raises(InputError, match="chi_k must be"):
        AdaptiveXanes(E0, {"chi_noise": 1e-3}, chi_k=(14, 10))


def test_chi_noise_scan_on_the_simulated_beamline(RE, collect):
    """``xafs_scan_adaptive(target={"chi_noise": ...})`` with a real RunEngine on the simulated Cu foil: it
    measures the k 10-14 Å⁻¹ grid until ε reaches the target, and its stream says so."""
    import json

    from xafs_stream.plans import xafs_scan_adaptive
    from xafs_stream.simulated_devices import make_beamline

    bl = make_beamline(sample="Cu", seed=4, flux_cps=2e5)
    RE(xafs_scan_adaptive([bl.scaler], bl.dcm, element="Cu", target={"chi_noise": 2e-3}, batch=20,
                          max_points=1000, max_time_s=3000))
    stop = next(d for n, d in collect if n == "stop")
    streams = {d["uid"]: d["name"] for n, d in collect if n == "descriptor"}
    decisions = [d["data"] for n, d in collect if n == "event" and streams[d["descriptor"]] == "adaptive"]
    points = [d["data"] for n, d in collect if n == "event" and streams[d["descriptor"]] == "primary"]
    last = decisions[-1]
    assert stop["reason"].startswith("targets met: χ noise"), stop["reason"]
    assert last["adaptive_chi_noise"] == last["adaptive_chi_noise_sd"] <= 2e-3
    report = json.loads(last["adaptive_report"])
    assert report["chi_noise"]["measured"] == 81 and report["verdict"] in ("ok", "warn")
    # every grid point was measured at its own energy (the grid from the run's E0)
    start = next(d for n, d in collect if n == "start")
    _, grid = grid_energies(start["e0"])
    measured = np.round([p["dcm"] for p in points], 3)
    assert np.isin(np.round(grid, 3), measured).all()
