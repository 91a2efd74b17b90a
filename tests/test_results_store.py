"""The result layout in Tiled: round trips of every array kind, requests per result, replacement, and
reads of a result whose data are not stored yet (real embedded Tiled server)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from xafs_stream.analyses.registry import AnalysisResult
from xafs_stream.core import ResultRecord
from xafs_stream.storage.layout import (
    RESULTS_ROOT,
    ResultIncomplete,
    read_arrays,
    result_layout,
    structure_family,
)
from xafs_stream.storage.results import ResultStore
from xafs_stream.storage.tiled_server import start_embedded_tiled


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    handle = start_embedded_tiled(tmp_path_factory.mktemp("results-store"))
    yield handle
    handle.close()


class RequestLog:
    """Counts the HTTP requests a Tiled client makes."""

    def __init__(self, client):
        self.requests: list[tuple[str, str]] = []
        client.context.http_client.event_hooks["request"].append(self._hook)

    def _hook(self, request) -> None:
        self.requests.append((request.method, request.url.path))


def record(run: str, index, result: AnalysisResult | None, status: str = "ok", analysis: str = "xafs.normalize"):
    return ResultRecord(run_uid=run, unit_id=f"{run}:spectrum:{index}", kind="spectrum", index=index,
                        analysis=analysis, version="1", status=status, result=result,
                        error="" if status == "ok" else "boom", unit_metadata={"sample": "Cu"})


def spectrum_result(n_e: int = 600, n_k: int = 281, seed: int = 0) -> AnalysisResult:
    rng = np.random.default_rng(seed)
    return AnalysisResult(
        arrays={"energy": np.linspace(8800.0, 9800.0, n_e), "mu": rng.normal(size=n_e),
                "norm": rng.normal(size=n_e), "mask": rng.random(n_e) > 0.5,
                "k": np.arange(n_k) * 0.05, "chi": rng.normal(size=n_k),
                "r": np.arange(326) * 0.0307, "chir_mag": rng.random(326)},
        dims={"energy": ["energy"], "mu": ["energy"], "norm": ["energy"], "mask": ["energy"], "k": ["k"],
              "chi": ["k"], "r": ["r"], "chir_mag": ["r"]},
        summary={"e0": 8979.0, "edge_step": 1.02})


def test_spectrum_result_is_one_table_stored_in_two_requests(tiled):
    store = ResultStore(tiled.client)
    store.write(record("run-a", 0, spectrum_result(seed=1)))  # creates the run and analysis nodes
    log = RequestLog(tiled.client)
    result = spectrum_result(seed=2)
    store.write(record("run-a", 1, result))
    # POST (node with metadata) + PUT (data); no container, no table per axis, no run update for a repeat
    assert [m for m, _ in log.requests] == ["POST", "PUT"]
    node = tiled.client[RESULTS_ROOT]["run-a"]["xafs_normalize"]["repeat_1"]
    assert structure_family(node) == "table"
    assert node.metadata["status"] == "ok" and node.metadata["summary"]["e0"] == 8979.0
    back = read_arrays(node)
    assert set(back) == set(result.arrays)
    for name, arr in result.arrays.items():  # padding removed, dtypes restored
        assert back[name].shape == arr.shape and back[name].dtype == arr.dtype, name
        np.testing.assert_array_equal(back[name], arr)


def test_other_arrays_go_to_a_container_and_round_trip(tiled):
    store = ResultStore(tiled.client)
    png = np.frombuffer(b"\x89PNG fake image bytes", dtype=np.uint8)
    png2 = np.frombuffer(b"\x89PNG another, longer picture", dtype=np.uint8)
    arrays = {"energy": np.linspace(0, 1, 50), "mu": np.linspace(1, 2, 50), "png.labels": png, "quicklook_png": png2, "labels": np.arange(12).reshape(3, 4),
              "a": np.ones((3, 4)), "b": np.zeros((3, 4)), "long": np.arange(5000.0)}
    dims = {"labels": ["y", "x"], "a": ["y", "x"], "b": ["y", "x"]}
    store.write(record("run-b", "merge", AnalysisResult(arrays=arrays, dims=dims)))
    node = tiled.client[RESULTS_ROOT]["run-b"]["xafs_normalize"]["merge"]
    assert structure_family(node) == "container"
    layout = result_layout(node)
    # "long" would pad "energy" and "mu" 100-fold (the table 50x its data): it gets its own node; a, b and the
    # integer labels (same dims, shape) are one float64 stack, the labels' dtype restored on reading
    assert any(names == ["long"] for _, names in layout.values())
    assert any(set(names) == {"a", "b", "labels"} for _, names in layout.values())
    assert any(set(names) == {"png.labels", "quicklook_png"} for _, names in layout.values())  # one packed node
    back = read_arrays(node)
    assert set(back) == set(arrays)
    for name, arr in arrays.items():
        np.testing.assert_array_equal(back[name], arr)
        assert back[name].dtype == arr.dtype, name
    assert back["png.labels"].tobytes() == png.tobytes() and back["quicklook_png"].tobytes() == png2.tobytes()


def test_a_result_of_one_stacked_array_is_that_array_node_stored_in_two_requests(tiled):
    """A map tile's features (N-D maps of one shape, nothing else) need no container: the unit node is the
    stacked array, with the result's metadata; it reads back by name, also from its result event."""
    from xafs_stream.storage.layout import read_stored

    store = ResultStore(tiled.client)
    store.write(record("run-t", 0, spectrum_result(seed=1)))  # creates the run and analysis nodes
    rng = np.random.default_rng(5)
    arrays = {f"f.{n}": rng.normal(size=(6, 7)) for n in ("edge", "whiteline", "step")}
    log = RequestLog(tiled.client)
    event = store.write(record("run-t", 1, AnalysisResult(arrays=arrays, dims={k: ("y", "x") for k in arrays},
                                                          summary={"imaging.tile.y0": 0})))
    assert [m for m, _ in log.requests] == ["POST", "PUT"], log.requests
    assert event["family"] == "array" and event["table"] is None
    node = tiled.client[event["path"]]
    assert structure_family(node) == "array"
    assert node.metadata["status"] == "ok" and node.metadata["summary"]["imaging"]["tile"]["y0"] == 0
    assert list(result_layout(node)) == [""]
    for back in (read_arrays(node), read_stored(tiled.client, event["path"])):
        assert sorted(back) == sorted(arrays)
        for name, arr in arrays.items():
            np.testing.assert_array_equal(back[name], arr, err_msg=name)
    # one array alone is the same; a redelivery replaces it; an error record is a container again
    store.write(record("run-t", 1, AnalysisResult(arrays={"only": np.arange(12).reshape(3, 4)})))
    np.testing.assert_array_equal(read_arrays(tiled.client[event["path"]])["only"], np.arange(12).reshape(3, 4))
    store.write(record("run-t", 1, None, status="error"))
    assert structure_family(tiled.client[event["path"]]) == "container"


