"""Worker analyses for XAFS preprocessing: ``xafs.normalize`` (one spectrum) and ``xafs.normalize_tile``
(a μ-XANES map tile). Thin adapters around :mod:`xafs_stream.engines.xafs`.

``xafs.normalize`` (unit kind "spectrum")
    Input arrays: ``energy`` (n,) eV, ``mu`` (n,). Optional energy reference: ``mu_ref`` (n,), the reference
    foil's absorption, or both ``it`` and ``iref`` intensities, from which μ_ref = ln(it / iref) is formed
    (transmission through the sample, then the foil; for fluorescence scans the caller passes ``mu_ref``).
    With a reference and ``unit.metadata["e0"]`` (the tabulated edge energy of the element, eV), the energy
    is first shifted so that the foil's E0 falls on the tabulated value (config ``calibrate``, default true).
    Then the one processing chain runs, :func:`xafs_stream.engines.xafs.process`; its settings are the
    fields of :class:`~xafs_stream.engines.xafs.ProcessSettings` (pre-edge ``pre1`` ... ``min_edge_snr``,
    ``deglitch``, AUTOBK ``rbkg`` ... ``clamp_hi``, FT ``kmin`` ... ``rmax_out``), the same options as
    ``xafs-stream analyze``. With ``deglitch``, ``mu`` stays the measured μ and a boolean ``glitch`` array
    marks the replaced points.
    Output arrays: ``energy`` (calibrated), ``mu`` (as measured), ``norm``, ``flat``, ``pre_edge_line``,
    ``post_edge_curve``, ``bkg`` (and ``glitch``), dims ("energy",); ``k``, ``chi``, dims ("k",); ``r``,
    ``chir_mag``, ``chir_re``, ``chir_im``, dims ("r",). Summary: ``e0`` (eV), ``edge_step``, ``edge_snr``,
    ``noise_chi`` (ε of χ(k)), ``noise_chir``, ``kmin``, ``kmax``, ``kweight``, ``rbkg``, ``kmax_data``,
    ``kmax_suggest`` (Å⁻¹), ``has_exafs``, ``energy_shift`` (eV), ``e0_tabulated``, ``n_glitches`` (replaced,
    or left in μ without deglitching). Verdict: :func:`xafs_stream.engines.xafs.verdict.judge_processing`, with
    :func:`~xafs_stream.engines.xafs.verdict.judge_calibration` on the reference-foil calibration.
    A XANES-only scan (too short above E0 for χ(k)) still gets its normalisation, with ``has_exafs`` false
    and no k / R arrays.

``xafs.normalize_tile`` (unit kind "tile")
    Input arrays: ``energy`` (n_e,) eV, ``stack`` (n_e, ny, nx). Config: pre-edge settings as above plus
    ``min_edge_snr`` (3; 0 disables the edge significance test, e.g. for L edges). Output arrays: ``norm``
    (n_e, ny, nx), ``e0``, ``edge_step``, ``ok`` (ny, nx); pixels that could not be normalised (all zero,
    NaN, no edge) have ``ok`` false and NaN values. Summary: ``e0_median``, ``edge_step_median``,
    ``n_pixels``, ``n_bad_pixels``; diagnostics count the reasons.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core import WorkUnit
from ..engines.errors import InputError
from ..engines.imaging.verdict import judge_pixels
from ..engines.xafs import calibrate_energy, merge_spectra, pre_edge
from ..engines.xafs.process import ProcessedSpectrum, ProcessSettings, process
from ..engines.verdict import Verdict
from ..engines.xafs.verdict import glitches_left, judge_calibration, judge_processing
from .registry import AnalysisResult, register

_PRE_KEYS = ("pre1", "pre2", "norm1", "norm2", "nnorm")
_KNOWN = (*ProcessSettings.names(), "calibrate")
_TILE_KEYS = (*_PRE_KEYS, "npre", "smooth_ev", "min_edge_snr")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _array(unit: WorkUnit, name: str) -> np.ndarray:
    if name not in unit.arrays:
        raise InputError(f"unit {unit.unit_id}: no {name!r} array (has {sorted(unit.arrays)})")
    return np.asarray(unit.arrays[name], dtype=float)


def _reference_mu(unit: WorkUnit) -> np.ndarray | None:
    if "mu_ref" in unit.arrays:
        return np.asarray(unit.arrays["mu_ref"], dtype=float)
    if "it" in unit.arrays and "iref" in unit.arrays:
        it = np.asarray(unit.arrays["it"], dtype=float)
        iref = np.asarray(unit.arrays["iref"], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(it / iref)
    return None


def _repeat_rows(unit: WorkUnit, name: str) -> list[np.ndarray] | None:
    """Rows of a ``<name>_repeats`` (n_repeats, n_max) block with the NaN padding at the end removed."""
    block = unit.arrays.get(f"{name}_repeats")
    if block is None:
        return None
    block = np.atleast_2d(np.asarray(block, dtype=float))
    energy = np.atleast_2d(np.asarray(unit.arrays["energy_repeats"], dtype=float))
    return [row[np.isfinite(e)] for row, e in zip(block, energy)]


def _merge_repeats(unit: WorkUnit, config: Mapping[str, Any], calibration: Verdict) -> tuple[np.ndarray, np.ndarray,
                                                                                          dict, dict, dict]:
    """Merge a merge unit's repeats (each calibrated on the reference channel when there is one; the
    calibrations' verdicts are added to ``calibration``).

    Returns energy, merged μ, extra arrays (``mu_noise``), summary and diagnostics entries.
    """
    energies = _repeat_rows(unit, "energy")
    mus = _repeat_rows(unit, "mu")
    if energies is None or mus is None:
        raise InputError(f"unit {unit.unit_id}: a merge unit needs energy_repeats and mu_repeats")
    its, irefs = _repeat_rows(unit, "it"), _repeat_rows(unit, "iref")
    e0_tab = unit.metadata.get("e0")
    shifts = np.zeros(len(mus))
    diagnostics: dict[str, Any] = {}
    if its is not None and irefs is not None and e0_tab is not None and config.get("calibrate", True):
        for i, (e, it, iref) in enumerate(zip(energies, its, irefs)):
            with np.errstate(divide="ignore", invalid="ignore"):
                mu_ref = np.log(it / iref)
            try:
                cal = calibrate_energy(e, mu_ref, e0_reference=float(e0_tab))
            except InputError as exc:
                diagnostics[f"calibration_error_repeat_{i}"] = str(exc)
            else:
                shifts[i] = float(cal.shift)
                calibration.merge(judge_calibration(e, mu_ref, cal), prefix=f"repeat {i}: ")
    # repeats the quality check flags (beam dump, saturation, glitches beyond repair) stay out of the merge,
    # unless every repeat is bad (then all are merged and the quality analysis records the flags)
    from .quality import repeat_reports

    reports = repeat_reports(unit)
    weights = np.array([0.0 if r.bad else 1.0 for r in reports])
    if not weights.any():
        weights[:] = 1.0
    bad = {i: "flagged: " + ", ".join(r.reasons) for i, r in enumerate(reports) if r.bad and weights[i] == 0}
    merged = merge_spectra(energies, mus, shifts=shifts, weights=weights)
    diagnostics["repeats_excluded"] = {str(k): v for k, v in merged.excluded.items()} | {str(k): v for k, v in bad.items()}
    summary = {"n_repeats": len(mus), "n_repeats_merged": len(merged.used), "n_repeats_bad": len(bad),
               "energy_shift": float(np.mean(shifts[merged.used])) if merged.used else 0.0}
    return np.asarray(merged.energy), np.asarray(merged.mu), {"mu_noise": np.asarray(merged.noise)}, summary, diagnostics


def settings_from_config(config: Mapping[str, Any]) -> ProcessSettings:
    """The chain's :class:`ProcessSettings` from ``[analysis."xafs.normalize"]`` (``calibrate`` is this
    analysis's own: the reference-foil calibration happens before the chain)."""
    return ProcessSettings.from_mapping(config, ignore=("calibrate",))


