"""Hostile and broken messages: each one measured to break the service before gets a clear reject, and the
next valid unit is still processed. Real sockets, a real broker and worker; real Tiled for the storage layer.
"""

from __future__ import annotations

import json
import threading
import uuid

import numpy as np
import pytest
import zmq

from xafs_stream.analyses.registry import Analysis, Registry
from xafs_stream.config import BrokerConfig, WorkerConfig
from xafs_stream.core import AnalysisResult, ResultRecord, UnitEnvelope, WorkUnit
from xafs_stream.storage.results import ResultStore
from xafs_stream.transport import protocol as P
from xafs_stream.transport.broker import Broker
from xafs_stream.transport.publisher import UnitPublisher, broker_status
from xafs_stream.worker import UnitHandler, Worker


def _header(**changes) -> dict:
    """A valid SUBMIT header of a 3-point spectrum, with ``changes`` applied."""
    run = "run-ok"
    header = {"schema": 1, "unit_id": f"{run}:spectrum:0", "run_uid": run, "kind": "spectrum", "index": 0,
              "metadata": {}, "arrays": [{"name": "mu", "dtype": "<f8", "shape": [3]}], "analyses": None,
              "affinity": None, "attempt": 0}
    header.update(changes)
    return header


def _unit_frames(header: dict | bytes, data: bytes = np.zeros(3).tobytes()) -> list[bytes]:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return [raw, data]


#: SUBMIT bodies that ended the broker, wrote outside the results tree, or stalled a worker (issue 16)
HOSTILE_UNITS = {
    "deeply nested JSON": _unit_frames(b'{"schema": 1, "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "5,000-digit integer": _unit_frames(json.dumps(_header()).replace('"index": 0', '"index": ' + "9" * 5000).encode()),
    "400-digit t_complete": _unit_frames(
        json.dumps(_header(metadata={"t_complete": 1})).replace('"t_complete": 1', '"t_complete": ' + "9" * 400)
        .encode()),
    "shape [0, 10**100]": _unit_frames(_header(arrays=[{"name": "mu", "dtype": "<f8", "shape": [0, 10**100]}]), b""),
    "lone surrogate id": _unit_frames(json.dumps(_header(run_uid="\ud800", unit_id="\ud800:spectrum:0")).encode()),
    "NaN attempt": _unit_frames(json.dumps(_header()).replace('"attempt": 0', '"attempt": NaN').encode()),
    "index escaping the results folder": _unit_frames(
        _header(index="z/../../../../victimrun", unit_id="run-ok:spectrum:z/../../../../victimrun")),
    "run id escaping into a raw run": _unit_frames(
        _header(run_uid="../victimrun3/primary", index="z/../../I0",
                unit_id="../victimrun3/primary:spectrum:z/../../I0")),
    "run id ..": _unit_frames(_header(run_uid="..", unit_id="..:spectrum:0")),
    "analysis name with a slash": _unit_frames(_header(analyses=["xafs/../normalize"])),
    "huge affinity": _unit_frames(_header(affinity="x" * 10_000)),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_UNITS))
def test_each_hostile_unit_is_a_protocol_error(name):
    with pytest.raises(P.ProtocolError):
        P.decode_unit(HOSTILE_UNITS[name])


@pytest.mark.parametrize("body, words", [
    ([b'{"credit": Infinity}'], "not valid JSON"),
    ([b'{"credit": 1e999}'], "not finite"),
    ([b'{"credit": 100000000}'], "credit must be an integer 0..10000"),
    ([b'{"credit": "2"}'], "credit must be an integer"),
    ([b'{"credit": 1, "worker": "' + b"w" * 5000 + b'"}'], "at most 256 characters"),
])
def test_ready_bodies_are_checked(body, words):
    with pytest.raises(P.ProtocolError, match=words):
        P.decode_ready(body)


def test_stored_events_must_name_their_place_in_the_results_tree():
    good = {"run_uid": "run-1", "analysis": "xafs.normalize", "unit": "repeat_0", "status": "ok",
            "family": "table", "path": "xafs_results/run-1/xafs_normalize/repeat_0"}
    assert P.decode_stored([P.encode_stored(good)])["path"] == good["path"]
    for path in ("xafs_results/run-1/xafs_normalize/../../victim", "victim", "../run-1/xafs_normalize/repeat_0",
                 "xafs_results/run-2/xafs_normalize/repeat_0"):
        with pytest.raises(P.ProtocolError, match="path|results root"):
            P.decode_stored([P.encode_stored({**good, "path": path})])


