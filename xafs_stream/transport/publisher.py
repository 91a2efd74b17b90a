"""Producer side of the transport: hand units to the broker without blocking, never dropping any.

:meth:`UnitPublisher.submit` writes the encoded unit to a local disk outbox and returns (a file write:
well under a millisecond for a spectrum). A background thread sends outbox units to the broker with at
most ``window`` unacknowledged at a time and deletes each only when the broker's ``ACK`` says it is
stored durably. If the broker is absent, slow or answers ``BUSY``, units wait in the outbox (on disk, so
memory stays bounded) and are sent later; a restart of the producer resends what is left. Units the
broker ``REJECT``s are moved to ``outbox/rejected`` with the reason, for inspection.

Nothing is lost quietly: :meth:`UnitPublisher.submit` raises :class:`OutboxError` (naming the outbox and
why) when the unit cannot be written, so the caller knows it was not queued; the background thread
survives any error (a full disk when it marks a unit acknowledged, say), keeps what it holds, retries, and
reports the last error in :attr:`UnitPublisher.error` and ``stats["errors"]``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import zmq

from . import protocol as P
from .security import secure_client
from .spool import DiskSpool
from .wakeup import Waker

log = logging.getLogger(__name__)


class OutboxError(OSError):
    """A unit could not be written to the producer's outbox (disk full, read-only...): it was not queued."""


