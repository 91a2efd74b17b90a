"""Find runs in the Tiled catalog by run metadata and by analysis results, and read one run back.

Two kinds of nodes are searched (see :mod:`xafs_stream.storage.results` for the layout):

- raw runs at the catalog root (``client[uid].metadata["start"]`` / ``["stop"]``): sample, element, edge,
  mode, kind, plan, scan id and the start time live here;
- result run nodes ``/xafs_results/<uid>``: ``summary`` (the numbers of the run's representative unit,
  nested by dotted name), ``status`` (``{analysis_key: "ok" | "error" | "skipped"}``) and ``quality``
  (``{analysis_key: "ok" | "warn" | "bad"}``, the verdict of each analysis on the run).

Every condition becomes a Tiled query evaluated by the server (``Key("start.sample") == "Cu"``,
``Key("summary.spm.shell1.N") > 10``); the two sides are joined on the run uid. A run with no results yet is
found by run conditions alone and dropped as soon as a result condition is given.

Condition language (``where=[...]`` here, ``--where`` on the command line; conditions are ANDed)::

    FIELD OP VALUE        OP: == (or =), !=, <, <=, >, >=
    sample==Cu            strings: quotes optional ('Cu foil'); == with * or ? is a case-insensitive wildcard
    spm.shell1.N>10       numbers: ints and floats
    bayes.K==2
    status.spm==ok        analysis status: ok, error or skipped
    quality.spm==bad      analysis verdict: ok, warn or bad (an error is bad)
    has_exafs==true       booleans: true/false (yes/no, 1/0)
    time>=2026-11-20      start time: ISO date/datetime (local time unless an offset is given), a unix time,
                          or an age such as 3d, 12h, 30m, 2w ("3 days ago")

Only the fields in :data:`FIELDS` are accepted (an unknown field or a value of the wrong type raises
:class:`QueryError` listing the valid ones), so a typo never silently matches nothing. ``!=`` and the
comparisons match only runs that have the field.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engines.errors import InputError
from ..storage.layout import (
    flatten_summary,
    is_raw_run_key,
    lookup_summary,
    node_key,
    quality_query_key,
    read_arrays,
    results_root,
    run_results,
    status_query_key,
    summary_query_key,
)

OPERATORS = ("==", "!=", "<", "<=", ">", ">=")
STATUS_VALUES = ("ok", "error", "skipped")
# Analyses whose status can be queried (``status.<name>``); dots or underscores both accepted.
KNOWN_ANALYSES = ("xafs.normalize", "xafs.quality", "xafs.normalize_tile", "spm", "bayes.xanes", "imaging.features",
                  "imaging.map")
QUALITY_VALUES = ("ok", "warn", "bad")


class QueryError(InputError):
    """A condition that cannot be run: unknown field, bad operator or a value of the wrong type."""


# ----------------------------------------------------------------------------------------------- fields


@dataclass(frozen=True)
class Field:
    """A queryable field.

    Attributes
    ----------
    name : display form, ``<i>``/``<k>``/``<name>`` standing for a shell/peak number, a K or a map name
    type : "str", "int", "float", "bool" or "time"
    scope : "run" (raw run metadata), "result" (``summary.*`` of the result run node) or "status"
    description : one line, with the unit
    tiled_key : metadata key for run fields (``start.sample``); result keys are ``summary.<field>``
    choices : allowed values of a string field (empty: any)
    """

    name: str
    type: str
    scope: str
    description: str
    tiled_key: str = ""
    choices: tuple[str, ...] = ()

    @property
    def regex(self) -> re.Pattern:
        pattern = re.escape(self.name)
        pattern = pattern.replace(re.escape("<i>"), r"\d+").replace(re.escape("<k>"), r"\d+")
        pattern = pattern.replace(re.escape("<name>"), r"[^\s.]+").replace(re.escape("<analysis>"), r"[\w.]+")
        return re.compile(pattern + r"\Z")


def _run(name: str, type_: str, description: str, key: str | None = None, choices: tuple[str, ...] = ()) -> Field:
    return Field(name, type_, "run", description, key or f"start.{name}", choices)


def _res(name: str, type_: str, description: str) -> Field:
    return Field(name, type_, "result", description)


_ERR = {"": "", "_err": " (standard error)", "_err_boot": " (bootstrap error)"}

FIELDS: tuple[Field, ...] = (
    # raw run metadata (start / stop documents)
    _run("sample", "str", "sample name"),
    _run("element", "str", "absorbing element symbol (Cu)"),
    _run("edge", "str", "absorption edge (K, L3)"),
    _run("mode", "str", "detection mode", choices=("transmission", "fluorescence")),
    _run("xafs_kind", "str", "kind of run", choices=("spectrum", "map")),
    _run("plan_name", "str", "bluesky plan (xafs_scan, mu_xafs_map)"),
    _run("scan_id", "int", "bluesky scan id"),
    _run("repeats", "int", "number of repeats of an XAFS scan"),
    _run("time", "time", "run start time (ISO date/datetime, unix time or an age: 3d, 12h)"),
    _run("exit_status", "str", "how the run ended", key="stop.exit_status", choices=("success", "abort", "fail")),
    # xafs.quality (rescan verdict of the representative unit)
    _res("quality.bad", "bool", "rescan recommended (beam dump, saturation, glitches beyond repair)"),
    _res("quality.n_bad_repeats", "int", "repeats flagged for a rescan"),
    # xafs.normalize (merged spectrum)
    _res("e0", "float", "E0 found in the merged spectrum, eV"),
    _res("e0_tabulated", "float", "tabulated edge energy, eV"),
    _res("edge_step", "float", "edge step (absorption units)"),
    _res("edge_snr", "float", "edge step over its standard error"),
    _res("n_glitches", "int", "glitches replaced (deglitch) or left in mu(E)"),
    _res("energy_shift", "float", "energy calibration shift from the reference channel, eV"),
    _res("has_exafs", "bool", "the scan reaches far enough above E0 for chi(k)"),
    _res("kmax_data", "float", "end of the data in k, 1/Å"),
    _res("kmin", "float", "Fourier transform k start, 1/Å"),
    _res("kmax", "float", "Fourier transform k end, 1/Å"),
    _res("kmax_suggest", "float", "k where chi(k) meets the noise, 1/Å"),
    _res("kweight", "float", "k weight of the Fourier transform"),
    _res("rbkg", "float", "AUTOBK Rbkg, Å"),
    _res("noise_chi", "float", "noise of chi(k)"),
    _res("noise_chir", "float", "noise of chi(R)"),
    _res("n_glitches", "int", "glitches removed"),
    _res("n_repeats", "int", "repeats in the merge unit"),
    _res("n_repeats_merged", "int", "repeats used in the merge"),
    # spm
    _res("spm.n_shells", "int", "number of shells found by sparse modeling"),
    _res("spm.path_set", "str", "FEFF path set used"),
    _res("spm.shell<i>.pair", "str", "absorber-scatterer pair of shell i (Cu-Cu)"),
    *(_res(f"spm.shell<i>.N{s}", "float", f"coordination number of shell i (N·S0²/s02){d}") for s, d in _ERR.items()),
    *(_res(f"spm.shell<i>.R{s}", "float", f"distance of shell i, Å{d}") for s, d in _ERR.items()),
    *(_res(f"spm.shell<i>.sigma2{s}", "float", f"Debye-Waller factor of shell i, Å²{d}") for s, d in _ERR.items()),
    _res("spm.de0", "float", "E0 shift of the shell fit, eV"),
    _res("spm.de0_err", "float", "E0 shift standard error, eV"),
    _res("spm.r_factor", "float", "R-factor of the shell fit"),
    _res("spm.redchi", "float", "reduced chi-square of the shell fit"),
    _res("spm.alpha", "float", "LASSO regularisation chosen by cross-validation"),
    _res("spm.s02", "float", "S0² used"),
    # bayes.xanes
    _res("bayes.K", "int", "number of XANES peaks chosen by the Bayesian free energy"),
    _res("bayes.model", "str", "Bayesian model"),
    _res("bayes.converged", "bool", "R-hat below 1.2"),
    _res("bayes.rhat_max", "float", "largest split R-hat"),
    _res("bayes.exchange_min", "float", "smallest replica exchange rate"),
    _res("bayes.noise", "float", "noise level (normalised units)"),
    _res("bayes.noise_mode", "str", "how the noise was set"),
    _res("bayes.F.K<k>", "float", "Bayesian free energy of the K-peak model"),
    _res("bayes.F_se.K<k>", "float", "standard error of F(K)"),
    *(_res(f"bayes.{p}{s}", "float", f"edge parameter {p}{d}")
      for p in ("step", "e_edge", "edge_width", "c0") for s, d in list(_ERR.items())[:2]),
    *(_res(f"bayes.peak<i>.{p}{s}", "float", f"peak i {p}{d}")
      for p in ("center", "height", "width") for s, d in list(_ERR.items())[:2]),
    _res("bayes.peak<i>.area", "float", "peak i area"),
    _res("bayes.preedge_centroid", "float", "pre-edge centroid, eV"),
    _res("bayes.preedge_centroid_err", "float", "pre-edge centroid error, eV"),
    _res("bayes.preedge_area", "float", "pre-edge integrated intensity"),
    _res("bayes.preedge_K", "int", "number of pre-edge peaks"),
    # imaging.map (whole map)
    _res("imaging.n_tiles_done", "int", "map tiles analysed"),
    _res("imaging.coverage", "float", "fraction of the map measured"),
    _res("imaging.n_updates", "int", "incremental map updates"),
    _res("imaging.n_global_solves", "int", "global MRF solves"),
    _res("imaging.update", "str", "kind of the last map update"),
    _res("imaging.stats_n_tiles", "int", "tiles in the map statistics"),
    _res("imaging.beta", "float", "Potts coupling learned"),
    _res("imaging.label_fraction.<name>", "float", "area fraction of a phase"),
    _res("imaging.domain.n", "float", "number of domains"),
    _res("imaging.domain.mean_area_px", "float", "mean domain area, pixels"),
    _res("imaging.domain.median_area_px", "float", "median domain area, pixels"),
    _res("imaging.domain.area_weighted_px", "float", "area-weighted domain area, pixels"),
    _res("imaging.domain.diameter_px", "float", "equivalent domain diameter, pixels"),
    _res("imaging.noise_sd.<name>", "float", "learned noise of a feature map"),
    _res("imaging.smoothing_px.<name>", "float", "learned smoothing length, pixels"),
    _res("imaging.corr_length.<name>", "float", "correlation length of a feature map, pixels"),
    _res("imaging.xcorr.<name>", "float", "cross-correlation of two feature maps (a__b)"),
    _res("imaging.gmrf.<name>.s2", "float", "GMRF noise variance"),
    _res("imaging.gmrf.<name>.lam", "float", "GMRF smoothness"),
    Field("status.<analysis>", "str", "status", "analysis status: ok, error, skipped", choices=STATUS_VALUES),
    Field("quality.<analysis>", "str", "quality", "analysis verdict: ok, warn, bad", choices=QUALITY_VALUES),
)


def describe_fields() -> str:
    """The valid fields, one per line, grouped by where they are stored."""
    lines = []
    for scope, title in (("run", "run metadata"), ("result", "results (merged spectrum / whole map)"),
                         ("status", "analysis status"), ("quality", "analysis verdict")):
        lines.append(f"{title}:")
        for f in FIELDS:
            if f.scope == scope:
                extra = f" [{', '.join(f.choices)}]" if f.choices else ""
                lines.append(f"  {f.name:<34} {f.type:<5} {f.description}{extra}")
    lines.append(f"  (<analysis>: {', '.join(KNOWN_ANALYSES)})")
    return "\n".join(lines)


def _field_names() -> str:
    return ", ".join(f.name for f in FIELDS)


def lookup_field(name: str) -> Field:
    """The :class:`Field` matching a concrete name (``spm.shell2.R``); QueryError if none."""
    name = name.strip()
    known = {node_key(a) for a in KNOWN_ANALYSES}
    if name.startswith("status."):
        analysis = name[len("status."):]
        if node_key(analysis) not in known:
            raise QueryError(f"unknown analysis {analysis!r} in {name!r}; known: {', '.join(KNOWN_ANALYSES)}")
        return next(f for f in FIELDS if f.scope == "status")
    if name.startswith("quality.") and node_key(name[len("quality."):]) in known:  # not xafs.quality's own
        return next(f for f in FIELDS if f.scope == "quality")
    for f in FIELDS:
        if f.scope not in ("status", "quality") and f.regex.match(name):
            return f
    raise QueryError(f"unknown field {name!r}; valid fields: {_field_names()} "
                     f"(see `xafs-stream query --fields`)")


# ----------------------------------------------------------------------------------------------- times

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_AGE_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_time(value: Any, *, end_of_day: bool = False, now: float | None = None) -> float:
    """A point in time as unix seconds.

    Accepts a number (unix time), a :class:`datetime.datetime` / :class:`datetime.date`, an ISO 8601 string
    (``2026-11-25``, ``2026-11-25T14:30``, ``2026-11-25 14:30:00+01:00``; local time when no offset is given)
    or an age ``<n>s|m|h|d|w`` meaning that long before ``now``. A date without a time means its midnight,
    or with ``end_of_day`` the end of that day (so ``until=2026-11-24`` includes all of the 24th).
    """
    if isinstance(value, bool):
        raise QueryError(f"time: expected a date, a unix time or an age such as 3d, got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        if not math.isfinite(float(value)):
            raise QueryError(f"time: not a finite unix time: {value!r}")
        return float(value)
    if isinstance(value, _dt.datetime):
        return (value if value.tzinfo else value.astimezone()).timestamp()
    if isinstance(value, _dt.date):
        day = _dt.datetime(value.year, value.month, value.day)
        if end_of_day:
            day = day + _dt.timedelta(days=1) - _dt.timedelta(microseconds=1)
        return day.astimezone().timestamp()
    if not isinstance(value, str) or not value.strip():
        raise QueryError(f"time: expected a date, a unix time or an age such as 3d, got {value!r}")
    text = value.strip()
    m = _AGE.match(text)
    if m:
        now = _dt.datetime.now().timestamp() if now is None else now
        return now - float(m.group(1)) * _AGE_S[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return parse_time(_dt.date.fromisoformat(text), end_of_day=end_of_day)
        return parse_time(_dt.datetime.fromisoformat(text))
    except ValueError:
        raise QueryError(f"time: cannot read {value!r}; use an ISO date (2026-11-25), a datetime "
                         f"(2026-11-25T14:30), a unix time or an age (3d, 12h, 30m)") from None


def iso_time(t: float | None) -> str:
    """Unix seconds → local ISO 8601 with offset (``2026-11-25T14:30:05+01:00``); "" for None."""
    if t is None or not math.isfinite(float(t)):
        return ""
    return _dt.datetime.fromtimestamp(float(t)).astimezone().isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------ conditions

_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(==|!=|<=|>=|=|<|>)\s*(.*?)\s*$")
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


@dataclass(frozen=True)
class Condition:
    """One parsed condition: ``key op value`` with ``value`` already of the field's type."""

    field: Field
    key: str  # the concrete name (spm.shell1.N, status.spm)
    op: str
    value: Any
    text: str = ""

    @property
    def wildcard(self) -> bool:
        return self.field.type == "str" and isinstance(self.value, str) and any(c in self.value for c in "*?")

    def tiled_key(self) -> str:
        if self.field.scope == "run":
            return self.field.tiled_key
        if self.field.scope == "status":
            return status_query_key(self.key[len("status."):])
        if self.field.scope == "quality":
            return quality_query_key(self.key[len("quality."):])
        return summary_query_key(self.key)

    def tiled_query(self) -> Any:
        """The equivalent Tiled query object."""
        from tiled.queries import Comparison, Eq, Like, NotEq

        key = self.tiled_key()
        if self.wildcard:
            pattern = self.value.replace("*", "%").replace("?", "_")
            return Like(key, pattern)
        if self.op == "==":
            return Eq(key, self.value)
        if self.op == "!=":
            return NotEq(key, self.value)
        return Comparison({"<": "lt", "<=": "le", ">": "gt", ">=": "ge"}[self.op], key, self.value)


