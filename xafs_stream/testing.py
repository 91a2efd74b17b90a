"""Helpers for tests and benchmarks that run real servers: a free TCP port and a throw-away PostgreSQL.

Not used by the service. Like ``numpy.testing`` or ``tiled``'s test helpers, it lives in the package so that
the tests and ``benchmarks/`` share one copy.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (another process may take it before it is used)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def postgres_bindir() -> str | None:
    """The folder of the PostgreSQL server programs (``initdb``, ``postgres``, ``pg_isready``, ``createdb``):
    Debian's newest ``/usr/lib/postgresql/<version>/bin``, else wherever ``initdb`` is on PATH; None if none."""
    def version(path: str) -> tuple[int, ...]:  # /usr/lib/postgresql/16/bin/initdb -> (16,); 9.6 before 16
        return tuple(int(p) for p in Path(path).parts[-3].split(".") if p.isdigit())

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version) or [shutil.which("initdb")]
    return os.path.dirname(found[-1]) if found[-1] else None


class ThrowawayPostgres:
    """A PostgreSQL cluster in a temporary folder on 127.0.0.1, trusting local connections as user ``tiled``;
    run as the ``postgres`` user when this process is root (the server refuses to run as root). Removed by
    :meth:`close`. ``max_connections``: the server's setting (default: PostgreSQL's, 100)."""

    def __init__(self, bindir: str | None = None, *, max_connections: int | None = None, timeout_s: float = 60.0):
        bindir = bindir or postgres_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server programs (initdb) on this machine")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="xafs-pg-", dir="/tmp"))
        self.port = free_port()
        as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        settings = ["-c", f"max_connections={int(max_connections)}"] if max_connections else []
        try:
            if as_pg:
                shutil.chown(self.root, "postgres")
            subprocess.run([*as_pg, f"{bindir}/initdb", "-D", str(self.root / "data"), "-A", "trust", "-U", "tiled"],
                           check=True, stdout=subprocess.DEVNULL)
            self.proc = subprocess.Popen([*as_pg, f"{bindir}/postgres", "-D", str(self.root / "data"), "-p",
                                          str(self.port), "-k", str(self.root), "-h", "127.0.0.1", *settings],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        deadline = time.monotonic() + timeout_s
        while subprocess.run([f"{bindir}/pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                             check=False, capture_output=True).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"PostgreSQL did not start within {timeout_s:.0f} s")
            time.sleep(0.3)

    def new_database(self, name: str) -> str:
        """Create database ``name``; its URI (``postgresql://tiled@127.0.0.1:<port>/<name>``)."""
        subprocess.run([f"{self.bindir}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "tiled", name],
                       check=True)
        return f"postgresql://tiled@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        """Stop the server and remove its folder."""
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
