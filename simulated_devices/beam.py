"""Beam physics and injectable faults of the simulated beamline (numpy only, no ophyd).

Counts follow ion-chamber physics: the incident flux Φ(E) (photons/s) through a dwell time t gives
I0 ∝ Φ t, It ∝ Φ t exp(-μt_sample(E)), Iref ∝ It exp(-μt_foil(E)), If ∝ Φ t μt_edge(E); each with Poisson
noise, a gain (counts per detected photon) and a dark current (counts/s).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .samples import SampleModel


@dataclass
class Faults:
    """Faults to inject; all off by default. Switch them per run with :meth:`BeamModel.set_faults`.

    Attributes
    ----------
    beam_dump_after_points : the beam dumps at this detector trigger (counted from when faults were set)
    beam_dump_points : and stays down for this many triggers (I0 → ~0)
    glitch_energies_ev : monochromator glitches: It drops by ``glitch_depth`` within ``glitch_width_ev``
        of these energies while I0 does not see it (spikes in μ at fixed energies)
    saturation_rate_cps : detectors saturate at this count rate (counts/s): readings are clipped
    mono_stuck_above_ev : the monochromator fails to reach any energy above this (move raises)
    """

    beam_dump_after_points: int | None = None
    beam_dump_points: int = 0
    glitch_energies_ev: tuple[float, ...] = ()
    glitch_depth: float = 0.3
    glitch_width_ev: float = 1.0
    saturation_rate_cps: float | None = None
    mono_stuck_above_ev: float | None = None

    def active(self) -> dict:
        """The switched-on faults as a flat dict (for metadata)."""
        on = {}
        if self.beam_dump_after_points is not None and self.beam_dump_points > 0:
            on["beam_dump_after_points"] = self.beam_dump_after_points
            on["beam_dump_points"] = self.beam_dump_points
        if self.glitch_energies_ev:
            on["glitch_energies_ev"] = list(self.glitch_energies_ev)
            on["glitch_depth"] = self.glitch_depth
        if self.saturation_rate_cps is not None:
            on["saturation_rate_cps"] = self.saturation_rate_cps
        if self.mono_stuck_above_ev is not None:
            on["mono_stuck_above_ev"] = self.mono_stuck_above_ev
        return on


@dataclass
class BeamModel:
    """The shared state of the simulated beam: flux, sample, reference foil, faults, noise.

    Attributes
    ----------
    sample : what sits in the beam (None: empty beam)
    reference : metal foil after the sample for calibration (None: no foil)
    flux_cps : incident photons/s at the sample
    map_flux_cps : incident photons/s over the map detector's field of view
    i0_efficiency, it_efficiency : fraction of photons each ion chamber detects
    gain : counts per detected photon
    dark_cps : dark current, counts/s
    fluor_efficiency : detected fluorescence photons per absorbed photon of the edge
    rng : random generator (Poisson noise); pass a seeded one for reproducible runs
    """

    sample: SampleModel | None = None
    reference: SampleModel | None = None
    flux_cps: float = 1.0e9
    map_flux_cps: float = 1.0e9
    i0_efficiency: float = 0.1
    it_efficiency: float = 0.3
    gain: float = 1.0
    dark_cps: float = 200.0
    fluor_efficiency: float = 0.002
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    faults: Faults = field(default_factory=Faults)
    triggers: int = 0

    def set_faults(self, faults: Faults | None = None, **kwargs) -> None:
        """Switch faults for the next run(s): a :class:`Faults` or its fields; no arguments clears all."""
        self.faults = faults if faults is not None else Faults(**kwargs)
        self.triggers = 0

    def flux_factor(self) -> float:
        """Beam-dump factor of the current trigger (advances the trigger counter)."""
        n = self.triggers
        self.triggers += 1
        f = self.faults
        if f.beam_dump_after_points is not None and f.beam_dump_after_points <= n < (
            f.beam_dump_after_points + f.beam_dump_points
        ):
            return 1e-4
        return 1.0

    def glitch_factor(self, energy_ev: float) -> float:
        f = self.faults
        for eg in f.glitch_energies_ev:
            if abs(energy_ev - eg) <= f.glitch_width_ev / 2:
                return 1.0 - f.glitch_depth
        return 1.0

    def _count(self, photons: np.ndarray | float, dwell_s: float) -> np.ndarray:
        """Detected photons → counts with Poisson noise, gain, dark current and saturation."""
        lam = np.clip(np.asarray(photons, float), 0.0, None)
        counts = np.asarray(self.rng.poisson(lam), float) * self.gain + self.dark_cps * dwell_s
        if self.faults.saturation_rate_cps is not None:
            counts = np.minimum(counts, self.faults.saturation_rate_cps * dwell_s)
        return counts

    def ion_chambers(self, energy_ev: float, dwell_s: float) -> dict[str, float]:
        """One reading of I0, It, Iref, If (counts) at the true photon energy ``energy_ev`` (eV)."""
        phi = self.flux_cps * dwell_s * self.flux_factor()
        mut = float(self.sample.mu_t(energy_ev)) if self.sample is not None else 0.0
        mut_ref = float(self.reference.mu_t(energy_ev)) if self.reference is not None else 0.0
        transmitted = phi * np.exp(-mut) * self.glitch_factor(energy_ev)
        edge = float(self.sample.edge_part(energy_ev)) if self.sample is not None else 0.0
        return {
            "i0": float(self._count(phi * self.i0_efficiency, dwell_s)),
            "it": float(self._count(transmitted * self.it_efficiency, dwell_s)),
            "iref": float(self._count(transmitted * np.exp(-mut_ref) * self.it_efficiency, dwell_s)),
            "ifluor": float(self._count(phi * edge * self.fluor_efficiency, dwell_s)),
        }

    def transmission_image(self, mut: np.ndarray, energy_ev: float, dwell_s: float) -> tuple[np.ndarray, float]:
        """Per-pixel transmitted counts for a μt map and the I0 reading (counts) of the same exposure."""
        phi = self.map_flux_cps * dwell_s * self.flux_factor()
        per_pixel = phi / mut.size
        image = self._count(per_pixel * np.exp(-mut) * self.glitch_factor(energy_ev) * self.it_efficiency, dwell_s)
        i0 = float(self._count(phi * self.i0_efficiency, dwell_s))
        return image, i0

    def describe(self) -> dict:
        """Flat JSON-able description (for configuration metadata)."""
        return {
            "sample": self.sample.name if self.sample else "none",
            "reference": self.reference.name if self.reference else "none",
            "flux_cps": self.flux_cps,
            "faults": asdict(self.faults) | {"active": sorted(self.faults.active())},
        }