def _typed_value(f: Field, key: str, op: str, raw: Any, text: str) -> Any:
    where = f"condition {text!r}" if text else f"{key}"
    if isinstance(raw, str):
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            raw = raw[1:-1]
    if raw == "" or raw is None:
        raise QueryError(f"{where}: no value after {op!r}")
    if f.type == "time":
        return parse_time(raw)
    if f.type in ("int", "float"):
        if isinstance(raw, bool):
            raise QueryError(f"{where}: {key} is a number ({f.description}), got {raw!r}")
        try:
            number = float(raw)
        except (TypeError, ValueError):
            raise QueryError(f"{where}: {key} is a number ({f.description}), got {raw!r}") from None
        if not math.isfinite(number):
            raise QueryError(f"{where}: {key} needs a finite number, got {raw!r}")
        if f.type == "int":
            if number != int(number):
                raise QueryError(f"{where}: {key} is an integer ({f.description}), got {raw!r}")
            return int(number)
        return number
    if f.type == "bool":
        if isinstance(raw, bool):
            value = raw
        elif str(raw).lower() in _TRUE:
            value = True
        elif str(raw).lower() in _FALSE:
            value = False
        else:
            raise QueryError(f"{where}: {key} is true or false ({f.description}), got {raw!r}")
        if op not in ("==", "!="):
            raise QueryError(f"{where}: {key} is true/false; use == or !=, not {op!r}")
        return value
    # strings
    value = str(raw)
    if op not in ("==", "!="):
        raise QueryError(f"{where}: {key} is text ({f.description}); use == or !=, not {op!r}")
    if any(c in value for c in "*?") and op != "==":
        raise QueryError(f"{where}: wildcards (* ?) work only with ==")
    if key == "element":
        value = value[:1].upper() + value[1:].lower()
    elif key == "edge":
        value = value.upper()
    if f.choices and not any(c in value for c in "*?") and value not in f.choices:
        raise QueryError(f"{where}: {key} must be one of {', '.join(f.choices)}, got {value!r}")
    return value


