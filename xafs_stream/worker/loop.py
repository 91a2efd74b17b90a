"""The worker process's socket loop: takes units from the broker, hands them to a unit handler, says DONE.

The socket thread (main loop) only talks ZeroMQ: it announces a credit, heartbeats, and hands units to a
compute thread through a queue, so heartbeats continue during a long analysis or while Tiled is
unreachable. The compute thread runs the :class:`~xafs_stream.worker.handler.UnitHandler` (analyses, then
each record stored); each stored record is announced (``STORED``, which the broker publishes to live
readers) and, once all are stored, the unit is acknowledged (``DONE``). If the broker goes silent
(restart), the worker reconnects with a doubling delay (capped) and introduces itself again.

Stateful map analyses (one owner per map) are kept by the handler's post-processing hook
(:class:`~xafs_stream.worker.mapowner.MapOwner`); the broker's affinity routing sends all tiles of a map to
one worker.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import zmq

from ..config import BrokerConfig, WorkerConfig
from ..transport import protocol as P
from ..transport.rejects import RejectLog
from ..transport.security import secure_client
from ..transport.wakeup import Waker
from .handler import StoreFailed, UnitHandler

log = logging.getLogger(__name__)

STOP_FLUSH_S = 2.0  # how long a stopping worker waits for its compute thread to send deferred run summaries (s)


def default_worker_name() -> str:
    """``worker-<host>-<pid>-<random>``: unique across hosts and restarts."""
    return f"worker-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Open:
    """A run-start hint queued for the compute thread (see :data:`~xafs_stream.transport.protocol.OPEN`)."""

    info: dict[str, Any]


class Worker:
    """One analysis worker process.

    Parameters
    ----------
    address : the broker's backend, e.g. ``tcp://broker-host:5561``
    handler : analyses and result storage of each unit
    config : the ``[worker]`` settings (``credit``: units held at once, 1 processing + prefetch)
    broker : the ``[broker]`` settings whose liveness and size limits the worker must share
        (``heartbeat_s``, ``worker_timeout_s``, ``max_message_bytes``)
    name : the worker's identity at the broker (default: the handler's name, else host-pid-random)
    prepare_delay_s : act on a run-start hint (create the run's result nodes) this long after it arrives
    keys : CURVE key directory (``[security] keys``); the worker's keys are used
    """

    def __init__(
        self,
        address: str,
        handler: UnitHandler,
        config: WorkerConfig | None = None,
        broker: BrokerConfig | None = None,
        *,
        name: str | None = None,
        context: zmq.Context | None = None,
        prepare_delay_s: float = 0.5,
        keys: str | None = None,
    ):
        config = config or WorkerConfig()
        broker = broker or BrokerConfig()
        self.address = address
        self.handler = handler
        self.name = name or handler.name or default_worker_name()
        handler.name = handler.name or self.name
        handler.on_stored = self._announce
        self.credit = max(1, int(config.credit))
        self.lane = config.lane
        self.heartbeat_s = broker.heartbeat_s
        self.broker_timeout_s = broker.worker_timeout_s
        self.max_message_bytes = broker.max_message_bytes
        self.prepare_delay_s = float(prepare_delay_s)
        self.keys = keys
        self.ctx = context or zmq.Context.instance()
        self.stats = {"bad_messages": 0, "reconnects": 0}
        self.rejects = RejectLog(log)
        self._todo: queue.Queue = queue.Queue()
        self._done: queue.Queue = queue.Queue()
        self._stored: queue.Queue = queue.Queue()  # result events for the broker to publish
        self._waker = Waker()
        self._stop = threading.Event()
        self._compute = threading.Thread(target=self._compute_loop, name=f"{self.name}-compute", daemon=True)

    def stop(self) -> None:
        self._stop.set()
        self.handler.stop()

    def tile_waiting(self, run_uid: str) -> bool:
        """Whether a tile of run ``run_uid`` waits in this worker's queue (received, not yet being processed)."""
        with self._todo.mutex:
            waiting = list(self._todo.queue)
        return any(isinstance(e, P.UnitEnvelope) and e.unit.kind == "tile" and e.unit.run_uid == run_uid
                   for e in waiting)

    def _announce(self, event: dict[str, Any]) -> None:
        """A record is stored: the socket thread tells the broker (``STORED``)."""
        self._stored.put(P.encode_stored(event))
        self._waker.wake()

    # -- socket thread ------------------------------------------------------------------------
    def _connect(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, self.name.encode())
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes + P.MAX_HEADER_BYTES)
        if self.keys:
            secure_client(sock, self.keys, "worker")
        sock.connect(self.address)
        held = self._todo.qsize()
        sock.send_multipart([P.PROTOCOL, P.READY, P.dumps({
            "credit": max(1, self.credit - held), "lane": self.lane, "worker": self.name, "host": socket.gethostname(),
            "pid": os.getpid()})])
        return sock

    def run(self) -> None:
        """Serve until :meth:`stop`."""
        self._compute.start()
        sock = self._connect()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._waker.fileno(), zmq.POLLIN)
        last_heard = time.monotonic()
        next_beat = time.monotonic() + self.heartbeat_s
        reconnect_delay = 0.5
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(100))
                if self._waker.fileno() in events:
                    self._waker.drain()
                if sock in events:
                    while True:
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        last_heard = time.monotonic()
                        try:
                            self._on_message(sock, frames)
                        except Exception as exc:  # input no check foresaw: counted, never fatal
                            self.stats["bad_messages"] += 1
                            self.rejects.reject(b"broker", f"internal error: {type(exc).__name__}: {exc}")
                while True:
                    try:
                        event = self._stored.get_nowait()
                    except queue.Empty:
                        break
                    sock.send_multipart([P.PROTOCOL, P.STORED, event])
                while True:
                    try:
                        command, unit_id, lane, detail = self._done.get_nowait()
                    except queue.Empty:
                        break
                    key = "status" if command == P.DONE else "reason"
                    sock.send_multipart([P.PROTOCOL, command,
                                         P.dumps({"unit_id": unit_id, "lane": lane, key: detail})])
                now = time.monotonic()
                if now >= next_beat:
                    sock.send_multipart([P.PROTOCOL, P.HEARTBEAT])
                    next_beat = now + self.heartbeat_s
                if now - last_heard > self.broker_timeout_s:
                    log.warning("%s: broker at %s silent for %.1f s; reconnecting in %.1f s", self.name,
                                self.address, now - last_heard, reconnect_delay)
                    poller.unregister(sock)
                    sock.close(0)
                    if self._stop.wait(reconnect_delay):
                        break
                    reconnect_delay = min(reconnect_delay * 2, 8.0)
                    sock = self._connect()
                    poller.register(sock, zmq.POLLIN)
                    self.stats["reconnects"] += 1
                    last_heard = time.monotonic()
                elif now - last_heard < self.heartbeat_s:
                    reconnect_delay = 0.5
            try:
                sock.send_multipart([P.PROTOCOL, P.BYE], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        finally:
            sock.close(0)
            self._stop.set()
            self._todo.put(None)
            self._waker.close()
            # a moment for the compute thread to finish and send the run summaries it deferred (one request
            # each); a unit still computing is not waited for (the broker redelivers it)
            self._compute.join(STOP_FLUSH_S)

    def _on_message(self, sock: zmq.Socket, frames: list) -> None:
        try:
            command, body = P.split_envelope(frames)
        except P.ProtocolError as exc:
            self.stats["bad_messages"] += 1
            log.warning("%s: bad message from broker: %s", self.name, exc)
            return
        if command == P.HEARTBEAT:
            return
        if command == P.READY:  # the broker does not know us (it restarted): introduce ourselves
            sock.send_multipart([P.PROTOCOL, P.READY, P.dumps({
                "credit": max(1, self.credit - self._todo.qsize()), "lane": self.lane, "worker": self.name,
                "host": socket.gethostname(), "pid": os.getpid()})])
            return
        if command == P.OPEN:  # a run of ours started: prepare its result nodes (in order, before its units)
            try:
                self._todo.put(_Open(P.decode_open(body)))
            except P.ProtocolError as exc:
                self.stats["bad_messages"] += 1
                log.warning("%s: bad OPEN from broker: %s", self.name, exc)
            return
        if command != P.UNIT:
            log.warning("%s: unexpected %s from broker", self.name, command.decode())
            return
        try:
            envelope = P.decode_unit(body, max_bytes=self.max_message_bytes)
        except P.ProtocolError as exc:
            self.stats["bad_messages"] += 1
            self.rejects.reject(b"broker", f"undecodable unit: {exc}")
            try:
                header = P.peek_header(body)
                unit_id, lane = str(header.get("unit_id", "")), str((header.get("extra") or {}).get("lane", ""))
            except (P.ProtocolError, AttributeError):
                return
            self._done.put((P.DONE, unit_id, lane, "undecodable"))  # return the credit
            self._waker.wake()
            return
        envelope.extra["received"] = time.time()
        self._todo.put(envelope)

    # -- compute thread -----------------------------------------------------------------------
    def _process(self, envelope: P.UnitEnvelope) -> str:
        """Analyse and store one unit: ``"ok"`` or ``"error"`` (some analysis recorded an error);
        :class:`StoreFailed` when its results cannot be stored."""
        try:
            records = self.handler.handle(envelope)
            return "error" if any(r.status == "error" for r in records) else "ok"
        except StoreFailed:
            raise
        except Exception as exc:  # outside any one analysis: record why, and give the credit back
            if self._stop.is_set():
                raise RuntimeError("worker stopping") from exc
            log.exception("%s: unit %s failed outside its analyses", self.name, envelope.unit_id)
            return self.handler.fail(envelope, f"{type(exc).__name__}: {exc}")

    def _compute_loop(self) -> None:
        """Analyse and store the units the socket thread queues, in order; act on run-start hints; send the
        run summaries the store deferred when they are due, and all of them when stopping."""
        self.handler.warm_up()
        opens: list[tuple[float, dict[str, Any]]] = []  # (when, info) of run-start hints to act on
        while not self._stop.is_set():
            while opens and opens[0][0] <= time.monotonic():
                self.handler.prepare(opens.pop(0)[1])
            wait = self.handler.flush()  # the run summaries a busy live map deferred, when due (no request if none)
            flush_at = None if wait is None else time.monotonic() + wait
            deadlines = [t for t in (opens[0][0] if opens else None, flush_at) if t is not None]
            try:
                envelope = self._todo.get(timeout=max(0.0, min(deadlines) - time.monotonic()) if deadlines else None)
            except queue.Empty:
                continue
            if envelope is None:
                break
            if isinstance(envelope, _Open):
                # a run starts, and usually the previous one just stopped: its last units are being stored
                # while the raw writer flushes and creates the new run. Creating our nodes a moment later
                # keeps these requests out of that crowd (the first unit comes seconds later; if sooner,
                # its store creates the nodes itself)
                opens.append((time.monotonic() + self.prepare_delay_s, envelope.info))
                continue
            lane = envelope.extra.get("lane") or ""
            try:
                status = self._process(envelope)
            except StoreFailed as exc:  # not done: the broker keeps the unit, retries it later, shows why
                log.error("%s: unit %s not stored: %s", self.name, envelope.unit_id, exc)
                self._done.put((P.FAILED, envelope.unit_id, lane, str(exc)[: P.MAX_TEXT]))
                self._waker.wake()
                continue
            except RuntimeError:
                if self._stop.is_set():
                    return  # stopping mid-store: the broker redelivers the unit (BYE)
                raise
            self._done.put((P.DONE, envelope.unit_id, lane, status))
            self._waker.wake()
        self.handler.flush(force=True)  # stopping: what was deferred is sent now
