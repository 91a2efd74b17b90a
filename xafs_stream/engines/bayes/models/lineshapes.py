"""Peak and edge line shapes, vectorised over replicas.

All peak shapes share one width parameter ``b`` (inverse variance of the Gaussian, Nagata et al. 2012):
FWHM = 2 sqrt(2 ln 2) / sqrt(b) for every shape, so a prior on ``b`` means the same for each shape.
Arguments: ``x`` of shape (N,); ``mu``, ``b``, ``eta`` of shape (R,); results of shape (R, N), unit height.
Inner kernels: inputs are assumed clean float64 (checked by the models).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
PEAK_SHAPES = ("gaussian", "lorentzian", "pseudo_voigt")
EDGE_SHAPES = ("arctan", "erf")


def fwhm_from_b(b: np.ndarray) -> np.ndarray:
    """Full width at half maximum (x units) for width parameter ``b`` (1/x²)."""
    return FWHM_PER_SIGMA / np.sqrt(b)


def b_from_fwhm(fwhm: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`fwhm_from_b`."""
    return (FWHM_PER_SIGMA / np.asarray(fwhm, float)) ** 2


def gaussian(x: np.ndarray, mu: np.ndarray, b: np.ndarray) -> np.ndarray:
    """exp(-b (x - mu)² / 2), shape (R, N)."""
    t = x[None, :] - mu[:, None]
    t *= t
    t *= (-0.5 * b)[:, None]
    return np.exp(t, out=t)


def lorentzian(x: np.ndarray, mu: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 / (1 + 4 (x - mu)² / w²) with w = FWHM(b), shape (R, N)."""
    w = fwhm_from_b(b)
    t = x[None, :] - mu[:, None]
    t *= (2.0 / w)[:, None]
    t *= t
    t += 1.0
    return np.reciprocal(t, out=t)


def pseudo_voigt(x: np.ndarray, mu: np.ndarray, b: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """eta * Lorentzian + (1 - eta) * Gaussian with the same FWHM, shape (R, N)."""
    g = gaussian(x, mu, b)
    g *= (1.0 - eta)[:, None]
    g += eta[:, None] * lorentzian(x, mu, b)
    return g


def peak_area(shape: str, a: np.ndarray, b: np.ndarray, eta: np.ndarray | None = None) -> np.ndarray:
    """Integral over x of a peak of height ``a``."""
    gauss = a * np.sqrt(2.0 * np.pi / b)
    lor = a * np.pi * fwhm_from_b(b) / 2.0
    if shape == "gaussian":
        return gauss
    if shape == "lorentzian":
        return lor
    return (1.0 - eta) * gauss + eta * lor


def peak_shape(shape: str, x: np.ndarray, theta: np.ndarray, i: int) -> np.ndarray:
    """Unit-height peak whose parameters (a, mu, b[, eta]) start at column ``i`` of ``theta`` (R, P): (R, N)."""
    mu, b = theta[:, i + 1], theta[:, i + 2]
    if shape == "gaussian":
        return gaussian(x, mu, b)
    if shape == "lorentzian":
        return lorentzian(x, mu, b)
    return pseudo_voigt(x, mu, b, theta[:, i + 3])


def peak_rows(shape: str, theta: np.ndarray, starts: list[int], per: int) -> list[dict[str, np.ndarray]]:
    """Centre (eV), height, FWHM (eV) and area of the peaks whose parameters start at ``starts`` (per sample)."""
    rows = []
    for i in starts:
        a, mu, b = theta[:, i], theta[:, i + 1], theta[:, i + 2]
        eta = theta[:, i + 3] if per == 4 else None
        rows.append({"center": mu, "height": a, "width": fwhm_from_b(b), "area": peak_area(shape, a, b, eta)})
    return rows


def arctan_step(x: np.ndarray, e_edge: np.ndarray, width: np.ndarray) -> np.ndarray:
    """1/2 + arctan((x - e_edge) / width) / pi: a Lorentzian-broadened unit step, shape (R, N)."""
    t = x[None, :] - e_edge[:, None]
    t /= width[:, None]
    np.arctan(t, out=t)
    t *= 1.0 / np.pi
    t += 0.5
    return t


def erf_step(x: np.ndarray, e_edge: np.ndarray, width: np.ndarray) -> np.ndarray:
    """(1 + erf((x - e_edge) / (sqrt(2) width))) / 2: a Gaussian-broadened unit step, shape (R, N)."""
    t = x[None, :] - e_edge[:, None]
    t /= (math.sqrt(2.0) * width)[:, None]
    t = special.erf(t, out=t)
    t += 1.0
    t *= 0.5
    return t


def lorentzian_area_normalised(x: np.ndarray, centers: np.ndarray, hwhm: np.ndarray) -> np.ndarray:
    """Unit-area Lorentzians (hwhm/pi) / ((x - c)² + hwhm²) summed with no weights.

    ``centers`` of shape (R, M), ``hwhm`` of shape (R,); returns shape (R, M, N).
    """
    d = x[None, None, :] - centers[:, :, None]
    g = hwhm[:, None, None]
    return (g / np.pi) / (d * d + g * g)
