"""Wire protocol of xafs-stream (ZeroMQ multipart messages). No pickle anywhere.

Every message is a list of frames: ``[PROTOCOL, command, *body]`` (a ROUTER socket prepends the peer
identity). Units travel as ``[PROTOCOL, UNIT|SUBMIT, header, *buffers]`` where ``header`` is UTF-8 JSON::

    {"schema": 1, "unit_id": "...", "run_uid": "...", "kind": "spectrum"|"tile", "index": 0|"merge",
     "metadata": {...}, "arrays": [{"name": "energy", "dtype": "<f8", "shape": [412]}, ...],
     "analyses": null | ["xafs.normalize", ...], "affinity": null | "<key>", "attempt": 0}

and each array's raw bytes follow as its own frame (zero-copy on send). Decoding checks every field and
raises :class:`ProtocolError` with the reason; receivers log it, count it and carry on. Everything is
bounded before use: JSON nesting (:data:`MAX_DEPTH`), integers (:data:`MAX_INT`), no NaN or infinity,
strings valid UTF-8, ids and names by :func:`~xafs_stream.core.check_id` (they become Tiled keys), array
shapes, credits.

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
from ..core import (
    UNIT_KINDS,
    UnitEnvelope,
    WorkUnit,
    brief,
    check_id,
    check_index,
    check_name,
    make_unit_id,
    to_json_safe,
)

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
READY = b"READY"  # worker -> broker: JSON {"credit": n, "lane": "" | "fast" | "slow", "worker", "host", "pid"}
UNIT = b"UNIT"  # broker -> worker: a unit to process
DONE = b"DONE"  # worker -> broker: JSON {"unit_id", "status", "lane"}; returns one credit
FAILED = b"FAILED"  # worker -> broker: JSON {"unit_id", "reason"}: its results could not be stored; the
#                     broker keeps the unit and retries it later (returns one credit)
HEARTBEAT = b"HEARTBEAT"  # both directions
BYE = b"BYE"  # worker -> broker: leaving, requeue what I hold
STORED = b"STORED"  # worker -> broker -> events subscribers: a result is readable in Tiled (see encode_stored)
HELLO = b"HELLO"  # broker -> events subscribers (topic HELLO_TOPIC): a subscription to it reached the broker
HELLO_TOPIC = b"hello"

COMMANDS = {SUBMIT, ACK, BUSY, REJECT, STATUS, OPEN, READY, UNIT, DONE, FAILED, HEARTBEAT, BYE, STORED, HELLO}
STORED_STATUSES = ("ok", "error", "skipped")

ALLOWED_DTYPES = {"<f8", "<f4", "<i8", "<i4", "<i2", "<u2", "<u1", "|u1", "|b1", "<u4", "<u8", "|i1"}
MAX_HEADER_BYTES = 1 << 20  # 1 MiB of JSON
DEFAULT_MAX_MESSAGE_BYTES = BrokerConfig.max_message_bytes  # 1 GiB of array data
MAX_ARRAYS = 64
MAX_NDIM = 4
MAX_DIM = 2**31 - 1  # elements along one axis
MAX_DEPTH = 32  # nesting of JSON objects and lists
MAX_INT = 2**63  # magnitude of any JSON integer
MAX_CREDIT = 10_000  # units one worker may hold
MAX_TEXT = 1000  # characters of a free-text field (a worker name, a poison reason)


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the text says what was wrong."""


def dumps(obj: Any) -> bytes:
    """Strict JSON (NaN/inf become null) as UTF-8 bytes."""
    return json.dumps(to_json_safe(obj), allow_nan=False).encode()


def loads(data: bytes, what: str = "JSON") -> Any:
    """Strict, bounded JSON: ProtocolError for invalid UTF-8 (lone surrogates included), NaN or infinity,
    an integer beyond :data:`MAX_INT`, nesting deeper than :data:`MAX_DEPTH`."""
    try:
        value = json.loads(bytes(data).decode("utf-8"), parse_constant=_no_constant, parse_int=_bounded_int,
                           parse_float=_finite_float)
    except RecursionError:
        raise ProtocolError(f"{what}: nested more than {MAX_DEPTH} deep") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError and the hooks' errors
        raise ProtocolError(f"{what}: not valid JSON for this protocol ({brief(str(exc), 120)})") from None
    _check_tree(value, what)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _bounded_int(text: str) -> int:
    if len(text) > 20 or abs(value := int(text)) > MAX_INT:
        raise ValueError(f"integer {text[:24]}... beyond ±2**63" if len(text) > 24 else f"integer {text} beyond ±2**63")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:24]} is not finite")
    return value


