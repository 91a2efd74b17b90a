"""The SpM dictionary: one column per candidate neighbour (scattering pair, R, σ²).

Column j is χ(k) of a single neighbour (N = 1, S0² = 1, ΔE0 = 0) at distance R_j with disorder σ²_j, built
from the single-scattering FEFF path of its pair whose reff is nearest R_j, and mapped to the fit space.
A non-negative coefficient vector over the columns is then the distribution N(R, σ²) of neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .paths import ScatteringPath, path_chi_grid
from .transform import FitSpace

DEFAULT_R_STEP = 0.01  # Å
DEFAULT_SIGMA2_GRID = np.round(np.arange(0.001, 0.0305, 0.001), 6)  # Å²: 0.001 ... 0.030


@dataclass
class Dictionary:
    """Candidate neighbours and their signals.

    Attributes
    ----------
    pairs : pair labels, e.g. ("Fe-O", "Fe-Fe")
    paths : the single-scattering paths used (``atom_path`` indexes this list)
    r_grid : ndarray of shape (n_r,), in Å
    sigma2_grid : ndarray of shape (n_s,), in Å²
    atom_pair, atom_path : ndarray of shape (n_atoms,), int indices into ``pairs`` and ``paths``
    atom_r, atom_sigma2 : ndarray of shape (n_atoms,), in Å and Å²
    chi : ndarray of shape (n_k, n_atoms): χ(k) per column on the fit grid (not k-weighted)
    matrix : ndarray of shape (n_out, n_atoms): the columns in the fit space (``fit_space.matrix @ chi``)
    """

    pairs: tuple[str, ...]
    paths: list[ScatteringPath]
    r_grid: np.ndarray
    sigma2_grid: np.ndarray
    atom_pair: np.ndarray
    atom_path: np.ndarray
    atom_r: np.ndarray
    atom_sigma2: np.ndarray
    chi: np.ndarray
    matrix: np.ndarray

    @property
    def n_atoms(self) -> int:
        return len(self.atom_r)

    def distribution(self, coef: np.ndarray) -> np.ndarray:
        """Reshape coefficients (n_atoms,) to N(pair, R, σ²), shape (n_pairs, n_r, n_s)."""
        return np.asarray(coef, dtype=float).reshape(len(self.pairs), len(self.r_grid), len(self.sigma2_grid))


def single_scattering_pairs(paths: list[ScatteringPath]) -> tuple[str, ...]:
    """Pairs that have at least one single-scattering path, in order of their shortest reff."""
    ss = sorted((p for p in paths if p.is_single_scattering), key=lambda p: p.reff)
    out: list[str] = []
    for p in ss:
        if p.pair not in out:
            out.append(p.pair)
    return tuple(out)


def build_dictionary(
    paths: list[ScatteringPath],
    fit_space: FitSpace,
    *,
    r_range: tuple[float, float],
    r_step: float = DEFAULT_R_STEP,
    sigma2_grid: np.ndarray | None = None,
    pairs: tuple[str, ...] | None = None,
    de0: float = 0.0,
) -> Dictionary:
    """Dictionary columns for every pair × R × σ² on the grids.

    Parameters
    ----------
    paths : FEFF paths; only single-scattering ones (nleg = 2) are used
    fit_space : where the columns are fitted (gives the k grid and the map)
    r_range : (rlo, rhi), in Å: candidate distances rlo, rlo + r_step, ..., ≤ rhi
    r_step : R grid step, in Å, default 0.01
    sigma2_grid : candidate σ² values, in Å², default 0.001 ... 0.020 step 0.001
    pairs : restrict to these pair labels (default: every pair with a single-scattering path)
    de0 : E0 shift applied to every column, in eV

    Raises
    ------
    InputError
        no single-scattering path, an unknown pair, an empty grid, or a k range beyond the FEFF tables.
    """
    s2 = DEFAULT_SIGMA2_GRID if sigma2_grid is None else np.asarray(sigma2_grid, dtype=float).ravel()
    if s2.size == 0:
        raise InputError("sigma2_grid: empty dictionary (no σ² values)")
    if not np.all(np.isfinite(s2)) or np.any(s2 < 0):
        raise InputError("sigma2_grid: values must be finite and ≥ 0 Å²")
    if not (r_step > 0):
        raise InputError(f"r_step must be > 0 Å, got {r_step}")
    rlo, rhi = float(r_range[0]), float(r_range[1])
    if not (0 < rlo <= rhi):
        raise InputError(f"r_range must satisfy 0 < rlo ≤ rhi (Å), got {r_range}")
    r_grid = np.round(rlo + r_step * np.arange(int(np.floor((rhi - rlo) / r_step + 1.0e-9)) + 1), 6)
    known = single_scattering_pairs(paths)
    if not known:
        raise InputError("paths: no single-scattering (nleg = 2) path, the dictionary would be empty")
    if pairs is None:
        pairs = known
    else:
        pairs = tuple(pairs)
        unknown = [p for p in pairs if p not in known]
        if unknown or not pairs:
            raise InputError(f"pairs: {unknown or 'none given'} not among the paths' pairs {list(known)}")
    ss_paths = [p for p in paths if p.is_single_scattering and p.pair in pairs]
    k = fit_space.k
    qmax = float(np.sqrt(max(k[-1] ** 2 - de0 * 0.262468, 0.0)))
    for p in ss_paths:
        if qmax > p.kmax or k[0] < p.k[0]:
            raise InputError(
                f"k range {k[0]:.2f}-{k[-1]:.2f} 1/Å (window included) is outside path {p.label!r} "
                f"tables ({p.k[0]:.2f}-{p.kmax:.2f} 1/Å)"
            )
    n_r, n_s = len(r_grid), len(s2)
    chi = np.empty((len(k), len(pairs), n_r, n_s))
    atom_path = np.empty((len(pairs), n_r), dtype=int)
    for ip, pair in enumerate(pairs):
        cands = [p for p in ss_paths if p.pair == pair]
        reffs = np.array([p.reff for p in cands])
        nearest = np.argmin(np.abs(r_grid[:, None] - reffs[None, :]), axis=1)
        for ic in np.unique(nearest):
            sel = nearest == ic
            chi[:, ip, sel, :] = path_chi_grid(cands[ic], k, r_grid[sel], s2, de0)
            atom_path[ip, sel] = ss_paths.index(cands[ic])
    chi = chi.reshape(len(k), -1)
    pair_idx, r_idx, s_idx = np.meshgrid(np.arange(len(pairs)), np.arange(n_r), np.arange(n_s), indexing="ij")
    return Dictionary(
        pairs=pairs,
        paths=ss_paths,
        r_grid=r_grid,
        sigma2_grid=s2,
        atom_pair=pair_idx.ravel(),
        atom_path=np.repeat(atom_path.ravel(), n_s),
        atom_r=r_grid[r_idx.ravel()],
        atom_sigma2=s2[s_idx.ravel()],
        chi=chi,
        matrix=fit_space.matrix @ chi,
    )
