"""Sums of K Gaussian / Lorentzian / pseudo-Voigt peaks (Nagata, Sugita, Okada 2012), optional constant.

Parameters per peak k (1-based names): ``a{k}`` height, ``mu{k}`` centre (x units), ``b{k}`` width
parameter (1/x², FWHM = 2 sqrt(2 ln 2)/sqrt(b)), and ``eta{k}`` (Lorentzian fraction) for pseudo-Voigt.
An optional constant baseline is the parameter ``c0``.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import InputError
from ..priors import Gamma, Normal, Prior, Uniform, mass_in
from . import lineshapes as ls
from .base import PeakBlocks, SpectrumModel


def check_grid(x: np.ndarray, name: str = "x") -> np.ndarray:
    """A finite, strictly increasing 1-D float64 grid with at least 3 points."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {x.shape}")
    if x.size < 3:
        raise InputError(f"{name} must have at least 3 points, got {x.size} (empty energy range?)")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name} contains NaN or inf")
    if not np.all(np.diff(x) > 0):
        raise InputError(f"{name} must be strictly increasing")
    return np.ascontiguousarray(x)


NAGATA_2012_PRIORS = {  # Nagata, Sugita, Okada, Neural Networks 28 (2012) 82, for their data (x in [0, 3])
    "amplitude": ("Gamma", 5.0, 5.0),  # shape, rate
    "center": ("Normal", 1.5, 5.0),  # mean, precision
    "width": ("Gamma", 5.0, 0.04),  # shape, rate (b: 1/x²)
}


def published_nagata_priors() -> dict[str, Prior]:
    """Nagata et al. (2012)'s priors exactly as published: a ~ Gamma(5, rate 5), μ ~ Normal(1.5, precision 5),
    b ~ Gamma(5, rate 0.04). They are in the units of their synthetic data (x in [0, 3], heights ~1)."""
    return {
        "amplitude": Gamma(5.0, 5.0),
        "center": Normal(1.5, math.sqrt(1.0 / 5.0)),
        "width": Gamma(5.0, 0.04),
    }


def nagata_priors(x: np.ndarray, y: np.ndarray) -> dict[str, Prior]:
    """Nagata et al. (2012) priors rescaled to the data's x and y ranges.

    Nagata's synthetic data span x in [0, 3] with peak heights near 1.5: a ~ Gamma(5, 5),
    mu ~ Normal(1.5, precision 5), b ~ Gamma(5, 0.04). Here x is mapped onto their [0, 3]
    (s = (x_max - x_min)/3) and heights onto max(y)/1.5, so their data give their priors back.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    s = (x[-1] - x[0]) / 3.0
    a0 = float(np.max(np.abs(y))) / 1.5
    if not a0 > 0:
        raise InputError("y is identically zero: nothing to decompose")
    return {
        "amplitude": Gamma(5.0, 5.0 / a0),
        "center": Normal(0.5 * (x[0] + x[-1]), math.sqrt(0.2) * s),
        "width": Gamma(5.0, 0.04 * s * s),
    }


class PeakModel(SpectrumModel):
    """K peaks of one shape (and an optional constant) on the grid ``x``.

    Parameters
    ----------
    x : ndarray of shape (N,)  (x units, e.g. eV)
    n_peaks : K >= 1
    amplitude, center, width : priors for every peak's height, centre and width parameter b (1/x²)
    shape : "gaussian" (default), "lorentzian" or "pseudo_voigt"
    eta : prior of the Lorentzian fraction (pseudo-Voigt only), default Uniform(0, 1)
    baseline : prior of a constant offset ``c0``, or None for no offset
    """

    kind = "peaks"

    def __init__(
        self,
        x: np.ndarray,
        n_peaks: int,
        *,
        amplitude: Prior,
        center: Prior,
        width: Prior,
        shape: str = "gaussian",
        eta: Prior | None = None,
        baseline: Prior | None = None,
    ) -> None:
        x = check_grid(x)
        if isinstance(n_peaks, bool) or not isinstance(n_peaks, (int, np.integer)) or n_peaks < 1:
            raise InputError(f"n_peaks (K) must be an integer >= 1, got {n_peaks!r}")
        if shape not in ls.PEAK_SHAPES:
            raise InputError(f"shape must be one of {ls.PEAK_SHAPES}, got {shape!r}")
        if not width.positive:
            raise InputError("width prior (on b, 1/x²) must have positive support (Gamma or LogUniform)")
        pad = 0.5 * (x[-1] - x[0])
        if mass_in(center, x[0] - pad, x[-1] + pad) < 1e-9:
            raise InputError(
                f"center prior {center} has no support over the data range [{x[0]:g}, {x[-1]:g}]"
            )
        self.shape_name = shape
        self.n_peaks = int(n_peaks)
        per = ["a", "mu", "b"] + (["eta"] if shape == "pseudo_voigt" else [])
        eta = eta if eta is not None else Uniform(0.0, 1.0)
        role_prior = {"a": amplitude, "mu": center, "b": width, "eta": eta}
        names, priors, comp_of = [], [], []
        for k in range(self.n_peaks):
            for role in per:
                names.append(f"{role}{k + 1}")
                priors.append(role_prior[role])
                comp_of.append(k)
        scale = [per.index("a") + k * len(per) for k in range(self.n_peaks)]
        if baseline is not None:
            names.append("c0")
            priors.append(baseline)
            comp_of.append(self.n_peaks)
            scale.append(len(names) - 1)
        blocks = np.arange(self.n_peaks * len(per)).reshape(self.n_peaks, len(per))
        peaks = PeakBlocks(blocks, per.index("mu"), np.arange(self.n_peaks))
        self._per = len(per)
        self._setup(x, names, priors, comp_of, scale, peaks)
        self._ones = np.ones_like(self.x)

    def shape(self, theta: np.ndarray, c: int) -> np.ndarray:
        if c == self.n_peaks:  # constant baseline
            return np.broadcast_to(self._ones, (theta.shape[0], self.x.size)).copy()
        return ls.peak_shape(self.shape_name, self.x, theta, c * self._per)

    def peak_table(self, theta: np.ndarray) -> list[dict[str, np.ndarray]]:
        starts = [k * self._per for k in range(self.n_peaks)]
        return ls.peak_rows(self.shape_name, np.atleast_2d(theta), starts, self._per)

    def derived(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for k, row in enumerate(self.peak_table(theta), start=1):
            out[f"fwhm{k}"] = row["width"]
            out[f"area{k}"] = row["area"]
        return out

    def describe(self) -> dict:
        d = super().describe()
        d.update(shape=self.shape_name, n_peaks=self.n_peaks)
        return d


def nagata_peak_model(x: np.ndarray, y: np.ndarray, n_peaks: int, *, shape: str = "gaussian") -> PeakModel:
    """Gaussian (or other shape) peak model with :func:`nagata_priors` scaled to (x, y)."""
    x = check_grid(x)
    pri = nagata_priors(x, y)
    return PeakModel(
        x, n_peaks, amplitude=pri["amplitude"], center=pri["center"], width=pri["width"], shape=shape
    )
