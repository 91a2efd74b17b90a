"""``mu_xafs_map``: a μ-XANES map as energies × a grid of x/y tiles, in one run."""

from __future__ import annotations

from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from ophyd import Signal

from .checks import check_energies_in_range, lookup_e0
from .regions import PlanArgumentError

PLAN_VERSION = "1.0"
ORDERS = ("tile-outer", "energy-outer")


def mu_xafs_map(
    detector: Any,
    mono: Any,
    stage: Any,
    energies: list,
    *,
    n_tile_rows: int,
    n_tile_cols: int,
    element: str,
    edge: str = "K",
    e0: float | None = None,
    sample: str = "",
    order: str = "tile-outer",
    origin_um: tuple | list = (0.0, 0.0),
    dwell_s: float | None = None,
    md: dict | None = None,
):
    """Record a μ-XANES map: each tile of the grid imaged at every energy (eV).

    Parameters
    ----------
    detector : area detector with ``image``, ``i0``, ``tile_shape`` (pixels) and ``pixel_size`` (μm)
    mono : energy positioner, eV
    stage : x/y stage (μm) with ``x`` and ``y`` positioners
    energies : strictly increasing energies, eV
    n_tile_rows, n_tile_cols : size of the tile grid
    order : "tile-outer" (all energies of a tile, then the next tile) or "energy-outer" (the whole map
        at one energy, then the next energy)
    origin_um : (x, y) stage position of the first tile's top-left pixel, μm
    dwell_s : detector exposure per image (default: the detector's current preset time)

    Every event carries ``tile_index``, ``tile_row``, ``tile_col`` and ``energy_index``, so each tile's
    stack can be picked out of the run; the start document records the map geometry.
    """
    energies_arr = np.asarray(energies, dtype=float)
    if energies_arr.ndim != 1 or energies_arr.size < 2:
        raise PlanArgumentError("energies must be a list of at least 2 energies in eV")
    if not np.all(np.isfinite(energies_arr)) or np.any(np.diff(energies_arr) <= 0):
        raise PlanArgumentError("energies must be finite and strictly increasing (eV)")
    if order not in ORDERS:
        raise PlanArgumentError(f"order must be one of {ORDERS}, got {order!r}")
    for name, value in (("n_tile_rows", n_tile_rows), ("n_tile_cols", n_tile_cols)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise PlanArgumentError(f"{name} must be an integer >= 1, got {value!r}")
    if dwell_s is not None and not dwell_s > 0:
        raise PlanArgumentError(f"dwell_s must be > 0 s, got {dwell_s!r}")
    e0 = lookup_e0(element, edge, e0)
    check_energies_in_range(mono, energies_arr)
    tile_ny, tile_nx = (int(v) for v in detector.tile_shape)
    pixel_um = float(detector.pixel_size.get())
    x_origin, y_origin = (float(v) for v in origin_um)
    tiles = [(r, c) for r in range(n_tile_rows) for c in range(n_tile_cols)]

    signals = {name: Signal(name=name, value=0, kind="normal")
               for name in ("tile_index", "tile_row", "tile_col", "energy_index")}
    _md = {
        "plan_name": "mu_xafs_map",
        "plan_version": PLAN_VERSION,
        "xafs_kind": "map",
        "detectors": [detector.name],
        "motors": [mono.name, stage.x.name, stage.y.name],
        "sample": sample,
        "element": element,
        "edge": edge,
        "e0": float(e0),
        "mode": "transmission",
        "order": order,
        "energies": [float(e) for e in energies_arr],
        "n_energies": int(energies_arr.size),
        "n_tile_rows": int(n_tile_rows),
        "n_tile_cols": int(n_tile_cols),
        "n_tiles": len(tiles),
        "tile_ny": tile_ny,
        "tile_nx": tile_nx,
        "map_ny": tile_ny * int(n_tile_rows),
        "map_nx": tile_nx * int(n_tile_cols),
        "pixel_size_um": pixel_um,
        "origin_um": [x_origin, y_origin],
        "energy_key": mono.name,
        "image_key": detector.image.name,
        "i0_key": detector.i0.name,
        "n_points": int(energies_arr.size * len(tiles)),
        "hints": {"dimensions": [([mono.name], "primary")]},
    }
    _md.update(md or {})
    readables = [detector, mono, *signals.values()]

    def move_to_tile(index: int):
        row, col = tiles[index]
        yield from bps.mv(stage.x, x_origin + col * tile_nx * pixel_um, stage.y, y_origin + row * tile_ny * pixel_um)
        yield from bps.mv(signals["tile_index"], index, signals["tile_row"], row, signals["tile_col"], col)

    def move_to_energy(index: int):
        yield from bps.mv(mono, float(energies_arr[index]), signals["energy_index"], index)

    outer, inner_ = (move_to_tile, move_to_energy) if order == "tile-outer" else (move_to_energy, move_to_tile)
    n_outer, n_inner = (len(tiles), energies_arr.size) if order == "tile-outer" else (energies_arr.size, len(tiles))

    @bpp.stage_decorator([detector])
    @bpp.run_decorator(md=_md)
    def inner():
        if dwell_s is not None:
            yield from bps.mv(detector.preset_time, float(dwell_s))
        for i in range(n_outer):
            yield from outer(i)
            for j in range(n_inner):
                yield from inner_(j)
                yield from bps.trigger_and_read(readables)

    return (yield from inner())
