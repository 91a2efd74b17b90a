"""The embedded Tiled server (the default: no external service) or a connection to an existing one."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class TiledHandle:
    """A Tiled client plus the embedded server behind it, if any.

    Keep this object alive as long as the server is needed: an embedded server stops when it is
    garbage-collected.
    """

    uri: str
    client: Any
    server: Any = None
    api_key: str | None = None
    on_close: Any = None  # called once after the server stops (e.g. to free the data directory's lock)

    @property
    def browse_url(self) -> str:
        """Address of the Tiled web UI (with the API key for the embedded server)."""
        if self.server is not None:
            return self.server.web_ui_link
        return self.uri.split("/api/v1")[0]

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.on_close is not None:
            done, self.on_close = self.on_close, None
            done()


_PROCESS_API_KEY: str | None = None
#: seconds open requests get to finish when the embedded server stops, and then for its application shutdown
SHUTDOWN_GRACE_S = 5.0
SHUTDOWN_FORCE_S = 10.0


class EmbeddedTiledServer:
    """Tiled in a background thread of this process: SQLite catalog, SQLite table storage, files for arrays.

    Like tiled's ``SimpleTiledServer`` but with SQLite instead of DuckDB for tables: with DuckDB,
    reading a table while bluesky's TiledWriter appends to it failed here with "No active transaction"
    errors, HTTP 500s and duplicated rows (measured with a live reader polling every 0.25 s).
    Data persist in ``directory`` across restarts. Stop it with :meth:`close`; it also stops when
    garbage-collected, so keep a reference.
    """

    def __init__(self, directory: str | Path, *, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None):
        import secrets
        import time
        from urllib.parse import quote_plus, urlparse

        import httpx
        import tiled.adapters.zarr  # noqa: F401  imported on the first array write otherwise (see below)
        import uvicorn
        from tiled.catalog import from_uri as catalog_from_uri
        from tiled.config import Authentication
        from tiled.server.app import build_app
        from tiled.server.simple import ThreadedServer

        self.directory = Path(directory).resolve()
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        # tiled 0.2 keeps the single-user API key in process-wide settings: a second in-process server with
        # another key makes the first reject its own. Servers started without a key share one per process.
        global _PROCESS_API_KEY
        if api_key is None:
            _PROCESS_API_KEY = _PROCESS_API_KEY or secrets.token_hex(16)
        self.api_key = api_key or _PROCESS_API_KEY
        _enable_wal(self.directory / "tables.sqlite")
        catalog = catalog_from_uri(
            self.directory / "catalog.db",
            writable_storage=[self.directory / "data", f"sqlite:///{self.directory / 'tables.sqlite'}"],
            init_if_not_exists=True,
        )
        # The catalog stays in the rollback-journal mode tiled leaves it in. With WAL mode (readers never wait
        # for writers) result writes under a scan were faster (~120 → ~60 ms, one run each), but in 1 of 4 CI
        # runs the quick demo's map got stuck: a read reached a map array around its replacement, tiled's zarr
        # adapter opened the missing path with zarr.open (which creates an empty group there), and every later
        # write of that array failed with HTTP 500. Never seen in rollback mode; not again until that is fixed.
        # tiled.adapters.zarr (zarr, obstore: 84 modules) is imported above, at start, not by the first array
        # created: that request took 0.24-0.29 s instead of 0.08-0.13 s, and it is a live map's first write, the
        # one the map's first tiles wait for (docs/measurements.md)
        app = build_app(catalog, authentication=Authentication(single_user_api_key=self.api_key))
        # a bounded shutdown: uvicorn otherwise waits for every open connection and request to end, and a client
        # that keeps one open held a CI run's last teardown for minutes (see close)
        self._server = ThreadedServer(uvicorn.Config(app, host=host, port=port, loop="asyncio", log_level="warning",
                                                     timeout_graceful_shutdown=SHUTDOWN_GRACE_S))
        self._cm = self._server.run_in_thread()
        base_url = self._cm.__enter__()
        try:
            deadline = time.monotonic() + 60
            with httpx.Client(trust_env=False) as client:
                while True:
                    try:
                        if client.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                            break
                    except httpx.RequestError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"embedded Tiled at {base_url} did not become ready in 60 s")
                    time.sleep(0.1)
        except BaseException:
            self._cm.__exit__(None, None, None)
            raise
        self.port = urlparse(base_url).port
        self.uri = f"{base_url}/api/v1?api_key={quote_plus(self.api_key)}"
        self.web_ui_link = f"{base_url}?api_key={quote_plus(self.api_key)}"

    def close(self) -> None:
        """Stop the server: open requests get ``SHUTDOWN_GRACE_S`` to finish; if the server thread has still
        not ended ``SHUTDOWN_FORCE_S`` later (its application shutdown hangs), it is told to exit at once."""
        if self._cm is None:
            return
        import threading

        server = self._server

        def force() -> None:
            log.warning("embedded Tiled did not stop in %.0f s: forcing it", SHUTDOWN_GRACE_S + SHUTDOWN_FORCE_S)
            server.force_exit = True

        timer = threading.Timer(SHUTDOWN_GRACE_S + SHUTDOWN_FORCE_S, force)
        timer.daemon = True
        timer.start()
        try:
            self._cm.__exit__(None, None, None)
        finally:
            timer.cancel()
            self._cm = None

    def __enter__(self) -> "EmbeddedTiledServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _enable_wal(path: Path) -> None:
    """Put a SQLite file in write-ahead-log mode (persistent): readers then never block the writer.

    Without it a live reader polling a table while TiledWriter appends got "database is locked" (HTTP 500).
    """
    import sqlite3
    from contextlib import closing

    # closed here, before the server's own SQLite (adbc) opens the file: a descriptor of it closed later in this
    # process would drop the server's POSIX locks on it
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def start_embedded_tiled(data_dir: str | Path, *, port: int = 0, api_key: str | None = None) -> TiledHandle:
    """Start Tiled in this process on ``data_dir``/tiled (see :class:`EmbeddedTiledServer`)."""
    from tiled.client import from_uri

    directory = Path(data_dir) / "tiled"
    server = EmbeddedTiledServer(directory, port=port, api_key=api_key)
    client = from_uri(server.uri)
    log.info("embedded Tiled at %s (data in %s)", server.web_ui_link, directory)
    return TiledHandle(uri=server.uri, client=client, server=server, api_key=server.api_key)


class TiledProcess:
    """The embedded Tiled server in a child process (same storage as :class:`EmbeddedTiledServer`).

    The service uses this so that the server does not share a GIL with the RunEngine: in one process,
    result writes measured 0.5-1 s while a scan was running, against ~10 ms of transport and compute.
    """

    def __init__(self, directory: str | Path, *, port: int = 0, api_key: str | None = None,
                 log_file: Path | None = None):
        import secrets

        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.api_key = api_key or secrets.token_hex(16)
        self.log_file = log_file
        self._launch(port)

    def restart(self) -> None:
        """Start the server again after it exited, on the same port with the same key (clients keep their
        address)."""
        self._launch(self.port)

    def _launch(self, port: int) -> None:
        import json
        import subprocess
        import sys
        import time
        from urllib.parse import quote_plus

        log_file = self.log_file
        ready = self.directory / "server.ready"
        ready.unlink(missing_ok=True)
        env = {**__import__("os").environ, "XAFS_STREAM_TILED_API_KEY": self.api_key}
        out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xafs_stream.storage.tiled_server", str(self.directory), str(port), str(ready)],
            env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while not ready.exists():
            if self.proc.poll() is not None:
                tail = f": {log_cause(log_file)}" if log_file is not None else ""
                raise RuntimeError(f"embedded Tiled exited with code {self.proc.returncode}{tail} (log: {log_file})")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise TimeoutError("embedded Tiled did not start within 90 s")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        self.port = int(info["port"])
        base_url = f"http://127.0.0.1:{self.port}"
        self.uri = f"{base_url}/api/v1?api_key={quote_plus(self.api_key)}"
        self.web_ui_link = f"{base_url}?api_key={quote_plus(self.api_key)}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except Exception:
                self.proc.kill()


def log_cause(path: Path) -> str:
    """The cause of a failed start, from its log: the last exception line (``XxxError: ...``), else the last
    non-empty line (the very last line is often a link or a stack frame); "no log" / "empty log"."""
    try:
        lines = [x.strip() for x in Path(path).read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no log"
    causes = [x for x in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b", x)]
    return (causes or lines)[-1][-300:] if lines else "empty log"


def start_tiled_process(data_dir: str | Path, *, port: int = 0, api_key: str | None = None,
                        log_file: Path | None = None) -> TiledHandle:
    """Start the embedded Tiled on ``data_dir``/tiled in a child process and connect to it."""
    from tiled.client import from_uri

    server = TiledProcess(Path(data_dir) / "tiled", port=port, api_key=api_key, log_file=log_file)
    client = from_uri(server.uri)
    return TiledHandle(uri=server.uri, client=client, server=server, api_key=server.api_key)


def _serve_forever(directory: str, port: int, ready_file: str) -> None:
    """Child-process entry: run :class:`EmbeddedTiledServer` until SIGTERM, announce the port."""
    import json
    import os
    import signal
    import threading

    server = EmbeddedTiledServer(directory, port=port, api_key=os.environ.get("XAFS_STREAM_TILED_API_KEY"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    tmp = ready_file + ".tmp"
    Path(tmp).write_text(json.dumps({"port": server.port, "pid": os.getpid()}))
    os.replace(tmp, ready_file)
    stop.wait()
    server.close()


def connect_tiled(uri: str, *, api_key: str | None = None) -> TiledHandle:
    """Connect to an existing Tiled server (``tiled serve ...``, possibly PostgreSQL-backed)."""
    from tiled.client import from_uri

    try:
        client = from_uri(uri, api_key=api_key) if api_key else from_uri(uri)
    except Exception as exc:
        raise ConnectionError(f"cannot connect to Tiled at {uri}: {type(exc).__name__}: {exc}") from None
    return TiledHandle(uri=uri, client=client, api_key=api_key)


if __name__ == "__main__":
    import sys

    _serve_forever(sys.argv[1], int(sys.argv[2]), sys.argv[3])
