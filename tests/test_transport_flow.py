"""Broker flow control with real sockets: back-pressure under a burst, credits, and the serve command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest
import zmq

from xafs_stream.analyses.registry import Registry
from xafs_stream.config import BrokerConfig, WorkerConfig
from xafs_stream.core import UnitEnvelope, WorkUnit
from xafs_stream.transport.broker import Broker
from xafs_stream.transport.publisher import UnitPublisher, broker_status
from xafs_stream.worker import UnitHandler, Worker


class CountingStore:
    def write(self, record):  # the empty registry yields no records: units are counted by the hook below
        raise AssertionError("no records expected")


def test_burst_is_held_back_by_busy_then_drained_without_loss(tmp_path, wait_for):
    broker = Broker(BrokerConfig(frontend="tcp://127.0.0.1:0", backend="tcp://127.0.0.1:0", events="",
                                 store_dir=str(tmp_path / "store"), max_pending=5, heartbeat_s=0.2))
    thread = threading.Thread(target=broker.run, daemon=True)
    thread.start()
    pub = UnitPublisher(broker.frontend_address, tmp_path / "outbox", window=4)
    run = str(uuid.uuid4())
    for i in range(30):  # no worker yet: the broker stores 5 and answers BUSY to the rest
        pub.submit(UnitEnvelope(WorkUnit(run, "spectrum", i, {"mu": np.full(1000, float(i))})))
    time.sleep(1.5)
    st = broker_status(broker.frontend_address)
    assert st["stored"] == 5 and st["stats"]["busy"] > 0
    assert len(pub) == 25  # the rest waits, durably, in the producer's outbox: nothing dropped
    seen: list[str] = []
    handler = UnitHandler(CountingStore(), Registry(),
                          post_process=lambda env, records: seen.append(env.unit_id) or [])
    worker = Worker(broker.backend_address, handler, WorkerConfig(credit=2), BrokerConfig(heartbeat_s=0.2),
                    name="w-flow")
    wthread = threading.Thread(target=worker.run, daemon=True)
    wthread.start()
    assert pub.flush(60)
    wait_for(lambda: broker_status(broker.frontend_address)["stats"]["done"] >= 30, 60)
    st = broker_status(broker.frontend_address)
    worker.stop()
    broker.stop()
    pub.close(1)
    assert sorted(seen) == sorted(f"{run}:spectrum:{i}" for i in range(30))  # each exactly once
    assert st["stats"]["done"] == 30 and st["stored"] == 0


def test_serve_command_runs_the_service_until_interrupted(tmp_path, RE, beamline, collect, wait_for):
    from xafs_stream.plans import xafs_scan

    from xafs_stream.config import load_config
    from xafs_stream.service import subscribe
    from xafs_stream.storage.layout import result_node
    from xafs_stream.storage.tiled_server import connect_tiled

    env = {**os.environ, "XAFS_STREAM_WORKER_ANALYSES": "xafs.normalize", "XAFS_STREAM_DASHBOARD_PORT": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "xafs_stream.cli.main", "serve", "--data-dir", str(tmp_path), "--workers", "1",
         "--frontend", "tcp://127.0.0.1:0", "--backend", "tcp://127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(lines)
        tiled_url = re.search(r"Tiled:\s+(http://\S+)\?api_key=(\w+)", text)
        frontend = re.search(r"producers -> (tcp://\S+)", text)
        assert tiled_url and frontend, text
        dashboard = re.search(r"dashboard: (http://\S+)", text)
        assert dashboard, text
        import httpx

        assert "<html" in httpx.get(dashboard.group(1), timeout=10).text.lower()
        handle = connect_tiled(f"{tiled_url.group(1)}/api/v1", api_key=tiled_url.group(2))
        cfg = load_config(overrides={"service": {"data_dir": str(tmp_path / "session")}})
        session = subscribe(RE, cfg, tiled_client=handle.client, frontend=frontend.group(1))
        RE(xafs_scan([beamline.scaler], beamline.dcm, [[-60, 60, 2, "E"]], element="Cu", sample="Cu", dwell_s=0.2))
        session.flush()
        uid = collect[0][1]["uid"]
        done = wait_for(lambda: result_node(handle.client, uid, "xafs.normalize", "merge") is not None, 90,
                        poll_s=0.5)
        session.close()
        assert done, "no result from the served workers"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0


def _start(broker: Broker) -> threading.Thread:
    thread = threading.Thread(target=broker.run, daemon=True)
    thread.start()
    return thread


def _holding(gate: threading.Event, seen: list[str]):
    """A worker hook that holds each unit until ``gate`` is set, then notes it (and adds no records)."""
    def hook(envelope, records):
        gate.wait(30)
        seen.append(envelope.unit_id)
        return []
    return hook


def test_unit_a_worker_takes_at_once_is_acknowledged_on_done_and_never_written_by_the_broker(
        tmp_path, wait_for):
    broker = Broker(BrokerConfig(frontend="tcp://127.0.0.1:0", backend="tcp://127.0.0.1:0", events="",
                                 store_dir=str(tmp_path / "store"), heartbeat_s=0.2, ack_after_done_s=1.0))
    _start(broker)
    release = threading.Event()
    seen: list[str] = []
    handler = UnitHandler(CountingStore(), Registry(), post_process=_holding(release, seen))
    worker = Worker(broker.backend_address, handler, WorkerConfig(credit=2), BrokerConfig(heartbeat_s=0.2),
                    name="w-defer")
    threading.Thread(target=worker.run, daemon=True).start()
    assert wait_for(lambda: len(broker_status(broker.frontend_address)["workers"]) == 1)
    pub = UnitPublisher(broker.frontend_address, tmp_path / "outbox", window=4)
    run = str(uuid.uuid4())
    try:
        # fast: done within ack_after_done_s -> the ACK comes with DONE, the broker's disk never sees it
        pub.submit(UnitEnvelope(WorkUnit(run, "spectrum", 0, {"mu": np.arange(100.0)})))
        assert wait_for(lambda: broker_status(broker.frontend_address)["deferred"] == 1)
        time.sleep(0.3)
        assert len(pub) == 1  # not acknowledged yet: the producer's outbox is what holds it
        release.set()
        assert pub.flush(10)
        st = broker_status(broker.frontend_address)
        assert st["stats"]["acked_on_done"] == 1 and st["stats"]["stored_late"] == 0
        assert broker.store.total_bytes == 0 and not any(p.stat().st_size for p in (tmp_path / "store").glob("*.seg"))
        # slow: not done within ack_after_done_s -> stored, then acknowledged, while the worker still has it
        release.clear()
        pub.submit(UnitEnvelope(WorkUnit(run, "spectrum", 1, {"mu": np.arange(100.0)})))
        assert wait_for(lambda: broker_status(broker.frontend_address)["stats"]["stored_late"] == 1)
        assert pub.flush(5) and broker_status(broker.frontend_address)["stored"] == 1
        release.set()
        assert wait_for(lambda: broker_status(broker.frontend_address)["stats"]["done"] == 2)
        assert broker_status(broker.frontend_address)["stored"] == 0
        assert seen == [f"{run}:spectrum:0", f"{run}:spectrum:1"]
        # an orderly stop stores what is deferred, so nothing waits on the producer's resend
        release.clear()
        pub.submit(UnitEnvelope(WorkUnit(run, "spectrum", 2, {"mu": np.arange(100.0)})))
        assert wait_for(lambda: broker_status(broker.frontend_address)["deferred"] == 1)
        broker.stop()
        assert pub.flush(10) and broker.store.keys() == [f"{run}:spectrum:2"]
    finally:
        release.set()
        worker.stop()
        broker.stop()
        pub.close(1)


def test_broker_crash_while_a_unit_is_deferred_loses_nothing(tmp_path, wait_for):
    cfg = {"store_dir": str(tmp_path / "store"), "events": "", "heartbeat_s": 0.2, "worker_timeout_s": 1.0,
           "ack_after_done_s": 30.0}
    broker = Broker(BrokerConfig(frontend="tcp://127.0.0.1:0", backend="tcp://127.0.0.1:0", **cfg))
    thread = _start(broker)
    frontend, backend = broker.frontend_address, broker.backend_address
    hold = threading.Event()
    seen: list[str] = []
    worker = Worker(backend, UnitHandler(CountingStore(), Registry(), post_process=_holding(hold, seen)),
                    WorkerConfig(credit=2), BrokerConfig(heartbeat_s=0.2), name="w-crash")
    threading.Thread(target=worker.run, daemon=True).start()
    assert wait_for(lambda: len(broker_status(frontend)["workers"]) == 1)
    pub = UnitPublisher(frontend, tmp_path / "outbox", window=4, ack_timeout_s=1.0)
    run = str(uuid.uuid4())
    try:
        pub.submit(UnitEnvelope(WorkUnit(run, "spectrum", 0, {"mu": np.arange(100.0)})))
        assert wait_for(lambda: broker_status(frontend)["deferred"] == 1)
        # the broker dies (no orderly close, which would store the unit) with the unit only in its memory
        # and in the worker's hands
        broker.close = lambda: [sock.close(0) for sock in (broker.frontend, broker.backend)]
        broker.stop()
        thread.join(5)
        assert len(broker.store) == 0 and len(pub) == 1
        for _ in range(100):  # libzmq releases the closed sockets' ports asynchronously
            try:
                broker = Broker(BrokerConfig(frontend=frontend, backend=backend, **cfg))
                break
            except zmq.ZMQError:
                time.sleep(0.05)
        thread = _start(broker)
        hold.set()  # the first delivery finishes too (its DONE reaches the new broker as a late one)
        assert pub.flush(30)  # the producer resent it after its ACK timeout
        assert wait_for(lambda: broker_status(frontend)["stats"]["done"] >= 1)
        assert wait_for(lambda: broker_status(frontend)["stored"] == 0)
        assert set(seen) == {f"{run}:spectrum:0"} and 1 <= len(seen) <= 2  # at least once; results are idempotent
    finally:
        hold.set()
        worker.stop()
        broker.stop()
        pub.close(1)


def test_stored_results_reach_event_subscribers_through_the_broker(tmp_path, wait_for):
    """A worker's STORED goes worker → broker → SUB subscribers, filtered by run; a malformed one is dropped."""
    from xafs_stream.analyses.registry import Analysis, AnalysisResult
    from xafs_stream.transport import protocol as P
    from xafs_stream.transport.events import ResultEvents

    broker = Broker(BrokerConfig(frontend="tcp://127.0.0.1:0", backend="tcp://127.0.0.1:0",
                                 events="tcp://127.0.0.1:0", store_dir=str(tmp_path / "store"), heartbeat_s=0.2))
    _start(broker)

    class EventStore:  # stands in for Tiled: "stores" and returns the event ResultStore.write returns
        def write(self, record):
            return {"run_uid": record.run_uid, "analysis": record.analysis, "unit": f"repeat_{record.index}",
                    "unit_id": record.unit_id,
                    "path": f"xafs_results/{record.run_uid}/toy_mean/repeat_{record.index}",
                    "status": record.status, "family": "table", "summary": record.result.summary,
                    "table": None}

    registry = Registry()
    registry.add(Analysis("toy.mean", "spectrum", "1",
                          lambda unit, up, cfg: AnalysisResult(summary={"mean": float(unit.arrays["mu"].mean())})))
    worker = Worker(broker.backend_address, UnitHandler(EventStore(), registry), WorkerConfig(credit=2),
                    BrokerConfig(heartbeat_s=0.2), name="w-events")
    threading.Thread(target=worker.run, daemon=True).start()
    runs = [str(uuid.uuid4()), str(uuid.uuid4())]
    everything = ResultEvents(broker.events_address)
    one_run = ResultEvents(broker.events_address, run_uid=runs[1], analysis="toy.mean")
    pub = UnitPublisher(broker.frontend_address, tmp_path / "outbox", window=4)
    try:
        assert wait_for(lambda: len(broker_status(broker.frontend_address)["workers"]) == 1)
        assert everything.wait_ready() and one_run.wait_ready()  # the broker has both subscriptions
        # a malformed event from a "worker" is counted and not published
        rogue = zmq.Context.instance().socket(zmq.DEALER)
        rogue.setsockopt(zmq.LINGER, 0)
        rogue.connect(broker.backend_address)
        rogue.send_multipart([P.PROTOCOL, P.READY, b'{"credit": 0}'])
        rogue.send_multipart([P.PROTOCOL, P.STORED, P.encode_stored({"run_uid": runs[0], "status": "??"})])
        for run in runs:
            for i in range(3):
                pub.submit(UnitEnvelope(WorkUnit(run, "spectrum", i, {"mu": np.full(50, 10.0 * i + 1)})))
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 6 and time.monotonic() < deadline:
            event = everything.get(timeout_s=1)
            if event is not None:
                got.append(event)
        assert sorted((e.run_uid, e.unit) for e in got) == sorted((r, f"repeat_{i}") for r in runs for i in range(3))
        assert {e.unit: e.flat_summary["mean"] for e in got if e.run_uid == runs[0]} == {
            "repeat_0": 1.0, "repeat_1": 11.0, "repeat_2": 21.0}
        mine = list(one_run.iter(timeout_s=1))
        assert sorted(e.unit for e in mine) == ["repeat_0", "repeat_1", "repeat_2"]
        assert all(e.run_uid == runs[1] and e.ok for e in mine)
        st = broker_status(broker.frontend_address)
        assert st["stats"]["events"] == 6 and st["stats"]["rejected"] >= 1
        # a worker the broker does not know (it stored while the broker was restarting): still published
        stranger = zmq.Context.instance().socket(zmq.DEALER)
        stranger.setsockopt(zmq.LINGER, 0)
        stranger.connect(broker.backend_address)
        stranger.send_multipart([P.PROTOCOL, P.STORED, P.encode_stored({
            "run_uid": runs[1], "analysis": "toy.mean", "unit": "merge",
            "path": f"xafs_results/{runs[1]}/toy_mean/merge", "status": "error",
            "family": "container", "error": "boom"})])
        late = one_run.get(timeout_s=5)
        assert late is not None and (late.unit, late.status, late.error) == ("merge", "error", "boom")
        stranger.close(0)
        rogue.close(0)
    finally:
        everything.close()
        one_run.close()
        worker.stop()
        broker.stop()
        pub.close(1)


