"""When the map owner writes the whole map: after each tile at once, unless the next tile of the same map is
already waiting in the worker and the last write is recent; always on the last tile. And what it writes keeps
its stored layout as the map fills (so the store rewrites it in place)."""

import numpy as np
from xafs_stream.simulated_devices.phantom import default_map_energies, make_phantom

from xafs_stream.analyses.imaging import tile_features
from xafs_stream.analyses.registry import Registry
from xafs_stream.core import ResultRecord, UnitEnvelope, WorkUnit
from xafs_stream.storage.layout import BLOB_HEADER, pack_blobs, plan_arrays, unpack_blobs
from xafs_stream.worker import MapOwner, UnitHandler, Worker

ENERGY = default_map_energies(30)
PHANTOM = make_phantom((32, 32), energy=ENERGY, seed=1)
STACK = PHANTOM.absorption_stack() + 0.01 * np.random.default_rng(0).standard_normal((ENERGY.size, 32, 32))


def _tile(index: int) -> tuple[UnitEnvelope, list[ResultRecord]]:
    row, col = divmod(index, 2)
    md = {"y0": 16 * row, "x0": 16 * col, "map_ny": 32, "map_nx": 32, "n_tiles": 4}
    stack = STACK[:, 16 * row:16 * row + 16, 16 * col:16 * col + 16]
    unit = WorkUnit("run-map", "tile", index, {"energy": ENERGY, "stack": stack}, md)
    features = tile_features(unit, {}, {})
    record = ResultRecord(run_uid="run-map", unit_id=unit.unit_id, kind="tile", index=index,
                          analysis="imaging.features", version="1", status="ok", result=features)
    return UnitEnvelope(unit), [record]


def _written(owner: MapOwner) -> list[int]:
    """Tiles (in order) after which the owner returned a whole-map record; only the last tile's is final (the
    store may defer the run summary of the others)."""
    out = []
    for i in range(4):
        extra = owner.post_process(*_tile(i))
        if extra:
            assert [r.analysis for r in extra] == ["imaging.map"] and extra[0].status == "ok"
            assert extra[0].final == (i == 3)
            out.append(i)
    return out


def test_every_tile_writes_the_map_when_no_other_tile_waits():
    owner = MapOwner(None, {}, tile_waiting=lambda run_uid: False)
    assert _written(owner) == [0, 1, 2, 3]
    assert _written(MapOwner(None, {})) == [0, 1, 2, 3]  # without a worker queue to look at, the same


def test_a_waiting_tile_defers_the_write_to_itself_unless_the_last_write_is_old():
    asked = []

    def waiting(run_uid):
        asked.append(run_uid)
        return True

    owner = MapOwner(None, {}, tile_waiting=waiting, min_write_interval_s=60.0)
    # tile 0: nothing written yet, so it writes; tiles 1 and 2: a tile waits and the write is recent;
    # tile 3 is the last: always written
    assert _written(owner) == [0, 3]
    assert set(asked) == {"run-map"}
    assert _written(MapOwner(None, {}, tile_waiting=waiting, min_write_interval_s=0.0)) == [0, 1, 2, 3]


def test_the_worker_says_whether_a_tile_of_a_run_waits_in_its_queue():
    worker = Worker("tcp://127.0.0.1:1", UnitHandler(None, Registry()), name="w")
    assert not worker.tile_waiting("run-map")
    worker._todo.put(UnitEnvelope(WorkUnit("run-other", "tile", 0, {})))
    worker._todo.put(UnitEnvelope(WorkUnit("run-map", "spectrum", 0, {})))
    assert not worker.tile_waiting("run-map")
    worker._todo.put(_tile(1)[0])
    assert worker.tile_waiting("run-map")


def test_the_whole_maps_stored_layout_stays_the_same_as_the_map_fills():
    """The map's PNGs compress less as it fills; the map reserves their full-map size, so that every update
    rewrites the stored nodes in place (same children, shapes and dtypes) instead of replacing them."""
    owner = MapOwner(None, {})
    layouts, sizes = [], []
    for i in range(4):
        (record,) = owner.post_process(*_tile(i))
        layouts.append({c.key: c.signature() for c in plan_arrays(record.result).children()})
        blobs = plan_arrays(record.result).blobs
        packed = pack_blobs(blobs, record.result.blob_capacity)
        unpacked = unpack_blobs(packed, list(blobs), {"packed": BLOB_HEADER})
        assert all(np.array_equal(unpacked[k], v) for k, v in blobs.items())
        sizes.append((packed.size, pack_blobs(blobs).size))  # with and without the map's hint
    assert all(layout == layouts[0] for layout in layouts)
    assert sizes[0][1] < sizes[-1][1]  # without the hint the node would have grown
    assert len({with_hint for with_hint, _ in sizes}) == 1


