"""ophyd devices of the simulated beamline: monochromator, ion-chamber scaler, sample stage, map detector.

They mirror real device signatures (a positioner with ``set``/``position``/``limits``, a scaler with a
preset time and channels, an area detector with an ``image``); the physics is injected as a
:class:`~xafs_stream.simulated_devices.beam.BeamModel` so a new sample needs no new class.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.sim import SynAxis
from ophyd.status import DeviceStatus, MoveStatus, StatusBase
from ophyd.utils import LimitError

from .beam import BeamModel
from .phantom import Phantom


class MonoFailedToReachPosition(RuntimeError):
    """The monochromator did not reach its target energy."""


class _FailedMoveStatus(MoveStatus):
    """A move status whose text carries the failure, so the run's stop reason says what happened."""

    def __repr__(self) -> str:
        exc = self.exception(timeout=0) if self.done else None
        return f"{super().__repr__()}: {exc}" if exc else super().__repr__()

    __str__ = __repr__


class SimDCM(SynAxis):
    """Double-crystal monochromator energy positioner, eV.

    Parameters
    ----------
    beam : the beam model (its faults can make moves fail)
    limits : (low, high) energy range in eV; moves outside raise :class:`ophyd.utils.LimitError`
    settle_time_s : wait after each move (0 in tests)
    backlash_ev : mechanical backlash; moves approaching from above overshoot and come back
        (so no position error remains), which costs a second settle
    energy_offset_ev : miscalibration: the true photon energy is readback + offset
    """

    d_spacing = Cpt(Signal, value=3.13553, kind="config")  # Si(111), Å
    settle_time = Cpt(Signal, value=0.0, kind="config")
    backlash = Cpt(Signal, value=0.0, kind="config")
    energy_offset = Cpt(Signal, value=0.0, kind="config")

    def __init__(
        self,
        *,
        name: str = "dcm",
        beam: BeamModel,
        limits: tuple[float, float] = (4000.0, 25000.0),
        settle_time_s: float = 0.0,
        backlash_ev: float = 0.0,
        energy_offset_ev: float = 0.0,
        value: float = 8000.0,
        **kwargs,
    ):
        super().__init__(name=name, value=value, delay=0, egu="eV", **kwargs)
        self.beam = beam
        self._limits = (float(limits[0]), float(limits[1]))
        self.settle_time.put(float(settle_time_s))
        self.backlash.put(float(backlash_ev))
        self.energy_offset.put(float(energy_offset_ev))
        self.moves = 0

    @property
    def limits(self) -> tuple[float, float]:
        return self._limits

    @property
    def true_energy(self) -> float:
        """Photon energy actually delivered, eV (readback + miscalibration)."""
        return float(self.readback.get()) + float(self.energy_offset.get())

    def set(self, value: float) -> StatusBase:
        value = float(value)
        low, high = self._limits
        if not low <= value <= high:
            raise LimitError(f"{self.name}: {value:.2f} eV outside the monochromator range {low:.0f}-{high:.0f} eV")
        stuck = self.beam.faults.mono_stuck_above_ev
        if stuck is not None and value > stuck:
            status = _FailedMoveStatus(positioner=self, target=value)
            status.set_exception(
                MonoFailedToReachPosition(
                    f"{self.name}: failed to reach {value:.2f} eV (stuck at {self.position:.2f} eV)"
                )
            )
            return status
        previous = float(self.sim_state["setpoint"])
        settle = float(self.settle_time.get())
        backlash = float(self.backlash.get())
        if backlash and value < previous:
            settle *= 2  # overshoot below, come back up: the extra leg costs another settle
        self.delay = settle
        self.moves += 1
        return super().set(value)


