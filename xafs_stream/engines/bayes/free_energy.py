"""Bayesian free energy F = -log(evidence) from the replica ladder (Nagata et al. 2012, METHODS §2).

With E(w) = (1/2) sum (y_i - f(x_i; w))² and rungs 0 = b_1 < ... < b_L, the bridge over the ladder is

    log z(b_L) = sum_{l=1}^{L-1} log < exp(-(b_{l+1} - b_l) E) >_{b_l},     z(b) = ∫ exp(-b E) phi dw

and for Gaussian noise of variance s² = 1/b the free energy is F(b) = -log z(b) + (N/2) log(2 pi / b).
Any b between rungs is reached from the rung below it, so F is a continuous function of the noise
variance: minimising it over b is the noise-variance estimate of Tokuda, Nagata, Okada (JPSJ 2017).
Error bars come from batch means over independent chains and contiguous blocks of each chain, and from the
scatter of the chains' own estimates (the larger is quoted); the drift between the first half of a run and
the whole run measures the estimator's bias left by the run length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from ..errors import InputError


@dataclass
class FreeEnergy:
    """F at one noise level.

    Attributes
    ----------
    F : free energy (nat) from all recorded sweeps of all chains
    se : standard error: the larger of the batch-means error (chains x blocks) and the scatter of the
         independent chains' own F values (std / sqrt(n_chains)), so chains stuck in different modes show
    beta : 1/noise² it refers to
    noise : noise standard deviation (y units)
    per_chain : F of each chain alone
    batches : F of each (chain, block) batch
    se_batch, se_chains : the two error estimates behind ``se``
    drift : F of the first half of the run minus F of the whole run (nat). The bridge estimator's bias
            falls as 1/run length, so this is about the bias left in F; a drift beyond the standard error
            says the run is too short
    """

    F: float
    se: float
    beta: float
    noise: float
    per_chain: np.ndarray
    batches: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))
    se_batch: float = float("nan")
    se_chains: float = float("nan")
    drift: float = float("nan")


def _log_mean_exp(a: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    n = np.prod([a.shape[i] for i in np.atleast_1d(axis)])
    return logsumexp(a, axis=axis) - math.log(n)


def log_z_at(betas: np.ndarray, energies: np.ndarray, beta: float | np.ndarray) -> np.ndarray:
    """log z(beta) for one or many target betas, from energies (n, ...batch..., L) pooled over axis 0.

    ``energies`` has shape (n, L) or (n, B, L); the result has shape ``beta.shape + batch shape``.
    """
    betas = np.asarray(betas, float)
    beta = np.atleast_1d(np.asarray(beta, float))
    if np.any(beta < 0) or np.any(beta > betas[-1] * (1 + 1e-12)):
        raise InputError(f"beta must lie within the ladder [0, {betas[-1]:g}]")
    db = np.diff(betas)
    # cumulative bridge terms up to each rung: cum[l] = log z(b_l)
    terms = _log_mean_exp(-db * energies[..., :-1], axis=0)  # (batch..., L-1)
    cum = np.concatenate([np.zeros(terms.shape[:-1] + (1,)), np.cumsum(terms, axis=-1)], axis=-1)
    out = []
    for b in beta:
        lo = int(np.clip(np.searchsorted(betas, b, side="right") - 1, 0, betas.size - 1))
        if lo == betas.size - 1:
            out.append(cum[..., -1])
            continue
        extra = _log_mean_exp(-(b - betas[lo]) * energies[..., lo], axis=0)
        out.append(cum[..., lo] + extra)
    return np.stack(out)


def free_energy_curve(betas: np.ndarray, energies: np.ndarray, n_points: int, beta: np.ndarray) -> np.ndarray:
    """F(beta) for an array of betas, pooled over all sweeps and chains; energies (n, C, L)."""
    n, C, L = energies.shape
    pooled = energies.reshape(n * C, L)
    beta = np.asarray(beta, float)
    lz = log_z_at(betas, pooled, beta)
    return -lz + 0.5 * n_points * np.log(2.0 * np.pi / beta)


def free_energy(
    betas: np.ndarray, energies: np.ndarray, n_points: int, *, beta: float | None = None, n_blocks: int = 4
) -> FreeEnergy:
    """F at ``beta`` (default: the top rung) with a batch-means standard error.

    Parameters
    ----------
    betas : ndarray (L,)
    energies : ndarray (n_sweeps, C, L)
    n_points : N, number of data points
    beta : 1/noise², within the ladder; default ``betas[-1]``
    n_blocks : contiguous blocks per chain for the batch means
    """
    energies = np.asarray(energies, float)
    if energies.ndim != 3 or energies.shape[2] != len(betas):
        raise InputError(f"energies must have shape (n_sweeps, n_chains, {len(betas)}), got {energies.shape}")
    n, C, L = energies.shape
    b = float(betas[-1] if beta is None else beta)
    if not b > 0:
        raise InputError(f"beta must be > 0, got {b}")
    const = 0.5 * n_points * math.log(2.0 * math.pi / b)
    F = float(-log_z_at(betas, energies.reshape(n * C, L), b)[0] + const)
    per_chain = -log_z_at(betas, energies, b)[0] + const  # (C,)
    nb = max(1, min(n_blocks, n // 10))
    m = n // nb
    blocks = energies[: m * nb].reshape(nb, m, C, L).transpose(1, 0, 2, 3).reshape(m, nb * C, L)
    batches = -log_z_at(betas, blocks, b)[0] + const
    se_batch = float(np.std(batches, ddof=1) / math.sqrt(batches.size)) if batches.size > 1 else float("nan")
    se_chains = float(np.std(per_chain, ddof=1) / math.sqrt(C)) if C > 1 else float("nan")
    se = float(np.nanmax([se_batch, se_chains])) if np.isfinite([se_batch, se_chains]).any() else float("nan")
    half = energies[: max(1, n // 2)]
    drift = float(-log_z_at(betas, half.reshape(-1, L), b)[0] + const - F) if n >= 20 else float("nan")
    return FreeEnergy(F=F, se=se, beta=b, noise=1.0 / math.sqrt(b), per_chain=per_chain, batches=batches,
                      se_batch=se_batch, se_chains=se_chains, drift=drift)


@dataclass
class NoiseScan:
    """F as a function of the noise level (Tokuda et al. 2017).

    Attributes
    ----------
    noise : ndarray (G,)  noise standard deviations scanned (y units), increasing
    F : ndarray (G,)  free energy at each
    best_noise : argmin of F
    best : FreeEnergy at the best noise (with its standard error)
    at_edge : True when the minimum is at either end of the scanned noise range (the ladder may be too short)
    """

    noise: np.ndarray
    F: np.ndarray
    best_noise: float
    best: FreeEnergy
    at_edge: bool


def scan_noise(betas: np.ndarray, energies: np.ndarray, n_points: int, *, n_grid: int = 240) -> NoiseScan:
    """Minimise F over the noise variance the ladder covers (b from the first non-zero rung to the top)."""
    b_grid = np.geomspace(betas[1], betas[-1], n_grid)
    F = free_energy_curve(betas, energies, n_points, b_grid)
    i = int(np.argmin(F))
    lo, hi = b_grid[max(i - 1, 0)], b_grid[min(i + 1, n_grid - 1)]
    fine = np.geomspace(lo, hi, 41)
    F_fine = free_energy_curve(betas, energies, n_points, fine)
    b_best = float(fine[int(np.argmin(F_fine))])
    best = free_energy(betas, energies, n_points, beta=b_best)
    noise = 1.0 / np.sqrt(b_grid[::-1])
    return NoiseScan(
        noise=noise, F=F[::-1], best_noise=1.0 / math.sqrt(b_best), best=best, at_edge=i in (0, n_grid - 1)
    )