def make_condition(key: str, op: str, value: Any, *, text: str = "") -> Condition:
    """A checked :class:`Condition` from its parts (``make_condition("spm.shell1.N", ">", 10)``)."""
    if op == "=":
        op = "=="
    if op not in OPERATORS:
        raise QueryError(f"condition {text or key!r}: operator must be one of {' '.join(OPERATORS)}, got {op!r}")
    f = lookup_field(key)
    return Condition(f, key.strip(), op, _typed_value(f, key.strip(), op, value, text), text or f"{key}{op}{value}")


def parse_condition(text: str) -> Condition:
    """Parse ``FIELD OP VALUE`` (``spm.shell1.N>10``, ``sample=='Cu foil'``) into a :class:`Condition`."""
    if not isinstance(text, str):
        raise QueryError(f"condition must be a string such as 'spm.shell1.N>10', got {text!r}")
    m = _CONDITION.match(text)
    if not m:
        raise QueryError(f"cannot read condition {text!r}: expected FIELD OP VALUE with OP one of "
                         f"{' '.join(OPERATORS)}, e.g. 'spm.shell1.N>10' or 'status.spm==ok'")
    key, op, value = m.groups()
    return make_condition(key, op, value, text=text)


def parse_where(where: str | Condition | Iterable[str | Condition] | None) -> list[Condition]:
    """Conditions from strings (or Conditions); a single string is one condition."""
    if where is None:
        return []
    if isinstance(where, (str, Condition)):
        where = [where]
    return [w if isinstance(w, Condition) else parse_condition(w) for w in where]


