"""What a running ``serve`` publishes in its data directory, and the lock that makes it the only one there.

``<data_dir>/service.json`` (readable by its owner only: it holds the Tiled API key) gives clients on the
same file system everything they need: the Tiled address and key, the broker's frontend and events
addresses, the dashboard, and the PID of the service. ``subscribe(RE, "xafs-stream.toml")`` and the read
commands (``query``, ``export``, ``report``, ``reprocess``, ``watch``) use it when the configuration names no
Tiled server, instead of starting a second Tiled over the live files. ``<data_dir>/serve.lock`` is held
(``flock``) while ``serve`` runs; a second ``serve`` on the same directory is refused with the PID of the
first. A ``service.json`` whose PID is gone (a killed service) is ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

INFO_FILE = "service.json"
LOCK_FILE = "serve.lock"


class ServiceRunning(RuntimeError):
    """Another ``serve`` holds the data directory."""


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


def acquire_lock(data_dir: Path) -> int:
    """Hold ``serve.lock`` for this process (returns its file descriptor; :func:`release_lock` frees it).
    Raises :class:`ServiceRunning` naming the PID that holds it."""
    import fcntl

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ServiceRunning(f"another xafs-stream serve (PID {holder}) is running on {data_dir}; stop it or "
                             f"use another data_dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
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
