"""``xafs-stream broker``: run the unit broker in the foreground."""

from __future__ import annotations

import argparse

from .common import add_service_options, config_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("broker", help="run the unit broker (ZeroMQ ROUTER/ROUTER with a durable disk store)")
    add_service_options(p)
    p.add_argument("--store", help="broker store directory (default: DATA_DIR/broker)")
    p.add_argument("--ready-file", help="write the bound addresses here (JSON) once listening")
    p.add_argument("--lanes", action="store_true", default=None,
                   help="queue fast and slow analyses separately ([broker] lanes; workers run with --lane)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..transport.broker import run_broker

    cfg = config_from_args(args, broker={"store_dir": args.store, "lanes": args.lanes})
    cfg.broker.store_dir = str(cfg.broker_store_dir)
    run_broker(cfg.broker, cfg.security, ready_file=args.ready_file)
    return 0
