"""Bayesian spectroscopy: replica-exchange MC, Bayesian free energy and model selection (METHODS §2).

- :func:`run_remc` / :class:`ReplicaExchange`: REMC vectorised over replicas and independent chains, with a
  tuned temperature ladder, adapted per-parameter steps, ordered peak labels and convergence diagnostics.
- :func:`run_smc`: tempered sequential Monte Carlo over independent particle populations, with moves shaped
  by the particles' covariance and jumps between least-squares optima (:func:`find_modes`); its result
  reads like a REMC run's (free energy, noise scan, R-hat over the populations).
- :func:`free_energy`, :func:`scan_noise`: F = -log evidence by the bridge over the ladder, its standard
  error, and F as a function of the noise variance (Tokuda et al. 2017).
- :func:`select_models`: minimum-F choice among candidate models (numbers of peaks, Hamiltonians, prior
  regions), noise known or estimated.
- models: peaks (Gaussian / Lorentzian / pseudo-Voigt), XANES (edge step + peaks), XMCD (signed peaks),
  cluster-model Hamiltonian.
- :func:`report`: medians and 68/95 % intervals, peak table, predictive band.
- :func:`scan_delta`: Hamiltonian selection over charge-transfer-energy (Δ) regions, with the free-Δ check.
- workflows: :func:`decompose_peaks`, :func:`decompose_xmcd`, :func:`fit_xanes`, :func:`fit_preedge`.
"""

from .cluster_scan import ClusterScan, delta_regions, scan_delta
from .free_energy import FreeEnergy, NoiseScan, free_energy, free_energy_curve, scan_noise
from .ladder import geometric_ladder, retune
from .models import (
    PUBLISHED,
    ClusterModel,
    PeakModel,
    SpectrumModel,
    XanesModel,
    XmcdModel,
    cluster_hamiltonians,
    cluster_lines,
    cluster_spectrum,
    nagata_peak_model,
    nagata_priors,
    xanes_priors,
    xmcd_priors,
)
from .modes import Modes, find_modes
from .noise import difference_noise
from .priors import Gamma, LogUniform, Normal, Uniform
from .sampler import RemcResult, RemcSettings, ReplicaExchange, run_remc, split_rhat
from .selection import CandidateFit, Selection, check_k_range, select_models
from .smc import SmcSettings, extend_smc, run_smc
from .state import ReplicaState
from .summary import (
    Band,
    FitReport,
    Interval,
    PeakSummary,
    interval,
    predictive_band,
    report,
    summarize_parameters,
)
from .workflows import (
    PreedgeResult,
    check_xy,
    decompose_peaks,
    decompose_xmcd,
    find_preedge_peak,
    fit_preedge,
    fit_xanes,
    window,
)

__all__ = [
    "PUBLISHED",
    "Band",
    "CandidateFit",
    "ClusterModel",
    "ClusterScan",
    "FitReport",
    "FreeEnergy",
    "Gamma",
    "Interval",
    "LogUniform",
    "Modes",
    "NoiseScan",
    "Normal",
    "PeakModel",
    "PeakSummary",
    "PreedgeResult",
    "RemcResult",
    "RemcSettings",
    "ReplicaExchange",
    "ReplicaState",
    "Selection",
    "SmcSettings",
    "SpectrumModel",
    "Uniform",
    "XanesModel",
    "XmcdModel",
    "check_k_range",
    "check_xy",
    "cluster_hamiltonians",
    "cluster_lines",
    "cluster_spectrum",
    "decompose_peaks",
    "decompose_xmcd",
    "delta_regions",
    "difference_noise",
    "extend_smc",
    "find_modes",
    "find_preedge_peak",
    "fit_preedge",
    "fit_xanes",
    "free_energy",
    "free_energy_curve",
    "geometric_ladder",
    "interval",
    "nagata_peak_model",
    "nagata_priors",
    "predictive_band",
    "report",
    "retune",
    "run_remc",
    "run_smc",
    "scan_delta",
    "scan_noise",
    "select_models",
    "split_rhat",
    "summarize_parameters",
    "window",
    "xanes_priors",
    "xmcd_priors",
]
