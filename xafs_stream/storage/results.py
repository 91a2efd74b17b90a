"""Analysis results in Tiled, beside the raw runs, in a layout users can browse and query.

Layout (``RESULTS_ROOT`` = ``"xafs_results"``)::

    /xafs_results/<run_uid>                       run node: sample, element, edge, plan_name, ... and
                                                  "summary" (numbers of the representative unit of each
                                                  analysis, nested by dotted name) and "status"
    /xafs_results/<run_uid>/<analysis>/<unit>     one node per analysis and unit ("xafs_normalize/merge",
                                                  "xafs_normalize/repeat_0", "imaging_map/map", ...) with
                                                  metadata = analysis, version, status, error, params,
                                                  diagnostics, timings, summary

A result whose arrays are all 1-D numbers (a spectrum's μ, χ(k), |χ(R)|, fit curves) is stored as ONE table
node: the unit node itself, one column per array, shorter arrays padded with NaN (their lengths are in the
metadata ``table_lengths``). Any other result is a container: a table ``arrays`` for its 1-D numbers, one
array ``bytes`` with its 1-D uint8 arrays (PNGs) packed (metadata ``layers``; see ``_pack_blobs``), one
array node per other 1-D array and one stacked array per group of N-D arrays sharing dims and shape
(metadata ``layers`` names the slices). :func:`read_arrays` undoes all of this.

Writes are idempotent: the same (run, analysis, unit) always lands on the same node, which is replaced
(never duplicated) when a unit is processed again. A live map, rewritten at every few tiles by its owner,
is updated in place: new data into its existing nodes, then its metadata. Queries:
``Key("summary.spm.shell1.N") > 10`` or ``Key("sample") == "Cu"`` on ``client["xafs_results"]``.

Few nodes per result: each Tiled node costs two HTTP requests and the embedded server spends ~20-25 ms of
CPU on each (measured with tiled 0.2.20 on the 2-core machine: ~37 metadata GETs/s at full load). A
normalisation result used to be a container plus one table per axis (7 requests); as one table it is 2, and
its μ is readable after those 2.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..analyses.registry import AnalysisResult
from ..protocol import to_json_safe

log = logging.getLogger(__name__)

RESULTS_ROOT = "xafs_results"
RUN_FIELDS = ("sample", "element", "edge", "e0", "mode", "plan_name", "xafs_kind", "scan_id", "time",
              "n_tiles", "map_ny", "map_nx", "repeats", "order")


def node_key(name: str) -> str:
    """A Tiled-safe key: dots (which Tiled queries read as nesting) become underscores."""
    return str(name).replace(".", "_").replace("/", "_")


def unit_key(kind: str, index: int | str) -> str:
    """``repeat_0`` / ``merge`` for spectra, ``tile_3`` for tiles, ``map`` for a whole map."""
    if kind == "spectrum":
        return "merge" if index == "merge" else f"repeat_{index}"
    if kind == "map":
        return "map"
    return f"tile_{index}"


def nest_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """``{"spm.shell1.N": 12}`` → ``{"spm": {"shell1": {"N": 12}}}`` (JSON-safe values).

    A key that would collide with a nested one keeps its dots replaced by underscores at the top level.
    """
    out: dict[str, Any] = {}
    for key, value in summary.items():
        parts = str(key).split(".")
        node = out
        ok = True
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                ok = False
                break
            node = nxt
        if ok and not isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = to_json_safe(value)
        else:
            out[node_key(key)] = to_json_safe(value)
    return out


@dataclass
class ResultRecord:
    """One analysis outcome for one unit, ready to store."""

    run_uid: str
    unit_id: str
    kind: str
    index: int | str
    analysis: str
    version: str
    status: str  # "ok", "error" or "skipped"
    result: AnalysisResult | None = None
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    unit_metadata: dict[str, Any] = field(default_factory=dict)
    attempt: int = 0
    worker: str = ""

    @property
    def representative(self) -> bool:
        """Does this unit speak for the whole run (merged spectrum or whole map)?"""
        return self.index == "merge" or self.kind == "map"


class ResultStore:
    """Write :class:`ResultRecord` objects into Tiled (``client`` is the catalog root)."""

    def __init__(self, client: Any):
        self.client = client
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
        from tiled.serialization.table import serialize_arrow
        from tiled.structures.table import TableStructure

        # the encoding a table write does (pandas → Arrow schema and IPC file), done once on a tiny table
        frame = _ArrayPlan(columns={"warm_up": np.zeros(4)}).frame()
        TableStructure.from_pandas(frame)
        serialize_arrow("application/vnd.apache.arrow.file", frame, {})
        self.root()

    def run_node(self, run_uid: str, unit_metadata: dict[str, Any] | None = None) -> Any:
        if run_uid not in self._runs:
            md = {k: unit_metadata[k] for k in RUN_FIELDS if unit_metadata and k in unit_metadata}
            md = to_json_safe({"run_uid": run_uid, **md, "summary": {}, "status": {}})
            self._runs[run_uid] = _get_or_create(self.root(), run_uid, metadata=md, specs=["xafs-run-results"])
        return self._runs[run_uid]

    def analysis_node(self, run_uid: str, analysis: str, run: Any) -> Any:
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

        Returns the result's event (JSON-able, see :func:`xafs_stream.protocol.encode_stored`): where the
        node is and what a reader needs to read its data in one request."""
        t0 = time.perf_counter()
        run = self.run_node(record.run_uid, record.unit_metadata)
        analysis_node = self.analysis_node(record.run_uid, record.analysis, run)
        key = unit_key(record.kind, record.index)
        result = record.result or AnalysisResult()
        summary = nest_summary(result.summary) if record.status == "ok" else {}
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
            "written": time.time(),
        })
        layout = _plan_arrays(result) if record.status == "ok" else _ArrayPlan()
        table_md = None
        if layout.is_single_table:
            table_md = {**metadata, **layout.table_metadata()}
            _replace(analysis_node, key, lambda: analysis_node.write_table(
                layout.frame(), key=key, metadata=table_md, specs=["xafs-result"]))
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
            update: dict[str, Any] = {"status": {node_key(record.analysis): record.status}}
            if record.representative and summary:
                update["summary"] = summary
            run.update_metadata(metadata=update, drop_revision=True)
        return {
            "run_uid": record.run_uid, "analysis": record.analysis, "unit": key, "unit_id": record.unit_id,
            "path": "/".join((RESULTS_ROOT, record.run_uid, node_key(record.analysis), key)),
            "status": record.status, "family": "table" if table_md else "container", "error": record.error,
            "summary": summary, "worker": record.worker, "written": metadata["written"],
            "table": None if table_md is None else {"columns": table_md["table_columns"],
                                                    "lengths": table_md["table_lengths"],
                                                    "dtypes": table_md["table_dtypes"]},
        }

    def _update_in_place(self, cache_key: tuple[str, str, str], children: list[_Child],
                         metadata: dict[str, Any]) -> bool:
        """Write a container result's new data into the nodes of our last write of it: one PUT per child and
        one metadata PUT (a map update: 4 requests instead of 9 for delete and recreate), and readers never
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
            if _is_gone(exc):
                return False
            raise
        return True


TABLE_KEY = "arrays"  # the 1-D table's key inside a container result
BLOBS_KEY = "bytes"  # 1-D uint8 arrays (PNGs) packed into one node, see _pack_blobs
BLOB_HEADER = "u32-sizes"  # packed layout: little-endian uint32 size of each layer, the layers, zero padding


@dataclass
class _Child:
    """One node of a container result: its key, family ("table" or "array"), data, dims and metadata."""

    key: str
    family: str
    data: Any
    dims: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def signature(self) -> tuple:
        """What must not change for the node's data to be rewritten in place."""
        shape = tuple(getattr(self.data, "shape", ()))
        dtype = str(getattr(self.data, "dtype", ""))
        return self.family, shape, dtype, tuple(self.dims or ()), repr(sorted(self.metadata.items()))


