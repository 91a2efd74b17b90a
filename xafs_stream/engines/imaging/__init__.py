"""μ-XANES imaging engine (METHODS §3): per-pixel features, LCF, PCA/NMF/clustering, Gaussian and Potts MRFs
with learned hyperparameters, incremental tile updates and spatial statistics. numpy/scipy (+ scikit-learn
for the decompositions); arrays in, dataclasses out.
"""

from .decomposition import Decomposition, PhaseModel, fit_phase_model, nmf_scores, pca_scores
from .features import FEATURE_NAMES, PixelFeatures, pixel_features
from .gmrf import GmrfParams, learn_params, map_block_stats, posterior_sd, solve_map
from .lcf import LcfResult, fit_lcf, refs_on_energy
from .mapmodel import MapConfig, MapModel, SolveLog
from .pipeline import ImagingSettings, MapResult, analyze_stack, check_stack, map_statistics, stack_features
from .potts import icm, pseudo_likelihood_beta
from .spatial import DomainStats, Variogram, cross_correlation, domain_sizes, variogram

__all__ = [
    "FEATURE_NAMES", "Decomposition", "DomainStats", "GmrfParams", "ImagingSettings", "LcfResult", "MapConfig",
    "MapModel", "MapResult", "PhaseModel", "PixelFeatures", "SolveLog", "Variogram", "analyze_stack",
    "check_stack", "cross_correlation", "domain_sizes", "fit_lcf", "fit_phase_model", "icm", "learn_params",
    "map_block_stats", "map_statistics", "nmf_scores", "pca_scores", "pixel_features", "posterior_sd",
    "pseudo_likelihood_beta", "refs_on_energy", "solve_map", "stack_features", "variogram",
]
