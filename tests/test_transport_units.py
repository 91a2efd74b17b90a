"""Transport pieces in isolation: the durable spool, the wire protocol, the config."""

import numpy as np
import pytest

from xafs_stream.transport import protocol as P
from xafs_stream.config import ConfigError, load_config
from xafs_stream.transport.spool import DiskSpool
from xafs_stream.core import WorkUnit


def test_spool_survives_restart_in_order_and_forgets_removed(tmp_path):
    sp = DiskSpool(tmp_path, segment_bytes=300)
    for i in range(20):
        sp.put(f"k{i}", [f"header{i}".encode(), bytes([i]) * 50])
    for i in range(0, 20, 2):
        sp.remove(f"k{i}")
    sp.put("k3", [b"replaced"])  # re-put moves it to the end
    sp.close()
    again = DiskSpool(tmp_path, segment_bytes=300)
    expected = [f"k{i}" for i in range(1, 20, 2) if i != 3] + ["k3"]
    assert again.keys() == expected
    assert again.get("k5") == [b"header5", bytes([5]) * 50]
    assert again.get("k3") == [b"replaced"]
    assert "k4" not in again and len(again) == 10


def test_spool_deletes_segments_once_everything_is_done(tmp_path):
    sp = DiskSpool(tmp_path, segment_bytes=1000)
    for i in range(50):
        sp.put(f"k{i}", [b"x" * 100])
    assert len(list(tmp_path.glob("*.seg"))) > 3
    for i in range(50):
        sp.remove(f"k{i}")
    assert len(sp) == 0 and sp.total_bytes == 0
    assert len(list(tmp_path.glob("*.seg"))) <= 2
    assert len(DiskSpool(tmp_path)) == 0


def test_spool_copies_a_stuck_message_forward_instead_of_pinning_old_segments(tmp_path):
    sp = DiskSpool(tmp_path, segment_bytes=500, max_segments=3)
    sp.put("stuck", [b"s" * 10])
    for i in range(60):
        sp.put(f"k{i}", [b"x" * 100])
        sp.remove(f"k{i}")
    assert len(list(tmp_path.glob("*.seg"))) <= 4
    sp.close()
    again = DiskSpool(tmp_path)
    assert again.keys() == ["stuck"] and again.get("stuck") == [b"s" * 10]


def test_spool_does_not_rewrite_a_backlog_that_is_mostly_live(tmp_path):
    # a burst: many segments of live records, done slightly out of order (the head of each pair last)
    sp = DiskSpool(tmp_path, segment_bytes=5000, max_segments=3)  # records 1 kB, removal tombstones ~30 B
    for i in range(60):
        sp.put(f"k{i}", [b"x" * 1000])
    for i in range(0, 60, 2):
        sp.remove(f"k{i + 1}")
        sp.remove(f"k{i}")
    assert sp.copied_forward_bytes == 0
    assert len(sp) == 0 and len(list(tmp_path.glob("*.seg"))) <= 2
    # the stuck case still copies: one old record, the rest of the disk dead
    sp.put("stuck", [b"s" * 10])
    for i in range(60):
        sp.put(f"j{i}", [b"x" * 1000])
        sp.remove(f"j{i}")
    assert sp.copied_forward_bytes > 0 and len(list(tmp_path.glob("*.seg"))) <= 4


def test_spool_cuts_a_torn_record_after_a_crash(tmp_path):
    sp = DiskSpool(tmp_path)
    sp.put("a", [b"alpha"])
    sp.put("b", [b"beta"])
    sp.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    seg.write_bytes(seg.read_bytes()[:-3])  # the last record was half written
    again = DiskSpool(tmp_path)
    assert again.keys() == ["a"]
    again.put("c", [b"gamma"])
    assert DiskSpool(tmp_path).keys() == ["a", "c"]


def test_protocol_round_trip_keeps_arrays_exact():
    arrays = {"energy": np.linspace(1, 2, 5), "stack": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
              "flags": np.array([True, False])}
    env = P.UnitEnvelope(WorkUnit("run", "tile", 3, arrays, {"y0": 16, "nan": float("nan")}), affinity="map:run")
    cmd, body = P.split_envelope([bytes(memoryview(f)) for f in P.encode_unit(env)])
    back = P.decode_unit(body)
    assert cmd == P.UNIT and back.unit_id == "run:tile:3" and back.affinity == "map:run"
    for k, v in arrays.items():
        assert back.unit.arrays[k].dtype == v.dtype and np.array_equal(back.unit.arrays[k], v)
    assert back.unit.metadata == {"y0": 16, "nan": None}


