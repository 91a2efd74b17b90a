"""``xafs-stream dashboard``: the live web dashboard on its own, over an existing Tiled (and broker).

``xafs-stream serve`` starts the same dashboard with the service; this command is for a second screen, a
remote viewer, or browsing a data directory's past runs (without ``--tiled-uri`` the embedded Tiled of
``--data-dir`` is opened, as the other commands do).
"""

from __future__ import annotations

import argparse
import signal
import threading

from .common import add_service_options, config_from_args
from .errors import CliError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="serve the live web dashboard over a Tiled server (and broker)")
    add_service_options(p, broker=False)
    p.add_argument("--frontend", help="broker frontend to ask for worker health and queue "
                                      "(default: [broker] frontend), e.g. tcp://127.0.0.1:5560")
    p.add_argument("--no-broker", action="store_true", help="do not ask a broker for worker health and queue")
    p.add_argument("--host", help="listen address (default: [dashboard] host; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, help="listen port (default: [dashboard] port; 0: any free port)")
    p.add_argument("--interval", type=float, metavar="S",
                   help="how often Tiled and the broker are polled, s (default: [dashboard] interval_s)")
    p.add_argument("--run-for", type=float, default=None, metavar="S",
                   help="stop after S seconds instead of waiting for Ctrl-C (scripted checks)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..service import open_tiled
    from ..web import start_dashboard

    overrides = {"host": args.host, "port": args.port, "interval_s": args.interval}
    cfg = config_from_args(args, dashboard=overrides)
    if not 0 <= cfg.dashboard.port <= 65535:
        raise CliError(f"--port must be 0..65535, got {cfg.dashboard.port}")
    if cfg.dashboard.interval_s <= 0:
        raise CliError(f"--interval must be > 0 s, got {cfg.dashboard.interval_s}")
    try:
        tiled = open_tiled(cfg, role="dashboard")
    except (ConnectionError, TimeoutError) as exc:
        raise CliError(str(exc)) from None
    frontend = None if args.no_broker else cfg.broker.frontend
    try:
        try:
            handle = start_dashboard(tiled.client, frontend, cfg.dashboard, cfg.security,
                                     events=None if args.no_broker else (cfg.broker.events or None))
        except (RuntimeError, TimeoutError) as exc:
            raise CliError(str(exc)) from None
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            signal.signal(signal.SIGINT, lambda *_: stop.set())
        print(f"dashboard: {handle.link}")
        print(f"Tiled:     {tiled.browse_url}")
        print(f"broker:    {frontend or '(none)'}")
        print("Ctrl-C to stop." if args.run_for is None else f"stopping after {args.run_for:g} s.", flush=True)
        try:
            stop.wait(args.run_for)
        finally:
            handle.close()
    finally:
        tiled.close()
    return 0
