"""Adaptive acquisition: which energies and dwell times to measure next so that a XANES quantity (E0, the
white-line energy, the pre-edge centroid, the number of peaks K) is known to a target precision in the least
beam time.

- :mod:`.local`: E0 and the white-line energy from local polynomials (linear models: exact Gaussian
  posteriors given the counting noise, and the variance a new point would remove);
- :mod:`.model_choice`: the number of peaks K: P(K | points) from tempered-SMC free energies of edge + K
  peaks, and where the best K and its rivals disagree most (loaded only when K is a target);
- :mod:`.design`: :class:`AdaptiveXanes`, a tell/ask/report agent (the bluesky-adaptive interface): each
  next point maximises the expected reduction of the targets' posterior variance per second of beam.
"""

from .design import TARGETS, AdaptiveXanes, Decision
from .local import LocalEstimate, estimate, rough_features

__all__ = ["TARGETS", "AdaptiveXanes", "Decision", "LocalEstimate", "estimate", "rough_features"]
