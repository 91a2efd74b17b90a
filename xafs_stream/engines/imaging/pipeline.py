"""Stack in, maps out: per-pixel features of a whole stack, the MRF map model, and its statistics.

Shared by the batch path (``analyze_stack``, the CLI) and the tile path (the map accumulator in
``xafs_stream.analyses.imaging``), so that both compute the same features with the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .._threads import single_blas_thread
from ..errors import InputError
from .features import FEATURE_NAMES, pixel_features
from .lcf import refs_on_energy
from .mapmodel import MapConfig, MapModel
from .spatial import cross_correlation, domain_sizes, variogram

# pairs of maps whose correlation is reported (edge position vs thickness is the example)
CROSS_PAIRS = (("edge_position", "edge_step"), ("edge_position", "lcf_total"),
               ("whiteline_energy", "edge_position"), ("preedge_centroid", "edge_position"))
THICKNESS_MAPS = ("edge_step", "lcf_total")
# Pixels per feature block: one 64 x 64 tile. Its temporaries (3.3 MB each at 100 energies) stay a few
# dozen MB; larger blocks gained nothing (the kernels are vectorised over pixels), and 2048-pixel blocks
# were slower per tile (see docs/measurements.md).
CHUNK_PIXELS = 4096
SOFT_XRAY_EV = 2000.0  # below this and narrower than NARROW_EV a stack is an L2,3 (or M) window, not a K edge
NARROW_EV = 60.0


@dataclass
class ImagingSettings:
    """How a stack is turned into maps (all optional; defaults suit a K-edge XANES map).

    Attributes
    ----------
    refs : ndarray of shape (n_refs, n_e) on the stack energies, or None (no LCF)
    ref_names : names of the references
    lcf_background : "none", "constant" or "linear" (see :func:`.lcf.fit_lcf`)
    sum_to_one : constrain the weights to sum to one (stacks that are already normalised)
    normalize : keyword arguments for the ``pre_edge`` normalisation
    n_phases : phases of the map model (default: one per reference, plus one if ``background_phase``;
        3 without references)
    background_phase : add a phase "none" for pixels without the element (e.g. an empty substrate)
    class_features : features the phases are clustered on (default: the reference weights, or edge
        position and white-line energy without references)
    smooth : maps smoothed by the MRF (default: every feature map except noise/e0/pre-edge area)
    block_size : GMRF block size (px)
    whiteline_window_ev, preedge_window_ev : see :func:`.features.pixel_features`
    none_phase : with references, a phase "none" for pixels without a detectable element (from the LCF
        total and its error, :func:`.chemical_labels.presence`), fractions NaN there, and the chemical phases
        by the dominant reference of the other pixels (not by amounts) [True; False: the map model's
        mixture labels, ``background_phase`` for its own "none" component]
    edge_features : "on", "off" or "auto" (K-edge features everywhere except soft X-ray stacks, below
        2 keV and narrower than 60 eV, where one edge step with a post-edge line does not exist: an L2,3
        window; there they are "not applicable", not failed) ["auto"]
    """

    refs: np.ndarray | None = None
    ref_names: tuple[str, ...] = ()
    lcf_background: str = "linear"
    sum_to_one: bool = False
    normalize: dict = field(default_factory=dict)
    n_phases: int | None = None
    background_phase: bool = False
    class_features: tuple[str, ...] | None = None
    smooth: tuple[str, ...] | None = None
    block_size: int = 16
    whiteline_window_ev: float = 30.0
    preedge_window_ev: tuple[float, float] = (-16.0, -5.0)
    none_phase: bool = True
    edge_features: str = "auto"

    def __post_init__(self) -> None:
        if self.edge_features not in ("auto", "on", "off"):
            raise InputError(f"edge_features must be 'auto', 'on' or 'off', got {self.edge_features!r}")
        if not isinstance(self.none_phase, (bool, np.bool_)):
            raise InputError(f"none_phase must be true or false, got {self.none_phase!r}")
        if self.refs is not None:
            self.refs = np.asarray(self.refs, dtype=np.float64)
            if self.refs.ndim != 2:
                raise InputError(f"refs must have shape (n_refs, n_energies), got {self.refs.shape}")
            if not self.ref_names:
                self.ref_names = tuple(f"ref{i}" for i in range(self.refs.shape[0]))
            if len(self.ref_names) != self.refs.shape[0]:
                raise InputError(f"{len(self.ref_names)} reference names for {self.refs.shape[0]} references")
        self.ref_names = tuple(self.ref_names)

    def for_energy(self, energy: np.ndarray) -> "ImagingSettings":
        """These settings with ``edge_features`` decided for a stack's energies (eV)."""
        if self.edge_features != "auto":
            return self
        energy = np.asarray(energy, float)
        soft_l = energy.size > 0 and float(energy[-1]) < SOFT_XRAY_EV and float(np.ptp(energy)) < NARROW_EV
        return replace(self, edge_features="off" if soft_l else "on")

    @property
    def edge_features_on(self) -> bool:
        return self.edge_features != "off"

    @property
    def none_by_presence(self) -> bool:
        """Phase "none" from the LCF total and its error (references given and ``none_phase``)."""
        return self.refs is not None and bool(self.none_phase)

    @property
    def feature_names(self) -> tuple[str, ...]:
        names = list(FEATURE_NAMES)
        if self.refs is not None:
            names += ["lcf_total", "lcf_rms", "lcf_total_err"] + [f"fraction.{n}" for n in self.ref_names] \
                + [f"weight.{n}" for n in self.ref_names]
        return tuple(names)

    def map_config(self) -> MapConfig:
        """The MapConfig these settings imply."""
        edge = ("edge_step", "edge_position", "whiteline_energy", "whiteline_height", "preedge_centroid") \
            if self.edge_features_on else ()
        if self.none_by_presence:
            # the final labels come from .chemical_labels ("none" is not a mixture phase); the map model keeps
            # its mixture over the weights (its own labels, and the Gaussian-MRF weights the final labels read)
            weights = tuple(f"weight.{n}" for n in self.ref_names)
            fracs = weights
            classes = self.class_features or weights
            n_ref = len(self.ref_names)
            pure = classes == weights and self.n_phases in (None, n_ref) and n_ref > 1
            # lcf_total_err rides along so that the label uncertainty of "none" pixels uses each pixel's own
            # error of its total (the same one that decided it has no element)
            smooth = self.smooth or (weights + ("lcf_total", "lcf_total_err") + edge)
            unknown = [n for n in tuple(classes) + tuple(smooth) if n not in self.feature_names]
            if unknown:
                raise InputError(f"unknown feature names {unknown}; available: {list(self.feature_names)}")
            return MapConfig(class_features=tuple(classes), n_phases=int(self.n_phases or n_ref),
                             smooth=tuple(smooth), uncut=THICKNESS_MAPS,
                             phase_order_by=tuple(range(n_ref)) if classes == fracs else None,
                             phase_init="pure" if pure else "kmeans", components_per_phase=1,
                             block_size=self.block_size)
        if self.refs is not None:
            weights = tuple(f"weight.{n}" for n in self.ref_names)
            classes = self.class_features or weights
            n_ref = len(self.ref_names)
            default_k = n_ref + int(self.background_phase)
            pure = classes == weights and (self.n_phases in (None, default_k)) and n_ref > 1
            init = ("pure+background" if self.background_phase else "pure") if pure else "kmeans"
            order = tuple(range(n_ref)) if classes == weights else None
            smooth = self.smooth or (weights + ("lcf_total",) + edge)
        else:
            classes = self.class_features or ("edge_position", "whiteline_energy")
            default_k, init, order = 3, "kmeans", None
            smooth = self.smooth or edge
        unknown = [n for n in tuple(classes) + tuple(smooth) if n not in self.feature_names]
        if unknown:
            raise InputError(f"unknown feature names {unknown}; available: {list(self.feature_names)}")
        # With empty pixels present a phase's pixels spread along a ray from zero weight (thickness), which
        # three Gaussians follow better than one (STXM Fe L-edge stack: the Fe2+-rich areas at low Fe content
        # were otherwise absorbed by the other classes); without empty pixels one per phase was best (phantom:
        # 97.6-98.1 % labels correct with one, 94.8-97.9 % with two or three).
        comps = 3 if init == "pure+background" else 1
        return MapConfig(class_features=tuple(classes), n_phases=int(self.n_phases or default_k),
                         smooth=tuple(smooth), uncut=THICKNESS_MAPS, phase_order_by=order, phase_init=init,
                         components_per_phase=comps, block_size=self.block_size)

    @property
    def phase_names(self) -> tuple[str, ...]:
        """Label k -> name: the reference a phase is richest in (and "none"), else phase0, phase1, ..."""
        config = self.map_config()
        names = [f"phase{i}" for i in range(config.n_phases)]
        if self.none_by_presence:
            if config.phase_order_by is not None:
                names[: len(self.ref_names)] = self.ref_names
            return (*names, "none")
        if config.phase_init != "kmeans":
            names[: len(self.ref_names)] = self.ref_names
            if self.background_phase:
                names[-1] = "none"
        return tuple(names)