def test_an_array_node_read_before_its_data_says_incomplete_not_zeros(tiled):
    """Between the array node's creation and its data (one request later) Tiled serves its fill value; the
    checksum stored at creation tells a reader that these are not the data."""
    from tiled.structures.array import ArrayStructure
    from tiled.structures.core import StructureFamily
    from tiled.structures.data_source import DataSource

    from xafs_stream.storage.layout import plan_arrays

    store = ResultStore(tiled.client)
    store.write(record("run-z", 0, spectrum_result(seed=1)))
    arrays = {"a": np.ones((3, 4)), "b": np.full((3, 4), 2.0)}
    child = plan_arrays(AnalysisResult(arrays=arrays, dims={"a": ("y", "x"), "b": ("y", "x")})).single_array()
    structure = ArrayStructure.from_array(child.data)
    parent = tiled.client[f"{RESULTS_ROOT}/run-z/xafs_normalize"]
    node = parent.new(StructureFamily.array, [DataSource(structure=structure, structure_family="array")],
                      key="tile_0", metadata={"status": "ok", **child.metadata})  # created; data not yet written
    assert structure_family(node) == "array"
    with pytest.raises(ResultIncomplete, match="checksum"):
        read_arrays(tiled.client[f"{RESULTS_ROOT}/run-z/xafs_normalize/tile_0"])
    node.write(child.data)
    back = read_arrays(tiled.client[f"{RESULTS_ROOT}/run-z/xafs_normalize/tile_0"])
    np.testing.assert_array_equal(back["b"], arrays["b"])


