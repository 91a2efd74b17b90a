"""The MRF model of one map: per-pixel features in, phase labels and smoothed feature maps out.

Three stages, every hyperparameter learned from the data:

1. The phase-classification features (``class_features``, e.g. the unconstrained LCF weights) are smoothed
   by a GMRF without cuts (:mod:`.gmrf`; noise, smoothing and shrinkage by block marginal likelihood).
2. A Gaussian mixture over the smoothed class features (fitted on a fixed lattice of pixels, at most
   ``max_phase_samples``, the same whatever order tiles arrive in) gives each pixel's class log-likelihoods;
   a Potts MRF (:mod:`.potts`) turns them into labels, with its coupling beta from Besag's pseudo-likelihood
   alternated with ICM until it settles.
3. The continuous maps (``smooth``) are smoothed by GMRFs whose edges are cut between different labels
   ("smooth within a domain, jump between domains"); the GMRFs are intrinsic (the level of each connected
   domain comes from its data). Their hyperparameters come from the blocks that lie inside one label (where
   the cut model has no cut, so the block likelihood is exact).

Why stage 1: on noisy per-pixel data a mixture fitted to raw features is unstable (components merge) and the
Potts MAP under a per-pixel mixture is not the truth (measured on the phantom: the true labelling had a higher
Potts energy than ICM's answer); clustering the GMRF-smoothed features fixes both. Measured in
tests/test_imaging_phantom.py.

``MapModel.batch`` solves a whole map from scratch. ``MapModel.add_tile`` updates it when a tile arrives: the
hyperparameters are re-learned from all data so far (their sufficient statistics are sums), and if none moved by
more than ``drift_tol`` since the last whole-map solve, only the tile and a halo are re-solved
(:mod:`.incremental`); otherwise the whole map is re-solved warm-started. Tolerance against ``batch`` on the
same data (tests/test_imaging_incremental.py): labels agree on >= 98 % of the pixels and the smoothed maps
within 0.15 noise sd (RMS) after a window update, to CG precision after a whole-map re-solve. The differences
come from the hyperparameters (the window update keeps those of the last whole-map solve, within
``drift_tol``) and from ICM, which stops in a local optimum that depends on its start.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import InputError
from ._threads import single_blas_thread
from .decomposition import PhaseModel, fit_phase_model
from .gmrf import BlockStats, GmrfParams, block_power, learn_params, posterior_sd, solve_map
from .incremental import local_gmrf, local_icm, window
from .potts import (
    conditional_probabilities,
    configuration_codes,
    icm,
    pseudo_likelihood_beta,
)

FULL = None  # "the whole map" as a region


@dataclass
class MapConfig:
    """Structure of the map model (what is modelled, not the learned parameters).

    Attributes
    ----------
    class_features : feature names the phases are clustered on (e.g. the unconstrained LCF weights)
    n_phases : number of phases (mixture components), 1..8
    smooth : feature maps to smooth with the label-aware GMRF (stage 3)
    uncut : maps among ``smooth`` that are smoothed across phase boundaries (thickness-like maps)
    phase_method : "gmm" or "kmeans"
    phase_order_by : canonical phase order (indices into ``class_features``), see
        :func:`.decomposition.fit_phase_model`
    phase_init : "pure" (class features are reference weights: start the mixture at the pure references,
        scaled by the median total weight), "pure+background" (the same plus a phase at zero weight: pixels
        without the element, e.g. an empty substrate; it is the last phase) or "kmeans"
    components_per_phase : mixture components per phase for the "pure" initialisations (a phase whose pixels
        spread along a ray of thicknesses is better modelled by several Gaussians along it)
    block_size : block edge (px) of the GMRF marginal likelihood
    max_phase_samples : pixels the phase model is fitted on (a fixed lattice)
    drift_tol : re-solve the whole map when re-learned GMRF hyperparameters would change the smoothed maps by
        more than this (the largest change of the smoother's spectral response, or of the posterior sd)
    label_drift_tol : ... or when the re-learned phase model or Potts coupling would change the conditional
        best label of more than this fraction of the sample pixels
    field_tol : a window solve is accepted when the field on its outer ring moved less than this x sqrt(s2)
    beta_rounds : maximum ICM / pseudo-likelihood alternations
    cg_rtol : conjugate-gradient relative tolerance
    refit_growth : in a tile update, the phase model is re-fitted (for the drift check) once the number of
        classified pixels has grown by this fraction since the last fit
    seed : random seed (k-means initialisation)
    """

    class_features: tuple[str, ...]
    n_phases: int
    smooth: tuple[str, ...]
    uncut: tuple[str, ...] = ("edge_step", "lcf_total")
    phase_method: str = "gmm"
    phase_order_by: tuple[int, ...] | None = None
    phase_init: str = "kmeans"
    components_per_phase: int = 1
    block_size: int = 16
    max_phase_samples: int = 4096
    drift_tol: float = 0.05
    label_drift_tol: float = 0.002
    field_tol: float = 0.02
    beta_rounds: int = 30
    cg_rtol: float = 1e-6
    refit_growth: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        self.class_features = tuple(self.class_features)
        self.smooth = tuple(self.smooth)
        self.uncut = tuple(self.uncut)
        if self.phase_order_by is not None:
            self.phase_order_by = tuple(int(i) for i in self.phase_order_by)
        if not self.class_features:
            raise InputError("class_features: need at least one feature for the phase model")
        if not 1 <= int(self.n_phases) <= 8:
            raise InputError(f"n_phases must be 1..8, got {self.n_phases}")
        if self.phase_init not in ("pure", "pure+background", "kmeans"):
            raise InputError(f"phase_init must be 'pure', 'pure+background' or 'kmeans', got {self.phase_init!r}")
        extra = 1 if self.phase_init == "pure+background" else 0
        if self.phase_init != "kmeans" and len(self.class_features) + extra != self.n_phases:
            raise InputError(f"phase_init={self.phase_init!r} needs one class feature (reference weight) per "
                             f"reference phase: {len(self.class_features)} features for {self.n_phases} phases")
        if self.block_size < 4:
            raise InputError(f"block_size must be >= 4 px, got {self.block_size}")
        if not 0 < self.drift_tol < 1:
            raise InputError(f"drift_tol must be in (0, 1), got {self.drift_tol}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> MapConfig:
        return cls(**json.loads(text))


@dataclass
class SolveLog:
    """What the last update did (diagnostics, benchmarks)."""

    kind: str = ""
    reason: str = ""
    window: tuple[int, int, int, int] | None = None
    cg_iterations: int = 0
    beta_rounds: int = 0
    drift: dict[str, float] = field(default_factory=dict)


def _box(win: tuple[slice, slice]) -> tuple[int, int, int, int]:
    return (win[0].start, win[0].stop, win[1].start, win[1].stop)


def _union(a: tuple[slice, slice], b: tuple[slice, slice]) -> tuple[slice, slice]:
    return (slice(min(a[0].start, b[0].start), max(a[0].stop, b[0].stop)),
            slice(min(a[1].start, b[1].start), max(a[1].stop, b[1].stop)))


def _inner(target: tuple[slice, slice], ext: tuple[slice, slice]) -> tuple[slice, slice]:
    return (slice(target[0].start - ext[0].start, target[0].stop - ext[0].start),
            slice(target[1].start - ext[1].start, target[1].stop - ext[1].start))


class MapModel:
    """Phase labels and smoothed maps of one map, updated tile by tile or solved in one go.

    Parameters
    ----------
    shape : (ny, nx) of the whole map
    config : MapConfig

    Attributes (outputs)
    --------------------
    labels : (ny, nx) int, -1 where no phase could be assigned
    prob_max : (ny, nx), local conditional probability of the chosen label (1 - label uncertainty)
    smoothed, sd : name -> (ny, nx), GMRF posterior mean and approximate posterior sd of each ``smooth`` map
    class_smoothed : name -> (ny, nx), stage-1 smoothed class features
    phase_model, beta, gmrf, gmrf_class : the learned parameters
    """

    def __init__(self, shape: tuple[int, int], config: MapConfig) -> None:
        ny, nx = (int(v) for v in shape)
        if ny < 2 or nx < 2:
            raise InputError(f"map shape must be at least 2 x 2, got {shape}")
        self.shape = (ny, nx)
        self.config = config
        self.names = tuple(dict.fromkeys(config.class_features + config.smooth))
        self.raw = {n: np.full(self.shape, np.nan) for n in self.names}
        self.observed = np.zeros(self.shape, dtype=bool)
        self.labels = np.full(self.shape, -1, dtype=np.int64)
        self.prob_max = np.full(self.shape, np.nan)
        self.class_smoothed = {n: np.full(self.shape, np.nan) for n in config.class_features}
        self.smoothed = {n: np.full(self.shape, np.nan) for n in config.smooth}
        self.sd = {n: np.full(self.shape, np.nan) for n in config.smooth}
        self.unary = np.full((config.n_phases,) + self.shape, np.nan)
        self.phase_model: PhaseModel | None = None
        self.beta = 0.0
        self.gmrf_class: dict[str, GmrfParams | None] = {n: None for n in config.class_features}
        self.gmrf: dict[str, GmrfParams | None] = {n: None for n in config.smooth}
        self.n_updates = 0
        self.n_global = 0
        self.log = SolveLog()
        b = config.block_size
        self._block = (min(b, ny), min(b, nx))
        self._nb = (ny // self._block[0], nx // self._block[1])
        self._block_power = {n: np.zeros(self._nb + self._block) for n in self.names}
        self._block_ok = {n: np.zeros(self._nb, dtype=bool) for n in self.names}
        self._hist = np.zeros(5 ** (config.n_phases + 1) + 5, dtype=np.int64)
        self._hist_labels = self.labels.copy()
        self._hist_valid = np.zeros(self.shape, dtype=bool)
        self._snapshot: dict | None = None
        self._n_class_fitted = 0
        step = max(1, int(np.ceil(np.sqrt(ny * nx / config.max_phase_samples))))
        self._lattice = np.zeros(self.shape, dtype=bool)
        self._lattice[::step, ::step] = True

    # ----------------------------------------------------------------------------------------- data

    def set_pixels(self, y0: int, x0: int, values: dict[str, np.ndarray]) -> tuple[slice, slice]:
        """Write a block of per-pixel feature values (each (ty, tx), NaN = not measured) at (y0, x0)."""
        missing = [n for n in self.names if n not in values]
        if missing:
            raise InputError(f"tile values lack features {missing}")
        shapes = {np.shape(values[n]) for n in self.names}
        if len(shapes) != 1:
            raise InputError(f"tile feature arrays differ in shape: {sorted(shapes)}")
        ty, tx = shapes.pop()
        if not (0 <= y0 and 0 <= x0 and y0 + ty <= self.shape[0] and x0 + tx <= self.shape[1]):
            raise InputError(f"tile at ({y0}, {x0}) of shape ({ty}, {tx}) lies outside the map {self.shape}")
        region = (slice(y0, y0 + ty), slice(x0, x0 + tx))
        for n in self.names:
            self.raw[n][region] = np.asarray(values[n], dtype=np.float64)
        self.observed[region] = True
        return region

    def valid(self, name: str) -> np.ndarray:
        return self.observed & np.isfinite(self.raw[name])

    @property
    def class_valid(self) -> np.ndarray:
        v = self.observed.copy()
        for n in self.config.class_features:
            v &= np.isfinite(self.raw[n])
        return v

    def _class_x(self, mask: np.ndarray) -> np.ndarray:
        return np.stack([self.class_smoothed[n][mask] for n in self.config.class_features], axis=1)

    # ----------------------------------------------------------------------------------------- learning

    def _update_blocks(self, region: tuple[slice, slice] | None) -> None:
        by, bx = self._block
        if region is FULL:
            iy, ix = range(self._nb[0]), range(self._nb[1])
        else:
            iy = range(region[0].start // by, min(self._nb[0], -(-region[0].stop // by)))
            ix = range(region[1].start // bx, min(self._nb[1], -(-region[1].stop // bx)))
        for n in self.names:
            valid = self.valid(n)
            for i in iy:
                for j in ix:
                    sl = (slice(i * by, (i + 1) * by), slice(j * bx, (j + 1) * bx))
                    ok = bool(valid[sl].all())
                    self._block_ok[n][i, j] = ok
                    if ok:
                        self._block_power[n][i, j] = block_power(self.raw[n][sl])

    def _single_label_blocks(self) -> np.ndarray:
        by, bx = self._block
        nby, nbx = self._nb
        lab = self.labels[: nby * by, : nbx * bx].reshape(nby, by, nbx, bx)
        lo = lab.min(axis=(1, 3))
        return (lo >= 0) & (lo == lab.max(axis=(1, 3)))

    def _learn(self, name: str, cut: bool) -> GmrfParams | None:
        ok = self._block_ok[name] & self._single_label_blocks() if cut else self._block_ok[name]
        stats = BlockStats()
        if ok.any():
            stats.add(self._block_power[name][ok].sum(axis=0), int(ok.sum()))
        return learn_params(stats)

    def _learn_class_gmrf(self) -> dict[str, GmrfParams | None]:
        return {n: self._learn(n, cut=False) for n in self.config.class_features}

    def _learn_map_gmrf(self) -> dict[str, GmrfParams | None]:
        return {n: self._learn(n, cut=n not in self.config.uncut) for n in self.config.smooth}

    def _fit_phase_model(self, warm: bool) -> PhaseModel | None:
        x = self._class_x(self._lattice & self.class_valid)
        k = self.config.n_phases
        comps = self.config.components_per_phase
        n_comp = k * comps if self.config.phase_init != "kmeans" else k
        if x.shape[0] < max(2 * n_comp, n_comp * (x.shape[1] + 1)):
            return None
        means_init = component_phase = None
        if self.config.phase_init in ("pure", "pure+background"):
            n_ref = x.shape[1]
            total = np.sum(x, axis=1)
            # the references' level: the typical total weight, or with empty pixels present the 90th percentile
            level = float(np.percentile(total, 90 if self.config.phase_init == "pure+background" else 50))
            # several components per reference along its ray of thicknesses (a ray is not Gaussian)
            factors = np.linspace(0.5, 1.5, comps) if comps > 1 else np.array([1.0])
            rows, phases = [], []
            for i in range(n_ref):
                for f in factors:
                    rows.append(level * f * np.eye(n_ref)[i])
                    phases.append(i)
            if self.config.phase_init == "pure+background":
                rows.append(np.zeros(n_ref))
                phases.append(n_ref)
            means_init, component_phase = np.array(rows), np.array(phases)
        return fit_phase_model(
            x, k, method=self.config.phase_method, order_by=self.config.phase_order_by,
            init=self.phase_model if warm else None, means_init=means_init, component_phase=component_phase,
            seed=self.config.seed,
        )

    def _compute_unary(self, win: tuple[slice, slice] | None = FULL) -> None:
        if self.phase_model is None:
            self.unary[:] = np.nan
            return
        win = win or (slice(0, self.shape[0]), slice(0, self.shape[1]))
        sub = np.stack([self.class_smoothed[n][win] for n in self.config.class_features], axis=-1)
        ll = self.phase_model.log_likelihood(sub.reshape(-1, sub.shape[-1]))
        self.unary[(slice(None),) + win] = ll.reshape((-1,) + sub.shape[:2])

    def _unary_filled(self) -> np.ndarray:
        return np.nan_to_num(self.unary, nan=0.0)

    # ----------------------------------------------------------------------------------------- histogram

    def _codes(self, labels: np.ndarray, valid: np.ndarray, win: tuple[slice, slice]) -> np.ndarray:
        ext = window(win, 1, self.shape)
        return configuration_codes(labels[ext], valid[ext], self.config.n_phases, region=_inner(win, ext))

    def _hist_rebuild(self) -> None:
        cv = self.class_valid
        self._hist[:] = 0
        np.add.at(self._hist, configuration_codes(self.labels, cv, self.config.n_phases), 1)
        self._hist_labels = self.labels.copy()
        self._hist_valid = cv

    def _hist_update(self, win: tuple[slice, slice]) -> None:
        """Keep the histogram equal to the whole map's after labels / validity changed inside ``win``."""
        big = window(win, 1, self.shape)
        cv = self.class_valid
        np.subtract.at(self._hist, self._codes(self._hist_labels, self._hist_valid, big), 1)
        np.add.at(self._hist, self._codes(self.labels, cv, big), 1)
        self._hist_labels[win] = self.labels[win]
        self._hist_valid[win] = cv[win]

    def _beta_from_hist(self) -> float:
        nz = np.flatnonzero(self._hist)
        return pseudo_likelihood_beta(dict(zip(nz.tolist(), self._hist[nz].tolist())), self.config.n_phases)

    # ----------------------------------------------------------------------------------------- global solves

    def _smooth_global(self, names, params: dict, out: dict, sd: dict | None, labels, warm: bool) -> int:
        iters = 0
        for n in names:
            p = params[n]
            v = self.valid(n)
            if p is None:
                out[n] = np.where(v, self.raw[n], np.nan)
                if sd is not None:
                    sd[n] = np.full(self.shape, np.nan)
                continue
            lab = None if labels is None or n in self.config.uncut else labels
            x, it = solve_map(self.raw[n], v, p, labels=lab, x0=out[n] if warm else None,
                              rtol=self.config.cg_rtol)
            iters += it
            out[n] = x
            if sd is not None:
                sd[n] = posterior_sd(v, lab, p)
        return iters

    def _solve_labels_global(self, cold: bool) -> int:
        cv = self.class_valid
        if self.phase_model is None:
            self.labels[:] = -1
            self._hist_rebuild()
            return 0
        u = self._unary_filled()
        best = np.argmax(u, axis=0)
        start = best if cold else np.where(self.labels >= 0, self.labels, best)
        self.labels = np.where(cv, start, -1)
        rounds = 0
        for rounds in range(1, self.config.beta_rounds + 1):
            self._hist_rebuild()
            beta = self._beta_from_hist()
            new, _ = icm(u, cv, beta, self.labels)
            settled = abs(beta - self.beta) < 1e-4 and np.array_equal(new, self.labels)
            self.beta, self.labels = beta, new
            if settled:
                break
        self._hist_rebuild()
        return rounds

    def _refresh_probabilities(self, win: tuple[slice, slice] | None = FULL) -> None:
        """Local conditional probability of the chosen label in ``win`` + 1 px (or everywhere)."""
        if self.phase_model is None:
            self.prob_max[:] = np.nan
            return
        cv = self.class_valid
        target = (slice(0, self.shape[0]), slice(0, self.shape[1])) if win is FULL else window(win, 1, self.shape)
        ext = window(target, 1, self.shape)
        p = conditional_probabilities(self._unary_filled()[(slice(None),) + ext], self.labels[ext], cv[ext],
                                      self.beta)
        lab = np.clip(self.labels[ext], 0, None)
        chosen = np.take_along_axis(np.nan_to_num(p, nan=0.0), lab[None], axis=0)[0]
        self.prob_max[target] = np.where(cv[ext] & (self.labels[ext] >= 0), chosen, np.nan)[_inner(target, ext)]

    def _refresh_sd(self, name: str, win: tuple[slice, slice], labels, p: GmrfParams) -> None:
        target = window(win, 1, self.shape)
        ext = window(target, 1, self.shape)
        sd = posterior_sd(self.valid(name)[ext], None if labels is None else labels[ext], p)
        self.sd[name][target] = sd[_inner(target, ext)]

    def _snapshot_now(self) -> dict:
        return {
            "phase_model": self.phase_model,
            "beta": self.beta,
            "gmrf_class": {n: None if p is None else (p.s2, p.lam, p.eta) for n, p in self.gmrf_class.items()},
            "gmrf": {n: None if p is None else (p.s2, p.lam, p.eta) for n, p in self.gmrf.items()},
        }

    def _global_with(self, drift: dict[str, float]) -> SolveLog:
        """Whole-map re-solve because a learned quantity drifted (the largest drift is the reason)."""
        tol, label_tol = self.config.drift_tol, self.config.label_drift_tol
        ratio = {k: v / (label_tol if k in ("phase_model", "beta") else tol) for k, v in drift.items()}
        self._global(cold=False, reason=max(ratio, key=ratio.get), drift=drift)
        return self.log

    def _global(self, cold: bool, reason: str, drift: dict | None = None) -> None:
        if cold:
            self._update_blocks(FULL)
            self.beta = 0.0
        self.gmrf_class = self._learn_class_gmrf()
        it1 = self._smooth_global(self.config.class_features, self.gmrf_class, self.class_smoothed, None, None,
                                  warm=not cold)
        # cold fit: a warm start from a model learned on fewer tiles can stay in a poor optimum
        self.phase_model = self._fit_phase_model(warm=False)
        self._n_class_fitted = int(self.class_valid.sum())
        self._compute_unary(FULL)
        # labels restart from the per-pixel best class (ICM with a large beta would keep stale labels)
        self.beta = 0.0
        rounds = self._solve_labels_global(cold=True)
        self.gmrf = self._learn_map_gmrf()
        it3 = self._smooth_global(self.config.smooth, self.gmrf, self.smoothed, self.sd, self.labels,
                                  warm=not cold)
        self._refresh_probabilities(FULL)
        self._snapshot = self._snapshot_now()
        self.n_global += 1
        self.log = SolveLog(kind="batch" if cold else "global", reason=reason, cg_iterations=it1 + it3,
                            beta_rounds=rounds, drift=drift or {})

    # ----------------------------------------------------------------------------------------- drift

    @staticmethod
    def _param_drift(p: GmrfParams | None, q) -> float:
        """Largest change of the GMRF smoother's response 1 / (1 + eta + lam mu) over the grid spectrum
        (mu in [0, 8]), or of the posterior sd (half the log s2 ratio): the relative size of the change the
        new hyperparameters would make to the solution."""
        if (p is None) != (q is None):
            return np.inf
        if p is None:
            return 0.0
        mu = np.linspace(0.0, 8.0, 129)
        g_new = 1.0 / (1.0 + p.eta + p.lam * mu)
        g_old = 1.0 / (1.0 + q[2] + q[1] * mu)
        return float(max(np.max(np.abs(g_new - g_old)), 0.5 * abs(np.log(p.s2 / q[0]))))

    def _lattice_counts(self, sample: np.ndarray) -> np.ndarray:
        """Neighbour label counts (K, n_sample) at the sample pixels only."""
        ys, xs = np.nonzero(sample)
        lab = np.where(self.class_valid, self.labels, -1)
        ny, nx = self.shape
        counts = np.zeros((self.config.n_phases, ys.size))
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            yy, xx = ys + dy, xs + dx
            inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
            nb = np.full(ys.size, -1)
            nb[inside] = lab[yy[inside], xx[inside]]
            for k in range(self.config.n_phases):
                counts[k] += nb == k
        return counts

    def _lattice_modes(self, unary: np.ndarray, beta: float, counts: np.ndarray) -> np.ndarray:
        """Conditional-mode label at the sample pixels given the current neighbour labels."""
        return np.argmax(np.nan_to_num(unary, nan=0.0) + beta * counts, axis=0)

    def _flip_fraction(self, unary_a, beta_a, unary_b, beta_b, counts) -> float:
        if not counts.size:
            return 0.0
        return float(np.mean(self._lattice_modes(unary_a, beta_a, counts)
                             != self._lattice_modes(unary_b, beta_b, counts)))

    def _sample_unary(self, model: PhaseModel, sample: np.ndarray) -> np.ndarray:
        return model.log_likelihood(self._class_x(sample))

    # ----------------------------------------------------------------------------------------- public

    @classmethod
    def batch(cls, shape: tuple[int, int], config: MapConfig, values: dict[str, np.ndarray]) -> MapModel:
        """Solve a whole map from scratch from full-size per-pixel feature maps (the batch reference)."""
        model = cls(shape, config)
        model.set_pixels(0, 0, values)
        model.solve_from_scratch()
        return model

    def solve_from_scratch(self) -> None:
        """Learn everything and solve the whole map from a cold start."""
        with single_blas_thread():
            self._global(cold=True, reason="cold start")
        self.n_updates += 1

    def add_tile(self, y0: int, x0: int, values: dict[str, np.ndarray]) -> SolveLog:
        """Add (or replace) a tile of per-pixel features and update the solution incrementally."""
        with single_blas_thread():
            return self._add_tile(y0, x0, values)

    def _add_tile(self, y0: int, x0: int, values: dict[str, np.ndarray]) -> SolveLog:
        region = self.set_pixels(y0, x0, values)
        self._update_blocks(region)
        self.n_updates += 1
        if self._snapshot is None:
            self._global(cold=False, reason="first tile")
            return self.log
        tol, label_tol = self.config.drift_tol, self.config.label_drift_tol
        snap = self._snapshot
        drift: dict[str, float] = {}

        def exceeded() -> bool:
            return any(v > (label_tol if k in ("phase_model", "beta") else tol) for k, v in drift.items())

        # Hyperparameters are re-learned from all data so far; the solution keeps those of the last
        # whole-map solve (the snapshot) unless one of them would change it by more than the tolerance.
        for n, p in self._learn_class_gmrf().items():
            drift[f"class_gmrf.{n}"] = self._param_drift(p, snap["gmrf_class"][n])
        if exceeded():
            return self._global_with(drift)
        # stage 1 on the tile + halo
        touched = region
        iters = 0
        for n in self.config.class_features:
            p = self.gmrf_class[n]
            if p is None:
                self.class_smoothed[n][region] = np.where(self.valid(n)[region], self.raw[n][region], np.nan)
                continue
            field_, win, it = local_gmrf(self.raw[n], self.valid(n), self.class_smoothed[n], p, region,
                                         mean=None, labels=None, tol=self.config.field_tol * np.sqrt(p.s2),
                                         rtol=self.config.cg_rtol)
            self.class_smoothed[n] = field_
            touched = _union(touched, win)
            iters += it
        # stage 2: labels on the touched window with the snapshot phase model and beta
        if self.phase_model is None:  # too few classified pixels so far: no labels yet
            return self._global_with(dict(drift, phase_model=np.inf))
        self._compute_unary(touched)
        before = self.labels.copy()
        cv = self.class_valid
        u = self._unary_filled()
        fresh = cv[region] & (self.labels[region] < 0)
        start = np.where(fresh, np.argmax(u[(slice(None),) + region], axis=0), self.labels[region])
        self.labels[region] = np.where(cv[region], start, -1)
        self.labels, icm_win = local_icm(u, cv, self.labels, self.beta, touched)
        self._hist_update(icm_win)
        sample = self._lattice & cv
        n_class = int(cv.sum())
        if n_class < (1 + self.config.refit_growth) * self._n_class_fitted and self.phase_model is not None:
            new_model = self.phase_model  # too little new data since the last fit to move it
        else:
            # cold, like the batch solve: a warm start could stay in another optimum of the mixture
            new_model = self._fit_phase_model(warm=False)
            self._n_class_fitted = n_class
        if new_model is None or self.phase_model is None:
            drift["phase_model"] = 0.0 if new_model is self.phase_model else np.inf
        else:
            u_old = self._sample_unary(self.phase_model, sample)
            counts = self._lattice_counts(sample)
            drift["phase_model"] = self._flip_fraction(u_old, self.beta, self._sample_unary(new_model, sample),
                                                       self.beta, counts)
            drift["beta"] = self._flip_fraction(u_old, self.beta, u_old, self._beta_from_hist(), counts)
        if exceeded():
            return self._global_with(drift)
        # stage 3 inputs changed on the tile (new data) and where labels changed (cut edges)
        touched = region
        changed = np.argwhere(self.labels != before)
        if changed.size:
            lo, hi = changed.min(axis=0), changed.max(axis=0) + 1
            touched = _union(touched, (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1]))))
        # stage 3: label-aware GMRFs on the touched window
        for n, p in self._learn_map_gmrf().items():
            drift[f"gmrf.{n}"] = self._param_drift(p, snap["gmrf"][n])
        if exceeded():
            return self._global_with(drift)
        last = touched
        for n in self.config.smooth:
            p = self.gmrf[n]
            v = self.valid(n)
            if p is None:
                self.smoothed[n][touched] = np.where(v[touched], self.raw[n][touched], np.nan)
                continue
            lab = None if n in self.config.uncut else self.labels
            field_, win, it = local_gmrf(self.raw[n], v, self.smoothed[n], p, touched, mean=None, labels=lab,
                                         tol=self.config.field_tol * np.sqrt(p.s2),
                                         rtol=self.config.cg_rtol)
            self.smoothed[n] = field_
            self._refresh_sd(n, win, lab, p)
            iters += it
            last = _union(last, win)
        self._refresh_probabilities(icm_win)
        self.log = SolveLog(kind="local", window=_box(last), cg_iterations=iters, drift=drift)
        return self.log


