"""Cluster-model Hamiltonian for 3d core-level spectra of f-electron oxides (Mototake et al. 2019).

Configurations f0, f1, f2 (4f degeneracy Nf = 14); energies in eV:

    initial  H_i = [[0,           sqrt(Nf) V,         0                 ],
                    [sqrt(Nf) V,  Delta,              sqrt(2(Nf-1)) V   ],
                    [0,           sqrt(2(Nf-1)) V,    2 Delta + Uff     ]]
    final    H_f = the same with the diagonal (0, Delta - Ufc, 2 Delta + Uff - 2 Ufc)   (core hole)

Spectrum: I(E) = sum_j |<F_j|G>|² L(E - (E_j - E_G); Gamma), G the ground state of H_i (energy E_G),
F_j, E_j the eigenpairs of H_f, L a unit-area Lorentzian of half width at half maximum Gamma.
``n_config = 2`` drops f2 (the 2x2 model). The fitted curve is ``scale * I(E - shift) + c0``.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import InputError
from ..priors import Prior
from . import lineshapes as ls
from .base import SpectrumModel
from .peaks import check_grid

NF = 14
PHYSICS = ("delta", "v", "uff", "ufc", "gamma")
INSTRUMENT = ("scale", "shift", "c0")

#: Published parameter sets (eV), Mototake et al., JPSJ 88 034004 (2019) (METHODS §2).
PUBLISHED = {
    "La2O3": {"delta": 12.5, "v": 0.57, "uff": 10.5, "ufc": 12.7, "gamma": 0.5},
    "CeO2": {"delta": 1.60, "v": 0.76, "uff": 10.5, "ufc": 12.5, "gamma": 0.7},
}


def cluster_hamiltonians(
    delta: np.ndarray, v: np.ndarray, uff: np.ndarray, ufc: np.ndarray, n_config: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Initial and final Hamiltonians, each of shape (R, n, n), for parameter arrays of shape (R,)."""
    delta, v, uff, ufc = (np.atleast_1d(np.asarray(a, float)) for a in (delta, v, uff, ufc))
    R = np.broadcast(delta, v, uff, ufc).shape[0]
    hi = np.zeros((R, n_config, n_config))
    hi[:, 0, 1] = hi[:, 1, 0] = math.sqrt(NF) * v
    hi[:, 1, 1] = delta
    if n_config == 3:
        hi[:, 1, 2] = hi[:, 2, 1] = math.sqrt(2 * (NF - 1)) * v
        hi[:, 2, 2] = 2 * delta + uff
    hf = hi.copy()
    hf[:, 1, 1] = delta - ufc
    if n_config == 3:
        hf[:, 2, 2] = 2 * delta + uff - 2 * ufc
    return hi, hf


