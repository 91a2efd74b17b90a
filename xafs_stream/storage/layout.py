"""The results layout in Tiled: the one module that knows where results live and how they are stored.

Tree (``RESULTS_ROOT`` = ``"xafs_results"``)::

    /xafs_results/<run_uid>                       run node: sample, element, edge, plan_name, ... and
                                                  "summary" (numbers of the representative unit of each
                                                  analysis, nested by dotted name) and "status"
                                                  ({analysis key: "ok" | "error" | "skipped"})
    /xafs_results/<run_uid>/<analysis>/<unit>     one node per analysis and unit ("xafs_normalize/merge",
                                                  "xafs_normalize/repeat_0", "imaging_map/map", ...) with
                                                  metadata = analysis, version, status, error, params,
                                                  diagnostics, timings, summary

Analysis names become node keys with dots replaced (:func:`node_key`); units are ``repeat_<n>``, ``merge``,
``tile_<n>`` or ``map`` (:func:`unit_key`). Summaries are stored nested (``{"spm": {"shell1": {"N": 12}}}``,
:func:`nest_summary`), so that Tiled queries such as ``Key("summary.spm.shell1.N") > 10`` work, and read back
flat (:func:`flatten_summary`).

How a result's arrays become nodes (:func:`plan_arrays`): a result whose arrays are all 1-D numbers (a
spectrum's μ, χ(k), |χ(R)|, fit curves) is ONE table node, the unit node itself, one column per array,
shorter arrays padded with NaN (their lengths in the metadata ``table_lengths``). Any other result is a
container: a table ``arrays`` for its 1-D numbers, one array ``bytes`` with its 1-D uint8 arrays (PNGs)
packed (metadata ``layers``; see :func:`pack_blobs`), one array node per other 1-D array and one stacked
array per group of N-D arrays sharing dims and shape (metadata ``layers`` names the slices; integer and
bool layers join a float64 stack exactly, their dtypes in ``layer_dtypes``). A result that
would be a container of one array node (a map tile's stacked features) is that array node itself, with the
result's metadata and ``layers``. Few nodes per result because each node costs two HTTP requests and the
Tiled server ~20-25 ms of CPU per request.

Reading back (:func:`read_arrays`, :func:`read_stored`) undoes all of this; a result whose node exists but
whose data are not all written yet raises :class:`ResultIncomplete`. Writing is
:class:`~xafs_stream.storage.results.ResultStore`.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core import AnalysisResult, check_id, to_json_safe

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


def repeat_key(repeat: int) -> str:
    """The unit key of one repeat of a spectrum scan (``repeat_0``)."""
    return unit_key("spectrum", int(repeat))


def expected_units(start: Mapping[str, Any]) -> list[str]:
    """Unit keys a run will produce (from its start document): ``repeat_0`` ... and ``merge`` for spectra,
    ``tile_0`` ... for maps."""
    kind = start.get("xafs_kind")
    if kind == "spectrum":
        n = int(start.get("repeats") or 1)
        return [repeat_key(i) for i in range(n)] + [unit_key("spectrum", "merge")]
    if kind == "map":
        return [unit_key("tile", i) for i in range(int(start.get("n_tiles") or 0))]
    return []


def result_path(run_uid: str, analysis: str, unit: str) -> str:
    """Path of a result node under the catalog root (``xafs_results/<run>/<analysis key>/<unit key>``)."""
    return "/".join((RESULTS_ROOT, run_uid, node_key(analysis), unit))


def is_raw_run_key(key: str) -> bool:
    """Is this key of the catalog root a raw run (not the results tree)?"""
    return key != RESULTS_ROOT


def summary_query_key(name: str) -> str:
    """The metadata key of a summary number on a result run node, for Tiled queries
    (``summary.spm.shell1.N``)."""
    return f"summary.{name}"


def status_query_key(analysis: str) -> str:
    """The metadata key of an analysis's status on a result run node (``status.xafs_normalize``)."""
    return f"status.{node_key(analysis)}"


def quality_query_key(analysis: str) -> str:
    """The metadata key of an analysis's verdict on a result run node (``quality.spm``)."""
    return f"quality.{node_key(analysis)}"


def flatten_summary(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"spm": {"shell1": {"N": 12}}}`` → ``{"spm.shell1.N": 12}`` (the inverse of :func:`nest_summary`)."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_summary(value, name + "."))
        else:
            out[name] = value
    return out


