"""Result dataclasses of the SpM engine."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Shell:
    """One refined coordination shell.

    Attributes
    ----------
    pair : absorber-scatterer label, e.g. "Cu-Cu"
    n, r, sigma2 : coordination number (with S0² as given), distance (Å), mean-square relative
        displacement (Å²)
    n_err, r_err, sigma2_err : standard errors from the covariance (sandwich estimate, white noise in χ;
        widened by the refinement's other minima the data do not rule out, see ``spm.minima``)
    n_err_boot, r_err_boot, sigma2_err_boot : standard deviations over bootstrap refits (NaN if not run)
    path_label : FEFF path that supplied amplitude and phase
    sparse_n : total N of the sparse-model atoms grouped into this shell (before refinement)
    """

    pair: str
    n: float
    r: float
    sigma2: float
    n_err: float
    r_err: float
    sigma2_err: float
    n_err_boot: float = float("nan")
    r_err_boot: float = float("nan")
    sigma2_err_boot: float = float("nan")
    path_label: str = ""
    sparse_n: float = float("nan")

    def as_dict(self) -> dict[str, float | str]:
        return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in self.__dict__.items()}


@dataclass
class ShellFit:
    """Least-squares refinement of shells.

    Attributes
    ----------
    shells : refined shells, in the order of their seeds (by starting R)
    de0, de0_err, de0_err_boot : E0 shift shared by all shells (eV)
    s02, s02_err : amplitude reduction factor (fixed: error 0)
    r_factor : Σ residual² / Σ data² in the fit space
    redchi : reduced χ²: noise variance implied by the residual over the noise variance ``noise`` (≈ 1
        when only noise is left; NaN when no noise estimate)
    noise : noise standard deviation in χ(k) used for ``redchi``
    sigma_resid : noise standard deviation in χ(k) implied by the residual
    n_independent : 2ΔkΔR/π + 1
    n_params : number of refined parameters
    theta : ndarray of shape (n_params,), the refined parameters in ``param_names`` order
    covariance : ndarray of shape (n_params, n_params), parameter order ``param_names``
    param_names : e.g. ["shell1.N", "shell1.R", "shell1.sigma2", ..., "de0"]
    model_chi : ndarray of shape (n_k,), χ(k) of the refined model on the fit grid
    success, message : optimiser status
    n_bootstrap : bootstrap refits run
    rss : fit-space residual sum of squares (the objective at ``theta``)
    deviance_unit : the change of ``rss`` worth one unit of deviance (-2 log likelihood) here: ε̂²·tr(A⁻¹B)/p
        for A = JᵀJ, B = Jᵀ M Mᵀ J (ε̂ the error scale); compares distinct minima of one refinement
    """

    shells: list[Shell]
    de0: float
    de0_err: float
    s02: float
    s02_err: float
    r_factor: float
    redchi: float
    noise: float
    sigma_resid: float
    n_independent: float
    n_params: int
    theta: np.ndarray
    covariance: np.ndarray
    param_names: list[str]
    model_chi: np.ndarray
    success: bool
    message: str
    de0_err_boot: float = float("nan")
    n_bootstrap: int = 0
    rss: float = float("nan")
    deviance_unit: float = float("nan")


@dataclass
class SpmResult:
    """Everything an SpM analysis of one χ(k) produces.

    Attributes
    ----------
    shells : refined shell table (sorted by R); ``fit`` holds statistics
    fit : the :class:`ShellFit`
    distribution : ndarray of shape (n_pairs, n_r, n_s): sparse N(pair, R, σ²) at the chosen α
        (N per neighbour with S0² = 1, the LASSO's shrunken values)
    pairs, r_grid, sigma2_grid : axes of ``distribution`` (Å, Å²)
    alpha : regularisation chosen by cross-validation; ``alphas``, ``cv_mean``, ``cv_se`` the CV curve
    k : ndarray of shape (n_k,), 1/Å: fit grid; ``chi_data``, ``chi_sparse``, ``chi_fit`` χ(k) on it
    r : ndarray of shape (n_r_out,), Å: R grid of the output transforms; ``chir_data``, ``chir_fit``
        complex χ(R) (Hanning window over the fit k range, xraylarch convention)
    params : the settings actually used (JSON-able)
    diagnostics : timings, solver counts, grouping and pruning notes (JSON-able)
    """

    shells: list[Shell]
    fit: ShellFit
    distribution: np.ndarray
    pairs: tuple[str, ...]
    r_grid: np.ndarray
    sigma2_grid: np.ndarray
    alpha: float
    alphas: np.ndarray
    cv_mean: np.ndarray
    cv_se: np.ndarray
    k: np.ndarray
    chi_data: np.ndarray
    chi_sparse: np.ndarray
    chi_fit: np.ndarray
    r: np.ndarray
    chir_data: np.ndarray
    chir_fit: np.ndarray
    params: dict = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)

    def shell_table(self) -> str:
        """The shell table as fixed-width text."""
        head = (
            f"{'shell':>5} {'pair':>8} {'N':>7} {'±':>6} {'R/Å':>7} {'±':>6} {'σ²/Å²':>8} {'±':>7}"
            f" {'±boot N':>8} {'R':>6} {'σ²':>7}"
        )
        lines = [head]
        for i, s in enumerate(self.shells, start=1):
            lines.append(
                f"{i:>5} {s.pair:>8} {s.n:7.2f} {s.n_err:6.2f} {s.r:7.4f} {s.r_err:6.4f} {s.sigma2:8.5f}"
                f" {s.sigma2_err:7.5f} {s.n_err_boot:8.2f} {s.r_err_boot:6.4f} {s.sigma2_err_boot:7.5f}"
            )
        f = self.fit
        lines.append(
            f"ΔE0 = {f.de0:.2f} ± {f.de0_err:.2f} eV   S0² = {f.s02:.3f}   R-factor = {f.r_factor:.4f}   "
            f"reduced χ² = {f.redchi:.2f}   N_idp = {f.n_independent:.1f}   α = {self.alpha:.3g}"
        )
        return "\n".join(lines)
