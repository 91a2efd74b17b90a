"""Worker analysis ``bayes.xanes``: Bayesian peak decomposition of the XANES region with K chosen by the
free energy, and the pre-edge centroid (Wilke et al. 2001), after ``xafs.normalize``.

Config (all optional): ``region`` [-20, 30] (eV relative to E0), ``k_min`` 1, ``k_max`` 4, ``noise``
"auto" or a number (normalised units), ``signal`` "norm" or "flat", ``edge`` "arctan"/"erf",
``peak_shape``, ``preedge`` true, ``preedge_k_max`` 3, ``sampler`` "smc" (tempered SMC with mode jumps,
:mod:`xafs_stream.engines.bayes.smc`: ``n_particles`` 128, ``n_groups`` 4, ``n_moves`` 4, ``mode_starts``
256) or "remc" (replica exchange: ``n_replicas`` 24, ``n_chains`` 2, ``n_burn`` 200, ``n_sweeps`` 400,
``collapsed`` false), ``stop_unconverged`` true (K = 1, 2, ... until a fit does not converge; K is chosen
among the converged ones and the verdict says where the search stopped), ``seed`` 0, ``max_samples`` 200.

The defaults are sized for a live worker's slow lane (10-23 s per merged spectrum on one core: K = 1, 2, ...
over ~100 points, then the pre-edge): measured spectra are smooth on the scale of the model's misfit, so F(K)
and the intervals are a screening result. The SMC sampler is the default because the replica ladder does not
mix within a live budget on measured spectra: on the five packaged spectra no REMC fit converged (R-hat
1.2-2.1), and its free energies missed modes that fit several times better (Cu foil, K = 2: F higher by
~60 nat); see docs/measurements.md. ``bayes.rhat_max``, ``bayes.exchange_min`` and the F standard errors
say how far to trust them, and the verdict (:func:`xafs_stream.engines.bayes.verdict.judge_selection`) says
it: ``bad`` when the chains did not converge (R-hat above 1.2), ``warn`` for R-hat above 1.05, K at the top
of the range or an undecided K, or a search over K stopped at a fit that did not converge;
``bayes.converged`` is R-hat ≤ 1.05 (of the chosen fit). The pre-edge fit searches its K the same way
(``stop_unconverged``) and the centroid's R-hat (``bayes.preedge_rhat``) enters the verdict with the same
thresholds, named "pre-edge centroid"; reprocess with more particles or sweeps (or run
``xafs-stream bayes``) for publication numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core import WorkUnit
from ..engines.bayes import RemcSettings, SmcSettings, fit_preedge, fit_xanes, report
from ..engines.bayes.verdict import judge_preedge, judge_selection
from ..engines.errors import InputError
from ..engines.verdict import THRESHOLDS
from .registry import AnalysisResult, SkipAnalysis, register

DEFAULTS: dict[str, Any] = {
    "region": (-20.0, 30.0),
    "k_min": 1,
    "k_max": 4,
    "noise": "auto",
    "signal": "norm",
    "edge": "arctan",
    "peak_shape": "gaussian",
    "preedge": True,
    "preedge_k_max": 3,
    "n_replicas": 24,
    "n_chains": 2,
    "n_burn": 200,
    "n_sweeps": 400,
    "seed": 0,
    "max_samples": 200,
    "sampler": "smc",
    # K = k_min, k_min + 1, ... until a fit does not converge (R-hat above the verdict's 1.05); K is chosen
    # among the converged fits and the verdict names the one that stopped the search
    "stop_unconverged": True,
    "n_particles": 128,
    "n_groups": 4,
    "n_moves": 4,
    "mode_starts": 256,
    # collapsed moves (RemcSettings.collapsed): better mixing at K = 1-2, ~4x the time; off for the live budget
    "collapsed": False,
    # which spectrum units to fit live: "merge" (the merged spectrum of a run, default: a fit takes seconds
    # of CPU, too much for every repeat on a busy beamline) or "all"
    "units": "merge",
}


_INT_KEYS = (
    "k_min",
    "k_max",
    "preedge_k_max",
    "n_replicas",
    "n_chains",
    "n_burn",
    "n_sweeps",
    "seed",
    "max_samples",
    "n_particles",
    "n_groups",
    "n_moves",
    "mode_starts",
)


# the settings of one sampler only: given with the other sampler they would be ignored, so they are refused
SAMPLER_KEYS = {
    "smc": ("n_particles", "n_groups", "n_moves", "mode_starts"),
    "remc": ("n_replicas", "n_chains", "n_burn", "n_sweeps", "collapsed"),
}


def _config(config: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise InputError(f"bayes.xanes config: unknown keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **config}
    sampler = cfg["sampler"]
    for other, keys in SAMPLER_KEYS.items():
        given = sorted(k for k in keys if k in config)
        if other != sampler and sampler in SAMPLER_KEYS and given:
            raise InputError(f"bayes.xanes config: {', '.join(given)} apply to sampler '{other}', but the sampler "
                             f"is '{sampler}' (set sampler = \"{other}\" or remove them)")
    region = cfg["region"]
    try:
        cfg["region"] = (float(region[0]), float(region[1]))
        if len(region) != 2:
            raise TypeError
    except (TypeError, ValueError, IndexError):
        raise InputError(
            f"bayes.xanes config: region must be [low, high] eV relative to E0, got {region!r}"
        ) from None
    if cfg["units"] not in ("merge", "all"):
        raise InputError(f"bayes.xanes config: units must be 'merge' or 'all', got {cfg['units']!r}")
    if cfg["sampler"] not in ("smc", "remc"):
        raise InputError(f"bayes.xanes config: sampler must be 'smc' or 'remc', got {cfg['sampler']!r}")
    if cfg["signal"] not in ("norm", "flat"):
        raise InputError(f"bayes.xanes config: signal must be 'norm' or 'flat', got {cfg['signal']!r}")
    if not isinstance(cfg["stop_unconverged"], bool):
        raise InputError(f"bayes.xanes config: stop_unconverged must be true or false, got {cfg['stop_unconverged']!r}")
    if not isinstance(cfg["collapsed"], bool):
        raise InputError(f"bayes.xanes config: collapsed must be true or false, got {cfg['collapsed']!r}")
    for key in _INT_KEYS:
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputError(f"bayes.xanes config: {key} must be an integer, got {value!r}")
    return cfg


def _finite_or_none(value: Any) -> Any:
    """Summary values must be JSON-able: NaN and inf become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _settings(cfg: Mapping[str, Any]) -> RemcSettings | SmcSettings:
    if cfg["sampler"] == "smc":
        return SmcSettings(
            n_particles=int(cfg["n_particles"]),
            n_groups=int(cfg["n_groups"]),
            n_moves=int(cfg["n_moves"]),
            mode_starts=int(cfg["mode_starts"]),
        )
    return RemcSettings(
        n_replicas=int(cfg["n_replicas"]),
        n_chains=int(cfg["n_chains"]),
        n_burn=int(cfg["n_burn"]),
        n_sweeps=int(cfg["n_sweeps"]),
        thin=max(1, int(cfg["n_sweeps"]) // 100),
        collapsed=bool(cfg["collapsed"]),
    )


@register("bayes.xanes", "spectrum", "1.0", requires=("xafs.normalize",), settings=tuple(DEFAULTS),
          check=_config, cost="slow")
def bayes_xanes(
    unit: WorkUnit, upstream: Mapping[str, AnalysisResult], config: Mapping[str, Any]
) -> AnalysisResult:
    """Edge step + K peaks over the XANES region, K by minimum Bayesian free energy; pre-edge centroid."""
    cfg = _config(config)
    if cfg["units"] == "merge" and unit.index != "merge":
        raise SkipAnalysis("bayes.xanes runs on merged spectra (config units = 'all' fits every repeat)")
    norm_result = upstream.get("xafs.normalize")
    if norm_result is None:
        raise SkipAnalysis("no xafs.normalize result for this unit")
    arrays = norm_result.arrays
    if "energy" not in arrays or cfg["signal"] not in arrays:
        raise SkipAnalysis(f"xafs.normalize gave no 'energy'/'{cfg['signal']}' arrays")
    e0 = norm_result.summary.get("e0")
    if e0 is None or not math.isfinite(float(e0)):
        raise SkipAnalysis("xafs.normalize gave no finite e0")
    energy = np.asarray(arrays["energy"], float)
    y = np.asarray(arrays[cfg["signal"]], float)
    e0 = float(e0)
    lo, hi = e0 + cfg["region"][0], e0 + cfg["region"][1]
    if np.count_nonzero((energy >= lo) & (energy <= hi)) < 10:
        raise SkipAnalysis(f"fewer than 10 points in the XANES region [{lo:.1f}, {hi:.1f}] eV")
    settings = _settings(cfg)  # InputError (one line) for a bad sampler setting
    sel = fit_xanes(
        energy,
        y,
        e0,
        region=cfg["region"],
        k_range=range(int(cfg["k_min"]), int(cfg["k_max"]) + 1),
        noise=cfg["noise"],
        edge=cfg["edge"],
        peak_shape=cfg["peak_shape"],
        settings=settings,
        seed=int(cfg["seed"]),
        stop_at_rhat=THRESHOLDS["rhat_warn"] if cfg["stop_unconverged"] else None,
    )
    rep = report(sel, seed=int(cfg["seed"]), max_samples=int(cfg["max_samples"]))
    fit = sel.best_fit
    summary: dict[str, Any] = {
        "bayes.model": "xanes",
        "bayes.K": int(fit.model.n_peaks),
        "bayes.noise": float(rep.noise),
        "bayes.noise_mode": rep.noise_mode,
        "bayes.rhat_max": rep.rhat_max,
        "bayes.exchange_min": rep.exchange_min,
        "bayes.converged": bool(rep.rhat_max <= THRESHOLDS["rhat_warn"]),
        "bayes.sampler": cfg["sampler"],
    }
    if sel.stopped_at is not None:  # the fit that ended the search over K (not converged, not chosen)
        summary["bayes.K_unconverged"] = int(sel.stopped_at.model.n_peaks)
        summary["bayes.rhat_unconverged"] = sel.stopped_at.rhat_max
    verdict = judge_selection(sel, rep)
    if fit.noise_scan is not None and fit.noise_scan.at_edge:
        verdict.warn("the noise estimate is at the end of the scanned range")
    for row, f in zip(rep.table, sel.fits):
        k = f.model.n_peaks
        summary[f"bayes.F.K{k}"] = float(row["F"])
        summary[f"bayes.F_se.K{k}"] = float(row["F_se"])
    for p in rep.parameters[:4]:
        summary[f"bayes.{p.name}"] = p.median
        summary[f"bayes.{p.name}_err"] = p.err
    for pk in rep.peaks:
        base = f"bayes.peak{pk.index}"
        summary[f"{base}.center"] = pk.center.median
        summary[f"{base}.center_err"] = pk.center.err
        summary[f"{base}.height"] = pk.height.median
        summary[f"{base}.height_err"] = pk.height.err
        summary[f"{base}.width"] = pk.width.median
        summary[f"{base}.width_err"] = pk.width.err
        summary[f"{base}.area"] = pk.area.median
    diagnostics: dict[str, Any] = {
        "acceptance": list(rep.acceptance),
        "round_trips": fit.run.round_trips.tolist(),
        "elapsed_s": float(sum(f.run.elapsed_s for f in sel.fits)),
        "noise_at_ladder_edge": bool(fit.noise_scan.at_edge) if fit.noise_scan is not None else False,
    }
    if cfg["preedge"]:
        try:
            pre = fit_preedge(
                energy,
                y,
                e0,
                k_range=range(1, int(cfg["preedge_k_max"]) + 1),
                noise=cfg["noise"],
                settings=settings,
                seed=int(cfg["seed"]),
                stop_at_rhat=THRESHOLDS["rhat_warn"] if cfg["stop_unconverged"] else None,
            )
        except InputError as exc:
            diagnostics["preedge"] = f"no pre-edge centroid: {exc}"
        else:
            summary["bayes.preedge_centroid"] = pre.centroid.median
            summary["bayes.preedge_centroid_err"] = pre.centroid.err
            summary["bayes.preedge_area"] = pre.area.median
            summary["bayes.preedge_K"] = int(pre.selection.best_fit.model.n_peaks)
            summary["bayes.preedge_rhat"] = pre.centroid_rhat
            judge_preedge(pre, verdict)  # the centroid is a number a user acts on
            if pre.selection.stopped_at is not None:
                summary["bayes.preedge_K_unconverged"] = int(pre.selection.stopped_at.model.n_peaks)
            diagnostics["preedge"] = {
                "window": list(pre.window),
                "peak_energy": pre.peak_energy,
                "table": pre.selection.table(),
            }
    band = rep.band
    out_arrays = {
        "bayes_k": np.array([f.model.n_peaks for f in sel.fits], float),
        "bayes_F": np.array([r["F"] for r in rep.table]),
        "bayes_F_se": np.array([r["F_se"] for r in rep.table]),
        "bayes_noise": np.array([r["noise"] for r in rep.table]),
        "bayes_energy": band.x,
        "bayes_data": sel.y,
        "bayes_best_fit": band.best,
        "bayes_median": band.median,
        "bayes_band_lo95": band.lo95,
        "bayes_band_hi95": band.hi95,
        "bayes_pred_lo95": band.pred_lo95,
        "bayes_pred_hi95": band.pred_hi95,
        "bayes_samples": rep.samples,
    }
    dims = {name: ("k",) for name in ("bayes_k", "bayes_F", "bayes_F_se", "bayes_noise")}
    dims.update(
        {name: ("energy_fit",) for name in out_arrays if name.startswith("bayes_") and name not in dims}
    )
    dims["bayes_samples"] = ("sample", "parameter")
    summary = {k: _finite_or_none(v) for k, v in summary.items()}
    params = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        "e0": e0,
        "parameter_names": list(rep.names),
        "model": fit.model.describe(),
    }
    return AnalysisResult(
        arrays=out_arrays, dims=dims, summary=summary, params=params, diagnostics=diagnostics,
        verdict=verdict.level, verdict_reasons=verdict.reasons,
    )
