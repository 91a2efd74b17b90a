"""XAFS preprocessing engine (numpy/scipy only): E0, normalisation, AUTOBK, Fourier transforms, merging,
deglitching, energy calibration and χ noise, following the IFEFFIT / Larch / Athena conventions.

Steps take one spectrum or a stack (n_spectra, n) on one grid; in a stack a failing spectrum is flagged
(``ok`` mask + ``errors``) without failing the others, while a single spectrum raises InputError.
Energies in eV, k in Å⁻¹, R in Å.
"""

from .autobk import AutobkResult, autobk
from .calibrate import Alignment, Calibration, align_energy, calibrate_energy
from .deglitch import DeglitchResult, deglitch
from .e0 import find_e0
from .kspace import ETOK, KTOE, etok, ktoe
from .merge import MergeResult, merge_spectra
from .noise import NoiseResult, estimate_chi_noise
from .normalize import PreEdgeResult, pre_edge
from .process import ProcessedSpectrum, ProcessSettings, process, process_spectrum
from .xft import BackFTResult, FTResult, ftwindow, xftf, xftr

__all__ = [
    "ETOK",
    "KTOE",
    "Alignment",
    "AutobkResult",
    "BackFTResult",
    "Calibration",
    "DeglitchResult",
    "FTResult",
    "MergeResult",
    "NoiseResult",
    "PreEdgeResult",
    "ProcessedSpectrum",
    "align_energy",
    "autobk",
    "calibrate_energy",
    "deglitch",
    "estimate_chi_noise",
    "etok",
    "find_e0",
    "ftwindow",
    "ktoe",
    "merge_spectra",
    "pre_edge",
    "process",
    "process_spectrum",
    "ProcessSettings",
    "xftf",
    "xftr",
]
