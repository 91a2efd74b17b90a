"""``xafs-stream serve``: Tiled (embedded unless --tiled-uri), the broker and N workers, until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .common import add_service_options, config_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the service: Tiled (embedded by default), broker and workers")
    add_service_options(p)
    p.add_argument("--workers", type=int, help="number of local worker processes (default: [service] workers)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run until Ctrl-C or SIGTERM (exit 0), restarting components that exit; exit 1 when one cannot be kept
    alive (``[service] max_restarts`` within ``restart_window_s``)."""
    from ..service import Service, ServiceFailed

    cfg = config_from_args(args, service={"workers": args.workers})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        service = Service(cfg).start()  # on failure it has stopped what it started: no child left
    except (RuntimeError, TimeoutError, OSError) as exc:  # a port in use, a bad key, Tiled not starting, ...
        print(f"xafs-stream serve: error: {exc}", file=sys.stderr, flush=True)
        return 1
    try:
        print(f"Tiled:    {service.tiled.browse_url}")
        print(f"broker:   producers -> {service.frontend}   workers -> {service.backend}   "
              f"result events -> {service.events or '(off)'}")
        print(f"clients:  {service.info_file} (addresses and the Tiled key, owner-only; subscribe(RE, config) and "
              f"the read commands use it)")
        print(f"workers:  {len(service.worker_procs)} local (logs in {service.log_dir})")
        if service.dashboard is not None:
            print(f"dashboard: {service.dashboard.link}")
        print("Ctrl-C to stop.", flush=True)
        while not stop.wait(1.0):
            try:
                for line in service.supervise():
                    print(line, flush=True)
            except ServiceFailed as exc:
                print(f"xafs-stream serve: error: {exc}; stopping", file=sys.stderr, flush=True)
                return 1
    finally:
        service.stop()
    return 0
