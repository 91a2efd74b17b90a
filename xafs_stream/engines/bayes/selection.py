"""Model selection by minimum Bayesian free energy: over K (number of peaks), candidate Hamiltonians or
prior regions, and over the noise variance (known, or estimated as in Tokuda et al. 2017).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import InputError
from .free_energy import FreeEnergy, NoiseScan, free_energy, free_energy_curve, scan_noise
from .models.base import SpectrumModel
from .noise import difference_noise
from .sampler import RemcResult, RemcSettings, extend_run, run_remc, split_rhat
from .smc import SmcSettings, extend_smc, run_smc


@dataclass
class CandidateFit:
    """One candidate model after sampling.

    Attributes
    ----------
    name : label such as "K=3"
    model : the SpectrumModel
    run : the RemcResult
    free_energy : F (nat) with standard error at the noise used for this candidate
    noise_scan : F over the noise level (noise estimated) or None (noise known)
    rung : ladder rung whose samples represent the posterior at that noise
    rhat : split-R-hat over independent chains per parameter at that rung, shape (P,)
    """

    name: str
    model: SpectrumModel
    run: RemcResult
    free_energy: FreeEnergy
    noise_scan: NoiseScan | None
    rung: int
    rhat: np.ndarray

    @property
    def F(self) -> float:
        return self.free_energy.F

    @property
    def F_se(self) -> float:
        return self.free_energy.se

    @property
    def noise(self) -> float:
        return self.free_energy.noise

    @property
    def rhat_max(self) -> float:
        """The largest R-hat over the parameters (NaN when none is finite)."""
        return float(np.nanmax(self.rhat)) if np.any(np.isfinite(self.rhat)) else float("nan")

    def samples(self) -> np.ndarray:
        """Posterior samples pooled over chains at the rung of this candidate's noise, shape (n, P)."""
        return self.run.flat_samples(self.rung)

    def energies(self) -> np.ndarray:
        return self.run.energies[:, :, self.rung]

    def noise_marginal_samples(self, rng: np.random.Generator, n: int = 4000) -> np.ndarray:
        """n posterior draws (n, P) with the noise integrated out when it was estimated: every rung's draws,
        weighted by exp(-F) at its noise times its share of log(noise) (a log-uniform prior over the noise the
        run scanned). Where F(noise) has two minima within a nat or so (the pre-edge of Fe2O3), the draws at
        the lowest one alone would change with the seed. With the noise known: :meth:`samples`."""
        if self.noise_scan is None:
            pool = self.samples()
            return pool[rng.choice(pool.shape[0], n)]
        betas = self.run.betas[1:]
        F = free_energy_curve(self.run.betas, self.run.energies, self.model.n_points, betas)
        logw = -(F - np.nanmin(F)) + np.log(np.gradient(np.log(betas))) if betas.size > 1 else np.zeros(1)
        w = np.exp(np.where(np.isfinite(logw), logw - np.nanmax(logw), -np.inf))
        rungs = 1 + rng.choice(betas.size, n, p=w / w.sum())
        draws = self.run.samples  # (N, C, L, P)
        flat = rng.integers(0, draws.shape[0] * draws.shape[1], n)
        return draws[flat // draws.shape[1], flat % draws.shape[1], rungs]


#: Kass & Raftery (1995) / Jeffreys: a Bayes factor below ~e (ΔF < 1 nat) is "not worth more than a bare
#: mention". Among candidates ordered from simple to complex, the simplest within this of the lowest F is
#: chosen (or within 2 standard errors of ΔF when the free energies are that uncertain).
OCCAM_NAT = 1.0


def choose(fits: Sequence[CandidateFit], occam_nat: float | None = OCCAM_NAT) -> int:
    """Index of the chosen candidate. ``occam_nat`` None: the lowest F. Otherwise the first candidate (the
    list runs from simple to complex, e.g. K = 1, 2, ...) whose F exceeds the lowest by no more than
    max(``occam_nat``, 2 se(ΔF)) nat."""
    F = np.array([f.F for f in fits])
    low = int(np.argmin(F))
    if occam_nat is None:
        return low
    for i in range(low):
        se = math.hypot(fits[i].F_se, fits[low].F_se)
        if F[i] - F[low] <= max(float(occam_nat), 2.0 * se if math.isfinite(se) else 0.0):
            return i
    return low


@dataclass
class Selection:
    """Result of a model selection.

    Attributes
    ----------
    fits : one CandidateFit per candidate, in the order given
    best : index of the chosen candidate: the lowest F, or with ``occam_nat`` the simplest within that of it
        (see :func:`choose`)
    noise_mode : "known" or "auto"
    y : ndarray (N,)  the data (on ``fits[i].model.x``)
    occam_nat : the parsimony margin used by :func:`choose` (None: lowest F)
    run_length : how the run length was decided (:func:`select_models` with ``target_se``): the target, the
        standard error of the best two candidates' ΔF and their drift reached, the extensions made and
        ``stopped`` ("target reached", "time budget spent" or "not requested")
    stopped_at : with ``select_models(stop_at_rhat=...)``: the first candidate whose chains did not converge
        (not in ``fits``, so not chosen; None when every candidate run converged or the first did not)
    not_run : the candidates after ``stopped_at``, not sampled
    """

    fits: list[CandidateFit]
    best: int
    noise_mode: str
    y: np.ndarray
    run_length: dict = field(default_factory=lambda: {"stopped": "not requested"})
    occam_nat: float | None = None
    stopped_at: CandidateFit | None = None
    not_run: list[str] = field(default_factory=list)

    def contest(self) -> tuple[int, int, float, float, float]:
        """(best, runner-up, ΔF, se(ΔF), drift of ΔF): the two lowest free energies and how sure the data
        and the run are of their order (se and drift in nat; NaN with one candidate)."""
        order = sorted(range(len(self.fits)), key=lambda i: self.fits[i].F)
        if len(order) < 2:
            return order[0], order[0], float("nan"), float("nan"), float("nan")
        a, b = self.fits[order[0]], self.fits[order[1]]
        drift = b.free_energy.drift - a.free_energy.drift
        return order[0], order[1], b.F - a.F, math.hypot(a.F_se, b.F_se), drift

    @property
    def x(self) -> np.ndarray:
        return self.fits[0].model.x

    @property
    def best_fit(self) -> CandidateFit:
        return self.fits[self.best]

    @property
    def noise(self) -> float:
        """Noise sd used (known) or estimated (auto) for the chosen candidate."""
        return self.best_fit.noise

    def table(self) -> list[dict[str, float | str]]:
        """Rows: name, F, F_se, noise, dF (F - min F), probability (exp(-F) normalised over candidates)."""
        F = np.array([f.F for f in self.fits])
        w = np.exp(-(F - F.min()))
        p = w / w.sum()
        return [
            {
                "name": f.name,
                "F": f.F,
                "F_se": f.F_se,
                "noise": f.noise,
                "dF": float(f.F - F.min()),
                "probability": float(pi),
            }
            for f, pi in zip(self.fits, p)
        ]


def _check_data(y: np.ndarray, n_points: int) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    if y.ndim != 1 or y.size != n_points:
        raise InputError(f"y must have shape ({n_points},) like the model grid, got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise InputError(f"y contains {int(np.sum(~np.isfinite(y)))} NaN or inf values")
    return y


def _resolve_noise(noise: float | str | None, y: np.ndarray, noise_min: float | None) -> tuple[str, float]:
    """Return (mode, beta_max) with beta_max = 1/noise² (known) or 1/noise_min² (auto)."""
    if noise is None or (isinstance(noise, str) and noise.lower() == "auto"):
        if noise_min is None:
            scale = float(np.max(np.abs(y))) or 1.0
            noise_min = max(difference_noise(y) / 3.0, 1e-5 * scale)
        if not (math.isfinite(noise_min) and noise_min > 0):
            raise InputError(f"noise_min must be finite and > 0, got {noise_min}")
        return "auto", 1.0 / noise_min**2
    if isinstance(noise, str):
        try:
            noise = float(noise)
        except ValueError:
            raise InputError(f"noise must be a positive number or 'auto', got {noise!r}") from None
    if (
        isinstance(noise, bool)
        or not isinstance(noise, (int, float, np.floating))
        or not math.isfinite(noise)
        or noise <= 0
    ):
        raise InputError(f"noise must be a positive number or 'auto', got {noise!r}")
    return "known", 1.0 / float(noise) ** 2


def _run_one(args: tuple) -> RemcResult:
    model, y, beta_max, settings, seed, mode = args
    if isinstance(settings, SmcSettings):
        return run_smc(model, y, beta_max=beta_max, settings=settings, seed=seed, stop_past_minimum=mode == "auto")
    return run_remc(model, y, beta_max=beta_max, settings=settings, seed=seed)


def _fit(name: str, model: SpectrumModel, run: RemcResult, mode: str) -> CandidateFit:
    scan = None
    if mode == "auto":
        scan = scan_noise(run.betas, run.energies, model.n_points)
        fe = scan.best
        rung = int(np.argmin(np.abs(np.log(run.betas[1:]) - math.log(fe.beta)))) + 1
    else:
        fe = free_energy(run.betas, run.energies, model.n_points)
        rung = run.betas.size - 1
    rhat = split_rhat(run.samples[:, :, rung, :])
    return CandidateFit(
        name=name, model=model, run=run, free_energy=fe, noise_scan=scan, rung=rung, rhat=rhat
    )


def select_models(
    candidates: Sequence[tuple[str, SpectrumModel]],
    y: np.ndarray,
    *,
    noise: float | str | None = "auto",
    noise_min: float | None = None,
    settings: RemcSettings | Sequence[RemcSettings] | None = None,
    seed: int | None = None,
    n_jobs: int = 1,
    target_se: float | None = None,
    budget_s: float = 60.0,
    occam_nat: float | None = None,
    stop_at_rhat: float | None = None,
) -> Selection:
    """Sample every candidate and pick the one with the lowest free energy.

    Parameters
    ----------
    candidates : (name, model) pairs, all on the same grid as ``y``
    y : ndarray of shape (N,)
    noise : noise standard deviation (y units), or "auto"/None to estimate it by minimum F
    noise_min : smallest noise the ladder reaches when estimating (default: difference noise / 3)
    settings : one RemcSettings (replica exchange) or SmcSettings (tempered SMC, :mod:`.smc`) for all
        candidates, or one per candidate
    seed : base seed; each candidate gets an independent child stream
    n_jobs : candidates run in this many processes (1 = in this process)
    target_se : run-length control: while the standard error of ΔF between the best two candidates, or the
        drift of ΔF between the first half of the runs and the whole, is above this (nat), both runs are
        extended (each by its recorded length so far) until it is not or ``budget_s`` of wall time (s,
        the whole selection) is spent; ``Selection.run_length`` says which happened. None: one run each.
    occam_nat : None (default): the lowest F is chosen; a number: candidates are ordered from simple to
        complex and the simplest within max(occam_nat, 2 se) nat of the lowest F is chosen (:func:`choose`;
        the ready-made workflows over K pass :data:`OCCAM_NAT`)
    stop_at_rhat : None (default): every candidate is sampled. A number: the candidates run one after
        another (simple to complex) and the first whose largest R-hat exceeds it ends the search; it is kept
        apart (``Selection.stopped_at``) and the choice is made among those before it, whose free energies
        and posteriors can be trusted (unless it is the first, which then stays the only fit)
    """
    t0 = time.perf_counter()
    if not candidates:
        raise InputError("no candidate models to select from")
    n = candidates[0][1].n_points
    for name, model in candidates:
        if not isinstance(model, SpectrumModel):
            raise InputError(f"candidate {name!r} is not a SpectrumModel")
        if model.n_points != n or not np.array_equal(model.x, candidates[0][1].x):
            raise InputError(f"candidate {name!r} is defined on a different grid")
    y = _check_data(y, n)
    mode, beta_max = _resolve_noise(noise, y, noise_min)
    if settings is None or isinstance(settings, (RemcSettings, SmcSettings)):
        per = [settings or RemcSettings()] * len(candidates)
    else:
        per = list(settings)
        if len(per) != len(candidates):
            raise InputError("settings: give one RemcSettings/SmcSettings or one per candidate")
    if mode == "auto":
        per = [replace(s, adapt_top=True) if isinstance(s, RemcSettings) else s for s in per]
    seeds = np.random.SeedSequence(seed).spawn(len(candidates))
    jobs = [(m, y, beta_max, s, sd, mode) for (_, m), s, sd in zip(candidates, per, seeds)]
    stopped_at, not_run = None, []
    if stop_at_rhat is not None:
        fits, stopped_at, not_run = _fit_until_unconverged(candidates, jobs, mode, float(stop_at_rhat))
    elif n_jobs > 1 and len(jobs) > 1:
        # largest models first so the pool stays busy
        order = sorted(range(len(jobs)), key=lambda i: -jobs[i][0].n_params)
        with ProcessPoolExecutor(max_workers=min(n_jobs, len(jobs))) as pool:
            done = dict(zip(order, pool.map(_run_one, [jobs[i] for i in order])))
        fits = [_fit(name, m, done[i], mode) for i, (name, m) in enumerate(candidates)]
    else:
        fits = [_fit(name, m, _run_one(j), mode) for (name, m), j in zip(candidates, jobs)]
    selection = Selection(fits=fits, best=choose(fits, occam_nat), noise_mode=mode, y=y, occam_nat=occam_nat,
                          stopped_at=stopped_at, not_run=not_run)
    if target_se is not None and len(fits) > 1:
        _control_run_length(selection, y, float(target_se), float(budget_s), t0, seeds)
    return selection


def _fit_until_unconverged(candidates, jobs, mode, limit) -> tuple[list[CandidateFit], CandidateFit | None,
                                                                    list[str]]:
    """Candidates in order until one does not converge (``stop_at_rhat`` of :func:`select_models`): the
    fits to choose from, the one that stopped the search (None if none did or it was the first, which is
    then kept), and the names not run."""
    fits: list[CandidateFit] = []
    for i, ((name, model), job) in enumerate(zip(candidates, jobs)):
        fit = _fit(name, model, _run_one(job), mode)
        converged = fit.rhat_max <= limit  # False for NaN
        if converged or not fits:
            fits.append(fit)
        if not converged:
            return fits, (None if fit is fits[-1] else fit), [n for n, _ in candidates[i + 1:]]
    return fits, None, []


def control_run_length(sel: Selection, y: np.ndarray, target_se: float, budget_s: float,
                       seed: int | None = None) -> None:
    """Run-length control of an existing selection (as ``select_models(target_se=...)`` does): extend the
    best two candidates until se(ΔF) and |drift(ΔF)| are within ``target_se`` nat or ``budget_s`` s pass."""
    seeds = np.random.SeedSequence(seed).spawn(len(sel.fits))
    _control_run_length(sel, np.asarray(y, float), target_se, budget_s, time.perf_counter(), seeds)


def _control_run_length(sel: Selection, y: np.ndarray, target: float, budget_s: float, t0: float,
                        seeds: list) -> None:
    """Extend the best two candidates' runs until se(ΔF) and |drift(ΔF)| are within ``target`` or the
    budget is spent (see :func:`select_models`)."""
    extensions = 0
    while True:
        a, b, gap, se, drift = sel.contest()
        elapsed = time.perf_counter() - t0
        done = se <= target and abs(drift) <= max(target, 2 * se)
        spent_per_round = max(sel.fits[a].run.elapsed_s, sel.fits[b].run.elapsed_s) * 2
        if done or elapsed + spent_per_round > budget_s:
            sel.run_length = {"target_se": target, "se_diff": se, "drift_diff": drift, "dF": gap,
                              "pair": [sel.fits[a].name, sel.fits[b].name], "extensions": extensions,
                              "elapsed_s": elapsed,
                              "stopped": "target reached" if done else "time budget spent"}
            return
        for i in (a, b):
            f = sel.fits[i]
            if isinstance(f.run.settings, SmcSettings):  # as many new independent populations as it has
                more = extend_smc(f.model, y, f.run, f.run.energies.shape[1], seed=seeds[i].spawn(1)[0])
            else:
                more = extend_run(f.model, y, f.run, f.run.energies.shape[0], seed=seeds[i].spawn(1)[0])
            sel.fits[i] = _fit(f.name, f.model, more, sel.noise_mode)
        sel.best = choose(sel.fits, sel.occam_nat)
        extensions += 1


def check_k_range(k_min: int, k_max: int) -> range:
    """Validated range of peak numbers (K >= 1)."""
    for name, v in (("k_min", k_min), ("k_max", k_max)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InputError(f"{name} must be an integer, got {v!r}")
    if k_min < 1:
        raise InputError(f"the number of peaks K must be >= 1, got k_min={k_min}")
    if k_max < k_min:
        raise InputError(f"k_max ({k_max}) must be >= k_min ({k_min})")
    if k_max > 12:
        raise InputError(f"k_max={k_max} is more than this sampler is tuned for (<= 12)")
    return range(int(k_min), int(k_max) + 1)
