"""Wire protocol of xafs-stream (ZeroMQ multipart messages). No pickle anywhere.

Every message is a list of frames: ``[PROTOCOL, command, *body]`` (a ROUTER socket prepends the peer
identity). Units travel as ``[PROTOCOL, UNIT|SUBMIT, header, *buffers]`` where ``header`` is UTF-8 JSON::

    {"schema": 1, "unit_id": "...", "run_uid": "...", "kind": "spectrum"|"tile", "index": 0|"merge",
     "metadata": {...}, "arrays": [{"name": "energy", "dtype": "<f8", "shape": [412]}, ...],
     "analyses": null | ["xafs.normalize", ...], "affinity": null | "<key>", "attempt": 0}

and each array's raw bytes follow as its own frame (zero-copy on send). Decoding checks every field and
raises :class:`ProtocolError` with the reason; receivers log it, count it and carry on.

Result events leave the broker on a PUB socket as ``[topic, PROTOCOL, STORED, body]`` (topic
:func:`stored_topic`, body :func:`encode_stored`): best effort, like any PUB/SUB (a subscriber that is
slow or not yet connected misses events; Tiled holds every result regardless). Whenever a subscription to
``HELLO_TOPIC`` reaches it, the broker publishes ``[HELLO_TOPIC, PROTOCOL, HELLO]``: a subscriber that
subscribes to its topics and then to ``HELLO_TOPIC`` knows, once a HELLO arrives, that its subscriptions
are in place (ZeroMQ delivers a peer's subscriptions in order).

The protocol version (``PROTOCOL``) is independent of the package version.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ..config import BrokerConfig
from ..core import UNIT_KINDS, UnitEnvelope, WorkUnit, make_unit_id, to_json_safe

PROTOCOL = b"XSP1"
SCHEMA_VERSION = 1

# producer <-> broker frontend
SUBMIT = b"SUBMIT"  # producer -> broker: a unit
ACK = b"ACK"  # broker -> producer: unit stored durably (body: unit id)
BUSY = b"BUSY"  # broker -> producer: queue full, keep it and retry later (body: unit id)
REJECT = b"REJECT"  # broker -> producer: malformed (body: JSON {"unit_id", "reason"})
STATUS = b"STATUS"  # either side: broker statistics as JSON
OPEN = b"OPEN"  # producer -> broker -> worker: a run started, JSON {"run_uid", "kind", "affinity", "metadata"};
#                 a hint (not stored, not acknowledged): the run's owner prepares its result nodes early
# worker <-> broker backend
READY = b"READY"  # worker -> broker: JSON {"credit": n, "worker": name, "host": ..., "pid": ...}
UNIT = b"UNIT"  # broker -> worker: a unit to process
DONE = b"DONE"  # worker -> broker: JSON {"unit_id", "status"}; returns one credit
HEARTBEAT = b"HEARTBEAT"  # both directions
BYE = b"BYE"  # worker -> broker: leaving, requeue what I hold
STORED = b"STORED"  # worker -> broker -> events subscribers: a result is readable in Tiled (see encode_stored)
HELLO = b"HELLO"  # broker -> events subscribers (topic HELLO_TOPIC): a subscription to it reached the broker
HELLO_TOPIC = b"hello"

COMMANDS = {SUBMIT, ACK, BUSY, REJECT, STATUS, OPEN, READY, UNIT, DONE, HEARTBEAT, BYE, STORED, HELLO}
STORED_STATUSES = ("ok", "error", "skipped")

ALLOWED_DTYPES = {"<f8", "<f4", "<i8", "<i4", "<i2", "<u2", "<u1", "|u1", "|b1", "<u4", "<u8", "|i1"}
MAX_HEADER_BYTES = 1 << 20  # 1 MiB of JSON
DEFAULT_MAX_MESSAGE_BYTES = BrokerConfig.max_message_bytes  # 1 GiB of array data
MAX_ARRAYS = 64
MAX_NDIM = 4


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the text says what was wrong."""


def dumps(obj: Any) -> bytes:
    """Strict JSON (NaN/inf become null) as UTF-8 bytes."""
    return json.dumps(to_json_safe(obj), allow_nan=False).encode()


def loads(data: bytes, what: str = "JSON") -> Any:
    try:
        return json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{what}: not valid UTF-8 JSON ({exc})") from None


