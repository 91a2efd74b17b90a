"""The missing results of many runs, computed on a Dask cluster.

The client re-derives each run's units from Tiled (:func:`~xafs_stream.worker.reprocess.plan_missing`, the
units the live callbacks built), the cluster's workers run :func:`~xafs_stream.worker.processing.process_unit`
on them (the live worker's processing chain, with the same analysis settings), and the client stores every
record through the same :class:`~xafs_stream.worker.handler.UnitHandler` (its map owner assembles the whole
maps from the tiles' records). So the stored results are the ones the live path and ``reprocess`` store; only
the analyses run elsewhere. The workers need no access to Tiled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from ..analyses.registry import Registry, load_registry
from ..core import ResultRecord, UnitEnvelope
from ..worker.handler import UnitHandler
from ..worker.processing import process_unit
from ..worker.reprocess import ReprocessReport, plan_missing


@lru_cache(maxsize=4)
def _registry(plugins: tuple[str, ...]) -> Registry:
    """The analyses on a Dask worker: the built-ins and the same plugin modules (imported once per process)."""
    return load_registry(plugins)


def analyse_unit(envelope: UnitEnvelope, plugins: tuple[str, ...], settings: Mapping[str, Any],
                 worker: str) -> tuple[UnitEnvelope, list[ResultRecord]]:
    """One task: the unit's analyses in dependency order (:func:`process_unit`); nothing is stored here."""
    return envelope, process_unit(envelope, _registry(tuple(plugins)), settings, worker=worker)


def reprocess_on_cluster(dask_client: Any, tiled_client: Any, run_uids: list[str], registry: Registry,
                         handler: UnitHandler, *, plugins: tuple[str, ...] = (), analysis: str | None = None,
                         force: bool = False, progress: Callable[[str, int, int], Any] | None = None
                         ) -> list[ReprocessReport]:
    """Fill the missing results of ``run_uids``: units planned here, analysed on the cluster, stored here.

    ``registry`` (here) and ``plugins`` (imported on each worker) must describe the same analyses;
    ``handler.settings`` are the analysis settings sent with every unit. ``progress(run_uid, done, total)`` is
    called as units finish. Returns one report per run (``records``: results stored).
    """
    from distributed import as_completed

    reports: dict[str, ReprocessReport] = {}
    futures = []
    for uid in run_uids:
        todo, report = plan_missing(tiled_client, uid, registry, analysis=analysis, force=force)
        reports[uid] = report
        futures += [dask_client.submit(analyse_unit, env, tuple(plugins), handler.settings, f"dask:{handler.name}",
                                       pure=False) for env in todo]
    done: dict[str, int] = dict.fromkeys(reports, 0)
    try:
        for future in as_completed(futures):
            envelope, records = future.result()
            future.release()
            uid = envelope.unit.run_uid
            reports[uid].records += len(handler.handle(envelope, computed=records))
            done[uid] += 1
            if progress is not None:
                progress(uid, done[uid], len(reports[uid].submitted))
    finally:
        handler.flush(force=True)  # a partial map's run summary that its last write did not send
    return [reports[uid] for uid in run_uids]