def lookup_summary(nested: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """Value at a dotted name in a nested summary (``lookup_summary(summary, "spm.shell1.N")``)."""
    node: Any = nested
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


# ------------------------------------------------------------------------------------ finding results


def _child(node: Any, *path: str) -> Any | None:
    """The node at ``path`` under ``node`` (one request), or None; None without a request when a part is not
    a safe id (:func:`~xafs_stream.core.check_id`), which no result node has."""
    try:
        for part in path:
            check_id(part)
        return node["/".join(path)]
    except (KeyError, ValueError):
        return None


def results_root(client: Any) -> Any | None:
    """The results tree under the catalog root ``client``, or None before the first result."""
    return _child(client, RESULTS_ROOT)


def run_results(client: Any, run_uid: str) -> Any | None:
    """The result run node of ``run_uid`` (one request), or None when it has no result yet."""
    return _child(client, RESULTS_ROOT, run_uid)


def result_node(client: Any, run_uid: str, analysis: str, unit: str) -> Any | None:
    """The node of one result (``analysis`` by name or node key, ``unit`` a unit key), or None."""
    return _child(client, RESULTS_ROOT, run_uid, node_key(analysis), unit)


def analysis_results(client: Any, run_uid: str, analysis: str) -> dict[str, Any]:
    """``{unit key: node}`` of one analysis's stored results of a run (one request), empty if none."""
    node = _child(client, RESULTS_ROOT, run_uid, node_key(analysis))
    return {} if node is None else dict(node.items())


def stored_results(client: Any, run_uid: str) -> dict[str, dict[str, Any]]:
    """``{analysis key: {unit key: node}}`` of a run's stored results (one request per analysis)."""
    run = run_results(client, run_uid)
    if run is None:
        return {}
    return {akey: dict(anode.items()) for akey, anode in run.items()}


# ------------------------------------------------------------------------------------ arrays → nodes


TABLE_KEY = "arrays"  # the 1-D table's key inside a container result
BLOBS_KEY = "bytes"  # 1-D uint8 arrays (PNGs) packed into one node, see pack_blobs
BLOB_HEADER = "u32-sizes"  # packed layout: little-endian uint32 size of each layer, the layers, zero padding


@dataclass
class Child:
    """One node of a container result (or the one array a result is, :meth:`ArrayPlan.single_array`): its key,
    family ("table" or "array"), data, dims and metadata."""

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


CHECKSUM_KEY = "data_crc32"


def data_checksum(data: np.ndarray) -> int:
    """CRC-32 of an array's bytes in C order, as Tiled serves them. An array node made by the results store
    exists, and reads as its fill value (zeros), between its creation and its data (the next request): a
    reader compares this checksum, stored in the node's metadata at creation, to tell the two apart."""
    return zlib.crc32(np.ascontiguousarray(data).data)


def pack_blobs(blobs: dict[str, np.ndarray], capacity: int = 0) -> np.ndarray:
    """1-D uint8 arrays in one: their sizes (uint32 LE), then the bytes, zero-padded to a power of two of at
    least twice the content and at least ``capacity``, so that a live map's PNGs (20-35 kB for a 64×64 map,
    growing as it fills; the map gives the size it expects when full, ``AnalysisResult.blob_capacity``) keep
    the node's shape over many updates and are rewritten in place."""
    sizes = np.asarray([v.size for v in blobs.values()], dtype="<u4")
    content = sizes.nbytes + int(sizes.sum())
    need = max(2 * content, int(capacity), 1 << 12)
    packed = np.zeros(1 << int(need - 1).bit_length(), dtype=np.uint8)
    packed[: sizes.nbytes] = sizes.view(np.uint8)
    if blobs:
        packed[sizes.nbytes: content] = np.concatenate([np.asarray(v, np.uint8) for v in blobs.values()])
    return packed


def unpack_blobs(data: np.ndarray, names: list[str], md: dict[str, Any]) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack_blobs` (also reads the older layout: sizes in metadata ``packed_sizes``)."""
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
class ArrayPlan:
    """How a result's arrays map onto Tiled nodes (see the module docstring)."""

    columns: dict[str, np.ndarray] = field(default_factory=dict)  # 1-D numbers → one table
    singles: dict[str, np.ndarray] = field(default_factory=dict)  # other 1-D arrays → one array node each
    blobs: dict[str, np.ndarray] = field(default_factory=dict)  # 1-D bytes (PNGs) → one packed uint8 node
    # N-D → stacked per (dims, shape, True for exact in float64 | else the dtype)
    grids: dict[tuple, dict[str, np.ndarray]] = field(default_factory=dict)
    dims: dict[str, tuple] = field(default_factory=dict)
    blob_capacity: int = 0  # the result's size hint for the packed blobs, bytes

    @property
    def is_single_table(self) -> bool:
        return bool(self.columns) and not self.singles and not self.grids and not self.blobs

    def single_array(self) -> Child | None:
        """The result's only node when that is one array (a tile's stacked feature maps): the unit node is
        then that array, 2 requests instead of 3 for a container holding it, its metadata with the data's
        checksum (:func:`data_checksum`). None otherwise."""
        if self.columns or len(self.singles) + len(self.grids) + bool(self.blobs) != 1:
            return None
        child = self.children()[0]
        child.metadata[CHECKSUM_KEY] = data_checksum(child.data)
        return child

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

    def children(self) -> list[Child]:
        """The container result's nodes (for a result that is not one table)."""
        out = []
        if self.columns:
            out.append(Child(TABLE_KEY, "table", self.frame(), metadata=self.table_metadata()))
        for name, arr in self.singles.items():
            out.append(Child(node_key(name), "array", arr, list(self.dims.get(name, ())) or None, {"layers": [name]}))
        if self.blobs:  # a map's 15 PNGs: 1 node instead of 15 (2 requests each, at every map update)
            out.append(Child(BLOBS_KEY, "array", pack_blobs(self.blobs, self.blob_capacity), None,
                              {"layers": list(self.blobs), "packed": BLOB_HEADER}))
        for (dims, shape, group), arrays in self.grids.items():
            numeric = group is True
            names = list(arrays)
            if len(names) == 1:
                arr = np.ascontiguousarray(arrays[names[0]])
                out.append(Child(node_key(names[0]), "array", arr, list(dims) or None, {"layers": names}))
                continue
            md: dict[str, Any] = {"layers": names, "stacked": True}
            if numeric and any(a.dtype.kind == "f" for a in arrays.values()):
                # integer and bool layers ride along exactly (a map's labels: one node less per update)
                dtype, suffix = np.dtype(np.float64), ""
            else:
                dtype = np.result_type(*arrays.values())
                suffix = "_int" if numeric else f"_{dtype.name}"
            changed = {n: a.dtype.str for n, a in arrays.items() if a.dtype != dtype}
            md.update({"layer_dtypes": changed} if changed else {})  # each layer reads back as it was given
            block = np.stack([np.asarray(arrays[n], dtype=dtype) for n in names])
            key = "stack_" + ("_".join(dims) if dims else "x".join(map(str, shape))) + suffix
            out.append(Child(node_key(key), "array", block, ["layer", *dims] if dims else None, md))
        return out


def _exact_in_float64(arr: np.ndarray) -> bool:
    """Whether ``arr`` (floats, bools or integers within ±2⁵³) survives a float64 stack unchanged."""
    kind = arr.dtype.kind
    if kind in "fb":
        return arr.dtype.itemsize <= 8  # not long double
    if kind not in "iu":
        return False
    return arr.size == 0 or max(abs(int(arr.min())), abs(int(arr.max()))) <= 2**53


def plan_arrays(result: AnalysisResult) -> ArrayPlan:
    """1-D float/bool arrays share one NaN-padded table unless padding would more than double it (then the
    longest go to their own nodes); other 1-D arrays (PNG bytes, integers) get a node each; N-D arrays
    sharing dims and shape are stacked (integer and bool layers in a float64 stack when they are exact in
    it, their dtypes in metadata ``layer_dtypes``)."""
    plan = ArrayPlan(blob_capacity=int(result.blob_capacity))
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
            exact = _exact_in_float64(arr)  # else one stack per dtype: nothing is cast with a loss
            plan.grids.setdefault((dims, arr.shape, True if exact else arr.dtype.str), {})[name] = arr
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
    family = node.item["attributes"]["structure_family"]
    return str(getattr(family, "value", family))  # an enum on a node this client just created


def result_layout(node: Any) -> dict[str, tuple[str, list[str]]]:
    """``{child key: (structure family, [array names it holds])}`` of a result node ("" = the node itself,
    when the result is one table or one array), from the listing already fetched or one listing request."""
    family = structure_family(node)
    if family == "table":
        md = node.metadata
        return {"": ("table", list(md.get("table_columns") or md.get("columns") or []))}
    if family == "array":  # a result that is one array node (ArrayPlan.single_array)
        return {"": ("array", list(node.metadata.get("layers") or []))}
    out = {}
    try:
        children = list(node.items())
    except Exception as exc:  # deleted since it was looked up: being replaced
        if is_gone(exc):
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
            if is_gone(exc):
                raise ResultIncomplete(f"result child {key!r} is not there (being replaced)") from exc
            raise
        if family == "table":
            out.update(_decode_table(_read_table(child, key or "."), child.metadata))
        elif family == "array":
            data = _read(child, f"result array {key} is not readable now")
            md = child.metadata
            if CHECKSUM_KEY in md and data_checksum(data) != md[CHECKSUM_KEY]:
                raise ResultIncomplete(f"result array {key or '.'} is not stored yet (its data do not match "
                                       "their checksum)")
            if md.get("stacked"):
                dtypes = md.get("layer_dtypes") or {}
                for i, name in enumerate(held):
                    out[name] = data[i].astype(dtypes[name]) if name in dtypes else data[i]
            elif md.get("packed") or md.get("packed_sizes"):
                out.update(unpack_blobs(data, held, md))
            else:
                out[held[0]] = data
    return out if wanted is None else {n: v for n, v in out.items() if n in wanted}


def read_arrays(node: Any) -> dict[str, np.ndarray]:
    """All arrays of a result node by their original names (undoing the grouping of :class:`ArrayPlan`)."""
    return read_named(node, result_layout(node))


def is_gone(exc: Exception) -> bool:
    """A lookup of a node that does not exist (any more): KeyError from the client, or HTTP 404."""
    return isinstance(exc, KeyError) or "404" in str(exc)


