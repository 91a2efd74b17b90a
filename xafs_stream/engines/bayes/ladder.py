"""Inverse-temperature ladders for replica exchange: geometric start, tuning to even exchange rates.

The inverse temperature ``b`` multiplies the energy E(w) = (1/2) sum_i (y_i - f(x_i; w))², so the
replica at ``b`` samples exp(-b E(w)) phi(w): b = 1/s² is the posterior for noise s, b = 0 the prior
(Nagata et al. 2012 write beta N E / s² with their E the mean squared error; same thing).

Tuning (our choice; Nagata use a fixed geometric ladder, Vousden et al. 2016 adapt spacings by a
stochastic rule): for two neighbours whose energies are near-Gaussian with spread sigma, the swap
acceptance is A = erfc(db sigma / 2), so lambda = 2 erfcinv(A) ~ db sigma is an additive "thermodynamic
length" of the gap. We measure A for every gap, build the cumulative length (linear in b on the first
gap, where sigma ~ const, linear in log b elsewhere, where sigma ~ 1/b), and re-place the inner rungs
at equal length. Two or three rounds during burn-in give near-even rates.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from ..errors import InputError


def geometric_ladder(beta_max: float, n_replicas: int, beta_min: float) -> np.ndarray:
    """Ladder [0, beta_min, ..., beta_max], geometric above 0 (ratio gamma = (max/min)^(1/(L-2))).

    Parameters
    ----------
    beta_max : inverse temperature of the target (1/noise², in 1/y-units²)
    n_replicas : L >= 3
    beta_min : smallest non-zero rung, 0 < beta_min < beta_max
    """
    if n_replicas < 3:
        raise InputError(f"n_replicas must be >= 3, got {n_replicas}")
    if not (math.isfinite(beta_max) and beta_max > 0):
        raise InputError(f"beta_max must be finite and > 0, got {beta_max}")
    beta_min = min(beta_min, beta_max / 1.05 ** (n_replicas - 2))
    inner = np.geomspace(beta_min, beta_max, n_replicas - 1)
    return np.concatenate([[0.0], inner])


def gamma_of(betas: np.ndarray) -> np.ndarray:
    """Ratios beta_{l+1} / beta_l of the non-zero rungs (the geometric ladder's gamma)."""
    return betas[2:] / betas[1:-1]


def gap_lengths(accept_rate: np.ndarray, n_attempts: np.ndarray) -> np.ndarray:
    """Thermodynamic length 2 erfcinv(A) of each gap, A clipped to what ``n_attempts`` can resolve."""
    lo = 0.5 / np.maximum(n_attempts, 1)
    a = np.clip(accept_rate, lo, 1.0 - lo)
    return 2.0 * special.erfcinv(a)


def retune(
    betas: np.ndarray, accept_rate: np.ndarray, n_attempts: np.ndarray, damping: float = 0.6
) -> np.ndarray:
    """New ladder with the same ends and the inner rungs placed at equal thermodynamic length.

    ``accept_rate`` and ``n_attempts`` have shape (L-1,) (one per neighbour pair). ``damping`` in
    (0, 1] mixes the new log-positions with the old ones (1 = jump to the new positions).
    """
    L = betas.size
    if L < 4:
        return betas.copy()
    lam = gap_lengths(np.asarray(accept_rate, float), np.asarray(n_attempts, float))
    cum = np.concatenate([[0.0], np.cumsum(lam)])
    targets = np.linspace(0.0, cum[-1], L)[1:-1]
    # Coordinate along the ladder: first gap linear in beta, the rest linear in log beta.
    logb = np.log(betas[1:])
    new = np.empty(L - 2)
    for j, t in enumerate(targets):
        g = int(np.searchsorted(cum, t, side="right") - 1)
        g = min(max(g, 0), L - 2)
        frac = (t - cum[g]) / lam[g] if lam[g] > 0 else 0.0
        if g == 0:
            new[j] = max(frac, 1e-3) * betas[1]
        else:
            new[j] = math.exp(logb[g - 1] + frac * (logb[g] - logb[g - 1]))
    old = betas[1:-1]
    mixed = np.exp((1 - damping) * np.log(old) + damping * np.log(new))
    mixed = np.sort(mixed)
    # keep strictly increasing and below the top rung
    mixed = np.minimum(mixed, betas[-1] * (1 - 1e-9))
    for i in range(1, mixed.size):
        if mixed[i] <= mixed[i - 1]:
            mixed[i] = mixed[i - 1] * (1 + 1e-9)
    return np.concatenate([[0.0], mixed, [betas[-1]]])
