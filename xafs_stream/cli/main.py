"""Entry point of the ``xafs-stream`` console script.

Each subcommand lives in ``xafs_stream/cli/<name>.py`` and exposes ``add_parser(subparsers)`` which adds
its parser and sets ``func=<callable(args) -> int>``. Heavy imports stay inside the callables so that
``xafs-stream --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..config import ConfigError
from ..engines.errors import InputError
from ..service_info import ServiceRunning
from .errors import CliError

SUBCOMMANDS = (
    "demo", "serve", "worker", "broker", "reprocess",
    "analyze", "spm", "einstein", "bayes", "map",
    "query", "export", "report", "dashboard", "watch", "status", "keys", "queue_profile",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xafs-stream", description="Streaming XAFS / μ-XAFS analysis with bluesky, ZeroMQ and Tiled."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"xafs_stream.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"xafs_stream.cli.{name}":
                continue  # subcommand not part of this build yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (CliError, ConfigError, InputError, FileNotFoundError, ConnectionError, ServiceRunning) as exc:
        print(f"xafs-stream {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
