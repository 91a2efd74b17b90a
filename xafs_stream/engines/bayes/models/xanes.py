"""XANES model: an edge step (arctan or erf) plus a constant plus K pre-edge / white-line peaks.

    f(E) = h * step((E - E_edge) / w) + c0 [+ c1 (E - E_mid)] + sum_k a_k peak(E; mu_k, b_k)

Parameters: ``step`` h, ``e_edge`` (eV), ``edge_width`` w (eV; arctan half width, or erf sigma),
``c0``, optionally ``c1`` (per eV, about the window centre E_mid), then ``a{k}``, ``mu{k}`` (eV),
``b{k}`` (1/eV², FWHM = 2.3548/sqrt(b)) [, ``eta{k}``]. Peaks are exchangeable and kept ordered by centre.
"""

from __future__ import annotations

import numpy as np

from ...errors import InputError
from ..priors import Gamma, LogUniform, Normal, Prior, Uniform, mass_in
from . import lineshapes as ls
from .base import PeakBlocks, SpectrumModel
from .peaks import check_grid

EDGE_PARAMS = ("step", "e_edge", "edge_width", "c0")


def xanes_priors(
    x: np.ndarray,
    e0: float,
    *,
    fwhm_range: tuple[float, float] = (0.5, 12.0),
    amplitude_range: tuple[float, float] = (1e-3, 2.0),
) -> dict[str, Prior]:
    """Weakly informative priors for a normalised spectrum (edge step near 1) around ``e0`` (eV).

    step ~ Gamma(16, 16) (mean 1, sd 0.25); e_edge ~ Normal(e0, 4 eV); edge_width ~ LogUniform(0.3, 10) eV;
    c0 ~ Normal(0, 0.05); c1 ~ Normal(0, 0.005 /eV) (used with ``slope=True``);
    peak heights ~ LogUniform(amplitude_range); centres ~ Uniform over the window; widths: b log-uniform
    between the values giving FWHM in ``fwhm_range`` (eV).
    """
    x = check_grid(x)
    lo, hi = fwhm_range
    if not 0 < lo < hi:
        raise InputError(f"fwhm_range must be 0 < low < high (eV), got {fwhm_range}")
    return {
        "step": Gamma(16.0, 16.0),
        "e_edge": Normal(float(e0), 4.0),
        "edge_width": LogUniform(0.3, 10.0),
        "c0": Normal(0.0, 0.05),
        "c1": Normal(0.0, 0.005),
        "amplitude": LogUniform(*amplitude_range),
        "center": Uniform(float(x[0]), float(x[-1])),
        "width": LogUniform(float(ls.b_from_fwhm(hi)), float(ls.b_from_fwhm(lo))),
    }


