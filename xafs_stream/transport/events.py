"""Live result events: know the moment a result is readable in Tiled, instead of polling for it.

Each worker tells the broker when it has stored a result; the broker publishes that on its events socket
(``[broker] events``, default ``tcp://127.0.0.1:5562``). A live reader subscribes and reads each result
as it comes::

    from xafs_stream import ResultEvents

    with ResultEvents(service.events, run_uid=uid) as events:  # open it before the scan starts
        events.wait_ready()  # the broker has the subscription: nothing published from now on is missed
        for event in events.iter(timeout_s=30):
            if event.analysis == "xafs.normalize" and event.ok:
                arrays = event.read(client)  # one request for a one-table result
                print(event.unit, event.flat_summary["e0"], arrays["norm"][:3])

Events are best effort (ZeroMQ PUB/SUB): a subscriber that connects late or falls behind by more than
``hwm`` events misses some. Tiled holds every result regardless, so a reader that must see all of them
reads the run's results once more at the end (or after a gap in the units it expected).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from . import protocol as P
from .security import secure_client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResultEvent:
    """A result stored in Tiled (one analysis of one unit).

    ``path`` is relative to the catalog root (``client[path]``); ``summary`` is nested as in the result's
    metadata (``flat_summary`` gives the dotted names); ``table`` says how to read a one-table result in one
    request (None for a container or array result, or an error record).
    """

    run_uid: str
    analysis: str
    unit: str
    unit_id: str
    path: str
    status: str
    family: str
    error: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    table: dict[str, Any] | None = None
    worker: str = ""
    written: float = 0.0  # when the worker wrote it (time.time(), s)
    verdict: str = ""  # "ok", "warn", "bad" ("" for a skip or an analysis that does not judge)
    verdict_reasons: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def flat_summary(self) -> dict[str, Any]:
        """``{"e0": ..., "spm.shell1.N": ...}``"""
        from ..storage.layout import flatten_summary  # the results layout owns summary nesting

        return flatten_summary(self.summary)

    def read(self, client: Any) -> dict[str, np.ndarray]:
        """The result's arrays from Tiled (``client``: the catalog root the service writes to); ``{}`` for an
        error or skip record, which has none."""
        from ..storage.layout import read_stored, result_path

        if not self.ok:
            return {}
        if self.path != result_path(self.run_uid, self.analysis, self.unit):  # an event is no licence to read
            raise ValueError(f"result event path {self.path!r} is not its result's place in the results tree")
        return read_stored(client, self.path, self.table)

    @classmethod
    def from_message(cls, body: list) -> "ResultEvent":
        """From a ``STORED`` body (checked: :class:`~.protocol.ProtocolError` if malformed)."""
        info = P.decode_stored(body)
        return cls(run_uid=info["run_uid"], analysis=info["analysis"], unit=info["unit"],
                   unit_id=str(info.get("unit_id", "")), path=info["path"], status=info["status"],
                   family=info["family"], error=str(info.get("error") or ""), summary=info.get("summary") or {},
                   table=info.get("table"), worker=str(info.get("worker", "")),
                   written=float(info.get("written") or 0.0), verdict=str(info.get("verdict") or ""),
                   verdict_reasons=tuple(info.get("verdict_reasons") or ()))


class ResultEvents:
    """Subscriber to the broker's result events.

    Parameters
    ----------
    address : the broker's events address (``Service.events``, or ``[broker] events``)
    run_uid : only this run's results (filtered by the socket); None for every run
    analysis : only this analysis (e.g. ``"xafs.normalize"``); None for all
    hwm : events queued for this subscriber before it starts missing them
    keys : CURVE key directory (``[security] keys``); the reader's keys are used

    A subscription takes a moment to reach the broker (events published meanwhile are not delivered):
    :meth:`wait_ready` returns once the broker has confirmed it (its HELLO), e.g. before starting a scan.
    """

    def __init__(self, address: str, *, run_uid: str | None = None, analysis: str | None = None,
                 hwm: int = 100_000, context: zmq.Context | None = None, keys: str | None = None):
        if not address:
            raise ValueError("no events address: the broker publishes none ([broker] events is empty)")
        self.address = connectable(address)
        self.run_uid = run_uid
        self.analysis = analysis
        self.bad_messages = 0
        self._sock = (context or zmq.Context.instance()).socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, hwm)
        if keys:
            secure_client(self._sock, keys, "reader")
        if run_uid:
            prefix = P.stored_topic(run_uid, analysis or "")
        else:
            prefix = b"stored/"
        self._sock.setsockopt(zmq.SUBSCRIBE, prefix)
        self._sock.setsockopt(zmq.SUBSCRIBE, P.HELLO_TOPIC)  # last: its HELLO means all are in place
        self._sock.connect(self.address)
        #: set when the broker confirmed the subscription (a HELLO arrived)
        self.ready = threading.Event()
        self._early: deque[ResultEvent] = deque()  # events received while waiting for the HELLO

    def wait_ready(self, timeout_s: float = 10.0) -> bool:
        """Wait until the broker has this subscriber's subscriptions (True), or ``timeout_s`` passes (False).
        Events that arrive meanwhile are kept for :meth:`get`."""
        deadline = time.monotonic() + timeout_s
        while not self.ready.is_set():
            event = self._receive(deadline, until_ready=True)
            if event is not None:
                self._early.append(event)
            elif time.monotonic() >= deadline:
                break
        return self.ready.is_set()

    def get(self, timeout_s: float | None = None) -> ResultEvent | None:
        """The next event, or None after ``timeout_s`` (None: wait forever) without one."""
        if self._early:
            return self._early.popleft()
        return self._receive(None if timeout_s is None else time.monotonic() + timeout_s)

    def _receive(self, deadline: float | None, *, until_ready: bool = False) -> ResultEvent | None:
        """The next wanted event from the socket; None at ``deadline`` (or at a HELLO if ``until_ready``)."""
        while True:
            wait_ms = -1 if deadline is None else max(0, int(1000 * (deadline - time.monotonic())))
            if not self._sock.poll(wait_ms):
                return None
            frames = self._sock.recv_multipart()
            try:
                if len(frames) < 3:
                    raise P.ProtocolError(f"event has {len(frames)} frame(s)")
                command, body = P.split_envelope(frames[1:])
                if command == P.HELLO and frames[0] == P.HELLO_TOPIC:
                    self.ready.set()
                    if until_ready:
                        return None
                    continue
                if command != P.STORED:
                    raise P.ProtocolError(f"unexpected event command {command!r}")
                event = ResultEvent.from_message(body)
            except P.ProtocolError as exc:
                self.bad_messages += 1
                log.warning("bad result event from %s: %s", self.address, exc)
                continue
            if self.analysis is None or event.analysis == self.analysis:
                return event

    def iter(self, timeout_s: float | None = None) -> Iterator[ResultEvent]:
        """Events as they come; stops after ``timeout_s`` without one (None: never)."""
        while True:
            event = self.get(timeout_s)
            if event is None:
                return
            yield event

    def __iter__(self) -> Iterator[ResultEvent]:
        return self.iter()

    def close(self) -> None:
        if not self._sock.closed:
            self._sock.close(0)

    def __enter__(self) -> "ResultEvents":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connectable(address: str) -> str:
    """The address to connect to for a bind address: ``tcp://*:5562`` / ``tcp://0.0.0.0:5562`` → loopback."""
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:"):
        if address.startswith(wildcard):
            return "tcp://127.0.0.1:" + address[len(wildcard):]
    return address
