"""The verdict on a sparse-modeling fit: information content, k range, misfit, bounds, determinacy."""

from __future__ import annotations

import numpy as np

from ..verdict import Verdict, threshold
from .results import SpmResult
from .shells import DE0_BOUNDS, S02_BOUNDS, SIGMA2_BOUNDS


def judge_spm(res: SpmResult, *, thresholds: dict | None = None) -> Verdict:
    """``ok``/``warn``/``bad`` for one :class:`SpmResult` (thresholds: :mod:`xafs_stream.engines.verdict`)."""
    t = lambda name: threshold(name, thresholds)  # noqa: E731
    v = Verdict()
    fit = res.fit
    if not fit.success:
        v.bad(f"shell refinement did not converge ({fit.message})")
    spare = fit.n_independent - fit.n_params
    if spare < 0:
        v.bad(f"{fit.n_params} free parameters for {fit.n_independent:.1f} independent points")
    elif spare < t("idp_margin"):
        v.warn(f"{fit.n_params} free parameters for {fit.n_independent:.1f} independent points")
    dk = float(res.params.get("kmax", np.nan)) - float(res.params.get("kmin", np.nan))
    if dk < t("k_range_bad"):
        v.bad(f"k range {dk:.1f} Å⁻¹ long")
    elif dk < t("k_range_warn"):
        v.warn(f"k range {res.params['kmin']:g}-{res.params['kmax']:g} Å⁻¹ shorter than "
                f"{t('k_range_warn'):g} Å⁻¹")
    if not np.isfinite(fit.r_factor) or fit.r_factor > t("r_factor_bad"):
        v.bad(f"R-factor {fit.r_factor:.3g} above {t('r_factor_bad'):g}")
    elif fit.r_factor > t("r_factor_warn"):
        v.warn(f"R-factor {fit.r_factor:.3g} above {t('r_factor_warn'):g}")
    if not res.shells:
        v.bad("no shell found")
    for i, sh in enumerate(res.shells, start=1):
        name = f"shell {i} ({sh.pair} at {sh.r:.2f} Å)"
        rel = sh.n_err / sh.n if sh.n > 0 and np.isfinite(sh.n_err) else np.inf
        if rel > t("rel_err_bad"):
            v.bad(f"{name}: N = {sh.n:.2g} ± {sh.n_err:.2g} is not determined")
        elif rel > t("rel_err_warn"):
            v.warn(f"{name}: N = {sh.n:.2g} ± {sh.n_err:.2g} (relative error above {t('rel_err_warn'):.0%})")
        span = SIGMA2_BOUNDS[1] - SIGMA2_BOUNDS[0]
        if min(sh.sigma2 - SIGMA2_BOUNDS[0], SIGMA2_BOUNDS[1] - sh.sigma2) < 0.01 * span:
            v.warn(f"{name}: σ² = {sh.sigma2:.4f} Å² at its bound {SIGMA2_BOUNDS}")
    if min(fit.de0 - DE0_BOUNDS[0], DE0_BOUNDS[1] - fit.de0) < 0.01 * (DE0_BOUNDS[1] - DE0_BOUNDS[0]):
        v.warn(f"ΔE0 = {fit.de0:.1f} eV at its bound {DE0_BOUNDS}")
    if "s02" in fit.param_names and min(fit.s02 - S02_BOUNDS[0], S02_BOUNDS[1] - fit.s02) < 0.01:
        v.warn(f"S0² = {fit.s02:.2f} at its bound {S02_BOUNDS}")
    grid = np.asarray(res.sigma2_grid, float)
    for i, sh in enumerate(res.shells, start=1):
        if grid.size and sh.sigma2 >= grid.max():
            v.warn(f"shell {i}: σ² = {sh.sigma2:.4f} Å² at or beyond the largest σ² of the candidate grid "
                   f"({grid.max():g} Å²): extend sigma2_grid")
    found = {sh.pair for sh in res.shells}
    for pair, info in (res.diagnostics.get("pair_first_shells") or {}).items():
        if pair not in found and info["peak_fraction"] >= t("missing_pair_peak"):
            v.bad(f"{pair} is missing: the path set has a {pair} shell at {info['reff']:.2f} Å and |χ(R)| has a "
                  f"peak there ({info['peak_fraction']:.0%} of its maximum), but the fit has no {pair} shell")
    for note in res.diagnostics.get("warnings", []) or []:
        v.warn(str(note))
    return v
