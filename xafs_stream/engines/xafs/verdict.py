"""The verdict on a processed spectrum: edge significance, a steepest point that noise leaves ambiguous,
post-edge points, glitches, k range."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..verdict import Verdict, threshold
from .calibrate import Calibration
from .deglitch import deglitch
from .process import ProcessedSpectrum


def glitches_left(proc: ProcessedSpectrum, *, thresholds: dict | None = None) -> int:
    """Glitches in the measured μ(E) that deglitching would replace and that leave μ by more than
    ``glitch_size`` of the edge step (0 when deglitching ran, or when it cannot run on this spectrum)."""
    if proc.glitch is not None:
        return 0
    try:
        found = deglitch(proc.energy, proc.mu, e0=float(proc.e0))
    except InputError:
        return 0
    size = np.abs(np.asarray(proc.mu) - np.asarray(found.mu)) / max(abs(float(proc.edge_step)), 1e-300)
    return int(np.count_nonzero(size[found.indices[0]] > threshold("glitch_size", thresholds)))


@dataclass
class E0Rival:
    """Another energy where μ(E) rises as steeply as at E0 within the noise: ``energy`` (eV), the local
    slopes ``slope`` there and ``slope_e0`` at E0 (μ per eV) and ``se`` (μ per eV), the standard error of
    their difference."""

    energy: float
    slope: float
    slope_e0: float
    se: float


def local_slopes(energy: np.ndarray, mu: np.ndarray, centres: np.ndarray, half_width: float) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
    """Least-squares slope dμ/dE (per eV) of the points within ``half_width`` eV of each centre, and the
    factor ``u`` that turns the per-point noise σ into its standard error (se = σ u). NaN where a window
    holds fewer than 3 points. Works on any (non-uniform) grid."""
    energy, mu = np.asarray(energy, float), np.asarray(mu, float)
    centres = np.atleast_1d(np.asarray(centres, float))
    inside = np.abs(energy[None, :] - centres[:, None]) <= half_width * (1 + 1e-9)
    n = inside.sum(axis=1)
    w = inside.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        xc = (energy[None, :] - ((w @ energy) / n)[:, None]) * w  # energies about each window's mean
        sxx = (xc * xc).sum(axis=1)
        slope = (xc @ mu) / sxx  # the window's centred energies sum to zero
        u = 1.0 / np.sqrt(sxx)
    few = (n < 3) | ~(sxx > 0)
    return np.where(few, np.nan, slope), np.where(few, np.nan, u)


def rival_rise(energy: np.ndarray, mu: np.ndarray, e0: float, sigma: float, *,
               thresholds: dict | None = None) -> E0Rival | None:
    """The strongest rival of the steepest point ``e0`` (eV) of μ(E) in the XANES region (E0 - 20 to
    E0 + 30 eV), at least ``e0_rival_separation`` eV away, whose local slope over ±``e0_slope_half_width`` eV
    is not below E0's by ``e0_rival_z`` standard errors, for per-point noise ``sigma``; None when there is
    none, when ``sigma`` is unknown, or when the grid is too coarse for a slope at E0.

    E0 is the maximum of a derivative (the IFEFFIT/Larch convention). With two rises of nearly equal slope
    (a metal's pre-edge shoulder and its main rise, Fe foil at 7112 and 7121 eV) noise decides which one
    wins, and E0 jumps by the distance between them from one scan to the next."""
    t = lambda name: threshold(name, thresholds)  # noqa: E731
    if not (np.isfinite(sigma) and sigma > 0):
        return None
    energy, mu, e0 = np.asarray(energy, float), np.asarray(mu, float), float(e0)
    half = t("e0_slope_half_width")
    (s0,), (u0,) = local_slopes(energy, mu, np.array([e0]), half)
    if not np.isfinite(s0):
        return None
    far = np.abs(energy - e0) >= t("e0_rival_separation")
    centres = energy[far & (energy >= e0 - 20.0) & (energy <= e0 + 30.0)]
    if centres.size == 0:
        return None
    slope, u = local_slopes(energy, mu, centres, half)
    se = sigma * np.sqrt(u * u + u0 * u0)
    close = np.isfinite(slope) & (slope > s0 - t("e0_rival_z") * se)
    if not close.any():
        return None
    i = int(np.flatnonzero(close)[np.argmax(slope[close])])
    return E0Rival(float(centres[i]), float(slope[i]), float(s0), float(se[i]))


def e0_rival(proc: ProcessedSpectrum, *, thresholds: dict | None = None) -> E0Rival | None:
    """:func:`rival_rise` of a processed spectrum (σ from its pre-edge fit's residual)."""
    sigma = float(getattr(proc.pre, "noise", np.nan))
    return rival_rise(proc.energy, proc.mu_used, float(proc.e0), sigma, thresholds=thresholds)


def judge_calibration(energy: np.ndarray, mu_ref: np.ndarray, cal: Calibration, *,
                      thresholds: dict | None = None) -> Verdict:
    """``ok``/``warn`` for a reference-foil calibration (:func:`~.calibrate.calibrate_energy` of one spectrum
    on ``energy`` (eV) before the shift): the reference's E0 has a rival rise (:func:`rival_rise`), or the
    shift exceeds ``calibration_shift_warn`` eV."""
    t = lambda name: threshold(name, thresholds)  # noqa: E731
    v = Verdict()
    rival = rival_rise(energy, mu_ref, float(cal.e0_measured), float(cal.noise), thresholds=thresholds)
    if rival is not None:
        v.warn(f"reference foil's E0 {float(cal.e0_measured):.2f} eV is uncertain (as steep at {rival.energy:.2f} eV "
               f"within the noise): the energy calibration may be off by {abs(rival.energy - cal.e0_measured):.1f} eV")
    shift = float(cal.shift)
    if abs(shift) > t("calibration_shift_warn"):
        v.warn(f"reference-foil calibration shifts the energy by {shift:+.2f} eV (more than "
               f"{t('calibration_shift_warn'):g}): check the reference channel and the element's edge")
    return v


def judge_processing(proc: ProcessedSpectrum, *, n_glitches: int | None = None, energy_guessed: str = "",
                     thresholds: dict | None = None) -> Verdict:
    """``ok``/``warn``/``bad`` for one processed spectrum.

    n_glitches : glitches found and left in μ (None: counted from ``proc.glitch`` when deglitching ran)
    energy_guessed : how the energy column was chosen when the file did not say (empty when it did)
    thresholds : overrides of :data:`xafs_stream.engines.verdict.THRESHOLDS`
    """
    t = lambda name: threshold(name, thresholds)  # noqa: E731
    v = Verdict()
    if energy_guessed:
        v.warn(f"energy column guessed: {energy_guessed}")
    step, snr = float(proc.edge_step), proc.edge_snr
    if snr < t("edge_snr_bad"):
        v.bad(f"edge step {step:.3g} is only {snr:.1f}x its error")
    elif snr < t("edge_snr_warn"):
        v.warn(f"edge step {step:.3g} is only {snr:.1f}x its error")
    rival = e0_rival(proc, thresholds=thresholds)
    if rival is not None:
        v.warn(f"E0 {float(proc.e0):.2f} eV is uncertain: μ(E) rises as steeply at {rival.energy:.2f} eV within "
               f"the noise (slopes {rival.slope_e0:.3g} and {rival.slope:.3g} ± {rival.se:.2g} per eV)")
    used = proc.pre.params_used
    e = np.asarray(proc.energy, float) - float(proc.e0)
    n_post = int(np.count_nonzero((e >= float(used["norm1"])) & (e <= float(used["norm2"]))))
    if n_post < t("min_post_edge_points"):
        v.bad(f"{n_post} post-edge point(s) for the normalisation (fewer than {t('min_post_edge_points'):g})")
    if n_glitches is None and proc.glitch is not None:
        n_glitches = 0  # deglitching replaced them
    if n_glitches:
        if n_glitches >= t("glitches_bad"):
            v.bad(f"{n_glitches} glitches left in μ(E)")
        elif n_glitches >= t("glitches_warn"):
            v.warn(f"{n_glitches} glitch(es) left in μ(E)")
    if proc.has_exafs:
        _judge_k_range(v, proc, t)
    return v


def _judge_k_range(v: Verdict, proc, t) -> None:
    dk = float(proc.kmax) - float(proc.kmin)
    if dk < t("k_range_bad"):
        v.bad(f"FT k range {proc.kmin:g}-{proc.kmax:g} Å⁻¹ is only {dk:.1f} Å⁻¹ long")
    elif dk < t("k_range_warn"):
        v.warn(f"FT k range {proc.kmin:g}-{proc.kmax:g} Å⁻¹ is shorter than {t('k_range_warn'):g} Å⁻¹")


def judge_chi(proc, *, thresholds: dict | None = None) -> Verdict:
    """``ok``/``warn``/``bad`` for a χ(k) input (:class:`~.process.ProcessedChi`): its FT k range."""
    v = Verdict()
    _judge_k_range(v, proc, lambda name: threshold(name, thresholds))
    return v
