"""The number of peaks K as an adaptive target (issue 21): per-point noise weights, the rough normalisation,
P(K) against a synthetic spectrum of known K, the rules that keep the target open, and the agent stopping on it."""

import numpy as np
import pytest

from xafs_stream.engines.adaptive import AdaptiveXanes
from xafs_stream.engines.adaptive.edge_step import normalise
from xafs_stream.engines.adaptive.model_choice import RHAT_STOP, KPosterior, k_posterior
from xafs_stream.engines.bayes import XanesModel, xanes_priors
from xafs_stream.engines.bayes.models import WeightedModel
from xafs_stream.engines.bayes.models import lineshapes as ls
from xafs_stream.engines.errors import InputError

E0 = 7112.0


_GRID = np.arange(E0 - 40, E0 + 60, 0.02)
_THETA = np.array([1.0, E0 + 3, 2.0, 0.0, 0.06, E0 - 4, ls.b_from_fwhm(2.0), 0.5, E0 + 12, ls.b_from_fwhm(6.0)])
_CURVE = XanesModel(_GRID, 2, xanes_priors(_GRID, E0)).predict(_THETA)


def two_peaks(energy):
    """Edge step 1 at E0 + 3 eV plus a pre-edge peak (0.06 at E0 - 4 eV) and a white line (0.5 at E0 + 12 eV),
    on a 0.3 offset: K = 2 by construction."""
    return 0.3 + np.interp(energy, _GRID, _CURVE)


def test_weighted_model_turns_per_point_noise_into_unit_noise():
    x = np.linspace(E0 - 20, E0 + 30, 40)
    model = XanesModel(x, 1, xanes_priors(x, E0))
    sd = np.linspace(0.01, 0.05, x.size)
    weighted = WeightedModel(model, sd)
    rng = np.random.default_rng(0)
    theta = model.sample_prior(rng, 3)
    y = rng.normal(size=x.size)
    # the residuals the sampler sees are (y - f) / sd, for every draw; the peak table is the model's
    np.testing.assert_allclose(y / sd - weighted.predict(theta), (y - model.predict(theta)) / sd)
    assert weighted.n_peaks == 1
    np.testing.assert_allclose(weighted.peak_table(theta)[0]["center"], model.peak_table(theta)[0]["center"])
    with pytest.raises(InputError, match="finite positive"):
        WeightedModel(model, np.zeros(x.size))


def test_normalise_is_affine_and_merges_repeated_energies():
    e = np.array([E0 - 25, E0 - 20, E0 - 20, E0, E0 + 35, E0 + 40])
    mu = 0.3 + 2.0 * np.array([0.0, 0.0, 0.0, 0.5, 1.0, 1.0])
    mu[2] += 0.03  # the repeat at E0 - 20 eV, with 4x the variance of the first
    var = np.array([1e-4, 1e-4, 4e-4, 1e-4, 1e-4, 1e-4])
    x, y, sd, step = normalise(e, mu, var, E0)
    np.testing.assert_array_equal(x, [E0 - 25, E0 - 20, E0, E0 + 35, E0 + 40])
    merged = (0.3 / 1e-4 + 0.33 / 4e-4) / (1 / 1e-4 + 1 / 4e-4)  # inverse-variance mean at E0 - 20 eV
    base = (0.3 / 1e-4 + merged / 8e-5) / (1 / 1e-4 + 1 / 8e-5)
    assert step == pytest.approx(2.3 - base)
    np.testing.assert_allclose(y, (np.array([0.3, merged, 1.3, 2.3, 2.3]) - base) / step)
    assert sd[1] == pytest.approx(np.sqrt(8e-5) / step)
    with pytest.raises(InputError, match="below E0 - 15 eV"):
        normalise(e[3:], mu[3:], var[3:], E0)


def test_k_posterior_finds_the_two_peaks_of_a_known_spectrum():
    energy = np.arange(E0 - 30, E0 + 50.01, 0.5)
    sd = 0.002
    rng = np.random.default_rng(3)
    kp = k_posterior(energy, two_peaks(energy) + rng.normal(0, sd, energy.size), np.full(energy.size, sd ** 2), E0)
    assert kp.best == 2, kp.describe()
    assert kp.met(0.9), kp.why_not(0.9)
    assert 3 in kp.ks  # K = 3 was fitted: it is what K = 2 was shown better than
    # the pre-edge peak of the K = 2 draws sits where it was put
    draws = kp.draws[2]
    centres = XanesModel(energy, 2, kp.priors, slope=True).peak_table(draws)[0]["center"]
    assert abs(np.median(centres) - (E0 - 4)) < 0.3


def _kp(ks, F, rhat, failed=None, k_max=4, se=0.05):
    F = np.asarray(F, float)
    prob = np.exp(-(F - F.min()))
    prob /= prob.sum()
    b = int(np.argmax(prob))
    gap = F - F[b] - 2 * np.sqrt(2) * se
    gap[b] = 0
    return KPosterior(ks=ks, F=F, F_se=np.full(len(ks), se), rhat=np.asarray(rhat, float), prob=prob, best=ks[b],
                      cautious=float(1 / np.exp(-gap).sum()), failed=failed, k_max=k_max, draws={},
                      priors={})