def _write_children(node: Any, children: list[_Child]) -> dict[str, tuple[Any, tuple]]:
    """Create each child under ``node``; returns ``{key: (child node, signature)}``."""
    out = {}
    for c in children:
        if c.family == "table":
            child = node.write_table(c.data, key=c.key, metadata=c.metadata)
        else:
            child = node.write_array(c.data, key=c.key, dims=c.dims, metadata=c.metadata)
        out[c.key] = (child, c.signature())
    return out


def _pack_blobs(blobs: dict[str, np.ndarray]) -> np.ndarray:
    """1-D uint8 arrays in one: their sizes (uint32 LE), then the bytes, zero-padded to a power of two of at
    least twice the content, so that a live map's PNGs (20-35 kB for a 64×64 map, growing as it fills) keep
    the node's shape over many updates and are rewritten in place."""
    sizes = np.asarray([v.size for v in blobs.values()], dtype="<u4")
    content = sizes.nbytes + int(sizes.sum())
    packed = np.zeros(1 << max(12, int(2 * content - 1).bit_length()), dtype=np.uint8)
    packed[: sizes.nbytes] = sizes.view(np.uint8)
    if blobs:
        packed[sizes.nbytes: content] = np.concatenate([np.asarray(v, np.uint8) for v in blobs.values()])
    return packed


