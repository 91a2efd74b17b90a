"""The verdict on a μ-XANES tile or map: pixels without the element, and how well the references fit."""

from __future__ import annotations

import numpy as np

from ..verdict import Verdict, threshold


def judge_pixels(n_pixels: int, n_without_edge: int, lcf_rms: np.ndarray | None = None, *,
                 thresholds: dict | None = None) -> Verdict:
    """``ok``/``warn``/``bad`` for a set of map pixels.

    n_pixels : pixels measured; n_without_edge : of those, pixels with no significant edge (no element there,
    or no signal): they are masked, never assigned a phase
    lcf_rms : per-pixel RMS residual of the linear combination fit (normalised units), NaN where not fitted
    """
    t = lambda name: threshold(name, thresholds)  # noqa: E731
    v = Verdict()
    if n_pixels <= 0:
        return v.bad("no pixels")
    share = n_without_edge / n_pixels
    if share >= 1.0:
        v.bad("no pixel shows the element's edge")
    elif share > t("pixels_without_edge_bad"):
        v.bad(f"{share:.0%} of the pixels show no edge (masked: no element or no signal)")
    elif share > t("pixels_without_edge_warn"):
        v.warn(f"{share:.0%} of the pixels show no edge (masked: no element or no signal)")
    if lcf_rms is not None:
        rms = np.asarray(lcf_rms, float)
        rms = rms[np.isfinite(rms)]
        if rms.size:
            median = float(np.median(rms))
            if median > t("lcf_residual_bad"):
                v.bad(f"references fit poorly: median LCF residual {median:.3f} of the edge step")
            elif median > t("lcf_residual_warn"):
                v.warn(f"median LCF residual {median:.3f} of the edge step")
    return v
