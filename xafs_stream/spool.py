"""A durable on-disk queue of multipart messages (one file per key), used by the broker's store and the
producer's outbox: what is written here survives a crash or restart of the process.

File format: ``b"XSPOOL1\\n"``, then for each frame a little-endian u64 length and the bytes; the first
frame is the key. Files are written to a temporary name and renamed, so a crash never leaves a half
message under a real name (half-written temporaries are removed on open). Names start with a sequence
number, so :meth:`DiskSpool.keys` returns keys in arrival order after a restart.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import struct
import threading
from pathlib import Path

log = logging.getLogger(__name__)

MAGIC = b"XSPOOL1\n"
_LEN = struct.Struct("<Q")


class SpoolError(RuntimeError):
    """A spool file is unreadable (it is moved aside to ``*.bad``, never silently deleted)."""


class DiskSpool:
    """Durable key → frames store with arrival order.

    Parameters
    ----------
    directory : where the files live (created if missing)
    fsync : also fsync each file and the directory (survives power loss, costs a few ms per put)
    """

    def __init__(self, directory: str | Path, *, fsync: bool = False):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._paths: dict[str, Path] = {}
        self._sizes: dict[str, int] = {}
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        entries = []
        for path in self.directory.glob("*.msg"):
            try:
                key = self._read_key(path)
            except SpoolError as exc:
                log.error("%s", exc)
                path.rename(path.with_suffix(".bad"))
                continue
            entries.append((path.name, key, path))
        entries.sort()
        last_seq = 0
        for name, key, path in entries:
            if key in self._paths:  # an older copy of a re-put key: keep the newest
                self._paths[key].unlink(missing_ok=True)
            self._paths[key] = path
            self._sizes[key] = path.stat().st_size
            last_seq = max(last_seq, int(name.split("-", 1)[0]))
        self._seq = itertools.count(last_seq + 1)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, key: str) -> bool:
        return key in self._paths

    @property
    def total_bytes(self) -> int:
        return sum(self._sizes.values())

    def keys(self) -> list[str]:
        """Keys in arrival order."""
        with self._lock:
            return [k for k, _ in sorted(self._paths.items(), key=lambda kv: kv[1].name)]

    def put(self, key: str, frames: list) -> int:
        """Store ``frames`` under ``key`` (replacing an earlier copy); returns the bytes written."""
        digest = hashlib.sha1(key.encode()).hexdigest()[:20]
        with self._lock:
            seq = next(self._seq)
        path = self.directory / f"{seq:012d}-{digest}.msg"
        tmp = path.with_suffix(".tmp")
        size = len(MAGIC)
        with open(tmp, "wb") as fh:
            fh.write(MAGIC)
            for frame in [key.encode(), *frames]:
                data = frame.buffer if hasattr(frame, "buffer") else frame
                view = memoryview(data).cast("B")
                fh.write(_LEN.pack(view.nbytes))
                fh.write(view)
                size += _LEN.size + view.nbytes
            if self.fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if self.fsync:
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        with self._lock:
            old = self._paths.get(key)
            self._paths[key] = path
            self._sizes[key] = size
        if old is not None and old != path:
            old.unlink(missing_ok=True)
        return size

    def get(self, key: str) -> list[bytes]:
        """The frames stored under ``key`` (without the key frame)."""
        with self._lock:
            path = self._paths.get(key)
        if path is None:
            raise KeyError(key)
        frames = self._read_frames(path)
        return frames[1:]

    def remove(self, key: str) -> None:
        with self._lock:
            path = self._paths.pop(key, None)
            self._sizes.pop(key, None)
        if path is not None:
            path.unlink(missing_ok=True)

    @staticmethod
    def _read_frames(path: Path) -> list[bytes]:
        data = path.read_bytes()
        if not data.startswith(MAGIC):
            raise SpoolError(f"spool file {path} has no spool header")
        frames = []
        pos = len(MAGIC)
        while pos < len(data):
            if pos + _LEN.size > len(data):
                raise SpoolError(f"spool file {path} is truncated")
            (n,) = _LEN.unpack_from(data, pos)
            pos += _LEN.size
            if pos + n > len(data):
                raise SpoolError(f"spool file {path} is truncated")
            frames.append(data[pos:pos + n])
            pos += n
        if not frames:
            raise SpoolError(f"spool file {path} holds no key")
        return frames

    def _read_key(self, path: Path) -> str:
        with open(path, "rb") as fh:
            head = fh.read(len(MAGIC) + _LEN.size)
            if len(head) < len(MAGIC) + _LEN.size or not head.startswith(MAGIC):
                raise SpoolError(f"spool file {path} has no spool header")
            (n,) = _LEN.unpack_from(head, len(MAGIC))
            key = fh.read(n)
            if len(key) != n:
                raise SpoolError(f"spool file {path} is truncated")
        return key.decode()
