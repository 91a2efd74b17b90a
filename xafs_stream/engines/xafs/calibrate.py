"""Energy calibration and alignment against a reference channel (usually a metal foil measured with the sample).

- :func:`calibrate_energy`: shift that puts the reference's E0 (max of dμ/dE, :func:`find_e0`) at its
  tabulated value (e.g. Cu K 8979 eV).
- :func:`align_energy`: shift that best overlays the derivative of one normalised spectrum on another's
  (least squares over a window around the reference E0, like Athena / Larch ``energy_align``); sub-grid
  precise, for aligning repeats before merging.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from ..errors import InputError
from ._validate import check_energy, check_stack
from .normalize import pre_edge


@dataclass
class Calibration:
    """``shift`` (eV) to add to the energy; ``e0_measured`` of the reference before the shift; ``energy`` after;
    ``noise`` the reference's per-point noise from its pre-edge fit (NaN when unknown).

    For a stack of reference spectra on one grid: ``shift`` and ``e0_measured`` are (n_spectra,) and
    ``energy`` is (n_spectra, n); ``ok`` / ``errors`` flag spectra without an edge.
    """

    shift: float | np.ndarray
    e0_measured: float | np.ndarray
    e0_reference: float
    energy: np.ndarray
    ok: np.ndarray
    errors: dict[int, str]
    noise: float | np.ndarray = float("nan")


def calibrate_energy(energy: np.ndarray, mu_ref: np.ndarray, *, e0_reference: float) -> Calibration:
    """Energy shift putting the reference channel's E0 at ``e0_reference`` (eV, e.g. the tabulated edge).

    Parameters
    ----------
    energy : ndarray of shape (n,), eV
    mu_ref : ndarray of shape (n,) or (n_spectra, n): μ of the reference foil (ln(It/Iref) in transmission)
    e0_reference : the reference's known E0, eV
    """
    if not np.isfinite(e0_reference):
        raise InputError(f"e0_reference: must be a finite energy in eV, got {e0_reference!r}")
    e = check_energy(energy)
    pe = pre_edge(e, mu_ref)
    e0 = np.atleast_1d(pe.e0)
    shift = e0_reference - e0
    single = np.ndim(mu_ref) == 1
    energy_out = e[None, :] + shift[:, None]
    return Calibration(
        shift=float(shift[0]) if single else shift,
        e0_measured=float(e0[0]) if single else e0,
        e0_reference=float(e0_reference),
        energy=energy_out[0] if single else energy_out,
        ok=pe.ok,
        errors=pe.errors,
        noise=float(np.atleast_1d(pe.noise)[0]) if single else np.asarray(pe.noise),
    )


@dataclass
class Alignment:
    """``shift`` (eV) to add to the spectrum's energy so it overlays the reference; ``scale`` of its derivative;
    ``rms`` misfit of the normalised derivatives after alignment; ``emin``/``emax`` the window (eV, absolute)."""

    shift: float
    scale: float
    rms: float
    emin: float
    emax: float


def align_energy(
    energy: np.ndarray,
    mu: np.ndarray,
    energy_ref: np.ndarray,
    mu_ref: np.ndarray,
    *,
    emin: float = -15.0,
    emax: float = 35.0,
    max_shift: float = 20.0,
) -> Alignment:
    """Energy shift aligning ``mu`` to ``mu_ref`` by least squares on their normalised derivatives.

    Parameters
    ----------
    energy, mu : the spectrum to align, shapes (n,), eV
    energy_ref, mu_ref : the reference, shapes (n_ref,), eV
    emin, emax : window relative to the reference E0, eV
    max_shift : largest shift searched, eV
    """
    e = check_energy(energy)
    m, _ = check_stack(mu, e.size)
    er = check_energy(energy_ref, name="energy_ref")
    mr, _ = check_stack(mu_ref, er.size, name="mu_ref")
    if m.shape[0] != 1 or mr.shape[0] != 1:
        raise InputError("align_energy: mu and mu_ref must each be one spectrum (1-D)")
    if not emin < emax:
        raise InputError(f"emin, emax: need emin < emax, got {emin}, {emax}")
    pe, pr = pre_edge(e, m[0]), pre_edge(er, mr[0])
    d = np.gradient(pe.norm, e)
    dr = np.gradient(pr.norm, er)
    lo, hi = pr.e0 + emin, pr.e0 + emax
    sel = (er >= lo) & (er <= hi)
    if sel.sum() < 5:
        raise InputError(f"align_energy: fewer than 5 reference points in the window {lo:.1f} .. {hi:.1f} eV")
    x = er[sel]
    target = dr[sel]

    def residual(p: np.ndarray) -> np.ndarray:
        return p[1] * np.interp(x, e + p[0], d) - target

    start = np.clip(pr.e0 - pe.e0, -max_shift, max_shift)
    fit = least_squares(
        residual, x0=[start, 1.0], bounds=([-max_shift, 0.1], [max_shift, 10.0]), x_scale=[1.0, 0.1]
    )
    return Alignment(
        shift=float(fit.x[0]),
        scale=float(fit.x[1]),
        rms=float(np.sqrt(np.mean(fit.fun**2))),
        emin=float(lo),
        emax=float(hi),
    )