# ------------------------------------------------------------------------------------------ run summary


@dataclass
class RunSummary:
    """One run found by :func:`find_runs`: its metadata and the results summary of its representative unit.

    Attributes
    ----------
    uid : run uid
    time : start time, unix seconds (None if unknown)
    scan_id, sample, element, edge, mode, xafs_kind, plan_name : from the start document
    exit_status : from the stop document ("success", "abort", "fail"), None while running
    summary : nested result numbers (``summary["spm"]["shell1"]["N"]``), empty when not analysed
    status : ``{analysis_key: "ok" | "error" | "skipped"}``
    quality : ``{analysis_key: "ok" | "warn" | "bad"}``, the verdicts
    """

    uid: str
    time: float | None = None
    scan_id: int | None = None
    sample: str = ""
    element: str = ""
    edge: str = ""
    mode: str = ""
    xafs_kind: str = ""
    plan_name: str = ""
    exit_status: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    quality: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_metadata(cls, uid: str, raw_md: Mapping[str, Any], results_md: Mapping[str, Any] | None) -> RunSummary:
        start = dict(raw_md.get("start") or {})
        stop = raw_md.get("stop") or {}
        results_md = results_md or {}
        return cls(
            uid=uid, time=start.get("time"), scan_id=start.get("scan_id"), sample=str(start.get("sample", "")),
            element=str(start.get("element", "")), edge=str(start.get("edge", "")), mode=str(start.get("mode", "")),
            xafs_kind=str(start.get("xafs_kind", "")), plan_name=str(start.get("plan_name", "")),
            exit_status=stop.get("exit_status"), summary=dict(results_md.get("summary") or {}),
            status=dict(results_md.get("status") or {}), quality=dict(results_md.get("quality") or {}),
        )

    @property
    def start_iso(self) -> str:
        return iso_time(self.time)

    def get(self, name: str, default: Any = None) -> Any:
        """A run field (``sample``), a result (``spm.shell1.N``) or a status (``status.spm``) by name."""
        if name in ("uid", "time", "scan_id", "sample", "element", "edge", "mode", "xafs_kind", "plan_name",
                    "exit_status"):
            return getattr(self, name)
        if name.startswith("status."):
            return self.status.get(node_key(name[len("status."):]), default)
        if name.startswith("quality.") and node_key(name[len("quality."):]) in self.quality:
            return self.quality.get(node_key(name[len("quality."):]), default)
        return lookup_summary(self.summary, name, default)

    def flat_summary(self) -> dict[str, Any]:
        return flatten_summary(self.summary)

    def to_dict(self) -> dict[str, Any]:
        return {"uid": self.uid, "start_time": self.start_iso, "time": self.time, "scan_id": self.scan_id,
                "sample": self.sample, "element": self.element, "edge": self.edge, "mode": self.mode,
                "xafs_kind": self.xafs_kind, "plan_name": self.plan_name, "exit_status": self.exit_status,
                "status": self.status, "quality": self.quality, "summary": self.summary}


