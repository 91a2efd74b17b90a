"""``xafs-stream reprocess RUN_UID``: re-derive a run's units from Tiled and fill missing results."""

from __future__ import annotations

import argparse

from .common import add_service_options, analysis_registry, config_from_args
from .errors import CliError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reprocess", help="fill a run's missing results from its raw data in Tiled")
    p.add_argument("run_uid", metavar="RUN_UID")
    p.add_argument("--analysis", help="only this analysis (and what it requires)")
    p.add_argument("--force", action="store_true", help="redo results that exist")
    p.add_argument("--via-broker", action="store_true",
                   help="submit the units to the broker (workers process them) instead of processing here")
    add_service_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..service import open_tiled
    from ..storage.results import ResultStore
    from ..worker import MapOwner, UnitHandler
    from ..worker.reprocess import ReprocessError, reprocess_run

    cfg = config_from_args(args)
    registry = analysis_registry(cfg)
    tiled = open_tiled(cfg, role="reprocess")
    try:
        client = tiled.client
        uid = args.run_uid
        if uid not in client:  # allow a unique prefix, as users copy short uids
            matches = [k for k in client.keys() if k.startswith(uid)]
            if len(matches) != 1:
                raise CliError(f"no unique run matches {uid!r} ({len(matches)} found)")
            uid = matches[0]
        publisher = handler = None
        if args.via_broker:
            from ..transport.publisher import UnitPublisher

            publisher = UnitPublisher(cfg.broker.frontend, cfg.data_dir / "outbox-reprocess",
                                      keys=cfg.security.keys or None)
        else:
            store = ResultStore(client)
            owner = MapOwner(store, cfg.analysis, min_write_interval_s=0.0)
            handler = UnitHandler(store, registry, cfg.analysis, name="reprocess",
                                  post_process=owner.post_process)
        try:
            report = reprocess_run(client, uid, registry, analysis=args.analysis, force=args.force,
                                   publisher=publisher, handler=handler)
        except ReprocessError as exc:
            raise CliError(str(exc)) from None
        finally:
            if publisher is not None:
                publisher.close(30)
        print(f"run {uid}: {report.units} units, {report.already_done} complete, "
              f"{len(report.submitted)} {'submitted' if args.via_broker else 'processed'}"
              + (f" ({report.records} results written)" if not args.via_broker else ""))
    finally:
        tiled.close()
    return 0