def _check_tree(value: Any, what: str) -> None:
    """Nesting depth and string encodability of a decoded JSON value (iterative: no recursion limit)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _utf8(item, what)
        elif isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise ProtocolError(f"{what}: nested more than {MAX_DEPTH} deep")
            if isinstance(item, dict):
                for key, child in item.items():
                    _utf8(key, what)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def _utf8(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(f"{what}: a string is not valid UTF-8 (lone surrogate)") from None


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
    run_uid = _checked(check_id, header.get("run_uid"), "run_uid")
    kind = _field(header, "kind", str)
    if kind not in UNIT_KINDS:
        raise ProtocolError(f"unknown unit kind {brief(kind)}; expected one of {UNIT_KINDS}")
    index = _checked(check_index, header.get("index"), "index")
    unit_id = _field(header, "unit_id", str)
    if unit_id != make_unit_id(run_uid, kind, index):
        raise ProtocolError(f"unit_id {brief(unit_id)} does not match run_uid/kind/index")
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
        name = _checked(check_name, spec.get("name"), "array name")
        dtype = _field(spec, "dtype", str)
        shape = spec.get("shape")
        if dtype not in ALLOWED_DTYPES:
            raise ProtocolError(f"array {name!r}: dtype {brief(dtype)} not allowed")
        if (not isinstance(shape, list) or len(shape) > MAX_NDIM
                or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_DIM for s in shape)):
            raise ProtocolError(f"array {name!r}: shape must be a list of at most {MAX_NDIM} integers "
                                f"0..{MAX_DIM}, got {brief(shape)}")
        if name in arrays:
            raise ProtocolError(f"array {name!r} appears twice")
        dt = np.dtype(dtype)
        expected = math.prod(shape) * dt.itemsize  # Python ints: exact, no overflow
        total += expected
        if total > max_bytes:
            raise ProtocolError(f"message carries more than {max_bytes} bytes of array data")
        data = _frame_buffer(buf)
        if len(data) != expected:
            raise ProtocolError(f"array {name!r}: {len(data)} bytes for shape {shape} {dtype} "
                                f"({expected} expected)")
        arrays[name] = np.frombuffer(data, dtype=dt).reshape(shape) if expected else np.zeros(shape, dt)
    analyses = header.get("analyses")
    if analyses is not None:
        if not isinstance(analyses, list) or len(analyses) > MAX_ARRAYS:
            raise ProtocolError(f"analyses must be null or a list of at most {MAX_ARRAYS} names")
        for name in analyses:
            _checked(check_name, name, "analysis")
    affinity = _affinity(header.get("affinity"))
    attempt = header.get("attempt", 0)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or not 0 <= attempt <= MAX_CREDIT:
        raise ProtocolError(f"attempt must be an integer 0..{MAX_CREDIT}")
    poisoned = header.get("poisoned", False)
    if not isinstance(poisoned, bool):
        raise ProtocolError("poisoned must be true or false")
    unit = WorkUnit(run_uid=run_uid, kind=kind, index=index, arrays=arrays, metadata=metadata)
    extra = header.get("extra") or {}
    if not isinstance(extra, dict):
        raise ProtocolError("extra must be a JSON object")
    return UnitEnvelope(
        unit=unit, analyses=analyses, affinity=affinity, attempt=attempt, poisoned=poisoned,
        poison_reason=_text(header.get("poison_reason", ""), "poison_reason"), extra=extra,
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
    _checked(check_id, info.get("run_uid"), "OPEN run_uid")
    if info.get("kind") not in UNIT_KINDS:
        raise ProtocolError(f"OPEN kind must be one of {UNIT_KINDS}, got {brief(info.get('kind'))}")
    _affinity(info.get("affinity"))
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
         "family": "table"|"array"|"container", "error": "", "summary": {...nested...},
         "verdict": ""|"ok"|"warn"|"bad", "verdict_reasons": ["..."],
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
    run_uid = _checked(check_id, info.get("run_uid"), "STORED run_uid")
    analysis = _checked(check_name, info.get("analysis"), "STORED analysis")
    unit = _checked(check_id, info.get("unit"), "STORED unit")
    path = _field(info, "path", str)
    parts = path.split("/")
    if len(parts) != 4 or parts[1] != run_uid or parts[2] != analysis.replace(".", "_") or parts[3] != unit:
        raise ProtocolError(f"STORED path {brief(path)} is not <results>/<run_uid>/<analysis>/<unit>")
    _checked(check_id, parts[0], "STORED results root")
    if info.get("status") not in STORED_STATUSES:
        raise ProtocolError(f"STORED status must be one of {STORED_STATUSES}, got {brief(info.get('status'))}")
    if info.get("family") not in ("table", "array", "container"):
        raise ProtocolError(f"STORED family must be 'table', 'array' or 'container', got {brief(info.get('family'))}")
    table = info.get("table")
    if table is not None and not (isinstance(table, dict) and isinstance(table.get("columns"), list)
                                  and isinstance(table.get("lengths", {}), dict)):
        raise ProtocolError("STORED table must be null or an object with a 'columns' list and 'lengths' object")
    if not isinstance(info.get("summary", {}), dict):
        raise ProtocolError("STORED summary must be a JSON object")
    if info.get("verdict", "") not in ("", "ok", "warn", "bad"):
        raise ProtocolError(f"STORED verdict must be '', 'ok', 'warn' or 'bad', got {brief(info.get('verdict'))}")
    reasons = info.get("verdict_reasons", [])
    if not (isinstance(reasons, list) and all(isinstance(r, str) for r in reasons)):
        raise ProtocolError("STORED verdict_reasons must be a list of strings")
    return info


def decode_ready(body: list) -> dict[str, Any]:
    """Checked ``READY`` body: ``credit`` an integer 0..MAX_CREDIT (default 1); ``worker``, ``host`` (short
    strings) and ``pid`` (an integer) when given. An empty body is ``{"credit": 1}``."""
    info = peek_header(body) if body and _frame_bytes(body[0]) else {}
    credit = info.get("credit", 1)
    if not isinstance(credit, int) or isinstance(credit, bool) or not 0 <= credit <= MAX_CREDIT:
        raise ProtocolError(f"READY credit must be an integer 0..{MAX_CREDIT}, got {brief(credit)}")
    out: dict[str, Any] = {"credit": credit, "lane": _lane(info.get("lane", ""), "READY")}
    for key in ("worker", "host"):
        if key in info:
            out[key] = _text(info[key], f"READY {key}", limit=256)
    if "pid" in info:
        if not isinstance(info["pid"], int) or isinstance(info["pid"], bool):
            raise ProtocolError("READY pid must be an integer")
        out["pid"] = info["pid"]
    return out


def decode_done(body: list) -> dict[str, Any]:
    """Checked ``DONE`` body: ``unit_id`` (a string of at most 512 characters) and ``status`` (a string)."""
    info = peek_header(body)
    unit_id = _text(info.get("unit_id"), "DONE unit_id", limit=512)
    if not unit_id:
        raise ProtocolError("DONE unit_id missing")
    return {"unit_id": unit_id, "status": _text(info.get("status", ""), "DONE status", limit=64),
            "lane": _lane(info.get("lane", ""), "DONE")}


def decode_failed(body: list) -> dict[str, Any]:
    """Checked ``FAILED`` body: ``unit_id`` (at most 512 characters) and ``reason`` (at most MAX_TEXT)."""
    info = peek_header(body)
    unit_id = _text(info.get("unit_id"), "FAILED unit_id", limit=512)
    if not unit_id:
        raise ProtocolError("FAILED unit_id missing")
    return {"unit_id": unit_id, "reason": _text(info.get("reason", ""), "FAILED reason"),
            "lane": _lane(info.get("lane", ""), "FAILED")}


LANES = ("", "fast", "slow")


def _lane(value: Any, what: str) -> str:
    if value not in LANES:
        raise ProtocolError(f"{what} lane must be one of {LANES}, got {brief(value)}")
    return value


def _checked(check: Any, value: Any, what: str) -> Any:
    """``check(value, what)`` with its ValueError turned into a ProtocolError."""
    try:
        return check(value, what)
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None


def _affinity(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 256):
        raise ProtocolError(f"affinity must be null or a string of 1-256 characters, got {brief(value)}")
    return value


def _text(value: Any, what: str, *, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(f"{what} must be a string of at most {limit} characters, got {brief(value)}")
    return value


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
