"""The small interface every model implements: parameters, priors and a forward model.

A model is a sum of *components* evaluated on a fixed grid ``x``; each component is a shape times an
optional scale parameter (a peak height, an edge step). The sampler caches components per replica, so a
Metropolis move of one parameter recomputes one component only, and a move of a scale parameter
recomputes nothing but a product. Models that do not decompose (the cluster Hamiltonian) have a single
component holding the whole spectrum.

Peaks that are exchangeable (same shape, same priors) are declared in ``peak_blocks``; the sampler keeps
them ordered by centre after every sweep (relabelling is a symmetry of likelihood and prior, so the
ordered chain targets the folded posterior and the evidence is unchanged).

Array conventions: ``theta`` has shape (R, P) (R replicas or samples, P parameters); components have
shape (R, N).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import InputError
from ..priors import Prior, check_prior


@dataclass(frozen=True)
class PeakBlocks:
    """Exchangeable peaks: parameter indices per peak, which column is the centre, component per peak.

    Attributes
    ----------
    params : int ndarray of shape (K, m)  (parameter indices of each peak, same order of roles)
    key : int  (column of ``params`` holding the centre, the sort key)
    components : int ndarray of shape (K,)  (component index of each peak)
    """

    params: np.ndarray
    key: int
    components: np.ndarray


class SpectrumModel:
    """Base class. Subclasses call ``_setup`` and implement :meth:`shape`.

    Attributes
    ----------
    x : ndarray of shape (N,)  (grid the model is evaluated on, e.g. energy in eV)
    names : tuple of P parameter names
    priors : tuple of P priors
    component_of : int ndarray (P,)  (component a parameter changes)
    scale_index : int ndarray (n_components,)  (parameter multiplying the component's shape, -1 if none)
    peaks : PeakBlocks or None
    kind : short model name ("peaks", "xanes", "xmcd", "cluster")
    """

    kind = "model"

    def _setup(
        self,
        x: np.ndarray,
        names: list[str],
        priors: list[Prior],
        component_of: list[int],
        scale_index: list[int],
        peaks: PeakBlocks | None = None,
    ) -> None:
        if len(names) != len(priors) or len(names) != len(component_of):
            raise InputError("model: names, priors and component_of must have the same length")
        if len(set(names)) != len(names):
            raise InputError(f"model: duplicate parameter names {names}")
        self.x = np.ascontiguousarray(x, dtype=float)
        self.names = tuple(names)
        self.priors = tuple(check_prior(n, p) for n, p in zip(names, priors))
        self.component_of = np.asarray(component_of, dtype=int)
        self.scale_index = np.asarray(scale_index, dtype=int)
        self.peaks = peaks
        self.positive = np.array([p.positive for p in self.priors], dtype=bool)

    # --- sizes ---------------------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        return len(self.names)

    @property
    def n_components(self) -> int:
        return len(self.scale_index)

    @property
    def n_points(self) -> int:
        return self.x.size

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(
                f"model {self.kind!r} has no parameter {name!r}; parameters: {self.names}"
            ) from None

    # --- forward model ---------------------------------------------------------------------------
    def shape(self, theta: np.ndarray, c: int) -> np.ndarray:
        """Unit-scale shape of component ``c`` for parameters ``theta`` (R, P) -> (R, N)."""
        raise NotImplementedError

    def scale(self, theta: np.ndarray, c: int) -> np.ndarray | None:
        """Scale of component ``c`` (R,), or None if the component has no scale parameter."""
        i = self.scale_index[c]
        return None if i < 0 else theta[:, i]

    def shapes(self, theta: np.ndarray) -> np.ndarray:
        """All component shapes, shape (n_components, R, N)."""
        return np.stack([self.shape(theta, c) for c in range(self.n_components)])

    def components(self, theta: np.ndarray) -> np.ndarray:
        """All scaled components, shape (n_components, R, N)."""
        out = self.shapes(theta)
        for c in range(self.n_components):
            s = self.scale(theta, c)
            if s is not None:
                out[c] *= s[:, None]
        return out

    def predict(self, theta: np.ndarray) -> np.ndarray:
        """Model curve f(x; theta) of shape (R, N) (or (N,) for a 1-D theta)."""
        theta = np.asarray(theta, float)
        single = theta.ndim == 1
        t2 = np.atleast_2d(theta)
        out = self.components(t2).sum(axis=0)
        return out[0] if single else out

    # --- priors ------------------------------------------------------------------------------------
    def log_prior_terms(self, theta: np.ndarray) -> np.ndarray:
        """Per-parameter log prior densities, shape (R, P)."""
        return np.stack([p.logpdf(theta[:, i]) for i, p in enumerate(self.priors)], axis=1)

    def log_prior(self, theta: np.ndarray) -> np.ndarray:
        return self.log_prior_terms(np.atleast_2d(theta)).sum(axis=1)

    def sample_prior(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n draws from the prior, shape (n, P), peaks ordered by centre."""
        theta = np.stack([p.sample(rng, n) for p in self.priors], axis=1)
        return self.canonical(theta)

    def prior_transform(self, u: np.ndarray) -> np.ndarray:
        """Map the unit cube to the prior (for nested sampling), peaks ordered by centre.

        Sorting the centres' uniforms gives their order statistics, i.e. the folded prior
        K! prod phi(mu_k) on the ordered cone, which has the same evidence as the unordered model.
        """
        u = np.array(u, dtype=float)
        if self.peaks is not None:
            cols = self.peaks.params[:, self.peaks.key]
            u[..., cols] = np.sort(u[..., cols], axis=-1)
        out = np.empty_like(u)
        for i, p in enumerate(self.priors):
            out[..., i] = p.ppf(u[..., i])
        return out

    # --- relabelling ------------------------------------------------------------------------------
    def peak_order(self, theta: np.ndarray) -> np.ndarray | None:
        """Permutation (R, K) sorting the exchangeable peaks by centre, or None if already sorted."""
        if self.peaks is None or len(self.peaks.params) < 2:
            return None
        keys = theta[:, self.peaks.params[:, self.peaks.key]]
        if np.all(keys[:, 1:] >= keys[:, :-1]):
            return None
        return np.argsort(keys, axis=1, kind="stable")

    def apply_peak_order(self, theta: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Reorder the peak parameter blocks of ``theta`` (R, P) by ``order`` (R, K)."""
        out = theta.copy()
        blocks = self.peaks.params
        rows = np.arange(theta.shape[0])[:, None]
        for j in range(blocks.shape[1]):
            cols = blocks[:, j]
            out[:, cols] = theta[rows, cols[order]]
        return out

    def canonical(self, theta: np.ndarray) -> np.ndarray:
        order = self.peak_order(theta)
        return theta if order is None else self.apply_peak_order(theta, order)

    # --- reporting ---------------------------------------------------------------------------------
    def derived(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Derived quantities per sample (e.g. FWHM and area of each peak), name -> (R,)."""
        return {}

    def peak_table(self, theta: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Per-peak samples: list over peaks of {"center", "height", "width", "area"} -> (R,)."""
        return []

    def describe(self) -> dict[str, Any]:
        """JSON-able description: kind, parameter names and priors."""
        return {
            "kind": self.kind,
            "n_points": int(self.n_points),
            "params": list(self.names),
            "priors": {n: {"type": type(p).__name__, **p.__dict__} for n, p in zip(self.names, self.priors)},
        }
