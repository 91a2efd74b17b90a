"""Hamiltonian selection by scanning the charge-transfer energy Δ over regions (Mototake et al. 2019).

The Δ range [lo, hi] (eV) is cut into regions; each region is one candidate cluster model whose Δ prior is
uniform over that region, and the free energies F_r pick the region the data prefer. A last candidate has
Δ free over the whole range. Its evidence is the width-weighted mean of the regions' evidences,

    exp(-F_free) = Σ_r (w_r / W) exp(-F_r),

so F_free = -ln Σ_r (w_r / W) exp(-F_r) (≈ min F_r + ln n for n equal regions when one dominates) is a check
of the sampler on the same data: the two sides must agree within their standard errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.integrate import trapezoid

from ..errors import InputError
from .models.hamiltonian import ClusterModel
from .priors import LogUniform, Prior, Uniform
from .sampler import RemcSettings
from .selection import CandidateFit, Selection, select_models

#: Default priors of the cluster parameters other than Δ (eV); wide boxes around the published CeO2 and
#: La2O3 values (METHODS §2). ``scale`` is set from the data's area and ``shift`` from the ``shift`` range.
DEFAULT_PRIORS = {
    "v": Uniform(0.2, 1.5),
    "ufc": Uniform(8.0, 16.0),
    "gamma": LogUniform(0.2, 2.0),
}
#: U_ff is fixed at the published 10.5 eV unless given (both compounds in Mototake et al. share it).
DEFAULT_FIXED = {"uff": 10.5}


def delta_regions(low: float, high: float, n: int) -> list[tuple[float, float]]:
    """``n`` equal-width Δ regions covering [low, high] (eV)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"the number of Δ regions must be an integer >= 1, got {n!r}")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InputError(f"the Δ range must be A:B with A < B, got {low}:{high}")
    edges = np.linspace(low, high, int(n) + 1)
    return [(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:])]


@dataclass
class ClusterScan:
    """Result of :func:`scan_delta`.

    Attributes
    ----------
    selection : the region candidates (names "Δ a..b"); ``selection.best`` is the chosen region
    free : the candidate with Δ free over the whole range
    regions : (low, high) of each region, eV
    """

    selection: Selection
    free: CandidateFit
    regions: list[tuple[float, float]]

    @property
    def combined(self) -> tuple[float, float]:
        """(F, se) of -ln Σ_r (w_r/W) exp(-F_r), nat: what the free-Δ candidate should give.

        se by the delta method: the posterior region weights p_r times each region's se, in quadrature.
        """
        F = np.array([f.F for f in self.selection.fits])
        se = np.array([f.F_se for f in self.selection.fits])
        w = np.array([b - a for a, b in self.regions])
        logw = np.log(w / w.sum())
        m = float(np.max(logw - F))
        total = m + math.log(float(np.sum(np.exp(logw - F - m))))
        p = np.exp(logw - F - total)
        return -total, float(np.sqrt(np.sum((p * se) ** 2)))

    def consistency(self) -> tuple[float, float]:
        """(F_free - F_combined, its standard error), nat."""
        fc, sc = self.combined
        return self.free.F - fc, math.hypot(self.free.F_se, sc)

    def delta_posterior(self) -> np.ndarray:
        """Δ samples (eV) of the chosen region's posterior."""
        fit = self.selection.best_fit
        return fit.samples()[:, fit.model.names.index("delta")]


def cluster_candidates(
    x: np.ndarray,
    y: np.ndarray,
    regions: Sequence[tuple[float, float]],
    *,
    n_config: int = 3,
    priors: dict[str, Prior] | None = None,
    fixed: dict[str, float] | None = None,
    shift: tuple[float, float] = (-5.0, 5.0),
) -> list[tuple[str, ClusterModel]]:
    """One ClusterModel per Δ region plus a last one with Δ free over their union.

    ``priors``/``fixed`` override :data:`DEFAULT_PRIORS`/:data:`DEFAULT_FIXED`; the scale prior is
    log-uniform over a factor 10 either side of the data's area above its minimum; ``shift`` (eV) is the
    uniform range of the energy shift between the model's relative energies and ``x``.
    """
    if not regions:
        raise InputError("no Δ regions to compare")
    fixed = {**DEFAULT_FIXED, **(fixed or {})}
    if n_config == 2:
        fixed.pop("uff", None)
    base: dict[str, Prior] = {k: p for k, p in {**DEFAULT_PRIORS, **(priors or {})}.items() if k not in fixed}
    if "scale" not in base and "scale" not in fixed:
        area = float(trapezoid(y - np.min(y), x))
        if not (math.isfinite(area) and area > 0):
            raise InputError("the data have no positive area above their minimum: give a scale prior")
        base["scale"] = LogUniform(area / 10, area * 10)
    if "shift" not in base and "shift" not in fixed:
        base["shift"] = Uniform(*shift)
    if "delta" in base or "delta" in fixed:
        raise InputError("Δ is what the scan varies: do not give a prior or a fixed value for it")
    lo, hi = min(a for a, _ in regions), max(b for _, b in regions)
    out = [(f"Δ {a:g}..{b:g}", ClusterModel(x, {**base, "delta": Uniform(a, b)}, fixed=fixed, n_config=n_config))
           for a, b in regions]
    out.append((f"Δ free {lo:g}..{hi:g}",
                ClusterModel(x, {**base, "delta": Uniform(lo, hi)}, fixed=fixed, n_config=n_config)))
    return out


def scan_delta(
    x: np.ndarray,
    y: np.ndarray,
    regions: Sequence[tuple[float, float]],
    *,
    n_config: int = 3,
    priors: dict[str, Prior] | None = None,
    fixed: dict[str, float] | None = None,
    shift: tuple[float, float] = (-5.0, 5.0),
    noise: float | str | None = "auto",
    settings: RemcSettings | None = None,
    seed: int | None = None,
    n_jobs: int = 1,
    target_se: float | None = None,
    budget_s: float = 120.0,
) -> ClusterScan:
    """Sample every Δ region and Δ free (see the module docstring); the lowest-F region is chosen."""
    regions = [(float(a), float(b)) for a, b in regions]
    for (_, b), (a2, _) in zip(regions, regions[1:]):
        if a2 < b:
            raise InputError(f"Δ regions must not overlap and must be in order, got {regions}")
    cands = cluster_candidates(x, y, regions, n_config=n_config, priors=priors, fixed=fixed, shift=shift)
    full = select_models(cands, y, noise=noise, settings=settings, seed=seed, n_jobs=n_jobs)
    fits = full.fits[:-1]
    sel = Selection(fits=fits, best=int(np.argmin([f.F for f in fits])), noise_mode=full.noise_mode, y=full.y)
    if target_se is not None and len(fits) > 1:
        from .selection import control_run_length

        control_run_length(sel, full.y, float(target_se), float(budget_s), seed)
    return ClusterScan(selection=sel, free=full.fits[-1], regions=regions)