class _Recorder:
    """A store that notes the order of what it is asked to write."""

    def __init__(self):
        self.written = []

    def write(self, record):
        self.written.append((record.analysis, record.index))


def test_the_handler_stores_a_tiles_whole_map_before_its_features_and_warms_the_owner_up():
    from xafs_stream.analyses import default_registry

    store = _Recorder()
    owner = MapOwner(store, {})
    warmed = []
    owner.warm_up = lambda: warmed.append(True)
    handler = UnitHandler(store, default_registry(), enabled=["imaging.features"], post_process=owner)
    handler.warm_up()
    assert warmed == [True]
    for i in range(2):
        envelope, _ = _tile(i)
        handler.handle(envelope)
    assert store.written == [("imaging.map", "map"), ("imaging.features", 0),
                             ("imaging.map", "map"), ("imaging.features", 1)]
    # a plain function as the hook: the unit's records first, as they are computed
    store.written.clear()
    handler = UnitHandler(store, default_registry(), enabled=["imaging.features"], post_process=owner.post_process)
    handler.handle(_tile(2)[0])
    assert store.written == [("imaging.features", 2), ("imaging.map", "map")]


def test_a_map_runs_start_prepares_the_whole_maps_node_too():
    from xafs_stream.analyses import default_registry

    class Preparing(_Recorder):
        def prepare(self, run_uid, metadata, analyses):
            self.prepared = (run_uid, list(analyses))

    store = Preparing()
    handler = UnitHandler(store, default_registry(), post_process=MapOwner(store, {}))
    handler.prepare({"run_uid": "run-map", "kind": "tile", "metadata": {}})
    assert store.prepared[0] == "run-map"
    assert {"imaging.features", "imaging.map"} <= set(store.prepared[1])
    handler.prepare({"run_uid": "run-xafs", "kind": "spectrum", "metadata": {}})
    assert "imaging.map" not in store.prepared[1] and "xafs.normalize" in store.prepared[1]


def test_a_new_owner_rebuilds_the_map_from_the_stored_tile_arrays_in_one_listing(tmp_path):
    """Another worker stored tiles 0 and 1 (each tile's features one array node); the worker that gets tile 2
    lists them through its store's node of the run's features (one request) and maps all three tiles."""
    from xafs_stream.storage.results import ResultStore
    from xafs_stream.storage.tiled_server import start_embedded_tiled

    tiled = start_embedded_tiled(tmp_path)
    try:
        first = ResultStore(tiled.client)
        for i in (0, 1):
            envelope, (record,) = _tile(i)
            record.unit_metadata = envelope.unit.metadata
            assert first.write(record)["family"] == "array"
        # tile 3's owner died between its node and its data: the rebuild leaves it out (it comes again)
        _half_written(tiled.client, first, 3)
        store = ResultStore(tiled.client)
        store.prepare("run-map", {"sample": "phantom"}, ["imaging.features", "imaging.map"])
        requests = []
        tiled.client.context.http_client.event_hooks["request"].append(
            lambda request: requests.append((request.method, request.url.path)))
        (whole,) = MapOwner(store, {}).post_process(*_tile(2))
        # one listing (no lookup of the features' node: the store has it), then each stored tile's data
        assert [path.split("/")[3] for _, path in requests] == ["search", "array", "array", "array"], requests
        assert whole.result.summary["imaging.n_tiles_done"] == 3 and not whole.final
        alone = MapOwner(None, {})
        for i in (0, 1, 2):
            (expected,) = alone.post_process(*_tile(i))
        maps = [k for k in expected.result.arrays if not k.startswith("png.") and not k.endswith("_png")]
        assert "labels" in maps and len(maps) > 5
        for name in maps:
            np.testing.assert_array_equal(whole.result.arrays[name], expected.result.arrays[name], err_msg=name)
    finally:
        tiled.close()


def _half_written(client, store, index: int) -> None:
    """Tile ``index``'s features node as the results store creates it, without its data."""
    from tiled.structures.array import ArrayStructure
    from tiled.structures.core import StructureFamily
    from tiled.structures.data_source import DataSource

    from xafs_stream.core import to_json_safe
    from xafs_stream.storage.layout import nest_summary

    envelope, (record,) = _tile(index)
    child = plan_arrays(record.result).single_array()
    parent = store.analysis_node("run-map", "imaging.features", store.run_node("run-map", envelope.unit.metadata))
    metadata = to_json_safe({"status": "ok", "unit_index": index, "summary": nest_summary(record.result.summary),
                             **child.metadata})
    parent.new(StructureFamily.array, [DataSource(structure=ArrayStructure.from_array(child.data),
                                                  structure_family="array")], key=f"tile_{index}", metadata=metadata)
