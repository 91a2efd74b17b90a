"""XAFS Fourier transforms: χ(k) -> χ(R) (``xftf``) and χ(R) -> χ(q) (``xftr``), IFEFFIT / Larch conventions.

χ(R) = kstep / sqrt(pi) * sum_k χ(k) k^w W(k) exp(2 i k R) on a zero-padded grid of ``nfft`` points
(R step = pi / (kstep nfft)); no phase correction. The back-transform uses 4 sqrt(pi) / kstep with the
inverse FFT. Both operate on stacks (n_spectra, n) along the last axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy.special import i0 as bessel_i0

from ..errors import InputError
from .kspace import NFFT

WINDOWS = ("hanning", "parzen", "welch", "sine", "kaiser", "gaussian")


def window_name(window: str) -> str:
    """The full name of a window given by (at least) its first three letters, or InputError."""
    name = str(window).strip().lower()
    matches = [w for w in WINDOWS if w.startswith(name[:3])]
    if len(name) < 3 or not matches:
        raise InputError(f"window: unknown window {window!r}; choose one of {WINDOWS}")
    return matches[0]


def ftwindow(
    x: np.ndarray,
    *,
    xmin: float,
    xmax: float,
    dx: float = 1.0,
    dx2: float | None = None,
    window: str = "hanning",
) -> np.ndarray:
    """Fourier-transform window on a uniform grid ``x`` starting at 0 (k in Å⁻¹ or R in Å).

    The window rises over [xmin - dx/2, xmin + dx/2] and falls over [xmax - dx2/2, xmax + dx2/2]
    (edges snapped to grid points, as in IFEFFIT): hanning (sin² / cos² tapers), parzen (linear),
    welch (quadratic), sine (one sine arch over the whole range), kaiser (Kaiser-Bessel with shape
    parameter dx over [xmin - dx/2, xmax + dx2/2]), gaussian (centred, width dx).
    """
    name = window_name(window)
    dx2 = dx if dx2 is None else dx2
    x = np.asarray(x, dtype=float)
    n = x.size
    step = (x[-1] - x[0]) / (n - 1) if n > 1 else 1.0
    eps = 1e-4 * step

    def to_index(v: float) -> int:
        return int((v + eps) / step)

    x1, x2 = max(x[0], xmin - dx / 2.0), xmin + dx / 2.0 + eps
    x3, x4 = xmax - dx2 / 2.0 - eps, min(x[-1], xmax + dx2 / 2.0)
    i1, i2 = max(0, to_index(x1)), max(0, to_index(x2))
    i3, i4 = min(n - 1, to_index(x3)), min(n - 1, to_index(x4))
    if i2 == i1:
        i1 = max(0, i2 - 1)
    if i4 == i3:
        i3 = max(i2, i4 - 1)
    x1, x2, x3, x4 = x[i1], x[i2], x[i3], x[i4]
    if x1 == x2:
        x2 = x2 + eps
    if x3 == x4:
        x4 = x4 + eps
    win = np.zeros(n)
    if name in ("kaiser", "gaussian"):
        centre, half = 0.5 * (x4 + x1), 0.5 * (x4 - x1)
        if name == "kaiser":
            arg = np.clip(1.0 - ((x - centre) / half) ** 2, 0.0, None)
            return (bessel_i0(dx * np.sqrt(arg)) - 1.0) / max(1e-10, bessel_i0(dx) - 1.0)
        width = max(dx, eps)
        return np.exp(-((x - centre) ** 2) / (2.0 * width * width))
    if i3 > i2:
        win[i2:i3] = 1.0
    up, down = slice(i1, i2 + 1), slice(i3, i4 + 1)
    if name == "hanning":
        win[up] = np.sin(0.5 * np.pi * (x[up] - x1) / (x2 - x1)) ** 2
        win[down] = np.cos(0.5 * np.pi * (x[down] - x3) / (x4 - x3)) ** 2
    elif name == "parzen":
        win[up] = (x[up] - x1) / (x2 - x1)
        win[down] = 1.0 - (x[down] - x3) / (x4 - x3)
    elif name == "welch":
        win[up] = 1.0 - ((x[up] - x2) / (x2 - x1)) ** 2
        win[down] = 1.0 - ((x[down] - x3) / (x4 - x3)) ** 2
    else:  # sine
        whole = slice(i1, i4 + 1)
        win[whole] = np.sin(np.pi * (x4 - x[whole]) / (x4 - x1))
    return win


@dataclass
class FTResult:
    """χ(R) of one spectrum or a stack.

    Attributes
    ----------
    r : ndarray of shape (n_r,), Å
    chir : complex ndarray of shape (n_r,) or (n_spectra, n_r), in Å^-(w+1)
    chir_mag, chir_re, chir_im : magnitude, real and imaginary parts, same shape as chir
    kwin : ndarray of shape (n_k,), the k window used (on the uniform k grid)
    params_used : kmin, kmax, dk, dk2, kweight, window, nfft, kstep
    """

    r: np.ndarray
    chir: np.ndarray
    kwin: np.ndarray
    params_used: dict

    @property
    def chir_mag(self) -> np.ndarray:
        return np.abs(self.chir)

    @property
    def chir_re(self) -> np.ndarray:
        return self.chir.real

    @property
    def chir_im(self) -> np.ndarray:
        return self.chir.imag


@dataclass
class BackFTResult:
    """χ(q) from a back-transform: ``q`` (n_q,) Å⁻¹, ``chiq`` complex (n_q,) or (n_spectra, n_q), ``rwin``."""

    q: np.ndarray
    chiq: np.ndarray
    rwin: np.ndarray
    params_used: dict

    @property
    def chiq_mag(self) -> np.ndarray:
        return np.abs(self.chiq)

    @property
    def chiq_re(self) -> np.ndarray:
        return self.chiq.real

    @property
    def chiq_im(self) -> np.ndarray:
        return self.chiq.imag


def _as_rows(y: np.ndarray, n: int, name: str, dtype=float) -> tuple[np.ndarray, bool]:
    try:
        a = np.asarray(y, dtype=dtype)
    except (TypeError, ValueError):
        raise InputError(f"{name}: not a numeric array") from None
    if a.ndim not in (1, 2) or a.shape[-1] != n:
        raise InputError(f"{name}: expected shape ({n},) or (n_spectra, {n}), got {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name}: contains NaN or inf")
    return (a[None, :], True) if a.ndim == 1 else (a, False)


def xftf_kernel(chi_w: np.ndarray, kstep: float, nfft: int, n_out: int | None = None) -> np.ndarray:
    """Forward transform of already weighted and windowed χ on a uniform grid from k = 0: rows (m, n_k) ->
    complex (m, n_out), n_out <= nfft // 2 (default). Real input, so the real FFT gives the same first half
    as a complex FFT."""
    n_out = nfft // 2 if n_out is None else min(n_out, nfft // 2)
    return (kstep / np.sqrt(np.pi)) * np.fft.rfft(chi_w, n=nfft, axis=-1)[..., :n_out]


def xftf(
    k: np.ndarray,
    chi: np.ndarray,
    *,
    kmin: float = 0.0,
    kmax: float = 20.0,
    kweight: float = 2,
    dk: float = 1.0,
    dk2: float | None = None,
    window: str = "hanning",
    rmax_out: float = 10.0,
    nfft: int = NFFT,
    kstep: float | None = None,
) -> FTResult:
    """Forward XAFS Fourier transform χ(k) -> χ(R).

    Parameters
    ----------
    k : ndarray of shape (n_k,), Å⁻¹, increasing (χ is interpolated onto a uniform grid from 0 if needed)
    chi : ndarray of shape (n_k,) or (n_spectra, n_k)
    kmin, kmax : window range, Å⁻¹
    kweight : χ is multiplied by k**kweight
    dk, dk2 : window tapers, Å⁻¹ (dk2 defaults to dk); for kaiser, dk is the shape parameter
    window : hanning (default), parzen, welch, sine, kaiser, gaussian
    rmax_out : largest R returned, Å
    nfft : FFT length (2048); kstep : uniform k step (default k[1] - k[0])

    Returns
    -------
    FTResult with r (n_r,) in Å and complex chir (n_r,) or (n_spectra, n_r).
    """
    k = np.asarray(k, dtype=float)
    k_steps = k[1:] - k[:-1] if k.ndim == 1 else k
    if k.ndim != 1 or k.size < 2 or not np.isfinite(k).all() or not (k_steps > 0).all():
        raise InputError("k: expected a finite, strictly increasing 1-D array (Å⁻¹) with at least 2 points")
    rows, single = _as_rows(chi, k.size, "chi")
    if not (np.isfinite(kmin) and np.isfinite(kmax) and kmax > kmin >= 0):
        raise InputError(f"kmin, kmax: need 0 <= kmin < kmax, got {kmin!r}, {kmax!r}")
    if not (np.isfinite(dk) and dk >= 0):
        raise InputError(f"dk: must be >= 0, got {dk!r}")
    if nfft < 2 * k.size:
        raise InputError(f"nfft: {nfft} is too small for {k.size} k points")
    kstep = float(k[1] - k[0]) if kstep is None else float(kstep)
    if not kstep > 0:
        raise InputError(f"kstep: must be > 0, got {kstep!r}")
    dk2 = dk if dk2 is None else dk2
    # uniform grid from 0 out to the data (and the window) like IFEFFIT; χ held constant beyond the data
    n_data = int(1.01 + k[-1] / kstep)
    kgrid = kstep * np.arange(int(1.01 + max(k[-1], kmax + dk2) / kstep))
    uniform = (
        k.size == n_data and abs(k[0]) < 1e-9 and np.abs(k_steps - kstep).max() <= 1e-9 + 1e-6 * kstep
    )  # np.allclose(k_steps, kstep, rtol=1e-6, atol=1e-9) without its overhead
    if uniform:
        chi_u = rows
    else:
        chi_u = np.stack([np.interp(kgrid[:n_data], k, r) for r in rows])
    win = ftwindow(kgrid, xmin=kmin, xmax=kmax, dx=dk, dx2=dk2, window=window)[:n_data]
    weight = kgrid[:n_data] ** kweight * win
    rstep = np.pi / (kstep * nfft)
    n_r = int(min(nfft / 2, 1.01 + rmax_out / rstep))
    r = rstep * np.arange(n_r)
    chir = xftf_kernel(chi_u * weight[None, :], kstep, nfft, n_r)
    params = {
        "kmin": float(kmin),
        "kmax": float(kmax),
        "dk": float(dk),
        "dk2": float(dk2),
        "kweight": float(kweight),
        "window": window,
        "nfft": int(nfft),
        "kstep": kstep,
    }
    return FTResult(r=r, chir=chir[0] if single else chir, kwin=win, params_used=params)


def xftr(
    r: np.ndarray,
    chir: np.ndarray,
    *,
    rmin: float = 0.0,
    rmax: float = 20.0,
    dr: float = 1.0,
    dr2: float | None = None,
    rweight: float = 0,
    window: str = "hanning",
    qmax_out: float = 30.0,
    nfft: int = NFFT,
) -> BackFTResult:
    """Back-transform χ(R) -> χ(q) (filtered χ(k)), the inverse of :func:`xftf` on its R grid.

    Parameters
    ----------
    r : ndarray of shape (n_r,), Å, uniform from 0 (as returned by :func:`xftf`)
    chir : complex ndarray of shape (n_r,) or (n_spectra, n_r) (a real input is treated as Re χ(R))
    rmin, rmax, dr, dr2, window : R window (Å); rweight : χ(R) multiplied by R**rweight
    qmax_out : largest q returned (Å⁻¹); nfft : FFT length

    Returns
    -------
    BackFTResult with q (n_q,) Å⁻¹ and complex chiq; Re χ(q) is the filtered k^w χ(k).
    """
    r = np.asarray(r, dtype=float)
    if r.ndim != 1 or r.size < 2 or not np.all(np.isfinite(r)) or np.any(np.diff(r) <= 0):
        raise InputError("r: expected a finite, strictly increasing 1-D array (Å) with at least 2 points")
    is_complex = np.iscomplexobj(chir)
    rows, single = _as_rows(chir, r.size, "chir", dtype=complex)
    if not (np.isfinite(rmin) and np.isfinite(rmax) and rmax > rmin >= 0):
        raise InputError(f"rmin, rmax: need 0 <= rmin < rmax, got {rmin!r}, {rmax!r}")
    rstep = float(r[1] - r[0])
    kstep = np.pi / (rstep * nfft)
    r_full = rstep * np.arange(nfft)
    win = ftwindow(r_full, xmin=rmin, xmax=rmax, dx=dr, dx2=dr2, window=window)
    padded = np.zeros((rows.shape[0], nfft), dtype=complex)
    padded[:, : r.size] = rows
    padded *= (win * r_full**rweight)[None, :]
    scale = 0.5 if is_complex else 1.0
    chiq = scale * (4.0 * np.sqrt(np.pi) / kstep) * sfft.ifft(padded, axis=-1)[:, : nfft // 2]
    q = np.linspace(0.0, qmax_out, int(1.05 + qmax_out / kstep))
    chiq = chiq[:, : q.size]
    params = {
        "rmin": float(rmin),
        "rmax": float(rmax),
        "dr": float(dr),
        "dr2": float(dr if dr2 is None else dr2),
        "rweight": float(rweight),
        "window": window,
        "nfft": int(nfft),
        "kstep": kstep,
    }
    return BackFTResult(q=q, chiq=chiq[0] if single else chiq, rwin=win[: r.size], params_used=params)
