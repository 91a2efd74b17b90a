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

from xafs_stream.analyses.registry import Registry
from xafs_stream.broker import Broker, BrokerConfig
from xafs_stream.protocol import UnitEnvelope
from xafs_stream.publisher import UnitPublisher, broker_status
from xafs_stream.units import WorkUnit
from xafs_stream.worker import Worker


class CountingStore:
    def write(self, record):  # the empty registry yields no records: units are counted by the hook below
        raise AssertionError("no records expected")


def test_burst_is_held_back_by_busy_then_drained_without_loss(tmp_path):
    broker = Broker(BrokerConfig(frontend="tcp://127.0.0.1:0", backend="tcp://127.0.0.1:0",
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
    worker = Worker(broker.backend_address, CountingStore(), Registry(), name="w-flow", credit=2, heartbeat_s=0.2,
                    post_process=lambda env, records: seen.append(env.unit_id) or [])
    wthread = threading.Thread(target=worker.run, daemon=True)
    wthread.start()
    assert pub.flush(60)
    deadline = time.monotonic() + 60
    while broker_status(broker.frontend_address)["stats"]["done"] < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    st = broker_status(broker.frontend_address)
    worker.stop()
    broker.stop()
    pub.close(1)
    assert sorted(seen) == sorted(f"{run}:spectrum:{i}" for i in range(30))  # each exactly once
    assert st["stats"]["done"] == 30 and st["stored"] == 0


def test_serve_command_runs_the_service_until_interrupted(tmp_path, RE, beamline, collect):
    from xafs_stream.config import load_config
    from xafs_stream.plans import xafs_scan
    from xafs_stream.service import subscribe
    from xafs_stream.storage.results import RESULTS_ROOT
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
        deadline = time.monotonic() + 90
        done = False
        while not done and time.monotonic() < deadline:
            results = handle.client[RESULTS_ROOT] if RESULTS_ROOT in handle.client else {}
            done = uid in results and "merge" in results[uid].get("xafs_normalize", {})
            time.sleep(0.5)
        session.close()
        assert done, "no result from the served workers"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
