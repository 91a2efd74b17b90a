"""Deglitching: single-point spikes are flagged by robust residuals and, in the returned copy, replaced by
the cubic through their nearest unflagged neighbours. The original μ is never modified.

Residual r_i = μ_i minus the cubic through its four neighbours i-2, i-1, i+1, i+2 (Lagrange interpolation,
valid on any grid spacing; it follows XAFS oscillations sampled with ≳ 10 points per period). A spike of
height δ at i gives r_i = δ and residuals of about -2δ/3 at i - 1 and i + 1, whereas smooth structure gives
small residuals of one sign over several points. A point is a glitch if |r_i| exceeds ``nsigma`` robust
scales, is larger than both neighbours' and both neighbours have the opposite sign. The scale is the larger
of the spectrum's MAD (×1.4826) of residuals and the running median of |r| (×1.4826) over ±``local_half``
points, so regions where the cubic cannot follow the fine structure raise their own threshold. The edge
region (``exclude``, eV relative to E0), where XANES features are as sharp as glitches, is not searched by
default, nor are the first and last two points. Vectorised over stacks on one grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter

from ..errors import InputError
from ._validate import SpectrumErrors, check_energy, check_finite_rows, check_stack, per_spectrum
from .e0 import search_e0


@dataclass
class DeglitchResult:
    """``mu``: copy with glitches replaced (same shape as the input); ``glitch``: bool mask of flagged points;
    ``indices``: list (per spectrum) of flagged indices; ``scale``: global residual scale per spectrum (units
    of μ); ``ok``/``errors``: spectra that could not be searched (returned unchanged)."""

    mu: np.ndarray
    glitch: np.ndarray
    indices: list[np.ndarray]
    scale: float | np.ndarray
    ok: np.ndarray
    errors: dict[int, str]
    params_used: dict


def _cubic_weights(e: np.ndarray) -> np.ndarray:
    """Lagrange weights (4, n - 4) predicting point i from i-2, i-1, i+1, i+2 (for i = 2 .. n-3)."""
    nodes = np.stack([e[:-4], e[1:-3], e[3:-1], e[4:]])  # (4, n - 4)
    x = e[2:-2]
    weights = np.ones_like(nodes)
    for j in range(4):
        for m in range(4):
            if m != j:
                weights[j] *= (x - nodes[m]) / (nodes[j] - nodes[m])
    return weights


def _neighbours(mu: np.ndarray) -> np.ndarray:
    """(m, 4, n - 4): the four neighbours of each point i = 2 .. n-3."""
    return np.stack([mu[:, :-4], mu[:, 1:-3], mu[:, 3:-1], mu[:, 4:]], axis=1)


def _fill(e: np.ndarray, mu: np.ndarray, flagged: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Values for the flagged points: the cubic through the two nearest good points on each side
    (linear interpolation where there are fewer)."""
    good = np.flatnonzero(~flagged)
    values = np.interp(e[bad], e[good], mu[good])
    for n, i in enumerate(bad):
        j = np.searchsorted(good, i)
        if j >= 2 and j + 2 <= good.size:
            nodes = good[j - 2 : j + 2]
            w = np.ones(4)
            for a in range(4):
                for b in range(4):
                    if a != b:
                        w[a] *= (e[i] - e[nodes[b]]) / (e[nodes[a]] - e[nodes[b]])
            values[n] = w @ mu[nodes]
    return values


