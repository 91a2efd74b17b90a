"""The noise of χ(k) at high k as an adaptive target (``{"chi_noise": 2e-4}``): ε, the RMS noise per point of
χ on the 0.05 Å⁻¹ grid (IFEFFIT/Larch's ε_k convention) over a high-k range, and which grid points to measure
next, for how long.

The scan measures χ at the grid's own energies (E0 + k² / 0.2625 eV), so each grid point's χ is the
inverse-variance mean of its measurements and its variance is known: the points' μ variance (from their counts,
else s²/dwell) over the edge step² (:func:`~.edge_step.normalise`, from the XANES points). ε = √(mean variance
over the grid). A step known to ~10 % makes ε known to ~10 %.

The counting noise is not the only noise: the scatter of the grid points about a local cubic in k (blocks of
7 points, 0.3 Å⁻¹, short against χ's periods π/R) is compared with it, and a reduced χ² above 1 scales ε up
(glitches, harmonics, beam motion: the scatter the service's own ε_k from high-R |χ(R)| would see).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..xafs.kspace import ETOK, KSTEP
from .scatter import BLOCK, cubic_scatter

#: the high-k range ε is taken over by default, Å⁻¹
K_RANGE = (10.0, 14.0)


def grid_energies(e0: float, k_range: tuple[float, float] = K_RANGE) -> tuple[np.ndarray, np.ndarray]:
    """The 0.05 Å⁻¹ grid over ``k_range`` (Å⁻¹) and its energies (eV) for an edge at ``e0`` (eV)."""
    k = np.round(np.arange(k_range[0], k_range[1] + 1e-9, KSTEP), 6)
    return k, e0 + k ** 2 / ETOK


@dataclass
class ChiNoise:
    """ε over the high-k grid and what the design needs.

    Attributes
    ----------
    eps : RMS noise per grid point of χ, scaled by ``scale`` (inf while a grid point is unmeasured)
    var : variance of χ at each grid point from the counting noise (inf: not measured)
    scale : reduced χ² of the grid points about local cubics (>= 1), NaN before every point is measured
    s2 : χ variance x dwell of a new point (s), for the design
    step : edge step (μ units)
    dof : degrees of freedom of ``scale``'s χ² (0 while it is NaN)
    """

    eps: float
    var: np.ndarray
    scale: float
    s2: float
    step: float
    dof: int = 0

    def design(self, energies: np.ndarray, dwells: tuple[float, ...], target: float, n: int
               ) -> tuple[list[float], list[float]]:
        """The ``n`` grid points with the largest variance (unmeasured first), each for the shortest dwell
        (of ``dwells``) that brings it to the variance the target asks of every point, or the longest."""
        goal = target ** 2 / (self.scale if np.isfinite(self.scale) else 1.0)  # per-point variance to reach
        order = np.argsort(-np.where(np.isfinite(self.var), self.var, np.inf), kind="stable")
        picks_e, picks_t = [], []
        for j in order[:n]:
            if self.var[j] <= goal:
                break
            have = 0.0 if not np.isfinite(self.var[j]) else 1.0 / self.var[j]
            need = self.s2 * (1.0 / goal - have)  # seconds of dwell still needed at this point
            t = next((d for d in sorted(dwells) if d >= need), max(dwells))
            picks_e.append(float(energies[j]))
            picks_t.append(float(t))
        return picks_e, picks_t


def chi_noise(energy: np.ndarray, mu: np.ndarray, var: np.ndarray, dwell: np.ndarray, grid_e: np.ndarray,
              step: float) -> ChiNoise:
    """ε from the points measured at the grid's energies (``grid_e``, eV; others are ignored).

    energy (eV), mu, var (μ's noise variance per point), dwell (s) as measured; step: the edge step (μ units)."""
    e, y, v, t = (np.asarray(a, float) for a in (energy, mu, var, dwell))
    key = np.round(grid_e, 6)
    at = np.searchsorted(key, np.round(e, 6))
    on = (at < key.size) & (key[np.clip(at, 0, key.size - 1)] == np.round(e, 6))
    idx = at[on]
    w = np.bincount(idx, weights=1.0 / v[on], minlength=key.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.bincount(idx, weights=y[on] / v[on], minlength=key.size) / w
        var_chi = np.where(w > 0, 1.0 / w, np.inf) / step ** 2
    # a new point's χ variance x dwell: from the high-k points measured so far
    s2 = float(np.median(v[on] * t[on])) / step ** 2 if on.any() else float("nan")
    scale, dof = float("nan"), 0
    if np.all(w > 0) and key.size >= BLOCK:
        rss, dof = cubic_scatter(np.arange(key.size, dtype=float), mean / step, 1.0 / var_chi)
        scale = max(rss / dof, 1.0) if dof else float("nan")
    eps = float(np.sqrt(np.mean(var_chi) * (scale if np.isfinite(scale) else 1.0)))
    return ChiNoise(eps=eps, var=var_chi, scale=scale, s2=s2, step=step, dof=dof)
