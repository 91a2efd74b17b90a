"""Merge repeated scans on a common energy grid, with a per-point noise estimate from their scatter.

Each repeat is interpolated linearly onto the common grid (default: the first usable repeat's grid, cut to
the range all repeats cover), optionally after an energy shift (from :func:`align_energy` or
:func:`calibrate_energy` on the reference channel). The merge is the (weighted) mean; the per-point noise is
the standard error of that mean from the repeat-to-repeat scatter. Repeats with NaN/inf or that do not
overlap the others are left out and reported, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ._validate import check_energy


@dataclass
class MergeResult:
    """Merged spectrum.

    Attributes
    ----------
    energy : ndarray of shape (n,), eV, the common grid
    mu : ndarray of shape (n,), the merged μ
    noise : ndarray of shape (n,), standard error of the merged μ per point (NaN with fewer than 2 repeats)
    std : ndarray of shape (n,), scatter of the repeats per point (ddof = 1)
    mu_repeats : ndarray of shape (n_used, n), the repeats on the common grid
    used : indices of the repeats merged
    excluded : index -> reason for each repeat left out
    """

    energy: np.ndarray
    mu: np.ndarray
    noise: np.ndarray
    std: np.ndarray
    mu_repeats: np.ndarray
    used: list[int]
    excluded: dict[int, str] = field(default_factory=dict)


def merge_spectra(
    energies: np.ndarray | Sequence[np.ndarray],
    mus: np.ndarray | Sequence[np.ndarray],
    *,
    grid: np.ndarray | None = None,
    shifts: Sequence[float] | np.ndarray | None = None,
    weights: Sequence[float] | np.ndarray | None = None,
) -> MergeResult:
    """Merge repeated scans.

    Parameters
    ----------
    energies : one grid of shape (n,) shared by all repeats, or a sequence of per-repeat grids (n_i,), eV
    mus : ndarray of shape (n_repeats, n) or a sequence of (n_i,) arrays
    grid : common energy grid (eV); default: the first usable repeat's grid within the common range
    shifts : energy shift (eV) added to each repeat's energy before merging
    weights : relative weight of each repeat (e.g. 1 / noise²); default equal

    Returns
    -------
    MergeResult. Raises InputError if fewer than one repeat is usable.
    """
    if isinstance(mus, np.ndarray) and mus.ndim == 2:
        mu_list = list(mus)
    else:
        mu_list = [np.asarray(m, dtype=float) for m in mus]
    n_rep = len(mu_list)
    if n_rep == 0:
        raise InputError("mus: no spectra to merge")
    shared = len(energies) > 0 and np.ndim(energies[0]) == 0  # one grid for all repeats
    e_list = [np.asarray(energies, dtype=float)] * n_rep if shared else list(energies)
    if len(e_list) != n_rep:
        raise InputError(f"energies: {len(e_list)} grids for {n_rep} spectra")
    shift = np.zeros(n_rep) if shifts is None else np.asarray(shifts, dtype=float)
    weight = np.ones(n_rep) if weights is None else np.asarray(weights, dtype=float)
    if shift.shape != (n_rep,) or not np.all(np.isfinite(shift)):
        raise InputError(f"shifts: expected {n_rep} finite values (eV)")
    if weight.shape != (n_rep,) or not np.all(np.isfinite(weight)) or np.any(weight < 0):
        raise InputError(f"weights: expected {n_rep} finite values >= 0")

    excluded: dict[int, str] = {}
    clean: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i, (e, m) in enumerate(zip(e_list, mu_list)):
        try:
            e = check_energy(e, name=f"energy of repeat {i}") + shift[i]
        except InputError as exc:
            excluded[i] = str(exc)
            continue
        m = np.asarray(m, dtype=float)
        if m.shape != e.shape:
            excluded[i] = f"mu of repeat {i}: {m.size} points but its energy has {e.size}"
        elif not np.all(np.isfinite(m)):
            excluded[i] = f"mu of repeat {i}: contains NaN/inf"
        elif weight[i] == 0:
            excluded[i] = f"repeat {i}: weight 0"
        else:
            clean[i] = (e, m)
    if not clean:
        raise InputError("merge: no usable repeats (" + "; ".join(excluded.values()) + ")")
    lo = max(e[0] for e, _ in clean.values())
    hi = min(e[-1] for e, _ in clean.values())
    if hi <= lo:
        raise InputError(f"merge: the repeats share no energy range (common range {lo:.2f} .. {hi:.2f} eV)")
    if grid is None:
        first = clean[min(clean)][0]
        tol = 1e-6 * max(1.0, abs(hi))
        out_e = first[(first >= lo - tol) & (first <= hi + tol)]
    else:
        out_e = check_energy(grid, name="grid", min_points=2)
        if out_e[0] < lo - 1e-6 or out_e[-1] > hi + 1e-6:
            raise InputError(
                f"grid: {out_e[0]:.2f} .. {out_e[-1]:.2f} eV goes beyond the range all repeats "
                f"cover ({lo:.2f} .. {hi:.2f} eV)"
            )
    used = sorted(clean)
    stack = np.stack([np.interp(out_e, *clean[i]) for i in used])
    w = weight[used] / weight[used].sum()
    mean = w @ stack
    n_used = len(used)
    if n_used >= 2:
        std = stack.std(axis=0, ddof=1)
        # standard error of a weighted mean: sqrt(sum w_i²) * scatter (equal weights: std / sqrt(n))
        noise = std * np.sqrt(np.sum(w**2))
    else:
        std = np.full(out_e.size, np.nan)
        noise = np.full(out_e.size, np.nan)
    return MergeResult(
        energy=out_e, mu=mean, noise=noise, std=std, mu_repeats=stack, used=used, excluded=excluded
    )
