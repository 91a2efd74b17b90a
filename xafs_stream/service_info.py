"""What a running ``serve`` publishes in its data directory, and the lock that makes it the only one there.

``<data_dir>/service.json`` (readable by its owner only: it holds the Tiled API key) gives clients on the
same file system everything they need: the Tiled address and key, the broker's frontend and events
addresses, the dashboard, and the PID of the service. ``subscribe(RE, "xafs-stream.toml")`` and the read
commands (``query``, ``export``, ``report``, ``reprocess``, ``watch``) use it when the configuration names no
Tiled server, instead of starting a second Tiled over the live files. ``<data_dir>/serve.lock`` is held
(``flock``) by whoever runs a Tiled over the directory: ``serve`` while it runs, or a read command that opens
a stopped service's directory itself. Anyone else is refused in one line naming the holder's PID and
command, so two Tiled servers never run over one data directory. A ``service.json`` whose PID is gone (a
killed service) is ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

INFO_FILE = "service.json"
LOCK_FILE = "serve.lock"


class ServiceRunning(RuntimeError):
    """Another xafs-stream process (a ``serve``, or a read command) holds the data directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    except (OSError, ValueError, TypeError):
        return False
    return True


def acquire_lock(data_dir: Path, role: str = "serve") -> int:
    """Hold ``serve.lock`` for this process (returns its file descriptor; :func:`release_lock` frees it).
    ``role`` names this process in the refusal others get (``serve``, ``query``, ...). Raises
    :class:`ServiceRunning` naming the PID and role that hold it."""
    import fcntl

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid, _, holder = os.read(fd, 64).decode(errors="replace").strip().partition(" ")
        os.close(fd)
        holder = holder or "serve"
        if holder == "serve":
            raise ServiceRunning(f"another xafs-stream serve (PID {pid or '?'}) is running on {data_dir}; stop it "
                                 f"or use another data_dir") from None
        raise ServiceRunning(f"xafs-stream {holder} (PID {pid or '?'}) has {data_dir} open; wait for it to finish "
                             f"or stop it (only one Tiled may run over a data directory)") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {role}".encode())
    return fd


def release_lock(fd: int | None) -> None:
    if fd is None:
        return
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def write_info(data_dir: Path, info: dict) -> Path:
    """Write ``service.json`` atomically, mode 0600."""
    path = data_dir / INFO_FILE
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"pid": os.getpid(), **info}, fh, indent=1)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def read_info(data_dir: Path) -> dict | None:
    """The running service's ``service.json``, or None (no file, unreadable, or its PID is gone)."""
    path = Path(data_dir) / INFO_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not _alive(info.get("pid", -1)):
        return None
    return info


def remove_info(data_dir: Path) -> None:
    """Remove ``service.json`` if this process wrote it."""
    path = Path(data_dir) / INFO_FILE
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass
