"""Tempered SMC (``run_smc``) and the least-squares mode finder behind its mode jumps, checked against exact
answers: the weak peak on a constant of the collapsed-move tests (evidence and posterior by quadrature), a
synthetic XANES with known parameters, and the packaged Cu foil's deep K = 2 mode that replica chains miss."""

import numpy as np
import pytest
from bayes_toy import _problem, _truth
from scipy import stats

from xafs_stream.engines.bayes import (
    RemcSettings,
    SmcSettings,
    XanesModel,
    decompose_peaks,
    extend_smc,
    find_modes,
    free_energy,
    run_smc,
    select_models,
    split_rhat,
    xanes_priors,
)
from xafs_stream.engines.bayes.modes import Modes, _jacobian, from_free, to_free
from xafs_stream.engines.bayes.smc import ModeProposal
from xafs_stream.engines.errors import InputError


def _check_against_quadrature(run, model):
    F_exact, moments = _truth()
    fe = free_energy(run.betas, run.energies, model.n_points)
    assert abs(fe.F - F_exact) < max(3 * fe.se, 0.15), (fe.F, fe.se, F_exact)
    flat = run.flat_samples(-1)
    for name, col in (("mu", flat[:, 2]), ("logv", np.log(flat[:, 3]))):
        mean, sd = moments[name]
        assert abs(col.mean() - mean) < 0.25 * sd, (name, col.mean(), mean, sd)
        assert 0.8 < col.std() / sd < 1.2, (name, col.std(), sd)
    assert np.nanmax(split_rhat(run.samples[:, :, -1, :])) < 1.05


@pytest.mark.parametrize(
    "kw",
    [
        {},  # all moves: per-parameter sweeps, covariance-shaped joint moves, mode jumps
        {"n_single": 0, "joint": False, "n_moves": 8},  # mode jumps alone move the particles
        {"n_single": 0, "mode_starts": 0, "n_moves": 8},  # joint moves alone
    ],
    ids=["all", "mode-jumps-only", "joint-only"],
)
def test_smc_evidence_and_posterior_match_quadrature(kw):
    """Each kind of move leaves the tempered posteriors invariant: with only that move mutating the particles,
    F and the posterior of the centre and log-variance still match the quadrature."""
    model, _, y, _, noise = _problem()
    run = run_smc(model, y, beta_max=1 / noise**2, settings=SmcSettings(n_particles=128, **kw), seed=3)
    assert run.diagnostics["sampler"] == "smc"
    assert run.betas[0] == 0 and np.all(np.diff(run.betas) > 0) and run.betas[-1] == pytest.approx(1 / noise**2)
    # the reweighting kept at least the targeted fraction of particles, except possibly the last step to b_max
    assert np.all(run.exchange_rate[:-1] >= 0.7 - 1e-6)
    _check_against_quadrature(run, model)


def test_smc_extension_adds_groups_on_the_same_schedule():
    model, _, y, _, noise = _problem()
    sel = select_models([("peak", model)], y, noise=noise, settings=SmcSettings(n_particles=64), seed=1)
    run = sel.fits[0].run
    more = extend_smc(model, y, run, 4, seed=2)
    assert more.energies.shape[1] == 2 * run.energies.shape[1]
    np.testing.assert_array_equal(more.betas, run.betas)
    assert more.settings.n_groups == 2 * run.settings.n_groups
    _check_against_quadrature(more, model)


def test_run_length_control_adds_populations_until_se_is_met():
    x = np.linspace(0, 3, 121)
    y = np.exp(-60 * (x - 1.2) ** 2 / 2) + 0.7 * np.exp(-90 * (x - 1.7) ** 2 / 2)
    y = y + 0.05 * np.random.default_rng(0).standard_normal(x.size)
    sel = decompose_peaks(x, y, k_range=range(1, 3), noise=0.05, settings=SmcSettings(n_particles=32, n_groups=2),
                          seed=0, target_se=0.1, budget_s=60.0)
    info = sel.run_length
    assert info["extensions"] >= 1 and sel.best == 1
    groups = sorted(f.run.energies.shape[1] for f in sel.fits)
    assert groups[-1] == 2 * 2 ** info["extensions"]  # each extension doubles the populations
    assert info["stopped"] == "target reached" and info["se_diff"] <= 0.1