def _unpack_blobs(data: np.ndarray, names: list[str], md: dict[str, Any]) -> dict[str, np.ndarray]:
    """Inverse of :func:`_pack_blobs` (also reads the older layout: sizes in metadata ``packed_sizes``)."""
    data = np.asarray(data, dtype=np.uint8)
    if md.get("packed") == BLOB_HEADER:
        sizes = data[: 4 * len(names)].view("<u4").astype(np.int64)
        start = 4 * len(names)
    else:
        sizes = np.asarray(md["packed_sizes"], dtype=np.int64)
        start = 0
    ends = start + np.cumsum(sizes)
    return {name: data[end - size: end].copy() for name, size, end in zip(names, sizes, ends, strict=True)}


@dataclass
class _ArrayPlan:
    """How a result's arrays map onto Tiled nodes (see the module docstring)."""

    columns: dict[str, np.ndarray] = field(default_factory=dict)  # 1-D numbers → one table
    singles: dict[str, np.ndarray] = field(default_factory=dict)  # other 1-D arrays → one array node each
    blobs: dict[str, np.ndarray] = field(default_factory=dict)  # 1-D bytes (PNGs) → one packed uint8 node
    grids: dict[tuple, dict[str, np.ndarray]] = field(default_factory=dict)  # N-D → stacked per (dims, shape)
    dims: dict[str, tuple] = field(default_factory=dict)

    @property
    def is_single_table(self) -> bool:
        return bool(self.columns) and not self.singles and not self.grids and not self.blobs

    def table_metadata(self) -> dict[str, Any]:
        return {"table_columns": list(self.columns),
                "table_lengths": {node_key(n): int(v.size) for n, v in self.columns.items()},
                "table_dtypes": {node_key(n): v.dtype.str for n, v in self.columns.items()}}

    def frame(self) -> Any:
        import pandas as pd

        rows = max(v.size for v in self.columns.values())
        data = {}
        for name, arr in self.columns.items():
            col = np.full(rows, np.nan)
            col[: arr.size] = arr
            data[node_key(name)] = col
        return pd.DataFrame(data)

    def children(self) -> list[_Child]:
        """The container result's nodes (for a result that is not one table)."""
        out = []
        if self.columns:
            out.append(_Child(TABLE_KEY, "table", self.frame(), metadata=self.table_metadata()))
        for name, arr in self.singles.items():
            out.append(_Child(node_key(name), "array", arr, list(self.dims.get(name, ())) or None, {"layers": [name]}))
        if self.blobs:  # a map's 15 PNGs: 1 node instead of 15 (2 requests each, at every map update)
            out.append(_Child(BLOBS_KEY, "array", _pack_blobs(self.blobs), None,
                              {"layers": list(self.blobs), "packed": BLOB_HEADER}))
        for (dims, shape, is_float), arrays in self.grids.items():
            names = list(arrays)
            if len(names) == 1:
                arr = np.ascontiguousarray(arrays[names[0]])
                out.append(_Child(node_key(names[0]), "array", arr, list(dims) or None, {"layers": names}))
                continue
            dtype = np.float64 if is_float else np.result_type(*arrays.values())
            block = np.stack([np.asarray(arrays[n], dtype=dtype) for n in names])
            key = "stack_" + ("_".join(dims) if dims else "x".join(map(str, shape))) + ("" if is_float else "_int")
            out.append(_Child(node_key(key), "array", block, ["layer", *dims] if dims else None,
                              {"layers": names, "stacked": True}))
        return out


