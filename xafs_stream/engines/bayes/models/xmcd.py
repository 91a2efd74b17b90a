"""XMCD: a difference spectrum as a sum of K signed peaks (L3 and L2 edges), same machinery as peaks.

Amplitudes have a sign-free prior Normal(0, A0) and move additively; centres are exchangeable and kept
ordered. With the L3 and L2 edge energies given, the integrated dichroism on each edge (peaks split at the
midpoint between the edges) is reported as derived quantities ``area_l3`` and ``area_l2``.
"""

from __future__ import annotations

import numpy as np

from ...errors import InputError
from ..priors import LogUniform, Normal, Prior, Uniform
from . import lineshapes as ls
from .peaks import PeakModel, check_grid


def xmcd_priors(
    x: np.ndarray, y: np.ndarray, *, fwhm_range: tuple[float, float] = (0.3, 6.0)
) -> dict[str, Prior]:
    """Amplitude ~ Normal(0, max|y|), centre ~ Uniform over x, b log-uniform for FWHM in ``fwhm_range``."""
    x = check_grid(x)
    a0 = float(np.max(np.abs(np.asarray(y, float))))
    if not a0 > 0:
        raise InputError("y is identically zero: no dichroism to decompose")
    lo, hi = fwhm_range
    if not 0 < lo < hi:
        raise InputError(f"fwhm_range must be 0 < low < high, got {fwhm_range}")
    return {
        "amplitude": Normal(0.0, a0),
        "center": Uniform(float(x[0]), float(x[-1])),
        "width": LogUniform(float(ls.b_from_fwhm(hi)), float(ls.b_from_fwhm(lo))),
    }


class XmcdModel(PeakModel):
    """K signed peaks; ``edges=(E_L3, E_L2)`` (eV) adds the per-edge integrated dichroism."""

    kind = "xmcd"

    def __init__(
        self,
        x: np.ndarray,
        n_peaks: int,
        priors: dict[str, Prior],
        *,
        shape: str = "gaussian",
        edges: tuple[float, float] | None = None,
    ) -> None:
        if priors["amplitude"].positive:
            raise InputError("xmcd amplitude prior must allow both signs (e.g. Normal(0, A0))")
        super().__init__(
            x,
            n_peaks,
            amplitude=priors["amplitude"],
            center=priors["center"],
            width=priors["width"],
            shape=shape,
        )
        if edges is not None:
            l3, l2 = (float(e) for e in edges)
            if not l3 < l2:
                raise InputError(f"edges must be (E_L3, E_L2) with E_L3 < E_L2, got {edges}")
        self.edges = edges

    def derived(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        out = super().derived(theta)
        if self.edges is not None:
            mid = 0.5 * (self.edges[0] + self.edges[1])
            rows = self.peak_table(theta)
            out["area_l3"] = sum(np.where(r["center"] < mid, r["area"], 0.0) for r in rows)
            out["area_l2"] = sum(np.where(r["center"] >= mid, r["area"], 0.0) for r in rows)
        return out

    def describe(self) -> dict:
        d = super().describe()
        d.update(edges=list(self.edges) if self.edges else None)
        return d