def cluster_lines(
    delta: np.ndarray, v: np.ndarray, uff: np.ndarray, ufc: np.ndarray, n_config: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Line positions E_j - E_G (eV), weights |<F_j|G>|² and ground-state configuration weights.

    Returns arrays of shape (R, n) each (n = n_config); weights sum to 1 over j.
    """
    hi, hf = cluster_hamiltonians(delta, v, uff, ufc, n_config)
    e_i, vec_i = np.linalg.eigh(hi)
    ground = vec_i[:, :, 0]  # (R, n), lowest eigenvalue first
    e_f, vec_f = np.linalg.eigh(hf)
    overlap = np.einsum("rij,ri->rj", vec_f, ground)
    return e_f - e_i[:, :1], overlap**2, ground**2


def cluster_spectrum(e: np.ndarray, delta, v, uff, ufc, gamma, n_config: int = 3) -> np.ndarray:
    """I(E) on the grid ``e`` (eV) for parameter arrays of shape (R,) -> (R, N); unit area."""
    pos, w, _ = cluster_lines(delta, v, uff, ufc, n_config)
    gamma = np.broadcast_to(np.asarray(gamma, float), (pos.shape[0],))
    return np.einsum("rj,rjn->rn", w, ls.lorentzian_area_normalised(e, pos, gamma))


class ClusterModel(SpectrumModel):
    """Fit of ``scale * I(E - shift) + c0`` with the cluster Hamiltonian; one component.

    Parameters
    ----------
    x : ndarray of shape (N,), energy in eV (relative or absolute)
    priors : prior per free parameter, among delta, v, uff, ufc, gamma, scale, shift, c0
    fixed : value per parameter that is not sampled (every name above must be in one of the two;
        ``uff`` may be omitted when ``n_config = 2``, c0 defaults to fixed 0)
    n_config : 3 (f0, f1, f2) or 2 (f0, f1)
    """

    kind = "cluster"

    def __init__(
        self,
        x: np.ndarray,
        priors: dict[str, Prior],
        *,
        fixed: dict[str, float] | None = None,
        n_config: int = 3,
    ) -> None:
        x = check_grid(x)
        if n_config not in (2, 3):
            raise InputError(f"n_config must be 2 or 3, got {n_config!r}")
        fixed = dict(fixed or {})
        fixed.setdefault("c0", 0.0)
        if n_config == 2:
            fixed.setdefault("uff", 0.0)
        both = set(priors) & set(fixed)
        if both:
            raise InputError(f"parameters both fixed and free: {sorted(both)}")
        known = set(PHYSICS + INSTRUMENT)
        unknown = (set(priors) | set(fixed)) - known
        if unknown:
            raise InputError(f"unknown cluster-model parameters {sorted(unknown)}; known: {sorted(known)}")
        missing = known - set(priors) - set(fixed)
        if missing:
            raise InputError(f"cluster model needs a prior or a fixed value for {sorted(missing)}")
        for k, val in fixed.items():
            if not math.isfinite(float(val)):
                raise InputError(f"fixed value of {k!r} must be finite, got {val!r}")
        if "gamma" in fixed and not fixed["gamma"] > 0:
            raise InputError("fixed gamma (Lorentzian HWHM) must be > 0")
        self.n_config = n_config
        self.fixed = {k: float(v) for k, v in fixed.items()}
        names = [k for k in PHYSICS + INSTRUMENT if k in priors]
        for k in ("gamma", "scale"):
            if k in priors and not priors[k].positive:
                raise InputError(f"prior for {k!r} must have positive support (Gamma or LogUniform)")
        self._setup(x, names, [priors[k] for k in names], [0] * len(names), [-1])

    def _param(self, theta: np.ndarray, name: str) -> np.ndarray:
        if name in self.fixed:
            return np.full(theta.shape[0], self.fixed[name])
        return theta[:, self.names.index(name)]

    def shape(self, theta: np.ndarray, c: int = 0) -> np.ndarray:
        p = {k: self._param(theta, k) for k in PHYSICS + INSTRUMENT}
        e = self.x
        pos, w, _ = cluster_lines(p["delta"], p["v"], p["uff"], p["ufc"], self.n_config)
        lor = ls.lorentzian_area_normalised(e, pos + p["shift"][:, None], p["gamma"])
        out = np.einsum("rj,rjn->rn", w * p["scale"][:, None], lor)
        out += p["c0"][:, None]
        return out

    def lines(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Line positions (shifted, eV), weights and ground-state f-count n_f per sample."""
        theta = np.atleast_2d(theta)
        p = {k: self._param(theta, k) for k in PHYSICS + INSTRUMENT}
        pos, w, g = cluster_lines(p["delta"], p["v"], p["uff"], p["ufc"], self.n_config)
        n_f = g[:, 1] + (2 * g[:, 2] if self.n_config == 3 else 0.0)
        return {"position": pos + p["shift"][:, None], "weight": w, "n_f": n_f}

    def peak_table(self, theta: np.ndarray) -> list[dict[str, np.ndarray]]:
        li = self.lines(theta)
        theta = np.atleast_2d(theta)
        scale = self._param(theta, "scale")
        gamma = self._param(theta, "gamma")
        rows = []
        for j in range(self.n_config):
            area = li["weight"][:, j] * scale
            rows.append(
                {
                    "center": li["position"][:, j],
                    "height": area / (np.pi * gamma),
                    "width": 2 * gamma,
                    "area": area,
                }
            )
        return rows

    def derived(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        return {"n_f": self.lines(theta)["n_f"]}

    def describe(self) -> dict:
        d = super().describe()
        d.update(n_config=self.n_config, fixed=self.fixed)
        return d