def result_from_processing(proc: ProcessedSpectrum, *, summary: dict | None = None,
                           diagnostics: dict | None = None, extra_arrays: dict | None = None,
                           energy_guessed: str = "", calibration: Verdict | None = None) -> AnalysisResult:
    """The stored result of one processed spectrum (arrays, summary, verdict): the same for the live
    service, ``reprocess`` and ``xafs-stream analyze``. ``calibration``: the verdict on the reference-foil
    calibration done before processing, merged into the result's."""
    summary = dict(summary or {})
    diagnostics = dict(diagnostics or {})
    s = proc.settings
    summary.update(e0=float(proc.e0), edge_step=float(proc.edge_step), rbkg=float(s.rbkg),
                   kweight=float(s.kweight), kmax_data=float(proc.k_data), has_exafs=proc.has_exafs)
    summary["edge_snr"] = proc.edge_snr  # inf (no error estimate) is stored as None below
    arrays = {"energy": proc.energy, "mu": proc.mu, "norm": proc.norm, "flat": proc.flat,
              "pre_edge_line": proc.pre_edge_line, "post_edge_curve": proc.post_edge_curve}
    if proc.glitch is not None:
        arrays["glitch"] = proc.glitch
        summary["n_glitches"] = int(np.count_nonzero(proc.glitch))
        diagnostics["glitch_energies"] = proc.energy[np.asarray(proc.glitch, bool)].tolist()
        n_left = None
    else:
        n_left = summary["n_glitches"] = glitches_left(proc)
    arrays.update(extra_arrays or {})
    dims = {name: ("energy",) for name in arrays}
    if proc.has_exafs:
        arrays.update(bkg=proc.bkg, k=proc.k, chi=proc.chi, r=proc.r, chir_mag=proc.chir_mag,
                      chir_re=proc.chir_re, chir_im=proc.chir_im)
        dims.update(bkg=("energy",), k=("k",), chi=("k",), r=("r",), chir_mag=("r",), chir_re=("r",),
                    chir_im=("r",))
        summary.update(noise_chi=float(proc.noise_chi), noise_chir=float(proc.noise_chir),
                       kmin=float(proc.kmin), kmax=float(proc.kmax), kmax_suggest=float(proc.kmax_suggest))
        diagnostics["autobk"] = proc.bkg_result.diagnostics[0]
    else:
        diagnostics["exafs"] = proc.exafs_note
    verdict = judge_processing(proc, n_glitches=n_left, energy_guessed=energy_guessed)
    if calibration is not None:
        verdict.merge(calibration)
    summary = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in summary.items()}
    return AnalysisResult(arrays=arrays, dims=dims, summary=summary, params=_jsonable(proc.params_used),
                          diagnostics=_jsonable(diagnostics), verdict=verdict.level,
                          verdict_reasons=verdict.reasons)


