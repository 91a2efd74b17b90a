"""Standard errors when one refinement has several minima the data do not tell apart.

Two shells closer than the resolution (e.g. Fe-O 4 @ 2.00 Å + Fe-Fe 4 @ 2.10 Å) leave, through the N-σ² and
R-ΔE0 correlations, two or more local minima of the refinement several local standard errors apart, whose
residuals differ by about the noise. Which one the engine returns then changes from one noise realisation to
the next, and the covariance at the returned minimum (its curvature) misses that spread. Measured on that
pair at 1 % noise (R-space k² fit, 24 realisations): a minimum with ΔE0 ≈ +1…+4 eV and small Fe-O σ², and
one with ΔE0 ≈ -2 eV and Fe-O σ² ≈ 0.012-0.02 Å², 2-8 local σ apart in the Fe-O R and the Fe-Fe R, with
residuals 1-4 deviance units apart; the returned one alternated, and 17 of 144 values were beyond 3 local σ.

The minima found from the refinement's several starts are therefore combined as a mixture: each distinct
minimum m gets the weight exp(-D_m/2), D_m its deviance above the returned one (the difference of the
fit-space residual sums of squares over :attr:`ShellFit.deviance_unit`), and the reported covariance is
Σ_m w_m (C_m + (θ_m - θ̂)(θ_m - θ̂)ᵀ) around the returned θ̂ (C_m the local covariance of minimum m). A
minimum the data rule out (D ≫ 1, e.g. at low noise, or well separated shells with one minimum) adds
nothing, so the errors stay the local ones there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .results import ShellFit

SAME_MINIMUM = 1.0  # Mahalanobis distance (local covariance) below which two solutions are one minimum


def _structure(fit: ShellFit) -> tuple:
    return tuple(fit.param_names), tuple(s.pair for s in fit.shells)


def _mahalanobis2(d: np.ndarray, precision: np.ndarray) -> float:
    return float(d @ precision @ d)


def _logdet(cov: np.ndarray) -> float:
    sign, value = np.linalg.slogdet(cov)
    return float(value) if sign > 0 else float("-inf")


def distinct_minima(fit: ShellFit, others: Sequence[ShellFit]) -> list[ShellFit]:
    """The minima among ``others`` of the same model as ``fit`` (same parameters and pairs) that are not
    ``fit``'s own minimum nor each other's (Mahalanobis distance ≥ SAME_MINIMUM in ``fit``'s covariance);
    of duplicates the one with the smaller residual is kept."""
    precision = np.linalg.pinv(fit.covariance)
    key = _structure(fit)
    kept: list[ShellFit] = []
    for other in sorted(others, key=lambda f: f.rss):
        if _structure(other) != key or not np.isfinite(other.rss):
            continue
        if _mahalanobis2(other.theta - fit.theta, precision) < SAME_MINIMUM**2:
            continue
        if any(_mahalanobis2(other.theta - k.theta, precision) < SAME_MINIMUM**2 for k in kept):
            continue
        kept.append(other)
    return kept


def with_shell_errors(fit: ShellFit, cov: np.ndarray) -> ShellFit:
    """``fit`` with covariance ``cov`` and the standard errors of its shells, ΔE0 and S0² taken from it."""
    err = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    names = fit.param_names

    def pick(name: str, default: float = 0.0) -> float:
        return float(err[names.index(name)]) if name in names else default

    shells = [
        replace(
            s,
            n_err=pick(f"shell{i + 1}.N"),
            r_err=pick(f"shell{i + 1}.R"),
            sigma2_err=pick(f"shell{i + 1}.sigma2"),
        )
        for i, s in enumerate(fit.shells)
    ]
    return replace(fit, shells=shells, covariance=cov, de0_err=pick("de0"), s02_err=pick("s02"))


def combine_minima(fit: ShellFit, others: Sequence[ShellFit]) -> tuple[ShellFit, list[dict]]:
    """Widen the covariance of the returned minimum ``fit`` by the other minima of the same model.

    Parameters
    ----------
    fit : the returned refinement (its ``theta`` is kept)
    others : refinements of the same data from other starts (any model; other models are ignored)

    Returns
    -------
    (fit with the mixture covariance and errors, one note per distinct other minimum: its deviance above
    ``fit``, its weight, and its largest shift in local standard errors)
    """
    alternates = distinct_minima(fit, others)
    if not alternates or not (fit.deviance_unit > 0):
        return fit, []
    dev = np.array([(a.rss - fit.rss) / fit.deviance_unit for a in alternates])
    logw = -0.5 * np.concatenate([[0.0], dev]) + 0.5 * np.array(
        [_logdet(f.covariance) - _logdet(fit.covariance) for f in [fit, *alternates]]
    )
    w = np.exp(logw - logw.max())
    w /= w.sum()
    cov = w[0] * fit.covariance
    err = np.sqrt(np.clip(np.diag(fit.covariance), 1e-300, None))
    notes = []
    for wi, a, d in zip(w[1:], alternates, dev, strict=True):
        shift = a.theta - fit.theta
        cov = cov + wi * (a.covariance + np.outer(shift, shift))
        notes.append(
            {"deviance": float(d), "weight": float(wi), "max_shift_sigma": float(np.max(np.abs(shift) / err))}
        )
    return with_shell_errors(fit, cov), notes
