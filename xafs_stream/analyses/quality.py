"""``xafs.quality``: flag spectra that should be rescanned (beam dump, saturation, glitches beyond repair).

Unit kind "spectrum". A repeat unit is judged from its ``mu`` and counter channels (``i0``, ``it``, ``iref``,
``ifluor``, ``clock``); a merge unit judges each of its repeats. Summary (queryable):
``quality.bad`` (bool), ``quality.reasons`` (text), ``quality.beam_dump_points``, ``quality.saturated_points``,
``quality.glitch_points``; merge units also ``quality.n_bad_repeats`` and ``quality.bad_repeats``
(comma-separated repeat numbers). Verdict: ``bad`` when a rescan is recommended (every repeat of a merge),
``warn`` when some repeats of a merge are (they are left out of it). Config: the keyword arguments of
:func:`xafs_stream.engines.quality.assess_spectrum` (``beam_dump_fraction``, ``saturation_points``,
``max_glitches``, ``glitch_fraction``, ``glitch_sigmas``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..engines.errors import InputError
from ..engines.quality import QualityReport, assess_spectrum
from ..core import WorkUnit
from .registry import AnalysisResult, register

CHANNELS = ("i0", "it", "iref", "ifluor", "clock")
SETTINGS = ("beam_dump_fraction", "saturation_points", "max_glitches", "glitch_fraction", "glitch_sigmas")


def _settings(config: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(config) - set(SETTINGS)
    if unknown:
        raise InputError(f"config: unknown quality setting(s) {sorted(unknown)}; known: {list(SETTINGS)}")
    return dict(config)


def repeat_reports(unit: WorkUnit, config: Mapping[str, Any] | None = None) -> list[QualityReport]:
    """One report per repeat of a merge unit (rows of the ``*_repeats`` arrays, NaN padding removed)."""
    settings = _settings(config or {})
    energy = np.atleast_2d(np.asarray(unit.arrays["energy_repeats"], float))
    mu = np.atleast_2d(np.asarray(unit.arrays["mu_repeats"], float))
    reports = []
    for i in range(energy.shape[0]):
        keep = np.isfinite(energy[i])
        channels = {c: np.atleast_2d(np.asarray(unit.arrays[f"{c}_repeats"], float))[i][keep]
                    for c in CHANNELS if f"{c}_repeats" in unit.arrays}
        reports.append(assess_spectrum(energy[i][keep], mu[i][keep], channels=channels, **settings))
    return reports


def _summary(report: QualityReport) -> dict[str, Any]:
    return {"quality.bad": report.bad, "quality.reasons": "; ".join(report.reasons),
            "quality.beam_dump_points": report.beam_dump_points, "quality.saturated_points": report.saturated_points,
            "quality.glitch_points": report.glitch_points}


@register("xafs.quality", "spectrum", "1.0", settings=SETTINGS)
def quality(unit: WorkUnit, upstream: Mapping[str, AnalysisResult], config: Mapping[str, Any]) -> AnalysisResult:
    """Rescan verdict for a repeat, or for each repeat of a merge unit."""
    if "mu_repeats" in unit.arrays:
        reports = repeat_reports(unit, config)
        bad = [i for i, r in enumerate(reports) if r.bad]
        summary = {"quality.bad": len(bad) == len(reports), "quality.n_bad_repeats": len(bad),
                   "quality.bad_repeats": ",".join(map(str, bad)),
                   "quality.reasons": "; ".join(f"repeat {i}: {', '.join(reports[i].reasons)}" for i in bad),
                   "quality.beam_dump_points": sum(r.beam_dump_points for r in reports),
                   "quality.saturated_points": sum(r.saturated_points for r in reports),
                   "quality.glitch_points": sum(r.glitch_points for r in reports)}
        # every repeat bad: the merge is of bad data; some bad: they are left out of the merge, worth a look
        level = "bad" if len(bad) == len(reports) else "warn" if bad else "ok"
        return AnalysisResult(summary=summary,
                              diagnostics={"repeats": [{"bad": r.bad, "reasons": r.reasons,
                                                        "glitch_energies": r.glitch_energies} for r in reports]},
                              verdict=level, verdict_reasons=[f"repeat {i}: {', '.join(reports[i].reasons)}"
                                                              for i in bad])
    if "energy" not in unit.arrays or "mu" not in unit.arrays:
        raise InputError(f"unit {unit.unit_id}: needs energy and mu arrays")
    channels = {c: unit.arrays[c] for c in CHANNELS if c in unit.arrays}
    report = assess_spectrum(unit.arrays["energy"], unit.arrays["mu"], channels=channels, **_settings(config))
    return AnalysisResult(summary=_summary(report), diagnostics={"glitch_energies": report.glitch_energies},
                          verdict="bad" if report.bad else "ok", verdict_reasons=list(report.reasons))
