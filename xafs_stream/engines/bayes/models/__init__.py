"""Models behind one small interface (:class:`SpectrumModel`): parameters, priors, forward model."""

from .base import PeakBlocks, SpectrumModel
from .hamiltonian import PUBLISHED, ClusterModel, cluster_hamiltonians, cluster_lines, cluster_spectrum
from .peaks import PeakModel, check_grid, nagata_peak_model, nagata_priors
from .weighted import WeightedModel
from .xanes import XanesModel, xanes_priors
from .xmcd import XmcdModel, xmcd_priors

__all__ = [
    "PUBLISHED",
    "ClusterModel",
    "PeakBlocks",
    "PeakModel",
    "SpectrumModel",
    "WeightedModel",
    "XanesModel",
    "XmcdModel",
    "check_grid",
    "cluster_hamiltonians",
    "cluster_lines",
    "cluster_spectrum",
    "nagata_peak_model",
    "nagata_priors",
    "xanes_priors",
    "xmcd_priors",
]
