"""The unit broker: producers submit units, workers take them with credit-based flow control.

Pattern: two ROUTER sockets (ZeroMQ guide, "reliable request-reply": the Paranoid Pirate queue with
heartbeats, plus a Titanic-style disk store):

- **frontend** (producers, DEALER): ``SUBMIT`` → the unit is validated, written to the durable store
  (:class:`~.spool.DiskSpool`) and only then acknowledged (``ACK``). A unit the workers will
  likely finish soon is not written: it is acknowledged when its worker says ``DONE`` (until then the
  producer's outbox keeps it), or stored and acknowledged after ``ack_after_done_s`` if it is not done by
  then (or when the broker stops). At every moment the producer's outbox or this store holds the unit.
  When the store holds
  ``max_pending`` units or ``max_pending_bytes``, the broker answers ``BUSY`` and the producer keeps the
  unit in its own disk outbox: back-pressure, never unbounded memory. Malformed messages get ``REJECT``
  with the reason, are logged and counted; the broker carries on.
- **backend** (workers, DEALER): a worker announces ``READY`` with a credit (how many units it may hold);
  the broker sends ``UNIT`` while the worker has credit, least-loaded worker first; ``DONE`` returns a
  credit and deletes the unit from the store. Units with an ``affinity`` key (all tiles of one map) go to
  the same worker while it lives, so a map has one owner.
- **events** (readers, SUB): when a worker has stored a result it says ``STORED``; the broker republishes it
  on the events socket, so live readers (dashboards, notebooks, ``xafs-stream watch``) read a result the
  moment it is readable instead of polling Tiled for it. Best effort (PUB/SUB): Tiled stays the record.
- **results that cannot be stored**: a worker that cannot store a unit's results (Tiled refuses even an
  error record, e.g. its disk is full) says ``FAILED`` instead of ``DONE``: the unit stays in the store,
  is listed under ``failing`` in the status with the reason, and is dispatched again after a back-off
  (``failed_retry_s``, doubling up to ``failed_retry_max_s``). It is never acknowledged as done.
- **reliability**: both sides heartbeat. A worker silent for ``worker_timeout_s`` is expired and its units
  are redelivered; a unit in flight longer than ``unit_timeout_s`` is redelivered to another worker too
  (results are idempotent, so a late duplicate does no harm). After ``max_attempts`` deliveries the unit
  is sent once more marked *poisoned*: the worker records an error result instead of running it.
  On restart the broker reloads every stored unit: a broker crash loses nothing.

- **lanes** (``lanes = true``): each unit becomes two deliveries, ``fast`` (normalisation, quality, map
  tiles) and ``slow`` (sparse modeling, Bayesian fits), queued and credited separately, so a fast result
  never waits behind a slow fit. Workers serve one lane (``[worker] lane``) or both (``""``); a delivery
  says its lane and the worker runs that lane's analyses. The unit leaves the store when every lane is
  done. **Overload**: when more than ``shed_after`` slow deliveries wait, new slow deliveries of units the
  ``shed_keep`` policy does not keep ("merges": merged spectra; "every:N": merges and every N-th repeat)
  are sent *shed*: the worker records their slow analyses as skipped with the reason instead of running
  them (``xafs-stream reprocess`` fills them later). Fast analyses always run.

Payloads are also kept in memory up to ``memory_cache_bytes`` (dispatch without a disk read); beyond
that they are read back from the store.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from ..config import BrokerConfig, SecurityConfig
from . import protocol as P
from .rejects import RejectLog, clip
from .security import check_binds, secure_server, start_authenticator
from .spool import DiskSpool

log = logging.getLogger(__name__)
MAX_AFFINITY_KEYS = 10_000
LANES = ("fast", "slow")


def delivery_key(unit_id: str, lane: str) -> str:
    """The key of one lane's delivery of a unit (the unit id itself without lanes)."""
    return f"{unit_id}@{lane}" if lane else unit_id


def split_key(key: str) -> tuple[str, str]:
    """``(unit id, lane)`` of a delivery key (unit ids never contain ``@``)."""
    unit_id, _, lane = key.partition("@")
    return unit_id, lane


@dataclass
class _Pending:
    unit_id: str
    lane: str
    affinity: str | None
    attempt: int
    size: int
    shed: str = ""  # why the slow analyses are not run (overload), or ""
    since: float = field(default_factory=time.monotonic)


