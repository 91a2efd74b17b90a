"""One owner per μ-XANES map: the worker that receives a map's tiles keeps its live maps.

The broker routes every tile of a map run to one worker (affinity ``map:<run uid>``). That worker's
:class:`MapOwner` adds each tile's ``imaging.features`` result to the run's
:class:`~xafs_stream.analyses.imaging.MapAccumulator` and writes the whole-map result
(``imaging.map``, unit ``map``) in place. If the owner dies, the broker picks a new owner, which
rebuilds the accumulator from the per-tile feature results already in Tiled (every finished tile stored its
features before it was acknowledged), so no tile is lost and two workers never write one map at once.

A tile's whole map is written at once, unless the next tile of the same map is already waiting in the worker
(``tile_waiting``) and the last write is less than ``min_write_interval_s`` old: then the next tile writes
it, a moment later, and a backlog of tiles is not slowed down by a write per tile (a map result holds ~20
maps and PNGs). The last tile always writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..core import AnalysisResult, ResultRecord, UnitEnvelope, make_unit_id
from ..storage.layout import ResultIncomplete, analysis_results, lookup_summary, read_arrays

log = logging.getLogger(__name__)

FEATURES = "imaging.features"
MAP_ANALYSIS = "imaging.map"


class MapOwner:
    """Post-processing hook of a worker: keeps the maps of the runs whose tiles it owns.

    ``tile_waiting(run_uid) -> bool``: whether another tile of that run already waits in the worker (the
    worker's :meth:`~xafs_stream.worker.loop.Worker.tile_waiting`); None: never (every tile writes).

    The owner is the handler's hook (``UnitHandler(post_process=owner)``): calling it is
    :meth:`post_process`; the handler stores a tile's whole map before the tile's own features
    (``stores_first_for``), creates the whole map's node at a map run's start (``prepares``) and warms the
    owner up.
    """

    stores_first_for = ("tile",)
    prepares = {"tile": (MAP_ANALYSIS,)}  # a map run's start creates the whole map's analysis node too

    def __init__(self, store: Any, analysis_config: Mapping[str, Any] | None = None, *,
                 min_write_interval_s: float = 1.0, tile_waiting: Callable[[str], bool] | None = None):
        self.store = store
        self.config = dict(analysis_config or {})
        self.min_write_interval_s = float(min_write_interval_s)
        self.tile_waiting = tile_waiting
        self.maps: dict[str, Any] = {}
        self._last_write: dict[str, float] = {}

    def warm_up(self) -> None:
        """Import what the first whole-map result needs (the PNG renderer: ~1 s on an idle core, several
        under load), so that the first tile's map does not wait for it."""
        from ..analyses.imaging import render_png

        render_png(np.zeros((2, 2)))

    def _accumulator(self, envelope: UnitEnvelope) -> Any:
        from ..analyses.imaging import MapAccumulator

        unit = envelope.unit
        acc = self.maps.get(unit.run_uid)
        if acc is None:
            md = unit.metadata
            acc = MapAccumulator((int(md["map_ny"]), int(md["map_nx"])), np.asarray(unit.arrays["energy"]),
                                 self.config.get(FEATURES, {}))
            self._rebuild(acc, unit, skip_index=unit.index)
            self.maps[unit.run_uid] = acc
        return acc

    def _stored_features(self, unit: Any) -> dict[str, Any]:
        """``{unit key: node}`` of the run's stored tile features: one listing request through the store's node
        of the run's features (made at the run's start), else a lookup and a listing (a store without one)."""
        node_of = getattr(self.store, "analysis_node", None)
        if node_of is not None:
            return dict(node_of(unit.run_uid, FEATURES, self.store.run_node(unit.run_uid, unit.metadata)).items())
        client = getattr(self.store, "client", None)
        return {} if client is None else analysis_results(client, unit.run_uid, FEATURES)

    def _rebuild(self, acc: Any, unit: Any, *, skip_index: Any) -> None:
        """Add the tiles whose features are already in Tiled (another owner processed them). A tile whose data
        are not all there (its owner died between a node and its data) is left out: it was not acknowledged, so
        the broker delivers it again and it is added then."""
        run_uid = unit.run_uid
        added = 0
        for node in self._stored_features(unit).values():
            md = node.metadata
            if md.get("status") != "ok" or md.get("unit_index") == skip_index:
                continue
            y0, x0 = (int(lookup_summary(md.get("summary") or {}, f"imaging.tile.{k}")) for k in ("y0", "x0"))
            try:
                arrays = read_arrays(node)
            except ResultIncomplete as exc:
                log.warning("map %s: tile %s left out of the rebuild: %s", run_uid, md.get("unit_index"), exc)
                continue
            acc.add_tile(y0, x0, AnalysisResult(arrays=arrays))
            added += 1
        if added:
            log.info("map %s: took over ownership, rebuilt %d tile(s) from Tiled", run_uid, added)

    def __call__(self, envelope: UnitEnvelope, records: list[ResultRecord]) -> list[ResultRecord]:
        return self.post_process(envelope, records)

    def post_process(self, envelope: UnitEnvelope, records: list[ResultRecord]) -> list[ResultRecord]:
        unit = envelope.unit
        if unit.kind != "tile":
            return []
        features = next((r for r in records if r.analysis == FEATURES), None)
        if features is None or features.status != "ok":
            return []
        base = dict(run_uid=unit.run_uid, unit_id=make_unit_id(unit.run_uid, "map", "map"), kind="map",
                    index="map", analysis=MAP_ANALYSIS, version="1", unit_metadata=unit.metadata,
                    attempt=envelope.attempt, worker=features.worker)
        t0 = time.perf_counter()
        try:
            acc = self._accumulator(envelope)
            result = acc.add_tile(int(unit.metadata["y0"]), int(unit.metadata["x0"]), features.result)
        except Exception as exc:
            log.exception("map %s: tile %s could not be added", unit.run_uid, unit.index)
            return [ResultRecord(**base, status="error", error=f"tile {unit.index}: {type(exc).__name__}: {exc}")]
        last = len(acc.tiles) >= int(unit.metadata.get("n_tiles", 0))
        now = time.monotonic()
        recent = now - self._last_write.get(unit.run_uid, -float("inf")) < self.min_write_interval_s
        if not last and recent and self.tile_waiting is not None and self.tile_waiting(unit.run_uid):
            return []
        self._last_write[unit.run_uid] = now
        return [ResultRecord(**base, status="ok", result=result, timings={"compute_s": time.perf_counter() - t0},
                             final=last)]
