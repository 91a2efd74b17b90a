"""Work units: the self-contained pieces of data the analyses run on (no transport, no storage).

A unit is either a complete spectrum (kind ``"spectrum"``: one repeat of an XAFS scan, or the merge of
all repeats) or a complete map tile (kind ``"tile"``: the full energy stack of one tile of a μ-XAFS map).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPECTRUM = "spectrum"
TILE = "tile"
UNIT_KINDS = (SPECTRUM, TILE)


def make_unit_id(run_uid: str, kind: str, index: int | str) -> str:
    """Deterministic unit id: the same run, kind and index always give the same id.

    Results are keyed by ``(unit_id, analysis)``, so a redelivered unit overwrites, never duplicates.
    """
    return f"{run_uid}:{kind}:{index}"


@dataclass
class WorkUnit:
    """One spectrum or one map tile with its run context.

    Attributes
    ----------
    run_uid : uid of the bluesky run it came from
    kind : "spectrum" or "tile"
    index : position within the run: repeat number (int) or "merge" for spectra; tile number for tiles
    arrays : named arrays. Spectrum: ``energy`` (n,) eV, ``mu`` (n,), optionally ``i0``, ``it``, ``iref``,
        ``ifluor`` (n,). Tile: ``energy`` (n_e,) eV, ``stack`` (n_e, ny, nx) absorption (optical density
        for transmission, If/I0 for fluorescence), optionally ``i0`` (n_e,).
    metadata : flat JSON-able context: sample, element, edge, e0 (eV), mode; for tiles also ``tile_row``,
        ``tile_col``, ``y0``, ``x0`` (pixel offset in the map), ``map_ny``, ``map_nx``, ``n_tiles``.
    """

    run_uid: str
    kind: str
    index: int | str
    arrays: dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in UNIT_KINDS:
            raise ValueError(f"unit kind must be one of {UNIT_KINDS}, got {self.kind!r}")

    @property
    def unit_id(self) -> str:
        return make_unit_id(self.run_uid, self.kind, self.index)
