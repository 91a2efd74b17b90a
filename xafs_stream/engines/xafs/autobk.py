"""AUTOBK background removal: μ0(E) as a cubic spline in k whose knots are set so that χ(R) below Rbkg is
minimal (Newville, Līviņš, Yacoby, Rehr, Stern, Phys. Rev. B 47, 14126 (1993); IFEFFIT / Larch ``autobk``).

Knots: nspl = 1 + 2 Rbkg (kmax - kmin) / pi, evenly spaced in k (clamped to 5..128); the fitted quantity is
Re/Im χ(R) for R < Rbkg of the k-weighted, windowed χ(k) = (μ - μ0) interpolated onto the 0.05 Å⁻¹ grid,
plus "clamps" that pull χ(k) to zero at the first and last ``nclamp`` points.

Why not Larch's code path (a general least-squares optimiser on finite differences, one FFT per
evaluation): χ(R) is linear in the spline coefficients, so its Jacobian is an exact, constant matrix
(spline basis -> interpolation -> windowed DFT of the first Rbkg / ΔR points), built once per spectrum. Only
the clamp weight, which scales with the mean χ(R)², makes the problem non-linear: the minimiser with that
weight frozen (one linear least-squares solve) is refined by the same MINPACK Levenberg-Marquardt
(``scipy.optimize.leastsq``) with the exact Jacobian, which then stops after 2-8 evaluations instead of
hundreds of FFTs. Measured (benchmarks/bench_preprocess.py, shared machine): ~1 ms instead of ~7-10 ms per
spectrum, with χ(k) equal to Larch's to 1e-8 relative for the default settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import fft as sfft
from scipy.interpolate import BSpline, splev, splrep
from scipy.optimize import leastsq

from ..errors import InputError
from ._validate import SpectrumErrors, check_energy, check_finite_rows, check_stack, per_spectrum
from .kspace import ETOK, KSTEP, NFFT
from .normalize import pre_edge
from .xft import ftwindow, window_name

_ORDER = 3


@dataclass
class AutobkResult:
    """Background and χ(k) of one spectrum or a stack.

    Attributes
    ----------
    k : ndarray of shape (n_k,), Å⁻¹, uniform (step 0.05) from 0; for a stack, up to the smallest kmax
    chi : ndarray of shape (n_k,) or (n_spectra, n_k), normalised by the edge step (NaN rows for failures)
    bkg : ndarray, same shape as mu: μ0(E) (equal to μ below E0)
    chie : ndarray, same shape as mu: (μ - μ0) / edge step on the energy grid
    e0, edge_step : float or ndarray of shape (n_spectra,)
    ok, errors : per-spectrum status (see :func:`pre_edge`)
    params_used : rbkg, kweight, kmin, kmax, dk, window, nknots, nclamp, clamp_lo, clamp_hi, kstep, nfft
        (kmax and nknots per spectrum for a stack)
    diagnostics : per spectrum: knots_k, knots_y (spline coefficients), chisqr, redchi, nfev, irbkg
    """

    k: np.ndarray
    chi: np.ndarray
    bkg: np.ndarray
    chie: np.ndarray
    e0: float | np.ndarray
    edge_step: float | np.ndarray
    ok: np.ndarray
    errors: dict[int, str]
    params_used: dict
    diagnostics: list[dict] = field(default_factory=list)


@dataclass
class _Fit:
    chi: np.ndarray  # on the uniform k grid, in units of μ
    bkg: np.ndarray  # on energy[iek0 : iek0 + len(bkg)]
    iek0: int
    kmax: float
    nspl: int
    diag: dict


def _index_of(grid: np.ndarray, value: float) -> int:
    return int(max(np.searchsorted(grid, value, side="right") - 1, 0))


def _autobk_one(
    energy: np.ndarray,
    mu: np.ndarray,
    e0: float,
    *,
    rbkg: float,
    kweight: float,
    kmin: float,
    kmax: float | None,
    dk: float,
    window: str,
    nknots: int | None,
    nclamp: int,
    clamp_lo: float,
    clamp_hi: float,
    kstep: float,
    nfft: int,
) -> _Fit:
    """Kernel for one clean spectrum (μ in its own units); raises InputError when the data cannot carry it."""
    iek0 = _index_of(energy, e0)
    rgrid = np.pi / (kstep * nfft)
    rbkg = max(rbkg, 2 * rgrid)
    rel = energy[iek0:] - e0
    kraw = np.sign(rel) * np.sqrt(ETOK * np.abs(rel))
    kmax_data = float(kraw[-1])
    kmax_eff = kmax_data if kmax is None or kmax < 0 else max(0.0, min(kmax_data, kmax))
    if kmax_eff - kmin < 1.0:
        raise InputError(
            f"k range: data reach only k = {kmax_data:.2f} Å⁻¹ above E0 = {e0:.2f} eV "
            f"(kmin = {kmin:g}); need at least 1 Å⁻¹ of EXAFS"
        )
    kout = kstep * np.arange(int(1.01 + kmax_eff / kstep))
    iemax = min(energy.size, 2 + _index_of(energy, e0 + kmax_eff**2 / ETOK)) - 1
    nraw = iemax - iek0 + 1
    kraw_fit, mu_fit = kraw[:nraw], mu[iek0 : iemax + 1]

    span = kmax_eff - kmin
    nspl = 1 + int(2 * rbkg * span / np.pi)
    irbkg = int(1 + (nspl - 1) * np.pi / (2 * rgrid * span))
    if nknots is not None:
        nspl = int(nknots)
    nspl = max(5, min(128, nspl))
    # knots at the measured k nearest to evenly spaced targets; initial values from μ near each knot (Larch)
    targets = kmin + np.arange(nspl) * span / (nspl - 1)
    near = np.abs(kraw[None, :] - targets[:, None]).argmin(axis=1)
    near = np.unique(near)
    if near.size < 5:
        raise InputError(
            f"k range: only {near.size} distinct data points for the background spline knots "
            f"between k = {kmin:g} and {kmax_eff:.2f} Å⁻¹; need at least 5"
        )
    nspl = near.size
    knots_k = kraw[near]
    knots_y = (
        2 * mu[near + iek0]
        + mu[np.minimum(kraw.size - 1, near + 5) + iek0]
        + mu[np.maximum(0, near - 5) + iek0]
    ) / 4.0
    t, c_init, _ = splrep(knots_k, knots_y, k=_ORDER)
    c_init = np.asarray(c_init[:nspl], dtype=float)
    spline_basis = BSpline(t, np.eye(nspl), _ORDER, extrapolate=True)  # column j: B-spline j
    basis = spline_basis(kraw_fit)  # (nraw, nspl)
    # χ on the uniform grid = the not-a-knot cubic interpolant of (μ - B c) through the data (FITPACK, as
    # Larch's UnivariateSpline(s=0)), linear in c. That interpolant reproduces any cubic spline whose knots
    # are data points inside kraw_fit[2:-2], which the background knots are (they sit on measured k): then
    # the interpolated B is B itself on kout. Otherwise each column is interpolated.
    chi_mu = splev(kout, splrep(kraw_fit, mu_fit, k=3, s=0))
    interior = near[2:-2]
    if interior.size == 0 or (interior[0] >= 2 and interior[-1] <= nraw - 3):
        chi_basis = spline_basis(kout)
    else:
        chi_basis = np.column_stack([splev(kout, splrep(kraw_fit, col, k=3, s=0)) for col in basis.T])

    # Re/Im of the windowed, k-weighted transform of χ_μ and of each basis column, for R < Rbkg
    win = kout**kweight * ftwindow(kout, xmin=kmin, xmax=kmax_eff, dx=dk, dx2=dk, window=window)
    ft = (kstep / np.sqrt(np.pi)) * sfft.rfft(
        win[:, None] * np.column_stack([chi_mu, chi_basis]), n=nfft, axis=0
    )
    ft_mu, ft_basis = ft[:irbkg, 0], ft[:irbkg, 1:]
    y = np.concatenate([ft_mu.real, ft_mu.imag])
    a = np.concatenate([ft_basis.real, ft_basis.imag])
    ends = np.r_[0:nclamp, kout.size - nclamp : kout.size]
    weights = np.r_[np.full(nclamp, abs(clamp_lo)), np.full(nclamp, abs(clamp_hi))]
    z, d = chi_mu[ends], chi_basis[ends]
    nres = y.size
    if nres + (ends.size if nclamp else 0) < nspl:
        raise InputError(f"nknots: {nspl} spline knots exceed the {nres} fitted χ(R) values; lower nknots")

    def residual(c: np.ndarray) -> np.ndarray:
        r1 = y - a @ c
        if nclamp == 0:
            return r1
        scale = 0.1 + 10.0 * (r1 @ r1) / nres
        return np.concatenate([r1, weights * scale * (z - d @ c)])

    def jacobian(c: np.ndarray) -> np.ndarray:
        if nclamp == 0:
            return -a
        r1 = y - a @ c
        scale = 0.1 + 10.0 * (r1 @ r1) / nres
        dscale = -(20.0 / nres) * (r1 @ a)
        j2 = weights[:, None] * (-scale * d + np.outer(z - d @ c, dscale))
        return np.vstack([-a, j2])

    # start from the exact minimiser with the clamp weight frozen at its value for Larch's initial knots:
    # the remaining non-linearity (the weight) then needs one or two Levenberg-Marquardt steps
    r0 = y - a @ c_init
    frozen = weights * (0.1 + 10.0 * (r0 @ r0) / nres) if nclamp else np.zeros(0)
    c_start = np.linalg.lstsq(
        np.vstack([a, frozen[:, None] * d]), np.concatenate([y, frozen * z]), rcond=None
    )[0]
    coefs, _, info, _, _ = leastsq(
        residual,
        c_start,
        Dfun=jacobian,
        full_output=True,
        ftol=1e-6,
        xtol=1e-6,
        gtol=0.0,
        maxfev=200 * (nspl + 1),
    )
    res = residual(coefs)
    chisqr = float(res @ res)
    dof = 2 * irbkg + 2 * nclamp - nspl
    chi = chi_mu - chi_basis @ coefs
    bkg = basis @ coefs
    diag = {
        "knots_k": knots_k.tolist(),
        "knots_y": coefs.tolist(),
        "chisqr": chisqr,
        "redchi": chisqr / dof if dof > 0 else float("nan"),
        "nfev": int(info["nfev"]),
        "irbkg": irbkg,
    }
    return _Fit(chi=chi, bkg=bkg, iek0=iek0, kmax=kmax_eff, nspl=nspl, diag=diag)


def autobk(
    energy: np.ndarray,
    mu: np.ndarray,
    *,
    e0: float | np.ndarray | None = None,
    edge_step: float | np.ndarray | None = None,
    rbkg: float = 1.0,
    kweight: float = 2,
    kmin: float = 0.0,
    kmax: float | None = None,
    dk: float = 0.1,
    window: str = "hanning",
    nknots: int | None = None,
    nclamp: int = 3,
    clamp_lo: float = 0.0,
    clamp_hi: float = 1.0,
    kstep: float = KSTEP,
    nfft: int = NFFT,
) -> AutobkResult:
    """AUTOBK background removal, giving χ(k) on a uniform k grid.

    Parameters
    ----------
    energy : ndarray of shape (n,), eV, strictly increasing
    mu : ndarray of shape (n,) or (n_spectra, n)
    e0 : edge energy, eV (scalar or (n_spectra,)); default from :func:`pre_edge`
    edge_step : χ is divided by it; default from :func:`pre_edge`
    rbkg : Å; χ(R) below it is treated as background (knot spacing pi / (2 rbkg))
    kweight : k-weight of χ(k) in the fitted χ(R)
    kmin, kmax : k range of the spline, Å⁻¹ (kmax default: end of data)
    dk, window : k window of the fitted χ(R)
    nknots : number of spline knots (default from rbkg and the k range; 5..128)
    nclamp, clamp_lo, clamp_hi : number of end points and weights pulling χ(k) to 0 at low and high k
    kstep, nfft : k grid step (Å⁻¹) and FFT length

    Returns
    -------
    AutobkResult. One spectrum: failures raise InputError. Stack: failed spectra are flagged in ``ok`` /
    ``errors`` and filled with NaN, the rest are unaffected.
    """
    e = check_energy(energy)
    mu2, single = check_stack(mu, e.size)
    m = mu2.shape[0]
    checks = [
        ("rbkg", rbkg, rbkg > 0),
        ("kmin", kmin, kmin >= 0),
        ("dk", dk, dk >= 0),
        ("kstep", kstep, kstep > 0),
        ("clamp_lo", clamp_lo, True),
        ("clamp_hi", clamp_hi, True),
    ]
    for name, value, good in checks:
        if not (np.isfinite(value) and good):
            raise InputError(f"{name}: invalid value {value!r}")
    if kmax is not None and not (np.isfinite(kmax) and kmax > kmin):
        raise InputError(f"kmax: must be greater than kmin = {kmin}, got {kmax!r}")
    if nknots is not None and not (5 <= int(nknots) <= 128):
        raise InputError(f"nknots: must be 5..128, got {nknots!r}")
    if int(nclamp) < 0:
        raise InputError(f"nclamp: must be >= 0, got {nclamp!r}")
    window_name(window)

    status = SpectrumErrors(m)
    check_finite_rows(mu2, e, status)
    e0_arr = per_spectrum(e0, m, name="e0")
    step_arr = per_spectrum(edge_step, m, name="edge_step")
    if e0_arr is None or step_arr is None:
        good = np.flatnonzero(status.ok)
        pe = pre_edge(e, mu2[good], e0=None if e0_arr is None else e0_arr[good])
        if e0_arr is None:
            e0_arr = np.full(m, np.nan)
            e0_arr[good] = pe.e0
        if step_arr is None:
            step_arr = np.full(m, np.nan)
            step_arr[good] = pe.edge_step
        for i, msg in pe.errors.items():
            status.fail(good[i], msg)
    outside = status.ok & (~np.isfinite(e0_arr) | (e0_arr < e[0]) | (e0_arr > e[-1]))
    status.fail_each(
        outside, lambda i: f"e0: {e0_arr[i]:.2f} eV is outside the data ({e[0]:.2f} .. {e[-1]:.2f} eV)"
    )
    status.fail_each(
        status.ok & ~(np.isfinite(step_arr) & (step_arr > 0)),
        lambda i: f"edge_step: must be > 0, got {step_arr[i]!r}",
    )

    fits: dict[int, _Fit] = {}
    for i in np.flatnonzero(status.ok).tolist():
        try:
            fits[i] = _autobk_one(
                e,
                mu2[i],
                float(e0_arr[i]),
                rbkg=rbkg,
                kweight=kweight,
                kmin=kmin,
                kmax=kmax,
                dk=dk,
                window=window,
                nknots=nknots,
                nclamp=int(nclamp),
                clamp_lo=clamp_lo,
                clamp_hi=clamp_hi,
                kstep=kstep,
                nfft=nfft,
            )
        except InputError as exc:
            status.fail(i, str(exc))
        except (np.linalg.LinAlgError, ValueError) as exc:  # singular spline systems and the like
            status.fail(i, f"background fit failed: {exc}")
    status.raise_if_single(single)

    n_k = min((f.chi.size for f in fits.values()), default=1)
    k = kstep * np.arange(n_k)
    chi = np.full((m, n_k), np.nan)
    bkg = np.full(mu2.shape, np.nan)
    chie = np.full(mu2.shape, np.nan)
    diagnostics: list[dict] = [{} for _ in range(m)]
    kmax_used = np.full(m, np.nan)
    nspl_used = np.zeros(m, dtype=int)
    for i, f in fits.items():
        chi[i] = f.chi[:n_k] / step_arr[i]
        b = mu2[i].copy()
        b[f.iek0 : f.iek0 + f.bkg.size] = f.bkg
        bkg[i] = b
        chie[i] = (mu2[i] - b) / step_arr[i]
        diagnostics[i] = f.diag
        kmax_used[i], nspl_used[i] = f.kmax, f.nspl
    e0_arr = np.where(status.ok, e0_arr, np.nan)
    step_arr = np.where(status.ok, step_arr, np.nan)

    def pick(a: np.ndarray):
        return a[0] if single else a

    params = {
        "rbkg": float(rbkg),
        "kweight": float(kweight),
        "kmin": float(kmin),
        "kmax": float(kmax_used[0]) if single else kmax_used,
        "dk": float(dk),
        "window": window,
        "nknots": int(nspl_used[0]) if single else nspl_used,
        "nclamp": int(nclamp),
        "clamp_lo": float(clamp_lo),
        "clamp_hi": float(clamp_hi),
        "kstep": float(kstep),
        "nfft": int(nfft),
    }
    return AutobkResult(
        k=k,
        chi=pick(chi),
        bkg=pick(bkg),
        chie=pick(chie),
        e0=float(e0_arr[0]) if single else e0_arr,
        edge_step=float(step_arr[0]) if single else step_arr,
        ok=status.ok,
        errors=dict(status.messages),
        params_used=params,
        diagnostics=diagnostics,
    )
