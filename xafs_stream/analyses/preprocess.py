"""Worker analyses for XAFS preprocessing: ``xafs.normalize`` (one spectrum) and ``xafs.normalize_tile``
(a μ-XANES map tile). Thin adapters around :mod:`xafs_stream.engines.xafs`.

``xafs.normalize`` (unit kind "spectrum")
    Input arrays: ``energy`` (n,) eV, ``mu`` (n,). Optional energy reference: ``mu_ref`` (n,), the reference
    foil's absorption, or both ``it`` and ``iref`` intensities, from which μ_ref = ln(it / iref) is formed
    (transmission through the sample, then the foil; for fluorescence scans the caller passes ``mu_ref``).
    With a reference and ``unit.metadata["e0"]`` (the tabulated edge energy of the element, eV), the energy
    is first shifted so that the foil's E0 falls on the tabulated value (config ``calibrate``, default true).
    Config (all optional): pre-edge ``pre1``, ``pre2``, ``norm1``, ``norm2``, ``nnorm``; AUTOBK ``rbkg``
    (1 Å), ``bkg_kweight`` (2), ``nknots``, ``clamp_lo``, ``clamp_hi``; Fourier transform ``kmin`` (3),
    ``kmax`` (end of data - 1 Å⁻¹), ``kweight`` (2), ``dk`` (1), ``window`` ("hanning"); ``calibrate``
    (true); ``deglitch`` (false; when true, single-point glitches are replaced by interpolation before
    processing, ``mu`` stays the measured μ and a boolean ``glitch`` array marks the replaced points).
    Output arrays: ``energy`` (calibrated), ``mu`` (as measured), ``norm``, ``flat``, ``pre_edge_line``,
    ``post_edge_curve``, ``bkg`` (and ``glitch``), dims ("energy",); ``k``, ``chi``, dims ("k",); ``r``,
    ``chir_mag``, ``chir_re``, ``chir_im``, dims ("r",). Summary: ``e0`` (eV), ``edge_step``, ``noise_chi``
    (ε of χ(k)), ``noise_chir``, ``kmin``, ``kmax``, ``kweight``, ``rbkg``, ``kmax_data``, ``kmax_suggest``
    (Å⁻¹), ``has_exafs``, ``energy_shift`` (eV), ``e0_tabulated``, ``n_glitches``.
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

from ..engines.errors import InputError
from ..engines.xafs import autobk, calibrate_energy, deglitch, estimate_chi_noise, merge_spectra, pre_edge, xftf
from ..engines.xafs.kspace import ETOK
from ..engines.xafs.process import default_ft_kmax
from ..core import WorkUnit
from .registry import AnalysisResult, register

_PRE_KEYS = ("pre1", "pre2", "norm1", "norm2", "nnorm")
_KNOWN = set(_PRE_KEYS) | {
    "rbkg",
    "bkg_kweight",
    "nknots",
    "clamp_lo",
    "clamp_hi",
    "kmin",
    "kmax",
    "kweight",
    "dk",
    "window",
    "calibrate",
    "deglitch",
    "min_edge_snr",
}
_MIN_EXAFS_K = 3.0  # Å⁻¹ of data above E0 needed before χ(k) is attempted


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


def _check_config(config: Mapping[str, Any]) -> None:
    unknown = set(config) - _KNOWN
    if unknown:
        raise InputError(
            f"config: unknown preprocessing setting(s) {sorted(unknown)}; known: {sorted(_KNOWN)}"
        )


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


def _merge_repeats(unit: WorkUnit, config: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, dict, dict, dict]:
    """Merge a merge unit's repeats (each calibrated on the reference channel when there is one).

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
                shifts[i] = float(calibrate_energy(e, mu_ref, e0_reference=float(e0_tab)).shift)
            except InputError as exc:
                diagnostics[f"calibration_error_repeat_{i}"] = str(exc)
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