def deglitch(
    energy: np.ndarray,
    mu: np.ndarray,
    *,
    e0: float | np.ndarray | None = None,
    exclude: tuple[float, float] | None = (-20.0, 50.0),
    emin: float | None = None,
    emax: float | None = None,
    nsigma: float = 8.0,
    local_half: int = 15,
) -> DeglitchResult:
    """Flag and replace single-point glitches.

    Parameters
    ----------
    energy : ndarray of shape (n,), eV
    mu : ndarray of shape (n,) or (n_spectra, n)
    e0 : edge energy (eV) for the excluded edge region; default from :func:`find_e0`
    exclude : (low, high) eV relative to E0 not searched (None searches everywhere)
    emin, emax : absolute energy range searched (default: all)
    nsigma : threshold in robust standard deviations of the residuals
    local_half : half-width (points) of the running residual scale
    """
    e = check_energy(energy)
    mu2, single = check_stack(mu, e.size)
    if not (np.isfinite(nsigma) and nsigma > 0):
        raise InputError(f"nsigma: must be > 0, got {nsigma!r}")
    if int(local_half) < 2:
        raise InputError(f"local_half: must be >= 2 points, got {local_half!r}")
    m, n = mu2.shape
    status = SpectrumErrors(m)
    check_finite_rows(mu2, e, status)
    search = np.ones((m, n), dtype=bool)
    search[:, [0, 1, -2, -1]] = False  # points without two neighbours on each side
    if emin is not None:
        search &= e[None, :] >= emin
    if emax is not None:
        search &= e[None, :] <= emax
    e0_arr = per_spectrum(e0, m, name="e0")
    if exclude is not None:
        lo, hi = exclude
        if e0_arr is None:
            e0_arr = np.full(m, np.nan)
            good = np.flatnonzero(status.ok)
            if good.size:
                found = search_e0(e, mu2[good])
                e0_arr[good] = np.where(found.found, found.e0, np.nan)
        edge = (
            np.isfinite(e0_arr)[:, None]
            & (e[None, :] >= e0_arr[:, None] + lo)
            & (e[None, :] <= e0_arr[:, None] + hi)
        )
        search &= ~edge

    clean = np.where(status.ok[:, None], mu2, 0.0)
    resid = np.zeros((m, n))
    resid[:, 2:-2] = clean[:, 2:-2] - np.einsum("mjn,jn->mn", _neighbours(clean), _cubic_weights(e))
    centre = np.full(m, np.nan)
    scale = np.full(m, np.nan)
    rows = np.flatnonzero(search.any(axis=1))  # spectra with points to search (nanmedian warns on the others)
    if rows.size:
        masked = np.where(search[rows], resid[rows], np.nan)
        centre[rows] = np.nanmedian(masked, axis=1)
        scale[rows] = 1.4826 * np.nanmedian(np.abs(masked - centre[rows, None]), axis=1)
    status.fail_each(
        status.ok & ~(np.isfinite(scale) & (scale > 0)),
        lambda i: "deglitch: no points to search (range too small) or a noiseless spectrum",
    )
    dev = np.abs(resid - np.nan_to_num(centre)[:, None])
    local = 1.4826 * median_filter(
        np.where(search, dev, 0.0), size=(1, 2 * int(local_half) + 1), mode="nearest"
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(search, dev / np.maximum(local, np.nan_to_num(scale)[:, None]), 0.0)
    glitch = np.zeros((m, n), dtype=bool)
    r = resid
    glitch[:, 1:-1] = (
        (z[:, 1:-1] > nsigma)
        & (z[:, 1:-1] >= z[:, :-2])
        & (z[:, 1:-1] >= z[:, 2:])
        & (r[:, 1:-1] * r[:, :-2] < 0)
        & (r[:, 1:-1] * r[:, 2:] < 0)
    )
    glitch &= status.ok[:, None]
    out = mu2.copy()
    indices = []
    for i in range(m):
        bad = np.flatnonzero(glitch[i])
        indices.append(bad)
        if bad.size:
            out[i, bad] = _fill(e, mu2[i], glitch[i], bad)
    status.raise_if_single(single)
    params = {
        "nsigma": float(nsigma),
        "local_half": int(local_half),
        "exclude": exclude,
        "emin": emin,
        "emax": emax,
    }
    return DeglitchResult(
        mu=out[0] if single else out,
        glitch=glitch[0] if single else glitch,
        indices=indices,
        scale=float(scale[0]) if single else scale,
        ok=status.ok,
        errors=dict(status.messages),
        params_used=params,
    )
