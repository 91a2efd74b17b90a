"""Feedback from the service to plans: per-repeat results, from Tiled or from the broker's result events.

The feedback sources of :func:`xafs_stream.plans.feedback.xafs_scan_until`: ``repeat_result(run_uid, repeat)``
returns the flat summary values (``noise_chi``, ``e0``, ``quality.bad``, ``quality.reasons``,
``spm.shell1.N_err`` ...) of that repeat once the listed analyses are stored, else None.
:class:`TiledFeedback` reads them from Tiled (a few requests per call, and the plan calls it every
``poll_s``); :class:`EventFeedback` keeps them as the result events arrive (no request at all) and asks
a fallback (a :class:`TiledFeedback`) only for a repeat whose events it missed.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Self

from ..storage.layout import flatten_summary, repeat_key, result_node


def repeat_values(analysis: str, status: Any, summary: dict[str, Any]) -> dict[str, Any]:
    """One analysis's part of a repeat result: ``status.<analysis>`` and its summary by dotted name."""
    return {f"status.{analysis}": status, **flatten_summary(summary)}


class TiledFeedback:
    """Read a repeat's analysis summaries from the results in Tiled.

    Parameters
    ----------
    client : Tiled catalog root
    analyses : the analyses whose results must be present (default: normalisation and quality)
    """

    def __init__(self, client: Any, analyses: tuple[str, ...] = ("xafs.normalize", "xafs.quality")):
        self.client = client
        self.analyses = tuple(analyses)

    def repeat_result(self, run_uid: str, repeat: int) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        for analysis in self.analyses:
            node = result_node(self.client, run_uid, analysis, repeat_key(repeat))
            if node is None:
                return None
            md = node.metadata
            out.update(repeat_values(analysis, md.get("status"), md.get("summary") or {}))
        return out


class EventFeedback:
    """A repeat's analysis summaries from the broker's result events (:mod:`xafs_stream.transport.events`).

    Parameters
    ----------
    events_address : the broker's events address (``Service.events`` or ``[broker] events``)
    analyses : the analyses whose results must be present (default: normalisation and quality)
    fallback : another source (e.g. :class:`TiledFeedback`), asked for a repeat still incomplete
        ``fallback_after_s`` after it was first asked for (events are best effort: one may be missed)
    fallback_after_s : s
    keys : CURVE key directory (``[security] keys``), when the broker requires keys

    Create it before the scan (a subscriber only sees events published after it joined; :meth:`wait_ready`
    says when it has joined); ``close()`` it after. ``from_events`` and ``from_fallback`` count the answers
    each way.
    """

    def __init__(self, events_address: str, analyses: tuple[str, ...] = ("xafs.normalize", "xafs.quality"), *,
                 fallback: Any = None, fallback_after_s: float = 5.0, keys: str | None = None):
        from ..transport.events import ResultEvents

        self.analyses = tuple(analyses)
        self.fallback = fallback
        self.fallback_after_s = float(fallback_after_s)
        self.from_events = 0
        self.from_fallback = 0
        self._events = ResultEvents(events_address, keys=keys)
        self._seen: dict[tuple[str, str], dict[str, Any]] = {}  # (run uid, unit) -> {analysis: event}
        self._first_asked: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="event-feedback", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            event = self._events.get(timeout_s=0.2)
            if event is not None and event.analysis in self.analyses:
                with self._lock:
                    self._seen.setdefault((event.run_uid, event.unit), {})[event.analysis] = event

    def repeat_result(self, run_uid: str, repeat: int) -> dict[str, Any] | None:
        key = (run_uid, repeat_key(repeat))
        with self._lock:
            got = dict(self._seen.get(key, {}))
        if all(a in got for a in self.analyses):
            out: dict[str, Any] = {}
            for analysis in self.analyses:
                out.update(repeat_values(analysis, got[analysis].status, got[analysis].summary))
            self.from_events += 1
            return out
        first = self._first_asked.setdefault(key, time.monotonic())
        if self.fallback is not None and time.monotonic() - first >= self.fallback_after_s:
            out = self.fallback.repeat_result(run_uid, repeat)
            if out is not None:
                self.from_fallback += 1
            return out
        return None

    def wait_ready(self, timeout_s: float = 10.0) -> bool:
        """Wait until the broker has confirmed the subscription (see
        :meth:`~xafs_stream.transport.events.ResultEvents.wait_ready`); False after ``timeout_s``."""
        return self._events.ready.wait(timeout_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._events.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
