"""Adaptive acquisition (issue 21): the local estimators against known truth, the design agent's error bars
against the scatter over noise realisations, and ``xafs_scan_adaptive`` on the simulated beamline with a real
RunEngine (its decisions in the ``adaptive`` stream, its spectrum analysed by the service's own chain)."""

import json

import numpy as np
import pytest
from xafs_stream.plans import PlanArgumentError, xafs_scan_adaptive
from xafs_stream.simulated_devices.samples import load_sample

from xafs_stream.engines.adaptive import AdaptiveXanes
from xafs_stream.engines.adaptive.local import e0_rivals, estimate, rough_features, whiteline_rivals
from xafs_stream.engines.adaptive.simulate import run_simulated

EE, WIDTH, PEAK_AT = 7000.0, 1.5, 7009.0


def synthetic(energy):
    """An arctan edge at EE (half width WIDTH) with a white-line Gaussian at PEAK_AT: μ in edge-step units."""
    energy = np.asarray(energy, float)
    return 0.5 + np.arctan((energy - EE) / WIDTH) / np.pi + 0.6 * np.exp(-0.5 * ((energy - PEAK_AT) / 2.5) ** 2)


def synthetic_truth():
    """Steepest point and white-line maximum of the synthetic spectrum, from a 0.0001 eV grid."""
    grid = np.arange(EE - 10, EE + 25, 1e-4)
    mu = synthetic(grid)
    e0 = grid[np.argmax(np.gradient(mu, grid))]
    above = grid >= e0
    return float(e0), float(grid[above][np.argmax(mu[above])])


def test_local_estimators_recover_the_edge_and_white_line_of_a_known_spectrum():
    e0_true, wl_true = synthetic_truth()
    grid = np.arange(EE - 30, EE + 50, 0.1)
    mu = synthetic(grid)
    var = np.full(grid.size, 1e-6)
    rough = rough_features(grid, mu, EE + 3)  # a tabulated E0 3 eV off
    e0 = estimate("e0", grid, mu, var, rough[0])
    wl = estimate("whiteline", grid, mu, var, rough[1])
    # the cubic / quartic over ±2 / ±3 eV: their definitional bias on this shape is below 0.05 eV
    assert abs(e0.value - e0_true) < 0.05, (e0.value, e0_true)
    assert abs(wl.value - wl_true) < 0.05, (wl.value, wl_true)
    # noise 1e-3: tiny error bars (E0's includes the quintic check's model share, ~0.01 eV on this shape)
    assert e0.sd < 0.02 and wl.sd < 0.01
    assert e0.model_sd < 0.015, e0.model_sd


def _run_agent(mu_of, e0_guess, sigma1, seed, targets):
    return run_simulated(AdaptiveXanes(e0_guess, targets), mu_of, sigma1, np.random.default_rng(seed))


@pytest.mark.parametrize("sample", ["synthetic", "Fe"])
def test_stated_sd_covers_the_scatter_over_20_noise_realisations(sample):
    """20 realisations (noise sd 0.01 edge steps at 1 s): the targets are met in at least 18, and the errors
    against the estimators' value on the noiseless spectrum, in units of the stated sd, have an RMS within
    [0.5, 1.6] (1 is ideal; the sd is the Laplace sd of a linear model, scaled by the fit's reduced χ²)."""
    targets = {"e0": 0.1, "whiteline": 0.1}
    if sample == "synthetic":
        mu_of, e0_guess = synthetic, EE + 2.0
    else:
        s = load_sample("Fe")  # Fe foil: the first inflection is a shoulder 8 eV below the main rise
        mu_of, e0_guess = s.mu_t, s.e0
    truth = AdaptiveXanes(e0_guess, targets).noiseless_targets(mu_of)
    z = {n: [] for n in targets}
    met = 0
    for seed in range(20):
        rep = _run_agent(mu_of, e0_guess, 0.01, seed, targets)
        if rep["reason"].startswith("targets met"):
            met += 1
            for n in targets:
                z[n].append((rep["estimates"][n] - truth[n]) / rep["sd"][n])
                assert rep["sd"][n] <= targets[n]
            assert rep["beam_time_s"] < 400
    assert met >= 18, met
    for n, values in z.items():
        rms = float(np.sqrt(np.mean(np.square(values))))
        assert 0.5 <= rms <= 1.6, (n, rms, values)