@dataclass
class _Worker:
    identity: bytes
    credit: int = 0
    lane: str = ""  # the lane it serves ("": every lane)
    last_seen: float = field(default_factory=time.monotonic)
    inflight: dict[str, float] = field(default_factory=dict)  # delivery key -> sent time
    info: dict[str, Any] = field(default_factory=dict)
    done: int = 0


class Broker:
    """The broker's state machine and event loop (run it with :meth:`run`, stop with :meth:`stop`)."""

    def __init__(self, config: BrokerConfig, security: SecurityConfig | None = None, *,
                 context: zmq.Context | None = None):
        self.config = config
        security = security or SecurityConfig()
        check_binds({"frontend": config.frontend, "backend": config.backend, "events": config.events},
                    security.keys, security.allow_insecure)
        self.ctx = context or zmq.Context.instance()
        # the ZAP handler runs before any socket binds: no peer ever talks to an unauthenticated socket
        self._auth = start_authenticator(self.ctx, security.keys) if security.keys else None
        if not config.store_dir:
            raise ValueError("the broker needs a store directory ([broker] store_dir)")
        self.store = DiskSpool(Path(config.store_dir), fsync=config.fsync)
        self.lanes = LANES if config.lanes else ("",)
        self._keep = _keep_policy(config.shed_keep)
        # deliveries waiting for a worker (delivery key -> item; without lanes the key is the unit id)
        self.pending: OrderedDict[str, _Pending] = OrderedDict()
        self.lane_pending = {lane: 0 for lane in self.lanes}
        self.inflight: dict[str, tuple[bytes, float]] = {}  # delivery key -> (worker identity, sent time)
        self.attempts: dict[str, int] = {}  # delivery key -> deliveries so far
        self.remaining: dict[str, set[str]] = {}  # unit id -> lanes not done yet
        self.workers: dict[bytes, _Worker] = {}
        self.owners: OrderedDict[str, bytes] = OrderedDict()  # affinity key -> worker identity (LRU, capped)
        self.stats: dict[str, int] = {k: 0 for k in (
            "submitted", "duplicates", "busy", "rejected", "dispatched", "done", "redelivered", "poisoned", "opened",
            "workers_expired", "late_done", "acked_on_done", "stored_late", "events", "errors", "store_errors",
            "failed", "shed")}
        self.rejects = RejectLog(log)
        self._cache: dict[str, list] = {}  # unit id -> body frames, for dispatch without a disk read
        # units not stored yet (their producer's outbox holds them): unit id -> (producer identity, deadline)
        self.deferred: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._done_times: deque[float] = deque(maxlen=64)  # when the latest units were done (monotonic s)
        # deliveries whose results could not be stored: key -> (reason, failures, monotonic time to retry)
        self.failing: OrderedDict[str, tuple[str, int, float]] = OrderedDict()
        self._cached_bytes = 0
        self._running = False
        for key in self.store.keys():
            try:
                header = P.peek_header(self.store.get(key)[:1])
            except (P.ProtocolError, KeyError) as exc:
                log.error("stored unit %s unreadable (%s); left on disk", key, exc)
                continue
            self._queue_unit(key, header, self.store.size_of(key), attempt=int(header.get("attempt", 0)))
        if self.remaining:
            log.info("broker restored %d stored units from %s", len(self.remaining), config.store_dir)
        self.frontend = self.ctx.socket(zmq.ROUTER)
        self.backend = self.ctx.socket(zmq.ROUTER)
        for sock in (self.frontend, self.backend):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.setsockopt(zmq.RCVHWM, 10_000)
            sock.setsockopt(zmq.SNDHWM, 10_000)
        # a peer that sends a frame above the limit is disconnected by libzmq before we see it
        self.frontend.setsockopt(zmq.MAXMSGSIZE, config.max_message_bytes + P.MAX_HEADER_BYTES)
        if security.keys:
            secure_server(self.frontend, security.keys, "frontend")
            secure_server(self.backend, security.keys, "backend")
        self.frontend_address = _bind(self.frontend, config.frontend)
        self.backend_address = _bind(self.backend, config.backend)
        self.events: zmq.Socket | None = None
        self.events_address = ""
        if config.events:
            # XPUB: a PUB that also hands us each subscription (verbose: every one, not only a topic's first),
            # so that a subscriber is told when its subscriptions are in place (HELLO)
            self.events = self.ctx.socket(zmq.XPUB)
            self.events.setsockopt(zmq.LINGER, 0)
            self.events.setsockopt(zmq.XPUB_VERBOSE, 1)
            self.events.setsockopt(zmq.SNDHWM, 10_000)  # a slow subscriber loses events, never slows the broker
            if security.keys:
                secure_server(self.events, security.keys, "events")
            self.events_address = _bind(self.events, config.events)
        log.info("broker frontend %s backend %s events %s", self.frontend_address, self.backend_address,
                 self.events_address or "(none)")

    # -- public ---------------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until :meth:`stop` (or SIGTERM when running as the main program)."""
        self._running = True
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.backend, zmq.POLLIN)
        if self.events is not None:
            poller.register(self.events, zmq.POLLIN)
        next_beat = time.monotonic()
        while self._running:
            timeout_ms = max(0, int(1000 * (next_beat - time.monotonic())))
            events = dict(poller.poll(min(timeout_ms, 200)))
            if self.frontend in events:
                self._drain(self.frontend, self._on_frontend)
            if self.backend in events:
                self._drain(self.backend, self._on_backend)
            if self.events is not None and self.events in events:
                self._drain(self.events, self._on_subscription)
            now = time.monotonic()
            try:
                if self.deferred:
                    self._store_overdue(now)
                if self.failing:
                    self._retry_failing(now)
                if now >= next_beat:
                    next_beat = now + self.config.heartbeat_s
                    self._heartbeat(now)
                    self._expire(now)
                self._dispatch()
            except Exception as exc:  # a bug or a failing disk: counted and logged, never fatal
                self.stats["errors"] += 1
                self.rejects.reject(b"broker", f"internal error: {type(exc).__name__}: {exc}")
                log.debug("broker housekeeping failed", exc_info=True)
        self.close()

    def stop(self) -> None:
        self._running = False

    def _drain(self, sock: zmq.Socket, handle: Any) -> None:
        """Hand up to 1000 waiting messages to ``handle``; whatever a message makes it raise is counted and
        logged (at a bounded rate) and the broker goes on: no message can end the broker."""
        for _ in range(1000):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                handle(frames)
            except Exception as exc:  # a bug or input no check foresaw: never fatal
                self.stats["errors"] += 1
                peer = frames[0].bytes if frames and sock is not self.events else b"subscriber"
                self.rejects.reject(peer, f"internal error: {type(exc).__name__}: {exc}")
                log.debug("message handling failed", exc_info=True)

    def close(self) -> None:
        """Store what is deferred (a restarted broker then dispatches it at once, instead of waiting for the
        producers to resend it) and close the sockets."""
        for unit_id in list(self.deferred):
            self._persist(unit_id)
        for sock in (self.frontend, self.backend, self.events):
            if sock is not None and not sock.closed:
                sock.close(0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self.store.close()

    def status(self) -> dict[str, Any]:
        """Counts and per-worker state (JSON-able)."""
        now = time.monotonic()
        return {
            "events_address": self.events_address,
            "pending": len(self.pending),
            "inflight": len(self.inflight),
            "stored": len(self.store),
            "stored_bytes": self.store.total_bytes,
            "deferred": len(self.deferred),
            "failing": len(self.failing),
            "failing_units": [{"unit_id": split_key(k)[0], "lane": split_key(k)[1], "reason": r, "failures": n,
                               "retry_in_s": round(max(0.0, t - now), 1)}
                              for k, (r, n, t) in list(self.failing.items())[:20]],
            "lanes": {lane: {"pending": self.lane_pending[lane],
                             "inflight": sum(split_key(k)[1] == lane for k in self.inflight),
                             "workers": sum(w.lane in ("", lane) for w in self.workers.values()),
                             "shedding": self._shedding(lane)} for lane in self.lanes if lane},
            "overload": {"shed_after": self.config.shed_after, "shed_keep": self.config.shed_keep},
            "workers": [
                {"id": w.identity.decode(errors="replace"), "credit": w.credit, "inflight": len(w.inflight),
                 "done": w.done, "lane": w.lane, "idle_s": round(now - w.last_seen, 2), **w.info}
                for w in self.workers.values()
            ],
            "stats": {**self.stats, "denied": self._auth.role_keys.denied if self._auth else 0},
            "recent_rejections": list(self.rejects.recent),
        }

    # -- frontend -------------------------------------------------------------------------------
    def _on_frontend(self, frames: list) -> None:
        identity = frames[0].bytes
        try:
            command, body = P.split_envelope(frames[1:])
        except P.ProtocolError as exc:
            return self._reject(identity, "", str(exc))
        if command == P.STATUS:
            return self._send(self.frontend, identity, P.STATUS, P.dumps(self.status()))
        if command == P.OPEN:
            return self._on_open(identity, body)
        if command != P.SUBMIT:
            return self._reject(identity, "", f"command {command.decode()} not accepted on the frontend")
        unit_id = ""
        try:
            header = P.peek_header(body)
            unit_id = str(header.get("unit_id", ""))
            P.decode_unit(body, max_bytes=self.config.max_message_bytes)
        except P.ProtocolError as exc:
            return self._reject(identity, unit_id, str(exc))
        if unit_id in self.remaining:
            if not self._same_unit(unit_id, body):
                return self._reject(identity, unit_id, "a unit with this id and different data is already queued")
            self.stats["duplicates"] += 1  # a resend after a lost ACK (or a timeout while deferred)
            if unit_id in self.deferred:
                self.deferred[unit_id] = (identity, 0.0)  # the producer is waiting: store and ACK now
                return self._store_overdue(time.monotonic())
            return self._send(self.frontend, identity, P.ACK, unit_id.encode())
        size = sum(len(f.buffer) if hasattr(f, "buffer") else len(f) for f in body)
        if len(self.store) >= self.config.max_pending or self.store.total_bytes + size > self.config.max_pending_bytes:
            self.stats["busy"] += 1
            return self._send(self.frontend, identity, P.BUSY, unit_id.encode())
        fits = self._cached_bytes + size <= self.config.memory_cache_bytes
        if fits and self.config.ack_after_done_s > 0 and self.lane_pending[self.lanes[0]] < self._quick_queue():
            # a worker will have it done soon: skip the disk, acknowledge on DONE (the outbox holds it meanwhile)
            self.deferred[unit_id] = (identity, time.monotonic() + self.config.ack_after_done_s)
        else:
            try:
                self.store.put(unit_id, body)
            except OSError as exc:  # disk full or failing: the producer keeps the unit and retries later
                self.stats["store_errors"] += 1
                self.rejects.reject(b"store", f"cannot store unit: {exc}")
                return self._send(self.frontend, identity, P.BUSY, unit_id.encode())
        if fits:
            self._cache[unit_id] = body
            self._cached_bytes += size
        self._queue_unit(unit_id, header, size)
        self.stats["submitted"] += 1
        if unit_id not in self.deferred:
            self._send(self.frontend, identity, P.ACK, unit_id.encode())

    def _queue_unit(self, unit_id: str, header: dict, size: int, *, attempt: int = 0) -> None:
        """One delivery per lane of a unit now held here (stored or deferred)."""
        self.remaining[unit_id] = set(self.lanes)
        for lane in self.lanes:
            key = delivery_key(unit_id, lane)
            self._add_pending(key, _Pending(unit_id, lane, header.get("affinity"), attempt, size,
                                            shed=self._shed_reason(lane, header)))
            self.attempts[key] = attempt

    def _add_pending(self, key: str, item: _Pending, *, front: bool = False) -> None:
        if key not in self.pending:
            self.lane_pending[item.lane] += 1
        self.pending[key] = item
        if front:  # redelivered work is the oldest: it goes first
            self.pending.move_to_end(key, last=False)

    def _pop_pending(self, key: str) -> _Pending | None:
        item = self.pending.pop(key, None)
        if item is not None:
            self.lane_pending[item.lane] -= 1
        return item

    def _shedding(self, lane: str) -> bool:
        """Is ``lane`` over its overload threshold (its new deliveries shed unless the policy keeps them)?"""
        return lane == "slow" and 0 < self.config.shed_after < self.lane_pending[lane]

    def _shed_reason(self, lane: str, header: dict) -> str:
        if not self._shedding(lane) or self._keep(header.get("kind"), header.get("index")):
            return ""
        self.stats["shed"] += 1
        return (f"shed under overload: more than {self.config.shed_after} slow deliveries waiting "
                f"([broker] shed_after); [broker] shed_keep = {self.config.shed_keep!r} keeps this unit out")

    def _same_unit(self, unit_id: str, body: list) -> bool:
        """Is ``body`` the unit already held under ``unit_id`` (a resend), byte for byte?"""
        held = self._cache.get(unit_id)
        if held is None:
            try:
                held = self.store.get(unit_id)
            except KeyError:
                return True  # in flight and no longer held here: nothing to compare with
        return len(held) == len(body) and all(_bytes(a) == _bytes(b) for a, b in zip(held, body))

    def _quick_queue(self) -> int:
        """How many pending units the workers will likely finish within half of ``ack_after_done_s``: the
        free credit plus the recent done rate times that time (units beyond it are stored at once, so a
        backlog for slow workers does not hold its producer's window)."""
        credit = sum(w.credit for w in self.workers.values())
        if len(self._done_times) < 2:
            return credit
        span = self._done_times[-1] - self._done_times[0]
        if time.monotonic() - self._done_times[-1] > self.config.ack_after_done_s or span <= 0:
            return credit  # nothing finished lately: no rate to count on
        rate = (len(self._done_times) - 1) / span
        return credit + int(rate * self.config.ack_after_done_s / 2)

    def _store_overdue(self, now: float) -> None:
        """Store and acknowledge the deferred units whose time is up (few: those expected to finish soon)."""
        for unit_id in [u for u, (_, deadline) in self.deferred.items() if deadline <= now]:
            self._persist(unit_id)

    def _persist(self, unit_id: str) -> None:
        """A deferred unit goes to the store, then its producer gets the ACK. If the store cannot take it
        (disk full), it stays deferred (its producer's outbox still holds it) and is tried again later."""
        identity, _ = self.deferred[unit_id]
        try:
            self.store.put(unit_id, self._cache[unit_id])
        except OSError as exc:
            self.deferred[unit_id] = (identity, time.monotonic() + max(1.0, self.config.ack_after_done_s))
            self.stats["store_errors"] += 1
            self.rejects.reject(b"store", f"cannot store unit: {exc}")
            return
        del self.deferred[unit_id]
        self.stats["stored_late"] += 1
        self._send(self.frontend, identity, P.ACK, unit_id.encode())

    def _held(self, unit_id: str) -> bool:
        """Is the unit's body here (in the store, or in memory while deferred)?"""
        return unit_id in self.store or unit_id in self._cache

    def _on_open(self, identity: bytes, body: list) -> None:
        """A run started: pick its owner now (the worker with the least work; affinity keeps the run's units
        with it) and pass the hint on, so the owner creates the run's result nodes before its first unit.
        Nothing is stored or acknowledged: a lost hint only costs the first unit those requests."""
        try:
            info = P.decode_open(body)
        except P.ProtocolError as exc:
            return self._reject(identity, "", f"OPEN: {exc}")
        lane = self.lanes[0]  # the fast lane (or the only one) stores the run's first results
        affinity = _affinity_key(lane, info.get("affinity"))
        owner = self.workers.get(self.owners.get(affinity, b"")) if affinity else None
        if owner is None:
            candidates = [w for w in self.workers.values() if w.lane in ("", lane)]
            if not candidates:
                return
            owner = _least_loaded(candidates)
            if affinity:
                self._own(affinity, owner)
        self.stats["opened"] += 1
        self._send(self.backend, owner.identity, P.OPEN, _bytes(body[0]))

    def _own(self, affinity: str, worker: _Worker) -> None:
        self.owners[affinity] = worker.identity
        self.owners.move_to_end(affinity)  # a re-assigned key (its owner died) is fresh, not old
        while len(self.owners) > MAX_AFFINITY_KEYS:  # old runs: forget their owner
            self.owners.popitem(last=False)

    def _reject(self, identity: bytes, unit_id: str, reason: str) -> None:
        self.stats["rejected"] += 1
        self.rejects.reject(identity, reason)
        self._send(self.frontend, identity, P.REJECT, P.dumps({"unit_id": clip(unit_id), "reason": clip(reason)}))

    # -- backend --------------------------------------------------------------------------------
    def _on_backend(self, frames: list) -> None:
        identity = frames[0].bytes
        try:
            command, body = P.split_envelope(frames[1:])
        except P.ProtocolError as exc:
            self.stats["rejected"] += 1
            self.rejects.reject(identity, f"from a worker: {exc}")
            return
        worker = self.workers.get(identity)
        if command == P.READY:
            try:
                info = P.decode_ready(body)
            except P.ProtocolError as exc:
                self.stats["rejected"] += 1
                self.rejects.reject(identity, f"READY: {exc}")
                return
            credit = info.pop("credit")
            lane = info.pop("lane", "")
            if lane and lane not in self.lanes:
                self.stats["rejected"] += 1
                self.rejects.reject(identity, f"READY: lane {lane!r}, but this broker has lanes {self.lanes}")
                return
            if worker is None:
                worker = self.workers[identity] = _Worker(identity)
                log.info("worker %s joined (credit %d, lane %s)", clip(identity.decode(errors="replace"), 64), credit,
                         lane or "all")
            worker.credit = max(0, credit - len(worker.inflight))
            worker.lane = lane
            worker.info = info
            worker.last_seen = time.monotonic()
            return
        if worker is None:
            # unknown worker (we restarted, or it was expired): ask it to introduce itself again
            self._send(self.backend, identity, P.READY, b"{}")
            if command == P.DONE:
                self._on_done(None, body)
            elif command == P.STORED:  # stored while we were down: still news for readers
                self._on_stored(identity, body)
            return
        worker.last_seen = time.monotonic()
        if command == P.HEARTBEAT:
            return
        if command == P.DONE:
            self._on_done(worker, body)
            return
        if command == P.FAILED:
            self._on_failed(worker, body)
            return
        if command == P.STORED:
            self._on_stored(identity, body)
            return
        if command == P.BYE:
            self._remove_worker(identity, reason="said goodbye")
            return
        self.stats["rejected"] += 1
        self.rejects.reject(identity, f"command {command.decode()} not accepted from a worker")

    def _on_done(self, worker: _Worker | None, body: list) -> None:
        """A worker finished a delivery: forget it; when every lane of its unit is done, forget the unit (ACK
        its producer if it was deferred). Only the worker the delivery was sent to can finish it: a DONE for
        one it does not hold (a late one after a redelivery or a broker restart, or a forged one) changes
        nothing but a count."""
        try:
            info = P.decode_done(body)
        except P.ProtocolError as exc:
            self.stats["rejected"] += 1
            self.rejects.reject(worker.identity if worker else b"unknown worker", f"DONE: {exc}")
            return
        key = delivery_key(info["unit_id"], info["lane"])
        if worker is None or key not in worker.inflight:
            self.stats["late_done"] += 1
            return
        del worker.inflight[key]
        worker.credit += 1
        worker.done += 1
        self._finish(key)

    def _finish(self, key: str) -> None:
        """Delivery ``key`` is done; its unit too once no lane is left."""
        unit_id, lane = split_key(key)
        self.inflight.pop(key, None)
        self._pop_pending(key)
        self.attempts.pop(key, None)
        self.failing.pop(key, None)
        left = self.remaining.get(unit_id)
        if left is None:
            self.stats["late_done"] += 1
            return
        left.discard(lane)
        if left:
            return
        del self.remaining[unit_id]
        self._uncache(unit_id)
        self._done_times.append(time.monotonic())
        deferred = self.deferred.pop(unit_id, None)
        if deferred is not None:  # never stored: done is what lets its producer forget it
            self.stats["acked_on_done"] += 1
            self._send(self.frontend, deferred[0], P.ACK, unit_id.encode())
        self.stats["done"] += 1
        try:
            self.store.remove(unit_id)
        except OSError as exc:  # disk full: the record stays on disk; after a restart the unit is redone
            self.stats["store_errors"] += 1
            self.rejects.reject(b"store", f"cannot mark unit {unit_id} done on disk: {exc}")

    def _on_failed(self, worker: _Worker, body: list) -> None:
        """A worker could not store a delivery's results: keep the unit (stored durably), retry the delivery
        after a back-off, list it as failing; give the worker its credit back."""
        try:
            info = P.decode_failed(body)
        except P.ProtocolError as exc:
            self.stats["rejected"] += 1
            self.rejects.reject(worker.identity, f"FAILED: {exc}")
            return
        key = delivery_key(info["unit_id"], info["lane"])
        if key not in worker.inflight:
            self.stats["late_done"] += 1
            return
        del worker.inflight[key]
        worker.credit += 1
        self.inflight.pop(key, None)
        unit_id = info["unit_id"]
        if unit_id in self.deferred:
            self._persist(unit_id)  # held durably from now on (its producer gets the ACK)
        _, failures, _ = self.failing.get(key, ("", 0, 0.0))
        delay = min(self.config.failed_retry_s * 2 ** failures, self.config.failed_retry_max_s)
        self.failing[key] = (clip(info["reason"]), failures + 1, time.monotonic() + delay)
        self.stats["failed"] += 1
        log.warning("unit %s: results not stored (%s); retrying in %.0f s", key, clip(info["reason"]), delay)

    def _retry_failing(self, now: float) -> None:
        """Failing deliveries whose back-off is over go back to the front of the queue."""
        for key, (_, _, retry_at) in list(self.failing.items()):
            unit_id, lane = split_key(key)
            if retry_at <= now and key not in self.pending and key not in self.inflight and self._held(unit_id):
                self._add_pending(key, _Pending(unit_id, lane, self._affinity_of(unit_id),
                                                self.attempts.get(key, 0), 0), front=True)

    def _on_stored(self, identity: bytes, body: list) -> None:
        """Republish a worker's result event to the events subscribers (checked first: subscribers trust it)."""
        if self.events is None:
            return
        try:
            info = P.decode_stored(body)
        except P.ProtocolError as exc:
            self.stats["rejected"] += 1
            self.rejects.reject(identity, f"STORED: {exc}")
            return
        try:
            self.events.send_multipart([P.stored_topic(info["run_uid"], info["analysis"]), P.PROTOCOL, P.STORED,
                                        _bytes(body[0])], zmq.NOBLOCK)
            self.stats["events"] += 1
        except zmq.ZMQError as exc:
            log.debug("result event not published: %s", exc)

    def _on_subscription(self, frames: list) -> None:
        """Answer each new subscription to ``HELLO_TOPIC`` with a HELLO (the subscriber's handshake)."""
        message = frames[0].bytes if frames else b""
        if message[:1] == b"\x01" and message[1:] == P.HELLO_TOPIC:
            try:
                self.events.send_multipart([P.HELLO_TOPIC, P.PROTOCOL, P.HELLO], zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                log.debug("HELLO not published: %s", exc)

    # -- dispatch and reliability -------------------------------------------------------------
    def _choose_worker(self, item: _Pending) -> _Worker | None:
        affinity = _affinity_key(item.lane, item.affinity)
        if affinity is not None:
            owner = self.workers.get(self.owners.get(affinity, b""))
            if owner is not None:
                self.owners.move_to_end(affinity)
                return owner if owner.credit > 0 else None
        candidates = [w for w in self.workers.values() if w.credit > 0 and w.lane in ("", item.lane)]
        if not candidates:
            return None
        best = _least_loaded(candidates)
        if affinity is not None:
            self._own(affinity, best)
        return best

    def _dispatch(self) -> None:
        if not self.pending or not any(w.credit > 0 for w in self.workers.values()):
            return
        for key in list(self.pending):
            if not any(w.credit > 0 for w in self.workers.values()):
                break
            item = self.pending[key]
            worker = self._choose_worker(item)
            if worker is None:
                continue
            body = self._cache.get(item.unit_id)
            if body is None:
                try:
                    body = self.store.get(item.unit_id)
                except KeyError:
                    self._pop_pending(key)
                    continue
            attempt = self.attempts.get(key, 0)
            if attempt > 0 or item.lane or item.shed:
                header = P.loads(_bytes(body[0]), "stored header")
                header["attempt"] = attempt
                if item.lane:
                    header["extra"] = {**(header.get("extra") or {}), "lane": item.lane}
                if item.shed:
                    header["extra"]["shed"] = item.shed
                if attempt >= self.config.max_attempts:
                    header["poisoned"] = True
                    header["poison_reason"] = (
                        f"unit was delivered {attempt} times and no worker finished it (worker died or timed out)"
                    )
                    self.stats["poisoned"] += 1
                body = [P.dumps(header), *body[1:]]
            try:
                self.backend.send_multipart([worker.identity, P.PROTOCOL, P.UNIT, *body], copy=False)
            except zmq.ZMQError as exc:  # worker vanished (ROUTER_MANDATORY): forget it, keep the unit
                log.warning("cannot send to worker %r: %s", worker.identity, exc)
                self._remove_worker(worker.identity, reason="unreachable")
                continue
            now = time.monotonic()
            self._pop_pending(key)
            self.inflight[key] = (worker.identity, now)
            worker.inflight[key] = now
            worker.credit -= 1
            self.stats["dispatched"] += 1

    def _uncache(self, unit_id: str) -> None:
        body = self._cache.pop(unit_id, None)
        if body is not None:
            self._cached_bytes -= sum(len(f.buffer) if hasattr(f, "buffer") else len(f) for f in body)

    def _requeue(self, key: str, reason: str) -> None:
        """Deliver ``key`` again (its worker died or took too long), first in line."""
        unit_id, lane = split_key(key)
        self.inflight.pop(key, None)
        if unit_id in self.deferred:  # its first delivery failed: from now on it waits durably here
            self._persist(unit_id)
        if not self._held(unit_id):
            return
        self.attempts[key] = self.attempts.get(key, 0) + 1
        self._add_pending(key, _Pending(unit_id, lane, self._affinity_of(unit_id), self.attempts[key], 0),
                          front=True)
        self.stats["redelivered"] += 1
        log.warning("redelivering %s (%s)", key, reason)

    def _affinity_of(self, unit_id: str) -> str | None:
        """The affinity key in a stored unit's header (None if it has none or cannot be read)."""
        try:
            return P.loads(self.store.get(unit_id)[0], "stored header").get("affinity")
        except (KeyError, P.ProtocolError):
            return None

    def _remove_worker(self, identity: bytes, *, reason: str) -> None:
        worker = self.workers.pop(identity, None)
        if worker is None:
            return
        log.warning("worker %s removed: %s; %d unit(s) redelivered", identity.decode(errors="replace"), reason,
                    len(worker.inflight))
        for key in list(worker.inflight):
            if self.inflight.get(key, (None,))[0] == identity:
                self._requeue(key, f"worker {identity.decode(errors='replace')} {reason}")
        for key in [k for k, v in self.owners.items() if v == identity]:
            del self.owners[key]

    def _heartbeat(self, now: float) -> None:
        for identity in list(self.workers):
            self._send(self.backend, identity, P.HEARTBEAT, b"")

    def _expire(self, now: float) -> None:
        for identity, worker in list(self.workers.items()):
            if now - worker.last_seen > self.config.worker_timeout_s:
                self.stats["workers_expired"] += 1
                self._remove_worker(identity, reason=f"silent for {now - worker.last_seen:.1f} s")
        for key, (identity, sent) in list(self.inflight.items()):
            if now - sent > self.config.unit_timeout_s:
                self._requeue(key, f"in flight for more than {self.config.unit_timeout_s:.0f} s")

    def _send(self, sock: zmq.Socket, identity: bytes, command: bytes, body: bytes) -> None:
        try:
            sock.send_multipart([identity, P.PROTOCOL, command, body], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone or its queue full: nothing to do but log
            log.debug("send %s to %r failed: %s", command, identity, exc)


def _affinity_key(lane: str, affinity: str | None) -> str | None:
    """Affinity is per lane: one map's tiles go to one fast-lane worker (its map owner)."""
    if affinity is None:
        return None
    return f"{lane}|{affinity}" if lane else affinity


def _keep_policy(spec: str) -> Any:
    """``keep(kind, index)`` for ``[broker] shed_keep``: "merges" keeps merged spectra (and map tiles);
    "every:N" also every N-th repeat. ValueError for anything else."""
    every = 0
    if spec.startswith("every:"):
        try:
            every = int(spec[len("every:"):])
        except ValueError:
            every = 0
        if every < 1:
            raise ValueError(f"[broker] shed_keep must be 'merges' or 'every:N' with N >= 1, got {spec!r}")
    elif spec != "merges":
        raise ValueError(f"[broker] shed_keep must be 'merges' or 'every:N' with N >= 1, got {spec!r}")

    def keep(kind: Any, index: Any) -> bool:
        if kind != "spectrum" or index == "merge":
            return True
        return bool(every) and isinstance(index, int) and index % every == 0

    return keep


def _least_loaded(workers: Iterable[_Worker]) -> _Worker:
    """Fewest units in flight, then most credit."""
    return min(workers, key=lambda w: (len(w.inflight), -w.credit))


def _bytes(frame: Any) -> bytes:
    return frame.bytes if hasattr(frame, "bytes") else bytes(frame)


def _bind(sock: zmq.Socket, address: str) -> str:
    """Bind, supporting ``tcp://host:0`` for a random port; returns the address actually bound."""
    if address.endswith(":0") or address.endswith(":*"):
        base = address.rsplit(":", 1)[0]
        port = sock.bind_to_random_port(base)
        return f"{base}:{port}"
    sock.bind(address)
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def run_broker(config: BrokerConfig, security: SecurityConfig | None = None, *,
               ready_file: str | None = None) -> None:
    """Run a broker in this process until SIGTERM/SIGINT. ``ready_file`` gets the bound addresses (JSON)."""
    broker = Broker(config, security)
    signal.signal(signal.SIGTERM, lambda *_: broker.stop())
    signal.signal(signal.SIGINT, lambda *_: broker.stop())
    if ready_file:
        tmp = ready_file + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(P.dumps({"frontend": broker.frontend_address, "backend": broker.backend_address,
                              "events": broker.events_address, "pid": os.getpid(), "host": socket.gethostname()}))
        os.replace(tmp, ready_file)
    broker.run()