def _posterior(model: PhaseModel, x: np.ndarray) -> np.ndarray:
    ll = model.log_likelihood(x)
    ll = ll - np.nanmax(ll, axis=0, keepdims=True)
    p = np.exp(ll)
    return p / np.nansum(p, axis=0, keepdims=True)


# --------------------------------------------------------------------------------------------- state

_STATE_VERSION = 1


def model_to_state(model: MapModel) -> dict[str, np.ndarray]:
    """Everything needed to continue the model elsewhere, as plain arrays (no pickles).

    Block statistics and the label-configuration histogram are not stored: they are recomputed from the
    data and labels by :func:`model_from_state`.
    """
    state: dict[str, np.ndarray] = {
        "version": np.array(_STATE_VERSION),
        "config": np.array(model.config.to_json()),
        "shape": np.array(model.shape),
        "observed": model.observed.copy(),
        "labels": model.labels.copy(),
        "prob_max": model.prob_max.copy(),
        "beta": np.array(model.beta),
        "n_updates": np.array(model.n_updates),
        "n_global": np.array(model.n_global),
        "n_class_fitted": np.array(model._n_class_fitted),
    }
    for n in model.names:
        state[f"raw.{n}"] = model.raw[n].copy()
    for n in model.config.class_features:
        state[f"class_smoothed.{n}"] = model.class_smoothed[n].copy()
        if model.gmrf_class[n] is not None:
            state[f"gmrf_class.{n}"] = model.gmrf_class[n].as_array()
    for n in model.config.smooth:
        state[f"smoothed.{n}"] = model.smoothed[n].copy()
        state[f"sd.{n}"] = model.sd[n].copy()
        if model.gmrf[n] is not None:
            state[f"gmrf.{n}"] = model.gmrf[n].as_array()
    if model.phase_model is not None:
        for k, v in model.phase_model.as_arrays().items():
            state[f"phase_model.{k}"] = np.asarray(v)
    return state


