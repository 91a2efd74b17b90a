"""Re-derive a run's work units from its raw data in Tiled and fill in missing results.

The raw run (start/stop metadata, the ``primary`` event table and image arrays written by
:class:`~xafs_stream.storage.raw_writer.LiveTiledWriter`) is replayed as bluesky documents through the same
unit builders the live session uses, so a reprocessed unit is identical (same id, same arrays) to the one
that would have been sent live, and its results land on the same nodes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..analyses.registry import Registry
from ..callbacks.units import MapTileBuilder, SpectrumUnitBuilder
from ..core import UnitEnvelope
from ..storage.layout import is_raw_run_key, node_key, stored_results, unit_key

log = logging.getLogger(__name__)


class ReprocessError(ValueError):
    """The run cannot be reprocessed (unknown uid, no raw data); the message says why."""


def run_documents(client: Any, run_uid: str) -> Iterator[tuple[str, dict]]:
    """(name, doc) pairs rebuilt from a raw run in Tiled: start, one descriptor, the events, stop."""
    if run_uid not in client:
        raise ReprocessError(f"no run {run_uid!r} in Tiled")
    run = client[run_uid]
    start = dict(run.metadata.get("start", {}))
    if not start:
        raise ReprocessError(f"run {run_uid} has no start document in its metadata")
    yield "start", start
    if "primary" not in run:
        raise ReprocessError(f"run {run_uid} has no primary stream")
    stream = run["primary"]
    table = stream.base["internal"].read()
    image_key = start.get("image_key")
    images = stream[image_key].read() if image_key and image_key in stream.base else None
    if images is not None and len(images) < len(table):
        raise ReprocessError(f"run {run_uid}: {len(images)} images for {len(table)} events")
    desc_uid = f"{run_uid}-replay-primary"
    yield "descriptor", {"uid": desc_uid, "run_start": run_uid, "name": "primary", "data_keys": {}}
    columns = [c for c in table.columns if not c.startswith("ts_") and c not in ("seq_num", "time")]
    order = np.argsort(table["seq_num"].to_numpy())
    for pos in order:
        row = table.iloc[int(pos)]
        data = {c: row[c].item() if hasattr(row[c], "item") else row[c] for c in columns}
        if images is not None:
            data[image_key] = np.asarray(images[int(pos)])
        yield "event", {"descriptor": desc_uid, "seq_num": int(row["seq_num"]), "time": float(row["time"]),
                        "data": data, "timestamps": {}}
    stop = run.metadata.get("stop") or {"run_start": run_uid, "exit_status": "incomplete", "time": 0.0}
    yield "stop", {**stop, "run_start": run_uid}


def derive_units(client: Any, run_uid: str) -> list[UnitEnvelope]:
    """The work units of a raw run, exactly as the live callbacks would have built them."""
    units: list[UnitEnvelope] = []
    builders = [SpectrumUnitBuilder(units.append), MapTileBuilder(units.append)]
    for name, doc in run_documents(client, run_uid):
        for builder in builders:
            builder(name, doc)
    return units


def existing_results(client: Any, run_uid: str) -> set[tuple[str, str]]:
    """(analysis node key, unit key) pairs already stored for a run."""
    return {(a, u) for a, units in stored_results(client, run_uid).items() for u in units}


@dataclass
class ReprocessReport:
    run_uid: str
    units: int = 0
    submitted: list[str] = field(default_factory=list)  # unit ids (with the analyses still missing)
    already_done: int = 0
    records: int = 0


def plan_missing(client: Any, run_uid: str, registry: Registry, *, analysis: str | None = None,
                 force: bool = False) -> tuple[list[UnitEnvelope], ReprocessReport]:
    """Units of the run that lack a result of some applicable analysis (all of them with ``force``)."""
    if analysis is not None and analysis not in registry:
        raise ReprocessError(f"unknown analysis {analysis!r}; known: {sorted(registry.names())}")
    units = derive_units(client, run_uid)
    done = set() if force else existing_results(client, run_uid)
    report = ReprocessReport(run_uid=run_uid, units=len(units))
    todo = []
    for env in units:
        only = {analysis} if analysis else None
        wanted = [a.name for a in registry.for_kind(env.unit.kind, only)]
        if analysis:
            wanted = [analysis]
        key = unit_key(env.unit.kind, env.unit.index)
        missing = [a for a in wanted if (node_key(a), key) not in done]
        if not missing:
            report.already_done += 1
            continue
        env.analyses = missing
        todo.append(env)
        report.submitted.append(env.unit_id)
    return todo, report


def reprocess_run(client: Any, run_uid: str, registry: Registry, *, analysis: str | None = None,
                  force: bool = False, publisher: Any = None, handler: Any = None) -> ReprocessReport:
    """Fill the missing results of one run: submit the units to the broker through ``publisher``, or
    process them here with ``handler`` (a :class:`~xafs_stream.worker.handler.UnitHandler`)."""
    todo, report = plan_missing(client, run_uid, registry, analysis=analysis, force=force)
    try:
        for env in todo:
            if publisher is not None:
                publisher.submit(env)
            else:
                report.records += len(handler.handle(env))
    finally:
        if handler is not None:  # a partial map's run summary that its last write did not send
            handler.flush(force=True)
    return report


def reconcile_recent(client: Any, frontend: str, config: Any, *, limit: int = 20) -> int:
    """Submit the missing units of the ``limit`` most recent finished runs; returns how many."""
    from ..analyses import default_registry
    from ..transport.publisher import UnitPublisher

    registry = default_registry()
    uids = [k for k in list(client.keys())[-(limit + 1):] if is_raw_run_key(k)]
    publisher = UnitPublisher(frontend, config.data_dir / "outbox-reconcile", keys=config.security.keys or None)
    total = 0
    try:
        for uid in uids:
            md = client[uid].metadata
            start = md.get("start", {})
            if start.get("xafs_kind") not in ("spectrum", "map") or "stop" not in md:
                continue
            try:
                total += len(reprocess_run(client, uid, registry, publisher=publisher).submitted)
            except ReprocessError as exc:
                log.warning("reconcile %s: %s", uid, exc)
        publisher.flush(60)
    finally:
        publisher.close()
    return total
