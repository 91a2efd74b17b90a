"""From sparse atoms to shells: grouping, least-squares refinement, standard errors, bootstrap over k.

Refinement model: shells s = 1..S, each with (N_s, R_s, σ²_s) and the FEFF path of its pair nearest R_s;
one ΔE0 shared by all shells (a per-shell ΔE0 makes close shells of one pair degenerate); S0² fixed, or
fitted when every N is fixed. The residual is the fit-space map of χ_data - Σ χ_s, minimised by
``scipy.optimize.least_squares`` (trust region reflective, bounds) with an analytic Jacobian (ΔE0 through
the q-derivatives of the FEFF splines).

Standard errors assume white noise of unknown variance ε² in χ(k) (not in k^w χ): the covariance is the
sandwich (JᵀJ)⁻¹ Jᵀ (ε² M Mᵀ) J (JᵀJ)⁻¹ for the fit-space map M, and ε² is estimated from the residual as
RSS / tr((I - H) M Mᵀ), H the hat matrix of J. In k space this is the textbook s² (JᵀJ)⁻¹ with k-weights;
in R space it accounts for the correlation of the oversampled χ(R) points exactly (for a linearised model),
where the usual n - p degrees of freedom would understate the errors. These are local (curvature)
errors of one minimum; :mod:`.minima` widens them when other minima of the same model compete.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from ..errors import InputError
from .dictionary import Dictionary
from .paths import ScatteringPath, path_basis
from .results import Shell, ShellFit
from .transform import FitSpace

R_BOUND = 0.25  # Å: R may move this far from its seed
SIGMA2_BOUNDS = (-0.002, 0.06)  # Å²
DE0_BOUNDS = (-20.0, 20.0)  # eV
S02_BOUNDS = (0.2, 2.0)


@dataclass
class ShellSeed:
    """Starting point of one shell: pair, N, R (Å), σ² (Å²), the path to use and the sparse N behind it."""

    pair: str
    n: float
    r: float
    sigma2: float
    path: ScatteringPath
    sparse_n: float = float("nan")


SEED_STARTS = ("moments", "mode", "narrow")


def group_atoms(
    dictionary: Dictionary,
    coef: np.ndarray,
    *,
    gap: float = 0.05,
    min_fraction: float = 0.03,
    start: str = "moments",
) -> list[ShellSeed]:
    """Group active atoms into shells: per pair, atoms closer in R than ``gap`` (Å) chain into one shell.

    N = Σ N_j always; R and σ² depend on ``start``:

    - "moments": R = Σ N_j R_j / N, σ² = Σ N_j σ²_j / N plus the variance of the R_j (the moments of the
      distribution);
    - "mode": R and σ² of the atom with the largest N;
    - "narrow": the smallest σ² among atoms holding at least 20 % of the shell's N, at their mean R.

    The three differ when the LASSO spreads a shell over several σ² (N-σ² correlation); the refinement is
    started from each and the lowest residual kept. Shells with less than ``min_fraction`` of the total N
    are dropped (noise atoms).
    """
    if start not in SEED_STARTS:
        raise InputError(f"start must be one of {SEED_STARTS}, got {start!r}")
    coef = np.asarray(coef, dtype=float)
    active = np.nonzero(coef > 0)[0]
    total = coef[active].sum()
    seeds: list[ShellSeed] = []
    for ip, pair in enumerate(dictionary.pairs):
        idx = active[dictionary.atom_pair[active] == ip]
        if idx.size == 0:
            continue
        idx = idx[np.argsort(dictionary.atom_r[idx], kind="stable")]
        r = dictionary.atom_r[idx]
        breaks = np.nonzero(np.diff(r) > gap + 1e-9)[0] + 1
        for group in np.split(np.arange(idx.size), breaks):
            j = idx[group]
            w = coef[j]
            n = w.sum()
            if n <= min_fraction * total:
                continue
            rj, s2j = dictionary.atom_r[j], dictionary.atom_sigma2[j]
            if start == "moments":
                rbar = float(np.dot(w, rj) / n)
                s2 = float(np.dot(w, s2j) / n + np.dot(w, (rj - rbar) ** 2) / n)
            elif start == "mode":
                top = int(np.argmax(w))
                rbar, s2 = float(rj[top]), float(s2j[top])
            else:
                big = w >= 0.2 * n
                s2 = float(np.min(s2j[big]))
                rbar = float(np.mean(rj[big][s2j[big] == s2]))
            ss = [p for p in dictionary.paths if p.pair == pair]
            path = min(ss, key=lambda p: abs(p.reff - rbar))
            seeds.append(ShellSeed(pair=pair, n=float(n), r=rbar, sigma2=s2, path=path, sparse_n=float(n)))
    return sorted(seeds, key=lambda s: s.r)


class ShellModel:
    """χ(k) of S shells with a shared ΔE0 and its Jacobian, for a fixed set of paths on a fixed k grid.

    Parameter vector: [N_1, R_1, σ²_1, ..., N_S, R_S, σ²_S, ΔE0] (+ S0² when fitted; N entries left out
    when ``fixed_n`` is given).
    """

    def __init__(
        self,
        paths: list[ScatteringPath],
        k: np.ndarray,
        *,
        s02: float = 1.0,
        fit_s02: bool = False,
        fixed_n: np.ndarray | None = None,
    ) -> None:
        self.paths = list(paths)
        self.k = np.asarray(k, dtype=float)
        self.s02 = float(s02)
        self.fit_s02 = bool(fit_s02)
        self.fixed_n = None if fixed_n is None else np.asarray(fixed_n, dtype=float)
        self.n_shells = len(self.paths)
        # The last E0-shifted FEFF tables per path: least_squares asks for the residual and the Jacobian
        # at the same parameters, so they share one spline evaluation (halves the refinement time).
        self._basis_cache: dict[int, tuple[float, tuple]] = {}

    # parameter bookkeeping ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        out = []
        for i in range(self.n_shells):
            if self.fixed_n is None:
                out.append(f"shell{i + 1}.N")
            out += [f"shell{i + 1}.R", f"shell{i + 1}.sigma2"]
        out.append("de0")
        if self.fit_s02:
            out.append("s02")
        return out

    def unpack(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
        theta = np.asarray(theta, dtype=float)
        per = 2 if self.fixed_n is not None else 3
        body = theta[: per * self.n_shells].reshape(self.n_shells, per)
        if self.fixed_n is None:
            n, r, s2 = body[:, 0], body[:, 1], body[:, 2]
        else:
            n, r, s2 = self.fixed_n, body[:, 0], body[:, 1]
        de0 = float(theta[per * self.n_shells])
        s02 = float(theta[per * self.n_shells + 1]) if self.fit_s02 else self.s02
        return n, r, s2, de0, s02

    def pack(self, n, r, s2, de0, s02=None) -> np.ndarray:
        cols = [r, s2] if self.fixed_n is not None else [n, r, s2]
        body = np.column_stack(cols).ravel()
        tail = [de0] + ([s02 if s02 is not None else self.s02] if self.fit_s02 else [])
        return np.concatenate([body, tail])

    # model ---------------------------------------------------------------------------------------------
    def _terms(self, theta: np.ndarray, with_derivative: bool = False):
        n, r, s2, de0, s02 = self.unpack(theta)
        out = []
        for i, path in enumerate(self.paths):
            cached = self._basis_cache.get(i)
            if cached is not None and cached[0] == de0:
                basis = cached[1]
            else:
                basis = path_basis(path, self.k, de0, with_derivative=True)
                self._basis_cache[i] = (de0, basis)
            base, p, pp = basis[:3]
            e = (
                base
                * np.exp(-2.0 * pp * s2[i] + 2j * p * (r[i] - path.reff - 2.0 * s2[i] / path.reff))
                / r[i] ** 2
            )
            out.append((e, p, pp, path.reff) + ((basis[3],) if with_derivative else ()))
        return n, r, s2, de0, s02, out

    def chi(self, theta: np.ndarray) -> np.ndarray:
        n, r, s2, de0, s02, terms = self._terms(theta)
        total = np.zeros_like(self.k)
        for i, term in enumerate(terms):
            total += n[i] * s02 * term[0].imag
        return total

    def chi_shells(self, theta: np.ndarray) -> np.ndarray:
        """χ(k) of each shell, shape (n_k, S)."""
        n, r, s2, de0, s02, terms = self._terms(theta)
        return np.column_stack([n[i] * s02 * term[0].imag for i, term in enumerate(terms)])

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        """∂χ/∂θ, shape (n_k, n_params), analytic (ΔE0 through the q-derivatives of the FEFF splines)."""
        n, r, s2, de0, s02, terms = self._terms(theta, with_derivative=True)
        cols = []
        total = np.zeros_like(self.k)
        d_de0 = np.zeros_like(self.k)
        for i, (e, p, pp, reff, (dlnbase, dp, dq)) in enumerate(terms):
            chi_i = n[i] * s02 * e.imag
            total += chi_i
            if self.fixed_n is None:
                cols.append(s02 * e.imag)
            cols.append(n[i] * s02 * (e * 2j * p).imag - 2.0 * chi_i / r[i])
            cols.append(n[i] * s02 * (e * (-2.0 * pp - 4j * p / reff)).imag)
            dr = r[i] - reff - 2.0 * s2[i] / reff
            dlne = dlnbase + dp * (-4.0 * p * s2[i] + 2j * dr)
            d_de0 += n[i] * s02 * (e * dlne).imag * dq
        cols.append(d_de0)
        if self.fit_s02:
            cols.append(total / s02)
        return np.column_stack(cols)

    def bounds(self, seeds_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = [], []
        for r0 in seeds_r:
            if self.fixed_n is None:
                lo.append(0.0)
                hi.append(np.inf)
            lo += [r0 - R_BOUND, SIGMA2_BOUNDS[0]]
            hi += [r0 + R_BOUND, SIGMA2_BOUNDS[1]]
        lo.append(DE0_BOUNDS[0])
        hi.append(DE0_BOUNDS[1])
        if self.fit_s02:
            lo.append(S02_BOUNDS[0])
            hi.append(S02_BOUNDS[1])
        return np.asarray(lo), np.asarray(hi)


def start_vector(
    model: ShellModel, seeds: list[ShellSeed], de0: float, s02: float
) -> tuple[np.ndarray, tuple]:
    """Starting parameters from seeds (clipped into the bounds) and the bounds."""
    theta0 = model.pack(
        np.array([s.n for s in seeds]),
        np.array([s.r for s in seeds]),
        np.array([min(max(s.sigma2, 0.0), 0.05) for s in seeds]),
        de0,
        s02,
    )
    lo, hi = model.bounds(np.array([s.r for s in seeds]))
    theta0 = np.clip(theta0, lo + 1e-9, np.where(np.isfinite(hi), hi - 1e-9, theta0 + 1))
    return theta0, (lo, hi)


def fit_weighted(
    model: ShellModel,
    fit_space: FitSpace,
    chi: np.ndarray,
    theta0: np.ndarray,
    bounds: tuple,
    weights: np.ndarray | None = None,
    *,
    max_nfev: int | None = None,
):
    """``least_squares`` of M·diag(weights)·(χ - model): weights select or resample k points (None: all).

    Returns scipy's ``OptimizeResult`` (``x``, ``fun`` the fit-space residual, ``success``, ``message``).
    """
    m = fit_space.matrix if weights is None else fit_space.matrix * weights[None, :]
    y = m @ chi

    def resid(t):
        return m @ model.chi(t) - y

    def jac(t):
        return m @ model.jacobian(t)

    return least_squares(
        resid, theta0, jac=jac, bounds=bounds, method="trf", x_scale="jac", max_nfev=max_nfev
    )


def sandwich_covariance(jf: np.ndarray, m: np.ndarray, rss: float) -> tuple[np.ndarray, float]:
    """Covariance per unit noise variance, and the noise implied by the residual, for white noise in χ.

    Parameters
    ----------
    jf : ndarray of shape (n_out, n_params): Jacobian of the fit-space model (M J_k)
    m : ndarray of shape (n_out, n_k): fit-space map
    rss : residual sum of squares in the fit space

    Returns
    -------
    (C, σ̂): C (n_params, n_params) with Cov(θ) = ε² C for noise variance ε² in χ(k), and
    σ̂ = sqrt(RSS / tr((I - H) M Mᵀ)), the ε implied by the residual.
    """
    jtj = jf.T @ jf
    try:
        jtj_inv = np.linalg.inv(jtj)
    except np.linalg.LinAlgError:
        jtj_inv = np.linalg.pinv(jtj)
    jt_mmt_j = jf.T @ (m @ (m.T @ jf))  # Jᵀ M Mᵀ J
    # tr((I - H) M Mᵀ) = tr(M Mᵀ) - tr((JᵀJ)⁻¹ Jᵀ M Mᵀ J)
    trace = float(np.sum(m * m) - np.trace(jtj_inv @ jt_mmt_j))
    unit = jtj_inv @ jt_mmt_j @ jtj_inv
    return unit, float(np.sqrt(rss / max(trace, 1e-300)))


def refine_shells(
    fit_space: FitSpace,
    chi: np.ndarray,
    seeds: list[ShellSeed],
    *,
    s02: float = 1.0,
    fit_s02: bool = False,
    fixed_n: list[float] | None = None,
    de0: float = 0.0,
    noise: float | None = None,
    n_bootstrap: int = 0,
    rng: np.random.Generator | None = None,
    max_nfev: int | None = None,
) -> ShellFit:
    """Least-squares refinement of shells seeded by the sparse solution.

    Parameters
    ----------
    fit_space : the fit-space map and its k grid
    chi : ndarray of shape (n_k,): data χ on ``fit_space.k``
    seeds : starting shells (from :func:`group_atoms`)
    s02 : amplitude reduction factor (fixed unless ``fit_s02``)
    fit_s02 : refine S0²; then ``fixed_n`` (one N per shell) is required
    de0 : starting E0 shift, in eV
    noise : noise standard deviation in χ(k) for the reduced χ² (NaN reported when None)
    n_bootstrap : number of bootstrap refits over k points (0 = none)
    rng : random generator for the bootstrap (required when n_bootstrap > 0)
    max_nfev : cap on model evaluations of the main fit (None: scipy's default)
    """
    if not seeds:
        raise InputError("seeds: no shell to refine (the sparse solution is empty)")
    if fit_s02 and (fixed_n is None or len(fixed_n) != len(seeds)):
        raise InputError(
            "fit_s02=True needs fixed_n with one coordination number per shell (N and S0² are "
            "fully correlated otherwise)"
        )
    if n_bootstrap > 0 and rng is None:
        raise InputError("rng: a numpy Generator is required when n_bootstrap > 0")
    model = ShellModel(
        [s.path for s in seeds],
        fit_space.k,
        s02=s02,
        fit_s02=fit_s02,
        fixed_n=None if fixed_n is None else np.asarray(fixed_n, float),
    )
    m = fit_space.matrix
    y = m @ chi
    theta0, (lo, hi) = start_vector(model, seeds, de0, s02)

    def fit(theta_start: np.ndarray, weights: np.ndarray | None = None, max_nfev: int | None = None):
        return fit_weighted(model, fit_space, chi, theta_start, (lo, hi), weights, max_nfev=max_nfev)

    sol = fit(theta0, max_nfev=max_nfev)
    theta = sol.x
    resid = sol.fun
    rss = float(resid @ resid)
    jf = m @ model.jacobian(theta)
    unit_cov, sigma_resid = sandwich_covariance(jf, m, rss)
    # Error scale: the noise implied by the residual (includes misfit, as feffit's scaling by reduced χ²),
    # but never below the independent noise estimate: an R-space residual has only ~N_idp - p degrees of
    # freedom, so its noise estimate alone scatters by tens of percent between noise realisations.
    scale = sigma_resid if noise is None or not noise > 0 else max(sigma_resid, float(noise))
    cov = scale**2 * unit_cov
    err = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    # rss rises by ε²·Δθᵀ A Δθ away from the minimum while the deviance is Δθᵀ Cov⁻¹ Δθ (Cov = ε² A⁻¹BA⁻¹):
    # their ratio averaged over the parameter directions, tr(A⁻¹B)/p, converts a difference of rss between
    # minima into deviance units (exact for B ∝ A, e.g. k space at k⁰).
    deviance_unit = scale**2 * float(np.trace(unit_cov @ (jf.T @ jf))) / len(theta)
    names = model.names()

    boot = np.full((0, len(theta)), np.nan)
    if n_bootstrap > 0:
        n_k = len(fit_space.k)
        rows = []
        for _ in range(n_bootstrap):
            counts = rng.multinomial(n_k, np.full(n_k, 1.0 / n_k)).astype(float)
            w = np.sqrt(counts) if fit_space.space == "k" else counts
            rows.append(fit(theta, w, max_nfev=50).x)
        boot = np.asarray(rows)
    # Half the 16-84 % range: the standard deviation for a normal spread, but not blown up by the few
    # refits that run off along a degenerate direction (close shells of one pair).
    if len(boot) > 1:
        lo16, hi84 = np.percentile(boot, [15.865, 84.135], axis=0)
        boot_err = 0.5 * (hi84 - lo16)
    else:
        boot_err = np.full(len(theta), np.nan)

    n, r, s2, de0_fit, s02_fit = model.unpack(theta)
    shells = []

    def pick(i: int, name: str, arr: np.ndarray) -> float:
        key = f"shell{i + 1}.{name}"
        return float(arr[names.index(key)]) if key in names else 0.0

    for i, seed in enumerate(seeds):
        shells.append(
            Shell(
                pair=seed.pair,
                n=float(n[i]),
                r=float(r[i]),
                sigma2=float(s2[i]),
                n_err=pick(i, "N", err),
                r_err=pick(i, "R", err),
                sigma2_err=pick(i, "sigma2", err),
                n_err_boot=pick(i, "N", boot_err) if len(boot) else float("nan"),
                r_err_boot=pick(i, "R", boot_err) if len(boot) else float("nan"),
                sigma2_err_boot=pick(i, "sigma2", boot_err) if len(boot) else float("nan"),
                path_label=seed.path.label,
                sparse_n=seed.sparse_n,
            )
        )
    idx_de0 = names.index("de0")
    ydot = float(y @ y)
    noise_ = float(noise) if noise is not None and noise > 0 else float("nan")
    return ShellFit(
        shells=shells,
        de0=de0_fit,
        de0_err=float(err[idx_de0]),
        s02=s02_fit,
        s02_err=float(err[names.index("s02")]) if fit_s02 else 0.0,
        r_factor=rss / ydot if ydot > 0 else float("nan"),
        redchi=(sigma_resid / noise_) ** 2 if np.isfinite(noise_) else float("nan"),
        noise=noise_,
        sigma_resid=sigma_resid,
        n_independent=fit_space.n_independent,
        n_params=len(theta),
        theta=theta,
        covariance=cov,
        param_names=names,
        model_chi=model.chi(theta),
        success=bool(sol.success),
        message=str(sol.message),
        de0_err_boot=float(boot_err[idx_de0]) if len(boot) else float("nan"),
        n_bootstrap=int(len(boot)),
        rss=rss,
        deviance_unit=deviance_unit,
    )
