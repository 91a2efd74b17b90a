"""Scan quality: flag spectra that should be rescanned (beam dump, detector saturation, glitches beyond
repair, too many invalid points). Pure numpy; one spectrum or a stack of repeats at a time.

Tests of a repeat, from its channels (counts) and μ:

- **beam dump**: I0 below ``beam_dump_fraction`` of its median for at least one point;
- **saturation**: a channel's rate (counts / the ``clock`` channel's count time, or counts without it)
  sits at its maximum (within 1e-6 relative) on more than ``saturation_points`` points — a saturated
  counter reads a constant clipped rate;
- **glitches beyond repair**: more than ``max_glitches`` outliers of μ from its running median, in local
  robust units, outside the XANES region (a few isolated glitches are repairable by deglitching; many, or
  glitches several points wide, are not);
- **invalid points**: NaN/inf in μ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError


@dataclass
class QualityReport:
    """Verdict on one spectrum.

    Attributes
    ----------
    bad : rescan recommended
    reasons : short reasons, e.g. ["beam dump at 3 points (7431.2-7436.9 eV)"]
    beam_dump_points, saturated_points, glitch_points, invalid_points : counts
    glitch_energies : energies (eV) of the glitches found
    """

    bad: bool
    reasons: list[str] = field(default_factory=list)
    beam_dump_points: int = 0
    saturated_points: int = 0
    glitch_points: int = 0
    invalid_points: int = 0
    glitch_energies: list[float] = field(default_factory=list)


def _glitches(mu: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Indices where μ leaves a local quadratic (7-point Savitzky-Golay) by more than ``floor`` (per point)."""
    from scipy.signal import savgol_filter

    if mu.size < 7:
        return np.zeros(0, int)
    resid = mu - savgol_filter(mu, 7, 2, mode="interp")
    return np.flatnonzero(np.abs(resid) > floor)


def assess_spectrum(
    energy: np.ndarray,
    mu: np.ndarray,
    *,
    channels: dict[str, np.ndarray] | None = None,
    beam_dump_fraction: float = 0.05,
    saturation_points: int = 3,
    max_glitches: int = 3,
    glitch_fraction: float = 0.02,
    glitch_sigmas: float = 10.0,
) -> QualityReport:
    """Assess one spectrum. ``energy`` (n,) eV, ``mu`` (n,), ``channels`` name → counts (n,), e.g. i0, it.

    A glitch point deviates from the local smooth curve by more than ``glitch_fraction`` of the edge step
    and by more than ``glitch_sigmas`` counting-statistics sigmas (from i0/it when given).
    """
    energy = np.asarray(energy, dtype=float)
    mu = np.asarray(mu, dtype=float)
    if energy.ndim != 1 or mu.shape != energy.shape:
        raise InputError(f"energy and mu must be 1-D of the same length, got {energy.shape} and {mu.shape}")
    if energy.size < 5:
        raise InputError(f"energy: need at least 5 points to assess a spectrum, got {energy.size}")
    reasons: list[str] = []
    channels = {k: np.asarray(v, dtype=float) for k, v in (channels or {}).items()}
    for name, counts in channels.items():
        if counts.shape != energy.shape:
            raise InputError(f"channel {name!r}: {counts.size} points for {energy.size} energies")
    report = QualityReport(bad=False)
    i0 = channels.get("i0")
    if i0 is not None and np.isfinite(i0).any():
        low = i0 < beam_dump_fraction * np.nanmedian(i0)
        report.beam_dump_points = int(low.sum())
        if low.any():
            e = energy[low]
            reasons.append(f"beam dump at {low.sum()} point(s) ({e.min():.1f}-{e.max():.1f} eV)")
    clock = channels.get("clock")  # count time per point (s); rates make saturation visible at any dwell
    for name, counts in channels.items():
        if name == "clock":
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = counts / clock if clock is not None else counts
        finite = rate[np.isfinite(rate)]
        if finite.size == 0:
            continue
        top = finite.max()
        at_top = np.abs(rate - top) <= 1e-6 * max(abs(top), 1.0)
        if at_top.sum() > saturation_points and top > 0:
            report.saturated_points = max(report.saturated_points, int(at_top.sum()))
            unit = "counts/s" if clock is not None else "counts"
            reasons.append(f"{name} saturated at {top:.4g} {unit} on {at_top.sum()} point(s)")
    invalid = ~np.isfinite(mu)
    report.invalid_points = int(invalid.sum())
    if invalid.any():
        reasons.append(f"{invalid.sum()} point(s) of mu are NaN/inf")
    good = ~invalid
    if i0 is not None and report.beam_dump_points:
        good &= ~(i0 < beam_dump_fraction * np.nanmedian(i0))
    # XANES features are sharp on fine grids: search glitches in the pre-edge and the EXAFS region only
    if good.sum() >= 5:
        de = np.gradient(np.where(good, mu, np.nan), energy)
        e_edge = energy[int(np.nanargmax(np.where(np.isfinite(de), de, -np.inf)))]
        good &= ~((energy > e_edge - 30.0) & (energy < e_edge + 50.0))
    idx = np.flatnonzero(good)
    step = float(np.nanpercentile(mu, 95) - np.nanpercentile(mu, 5)) if np.isfinite(mu).any() else 0.0
    floor = np.full(energy.size, glitch_fraction * abs(step))
    it = channels.get("it")
    if i0 is not None and it is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            sigma = np.sqrt(1.0 / np.abs(i0) + 1.0 / np.abs(it))
        floor = np.maximum(floor, glitch_sigmas * np.nan_to_num(sigma, nan=np.inf))
    # search each contiguous stretch on its own (a quadratic across the excluded XANES gap is meaningless)
    breaks = np.flatnonzero(np.diff(idx) > 1) + 1
    found = [seg[_glitches(mu[seg], floor[seg])] for seg in np.split(idx, breaks) if seg.size >= 7]
    glitch_idx = np.concatenate(found) if found else np.zeros(0, int)
    report.glitch_points = int(glitch_idx.size)
    report.glitch_energies = [float(e) for e in energy[glitch_idx]]
    if glitch_idx.size > max_glitches:
        reasons.append(f"{glitch_idx.size} glitches (more than {max_glitches} are not repaired)")
    report.reasons = reasons
    report.bad = bool(reasons)
    return report
