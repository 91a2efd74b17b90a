"""The two moves of replica-exchange MC: per-parameter Metropolis and neighbour exchange.

Each move takes the target (model + data) and a :class:`ReplicaState`, updates the state in place and
returns what was accepted. Both are vectorised over all replicas of all chains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .models.base import SpectrumModel
from .state import ReplicaState


@dataclass(frozen=True)
class Target:
    """Model and data: the posterior at inverse temperature b is exp(-b E) phi with E = |y - f|²/2."""

    model: SpectrumModel
    y: np.ndarray


def energy_of(residual: np.ndarray) -> np.ndarray:
    """(1/2) sum of squared residuals along the last axis."""
    # np.vecdot: ~4x faster than einsum("ij,ij->i") for (64, 301) arrays on this machine (numpy 2.4)
    return 0.5 * np.vecdot(residual, residual)


class MetropolisMove:
    """One sweep of single-parameter random-walk Metropolis updates, parameters in order.

    Positive parameters move in log space (x' = x exp(step * z)) with the Jacobian in the acceptance;
    the others move additively. Only the component the parameter belongs to is recomputed.
    """

    def propose(self, target: Target, state: ReplicaState, rng: np.random.Generator) -> np.ndarray:
        """Run the sweep; returns a bool array (R, P) of accepted updates."""
        model = target.model
        R, P = state.x.shape
        betas_r = state.rung_betas()
        steps_r = np.tile(state.steps, (state.n_chains, 1))
        accepted = np.zeros((R, P), dtype=bool)
        # work buffers reused for every parameter (allocating (R, N) arrays per update costs ~15 %)
        new_comp = np.empty_like(state.residual)
        new_resid = np.empty_like(state.residual)
        theta = state.x.copy()
        for p in range(P):
            c = int(model.component_of[p])
            s_idx = int(model.scale_index[c])
            z = rng.standard_normal(R) * steps_r[:, p]
            old = state.x[:, p]
            if model.positive[p]:
                new = old * np.exp(z)
                jac = z
            else:
                new = old + z
                jac = 0.0
            lp_new = model.priors[p].logpdf(new)
            new_shape = None
            if s_idx == p:
                np.multiply(state.shapes[c], new[:, None], out=new_comp)
            else:
                theta[:, p] = new
                new_shape = model.shape(theta, c)
                theta[:, p] = old
                if s_idx >= 0:
                    np.multiply(new_shape, state.x[:, s_idx][:, None], out=new_comp)
                else:
                    new_comp[...] = new_shape
            np.subtract(state.components[c], new_comp, out=new_resid)
            new_resid += state.residual  # y - f + old component - new component
            e_new = energy_of(new_resid)
            with np.errstate(invalid="ignore", over="ignore"):
                log_a = -betas_r * (e_new - state.energy) + (lp_new - state.log_prior[:, p]) + jac
            acc = np.log(rng.random(R)) < log_a  # NaN (e.g. 0 * inf) compares False: rejected
            idx = np.flatnonzero(acc)
            if idx.size:
                state.x[idx, p] = new[idx]
                theta[idx, p] = new[idx]
                state.log_prior[idx, p] = lp_new[idx]
                state.energy[idx] = e_new[idx]
                state.residual[idx] = new_resid[idx]
                state.components[c, idx] = new_comp[idx]
                if new_shape is not None:
                    state.shapes[c, idx] = new_shape[idx]
            accepted[:, p] = acc
        return accepted


def relabel_peaks(model: SpectrumModel, state: ReplicaState) -> None:
    """Sort exchangeable peaks by centre in every replica (a symmetry of likelihood and prior)."""
    order = model.peak_order(state.x)
    if order is None:
        return
    rows = np.flatnonzero(np.any(order != np.arange(order.shape[1])[None, :], axis=1))
    sub = order[rows]
    state.x[rows] = model.apply_peak_order(state.x[rows], sub)
    state.log_prior[rows] = model.apply_peak_order(state.log_prior[rows], sub)
    pc = model.peaks.components
    r_idx = rows[None, :]
    for cache in (state.shapes, state.components):
        block = cache[pc[:, None], r_idx]  # (K, n_rows, N)
        cache[pc[:, None], r_idx] = block[sub.T, np.arange(rows.size)[None, :]]


class ExchangeMove:
    """Swap states of neighbouring rungs (l, l+1), all even or all odd pairs at once."""

    def propose(
        self, state: ReplicaState, rng: np.random.Generator, parity: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Attempt the swaps; returns (attempted, accepted), bool arrays of shape (n_chains, L-1)."""
        C, L = state.n_chains, state.n_replicas
        lows = np.arange(parity, L - 1, 2)
        attempted = np.zeros((C, L - 1), dtype=bool)
        accepted = np.zeros((C, L - 1), dtype=bool)
        if lows.size == 0:
            return attempted, accepted
        e = state.energy.reshape(C, L)
        db = state.betas[lows + 1] - state.betas[lows]
        with np.errstate(invalid="ignore", over="ignore"):
            log_r = db[None, :] * (e[:, lows + 1] - e[:, lows])
        acc = np.log(rng.random((C, lows.size))) < log_r
        attempted[:, lows] = True
        accepted[:, lows] = acc
        if not acc.any():
            return attempted, accepted
        perm = np.tile(np.arange(L), (C, 1))
        ci, li = np.nonzero(acc)
        lo = lows[li]
        perm[ci, lo] = lo + 1
        perm[ci, lo + 1] = lo
        flat = (perm + (np.arange(C) * L)[:, None]).ravel()
        rows = np.flatnonzero(flat != np.arange(flat.size))
        src = flat[rows]
        for name in ("x", "log_prior", "energy", "residual", "walker", "direction"):
            arr = getattr(state, name)
            arr[rows] = arr[src]
        state.shapes[:, rows] = state.shapes[:, src]
        state.components[:, rows] = state.components[:, src]
        return attempted, accepted
