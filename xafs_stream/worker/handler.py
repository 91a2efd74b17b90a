"""The unit handler: run a unit's analyses and store every record, retrying while Tiled is unreachable.

One handler serves the worker process (:class:`~xafs_stream.worker.loop.Worker` hands it the units it
receives) and ``xafs-stream reprocess`` (which hands it the units it re-derives from a raw run), so a unit
is analysed and stored the same way whichever path it took.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..analyses.registry import Registry
from ..core import ResultRecord, UnitEnvelope
from .processing import process_unit

log = logging.getLogger(__name__)

#: ``post_process(envelope, records) -> extra records`` (the map owner adds whole-map results). Optional
#: attributes of the callable: ``warm_up()`` (run by :meth:`UnitHandler.warm_up`), ``stores_first_for``
#: (unit kinds whose hook records are stored before the unit's own) and ``prepares`` (unit kind → the hook's
#: analyses whose nodes a run-start hint creates, like the registered analyses').
PostProcess = Callable[[UnitEnvelope, list[ResultRecord]], list[ResultRecord]]


class StoreFailed(RuntimeError):
    """A record could not be stored at all (not even as an error record): the unit must not count as done."""


class UnitHandler:
    """Analyse units and store their records.

    Parameters
    ----------
    store : object with ``write(record) -> event dict | None`` (a
        :class:`~xafs_stream.storage.results.ResultStore`) and optionally ``prepare(run_uid, metadata,
        analyses)``, ``warm_up()`` and ``flush_run_updates(force=...)`` (see :meth:`flush`)
    registry : the analyses
    settings : analysis name → its settings (the ``[analysis."<name>"]`` tables)
    name : recorded as the ``worker`` of each record
    enabled : run only these analyses (and what they require); None: every registered analysis
    post_process : optional hook adding records after a unit's analyses (the map owner)
    on_stored : called with the event of each stored record (the worker publishes it); None: not announced
    retry_s : first pause before a store is tried again, s (doubling up to 10 s)
    """

    #: a store that fails with HTTP 500 this many times is given back to the broker (StoreFailed): the server
    #: answers but cannot take this result now (its disk is full; seen too: a Tiled array left unwritable
    #: after a read raced its replacement). Each attempt already includes the Tiled client's own retries
    #: (~25 s for a 500).
    max_internal_errors = 3

    def __init__(self, store: Any, registry: Registry, settings: Mapping[str, Any] | None = None, *,
                 name: str = "", enabled: list[str] | None = None, post_process: PostProcess | None = None,
                 on_stored: Callable[[dict[str, Any]], Any] | None = None, retry_s: float = 0.5):
        self.store = store
        self.registry = registry
        self.settings = dict(settings or {})
        self.name = name
        self.enabled = list(enabled) if enabled else None
        self.post_process = post_process
        self.on_stored = on_stored
        self.retry_s = float(retry_s)
        self.stats = {"units": 0, "records": 0, "errors": 0, "store_retries": 0}
        self._stop = threading.Event()

    def stop(self) -> None:
        """Give up retrying a store (the worker is stopping)."""
        self._stop.set()

    def warm_up(self) -> None:
        """Open the store's connection and import what its first write and the post-process hook (the map
        owner) need (best effort)."""
        warm_up = getattr(self.store, "warm_up", None)
        if warm_up is not None:
            try:
                warm_up()
            except Exception as exc:  # Tiled not up yet: the first store retries anyway
                log.info("%s: warm-up of the result store failed: %s", self.name, exc)
        owner_warm_up = getattr(self.post_process, "warm_up", None)
        if owner_warm_up is not None:
            try:
                owner_warm_up()
            except Exception as exc:  # an optimisation only
                log.info("%s: warm-up of the post-process hook failed: %s", self.name, exc)

    def prepare(self, info: dict[str, Any]) -> None:
        """Create a new run's result nodes ahead of its units (a run-start hint; a failure is only logged)."""
        prepare = getattr(self.store, "prepare", None)
        if prepare is None:
            return
        only = set(self.enabled) if self.enabled is not None else None
        try:
            names = [a.name for a in self.registry.for_kind(info["kind"], only)]
            names += list(getattr(self.post_process, "prepares", {}).get(info["kind"], ()))  # the whole map
            prepare(info["run_uid"], info.get("metadata") or {}, names)
            self.stats["runs_prepared"] = self.stats.get("runs_prepared", 0) + 1
        except Exception as exc:  # a hint: the first unit creates what is missing
            log.warning("%s: preparing result nodes of run %s failed: %s", self.name, info.get("run_uid"), exc)

    def flush(self, *, force: bool = False) -> float | None:
        """Send the store's deferred run-summary updates that are due (all with ``force``; see
        :meth:`~xafs_stream.storage.results.ResultStore.flush_run_updates`): the seconds until the next is due,
        or None. A failure is only logged: a map's next write updates its run anyway."""
        flush = getattr(self.store, "flush_run_updates", None)
        if flush is None:
            return None
        try:
            return flush(force=force)
        except Exception as exc:
            log.warning("%s: a deferred run-summary update failed: %s", self.name, exc)
            return None

    def handle(self, envelope: UnitEnvelope, computed: list[ResultRecord] | None = None) -> list[ResultRecord]:
        """Analyse one unit and store its records (each as soon as its analysis is done; for the unit kinds in
        the hook's ``stores_first_for``, after the hook's records). Returns the records.

        A delivery of one lane (``envelope.extra["lane"]``, with the broker's lanes) runs the analyses of
        that cost class and stores only theirs: the slow lane computes a normalisation its fits need, the
        fast lane stores it. ``computed``: the unit's records from :func:`process_unit` run elsewhere (a Dask
        worker); they are stored, and the post-process hook run, exactly as if analysed here."""
        lane = envelope.extra.get("lane") or ""
        wanted = set(self.enabled) if self.enabled is not None else None
        if envelope.analyses is not None:
            wanted = set(envelope.analyses) if wanted is None else wanted & set(envelope.analyses)
        mine = None  # the analyses whose records this delivery stores (None: all it runs)
        if lane:
            mine = {a.name for a in self.registry.for_kind(envelope.unit.kind) if a.cost == lane}
            wanted = mine if wanted is None else wanted & mine
        if wanted is not None:
            envelope.analyses = sorted(wanted) or ["__none__"]
        sent = _finite(envelope.unit.metadata.get("t_complete"))
        received = _finite(envelope.extra.get("received"))
        started = time.time()

        def store(record: ResultRecord, *, hook: bool = False) -> None:
            if not hook and mine is not None and record.analysis not in mine:
                return  # computed for another analysis of this lane; the other lane stores it
            if sent is not None:
                # where a result's lag went: to this worker (transport and the broker's queue), waiting in it,
                # then computing and storing (this record's and, before it, those stored first)
                record.timings["t_complete"] = sent
                if received is not None:
                    record.timings["received_after_complete_s"] = received - sent
                record.timings["started_after_complete_s"] = started - sent
                record.timings["since_unit_complete_s"] = time.time() - sent
            self.store_record(record)

        hook = self.post_process is not None and lane in ("", "fast") and not envelope.extra.get("shed")
        # the hook's records first for the kinds it names (the whole map before the tile's features: the map
        # is visible sooner; the unit is acknowledged after both, so a crash in between loses nothing)
        late = hook and envelope.unit.kind in getattr(self.post_process, "stores_first_for", ())
        if computed is None:
            records = process_unit(envelope, self.registry, self.settings, worker=self.name,
                                   on_record=None if late else store)
        else:
            records = list(computed)
            if not late:
                for record in records:
                    store(record)
        extra = self.post_process(envelope, records) if hook else []
        for record in extra:  # the hook's own records (the whole map): no registered analysis owns them
            store(record, hook=True)
        if late:
            for record in records:
                store(record)
        records = records + extra
        self.stats["units"] += 1
        self.stats["records"] += len(records)
        self.stats["errors"] += sum(r.status == "error" for r in records)
        return records

    def fail(self, envelope: UnitEnvelope, reason: str) -> str:
        """Record an error result naming ``reason`` for each analysis of a unit that failed outside them (so
        the unit is accounted for and its worker's credit returns); ``"error"``."""
        failed = dataclasses.replace(envelope, poisoned=True, poison_reason=f"failed: {reason}")
        for record in process_unit(failed, self.registry, self.settings, worker=self.name):
            self.store_record(record)  # StoreFailed if not even these can be stored: the unit stays queued
        return "error"

    def store_record(self, record: ResultRecord) -> None:
        """Store one record.

        - Tiled unreachable or restarting (connection errors, 503): retried with back-off until it answers.
        - Tiled failing on it (HTTP 500, e.g. its disk is full), ``max_internal_errors`` times: raises
          :class:`StoreFailed`, and the unit goes back to its broker, which keeps it (listed as failing) and
          retries it later: the result is not lost and not acknowledged.
        - Tiled refusing this result (a 4xx: bad metadata, too large): stored as an error record naming why;
          if even that is refused 3 times, :class:`StoreFailed`.
        """
        delay = self.retry_s
        refused = 0
        internal = 0
        while True:
            try:
                event = self.store.write(record)
                if isinstance(event, dict) and self.on_stored is not None:
                    try:
                        self.on_stored(event)
                    except (TypeError, ValueError) as exc:  # an event is a courtesy: never fail the result
                        log.warning("%s: result event of %s/%s not sent: %s", self.name, record.unit_id,
                                    record.analysis, exc)
                return
            except Exception as exc:
                code = _status_code(exc)
                why = f"{type(exc).__name__}{f' (HTTP {code})' if code else ''}: {exc}"
                if code == 500:
                    internal += 1
                    if internal >= self.max_internal_errors:
                        self.stats["store_failed"] = self.stats.get("store_failed", 0) + 1
                        raise StoreFailed(f"{record.analysis} of {record.unit_id} could not be stored: {why}") from exc
                if _is_connection_error(exc):
                    self.stats["store_retries"] += 1
                    log.warning("%s: storing %s/%s failed (%s); retrying in %.1f s", self.name, record.unit_id,
                                record.analysis, why, delay)
                elif record.status == "ok":
                    # Tiled refuses this result (bad metadata, too large): record that instead
                    log.error("%s: storing %s/%s refused: %s", self.name, record.unit_id, record.analysis, why)
                    record.status = "error"
                    record.error = f"result could not be stored: {why}"
                    record.result = None
                    continue
                else:
                    refused += 1
                    log.error("%s: storing error record %s/%s failed: %s", self.name, record.unit_id,
                              record.analysis, why)
                    if refused >= 3:  # Tiled answers but refuses even that: the unit goes back to its broker
                        self.stats["store_failed"] = self.stats.get("store_failed", 0) + 1
                        raise StoreFailed(f"{record.analysis} of {record.unit_id} could not be stored: {why}") from exc
                if self._stop.wait(delay):
                    raise RuntimeError("worker stopped before the result was stored") from exc
                delay = min(delay * 2, 10.0)


def _finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite number (a unit's metadata comes from outside), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


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
