"""``xafs_scan``: a step scan of the monochromator energy over XAFS regions, with repeats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from ophyd import Signal

from .checks import channel_keys, check_energies_in_range, lookup_e0
from .regions import PlanArgumentError, estimate_scan_time, parse_regions, point_dwells, region_energies

PLAN_VERSION = "1.0"
MODES = ("transmission", "fluorescence")


def xafs_scan(
    detectors: list,
    mono: Any,
    regions: list | None = None,
    *,
    element: str,
    edge: str = "K",
    e0: float | None = None,
    sample: str = "",
    mode: str = "transmission",
    repeats: int = 1,
    dwell_s: float = 1.0,
    kweight_dwell: float = 1.0,
    max_dwell_s: float | None = 10.0,
    per_point: Callable | None = None,
    md: dict | None = None,
):
    """Scan ``mono`` (eV) over XAFS ``regions`` around the ``element``'s ``edge``, ``repeats`` times.

    Parameters
    ----------
    detectors : readable devices; those with a ``preset_time`` component get the point's dwell (s)
    mono : energy positioner in eV (with ``limits``)
    regions : list of [start, stop, step, "E"|"k"(, dwell_s)], E in eV relative to E0, k in 1/Å
        (default: pre-edge -200..-30 step 10, XANES -30..30 step 0.5, EXAFS k 2.8..14 step 0.05)
    element, edge : absorber and edge ("Cu", "K"); E0 is looked up with xraydb unless given (eV)
    sample : sample name recorded in the metadata
    mode : "transmission" or "fluorescence"
    repeats : number of sweeps, in one run; each event carries its ``repeat`` number
    dwell_s, kweight_dwell, max_dwell_s : count time per point; k regions scale it by
        (k/k_start)^kweight_dwell, capped at max_dwell_s
    per_point : hook ``per_point(detectors, mono, energy, dwell) -> plan`` replacing the default
        move-and-read step
    md : metadata merged over the defaults (the caller's keys win)

    Every argument is checked before the first message: bad regions, unknown element, energies outside
    the monochromator range raise :class:`PlanArgumentError`.
    """
    scan = ScanSetup.build(detectors, mono, regions, element=element, edge=edge, e0=e0, sample=sample, mode=mode,
                           repeats=repeats, dwell_s=dwell_s, kweight_dwell=kweight_dwell, max_dwell_s=max_dwell_s,
                           plan_name="xafs_scan", md=md)

    @bpp.stage_decorator(detectors)
    @bpp.run_decorator(md=scan.md)
    def inner():
        for rep in range(int(repeats)):
            yield from scan.sweep(rep, per_point)

    return (yield from inner())


@dataclass
class ScanSetup:
    """Checked arguments of an XAFS scan: energy points, dwell per point, start metadata, readables."""

    detectors: list
    mono: Any
    energies: np.ndarray
    dwells: np.ndarray
    md: dict
    repeat_signal: Signal
    current_dwell: float | None = None

    @classmethod
    def build(cls, detectors: list, mono: Any, regions: list | None, *, element: str, edge: str, e0: float | None,
              sample: str, mode: str, repeats: int, dwell_s: float, kweight_dwell: float, max_dwell_s: float | None,
              plan_name: str, md: dict | None) -> "ScanSetup":
        """Check every argument (raising :class:`PlanArgumentError` before any motion) and build the setup."""
        parsed = parse_regions(regions)
        if mode not in MODES:
            raise PlanArgumentError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(repeats, (int, np.integer)) or repeats < 1:
            raise PlanArgumentError(f"repeats must be an integer >= 1, got {repeats!r}")
        if not (isinstance(dwell_s, (int, float)) and dwell_s > 0):
            raise PlanArgumentError(f"dwell_s must be > 0 s, got {dwell_s!r}")
        e0 = lookup_e0(element, edge, e0)
        energies, _ = region_energies(parsed, e0)
        check_energies_in_range(mono, energies)
        dwells = point_dwells(parsed, e0, dwell_s, kweight_dwell=kweight_dwell, max_dwell_s=max_dwell_s)
        estimate = estimate_scan_time(
            [r.as_list() for r in parsed], e0=e0, dwell_s=dwell_s, kweight_dwell=kweight_dwell,
            max_dwell_s=max_dwell_s, repeats=int(repeats),
        )
        k_regions = [r for r in parsed if r.space == "k"]
        _md = {
            "plan_name": plan_name,
            "plan_version": PLAN_VERSION,
            "xafs_kind": "spectrum",
            "detectors": [d.name for d in detectors],
            "motors": [mono.name],
            "sample": sample,
            "element": element,
            "edge": edge,
            "e0": float(e0),
            "mode": mode,
            "regions": [r.as_list() for r in parsed],
            "n_points": int(len(energies)),
            "repeats": int(repeats),
            "dwell_s": float(dwell_s),
            "kweight_dwell": float(kweight_dwell),
            "kmax": float(max(r.stop for r in k_regions)) if k_regions else 0.0,
            "emin": float(energies[0]),
            "emax": float(energies[-1]),
            "scan_time_estimate_s": round(estimate, 1),
            "energy_key": mono.name,
            "channels": channel_keys(detectors),
            "hints": {"dimensions": [([mono.name], "primary")]},
            "plan_args": {"regions": [r.as_list() for r in parsed], "element": element, "edge": edge,
                          "repeats": int(repeats), "dwell_s": float(dwell_s), "mode": mode},
        }
        _md.update(md or {})
        return cls(list(detectors), mono, energies, dwells, _md, Signal(name="repeat", value=0, kind="hinted"))

    @property
    def readables(self) -> list:
        return [*self.detectors, self.mono, self.repeat_signal]

    def sweep(self, repeat: int, per_point: Callable | None = None):
        """Plan: one pass over all energies, events tagged with ``repeat``."""
        step = per_point or _move_and_read
        timed = [d for d in self.detectors if hasattr(d, "preset_time")]
        yield from bps.mv(self.repeat_signal, repeat)
        for energy, dwell in zip(self.energies, self.dwells):
            if dwell != self.current_dwell:
                for det in timed:
                    yield from bps.mv(det.preset_time, float(dwell))
                self.current_dwell = dwell
            yield from step(self.readables, self.mono, float(energy), float(dwell))


def _move_and_read(readables: list, mono: Any, energy: float, dwell: float):
    yield from bps.mv(mono, energy)
    yield from bps.trigger_and_read(readables)
