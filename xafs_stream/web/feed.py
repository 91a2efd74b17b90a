"""The dashboard's live channel: one background watcher polls Tiled and the broker, browsers follow a feed.

Why this design (instead of each browser polling Tiled): Tiled 0.2 has no change notifications, so someone
must poll. One :class:`Watcher` thread per dashboard does it, once per ``interval_s`` for every open page,
and only for the runs that can change (running, recently stopped or recently updated: a few requests per
poll), and turns what it sees into numbered *changes* in a :class:`ChangeFeed`. Browsers receive them by
Server-Sent Events (``/api/stream``): one long-lived HTTP response, pushed as soon as the watcher sees the
change, with the browser's built-in reconnection; each event's id is ``<epoch>-<cursor>``, so a reconnecting
``EventSource`` sends ``Last-Event-ID`` and gets exactly the changes it missed (or a ``reset`` if they fell
out of the ring buffer or the server restarted). Scripts can use the same cursor with the long-poll
endpoint ``/api/changes?since=<cursor>``. Broker health and scan progress are *state*, not changes: the
watcher keeps the latest snapshot (:attr:`ChangeFeed.status`) and the stream sends it whenever it changes.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..storage.layout import expected_units, is_raw_run_key, node_key
from .catalog import Catalog, plain, progress

log = logging.getLogger(__name__)


class ChangeFeed:
    """Numbered changes (ring buffer of ``maxlen``) plus the latest status snapshot; thread-safe.

    A change is a dict ``{"id": cursor, "time": unix s, "kind": "run"|"result", "uid": ..., ...}``.
    """

    def __init__(self, maxlen: int = 2000):
        self.epoch = secrets.token_hex(4)
        self._changes: deque[dict[str, Any]] = deque(maxlen=int(maxlen))
        self._cursor = 0
        self._cond = threading.Condition()
        self.status: dict[str, Any] = {}
        self.status_version = 0

    @property
    def cursor(self) -> int:
        """Id of the newest change (0 before the first)."""
        return self._cursor

    def publish(self, kind: str, **data: Any) -> int:
        with self._cond:
            self._cursor += 1
            self._changes.append({"id": self._cursor, "time": time.time(), "kind": kind, **data})
            self._cond.notify_all()
            return self._cursor

    def set_status(self, status: dict[str, Any]) -> None:
        with self._cond:
            if status != self.status:
                self.status = status
                self.status_version += 1
                self._cond.notify_all()

    def since(self, cursor: int) -> tuple[list[dict[str, Any]], bool]:
        """Changes after ``cursor`` and whether some were lost (cursor older than the buffer, or from the
        future, i.e. from another server epoch): then the caller must reload everything."""
        with self._cond:
            if cursor > self._cursor:
                return [], True
            changes = [c for c in self._changes if c["id"] > cursor]
            oldest = self._changes[0]["id"] if self._changes else self._cursor + 1
            lost = cursor < oldest - 1
            return changes, lost

    def wait(self, cursor: int, timeout_s: float) -> None:
        """Block until a change after ``cursor`` exists or ``timeout_s`` passes."""
        with self._cond:
            self._cond.wait_for(lambda: self._cursor > cursor, timeout=max(0.0, timeout_s))


class Watcher:
    """Background thread: polls Tiled (and the broker) and feeds a :class:`ChangeFeed`.

    Parameters
    ----------
    catalog : what to read
    feed : where changes and status go
    broker_status : ``() -> dict`` (the broker's STATUS answer), or None without a broker
    interval_s : poll period, s
    recent : how many of the newest runs are checked for new runs and stops each poll
    settle_s : a run stays watched this long after it started, stopped or last changed, s
    busy_window_s : while the broker holds pending or in-flight units, runs that changed within this time stay
        watched too (their remaining units may be queued behind others), s
    rescan_s : how often runs not watched are looked at (catches reprocessing): the run nodes' status of the
        newest results, and the full result trees of the ``recent`` newest runs, s
    results_s : with a broker, the result trees of watched runs are read when its count of finished units
        moved, and at least this often otherwise (results of a unit still in progress), s. The watcher is a
        large Tiled client, and reading the trees every poll held results back (see docs/measurements.md).
    events : a :class:`~xafs_stream.transport.events.ResultEvents` subscription to the broker: each stored
        result becomes a change the moment it is announced, without reading Tiled; once the broker has
        confirmed the subscription, the result trees are read only every ``events_rescan_s`` (for events a
        subscriber missed)
    """

    def __init__(self, catalog: Catalog, feed: ChangeFeed, *, broker_status: Callable[[], dict] | None = None,
                 interval_s: float = 1.0, recent: int = 10, settle_s: float = 30.0, busy_window_s: float = 600.0,
                 rescan_s: float = 5.0, results_s: float = 3.0, events: Any = None, events_rescan_s: float = 30.0):
        self.catalog = catalog
        self.feed = feed
        self.broker_status = broker_status
        self.interval_s = float(interval_s)
        self.recent = int(recent)
        self.settle_s = float(settle_s)
        self.busy_window_s = float(busy_window_s)
        self.rescan_s = float(rescan_s)
        self.results_s = float(results_s)
        self._units_done: int | None = None  # the broker's count of finished units at the last results check
        self._last_results = 0.0
        self._last_activity: dict[str, float] = {}
        self._known: dict[str, bool] = {}  # uid -> stopped
        self._prints: dict[str, dict[str, tuple]] = {}
        self._active_until: dict[str, float] = {}
        self._run_status: dict[str, Any] = {}
        self._last_rescan = 0.0
        self._errors: dict[str, str] = {}
        self.events = events
        self.events_rescan_s = float(events_rescan_s)
        self._lock = threading.Lock()  # the fingerprints and the runs woken by events (two threads)
        self._woken: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dashboard-watcher", daemon=True)
        self._listener = threading.Thread(target=self._listen, name="dashboard-events", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        if self.events is not None:
            self._listener.start()
        return self

    def _listen(self) -> None:
        """Result events → changes, at once (no Tiled request)."""
        while not self._stop.is_set():
            event = self.events.get(timeout_s=0.2)
            if event is None:
                continue
            uid, analysis, unit = event.run_uid, node_key(event.analysis), event.unit
            key = f"{analysis}/{unit}"
            with self._lock:
                prints = self._prints.setdefault(uid, {})
                before = prints.get(key)
                if before is not None and before[:2] == (event.written, event.status):
                    continue
                prints[key] = (event.written, event.status, before[2] if before else None)
                self._woken.append(uid)
            self.feed.publish("result", uid=uid, analysis=analysis, unit=unit, status=event.status,
                              written=event.written)
            if event.ok:
                self.catalog.prefetch(uid, analysis, unit)

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        for thread in (self._thread, self._listener):
            if thread.is_alive():
                thread.join(timeout_s)
        if self.events is not None:
            self.events.close()

    def _loop(self) -> None:
        first = True
        while not self._stop.is_set():
            t0 = time.monotonic()
            self.poll(initial=first)
            first = False
            self._stop.wait(max(0.05, self.interval_s - (time.monotonic() - t0)))

    # -- one poll -----------------------------------------------------------------------------------
    def poll(self, *, initial: bool = False) -> None:
        """Look once; publish what changed (``initial``: only learn the current state)."""
        status: dict[str, Any] = {"time": time.time(), "active": {}}
        busy = False
        units_done = None
        if self.broker_status is not None:
            try:
                status["broker"] = broker = plain(self.broker_status())
                busy = bool(broker.get("pending") or broker.get("inflight"))
                units_done = (broker.get("stats") or {}).get("done")
                self._errors.pop("broker", None)
            except Exception as exc:  # noqa: BLE001 - broker down or restarting: shown on the page, polled again
                status["broker"] = None
                self._note_error("broker", f"broker: {type(exc).__name__}: {exc}")
        try:
            self._poll_runs(status, initial, busy, units_done)
            self._errors.pop("tiled", None)
        except Exception as exc:  # noqa: BLE001 - the dashboard carries on when Tiled hiccups; the page shows why
            self._note_error("tiled", f"Tiled: {type(exc).__name__}: {exc}")
        status["errors"] = dict(self._errors)
        self.feed.set_status({k: v for k, v in status.items() if k != "time"} | {"cursor": self.feed.cursor})

    def _note_error(self, key: str, message: str) -> None:
        if self._errors.get(key) != message:
            log.warning("dashboard watcher: %s", message)
        self._errors[key] = message

    def _watch(self, uid: str, now: float) -> None:
        self._active_until[uid] = now + self.settle_s
        self._last_activity[uid] = now

    def _results_due(self, now: float, units_done: int | None, initial: bool) -> bool:
        """Read the watched runs' result trees now? (Always without a broker; with result events only every
        ``events_rescan_s``, for missed events, once the broker has confirmed the subscription.)"""
        if self.events is not None and self.events.ready.is_set():
            if initial or now - self._last_results >= self.events_rescan_s:
                self._last_results = now
                return True
            return False
        if initial or units_done is None or units_done != self._units_done or now - self._last_results >= self.results_s:
            self._units_done = units_done
            self._last_results = now
            return True
        return False

    def _poll_runs(self, status: dict[str, Any], initial: bool, busy: bool, units_done: int | None = None) -> None:
        client = self.catalog.client
        now = time.monotonic()
        with self._lock:
            woken, self._woken = self._woken, []
        for uid in woken:
            self._watch(uid, now)
        newest = [(k, v) for k, v in client.items()[-1:-(self.recent + 2):-1] if is_raw_run_key(k)]
        for uid, node in newest[: self.recent]:
            md = node.metadata
            stopped = bool(md.get("stop"))
            before = self._known.get(uid)
            if before is None or before != stopped:
                self._known[uid] = stopped
                if not initial:
                    self._watch(uid, now)
                    self.feed.publish("run", uid=uid, event="stopped" if stopped else "started",
                                      exit_status=(md.get("stop") or {}).get("exit_status"))
            if not stopped:
                self._watch(uid, now)
                start = plain(md.get("start") or {})
                times = self.catalog.event_times(uid)
                status["active"][uid] = {
                    **progress(start, None, times),
                    "sample": start.get("sample"), "plan_name": start.get("plan_name"),
                    "scan_id": start.get("scan_id"), "xafs_kind": start.get("xafs_kind"),
                    "expected_units": len(expected_units(start)),
                }
        if now - self._last_rescan > self.rescan_s:
            self._last_rescan = now
            self._rescan(now, initial)
            for uid, _ in newest[: self.recent]:
                if self._active_until.get(uid, 0.0) < now:
                    self._check_results(uid, now, initial)
        if busy:
            for uid, last in self._last_activity.items():
                if now - last < self.busy_window_s:
                    self._active_until[uid] = max(self._active_until.get(uid, 0.0), now + self.interval_s)
        if self._results_due(now, units_done, initial):
            for uid in [u for u, until in self._active_until.items() if until >= now]:
                self._check_results(uid, now, initial)
        for uid in [u for u, until in self._active_until.items() if until < now]:
            del self._active_until[uid]

    def _rescan(self, now: float, initial: bool) -> None:
        """Compare the run nodes' status of the newest results (one request): reprocessed old runs wake up."""
        root = self.catalog.results_root()
        if root is None:
            return
        for uid, node in root.items()[-1:-51:-1]:
            state = plain(node.metadata.get("status") or {})
            if self._run_status.get(uid) != state:
                if uid in self._run_status or not initial:
                    self._watch(uid, now)
                self._run_status[uid] = state

    def _check_results(self, uid: str, now: float, initial: bool) -> None:
        fingerprint = self.catalog.fingerprint(uid)
        with self._lock:
            before = self._prints.get(uid)
            self._prints[uid] = fingerprint
        if before is None and initial:
            return
        before = before or {}
        for key, (written, state, n_children) in sorted(fingerprint.items(), key=lambda kv: kv[1][0] or 0):
            if before.get(key) != (written, state, n_children):
                analysis, unit = key.split("/", 1)
                self.feed.publish("result", uid=uid, analysis=analysis, unit=unit, status=state, written=written)
                if state == "ok":
                    self.catalog.prefetch(uid, analysis, unit)
                self._watch(uid, now)