def _plan_arrays(result: AnalysisResult) -> _ArrayPlan:
    """1-D float/bool arrays share one NaN-padded table unless padding would more than double it (then the
    longest go to their own nodes); other 1-D arrays (PNG bytes, integers) get a node each; N-D arrays
    sharing dims and shape are stacked."""
    plan = _ArrayPlan()
    for name, arr in result.arrays.items():
        arr = np.asarray(arr)
        dims = tuple(result.dims.get(name, ()))
        plan.dims[name] = dims
        if arr.ndim == 1 and arr.dtype.kind in "fb" and arr.size:
            plan.columns[name] = arr
        elif arr.ndim == 1 and arr.dtype == np.uint8:
            plan.blobs[name] = arr
        elif arr.ndim <= 1:
            plan.singles[name] = arr
        else:
            plan.grids.setdefault((dims, arr.shape, arr.dtype.kind == "f"), {})[name] = arr
    while len(plan.columns) > 1:
        sizes = {n: v.size for n, v in plan.columns.items()}
        longest = max(sizes, key=sizes.get)
        if sizes[longest] * len(sizes) <= 2 * sum(sizes.values()):
            break
        plan.singles[longest] = plan.columns.pop(longest)
    return plan


class ResultIncomplete(LookupError):
    """A result node exists but its data are not all stored yet (read again in a moment)."""


def _read(node: Any, problem: str) -> Any:
    """A stored table's frame or array's data, in one request; :class:`ResultIncomplete` (``problem`` says
    which) while it cannot be read because it is not written yet or is being replaced (the server answers
    an error then).

    Not ``node.read()``: tiled's client retries a server error for up to 45 s (stamina; measured 23-25 s
    here), and a read between a result node's creation and its data (a request later) is such an error, so
    a live reader stalled for seconds on a result that was complete ~0.1 s later.
    """
    import httpx

    table = structure_family(node) == "table"
    try:
        content = _get_full(node.context.http_client, node.item["links"]["full"], table=table, problem=problem)
    except _TooLarge:  # e.g. too large for one response: tiled's client reads it in blocks
        try:
            return node.read()
        except httpx.HTTPStatusError as exc:
            raise ResultIncomplete(f"{problem} ({exc.response.status_code})") from exc
    if table:
        return _arrow_frame(content)
    structure = node.structure()
    return np.frombuffer(content, dtype=structure.data_type.to_numpy_dtype()).reshape(structure.shape).copy()


class _TooLarge(Exception):
    """The server refused a whole-node read with a 4xx other than 404."""


def _get_full(http_client: Any, url: str, *, table: bool, problem: str) -> bytes:
    """The body of one GET of a node's whole data (Arrow file for a table, raw bytes for an array)."""
    accept = "application/vnd.apache.arrow.file" if table else "application/octet-stream"
    response = http_client.get(url, headers={"Accept": accept})
    if response.status_code == 404 or response.status_code >= 500:  # not written yet, or being replaced
        raise ResultIncomplete(f"{problem} ({response.status_code})")
    if response.status_code >= 400:
        raise _TooLarge(response.status_code)
    return response.content


def _arrow_frame(content: bytes) -> Any:
    import pyarrow

    return pyarrow.ipc.open_file(pyarrow.py_buffer(content)).read_pandas()


