"""Authenticated transport and a guarded dashboard.

With ``[security] keys``, a peer without the keys (or with another role's keys) cannot submit, fetch units,
acknowledge them or publish events, and everything works end to end for peers that hold them. Without keys,
nothing binds beyond loopback unless told to. The dashboard checks the Host header and, when exposed,
a token.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import httpx
import numpy as np
import pytest
import zmq

from xafs_stream.analyses.registry import Analysis, Registry
from xafs_stream.config import BrokerConfig, ConfigError, DashboardConfig, SecurityConfig, WorkerConfig
from xafs_stream.core import AnalysisResult, UnitEnvelope, WorkUnit
from xafs_stream.transport import protocol as P
from xafs_stream.transport.broker import Broker
from xafs_stream.transport.events import ResultEvents
from xafs_stream.transport.publisher import UnitPublisher, broker_status
from xafs_stream.transport.security import create_keys, is_loopback, secure_client
from xafs_stream.worker import UnitHandler, Worker


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    create_keys(directory)
    return str(directory)


class _Kept:
    def __init__(self):
        self.records = []

    def write(self, record):
        self.records.append(record)
        return {"run_uid": record.run_uid, "analysis": record.analysis, "unit": f"repeat_{record.index}",
                "unit_id": record.unit_id, "path": f"xafs_results/{record.run_uid}/toy_sum/repeat_{record.index}",
                "status": record.status, "family": "table", "summary": record.result.summary, "table": None}


@pytest.fixture
def secure_broker(tmp_path, keys):
    broker = Broker(BrokerConfig(frontend="tcp://127.0.0.1:0", backend="tcp://127.0.0.1:0",
                                 events="tcp://127.0.0.1:0", store_dir=str(tmp_path / "store"), heartbeat_s=0.2),
                    SecurityConfig(keys=keys))
    thread = threading.Thread(target=broker.run, daemon=True)
    thread.start()
    yield broker
    broker.stop()
    # the next test's broker binds the same in-process ZAP endpoint: this one must be gone first (on a
    # loaded machine its loop took more than 5 s to notice the stop)
    thread.join(60)
    assert not thread.is_alive(), "the broker thread did not stop"


def _registry() -> Registry:
    registry = Registry()
    registry.add(Analysis("toy.sum", "spectrum", "1",
                          lambda unit, up, s: AnalysisResult(summary={"sum": float(np.sum(unit.arrays["mu"]))})))
    return registry


def _send(sock: zmq.Socket, frames: list) -> None:
    """Send without waiting: a socket whose handshake was refused may have no peer to queue for."""
    try:
        sock.send_multipart(frames, zmq.NOBLOCK)
    except zmq.Again:
        pass


def _dealer(address: str, keys: str | None = None, role: str | None = None) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if keys:
        secure_client(sock, keys, role)
    sock.connect(address)
    return sock


def test_with_keys_everything_works_end_to_end(secure_broker, keys, tmp_path, wait_for):
    store = _Kept()
    worker = Worker(secure_broker.backend_address, UnitHandler(store, _registry()), WorkerConfig(credit=2),
                    BrokerConfig(heartbeat_s=0.2), name="w-keyed", keys=keys)
    threading.Thread(target=worker.run, daemon=True).start()
    events = ResultEvents(secure_broker.events_address, keys=keys)
    pub = UnitPublisher(secure_broker.frontend_address, tmp_path / "outbox", keys=keys)
    try:
        assert events.wait_ready(10)
        pub.submit(UnitEnvelope(WorkUnit("run-k", "spectrum", 0, {"mu": np.ones(4)})))
        assert pub.flush(20)
        event = events.get(timeout_s=20)
        assert event is not None and event.flat_summary == {"sum": 4.0}
        status = broker_status(secure_broker.frontend_address, keys=keys)
        assert status["stats"]["done"] == 1 and status["stats"]["denied"] == 0
    finally:
        worker.stop()
        pub.close(1)
        events.close()


def test_without_keys_or_with_another_roles_keys_nothing_gets_through(secure_broker, keys, tmp_path, wait_for):
    # a producer without keys: its SUBMIT never reaches the broker (no ACK, nothing stored)
    bare = _dealer(secure_broker.frontend_address)
    unit = P.encode_unit(UnitEnvelope(WorkUnit("run-x", "spectrum", 0, {"mu": np.ones(4)})), P.SUBMIT)
    _send(bare, [bytes(f) for f in unit])
    assert not bare.poll(1500)
    # a reader's key on the producer socket, a producer's on the worker socket: refused as well
    as_reader = _dealer(secure_broker.frontend_address, keys, "reader")
    _send(as_reader, [bytes(f) for f in unit])
    assert not as_reader.poll(1500)
    # queue one real unit, then try to fetch it, acknowledge it or fake its result without a worker key
    pub = UnitPublisher(secure_broker.frontend_address, tmp_path / "outbox", keys=keys)
    try:
        pub.submit(UnitEnvelope(WorkUnit("run-y", "spectrum", 0, {"mu": np.ones(4)})))
        assert pub.flush(10)
        for sock in (_dealer(secure_broker.backend_address), _dealer(secure_broker.backend_address, keys, "producer")):
            _send(sock, [P.PROTOCOL, P.READY, b'{"credit": 4}'])
            _send(sock, [P.PROTOCOL, P.DONE, P.dumps({"unit_id": "run-y:spectrum:0", "status": "ok"})])
            _send(sock, [P.PROTOCOL, P.STORED, P.encode_stored({
                "run_uid": "run-y", "analysis": "xafs.normalize", "unit": "repeat_0", "status": "ok",
                "family": "table", "path": "xafs_results/run-y/xafs_normalize/repeat_0", "summary": {"e0": 1.0}})])
            assert not sock.poll(1500)  # no unit handed out
        # an events subscriber without keys hears nothing, not even the handshake
        assert not ResultEvents(secure_broker.events_address).wait_ready(1.5)
        status = broker_status(secure_broker.frontend_address, keys=keys)
        assert status["pending"] == 1 and status["workers"] == [] and status["stats"]["events"] == 0
        # the two keyed impostors were refused by the ZAP handler (peers with no keys fail the CURVE handshake
        # before it is asked)
        assert status["stats"]["submitted"] == 1 and status["stats"]["denied"] >= 2
    finally:
        pub.close(1)


def test_binding_beyond_loopback_needs_keys(tmp_path, keys):
    wide = BrokerConfig(frontend="tcp://0.0.0.0:0", backend="tcp://127.0.0.1:0", events="",
                        store_dir=str(tmp_path / "store"))
    with pytest.raises(ConfigError, match=r"\[broker\] frontend = 'tcp://0.0.0.0:0' is reachable from other hosts"):
        Broker(wide)
    Broker(wide, SecurityConfig(keys=keys)).close()  # with keys it binds
    Broker(wide, SecurityConfig(allow_insecure=True)).close()  # or when told explicitly
    assert is_loopback("tcp://127.0.0.1:5560") and is_loopback("tcp://[::1]:5560")
    assert not is_loopback("tcp://*:5560") and not is_loopback("tcp://10.0.0.5:5560")


def test_serve_refuses_wide_binds_without_keys_before_starting_anything(tmp_path):
    out = subprocess.run([sys.executable, "-m", "xafs_stream.cli.main", "serve", "--data-dir", str(tmp_path),
                          "--frontend", "tcp://0.0.0.0:0"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("xafs-stream serve: error: [broker] frontend = 'tcp://0.0.0.0:0' is reachable")
    assert not (tmp_path / "logs").exists()


def test_keys_command_writes_each_role_once(tmp_path):
    cli = [sys.executable, "-m", "xafs_stream.cli.main", "keys", str(tmp_path / "k")]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    names = sorted(p.name for p in (tmp_path / "k").iterdir())
    assert names == sorted(f"{n}.{s}" for n in ("broker", "producer", "worker", "reader") for s in ("key", "key_secret"))
    assert all(oct(p.stat().st_mode)[-3:] == "600" for p in (tmp_path / "k").glob("*.key_secret"))
    again = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "already holds keys" in again.stderr


# ------------------------------------------------------------------------------------------ dashboard


def test_dashboard_refuses_foreign_host_headers(tiled):
    from xafs_stream.web import start_dashboard

    with start_dashboard(tiled.client, None, DashboardConfig(port=0, interval_s=1.0)) as dash:
        assert httpx.get(dash.url + "api/health").status_code == 200
        rebound = httpx.get(dash.url + "api/health", headers={"Host": f"attacker.example:{dash.port}"})
        assert rebound.status_code == 400 and "Host" in rebound.json()["detail"]


def test_exposed_dashboard_needs_a_token(tiled):
    from xafs_stream.web import start_dashboard

    with pytest.raises(ConfigError, match="token is empty"):
        start_dashboard(tiled.client, None, DashboardConfig(host="0.0.0.0", port=0))
    config = DashboardConfig(host="0.0.0.0", port=0, token="s3cret-token")
    with start_dashboard(tiled.client, None, config) as dash:
        assert httpx.get(dash.url + "api/runs").status_code == 401
        assert httpx.get(dash.url + "api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(dash.url + "api/runs", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        with httpx.Client() as browser:  # the link with the token sets a cookie the page's requests carry
            page = browser.get(dash.link)
            assert page.status_code == 200 and "xafs_dashboard_token" in page.headers["set-cookie"]
            assert browser.get(dash.url + "api/runs").status_code == 200
            assert json.loads(browser.get(dash.url + "api/health").text)["ok"] is True
