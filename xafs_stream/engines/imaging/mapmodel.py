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
hyperparameters are re-learned from all data so far (their sufficient statistics are sums, kept as running
sums), and if none moved by more than its tolerance since the last whole-map solve, only the tile and a halo
are re-solved (:mod:`.incremental`); otherwise the whole map is re-solved warm-started. Tolerance against
``batch`` on the same data (tests/test_imaging_incremental.py): labels agree on >= 98 % of the pixels and the
smoothed maps within 0.15 noise sd (RMS) after a window update, to CG precision after a whole-map re-solve.
The differences come from the hyperparameters (the window update keeps those of the last whole-map solve,
within the tolerances) and from ICM, which stops in a local optimum that depends on its start.

Decision rules of a tile update (a whole-map re-solve when any is exceeded; ``SolveLog.drift`` records them):

* stage 3 (smoothed maps): the largest change of the smoother's response or of the posterior sd,
  ``drift_tol`` (:meth:`MapModel._param_drift`);
* stage 1 (class features): these only feed the labels and keep no sd, so s2 does not count. A short
  smoothing length (lam <= FLIP_CHECK_MAX_LAM, old and new) is judged by the labels it would change: the
  fraction of lattice pixels whose conditional best label moves when the class features are shifted by the
  estimated re-smoothing (:meth:`MapModel._class_shift`), ``label_drift_tol``; longer ones by the response
  change, ``drift_tol``. (Counting s2 and the response of lam ~ 0.01-0.3 px^2 smoothers, whose likelihood is
  flat there, made over half of the tiles of the 512 x 512 benchmark map re-solve the whole map, see
  docs/measurements.md; tests/test_imaging_fast_kernels.py checks the benchmark regime against batch.)
* the phase model (re-fitted cold once the classified pixels grew by ``refit_growth``, or by
  ``stable_refit_growth`` after ``stable_refits`` re-fits in a row that changed no label) and the Potts
  coupling: the fraction of lattice pixels whose conditional best label changes, ``label_drift_tol``.