def test_the_target_stays_open_unless_k_plus_one_was_fitted_and_the_best_converged():
    decided = _kp([1, 2, 3], [50.0, 40.0, 45.0], [1.0, 1.01, 1.3])
    assert decided.met(0.9) and decided.why_not(0.9) == ""
    # K + 1 gave no free energy: nothing says K = 3 is worse than K = 2
    open_above = _kp([1, 2], [50.0, 40.0], [1.0, 1.01], failed=3)
    assert not open_above.met(0.9) and "K=3 gave no free energy" in open_above.why_not(0.9)
    top = _kp([1, 2, 3, 4], [50.0, 45.0, 44.0, 40.0], [1.0, 1.0, 1.0, 1.01])
    assert not top.met(0.9) and "top of the searched range" in top.why_not(0.9)
    unconverged_best = _kp([1, 2, 3], [50.0, 40.0, 45.0], [1.0, RHAT_STOP + 0.1, 1.0])
    assert not unconverged_best.met(0.9) and "did not converge" in unconverged_best.why_not(0.9)
    close = _kp([1, 2, 3], [50.0, 40.0, 41.0], [1.0, 1.0, 1.0])
    assert not close.met(0.9) and "below the target" in close.why_not(0.9)


def test_agent_stops_when_k_is_known_and_says_why():
    rng = np.random.default_rng(5)
    agent = AdaptiveXanes(E0, {"K": 0.9}, seed=1, max_time_s=600)
    asks = 0
    while True:
        decision = agent.ask(10)
        asks += 1
        if not decision.energies:
            break
        if asks > 1:  # the design's points lie in the region the fits see
            assert min(decision.energies) >= E0 - 20 and max(decision.energies) <= E0 + 30
            assert decision.reason.startswith("K: where K=")
        for e, t in zip(decision.energies, decision.dwells):
            sd = 0.003 / np.sqrt(t)
            agent.tell(e, float(two_peaks(e)) + rng.normal(0, sd), t, sd)
    report = agent.report()
    assert report["done"] and report["reason"].startswith("targets met: K = 2"), report["reason"]
    assert report["estimates"]["K"] == 2 and report["sd"]["K"] <= 0.1
    assert report["verdict"] == "ok", report["verdict_reasons"]
    fits = {f["K"]: f for f in report["K"]["fits"]}  # the free energies behind P(K), K = 3 among them
    assert report["K"]["best"] == 2 and {1, 2, 3} <= set(fits) and fits[2]["F"] < min(fits[1]["F"], fits[3]["F"])


def test_k_target_must_be_a_probability():
    with pytest.raises(InputError, match="probability"):
        AdaptiveXanes(E0, {"K": 2})
    with pytest.raises(InputError, match="k_max"):
        AdaptiveXanes(E0, {"K": 0.9}, k_max=1)


def test_k_scan_on_the_simulated_beamline_finds_the_two_peaks_and_records_why(RE, collect, capsys):
    """``xafs_scan_adaptive(target={"K": 0.9})`` with a real RunEngine on the simulated beamline, the synthetic
    two-peak spectrum in the beam: it stops on K = 2 and its stream holds K and 1 - P(K) at every decision."""
    import json

    from xafs_stream.plans import xafs_scan_adaptive
    from xafs_stream.simulated_devices import make_beamline
    from xafs_stream.simulated_devices.samples import SampleModel

    sample = SampleModel("two peaks", "Fe", "K", E0, _GRID, two_peaks(_GRID))
    bl = make_beamline(sample=sample, seed=2, flux_cps=1e8)
    RE(xafs_scan_adaptive([bl.scaler], bl.dcm, element="Fe", e0=E0, target={"K": 0.9}, batch=10,
                          max_time_s=600))
    start = next(d for n, d in collect if n == "start")
    assert start["max_points"] == 3000  # the default with K: the beam time is the budget
    stop = next(d for n, d in collect if n == "stop")
    streams = {d["uid"]: d["name"] for n, d in collect if n == "descriptor"}
    decisions = [d["data"] for n, d in collect if n == "event" and streams[d["descriptor"]] == "adaptive"]
    last = decisions[-1]
    assert stop["reason"] == last["adaptive_reason"] and stop["reason"].startswith("targets met: K = 2")
    assert last["adaptive_K"] == 2 and 0 <= last["adaptive_K_sd"] <= 0.1
    assert all(d["adaptive_reason"].startswith("K: ") for d in decisions[1:-1])
    report = json.loads(last["adaptive_report"])
    assert last["adaptive_verdict"] == report["verdict"] == "ok"
    assert "xafs_scan_adaptive: quality: ok" in capsys.readouterr().out
