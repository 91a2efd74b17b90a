"""One call from μ(E) to χ(R): pre-edge normalisation, AUTOBK, forward Fourier transform and χ noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .autobk import AutobkResult, autobk
from .noise import NoiseResult, estimate_chi_noise
from .normalize import PreEdgeResult, pre_edge
from .xft import FTResult, xftf

_PRE_KEYS = ("pre1", "pre2", "norm1", "norm2", "nnorm", "npre", "smooth_ev", "min_edge_snr")
_BKG_KEYS = {
    "rbkg": "rbkg",
    "bkg_kweight": "kweight",
    "bkg_kmin": "kmin",
    "bkg_kmax": "kmax",
    "bkg_dk": "dk",
    "nknots": "nknots",
    "nclamp": "nclamp",
    "clamp_lo": "clamp_lo",
    "clamp_hi": "clamp_hi",
}
_FT_KEYS = ("kmin", "kmax", "kweight", "dk", "dk2", "window", "rmax_out")


@dataclass
class ProcessedSpectrum:
    """Everything from :func:`process_spectrum` for one spectrum.

    Attributes
    ----------
    energy, mu : the input, eV
    e0 : eV; edge_step : in units of μ
    norm, flat, pre_edge_line, post_edge_curve, bkg : ndarrays of shape (n,) on the energy grid
    k : ndarray of shape (n_k,), Å⁻¹ (uniform, 0.05); chi : χ(k), same shape
    r : ndarray of shape (n_r,), Å; chir : complex χ(R) (k-weighted); chir_mag / chir_re / chir_im
    noise_chi : ε_k, noise of χ(k); noise_chir : ε_R; kmax_suggest : Å⁻¹
    kmin, kmax : the FT window range used, Å⁻¹
    params_used : {"pre_edge": ..., "autobk": ..., "xftf": ..., "noise": ...}
    pre, bkg_result, ft, noise : the step results
    """

    energy: np.ndarray
    mu: np.ndarray
    pre: PreEdgeResult
    bkg_result: AutobkResult
    ft: FTResult
    noise: NoiseResult

    @property
    def e0(self) -> float:
        return self.pre.e0

    @property
    def edge_step(self) -> float:
        return self.pre.edge_step

    @property
    def norm(self) -> np.ndarray:
        return self.pre.norm

    @property
    def flat(self) -> np.ndarray:
        return self.pre.flat

    @property
    def pre_edge_line(self) -> np.ndarray:
        return self.pre.pre_edge_line

    @property
    def post_edge_curve(self) -> np.ndarray:
        return self.pre.post_edge_curve

    @property
    def bkg(self) -> np.ndarray:
        return self.bkg_result.bkg

    @property
    def k(self) -> np.ndarray:
        return self.bkg_result.k

    @property
    def chi(self) -> np.ndarray:
        return self.bkg_result.chi

    @property
    def r(self) -> np.ndarray:
        return self.ft.r

    @property
    def chir(self) -> np.ndarray:
        return self.ft.chir

    @property
    def chir_mag(self) -> np.ndarray:
        return self.ft.chir_mag

    @property
    def chir_re(self) -> np.ndarray:
        return self.ft.chir_re

    @property
    def chir_im(self) -> np.ndarray:
        return self.ft.chir_im

    @property
    def noise_chi(self) -> float:
        return self.noise.epsilon_k

    @property
    def noise_chir(self) -> float:
        return self.noise.epsilon_r

    @property
    def kmax_suggest(self) -> float:
        return self.noise.kmax_suggest

    @property
    def kmin(self) -> float:
        return self.ft.params_used["kmin"]

    @property
    def kmax(self) -> float:
        return self.ft.params_used["kmax"]

    @property
    def params_used(self) -> dict:
        return {
            "pre_edge": self.pre.params_used,
            "autobk": self.bkg_result.params_used,
            "xftf": self.ft.params_used,
            "noise": self.noise.params_used,
        }


def default_ft_kmax(k_last: float) -> float:
    """Default upper end of the FT window: 1 Å⁻¹ below the end of the data, rounded down to 0.5 Å⁻¹."""
    return float(np.floor(2.0 * (k_last - 1.0)) / 2.0)


def process_spectrum(
    energy: np.ndarray,
    mu: np.ndarray,
    *,
    e0: float | None = None,
    kmin: float = 3.0,
    kmax: float | None = None,
    kweight: float = 2,
    dk: float = 1.0,
    window: str = "hanning",
    rbkg: float = 1.0,
    bkg_kweight: float = 2,
    **params,
) -> ProcessedSpectrum:
    """Run :func:`pre_edge`, :func:`autobk`, :func:`xftf` and :func:`estimate_chi_noise` on one spectrum.

    Parameters
    ----------
    energy : ndarray of shape (n,), eV; mu : ndarray of shape (n,)
    e0 : edge energy, eV (default: found)
    kmin, kmax, kweight, dk, window : Fourier transform (kmax default: 1 Å⁻¹ below the end of χ(k),
        rounded down to 0.5 Å⁻¹)
    rbkg, bkg_kweight : AUTOBK Rbkg (Å) and k-weight
    **params : more pre-edge settings (pre1, pre2, norm1, norm2, nnorm, npre, smooth_ev, min_edge_snr),
        AUTOBK settings (bkg_kmin, bkg_kmax, bkg_dk, nknots, nclamp, clamp_lo, clamp_hi) and FT settings
        (dk2, rmax_out)

    Raises InputError for bad input or a spectrum that cannot be processed (no edge, too short, ...).
    """
    if np.ndim(mu) != 1:
        raise InputError(f"mu: process_spectrum takes one spectrum (1-D), got shape {np.shape(mu)}")
    unknown = set(params) - set(_PRE_KEYS) - set(_BKG_KEYS) - set(_FT_KEYS)
    if unknown:
        raise InputError(f"process_spectrum: unknown parameter(s) {sorted(unknown)}")
    pre = pre_edge(energy, mu, e0=e0, **{k: v for k, v in params.items() if k in _PRE_KEYS})
    bkg_kw = {_BKG_KEYS[k]: v for k, v in params.items() if k in _BKG_KEYS}
    bkg = autobk(pre.energy, mu, e0=pre.e0, edge_step=pre.edge_step, rbkg=rbkg, kweight=bkg_kweight, **bkg_kw)
    k_last = float(bkg.k[-1])
    kmax_ft = default_ft_kmax(k_last) if kmax is None else float(kmax)
    if not kmin < kmax_ft:
        raise InputError(
            f"kmin, kmax: the FT range {kmin:g} .. {kmax_ft:g} Å⁻¹ is empty (χ(k) ends at {k_last:.2f} Å⁻¹)"
        )
    ft_kw = {k: v for k, v in params.items() if k in _FT_KEYS}
    ft = xftf(bkg.k, bkg.chi, kmin=kmin, kmax=kmax_ft, kweight=kweight, dk=dk, window=window, **ft_kw)
    noise = estimate_chi_noise(bkg.k, bkg.chi)
    return ProcessedSpectrum(
        energy=pre.energy, mu=np.asarray(mu, dtype=float), pre=pre, bkg_result=bkg, ft=ft, noise=noise
    )
