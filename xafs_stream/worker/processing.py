"""Run the registered analyses of one unit, in dependency order, catching every failure as a result.

No transport and no storage here (only the core types and the analysis registry): a unit goes in, one
:class:`~xafs_stream.core.ResultRecord` per analysis comes out. An analysis that raises becomes a record with
status "error" and the reason; analyses that need a failed one become "skipped" records naming it; the
others run normally.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from ..analyses.registry import Registry, SkipAnalysis
from ..core import AnalysisResult, ResultRecord, UnitEnvelope

log = logging.getLogger(__name__)


def process_unit(
    envelope: UnitEnvelope,
    registry: Registry,
    config: Mapping[str, Any] | None = None,
    *,
    worker: str = "",
    on_record: Callable[[ResultRecord], Any] | None = None,
) -> list[ResultRecord]:
    """Run every analysis that applies to the unit (or those named in ``envelope.analyses``).

    ``config`` maps analysis name → its settings dict (the ``[analysis."<name>"]`` tables of the
    service configuration). ``on_record`` is called with each record as soon as its analysis is done
    (the worker stores it there, so a quick normalisation is not held back by a slow fit after it).
    """
    unit = envelope.unit
    config = config or {}
    only = set(envelope.analyses) if envelope.analyses else None
    try:
        analyses = registry.for_kind(unit.kind, only)
    except (KeyError, ValueError) as exc:
        log.error("unit %s: cannot plan analyses: %s", unit.unit_id, exc)
        analyses = []
    base = dict(run_uid=unit.run_uid, unit_id=unit.unit_id, kind=unit.kind, index=unit.index,
                unit_metadata=unit.metadata, attempt=envelope.attempt, worker=worker)
    records: list[ResultRecord] = []

    def emit(record: ResultRecord) -> None:
        records.append(record)
        if on_record is not None:
            on_record(record)

    if envelope.poisoned:
        for a in analyses:
            emit(ResultRecord(**base, analysis=a.name, version=a.version, status="error",
                              error=f"not analysed: {envelope.poison_reason}"))
        return records
    shed = envelope.extra.get("shed")
    if shed:  # the broker's overload policy: recorded as skipped, with why (reprocess fills them later)
        for a in analyses:
            emit(ResultRecord(**base, analysis=a.name, version=a.version, status="skipped", error=str(shed)))
        return records
    done: dict[str, AnalysisResult] = {}
    failed: dict[str, str] = {}
    for analysis in analyses:
        missing = [r for r in analysis.requires if r not in done]
        if missing:
            why = "; ".join(f"{r}: {failed.get(r, 'not run')}" for r in missing)
            failed[analysis.name] = f"needs {', '.join(missing)}"
            emit(ResultRecord(**base, analysis=analysis.name, version=analysis.version,
                                        status="skipped", error=f"requires {why}"))
            continue
        upstream = {r: done[r] for r in analysis.requires}
        t0 = time.perf_counter()
        try:
            result = analysis.func(unit, upstream, dict(config.get(analysis.name, {})))
            if not isinstance(result, AnalysisResult):
                raise TypeError(f"analysis returned {type(result).__name__}, not AnalysisResult")
        except SkipAnalysis as exc:
            failed[analysis.name] = f"skipped ({exc})"
            emit(ResultRecord(**base, analysis=analysis.name, version=analysis.version,
                                        status="skipped", error=str(exc),
                                        timings={"compute_s": time.perf_counter() - t0}))
            continue
        except Exception as exc:  # an analysis bug or bad data: record it, carry on with the others
            reason = f"{type(exc).__name__}: {exc}"
            failed[analysis.name] = reason
            log.warning("unit %s analysis %s failed: %s", unit.unit_id, analysis.name, reason)
            tb = traceback.format_exc(limit=8)
            emit(ResultRecord(**base, analysis=analysis.name, version=analysis.version, status="error",
                                        error=reason, result=AnalysisResult(diagnostics={"traceback": tb}),
                                        timings={"compute_s": time.perf_counter() - t0}))
            continue
        done[analysis.name] = result
        emit(ResultRecord(**base, analysis=analysis.name, version=analysis.version, status="ok",
                                    result=result, timings={"compute_s": time.perf_counter() - t0}))
    return records
