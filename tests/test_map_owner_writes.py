"""When the map owner writes the whole map: after each tile at once, unless the next tile of the same map is
already waiting in the worker and the last write is recent; always on the last tile."""

import numpy as np
from xafs_stream.simulated_devices.phantom import default_map_energies, make_phantom

from xafs_stream.analyses.imaging import tile_features
from xafs_stream.analyses.registry import Registry
from xafs_stream.core import ResultRecord, UnitEnvelope, WorkUnit
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
    """Tiles (in order) after which the owner returned a whole-map record."""
    out = []
    for i in range(4):
        extra = owner.post_process(*_tile(i))
        if extra:
            assert [r.analysis for r in extra] == ["imaging.map"] and extra[0].status == "ok"
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
