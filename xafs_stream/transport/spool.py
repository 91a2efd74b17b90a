"""A durable on-disk queue of multipart messages, used by the broker's store and the producer's outbox:
what is put here survives a crash or restart of the process.

Log-structured: records are appended to segment files (``NNNNNNNNNNNN.seg``); a removal appends a small
tombstone; a new segment starts after ``segment_bytes``. Segments are deleted oldest first, once nothing in
them is live (a tombstone must outlive the put it cancels); when more than ``max_segments`` exist, the live
records of the oldest are copied forward so it can go (one stuck message never pins the disk). One ``put`` is one ``write`` system call. (The first version wrote one file per message
and renamed it into place: 540 µs per put on this VM, which capped the transport at ~700 spectra/s.)

Record: ``MAGIC(4) | kind(1) | key length(u32) | body length(u64) | sequence(u64) | key | body`` where ``kind`` is ``P`` (put)
or ``D`` (delete), the sequence number gives the arrival order (kept when a record is copied forward) and
body is the frames, each as ``length(u64) | bytes``. On open, segments are replayed in
order; a torn record at the end of the last segment (a crash mid-write) is cut off and logged.
``fsync=True`` also fsyncs every write (survives power loss, costs milliseconds).
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
import threading
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger(__name__)

MAGIC = b"XSR1"
_HEAD = struct.Struct("<4scIQQ")
_LEN = struct.Struct("<Q")


class SpoolError(RuntimeError):
    """A spool segment is unreadable beyond repair (it is moved aside to ``*.bad``, never deleted)."""


class DiskSpool:
    """Durable key → frames store with arrival order.

    Parameters
    ----------
    directory : where the segments live (created if missing)
    fsync : fsync each write
    segment_bytes : start a new segment file after this many bytes
    """

    def __init__(self, directory: str | Path, *, fsync: bool = False, segment_bytes: int = 64 << 20,
                 max_segments: int = 4):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.segment_bytes = int(segment_bytes)
        self.max_segments = max(2, int(max_segments))
        self._lock = threading.Lock()
        # key -> (segment number, body offset, body length)
        self._index: OrderedDict[str, tuple[int, int, int]] = OrderedDict()
        self._seqs: dict[str, int] = {}
        self._next_seq = 1
        self._live: dict[int, set[str]] = {}  # segment -> live keys
        self._total = 0
        self._seg_bytes: dict[int, int] = {}  # segment -> bytes on disk
        self.copied_forward_bytes = 0
        self._fds: dict[int, int] = {}
        segments = sorted(int(p.stem) for p in self.directory.glob("*.seg") if p.stem.isdigit())
        for seg in segments:
            self._replay(seg)
        order = sorted(self._index, key=self._seqs.__getitem__)
        self._index = OrderedDict((k, self._index[k]) for k in order)
        self._next_seq = max(self._seqs.values(), default=0) + 1
        self._segments = list(segments)
        self._current = (segments[-1] + 1) if segments else 1
        self._segments.append(self._current)
        self._current_size = 0
        with self._lock:
            self._collect()

    # -- reading state back ---------------------------------------------------------------------
    def _segment_path(self, seg: int) -> Path:
        return self.directory / f"{seg:012d}.seg"

    def _replay(self, seg: int) -> None:
        path = self._segment_path(seg)
        data = path.read_bytes()
        self._seg_bytes[seg] = len(data)
        pos = 0
        while pos < len(data):
            if pos + _HEAD.size > len(data):
                break
            magic, kind, klen, blen, seq = _HEAD.unpack_from(data, pos)
            end = pos + _HEAD.size + klen + blen
            if magic != MAGIC or kind not in (b"P", b"D") or end > len(data):
                break
            key = data[pos + _HEAD.size: pos + _HEAD.size + klen].decode()
            if kind == b"P":
                self._forget(key)
                self._index[key] = (seg, pos + _HEAD.size + klen, blen)
                self._seqs[key] = seq
                self._live.setdefault(seg, set()).add(key)
                self._total += blen
            else:
                self._forget(key)
            pos = end
        if pos < len(data):
            log.error("spool %s: torn or corrupt record at byte %d of %d; the rest is cut off", path, pos, len(data))
            with open(path, "r+b") as fh:
                fh.truncate(pos)
            self._seg_bytes[seg] = pos

    def _forget(self, key: str) -> None:
        self._seqs.pop(key, None)
        old = self._index.pop(key, None)
        if old is not None:
            seg, _, blen = old
            self._live.get(seg, set()).discard(key)
            self._total -= blen

    # -- public API -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    @property
    def total_bytes(self) -> int:
        return self._total

    def size_of(self, key: str) -> int:
        """Stored body size of ``key`` in bytes (0 if absent)."""
        entry = self._index.get(key)
        return entry[2] if entry else 0

    def keys(self, limit: int | None = None) -> list[str]:
        """Keys in arrival order (the first ``limit`` of them if given)."""
        with self._lock:
            if limit is None:
                return list(self._index)
            return list(itertools.islice(self._index, max(0, limit)))

    def put(self, key: str, frames: list) -> int:
        """Store ``frames`` under ``key`` (replacing an earlier copy); returns the body size in bytes.
        OSError when the disk is full: then a new segment is started, so that the current one is deleted as
        soon as its live records are done (dead records in a segment take space until the segment goes)."""
        with self._lock:
            try:
                return self._put_locked(key, frames)
            except OSError:
                self._rotate()
                self._collect()
                return self._put_locked(key, frames)

    def _put_locked(self, key: str, frames: list, *, seq: int | None = None) -> int:
        if seq is None:
            seq = self._next_seq
            self._next_seq += 1
        views = [memoryview(f.buffer if hasattr(f, "buffer") else f).cast("B") for f in frames]
        body_len = sum(_LEN.size + v.nbytes for v in views)
        kb = key.encode()
        parts: list = [_HEAD.pack(MAGIC, b"P", len(kb), body_len, seq), kb]
        for v in views:
            parts.append(_LEN.pack(v.nbytes))
            parts.append(v)
        seg, offset = self._append(parts, _HEAD.size + len(kb) + body_len)
        position_kept = key in self._index and self._seqs.get(key) == seq
        self._forget(key)
        self._index[key] = (seg, offset + _HEAD.size + len(kb), body_len)
        self._seqs[key] = seq
        if position_kept:  # copied forward: keep its place in the arrival order
            self._index = OrderedDict(sorted(self._index.items(), key=lambda kv: self._seqs[kv[0]]))
        self._live.setdefault(seg, set()).add(key)
        self._total += body_len
        return body_len

    def get(self, key: str) -> list[bytes]:
        """The frames stored under ``key``."""
        with self._lock:
            return self._get_locked(key)

    def _get_locked(self, key: str) -> list[bytes]:
        seg, offset, length = self._index[key]
        fd = self._fds.get(seg)
        if fd is None:
            fd = os.open(self._segment_path(seg), os.O_RDONLY)
            try:
                body = os.pread(fd, length, offset)
            finally:
                os.close(fd)
        else:
            body = os.pread(fd, length, offset)
        frames = []
        pos = 0
        while pos < len(body):
            (n,) = _LEN.unpack_from(body, pos)
            pos += _LEN.size
            frames.append(body[pos:pos + n])
            pos += n
        return frames

    def remove(self, key: str) -> None:
        """Forget ``key``. Its deletion record is written; if the disk is full, the segment files that hold
        nothing live any more are deleted anyway (that frees the space), and OSError is raised only if the
        key's record is still on disk unmarked (after a restart it would come back)."""
        with self._lock:
            entry = self._index.get(key)
            if entry is None:
                return
            self._forget(key)
            kb = key.encode()
            try:
                self._append([_HEAD.pack(MAGIC, b"D", len(kb), 0, 0), kb], _HEAD.size + len(kb))
            except OSError:
                if not self._index:
                    self._rotate()
                self._collect()
                if entry[0] in self._segments:
                    raise
                return
            if not self._index and self._current_size > self.segment_bytes // 4:
                self._rotate()  # all done: start afresh so the old segments can go
            self._collect()

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    # -- internals (lock held) ------------------------------------------------------------------
    def _append(self, parts: list, size: int) -> tuple[int, int]:
        if self._current_size + size > self.segment_bytes and self._current_size > 0:
            self._rotate()
        fd = self._fds.get(self._current)
        if fd is None:
            fd = os.open(self._segment_path(self._current), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            self._fds[self._current] = fd
            self._current_size = os.fstat(fd).st_size
        offset = self._current_size
        written = os.writev(fd, parts)
        if written != size:  # a short write (disk full): do not leave a torn record behind
            os.ftruncate(fd, offset)
            raise OSError(f"spool {self.directory}: short write ({written} of {size} bytes); disk full?")
        if self.fsync:
            os.fsync(fd)
        self._current_size += size
        self._seg_bytes[self._current] = self._current_size
        return self._current, offset

    def _rotate(self) -> None:
        self._current += 1
        self._current_size = 0
        self._segments.append(self._current)

    def _collect(self) -> None:
        """Delete old segments in order. If there are more than ``max_segments``, less than half of the
        disk is live and the oldest holds little live data (< 1/4 segment), copy it forward once so the
        segment can go."""
        copied = False
        while len(self._segments) > 1:
            oldest = self._segments[0]
            if self._live.get(oldest):
                if copied or len(self._segments) <= self.max_segments:
                    return
                if 2 * self._total > sum(self._seg_bytes.get(s, 0) for s in self._segments):
                    return  # a backlog, mostly live: its head goes soon anyway
                keys = [k for k, v in self._index.items() if v[0] == oldest]
                if sum(self._index[k][2] for k in keys) > self.segment_bytes // 4:
                    return  # mostly live: copying would not free space
                try:
                    for key in keys:
                        self.copied_forward_bytes += self._put_locked(key, self._get_locked(key),
                                                                      seq=self._seqs[key])
                except OSError as exc:  # no room to copy (disk full): the old segment stays for now
                    log.warning("spool %s: cannot copy records forward: %s", self.directory, exc)
                    return
                copied = True
                continue
            self._delete_segment(oldest)
            self._segments.pop(0)

    def _delete_segment(self, seg: int) -> None:
        fd = self._fds.pop(seg, None)
        if fd is not None:
            os.close(fd)
        self._segment_path(seg).unlink(missing_ok=True)
        self._live.pop(seg, None)
        self._seg_bytes.pop(seg, None)