def test_protocol_rejects_a_unit_id_that_does_not_match_its_parts():
    env = P.UnitEnvelope(WorkUnit("run", "spectrum", 0, {"mu": np.zeros(3)}))
    header, *bufs = P.encode_unit(env)[2:]
    forged = header.replace(b'"run:spectrum:0"', b'"other:spectrum:0"')
    with pytest.raises(P.ProtocolError, match="does not match"):
        P.decode_unit([forged, *bufs])


def test_run_start_hint_round_trip_and_checks():
    body = P.encode_open("run-1", "tile", "map:run-1", {"sample": "phantom", "map_ny": 32})
    info = P.decode_open([body])
    assert (info["run_uid"], info["kind"], info["affinity"], info["metadata"]["map_ny"]) == (
        "run-1", "tile", "map:run-1", 32)
    for bad, why in [(P.encode_open("run-1", "cake", None, {}), "OPEN kind"),
                     (P.encode_open("", "spectrum", None, {}), "run_uid"),
                     (P.dumps({"run_uid": "r", "kind": "spectrum", "affinity": 3}), "affinity"),
                     (P.dumps({"run_uid": "r", "kind": "spectrum", "metadata": [1]}), "metadata"),
                     (b"not json", "JSON")]:
        with pytest.raises(P.ProtocolError, match=why):
            P.decode_open([bad])


def test_config_file_env_and_overrides(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text('[service]\nworkers = 3\n[tiled]\nuri = "http://t:8000/api/v1"\n[analysis."xafs.normalize"]\nkweight = 3\n')
    cfg = load_config(f, environ={"XAFS_STREAM_SERVICE_WORKERS": "5"}, overrides={"tiled": {"api_key": "k"}})
    assert cfg.service.workers == 5 and cfg.tiled.uri == "http://t:8000/api/v1" and cfg.tiled.api_key == "k"
    assert cfg.analysis["xafs.normalize"] == {"kweight": 3}
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(f, environ={"XAFS_STREAM_BROKER_PORTT": "1"})
    bad = tmp_path / "bad.toml"
    bad.write_text("[service]\nworkers = 'many'\n")
    with pytest.raises(ConfigError, match="workers: expected int"):
        load_config(bad, environ={})
    assert load_config(environ={}).worker.slow_nice == 10  # a slow-lane worker yields the CPU by default
    with pytest.raises(ConfigError, match=r"\[worker\] slow_nice must be 0 \.\. 19"):
        load_config(environ={"XAFS_STREAM_WORKER_SLOW_NICE": "25"})


def test_result_event_round_trip_and_checks():
    event = {"run_uid": "run-1", "analysis": "xafs.normalize", "unit": "repeat_0", "unit_id": "u",
             "path": "xafs_results/run-1/xafs_normalize/repeat_0", "status": "ok", "family": "table",
             "summary": {"e0": 8979.1}, "table": {"columns": ["energy"], "lengths": {"energy": 3}}}
    info = P.decode_stored([P.encode_stored(event)])
    assert {k: info[k] for k in event} == event and info["schema"] == P.SCHEMA_VERSION
    assert P.stored_topic("run-1", "xafs.normalize") == b"stored/run-1/xafs.normalize/"
    assert P.stored_topic("run-1", "xafs.normalize").startswith(P.stored_topic("run-1"))
    for change, why in [({"status": "fine"}, "status"), ({"path": ""}, "path"), ({"family": "image"}, "family"),
                        ({"table": {"lengths": {}}}, "columns"), ({"summary": [1]}, "summary"),
                        ({"run_uid": 7}, "run_uid")]:
        with pytest.raises(P.ProtocolError, match=why):
            P.decode_stored([P.encode_stored({**event, **change})])
    with pytest.raises(P.ProtocolError, match="schema"):
        P.decode_stored([P.dumps(event)])
