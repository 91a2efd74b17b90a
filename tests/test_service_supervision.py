"""``xafs-stream serve`` keeps its components alive: a killed broker comes back on the same address and units
flow again; a component that keeps dying stops serve with exit code 1 and a line naming it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid

import numpy as np
import pytest

from xafs_stream.core import UnitEnvelope, WorkUnit
from xafs_stream.transport.publisher import UnitPublisher, broker_status


def test_serve_restarts_a_killed_broker_and_gives_up_on_one_that_keeps_dying(tmp_path, wait_for):
    env = {**os.environ, "XAFS_STREAM_SERVICE_MAX_RESTARTS": "2", "XAFS_STREAM_SERVICE_RECONCILE_RECENT": "0",
           "XAFS_STREAM_DASHBOARD_ENABLED": "false", "XAFS_STREAM_WORKER_ANALYSES": "xafs.normalize"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "xafs_stream.cli.main", "serve", "--data-dir", str(tmp_path), "--workers", "1",
         "--frontend", "tcp://127.0.0.1:0", "--backend", "tcp://127.0.0.1:0", "--events", ""],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()  # everything serve says
    try:
        assert wait_for(lambda: any("Ctrl-C" in line for line in lines), 120), "".join(lines)
        frontend = re.search(r"producers -> (tcp://\S+)", "".join(lines)).group(1)
        ready = tmp_path / "broker.ready"

        def kill_broker() -> int:
            pid = json.loads(ready.read_text())["pid"]
            os.kill(pid, signal.SIGKILL)
            return pid

        first = kill_broker()
        # serve notices within a second or two and starts it again on the same address
        assert wait_for(lambda: ready.exists() and json.loads(ready.read_text())["pid"] != first, 30)
        assert wait_for(lambda: "broker exited with code -9; restarted\n" in lines, 10)
        pub = UnitPublisher(frontend, tmp_path / "outbox")
        try:
            energy = np.linspace(8900, 9500, 400)
            mu = 0.5 + np.arctan((energy - 8979) / 2) / np.pi
            pub.submit(UnitEnvelope(WorkUnit(uuid.uuid4().hex, "spectrum", 0, {"energy": energy, "mu": mu})))
            assert pub.flush(30)  # the restarted broker took it
            assert wait_for(lambda: broker_status(frontend)["stats"]["done"] == 1, 60)
        finally:
            pub.close(1)
        # two more deaths within the restart window: the second is one too many
        second = kill_broker()
        assert wait_for(lambda: ready.exists() and json.loads(ready.read_text())["pid"] != second, 30)
        kill_broker()
        assert proc.wait(30) == 1
        assert wait_for(lambda: any(line.startswith("xafs-stream serve: error: broker exited 3 times within 60 s "
                                                    "(last exit code -9)") for line in lines), 10), "".join(lines)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    # nothing left behind: serve stopped its workers and the embedded Tiled on the way out
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftover == []


def test_a_component_that_cannot_start_yet_is_tried_again_with_a_back_off(tmp_path, monkeypatch):
    """A failed start (the soak's case: the broker's disk full at restart) is a line, not the end of serve;
    the next try waits 1, 2, 4 ... s, and one that works resets the back-off."""
    from xafs_stream import service as service_module
    from xafs_stream.config import Config
    from xafs_stream.service import Service, ServiceFailed

    clock = [100.0]
    monkeypatch.setattr(service_module.time, "monotonic", lambda: clock[0])
    svc = Service(Config(), log_dir=tmp_path)
    svc.config.service.max_restarts, svc.config.service.restart_window_s = 3, 60.0
    starts: list[float] = []

    def start(ok: bool):
        def go():
            starts.append(clock[0])
            if not ok:
                raise OSError(28, "No space left on device")
        return go

    line = svc._restart("broker", -9, "broker.log", start(False))
    assert line == "broker exited with code -9 and could not be started again ([Errno 28] No space left on " \
                   "device); next try in 1 s"
    clock[0] += 0.5
    assert svc._restart("broker", -9, "broker.log", start(True)) == ""  # still waiting: not tried
    clock[0] += 0.6
    assert "next try in 2 s" in svc._restart("broker", -9, "broker.log", start(False))
    clock[0] += 2.1
    assert svc._restart("broker", -9, "broker.log", start(True)) == "broker exited with code -9; restarted"
    assert starts == pytest.approx([100.0, 101.1, 103.2])
    clock[0] += 1.0  # a fourth exit within the window is one too many, back-off or not
    with pytest.raises(ServiceFailed, match=r"^broker exited 4 times within 60 s \(last exit code -9\)"):
        svc._restart("broker", -9, "broker.log", start(True))
