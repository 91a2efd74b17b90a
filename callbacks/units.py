"""Document consumers that assemble work units from bluesky runs and hand them to a sink.

- :class:`SpectrumUnitBuilder` (runs with ``xafs_kind == "spectrum"``, from ``xafs_scan``): one unit per
  repeat as soon as its last point arrives, and a ``"merge"`` unit with all repeats when the run stops.
- :class:`MapTileBuilder` (runs with ``xafs_kind == "map"``, from ``mu_xafs_map``): one unit per tile when
  its full energy stack is in. In ``tile-outer`` order that is after the tile's last energy; in
  ``energy-outer`` order per-energy planes accumulate and every tile completes with the last energy.

The sink is any callable taking a :class:`~xafs_stream.core.UnitEnvelope` (e.g.
``UnitPublisher.submit``); these callbacks know nothing of sockets or workers. Documents of other runs
and other streams are ignored. A malformed run (missing metadata keys) is logged and skipped, never
stopping the scan; errors of the sink propagate (a unit that cannot be queued must not vanish silently).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core import SPECTRUM, TILE, UnitEnvelope, WorkUnit

log = logging.getLogger(__name__)

Sink = Callable[[UnitEnvelope], Any]
#: ``announce(run_uid, kind, affinity, run_metadata)``: a run of this builder's kind started
Announce = Callable[[str, str, str, dict], Any]
RUN_CONTEXT_KEYS = ("sample", "element", "edge", "e0", "mode", "plan_name", "scan_id", "xafs_kind", "repeats",
                    "feff_paths")


def _context(start: dict) -> dict:
    return {k: start[k] for k in RUN_CONTEXT_KEYS if k in start}


class _UnitBuilder:
    """Shared document routing: one state object per run of the builder's ``xafs_kind``, primary stream only.

    Subclasses implement ``_new_run(start) -> state | None`` and ``_on_event(state, doc)``,
    ``_on_stop(state, stop_doc)``; states carry ``start`` and ``descriptors``.
    """

    kind = ""  # unit kind this builder makes

    def __init__(self, sink: Sink, announce: Announce | None = None):
        self.sink = sink
        self.announce = announce
        self._runs: dict[str, Any] = {}
        self._desc_run: dict[str, str] = {}
        self.units_emitted = 0

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            state = self._new_run(doc)
            if state is not None:
                self._runs[doc["uid"]] = state
                self._announce(doc)
        elif name == "descriptor":
            state = self._runs.get(doc.get("run_start"))
            if state is not None and doc.get("name") == "primary":
                state.descriptors.add(doc["uid"])
                self._desc_run[doc["uid"]] = doc["run_start"]
        elif name == "event":
            self._event(doc)
        elif name == "event_page":
            from event_model import unpack_event_page

            for event in unpack_event_page(doc):
                self._event(event)
        elif name == "stop":
            state = self._runs.pop(doc.get("run_start"), None)
            if state is not None:
                self._on_stop(state, doc)
                for desc in state.descriptors:
                    self._desc_run.pop(desc, None)

    def _announce(self, start: dict) -> None:
        """Best-effort run-start hint (the run's worker prepares its result nodes); never stops the scan."""
        if self.announce is None:
            return
        try:
            self.announce(start["uid"], self.kind, self.affinity(start["uid"]), self._run_metadata(start))
        except Exception as exc:  # a hint only: the units themselves carry everything
            log.warning("run %s: run-start hint not sent: %s", start.get("uid"), exc)

    def affinity(self, run_uid: str) -> str:
        """Units with the same key go to one worker (the run's result nodes stay cached there)."""
        return f"run:{run_uid}"

    def _run_metadata(self, start: dict) -> dict:
        return _context(start)

    def _event(self, doc: dict) -> None:
        run_uid = self._desc_run.get(doc.get("descriptor"))
        state = self._runs.get(run_uid) if run_uid else None
        if state is not None:
            self._on_event(state, doc)

    def _drop(self, run_uid: str) -> None:
        """Stop building units for a run (after logging why)."""
        state = self._runs.pop(run_uid, None)
        for desc in getattr(state, "descriptors", ()):
            self._desc_run.pop(desc, None)

    def _new_run(self, start: dict) -> Any:
        raise NotImplementedError

    def _on_event(self, state: Any, doc: dict) -> None:
        raise NotImplementedError

    def _on_stop(self, state: Any, stop: dict) -> None:
        raise NotImplementedError


@dataclass
class _SpectrumRun:
    start: dict
    energy_key: str
    channels: dict[str, str]
    n_points: int
    repeats: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    emitted: set[int] = field(default_factory=set)
    last_time: dict[int, float] = field(default_factory=dict)
    descriptors: set[str] = field(default_factory=set)


def _by_energy(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Channel arrays in increasing energy, points measured more than once at one energy (an adaptive scan
    revisits energies) combined by summing their counts (for Poisson counts the same as one longer count).
    A monotonic scan without repeated energies is returned as it is."""
    energy = arrays["energy"]
    if energy.size < 2 or np.all(np.diff(energy) > 1e-6):
        return arrays
    # one energy: readbacks within 1e-6 eV (a monochromator's readback of one setpoint jitters in the last bits)
    unique, inverse, counts = np.unique(np.round(energy, 6), return_inverse=True, return_counts=True)
    out = {"energy": np.bincount(inverse, weights=energy, minlength=unique.size) / counts}
    for name, values in arrays.items():
        if name != "energy":
            out[name] = np.bincount(inverse, weights=values, minlength=unique.size)
    return out


class SpectrumUnitBuilder(_UnitBuilder):
    """Assemble spectrum units (each repeat, then the merge) from an XAFS scan's documents."""

    kind = SPECTRUM

    def _new_run(self, doc: dict) -> _SpectrumRun | None:
        if doc.get("xafs_kind") != "spectrum":
            return None
        try:
            channels = dict(doc["channels"])
            run = _SpectrumRun(start=doc, energy_key=doc["energy_key"], channels=channels,
                               n_points=int(doc["n_points"]))
        except (KeyError, TypeError, ValueError) as exc:
            log.error("run %s: cannot build spectrum units, start document lacks %s", doc.get("uid"), exc)
            return None
        if "i0" not in channels or not ({"it", "ifluor"} & set(channels)):
            log.error("run %s: no i0 and it/ifluor channels in %s; no spectrum units", doc["uid"], channels)
            return None
        return run

    def _on_event(self, run: _SpectrumRun, doc: dict) -> None:
        run_uid = run.start["uid"]
        data = doc["data"]
        rep = int(data.get("repeat", 0))
        buf = run.repeats.setdefault(rep, {})
        try:
            buf.setdefault("energy", []).append(float(data[run.energy_key]))
            for channel, key in run.channels.items():
                buf.setdefault(channel, []).append(float(data[key]))
        except KeyError as exc:
            log.error("run %s: event lacks %s; spectrum units for this run stop", run_uid, exc)
            self._drop(run_uid)
            return
        run.last_time[rep] = float(doc.get("time", time.time()))
        for earlier in [r for r in run.repeats if r < rep and r not in run.emitted]:
            self._emit_repeat(run, earlier, complete=False)
        if len(buf["energy"]) >= run.n_points and rep not in run.emitted:
            self._emit_repeat(run, rep, complete=True)

    def _on_stop(self, run: _SpectrumRun, doc: dict) -> None:
        adaptive = "adaptive_target" in run.start  # its number of points is decided as it goes
        for rep in sorted(run.repeats):
            if rep not in run.emitted:
                complete = (doc.get("exit_status") == "success" if adaptive
                            else len(run.repeats[rep]["energy"]) >= run.n_points)
                self._emit_repeat(run, rep, complete=complete)
        if run.repeats:
            self._emit_merge(run, doc)

    def _arrays(self, run: _SpectrumRun, buf: dict[str, list[float]]) -> dict[str, np.ndarray]:
        arrays = _by_energy({k: np.asarray(v, dtype=float) for k, v in buf.items()})
        mode = run.start.get("mode", "transmission")
        with np.errstate(divide="ignore", invalid="ignore"):
            if mode == "fluorescence" and "ifluor" in arrays:
                arrays["mu"] = arrays["ifluor"] / arrays["i0"]
            else:
                arrays["mu"] = np.log(arrays["i0"] / arrays["it"])
        return arrays

    def _emit_repeat(self, run: _SpectrumRun, rep: int, *, complete: bool) -> None:
        run.emitted.add(rep)
        arrays = self._arrays(run, run.repeats[rep])
        metadata = {**_context(run.start), "repeat": rep, "complete": complete, "n_points": len(arrays["energy"]),
                    "n_points_expected": run.n_points, "t_complete": run.last_time.get(rep, time.time())}
        self._submit(WorkUnit(run.start["uid"], SPECTRUM, rep, arrays, metadata))

    def _emit_merge(self, run: _SpectrumRun, stop: dict) -> None:
        reps = sorted(run.repeats)
        per = [self._arrays(run, run.repeats[r]) for r in reps]
        width = max(len(p["energy"]) for p in per)
        arrays: dict[str, np.ndarray] = {}
        for name in per[0]:
            block = np.full((len(per), width), np.nan)
            for i, p in enumerate(per):
                block[i, : len(p[name])] = p[name]
            arrays[f"{name}_repeats"] = block
        metadata = {**_context(run.start), "repeats_merged": reps, "exit_status": stop.get("exit_status"),
                    "n_points_expected": run.n_points, "t_complete": float(stop.get("time", time.time()))}
        self._submit(WorkUnit(run.start["uid"], SPECTRUM, "merge", arrays, metadata))

    def _submit(self, unit: WorkUnit) -> None:
        # one worker per run while it lives: its result-node cache is warm for the later repeats and the
        # merge (measured: a cold worker pays ~100-150 ms of extra Tiled round trips per unit)
        self.sink(UnitEnvelope(unit=unit, affinity=self.affinity(unit.run_uid)))
        self.units_emitted += 1


@dataclass
class _MapRun:
    start: dict
    energies: np.ndarray
    tile_shape: tuple[int, int]
    n_tile_cols: int
    image_key: str
    i0_key: str
    stacks: dict[int, np.ndarray] = field(default_factory=dict)  # tile -> (n_e, th, tw) OD
    filled: dict[int, np.ndarray] = field(default_factory=dict)  # tile -> (n_e,) bool
    i0: dict[int, np.ndarray] = field(default_factory=dict)
    emitted: set[int] = field(default_factory=set)
    descriptors: set[str] = field(default_factory=set)


class MapTileBuilder(_UnitBuilder):
    """Assemble tile units (a tile's full energy stack, optical density ln(I0/I)) from a μ-XAFS map run."""

    kind = TILE

    def affinity(self, run_uid: str) -> str:
        return f"map:{run_uid}"  # one owner per map (the map model lives in its memory)

    def _run_metadata(self, start: dict) -> dict:
        return {**_context(start), **{k: start[k] for k in ("map_ny", "map_nx", "n_tiles", "order") if k in start}}

    def _new_run(self, doc: dict) -> _MapRun | None:
        if doc.get("xafs_kind") != "map":
            return None
        try:
            return _MapRun(start=doc, energies=np.asarray(doc["energies"], float),
                          tile_shape=(int(doc["tile_ny"]), int(doc["tile_nx"])), n_tile_cols=int(doc["n_tile_cols"]),
                          image_key=doc["image_key"], i0_key=doc["i0_key"])
        except (KeyError, TypeError, ValueError) as exc:
            log.error("run %s: cannot build tile units, start document lacks %s", doc.get("uid"), exc)
            return None

    def _on_event(self, run: _MapRun, doc: dict) -> None:
        run_uid = run.start["uid"]
        data = doc["data"]
        try:
            tile = int(data["tile_index"])
            e_idx = int(data["energy_index"])
            image = np.asarray(data[run.image_key], dtype=float)
            i0 = float(data[run.i0_key])
        except (KeyError, TypeError, ValueError) as exc:
            log.error("run %s: map event lacks %s; skipped", run_uid, exc)
            return
        n_e = len(run.energies)
        if image.shape != run.tile_shape or not 0 <= e_idx < n_e:
            log.error("run %s: event image %s / energy index %d do not fit the map", run_uid, image.shape, e_idx)
            return
        if tile not in run.stacks:
            run.stacks[tile] = np.full((n_e, *run.tile_shape), np.nan, dtype=np.float32)
            run.filled[tile] = np.zeros(n_e, bool)
            run.i0[tile] = np.full(n_e, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            run.stacks[tile][e_idx] = np.log(i0 / image)
        run.i0[tile][e_idx] = i0
        run.filled[tile][e_idx] = True
        if run.filled[tile].all() and tile not in run.emitted:
            self._emit(run, tile, float(doc.get("time", time.time())), complete=True)

    def _on_stop(self, run: _MapRun, doc: dict) -> None:
        for tile in sorted(run.stacks):
            if tile not in run.emitted:
                self._emit(run, tile, float(doc.get("time", time.time())), complete=False)

    def _emit(self, run: _MapRun, tile: int, t_complete: float, *, complete: bool) -> None:
        run.emitted.add(tile)
        th, tw = run.tile_shape
        row, col = divmod(tile, run.n_tile_cols)
        start = run.start
        metadata = {**_context(start), "tile_row": row, "tile_col": col, "y0": row * th, "x0": col * tw,
                    "map_ny": int(start["map_ny"]), "map_nx": int(start["map_nx"]), "n_tiles": int(start["n_tiles"]),
                    "order": start.get("order"), "complete": complete, "t_complete": t_complete}
        arrays = {"energy": run.energies.copy(), "stack": run.stacks.pop(tile), "i0": run.i0.pop(tile)}
        run.filled.pop(tile, None)
        unit = WorkUnit(start["uid"], TILE, tile, arrays, metadata)
        self.sink(UnitEnvelope(unit=unit, affinity=self.affinity(start["uid"])))
        self.units_emitted += 1
