"""Writing analysis results into Tiled, in the layout of :mod:`xafs_stream.storage.layout`.

Writes are idempotent: the same (run, analysis, unit) always lands on the same node, which is replaced
(never duplicated) when a unit is processed again. A live map, rewritten at every few tiles by its owner,
is updated in place: new data into its existing nodes, then its metadata.

Writes stay inside ``/xafs_results/<run>/<analysis>/<unit>``: the run uid, the analysis name and the unit
index are checked (:func:`~xafs_stream.core.check_id`) before any request, so no id acts as a path, and
the only node ever deleted is a result node being replaced.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import numpy as np

from ..core import VERDICTS, AnalysisResult, ResultRecord, check_id, check_index, check_name, to_json_safe
from .layout import (
    RESULTS_ROOT,
    RUN_FIELDS,
    ArrayPlan,
    Child,
    is_gone,
    nest_summary,
    node_key,
    plan_arrays,
    result_path,
    unit_key,
)

log = logging.getLogger(__name__)


class ResultStore:
    """Write :class:`ResultRecord` objects into Tiled (``client`` is the catalog root).

    ``summary_interval_s``: an intermediate live-map write (``record.final`` False) updates the run's summary
    at once only when its status or verdict changed or this long after the last update (s); otherwise the
    update is deferred, sent by :meth:`flush_run_updates` when due (the worker calls it when idle) or replaced
    by the next write's. The map's own node is always written at once, and its last write always updates the
    run: one request less per tile on a busy map, ~50 ms of a ~0.3 s map update (docs/measurements.md)."""

    def __init__(self, client: Any, *, summary_interval_s: float = 2.0):
        self.client = client
        self.summary_interval_s = float(summary_interval_s)
        # (run, analysis) -> (status, verdict, monotonic time) of this store's last update of the run's summary
        self._run_updates: dict[tuple[str, str], tuple[str, str, float]] = {}
        self._deferred: dict[tuple[str, str], tuple[Any, dict[str, Any], str, str]] = {}  # (run node, update, ...)
        self._root = None
        self._runs: dict[str, Any] = {}
        self._analysis_nodes: dict[tuple[str, str], Any] = {}
        # results this store rewrites again and again (a live map): (run, analysis, unit key) -> (container,
        # {child key: (child node, signature)}) of our last write, to update their data in place
        self._in_place: dict[tuple[str, str, str], tuple[Any, dict[str, tuple[Any, tuple]]]] = {}

    # -- containers -------------------------------------------------------------------------------
    def root(self) -> Any:
        if self._root is None:
            self._root = _get_or_create(self.client, RESULTS_ROOT, metadata={"description": "xafs-stream results"},
                                        specs=["xafs-results"])
        return self._root

    def warm_up(self) -> None:
        """Import what the first write needs and open the connection, so a worker's first result is not late:
        tiled's ``write_table`` imports ``dask.dataframe`` on first use (measured: first store 0.86 s, the
        next ones 0.08-0.1 s)."""
        import dask.dataframe  # noqa: F401
        import tiled.client.array  # noqa: F401  the client of an array node (a map's), imported on its first write
        from tiled.serialization.table import serialize_arrow
        from tiled.structures.table import TableStructure

        # the encoding a table write does (pandas → Arrow schema and IPC file), done once on a tiny table
        frame = ArrayPlan(columns={"warm_up": np.zeros(4)}).frame()
        TableStructure.from_pandas(frame)
        serialize_arrow("application/vnd.apache.arrow.file", frame, {})
        self.root()

    def run_node(self, run_uid: str, unit_metadata: dict[str, Any] | None = None) -> Any:
        check_id(run_uid, "run uid")
        if run_uid not in self._runs:
            md = {k: unit_metadata[k] for k in RUN_FIELDS if unit_metadata and k in unit_metadata}
            md = to_json_safe({"run_uid": run_uid, **md, "summary": {}, "status": {}})
            self._runs[run_uid] = _get_or_create(self.root(), run_uid, metadata=md, specs=["xafs-run-results"])
        return self._runs[run_uid]

    def analysis_node(self, run_uid: str, analysis: str, run: Any) -> Any:
        check_name(analysis)
        cache_key = (run_uid, analysis)
        if cache_key not in self._analysis_nodes:
            self._analysis_nodes[cache_key] = _get_or_create(run, node_key(analysis), metadata={"analysis": analysis})
        return self._analysis_nodes[cache_key]

    def prepare(self, run_uid: str, run_metadata: dict[str, Any], analyses: list[str]) -> None:
        """Create the run's node and its analysis nodes now (at run start), so that storing the first unit
        does not wait for them (measured: ~150 ms of round trips under scan load)."""
        run = self.run_node(run_uid, run_metadata)
        for analysis in analyses:
            self.analysis_node(run_uid, analysis, run)

    # -- writing ----------------------------------------------------------------------------------
    def write(self, record: ResultRecord) -> dict[str, Any]:
        """Create or replace the node of (run, analysis, unit) and update the run's summary.

        Returns the result's event (JSON-able, see :func:`~xafs_stream.transport.protocol.encode_stored`):
        where the node is and what a reader needs to read its data in one request.

        Another worker may be writing the same result at the same moment (a redelivered unit racing the
        original after a broker restart): a node that appears or vanishes under this write (HTTP 409/404) is
        written again, after a random pause that grows with each try, up to 8 times."""
        for attempt in range(7):
            try:
                return self._write(record)
            except Exception as exc:
                if not (isinstance(exc, _Raced) or _is_conflict(exc) or _is_missing(exc)):
                    raise
                self._in_place.clear()
                time.sleep(random.uniform(0.02, 0.2) * (attempt + 1))
        return self._write(record)

    def _write(self, record: ResultRecord) -> dict[str, Any]:
        t0 = time.perf_counter()
        run = self.run_node(record.run_uid, record.unit_metadata)
        analysis_node = self.analysis_node(record.run_uid, record.analysis, run)
        key = unit_key(record.kind, check_index(record.index))
        result = record.result or AnalysisResult()
        summary = nest_summary(result.summary) if record.status == "ok" else {}
        verdict, reasons = record_verdict(record)
        metadata = to_json_safe({
            "analysis": record.analysis,
            "version": record.version,
            "status": record.status,
            "error": record.error,
            "unit_id": record.unit_id,
            "unit_kind": record.kind,
            "unit_index": record.index,
            "attempt": record.attempt,
            "worker": record.worker,
            "timings": record.timings,
            "params": result.params,
            "diagnostics": result.diagnostics,
            "summary": summary,
            "verdict": verdict,
            "verdict_reasons": reasons,
            "written": time.time(),
        })
        layout = plan_arrays(result) if record.status == "ok" else ArrayPlan()
        table_md = None
        single = None if record.kind == "map" else layout.single_array()  # a map is rewritten in place
        if layout.is_single_table:
            table_md = {**metadata, **layout.table_metadata()}
            _replace(analysis_node, key, lambda: analysis_node.write_table(
                layout.frame(), key=key, metadata=table_md, specs=["xafs-result"]))
        elif single is not None:
            _replace(analysis_node, key, lambda: analysis_node.write_array(
                single.data, key=key, dims=single.dims, metadata={**metadata, **single.metadata},
                specs=["xafs-result"]))
        else:
            in_place = (record.run_uid, record.analysis, key)
            children = layout.children()
            if not (record.kind == "map" and self._update_in_place(in_place, children, metadata)):
                self._in_place.pop(in_place, None)
                node = _replace(analysis_node, key, lambda: analysis_node.create_container(
                    key, metadata=metadata, specs=["xafs-result"]))
                written = _write_children(node, children)
                if record.kind == "map" and record.status == "ok":  # written again at the next tiles
                    self._in_place[in_place] = (node, written)
        record.timings["store_s"] = time.perf_counter() - t0
        # the run's per-analysis status: its representative unit, or an error anywhere (a skip of a unit the
        # analysis does not apply to, e.g. a Bayes fit of a single repeat, says nothing about the run)
        if record.representative or record.status == "error":
            update: dict[str, Any] = {"status": {node_key(record.analysis): record.status},
                                      "quality": {node_key(record.analysis): verdict}}
            if record.representative and summary:
                update["summary"] = summary
            run_key = (record.run_uid, record.analysis)
            self._deferred.pop(run_key, None)
            if self._run_update_due(record, verdict):
                self._update_run(run_key, run, update, record.status, verdict, final=record.final)
            else:
                self._deferred[run_key] = (run, update, record.status, verdict)
        return {
            "run_uid": record.run_uid, "analysis": record.analysis, "unit": key, "unit_id": record.unit_id,
            "path": result_path(record.run_uid, record.analysis, key),
            "status": record.status, "error": record.error,
            "family": "table" if table_md else "array" if single is not None else "container",
            "summary": summary, "verdict": verdict, "verdict_reasons": reasons, "worker": record.worker,
            "written": metadata["written"],
            "table": None if table_md is None else {"columns": table_md["table_columns"],
                                                    "lengths": table_md["table_lengths"],
                                                    "dtypes": table_md["table_dtypes"]},
        }

    def _run_update_due(self, record: ResultRecord, verdict: str) -> bool:
        """Whether this write updates the run's status, verdict and summary now (see ``summary_interval_s``)."""
        last = self._run_updates.get((record.run_uid, record.analysis))
        if record.final or last is None or last[:2] != (record.status, verdict):
            return True
        return time.monotonic() - last[2] >= self.summary_interval_s

    def _update_run(self, run_key: tuple[str, str], run: Any, update: dict[str, Any], status: str,
                    verdict: str, *, final: bool) -> None:
        run.update_metadata(metadata=update, drop_revision=True)
        if final:  # nothing more of this unit to defer: forget it (the store lives as long as its worker)
            self._run_updates.pop(run_key, None)
        else:
            self._run_updates[run_key] = (status, verdict, time.monotonic())

    def flush_run_updates(self, *, force: bool = False) -> float | None:
        """Send the deferred run updates that are due (all with ``force``). Returns the seconds until the next
        deferred one is due, or None when none is left."""
        now = time.monotonic()
        for run_key, (run, update, status, verdict) in list(self._deferred.items()):
            if force or now - self._run_updates[run_key][2] >= self.summary_interval_s:
                del self._deferred[run_key]  # first: a failed update is not retried (the next write sends one)
                try:
                    self._update_run(run_key, run, update, status, verdict, final=False)
                except Exception as exc:  # one run's failure does not hold back the others
                    log.warning("run %s: deferred summary update of %s failed: %s", *run_key, exc)
        if not self._deferred:
            return None
        return max(0.0, min(self._run_updates[k][2] for k in self._deferred) + self.summary_interval_s - now)

    def _update_in_place(self, cache_key: tuple[str, str, str], children: list[Child],
                         metadata: dict[str, Any]) -> bool:
        """Write a container result's new data into the nodes of our last write of it: one PUT per child and
        one metadata PUT (a map update: 3 requests instead of 6 for delete and recreate), and readers never
        find it missing. False (nothing written) when the layout changed (other children, shapes, dtypes or
        child metadata) or the node was deleted meanwhile (e.g. ``reprocess --force``): then it is replaced.

        Readers may briefly see one child updated and another not yet (each is a whole, valid map)."""
        cached = self._in_place.get(cache_key)
        if cached is None:
            return False
        node, written = cached
        if [c.key for c in children] != list(written) or any(
                c.family != "array" or c.signature() != written[c.key][1] for c in children):
            return False
        try:
            for child in children:
                written[child.key][0].write(child.data)
            node.replace_metadata(metadata=metadata, specs=["xafs-result"], drop_revision=True)
        except Exception as exc:
            self._in_place.pop(cache_key, None)  # a retry replaces the node (which also repairs a broken child)
            if is_gone(exc):
                return False
            raise
        return True


