"""μ-XANES map analyses for the service: per-tile features (stateless) and the per-map accumulator.

``imaging.features`` (unit kind "tile") turns one tile's stack into per-pixel feature maps. The map itself is
owned by exactly one :class:`MapAccumulator` per run (the worker that owns the run's map; another worker takes
over with ``MapAccumulator.from_state``): it adds tiles in any order, is idempotent for re-sent tiles, and
returns the full current maps after every tile: feature maps, MRF-smoothed maps and their posterior sd,
fraction maps, phase labels and their uncertainty, a PNG per map, a quick-look PNG and flat statistics.

Configuration (the analysis' section of the service configuration, a plain dict; all keys optional):
``refs`` ("phantom" for the simulated beamline's default phases, a list of spectrum files, or a dict name ->
file), ``none_phase`` (bool, default true: phase "none" where the element is absent, phases by the dominant
reference), ``edge_features`` ("auto"/"on"/"off"), ``background_phase`` (bool), ``n_phases``, ``lcf_background`` ("none" / "constant" / "linear"),
``sum_to_one``, ``normalize`` (pre_edge keywords), ``class_features``, ``smooth`` (feature names),
``block_size``, ``stats_every`` (tiles between statistics updates on large maps), ``png_max_px``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..core import TILE, WorkUnit
from ..engines.errors import InputError
from ..engines.imaging.mapmodel import MapModel, model_from_state, model_to_state
from ..engines.imaging.pipeline import (
    ImagingSettings,
    final_labels,
    fraction_maps,
    map_statistics,
    refs_from_spectra,
    stack_features,
)
from ..engines.imaging.verdict import judge_map, judge_pixels
from .registry import AnalysisResult, register

VERSION = "1"
YX = ("y", "x")
_CONFIG_KEYS = {"refs", "none_phase", "edge_features", "background_phase", "n_phases", "lcf_background", "sum_to_one", "normalize",
                "class_features", "smooth", "block_size", "whiteline_window_ev", "preedge_window_ev",
                "stats_every", "png_max_px"}


# --------------------------------------------------------------------------------------------- settings


def _load_refs(spec: Any, energy: np.ndarray) -> tuple[tuple[str, ...], np.ndarray] | None:
    if spec is None or spec == [] or spec == {}:
        return None
    if isinstance(spec, str) and spec == "phantom":
        from ..simulated_devices.phantom import DEFAULT_PHASES, reference_spectra

        try:
            return tuple(DEFAULT_PHASES), reference_spectra(DEFAULT_PHASES, energy)
        except ValueError as exc:
            raise InputError(f"refs 'phantom': {exc}") from None
    from ..io import read_spectrum

    if isinstance(spec, (str, Path)):
        spec = [spec]
    items = spec.items() if isinstance(spec, Mapping) else ((Path(p).stem, p) for p in spec)
    spectra = {}
    for name, path in items:
        s = read_spectrum(path)
        spectra[str(name)] = (s.energy, s.mu)
    return refs_from_spectra(spectra, energy)


def settings_from_config(config: Mapping[str, Any], energy: np.ndarray) -> ImagingSettings:
    """ImagingSettings from the analysis configuration dict (unknown keys raise InputError)."""
    config = dict(config or {})
    unknown = set(config) - _CONFIG_KEYS
    if unknown:
        raise InputError(f"imaging config: unknown keys {sorted(unknown)}; known: {sorted(_CONFIG_KEYS)}")
    refs = _load_refs(config.get("refs"), np.asarray(energy, float))
    kw: dict[str, Any] = {}
    if refs is not None:
        kw["ref_names"], kw["refs"] = refs
    for key in ("background_phase", "n_phases", "lcf_background", "sum_to_one", "normalize", "block_size",
                "whiteline_window_ev", "none_phase", "edge_features"):
        if key in config:
            kw[key] = config[key]
    for key in ("class_features", "smooth", "preedge_window_ev"):
        if key in config and config[key] is not None:
            kw[key] = tuple(config[key])
    try:
        settings = ImagingSettings(**kw).for_energy(np.asarray(energy, float))
        settings.map_config()
    except TypeError as exc:
        raise InputError(f"imaging config: {exc}") from None
    return settings


def _tile_stack(unit: WorkUnit) -> tuple[np.ndarray, np.ndarray]:
    try:
        energy = np.asarray(unit.arrays["energy"], float)
        stack = np.asarray(unit.arrays["stack"])
    except KeyError as exc:
        raise InputError(f"tile unit {unit.unit_id}: missing array {exc}") from None
    return energy, stack


# --------------------------------------------------------------------------------------------- per tile


@register("imaging.features", TILE, VERSION, description="Per-pixel XANES features and LCF of one map tile",
          settings=_CONFIG_KEYS)
def tile_features(unit: WorkUnit, upstream: Mapping[str, AnalysisResult], config: Mapping[str, Any]) -> AnalysisResult:
    """Per-pixel features of one tile: arrays ``feature.<name>`` (dims y, x) and a flat summary.

    NaN pixels and flat (e.g. all-zero) spectra are masked, not errors; a tile with no usable pixel is
    reported with ``imaging.tile.n_usable`` = 0.
    """
    energy, stack = _tile_stack(unit)
    settings = settings_from_config(config, energy)
    values, reasons = stack_features(energy, stack, settings)
    n_pix = stack.shape[1] * stack.shape[2]
    usable = np.isfinite(values["noise"])
    summary: dict[str, float | int | str | bool | None] = {
        "imaging.tile.n_pixels": int(n_pix),
        "imaging.tile.n_usable": int(usable.sum()),
        "imaging.tile.n_masked_nan": int(reasons.get("nan", 0)),
        "imaging.tile.n_masked_flat": int(reasons.get("flat", 0)),
        "imaging.tile.n_not_normalized": int(reasons.get("normalisation", 0)),
    }
    for key in ("y0", "x0", "tile_row", "tile_col"):
        if key in unit.metadata:
            summary[f"imaging.tile.{key}"] = unit.metadata[key]
    for name in ("edge_step", "edge_position", "whiteline_energy", "lcf_total") + tuple(
            f"fraction.{n}" for n in settings.ref_names):
        if name in values:
            v = values[name][np.isfinite(values[name])]
            summary[f"imaging.tile.median.{name}"] = float(np.median(v)) if v.size else None
    arrays = {f"feature.{n}": v for n, v in values.items()}
    no_edge = int(reasons.get("flat", 0)) + int(reasons.get("normalisation", 0))
    verdict = judge_pixels(int(n_pix) - int(reasons.get("nan", 0)), no_edge, values.get("lcf_rms"))
    return AnalysisResult(arrays=arrays, dims={k: YX for k in arrays}, summary=summary,
                          params=_params(settings), diagnostics={"masked": reasons},
                          verdict=verdict.level, verdict_reasons=verdict.reasons)


def _params(settings: ImagingSettings) -> dict[str, Any]:
    return {"refs": list(settings.ref_names), "lcf_background": settings.lcf_background,
            "sum_to_one": settings.sum_to_one, "normalize": dict(settings.normalize),
            "background_phase": settings.background_phase, "map_config": json.loads(settings.map_config().to_json())}


# --------------------------------------------------------------------------------------------- rendering


def _downsample(a: np.ndarray, max_px: int) -> np.ndarray:
    step = max(1, int(np.ceil(max(a.shape) / max_px)))
    return a[::step, ::step]


def render_png(values: np.ndarray, *, cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None,
               max_px: int = 256) -> np.ndarray:
    """A map as PNG bytes (uint8 array), NaN transparent, at most ``max_px`` pixels on a side."""
    import matplotlib.image as mpimg
    from matplotlib import colormaps

    rgba = _rgba(_downsample(np.asarray(values, float), max_px), cmap, vmin, vmax, colormaps)
    buf = io.BytesIO()
    mpimg.imsave(buf, rgba, format="png")
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def _rgba(a: np.ndarray, cmap: str, vmin, vmax, colormaps) -> np.ndarray:
    finite = np.isfinite(a)
    lo = vmin if vmin is not None else (float(np.nanpercentile(a, 1)) if finite.any() else 0.0)
    hi = vmax if vmax is not None else (float(np.nanpercentile(a, 99)) if finite.any() else 1.0)
    scaled = np.clip((np.nan_to_num(a, nan=lo) - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgba = colormaps[cmap](scaled)
    rgba[~finite] = 0.0
    return (rgba * 255).astype(np.uint8)


def quicklook_png(panels: list[tuple[np.ndarray, str, float | None, float | None]], max_px: int = 256) -> np.ndarray:
    """Several maps side by side (no axes) as one PNG: labels, a fraction, thickness, uncertainty."""
    import matplotlib.image as mpimg
    from matplotlib import colormaps

    tiles = [_rgba(_downsample(np.asarray(a, float), max_px), cmap, lo, hi, colormaps) for a, cmap, lo, hi in panels]
    h = max(t.shape[0] for t in tiles)
    gap = np.zeros((h, 4, 4), np.uint8)
    row = []
    for t in tiles:
        pad = np.zeros((h, t.shape[1], 4), np.uint8)
        pad[: t.shape[0]] = t
        row += [pad, gap]
    buf = io.BytesIO()
    mpimg.imsave(buf, np.concatenate(row[:-1], axis=1), format="png")
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


# --------------------------------------------------------------------------------------------- accumulator


class MapAccumulator:
    """The live maps of one run, owned by one worker; tiles arrive in any order (re-sent tiles are fine).

    Parameters
    ----------
    map_shape : (ny, nx) pixels of the whole map
    energy : ndarray of shape (n_e,), eV, the map energies (every tile must use them)
    config : the analysis configuration (see the module doc)
    """

    def __init__(self, map_shape: tuple[int, int], energy: np.ndarray, config: Mapping[str, Any] | None = None,
                 *, _model: MapModel | None = None) -> None:
        self.energy = np.asarray(energy, dtype=np.float64)
        if self.energy.ndim != 1 or self.energy.size < 5 or not np.all(np.diff(self.energy) > 0):
            raise InputError("energy must be 1-D, strictly increasing, with at least 5 points")
        self.config = dict(config or {})
        self.settings = settings_from_config(self.config, self.energy)
        self.stats_every = int(self.config.get("stats_every", 8))
        self.png_max_px = int(self.config.get("png_max_px", 256))
        ny, nx = (int(v) for v in map_shape)
        self.model = _model or MapModel((ny, nx), self.settings.map_config())
        self.tiles: dict[tuple[int, int], tuple[int, int]] = {}
        self._stats: dict[str, float] = {}
        self._stats_at = -1
        self._last_reasons: dict[str, int] = {}
        self._png_capacity = 0  # bytes: the packed PNGs' expected size when the map is full (never shrinks)

    @property
    def shape(self) -> tuple[int, int]:
        return self.model.shape

    # ------------------------------------------------------------------------------------- updates

    def _values_from(self, tile) -> dict[str, np.ndarray]:
        if isinstance(tile, AnalysisResult):
            try:
                return {n: np.asarray(tile.arrays[f"feature.{n}"], float) for n in self.model.names}
            except KeyError as exc:
                raise InputError(f"tile result lacks feature array {exc} (computed with other settings?)") from None
        stack = np.asarray(tile)
        if stack.ndim != 3 or stack.shape[0] != self.energy.size:
            raise InputError(
                f"tile stack must have shape ({self.energy.size}, ty, tx) for the map's {self.energy.size} "
                f"energies, got {stack.shape}"
            )
        values, reasons = stack_features(self.energy, stack, self.settings)
        self._last_reasons = reasons
        return {n: values[n] for n in self.model.names}

    def add_tile(self, y0: int, x0: int, tile: AnalysisResult | np.ndarray) -> AnalysisResult:
        """Add (or replace) the tile at pixel offset (y0, x0) and return the full current maps.

        ``tile`` is the result of ``imaging.features`` for that tile, or its stack (n_e, ty, tx).
        """
        y0, x0 = int(y0), int(x0)
        values = self._values_from(tile)
        shape = next(iter(values.values())).shape
        if len(shape) != 2 or y0 < 0 or x0 < 0 or y0 + shape[0] > self.shape[0] or x0 + shape[1] > self.shape[1]:
            raise InputError(f"tile at ({y0}, {x0}) of shape {shape} lies outside the map {self.shape}")
        log = self.model.add_tile(y0, x0, values)
        self.tiles[(y0, x0)] = tuple(int(v) for v in shape)
        n = len(self.tiles)
        # the final labels (two Potts solves with references) once per tile, for the statistics and the result
        labels = final_labels(self.model, self.settings)
        if n != self._stats_at and (self.model.shape[0] * self.model.shape[1] <= 256 * 256
                                    or n % self.stats_every == 0 or self.coverage >= 1.0 or n <= 2):
            self._stats = map_statistics(self.model, self.settings, labels=labels[0])
            self._stats_at = n
        return self.result(update=log.kind, labels=labels)

    @property
    def coverage(self) -> float:
        return float(self.model.observed.mean())

    # ------------------------------------------------------------------------------------- output

    def result(self, update: str = "", labels: tuple[np.ndarray, np.ndarray] | None = None) -> AnalysisResult:
        """The full current maps as an AnalysisResult (arrays with dims, flat summary, PNGs). ``labels``: the
        model's :func:`final_labels` (labels, uncertainty) if already computed for its current state."""
        m = self.model
        labels, uncertainty = final_labels(m, self.settings) if labels is None else labels
        arrays: dict[str, np.ndarray] = {"labels": labels, "label_uncertainty": uncertainty,
                                         "observed": m.observed.copy()}
        for n in m.names:
            arrays[f"raw.{n}"] = m.raw[n].copy()
        for n in m.config.smooth:
            arrays[f"smoothed.{n}"] = m.smoothed[n].copy()
            arrays[f"sd.{n}"] = m.sd[n].copy()
        fractions = fraction_maps(m, self.settings, labels)
        for n, f in fractions.items():
            arrays[f"fraction.{n}"] = f
        dims: dict[str, tuple[str, ...]] = {k: YX for k in arrays}
        pngs = self._pngs(arrays, fractions)
        for k, v in pngs.items():
            arrays[k] = v
            dims[k] = ("byte",)
        self._png_capacity = max(self._png_capacity, self._expected_png_bytes(pngs))
        summary: dict[str, float | int | str | bool | None] = {
            "imaging.n_tiles_done": len(self.tiles),
            "imaging.coverage": self.coverage,
            "imaging.n_updates": int(m.n_updates),
            "imaging.n_global_solves": int(m.n_global),
            "imaging.update": update,
            "imaging.stats_n_tiles": self._stats_at,
        }
        for k, v in self._stats.items():
            summary[f"imaging.{k}"] = None if not np.isfinite(v) else float(v)
        for n, p in m.gmrf.items():
            if p is not None:
                summary[f"imaging.gmrf.{n}.s2"] = p.s2
                summary[f"imaging.gmrf.{n}.lam"] = p.lam
        verdict = judge_map(m)
        return AnalysisResult(
            verdict=verdict.level, verdict_reasons=verdict.reasons,
            arrays=arrays, dims=dims, summary=summary,
            params={**_params(self.settings), "phase_names": list(self.settings.phase_names)},
            blob_capacity=self._png_capacity,
            diagnostics={"last_update": {"kind": m.log.kind, "reason": m.log.reason, "window": m.log.window,
                                         "cg_iterations": m.log.cg_iterations},
                         "masked_last_tile": self._last_reasons},
        )

    def _expected_png_bytes(self, pngs: dict[str, np.ndarray]) -> int:
        """The PNGs' size when the map is full, for the store to reserve (bytes): twice their size now over the
        covered fraction (at least 1/16), at most their uncompressed RGBA size. A PNG of a part-filled map
        compresses better, so its stored node would otherwise grow, and be replaced instead of rewritten in
        place (9-11 requests instead of 5), every few tiles."""
        content = 4 * len(pngs) + sum(int(v.size) for v in pngs.values())
        ny, nx = _downsample(np.empty(self.shape, np.uint8), self.png_max_px).shape  # the PNGs' pixels
        panels = 4  # the quick-look PNG's panels, side by side
        bound = (len(pngs) - 1 + panels) * (4 * ny * nx + 1024)
        return int(min(2 * content / max(self.coverage, 1 / 16), bound))

    def _pngs(self, arrays: dict[str, np.ndarray], fractions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        labels = np.where(arrays["labels"] >= 0, arrays["labels"], np.nan)
        out = {"png.labels": render_png(labels, cmap="tab10", vmin=0, vmax=9, max_px=self.png_max_px),
               "png.label_uncertainty": render_png(arrays["label_uncertainty"], cmap="magma", vmin=0, vmax=1,
                                                   max_px=self.png_max_px)}
        for n in self.model.config.smooth:
            out[f"png.smoothed.{n}"] = render_png(self.model.smoothed[n], max_px=self.png_max_px)
        for n, f in fractions.items():
            out[f"png.fraction.{n}"] = render_png(f, cmap="coolwarm", vmin=0, vmax=1, max_px=self.png_max_px)
        panels = [(labels, "tab10", 0, 9)]
        if fractions:
            panels.append((next(iter(fractions.values())), "coolwarm", 0, 1))
        thick = "lcf_total" if "lcf_total" in self.model.smoothed else "edge_step"
        if thick in self.model.smoothed:
            panels.append((self.model.smoothed[thick], "viridis", None, None))
        panels.append((arrays["label_uncertainty"], "magma", 0, 1))
        out["quicklook_png"] = quicklook_png(panels, self.png_max_px)
        return out

    # ------------------------------------------------------------------------------------- state

    def to_state(self) -> dict[str, np.ndarray]:
        """Plain arrays from which another worker can continue the map (see :meth:`from_state`)."""
        state = {f"model.{k}": v for k, v in model_to_state(self.model).items()}
        state["energy"] = self.energy.copy()
        state["config"] = np.array(json.dumps(self.config))
        tiles = np.array([[y, x, h, w] for (y, x), (h, w) in sorted(self.tiles.items())], dtype=np.int64)
        state["tiles"] = tiles.reshape(-1, 4)
        state["stats_at"] = np.array(self._stats_at)
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> MapAccumulator:
        """Continue a map from :meth:`to_state` (e.g. after the owning worker crashed)."""
        try:
            energy = np.asarray(state["energy"], float)
            config = json.loads(str(state["config"]))
            tiles = np.asarray(state["tiles"], np.int64).reshape(-1, 4)
        except (KeyError, ValueError) as exc:
            raise InputError(f"map state: missing or bad entry ({exc})") from None
        model = model_from_state({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
        acc = cls(model.shape, energy, config, _model=model)
        if acc.settings.map_config() != model.config:
            raise InputError("map state: its model configuration does not match its analysis configuration")
        acc.tiles = {(int(y), int(x)): (int(h), int(w)) for y, x, h, w in tiles}
        acc._stats = map_statistics(model, acc.settings) if acc.tiles else {}
        acc._stats_at = int(state.get("stats_at", len(acc.tiles)))
        return acc
