"""Sample models for the simulated beamline, backed by real measured spectra.

A :class:`SampleModel` gives the absorption μt(E) (dimensionless, absorption lengths) of a sample at any
energy: the measured μ(E) of a real sample (``xafs_stream/data/spectra``) interpolated and rescaled so
that its edge step equals ``edge_step`` absorption lengths. Beyond the measured range the pre-edge line
and the last post-edge slope are extended linearly.

Metal foils are energy-calibrated as beamlines do: shifted so that the maximum of dμ/dE sits at the
tabulated edge (the measured files are off by +1.5 eV for Cu and -1.0 eV for Fe). Compounds keep their
measured energies (their chemical shift is real).

The rescaling estimates the measured edge step crudely (median of μ minus the pre-edge line over
E0+30..E0+300 eV); it only sets a scale, it is not an analysis result.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import xraydb

from ..data import SPECTRA_DIR
from ..io import read_spectrum

# name -> (file, element, edge, is_metal_foil); the element/edge come from the sample, not the file header.
SAMPLE_LIBRARY: dict[str, tuple[str, str, str, bool]] = {
    "Cu": ("cu_metal_rt.xdi", "Cu", "K", True),
    "Fe": ("fe_metal_rt.xdi", "Fe", "K", True),
    "Fe2O3": ("fe2o3_rt1.xmu", "Fe", "K", False),
    "FeO": ("feo_rt1.xdi", "Fe", "K", False),
    "ZnSe": ("zn_znse_rt.xdi", "Zn", "K", False),
}
# Reference foil placed after the sample (same element, metal) for energy calibration.
REFERENCE_FOIL = {"Cu": "Cu", "Fe": "Fe", "Zn": None}


@dataclass(frozen=True)
class SampleModel:
    """Absorption model of one sample (a library name, or any μ(E) file: :meth:`from_file`).

    Attributes
    ----------
    name : library name ("Cu", "Fe2O3", ...)
    element, edge : absorbing element and edge ("Cu", "K")
    e0 : tabulated edge energy, eV (xraydb)
    energy : measured grid, eV
    mut : μt on that grid (absorption lengths), pre-edge offset ``pre_edge_mut`` at the first point
    """

    name: str
    element: str
    edge: str
    e0: float
    energy: np.ndarray
    mut: np.ndarray

    @property
    def energy_range(self) -> tuple[float, float]:
        return float(self.energy[0]), float(self.energy[-1])

    def mu_t(self, energy_ev: float | np.ndarray) -> np.ndarray:
        """μt at ``energy_ev`` (eV), linearly extrapolated outside the measured range."""
        e = np.asarray(energy_ev, float)
        inside = np.interp(e, self.energy, self.mut)
        lo_slope = (self.mut[5] - self.mut[0]) / (self.energy[5] - self.energy[0])
        hi_slope = (self.mut[-1] - self.mut[-6]) / (self.energy[-1] - self.energy[-6])
        below = self.mut[0] + lo_slope * (e - self.energy[0])
        above = self.mut[-1] + hi_slope * (e - self.energy[-1])
        return np.where(e < self.energy[0], below, np.where(e > self.energy[-1], above, inside))

    def edge_part(self, energy_ev: float | np.ndarray) -> np.ndarray:
        """μt of the absorbing element's edge alone (pre-edge line removed): what fluorescence sees."""
        e = np.asarray(energy_ev, float)
        pre = self._pre_line()
        return np.clip(self.mu_t(e) - (pre[0] + pre[1] * e), 0.0, None)

    @classmethod
    def from_file(cls, path: str | Path, element: str | None = None, edge: str | None = None,
                  **kwargs) -> "SampleModel":
        """Any measured μ(E) file as a sample (see :func:`sample_from_file`)."""
        return sample_from_file(path, element, edge, **kwargs)

    def _pre_line(self) -> tuple[float, float]:
        sel = self.energy < self.e0 - 30
        if sel.sum() < 2:
            sel = np.arange(len(self.energy)) < 3
        slope, intercept = np.polyfit(self.energy[sel], self.mut[sel], 1)
        return float(intercept), float(slope)


