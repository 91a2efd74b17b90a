"""Lorentzian smoothing of y(x) on a non-uniform grid, as used for the derivative in E0 finding.

The convention (IFEFFIT / Larch ``smooth``): interpolate linearly onto a uniform grid of step ``xstep`` aligned
to multiples of ``xstep`` (padded by 5 steps), mirror the ends, convolve with a normalised Lorentzian of
half-width ``sigma`` truncated to twice the grid length, and interpolate back onto x.
The operator is linear in y, so a stack of many spectra on one grid is smoothed with one (L × L) matrix.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft

_NPAD = 5


class LorentzSmoother:
    """Smoothing operator for one energy grid ``x`` (L,), half-width ``sigma`` and fine step ``xstep`` (eV)."""

    def __init__(self, x: np.ndarray, sigma: float, xstep: float) -> None:
        self.x = x
        xmin = xstep * int((x[0] - _NPAD * xstep) / xstep)
        xmax = xstep * int((x[-1] + _NPAD * xstep) / xstep)
        npts = min(1 + int(abs(xmax - xmin + 0.1 * xstep) / xstep), 50 * x.size)
        x0 = np.linspace(xmin, xmax, npts)
        self.npts = npts
        # forward linear interpolation x -> x0 (constant beyond the ends, like np.interp), as gather + weights
        j = np.minimum(np.maximum(np.searchsorted(x, x0, side="right") - 1, 0), x.size - 2)
        w = np.minimum(np.maximum((x0 - x[j]) / (x[j + 1] - x[j]), 0.0), 1.0)
        self._fj, self._fw = j, w
        # back interpolation x0 -> x
        jb = np.minimum(np.maximum(np.searchsorted(x0, x, side="right") - 1, 0), npts - 2)
        self._bj = jb
        self._bw = np.minimum(np.maximum((x - x0[jb]) / (x0[jb + 1] - x0[jb]), 0.0), 1.0)
        s = sigma / xstep  # width in fine-grid points
        d = np.arange(2 * npts) - npts
        kernel = 1.0 / (1.0 + (d / s) ** 2)
        kernel /= kernel.sum()
        # 'valid' convolution of the (3 npts - 1)-long mirrored signal with the 2 npts-long kernel, via FFT
        self._nfft = sfft.next_fast_len(5 * npts - 2, real=True)
        self._kernel_ft = sfft.rfft(kernel, n=self._nfft)
        self._matrix: np.ndarray | None = None

    def _apply_direct(self, y: np.ndarray) -> np.ndarray:
        n = self.npts
        y0 = y[:, self._fj] * (1.0 - self._fw) + y[:, self._fj + 1] * self._fw
        padded = np.concatenate((y0[:, n - 1 : 0 : -1], y0, y0[:, ::-1]), axis=1)
        full = sfft.irfft(
            sfft.rfft(padded, n=self._nfft, axis=1) * self._kernel_ft[None, :], n=self._nfft, axis=1
        )
        y2 = full[:, 2 * n - 1 : 3 * n - 1]
        return y2[:, self._bj] * (1.0 - self._bw) + y2[:, self._bj + 1] * self._bw

    def __call__(self, y: np.ndarray) -> np.ndarray:
        """Smooth each row of ``y`` (m, L); for m > L one (L, L) matrix is built and applied instead."""
        if y.shape[0] <= self.x.size:
            return self._apply_direct(y)
        if self._matrix is None:
            self._matrix = self._apply_direct(np.eye(self.x.size))
        return y @ self._matrix