def model_from_state(state: dict[str, np.ndarray]) -> MapModel:
    """Rebuild a MapModel from :func:`model_to_state` (continuing it gives the same results)."""
    try:
        version = int(state["version"])
        config = MapConfig.from_json(str(state["config"]))
        shape = tuple(int(v) for v in state["shape"])
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"map state: missing or bad header ({exc})") from None
    if version != _STATE_VERSION:
        raise InputError(f"map state: version {version}, this code reads version {_STATE_VERSION}")
    model = MapModel(shape, config)
    try:
        model.observed = np.asarray(state["observed"], bool).copy()
        model.labels = np.asarray(state["labels"], np.int64).copy()
        model.prob_max = np.asarray(state["prob_max"], float).copy()
        model.beta = float(state["beta"])
        model.n_updates = int(state["n_updates"])
        model.n_global = int(state["n_global"])
        model._n_class_fitted = int(state["n_class_fitted"])
        for n in model.names:
            model.raw[n] = np.asarray(state[f"raw.{n}"], float).copy()
        for n in config.class_features:
            model.class_smoothed[n] = np.asarray(state[f"class_smoothed.{n}"], float).copy()
            key = f"gmrf_class.{n}"
            model.gmrf_class[n] = GmrfParams.from_array(state[key]) if key in state else None
        for n in config.smooth:
            model.smoothed[n] = np.asarray(state[f"smoothed.{n}"], float).copy()
            model.sd[n] = np.asarray(state[f"sd.{n}"], float).copy()
            key = f"gmrf.{n}"
            model.gmrf[n] = GmrfParams.from_array(state[key]) if key in state else None
        if "phase_model.means" in state:
            model.phase_model = PhaseModel.from_arrays(
                {k: state[f"phase_model.{k}"] for k in ("means", "covariances", "weights", "scale", "component_phase", "method")})
    except KeyError as exc:
        raise InputError(f"map state: missing array {exc}") from None
    for arr in [model.observed, model.labels] + list(model.raw.values()):
        if arr.shape != model.shape:
            raise InputError(f"map state: an array has shape {arr.shape}, the map {model.shape}")
    model._update_blocks(FULL)
    model._hist_rebuild()
    model._compute_unary(FULL)
    if model.n_global > 0:
        model._snapshot = model._snapshot_now()
    return model