def _two_maxima(energy, second_height):
    """An edge at EE with two white-line maxima 10 eV apart: heights 1.35 (at EE + 14) and ``second_height``
    (at EE + 24), like Cu's near-equal pair."""
    energy = np.asarray(energy, float)
    edge = 0.5 + np.arctan((energy - EE) / WIDTH) / np.pi
    bumps = [(EE + 14, 0.35), (EE + 24, second_height - 1.0)]
    return edge + sum(h * np.exp(-0.5 * ((energy - c) / 2.5) ** 2) for c, h in bumps)


def test_whiteline_rivals_give_the_chance_that_another_maximum_is_higher():
    """Coarse points every 3 eV (noise 0.01): two equal maxima are a toss-up; a second maximum 0.1 lower is no
    rival; with the noise 10x smaller, a difference of 0.01 is resolved as well."""
    energy = np.arange(EE - 30, EE + 50, 1.0)
    rng = np.random.default_rng(0)
    var = np.full(energy.size, 1e-4)
    equal = whiteline_rivals(energy, _two_maxima(energy, 1.35) + rng.normal(0, 0.01, energy.size), var, EE)
    assert len(equal) == 2 and {round(e) for e, _ in equal} == {EE + 14, EE + 24}, equal
    assert all(0.1 < p < 0.9 for _, p in equal)
    assert whiteline_rivals(energy, _two_maxima(energy, 1.25) + rng.normal(0, 0.01, energy.size), var, EE) == []
    quiet = _two_maxima(energy, 1.34) + rng.normal(0, 0.001, energy.size)
    assert whiteline_rivals(energy, quiet, np.full(energy.size, 1e-6), EE) == []


def _shouldered(energy, height, width):
    """An edge whose first rise is a small arctan step at EE (``height`` of the edge step, half width ``width``)
    below the main rise at EE + 4 eV, like the oxides' shoulder: noise can make or unmake a slope maximum there."""
    energy = np.asarray(energy, float)
    return (height * (0.5 + np.arctan((energy - EE) / width) / np.pi)
            + (1.0 - height) * (0.5 + np.arctan((energy - EE - 4.0) / 1.5) / np.pi))


@pytest.mark.parametrize("height, width", [(0.28, 0.8), (0.25, 0.8)])
def test_e0_rivals_name_the_other_inflection_when_the_noise_moved_the_first_one(height, width):
    """Coarse points every 1 eV, noise 0.01, 20 realisations. (0.28, 0.8): the shoulder is the first inflection
    of the noiseless curve and the noise flattens it in some realisations; (0.25, 0.8): it is not, and the noise
    makes it one in some. Where the rule's E0 is not the noiseless one, the other one is named as a rival in all
    but at most one realisation (the bootstrap of feature_candidates saw none of these); a plain edge gets no
    rival in 19 of 20; with the noise 100x smaller, none is needed."""
    energy = np.arange(EE - 30, EE + 50, 1.0)
    var = np.full(energy.size, 1e-4)
    clean = _shouldered(energy, height, width)
    truth = rough_features(energy, clean, EE + 2)[0]
    assert e0_rivals(energy, clean, np.full(energy.size, 1e-8), EE + 2, truth) == []
    moved = named = 0
    for seed in range(20):
        mu = clean + np.random.default_rng(seed).normal(0, 0.01, energy.size)
        e0 = rough_features(energy, mu, EE + 2)[0]
        if abs(e0 - truth) > 1.5:
            moved += 1
            rivals = e0_rivals(energy, mu, var, EE + 2, e0)
            named += any(abs(e - truth) <= 1.5 and p > 0.05 for e, p in rivals[1:])
    assert moved >= 3, moved  # the case is a real one at this noise
    assert named >= moved - 1, (named, moved)
    plain = 0.5 + np.arctan((energy - EE - 4.0) / 1.5) / np.pi
    alarms = sum(bool(e0_rivals(energy, mu, var, EE + 2, rough_features(energy, mu, EE + 2)[0]))
                 for mu in (plain + np.random.default_rng(s).normal(0, 0.01, energy.size) for s in range(20)))
    assert alarms <= 1, alarms


