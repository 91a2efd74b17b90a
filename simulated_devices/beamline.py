"""One factory for a matching set of simulated devices (``make_beamline``), like ophyd.sim's ``hw()``
but explicit: nothing is put in module globals and the random generator is seeded by the caller."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .beam import BeamModel, Faults
from .devices import SimDCM, SimMapDetector, SimScaler, SimStage
from .phantom import Phantom, make_phantom
from .samples import REFERENCE_FOIL, SampleModel, load_sample


@dataclass
class SimBeamline:
    """The devices of one simulated beamline and the beam model they share."""

    beam: BeamModel
    dcm: SimDCM
    scaler: SimScaler
    stage: SimStage
    mapdet: SimMapDetector
    phantom: Phantom

    def load_sample(self, name: "str | SampleModel | None", *, edge_step: float = 1.0) -> None:
        """Put a library sample, a spectrum file (its path), a :class:`SampleModel` or nothing (``None``) in
        the beam, with its element's reference foil."""
        if name is None:
            self.beam.sample = self.beam.reference = None
            return
        sample = name if isinstance(name, SampleModel) else load_sample(name, edge_step=edge_step)
        self.beam.sample = sample
        foil = REFERENCE_FOIL.get(sample.element)
        self.beam.reference = load_sample(foil, edge_step=1.0) if foil else None

    def set_faults(self, faults: Faults | None = None, **kwargs) -> None:
        """Switch faults on for the next run (no arguments: all off)."""
        self.beam.set_faults(faults, **kwargs)

    @property
    def sample_name(self) -> str | None:
        return self.beam.sample.name if self.beam.sample else None


def make_beamline(
    *,
    sample: "str | SampleModel | None" = "Cu",
    seed: int = 0,
    flux_cps: float = 1.0e9,
    settle_time_s: float = 0.0,
    backlash_ev: float = 0.0,
    energy_offset_ev: float = 0.0,
    phantom: Phantom | None = None,
    tile_shape: tuple[int, int] = (16, 16),
    map_flux_cps: float | None = None,
    time_scale: float = 0.0,
) -> SimBeamline:
    """Build the simulated beamline.

    Parameters
    ----------
    sample : in the beam for XAFS scans: a library sample ("Cu", "Fe", "Fe2O3", "FeO", "ZnSe"), the path of
        any μ(E) file that names its element (XDI), a :class:`~.samples.SampleModel`, or None
    seed : seeds every random process (Poisson noise, phantom)
    flux_cps : incident photons/s
    settle_time_s, backlash_ev, energy_offset_ev : monochromator settings (see :class:`SimDCM`)
    phantom : μ-XANES sample for maps (default: a 64x64, 3-phase phantom from ``seed``)
    tile_shape : map detector field of view, pixels
    map_flux_cps : incident flux for map exposures (default ``flux_cps``); lower it for noisier maps
    time_scale : wall seconds spent per second of counting (0: instant, for tests and the demo)
    """
    beam = BeamModel(flux_cps=flux_cps, map_flux_cps=map_flux_cps or flux_cps, rng=np.random.default_rng(seed))
    dcm = SimDCM(name="dcm", beam=beam, settle_time_s=settle_time_s, backlash_ev=backlash_ev,
                 energy_offset_ev=energy_offset_ev)
    scaler = SimScaler(name="scaler", mono=dcm, beam=beam, time_scale=time_scale)
    stage = SimStage(name="stage")
    phantom = phantom if phantom is not None else make_phantom((64, 64), seed=seed)
    mapdet = SimMapDetector(name="mapdet", mono=dcm, stage=stage, beam=beam, phantom=phantom,
                            tile_shape=tile_shape)
    bl = SimBeamline(beam=beam, dcm=dcm, scaler=scaler, stage=stage, mapdet=mapdet, phantom=phantom)
    bl.load_sample(sample)
    return bl

