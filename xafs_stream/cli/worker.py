"""``xafs-stream worker --connect ADDR``: an analysis worker process (local or on another host)."""

from __future__ import annotations

import argparse
import os
import signal

from .common import add_service_options, analysis_registry, config_from_args
from .errors import CliError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run an analysis worker connected to a broker")
    p.add_argument("--connect", help="broker backend address (default: [broker] backend)")
    add_service_options(p, broker=False)
    p.add_argument("--credit", type=int, help="units held at once (default: [worker] credit)")
    p.add_argument("--name", help="worker name (default: host-pid-random)")
    p.add_argument("--lane", choices=("", "fast", "slow"),
                   help="with the broker's lanes: serve only this one ([worker] lane; default both)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..service import API_KEY_ENV
    from ..storage.results import ResultStore
    from ..storage.tiled_server import connect_tiled
    from ..worker import MapOwner, UnitHandler, Worker

    cfg = config_from_args(args, worker={"credit": args.credit, "lane": args.lane})
    if cfg.worker.lane == "slow" and cfg.worker.slow_nice:
        # slow fits yield the CPU to the fast lane, the broker and Tiled on the same host (issue 20 item 1)
        os.nice(cfg.worker.slow_nice)
    registry = analysis_registry(cfg)
    if not cfg.tiled.uri:
        raise CliError("worker needs --tiled-uri (or [tiled] uri): workers write results to an existing Tiled")
    api_key = cfg.tiled.api_key or os.environ.get(API_KEY_ENV) or None
    try:
        tiled = connect_tiled(cfg.tiled.uri, api_key=api_key)
    except ConnectionError as exc:
        raise CliError(str(exc)) from None
    store = ResultStore(tiled.client)
    owner = MapOwner(store, cfg.analysis)
    handler = UnitHandler(store, registry, cfg.analysis, name=args.name or "",
                          enabled=cfg.worker.analyses or None, post_process=owner)
    worker = Worker(args.connect or cfg.broker.backend, handler, cfg.worker, cfg.broker,
                    keys=cfg.security.keys or None)
    owner.tile_waiting = worker.tile_waiting
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    worker.run()
    return 0