def test_e0_cubic_is_checked_by_a_quintic_over_its_window():
    """On the shouldered edge μ is not a cubic near E0: with points at 1 eV measured 100x longer than the ones
    between, the cubic's inflection point moves with them, and the check adds that to the stated sd, which then
    covers the error against evenly spread points (3 realisations). On a plain arctan edge with the same points
    the check adds next to nothing."""
    for curve, start, most in ((lambda e: _shouldered(e, 0.28, 0.8), EE + 0.75, None), (
            lambda e: 0.5 + np.arctan((np.asarray(e, float) - EE - 4.0) / 1.5) / np.pi, EE + 4.0, 0.01)):
        dense = np.arange(start - 3, start + 3, 0.05)
        truth = estimate("e0", dense, curve(dense), np.full(dense.size, 1e-12), start).value
        heavy, light = np.arange(np.floor(start) - 3, start + 4, 1.0), np.arange(start - 3, start + 3, 0.33)
        energy = np.concatenate([heavy, light])
        var = np.concatenate([np.full(heavy.size, 1e-7), np.full(light.size, 1e-5)])
        for seed in range(3):
            est = estimate("e0", energy, curve(energy) + np.random.default_rng(seed).normal(0, np.sqrt(var)), var,
                           start)
            assert abs(est.value - truth) <= 2.5 * est.sd, (seed, est.value, truth, est.sd)
            if most is None:
                assert est.model_sd > 0.5 * est.sd, (est.model_sd, est.sd)  # the model's share dominates
            else:
                assert est.model_sd < most, est.model_sd


def test_an_oxides_e0_is_within_its_sd_or_not_called_ok():
    """Fe2O3 (the packaged spectrum), 10 realisations: E0 sits on a shoulder 3-4 eV below the steepest rise.
    Before the rivals of e0_rivals and the quintic check, 3 of these 10 answers were more than 4 stated sd
    from the estimators' noiseless value and still called ok; now at most 1 is."""
    s = load_sample("Fe2O3")
    targets = {"e0": 0.1, "whiteline": 0.1}
    truth = AdaptiveXanes(s.e0, targets).noiseless_targets(s.mu_t)
    wrong_ok = 0
    for seed in range(10):
        rep = _run_agent(s.mu_t, s.e0, 0.01, seed, targets)
        wrong = abs(rep["estimates"].get("e0", np.nan) - truth["e0"]) > 4 * rep["sd"].get("e0", np.inf)
        wrong_ok += bool(wrong and rep["verdict"] == "ok")
    assert wrong_ok <= 1, wrong_ok


def test_the_white_line_follows_the_data_to_the_higher_of_two_maxima():
    """Cu's white line: two maxima 9 eV apart, 0.015 apart in height. Before, a local fit that had locked onto
    the lower one early stayed there while the coarse points came to show the other higher (errors of 100-300
    stated sd in 2 of 6 realisations): every realisation now ends at the estimators' noiseless answer or
    says it could not tell the two apart."""
    s = load_sample("Cu")
    targets = {"e0": 0.1, "whiteline": 0.1}
    truth = AdaptiveXanes(s.e0, targets).noiseless_targets(s.mu_t)
    for seed in range(4):
        rep = _run_agent(s.mu_t, s.e0, 0.01, seed, targets)
        if rep["verdict"] == "bad":
            assert any("whiteline" in r for r in rep["verdict_reasons"]), rep["verdict_reasons"]
            continue
        assert abs(rep["estimates"]["whiteline"] - truth["whiteline"]) < 4 * rep["sd"]["whiteline"] + 0.02, seed