@register("xafs.normalize", "spectrum", "1.1", settings=_KNOWN)
def normalize_spectrum(
    unit: WorkUnit, upstream: Mapping[str, AnalysisResult], config: Mapping[str, Any]
) -> AnalysisResult:
    """E0, pre/post-edge normalisation, AUTOBK χ(k), χ(R) and χ noise of one spectrum
    (:func:`xafs_stream.engines.xafs.process`, the one chain, with ``settings_from_config(config)``).

    A merge unit (``energy_repeats``, ``mu_repeats`` and optionally ``it_repeats``/``iref_repeats``, one row
    per repeat, NaN-padded) is first merged: each repeat calibrated on its reference channel, repeats with
    NaN/inf left out (listed in the diagnostics), the mean taken with a per-point noise (``mu_noise``).
    """
    settings = settings_from_config(config)
    summary: dict[str, Any] = {}
    diagnostics: dict[str, Any] = {}
    extra_arrays: dict[str, np.ndarray] = {}
    calibration = Verdict()
    shift = 0.0
    if "mu" not in unit.arrays and "mu_repeats" in unit.arrays:
        energy, mu, extra_arrays, merge_summary, merge_diag = _merge_repeats(unit, config, calibration)
        summary.update(merge_summary)
        diagnostics.update(merge_diag)
        shift = merge_summary["energy_shift"]
        mu_ref = None
    else:
        energy = _array(unit, "energy")
        mu = _array(unit, "mu")
        mu_ref = _reference_mu(unit)
    e0_tab = unit.metadata.get("e0")
    if mu_ref is not None and e0_tab is not None and config.get("calibrate", True):
        try:
            cal = calibrate_energy(energy, mu_ref, e0_reference=float(e0_tab))
        except InputError as exc:
            diagnostics["calibration_error"] = f"reference channel not used: {exc}"
        else:
            calibration.merge(judge_calibration(energy, mu_ref, cal))
            shift = float(cal.shift)
            energy = np.asarray(cal.energy)
            diagnostics["reference_e0_measured"] = float(cal.e0_measured)
    summary["energy_shift"] = shift
    if e0_tab is not None:
        summary["e0_tabulated"] = float(e0_tab)
    proc = process(energy, mu, settings)
    return result_from_processing(proc, summary=summary, diagnostics=diagnostics, extra_arrays=extra_arrays,
                                  energy_guessed=str(unit.metadata.get("energy_guessed", "")),
                                  calibration=calibration)