Window solves stop at ``cg_field_tol`` noise sd (float32, see :class:`.gmrf.StopRule`); stage 1 and whole-map
solves at ``cg_rtol`` in float64, because the phase model is fitted to the class features scaled by their spread
(see :meth:`MapModel._smooth_local`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from .._threads import single_blas_thread
from ..errors import InputError
from .decomposition import PhaseModel, fit_phase_model
from .gmrf import BlockStats, GmrfParams, StopRule, block_powers, learn_params_many, posterior_sd, solve_map
from .incremental import WindowMap, local_gmrf_many, local_icm, window
from .potts import (
    conditional_probabilities,
    configuration_codes,
    icm,
    pseudo_likelihood_beta,
)

FULL = None  # "the whole map" as a region
# drifts measured as the fraction of sample pixels whose conditional best label would change (label_drift_tol)
LABEL_DRIFTS = ("phase_model", "beta", "class_gmrf")
# stage-1 smoothing lengths up to this (px^2) have their drift judged by its effect on the labels (see
# MapModel._class_shift, whose one-step estimate was within 35 % of a re-solve up to here and 50 % off at
# lam ~ 1-2, see docs/measurements.md); longer ones by the change of the smoother's response
FLIP_CHECK_MAX_LAM = 0.5
# blocks per transform call when block statistics are updated (16 x 16 blocks: 8 MB of temporaries)
_BLOCK_BATCH = 4096


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
    cg_field_tol : window solves stop when the conjugate-gradient error estimate is below this x sqrt(s2) at
        every pixel (see :class:`.gmrf.StopRule`)
    beta_rounds : maximum ICM / pseudo-likelihood alternations
    cg_rtol : whole-map solves stop at this conjugate-gradient relative tolerance (of the map's deviation from
        its mean level, see :class:`.gmrf.StopRule`)
    refit_growth : in a tile update, the phase model is re-fitted (for the drift check) once the number of
        classified pixels has grown by this fraction since the last fit
    stable_refit_growth, stable_refits : ... or by ``stable_refit_growth`` once the last ``stable_refits``
        re-fits since the last whole-map solve changed no sample label (the model has shown itself stable
        on these data; a re-fit costs ~11 ms of a 64 x 64 tile's budget, see docs/measurements.md)
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
    cg_field_tol: float = 0.00025
    beta_rounds: int = 30
    cg_rtol: float = 1e-6
    refit_growth: float = 0.05
    stable_refit_growth: float = 0.2
    stable_refits: int = 3
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
    refit: bool = False  # a tile update re-fitted the phase model for its drift check


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

    def __init__(self, shape: tuple[int, int], config: MapConfig, *, _solve_first: bool = False) -> None:
        ny, nx = (int(v) for v in shape)
        if ny < 2 or nx < 2:
            raise InputError(f"map shape must be at least 2 x 2, got {shape}")
        self.shape = (ny, nx)
        self.config = config
        self.names = tuple(dict.fromkeys(config.class_features + config.smooth))
        self.raw = {n: np.full(self.shape, np.nan) for n in self.names}
        self.observed = np.zeros(self.shape, dtype=bool)
        # observed & finite, per feature and for all class features (kept up to date by set_pixels)
        self._valid = {n: np.zeros(self.shape, dtype=bool) for n in self.names}
        self._class_valid = np.zeros(self.shape, dtype=bool)
        self.labels = np.full(self.shape, -1, dtype=np.int64)
        self.prob_max = np.full(self.shape, np.nan)
        # _solve_first (batch only, a whole-map solve follows at once): the solves create these maps, so that
        # a large map does not hold a NaN copy of each through its first stages
        self.class_smoothed = {} if _solve_first else {n: np.full(self.shape, np.nan) for n in config.class_features}
        self.smoothed = {} if _solve_first else {n: np.full(self.shape, np.nan) for n in config.smooth}
        self.sd = {} if _solve_first else {n: np.full(self.shape, np.nan) for n in config.smooth}
        # class log-likelihoods, 0 where unknown (what ICM and the probabilities use)
        self.unary = np.zeros((config.n_phases,) + self.shape)
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
        # running sums of the block statistics each GMRF learns from, keyed (map, cut): stage 1 uses every
        # complete block (uncut), stage 3 of a cut map only the blocks inside one label; kept up to date as
        # blocks and labels change, so re-learning costs no pass over all blocks
        keys = [(n, False) for n in config.class_features] + [(n, n not in config.uncut) for n in config.smooth]
        self._stat_keys = tuple(dict.fromkeys(keys))
        self._reset_block_stats()
        self._hist = np.zeros(5 ** (config.n_phases + 1) + 5, dtype=np.int64)
        self._hist_labels = self.labels.copy()
        self._hist_valid = np.zeros(self.shape, dtype=bool)
        self._snapshot: dict | None = None
        self._n_class_fitted = 0
        self._quiet_refits = 0  # re-fits in a row, since the last whole-map solve, that changed no label
        step = max(1, int(np.ceil(np.sqrt(ny * nx / config.max_phase_samples))))
        self._lattice = np.zeros(self.shape, dtype=bool)
        self._lattice[::step, ::step] = True
        # the lattice as flat indices (row-major) and their 4 neighbours (clipped; ``_lat_in``: inside the map)
        ys, xs = np.nonzero(self._lattice)
        self._lat_flat = ys * nx + xs
        nbs, inside = [], []
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            yy, xx = ys + dy, xs + dx
            inside.append((yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx))
            nbs.append(np.clip(yy, 0, ny - 1) * nx + np.clip(xx, 0, nx - 1))
        self._lat_nb = np.array(nbs)
        self._lat_in = np.array(inside)

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
        self._refresh_valid(region)
        return region

    def _refresh_valid(self, region: tuple[slice, slice] | None = FULL) -> None:
        """Recompute the validity masks on ``region`` (or everywhere) from ``observed`` and ``raw``."""
        region = region or (slice(0, self.shape[0]), slice(0, self.shape[1]))
        cv = self.observed[region].copy()
        for n in self.names:
            v = self.observed[region] & np.isfinite(self.raw[n][region])
            self._valid[n][region] = v
            if n in self.config.class_features:
                cv &= v
        self._class_valid[region] = cv

    def valid(self, name: str) -> np.ndarray:
        """Observed pixels with a finite value of ``name``, (ny, nx) bool (read-only: the model's own mask)."""
        return self._valid[name]

    @property
    def class_valid(self) -> np.ndarray:
        """Observed pixels with every class feature finite, (ny, nx) bool (read-only)."""
        return self._class_valid

    def _sample(self) -> np.ndarray:
        """Positions (into the lattice) of the lattice pixels with every class feature: the phase model's
        sample (row-major order)."""
        return np.flatnonzero(self._class_valid.ravel()[self._lat_flat])

    def _class_x(self, sample: np.ndarray) -> np.ndarray:
        """Stage-1 smoothed class features at the sample pixels, (n_sample, n_class)."""
        flat = self._lat_flat[sample]
        return np.stack([self.class_smoothed[n].ravel()[flat] for n in self.config.class_features], axis=1)

    # ----------------------------------------------------------------------------------------- learning

    def _block_box(self, region: tuple[slice, slice] | None) -> tuple[int, int, int, int] | None:
        """Block indices (i0, i1, j0, j1) of the complete blocks that overlap ``region`` (None if none)."""
        by, bx = self._block
        if region is FULL:
            i0, i1, j0, j1 = 0, self._nb[0], 0, self._nb[1]
        else:
            i0, i1 = region[0].start // by, min(self._nb[0], -(-region[0].stop // by))
            j0, j1 = region[1].start // bx, min(self._nb[1], -(-region[1].stop // bx))
        return (i0, i1, j0, j1) if i1 > i0 and j1 > j0 else None

    def _reset_block_stats(self) -> None:
        """Empty block statistics: the DCT power of every complete block (8 bytes per pixel and map) and their
        running sums."""
        self._block_power = {n: np.zeros(self._nb + self._block) for n in self.names}
        self._block_ok = {n: np.zeros(self._nb, dtype=bool) for n in self.names}
        self._stat_sum = {k: np.zeros(self._block) for k in self._stat_keys}
        self._stat_n = {k: 0 for k in self._stat_keys}
        self._stat_in = {k: np.zeros(self._nb, dtype=bool) for k in self._stat_keys}

    def release_tile_state(self) -> None:
        """Free what only tile updates use, once a batch solve is done: the per-block powers (8 bytes per pixel
        and map, as much as the data), the class log-likelihoods and the label histogram's copy of the labels.
        Results and learned parameters stay; a later tile (``add_tile``) first rebuilds them from the data."""
        self._block_power = None
        self.unary = None
        self._hist_labels = None

    def _ensure_tile_state(self) -> None:
        if self._block_power is None:
            self._reset_block_stats()
            self._update_blocks(FULL)  # with the current labels for the cut maps
        if self.unary is None:
            self.unary = np.zeros((self.config.n_phases,) + self.shape)
            self._compute_unary(FULL)
        if self._hist_labels is None:
            self._hist_rebuild()

    def _update_blocks(self, region: tuple[slice, slice] | None) -> None:
        """Block statistics of the complete blocks that overlap ``region`` (all blocks at once per map)."""
        box = self._block_box(region)
        if box is None:
            return
        i0, i1, j0, j1 = box
        by, bx = self._block
        rows, cols = slice(i0 * by, i1 * by), slice(j0 * bx, j1 * bx)
        shape4 = (i1 - i0, by, j1 - j0, bx)
        self._stats_remove(box, cut_only=False)
        # the blocks of several maps go through one transform call (a tile's 12 maps: one call instead of 12),
        # in batches of at most _BLOCK_BATCH blocks so that a whole-map update keeps its temporaries small
        parts: list = []  # (name, complete-block mask, blocks)
        for n in self.names:
            ok = self._valid[n][rows, cols].reshape(shape4).all(axis=(1, 3))
            self._block_ok[n][i0:i1, j0:j1] = ok
            if ok.any():
                parts.append((n, ok, self.raw[n][rows, cols].reshape(shape4).transpose(0, 2, 1, 3)[ok]))
                if sum(b.shape[0] for _, _, b in parts) >= _BLOCK_BATCH:
                    self._store_block_powers(parts, box)
                    parts = []
        if parts:
            self._store_block_powers(parts, box)
        self._stats_add(box, cut_only=False)

    def _store_block_powers(self, parts: list, box: tuple[int, int, int, int]) -> None:
        i0, i1, j0, j1 = box
        powers = block_powers(np.concatenate([b for _, _, b in parts]))
        start = 0
        for n, ok, b in parts:
            self._block_power[n][i0:i1, j0:j1][ok] = powers[start:start + b.shape[0]]
            start += b.shape[0]

    def _relabel_blocks(self, region: tuple[slice, slice] | None) -> None:
        """Update the statistics of the cut maps after labels changed inside ``region``."""
        box = self._block_box(region)
        if box is not None:
            self._stats_remove(box, cut_only=True)
            self._stats_add(box, cut_only=True)

    def _stats_remove(self, box: tuple[int, int, int, int], cut_only: bool) -> None:
        i0, i1, j0, j1 = box
        for key in self._stat_keys:
            if cut_only and not key[1]:
                continue
            inside = self._stat_in[key][i0:i1, j0:j1]
            if inside.any():
                self._stat_sum[key] -= self._block_power[key[0]][i0:i1, j0:j1][inside].sum(axis=0)
                self._stat_n[key] -= int(inside.sum())
                inside[:] = False
                if self._stat_n[key] == 0:
                    self._stat_sum[key][:] = 0.0  # no rounding residue

    def _stats_add(self, box: tuple[int, int, int, int], cut_only: bool) -> None:
        i0, i1, j0, j1 = box
        single = self._single_label_blocks(box)
        for key in self._stat_keys:
            name, cut = key
            if cut_only and not cut:
                continue
            inside = self._block_ok[name][i0:i1, j0:j1] & single if cut else self._block_ok[name][i0:i1, j0:j1]
            if inside.any():
                self._stat_sum[key] += self._block_power[name][i0:i1, j0:j1][inside].sum(axis=0)
                self._stat_n[key] += int(inside.sum())
            self._stat_in[key][i0:i1, j0:j1] = inside

    def _single_label_blocks(self, box: tuple[int, int, int, int]) -> np.ndarray:
        i0, i1, j0, j1 = box
        by, bx = self._block
        lab = self.labels[i0 * by:i1 * by, j0 * bx:j1 * bx].reshape(i1 - i0, by, j1 - j0, bx)
        lo = lab.min(axis=(1, 3))
        return (lo >= 0) & (lo == lab.max(axis=(1, 3)))

    def _learn(self, keys: list[tuple[str, bool]]) -> list[GmrfParams | None]:
        """Hyperparameters of the maps ``key[0]`` from their block statistics (cut: single-label blocks only),
        all maps searched together (:func:`.gmrf.learn_params_many`)."""
        stats = []
        for key in keys:
            st = BlockStats()
            if self._stat_n[key] > 0:
                st.add(self._stat_sum[key].copy(), self._stat_n[key])
            stats.append(st)
        return learn_params_many(stats)

    def _learn_class_gmrf(self) -> dict[str, GmrfParams | None]:
        names = self.config.class_features
        return dict(zip(names, self._learn([(n, False) for n in names])))

    def _learn_map_gmrf(self) -> dict[str, GmrfParams | None]:
        names = self.config.smooth
        return dict(zip(names, self._learn([(n, n not in self.config.uncut) for n in names])))

    def _fit_phase_model(self, warm: bool) -> PhaseModel | None:
        x = self._class_x(self._sample())
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
        """Class log-likelihoods of the stage-1 smoothed features in ``win``; 0 where unknown (NaN features)."""
        if self.phase_model is None:
            self.unary[:] = 0.0
            return
        win = win or (slice(0, self.shape[0]), slice(0, self.shape[1]))
        sub = np.stack([self.class_smoothed[n][win] for n in self.config.class_features], axis=-1)
        ll = self.phase_model.log_likelihood(sub.reshape(-1, sub.shape[-1]))
        self.unary[(slice(None),) + win] = np.nan_to_num(ll, nan=0.0).reshape((-1,) + sub.shape[:2])

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
        u = self.unary
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
        p = conditional_probabilities(self.unary[(slice(None),) + ext], self.labels[ext], cv[ext],
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
        ratio = {k: v / (label_tol if k in LABEL_DRIFTS else tol) for k, v in drift.items()}
        self._global(cold=False, reason=max(ratio, key=ratio.get), drift=drift)
        return self.log

    def _global(self, cold: bool, reason: str, drift: dict | None = None, *,
                release_block_powers: bool = False) -> None:
        if cold:  # everything is recomputed: a released tile state (release_tile_state) only needs its arrays
            if self.unary is None:
                self.unary = np.zeros((self.config.n_phases,) + self.shape)
            if self._block_power is None:
                self._reset_block_stats()
            self._update_blocks(FULL)
            self.beta = 0.0
        else:
            self._ensure_tile_state()
        self.gmrf_class = self._learn_class_gmrf()
        it1 = self._smooth_global(self.config.class_features, self.gmrf_class, self.class_smoothed, None, None,
                                  warm=not cold)
        # cold fit: a warm start from a model learned on fewer tiles can stay in a poor optimum
        self.phase_model = self._fit_phase_model(warm=False)
        self._n_class_fitted = int(self.class_valid.sum())
        self._quiet_refits = 0
        self._compute_unary(FULL)
        # labels restart from the per-pixel best class (ICM with a large beta would keep stale labels)
        self.beta = 0.0
        rounds = self._solve_labels_global(cold=True)
        self._relabel_blocks(FULL)
        self.gmrf = self._learn_map_gmrf()
        if release_block_powers:
            self._block_power = None  # the rest of the tile state after the solve (batch)
        it3 = self._smooth_global(self.config.smooth, self.gmrf, self.smoothed, self.sd, self.labels,
                                  warm=not cold)
        self._refresh_probabilities(FULL)
        self._snapshot = self._snapshot_now()
        self.n_global += 1
        self.log = SolveLog(kind="batch" if cold else "global", reason=reason, cg_iterations=it1 + it3,
                            beta_rounds=rounds, drift=drift or {})

    # ----------------------------------------------------------------------------------------- drift

    @staticmethod
    def _param_drift(p: GmrfParams | None, q, with_s2: bool = True) -> float:
        """Largest change of the GMRF smoother's response 1 / (1 + eta + lam mu) over the grid spectrum
        (mu in [0, 8]), or (``with_s2``) of the posterior sd (half the log s2 ratio): the relative size of the
        change the new hyperparameters would make to the solution.

        The posterior mean does not depend on s2, only the posterior sd does; stage 1 (the class features)
        keeps no sd, so its drift is the response alone (``with_s2=False``). Its s2 is poorly determined
        (the class features jump between phases, which the learned smoothing absorbs: lam ~ 0.01-0.3 px^2 on
        the phantom, where s2 and lam trade off), and its moves alone made over half of the tiles of a
        512 x 512 map re-solve the whole map without changing any result (see docs/measurements.md)."""
        if (p is None) != (q is None):
            return np.inf
        if p is None:
            return 0.0
        mu = np.linspace(0.0, 8.0, 129)
        g_new = 1.0 / (1.0 + p.eta + p.lam * mu)
        g_old = 1.0 / (1.0 + q[2] + q[1] * mu)
        response = float(np.max(np.abs(g_new - g_old)))
        return max(response, 0.5 * abs(np.log(p.s2 / q[0]))) if with_s2 else response

    @staticmethod
    def _flip_checkable(p: GmrfParams | None, q) -> bool:
        """Whether a stage-1 parameter change is judged by the labels it changes (see :meth:`_class_shift`)."""
        return (p is not None and q is not None and p.eta == 0.0 and q[2] == 0.0
                and max(p.lam, q[1]) <= FLIP_CHECK_MAX_LAM)

    def _class_shift(self, sample: np.ndarray, new: dict[str, GmrfParams]) -> np.ndarray:
        """Estimated change (n_sample, n_class) of the stage-1 smoothed class features at the sample pixels
        if they were smoothed with the ``new`` smoothing lengths instead of the current ones.

        The current field x solves (I + lam L) x = y, so the new one is x + d with
        (I + lam' L) d = (lam - lam') L x; d is taken as one Jacobi step from 0,
        d_i = (lam - lam') (L x)_i / (1 + lam' deg_i), which needs x at the sample pixels and their four
        neighbours only. The neglected coupling of d between neighbours is of relative size
        4 lam' / (1 + 4 lam') at most: the estimate is meant for short smoothing lengths (lam <= 0.5 px^2,
        FLIP_CHECK_MAX_LAM; the class features of the phantom have lam ~ 0.01-0.3 px^2; tested in
        tests/test_imaging_fast_kernels.py)."""
        flat, nb, inside = self._lat_flat[sample], self._lat_nb[:, sample], self._lat_in[:, sample]
        out = np.zeros((flat.size, len(self.config.class_features)))
        for j, n in enumerate(self.config.class_features):
            if n not in new:
                continue
            x, valid = self.class_smoothed[n].ravel(), self.valid(n).ravel()
            edge = inside & valid[nb] & valid[flat][None, :]
            lx = np.where(edge, x[flat][None, :] - x[nb], 0.0).sum(axis=0)
            deg = edge.sum(axis=0)
            lam_old, lam_new = self.gmrf_class[n].lam, new[n].lam
            out[:, j] = (lam_old - lam_new) * lx / (1.0 + lam_new * deg)
        return out

    def _lattice_counts(self, sample: np.ndarray) -> np.ndarray:
        """Neighbour label counts (K, n_sample) at the sample pixels only."""
        nb, inside = self._lat_nb[:, sample], self._lat_in[:, sample]
        lab = np.where(inside & self._class_valid.ravel()[nb], self.labels.ravel()[nb], -1)
        ks = np.arange(self.config.n_phases)[:, None, None]
        return (lab[None] == ks).sum(axis=1).astype(np.float64)

    def _sample_unary_current(self, sample: np.ndarray) -> np.ndarray:
        """Class log-likelihoods of the current phase model at the sample pixels (kept in ``unary``)."""
        return self.unary.reshape(self.unary.shape[0], -1)[:, self._lat_flat[sample]]

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
    def batch(cls, shape: tuple[int, int], config: MapConfig, values: dict[str, np.ndarray], *,
              share: bool = False, release_tile_state: bool = False) -> MapModel:
        """Solve a whole map from scratch from full-size per-pixel feature maps (the batch reference).

        For large maps (the results are the same): ``share`` keeps the given float64 maps as the model's data
        instead of copying them (8 bytes per pixel and map); the caller must not change them while the model
        is in use, and later tiles (``add_tile``) write into them. ``release_tile_state`` frees what only tile
        updates use (:meth:`release_tile_state`), the per-block powers as soon as the solve has learned from
        them, before the last stage's solves."""
        model = cls(shape, config, _solve_first=True)
        if share:
            kept: list[np.ndarray] = []
            for n in model.names:
                given = values.get(n)
                if type(given) is np.ndarray and given.dtype == np.float64 and given.shape == model.shape \
                        and given.flags.writeable and not any(given is k for k in kept):
                    model.raw[n] = given  # set_pixels below then copies it onto itself (no new memory)
                    kept.append(given)
        model.set_pixels(0, 0, values)
        model.solve_from_scratch(_release_block_powers=release_tile_state)
        if release_tile_state:
            model.release_tile_state()
        return model

    def solve_from_scratch(self, *, _release_block_powers: bool = False) -> None:
        """Learn everything and solve the whole map from a cold start (``_release_block_powers``: see
        :meth:`batch`)."""
        with single_blas_thread():
            self._global(cold=True, reason="cold start", release_block_powers=_release_block_powers)
        self.n_updates += 1

    def add_tile(self, y0: int, x0: int, values: dict[str, np.ndarray]) -> SolveLog:
        """Add (or replace) a tile of per-pixel features and update the solution incrementally."""
        with single_blas_thread():
            return self._add_tile(y0, x0, values)

    def _add_tile(self, y0: int, x0: int, values: dict[str, np.ndarray]) -> SolveLog:
        self._ensure_tile_state()
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
            return any(v > (label_tol if k in LABEL_DRIFTS else tol) for k, v in drift.items())

        # Hyperparameters are re-learned from all data so far; the solution keeps those of the last
        # whole-map solve (the snapshot) unless one of them would change it by more than the tolerance.
        # Stage 1 only feeds the labels, so a short smoothing length is judged by the labels it would change
        # (below, with the phase model); a longer one by the change of the smoother's response.
        class_new = {}
        for n, p in self._learn_class_gmrf().items():
            q = snap["gmrf_class"][n]
            if self._flip_checkable(p, q):
                class_new[n] = p
            else:
                drift[f"class_gmrf.{n}"] = self._param_drift(p, q, with_s2=False)
        if exceeded():
            return self._global_with(drift)
        # stage 1 on the tile + halo
        touched, iters = self._smooth_local(self.config.class_features, self.gmrf_class, self.class_smoothed,
                                            None, None, region, exact=True)
        # stage 2: labels on the touched window with the snapshot phase model and beta
        if self.phase_model is None:  # too few classified pixels so far: no labels yet
            return self._global_with(dict(drift, phase_model=np.inf))
        self._compute_unary(touched)
        cv = self.class_valid
        fresh = cv[region] & (self.labels[region] < 0)
        start = np.where(fresh, np.argmax(self.unary[(slice(None),) + region], axis=0), self.labels[region])
        self.labels[region] = np.where(cv[region], start, -1)
        new, icm_win = local_icm(self.unary, cv, self.labels, self.beta, touched)
        # labels change only inside the ICM window (and on the tile, from its start labels)
        moved = new != self.labels[icm_win]
        sub = self.labels[icm_win]
        sub[moved] = new[moved]
        self._hist_update(icm_win)
        self._relabel_blocks(icm_win)
        sample = self._sample()
        n_class = int(cv.sum())
        growth = (self.config.stable_refit_growth if self._quiet_refits >= self.config.stable_refits
                  else self.config.refit_growth)
        refit = not (n_class < (1 + growth) * self._n_class_fitted and self.phase_model is not None)
        if not refit:
            new_model = self.phase_model  # too little new data since the last fit to move it
        else:
            # cold, like the batch solve: a warm start could stay in another optimum of the mixture
            new_model = self._fit_phase_model(warm=False)
            self._n_class_fitted = n_class
        if new_model is None or self.phase_model is None:
            drift["phase_model"] = 0.0 if new_model is self.phase_model else np.inf
        else:
            u_old = self._sample_unary_current(sample)
            counts = self._lattice_counts(sample)
            drift["phase_model"] = 0.0 if new_model is self.phase_model else self._flip_fraction(
                u_old, self.beta, self._sample_unary(new_model, sample), self.beta, counts)
            if refit:
                self._quiet_refits = self._quiet_refits + 1 if drift["phase_model"] == 0.0 else 0
            drift["beta"] = self._flip_fraction(u_old, self.beta, u_old, self._beta_from_hist(), counts)
            if class_new:
                shifted = self.phase_model.log_likelihood(self._class_x(sample) + self._class_shift(sample, class_new))
                drift["class_gmrf"] = self._flip_fraction(u_old, self.beta, shifted, self.beta, counts)
        if exceeded():
            return self._global_with(drift)
        # stage 3 inputs changed on the tile (new data) and where labels changed (cut edges)
        touched = region
        changed = np.argwhere(moved)
        if changed.size:
            lo = changed.min(axis=0) + (icm_win[0].start, icm_win[1].start)
            hi = changed.max(axis=0) + (icm_win[0].start + 1, icm_win[1].start + 1)
            touched = _union(touched, (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1]))))
        # stage 3: label-aware GMRFs on the touched window
        for n, p in self._learn_map_gmrf().items():
            drift[f"gmrf.{n}"] = self._param_drift(p, snap["gmrf"][n])
        if exceeded():
            return self._global_with(drift)
        last, it3 = self._smooth_local(self.config.smooth, self.gmrf, self.smoothed, self.sd, self.labels, touched)
        self._refresh_probabilities(icm_win)
        self.log = SolveLog(kind="local", window=_box(_union(last, touched)), cg_iterations=iters + it3, refit=refit,
                            drift=drift)
        return self.log

    def _smooth_local(self, names, params: dict, out: dict, sd: dict | None, labels,
                      region: tuple[slice, slice], exact: bool = False) -> tuple[tuple[slice, slice], int]:
        """Window solves of the maps ``names`` (all at once, see :func:`.incremental.local_gmrf_many`);
        writes ``out`` (and ``sd``) in place. Returns the union of the windows and the CG iterations.

        ``exact``: solve to the whole-map solves' tolerance (``cg_rtol``, float64) instead of ``cg_field_tol``
        (float32). Stage 1 needs it: the phase model is fitted to the class features scaled by their spread,
        and a feature smoothed to nearly a constant (lam 1e5 px^2 on a noisy single-phase area) turns
        differences far below the noise into different mixtures (measured: a 96 x 96 phantom at noise
        0.75 in reversed tile order relabelled a whole single-phase area). Its smoothing lengths are
        short on maps with several phases, so its windows are small and converge in a few steps."""
        touched = region
        maps, which = [], []
        for n in names:
            p = params[n]
            v = self.valid(n)
            if p is None:
                out[n][region] = np.where(v[region], self.raw[n][region], np.nan)
                continue
            sd_noise = float(np.sqrt(p.s2))
            cut = labels is not None and n not in self.config.uncut
            maps.append(WindowMap(y=self.raw[n], valid=v, current=out[n], params=p, cut=cut,
                                  ring_tol=self.config.field_tol * sd_noise,
                                  stop=StopRule(rtol=self.config.cg_rtol) if exact else
                                  StopRule(rtol=None, field_tol=self.config.cg_field_tol * sd_noise)))
            which.append(n)
        if not maps:
            return touched, 0
        solved, iters = local_gmrf_many(maps, region, labels)
        for n, m, (x, win) in zip(which, maps, solved):
            out[n][win] = x
            touched = _union(touched, win)
            if sd is not None:
                self._refresh_sd(n, win, labels if m.cut else None, m.params)
        return touched, iters


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
        "quiet_refits": np.array(model._quiet_refits),
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
        model._quiet_refits = int(state.get("quiet_refits", 0))  # states written before it was kept: 0
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
    model._refresh_valid()
    model._update_blocks(FULL)
    model._hist_rebuild()
    model._compute_unary(FULL)
    if model.n_global > 0:
        model._snapshot = model._snapshot_now()
    return model
