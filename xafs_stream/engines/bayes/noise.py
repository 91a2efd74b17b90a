"""A rough, model-free noise level used to place the top of the ladder when the noise is estimated."""

from __future__ import annotations

import math

import numpy as np


def difference_noise(y: np.ndarray) -> float:
    """Noise standard deviation from the second differences of ``y`` (robust, MAD based).

    For white noise of sd s, the second difference has sd s*sqrt(6); a smooth signal adds little when
    it is sampled finely. Smoothed or interpolated data give an underestimate.
    """
    d2 = np.diff(np.asarray(y, float), 2)
    if d2.size == 0:
        return 0.0
    mad = np.median(np.abs(d2 - np.median(d2)))
    return float(1.4826 * mad / math.sqrt(6.0))