def test_watch_command_prints_results_as_they_are_stored(tmp_path, capsys):
    """``xafs-stream watch`` against a real broker: a worker's STORED event becomes one line (or JSON)."""
    import json

    from xafs_stream.cli.main import main
    from xafs_stream.transport import protocol as P
    from xafs_stream.transport.events import connectable

    broker = Broker(BrokerConfig(frontend="tcp://127.0.0.1:0", backend="tcp://127.0.0.1:0",
                                 events="tcp://127.0.0.1:0", store_dir=str(tmp_path / "store"), heartbeat_s=0.2))
    _start(broker)
    worker = zmq.Context.instance().socket(zmq.DEALER)
    worker.setsockopt(zmq.LINGER, 0)
    worker.connect(broker.backend_address)
    worker.send_multipart([P.PROTOCOL, P.READY, b'{"credit": 0}'])
    events = [P.encode_stored({"run_uid": "run-a", "analysis": "xafs.normalize", "unit": "repeat_0",
                               "path": "xafs_results/run-a/xafs_normalize/repeat_0",
                               "status": "ok", "family": "table", "summary": {"e0": 8979.25, "edge_step": 1.5}}),
              P.encode_stored({"run_uid": "run-b", "analysis": "spm", "unit": "merge",
                               "path": "xafs_results/run-b/spm/merge",
                               "status": "error", "family": "container", "error": "no FEFF paths for Zn"})]
    try:
        for args, body, expected in [
                (["--run", "run-a"], events[0], "run-a xafs.normalize repeat_0 ok e0=8979.25 edge_step=1.5"),
                (["--analysis", "spm"], events[1], "run-b spm merge error no FEFF paths for Zn")]:
            rc: list[int] = []
            thread = threading.Thread(target=lambda a=args, out=rc: out.append(main(
                ["watch", "--events", broker.events_address, "--count", "1", "--timeout", "20", *a])))
            thread.start()
            while thread.is_alive():  # PUB/SUB: sent until the watcher has subscribed and printed it
                for body_i in events:  # the other event is filtered out by --run / --analysis
                    worker.send_multipart([P.PROTOCOL, P.STORED, body_i])
                thread.join(0.1)
            assert rc == [0]
            line = capsys.readouterr().out.strip().splitlines()[0]
            assert line.split(" ", 1)[1] == expected
        thread = threading.Thread(target=lambda: main(["watch", "--events", broker.events_address, "--json",
                                                       "--count", "1", "--run", "run-a"]))
        thread.start()
        while thread.is_alive():
            worker.send_multipart([P.PROTOCOL, P.STORED, events[0]])
            thread.join(0.1)
        record = json.loads(capsys.readouterr().out.strip().splitlines()[0])
        assert record["summary"] == {"e0": 8979.25, "edge_step": 1.5} and record["path"] == "xafs_results/run-a/xafs_normalize/repeat_0"
        assert main(["watch", "--events", "", "--count", "1"]) == 2  # no address: one-line error
        assert "no events address" in capsys.readouterr().err
        assert connectable("tcp://*:5562") == connectable("tcp://0.0.0.0:5562") == "tcp://127.0.0.1:5562"
    finally:
        worker.close(0)
        broker.stop()