class SimScaler(Device):
    """Ion-chamber scaler: counts I0, It, Iref (reference foil) and If for ``preset_time`` seconds.

    Real time is not spent unless ``time_scale`` > 0 (seconds of wall time per second of preset time).
    """

    preset_time = Cpt(Signal, value=1.0, kind="config")
    i0 = Cpt(Signal, value=0.0, kind="hinted")
    it = Cpt(Signal, value=0.0, kind="hinted")
    iref = Cpt(Signal, value=0.0, kind="normal")
    ifluor = Cpt(Signal, value=0.0, kind="normal")
    clock = Cpt(Signal, value=0.0, kind="normal")  # the count time actually used, s (a scaler's clock channel)

    def __init__(self, *, name: str = "scaler", mono: SimDCM, beam: BeamModel, time_scale: float = 0.0, **kwargs):
        super().__init__(name=name, **kwargs)
        self.mono = mono
        self.beam = beam
        self.time_scale = float(time_scale)
        for sig in (self.i0, self.it, self.iref, self.ifluor):
            sig.metadata["units"] = "counts"

    def trigger(self) -> StatusBase:
        dwell = float(self.preset_time.get())
        if not dwell > 0:
            raise ValueError(f"{self.name}: preset_time must be > 0 s, got {dwell}")
        reading = self.beam.ion_chambers(self.mono.true_energy, dwell)
        now = time.time()
        for key, value in reading.items():
            getattr(self, key).put(value, timestamp=now)
        self.clock.put(dwell, timestamp=now)
        return _finish_after(self, dwell * self.time_scale)


class SimStage(Device):
    """x/y sample stage in μm."""

    x = Cpt(SynAxis, egu="um", kind="hinted")
    y = Cpt(SynAxis, egu="um", kind="hinted")


class SimMapDetector(Device):
    """Area detector for μ-XANES: a transmission image of the field of view at the stage position.

    The field of view is one tile of ``tile_shape`` pixels of the phantom; the stage position (μm) over
    ``pixel_size_um`` gives the tile's top-left pixel. ``image`` holds transmitted counts per pixel and
    ``i0`` the incident counts of the same exposure.
    """

    preset_time = Cpt(Signal, value=0.1, kind="config")
    pixel_size = Cpt(Signal, value=1.0, kind="config")
    image = Cpt(Signal, value=np.zeros((1, 1)), kind="normal")
    i0 = Cpt(Signal, value=0.0, kind="hinted")

    def __init__(
        self,
        *,
        name: str = "mapdet",
        mono: SimDCM,
        stage: SimStage,
        beam: BeamModel,
        phantom: Phantom,
        tile_shape: tuple[int, int] = (16, 16),
        pixel_size_um: float = 1.0,
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.mono, self.sample_stage, self.beam, self.phantom = mono, stage, beam, phantom
        self.tile_shape = (int(tile_shape[0]), int(tile_shape[1]))
        self.pixel_size.put(float(pixel_size_um))
        self.image.put(np.zeros(self.tile_shape))
        self.i0.metadata["units"] = "counts"

    def tile_origin(self) -> tuple[int, int]:
        """(row0, col0) pixel of the field of view at the current stage position."""
        pix = float(self.pixel_size.get())
        return int(round(self.sample_stage.y.position / pix)), int(round(self.sample_stage.x.position / pix))

    def trigger(self) -> StatusBase:
        row0, col0 = self.tile_origin()
        th, tw = self.tile_shape
        ny, nx = self.phantom.shape
        if not (0 <= row0 <= ny - th and 0 <= col0 <= nx - tw):
            raise ValueError(f"{self.name}: field of view at pixel ({row0}, {col0}) is outside the {ny}x{nx} sample")
        mut = self.phantom.absorption_at(self.mono.true_energy, slice(row0, row0 + th), slice(col0, col0 + tw))
        image, i0 = self.beam.transmission_image(mut, self.mono.true_energy, float(self.preset_time.get()))
        now = time.time()
        self.image.put(image, timestamp=now)
        self.i0.put(i0, timestamp=now)
        return _finish_after(self, 0.0)


def _finish_after(device: Device, seconds: float) -> StatusBase:
    status = DeviceStatus(device)
    if seconds <= 0:
        status.set_finished()
    else:
        threading.Timer(seconds, status.set_finished).start()
    return status
