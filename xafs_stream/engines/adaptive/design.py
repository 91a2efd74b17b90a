"""The adaptive design agent: tell it what was measured, ask it what to measure next, and when to stop.

:class:`AdaptiveXanes` follows bluesky-adaptive's agent interface (``tell``, ``ask``, ``report``). After a
coarse pass over the window it estimates E0, the white line and the pre-edge centroid from local polynomials
(:mod:`.local`: linear models, exact Gaussian posteriors given the noise). Each next batch is chosen greedily:
among candidate energies and dwell times, the point whose measurement reduces Σ over unmet targets of
(posterior variance / target²) the most per second of beam (dwell + ``move_s``), the covariances updated after
each pick (rank-one, so a batch spreads out). It stops when every target is met or the budget (points, beam
seconds) is spent; :meth:`AdaptiveXanes.done` says which and :meth:`report` gives the estimates.

Before a local value counts, its feature must be identified on the coarse-pass points: which maximum is the
white line (:func:`~.local.whiteline_rivals`), which inflection point is the first (:func:`~.local.e0_rivals`),
and a parametric bootstrap of both (:func:`~.local.feature_candidates`). While the noise could still move a
feature to another place with probability above 5 %, the batch re-measures the coarse points over all of them,
longer each round.

The number of peaks (target ``{"K": 0.9}``, a probability) is not local: after the coarse pass every update
fits edge + K peaks for K = 1, 2, ... (:mod:`.model_choice`, tempered SMC: seconds per update) and the
target is met when the cautious P(best K) reaches it with K + 1 fitted. Its points (half the batch when other
targets are unmet too) go where the best K's posterior predictive and its rivals' differ most per second.
The noise of χ at high k (``{"chi_noise": 2e-4}``, :mod:`.high_k`) is met by measuring the 0.05 Å⁻¹ grid's
energies over ``chi_k``, the noisiest first, each for the dwell it still needs.

Noise: each point's variance is given with it (from its counts) or, if not, estimated as s²/dwell from the
scatter of the points about local cubics (:func:`~.scatter.cubic_scatter`). A local fit whose reduced χ²
exceeds 1 has its covariance scaled by it, so a stated sd covers the scatter actually seen, not only the
counting noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from .edge_step import merge_repeats
from .local import (
    FEATURES,
    HALF_WIDTH,
    LocalEstimate,
    e0_rivals,
    estimate,
    feature_candidates,
    local_sd,
    rough_features,
    whiteline_rivals,
)
from .scatter import cubic_scatter

if TYPE_CHECKING:
    from .high_k import ChiNoise
    from .model_choice import KPosterior

LOCAL = FEATURES
#: share of noise redraws that must find a feature at the same place before its value counts
IDENTIFIED = 0.95
#: targets the agent can reach: the local features' sd (eV); "K", the probability that the number of peaks
#: (edge + K peaks, :mod:`.model_choice`) is the most probable one; "chi_noise", the RMS noise of χ per 0.05 Å⁻¹
#: grid point at high k (:mod:`.high_k`)
TARGETS = (*LOCAL, "K", "chi_noise")


@dataclass
class Decision:
    """One ``ask``: the points chosen (eV, s), why, and the estimates and their sd when it was made."""

    energies: list[float]
    dwells: list[float]
    reason: str
    estimates: dict[str, float] = field(default_factory=dict)
    sd: dict[str, float] = field(default_factory=dict)


class AdaptiveXanes:
    """Choose XANES energies and dwell times until the targets are met.

    Parameters
    ----------
    e0 : tabulated or expected edge energy, eV
    targets : e.g. {"e0": 0.1, "whiteline": 0.05, "preedge": 0.1}: posterior sd to reach, eV
    window : energies relative to ``e0`` the scan may use, eV
    coarse_step : step of the first pass, eV (dwell ``coarse_dwell`` s); ``edge_step`` from ``e0`` - 12 to
        ``e0`` + 20 eV, so that a shoulder on the edge is not stepped over
    dwells : dwell times (s) the design may choose from
    move_s : overhead per point (monochromator move and settle), s
    max_points, max_time_s : budget (points, beam seconds including moves)
    candidate_step : energy grid of the candidates, eV
    k_max, min_height : for the "K" target: the largest K fitted, the smallest peak counted (edge steps)
    seed : for the "K" target's samplers
    chi_k : for the "chi_noise" target: the k range (Å⁻¹) its RMS noise is taken over
    """

    def __init__(self, e0: float, targets: Mapping[str, float], *, window: tuple[float, float] = (-30.0, 50.0),
                 coarse_step: float = 3.0, edge_step: float = 1.0, coarse_dwell: float = 0.5,
                 dwells: Sequence[float] = (0.5, 1.0, 2.0, 4.0), move_s: float = 0.3, max_points: int = 300,
                 max_time_s: float = 900.0, candidate_step: float = 0.1, k_max: int = 4,
                 min_height: float = 0.02, seed: int = 0, chi_k: tuple[float, float] = (10.0, 14.0)) -> None:
        unknown = set(targets) - set(TARGETS)
        if not targets or unknown:
            raise InputError(f"targets must name some of {TARGETS}, got {sorted(targets)}")
        for name, value in targets.items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise InputError(f"target {name!r} must be a number, got {value!r}") from None
            if name == "K" and not 0.5 < value < 1:
                raise InputError(f"target 'K' is a probability: must be between 0.5 and 1, got {value!r}")
            if not value > 0:
                unit = "" if name == "chi_noise" else " eV"
                raise InputError(f"target {name!r} must be > 0{unit}, got {value!r}")
        if not window[0] < window[1] or min(coarse_step, edge_step, candidate_step, coarse_dwell) <= 0:
            raise InputError(f"window must be (low, high) eV with low < high, steps and dwell > 0, got {window}")
        if not dwells or min(dwells) <= 0 or move_s < 0:
            raise InputError("dwells must be > 0 s and move_s >= 0 s")
        if max_points < 1 or max_time_s <= 0:
            raise InputError("max_points must be >= 1 and max_time_s > 0 s")
        if not (isinstance(k_max, (int, np.integer)) and 2 <= k_max <= 6) or not 0 < min_height < 1:
            raise InputError(f"k_max must be an integer 2..6 and min_height in (0, 1) edge steps, got {k_max}, "
                             f"{min_height}")
        self.k_max, self.min_height, self.seed = int(k_max), float(min_height), int(seed)
        self.kpost: KPosterior | None = None  # P(K | points), when "K" is a target and the coarse pass is done
        self.k_error = ""  # why there is no P(K) (too few points, no edge)
        try:
            k1, k2 = (float(v) for v in chi_k)
        except (TypeError, ValueError):
            raise InputError(f"chi_k must be (low, high) Å⁻¹, got {chi_k!r}") from None
        if not 2.0 <= k1 < k2 <= 20.0:
            raise InputError(f"chi_k must be (low, high) Å⁻¹ with 2 <= low < high <= 20, got {chi_k!r}")
        self.chi_k = (k1, k2)
        self.chi: ChiNoise | None = None  # ε at high k, when "chi_noise" is a target and the coarse pass is done
        self.chi_error = ""
        self.e0_guess = float(e0)
        self.targets = {k: float(v) for k, v in targets.items()}
        self.window = (self.e0_guess + window[0], self.e0_guess + window[1])
        wide = np.arange(self.window[0], self.window[1] + 1e-9, coarse_step)
        edge = np.arange(max(self.window[0], self.e0_guess - 12.0), min(self.window[1], self.e0_guess + 20.0) + 1e-9,
                         edge_step)
        self.coarse = np.unique(np.round(np.concatenate([wide, edge]), 3))
        self.coarse_dwell = float(coarse_dwell)
        self.candidates = np.arange(self.window[0], self.window[1] + 1e-9, candidate_step)
        self.dwell_choices = tuple(float(d) for d in dwells)
        self.move_s = float(move_s)
        self.max_points = int(max_points)
        self.max_time_s = float(max_time_s)
        self.energy: list[float] = []
        self.mu: list[float] = []
        self.dwell: list[float] = []
        self.sigma: list[float | None] = []
        self.local: dict[str, LocalEstimate] = {}
        self.scale: dict[str, float] = {}  # reduced χ² of each local fit (>= 1)
        self._told = 0  # points told, usable or not (the coarse pass advances on these)
        self._fresh = False  # the estimates match the points told
        self._fills: dict[str, int] = {}  # rounds of points spread over a target's window
        self._new_s2 = 1.0  # noise variance x dwell of a new point (μ² s), from the points so far
        self._rough: dict[str, float] = {}  # where each feature is on the coarse-pass points, eV
        #: targets whose feature the noise can still move to another one: name -> [(eV, share)]
        self.ambiguous: dict[str, list[tuple[float, float]]] = {}

    # --- bluesky-adaptive interface ---------------------------------------------------------------
    def tell(self, energy: float, mu: float, dwell: float, sigma: float | None = None) -> None:
        """Add one measured point: energy (eV), μ, dwell (s) and, if known, μ's noise sd from its counts.
        Non-finite values (a detector glitch) are ignored."""
        self._told += 1
        if np.isfinite(mu) and np.isfinite(energy) and dwell > 0 and (sigma is None or (np.isfinite(sigma)
                                                                                         and sigma > 0)):
            self.energy.append(float(energy))
            self.mu.append(float(mu))
            self.dwell.append(float(dwell))
            self.sigma.append(None if sigma is None else float(sigma))
            self._fresh = False

    def ask(self, n: int = 5) -> Decision:
        """The next batch of up to ``n`` points (first the whole coarse pass); none when :meth:`done`."""
        finished, why = self.done()
        if finished:
            decision = Decision([], [], why, *self._estimates())
        elif self._told < self.coarse.size:
            todo = self.coarse[self._told:]
            decision = Decision([float(e) for e in todo], [self.coarse_dwell] * todo.size, "coarse pass")
        else:
            decision = self._design(n)
        return decision

    def report(self) -> dict[str, Any]:
        """Estimates (eV), their posterior sd (eV), points and beam seconds used, whether and why it is done, the
        verdict (:func:`~.verdict.judge_agent`), each local fit's posterior band (``band``: name -> energy
        eV, mu, sd: the fitted μ over its window and its sd, for plotting) and, for the K target, the fits
        behind P(K) (``K``: best, cautious_P, why_not, fits: K, P, F nat, F_se nat, rhat) and, for the
        chi_noise target, ε and how it was found (``chi_noise``: eps, scale, step, k_range, grid_points,
        measured)."""
        from .verdict import judge_agent

        est, sd = self._estimates()
        done, why = self.done()
        bands = {}
        for name, fit in self.local.items():
            energy, mu, mu_sd = fit.band()
            bands[name] = {"energy": energy.round(3).tolist(), "mu": mu.tolist(), "sd": mu_sd.tolist()}
        verdict = judge_agent(self)
        model_choice, high_k = {}, {}
        if "chi_noise" in self.targets:
            c = self.chi
            high_k = {"error": self.chi_error} if c is None else {
                "eps": c.eps, "scale": c.scale, "step": c.step, "k_range": list(self.chi_k),
                "grid_points": int(c.var.size), "measured": int(np.isfinite(c.var).sum())}
        if "K" in self.targets:
            kp = self.kpost
            model_choice = {"error": self.k_error} if kp is None else {
                "best": kp.best, "cautious_P": kp.cautious, "why_not": kp.why_not(self.targets["K"]),
                "fits": [{"K": k, "P": float(p), "F": float(f), "F_se": float(se), "rhat": float(r)}
                         for k, p, f, se, r in zip(kp.ks, kp.prob, kp.F, kp.F_se, kp.rhat)]}
        return {"estimates": est, "sd": sd, "ambiguous": {n: [list(c) for c in v] for n, v in self.ambiguous.items()},
                "points": len(self.energy),
                "beam_time_s": self.beam_time_s, "done": done, "reason": why, "targets": dict(self.targets),
                "misfit": dict(self.scale), "verdict": verdict.level, "verdict_reasons": verdict.reasons,
                "band": bands, "K": model_choice, "chi_noise": high_k}

    # --- state -------------------------------------------------------------------------------------
    @property
    def beam_time_s(self) -> float:
        return float(sum(self.dwell) + self.move_s * len(self.dwell))

    def _variances(self, s2: float) -> np.ndarray:
        """Each point's noise variance: its own (from counts), else s2 / dwell."""
        return np.array([s * s if s is not None else s2 / t for s, t in zip(self.sigma, self.dwell)])

    def _noise_s2(self) -> float:
        """s² (variance x dwell) for points without their own sd: from local cubic residuals of the data
        (:func:`~.scatter.cubic_scatter`, each point weighted by its dwell)."""
        e, y, t = (np.asarray(a, float) for a in (self.energy, self.mu, self.dwell))
        order = np.argsort(e)
        rss, dof = cubic_scatter(e[order], y[order], t[order])
        return rss / dof if dof else float(np.var(y) + 1e-12)

    def update(self) -> None:
        """Refit the local targets to the points so far (each from its last value, or from its feature on the
        coarse-pass points) and check that each feature is identified."""
        if self._fresh or not self.energy:
            return
        e, y = np.asarray(self.energy), np.asarray(self.mu)
        if any(s is None for s in self.sigma):  # noise from the data's scatter
            self._new_s2 = self._noise_s2()
        else:  # noise from the counts: var ∝ 1/dwell, scaled from the points measured so far
            self._new_s2 = float(np.median(np.array([s * s for s in self.sigma]) * np.array(self.dwell)))
        var = self._variances(self._new_s2)
        self._rough = rough = dict(zip(LOCAL, self.rough(e, y, var)))
        if len(self.energy) < 8:
            return
        previous = self.local
        self.local, self.scale = {}, {}
        for name in LOCAL:
            if name not in self.targets:
                continue
            prev = previous.get(name)
            # from its last anchor (its value, or the pre-edge's anchor), unless the feature (on the coarse-pass
            # points) is now elsewhere: a fit that locked onto one of two maxima early must not stay there once
            # the data say the other is higher
            near = prev is not None and np.isfinite(prev.sd) and abs(prev.anchor - rough[name]) <= HALF_WIDTH[name]
            start = prev.anchor if near else rough[name]
            est = estimate(name, e, y, var, start)
            if est is None:
                continue
            sel = est.inside(e)
            resid = y[sel] - est.basis(e[sel]) @ est.coef
            dof = max(int(sel.sum()) - est.coef.size, 1)
            chi2 = float((resid ** 2 / var[sel]).sum() / dof)
            scale = max(chi2, 1.0)
            est.cov = est.cov * scale
            if np.isfinite(est.sd):
                est.sd = local_sd(est)
            self.local[name], self.scale[name] = est, scale
        ce, cy, cv = self._coarse_points(e, y, var)
        cands = feature_candidates(ce, cy, cv, self.e0_guess)
        self.ambiguous = {n: c for n, c in cands.items() if n in self.targets and c[0][1] < IDENTIFIED}
        if "whiteline" in self.targets and "whiteline" not in self.ambiguous:
            rivals = whiteline_rivals(ce, cy, cv, rough["e0"], z_share=1.0 - IDENTIFIED)
            if rivals:
                self.ambiguous["whiteline"] = rivals
        if "e0" in self.targets and "e0" not in self.ambiguous:
            rivals = e0_rivals(ce, cy, cv, self.e0_guess, rough["e0"], z_share=1.0 - IDENTIFIED)
            if rivals:
                self.ambiguous["e0"] = rivals
        if "K" in self.targets and self._told >= self.coarse.size:
            self._update_k(e, y, var)
        if "chi_noise" in self.targets and self._told >= self.coarse.size:
            self._update_chi(e, y, var)
        self._fresh = True

    def _update_chi(self, e: np.ndarray, y: np.ndarray, var: np.ndarray) -> None:
        """ε at high k (:func:`~.high_k.chi_noise`), the edge step from the XANES points."""
        from .edge_step import normalise
        from .high_k import chi_noise, grid_energies

        try:
            step = normalise(e, y, var, self.e0_guess)[3]
        except InputError as exc:
            self.chi, self.chi_error = None, f"no edge step: {exc}"
            return
        self.chi = chi_noise(e, y, var, np.asarray(self.dwell), grid_energies(self.e0_guess, self.chi_k)[1], step)
        if not np.isfinite(self.chi.s2):  # no high-k point yet: the XANES points' noise
            self.chi.s2 = self._new_s2 / step ** 2
        self.chi_error = ""

    def _update_k(self, e: np.ndarray, y: np.ndarray, var: np.ndarray) -> None:
        """P(K | points) (:func:`~.model_choice.k_posterior`), a new seed for each number of points."""
        from .model_choice import k_posterior  # the Bayesian engine loads only when K is a target

        try:
            self.kpost = k_posterior(e, y, var, self.e0_guess, k_max=self.k_max, min_height=self.min_height,
                                     seed=self.seed * 100_003 + len(self.energy))
            self.k_error = ""
        except InputError as exc:
            self.kpost, self.k_error = None, str(exc)

    def _coarse_points(self, e: np.ndarray, y: np.ndarray, var: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The points at the coarse pass's energies, repeated ones averaged (inverse-variance weights).

        Which feature is E0 and which the white line is decided on these alone: a smoothed slope depends on
        where the points are, so deciding it on points the design placed near one feature would let the design
        choose the feature (on the oxides, the next inflection 1.5-2 eV away)."""
        on = np.isin(np.round(e, 6), np.round(self.coarse, 6))
        return merge_repeats(e[on], y[on], var[on])

    def rough(self, e: np.ndarray, y: np.ndarray, var: np.ndarray) -> tuple[float, float]:
        """:func:`~.local.rough_features` of the coarse-pass points (see :meth:`_coarse_points`)."""
        ce, cy, _ = self._coarse_points(e, y, var)
        return rough_features(ce, cy, self.e0_guess)

    def estimates_for(self, energy: np.ndarray, mu: np.ndarray, var: np.ndarray) -> dict[str, LocalEstimate | None]:
        """This agent's estimators on any points (e.g. a conventional scan's): the features identified on the
        points at the coarse-pass energies, the values from local fits to all points."""
        e, y, v = (np.asarray(a, float) for a in (energy, mu, var))
        rough = dict(zip(LOCAL, self.rough(e, y, v)))
        return {name: estimate(name, e, y, v, rough[name]) for name in self.targets}

    def noiseless_targets(self, mu_of) -> dict[str, float]:
        """What the estimators give on the noiseless spectrum ``mu_of(energy)`` sampled every 0.05 eV and at
        the coarse energies: the values the stated sd are about (the truth of tests and benchmarks)."""
        grid = np.union1d(np.arange(self.window[0], self.window[1], 0.05), self.coarse)
        found = self.estimates_for(grid, mu_of(grid), np.full(grid.size, 1e-10))
        return {n: (est.value if est is not None else float("nan")) for n, est in found.items()}

    def _estimates(self) -> tuple[dict[str, float], dict[str, float]]:
        """name -> value, name -> sd (eV); for K the most probable K and 1 - its cautious probability."""
        self.update()
        est, sd = {n: e.value for n, e in self.local.items()}, {n: e.sd for n, e in self.local.items()}
        if self.kpost is not None and "K" in self.targets:
            est["K"], sd["K"] = float(self.kpost.best), 1.0 - self.kpost.cautious
        if self.chi is not None and "chi_noise" in self.targets:
            est["chi_noise"] = sd["chi_noise"] = self.chi.eps
        return est, sd

    def unmet(self) -> dict[str, float]:
        """Targets not yet reached: name -> current sd / target (for K: (1 - P) / (1 - target))."""
        _, sd = self._estimates()
        out = {}
        for name, goal in self.targets.items():
            if name == "K":
                if self.kpost is None or not self.kpost.met(goal):
                    out[name] = np.inf if self.kpost is None else (1.0 - self.kpost.cautious) / (1.0 - goal)
            elif name == "chi_noise":
                if self.chi is None or not self.chi.eps <= goal:
                    out[name] = np.inf if self.chi is None else self.chi.eps / goal
            elif name not in sd or sd[name] > goal or name in self.ambiguous:
                out[name] = np.inf if name in self.ambiguous else sd.get(name, np.inf) / goal
        return out

    def _met_text(self, name: str, goal: float) -> str:
        est, sd = self._estimates()
        if name == "K":
            return f"K = {self.kpost.best} with P {self.kpost.cautious:.2f} (target {goal:g})"
        if name == "chi_noise":
            k1, k2 = self.chi_k
            return f"χ noise {self.chi.eps:.3g} per 0.05 Å⁻¹ point over k {k1:g}-{k2:g} Å⁻¹ (target {goal:g})"
        return f"{name} = {est[name]:.2f} ± {sd[name]:.3g} eV (target {goal:g})"

    def done(self) -> tuple[bool, str]:
        """(True, why) when every target is met or the budget is spent."""
        if self._told >= self.coarse.size and not self.unmet():
            return True, "targets met: " + ", ".join(self._met_text(n, g) for n, g in self.targets.items())
        spent = ""
        if len(self.energy) >= self.max_points:
            spent = f"budget spent: {len(self.energy)} points (max_points {self.max_points})"
        elif self.beam_time_s >= self.max_time_s:
            spent = f"budget spent: {self.beam_time_s:.0f} s of beam (max_time_s {self.max_time_s:g})"
        if spent and "K" in self.targets and (self.kpost is None or not self.kpost.met(self.targets["K"])):
            spent += "; K: " + (self.kpost.why_not(self.targets["K"]) if self.kpost is not None else
                                (self.k_error or "no P(K) yet"))
        if spent and self.ambiguous:
            spent += "; not identified: " + "; ".join(
                f"{n} at " + " or ".join(f"{v:.1f} eV ({100 * p:.0f} %)" for v, p in c)
                for n, c in self.ambiguous.items())
        return bool(spent), spent

    # --- the design ----------------------------------------------------------------------------------
    def _fill_dwell(self, name: str) -> float:
        """The dwell of the next round of points spread over a window (``name``'s count of rounds): the
        shortest choice first, one longer each round, then the longest."""
        self._fills[name] = self._fills.get(name, 0) + 1
        return self.dwell_choices[min(self._fills[name] - 1, len(self.dwell_choices) - 1)]

    def _k_points(self, share: int, dwell: np.ndarray, s2: float) -> tuple[list[float], list[float], str]:
        """Points for the K target: where the best K and its rivals disagree most per second of beam."""
        if self.kpost is None:
            return [], [], self.k_error
        from .model_choice import REGION

        lo, hi = self.e0_guess + REGION[0], self.e0_guess + REGION[1]
        near = self.candidates[(self.candidates >= lo) & (self.candidates <= hi)]
        energies, dwells = self.kpost.design(near, dwell, s2 / self.kpost.step ** 2, self.move_s, share)
        if not energies:  # no rival fitted (only K = 1 ran): points over the region, longer each round
            t = self._fill_dwell("K")
            energies, dwells = [float(x) for x in np.linspace(lo, hi, share)], [t] * share
        return energies, dwells, (f"where K={self.kpost.best} and its rivals disagree most per second of beam "
                                  f"({self.kpost.why_not(self.targets['K'])})")

    def _chi_points(self, share: int, dwell: np.ndarray, s2: float) -> tuple[list[float], list[float], str]:
        """Points for the chi_noise target: the noisiest grid points at high k, each for the dwell it needs."""
        if self.chi is None:
            return [], [], self.chi_error
        from .high_k import grid_energies

        energies, dwells = self.chi.design(grid_energies(self.e0_guess, self.chi_k)[1], self.dwell_choices,
                                           self.targets["chi_noise"], share)
        k1, k2 = self.chi_k
        return energies, dwells, (f"the noisiest of the k {k1:g}-{k2:g} Å⁻¹ grid points (ε {self.chi.eps:.3g}, "
                                  f"target {self.targets['chi_noise']:g})")

    def _design(self, n: int) -> Decision:
        unmet = self.unmet()
        est, sd = self._estimates()
        dwell = np.array(self.dwell_choices)
        cost = dwell + self.move_s
        s2, rough = self._new_s2, self._rough  # from update(), which unmet() ran
        picks_e: list[float] = []
        picks_t: list[float] = []
        reasons = []
        # a feature the noise still moves between candidates: points over all of them, longer each round
        for name, cands in self.ambiguous.items():
            lo = min(v for v, _ in cands) - HALF_WIDTH[name]
            hi = max(v for v, _ in cands) + HALF_WIDTH[name]
            t = self._fill_dwell(f"id:{name}")
            grid = self.coarse[(self.coarse >= lo) & (self.coarse <= hi)]  # the points that identify it
            picks_e += [float(x) for x in grid]
            picks_t += [t] * grid.size
            reasons.append(f"{name} not identified: " + " or ".join(f"{v:.1f} eV ({100 * p:.0f} %)" for v, p in cands)
                           + f"; {grid.size} points over {lo:.1f}-{hi:.1f} eV ({t:g} s)")
        if picks_e:
            return Decision(picks_e, picks_t, "; ".join(reasons), est, sd)
        # the global targets (not one local feature): half the batch each when other targets are unmet too
        for name, points in (("K", self._k_points), ("chi_noise", self._chi_points)):
            if name in unmet and len(picks_e) < n:
                more_e, more_t, why = points(n - len(picks_e) if len(unmet) == 1 else max(1, n // 2), dwell, s2)
                picks_e += more_e
                picks_t += more_t
                reasons.append(f"{name}: {why}")
        # a target without a local fit yet: spread points over its window around the rough feature
        for name in LOCAL:
            if name in unmet and (name not in self.local or not np.isfinite(self.local[name].sd)):
                # the feature is not resolved yet: points over its window, longer each time
                half = HALF_WIDTH[name]
                # around the fit's window if there is one (a pre-edge fit follows its anchor off the rough place)
                centre = self.local[name].anchor if name in self.local else rough[name]
                t = self._fill_dwell(name)
                m = max(n - len(picks_e), 0)
                if name == "preedge":
                    # the batch's free places over the whole window, shifted by a golden-ratio step each round
                    # so that every round adds new energies: the sextic needs 8 distinct ones, and its area
                    # needs both ends of the window
                    shift = (self._fills[name] * 0.618034) % 1.0
                    xs = centre - half + (np.arange(m) + shift) * (2.0 * half / max(m, 1))
                else:
                    # the same seven places each round, the lowest first (with this fill the stated E0 sd covers
                    # the scatter on the synthetic edge; the pre-edge's fill gave an error z-RMS of 1.71 there)
                    xs = np.linspace(centre - half, centre + half, 7)[:m]
                for x in xs:
                    picks_e.append(float(np.clip(x, *self.window)))
                    picks_t.append(t)
                reasons.append(f"{name}: not resolved yet near {centre:.1f} eV, points over its window ({t:g} s)")
        if len(picks_e) >= n:
            return Decision(picks_e[:n], picks_t[:n], "; ".join(reasons), est, sd)
        covs = {name: self.local[name].cov.copy() for name in LOCAL
                if name in unmet and name in self.local and np.isfinite(self.local[name].sd)}
        bases = {name: self.local[name].basis(self.candidates) for name in covs}
        inside = {name: self.local[name].inside(self.candidates) for name in covs}
        while len(picks_e) < n:
            score = np.zeros((self.candidates.size, dwell.size))
            for name, cov in covs.items():
                v = self.local[name].grad
                b = bases[name]
                cb = b @ cov  # (m, p)
                num = (cb @ v) ** 2
                bcb = np.einsum("mp,mp->m", cb, b)
                scale = self.scale[name]
                red = num[:, None] / (scale * s2 / dwell[None, :] + bcb[:, None])
                score += np.where(inside[name][:, None], red, 0.0) / self.targets[name] ** 2
            score /= cost[None, :]
            i, j = np.unravel_index(int(np.argmax(score)), score.shape)
            if not score[i, j] > 0:
                break
            picks_e.append(float(self.candidates[i]))
            picks_t.append(float(dwell[j]))
            for name, cov in covs.items():
                if inside[name][i]:
                    b = bases[name][i]
                    cb = cov @ b
                    covs[name] = cov - np.outer(cb, cb) / (self.scale[name] * s2 / dwell[j] + b @ cb)
        if covs:
            reasons.append("largest expected reduction per second of beam of " + ", ".join(
                f"{name} (sd/target {v:.2g})" for name, v in unmet.items() if name in covs))
        return Decision(picks_e, picks_t, "; ".join(reasons), est, sd)
