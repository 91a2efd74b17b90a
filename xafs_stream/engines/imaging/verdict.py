"""The verdict on a μ-XANES tile or map: pixels without the element, and how well the references fit."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..verdict import Verdict, threshold


def judge_pixels(n_pixels: int, n_without_edge: int, lcf_rms: np.ndarray | None = None, *,
                 thresholds: dict | None = None) -> Verdict:
    """``ok``/``warn``/``bad`` for a set of map pixels.

    n_pixels : pixels measured; n_without_edge : of those, pixels with no significant edge on their own (no
    element there, or too little signal): their edge features (edge step, E0, white line) are missing. A
    phase label can still come from the reference fit and the spatial model (measured: at noise 0.3 per
    energy, 73 % of the phantom's pixels had no significant edge and 99 % of the labels were right)
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
        v.bad(f"{share:.0%} of the pixels show no edge on their own (no element there, or too little signal): "
              "their edge features are missing")
    elif share > t("pixels_without_edge_warn"):
        v.warn(f"{share:.0%} of the pixels show no edge on their own (no element there, or too little signal): "
               "their edge features are missing")
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


def judge_map(model: Any, *, thresholds: dict | None = None) -> Verdict:
    """:func:`judge_pixels` of a map model (:class:`~.mapmodel.MapModel`, typed loosely: no import of it here):
    its observed pixels, those without a significant edge (a NaN ``edge_step``; counted only when the edge
    features were computed, not for a soft X-ray L-edge window, where every pixel's ``edge_step`` is NaN by
    design) and the LCF residuals when references were fitted. The same verdict for the live map and
    ``xafs-stream map``."""
    observed = np.asarray(model.observed).astype(bool)
    raw = model.raw
    edge = raw.get("edge_step") if "edge_step" in model.config.smooth else None
    no_edge = int(np.count_nonzero(observed & ~np.isfinite(edge))) if edge is not None else 0
    lcf = raw.get("lcf_rms")
    return judge_pixels(int(observed.sum()), no_edge, None if lcf is None else np.asarray(lcf)[observed],
                        thresholds=thresholds)
