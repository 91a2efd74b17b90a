"""Adaptive acquisition: which energies and dwell times to measure next so that a XANES quantity (E0, the
white line, the number of peaks) is known to a target precision in the least beam time.

- :mod:`.model`: a parametric XANES model (arctan edge, linear background, K Gaussian peaks), its weighted
  least-squares fit with a Laplace (Gaussian) posterior, and the targets as functions of its parameters;
- :mod:`.design`: :class:`AdaptiveXanes`, a tell/ask/report agent (the bluesky-adaptive interface): each
  next point maximises the expected reduction of the targets' posterior variance per second of beam.
"""

from .design import AdaptiveXanes, Decision
from .model import TARGETS, XanesFit, fit_xanes_model

__all__ = ["TARGETS", "AdaptiveXanes", "Decision", "XanesFit", "fit_xanes_model"]
