"""The fit space: a linear map from χ on a uniform k grid to the vector that is fitted.

Fitting in k space uses k^w·χ(k) for kmin ≤ k ≤ kmax; fitting in R space uses the real and imaginary parts of
the windowed Fourier transform χ(R) = (δk/√π) Σ w(k) k^w χ(k) exp(-2ikR) for rmin ≤ R < rmax (xraylarch's
``xftf`` convention: Hanning window with taper ``dk``, R step π/(δk·2048)). Both are a matrix ``M`` applied to
χ on the grid, so a dictionary, the data, a residual and the noise all map through the same ``M``.

The transform is a dense matrix product rather than an FFT: only the few hundred R points inside the fit
range are needed, and the matrix is reused for every dictionary column and every cross-validation fold.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError
from ..xafs.xft import ftwindow

NFFT = 2048
SPACES = ("k", "r")


def hanning_window(k: np.ndarray, kmin: float, kmax: float, dk: float) -> np.ndarray:
    """Hanning (cos²-tapered) window on a uniform grid starting at 0, edges snapped as xraylarch does:
    the preprocessing engine's :func:`~xafs_stream.engines.xafs.ftwindow`, so χ(R) here and there agree."""
    return ftwindow(k, xmin=kmin, xmax=kmax, dx=dk, window="hanning")


@dataclass
class FitSpace:
    """A fit space: ``y = M @ chi[cols]`` for χ sampled on the grid ``k``.

    Attributes
    ----------
    space : "k" or "r"
    k : ndarray of shape (n_k,), in 1/Å: the uniform grid points that enter the fit (window support)
    kstep : grid step, in 1/Å
    matrix : ndarray of shape (n_out, n_k): the linear map to the fitted vector
    kweight : k weight w
    kmin, kmax, dk : k range and window taper, in 1/Å
    rmin, rmax : R range, in Å (R space only; NaN in k space)
    r : ndarray of shape (n_r,), in Å: R points of the fit (R space), empty in k space
    window : ndarray of shape (n_k,): window values (all ones in k space)
    """

    space: str
    k: np.ndarray
    kstep: float
    matrix: np.ndarray
    kweight: float
    kmin: float
    kmax: float
    dk: float
    rmin: float
    rmax: float
    r: np.ndarray
    window: np.ndarray

    @property
    def n_out(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_independent(self) -> float:
        """Number of independent points 2ΔkΔR/π + 1 (ΔR = rmax - rmin, or rmax in k space as feffit)."""
        dr = self.rmax - self.rmin if self.space == "r" else self.rmax
        return 2.0 * (self.kmax - self.kmin) * dr / np.pi + 1.0

    @property
    def weight(self) -> np.ndarray:
        """Per-point weight w(k)·k^w, shape (n_k,) (w = 1 in k space)."""
        return self.window * self.k**self.kweight

    @property
    def ft(self) -> np.ndarray | None:
        """The transform without the weight, shape (n_out, n_k) (R space); None in k space."""
        return None if self.space == "k" else self.matrix / self.weight[None, :]

    def with_kweight(self, kweight: float) -> FitSpace:
        """The same fit space (k points, window, R range) with another k weight: M·diag(k^(w' - w))."""
        scale = self.k ** (float(kweight) - self.kweight)
        return replace(self, matrix=self.matrix * scale[None, :], kweight=float(kweight))

    def apply(self, chi: np.ndarray) -> np.ndarray:
        """Map χ on ``k`` (shape (n_k,) or (n_k, m)) to the fit space."""
        return self.matrix @ chi


def ft_matrix(k: np.ndarray, weight: np.ndarray, r: np.ndarray, kstep: float) -> np.ndarray:
    """Rows [Re; Im] of (δk/√π) weight(k) exp(-2ikR): shape (2·n_r, n_k)."""
    phase = -2.0 * np.multiply.outer(r, k)
    scale = (kstep / np.sqrt(np.pi)) * weight
    return np.vstack([np.cos(phase) * scale, np.sin(phase) * scale])


def make_fit_space(
    kstep: float,
    *,
    space: str,
    kmin: float,
    kmax: float,
    kweight: float,
    dk: float = 1.0,
    rmin: float = 1.0,
    rmax: float = 3.5,
    k_limit: float | None = None,
) -> FitSpace:
    """Build the fit-space map for a uniform k grid k_i = i·kstep.

    ``k_limit`` is the highest k with data: the window taper is clipped there, as xraylarch does.
    Ranges are assumed checked by the caller (:func:`xafs_stream.engines.spm.model.spm_fit`).
    """
    if space not in SPACES:
        raise InputError(f"space must be one of {SPACES}, got {space!r}")
    top = kmax + dk / 2.0 if space == "r" else kmax
    if k_limit is not None:
        top = min(top, k_limit)
    grid = kstep * np.arange(int(np.floor(top / kstep + 1.0e-6)) + 1)
    if space == "k":
        cols = np.nonzero((grid >= kmin - 1.0e-9) & (grid <= kmax + 1.0e-9))[0]
        kk = grid[cols]
        window = np.ones_like(kk)
        matrix = np.diag(kk**kweight)
        r = np.zeros(0)
        rmin_, rmax_ = float("nan"), float(rmax)
    else:
        win_full = hanning_window(grid, kmin, kmax, dk)
        cols = np.nonzero(win_full > 0)[0]
        kk = grid[cols]
        window = win_full[cols]
        rstep = np.pi / (kstep * NFFT)
        irmin = int(0.01 + rmin / rstep)
        irmax = int(0.01 + rmax / rstep)
        r = rstep * np.arange(irmin, irmax)
        matrix = ft_matrix(kk, window * kk**kweight, r, kstep)
        rmin_, rmax_ = float(rmin), float(rmax)
    return FitSpace(
        space=space,
        k=kk,
        kstep=float(kstep),
        matrix=matrix,
        kweight=float(kweight),
        kmin=float(kmin),
        kmax=float(kmax),
        dk=float(dk),
        rmin=rmin_,
        rmax=rmax_,
        r=r,
        window=window,
    )


def estimate_noise(
    k: np.ndarray,
    chi: np.ndarray,
    *,
    kmin: float,
    kmax: float,
    kweight: float,
    dk: float = 1.0,
    rlow: float = 15.0,
    rhigh: float = 25.0,
) -> float:
    """Noise in χ(k) (standard deviation per grid point) from the high-R part of the Fourier transform.

    For white noise of variance ε² on a uniform grid, E|χ(R)|² = ε² (δk²/π) Σ w(k)² k^(2w) at every R, so
    ε² is the mean |χ(R)|² over ``rlow`` ≤ R ≤ ``rhigh`` divided by that sum (the idea of xraylarch's
    ``estimate_noise``, written for the white-noise model used by the error analysis here). ``k`` must be
    the uniform grid k_i = i·δk (starting at 0); ``rhigh`` is capped below the Nyquist R π/(2δk).
    """
    kstep = float(k[1] - k[0])
    r_nyq = np.pi / (2.0 * kstep)
    if rhigh > 0.95 * r_nyq:
        rlow, rhigh = 0.55 * r_nyq, 0.9 * r_nyq
    weight = hanning_window(k, kmin, kmax, dk) * k**kweight
    rstep = np.pi / (kstep * NFFT)
    r = np.arange(rlow, rhigh, rstep)
    chir = ft_matrix(k, weight, r, kstep) @ chi
    power = float(np.sum(chir**2) / len(r))
    norm = float((kstep**2 / np.pi) * np.sum(weight**2))
    if norm <= 0:
        raise InputError("estimate_noise: the k window is empty")
    return float(np.sqrt(power / norm))