def test_the_budget_stops_the_agent():
    """A target out of reach (0.001 eV at noise 0.2) ends at max_points, saying so."""
    agent = AdaptiveXanes(EE, {"e0": 0.001}, max_points=70)
    rng = np.random.default_rng(1)
    while True:
        d = agent.ask(5)
        if not d.energies:
            break
        for e, t in zip(d.energies, d.dwells):
            agent.tell(e, float(synthetic(np.array([e]))[0] + rng.normal(0, 0.2)), t, 0.2)
    rep = agent.report()
    assert rep["done"] and rep["reason"].startswith("budget spent") and rep["points"] <= 74


@pytest.mark.parametrize("kwargs, message", [
    ({"target": {"edge": 0.1}}, "target must name some of"),
    ({"target": {"e0": -1}}, "target 'e0' must be > 0 eV"),
    ({"target": {"K": 1.5}}, "target 'K' is a probability"),
    ({"target": {"chi_noise": -1e-4}}, "target 'chi_noise' must be > 0, got"),
    ({"window": [10, -10]}, "low < high"),
    ({"max_points": 0}, "max_points must be an integer >= 1"),
    ({"agent": object()}, "agent must provide tell, ask and report"),
])
def test_bad_arguments_fail_before_any_message(beamline, kwargs, message):
    plan = xafs_scan_adaptive([beamline.scaler], beamline.dcm, element="Cu", **kwargs)
    with pytest.raises(PlanArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        next(plan)


def test_adaptive_scan_on_the_simulated_beamline_records_its_decisions_and_is_analysed(RE, collect, capsys):
    from xafs_stream.callbacks.units import SpectrumUnitBuilder
    from xafs_stream.simulated_devices import make_beamline

    from xafs_stream.analyses import default_registry
    from xafs_stream.worker.processing import process_unit

    bl = make_beamline(sample="Fe", seed=3, flux_cps=2e5)
    RE(xafs_scan_adaptive([bl.scaler], bl.dcm, element="Fe", sample="Fe foil",
                          target={"e0": 0.1, "whiteline": 0.1}))
    start = next(d for n, d in collect if n == "start")
    stop = next(d for n, d in collect if n == "stop")
    assert start["plan_name"] == "xafs_scan_adaptive" and start["adaptive_target"] == {"e0": 0.1, "whiteline": 0.1}
    assert start["max_points"] == 300  # the default for local targets
    streams = {d["uid"]: d["name"] for n, d in collect if n == "descriptor"}
    decisions = [d["data"] for n, d in collect if n == "event" and streams[d["descriptor"]] == "adaptive"]
    points = [d["data"] for n, d in collect if n == "event" and streams[d["descriptor"]] == "primary"]
    assert [d["adaptive_decision"] for d in decisions] == list(range(len(decisions)))
    assert decisions[0]["adaptive_reason"] == "coarse pass"
    last = decisions[-1]
    assert stop["reason"] == last["adaptive_reason"] and stop["reason"].startswith("targets met")
    assert last["adaptive_points"] == len(points)
    assert json.loads(last["adaptive_energies"]) == []
    report = json.loads(last["adaptive_report"])  # strict JSON
    # the answer's verdict is in the stream, and the scan printed it as its quality line
    assert last["adaptive_verdict"] == report["verdict"] != "bad"
    assert json.loads(last["adaptive_verdict_reasons"]) == report["verdict_reasons"]
    assert f"xafs_scan_adaptive: quality: {report['verdict']}" in capsys.readouterr().out
    band = report["band"]["e0"]  # the local fit's posterior band, for the dashboard
    assert len(band["energy"]) == len(band["mu"]) == len(band["sd"]) and min(band["sd"]) > 0
    # every chosen point was measured, in the order chosen
    chosen = [e for d in decisions for e in json.loads(d["adaptive_energies"])]
    assert np.allclose(chosen, [p["dcm"] for p in points], atol=1e-6)
    # the answer: within 4 stated sd of the estimators on the noiseless sample (the sample's own E0 convention)
    s = load_sample("Fe")
    truths = AdaptiveXanes(s.e0, {"e0": 0.1, "whiteline": 0.1}).noiseless_targets(s.mu_t)
    for name in ("e0", "whiteline"):
        truth = truths[name]
        assert abs(last[f"adaptive_{name}"] - truth) < 4 * last[f"adaptive_{name}_sd"] + 0.02, name
        assert report["sd"][name] <= 0.1
    # the service's chain takes the run: energies sorted, revisited ones combined
    units = []
    builder = SpectrumUnitBuilder(units.append)
    for name, doc in collect:
        builder(name, doc)
    repeat = next(u for u in units if u.unit.index == 0)
    energy = repeat.unit.arrays["energy"]
    assert np.all(np.diff(energy) > 0) and energy.size == np.unique(np.round([p["dcm"] for p in points], 6)).size
    assert repeat.unit.metadata["complete"] is True
    norm = next(r for r in process_unit(repeat, default_registry(), {}) if r.analysis == "xafs.normalize")
    assert norm.status == "ok" and norm.result.arrays["energy"].size == energy.size
    # its E0 is the steepest point (the Larch convention), after the reference-foil calibration. On this noisy
    # Fe foil the shoulder (7112 eV) and the main rise (7121 eV) are equally steep within the noise, on the
    # sample and on the reference channel: each is either the agent's answer or named in the verdict (this
    # seed gives both rivals: E0 at the main rise, the reference's too, a shift of -18 eV)
    reasons = norm.result.verdict_reasons
    shift = norm.result.summary["energy_shift"]
    if abs(norm.result.summary["e0"] - shift - last["adaptive_e0"]) > 1.0:
        assert norm.result.verdict != "ok" and any(r.startswith("E0 ") and "uncertain" in r for r in reasons), reasons
    if abs(shift) > 1.0:
        assert any("reference foil's E0" in r and "uncertain" in r for r in reasons), reasons
        assert any("calibration shifts the energy by" in r for r in reasons) == (abs(shift) > 5), reasons


def test_cubic_scatter_recovers_the_noise_on_a_smooth_signal():
    """On a smooth curve plus known noise (sd ∝ 1/√dwell), the dwell-weighted scatter about local cubics over
    its degrees of freedom gives variance x dwell; the 1/variance weighting gives a reduced χ² of 1."""
    from xafs_stream.engines.adaptive.scatter import cubic_scatter

    rng = np.random.default_rng(3)
    x = np.linspace(0.0, 50.0, 7 * 200)
    dwell = rng.choice([0.5, 1.0, 4.0], x.size)
    s2 = 4e-6  # variance x dwell
    y = np.tanh((x - 20.0) / 4.0) + 0.02 * np.sin(x / 3.0) + rng.normal(0.0, np.sqrt(s2 / dwell))
    rss, dof = cubic_scatter(x, y, dwell)
    assert dof == 200 * 3
    assert rss / dof == pytest.approx(s2, rel=0.12)  # 600 dof: sd of the estimate ~6 %
    rss, dof = cubic_scatter(x, y, dwell / s2)
    assert rss / dof == pytest.approx(1.0, rel=0.12)
    # an incomplete last block and repeated x (no span) are left out
    assert cubic_scatter(x[:10], y[:10], dwell[:10])[1] == 3
    assert cubic_scatter(np.ones(7), y[:7], dwell[:7]) == (0.0, 0)