def test_a_result_the_server_keeps_failing_with_500_goes_back_to_the_broker_not_retried_forever():
    """Tiled answering HTTP 500 to every write of a result (its disk full, an array left unwritable) must not
    hold the unit forever: after a few attempts the handler gives the unit back (StoreFailed: the broker keeps
    it as failing, see test_nothing_lost); while Tiled is down (503, connection refused) it keeps retrying;
    a result Tiled refuses (4xx) is stored as an error record saying why."""
    import httpx

    from xafs_stream.analyses.registry import AnalysisResult
    from xafs_stream.core import ResultRecord

    class FailingStore:
        def __init__(self, status: int, failures: int):
            self.status, self.failures, self.calls, self.stored = status, failures, 0, []

        def write(self, record):
            self.calls += 1
            if record.status == "ok" and self.calls <= self.failures:
                request = httpx.Request("PUT", "http://tiled/api/v1/array/full/x")
                raise httpx.HTTPStatusError("server error", request=request,
                                            response=httpx.Response(self.status, request=request))
            self.stored.append((record.status, record.error))

    def record():
        return ResultRecord(run_uid="r", unit_id="r:map:map", kind="map", index="map", analysis="imaging.map",
                            version="1", status="ok", result=AnalysisResult(summary={"x": 1.0}))

    from xafs_stream.worker.handler import StoreFailed

    broken = FailingStore(500, failures=100)
    with pytest.raises(StoreFailed, match=r"imaging.map of r:map:map could not be stored: .*\(HTTP 500\)"):
        UnitHandler(broken, Registry(), name="w-500", retry_s=0.01).store_record(record())
    assert broken.calls == UnitHandler.max_internal_errors and broken.stored == []
    refused = FailingStore(413, failures=1)  # too large for the server: recorded as an error, not retried
    UnitHandler(refused, Registry(), name="w-413").store_record(record())
    assert refused.calls == 2 and refused.stored[0][0] == "error" and "HTTP 413" in refused.stored[0][1]
    down = FailingStore(503, failures=4)  # unavailable (restarting): retried until it comes back
    UnitHandler(down, Registry(), name="w-503").store_record(record())
    assert down.calls == 5 and down.stored == [("ok", "")]