def test_a_result_event_reads_only_its_own_result_node():
    from xafs_stream.transport.events import ResultEvent

    event = ResultEvent(run_uid="run-1", analysis="xafs.normalize", unit="repeat_0", unit_id="x",
                        path="run-1/primary/internal/x", status="ok", family="table")
    with pytest.raises(ValueError, match="not its result's place"):
        event.read(client=None)


def test_unsafe_ids_cannot_be_built_into_units_or_records():
    for run, index in (("..", 0), ("run-1", "z/../../x"), ("a/b", 0), ("run-1", -1), ("run-1", 10**12)):
        with pytest.raises(ValueError, match="run uid|unit index"):
            WorkUnit(run, "spectrum", index, {})


def test_the_results_store_writes_only_inside_the_results_tree(tiled):
    """Records with unsafe ids (built around the WorkUnit checks) are refused before any request, and the
    raw-run stand-ins next to the results survive."""
    client = tiled.client
    victim = f"victimrun{uuid.uuid4().hex[:8]}"
    client.create_container(victim, metadata={"raw": True})
    store = ResultStore(client)
    for run_uid, index, analysis in ((f"z/../../../../{victim}", 0, "xafs.normalize"), ("..", 0, "xafs.normalize"),
                                     ("run-a", f"z/../../../../{victim}", "xafs.normalize"),
                                     ("run-a", 0, "../../victim")):
        record = ResultRecord(run_uid=run_uid, unit_id="x", kind="spectrum", index=index, analysis=analysis,
                              version="1", status="ok", result=AnalysisResult(summary={"a": 1.0}))
        with pytest.raises(ValueError):
            store.write(record)
    assert victim in client and client[victim].metadata["raw"] is True


# ------------------------------------------------------------------------------------------ live broker


class _Counting:
    """Stands in for Tiled: keeps every record it is given."""

    def __init__(self):
        self.records = []

    def write(self, record):
        self.records.append(record)


def _registry() -> Registry:
    registry = Registry()
    registry.add(Analysis("toy.mean", "spectrum", "1",
                          lambda unit, up, settings: AnalysisResult(summary={"mean": float(np.mean(unit.arrays["mu"]))})))
    return registry


@pytest.fixture
def broker(tmp_path):
    broker = Broker(BrokerConfig(frontend="tcp://127.0.0.1:0", backend="tcp://127.0.0.1:0", events="",
                                 store_dir=str(tmp_path / "store"), heartbeat_s=0.2, worker_timeout_s=2.0))
    thread = threading.Thread(target=broker.run, daemon=True)
    thread.start()
    yield broker
    broker.stop()
    thread.join(5)
    assert not thread.is_alive()


