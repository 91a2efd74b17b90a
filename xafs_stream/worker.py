"""Analysis worker: takes units from the broker, runs the analyses, writes results to Tiled, says DONE.

The socket thread (main loop) only talks ZeroMQ: it announces a credit, heartbeats, and hands units to a
compute thread through a queue, so heartbeats continue during a long analysis or while Tiled is
unreachable. The compute thread runs :func:`~xafs_stream.processing.process_unit` and stores every
record, retrying the store with back-off until it succeeds; each stored record is announced (``STORED``,
which the broker publishes to live readers) and, once all are stored, the unit is acknowledged
(``DONE``). If the broker goes silent (restart), the worker reconnects with a doubling delay (capped)
and introduces itself again.

Stateful map analyses (one owner per map) are kept per run in ``self.map_state`` by
:mod:`xafs_stream.mapowner`; the broker's affinity routing sends all tiles of a map to one worker.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import zmq

from . import protocol as P
from .analyses.registry import Registry
from .processing import process_unit
from .wakeup import Waker
from .storage.results import ResultRecord

log = logging.getLogger(__name__)


@dataclass
class _Open:
    """A run-start hint queued for the compute thread (see :data:`~xafs_stream.protocol.OPEN`)."""

    info: dict[str, Any]


class Worker:
    """One analysis worker process.

    Parameters
    ----------
    address : the broker's backend, e.g. ``tcp://broker-host:5561``
    store : object with ``write(record)`` (a :class:`~xafs_stream.storage.results.ResultStore`)
    registry : the analyses
    config : analysis name → settings
    credit : units this worker may hold at once (1 processing + prefetch)
    heartbeat_s, broker_timeout_s : liveness settings (must match the broker's)
    post_process : optional hook ``(envelope, records) -> extra records`` (map owners use it)
    enabled : run only these analyses (and what they require); None: every registered analysis
    prepare_delay_s : act on a run-start hint (create the run's result nodes) this long after it arrives
    """

    def __init__(
        self,
        address: str,
        store: Any,
        registry: Registry,
        config: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        credit: int = 2,
        heartbeat_s: float = 1.0,
        broker_timeout_s: float = 5.0,
        max_message_bytes: int = P.DEFAULT_MAX_MESSAGE_BYTES,
        post_process: Callable[[P.UnitEnvelope, list[ResultRecord]], list[ResultRecord]] | None = None,
        enabled: list[str] | None = None,
        context: zmq.Context | None = None,
        prepare_delay_s: float = 0.5,
    ):
        self.address = address
        self.store = store
        self.registry = registry
        self.config = dict(config or {})
        self.name = name or f"worker-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.credit = max(1, int(credit))
        self.heartbeat_s = heartbeat_s
        self.broker_timeout_s = broker_timeout_s
        self.max_message_bytes = max_message_bytes
        self.post_process = post_process
        self.enabled = list(enabled) if enabled else None
        self.prepare_delay_s = float(prepare_delay_s)
        self.ctx = context or zmq.Context.instance()
        self.stats = {"units": 0, "records": 0, "errors": 0, "bad_messages": 0, "store_retries": 0, "reconnects": 0}
        self._todo: queue.Queue = queue.Queue()
        self._done: queue.Queue = queue.Queue()
        self._stored: queue.Queue = queue.Queue()  # result events for the broker to publish
        self._waker = Waker()
        self._stop = threading.Event()
        self._compute = threading.Thread(target=self._compute_loop, name=f"{self.name}-compute", daemon=True)

    def stop(self) -> None:
        self._stop.set()

    # -- socket thread ------------------------------------------------------------------------
    def _connect(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, self.name.encode())
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes + P.MAX_HEADER_BYTES)
        sock.connect(self.address)
        held = self._todo.qsize()
        sock.send_multipart([P.PROTOCOL, P.READY, P.dumps({
            "credit": max(1, self.credit - held), "worker": self.name, "host": socket.gethostname(),
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
                        self._on_message(sock, frames)
                while True:
                    try:
                        event = self._stored.get_nowait()
                    except queue.Empty:
                        break
                    sock.send_multipart([P.PROTOCOL, P.STORED, event])
                while True:
                    try:
                        unit_id, status = self._done.get_nowait()
                    except queue.Empty:
                        break
                    sock.send_multipart([P.PROTOCOL, P.DONE, P.dumps({"unit_id": unit_id, "status": status})])
                now = time.monotonic()
                if now >= next_beat:
                    sock.send_multipart([P.PROTOCOL, P.HEARTBEAT])
                    next_beat = now + self.heartbeat_s
                if now - last_heard > self.broker_timeout_s:
                    log.warning("%s: broker silent for %.1f s; reconnecting in %.1f s", self.name,
                                now - last_heard, reconnect_delay)
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
                "credit": max(1, self.credit - self._todo.qsize()), "worker": self.name,
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
            log.error("%s: undecodable unit from broker: %s", self.name, exc)
            try:
                unit_id = str(P.peek_header(body).get("unit_id", ""))
            except P.ProtocolError:
                return
            self._done.put((unit_id, "undecodable"))  # return the credit; the broker keeps no copy
            self._waker.wake()
            return
        envelope.extra["received"] = time.time()
        self._todo.put(envelope)

    # -- compute thread -----------------------------------------------------------------------
    def _compute_loop(self) -> None:
        warm_up = getattr(self.store, "warm_up", None)
        if warm_up is not None:
            try:
                warm_up()
            except Exception as exc:  # Tiled not up yet: the first store retries anyway
                log.info("%s: warm-up of the result store failed: %s", self.name, exc)
        opens: list[tuple[float, dict[str, Any]]] = []  # (when, info) of run-start hints to act on
        while not self._stop.is_set():
            while opens and opens[0][0] <= time.monotonic():
                self._prepare(opens.pop(0)[1])
            try:
                envelope = self._todo.get(timeout=max(0.0, opens[0][0] - time.monotonic()) if opens else None)
            except queue.Empty:
                continue
            if envelope is None:
                return
            if isinstance(envelope, _Open):
                # a run starts, and usually the previous one just stopped: its last units are being stored
                # while the raw writer flushes and creates the new run. Creating our nodes a moment later
                # keeps these requests out of that crowd (the first unit comes seconds later; if sooner,
                # its store creates the nodes itself)
                opens.append((time.monotonic() + self.prepare_delay_s, envelope.info))
                continue
            try:
                records = self.handle(envelope)
                status = "error" if any(r.status == "error" for r in records) else "ok"
            except Exception:  # never let a unit kill the worker; the broker will redeliver it
                log.exception("%s: unit %s crashed the compute thread", self.name, envelope.unit_id)
                continue
            self._done.put((envelope.unit_id, status))
            self._waker.wake()

    def _prepare(self, info: dict[str, Any]) -> None:
        """Create a new run's result nodes ahead of its units (best effort: a failure is only logged)."""
        prepare = getattr(self.store, "prepare", None)
        if prepare is None:
            return
        only = set(self.enabled) if self.enabled is not None else None
        try:
            names = [a.name for a in self.registry.for_kind(info["kind"], only)]
            prepare(info["run_uid"], info.get("metadata") or {}, names)
            self.stats["runs_prepared"] = self.stats.get("runs_prepared", 0) + 1
        except Exception as exc:  # a hint: the first unit creates what is missing
            log.warning("%s: preparing result nodes of run %s failed: %s", self.name, info.get("run_uid"), exc)

    def handle(self, envelope: P.UnitEnvelope) -> list[ResultRecord]:
        """Analyse one unit and store its records (retrying until stored). Returns the records."""
        if self.enabled is not None:
            wanted = set(self.enabled) if envelope.analyses is None else set(envelope.analyses) & set(self.enabled)
            envelope.analyses = sorted(wanted) or ["__none__"]
        sent = envelope.unit.metadata.get("t_complete")

        def store(record: ResultRecord) -> None:  # each record as soon as its analysis is done
            if isinstance(sent, (int, float)):
                record.timings["t_complete"] = float(sent)
                record.timings["since_unit_complete_s"] = time.time() - sent
            self._store(record)

        records = process_unit(envelope, self.registry, self.config, worker=self.name, on_record=store)
        if self.post_process is not None:
            extra = self.post_process(envelope, records)
            for record in extra:
                store(record)
            records = records + extra
        self.stats["units"] += 1
        self.stats["records"] += len(records)
        self.stats["errors"] += sum(r.status == "error" for r in records)
        return records

    #: a store that fails with HTTP 500 this many times is not retried any more: the server answers but
    #: cannot take this result (seen: a Tiled array left unwritable after a read raced its replacement).
    #: Each attempt already includes the Tiled client's own retries (~25 s for a 500).
    max_internal_errors = 3

    def _store(self, record: ResultRecord) -> None:
        delay = 0.5
        refused = 0
        internal = 0
        while True:
            try:
                event = self.store.write(record)
                if isinstance(event, dict):  # tell live readers at once (the socket thread sends it)
                    try:
                        self._stored.put(P.encode_stored(event))
                        self._waker.wake()
                    except (TypeError, ValueError) as exc:  # an event is a courtesy: never fail the result
                        log.warning("%s: result event of %s/%s not sent: %s", self.name, record.unit_id,
                                    record.analysis, exc)
                return
            except Exception as exc:
                transient = _is_connection_error(exc)
                if transient and _status_code(exc) == 500:
                    internal += 1
                    transient = internal < self.max_internal_errors
                if transient:
                    self.stats["store_retries"] += 1
                    log.warning("%s: storing %s/%s failed (%s); retrying in %.1f s", self.name, record.unit_id,
                                record.analysis, exc, delay)
                elif record.status == "ok":
                    # the result itself could not be stored (bad metadata, server refused): record that instead
                    log.error("%s: storing %s/%s refused: %s", self.name, record.unit_id, record.analysis, exc)
                    record.status = "error"
                    code = _status_code(exc)
                    record.error = (f"result could not be stored: {type(exc).__name__}"
                                    f"{f' (HTTP {code})' if code else ''}: {exc}")
                    record.result = None
                    continue
                else:
                    refused += 1
                    log.error("%s: storing error record %s/%s failed: %s", self.name, record.unit_id,
                              record.analysis, exc)
                    if refused >= 3:  # Tiled answers but refuses: do not block the worker forever
                        self.stats["store_failed"] = self.stats.get("store_failed", 0) + 1
                        log.critical("%s: giving up on storing %s/%s", self.name, record.unit_id, record.analysis)
                        return
                if self._stop.wait(delay):
                    raise RuntimeError("worker stopped before the result was stored") from exc
                delay = min(delay * 2, 10.0)


def _status_code(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _is_connection_error(exc: Exception) -> bool:
    import httpx

    if isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, httpx.HTTPStatusError) and exc.response is not None and exc.response.status_code >= 500:
        return True
    return False
