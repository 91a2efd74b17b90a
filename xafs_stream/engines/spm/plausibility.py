"""What the FEFF path set says a shell may be: where each pair's neighbours are and how many there are.

A path set is computed from a structure model, so it carries that model's distances and coordination
numbers. SpM uses them as a weak structural prior, the way a feffit model bounds ΔR around reff:

- candidate neighbours of a pair lie within ``window`` (Å) of one of that pair's single-scattering paths
  (default 0.35 Å, wider than the ±0.2-0.3 Å ΔR range usual in feffit models): an "Fe-O" shell at 3.05 Å
  in rock-salt FeO, whose O neighbours are at 2.17 and 3.75 Å, is not a candidate;
- a refined shell is implausible when its σ² sits at the refinement's bound (the amplitude was traded
  against disorder: N and σ² then mean nothing) or when N exceeds ``n_factor`` times the number of that
  pair's neighbours the path set places within ``window`` of R by more than twice its standard error
  (N is N·S0²/s02; 1.5 leaves room for an S0² error and a distorted structure).

Measured on rock-salt FeO (shared ``feo_rt1.xdi``, paths from feff6l, a = 4.33 Å): without these rules
the CLI defaults reported an Fe-O shell at 3.05 Å and larch-like ranges an Fe-Fe shell with N ≈ 42 and
σ² = 0.06 Å² at 3.23 Å accepted by the split test. ``window=None`` or ``n_factor=None`` switch a rule off
(for path sets that are not a model of the sample, e.g. one path used for every distance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .paths import ScatteringPath
from .shells import SIGMA2_BOUNDS


@dataclass(frozen=True)
class StructurePrior:
    """Single-scattering (reff Å, degeneracy) per pair of a path set, and the two rules' parameters."""

    neighbours: dict[str, tuple[tuple[float, float], ...]]
    window: float | None = 0.35
    n_factor: float | None = 1.5

    @classmethod
    def from_paths(cls, paths: list[ScatteringPath], *, window: float | None = 0.35,
                   n_factor: float | None = 1.5) -> StructurePrior:
        out: dict[str, list[tuple[float, float]]] = {}
        for p in paths:
            if p.is_single_scattering:
                out.setdefault(p.pair, []).append((float(p.reff), float(p.degeneracy)))
        return cls({k: tuple(sorted(v)) for k, v in out.items()}, window, n_factor)

    def near(self, pair: str, r: float) -> list[tuple[float, float]]:
        """The pair's (reff, degeneracy) within ``window`` of ``r`` (all of them when the rule is off)."""
        rows = self.neighbours.get(pair, ())
        if self.window is None:
            return list(rows)
        return [(reff, deg) for reff, deg in rows if abs(reff - r) <= self.window]

    def allowed(self, pair: str, r: np.ndarray) -> np.ndarray:
        """Boolean mask over distances ``r`` (Å): candidates of ``pair`` the path set allows."""
        r = np.asarray(r, float)
        if self.window is None:
            return np.ones(r.shape, bool)
        reffs = np.array([reff for reff, _ in self.neighbours.get(pair, ())])
        if reffs.size == 0:
            return np.zeros(r.shape, bool)
        return np.min(np.abs(r[..., None] - reffs), axis=-1) <= self.window

    def n_structure(self, pair: str, r: float) -> float:
        """Neighbours of ``pair`` the path set places within ``window`` of ``r``."""
        return float(sum(deg for _, deg in self.near(pair, r)))

    def implausible(self, pair: str, n: float, r: float, sigma2: float, n_err: float = 0.0) -> str | None:
        """Why a refined shell is physically implausible, or None (N counts as too large when even
        N - 2·``n_err`` exceeds the limit)."""
        lo, hi = SIGMA2_BOUNDS
        if min(sigma2 - lo, hi - sigma2) < 0.01 * (hi - lo):  # the verdict's "at its bound"
            return f"σ² = {sigma2:.4f} Å² at its bound ({lo:g}, {hi:g})"
        if self.window is not None and not self.near(pair, r):
            return f"no {pair} path of the path set within {self.window:g} Å of R = {r:.2f} Å"
        if self.n_factor is not None:
            n_max = self.n_factor * self.n_structure(pair, r)
            if n - 2 * (n_err if np.isfinite(n_err) else 0.0) > n_max:
                return (f"N = {n:.1f} is more than {self.n_factor:g} × the {self.n_structure(pair, r):g} {pair} "
                        f"neighbours of the path set near {r:.2f} Å")
        return None

    def may_split(self, pair: str, r: float) -> bool:
        """Whether the structure puts two or more distinct distances of ``pair`` near ``r`` (the split test
        in ``auto`` mode is tried only there)."""
        return len(self.near(pair, r)) >= 2
