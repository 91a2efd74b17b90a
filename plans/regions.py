"""Scan regions of an XAFS energy scan: parsing, energy grid, k-weighted dwell, time estimate.

A region is a plain list (queueserver-friendly): ``[start, stop, step, space]`` or
``[start, stop, step, space, dwell_s]`` where ``space`` is ``"E"`` (energies in eV relative to E0) or
``"k"`` (photo-electron wavenumber in Å⁻¹). Example, the default::

    [[-200, -30, 10, "E"], [-30, 30, 0.5, "E"], [2.8, 14, 0.05, "k"]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# k (Å⁻¹) = sqrt(ETOK * (E - E0) [eV]); ETOK = 2 m_e / hbar² in eV⁻¹ Å⁻², the value used by IFEFFIT/larch.
ETOK = 0.2624682843
DEFAULT_REGIONS = [[-200.0, -30.0, 10.0, "E"], [-30.0, 30.0, 0.5, "E"], [2.8, 14.0, 0.05, "k"]]
SPACES = ("E", "k")


class PlanArgumentError(ValueError):
    """A plan argument is invalid; raised before the plan moves anything."""


@dataclass(frozen=True)
class Region:
    """One scan region: ``start``..``stop`` (inclusive) by ``step`` in ``space`` ("E" eV rel. E0, or "k" Å⁻¹)."""

    start: float
    stop: float
    step: float
    space: str
    dwell_s: float | None = None

    def points(self) -> np.ndarray:
        n = int(np.floor((self.stop - self.start) / self.step + 1e-9)) + 1
        return self.start + self.step * np.arange(n)

    def as_list(self) -> list:
        out: list = [self.start, self.stop, self.step, self.space]
        if self.dwell_s is not None:
            out.append(self.dwell_s)
        return out


def parse_regions(regions: list | None) -> list[Region]:
    """Check and convert plain-list regions; :class:`PlanArgumentError` names the bad region."""
    if regions is None:
        regions = DEFAULT_REGIONS
    if not isinstance(regions, (list, tuple)) or len(regions) == 0:
        raise PlanArgumentError("regions must be a non-empty list of [start, stop, step, 'E'|'k'(, dwell_s)]")
    parsed = []
    for i, reg in enumerate(regions):
        where = f"region {i} {reg!r}"
        if not isinstance(reg, (list, tuple)) or len(reg) not in (4, 5):
            raise PlanArgumentError(f"{where}: expected [start, stop, step, 'E'|'k'] or with a 5th dwell_s")
        start, stop, step, space = reg[:4]
        if space not in SPACES:
            raise PlanArgumentError(f"{where}: space must be 'E' (eV relative to E0) or 'k' (1/Å), got {space!r}")
        try:
            start, stop, step = float(start), float(stop), float(step)
        except (TypeError, ValueError):
            raise PlanArgumentError(f"{where}: start, stop and step must be numbers") from None
        if not all(np.isfinite([start, stop, step])):
            raise PlanArgumentError(f"{where}: start, stop and step must be finite")
        if step <= 0:
            raise PlanArgumentError(f"{where}: step must be > 0, got {step}")
        if stop <= start:
            raise PlanArgumentError(f"{where}: stop ({stop}) must be greater than start ({start})")
        if space == "k" and start < 0:
            raise PlanArgumentError(f"{where}: k must be >= 0 1/Å, got start {start}")
        dwell = None
        if len(reg) == 5:
            try:
                dwell = float(reg[4])
            except (TypeError, ValueError):
                raise PlanArgumentError(f"{where}: dwell_s must be a number") from None
            if not dwell > 0:
                raise PlanArgumentError(f"{where}: dwell_s must be > 0 s, got {dwell}")
        parsed.append(Region(start, stop, step, space, dwell))
    return parsed


def region_energies(regions: list[Region], e0: float) -> tuple[np.ndarray, np.ndarray]:
    """Absolute energies (eV) of all regions in order, and the region index of each point.

    Points at or below the previous region's last energy are dropped, so overlapping regions do not
    give duplicate or decreasing energies.
    """
    energies, owners = [], []
    last = -np.inf
    for i, reg in enumerate(regions):
        pts = reg.points()
        e = e0 + (pts if reg.space == "E" else pts**2 / ETOK)
        keep = e > last + 1e-6
        energies.append(e[keep])
        owners.append(np.full(int(keep.sum()), i))
        if keep.any():
            last = float(e[keep][-1])
    return np.concatenate(energies), np.concatenate(owners)


def point_dwells(
    regions: list[Region], e0: float, dwell_s: float, *, kweight_dwell: float = 1.0, max_dwell_s: float | None = None
) -> np.ndarray:
    """Dwell time (s) per point: the region's dwell (or ``dwell_s``); in k regions multiplied by
    (k / k_start)^``kweight_dwell`` so high-k points, whose χ(k) is small, count longer.
    """
    energies, owners = region_energies(regions, e0)
    dwells = np.empty_like(energies)
    for i, reg in enumerate(regions):
        sel = owners == i
        base = reg.dwell_s if reg.dwell_s is not None else dwell_s
        if reg.space == "k" and kweight_dwell:
            k = np.sqrt(np.clip(energies[sel] - e0, 0, None) * ETOK)
            k_start = max(reg.start, 1e-3)
            dwells[sel] = base * (np.maximum(k, k_start) / k_start) ** kweight_dwell
        else:
            dwells[sel] = base
    if max_dwell_s is not None:
        dwells = np.minimum(dwells, max_dwell_s)
    return dwells


def estimate_scan_time(
    regions: list | None = None,
    *,
    e0: float = 9000.0,
    dwell_s: float = 1.0,
    kweight_dwell: float = 1.0,
    max_dwell_s: float | None = None,
    repeats: int = 1,
    overhead_per_point_s: float = 0.1,
) -> float:
    """Estimated duration (s) of an XAFS scan: Σ dwell + per-point overhead (move, settle, readout),
    times the number of repeats. E0 matters only through the k regions' energies.
    """
    parsed = parse_regions(regions)
    dwells = point_dwells(parsed, e0, dwell_s, kweight_dwell=kweight_dwell, max_dwell_s=max_dwell_s)
    return float(repeats * (dwells.sum() + overhead_per_point_s * len(dwells)))