# ------------------------------------------------------------------------------------------------ search


def _is_run(md: Mapping[str, Any]) -> bool:
    return isinstance(md.get("start"), Mapping) and "uid" in md["start"]


def find_runs(
    client: Any,
    *,
    sample: str | None = None,
    element: str | None = None,
    edge: str | None = None,
    mode: str | None = None,
    kind: str | None = None,
    since: Any = None,
    until: Any = None,
    where: str | Condition | Iterable[str | Condition] | None = None,
    limit: int | None = None,
) -> list[RunSummary]:
    """Runs matching every given condition, newest first.

    Parameters
    ----------
    client : Tiled client of the catalog root (raw runs and ``xafs_results``)
    sample, element, edge, mode, kind : exact values (``*``/``?`` wildcards allowed in strings); ``kind`` is
        "spectrum" or "map"
    since, until : start-time bounds (see :func:`parse_time`; a date alone in ``until`` includes that day)
    where : conditions in the language of the module docstring, e.g. ``["spm.shell1.N>10", "status.spm==ok"]``
    limit : keep only the newest ``limit`` runs

    Returns
    -------
    list of :class:`RunSummary`, newest first. Raises :class:`QueryError` for a bad condition (before any
    request is made).
    """
    conditions = parse_where(where)
    for key, value in (("sample", sample), ("element", element), ("edge", edge), ("mode", mode),
                       ("xafs_kind", kind)):
        if value is not None:
            conditions.append(make_condition(key, "==", value, text=f"{key}={value}"))
    if since is not None:
        conditions.append(make_condition("time", ">=", parse_time(since), text=f"since={since}"))
    if until is not None:
        conditions.append(make_condition("time", "<=", parse_time(until, end_of_day=True), text=f"until={until}"))
    if limit is not None and (not isinstance(limit, (int, np.integer)) or isinstance(limit, bool) or limit < 1):
        raise QueryError(f"limit must be a positive integer, got {limit!r}")
    run_conditions = [c for c in conditions if c.field.scope == "run"]
    result_conditions = [c for c in conditions if c.field.scope != "run"]

    results: dict[str, dict] = {}
    node = results_root(client)
    if node is not None:
        for c in result_conditions:
            node = node.search(c.tiled_query())
        results = {uid: dict(child.metadata) for uid, child in node.items()}
    elif result_conditions:
        return []

    raw_views = [client]
    if result_conditions:
        from tiled.queries import In

        if not results:
            return []
        uids = sorted(results)
        raw_views = [client.search(In("start.uid", uids[i:i + 500])) for i in range(0, len(uids), 500)]
    runs = []
    for view in raw_views:
        for c in run_conditions:
            view = view.search(c.tiled_query())
        for uid, child in view.items():
            md = child.metadata
            if not _is_run(md) or (result_conditions and uid not in results):
                continue
            runs.append(RunSummary.from_metadata(uid, md, results.get(uid)))
    runs.sort(key=lambda r: (r.time is not None, r.time or 0.0), reverse=True)
    return runs[:limit] if limit else runs