@register("xafs.normalize_tile", "tile", "1.0", settings=_TILE_KEYS)
def normalize_tile(
    unit: WorkUnit, upstream: Mapping[str, AnalysisResult], config: Mapping[str, Any]
) -> AnalysisResult:
    """Per-pixel E0, edge step and normalised μ of a μ-XANES tile (n_e, ny, nx)."""
    unknown = set(config) - set(_TILE_KEYS)
    if unknown:
        raise InputError(f"config: unknown tile normalisation setting(s) {sorted(unknown)}; known: {_TILE_KEYS}")
    energy = _array(unit, "energy")
    stack = _array(unit, "stack")
    if stack.ndim != 3 or stack.shape[0] != energy.size:
        raise InputError(f"stack: expected shape ({energy.size}, ny, nx) to match energy, got {stack.shape}")
    n_e, ny, nx = stack.shape
    spectra = stack.reshape(n_e, ny * nx).T
    kwargs = {k: config[k] for k in _TILE_KEYS if k in config}
    pre = pre_edge(energy, spectra, **kwargs)
    ok = pre.ok.reshape(ny, nx)
    e0 = np.asarray(pre.e0).reshape(ny, nx)
    step = np.asarray(pre.edge_step).reshape(ny, nx)
    norm = np.ascontiguousarray(pre.norm.T.reshape(n_e, ny, nx))
    n_bad = int((~ok).sum())
    # group the per-pixel messages by their wording with the numbers blanked out
    reasons = Counter(re.sub(r"-?\d[\d.eE+-]*", "#", msg) for msg in pre.errors.values())
    summary = {
        "n_pixels": int(ok.size),
        "n_bad_pixels": n_bad,
        "e0_median": float(np.nanmedian(e0)) if n_bad < ok.size else float("nan"),
        "edge_step_median": float(np.nanmedian(step)) if n_bad < ok.size else float("nan"),
    }
    for key in ("tile_row", "tile_col", "y0", "x0"):
        if key in unit.metadata:
            summary[key] = unit.metadata[key]
    params = {k: v for k, v in pre.params_used.items() if not isinstance(v, np.ndarray)}
    diagnostics = {
        "bad_pixel_reasons": dict(reasons.most_common(10)),
        "examples": {int(i): m for i, m in list(pre.errors.items())[:5]},
    }
    verdict = judge_pixels(int(ok.size), n_bad)
    return AnalysisResult(
        verdict=verdict.level,
        verdict_reasons=verdict.reasons,
        arrays={"energy": energy, "norm": norm, "e0": e0, "edge_step": step, "ok": ok},
        dims={
            "energy": ("energy",),
            "norm": ("energy", "y", "x"),
            "e0": ("y", "x"),
            "edge_step": ("y", "x"),
            "ok": ("y", "x"),
        },
        summary=summary,
        params=_jsonable(params),
        diagnostics=_jsonable(diagnostics),
    )
