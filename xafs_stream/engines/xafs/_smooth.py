"""Lorentzian smoothing of y(x) on a non-uniform grid, as used for the derivative in E0 finding.

The convention (IFEFFIT / Larch ``smooth``): interpolate linearly onto a uniform grid of step ``xstep`` aligned
to multiples of ``xstep`` (padded by 5 steps), mirror the ends, convolve with a normalised Lorentzian of
half-width ``sigma`` truncated to twice the grid length, and interpolate back onto x.
The operator is linear in y, so a stack of many spectra on one grid is smoothed with one (L × L) matrix.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import fft as sfft  # next_fast_len

_NPAD = 5


@lru_cache(maxsize=32)
def _kernel_ft(npts: int, width: float, nfft: int) -> np.ndarray:
    """rfft (length nfft) of the normalised Lorentzian of half-width ``width`` (in fine-grid points) on
    offsets -npts .. npts - 1. Depends on sizes only, so it is kept (read-only) between calls."""
    d = np.arange(2 * npts) - npts
    kernel = 1.0 / (1.0 + (d / width) ** 2)
    kernel /= kernel.sum()
    out = np.fft.rfft(kernel, n=nfft)
    out.setflags(write=False)
    return out


class LorentzSmoother:
    """Smoothing operator for one energy grid ``x`` (L,), half-width ``sigma`` and fine step ``xstep`` (eV)."""

    def __init__(self, x: np.ndarray, sigma: float, xstep: float) -> None:
        self.x = x
        xmin = xstep * int((x[0] - _NPAD * xstep) / xstep)
        xmax = xstep * int((x[-1] + _NPAD * xstep) / xstep)
        npts = min(1 + int(abs(xmax - xmin + 0.1 * xstep) / xstep), 50 * x.size)
        self.x0 = np.arange(npts) * ((xmax - xmin) / (npts - 1)) + xmin  # np.linspace, without its overhead
        self.x0[-1] = xmax
        self.npts = npts
        # 'valid' convolution of the (3 npts - 1)-long mirrored signal with the 2 npts-long kernel, via FFT:
        # a circular convolution of length >= 3 npts - 1 leaves the npts valid outputs free of wrap-around
        self._nfft = sfft.next_fast_len(3 * npts - 1, real=True)
        self._kernel_ft = _kernel_ft(npts, sigma / xstep, self._nfft)
        self._gather: tuple | None = None
        self._matrix: np.ndarray | None = None

    def _convolve(self, y0: np.ndarray) -> np.ndarray:
        """Mirror-padded convolution of rows y0 (m, npts) on the fine grid."""
        n = self.npts
        padded = np.concatenate((y0[:, n - 1 : 0 : -1], y0, y0[:, ::-1]), axis=1)
        full = np.fft.irfft(np.fft.rfft(padded, n=self._nfft, axis=1) * self._kernel_ft, n=self._nfft, axis=1)
        return full[:, 2 * n - 1 : 3 * n - 1]

    def _apply_direct(self, y: np.ndarray) -> np.ndarray:
        if y.shape[0] == 1:  # one row: np.interp in both directions (as Larch) is cheapest
            y2 = self._convolve(np.interp(self.x0, self.x, y[0])[None, :])
            return np.interp(self.x, self.x0, y2[0])[None, :]
        if self._gather is None:
            # linear interpolation x -> x0 (constant beyond the ends, like np.interp) and back, as gathers
            x, x0 = self.x, self.x0
            j = np.minimum(np.maximum(np.searchsorted(x, x0, side="right") - 1, 0), x.size - 2)
            w = np.minimum(np.maximum((x0 - x[j]) / (x[j + 1] - x[j]), 0.0), 1.0)
            jb = np.minimum(np.maximum(np.searchsorted(x0, x, side="right") - 1, 0), self.npts - 2)
            bw = np.minimum(np.maximum((x - x0[jb]) / (x0[jb + 1] - x0[jb]), 0.0), 1.0)
            self._gather = (j, w, jb, bw)
        j, w, jb, bw = self._gather
        y2 = self._convolve(y[:, j] * (1.0 - w) + y[:, j + 1] * w)
        return y2[:, jb] * (1.0 - bw) + y2[:, jb + 1] * bw

    def __call__(self, y: np.ndarray) -> np.ndarray:
        """Smooth each row of ``y`` (m, L); for m > L one (L, L) matrix is built and applied instead."""
        if y.shape[0] <= self.x.size:
            return self._apply_direct(y)
        if self._matrix is None:
            self._matrix = self._apply_direct(np.eye(self.x.size))
        return y @ self._matrix