def resolve_run(client: Any, ref: str) -> str:
    """The uid of a run given its uid, a unique uid prefix (at least 4 characters) or ``-N`` (N-th newest run)."""
    ref = str(ref).strip()
    if re.fullmatch(r"-\d+", ref):
        n = int(ref[1:])
        runs = find_runs(client)
        if n < 1 or n > len(runs):
            raise InputError(f"run {ref}: the catalog has {len(runs)} runs")
        return runs[n - 1].uid
    if ref and is_raw_run_key(ref) and ref in client:
        return ref
    if len(ref) < 4:
        raise InputError(f"run {ref!r}: give a uid, a uid prefix of at least 4 characters or -1 for the latest run")
    matches = [k for k in client if k.startswith(ref) and is_raw_run_key(k)]
    if not matches:
        raise InputError(f"no run {ref!r} in the catalog")
    if len(matches) > 1:
        raise InputError(f"run prefix {ref!r} is ambiguous: {', '.join(sorted(matches)[:5])}"
                         + (" ..." if len(matches) > 5 else ""))
    return matches[0]


# ---------------------------------------------------------------------------------------- one run back


@dataclass
class StoredResult:
    """One stored analysis result of one unit (metadata at once, arrays read on first use).

    Attributes
    ----------
    analysis_key : node key of the analysis ("xafs_normalize")
    unit_key : "repeat_0", "merge", "tile_3" or "map"
    metadata : analysis, version, status, error, params, diagnostics, timings, summary (nested)
    """

    analysis_key: str
    unit_key: str
    metadata: dict[str, Any]
    loader: Callable[[], dict[str, np.ndarray]] | None = None
    _arrays: dict[str, np.ndarray] | None = None

    @property
    def analysis(self) -> str:
        return str(self.metadata.get("analysis", self.analysis_key))

    @property
    def status(self) -> str:
        return str(self.metadata.get("status", ""))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def error(self) -> str:
        return str(self.metadata.get("error") or "")

    @property
    def summary(self) -> dict[str, Any]:
        return dict(self.metadata.get("summary") or {})

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.metadata.get("params") or {})

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = self.loader() if (self.loader is not None and self.ok) else {}
        return self._arrays


