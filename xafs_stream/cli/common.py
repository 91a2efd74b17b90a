"""Options shared by the service subcommands (config file, Tiled, data directory, broker addresses)."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import Config, ConfigError, load_config
from .errors import CliError


def add_service_options(parser: argparse.ArgumentParser, *, broker: bool = True) -> None:
    parser.add_argument("--config", help="TOML configuration file (see xafs_stream.config)")
    parser.add_argument("--data-dir", help="data directory (embedded Tiled, broker store, outbox, logs)")
    parser.add_argument("--tiled-uri", help="use this Tiled server instead of the embedded one")
    parser.add_argument("--api-key", help="Tiled API key (or XAFS_STREAM_TILED_API_KEY)")
    if broker:
        parser.add_argument("--frontend", help="broker address for producers, e.g. tcp://127.0.0.1:5560")
        parser.add_argument("--backend", help="broker address for workers, e.g. tcp://127.0.0.1:5561")
        parser.add_argument("--events", help="broker address for result events, e.g. tcp://127.0.0.1:5562 "
                                             "('' for none)")


def config_from_args(args: argparse.Namespace, **extra: dict[str, Any]) -> Config:
    overrides: dict[str, dict[str, Any]] = {
        "service": {"data_dir": getattr(args, "data_dir", None)},
        "tiled": {"uri": getattr(args, "tiled_uri", None), "api_key": getattr(args, "api_key", None)},
        "broker": {"frontend": getattr(args, "frontend", None), "backend": getattr(args, "backend", None),
                   "events": getattr(args, "events", None)},
    }
    for section, values in extra.items():
        overrides.setdefault(section, {}).update(values)
    try:
        return load_config(getattr(args, "config", None), overrides=overrides)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def analysis_registry(cfg: Config) -> Any:
    """The analyses a worker runs (built-ins and ``[worker] plugins``), with every ``[analysis."<name>"]``
    setting and ``[worker] analyses`` name checked against them: CliError naming the first bad one."""
    from ..analyses.registry import load_registry

    try:
        registry = load_registry(cfg.worker.plugins)
        registry.check_config(cfg.analysis, cfg.worker.analyses)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    return registry


def strict_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text (RFC 8259): numpy values converted, NaN and inf written as null, never bare NaN."""
    import json

    from ..core import to_json_safe

    return json.dumps(to_json_safe(obj), indent=indent, allow_nan=False)