def _synthetic_xanes(noise=0.004, seed=0):
    x = np.linspace(8960.0, 9010.0, 101)
    model = XanesModel(x, 2, xanes_priors(x, 8980.0))
    # step, e_edge, edge_width, c0, a1, mu1, b1, a2, mu2, b2 (b = 1/sigma²: FWHM 2.4 eV and 8.3 eV)
    truth = np.array([1.0, 8981.0, 1.5, 0.0, 0.15, 8975.0, 1.0, 0.6, 8987.0, 0.08])
    y = model.predict(truth) + noise * np.random.default_rng(seed).standard_normal(x.size)
    return model, x, y, truth


def test_find_modes_reaches_the_truth_of_a_synthetic_xanes():
    model, _, y, truth = _synthetic_xanes()
    modes = find_modes(model, y, np.random.default_rng(0), n_starts=128)
    e_truth = 0.5 * np.sum((model.predict(truth) - y) ** 2)
    assert modes.energy[0] <= e_truth + 1e-9  # the best optimum fits at least as well as the truth
    best = from_free(model, modes.u[:1])[0]
    for name, tol in (("e_edge", 0.3), ("mu1", 0.3), ("mu2", 0.5), ("a2", 0.05), ("step", 0.05)):
        i = model.index(name)
        assert abs(best[i] - truth[i]) < tol, (name, best[i], truth[i])
    assert np.all(np.diff(modes.energy) >= 0) and modes.hits.sum() <= 128


def test_jacobian_matches_finite_differences_of_the_whole_curve():
    """The Jacobian built component by component (analytic in the scales) equals central differences of the
    full model curve in the free space."""
    model, _, _, truth = _synthetic_xanes()
    u = to_free(model, np.stack([truth, truth * 1.01]))
    J = _jacobian(model, u)
    for p in range(model.n_params):
        h = 1e-4
        up, dn = u.copy(), u.copy()
        up[:, p] += h
        dn[:, p] -= h
        num = (model.predict(from_free(model, up)) - model.predict(from_free(model, dn))) / (2 * h)
        np.testing.assert_allclose(J[:, :, p], num, rtol=1e-4, atol=1e-5 * np.abs(num).max() + 1e-12)


def test_mode_proposal_density_is_the_mixture_it_draws_from():
    rng = np.random.default_rng(5)
    P = 3
    a = rng.standard_normal((2, P, P))
    modes = Modes(u=rng.standard_normal((2, P)), energy=np.array([1.0, 1.5]), jtj=a @ a.transpose(0, 2, 1) + np.eye(P),
                  n_starts=10, hits=np.array([1, 1]))
    particles = rng.standard_normal((200, P)) * 2.0
    q = ModeProposal(modes, 2.0, np.ones(P), particles)
    pts = q.draw(rng, 50)
    expect = np.log(sum(w * stats.multivariate_normal(m, c @ c.T).pdf(pts)
                        for w, m, c in zip(q.weights, q.mean, q.chol)))
    np.testing.assert_allclose(q.log_density(pts), expect, rtol=1e-10)
    assert q.weights.sum() == pytest.approx(1.0)


@pytest.fixture(scope="module")
def cu_foil_window():
    from xafs_stream.analyses.preprocess import normalize_spectrum
    from xafs_stream.core import WorkUnit
    from xafs_stream.data import SPECTRA_DIR
    from xafs_stream.engines.bayes.workflows import window
    from xafs_stream.io import read_spectrum

    spec = read_spectrum(SPECTRA_DIR / "cu_metal_rt.xdi")
    unit = WorkUnit("t", "spectrum", "merge", {"energy": spec.energy, "mu": spec.mu})
    norm = normalize_spectrum(unit, {}, {})
    e0 = norm.summary["e0"]
    x, y = window(norm.arrays["energy"], norm.arrays["norm"], e0 - 20, e0 + 30)
    return x, y, e0


