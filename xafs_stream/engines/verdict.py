"""How good is a result: a verdict (``ok``, ``warn`` or ``bad``) with short reasons, and the thresholds.

Every analysis judges its own result with the functions here; the thresholds live in :data:`THRESHOLDS`
(one place, each with its rationale) and can be overridden per call. ``warn`` means "usable, look first";
``bad`` means "do not act on this number". A result is never shown as fine when its own diagnostics say
otherwise.

Rationale of the thresholds (conventions of IFEFFIT/larch and of MCMC practice where they exist):

- ``edge_snr_warn`` 10, ``edge_snr_bad`` 3: edge step over the post-edge noise. Below 3 the edge is not
  significant (the same bound as the imaging engine's ``min_edge_snr``); below 10 E0 and the normalisation
  carry visible noise.
- ``e0_rival_separation`` 3 eV, ``e0_slope_half_width`` 1 eV, ``e0_rival_z`` 2: E0 (the steepest point,
  IFEFFIT/larch convention) is ``warn`` when, at least 3 eV away in the XANES region, μ(E) rises as
  steeply (least-squares slope over ±1 eV) within 2 standard errors of the difference: noise then decides
  which rise is E0. On the packaged Fe foil simulated with noise 0.005-0.01 of the edge step every scan
  whose E0 jumped to the main rise (7121 vs 7112 eV) was flagged (43 of 43 in 200 scans); none of the five
  packaged measured spectra is.
- ``calibration_shift_warn`` 5 eV: a reference-foil calibration that moves the energy by more than this
  is ``warn``: a calibrated monochromator is off by a few eV at most, so a larger shift usually means the
  reference's E0 was found on the wrong feature (or the wrong edge was named). The same rival-rise test as
  for E0 is run on the reference foil.
- ``min_post_edge_points`` 10: the post-edge line/quadratic of the normalisation needs a handful of points
  per parameter; fewer and the edge step is an extrapolation.
- ``glitch_size`` 0.01: a glitch counts when it leaves μ(E) by more than 1 % of the edge step (smaller
  spikes are at the noise level of normalised transmission data and change χ(k) less than its noise at
  high k); ``glitches_warn`` 1: any such glitch left in μ(E) is worth a look; ``glitches_bad`` 4 (the
  quality analysis calls more than 3 beyond repair).
- ``k_range_warn`` 6 Å⁻¹: an EXAFS k range shorter than ~6 Å⁻¹ separates neither σ² from N nor shells
  closer than π/(2Δk) (≈ 0.26 Å); ``k_range_bad`` 3 Å⁻¹ (shorter than one oscillation of a first shell).
- ``r_factor_warn`` 0.02, ``r_factor_bad`` 0.05: IFEFFIT/larch's R-factor (fractional misfit); feffit
  documents "R < 0.02 is a good fit" and fits above 0.05 are not publishable.
- ``idp_margin`` 1: the Nyquist criterion N_idp = 2ΔkΔR/π + 1 must exceed the number of varied
  parameters; at fewer than ``idp_margin`` spare points the fit is ``warn``, at none ``bad``.
- ``rel_err_warn`` 0.5: a coordination number whose standard error exceeds half its value is not
  determined (the issue's N = 13.4 ± 11.3 case); ``rel_err_bad`` 1.0.
- ``missing_pair_peak`` 0.3: a pair of the path set whose first shell lies in the fit's range, where the
  data's |χ(R)| reaches at least 30 % of its maximum in the fit range, must be in the result; if it is
  not, the fit lost a shell the data show (FeO fitted over R 1-3 Å lost its Fe-O shell, R-factor 0.45).
- ``rhat_warn`` 1.05, ``rhat_bad`` 1.2: Gelman-Rubin R-hat (Vehtari et al. 2021 recommend < 1.01 for
  final numbers; 1.05 is the common live threshold, above 1.2 chains disagree outright).
- ``exchange_min`` 0.05: a replica-exchange ladder with an adjacent-pair swap rate below ~5 % is broken
  (samples do not pass between temperatures; Hukushima & Nemoto 1996 aim at 20-50 %).
- ``undecided_se`` 2: two model sizes whose free energies are closer than twice the standard error of
  their difference are not distinguished by the data.
- ``adaptive_misfit_p`` 0.01: an adaptive scan's local polynomial (E0 cubic, white-line quartic) whose χ²
  exceeds its 99 % quantile for the window's degrees of freedom does not follow the data: ``warn``, since
  its value can then be biased by more than its (misfit-scaled) sd.
- ``pixels_without_edge_warn`` 0.05, ``..._bad`` 0.5: share of map pixels without a significant edge.
- ``lcf_residual_warn`` 0.05, ``lcf_residual_bad`` 0.15: RMS residual of a linear combination fit in
  units of the normalised edge step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

LEVELS = ("ok", "warn", "bad")

THRESHOLDS: dict[str, float] = {
    "edge_snr_warn": 10.0,
    "edge_snr_bad": 3.0,
    "e0_rival_separation": 3.0,  # eV
    "e0_slope_half_width": 1.0,  # eV
    "e0_rival_z": 2.0,
    "calibration_shift_warn": 5.0,  # eV
    "min_post_edge_points": 10,
    "glitch_size": 0.01,
    "glitches_warn": 1,
    "glitches_bad": 4,
    "k_range_warn": 6.0,  # Å⁻¹
    "k_range_bad": 3.0,  # Å⁻¹
    "r_factor_warn": 0.02,
    "r_factor_bad": 0.05,
    "idp_margin": 1.0,
    "rel_err_warn": 0.5,
    "rel_err_bad": 1.0,
    "missing_pair_peak": 0.3,
    "rhat_warn": 1.05,
    "rhat_bad": 1.2,
    "exchange_min": 0.05,
    "undecided_se": 2.0,
    "adaptive_misfit_p": 0.01,
    "pixels_without_edge_warn": 0.05,
    "pixels_without_edge_bad": 0.5,
    "lcf_residual_warn": 0.05,
    "lcf_residual_bad": 0.15,
}


@dataclass
class Verdict:
    """A level (``ok`` < ``warn`` < ``bad``) and the reasons for it (short, human-readable)."""

    level: str = "ok"
    reasons: list[str] = field(default_factory=list)

    def warn(self, reason: str) -> "Verdict":
        """Add a reason that makes the result at least ``warn``."""
        return self._add("warn", reason)

    def bad(self, reason: str) -> "Verdict":
        """Add a reason that makes the result ``bad``."""
        return self._add("bad", reason)

    def _add(self, level: str, reason: str) -> "Verdict":
        if LEVELS.index(level) > LEVELS.index(self.level):
            self.level = level
        self.reasons.append(reason)
        return self

    def merge(self, other: "Verdict", prefix: str = "") -> "Verdict":
        """Take ``other``'s reasons (each prefixed) and the worse of the two levels."""
        for reason in other.reasons:
            self.reasons.append(f"{prefix}{reason}")
        if LEVELS.index(other.level) > LEVELS.index(self.level):
            self.level = other.level
        return self

    def line(self) -> str:
        """``quality: warn (k range 4.5 Å⁻¹ < 6)``: the line every CLI analysis prints."""
        return quality_line(self.level, self.reasons)


def quality_line(level: str, reasons: Iterable[str] = ()) -> str:
    """``quality: <ok|warn|bad> (<reasons>)`` (``not judged`` for an analysis that gives no verdict)."""
    reasons = list(reasons)
    return f"quality: {level or 'not judged'}" + (f" ({'; '.join(reasons)})" if reasons else "")


def threshold(name: str, overrides: dict | None = None) -> float:
    """A threshold by name, ``overrides`` first (KeyError for an unknown name)."""
    if overrides and name in overrides:
        return float(overrides[name])
    return float(THRESHOLDS[name])


def worst(levels: Iterable[str]) -> str:
    """The worst of some levels (``ok`` for none)."""
    return max(levels, key=LEVELS.index, default="ok")