def check_stack(energy: np.ndarray, stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a stack (n_e, ny, nx) with its energies (n_e,) eV; returns float64 energy and the stack."""
    energy = np.asarray(energy, dtype=np.float64)
    stack = np.asarray(stack)
    if energy.ndim != 1 or energy.size < 5:
        raise InputError(f"energy must be 1-D with at least 5 points, got shape {energy.shape}")
    if not np.all(np.isfinite(energy)) or not np.all(np.diff(energy) > 0):
        raise InputError("energy must be finite and strictly increasing")
    if stack.ndim != 3:
        raise InputError(f"stack must have shape (n_energies, ny, nx), got {stack.shape}")
    if stack.shape[0] != energy.size:
        raise InputError(
            f"stack has {stack.shape[0]} energies (shape {stack.shape}) but {energy.size} energies were given"
        )
    if not np.issubdtype(stack.dtype, np.number):
        raise InputError(f"stack must be numeric, got dtype {stack.dtype}")
    return energy, stack


def refs_from_spectra(spectra: dict[str, tuple[np.ndarray, np.ndarray]], energy: np.ndarray) -> tuple[
        tuple[str, ...], np.ndarray]:
    """Reference spectra given as name -> (energy, mu) on the stack energies (InputError outside their range)."""
    names = tuple(spectra)
    rows = [refs_on_energy(e, m, energy, name=f"reference {n!r}") for n, (e, m) in spectra.items()]
    return names, np.vstack(rows) if rows else np.zeros((0, energy.size))


def stack_features(energy: np.ndarray, stack: np.ndarray, settings: ImagingSettings,
                   rows_per_chunk: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Per-pixel feature maps of a stack (n_e, ny, nx): name -> (ny, nx), plus counts of masked pixels.

    Works through the stack in row blocks (about ``CHUNK_PIXELS`` pixels at a time) so that the float64
    temporaries (a few copies of the block per feature) stay small next to a large float32 stack.
    """
    energy, stack = check_stack(energy, stack)
    n_e, ny, nx = stack.shape
    if settings.refs is not None and settings.refs.shape[1] != n_e:
        raise InputError(f"refs have {settings.refs.shape[1]} energies, the stack {n_e}")
    rows = rows_per_chunk or max(1, CHUNK_PIXELS // max(nx, 1))
    out = {n: np.full((ny, nx), np.nan) for n in settings.feature_names}
    reasons: dict[str, int] = {}
    for y0 in range(0, ny, rows):
        block = stack[:, y0:y0 + rows, :]
        h = block.shape[1]
        # pixels as C-contiguous rows (the features work along each spectrum), converted in the same copy
        spectra = np.empty((h * nx, n_e))
        np.copyto(spectra.reshape(h, nx, n_e), block.transpose(1, 2, 0))
        with single_blas_thread():  # ~3x faster on the shared 2 cores (see docs/measurements.md)
            f = pixel_features(
                energy, spectra, refs=settings.refs, ref_names=settings.ref_names or None,
                lcf_background=settings.lcf_background, sum_to_one=settings.sum_to_one,
                normalize=settings.normalize, whiteline_window_ev=settings.whiteline_window_ev,
                preedge_window_ev=settings.preedge_window_ev,
                edge_features=settings.for_energy(energy).edge_features_on,
            )
        for n in settings.feature_names:
            out[n][y0:y0 + h] = f.values[n].reshape(h, nx)
        for k, v in f.reasons.items():
            reasons[k] = reasons.get(k, 0) + v
    return out, reasons


@dataclass
class MapResult:
    """A solved map.

    Attributes
    ----------
    raw : per-pixel feature maps, name -> (ny, nx)
    model : the solved MapModel (labels, smoothed maps, sd, learned parameters)
    labels, label_uncertainty : (ny, nx) final labels (with "none") and their uncertainty (:func:`final_labels`)
    phase_names : names of the phases (label k -> phase_names[k])
    fractions : name -> (ny, nx), MRF fraction maps (clipped smoothed weights, normalised), with references
    statistics : flat dict of numbers (see :func:`map_statistics`)
    reasons : counts of masked pixels by reason
    """

    raw: dict[str, np.ndarray]
    model: MapModel
    phase_names: tuple[str, ...]
    labels: np.ndarray
    label_uncertainty: np.ndarray
    fractions: dict[str, np.ndarray]
    statistics: dict[str, float]
    reasons: dict[str, int]


def _presence(model: MapModel, settings: ImagingSettings):
    from .chemical_labels import presence

    return presence(model.raw["lcf_total"], model.raw["lcf_total_err"])


def absent_pixels(model: MapModel, settings: ImagingSettings) -> np.ndarray:
    """(ny, nx) bool: measured pixels without a detectable element (:func:`.chemical_labels.presence`); all
    False unless ``settings.none_by_presence``."""
    if not settings.none_by_presence:
        return np.zeros(model.shape, bool)
    present, _, _ = _presence(model, settings)
    return np.isfinite(model.raw["lcf_total"]) & ~present


def final_labels(model: MapModel, settings: ImagingSettings) -> tuple[np.ndarray, np.ndarray]:
    """Labels and their uncertainty (1 - the label's probability).

    With ``settings.none_by_presence``: phase "none" (index ``len(ref_names)``) where the element is absent
    (:func:`.chemical_labels.presence`) and the chemical phases by the dominant reference
    (:func:`.chemical_labels.chemical_labels`); the uncertainty of a "none" pixel is the probability that
    the element is there after all. Otherwise the map model's own labels.
    """
    from .chemical_labels import chemical_labels

    if not settings.none_by_presence:
        return model.labels.copy(), 1.0 - model.prob_max
    present, p_none, _ = _presence(model, settings)
    names = [f"weight.{n}" for n in settings.ref_names]
    if all(n in model.smoothed and model.gmrf.get(n) is not None for n in names):
        # the Gaussian-MRF weights and their posterior sd (when the GMRF was learned for every weight map);
        # the stack is made in the call so that chemical_labels can drop it once used (large maps)
        labels, unc, _ = chemical_labels(np.stack([model.smoothed[n] for n in names]), present,
                                         [model.sd[n] for n in names])
    else:
        labels, unc, _ = chemical_labels(np.stack([model.raw[n] for n in names]), present, None)
    absent = np.isfinite(model.raw["lcf_total"]) & ~present
    labels[absent] = len(settings.ref_names)
    unc[absent] = 1.0 - p_none[absent]
    return labels, unc


def fraction_maps(model: MapModel, settings: ImagingSettings, labels: np.ndarray | None = None
                  ) -> dict[str, np.ndarray]:
    """MRF fraction maps: non-negative part of the smoothed reference weights, normalised to sum 1.

    Pixels of the background phase (no element) are NaN. ``labels``: the :func:`final_labels` already
    computed for this model (saves solving the presence MRF again).
    """
    if settings.refs is None:
        return {}
    names = [f"weight.{n}" for n in settings.ref_names]
    source = [model.smoothed[n] if n in model.smoothed else model.raw[n] for n in names]
    w = np.clip(np.stack(source), 0, None)
    total = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(total > 0, w / total, np.nan)
    if settings.none_by_presence:
        # the final labels already hold the presence decision (a Potts solve): reuse them when given
        absent = absent_pixels(model, settings) if labels is None else labels == len(settings.ref_names)
        frac[:, absent] = np.nan
    elif settings.background_phase:
        frac[:, model.labels == model.config.n_phases - 1] = np.nan
    return {n: frac[i] for i, n in enumerate(settings.ref_names)}


def map_statistics(model: MapModel, settings: ImagingSettings, *, max_lag: int = 32,
                   labels: np.ndarray | None = None) -> dict[str, float]:
    """Flat statistics of a solved map.

    Keys: ``label_fraction.<phase>``, ``domain.n``, ``domain.mean_area_px``, ``domain.median_area_px``,
    ``domain.area_weighted_px``, ``domain.diameter_px``, ``beta``, per smoothed map ``corr_length.<map>`` (px,
    from the raw map's variogram with the GMRF's learned noise variance as nugget), ``noise_sd.<map>`` and
    ``smoothing_px.<map>`` (learned), and ``xcorr.<a>__<b>`` (Pearson, on the smoothed maps).
    """
    stats: dict[str, float] = {}
    names = settings.phase_names
    lab = final_labels(model, settings)[0] if labels is None else labels
    n_lab = max(int((lab >= 0).sum()), 1)
    for k, name in enumerate(names):
        stats[f"label_fraction.{name}"] = float((lab == k).sum() / n_lab)
    dom = domain_sizes(lab)
    stats.update({"domain.n": float(dom.n_domains), "domain.mean_area_px": dom.mean_area,
                  "domain.median_area_px": dom.median_area, "domain.area_weighted_px": dom.area_weighted_mean,
                  "domain.diameter_px": dom.equivalent_diameter, "beta": float(model.beta)})
    for n in model.config.smooth:
        p = model.gmrf[n]
        valid = model.valid(n)
        if p is not None:
            stats[f"noise_sd.{n}"] = float(np.sqrt(p.s2))
            stats[f"smoothing_px.{n}"] = p.smoothing_length_px
        if valid.sum() >= 16:
            v = variogram(model.raw[n], valid, max_lag=max_lag, nugget=None if p is None else p.s2)
            stats[f"corr_length.{n}"] = v.correlation_length
    for a, b in CROSS_PAIRS:
        if a in model.smoothed and b in model.smoothed:
            stats[f"xcorr.{a}__{b}"] = cross_correlation(model.smoothed[a], model.smoothed[b])
    return stats


def analyze_stack(energy: np.ndarray, stack: np.ndarray, settings: ImagingSettings | None = None, *,
                  mask: np.ndarray | None = None, fft_workers: int = 1) -> MapResult:
    """Features, MRF labels and smoothed maps, and statistics of a whole stack (batch).

    Parameters
    ----------
    energy : ndarray of shape (n_e,), eV
    stack : ndarray of shape (n_e, ny, nx), absorption (optical density); NaN pixels are masked
    settings : ImagingSettings (default: no references)
    mask : optional (ny, nx) bool, pixels to use (others are treated as not measured)
    fft_workers : threads of the map model's transforms (see :func:`solve_maps`)
    """
    settings = (settings or ImagingSettings()).for_energy(energy)
    raw, reasons = stack_features(energy, stack, settings)
    return solve_maps(raw, reasons, settings, mask=mask, fft_workers=fft_workers)


def solve_maps(raw: dict[str, np.ndarray], reasons: dict[str, int], settings: ImagingSettings, *,
               mask: np.ndarray | None = None, fft_workers: int = 1) -> MapResult:
    """The MRF map model, final labels, fractions and statistics from per-pixel feature maps (the second half
    of :func:`analyze_stack`; the maps may come from :func:`stack_features` or from tiles computed
    elsewhere). ``settings`` must already be decided for the stack's energies (``for_energy``); ``raw`` is
    modified in place where ``mask`` is False.

    ``fft_workers``: threads for the transforms (the GMRF preconditioner, the variogram), for a batch job
    that has the machine to itself (the results are the same bit for bit: each thread does whole 1-D
    transforms); the live service keeps 1."""
    from scipy.fft import set_workers

    with set_workers(max(1, int(fft_workers))):
        return _solve_maps(raw, reasons, settings, mask)


def _solve_maps(raw: dict[str, np.ndarray], reasons: dict[str, int], settings: ImagingSettings,
                mask: np.ndarray | None) -> MapResult:
    ny, nx = next(iter(raw.values())).shape
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != (ny, nx):
            raise InputError(f"mask has shape {mask.shape}, the stack's images {(ny, nx)}")
        for n in raw:
            raw[n][~mask] = np.nan
    config = settings.map_config()
    names = dict.fromkeys(config.class_features + config.smooth)
    # on a large map every 8 bytes per pixel count (docs/measurements.md): the model keeps raw's arrays as its
    # data (they are the result's raw maps too), and frees what only tile updates use once it is done with it
    model = MapModel.batch((ny, nx), config, {n: raw[n] for n in names}, share=True, release_tile_state=True)
    labels, unc = final_labels(model, settings)
    return MapResult(raw=raw, model=model, phase_names=settings.phase_names, labels=labels, label_uncertainty=unc,
                     fractions=fraction_maps(model, settings, labels),
                     statistics=map_statistics(model, settings, labels=labels),
                     reasons=reasons)