class UnitPublisher:
    """Send work units to a broker's frontend.

    Parameters
    ----------
    address : broker frontend, e.g. ``tcp://127.0.0.1:5560``
    outbox_dir : durable local spool
    window : units sent but not yet acknowledged, at most
    ack_timeout_s : resend (after reconnecting) when no answer comes within this time
    cache_bytes : unacknowledged units up to this size are also kept in memory, so sending does not read
        them back from disk (the disk copy is for crashes; a unit's arrays must not change after submit)
    keys : CURVE key directory (``[security] keys``); None or "": plain TCP
    """

    def __init__(self, address: str, outbox_dir: str | Path, *, window: int = 16, ack_timeout_s: float = 5.0,
                 cache_bytes: int = 256 << 20, context: zmq.Context | None = None, keys: str | Path | None = None):
        self.address = address
        self.keys = keys
        self.outbox = DiskSpool(outbox_dir)
        self.rejected_dir = Path(outbox_dir) / "rejected"
        self.window = int(window)
        self.ack_timeout_s = float(ack_timeout_s)
        self.ctx = context or zmq.Context.instance()
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[str, list] = {}
        self._cached_bytes = 0
        self._cache_lock = threading.Lock()
        self.stats = {"submitted": 0, "acked": 0, "busy": 0, "rejected": 0, "resent": 0, "announced": 0, "errors": 0}
        #: the background thread's last error ("" while all is well), e.g. the outbox's disk being full
        self.error = ""
        self._announcements: deque[bytes] = deque(maxlen=1000)
        self._wake = Waker()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="UnitPublisher", daemon=True)
        self._thread.start()

    def submit(self, envelope: P.UnitEnvelope) -> str:
        """Queue a unit durably; returns its id. Safe to call from the RunEngine thread."""
        frames = P.encode_unit(envelope, P.SUBMIT)[2:]
        try:
            self.outbox.put(envelope.unit_id, frames)
        except OSError as exc:
            raise OutboxError(f"unit {envelope.unit_id} not queued: outbox {self.outbox.directory} cannot take it "
                              f"({exc})") from exc
        size = sum(memoryview(f).nbytes for f in frames)
        with self._cache_lock:
            if self._cached_bytes + size <= self.cache_bytes and envelope.unit_id not in self._cache:
                self._cache[envelope.unit_id] = frames
                self._cached_bytes += size
        self.stats["submitted"] += 1
        self._idle.clear()
        self._wake.wake()
        return envelope.unit_id

    def announce(self, run_uid: str, kind: str, affinity: str | None, metadata: dict[str, Any]) -> None:
        """Tell the broker a run started (best effort, not spooled: a lost hint costs only time), so the
        worker that will own the run prepares its result nodes before the first unit arrives."""
        self._announcements.append(P.encode_open(run_uid, kind, affinity, metadata))
        self._wake.wake()

    def __len__(self) -> int:
        """Units not yet acknowledged by the broker."""
        return len(self.outbox)

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until the broker acknowledged everything submitted; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while len(self.outbox) and time.monotonic() < deadline:
            self._wake.wake()
            time.sleep(0.01)
        return len(self.outbox) == 0

    def close(self, timeout_s: float = 5.0) -> None:
        """Try to deliver what is queued for up to ``timeout_s``, then stop (the rest stays on disk)."""
        self.flush(timeout_s)
        self._stop.set()
        self._wake.wake()
        self._thread.join(timeout_s + 2)
        self._wake.close()

    # -- background thread ---------------------------------------------------------------------
    def _connect(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, f"pub-{uuid.uuid4().hex[:12]}".encode())
        if self.keys:
            secure_client(sock, self.keys, "producer")
        sock.connect(self.address)
        return sock

    def _loop(self) -> None:
        """Send and track units until stopped; an error in a turn (a full disk, a bad reply) is counted,
        reported in :attr:`error` and retried after a pause: the thread never dies with units in its care."""
        pause = 0.1
        while not self._stop.is_set():
            try:
                self._run()
                return
            except Exception as exc:
                self.stats["errors"] += 1
                self.error = f"{type(exc).__name__}: {exc}"
                log.error("unit publisher to %s: %s; retrying in %.1f s", self.address, self.error, pause)
                self._stop.wait(pause)
                pause = min(pause * 2, 5.0)

    def _run(self) -> None:
        sock = self._connect()
        try:
            in_flight: dict[str, float] = {}  # unit id -> sent time
            backoff_until = 0.0
            backoff = 0.1
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(self._wake.fileno(), zmq.POLLIN)
            while not self._stop.is_set():
                while self._announcements:
                    sock.send_multipart([P.PROTOCOL, P.OPEN, self._announcements.popleft()])
                    self.stats["announced"] += 1
                now = time.monotonic()
                if now >= backoff_until and len(in_flight) < self.window:
                    # the oldest units, enough to fill the window (listing a backlog of thousands each turn was
                    # a visible share of this thread's time)
                    for unit_id in self.outbox.keys(limit=len(in_flight) + self.window):
                        if len(in_flight) >= self.window:
                            break
                        if unit_id in in_flight:
                            continue
                        frames = self._cache.get(unit_id)
                        if frames is None:
                            try:
                                frames = self.outbox.get(unit_id)
                            except KeyError:
                                continue
                        sock.send_multipart([P.PROTOCOL, P.SUBMIT, *frames], copy=False)
                        in_flight[unit_id] = time.monotonic()
                events = dict(poller.poll(50 if in_flight else 200))
                if self._wake.fileno() in events:
                    self._wake.drain()
                if sock in events:
                    while True:
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._on_reply(frames, in_flight)
                        if frames[1:2] == [P.BUSY]:
                            backoff_until = time.monotonic() + backoff
                            backoff = min(backoff * 2, 2.0)
                        elif frames[1:2] == [P.ACK]:
                            backoff = 0.1
                stale = [u for u, t in in_flight.items() if time.monotonic() - t > self.ack_timeout_s]
                if stale:
                    # no answer: the broker may have restarted; a fresh socket drops stale replies
                    log.info("no ACK for %d unit(s) in %.0f s: reconnecting to %s", len(stale), self.ack_timeout_s,
                             self.address)
                    poller.unregister(sock)
                    sock.close(0)
                    sock = self._connect()
                    poller.register(sock, zmq.POLLIN)
                    self.stats["resent"] += len(in_flight)
                    in_flight.clear()
                if not in_flight and not len(self.outbox):
                    self._idle.set()
        finally:
            sock.close(0)

    def _on_reply(self, frames: list, in_flight: dict[str, float]) -> None:
        try:
            command, body = P.split_envelope(frames)
        except P.ProtocolError as exc:
            log.warning("bad reply from broker: %s", exc)
            return
        if command == P.ACK:
            unit_id = body[0].decode() if body else ""
            in_flight.pop(unit_id, None)
            try:
                self.outbox.remove(unit_id)
                self.error = ""
            except OSError as exc:  # disk full: forgotten here; its record on disk goes with its segment (or,
                self.stats["errors"] += 1  # after a restart of this producer, the unit is sent once more)
                self.error = f"{type(exc).__name__}: {exc}"
                log.error("unit publisher: cannot mark %s delivered in the outbox: %s", unit_id, exc)
            self._uncache(unit_id)
            self.stats["acked"] += 1
        elif command == P.BUSY:
            unit_id = body[0].decode() if body else ""
            in_flight.pop(unit_id, None)
            self.stats["busy"] += 1
        elif command == P.REJECT:
            try:
                info = P.loads(body[0]) if body else {}
            except P.ProtocolError as exc:
                log.warning("bad REJECT from broker: %s", exc)
                return
            unit_id = info.get("unit_id", "")
            in_flight.pop(unit_id, None)
            log.error("broker rejected unit %s: %s", unit_id, info.get("reason"))
            self.stats["rejected"] += 1
            if unit_id in self.outbox:
                self._keep_rejected(unit_id, info.get("reason", ""))

    def _uncache(self, unit_id: str) -> None:
        with self._cache_lock:
            frames = self._cache.pop(unit_id, None)
            if frames is not None:
                self._cached_bytes -= sum(memoryview(f).nbytes for f in frames)

    def _keep_rejected(self, unit_id: str, reason: str) -> None:
        frames = self.outbox.get(unit_id)
        DiskSpool(self.rejected_dir).put(unit_id, [P.dumps({"reason": reason}), *frames])
        self.outbox.remove(unit_id)
        self._uncache(unit_id)


def broker_status(address: str, *, timeout_s: float = 2.0, context: zmq.Context | None = None,
                  keys: str | Path | None = None) -> dict:
    """Ask a broker frontend for its status (JSON; with ``keys``, as a producer); ``TimeoutError`` if it does
    not answer."""
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        if keys:
            secure_client(sock, keys, "producer")
        sock.connect(address)
        sock.send_multipart([P.PROTOCOL, P.STATUS])
        if not sock.poll(int(timeout_s * 1000)):
            raise TimeoutError(f"broker at {address} did not answer within {timeout_s} s")
        command, body = P.split_envelope(sock.recv_multipart())
        return P.loads(body[0], "status")
    finally:
        sock.close(0)