def read_stored(client: Any, path: str, table: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """All arrays of the result at ``path`` (under the catalog root ``client``).

    With ``table`` (a result event's ``table``: its columns, lengths and dtypes) the result is one table
    and is read in ONE request, without looking the node up first (a live reader told by an event that
    the result is stored: ~45 ms less under scan load than ``read_arrays(client[path])``). Otherwise the
    node is looked up and read with :func:`read_arrays`. :class:`ResultIncomplete` if it is being replaced.
    """
    if not table:
        try:
            node = client[path]
        except KeyError as exc:
            raise ResultIncomplete(f"result {path} is not there (being replaced?)") from exc
        return read_arrays(node)
    base = str(client.item["links"]["self"])
    url = base.replace("/metadata/", "/table/full/", 1).rstrip("/") + "/" + path.strip("/")
    try:
        content = _get_full(client.context.http_client, url, table=True, problem=f"result table {path} not readable")
    except _TooLarge:
        return read_arrays(client[path])
    md = {"table_columns": table["columns"], "table_lengths": table.get("lengths") or {},
          "table_dtypes": table.get("dtypes") or {}}
    return _decode_table(_complete(_arrow_frame(content), md["table_lengths"], path), md)


def _read_table(node: Any, where: str) -> Any:
    """A stored table's frame; :class:`ResultIncomplete` while its data are not written yet (the node is
    created a request before its data: reading in between fails on the server, or comes back short)."""
    frame = _read(node, f"result table {where} is not stored yet")
    return _complete(frame, node.metadata.get("table_lengths") or {}, where)


def _complete(frame: Any, lengths: dict[str, Any], where: str) -> Any:
    """``frame``, or :class:`ResultIncomplete` if it has fewer rows than its longest column (``lengths``)."""
    if lengths and len(frame) < max(int(n) for n in lengths.values()):
        raise ResultIncomplete(f"result table {where} is not stored yet ({len(frame)} rows)")
    return frame


def _decode_table(frame: Any, md: Any) -> dict[str, np.ndarray]:
    """Arrays of a stored 1-D table: padding removed, original dtypes back (also reads the older layout of
    one table per axis, whose metadata has ``columns`` only)."""
    names = md.get("table_columns") or md.get("columns") or list(frame.columns)
    lengths = md.get("table_lengths") or {}
    dtypes = md.get("table_dtypes") or {}
    out = {}
    for name in names:
        col = frame[node_key(name)].to_numpy()
        n = lengths.get(node_key(name))
        if n is not None:
            col = col[: int(n)]
        dtype = dtypes.get(node_key(name))
        if dtype is not None and np.dtype(dtype) != col.dtype:
            col = col.astype(np.dtype(dtype))
        out[name] = col
    return out


def structure_family(node: Any) -> str:
    """``"table"``, ``"array"`` or ``"container"`` of a Tiled client node (no request)."""
    return str(node.item["attributes"]["structure_family"])


def result_layout(node: Any) -> dict[str, tuple[str, list[str]]]:
    """``{child key: (structure family, [array names it holds])}`` of a result node ("" = the node itself,
    when the result is one table), from the listing already fetched or one listing request."""
    if structure_family(node) == "table":
        md = node.metadata
        return {"": ("table", list(md.get("table_columns") or md.get("columns") or []))}
    out = {}
    try:
        children = list(node.items())
    except Exception as exc:  # deleted since it was looked up: being replaced
        if _is_gone(exc):
            raise ResultIncomplete(f"result node was replaced while being listed: {exc}") from exc
        raise
    for key, child in children:
        md = child.metadata
        family = structure_family(child)
        names = (md.get("table_columns") or md.get("columns")) if family == "table" else md.get("layers")
        out[key] = (family, list(names or [key]))
    return out


def read_named(node: Any, layout: dict[str, tuple[str, list[str]]], names: list[str] | None = None
               ) -> dict[str, np.ndarray]:
    """The arrays ``names`` (all if None) of a result node, reading only the nodes that hold them."""
    wanted = None if names is None else set(names)
    out: dict[str, np.ndarray] = {}
    for key, (family, held) in layout.items():
        if wanted is not None and not wanted.intersection(held):
            continue
        try:
            child = node if key == "" else node[key]
        except Exception as exc:  # listed a moment ago; gone now (replaced) or not written yet
            if _is_gone(exc):
                raise ResultIncomplete(f"result child {key!r} is not there (being replaced)") from exc
            raise
        if family == "table":
            out.update(_decode_table(_read_table(child, key or "."), child.metadata))
        elif family == "array":
            data = _read(child, f"result array {key} is not readable now")
            md = child.metadata
            if md.get("stacked"):
                for i, name in enumerate(held):
                    out[name] = data[i]
            elif md.get("packed") or md.get("packed_sizes"):
                out.update(_unpack_blobs(data, held, md))
            else:
                out[held[0]] = data
    return out if wanted is None else {n: v for n, v in out.items() if n in wanted}


def read_arrays(node: Any) -> dict[str, np.ndarray]:
    """All arrays of a result node by their original names (undoing the grouping of :class:`_ArrayPlan`)."""
    return read_named(node, result_layout(node))


def _replace(parent: Any, key: str, create: Any) -> Any:
    """``create()`` the node ``key``; if it exists (a redelivered unit, or reprocessing), delete it first:
    replace, never duplicate."""
    try:
        return create()
    except Exception as exc:
        if not _is_conflict(exc):
            raise
    parent[key].delete(recursive=True, external_only=False)
    return create()


def _get_or_create(parent: Any, key: str, *, metadata: dict, specs: list[str] | None = None) -> Any:
    """Create the container, or fetch it when it exists (one request either way in the common case)."""
    try:
        return parent.create_container(key, metadata=metadata, specs=specs or [])
    except Exception as exc:
        if _is_conflict(exc):
            return parent[key]
        raise


def _is_gone(exc: Exception) -> bool:
    """A lookup of a node that does not exist (any more): KeyError from the client, or HTTP 404."""
    return isinstance(exc, KeyError) or "404" in str(exc)


def _is_conflict(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return "409" in text or "Conflict" in text or "already exists" in text
