"""Photo-electron wavenumber: k = sqrt(2 m (E - E0)) / hbar, and the uniform k grid of the field.

KTOE = hbar^2 / (2 m_e) in eV Å² (3.80998 eV Å², i.e. k² = 0.262468 (E - E0) with E in eV and k in Å⁻¹),
from CODATA constants in ``scipy.constants``.
"""

from __future__ import annotations

import numpy as np
from scipy import constants

KTOE = 1.0e20 * constants.hbar**2 / (2.0 * constants.m_e * constants.e)  # eV Å²
ETOK = 1.0 / KTOE  # 1 / (eV Å²)
KSTEP = 0.05  # Å⁻¹, the grid step used by IFEFFIT / Larch / Athena
NFFT = 2048  # FFT length of the same convention (R step = pi / (KSTEP * NFFT) ≈ 0.0307 Å)


def etok(energy: np.ndarray | float) -> np.ndarray | float:
    """Wavenumber k (Å⁻¹) of a photo-electron with kinetic energy ``energy`` (eV, relative to E0).

    Negative energies map to negative k (sign kept), as in the AUTOBK k grid below E0.
    """
    e = np.asarray(energy, dtype=float)
    k = np.sign(e) * np.sqrt(ETOK * np.abs(e))
    return float(k) if k.ndim == 0 else k


def ktoe(k: np.ndarray | float) -> np.ndarray | float:
    """Kinetic energy (eV above E0) of a photo-electron with wavenumber ``k`` (Å⁻¹)."""
    kk = np.asarray(k, dtype=float)
    e = KTOE * kk * kk
    return float(e) if e.ndim == 0 else e


def uniform_k_grid(kmax: float, kstep: float = KSTEP) -> np.ndarray:
    """The uniform grid 0, kstep, ... up to kmax (Å⁻¹), like Larch's ``kout``."""
    return kstep * np.arange(int(1.01 + kmax / kstep), dtype=float)
