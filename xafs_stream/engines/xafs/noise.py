"""Noise in χ(k) from the high-R part of |χ(R)| (the IFEFFIT / Larch ``estimate_noise`` method).

Assumes white noise and no structural signal above ``rmin`` (15 Å by default): the rms of Re/Im χ(R) over
[rmin, rmax] gives ε_R, corrected for the average of the k window, and Parseval's theorem converts it to the
noise ε_k of χ(k) given the k-weight. ``kmax_suggest`` is the highest k where the back-transformed signal
(R < 9.5 Å) still exceeds ε_k. Vectorised over stacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .kspace import NFFT
from .xft import xftf, xftr


@dataclass
class NoiseResult:
    """``epsilon_k``: noise of χ(k) (dimensionless); ``epsilon_r``: of χ(R) (Å^-(w+1)); ``kmax_suggest`` (Å⁻¹).

    Floats for one spectrum, ndarrays of shape (n_spectra,) for a stack. ``params_used`` lists the settings.
    """

    epsilon_k: float | np.ndarray
    epsilon_r: float | np.ndarray
    kmax_suggest: float | np.ndarray
    params_used: dict


def estimate_chi_noise(
    k: np.ndarray,
    chi: np.ndarray,
    *,
    kweight: float = 1,
    kmin: float = 0.0,
    kmax: float | None = None,
    dk: float = 4.0,
    window: str = "kaiser",
    rmin: float = 15.0,
    rmax: float = 30.0,
    nfft: int = NFFT,
) -> NoiseResult:
    """Estimate the noise ε_k of χ(k) from |χ(R)| between ``rmin`` and ``rmax`` (Å).

    Parameters
    ----------
    k : ndarray of shape (n_k,), Å⁻¹, uniform from 0 (as from :func:`autobk`)
    chi : ndarray of shape (n_k,) or (n_spectra, n_k)
    kweight, kmin, kmax, dk, window : forward transform (kmax default: the end of the data; Larch uses a fixed
        20 Å⁻¹, which assumes data out to 20 Å⁻¹ in the Parseval conversion)
    rmin, rmax : R range taken as pure noise, Å

    Returns
    -------
    NoiseResult
    """
    k = np.asarray(k, dtype=float)
    if k.ndim != 1 or k.size < 4:
        raise InputError(f"k: expected a 1-D array of at least 4 points, got shape {k.shape}")
    kmax = float(k[-1]) if kmax is None else float(kmax)
    if not (0 <= kmin < kmax):
        raise InputError(f"kmin, kmax: need 0 <= kmin < kmax, got {kmin!r}, {kmax!r}")
    if not (0 < rmin < rmax):
        raise InputError(f"rmin, rmax: need 0 < rmin < rmax, got {rmin!r}, {rmax!r}")
    kstep = float(k[1] - k[0])
    rmax_out = min(10 * np.pi, rmax + 2)
    ft = xftf(
        k, chi, kmin=kmin, kmax=kmax, kweight=kweight, dk=dk, window=window, rmax_out=rmax_out, nfft=nfft
    )
    chir = np.atleast_2d(ft.chir)
    rstep = ft.r[1] - ft.r[0]
    irmin = int(0.01 + rmin / rstep)
    irmax = min(nfft // 2, int(1.01 + rmax / rstep))
    high = chir[:, irmin:irmax]
    if high.shape[1] == 0:
        raise InputError(f"rmin: {rmin} Å is beyond the transform range ({ft.r[-1]:.1f} Å)")
    mean_square = (np.sum(high.real**2, axis=1) + np.sum(high.imag**2, axis=1)) / (2 * high.shape[1])
    kwin_ave = ft.kwin.sum() * kstep / (kmax - kmin)
    eps_r = np.sqrt(mean_square) / kwin_ave
    w = 2 * kweight + 1
    eps_k = np.sqrt(2 * np.pi * w / (kstep * (kmax**w - kmin**w))) * eps_r

    back = xftr(ft.r, chir, rmin=0.5, rmax=9.5, dr=1.0, window="parzen", nfft=nfft)
    q = back.q
    iq0 = int(max(np.searchsorted(q, 0.5 * (kmax + kmin), side="right") - 1, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        test = np.abs(np.atleast_2d(back.chiq))[:, iq0:] / q[iq0:] ** kweight
    below = test < eps_k[:, None]
    first = np.where(below.any(axis=1), below.argmax(axis=1), test.shape[1] - 1)
    kmax_suggest = q[iq0 + first]
    single = np.ndim(chi) == 1
    params = {
        "kweight": float(kweight),
        "kmin": float(kmin),
        "kmax": kmax,
        "dk": float(dk),
        "window": window,
        "rmin": float(rmin),
        "rmax": float(rmax),
        "nfft": int(nfft),
    }
    if single:
        return NoiseResult(float(eps_k[0]), float(eps_r[0]), float(kmax_suggest[0]), params)
    return NoiseResult(eps_k, eps_r, kmax_suggest, params)