def _write_children(node: Any, children: list[Child]) -> dict[str, tuple[Any, tuple]]:
    """Create each child under ``node``; returns ``{key: (child node, signature)}``."""
    out = {}
    for c in children:
        if c.family == "table":
            child = node.write_table(c.data, key=c.key, metadata=c.metadata)
        else:
            child = node.write_array(c.data, key=c.key, dims=c.dims, metadata=c.metadata)
        out[c.key] = (child, c.signature())
    return out


def _replace(parent: Any, key: str, create: Any) -> Any:
    """``create()`` the node ``key``; if it exists (a redelivered unit, or reprocessing), delete it first:
    replace, never duplicate. ``parent`` is an analysis node of a result run and ``key`` a checked id: the
    only deletion the results store makes. When the node vanishes between the conflict and the delete
    (another writer replaced it meanwhile and its delete won), creating is simply tried again."""
    check_id(key, "result key")
    for _ in range(3):
        try:
            return create()
        except Exception as exc:
            if not _is_conflict(exc):
                raise
        try:
            parent[key].delete(recursive=True, external_only=False)
        except Exception as exc:
            if _is_missing(exc):  # already gone: create again
                continue
            raise _Raced(f"{key}: changed by another writer while being replaced "
                         f"({type(exc).__name__}: {exc})") from exc
    try:
        return create()
    except Exception as exc:
        if _is_conflict(exc):
            raise _Raced(f"{key}: another writer kept replacing it") from exc
        raise


def _get_or_create(parent: Any, key: str, *, metadata: dict, specs: list[str] | None = None) -> Any:
    """Create the container, or fetch it when it exists (one request either way in the common case)."""
    try:
        return parent.create_container(key, metadata=metadata, specs=specs or [])
    except Exception as exc:
        if _is_conflict(exc):
            return parent[key]
        raise


class _Raced(RuntimeError):
    """The node being replaced changed under this write (another worker writing the same result)."""


def _is_missing(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return isinstance(exc, KeyError) or "404" in text or "No such entry" in text


def _is_conflict(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return "409" in text or "Conflict" in text or "already exists" in text


def record_verdict(record: ResultRecord) -> tuple[str, list[str]]:
    """The verdict stored with a result: the analysis's own; ``bad`` for an error (its message the reason);
    ``""`` for a skip or an analysis that gives none."""
    if record.status == "error":
        return "bad", [f"error: {record.error}"[:300]]
    result = record.result or AnalysisResult()
    if record.status != "ok" or result.verdict not in VERDICTS:
        return "", []
    return result.verdict, [str(r)[:300] for r in result.verdict_reasons][:20]