class XanesModel(SpectrumModel):
    """Edge step + constant + K peaks on the energy grid ``x`` (eV).

    Parameters
    ----------
    x : ndarray of shape (N,), eV
    n_peaks : K >= 1
    priors : dict with keys step, e_edge, edge_width, c0, amplitude, center, width (and eta for
        pseudo-Voigt), e.g. from :func:`xanes_priors`
    edge : "arctan" (Lorentzian-broadened step, default) or "erf" (Gaussian-broadened)
    peak_shape : "gaussian" (default), "lorentzian" or "pseudo_voigt"
    slope : add a linear background term ``c1`` (needs priors["c1"])
    """

    kind = "xanes"

    def __init__(
        self,
        x: np.ndarray,
        n_peaks: int,
        priors: dict[str, Prior],
        *,
        edge: str = "arctan",
        peak_shape: str = "gaussian",
        slope: bool = False,
    ) -> None:
        x = check_grid(x)
        if isinstance(n_peaks, bool) or not isinstance(n_peaks, (int, np.integer)) or n_peaks < 1:
            raise InputError(f"n_peaks (K) must be an integer >= 1, got {n_peaks!r}")
        if edge not in ls.EDGE_SHAPES:
            raise InputError(f"edge must be one of {ls.EDGE_SHAPES}, got {edge!r}")
        if peak_shape not in ls.PEAK_SHAPES:
            raise InputError(f"peak_shape must be one of {ls.PEAK_SHAPES}, got {peak_shape!r}")
        bg = list(EDGE_PARAMS) + (["c1"] if slope else [])
        need = bg + ["amplitude", "center", "width"] + (["eta"] if peak_shape == "pseudo_voigt" else [])
        missing = [k for k in need if k not in priors and k != "eta"]
        if missing:
            raise InputError(f"xanes priors missing {missing}")
        for key in ("step", "edge_width", "width"):
            if not priors[key].positive:
                raise InputError(f"prior for {key!r} must have positive support (Gamma or LogUniform)")
        pad = 0.5 * (x[-1] - x[0])
        for key in ("e_edge", "center"):
            if mass_in(priors[key], x[0] - pad, x[-1] + pad) < 1e-9:
                raise InputError(
                    f"prior for {key!r} ({priors[key]}) has no support over the energy range "
                    f"[{x[0]:g}, {x[-1]:g}] eV"
                )
        self.edge = edge
        self.peak_shape = peak_shape
        self.n_peaks = int(n_peaks)
        per = ["a", "mu", "b"] + (["eta"] if peak_shape == "pseudo_voigt" else [])
        role = {
            "a": priors["amplitude"],
            "mu": priors["center"],
            "b": priors["width"],
            "eta": priors.get("eta", Uniform(0.0, 1.0)),
        }
        names = list(bg)
        pri = [priors[k] for k in bg]
        comp_of = [0, 0, 0, 1] + ([2] if slope else [])
        scale = [0, 3] + ([4] if slope else [])
        self._nbg = len(bg)  # background parameters
        self._first_peak = len(scale)  # first peak component
        for k in range(self.n_peaks):
            for r in per:
                names.append(f"{r}{k + 1}")
                pri.append(role[r])
                comp_of.append(self._first_peak + k)
            scale.append(self._nbg + k * len(per))
        blocks = self._nbg + np.arange(self.n_peaks * len(per)).reshape(self.n_peaks, len(per))
        self._per = len(per)
        self.slope = bool(slope)
        self._setup(
            x, names, pri, comp_of, scale, PeakBlocks(blocks, 1, self._first_peak + np.arange(self.n_peaks))
        )
        self._ones = np.ones_like(self.x)
        self._ramp = self.x - 0.5 * (self.x[0] + self.x[-1])

    def shape(self, theta: np.ndarray, c: int) -> np.ndarray:
        if c == 0:
            fn = ls.arctan_step if self.edge == "arctan" else ls.erf_step
            return fn(self.x, theta[:, 1], theta[:, 2])
        if c == 1:
            return np.broadcast_to(self._ones, (theta.shape[0], self.x.size)).copy()
        if c < self._first_peak:
            return np.broadcast_to(self._ramp, (theta.shape[0], self.x.size)).copy()
        return ls.peak_shape(self.peak_shape, self.x, theta, self._nbg + (c - self._first_peak) * self._per)

    def peak_table(self, theta: np.ndarray) -> list[dict[str, np.ndarray]]:
        starts = [self._nbg + k * self._per for k in range(self.n_peaks)]
        return ls.peak_rows(self.peak_shape, np.atleast_2d(theta), starts, self._per)

    def edge_curve(self, theta: np.ndarray) -> np.ndarray:
        """Edge step plus constant (and slope): the background under the peaks, shape (R, N)."""
        theta = np.atleast_2d(theta)
        out = self.shape(theta, 0) * theta[:, 0:1] + theta[:, 3:4]
        if self.slope:
            out += theta[:, 4:5] * self._ramp[None, :]
        return out

    def centroid(self, theta: np.ndarray, below: float | np.ndarray) -> np.ndarray:
        """Area-weighted mean centre of the peaks centred below ``below`` (eV), per sample (R,).

        NaN for samples with no peak below ``below``.
        """
        rows = self.peak_table(theta)
        below = np.broadcast_to(np.asarray(below, float), rows[0]["center"].shape) if rows else below
        num = np.zeros(np.atleast_2d(theta).shape[0])
        den = np.zeros_like(num)
        for row in rows:
            sel = row["center"] < below
            num += np.where(sel, row["area"] * row["center"], 0.0)
            den += np.where(sel, row["area"], 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / den, np.nan)

    def describe(self) -> dict:
        d = super().describe()
        d.update(edge=self.edge, peak_shape=self.peak_shape, n_peaks=self.n_peaks, slope=self.slope)
        return d