def _dealer(address: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    return sock


def test_no_hostile_message_ends_the_broker_and_the_next_unit_is_processed(broker, tmp_path, wait_for, caplog):
    frontend, backend = _dealer(broker.frontend_address), _dealer(broker.backend_address)
    for body in HOSTILE_UNITS.values():
        frontend.send_multipart([P.PROTOCOL, P.SUBMIT, *body])
    for body in ([b'{"credit": Infinity}'], [b"[" * 50_000], [b'{"unit_id": "' + b"x" * 900_000 + b'"}'],
                 [b'{"credit": 1e999}'], [b"\xff\xfe"]):
        backend.send_multipart([P.PROTOCOL, P.READY, *body])
        backend.send_multipart([P.PROTOCOL, P.DONE, *body])
        backend.send_multipart([P.PROTOCOL, P.STORED, *body])
    frontend.send_multipart([b"XSP1", b"NOPE", b"x" * 900_000])
    replies = []
    while frontend.poll(3000):
        replies.append(frontend.recv_multipart())
    assert len(replies) == len(HOSTILE_UNITS) + 1 and all(r[1] == P.REJECT for r in replies)
    reasons = [json.loads(r[2])["reason"] for r in replies]
    assert all(len(r) <= 200 for r in reasons)  # never echoed at length
    status = broker_status(broker.frontend_address)
    assert status["stats"]["rejected"] >= len(HOSTILE_UNITS) + 10 and status["workers"] == []
    # the broker's log: a few examples, each line short (a 900 kB field is not echoed)
    lines = [r.getMessage() for r in caplog.records if r.name == "xafs_stream.transport.broker"]
    assert len(lines) <= 6 and all(len(line) < 500 for line in lines)
    # and a real unit still goes through
    store = _Counting()
    worker = Worker(broker.backend_address, UnitHandler(store, _registry()), WorkerConfig(credit=2),
                    BrokerConfig(heartbeat_s=0.2), name="w-ok")
    threading.Thread(target=worker.run, daemon=True).start()
    pub = UnitPublisher(broker.frontend_address, tmp_path / "outbox")
    try:
        pub.submit(UnitEnvelope(WorkUnit("run-good", "spectrum", 0, {"mu": np.array([1.0, 2.0, 3.0])})))
        assert wait_for(lambda: store.records, 20)
        assert store.records[0].status == "ok" and store.records[0].result.summary["mean"] == 2.0
    finally:
        worker.stop()
        pub.close(1)


def test_forged_done_messages_do_not_delete_queued_units(broker, tmp_path, wait_for):
    """A peer that says READY with no credit and then DONE for queued unit ids (which it never held) deletes
    nothing: the real worker that joins later processes every unit."""
    pub = UnitPublisher(broker.frontend_address, tmp_path / "outbox")
    units = [UnitEnvelope(WorkUnit("run-q", "spectrum", i, {"mu": np.full(3, float(i))})) for i in range(5)]
    for env in units:
        pub.submit(env)
    assert pub.flush(10)
    rogue = _dealer(broker.backend_address)
    rogue.send_multipart([P.PROTOCOL, P.READY, b'{"credit": 0}'])
    for env in units:
        rogue.send_multipart([P.PROTOCOL, P.DONE, P.dumps({"unit_id": env.unit_id, "status": "ok"})])
    assert wait_for(lambda: broker_status(broker.frontend_address)["stats"]["late_done"] >= 5, 10)
    assert broker_status(broker.frontend_address)["pending"] == 5
    store = _Counting()
    worker = Worker(broker.backend_address, UnitHandler(store, _registry()), WorkerConfig(credit=2),
                    BrokerConfig(heartbeat_s=0.2), name="w-real")
    threading.Thread(target=worker.run, daemon=True).start()
    try:
        assert wait_for(lambda: len(store.records) == 5, 20)
        assert sorted(r.index for r in store.records) == [0, 1, 2, 3, 4]
    finally:
        worker.stop()
        pub.close(1)


def test_a_second_unit_with_the_same_id_and_other_data_is_rejected_not_dropped(broker):
    frontend = _dealer(broker.frontend_address)
    first = P.encode_unit(UnitEnvelope(WorkUnit("run-d", "spectrum", 0, {"mu": np.zeros(3)})), P.SUBMIT)
    other = P.encode_unit(UnitEnvelope(WorkUnit("run-d", "spectrum", 0, {"mu": np.ones(3)})), P.SUBMIT)
    replies = []
    for frames in (first, first, other):
        frontend.send_multipart([bytes(f) for f in frames])
        assert frontend.poll(5000)
        replies.append(frontend.recv_multipart())
    assert [r[1] for r in replies] == [P.ACK, P.ACK, P.REJECT]  # the resend is fine, the impostor is not
    assert "different data" in json.loads(replies[2][2])["reason"]


def test_a_unit_that_fails_outside_its_analyses_is_recorded_and_its_credit_returns(broker, tmp_path, wait_for):
    """Before: such a unit never got a DONE, the worker's credit was lost and later units stalled."""
    store = _Counting()
    worker = Worker(broker.backend_address, UnitHandler(store, _registry(), post_process=_explode_on(1)),
                    WorkerConfig(credit=1), BrokerConfig(heartbeat_s=0.2), name="w-crash")
    threading.Thread(target=worker.run, daemon=True).start()
    pub = UnitPublisher(broker.frontend_address, tmp_path / "outbox")
    try:
        for i in range(4):
            pub.submit(UnitEnvelope(WorkUnit("run-c", "spectrum", i, {"mu": np.full(3, float(i))})))
        assert wait_for(lambda: broker_status(broker.frontend_address)["stats"]["done"] == 4, 20)
        by_index = {}
        for r in store.records:
            by_index.setdefault(r.index, []).append(r.status)
        assert by_index[1][-1] == "error" and all(by_index[i] == ["ok"] for i in (0, 2, 3))
        (error,) = [r for r in store.records if r.status == "error"]
        assert error.error == "not analysed: failed: RuntimeError: post-processing exploded"
    finally:
        worker.stop()
        pub.close(1)


def _explode_on(index):
    def post_process(envelope, records):
        if envelope.unit.index == index:
            raise RuntimeError("post-processing exploded")
        return []

    return post_process
