"""The edge step of the points an adaptive scan has measured, and μ normalised by it (for the number of peaks
and the noise of χ at high k)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def merge_repeats(energy: np.ndarray, mu: np.ndarray, var: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points measured more than once at one energy (to 1e-6 eV) become one: their inverse-variance mean and
    its variance (the same Gaussian likelihood up to a constant). Returns energy (eV, increasing), μ, var."""
    e, y, v = (np.asarray(a, float) for a in (energy, mu, var))
    key, inverse = np.unique(np.round(e, 6), return_inverse=True)
    w = 1.0 / v
    wsum = np.bincount(inverse, weights=w)
    return key, np.bincount(inverse, weights=w * y) / wsum, 1.0 / wsum


def normalise(energy: np.ndarray, mu: np.ndarray, var: np.ndarray, e0: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Rough normalisation over a XANES window: μ minus its mean below E0 - 15 eV, divided by the mean of that
    over E0 + 30 ... E0 + 60 eV (an affine map, so that a model of the edge stays one: a line subtracted through the
    pre-edge would cut into the edge's tail, and extra peaks would be needed to mend it; the fitted model has
    its own slope). Returns energy (eV, repeated energies merged by :func:`merge_repeats`, increasing),
    normalised μ, its sd, and the step (μ units)."""
    key, y, v = merge_repeats(energy, mu, var)
    pre = key < e0 - 15.0
    post = (key > e0 + 30.0) & (key <= e0 + 60.0)
    if pre.sum() < 1 or post.sum() < 1:
        raise InputError("the edge step needs points below E0 - 15 eV and over E0 + 30 ... E0 + 60 eV")
    base = float(np.average(y[pre], weights=1.0 / v[pre]))
    step = float(np.average(y[post] - base, weights=1.0 / v[post]))
    if not step > 0:
        raise InputError(f"the edge step is not positive ({step:.3g}): no edge in the window")
    return key, (y - base) / step, np.sqrt(v) / step, step
