"""Tempered sequential Monte Carlo (SMC): a population of particles carried from the prior (b = 0) to the
posterior through inverse temperatures chosen on the fly (Del Moral, Doucet, Jasra 2006; the adaptive
schedule of Jasra et al. 2011). Each step reweights the particles to the next temperature, resamples them
within their population, and moves every particle with Metropolis-Hastings moves that leave the new tempered
posterior invariant:

- the per-parameter sweeps of the replica exchange (:class:`~.moves.MetropolisMove`), steps scaled by the
  particles' spread and adapted to ``target_accept``;
- a random walk of all parameters at once shaped by the particles' covariance (parameters that trade off,
  such as the edge position and the nearest peak, move together);
- an independence proposal from Gaussians at least-squares optima of the data (:func:`~.modes.find_modes`,
  Laplace covariances at the current temperature) mixed with a Gaussian of the particles: a jump between
  modes that random walks do not cross.

Why it is here: for a live XANES fit a replica ladder of 24 rungs needs thousands of sweeps before its
walkers make round trips between the prior and the posterior; in the 600 sweeps a live budget allows, no
walker made one on the packaged spectra and the independent chains stayed in different modes (R-hat
1.2-1.8). Worse, the posterior of "edge + K peaks" has rare deep modes: on the Cu foil with K = 2 a fit with
half the edge step and a broad post-edge peak has a sum of squares 5.7 times lower than where every chain
settled, and F lower by ~60 nat. The result has the shape of a :class:`~.sampler.RemcResult`, so the free
energy, the noise scan, R-hat and the report read it unchanged:

- the schedule b_0 = 0 < b_1 < ... is the ladder (``betas``);
- the particles of each step, after their moves, are the records at that rung: ``energies`` has shape
  (n_particles, n_groups, n_steps) and ``samples`` (n_particles, n_groups, n_steps, P). The bridge estimate
  of the free energy over those records, log z(b_{l+1}) - log z(b_l) = log <exp(-(b_{l+1} - b_l) E)>_{b_l},
  is the SMC evidence estimator itself;
- ``n_groups`` independent populations (never resampled across) play the part of independent chains: the
  standard error of F is the scatter of their F values, and split-R-hat over the groups says whether they
  found the same posterior;
- ``exchange_rate`` holds the effective sample size fraction of each reweighting (the overlap of
  neighbouring temperatures; what the exchange rate measures on a ladder), ``round_trips`` is zero.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
from scipy.special import logsumexp

from .._threads import single_blas_thread
from ..errors import InputError
from .models.base import SpectrumModel
from .modes import Modes, find_modes, free_spread, from_free, to_free
from .moves import MetropolisMove, Target, relabel_peaks
from .sampler import RemcResult, make_state, refresh_state


@dataclass(frozen=True)
class SmcSettings:
    """Settings of a tempered SMC run.

    Attributes
    ----------
    n_particles : particles per group, default=128
    n_groups : independent populations (the "chains" of R-hat and of the F standard error), default=4
    n_moves : rounds of moves after each resampling, default=4; each round is a per-parameter sweep (the
        first ``n_single`` rounds), a joint move (``joint``) and a mode jump (``mode_starts`` > 0)
    ess_target : the next inverse temperature keeps this fraction of effective particles in the group that
        loses most, default=0.7
    target_accept : acceptance aimed at by the per-parameter steps, default=0.4
    top_factor : with an estimated noise, stop once b exceeds this factor times the b minimising F(b) so
        far (the noise scan needs the minimum inside the schedule), default=10
    max_steps : most temperatures, default=400
    joint : the covariance-shaped move of all parameters, default=True
    n_single : rounds with a per-parameter sweep, default=99 (all)
    mode_starts : least-squares starts for the mode jumps, split among the populations (each jumps between
        its own optima, so that the populations stay independent); 0: no mode jumps; default=256

    The defaults were chosen on the five packaged spectra (``benchmarks/bench_bayes.py --live``; what was
    tried and measured is in docs/measurements.md).
    """

    n_particles: int = 128
    n_groups: int = 4
    n_moves: int = 4
    ess_target: float = 0.7
    target_accept: float = 0.4
    top_factor: float = 10.0
    max_steps: int = 400
    joint: bool = True
    n_single: int = 99
    mode_starts: int = 256

    def __post_init__(self) -> None:
        for name in ("n_particles", "n_groups", "n_moves", "max_steps", "n_single", "mode_starts"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise InputError(f"SmcSettings.{name} must be an integer, got {v!r}")
        if (self.n_particles < 8 or self.n_groups < 2 or self.n_moves < 1 or self.max_steps < 2
                or self.n_single < 0 or self.mode_starts < 0):
            raise InputError("need n_particles >= 8, n_groups >= 2, n_moves >= 1, max_steps >= 2, n_single >= 0, "
                             "mode_starts >= 0")
        if not 0.05 <= self.ess_target <= 0.95:
            raise InputError(f"ess_target must be in [0.05, 0.95], got {self.ess_target}")
        if not 0.05 <= self.target_accept <= 0.95:
            raise InputError(f"target_accept must be in [0.05, 0.95], got {self.target_accept}")
        if not (math.isfinite(self.top_factor) and self.top_factor > 1):
            raise InputError(f"top_factor must be > 1, got {self.top_factor}")


def _ess_fraction(energy: np.ndarray, d_beta: float) -> np.ndarray:
    """Effective sample size fraction of the weights exp(-d_beta E) in each group; energy (C, N)."""
    lw = -d_beta * (energy - energy.min(axis=1, keepdims=True))
    w = np.exp(lw)
    return w.sum(axis=1) ** 2 / (np.square(w).sum(axis=1) * energy.shape[1])


def _next_beta(energy: np.ndarray, beta: float, beta_max: float, target: float) -> tuple[float, float]:
    """The largest b' <= beta_max whose reweighting keeps ``target`` of the particles in every group
    (bisection in log(b' - b)); returns (b', the smallest ESS fraction)."""
    span = beta_max - beta
    ess = float(_ess_fraction(energy, span).min())
    if ess >= target:
        return beta_max, ess
    spread = float(np.std(energy)) or 1.0
    lo, hi = math.log(span * 1e-12 + 1e-300), math.log(span)
    lo = min(lo, math.log(1e-3 / spread))
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _ess_fraction(energy, math.exp(mid)).min() >= target:
            lo = mid
        else:
            hi = mid
    d = math.exp(lo)
    return beta + d, float(_ess_fraction(energy, d).min())


def _systematic(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Systematic resampling of each row of normalised ``weights`` (C, N) -> indices (C, N)."""
    C, N = weights.shape
    u = (rng.random((C, 1)) + np.arange(N)[None, :]) / N
    cum = np.cumsum(weights, axis=1)
    cum[:, -1] = 1.0
    return np.stack([np.searchsorted(cum[c], u[c], side="left") for c in range(C)])


def _take(state, rows: np.ndarray) -> None:
    """Replace the particles of ``state`` by the rows ``rows`` (in place)."""
    state.x = state.x[rows]
    state.log_prior = state.log_prior[rows]
    state.energy = state.energy[rows]
    state.residual = state.residual[rows]
    state.shapes = state.shapes[:, rows]
    state.components = state.components[:, rows]


def _joint_move(
    model: SpectrumModel, y: np.ndarray, state, chol: np.ndarray, scale: float, rng: np.random.Generator
) -> float:
    """One random-walk Metropolis step of all parameters at once, group g's proposal shaped by its particles'
    covariance (Cholesky factors ``chol`` (C, P, P) in the free space, times ``scale``); returns the
    acceptance."""
    R, P = state.x.shape
    C = chol.shape[0]
    z = np.einsum("gpq,gnq->gnp", chol, rng.standard_normal((C, R // C, P))).reshape(R, P) * scale
    t_new = to_free(model, state.x) + z
    x_new = from_free(model, t_new)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        lp_new = model.log_prior_terms(x_new)
        ok = np.all(np.isfinite(lp_new), axis=1)
        x_eval = np.where(ok[:, None], x_new, state.x)  # out-of-support proposals: not evaluated
        new = make_state(model, y, x_eval, state.betas, state.steps)
        jac = np.sum(np.where(model.positive[None, :], z, 0.0), axis=1)
        log_a = -state.betas[0] * (new.energy - state.energy) + (new.log_prior - state.log_prior).sum(axis=1) + jac
    acc = ok & (np.log(rng.random(R)) < log_a)
    _accept(state, new, np.flatnonzero(acc))
    return float(acc.mean())


class ModeProposal:
    """An independence proposal at inverse temperature ``beta``: a mixture of Gaussians in the free space
    around the least-squares optima (:func:`~.modes.find_modes`), each with the covariance of the Laplace
    approximation at that b (precision b J^T J plus the prior draws' spread as a floor), widened by
    ``inflate``. Half the mixture weight goes by the optima's Laplace evidence, half equally.

    Because it does not depend on the current state, the Metropolis-Hastings ratio with q(current) /
    q(proposed) leaves every tempered posterior invariant, so the SMC stays exact; proposals that leave
    the peaks out of order are rejected (the proposal truncated to ordered peaks has the same ratio).
    """

    def __init__(self, modes: Modes, beta: float, floor_sd: np.ndarray, particles: np.ndarray,
                 inflate: float = 1.0, particle_weight: float = 0.3) -> None:
        M, P = modes.u.shape
        prec = beta * modes.jtj + np.diag(1.0 / floor_sd**2)[None]
        cov = inflate**2 * np.linalg.inv(prec)
        p_cov = inflate**2 * (np.cov(particles, rowvar=False) + np.diag((1e-6 * floor_sd) ** 2))
        cov = np.concatenate([cov, p_cov[None]])
        cov = 0.5 * (cov + np.transpose(cov, (0, 2, 1)))
        self.chol = np.linalg.cholesky(cov)
        self._inv_chol = np.linalg.inv(self.chol)  # (M+1, P, P): one einsum evaluates every component
        self.mean = np.concatenate([modes.u, particles.mean(axis=0)[None]])
        self.log_det = 2.0 * np.log(np.diagonal(self.chol, axis1=1, axis2=2)).sum(axis=1)
        log_lap = -beta * (modes.energy - modes.energy.min()) + 0.5 * self.log_det[:M]
        lap = np.exp(log_lap - log_lap.max())
        w = 0.5 * lap / lap.sum() + 0.5 / M
        self.weights = np.concatenate([(1.0 - particle_weight) * w, [particle_weight]])
        self.P = P

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        j = rng.choice(self.weights.size, size=n, p=self.weights)
        z = rng.standard_normal((n, self.P))
        return self.mean[j] + np.einsum("npq,nq->np", self.chol[j], z)

    def log_density(self, u: np.ndarray) -> np.ndarray:
        d = u[:, None, :] - self.mean[None]  # (n, M, P)
        quad = np.square(np.einsum("mpq,nmq->nmp", self._inv_chol, d)).sum(axis=2)
        lg = np.log(self.weights)[None] - 0.5 * (quad + self.log_det[None] + self.P * math.log(2 * math.pi))
        return logsumexp(lg, axis=1)


def _mode_move(model: SpectrumModel, y: np.ndarray, state, proposals: list[ModeProposal],
               rng: np.random.Generator) -> float:
    """One independence Metropolis-Hastings step of every particle, group g's particles from
    ``proposals[g]``; returns the acceptance."""
    R, P = state.x.shape
    n = R // len(proposals)
    u_old = to_free(model, state.x)
    u_new = np.empty((R, P))
    log_q = np.empty(R)  # log q(old) - log q(new)
    for g, q in enumerate(proposals):
        rows = slice(g * n, (g + 1) * n)
        u_new[rows] = q.draw(rng, n)
        log_q[rows] = q.log_density(u_old[rows]) - q.log_density(u_new[rows])
    x_new = from_free(model, u_new)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        lp_new = model.log_prior_terms(x_new)
        ok = np.all(np.isfinite(lp_new), axis=1)
        order = model.peak_order(np.where(ok[:, None], x_new, state.x))
        if order is not None:
            ok &= np.all(order == np.arange(order.shape[1])[None, :], axis=1)
        x_eval = np.where(ok[:, None], x_new, state.x)
        new = make_state(model, y, x_eval, state.betas, state.steps)
        pos = model.positive[None, :]
        log_a = (-state.betas[0] * (new.energy - state.energy) + (new.log_prior - state.log_prior).sum(axis=1)
                 + np.where(pos, u_new, 0.0).sum(axis=1) - np.where(pos, u_old, 0.0).sum(axis=1) + log_q)
    acc = ok & (np.log(rng.random(R)) < log_a)
    _accept(state, new, np.flatnonzero(acc))
    return float(acc.mean())


def _accept(state, new, idx: np.ndarray) -> None:
    """Copy rows ``idx`` of the proposed state ``new`` into ``state``."""
    if idx.size:
        state.x[idx] = new.x[idx]
        state.log_prior[idx] = new.log_prior[idx]
        state.energy[idx] = new.energy[idx]
        state.residual[idx] = new.residual[idx]
        state.shapes[:, idx] = new.shapes[:, idx]
        state.components[:, idx] = new.components[:, idx]


@single_blas_thread()  # a context manager from contextlib is also a decorator: one thread for each call
def run_smc(
    model: SpectrumModel,
    y: np.ndarray,
    *,
    beta_max: float,
    settings: SmcSettings | None = None,
    seed: int | np.random.SeedSequence | None = None,
    stop_past_minimum: bool = False,
    schedule: np.ndarray | None = None,
) -> RemcResult:
    """Carry particles from the prior to b = ``beta_max`` (1/noise², 1/y-units²) by tempered SMC.

    ``stop_past_minimum``: stop early once b exceeds ``settings.top_factor`` times the b that minimises F(b)
    so far (for an estimated noise, where the schedule need only bracket the minimum). ``schedule``: follow
    these inverse temperatures (from 0, increasing; e.g. an earlier run's ``betas``) instead of choosing
    them. Returns a :class:`~.sampler.RemcResult` (see the module docstring for what its fields hold here).
    Runs on one BLAS thread (its matrices are small; see docs/measurements.md).
    """
    t0 = time.perf_counter()
    s = settings or SmcSettings()
    if not (isinstance(beta_max, (int, float, np.floating)) and math.isfinite(beta_max) and beta_max > 0):
        raise InputError(f"beta_max (1/noise²) must be finite and > 0, got {beta_max!r}")
    y = np.ascontiguousarray(np.asarray(y, float))
    target = Target(model, y)
    rng = np.random.default_rng(seed)
    C, N, P = s.n_groups, s.n_particles, model.n_params
    x = model.sample_prior(rng, C * N)
    s0 = free_spread(model, x)
    joint_scale = 2.38 / math.sqrt(P)
    factor = np.ones(P)  # step = factor * spread of the particles, adapted to ``target_accept``
    state = make_state(model, y, x, np.zeros(N), np.tile(s0, (N, 1)))
    # each population finds its own optima (mode_starts / n_groups starts): shared ones would let the
    # populations agree on the modes one search found, and R-hat would no longer compare independent runs
    per_group = max(1, s.mode_starts // C) if s.mode_starts else 0
    modes = [find_modes(model, y, rng, n_starts=per_group) for _ in range(C)] if per_group else None
    if modes is not None and any(m.u.shape[0] == 0 for m in modes):
        modes = None
    mode_acc: list[float] = []
    move = MetropolisMove()
    betas = [0.0]
    energies = [state.energy.reshape(C, N).copy()]
    samples = [state.x.reshape(C, N, P).copy()]
    ess_log: list[float] = []
    acc_log = [np.full(P, np.nan)]
    log_z = [0.0]
    const = 0.5 * model.n_points
    beta = 0.0
    if schedule is not None:
        schedule = np.asarray(schedule, float)
        if schedule.ndim != 1 or schedule.size < 2 or schedule[0] != 0 or np.any(np.diff(schedule) <= 0):
            raise InputError("schedule must start at 0 and increase")
        beta_max = float(schedule[-1])
    while beta < beta_max and (schedule is not None or len(betas) < s.max_steps):
        e = state.energy.reshape(C, N)
        if not np.all(np.isfinite(e)):
            raise InputError("the model gives non-finite energies for some prior draws")
        if schedule is None:
            new_beta, ess = _next_beta(e, beta, beta_max, s.ess_target)
        else:
            new_beta = float(schedule[len(betas)])
            ess = float(_ess_fraction(e, new_beta - beta).min())
        d = new_beta - beta
        lw = -d * e
        log_z.append(log_z[-1] + float(logsumexp(lw) - math.log(lw.size)))
        w = np.exp(lw - lw.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        idx = _systematic(w, rng) + (np.arange(C) * N)[:, None]
        _take(state, idx.ravel())
        beta = new_beta
        state.betas = np.full(N, beta)
        trans = to_free(model, state.x)
        # within-group spread (averaged over groups, as the replica exchange tunes steps on all its chains)
        spread = np.sqrt(np.mean(np.var(trans.reshape(C, N, P), axis=1), axis=0))
        spread = np.where(np.isfinite(spread) & (spread > 0), spread, s0 * 1e-3)
        acc = np.zeros(P)
        # the groups stay independent: each one's joint move and particle Gaussian come from its own particles
        groups = trans.reshape(C, N, P)
        proposals = [ModeProposal(m, beta, s0, g) for m, g in zip(modes, groups)] if modes is not None else None
        floor = np.diag((1e-6 * s0) ** 2)
        chol = np.stack([np.linalg.cholesky(np.cov(g, rowvar=False) + floor) for g in groups])
        n_single = 0
        for i in range(s.n_moves):
            if i < s.n_single:
                state.steps = np.tile(np.minimum(factor * spread, 2.0 * s0), (N, 1))
                a = move.propose(target, state, rng).mean(axis=0)
                relabel_peaks(model, state)
                factor *= np.exp(a - s.target_accept)
                acc += a
                n_single += 1
            if s.joint:
                ja = _joint_move(model, y, state, chol, joint_scale, rng)
                relabel_peaks(model, state)
                joint_scale *= math.exp(ja - 0.25)
            if proposals is not None:
                mode_acc.append(_mode_move(model, y, state, proposals, rng))
        if len(betas) % 20 == 0:
            refresh_state(model, y, state)
        betas.append(beta)
        energies.append(state.energy.reshape(C, N).copy())
        samples.append(state.x.reshape(C, N, P).copy())
        ess_log.append(ess)
        acc_log.append(acc / max(n_single, 1))
        if stop_past_minimum and schedule is None:
            F = np.array([-lz + const * math.log(2.0 * math.pi / b) for lz, b in zip(log_z[1:], betas[1:])])
            best_beta = betas[1 + int(np.argmin(F))]
            if beta > s.top_factor * best_beta and np.argmin(F) < F.size - 1:
                break
    L = len(betas)
    return RemcResult(
        betas=np.array(betas),
        energies=np.stack(energies).transpose(2, 1, 0),
        samples=np.stack(samples).transpose(2, 1, 0, 3),
        names=model.names,
        acceptance=np.array(acc_log),
        exchange_rate=np.array(ess_log),
        round_trips=np.zeros(C, dtype=int),
        n_points=model.n_points,
        settings=s,
        elapsed_s=time.perf_counter() - t0,
        state=state,
        diagnostics={"sampler": "smc", "n_steps": L, "log_z": log_z,
                     "mode_energies": [] if modes is None else [m.energy.tolist() for m in modes],
                     "mode_acceptance": float(np.mean(mode_acc)) if mode_acc else None},
    )


def extend_smc(model: SpectrumModel, y: np.ndarray, run: RemcResult, n_groups: int,
               seed: int | np.random.SeedSequence | None = None) -> RemcResult:
    """``run`` with ``n_groups`` more independent populations on the same schedule: the records of both
    joined along the group axis (the free energy's standard error falls as 1/sqrt(groups))."""
    s = run.settings
    if not isinstance(s, SmcSettings):
        raise InputError("extend_smc needs a run of run_smc")
    more = run_smc(model, y, beta_max=float(run.betas[-1]), settings=replace(s, n_groups=n_groups), seed=seed,
                   schedule=run.betas)
    c0, c1 = run.energies.shape[1], n_groups
    w0, w1 = c0 / (c0 + c1), c1 / (c0 + c1)
    return RemcResult(
        betas=run.betas, energies=np.concatenate([run.energies, more.energies], axis=1),
        samples=np.concatenate([run.samples, more.samples], axis=1), names=run.names,
        acceptance=w0 * run.acceptance + w1 * more.acceptance,
        exchange_rate=np.minimum(run.exchange_rate, more.exchange_rate),
        round_trips=np.concatenate([run.round_trips, more.round_trips]), n_points=run.n_points,
        settings=replace(s, n_groups=c0 + c1), elapsed_s=run.elapsed_s + more.elapsed_s, state=more.state,
        diagnostics={**run.diagnostics, "extended_by": run.diagnostics.get("extended_by", 0) + n_groups},
    )
