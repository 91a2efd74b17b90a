"""A model seen through each point's noise: for data whose noise sd differs from point to point.

The samplers take one noise level for all points. Dividing the data and the model by each point's sd turns
unequal known noise into unit noise: fit ``WeightedModel(model, sd)`` to ``y / sd`` with ``noise=1``. The
posterior and the free energy are those of the original model with per-point Gaussian noise sd_i (the free
energy differs by the constant Σ log sd_i, the same for every candidate on the same points).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import InputError
from .base import SpectrumModel


class WeightedModel(SpectrumModel):
    """``model`` with every component divided by ``sd`` (N,), the points' noise sd (y units)."""

    def __init__(self, model: SpectrumModel, sd: np.ndarray) -> None:
        sd = np.asarray(sd, float)
        if sd.shape != model.x.shape or not np.all(np.isfinite(sd) & (sd > 0)):
            raise InputError(f"sd must be {model.n_points} finite positive noise levels, one per point")
        self.model = model
        self.weight = 1.0 / sd
        self.kind = model.kind
        self._setup(model.x, list(model.names), list(model.priors), list(model.component_of),
                    list(model.scale_index), model.peaks)

    def shape(self, theta: np.ndarray, c: int) -> np.ndarray:
        return self.model.shape(theta, c) * self.weight

    def peak_table(self, theta: np.ndarray) -> list[dict[str, np.ndarray]]:
        return self.model.peak_table(theta)

    def derived(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        return self.model.derived(theta)

    def describe(self) -> dict[str, Any]:
        return {**self.model.describe(), "weighted": True}

    def __getattr__(self, name: str) -> Any:
        # what the base class does not define (n_peaks, edge_curve, ...) comes from the wrapped model
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)
