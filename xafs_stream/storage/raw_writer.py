"""Write raw bluesky runs into Tiled live, without slowing the RunEngine.

bluesky's ``TiledWriter`` does the writing (the layout users know: ``run["primary"]["internal"]`` table,
start/stop metadata). Around it this callback adds three things the pipeline needs:

1. **A background thread.** A Tiled write takes 10-50 ms; done in the RunEngine's callback it would
   stall the scan. Documents are queued (the RunEngine only pays for a ``put``) and written in order.
2. **Time-based flushing.** ``TiledWriter`` with its default batch size shows nothing until the run
   stops, and with ``batch_size=1`` it makes one request per event (measured here: 45 ms/event, 9 s for
   a 200-point scan). Here events are batched: an event is written at most ``flush_interval_s`` after
   it arrives (at once after a quiet spell), so a running scan is visible within about a second at any
   event rate, with at most one table append per interval. A run's stop document (the last rows, the
   stop metadata) is written ``stop_delay_s`` late: at that moment the run's last spectrum is being
   analysed and stored, and those live results go first (the last repeat of a scan's latency benchmark
   median ~390 → ~300 ms). ``flush()`` writes everything at once.
3. **Image data.** ``TiledWriter`` stores event data in a table and cannot take 2-D values (pyarrow:
   "Can only convert 1-dimensional array values"). Data keys with 2 or more dimensions (the map
   detector's image) are taken out of the table and written as an extendable array node
   ``run[stream][key]`` of shape (n_events, ...), with the table's ``seq_num`` order.

Flushing reaches into ``TiledWriter``'s per-run writer (``_internal_data_cache``,
``_write_internal_data``): there is no public flush. The test ``test_raw_run_visible_while_running``
catches a bluesky change that breaks this.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from bluesky.callbacks.tiled_writer import RunNormalizer, TiledWriter

log = logging.getLogger(__name__)

_STOP = object()


@dataclass
class _ArrayStream:
    """Frames of one array data key waiting to be written."""

    key: str
    stream: str
    pending: list[np.ndarray] = field(default_factory=list)
    written: int = 0
    node: Any = None


@dataclass
class _RunState:
    uid: str
    normalizer: Any = None
    array_keys: dict[str, set[str]] = field(default_factory=dict)  # descriptor uid -> array data keys
    stream_names: dict[str, str] = field(default_factory=dict)  # descriptor uid -> stream name
    arrays: dict[tuple[str, str], _ArrayStream] = field(default_factory=dict)


class LiveTiledWriter:
    """bluesky callback writing raw runs to Tiled from a background thread.

    Parameters
    ----------
    client : a writable Tiled container client (the catalog root)
    flush_interval_s : longest time a received event waits before it is written, s
    backup_directory : where ``TiledWriter`` saves a run's documents as JSON lines if writing fails
        (nothing is lost while Tiled is unreachable)
    stop_delay_s : how long a run's stop document waits before it is written, s (0: at once)
    hold_s : after :meth:`hold` (a unit was just sent for analysis), table appends wait this long, s; a
        flush that is due is postponed by at most this much
    """

    def __init__(self, client: Any, *, flush_interval_s: float = 0.5, backup_directory: str | None = None,
                 stop_delay_s: float = 0.3, hold_s: float = 0.3):
        self.client = client
        self.flush_interval_s = float(flush_interval_s)
        self.stop_delay_s = float(stop_delay_s)
        self.hold_s = float(hold_s)
        self._hold_until = 0.0  # monotonic s
        self._stop_wait = threading.Event()  # set by flush()/close(): a held stop document is written at once
        self._runs: dict[str, _RunState] = {}
        self._run_of_descriptor: dict[str, str] = {}
        self._new_normalizers: list[Any] = []
        self._writer = TiledWriter(
            client, normalizer=self._make_normalizer, backup_directory=backup_directory, batch_size=10**9
        )
        self._queue: queue.Queue = queue.Queue()
        self._errors: list[str] = []
        self._thread = threading.Thread(target=self._loop, name="LiveTiledWriter", daemon=True)
        self._thread.start()

    # -- callback side (RunEngine thread) -------------------------------------------------------
    def __call__(self, name: str, doc: dict) -> None:
        if not self._thread.is_alive():
            raise RuntimeError("LiveTiledWriter is closed")
        self._queue.put((name, doc))

    def hold(self) -> None:
        """A unit was just sent for analysis: keep table appends out of the way of its results for ``hold_s``.

        Measured (latency benchmark, server request log): a raw append (~30 ms) arriving with a result's
        two writes made that result's data write 230-270 ms instead of ~35-60 ms, the tail of the latency."""
        self._hold_until = time.monotonic() + self.hold_s

    def _next_flush(self, last_flush: float) -> float:
        """When the pending rows are written: ``flush_interval_s`` after the last flush, later while held
        (but never more than ``hold_s`` later)."""
        due = last_flush + self.flush_interval_s
        return max(due, min(self._hold_until, due + self.hold_s))

    def flush(self, timeout_s: float = 60.0) -> None:
        """Block until every document received so far is written (or ``timeout_s`` passes)."""
        done = threading.Event()
        self._stop_wait.set()  # before the request: the thread clears it when it reaches the request
        self._queue.put(("__flush__", done))
        if not done.wait(timeout_s):
            raise TimeoutError(f"Tiled writer did not catch up within {timeout_s} s")

    def close(self, timeout_s: float = 60.0) -> None:
        """Write everything pending and stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._stop_wait.set()
            self._thread.join(timeout_s)

    @property
    def errors(self) -> list[str]:
        """Write failures so far (each also logged; documents went to the backup directory)."""
        return list(self._errors)

    # -- writer side (background thread) ---------------------------------------------------------
    def _make_normalizer(self, **kwargs: Any) -> RunNormalizer:
        normalizer = _CapturingNormalizer(**kwargs)
        self._new_normalizers.append(normalizer)
        return normalizer

    def _loop(self) -> None:
        # Flush at most once per flush_interval_s while documents keep coming, and at once when one comes
        # after a quiet spell. (Flushing whenever the queue ran dry made one request per event at a dozen
        # events/s: 375 table appends of ~75 ms each in a 30 s scan, which kept the Tiled server ~90 % busy.)
        last_flush = time.monotonic() - self.flush_interval_s
        dirty = False
        while True:
            wait = self._next_flush(last_flush) - time.monotonic() if dirty else self.flush_interval_s
            try:
                item = self._queue.get(timeout=max(wait, 0.0))
            except queue.Empty:
                item = None
            if item is _STOP:
                self._flush_all()
                return
            if item is not None:
                name, doc = item
                if name == "stop" and self.stop_delay_s > 0:
                    # a run's end is when its last spectrum's results are stored and the next run starts:
                    # writing the stop (the table's last rows and the run's metadata) a moment later keeps
                    # those requests out of the live results' way (an explicit flush() does not wait)
                    self._stop_wait.wait(self.stop_delay_s)
                if name == "__flush__":
                    self._stop_wait.clear()
                    self._flush_all()
                    last_flush, dirty = time.monotonic(), False
                    doc.set()
                    continue
                try:
                    self._handle(name, doc)
                except Exception as exc:  # keep the thread alive; the backup directory keeps the docs
                    msg = f"writing {name} document to Tiled failed: {type(exc).__name__}: {exc}"
                    log.error(msg)
                    self._errors.append(msg)
                dirty = True
            if dirty and time.monotonic() >= self._next_flush(last_flush):
                self._flush_all()
                last_flush, dirty = time.monotonic(), False

    def _handle(self, name: str, doc: dict) -> None:
        if name == "start":
            self._writer(name, doc)
            state = _RunState(uid=doc["uid"])
            if self._new_normalizers:
                state.normalizer = self._new_normalizers.pop()
            self._runs[doc["uid"]] = state
            return
        if name == "descriptor":
            state = self._runs.get(doc["run_start"])
            if state is not None:
                array_keys = {k for k, v in doc.get("data_keys", {}).items()
                              if len(v.get("shape") or []) >= 2 and not v.get("external")}
                state.array_keys[doc["uid"]] = array_keys
                state.stream_names[doc["uid"]] = doc.get("name", "primary")
                self._run_of_descriptor[doc["uid"]] = state.uid
                if array_keys:
                    doc = _without_keys_descriptor(doc, array_keys)
            self._writer(name, doc)
            return
        if name == "event":
            state = self._runs.get(self._run_of_descriptor.get(doc["descriptor"], ""))
            keys = state.array_keys.get(doc["descriptor"], set()) if state else set()
            if keys:
                stream = state.stream_names[doc["descriptor"]]
                for key in keys:
                    arr = state.arrays.setdefault((stream, key), _ArrayStream(key=key, stream=stream))
                    arr.pending.append(np.asarray(doc["data"][key]))
                doc = _without_keys_event(doc, keys)
            self._writer(name, doc)
            return
        if name == "event_page":
            from event_model import unpack_event_page

            for event in unpack_event_page(doc):
                self._handle("event", event)
            return
        if name == "stop":
            state = self._runs.get(doc["run_start"])
            if state is not None:
                self._flush_arrays(state)
            self._writer(name, doc)
            self._runs.pop(doc["run_start"], None)
            return
        self._writer(name, doc)

    def _flush_all(self) -> None:
        for state in list(self._runs.values()):
            try:
                self._flush_table(state)
                self._flush_arrays(state)
            except Exception as exc:
                msg = f"flushing run {state.uid} to Tiled failed: {type(exc).__name__}: {exc}"
                log.error(msg)
                self._errors.append(msg)

    def _flush_table(self, state: _RunState) -> None:
        run_writer = getattr(state.normalizer, "_run_writer", None)
        if run_writer is None:
            return
        for desc_name, cache in run_writer._internal_data_cache.items():
            if cache:
                run_writer._write_internal_data(cache, desc_node=run_writer._desc_nodes[desc_name])
                cache.clear()

    def _flush_arrays(self, state: _RunState) -> None:
        for arr in state.arrays.values():
            if not arr.pending:
                continue
            block = np.stack(arr.pending)
            if arr.node is None:
                container = self.client[state.uid][arr.stream].base
                arr.node = container.write_array(
                    block, key=arr.key, dims=["time"] + [f"dim_{i}" for i in range(1, block.ndim)],
                    metadata={"description": "one frame per event, in seq_num order"},
                )
            else:
                arr.node.patch(block, offset=(arr.written,), extend=True)
            arr.written += len(block)
            arr.pending.clear()


class _CapturingNormalizer(RunNormalizer):
    """RunNormalizer that remembers the per-run writer it feeds (so it can be flushed)."""

    _run_writer: Any = None

    def subscribe(self, func, name="all"):
        self._run_writer = func
        return super().subscribe(func, name)


def _without_keys_descriptor(doc: dict, keys: set[str]) -> dict:
    doc = copy.copy(doc)
    doc["data_keys"] = {k: v for k, v in doc["data_keys"].items() if k not in keys}
    if "object_keys" in doc:
        doc["object_keys"] = {obj: [k for k in ks if k not in keys] for obj, ks in doc["object_keys"].items()}
    return doc


def _without_keys_event(doc: dict, keys: set[str]) -> dict:
    doc = copy.copy(doc)
    doc["data"] = {k: v for k, v in doc["data"].items() if k not in keys}
    doc["timestamps"] = {k: v for k, v in doc["timestamps"].items() if k not in keys}
    if "filled" in doc:
        doc["filled"] = {k: v for k, v in doc["filled"].items() if k not in keys}
    return doc
