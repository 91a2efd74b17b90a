"""The core types every layer shares; this module imports nothing from the project.

- :class:`WorkUnit`: the self-contained piece of data the analyses run on. A unit is either a complete
  spectrum (kind ``"spectrum"``: one repeat of an XAFS scan, or the merge of all repeats) or a complete map
  tile (kind ``"tile"``: the full energy stack of one tile of a μ-XAFS map).
- :class:`UnitEnvelope`: a unit with its delivery fields (which analyses, affinity, attempt).
- :class:`AnalysisResult`: what one analysis returns for one unit (arrays, summary, params, diagnostics).
- :class:`ResultRecord`: one analysis outcome of one unit (ok, error or skipped), ready to store.
- :func:`to_json_safe`: plain JSON types for metadata and messages.
- :func:`check_id`: ids are data, never paths: a run uid or unit index that becomes a Tiled key must be a
  short string of letters, digits, ``_`` and ``-`` (checked where messages arrive and again before storage).

Flow: device → document → work unit → engine → result → Tiled (see ``docs/architecture.md``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: a run uid, a string unit index, a Tiled key made from them: no separators, no dot-segments
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
#: an analysis name (dots separate its parts; each becomes ``_`` in a Tiled key)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]{0,31}(\.[A-Za-z0-9][A-Za-z0-9_]{0,31}){0,3}")
#: largest integer unit index
MAX_INDEX = 10**9


def brief(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about untrusted input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_id(value: Any, what: str = "id") -> str:
    """``value`` if it is a safe id (:data:`ID_PATTERN`: 1-128 letters, digits, ``_``, ``-``, not starting
    with ``_`` or ``-``); ValueError naming ``what`` otherwise. Ids become Tiled keys and must never act as
    paths."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ValueError(f"{what} must be 1-128 letters, digits, '_' or '-' (not starting with '_' or '-'), "
                         f"got {brief(value)}")
    return value


def check_index(value: Any, what: str = "unit index") -> int | str:
    """A unit index: an integer 0..MAX_INDEX or a safe id string (``"merge"``); ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_INDEX:
            raise ValueError(f"{what} must be 0..{MAX_INDEX}, got {brief(value)}")
        return value
    return check_id(value, what)


def check_name(value: Any, what: str = "analysis name") -> str:
    """An analysis name (:data:`NAME_PATTERN`, e.g. ``xafs.normalize``); ValueError otherwise."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ValueError(f"{what} must be dotted words of letters, digits and '_', got {brief(value)}")
    return value

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
            raise ValueError(f"unit kind must be one of {UNIT_KINDS}, got {brief(self.kind)}")
        check_id(self.run_uid, "run uid")
        check_index(self.index)

    @property
    def unit_id(self) -> str:
        return make_unit_id(self.run_uid, self.kind, self.index)


@dataclass
class UnitEnvelope:
    """A work unit with its delivery fields.

    Attributes
    ----------
    unit : the work unit
    analyses : restrict processing to these analyses (and what they require); None: all for the kind
    affinity : units with the same affinity key go to the same worker while it lives (one map, one owner)
    attempt : delivery attempt number (0 first); the broker increments it on redelivery
    poisoned : set by the broker after too many failed attempts: the worker records an error result
        with ``poison_reason`` instead of running the analyses
    """

    unit: WorkUnit
    analyses: list[str] | None = None
    affinity: str | None = None
    attempt: int = 0
    poisoned: bool = False
    poison_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def unit_id(self) -> str:
        return self.unit.unit_id


@dataclass
class AnalysisResult:
    """What an analysis returns.

    Attributes
    ----------
    arrays : name -> ndarray, written as Tiled arrays beside the run
    dims : name -> dimension names for ``arrays`` (e.g. ``("energy",)``)
    summary : flat name -> number/str/bool, written as queryable Tiled metadata
    params : parameters actually used (JSON-able)
    diagnostics : extra JSON-able detail (not for queries)
    verdict : how good the result is: "ok", "warn" or "bad" ("" when the analysis does not judge)
    verdict_reasons : short reasons for a warn or bad verdict
    blob_capacity : bytes to reserve for the 1-D uint8 arrays (PNGs) when stored, 0 for none: a result written
        again and again as it grows (a live map) gives its expected final size, so that its stored nodes keep
        their shape and are rewritten in place
    """

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    dims: dict[str, tuple[str, ...]] = field(default_factory=dict)
    summary: dict[str, float | int | str | bool | None] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    verdict: str = ""
    verdict_reasons: list[str] = field(default_factory=list)
    blob_capacity: int = 0


VERDICTS = ("ok", "warn", "bad")


RESULT_STATUSES = ("ok", "error", "skipped")


@dataclass
class ResultRecord:
    """One analysis outcome for one unit, ready to store."""

    run_uid: str
    unit_id: str
    kind: str
    index: int | str
    analysis: str
    version: str
    status: str  # "ok", "error" or "skipped"
    result: AnalysisResult | None = None
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    unit_metadata: dict[str, Any] = field(default_factory=dict)
    attempt: int = 0
    worker: str = ""
    final: bool = True  # False: an intermediate state of a unit written again soon (a live map before its last tile)

    @property
    def representative(self) -> bool:
        """Does this unit speak for the whole run (merged spectrum or whole map)?"""
        return self.index == "merge" or self.kind == "map"


def to_json_safe(obj: Any) -> Any:
    """Plain JSON types only: numpy scalars/arrays converted, tuples to lists, NaN/inf to None."""
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    elif isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_safe(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
