"""Replica-exchange sampler and free energy against exact answers: a linear-Gaussian model whose evidence
and posterior are closed-form, and a positive (Gamma-prior) amplitude whose evidence is a 1-D integral."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from xafs_stream.engines.bayes import (
    Gamma,
    Normal,
    RemcSettings,
    ReplicaExchange,
    free_energy,
    retune,
    run_remc,
    scan_noise,
    split_rhat,
)
from xafs_stream.engines.bayes.models.base import SpectrumModel
from xafs_stream.engines.errors import InputError


class LinearModel(SpectrumModel):
    """y = sum_c w_c phi_c(x): one component per basis function, each scaled by its weight."""

    kind = "linear"

    def __init__(self, x, basis, priors):
        self.basis = np.asarray(basis, float)
        n = len(priors)
        self._setup(x, [f"w{i}" for i in range(n)], list(priors), list(range(n)), list(range(n)))

    def shape(self, theta, c):
        return np.broadcast_to(self.basis[c], (theta.shape[0], self.x.size)).copy()


def _linear_problem(noise=0.2, seed=3):
    x = np.linspace(-1, 1, 60)
    basis = np.stack([np.exp(-(x**2) / 0.1), np.exp(-((x - 0.5) ** 2) / 0.05), np.ones_like(x)])
    priors = [Normal(0.5, 1.0), Normal(0.0, 0.5), Normal(0.0, 0.3)]
    w_true = np.array([1.2, -0.4, 0.1])
    y = w_true @ basis + noise * np.random.default_rng(seed).standard_normal(x.size)
    return LinearModel(x, basis, priors), y, basis, priors


def _exact_linear(y, basis, priors, noise):
    m0 = np.array([p.mean for p in priors])
    s0 = np.diag([p.sd**2 for p in priors])
    cov = noise**2 * np.eye(y.size) + basis.T @ s0 @ basis
    log_z = stats.multivariate_normal(basis.T @ m0, cov).logpdf(y)
    prec = np.linalg.inv(s0) + basis @ basis.T / noise**2
    post_cov = np.linalg.inv(prec)
    post_mean = post_cov @ (np.linalg.inv(s0) @ m0 + basis @ y / noise**2)
    return -log_z, post_mean, np.sqrt(np.diag(post_cov))


SMALL = RemcSettings(n_replicas=12, n_chains=4, n_burn=300, n_sweeps=1500, thin=5)


def test_free_energy_and_posterior_match_the_linear_gaussian_closed_form():
    noise = 0.2
    model, y, basis, priors = _linear_problem(noise)
    F_exact, mean, sd = _exact_linear(y, basis, priors, noise)
    run = run_remc(model, y, beta_max=1 / noise**2, settings=SMALL, seed=11)
    fe = free_energy(run.betas, run.energies, y.size)
    assert fe.se < 0.1
    assert abs(fe.F - F_exact) < max(3 * fe.se, 0.1)
    s = run.flat_samples()
    assert np.all(np.abs(s.mean(axis=0) - mean) < 0.3 * sd)  # ~4 Monte Carlo standard errors
    np.testing.assert_allclose(s.std(axis=0), sd, rtol=0.15)
    assert np.all(split_rhat(run.chain_samples()) < 1.05)
    # the ladder was tuned: neighbour exchange rates are even
    assert run.exchange_rate.max() - run.exchange_rate.min() < 0.25
    assert np.all((run.acceptance[1:] > 0.3) & (run.acceptance[1:] < 0.7))


def test_noise_scan_finds_the_evidence_maximum_over_the_noise():
    noise = 0.2
    model, y, basis, priors = _linear_problem(noise, seed=5)
    run = run_remc(model, y, beta_max=1 / 0.05**2, settings=SMALL, seed=2)
    scan = scan_noise(run.betas, run.energies, y.size)
    grid = np.linspace(0.12, 0.3, 61)
    exact = np.array([_exact_linear(y, basis, priors, s)[0] for s in grid])
    best = grid[np.argmin(exact)]
    assert abs(scan.best_noise - best) < 0.01
    assert abs(scan.best.F - exact.min()) < max(3 * scan.best.se, 0.1)
    assert not scan.at_edge


def test_log_space_moves_sample_a_gamma_prior_and_give_the_right_evidence():
    """Positive parameter: at b = 0 the chain must reproduce the Gamma prior (checks the Jacobian); at the
    top rung F must equal the 1-D integral of likelihood x prior."""
    x = np.linspace(0, 1, 40)
    g = np.exp(-((x - 0.5) ** 2) / 0.02)
    prior = Gamma(3.0, 4.0)
    model = LinearModel(x, g[None, :], [prior])
    noise = 0.1
    y = 0.6 * g + noise * np.random.default_rng(0).standard_normal(x.size)
    run = run_remc(model, y, beta_max=1 / noise**2, settings=SMALL, seed=4)
    assert stats.kstest(run.samples[:, :, 0, 0].ravel(), stats.gamma(3.0, scale=0.25).cdf).pvalue > 1e-3

    def integrand(a):
        r = y - a * g
        return math.exp(-0.5 * r @ r / noise**2 + 60.0) * stats.gamma(3.0, scale=0.25).pdf(a)

    z, _ = integrate.quad(integrand, 0, 3, points=[0.6], limit=200)
    F_exact = -(math.log(z) - 60.0) + 0.5 * x.size * math.log(2 * math.pi * noise**2)
    fe = free_energy(run.betas, run.energies, x.size)
    assert abs(fe.F - F_exact) < max(3 * fe.se, 0.1)


def test_runs_are_reproducible_and_resumable():
    model, y, *_ = _linear_problem()
    st = RemcSettings(n_replicas=6, n_chains=2, n_burn=20, n_sweeps=30)
    a = run_remc(model, y, beta_max=25.0, settings=st, seed=7)
    b = run_remc(model, y, beta_max=25.0, settings=st, seed=7)
    c = run_remc(model, y, beta_max=25.0, settings=st, seed=8)
    np.testing.assert_array_equal(a.energies, b.energies)
    assert not np.array_equal(a.energies, c.energies)
    more = run_remc(model, y, beta_max=25.0, settings=st, state=a.state)
    again = run_remc(model, y, beta_max=25.0, settings=st, state=b.state)
    np.testing.assert_array_equal(more.energies, again.energies)
    assert more.state.sweep == a.state.sweep + st.n_sweeps


def test_sample_generator_streams_states():
    model, y, *_ = _linear_problem()
    sampler = ReplicaExchange(model, y, RemcSettings(n_replicas=5, n_chains=2))
    rng = np.random.default_rng(0)
    state = sampler.initial_state(25.0, rng)
    sweeps = [s.sweep for s in sampler.sample(state, 5, rng)]
    assert sweeps == [1, 2, 3, 4, 5]
    resid = y[None, :] - model.predict(state.x)
    np.testing.assert_allclose(state.residual, resid, atol=1e-10)  # incremental caches stay exact


def test_retune_equalises_thermodynamic_length():
    betas = np.concatenate([[0.0], np.geomspace(1e-3, 1e2, 9)])
    rate = np.array([0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9])
    new = retune(betas, rate, np.full(9, 1000), damping=1.0)
    assert new[0] == 0 and new[-1] == betas[-1] and np.all(np.diff(new) > 0)
    gaps = np.diff(np.log(new[1:]))
    old_gaps = np.diff(np.log(betas[1:]))
    # rungs move into the region where exchanges were hard (gaps 3-5)
    assert gaps[2:5].mean() < old_gaps[2:5].mean()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_replicas": 2},
        {"n_chains": 0},
        {"n_sweeps": 5},
        {"target_accept": 1.0},
        {"beta_min": -1.0},
        {"n_burn": 1.5},
    ],
)
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(InputError):
        RemcSettings(**kwargs)


def test_bad_data_is_rejected():
    model, y, *_ = _linear_problem()
    bad = y.copy()
    bad[3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        run_remc(model, bad, beta_max=1.0)
    with pytest.raises(InputError, match="shape"):
        run_remc(model, y[:-1], beta_max=1.0)
    with pytest.raises(InputError, match="beta_max"):
        run_remc(model, y, beta_max=float("inf"))
