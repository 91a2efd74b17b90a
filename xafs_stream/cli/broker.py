"""``xafs-stream broker``: run the unit broker in the foreground."""

from __future__ import annotations

import argparse

from .common import add_service_options, config_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("broker", help="run the unit broker (ZeroMQ ROUTER/ROUTER with a durable disk store)")
    add_service_options(p)
    p.add_argument("--store", help="broker store directory (default: DATA_DIR/broker)")
    p.add_argument("--ready-file", help="write the bound addresses here (JSON) once listening")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..broker import BrokerConfig, run_broker

    cfg = config_from_args(args)
    b = cfg.broker
    bc = BrokerConfig(
        frontend=b.frontend, backend=b.backend, events=b.events, store_dir=args.store or str(cfg.data_dir / "broker"),
        heartbeat_s=b.heartbeat_s, worker_timeout_s=b.worker_timeout_s, unit_timeout_s=b.unit_timeout_s,
        max_attempts=b.max_attempts, max_pending=b.max_pending, max_pending_bytes=b.max_pending_bytes,
        max_message_bytes=b.max_message_bytes, fsync=b.fsync,
        memory_cache_bytes=b.memory_cache_bytes, ack_after_done_s=b.ack_after_done_s,
    )
    run_broker(bc, ready_file=args.ready_file)
    return 0
