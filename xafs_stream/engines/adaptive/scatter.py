"""The scatter of measured points about local cubics: the noise the data show, to check or replace the noise
the counts claim (the design's s² when points carry no sd; the high-k grid's reduced χ²)."""

from __future__ import annotations

import numpy as np

#: neighbouring points per cubic: short enough that a cubic follows the signal (0.3 Å⁻¹ at high k, a few eV
#: in the XANES), long enough to leave 3 degrees of freedom per block
BLOCK = 7


def cubic_scatter(x: np.ndarray, y: np.ndarray, weight: np.ndarray, block: int = BLOCK) -> tuple[float, int]:
    """Weighted residual sum of squares of ``y`` about a cubic in ``x`` fitted to each run of ``block``
    neighbouring points (``x`` increasing; an incomplete last run is left out, as is a run at one ``x``), and its
    degrees of freedom (``block`` - 4 per run). ``weight``: each point's weight (1/variance gives a χ²; dwell,
    with var ∝ 1/dwell, gives variance x dwell times the degrees of freedom)."""
    x, y, w = (np.asarray(a, float) for a in (x, y, weight))
    rss, dof = 0.0, 0
    for lo in range(0, x.size - block + 1, block):
        sl = slice(lo, lo + block)
        if np.ptp(x[sl]) <= 0:
            continue
        X = np.vander(x[sl] - x[sl].mean(), 4, increasing=True)
        sw = np.sqrt(w[sl])
        coef, *_ = np.linalg.lstsq(X * sw[:, None], y[sl] * sw, rcond=None)
        rss += float((((y[sl] - X @ coef) * sw) ** 2).sum())
        dof += block - 4
    return rss, dof
