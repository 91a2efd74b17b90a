"""σ²(T) of a shell: correlated Einstein and correlated Debye models, fits and excess-disorder flags.

Einstein: σ²(T) = ħ²/(2 μ k_B θ_E) · coth(θ_E / 2T) + σ²_static, μ the pair's reduced mass.

Correlated Debye (Sevillano, Meuth and Rehr 1979, the form FEFF and xraylarch evaluate for a single-scattering
pair of masses m₁, m₂ at distance R)::

    σ²(T) = (3ħ²/(2 k_B θ_D)) [ (1/m₁ + 1/m₂) I(0) - 2 I(k_D R) / sqrt(m₁ m₂) ] + σ²_static
    I(x)  = ∫₀¹ (sin(w x)/x) coth(w θ_D / 2T) dw,   I(0) = ∫₀¹ w coth(w θ_D / 2T) dw

with the Debye wave number k_D = (9π/2)^(1/3) / r_s from the Norman radius r_s (FEFF's ``rnorman``, bohr).
The integrals use 48-point Gauss-Legendre quadrature: the integrands are smooth on [0, 1] (both tend to
2T/θ_D at w → 0), it is vectorised over temperatures, and it agrees with adaptive quadrature to < 1e-10.

Fits are weighted least squares of (θ, σ²_static) on (T_i, σ²_i ± δ_i). Points whose σ² exceeds the fitted
curve by more than ``z_flag`` combined standard errors are flagged (static disorder, a structural change
or ion mobility) and left out of the refit, repeatedly, so that one anomalous temperature does not bend the
thermal curve.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.constants as const
from scipy.optimize import least_squares

from ..errors import InputError

#: ħ²/(2 k_B amu) in Å²·K·amu (xraylarch's EINS_FACTOR).
EINSTEIN_FACTOR = 1.0e20 * const.hbar**2 / (2.0 * const.k * const.atomic_mass)
#: 3ħ²/(2 k_B amu) in Å²·K·amu (FEFF's conh).
DEBYE_FACTOR = 3.0 * EINSTEIN_FACTOR
#: (9π/2)^(1/3) / bohr, in 1/Å per 1/bohr (FEFF's conr).
DEBYE_K_FACTOR = (4.5 * np.pi) ** (1.0 / 3.0) / (const.physical_constants["Bohr radius"][0] * 1e10)

_GL_X, _GL_W = np.polynomial.legendre.leggauss(48)
_NODES = 0.5 * (_GL_X + 1.0)
_WEIGHTS = 0.5 * _GL_W
MODELS = ("einstein", "debye")


MIN_STATIC_POINTS = 4  # temperatures needed before a static σ² offset is fitted by default


def sigma2_einstein(t: np.ndarray | float, theta_e: float, reduced_mass: float) -> np.ndarray:
    """Correlated Einstein σ² (Å²) at temperatures ``t`` (K) for Einstein temperature ``theta_e`` (K) and
    reduced mass ``reduced_mass`` (amu)."""
    t = np.maximum(np.asarray(t, dtype=float), 1e-5)
    theta_e = max(float(theta_e), 1e-5)
    return EINSTEIN_FACTOR / (theta_e * reduced_mass * np.tanh(theta_e / (2.0 * t)))


def sigma2_debye(
    t: np.ndarray | float, theta_d: float, *, r: float, rnorman: float, masses: tuple[float, float]
) -> np.ndarray:
    """Correlated Debye σ² (Å²) of a single-scattering pair.

    Parameters
    ----------
    t : temperature(s), K
    theta_d : Debye temperature, K
    r : pair distance, Å
    rnorman : Norman radius, bohr (``ScatteringPath.rnorman``)
    masses : (m₁, m₂) atomic masses, amu
    """
    scalar = np.ndim(t) == 0
    t = np.atleast_1d(np.maximum(np.asarray(t, dtype=float), 1e-5))
    theta_d = max(float(theta_d), 1e-5)
    x = DEBYE_K_FACTOR * r / rnorman
    y = theta_d / t  # (n_t,)
    w = _NODES[None, :]
    coth = 1.0 / np.tanh(w * y[:, None] / 2.0)
    i0 = (w * coth) @ _WEIGHTS
    ix = ((np.sin(w * x) / x) * coth) @ _WEIGHTS
    m1, m2 = masses
    out = (DEBYE_FACTOR / theta_d) * ((1.0 / m1 + 1.0 / m2) * i0 - 2.0 * ix / np.sqrt(m1 * m2))
    return out[0] if scalar else out


@dataclass
class ThermalFit:
    """A σ²(T) fit.

    Attributes
    ----------
    model : "einstein" or "debye"
    theta, theta_err : Einstein or Debye temperature and its standard error, K
    static, static_err : temperature-independent offset σ²_static and its error, Å² (0, 0 when not fitted)
    t, sigma2, sigma2_err : ndarray of shape (n,): the data (K, Å², Å²)
    model_sigma2 : ndarray of shape (n,): fitted curve at ``t``
    z : ndarray of shape (n,): (σ²_i - curve_i) / combined standard error
    flagged : ndarray of shape (n,), bool: σ² in excess of the thermal curve (left out of the fit)
    redchi : reduced χ² of the points kept (NaN when no errors were given: the scatter sets the errors)
    n_used : points in the final fit
    static_fitted : whether σ²_static was a free parameter (see ``fit_static``)
    params : reduced mass (amu), distance (Å), Norman radius (bohr), masses used
    """

    model: str
    theta: float
    theta_err: float
    static: float
    static_err: float
    t: np.ndarray
    sigma2: np.ndarray
    sigma2_err: np.ndarray
    model_sigma2: np.ndarray
    z: np.ndarray
    flagged: np.ndarray
    redchi: float
    n_used: int
    params: dict = field(default_factory=dict)
    static_fitted: bool = False

    def curve(self, t: np.ndarray) -> np.ndarray:
        """Fitted σ²(T) (Å²) at temperatures ``t`` (K)."""
        return thermal_sigma2(self.model, t, self.theta, self.params) + self.static

    def table(self) -> str:
        lines = [f"{'T/K':>8} {'σ²/Å²':>9} {'±':>8} {'model':>9} {'z':>6}  flag"]
        for i in range(len(self.t)):
            lines.append(
                f"{self.t[i]:8.1f} {self.sigma2[i]:9.5f} {self.sigma2_err[i]:8.5f} "
                f"{self.model_sigma2[i]:9.5f} {self.z[i]:6.2f}  {'EXCESS' if self.flagged[i] else ''}"
            )
        name = "θ_E" if self.model == "einstein" else "θ_D"
        lines.append(
            f"{self.model}: {name} = {self.theta:.1f} ± {self.theta_err:.1f} K   σ²_static = "
            + (f"{self.static:.5f} ± {self.static_err:.5f} Å²" if self.static_fitted else "0 (not fitted)")
            + f"   reduced χ² = {self.redchi:.2f}   "
            f"points used {self.n_used}/{len(self.t)}"
        )
        return "\n".join(lines)


def thermal_sigma2(model: str, t: np.ndarray | float, theta: float, params: dict) -> np.ndarray:
    """σ²(T) without static offset for ``model``; ``params``: reduced_mass, or r, rnorman, masses."""
    if model == "einstein":
        return sigma2_einstein(t, theta, params["reduced_mass"])
    return sigma2_debye(t, theta, r=params["r"], rnorman=params["rnorman"], masses=tuple(params["masses"]))


def fit_thermal(
    t: np.ndarray,
    sigma2: np.ndarray,
    sigma2_err: np.ndarray | None = None,
    *,
    model: str = "einstein",
    reduced_mass: float | None = None,
    r: float | None = None,
    rnorman: float | None = None,
    masses: tuple[float, float] | None = None,
    fit_static: bool | str = "auto",
    theta0: float = 300.0,
    z_flag: float = 3.0,
    max_rounds: int = 5,
) -> ThermalFit:
    """Fit σ²(T) with the correlated Einstein or Debye model.

    Parameters
    ----------
    t : ndarray of shape (n,), temperatures in K (> 0)
    sigma2 : ndarray of shape (n,), σ² in Å²
    sigma2_err : ndarray of shape (n,), standard errors in Å² (None: equal weights, errors from the scatter)
    model : "einstein" (needs ``reduced_mass`` in amu) or "debye" (needs ``r`` Å, ``rnorman`` bohr,
        ``masses`` amu)
    fit_static : fit a temperature-independent σ²_static (True), fix it at 0 (False), or "auto" (default):
        fit it only with at least ``MIN_STATIC_POINTS`` (4) temperatures. With 3 temperatures θ and the
        offset are nearly degenerate (Cu 10-150 K: θ_E 236 ± 25 K with the offset, 227 ± 9 K without), so
        the offset is left out unless asked for
    theta0 : starting θ, K
    z_flag : flag points above the curve by more than this many combined standard errors
    max_rounds : flag-and-refit rounds

    Raises
    ------
    InputError
        mismatched or non-finite arrays, T ≤ 0, too few points, missing model constants, unknown model.
    """
    if model not in MODELS:
        raise InputError(f"model: must be one of {MODELS}, got {model!r}")
    if fit_static not in (True, False, "auto"):
        raise InputError(f"fit_static: must be True, False or 'auto', got {fit_static!r}")
    t = np.asarray(t, dtype=float)
    if fit_static == "auto":
        fit_static = t.size >= MIN_STATIC_POINTS
    s2 = np.asarray(sigma2, dtype=float)
    if t.ndim != 1 or t.shape != s2.shape:
        raise InputError(f"t, sigma2: must be 1-D of equal length, got {t.shape} and {s2.shape}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(s2))):
        raise InputError("t, sigma2: contain NaN or infinite values")
    if np.any(t <= 0):
        raise InputError("t: temperatures must be > 0 K")
    n_par = 2 if fit_static else 1
    if t.size < n_par + 1:
        raise InputError(
            f"t: need at least {n_par + 1} temperatures to fit {n_par} parameter(s), got {t.size}"
        )
    if sigma2_err is None:
        err = np.ones_like(s2)
        absolute = False
    else:
        err = np.asarray(sigma2_err, dtype=float)
        if err.shape != s2.shape or not np.all(np.isfinite(err)) or np.any(err <= 0):
            raise InputError("sigma2_err: must have the shape of sigma2 with finite values > 0")
        absolute = True
    if model == "einstein":
        if reduced_mass is None or not reduced_mass > 0:
            raise InputError("reduced_mass: the Einstein model needs the pair's reduced mass in amu (> 0)")
        params = dict(reduced_mass=float(reduced_mass))
    else:
        if r is None or rnorman is None or masses is None or len(masses) != 2:
            raise InputError(
                "r, rnorman, masses: the correlated Debye model needs the pair distance (Å), the "
                "Norman radius (bohr) and both masses (amu)"
            )
        params = dict(r=float(r), rnorman=float(rnorman), masses=[float(m) for m in masses])

    def fn(tt, theta):
        return thermal_sigma2(model, tt, theta, params)

    def solve(keep: np.ndarray):
        def resid(p):
            static = p[1] if fit_static else 0.0
            return (fn(t[keep], p[0]) + static - s2[keep]) / err[keep]

        p0 = [theta0, 0.0] if fit_static else [theta0]
        lo = [1.0, -0.05] if fit_static else [1.0]
        hi = [5000.0, 0.05] if fit_static else [5000.0]
        sol = least_squares(resid, p0, bounds=(lo, hi), method="trf", x_scale=[100.0, 0.001][:n_par])
        dof = max(int(keep.sum()) - n_par, 1)
        redchi = float(sol.fun @ sol.fun) / dof
        jtj = sol.jac.T @ sol.jac
        try:
            cov = np.linalg.inv(jtj)
        except np.linalg.LinAlgError:
            cov = np.linalg.pinv(jtj)
        # Absolute errors: inflate by the reduced χ² only when the scatter exceeds them; no errors: the
        # scatter sets the scale.
        cov = cov * (max(redchi, 1.0) if absolute else redchi)
        return sol.x, cov, redchi

    keep = np.ones(t.size, dtype=bool)
    for _ in range(max_rounds):
        p, cov, redchi = solve(keep)
        curve = fn(t, p[0]) + (p[1] if fit_static else 0.0)
        scale = err if absolute else np.full_like(err, np.sqrt(redchi))
        z = (s2 - curve) / scale
        new_keep = z <= z_flag
        if new_keep.sum() < n_par + 1 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    perr = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    return ThermalFit(
        model=model,
        theta=float(p[0]),
        theta_err=float(perr[0]),
        static=float(p[1]) if fit_static else 0.0,
        static_err=float(perr[1]) if fit_static else 0.0,
        t=t,
        sigma2=s2,
        sigma2_err=err if absolute else np.full_like(err, np.sqrt(redchi)),
        model_sigma2=curve,
        z=z,
        flagged=~keep,
        redchi=redchi if absolute else float("nan"),
        n_used=int(keep.sum()),
        params=params,
        static_fitted=bool(fit_static),
    )