def edge_energy(element: str, edge: str = "K") -> float:
    """Tabulated edge energy (eV) from xraydb; ``ValueError`` naming the element if unknown."""
    try:
        return float(xraydb.xray_edge(element, edge).energy)
    except Exception as exc:  # xraydb raises several types for unknown symbols/edges
        raise ValueError(f"unknown element/edge {element!r} {edge!r}: {exc}") from None


def _derivative_max(energy: np.ndarray, mu: np.ndarray, near_ev: float, window_ev: float = 30.0) -> float:
    """Energy (eV) of the steepest rise of μ within ``window_ev`` of ``near_ev`` (0.1 eV grid, 0.5 eV smoothing)."""
    from scipy.ndimage import gaussian_filter1d

    grid = np.arange(near_ev - window_ev, near_ev + window_ev, 0.1)
    smooth = gaussian_filter1d(np.interp(grid, energy, mu), 5)
    return float(grid[np.argmax(np.gradient(smooth, grid))])


@lru_cache(maxsize=16)
def load_sample(name: str, edge_step: float = 1.0, pre_edge_mut: float = 0.3) -> SampleModel:
    """The library sample ``name`` scaled to ``edge_step`` absorption lengths, or a spectrum file given by
    its path (see :func:`sample_from_file`; the file must name its element, as XDI does).

    ``KeyError`` names the known samples when ``name`` is neither in :data:`SAMPLE_LIBRARY` nor a file.
    """
    if name not in SAMPLE_LIBRARY:
        if Path(name).is_file():
            return sample_from_file(name, edge_step=edge_step, pre_edge_mut=pre_edge_mut)
        raise KeyError(f"unknown sample {name!r}; known samples: {sorted(SAMPLE_LIBRARY)}, or a spectrum file")
    filename, element, edge, is_foil = SAMPLE_LIBRARY[name]
    spec = read_spectrum(SPECTRA_DIR / filename)
    return _model(name, spec.energy, spec.mu, element, edge, is_foil, edge_step, pre_edge_mut)


def sample_from_file(path: str | Path, element: str | None = None, edge: str | None = None, *,
                     edge_step: float = 1.0, pre_edge_mut: float = 0.3, is_foil: bool = False,
                     mu_column: str | None = None) -> SampleModel:
    """Any measured μ(E) file as a simulated sample (``make_beamline(sample="path/to/file.xdi")``).

    ``element``/``edge`` default to the file's XDI ``Element.symbol``/``Element.edge``; ValueError when
    neither says. ``is_foil`` aligns the edge to the tabulated E0 (for metal foils). ``mu_column``: which
    column of a file with several spectra (e.g. a reference library), by its label."""
    path = Path(path)
    spec = read_spectrum(path, mu_column=mu_column or None)
    element = element or spec.element
    edge = edge or spec.edge or "K"
    if not element:
        raise ValueError(f"{path}: the file does not name its element (no XDI Element.symbol); give "
                         f"sample_from_file(path, element=..., edge=...)")
    name = f"{path.name}:{mu_column}" if mu_column else path.name
    return _model(name, spec.energy, spec.mu, element, edge, is_foil, edge_step, pre_edge_mut)


def _model(name: str, energy: np.ndarray, mu: np.ndarray, element: str, edge: str, is_foil: bool,
           edge_step: float, pre_edge_mut: float) -> SampleModel:
    if not edge_step > 0:
        raise ValueError(f"edge_step must be > 0 absorption lengths, got {edge_step}")
    order = np.argsort(energy)
    energy, mu = np.asarray(energy)[order], np.asarray(mu)[order]
    keep = np.concatenate([[True], np.diff(energy) > 0]) & np.isfinite(mu)
    energy, mu = energy[keep], mu[keep]
    e0 = edge_energy(element, edge)
    if is_foil:
        energy = energy + (e0 - _derivative_max(energy, mu, e0))
    pre = energy < e0 - 30
    slope, intercept = np.polyfit(energy[pre], mu[pre], 1) if pre.sum() >= 2 else (0.0, mu[0])
    post = (energy > e0 + 30) & (energy < e0 + 300)
    if post.sum() >= 3:
        step_measured = float(np.median(mu[post] - (intercept + slope * energy[post])))
    else:
        step_measured = float(np.ptp(mu))
    scale = edge_step / step_measured
    mut = (mu - mu[0]) * scale + pre_edge_mut
    return SampleModel(name=name, element=element, edge=edge, e0=e0, energy=energy, mut=mut)