@register("xafs.normalize", "spectrum", "1.0", settings=_KNOWN)
def normalize_spectrum(
    unit: WorkUnit, upstream: Mapping[str, AnalysisResult], config: Mapping[str, Any]
) -> AnalysisResult:
    """E0, pre/post-edge normalisation, AUTOBK χ(k), χ(R) and χ noise of one spectrum.

    A merge unit (``energy_repeats``, ``mu_repeats`` and optionally ``it_repeats``/``iref_repeats``, one row
    per repeat, NaN-padded) is first merged: each repeat calibrated on its reference channel, repeats with
    NaN/inf left out (listed in the diagnostics), the mean taken with a per-point noise (``mu_noise``).
    """
    _check_config(config)
    summary: dict[str, Any] = {}
    diagnostics: dict[str, Any] = {}
    extra_arrays: dict[str, np.ndarray] = {}
    shift = 0.0
    if "mu" not in unit.arrays and "mu_repeats" in unit.arrays:
        energy, mu, extra_arrays, merge_summary, merge_diag = _merge_repeats(unit, config)
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
            shift = float(cal.shift)
            energy = np.asarray(cal.energy)
            diagnostics["reference_e0_measured"] = float(cal.e0_measured)
    summary["energy_shift"] = shift
    mu_raw = mu
    glitch = None
    if config.get("deglitch", False):
        dg = deglitch(energy, mu)
        mu, glitch = np.asarray(dg.mu), np.asarray(dg.glitch)
        summary["n_glitches"] = int(dg.indices[0].size)
        diagnostics["glitch_energies"] = energy[dg.indices[0]].tolist()
    pre = pre_edge(energy, mu, **{k: config[k] for k in _PRE_KEYS if k in config})
    rbkg = float(config.get("rbkg", 1.0))
    kweight = float(config.get("kweight", 2))
    summary.update(e0=float(pre.e0), edge_step=float(pre.edge_step), rbkg=rbkg, kweight=kweight)
    if e0_tab is not None:
        summary["e0_tabulated"] = float(e0_tab)
    arrays = {
        "energy": pre.energy,
        "mu": mu_raw,
        "norm": pre.norm,
        "flat": pre.flat,
        "pre_edge_line": pre.pre_edge_line,
        "post_edge_curve": pre.post_edge_curve,
    }
    if glitch is not None:
        arrays["glitch"] = glitch
    arrays.update(extra_arrays)
    dims = {name: ("energy",) for name in arrays}
    params: dict[str, Any] = {"pre_edge": pre.params_used}

    k_data = float(np.sqrt(max(pre.energy[-1] - pre.e0, 0.0) * ETOK))
    summary["kmax_data"] = k_data
    # χ(k) needs data reaching past the FT window's start, not just past k = 3 Å⁻¹
    summary["has_exafs"] = k_data >= max(_MIN_EXAFS_K, float(config.get("kmin", 3.0)) + 2.0)
    if summary["has_exafs"]:
        bkg = autobk(
            pre.energy,
            mu,
            e0=pre.e0,
            edge_step=pre.edge_step,
            rbkg=rbkg,
            kweight=float(config.get("bkg_kweight", 2)),
            nknots=config.get("nknots"),
            clamp_lo=float(config.get("clamp_lo", 0.0)),
            clamp_hi=float(config.get("clamp_hi", 1.0)),
        )
        kmin = float(config.get("kmin", 3.0))
        kmax = float(config["kmax"]) if config.get("kmax") is not None else default_ft_kmax(float(bkg.k[-1]))
        if not kmin < kmax:
            raise InputError(
                f"kmin, kmax: empty FT range {kmin:g} .. {kmax:g} Å⁻¹ (χ(k) ends at {bkg.k[-1]:.2f})"
            )
        ft = xftf(
            bkg.k,
            bkg.chi,
            kmin=kmin,
            kmax=kmax,
            kweight=kweight,
            dk=float(config.get("dk", 1.0)),
            window=str(config.get("window", "hanning")),
        )
        noise = estimate_chi_noise(bkg.k, bkg.chi)
        arrays.update(
            bkg=bkg.bkg,
            k=bkg.k,
            chi=bkg.chi,
            r=ft.r,
            chir_mag=ft.chir_mag,
            chir_re=ft.chir_re,
            chir_im=ft.chir_im,
        )
        dims.update(
            bkg=("energy",), k=("k",), chi=("k",), r=("r",), chir_mag=("r",), chir_re=("r",), chir_im=("r",)
        )
        summary.update(
            noise_chi=float(noise.epsilon_k),
            noise_chir=float(noise.epsilon_r),
            kmin=kmin,
            kmax=kmax,
            kmax_suggest=float(noise.kmax_suggest),
        )
        params.update(autobk=bkg.params_used, xftf=ft.params_used, noise=noise.params_used)
        diagnostics["autobk"] = bkg.diagnostics[0]
    else:
        diagnostics["exafs"] = (
            f"data reach only k = {k_data:.2f} Å⁻¹ above E0; χ(k) needs at least "
            f"{max(_MIN_EXAFS_K, float(config.get('kmin', 3.0)) + 2.0):g}"
        )
    return AnalysisResult(
        arrays=arrays,
        dims=dims,
        summary=summary,
        params=_jsonable(params),
        diagnostics=_jsonable(diagnostics),
    )


@register("xafs.normalize_tile", "tile", "1.0", settings=_KNOWN)
def normalize_tile(
    unit: WorkUnit, upstream: Mapping[str, AnalysisResult], config: Mapping[str, Any]
) -> AnalysisResult:
    """Per-pixel E0, edge step and normalised μ of a μ-XANES tile (n_e, ny, nx)."""
    _check_config(config)
    energy = _array(unit, "energy")
    stack = _array(unit, "stack")
    if stack.ndim != 3 or stack.shape[0] != energy.size:
        raise InputError(f"stack: expected shape ({energy.size}, ny, nx) to match energy, got {stack.shape}")
    n_e, ny, nx = stack.shape
    spectra = stack.reshape(n_e, ny * nx).T
    kwargs = {k: config[k] for k in _PRE_KEYS if k in config}
    if "min_edge_snr" in config:
        kwargs["min_edge_snr"] = float(config["min_edge_snr"])
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
    return AnalysisResult(
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
