"""A parametric XANES model, fitted by weighted least squares: how many peaks (K) the data show.

    μ(E) = c0 + c1 (E - E_ref) + h [1/2 + arctan((E - E_edge) / w) / π] + Σ_k A_k exp(-(E - c_k)² / (2 s_k²))

Parameters θ = (c0, c1, h, E_edge, w, A_1, c_1, s_1, ...), energies in eV. The posterior is the Laplace
approximation at the least-squares optimum, Σ = s² (JᵀWJ)⁻¹, with the weights W = 1 / var μ_i and s² the
reduced χ² (at least 1). A fit takes milliseconds, fast enough to run between points (a REMC posterior per
decision takes seconds). E0 and the white line are not read from this global model: on Fe foil its
steepest point lay 8 eV from the data's; see :mod:`.local`.

The number of peaks K is chosen by BIC over ``k_range``; its probability is the BIC weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from ..errors import InputError

TARGETS = ("e0", "whiteline", "K")


def model_curve(theta: np.ndarray, energy: np.ndarray, e_ref: float) -> np.ndarray:
    """μ(E) of the model for parameters ``theta`` at ``energy`` (eV)."""
    c0, c1, h, ee, w = theta[:5]
    out = c0 + c1 * (energy - e_ref) + h * (0.5 + np.arctan((energy - ee) / w) / np.pi)
    for a, c, s in theta[5:].reshape(-1, 3):
        out = out + a * np.exp(-0.5 * ((energy - c) / s) ** 2)
    return out


@dataclass
class XanesFit:
    """The least-squares fit of one model and its Laplace posterior.

    Attributes
    ----------
    k : number of peaks
    theta : parameters (see the module docstring)
    cov : posterior covariance of theta (Laplace)
    s2 : reduced χ² of the fit (at least 1): the factor on the given noise variances
    bic : Bayesian information criterion, χ² + p ln n (the noise variances are known)
    e_ref : reference energy of the linear term (eV)
    window : the measured energy range (eV)
    """

    k: int
    theta: np.ndarray
    cov: np.ndarray
    s2: float
    bic: float
    e_ref: float
    window: tuple[float, float]

    def curve(self, energy: np.ndarray) -> np.ndarray:
        return model_curve(self.theta, np.asarray(energy, float), self.e_ref)

def _starts(energy: np.ndarray, mu: np.ndarray, k: int, e0_guess: float) -> list[np.ndarray]:
    """Starting points: the edge at the largest slope of the data, peaks at the largest residual bumps."""
    order = np.argsort(energy)
    e, y = energy[order], mu[order]
    lo, hi = float(np.percentile(y, 5)), float(np.percentile(y, 95))
    step = max(hi - lo, 1e-6)
    slope = np.gradient(y, e) if e.size > 2 else np.zeros_like(y)
    e_edge = float(e[int(np.argmax(slope))]) if e.size > 2 else e0_guess
    starts = []
    for ee in (e_edge, e0_guess):
        base = np.array([lo, 0.0, step, ee, 2.0])
        peaks = []
        resid = y - model_curve(base, e, float(e0_guess))
        for _ in range(k):
            i = int(np.argmax(resid))
            c = float(e[i])
            a = max(float(resid[i]), 0.05 * step)
            peaks += [a, c, 2.0]
            resid = resid - a * np.exp(-0.5 * ((e - c) / 2.0) ** 2)
        starts.append(np.concatenate([base, peaks]))
    return starts


def fit_xanes_model(energy: np.ndarray, mu: np.ndarray, var: np.ndarray, k: int, e0_guess: float
                    ) -> XanesFit | None:
    """Weighted least-squares fit of the model with ``k`` peaks (``var``: each point's noise variance); None
    when there are too few points or the fit fails. Edge and peaks stay inside the measured range, widths
    0.2-20 eV."""
    energy, mu, var = (np.asarray(a, float) for a in (energy, mu, var))
    if energy.size != mu.size or energy.size != var.size:
        raise InputError("energy, mu and var must have the same length")
    p = 5 + 3 * k
    if energy.size < p + 3:
        return None
    lo_e, hi_e = float(energy.min()), float(energy.max())
    window = (lo_e, hi_e)
    span = max(float(np.ptp(mu)), 1e-6)
    lower = [-np.inf, -np.inf, 0.0, lo_e, 0.2] + [0.0, lo_e, 0.2] * k
    upper = [np.inf, np.inf, 10 * span, hi_e, 20.0] + [10 * span, hi_e, 20.0] * k
    sw = 1.0 / np.sqrt(var)
    best = None
    for start in _starts(energy, mu, k, e0_guess):
        start = np.clip(start, np.array(lower) + 1e-9, np.array(upper) - 1e-9)
        try:
            sol = least_squares(lambda t: (model_curve(t, energy, e0_guess) - mu) * sw, start,
                                bounds=(lower, upper), x_scale="jac", max_nfev=200 * p)
        except (ValueError, np.linalg.LinAlgError):
            continue
        if best is None or sol.cost < best.cost:
            best = sol
    if best is None:
        return None
    n = energy.size
    rss = 2.0 * best.cost  # weighted: χ²
    s2 = max(rss / max(n - p, 1), 1.0)  # reduced χ², never below the counting noise
    jtj = best.jac.T @ best.jac
    try:
        cov = np.linalg.pinv(jtj) * s2
    except np.linalg.LinAlgError:
        return None
    bic = rss + p * np.log(n)  # the noise is known: -2 ln L = χ² (+ a constant)
    return XanesFit(k=k, theta=best.x, cov=cov, s2=float(s2), bic=float(bic), e_ref=float(e0_guess),
                    window=window)
