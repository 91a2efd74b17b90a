"""Service configuration: one TOML file, overridden by environment variables, overridden by CLI options.

Defaults run everything on this machine (embedded SQLite Tiled under ``data_dir``, broker on loopback).
A larger deployment only changes configuration: ``[tiled] uri`` points at a ``tiled serve`` (e.g.
PostgreSQL-backed) server, ``[broker]`` binds on ``tcp://*:5560``/``5561``/``5562`` and workers on other hosts run
``xafs-stream worker --connect tcp://broker-host:5561``.

Example ``xafs-stream.toml``::

    [service]
    data_dir = "/data/xafs"
    workers = 4

    [tiled]
    uri = "http://tiled.beamline:8000/api/v1"     # empty: embedded server
    api_key = ""                                   # or XAFS_STREAM_TILED_API_KEY

    [broker]
    frontend = "tcp://127.0.0.1:5560"
    backend = "tcp://127.0.0.1:5561"
    events = "tcp://127.0.0.1:5562"               # "result stored" events for live readers

    [analysis."xafs.normalize"]
    kweight = 2

    [analysis.spm.paths]
    Cu = "packaged:cu_fcc_a3.615_feff6l"

Environment: ``XAFS_STREAM_<SECTION>_<KEY>`` (e.g. ``XAFS_STREAM_TILED_URI``, ``XAFS_STREAM_SERVICE_WORKERS``).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "XAFS_STREAM_"


class ConfigError(ValueError):
    """The configuration file or an override is invalid (the message names the setting)."""


@dataclass
class ServiceConfig:
    data_dir: str = "xafs-data"
    workers: int = 2
    reconcile_recent: int = 20  # on start, fill missing results of this many recent runs
    slow_workers: int = 0  # of `workers`, this many serve the slow lane (sparse modeling, Bayes); > 0 turns
    #                        [broker] lanes on, so fast results never wait behind slow fits
    max_restarts: int = 5  # a component (broker, worker, embedded Tiled) that exits more often than this ...
    restart_window_s: float = 60.0  # ... within this time stops serve (exit code 1)


@dataclass
class TiledConfig:
    uri: str = ""  # empty: start the embedded server
    api_key: str = ""
    port: int = 0  # embedded server port (0: any free port)


@dataclass
class BrokerConfig:
    """The broker's settings (``[broker]``; times in s, sizes in bytes). The worker shares the liveness
    settings (``heartbeat_s``, ``worker_timeout_s``) and ``max_message_bytes``."""

    frontend: str = "tcp://127.0.0.1:5560"  # producers (SUBMIT)
    backend: str = "tcp://127.0.0.1:5561"  # workers
    events: str = "tcp://127.0.0.1:5562"  # result events for live readers (PUB); "" for none
    store_dir: str = ""  # durable unit store; "": <data_dir>/broker
    heartbeat_s: float = 1.0
    worker_timeout_s: float = 5.0  # a worker silent this long is expired; its units are redelivered
    unit_timeout_s: float = 300.0  # a unit in flight this long is redelivered to another worker
    max_attempts: int = 3  # deliveries before a unit is sent once more marked poisoned
    max_pending: int = 100_000  # stored units before the broker answers BUSY
    max_pending_bytes: int = 8 << 30
    max_message_bytes: int = 1 << 30
    fsync: bool = False
    memory_cache_bytes: int = 512 << 20  # unit payloads also kept in memory up to this size (disk: crashes)
    # a unit likely done soon is acknowledged on DONE, or stored and acknowledged after this long; 0 stores
    # every unit on arrival
    ack_after_done_s: float = 0.5
    failed_retry_s: float = 10.0  # a unit whose results could not be stored is retried after this long ...
    failed_retry_max_s: float = 300.0  # ... doubling each time up to this
    lanes: bool = False  # fast and slow analyses queued and credited separately (workers serve one lane each)
    shed_after: int = 0  # with lanes: more slow deliveries waiting than this → overload policy (0: never)
    shed_keep: str = "merges"  # under overload, slow analyses still run for: "merges" or "every:N" repeats


@dataclass
class WorkerConfig:
    credit: int = 2
    lane: str = ""  # with [broker] lanes: "fast" or "slow" (the analyses it runs); "": both
    slow_nice: int = 10  # a slow-lane worker lowers its CPU priority by this (os.nice, 0..19): on a busy host
    #                      the fast lane, the broker and Tiled run first; 0 keeps the priority
    analyses: list = field(default_factory=list)  # run only these (and what they need); empty: all
    plugins: list = field(default_factory=list)  # extra modules that register analyses (importable names)


@dataclass
class SecurityConfig:
    """``[security]``: CURVE keys for every ZeroMQ socket (see :mod:`xafs_stream.transport.security`)."""

    keys: str = ""  # directory made by `xafs-stream keys DIR`; "": no authentication (loopback only)
    allow_insecure: bool = False  # bind beyond loopback without keys (or the dashboard without a token)


@dataclass
class DashboardConfig:
    enabled: bool = True
    host: str = "127.0.0.1"  # beyond loopback (0.0.0.0, a LAN address) a token is required
    port: int = 8080  # 0: any free port
    interval_s: float = 1.0  # how often the dashboard polls Tiled and the broker
    token: str = ""  # required from every client when set (or XAFS_STREAM_DASHBOARD_TOKEN)
    allowed_hosts: list = field(default_factory=list)  # more names for the Host header (a reverse proxy's)


@dataclass
class Config:
    """The whole configuration. ``analysis`` maps analysis name → settings (plain dict)."""

    service: ServiceConfig = field(default_factory=ServiceConfig)
    tiled: TiledConfig = field(default_factory=TiledConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    analysis: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return Path(self.service.data_dir).expanduser().resolve()

    @property
    def broker_store_dir(self) -> Path:
        """``[broker] store_dir``, or ``<data_dir>/broker`` when it is empty."""
        if not self.broker.store_dir:
            return self.data_dir / "broker"
        return Path(self.broker.store_dir).expanduser().resolve()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_toml(self) -> str:
        """The configuration as TOML (for handing to worker processes)."""
        lines = []
        for section in _SECTIONS:
            lines.append(f"[{section}]")
            for key, value in asdict(getattr(self, section)).items():
                lines.append(f"{key} = {_toml_value(value)}")
            lines.append("")
        for name, settings in self.analysis.items():
            lines.extend(_toml_table(f'analysis."{name}"', settings))
        return "\n".join(lines) + "\n"


_SECTIONS = {"service": ServiceConfig, "tiled": TiledConfig, "broker": BrokerConfig, "worker": WorkerConfig,
             "dashboard": DashboardConfig, "security": SecurityConfig}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {type(value).__name__} to TOML")


def _toml_table(name: str, table: dict[str, Any]) -> list[str]:
    lines = [f"[{name}]"]
    subtables = []
    for key, value in table.items():
        if isinstance(value, dict):
            subtables.append((key, value))
        else:
            lines.append(f'"{key}" = {_toml_value(value)}')
    lines.append("")
    for key, value in subtables:
        lines.extend(_toml_table(f'{name}."{key}"', value))
    return lines


def _coerce(section: str, key: str, value: Any, typ: type) -> Any:
    where = f"[{section}] {key}"
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if typ is float:
            return float(value)
        if typ is list:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                return list(value)
            raise ValueError
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {typ.__name__}, got {value!r}") from None


def _apply(cfg: Config, section: str, values: dict[str, Any], source: str) -> None:
    cls = _SECTIONS[section]
    target = getattr(cfg, section)
    types = {f.name: f.type for f in fields(cls)}
    for key, value in values.items():
        if key not in types:
            raise ConfigError(f"{source}: unknown setting [{section}] {key}; known: {sorted(types)}")
        typ = {"int": int, "float": float, "bool": bool, "str": str, "list": list}[
            types[key] if isinstance(types[key], str) else types[key].__name__]
        setattr(target, key, _coerce(section, key, value, typ))


def load_config(path: str | Path | None = None, *, overrides: dict[str, dict[str, Any]] | None = None,
                environ: dict[str, str] | None = None) -> Config:
    """Defaults ← TOML file ← environment ← ``overrides`` (``{"tiled": {"uri": ...}}``, None values ignored)."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path}: {exc}") from None
        for section, values in data.items():
            if section == "analysis":
                if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
                    raise ConfigError(f"{path}: [analysis.<name>] sections must be tables")
                cfg.analysis = {k: dict(v) for k, v in values.items()}
            elif section in _SECTIONS:
                if not isinstance(values, dict):
                    raise ConfigError(f"{path}: [{section}] must be a table")
                _apply(cfg, section, values, str(path))
            else:
                raise ConfigError(f"{path}: unknown section [{section}]; known: {sorted(_SECTIONS) + ['analysis']}")
    env = os.environ if environ is None else environ
    for section in _SECTIONS:
        prefix = f"{ENV_PREFIX}{section.upper()}_"
        values = {k[len(prefix):].lower(): v for k, v in env.items() if k.startswith(prefix)}
        if values:
            _apply(cfg, section, values, "environment")
    for section, values in (overrides or {}).items():
        values = {k: v for k, v in values.items() if v is not None}
        if values:
            _apply(cfg, section, values, "command line")
    if cfg.service.workers < 0:
        raise ConfigError(f"[service] workers must be >= 0, got {cfg.service.workers}")
    if not 0 <= cfg.service.slow_workers < max(cfg.service.workers, 1):
        raise ConfigError(f"[service] slow_workers must be 0 .. workers - 1 (one worker at least serves the fast "
                          f"lane), got {cfg.service.slow_workers} of {cfg.service.workers}")
    if not 0 <= cfg.worker.slow_nice <= 19:
        raise ConfigError(f"[worker] slow_nice must be 0 .. 19 (a niceness increment), got {cfg.worker.slow_nice}")
    if cfg.worker.lane not in ("", "fast", "slow"):
        raise ConfigError(f"[worker] lane must be \"\", \"fast\" or \"slow\", got {cfg.worker.lane!r}")
    if not re.fullmatch(r"merges|every:[1-9][0-9]*", cfg.broker.shed_keep):
        raise ConfigError(f"[broker] shed_keep must be \"merges\" or \"every:N\" (N >= 1), got {cfg.broker.shed_keep!r}")
    return cfg
