"""``xafs-stream serve``: Tiled (embedded unless --tiled-uri), the broker and N workers, until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import threading

from .common import add_service_options, config_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the service: Tiled (embedded by default), broker and workers")
    add_service_options(p)
    p.add_argument("--workers", type=int, help="number of local worker processes (default: [service] workers)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..service import Service

    cfg = config_from_args(args, service={"workers": args.workers})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with Service(cfg) as service:
        print(f"Tiled:    {service.tiled.browse_url}")
        print(f"broker:   producers -> {service.frontend}   workers -> {service.backend}")
        print(f"workers:  {len(service.worker_procs)} local (logs in {service.log_dir})")
        if service.dashboard is not None:
            print(f"dashboard: {service.dashboard.url}")
        print("Ctrl-C to stop.", flush=True)
        while not stop.wait(1.0):
            for i, proc in enumerate(service.worker_procs):
                if proc.poll() is not None:  # keep the pool at its size
                    service.worker_procs[i] = service.start_worker(f"w{i}r")
    return 0
