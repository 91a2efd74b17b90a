"""EXAFS sparse modeling (SpM): FEFF path dictionaries, non-negative LASSO with cross-validation, shell
refinement with standard errors, and σ²(T) thermal models. Pure numpy/scipy; see METHODS.md §1.

Entry points: :func:`spm_fit` (χ(k) + paths → :class:`SpmResult`), :class:`SparseShellModel` (the same as an
estimator), :func:`fit_thermal` (σ²(T) → Einstein/Debye temperature). FEFF files are read by
:mod:`xafs_stream.io.feff`.
"""

from .dictionary import Dictionary, build_dictionary
from .model import SparseShellModel, SpmSettings, spm_fit
from .paths import PathAtom, ScatteringPath, path_chi, path_chi_grid
from .results import Shell, ShellFit, SpmResult
from .shells import ShellSeed, group_atoms, refine_shells
from .solver import LassoCV, LassoPath, nn_lasso_cv, nn_lasso_path
from .thermal import ThermalFit, fit_thermal, sigma2_debye, sigma2_einstein
from .transform import FitSpace, estimate_noise, make_fit_space

__all__ = [
    "Dictionary",
    "FitSpace",
    "LassoCV",
    "LassoPath",
    "PathAtom",
    "ScatteringPath",
    "Shell",
    "ShellFit",
    "ShellSeed",
    "SparseShellModel",
    "SpmResult",
    "SpmSettings",
    "ThermalFit",
    "build_dictionary",
    "estimate_noise",
    "fit_thermal",
    "group_atoms",
    "make_fit_space",
    "nn_lasso_cv",
    "nn_lasso_path",
    "path_chi",
    "path_chi_grid",
    "refine_shells",
    "sigma2_debye",
    "sigma2_einstein",
    "spm_fit",
]