def encode_unit(envelope: UnitEnvelope, command: bytes = UNIT) -> list:
    """Frames ``[PROTOCOL, command, header, *buffers]`` for a unit (arrays are sent without copying)."""
    unit = envelope.unit
    buffers = []
    specs = []
    for name, arr in unit.arrays.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        if arr.dtype == object:
            raise ProtocolError(f"array {name!r}: object arrays cannot be sent")
        specs.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape)})
        buffers.append(memoryview(arr).cast("B") if arr.size else b"")
    header = {
        "schema": SCHEMA_VERSION,
        "unit_id": unit.unit_id,
        "run_uid": unit.run_uid,
        "kind": unit.kind,
        "index": unit.index,
        "metadata": unit.metadata,
        "arrays": specs,
        "analyses": envelope.analyses,
        "affinity": envelope.affinity,
        "attempt": envelope.attempt,
        "poisoned": envelope.poisoned,
        "poison_reason": envelope.poison_reason,
        "extra": envelope.extra,
    }
    return [PROTOCOL, command, dumps(header), *buffers]


def decode_unit(body: list, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> UnitEnvelope:
    """Parse ``[header, *buffers]`` (the frames after the command) into a :class:`UnitEnvelope`.

    Raises :class:`ProtocolError` for anything malformed: bad JSON, missing or mistyped fields, unknown
    kind or dtype, buffer sizes that do not match shapes, a unit id that does not match its parts,
    more than ``max_bytes`` of array data.
    """
    header = peek_header(body)
    if header.get("schema") != SCHEMA_VERSION:
        raise ProtocolError(f"unsupported schema version {header.get('schema')!r} (this is {SCHEMA_VERSION})")
    run_uid = _field(header, "run_uid", str)
    kind = _field(header, "kind", str)
    if kind not in UNIT_KINDS:
        raise ProtocolError(f"unknown unit kind {kind!r}; expected one of {UNIT_KINDS}")
    index = header.get("index")
    if not isinstance(index, (int, str)) or isinstance(index, bool):
        raise ProtocolError(f"index must be an integer or string, got {type(index).__name__}")
    unit_id = _field(header, "unit_id", str)
    if unit_id != make_unit_id(run_uid, kind, index):
        raise ProtocolError(f"unit_id {unit_id!r} does not match run_uid/kind/index")
    metadata = header.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ProtocolError("metadata must be a JSON object")
    specs = header.get("arrays")
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise ProtocolError(f"arrays must be a list of at most {MAX_ARRAYS} array descriptions")
    buffers = body[1:]
    if len(buffers) != len(specs):
        raise ProtocolError(f"header describes {len(specs)} arrays but {len(buffers)} buffer frames follow")
    total = 0
    arrays: dict[str, np.ndarray] = {}
    for spec, buf in zip(specs, buffers):
        if not isinstance(spec, dict):
            raise ProtocolError("each array description must be a JSON object")
        name = _field(spec, "name", str)
        dtype = _field(spec, "dtype", str)
        shape = spec.get("shape")
        if dtype not in ALLOWED_DTYPES:
            raise ProtocolError(f"array {name!r}: dtype {dtype!r} not allowed")
        if (not isinstance(shape, list) or len(shape) > MAX_NDIM
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
            raise ProtocolError(f"array {name!r}: shape must be a list of at most {MAX_NDIM} integers >= 0")
        if name in arrays:
            raise ProtocolError(f"array {name!r} appears twice")
        dt = np.dtype(dtype)
        expected = math.prod(shape) * dt.itemsize  # Python ints: exact, no overflow
        total += expected
        if total > max_bytes:
            raise ProtocolError(f"message carries more than {max_bytes} bytes of array data")
        data = _frame_buffer(buf)
        if len(data) != expected:
            raise ProtocolError(f"array {name!r}: {len(data)} bytes for shape {shape} {dtype} ({expected} expected)")
        arrays[name] = np.frombuffer(data, dtype=dt).reshape(shape) if expected else np.zeros(shape, dt)
    analyses = header.get("analyses")
    if analyses is not None and not (isinstance(analyses, list) and all(isinstance(a, str) for a in analyses)):
        raise ProtocolError("analyses must be null or a list of names")
    affinity = header.get("affinity")
    if affinity is not None and not isinstance(affinity, str):
        raise ProtocolError("affinity must be null or a string")
    attempt = header.get("attempt", 0)
    if not isinstance(attempt, int) or attempt < 0:
        raise ProtocolError("attempt must be an integer >= 0")
    unit = WorkUnit(run_uid=run_uid, kind=kind, index=index, arrays=arrays, metadata=metadata)
    extra = header.get("extra") or {}
    if not isinstance(extra, dict):
        raise ProtocolError("extra must be a JSON object")
    return UnitEnvelope(
        unit=unit, analyses=analyses, affinity=affinity, attempt=attempt,
        poisoned=bool(header.get("poisoned", False)), poison_reason=str(header.get("poison_reason", "")),
        extra=extra,
    )


def peek_header(body: list) -> dict:
    """The header of a unit message without decoding arrays (for the broker's bookkeeping)."""
    if not body:
        raise ProtocolError("unit message has no header frame")
    header_bytes = _frame_bytes(body[0])
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header is {len(header_bytes)} bytes, limit {MAX_HEADER_BYTES}")
    header = loads(header_bytes, "header")
    if not isinstance(header, dict):
        raise ProtocolError("header must be a JSON object")
    return header


def encode_open(run_uid: str, kind: str, affinity: str | None, metadata: dict[str, Any]) -> bytes:
    """Body of an ``OPEN`` message (see :func:`decode_open`)."""
    return dumps({"schema": SCHEMA_VERSION, "run_uid": run_uid, "kind": kind, "affinity": affinity,
                  "metadata": metadata})


def decode_open(body: list) -> dict[str, Any]:
    """Checked ``OPEN`` body: ``run_uid`` (str), ``kind`` (a unit kind), ``affinity`` (str or null),
    ``metadata`` (JSON object, at most :data:`MAX_HEADER_BYTES`)."""
    info = peek_header(body)
    if len(body) != 1:
        raise ProtocolError(f"OPEN has {len(body)} body frames; expected 1")
    _field(info, "run_uid", str)
    if info.get("kind") not in UNIT_KINDS:
        raise ProtocolError(f"OPEN kind must be one of {UNIT_KINDS}, got {info.get('kind')!r}")
    if info.get("affinity") is not None and not isinstance(info["affinity"], str):
        raise ProtocolError("OPEN affinity must be null or a string")
    if not isinstance(info.get("metadata", {}), dict):
        raise ProtocolError("OPEN metadata must be a JSON object")
    return info


def stored_topic(run_uid: str, analysis: str = "") -> bytes:
    """Topic of a ``STORED`` event on the broker's events socket: ``stored/<run uid>/<analysis>/``.
    A subscriber filters by prefix (``stored/`` everything, ``stored/<uid>/`` one run)."""
    return f"stored/{run_uid}/{analysis}/".encode() if analysis else f"stored/{run_uid}/".encode()


def encode_stored(event: dict[str, Any]) -> bytes:
    """Body of a ``STORED`` message: a result node written and readable. Fields (JSON)::

        {"schema": 1, "run_uid": "...", "analysis": "xafs.normalize", "unit": "repeat_0", "unit_id": "...",
         "path": "xafs_results/<uid>/xafs_normalize/repeat_0", "status": "ok"|"error"|"skipped",
         "family": "table"|"container", "error": "", "summary": {...nested...},
         "table": null | {"columns": [...], "lengths": {...}, "dtypes": {...}}, "worker": "...", "written": s}
    """
    return dumps({"schema": SCHEMA_VERSION, **event})


def decode_stored(body: list) -> dict[str, Any]:
    """Checked ``STORED`` body (see :func:`encode_stored`)."""
    if len(body) != 1:
        raise ProtocolError(f"STORED has {len(body)} body frames; expected 1")
    info = peek_header(body)
    if info.get("schema") != SCHEMA_VERSION:
        raise ProtocolError(f"STORED: unsupported schema version {info.get('schema')!r} (this is {SCHEMA_VERSION})")
    for key in ("run_uid", "analysis", "unit", "path"):
        _field(info, key, str)
    if info.get("status") not in STORED_STATUSES:
        raise ProtocolError(f"STORED status must be one of {STORED_STATUSES}, got {info.get('status')!r}")
    if info.get("family") not in ("table", "container"):
        raise ProtocolError(f"STORED family must be 'table' or 'container', got {info.get('family')!r}")
    table = info.get("table")
    if table is not None and not (isinstance(table, dict) and isinstance(table.get("columns"), list)
                                  and isinstance(table.get("lengths", {}), dict)):
        raise ProtocolError("STORED table must be null or an object with a 'columns' list and 'lengths' object")
    if not isinstance(info.get("summary", {}), dict):
        raise ProtocolError("STORED summary must be a JSON object")
    return info


def _field(obj: dict, key: str, typ: type) -> Any:
    value = obj.get(key)
    if not isinstance(value, typ) or (typ is str and not value):
        raise ProtocolError(f"field {key!r} missing or not a {'non-empty string' if typ is str else typ.__name__}")
    return value


def _frame_bytes(frame: Any) -> bytes:
    return bytes(_frame_buffer(frame))


def _frame_buffer(frame: Any) -> memoryview:
    if hasattr(frame, "buffer"):  # zmq.Frame
        return frame.buffer
    return memoryview(frame)


def split_envelope(frames: list) -> tuple[bytes, list]:
    """Check the protocol frame and return ``(command, body)``."""
    if len(frames) < 2:
        raise ProtocolError(f"message has {len(frames)} frame(s); need protocol and command")
    proto = _frame_bytes(frames[0])
    if proto != PROTOCOL:
        raise ProtocolError(f"unknown protocol {proto[:16]!r} (expected {PROTOCOL!r})")
    command = _frame_bytes(frames[1])
    if command not in COMMANDS:
        raise ProtocolError(f"unknown command {command[:16]!r}")
    return command, list(frames[2:])