def test_smc_finds_the_deep_mode_of_the_cu_foil_that_replica_chains_miss(cu_foil_window):
    """Cu foil, K = 2, noise estimated: the best least-squares fit (found from 1024 starts) has a sum of
    squares several times lower than where the live replica-exchange settings leave every chain. Every SMC
    population reaches it, the populations agree (R-hat), and F is lower by tens of nat."""
    x, y, e0 = cu_foil_window
    model = XanesModel(x, 2, xanes_priors(x, e0))
    best = find_modes(model, y, np.random.default_rng(11), n_starts=1024).energy[0]
    sel_smc = select_models([("K=2", model)], y, noise="auto", settings=SmcSettings(), seed=0)
    sel_remc = select_models([("K=2", model)], y, noise="auto", seed=0,
                             settings=RemcSettings(n_replicas=24, n_chains=2, n_burn=200, n_sweeps=400, thin=4))
    smc, remc = sel_smc.fits[0], sel_remc.fits[0]
    e_smc = smc.run.energies[:, :, smc.rung].min(axis=0)
    e_remc = remc.run.energies[:, :, remc.rung].min()
    assert np.all(e_smc < 1.5 * best), (e_smc, best)  # every population holds the deep mode
    assert e_remc > 2 * best  # the replica chains do not (if this fails, the test's premise changed)
    assert np.nanmax(smc.rhat) < 1.05
    assert smc.F < remc.F - 20


def test_smc_settings_are_checked_in_one_line():
    for bad in ({"n_particles": 2}, {"n_groups": 1}, {"ess_target": 1.5}, {"n_moves": 2.5}, {"top_factor": 1.0}):
        with pytest.raises(InputError):
            SmcSettings(**bad)
    model, _, y, _, _ = _problem()
    with pytest.raises(InputError, match="schedule"):
        run_smc(model, y, beta_max=1.0, schedule=np.array([0.5, 1.0]))
    with pytest.raises(InputError, match="beta_max"):
        run_smc(model, y, beta_max=float("nan"))


def test_a_search_over_k_stops_at_the_first_fit_that_did_not_converge():
    """``stop_at_rhat``: K = 1 converges, K = 2 is given far too short a run to converge; K is chosen among
    the converged fits, K = 3 is not run, and the verdict names both."""
    from xafs_stream.engines.bayes import PeakModel, nagata_priors, report
    from xafs_stream.engines.bayes.verdict import judge_selection

    x = np.linspace(0, 3, 121)
    y = np.exp(-60 * (x - 1.2) ** 2 / 2) + 0.05 * np.random.default_rng(0).standard_normal(x.size)
    pri = nagata_priors(x, y)
    cands = [(f"K={k}", PeakModel(x, k, **{r: pri[r] for r in ("amplitude", "center", "width")})) for k in (1, 2, 3)]
    too_short = RemcSettings(n_replicas=6, n_chains=4, n_burn=0, n_sweeps=20, thin=1)
    settings = [SmcSettings(n_particles=64), too_short, SmcSettings(n_particles=64)]
    sel = select_models(cands, y, noise=0.05, settings=settings, seed=0, stop_at_rhat=1.05)
    assert [f.name for f in sel.fits] == ["K=1"] and sel.best == 0
    assert sel.stopped_at.name == "K=2" and np.nanmax(sel.stopped_at.rhat) > 1.05
    assert sel.not_run == ["K=3"]
    assert np.nanmax(sel.fits[0].rhat) <= 1.05
    verdict = judge_selection(sel, report(sel, seed=0))
    assert verdict.level == "warn"
    assert any("K=2 did not converge" in r and "K=3 not run" in r for r in verdict.reasons), verdict.reasons
    assert not any("extend the range" in r for r in verdict.reasons)
