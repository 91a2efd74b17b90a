"""``xafs-stream demo``: a simulated beamtime through the whole service on the embedded default."""

from __future__ import annotations

import argparse
import signal
import threading

from .common import add_service_options, config_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run a simulated beamtime (XAFS scans + a μ-XAFS map) with live analysis")
    add_service_options(p)
    p.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    p.add_argument("--quick", action="store_true", help="fewer, shorter scans (about a minute)")
    p.add_argument("--keep-serving", action="store_true", help="keep Tiled and the workers up until Ctrl-C")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    cfg = config_from_args(args, service={"workers": args.workers, "reconcile_recent": 0})
    if not args.frontend:  # the demo owns its broker: any free port, so it never clashes with a service
        cfg.broker.frontend = "tcp://127.0.0.1:0"
    if not args.backend:
        cfg.broker.backend = "tcp://127.0.0.1:0"
    if args.events is None:
        cfg.broker.events = "tcp://127.0.0.1:0"

    def keep(service):
        if not args.keep_serving:
            return
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print(f"serving until Ctrl-C: {service.tiled.browse_url}", flush=True)
        stop.wait()

    report = run_demo(cfg, quick=args.quick, keep=keep)
    failed = [r for r in report.runs if r.get("exit_status") != "success"]
    return 0 if report.all_processed and not failed else 1
