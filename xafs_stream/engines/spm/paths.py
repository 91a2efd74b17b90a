"""Scattering paths as arrays and the EXAFS equation for one path.

A :class:`ScatteringPath` holds what a FEFF ``feffNNNN.dat`` file tabulates as functions of k (amplitude,
phase, mean free path, reduction factor, real part of the complex momentum) plus the path geometry. Reading
the files is I/O and lives in :mod:`xafs_stream.io.feff`; this module only evaluates the EXAFS equation.

The equation is the one xraylarch's ``feffdat`` evaluates (Gaussian disorder, no cumulants beyond σ²), so
a fit here and a ``feffit`` of the same path and parameters model the same χ(k)::

    q    = sqrt(k² - ΔE0·0.2625)                          (E0-shifted wavenumber)
    p    = rep(q) + i/λ(q)                                 (complex momentum)
    χ(k) = Im[ N S0² |f(q)| / (q (reff+ΔR)²)
               · exp(-2 reff Im p - 2 p² σ²)
               · exp(i (2 q reff + δ(q) + 2 p (ΔR - 2σ²/reff))) ]

with R = reff + ΔR. The FEFF tables are interpolated with not-a-knot cubic splines, the same spline that
``UnivariateSpline(s=0)`` (used by xraylarch) builds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy.interpolate import make_interp_spline

from ..errors import InputError

# ħ²/(2 m_e) in eV·Å² and its inverse: k = sqrt(ETOK · (E - E0)).
KTOE = 3.8099819442818976
ETOK = 1.0 / KTOE


@dataclass(frozen=True)
class PathAtom:
    """One atom of a path: element symbol, atomic number, FEFF potential index, mass (amu), position (Å)."""

    symbol: str
    z: int
    ipot: int
    mass: float
    xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(eq=False)
class ScatteringPath:
    """FEFF path data on FEFF's own k grid.

    Attributes
    ----------
    k : ndarray of shape (n,), in 1/Å, increasing (FEFF's grid, not uniform)
    amp : ndarray of shape (n,), effective amplitude |f_eff|·(reduction factor), in Å
    phase : ndarray of shape (n,), total phase 2δ_c + φ_eff, in radians
    lam : ndarray of shape (n,), mean free path, in Å
    rep : ndarray of shape (n,), real part of the complex momentum, in 1/Å
    mag_feff, red_factor, phase_feff, real_phc : ndarray of shape (n,), the raw FEFF columns
    reff : half path length, in Å
    degeneracy : number of equivalent paths in the FEFF model structure
    nleg : number of legs (2 = single scattering)
    atoms : path atoms, absorber first
    rnorman : average Norman radius, in bohr (used by the correlated Debye model)
    label : file name or another short label
    """

    k: np.ndarray
    amp: np.ndarray
    phase: np.ndarray
    lam: np.ndarray
    rep: np.ndarray
    reff: float
    degeneracy: float
    nleg: int
    atoms: tuple[PathAtom, ...]
    rnorman: float = 0.0
    label: str = ""
    mag_feff: np.ndarray | None = None
    red_factor: np.ndarray | None = None
    phase_feff: np.ndarray | None = None
    real_phc: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        arrays = {n: np.asarray(getattr(self, n), dtype=float) for n in ("k", "amp", "phase", "lam", "rep")}
        n = arrays["k"].shape
        for name, arr in arrays.items():
            if arr.ndim != 1 or arr.shape != n:
                raise InputError(
                    f"path {self.label!r}: {name} must be 1-D with the shape of k {n}, got {arr.shape}"
                )
            if not np.all(np.isfinite(arr)):
                raise InputError(f"path {self.label!r}: {name} has non-finite values")
            object.__setattr__(self, name, arr)
        if n[0] < 4 or np.any(np.diff(arrays["k"]) <= 0):
            raise InputError(f"path {self.label!r}: k must be strictly increasing with at least 4 points")
        if not (self.reff > 0):
            raise InputError(f"path {self.label!r}: reff must be > 0 Å, got {self.reff}")
        if len(self.atoms) < 2:
            raise InputError(f"path {self.label!r}: needs the absorber and at least one scatterer")

    # -- geometry ------------------------------------------------------------------------------------
    @property
    def absorber(self) -> str:
        return self.atoms[0].symbol

    @property
    def scatterers(self) -> tuple[str, ...]:
        return tuple(a.symbol for a in self.atoms[1:])

    @property
    def is_single_scattering(self) -> bool:
        return self.nleg == 2

    @property
    def pair(self) -> str:
        """Absorber-scatterer label, e.g. "Cu-Cu" (single scattering) or "Cu-Cu-Cu" (multiple)."""
        return "-".join((self.absorber,) + self.scatterers)

    @property
    def reduced_mass(self) -> float:
        """Reduced mass of the path atoms, in amu (1/μ = Σ 1/m_i, as xraylarch)."""
        return 1.0 / sum(1.0 / max(a.mass, 0.1) for a in self.atoms)

    @property
    def kmax(self) -> float:
        return float(self.k[-1])

    # -- interpolation ------------------------------------------------------------------------------
    @cached_property
    def _spline(self):
        # One vector-valued spline for (amp, phase, rep, lam): one evaluation instead of four.
        return make_interp_spline(self.k, np.column_stack([self.amp, self.phase, self.rep, self.lam]), k=3)

    @cached_property
    def _spline_d(self):
        return self._spline.derivative()

    def tables_at(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(amp, phase, rep, lam) interpolated at wavenumbers ``q`` (1/Å)."""
        v = self._spline(q)
        return v[:, 0], v[:, 1], v[:, 2], v[:, 3]

    def table_derivatives_at(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """d/dq of (amp, phase, rep, lam) at ``q``."""
        v = self._spline_d(q)
        return v[:, 0], v[:, 1], v[:, 2], v[:, 3]


def shifted_q(k: np.ndarray, de0: float) -> np.ndarray:
    """E0-shifted wavenumber q = sign(e)·sqrt(|e|), e = k² - ΔE0·ETOK, kept away from 0 (as xraylarch)."""
    en = k * k - de0 * ETOK
    small = 1.0e-4
    en = np.where(np.abs(en) < small, small, en)
    return np.sign(en) * np.sqrt(np.abs(en))


def path_basis(path: ScatteringPath, k: np.ndarray, de0: float = 0.0, *, with_derivative: bool = False):
    """The σ²/ΔR-independent parts of the EXAFS equation for one path.

    Returns ``(base, p, pp)``: ``base`` (n_k,) complex = |f|/q · exp(-2 reff Im p + i(2 q reff + δ)),
    ``p`` (n_k,) complex momentum and ``pp = p²``. A path with ``n`` neighbours at R = reff + ΔR and
    disorder σ² then contributes Im[n S0² base · exp(-2 pp σ² + 2i p (ΔR - 2σ²/reff)) / R²].
    With ``with_derivative`` also ``(dlnbase_dq, dp_dq, dq_dde0)``: the logarithmic q-derivative of
    ``base``, the q-derivative of p and dq/dΔE0 = -ETOK/(2q), for the analytic ΔE0 derivative.
    """
    q = shifted_q(k, de0)
    amp, pha, rep, lam = path.tables_at(q)
    pp = (rep + 1j / lam) ** 2
    p = np.sqrt(pp)
    base = amp / q * np.exp(-2.0 * path.reff * p.imag + 1j * (2.0 * q * path.reff + pha))
    if not with_derivative:
        return base, p, pp
    damp, dpha, drep, dlam = path.table_derivatives_at(q)
    dp = drep - 1j * dlam / lam**2
    safe_amp = np.where(np.abs(amp) > 1e-12, amp, 1e-12)
    dlnbase = damp / safe_amp - 1.0 / q - 2.0 * path.reff * dp.imag + 1j * (2.0 * path.reff + dpha)
    return base, p, pp, (dlnbase, dp, -ETOK / (2.0 * q))


def path_chi(
    path: ScatteringPath,
    k: np.ndarray,
    *,
    n: float,
    r: float,
    sigma2: float,
    de0: float = 0.0,
    s02: float = 1.0,
) -> np.ndarray:
    """χ(k) of ``n`` neighbours at distance ``r`` (Å) with disorder ``sigma2`` (Å²) along ``path``.

    Parameters
    ----------
    path : the FEFF path giving amplitude and phase (its ``reff`` sets ΔR = r - reff)
    k : ndarray of shape (n_k,), in 1/Å
    n : coordination number (replaces the path degeneracy)
    r, sigma2, de0 : distance (Å), mean-square relative displacement (Å²), E0 shift (eV)
    s02 : amplitude reduction factor

    Returns
    -------
    ndarray of shape (n_k,)
    """
    k = np.asarray(k, dtype=float)
    base, p, pp = path_basis(path, k, de0)
    dr = r - path.reff
    cchi = base * np.exp(-2.0 * pp * sigma2 + 2j * p * (dr - 2.0 * sigma2 / path.reff))
    return (n * s02 / r**2) * cchi.imag


def path_chi_grid(
    path: ScatteringPath, k: np.ndarray, r: np.ndarray, sigma2: np.ndarray, de0: float = 0.0
) -> np.ndarray:
    """χ(k) for one neighbour (N = 1, S0² = 1) at every (r, σ²) of a grid.

    Returns an ndarray of shape (n_k, n_r, n_sigma2).
    """
    base, p, pp = path_basis(path, np.asarray(k, dtype=float), de0)
    r = np.asarray(r, dtype=float)
    s2 = np.asarray(sigma2, dtype=float)
    dr = r - path.reff
    # exp(-2 pp σ² - 4i p σ²/reff) depends on (k, σ²); exp(2i p ΔR)/R² on (k, r): combine by broadcasting.
    f_s = np.exp(np.multiply.outer(-2.0 * pp - 4j * p / path.reff, s2))  # (n_k, n_s)
    f_r = np.exp(2j * np.multiply.outer(p, dr)) / r**2  # (n_k, n_r)
    out = (base[:, None, None] * f_r[:, :, None] * f_s[:, None, :]).imag
    return out


def nearest_single_scattering(paths: list[ScatteringPath], pair: str, r: float) -> ScatteringPath:
    """The single-scattering path of ``pair`` whose reff is closest to ``r``."""
    cands = [p for p in paths if p.is_single_scattering and p.pair == pair]
    if not cands:
        raise InputError(f"paths: no single-scattering path for pair {pair!r}")
    return min(cands, key=lambda p: abs(p.reff - r))