def test_a_rewrite_replaces_the_node_even_when_its_kind_changes(tiled):
    store = ResultStore(tiled.client)
    store.write(record("run-c", "merge", None, status="error"))
    error_node = tiled.client[RESULTS_ROOT]["run-c"]["xafs_normalize"]["merge"]
    assert structure_family(error_node) == "container" and error_node.metadata["status"] == "error"
    assert tiled.client[RESULTS_ROOT]["run-c"].metadata["status"]["xafs_normalize"] == "error"
    result = spectrum_result(seed=3)
    store.write(record("run-c", "merge", result))  # redelivered, now ok: one node, a table
    analysis = tiled.client[RESULTS_ROOT]["run-c"]["xafs_normalize"]
    assert list(analysis) == ["merge"]
    node = analysis["merge"]
    assert structure_family(node) == "table" and node.metadata["status"] == "ok"
    np.testing.assert_array_equal(read_arrays(node)["chi"], result.arrays["chi"])
    assert tiled.client[RESULTS_ROOT]["run-c"].metadata["status"]["xafs_normalize"] == "ok"


def test_two_workers_writing_the_same_result_at_once_both_succeed(tiled):
    """A redelivered unit can be stored by two workers at the same time (the soak saw it after a broker
    restart): one's delete can find the node already gone. Both writes succeed, one node remains, ok."""
    import threading

    errors = []

    def writer(seed: int) -> None:
        store = ResultStore(tiled.client)
        for i in range(8):
            try:
                store.write(record("run-race", 0, spectrum_result(n_e=200, n_k=50, seed=seed + i)))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in (0, 100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    analysis = tiled.client[RESULTS_ROOT]["run-race"]["xafs_normalize"]
    assert list(analysis) == ["repeat_0"] and analysis["repeat_0"].metadata["status"] == "ok"


def test_a_skip_of_one_repeat_does_not_touch_the_run_status(tiled):
    store = ResultStore(tiled.client)
    store.write(record("run-d", "merge", spectrum_result(), analysis="bayes_xanes"))
    store.write(record("run-d", 0, None, status="skipped", analysis="bayes_xanes"))
    run = tiled.client[RESULTS_ROOT]["run-d"]
    assert run.metadata["status"]["bayes_xanes"] == "ok"
    assert run["bayes_xanes"]["repeat_0"].metadata["status"] == "skipped"


def test_reading_a_table_before_its_data_arrive_says_incomplete(tiled):
    """The store creates a table node one request before its data: a reader in between gets
    ResultIncomplete (retry), not a server error or an empty result."""
    from tiled.structures.core import StructureFamily
    from tiled.structures.data_source import DataSource
    from tiled.structures.table import TableStructure

    from xafs_stream.storage.layout import plan_arrays

    plan = plan_arrays(spectrum_result(seed=4))
    frame = plan.frame()
    parent = tiled.client.create_container(f"half-written-{time.time_ns()}")
    node = parent.new(StructureFamily.table,
                      [DataSource(structure=TableStructure.from_pandas(frame), structure_family=StructureFamily.table)],
                      key="merge", metadata={"status": "ok", **plan.table_metadata()}, specs=["xafs-result"])
    half = parent["merge"]
    log = RequestLog(tiled.client)
    with pytest.raises(ResultIncomplete, match="not stored yet"):
        read_arrays(half)
    # at once, from one failed request: tiled's client would retry that server error for up to 45 s
    assert [m for m, path in log.requests] == ["GET"] and "/table/full/" in log.requests[0][1]
    node.write(frame)
    assert read_arrays(parent["merge"])["energy"].size == 600


def test_a_read_the_server_refuses_in_one_response_falls_back_to_tiled_block_reads():
    """A 4xx other than 404 (e.g. a result too large for one response) is not "incomplete": the read goes
    through tiled's client, which reads large arrays block by block."""
    import types

    import httpx

    from xafs_stream.storage.layout import _read

    data = np.arange(6.0).reshape(2, 3)
    responses = {"refused": httpx.Response(413), "half-written": httpx.Response(500)}

    def node(kind):
        client = types.SimpleNamespace(get=lambda url, headers: responses[kind])
        return types.SimpleNamespace(
            item={"attributes": {"structure_family": "array"}, "links": {"full": "http://server/array/full/x"}},
            context=types.SimpleNamespace(http_client=client), read=lambda: data)

    assert np.array_equal(_read(node("refused"), "x"), data)
    with pytest.raises(ResultIncomplete, match="500"):
        _read(node("half-written"), "x")


def map_result(fill: float, png_size: int) -> AnalysisResult:
    """A whole-map result like MapAccumulator's: N-D maps (stacked), integer labels and PNG bytes."""
    rng = np.random.default_rng(int(fill * 100))
    maps = {f"smoothed.{n}": np.full((8, 8), fill) + rng.normal(0, 0.01, (8, 8)) for n in ("a", "b")}
    pngs = {"png.labels": np.frombuffer(b"\x89PNG" + bytes(range(256)) * (png_size // 256), dtype=np.uint8),
            "quicklook_png": np.frombuffer(b"\x89PNG quicklook" * (1 + png_size // 64), dtype=np.uint8)}
    arrays = {**maps, "labels": (rng.random((8, 8)) * 3).astype(np.int64), **pngs}
    dims = {k: ("y", "x") for k in (*maps, "labels")} | {k: ("byte",) for k in pngs}
    return AnalysisResult(arrays=arrays, dims=dims, summary={"imaging.coverage": fill})


def map_record(run: str, result: AnalysisResult | None, status: str = "ok") -> ResultRecord:
    return ResultRecord(run_uid=run, unit_id=f"{run}:map:map", kind="map", index="map", analysis="imaging.map",
                        version="1", status=status, result=result, error="" if status == "ok" else "tile failed")


def test_a_live_map_is_updated_in_place(tiled):
    """Later writes of a map PUT new data into its nodes and its metadata (no delete, no moment without
    a map); a changed layout, or a map deleted by someone else, is replaced."""
    store = ResultStore(tiled.client)
    store.write(map_record("run-m", map_result(0.25, 1000)))
    path = f"{RESULTS_ROOT}/run-m/imaging_map/map"
    log = RequestLog(tiled.client)
    second = map_result(0.5, 1400)  # PNGs grew, within the packed node's padding
    store.write(map_record("run-m", second))
    methods = [m for m, _ in log.requests]
    # 2 children's data (the packed PNGs; the maps and labels in one stack) and the container's metadata
    # (PUT), the run's summary (PATCH: a map speaks for its run)
    assert sorted(methods) == ["PATCH", "PUT", "PUT", "PUT"], log.requests
    node = tiled.client[path]
    assert node.metadata["summary"]["imaging"]["coverage"] == 0.5
    assert [spec.name for spec in node.specs] == ["xafs-result"]
    back = read_arrays(node)
    assert set(back) == set(second.arrays)
    for name, arr in second.arrays.items():
        np.testing.assert_array_equal(back[name], arr, err_msg=name)
    assert tiled.client[f"{RESULTS_ROOT}/run-m"].metadata["summary"]["imaging"]["coverage"] == 0.5
    # PNGs larger than the padding: the packed node changes shape, so the map is replaced
    log.requests.clear()
    big = map_result(0.75, 40_000)
    store.write(map_record("run-m", big))
    assert "DELETE" in [m for m, _ in log.requests]
    np.testing.assert_array_equal(read_arrays(tiled.client[path])["png.labels"], big.arrays["png.labels"])
    # deleted behind the store's back (reprocess --force): recreated, not an error
    tiled.client[path].delete(recursive=True, external_only=False)
    store.write(map_record("run-m", map_result(1.0, 1000)))
    assert tiled.client[path].metadata["summary"]["imaging"]["coverage"] == 1.0
    # an error record replaces the map, and the next map is created afresh
    store.write(map_record("run-m", None, status="error"))
    assert tiled.client[path].metadata["status"] == "error" and list(tiled.client[path]) == []
    store.write(map_record("run-m", map_result(1.0, 1000)))
    assert sorted(read_arrays(tiled.client[path])) == sorted(map_result(1.0, 1000).arrays)


def test_a_busy_live_map_defers_its_runs_summary_and_its_last_write_sends_it(tiled):
    """An intermediate map write (final False) soon after the last run update leaves the run's summary for
    later (one request less per tile); a changed verdict, the interval passing, a flush or the map's last
    write sends it."""
    store = ResultStore(tiled.client, summary_interval_s=60.0)
    run_path = f"{RESULTS_ROOT}/run-d"

    def write(fill: float, *, final: bool, verdict: str = "ok") -> list[str]:
        result = map_result(fill, 1000)
        result.verdict = verdict
        rec = map_record("run-d", result)
        rec.final = final
        log = RequestLog(tiled.client)
        store.write(rec)
        tiled.client.context.http_client.event_hooks["request"].remove(log._hook)
        return [m for m, _ in log.requests]

    def coverage() -> float:
        return tiled.client[run_path].metadata["summary"]["imaging"]["coverage"]

    write(0.25, final=False)  # the first write of a run's map always updates the run
    assert coverage() == 0.25 and store.flush_run_updates() is None
    assert sorted(write(0.5, final=False)) == ["PUT"] * 3  # the map's 2 children and metadata; no PATCH
    assert coverage() == 0.25
    assert 0 < store.flush_run_updates() <= 60.0  # deferred, due within the interval
    assert store.flush_run_updates(force=True) is None and coverage() == 0.5
    assert "PATCH" in write(0.6, final=False, verdict="warn")  # the verdict changed: sent at once
    assert tiled.client[run_path].metadata["quality"]["imaging_map"] == "warn"
    assert "PATCH" not in write(0.7, final=False, verdict="warn")
    assert "PATCH" in write(1.0, final=True, verdict="warn")  # the last tile's map
    assert coverage() == 1.0 and store.flush_run_updates() is None  # the deferred 0.7 was superseded
    store.summary_interval_s = 0.0
    assert "PATCH" in write(1.0, final=False)  # the interval passed


def test_an_idle_worker_sends_a_deferred_run_summary_when_it_is_due(tiled):
    """The worker's compute loop flushes the store's deferred run updates while it waits for units, and all
    of them when it stops."""
    import threading

    from xafs_stream.analyses.registry import Registry
    from xafs_stream.worker import UnitHandler, Worker

    store = ResultStore(tiled.client, summary_interval_s=0.5)
    for fill, final in ((0.25, False), (0.5, False)):
        rec = map_record("run-idle", map_result(fill, 1000))
        rec.final = final
        store.write(rec)
    run = tiled.client[f"{RESULTS_ROOT}/run-idle"]
    assert run.metadata["summary"]["imaging"]["coverage"] == 0.25
    worker = Worker("tcp://127.0.0.1:9", UnitHandler(store, Registry()))
    thread = threading.Thread(target=worker._compute_loop, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while tiled.client[f"{RESULTS_ROOT}/run-idle"].metadata["summary"]["imaging"]["coverage"] != 0.5:
        assert time.monotonic() < deadline, "the deferred run summary was not sent"
        time.sleep(0.1)
    rec = map_record("run-idle", map_result(0.75, 1000))
    rec.final = False
    store.summary_interval_s = 60.0
    store.write(rec)  # deferred for a minute; the worker stops meanwhile
    worker._todo.put(None)
    thread.join(10)
    assert not thread.is_alive()
    assert tiled.client[f"{RESULTS_ROOT}/run-idle"].metadata["summary"]["imaging"]["coverage"] == 0.75


def test_only_exact_layers_join_a_float_stack():
    """Integers beyond 2**53 would lose digits in float64: they keep their own node; complex maps their own."""
    from xafs_stream.storage.layout import plan_arrays

    yx = ("y", "x")
    arrays = {"f": np.ones((2, 3)), "small": np.arange(6).reshape(2, 3), "ok": np.ones((2, 3), bool),
              "big": np.full((2, 3), 2**60), "big2": np.zeros((2, 3), np.int64),
              "z": np.ones((2, 3), complex), "z2": np.zeros((2, 3), complex)}
    children = plan_arrays(AnalysisResult(arrays=arrays, dims={k: yx for k in arrays})).children()
    by_layers = {tuple(c.metadata["layers"]): c for c in children}
    assert set(by_layers) == {("f", "small", "ok", "big2"), ("big",), ("z", "z2")}
    floats = next(c for layers, c in by_layers.items() if "f" in layers)
    assert floats.data.dtype == np.float64 and floats.metadata["layer_dtypes"]["small"] == np.dtype(int).str
    assert by_layers[("z", "z2")].data.dtype == complex and by_layers[("z", "z2")].key == "stack_y_x_complex128"
    assert by_layers[("big",)].data.dtype == np.int64


def test_a_stopping_worker_sends_what_it_deferred(tiled):
    """Worker.run() returning (stop) lets the compute thread send the deferred run summaries first."""
    import threading

    from xafs_stream.analyses.registry import Registry
    from xafs_stream.testing import free_port
    from xafs_stream.worker import UnitHandler, Worker

    store = ResultStore(tiled.client, summary_interval_s=600.0)
    for fill in (0.25, 0.5):
        rec = map_record("run-stop", map_result(fill, 1000))
        rec.final = False
        store.write(rec)
    path = f"{RESULTS_ROOT}/run-stop"
    assert tiled.client[path].metadata["summary"]["imaging"]["coverage"] == 0.25
    worker = Worker(f"tcp://127.0.0.1:{free_port()}", UnitHandler(store, Registry()))  # no broker there
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    time.sleep(0.5)
    worker.stop()
    thread.join(15)
    assert not thread.is_alive()
    assert tiled.client[path].metadata["summary"]["imaging"]["coverage"] == 0.5


def test_packed_bytes_keep_their_shape_while_they_grow_and_read_the_older_layout():
    from xafs_stream.storage.layout import pack_blobs, unpack_blobs

    blobs = {"a": np.arange(5, dtype=np.uint8), "b": np.arange(300, dtype=np.int64).astype(np.uint8)}
    packed = pack_blobs(blobs)
    assert packed.size >= 2 * (8 + 305) and packed.size & (packed.size - 1) == 0  # power of two, headroom
    assert pack_blobs({"a": np.arange(9, dtype=np.uint8), "b": blobs["b"]}).shape == packed.shape
    back = unpack_blobs(packed, ["a", "b"], {"packed": "u32-sizes"})
    assert all(np.array_equal(back[k], blobs[k]) for k in blobs)
    old = np.concatenate(list(blobs.values()))  # before: end to end, sizes in the metadata
    back = unpack_blobs(old, ["a", "b"], {"packed_sizes": [5, 300]})
    assert all(np.array_equal(back[k], blobs[k]) for k in blobs)
