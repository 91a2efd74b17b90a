"""The explicit sampler state passed into and out of every sweep (cf. emcee's State)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ReplicaState:
    """All replicas of all independent chains, flattened chain-major (row r = chain * L + rung).

    Attributes
    ----------
    x : ndarray (R, P)  parameters, R = n_chains * n_replicas
    log_prior : ndarray (R, P)  per-parameter log prior densities
    energy : ndarray (R,)  E = (1/2) sum (y - f)²
    betas : ndarray (L,)  inverse temperatures of the rungs
    steps : ndarray (L, P)  Metropolis step sizes per rung and parameter (log units for positive ones)
    shapes, components : ndarray (n_components, R, N)  caches of the forward model
    residual : ndarray (R, N)  y - f
    walker : int ndarray (R,)  identity of the walker on each row (exchange bookkeeping)
    direction : int ndarray (R,)  +1 going up from the prior, -1 going down, 0 not yet at an end
    round_trips : int ndarray (n_chains,)
    sweep : sweeps done so far
    rng_state : the bit generator state after the last sweep (for checkpoint / resume)
    """

    x: np.ndarray
    log_prior: np.ndarray
    energy: np.ndarray
    betas: np.ndarray
    steps: np.ndarray
    shapes: np.ndarray
    components: np.ndarray
    residual: np.ndarray
    walker: np.ndarray
    direction: np.ndarray
    round_trips: np.ndarray
    sweep: int = 0
    rng_state: dict[str, Any] = field(default_factory=dict)

    @property
    def n_replicas(self) -> int:
        return self.betas.size

    @property
    def n_chains(self) -> int:
        return self.x.shape[0] // self.betas.size

    def rung_betas(self) -> np.ndarray:
        """Inverse temperature of every row, shape (R,)."""
        return np.tile(self.betas, self.n_chains)
