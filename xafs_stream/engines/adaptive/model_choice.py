"""The number of peaks K as an adaptive target: P(K | data) from Bayesian free energies, and where to measure
so that the competing K disagree most.

Each update normalises the points roughly (an affine map: the pre-edge mean to 0, the mean above the edge to
1), merges repeated energies (inverse-variance means: the same likelihood up to a constant), and fits edge +
slope + K peaks for K = 1, 2, ... with tempered SMC (:func:`~xafs_stream.engines.bayes.select_models`, each
point weighted by its own noise: :class:`~xafs_stream.engines.bayes.models.WeightedModel`) until a fit does
not converge or ``k_max`` is reached. P(K) = exp(-F_K) / Σ exp(-F_j) over the fits (uniform prior over K);
the fit that stopped the search enters with its standard error doubled (:data:`UNCONVERGED_SE_FACTOR`).

The target is checked on a cautious P: each rival's free-energy gap is first lowered by twice its standard
error, so that sampling noise in F cannot meet the target. It is never met while the best K is the largest
fitted one (nothing then says K + 1 is worse) or while the best K's own draws did not converge.

K counts peaks of at least :data:`MIN_HEIGHT` edge steps. With heights log-uniform down to 1e-3 (the live
fit's prior) P(K) cannot reach 0.9 in useful beam time: a K + 1 whose extra peak hides below the detection
limit keeps the prior mass of the heights below that limit, so P(K + 1) / P(K) falls only like the log of
the noise (measured: P(K = 2) stayed at 0.55-0.73 over 1000 s of beam on a two-peak spectrum).

A BIC comparison of least-squares fits (an earlier attempt) claimed P >= 0.9 for the wrong K in 4 of 10
realisations of a two-peak spectrum, a K = 2 fit stuck in a local optimum; the SMC fits search every
population's least-squares optima and sample between them.

The design (:meth:`KPosterior.design`): each candidate energy and dwell t is scored by how far the best K's
posterior predictive mean lies from each rival's, against their predictive variances and the new point's
noise, weighted by the rival's probability, per second of beam (a discrimination criterion in the manner of
Box and Hill, 1967): Σ_j w_j (m_best - m_j)² / (v_best + v_j + 2 s²/t) / (t + move_s). Points in a batch are
kept at least ``spacing`` eV apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..bayes import SmcSettings, XanesModel, select_models, xanes_priors
from ..bayes.models import WeightedModel
from ..errors import InputError
from .edge_step import normalise

#: region of the fit, eV relative to the expected edge (as the live ``bayes.xanes``)
REGION = (-20.0, 30.0)
#: R-hat above which a fit is not trusted and the search over K stops (the verdict's warn threshold)
RHAT_STOP = 1.05
#: an unconverged fit (R-hat above RHAT_STOP: its populations' draws disagree, as when a redundant peak can sit
#: in several places) still enters P(K) with its free energy, whose standard error comes from the same
#: independent populations, but with that error multiplied by this: all populations may also have missed a
#: mode together, which no spread among them shows
UNCONVERGED_SE_FACTOR = 2.0
#: the smallest peak K counts, edge steps (the lower end of the log-uniform height prior)
MIN_HEIGHT = 0.02
#: draws per fit used for the predictive means and variances of the design
DESIGN_DRAWS = 200


@dataclass
class KPosterior:
    """P(K | points) and what the design needs.

    Attributes
    ----------
    ks : K fitted with a finite free energy, increasing
    F, F_se : their free energies and standard errors (doubled for an unconverged fit), nat
    rhat : their largest R-hat
    prob : P(K), uniform prior over ``ks``
    best : the most probable K
    cautious : P(best) with each rival's ΔF lowered by twice its standard error (what a target is checked on)
    failed : the K whose fit gave no finite free energy, or None
    k_max : the largest K allowed
    draws : K -> posterior draws (D, P) (the unconverged fit's too, for the design)
    priors : the priors the models used (over the fitted energies)
    step : the edge step the points were normalised by (μ units)
    """

    ks: list[int]
    F: np.ndarray
    F_se: np.ndarray
    rhat: np.ndarray
    prob: np.ndarray
    best: int
    cautious: float
    failed: int | None
    k_max: int
    draws: dict[int, np.ndarray] = field(repr=False)
    priors: dict = field(repr=False)
    step: float = 1.0

    @property
    def open_above(self) -> bool:
        """The best K is the largest fitted: K + 1 was not fitted or did not converge."""
        return self.best == max(self.ks)

    @property
    def converged(self) -> bool:
        """The best K's draws converged (R-hat at most RHAT_STOP)."""
        return bool(self.rhat[self.ks.index(self.best)] <= RHAT_STOP)

    def met(self, target: float) -> bool:
        return self.converged and self.cautious >= target and not self.open_above

    def why_not(self, target: float) -> str:
        """Why the target is not met ('' if it is)."""
        if not self.converged:
            return f"the most probable K={self.best} did not converge (R-hat {self.rhat[self.ks.index(self.best)]:.2f})"
        if self.open_above:
            if self.failed is not None:
                return f"K={self.failed} gave no free energy, so K={self.best} is not shown better than it"
            return f"K={self.best} is the top of the searched range 1..{self.k_max}: extend it"
        if self.cautious < target:
            return f"P(K={self.best}) {self.cautious:.2f} below the target {target:g}"
        return ""

    def describe(self) -> str:
        ps = ", ".join(f"P(K={k}) {p:.2f}" + (f" (R-hat {r:.2f})" if r > RHAT_STOP else "")
                       for k, p, r in zip(self.ks, self.prob, self.rhat))
        tail = f"; K={self.failed} gave no free energy" if self.failed is not None else ""
        return f"K = {self.best} (cautious P {self.cautious:.2f}; {ps}{tail})"

    def design(self, candidates: np.ndarray, dwells: np.ndarray, s2: float, move_s: float, n: int,
               spacing: float = 0.5) -> tuple[list[float], list[float]]:
        """Up to ``n`` (energy eV, dwell s) where the best K and its rivals disagree most per second of beam.

        ``s2``: a new point's noise variance x dwell, in normalised units (edge steps² s)."""
        rivals = [k for k in self.draws if k != self.best]
        if not rivals:
            return [], []
        weight = dict(zip(self.ks, self.prob))
        # a K + 1 without a free energy is the rival that keeps the target open: weigh it like the best
        if self.failed is not None:
            weight[self.failed] = max(weight.get(self.failed, 0.0), weight[self.best])
        m_best, v_best = self._predictive(self.best, candidates)
        dwells = np.asarray(dwells, float)
        score = np.zeros((candidates.size, dwells.size))
        for k in rivals:
            m, v = self._predictive(k, candidates)
            gap = (m_best - m) ** 2
            score += weight.get(k, 0.0) * gap[:, None] / (v_best[:, None] + v[:, None] + 2.0 * s2 / dwells[None, :])
        score /= (dwells + move_s)[None, :]
        picks_e: list[float] = []
        picks_t: list[float] = []
        free = np.ones(candidates.size, dtype=bool)
        while len(picks_e) < n and free.any():
            masked = np.where(free[:, None], score, -np.inf)
            i, j = np.unravel_index(int(np.argmax(masked)), masked.shape)
            if not masked[i, j] > 0:
                break
            picks_e.append(float(candidates[i]))
            picks_t.append(float(dwells[j]))
            free &= np.abs(candidates - candidates[i]) >= spacing
        return picks_e, picks_t

    def _predictive(self, k: int, energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior predictive mean and variance of the K = k model (normalised μ) at ``energy``."""
        model = XanesModel(np.asarray(energy, float), k, self.priors, slope=True)
        curves = model.predict(self.draws[k])
        return curves.mean(axis=0), curves.var(axis=0)


def k_posterior(energy: np.ndarray, mu: np.ndarray, var: np.ndarray, e0: float, *, k_max: int = 4,
                min_height: float = MIN_HEIGHT, settings: SmcSettings | None = None, seed: int | None = 0
                ) -> KPosterior:
    """P(K | points) for edge + slope + K Gaussian peaks over ``e0 + REGION`` (see the module docstring).

    energy (eV), mu, var (μ's noise variance per point) as measured; e0: the expected edge, eV."""
    x, y, sd, step = normalise(energy, mu, var, e0)
    inside = (x >= e0 + REGION[0]) & (x <= e0 + REGION[1])
    x, y, sd = x[inside], y[inside], sd[inside]
    if x.size < 10:
        raise InputError(f"K needs at least 10 distinct energies in E0 {REGION[0]:+g} .. {REGION[1]:+g} eV")
    priors = xanes_priors(x, e0, amplitude_range=(min_height, 2.0))
    cands = [(f"K={k}", WeightedModel(XanesModel(x, k, priors, slope=True), sd)) for k in range(1, k_max + 1)]
    sel = select_models(cands, y / sd, noise=1.0, settings=settings or SmcSettings(), seed=seed,
                        occam_nat=None, stop_at_rhat=RHAT_STOP)
    every = sel.fits + ([sel.stopped_at] if sel.stopped_at is not None else [])
    fits = [f for f in every if np.isfinite(f.F) and np.isfinite(f.F_se)]
    open_k = [f.model.n_peaks for f in every if f not in fits]
    ks = [f.model.n_peaks for f in fits]
    F = np.array([f.F for f in fits])
    F_se = np.array([f.F_se * (UNCONVERGED_SE_FACTOR if f.rhat_max > RHAT_STOP else 1.0) for f in fits])
    prob = np.exp(-(F - F.min()))
    prob /= prob.sum()
    b = int(np.argmax(prob))
    gap = F - F[b] - 2.0 * np.sqrt(F_se ** 2 + F_se[b] ** 2)  # each rival's ΔF, lowered by 2 se
    gap[b] = 0.0
    cautious = float(1.0 / np.exp(-gap).sum())
    rng = np.random.default_rng(seed)
    draws = {}
    for f in every:
        s = f.samples()
        draws[f.model.n_peaks] = s[rng.choice(s.shape[0], min(DESIGN_DRAWS, s.shape[0]), replace=False)]
    failed = open_k[0] if open_k else None
    return KPosterior(ks=ks, F=F, F_se=F_se, rhat=np.array([f.rhat_max for f in fits]), prob=prob, best=ks[b],
                      cautious=cautious, failed=failed, k_max=k_max, draws=draws, priors=priors,
                      step=step)