@dataclass
class RunData:
    """Everything stored about one run: raw metadata and events, and its analysis results.

    Attributes
    ----------
    uid : run uid
    start, stop : the start and stop documents (stop empty while running)
    events : primary-stream event table (pandas DataFrame) sorted by ``seq_num``
    results : analysis_key -> unit_key -> :class:`StoredResult`
    summary, status, quality : the result run node's summary (nested), status and verdicts
    configuration : device configuration readings of the primary stream, ``{"dcm_d_spacing": 3.1355, ...}``
    images : map frames (n_events, ny, nx) in ``seq_num`` order, or None (read on first use)
    """

    uid: str
    start: dict[str, Any]
    stop: dict[str, Any]
    events: Any
    results: dict[str, dict[str, StoredResult]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    quality: dict[str, str] = field(default_factory=dict)
    configuration: dict[str, Any] = field(default_factory=dict)
    image_loader: Callable[[], np.ndarray | None] | None = None
    _images: np.ndarray | None = None

    @property
    def kind(self) -> str:
        return str(self.start.get("xafs_kind", ""))

    @property
    def images(self) -> np.ndarray | None:
        if self._images is None and self.image_loader is not None:
            self._images = self.image_loader()
            self.image_loader = None
        return self._images

    def result(self, analysis: str, unit: str | None = None) -> StoredResult | None:
        """The result of ``analysis`` (name or node key) for ``unit`` (default: "merge" or "map")."""
        units = self.results.get(node_key(analysis), {})
        if unit is None:
            for key in ("merge", "map"):
                if key in units:
                    return units[key]
            return None
        return units.get(unit)

    def repeats(self) -> list[int]:
        """Repeat numbers present in the events (spectra), sorted."""
        if self.events is None or len(self.events) == 0:
            return []
        if "repeat" not in self.events.columns:
            return [0]
        return sorted(int(r) for r in np.unique(self.events["repeat"].to_numpy()))

    def repeat_events(self, repeat: int) -> Any:
        """Events of one repeat (all events when the table has no ``repeat`` column)."""
        if "repeat" not in self.events.columns:
            return self.events
        return self.events[self.events["repeat"].to_numpy() == repeat].reset_index(drop=True)


def fetch_run(client: Any, uid: str, *, results: bool = True) -> RunData:
    """Read one run back from Tiled (``uid`` as given to :func:`resolve_run`); arrays are read lazily."""
    uid = resolve_run(client, uid)
    node = client[uid]
    md = dict(node.metadata)
    if not _is_run(md):
        raise InputError(f"{uid!r} is not a bluesky run (no start document)")
    start, stop = dict(md["start"]), dict(md.get("stop") or {})
    events = None
    image_loader = None
    configuration: dict[str, Any] = {}
    if "primary" in node:
        stream = node["primary"]
        for device in (stream.metadata.get("configuration") or {}).values():
            configuration.update((device or {}).get("data") or {})
        if "internal" in stream.base:  # absent until the first event is written
            events = stream.base["internal"].read()
            order = np.argsort(events["seq_num"].to_numpy(), kind="stable")
            events = events.iloc[order].reset_index(drop=True)
        image_key = start.get("image_key")
        if events is not None and image_key and image_key in stream.base:
            frames = stream.base[image_key]

            def image_loader(frames=frames, order=order):
                # frames were written in seq_num order (LiveTiledWriter); keep the table's order anyway
                data = np.asarray(frames.read())
                return data[order] if len(data) == len(order) else data
    if events is None:
        import pandas as pd

        events = pd.DataFrame()
    run = RunData(uid=uid, start=start, stop=stop, events=events, configuration=configuration,
                  image_loader=image_loader)
    rnode = run_results(client, uid) if results else None
    if rnode is not None:
        rmd = dict(rnode.metadata)
        run.summary, run.status = dict(rmd.get("summary") or {}), dict(rmd.get("status") or {})
        run.quality = dict(rmd.get("quality") or {})
        for akey, anode in rnode.items():
            units = {}
            for ukey, unode in anode.items():
                units[ukey] = StoredResult(akey, ukey, dict(unode.metadata), loader=lambda n=unode: read_arrays(n))
            run.results[akey] = units
    return run
