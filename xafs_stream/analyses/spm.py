"""Worker analysis "spm": EXAFS sparse modeling of a spectrum whose sample has FEFF paths configured.

Needs ``xafs.normalize`` (arrays ``k`` and ``chi``, summary ``e0``). Configuration, the service TOML section
``[analysis.spm]`` as a dict::

    [analysis.spm]
    kmin = 3.0            # 1/Å
    kmax = 14.0           # 1/Å, lowered to the end of the data minus dk/2 when the data stop earlier
    kweight = 2
    space = "r"           # "r" (windowed FT, default) or "k"
    rmin = 1.4            # Å, fit range in R (not phase-corrected) and candidate distances
    rmax = 3.2
    s02 = 1.0             # N is reported as N·S0²/s02
    n_bootstrap = 0       # bootstrap refits over k (errors ``*_err_boot``)
    split_test = "auto"   # "auto", "on" or "off" (see engines.spm.SpmSettings)
    structure_window = 0.35   # Å; candidates near the path set's distances only (false: any distance)
    max_n_factor = 1.5    # N above this × the path set's neighbours is rejected (false: no limit)
    [analysis.spm.paths]  # sample name or element -> path set ("packaged:<name>" or a folder)
    Cu = "packaged:cu_fcc_a3.615_feff6l"
    Fe = "packaged:fe_bcc_a2.8665_feff6l"

Path-set lookup, first match wins:

1. the run's own metadata: ``RE(xafs_scan(..., md={"feff_paths": "packaged:<name>" or a folder}))``;
2. the ``paths`` table: the unit's ``sample``, then ``"<element> <edge>"``, then ``element``, each exact,
   then case-insensitive, then as a shell-style pattern (``"Fe*O*" = ...``, ``"Fe K" = ...``);
3. without a ``paths`` table, the packaged path sets by sample name: the metals (``Cu``, ``Cu foil``,
   ``Fe``, ``Fe metal``, ...) and the packaged compounds (``FeO``, ``Fe2O3``/hematite, ``ZnSe``) when
   their path sets are installed; an Fe oxide is never fitted with bcc-iron paths.

``paths = {}`` switches the table lookup off. No path set → a stored ``skipped`` result that names the
sample and says how to give one (the dashboard and ``watch`` show it).

Summary keys (flat, queryable): ``spm.n_shells``, ``spm.shell<i>.{N,R,sigma2}`` with ``_err`` (covariance)
and ``_err_boot`` (bootstrap, when run), ``spm.shell<i>.pair``, ``spm.de0``, ``spm.r_factor``,
``spm.redchi``, ``spm.alpha``, ``spm.path_set``. Arrays: the sparse distribution ``spm_distribution``
(pair, r_spm, sigma2_spm) with its axes, χ(k) data/sparse/fit on ``spm_k``, |χ(R)| data/fit on ``spm_r``,
the CV curve on ``spm_alpha``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

import numpy as np

from ..core import WorkUnit
from ..engines.errors import InputError
from .registry import AnalysisResult, SkipAnalysis, register

DEFAULT_PATHS = {
    "cu": "packaged:cu_fcc_a3.615_feff6l",
    "cu foil": "packaged:cu_fcc_a3.615_feff6l",
    "cu metal": "packaged:cu_fcc_a3.615_feff6l",
    "fe": "packaged:fe_bcc_a2.8665_feff6l",
    "fe foil": "packaged:fe_bcc_a2.8665_feff6l",
    "fe metal": "packaged:fe_bcc_a2.8665_feff6l",
}
DEFAULTS = dict(kmin=3.0, kmax=14.0, kweight=2.0, space="r", rmin=1.4, rmax=3.2, s02=1.0, n_bootstrap=0)
SETTING_KEYS = (
    "kmin",
    "kmax",
    "kweight",
    "dk",
    "space",
    "rmin",
    "rmax",
    "r_range",
    "r_step",
    "sigma2_grid",
    "pairs",
    "n_folds",
    "n_alphas",
    "alpha_eps",
    "cv_rule",
    "gap",
    "min_fraction",
    "s02",
    "de0",
    "noise",
    "prune_sigma",
    "split_test",
    "split_z",
    "structure_window",
    "max_n_factor",
    "n_bootstrap",
    "seed",
)


#: Packaged compound path sets by lower-case sample name (used when installed, see ``packaged_path_sets``).
COMPOUND_PATHS = {
    "feo": "feo_rocksalt_a4.33_feff6l",
    "wustite": "feo_rocksalt_a4.33_feff6l",
    "fe2o3": "fe2o3_hematite_feff6l",
    "hematite": "fe2o3_hematite_feff6l",
    "znse": "znse_zincblende_a5.6687_feff6l",
}


def find_path_set(config: Mapping[str, Any], sample: str | None, element: str | None,
                  edge: str | None = None, run_paths: str | None = None) -> str | None:
    """Path-set spec for a unit, or None (lookup order in the module docstring)."""
    from fnmatch import fnmatchcase

    if run_paths:
        return str(run_paths)
    names = [n for n in (sample, f"{element} {edge}" if element and edge else None, element) if n]
    if "paths" in config:
        table = {str(k): str(v) for k, v in dict(config["paths"]).items()}
        lowered = {k.lower(): v for k, v in table.items()}
        for name in names:
            if name in table:
                return table[name]
            if name.lower() in lowered:
                return lowered[name.lower()]
            for pattern, spec in table.items():
                if any(c in pattern for c in "*?[") and fnmatchcase(name.lower(), pattern.lower()):
                    return spec
        return None
    key = (sample or "").strip().lower()
    if key in DEFAULT_PATHS:
        return DEFAULT_PATHS[key]
    if key in COMPOUND_PATHS:
        from ..io.feff import packaged_path_sets

        if COMPOUND_PATHS[key] in packaged_path_sets():
            return "packaged:" + COMPOUND_PATHS[key]
    return None


def _check_paths_table(config: Mapping[str, Any]) -> None:
    """``paths`` must be a table of sample or element name → path-set spec (strings)."""
    table = config.get("paths", {})
    if not isinstance(table, Mapping) or not all(isinstance(v, str) for v in table.values()):
        raise InputError(f"paths must be a table of name = \"path set\" strings, got {table!r}")


@lru_cache(maxsize=16)
def _load_paths(spec: str):
    # Cached per worker process: parsing FEFF files and the first xraydb lookup take ~0.5 s, and path sets
    # do not change while the service runs. The cache holds only immutable inputs, keyed by the spec.
    from ..io.feff import read_feff_dir

    return tuple(read_feff_dir(spec).paths)


def settings_from_config(config: Mapping[str, Any], k: np.ndarray) -> dict:
    """Engine settings from the config (defaults filled in; kmax clipped to the data)."""
    unknown = sorted(set(config) - set(SETTING_KEYS) - {"paths"})
    if unknown:
        raise InputError(
            f"[analysis.spm]: unknown settings {unknown}; known: {sorted(SETTING_KEYS + ('paths',))}"
        )
    out = dict(DEFAULTS)
    out.update({key: config[key] for key in SETTING_KEYS if key in config})
    for key in ("r_range", "pairs"):
        if key in out and out[key] is not None:
            out[key] = tuple(out[key])
    for key in ("structure_window", "max_n_factor"):  # TOML has no null: false switches the rule off
        if out.get(key, None) is False:
            out[key] = None
    if "sigma2_grid" in out and out["sigma2_grid"] is not None:
        out["sigma2_grid"] = np.asarray(out["sigma2_grid"], dtype=float)
    dk = float(out.get("dk", 1.0))
    top = float(k[-1]) - (dk / 2.0 if out["space"] == "r" else 0.0)
    if out["kmax"] > top:
        out["kmax"] = float(np.floor(top * 2.0) / 2.0)
    if out["kmax"] - out["kmin"] < 3.0:
        raise InputError(f"k range too short for SpM: data end at k = {k[-1]:.2f} 1/Å, kmin = {out['kmin']}")
    return out


def summary_from_result(res, path_spec: str) -> dict:
    """Flat summary dict (``spm.*`` keys) of an :class:`~xafs_stream.engines.spm.SpmResult`."""
    fit = res.fit
    out: dict[str, float | int | str | None] = {
        "spm.n_shells": len(res.shells),
        "spm.de0": fit.de0,
        "spm.de0_err": fit.de0_err,
        "spm.r_factor": fit.r_factor,
        "spm.redchi": fit.redchi,
        "spm.alpha": res.alpha,
        "spm.path_set": path_spec,
        "spm.s02": fit.s02,
    }
    for i, sh in enumerate(res.shells, start=1):
        key = f"spm.shell{i}"
        out[f"{key}.pair"] = sh.pair
        for name, value, err, boot in (
            ("N", sh.n, sh.n_err, sh.n_err_boot),
            ("R", sh.r, sh.r_err, sh.r_err_boot),
            ("sigma2", sh.sigma2, sh.sigma2_err, sh.sigma2_err_boot),
        ):
            out[f"{key}.{name}"] = float(value)
            out[f"{key}.{name}_err"] = float(err)
            if fit.n_bootstrap:
                out[f"{key}.{name}_err_boot"] = float(boot)
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}


@register(
    "spm",
    "spectrum",
    "1",
    requires=("xafs.normalize",),
    description="EXAFS sparse modeling: N(R, σ²) by cross-validated non-negative LASSO over FEFF paths, "
    "refined shells with errors",
    settings=(*SETTING_KEYS, "paths"),
    check=_check_paths_table,
    cost="slow",
)
def spm_analysis(
    unit: WorkUnit, upstream: Mapping[str, AnalysisResult], config: Mapping[str, Any]
) -> AnalysisResult:
    """Sparse-modeling shell fit of one spectrum (see the module docstring)."""
    from ..engines.spm import spm_fit
    from ..engines.spm.verdict import judge_spm

    sample = unit.metadata.get("sample")
    element = unit.metadata.get("element")
    spec = find_path_set(config, sample, element, unit.metadata.get("edge"), unit.metadata.get("feff_paths"))
    if spec is None:
        raise SkipAnalysis(
            f"no path set for {sample!r} (element {element}); set [analysis.spm] paths, e.g. "
            f"\"{sample or element}\" = \"packaged:<name>\" or a folder, or run with md={{\"feff_paths\": ...}}"
        )
    norm = upstream.get("xafs.normalize")
    if norm is not None and norm.summary.get("has_exafs") is False:
        raise SkipAnalysis("no EXAFS: the spectrum does not reach far enough above the edge for χ(k)")
    if norm is None or "k" not in norm.arrays or "chi" not in norm.arrays:
        raise InputError("upstream 'xafs.normalize' has no arrays 'k' and 'chi'")
    k = np.asarray(norm.arrays["k"], dtype=float)
    chi = np.asarray(norm.arrays["chi"], dtype=float)
    paths = list(_load_paths(spec))
    settings = settings_from_config(config, k)
    res = spm_fit(k, chi, paths, **settings)
    dist = res.distribution
    arrays = {
        "spm_distribution": dist,
        "spm_r_grid": res.r_grid,
        "spm_sigma2_grid": res.sigma2_grid,
        "spm_k": res.k,
        "spm_chi_data": res.chi_data,
        "spm_chi_sparse": res.chi_sparse,
        "spm_chi_fit": res.chi_fit,
        "spm_r": res.r,
        "spm_chir_mag_data": np.abs(res.chir_data),
        "spm_chir_mag_fit": np.abs(res.chir_fit),
        "spm_alpha": res.alphas,
        "spm_cv_mean": res.cv_mean,
        "spm_cv_se": res.cv_se,
    }
    dims = {
        "spm_distribution": ("pair", "r_spm", "sigma2_spm"),
        "spm_r_grid": ("r_spm",),
        "spm_sigma2_grid": ("sigma2_spm",),
        "spm_k": ("k_spm",),
        "spm_chi_data": ("k_spm",),
        "spm_chi_sparse": ("k_spm",),
        "spm_chi_fit": ("k_spm",),
        "spm_r": ("r",),
        "spm_chir_mag_data": ("r",),
        "spm_chir_mag_fit": ("r",),
        "spm_alpha": ("alpha",),
        "spm_cv_mean": ("alpha",),
        "spm_cv_se": ("alpha",),
    }
    params = dict(res.params, path_set=spec, pairs=list(res.pairs), e0=norm.summary.get("e0"))
    diagnostics = dict(
        res.diagnostics,
        shells=[s.as_dict() for s in res.shells],
        param_names=res.fit.param_names,
        covariance=res.fit.covariance.tolist(),
    )
    verdict = judge_spm(res)
    if norm.verdict == "bad":  # a fit of a spectrum whose own processing is bad cannot be better
        verdict.bad("the normalisation's verdict is bad: " + "; ".join(norm.verdict_reasons))
    return AnalysisResult(
        arrays=arrays,
        dims=dims,
        summary=summary_from_result(res, spec),
        params=params,
        diagnostics=diagnostics,
        verdict=verdict.level,
        verdict_reasons=verdict.reasons,
    )
