"""One configuration for the service and the beamline session: ``serve`` publishes its addresses in the data
directory, ``subscribe(RE, "xafs-stream.toml")`` and the read commands find it, a second ``serve`` is refused,
and startup failures are one line with nothing left running (real serve, Tiled, broker, worker, RunEngine)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xafs_stream.service_info import ServiceRunning, acquire_lock, read_info, release_lock, write_info
from xafs_stream.testing import free_port


def _toml(tmp_path: Path) -> Path:
    ports = [free_port() for _ in range(3)]
    path = tmp_path / "xafs-stream.toml"
    path.write_text(f"""[service]
data_dir = "{tmp_path / 'data'}"
workers = 1
[broker]
frontend = "tcp://127.0.0.1:{ports[0]}"
backend = "tcp://127.0.0.1:{ports[1]}"
events = "tcp://127.0.0.1:{ports[2]}"
[dashboard]
enabled = false
""")
    return path


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xafs_stream.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


def _children_on(directory: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(directory) in line and "ps -eo" not in line]


def test_service_info_is_owner_only_and_a_dead_pid_is_ignored(tmp_path):
    path = write_info(tmp_path, {"tiled_uri": "http://x", "api_key": "secret"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_info(tmp_path)["api_key"] == "secret"
    path.write_text(json.dumps({"pid": 2**22 + 12345, "tiled_uri": "http://x"}))  # no such process
    assert read_info(tmp_path) is None
    fd = acquire_lock(tmp_path)
    try:
        held = subprocess.run([sys.executable, "-c", f"from pathlib import Path; from xafs_stream.service_info import "
                               f"acquire_lock; acquire_lock(Path({str(tmp_path)!r}))"], capture_output=True, text=True)
        assert held.returncode != 0 and f"PID {os.getpid()}" in held.stderr
    finally:
        release_lock(fd)
    with pytest.raises(ServiceRunning):
        fd1 = acquire_lock(tmp_path)
        try:
            acquire_lock(tmp_path)
        finally:
            release_lock(fd1)


def test_one_toml_for_serve_subscribe_and_the_read_commands(tmp_path):
    pytest.importorskip("ophyd")
    toml = _toml(tmp_path)
    data = tmp_path / "data"
    serve = subprocess.Popen([sys.executable, "-m", "xafs_stream.cli.main", "serve", "--config", str(toml)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while read_info(data) is None:
            assert serve.poll() is None, serve.stdout.read()
            assert time.monotonic() < deadline, "serve did not publish service.json"
            time.sleep(0.2)
        info = read_info(data)
        assert info["pid"] == serve.pid and info["tiled_uri"].startswith("http://") and info["api_key"]
        assert info["frontend"] in toml.read_text() and info["events"] in toml.read_text()
        # a second serve on the same data directory: one line naming the first one's PID
        second = _cli("serve", "--config", str(toml), timeout=60)
        assert second.returncode == 1 and f"PID {serve.pid}" in second.stderr
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
        # the beamline side, from the same file
        from bluesky import RunEngine
        from xafs_stream.plans import xafs_scan
        from xafs_stream.simulated_devices import make_beamline

        from xafs_stream import subscribe

        bl = make_beamline(sample="Cu")
        RE = RunEngine()
        session = subscribe(RE, str(toml))
        (uid,) = RE(xafs_scan([bl.scaler], bl.dcm, element="Cu", sample="Cu foil", repeats=1, dwell_s=0.2))
        session.flush()
        assert uid in session.tiled_client
        session.close()
        # a read command with the same file talks to the running service (no second Tiled)
        t0 = time.monotonic()
        query = _cli("query", "--config", str(toml), timeout=60)
        assert query.returncode == 0 and uid[:8] in query.stdout, query.stderr
        assert "Tiled version" not in query.stdout + query.stderr
        assert time.monotonic() - t0 < 30
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
    assert not (data / "service.json").exists()
    assert _children_on(tmp_path) == []


def test_a_port_in_use_is_one_line_within_seconds_and_leaves_nothing(tmp_path):
    toml = _toml(tmp_path)
    port = int(toml.read_text().split("frontend = \"tcp://127.0.0.1:")[1].split('"')[0])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        t0 = time.monotonic()
        res = _cli("serve", "--config", str(toml), timeout=60)
        took = time.monotonic() - t0
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "broker frontend" in res.stderr and "in use" in res.stderr
    assert took < 20
    assert _children_on(tmp_path) == []


def _fails_in_one_line(tmp_path: Path, toml: Path, *needles: str, env: dict | None = None) -> str:
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "xafs_stream.cli.main", "serve", "--config", str(toml)],
                         capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    took = time.monotonic() - t0
    err = res.stderr.strip()
    assert res.returncode != 0 and "Traceback" not in res.stderr and err.count("\n") == 0, res.stderr[-2000:]
    assert all(n in err for n in needles), err
    assert took < 45, took
    assert _children_on(tmp_path) == []
    return err


def test_a_key_the_embedded_tiled_refuses_is_one_line(tmp_path):
    toml = _toml(tmp_path)
    _fails_in_one_line(tmp_path, toml, "api_key", "letters and digits",
                       env={"XAFS_STREAM_TILED_API_KEY": "abc-123"})


def test_an_unusable_data_directory_is_one_line(tmp_path):
    toml = _toml(tmp_path)
    (tmp_path / "afile").write_text("not a directory")
    toml.write_text(toml.read_text().replace(f'data_dir = "{tmp_path / "data"}"',
                                             f'data_dir = "{tmp_path / "afile" / "data"}"'))
    _fails_in_one_line(tmp_path, toml, "data_dir", "cannot be used")


def test_tiled_that_does_not_start_is_one_line_naming_its_log(tmp_path):
    toml = _toml(tmp_path)
    catalog = tmp_path / "data" / "tiled"
    catalog.mkdir(parents=True)
    (catalog / "catalog.db").write_bytes(b"this is not an SQLite database" * 100)
    _fails_in_one_line(tmp_path, toml, "Tiled", "tiled.log")


def test_the_embedded_tiled_port_in_use_is_one_line(tmp_path):
    toml = _toml(tmp_path)
    port = free_port()
    toml.write_text(toml.read_text() + f"[tiled]\nport = {port}\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        _fails_in_one_line(tmp_path, toml, "embedded Tiled", "in use")


def test_a_read_command_on_a_stopped_service_holds_the_directory(tmp_path):
    """Without a running serve, a read command opens the data directory itself under serve.lock: a serve (or
    a second reader) started meanwhile is refused in one line naming that command and its PID."""
    toml = _toml(tmp_path)
    reader = subprocess.Popen([sys.executable, "-m", "xafs_stream.cli.main", "dashboard", "--config", str(toml),
                               "--no-broker", "--port", "0", "--run-for", "90"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        while not (seen and seen[-1].startswith("dashboard:")):  # printed once its Tiled is up
            seen.append(reader.stdout.readline())
            assert seen[-1], "".join(seen)
        serve = _cli("serve", "--config", str(toml), timeout=60)
        err = serve.stderr.strip()
        assert serve.returncode != 0 and "Traceback" not in err and err.count("\n") == 0, serve.stderr[-2000:]
        assert f"xafs-stream dashboard (PID {reader.pid})" in err
        query = _cli("query", "--config", str(toml), timeout=60)
        assert query.returncode != 0 and f"(PID {reader.pid})" in query.stderr and "Traceback" not in query.stderr
    finally:
        reader.terminate()
        reader.wait(30)
    query = _cli("query", "--config", str(toml), timeout=60)  # the directory is free again
    assert query.returncode == 0, query.stderr
    assert _children_on(tmp_path) == []


def test_a_refused_dashboard_exposure_leaves_the_directory_free(tmp_path):
    from xafs_stream.config import ConfigError, load_config
    from xafs_stream.service import Service

    toml = _toml(tmp_path)
    toml.write_text(toml.read_text().replace("enabled = false", 'enabled = true\nhost = "0.0.0.0"'))
    with pytest.raises(ConfigError, match="token"):
        Service(load_config(toml)).start()
    release_lock(acquire_lock(tmp_path / "data"))  # not held by the refused start
