"""``xafs-stream reprocess RUN_UID [RUN_UID ...]``: re-derive runs' units from Tiled and fill missing results
(here, through the broker's workers with ``--via-broker``, or on a Dask cluster with ``--scheduler``)."""

from __future__ import annotations

import argparse

from .common import add_service_options, analysis_registry, config_from_args
from .errors import CliError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reprocess", help="fill runs' missing results from their raw data in Tiled")
    p.add_argument("run_uids", metavar="RUN_UID", nargs="+", help="run uids (a unique prefix is enough)")
    p.add_argument("--analysis", help="only this analysis (and what it requires)")
    p.add_argument("--force", action="store_true", help="redo results that exist")
    p.add_argument("--via-broker", action="store_true",
                   help="submit the units to the broker (workers process them) instead of processing here")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="analyse the units on a Dask cluster: 'local' (a LocalCluster of --workers processes) or "
                        "tcp://host:8786; results are stored from here, as without it")
    p.add_argument("--workers", type=int, default=2, help="worker processes of the local Dask cluster (default 2)")
    p.add_argument("--memory-limit", metavar="SIZE", help="memory limit per local Dask worker, e.g. 2GB")
    add_service_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..service import open_tiled
    from ..storage.results import ResultStore
    from ..worker import MapOwner, UnitHandler
    from ..worker.reprocess import ReprocessError, reprocess_run

    cfg = config_from_args(args)
    registry = analysis_registry(cfg)
    if args.via_broker and args.scheduler:
        raise CliError("--via-broker and --scheduler exclude each other: the broker's workers or a Dask cluster")
    if args.memory_limit is not None and args.scheduler is None:
        raise CliError("--memory-limit applies to a Dask run: give --scheduler local or tcp://host:port")
    tiled = open_tiled(cfg, role="reprocess")
    try:
        client = tiled.client
        uids = [_resolve(client, uid) for uid in args.run_uids]
        if args.via_broker:
            _via_broker(cfg, client, uids, registry, args)
            return 0
        store = ResultStore(client)
        owner = MapOwner(store, cfg.analysis)  # no worker queue (tile_waiting): every tile writes its map
        handler = UnitHandler(store, registry, cfg.analysis, name="reprocess", post_process=owner)
        try:
            if args.scheduler:
                from ..batch.cluster import dask_client
                from ..batch.reprocess import reprocess_on_cluster

                with dask_client(args.scheduler, n_workers=args.workers, memory_limit=args.memory_limit) as dask:
                    reports = reprocess_on_cluster(dask, client, uids, registry, handler,
                                                   plugins=tuple(cfg.worker.plugins), analysis=args.analysis,
                                                   force=args.force)
            else:
                reports = [reprocess_run(client, uid, registry, analysis=args.analysis, force=args.force,
                                         handler=handler) for uid in uids]
        except ReprocessError as exc:
            raise CliError(str(exc)) from None
        for report in reports:
            print(f"run {report.run_uid}: {report.units} units, {report.already_done} complete, "
                  f"{len(report.submitted)} processed ({report.records} results written)")
    finally:
        tiled.close()
    return 0


def _resolve(client, uid: str) -> str:
    """The run uid ``uid`` names: itself, or the one run whose uid starts with it (users copy short uids)."""
    if uid in client:
        return uid
    matches = [k for k in client.keys() if k.startswith(uid)]
    if len(matches) != 1:
        raise CliError(f"no unique run matches {uid!r} ({len(matches)} found)")
    return matches[0]


def _via_broker(cfg, client, uids: list[str], registry, args: argparse.Namespace) -> None:
    from ..transport.publisher import UnitPublisher
    from ..worker.reprocess import ReprocessError, reprocess_run

    publisher = UnitPublisher(cfg.broker.frontend, cfg.data_dir / "outbox-reprocess", keys=cfg.security.keys or None)
    try:
        for uid in uids:
            try:
                report = reprocess_run(client, uid, registry, analysis=args.analysis, force=args.force,
                                       publisher=publisher)
            except ReprocessError as exc:
                raise CliError(str(exc)) from None
            print(f"run {uid}: {report.units} units, {report.already_done} complete, "
                  f"{len(report.submitted)} submitted")
    finally:
        publisher.close(30)
