"""A μ-XANES mesostructure phantom with known ground truth.

The sample is a 2-D field of domains (a Voronoi tessellation), each dominated by one of 2-3 Fe phases whose
normalised XANES come from real reference spectra (``xafs_stream/data/xanes_refs/FeLibNov2021.nor``).
Inside a domain the dominant fraction varies smoothly (a low-frequency gradient); the rest of the material
is the domain's secondary phase. A smooth thickness map scales the absorption. Everything needed to judge
an analysis (labels, fractions, thickness and the values used to generate them) is kept on the object.

Pure numpy/scipy: no ophyd here; :mod:`xafs_stream.simulated_devices.mapping` turns a phantom into devices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..data import XANES_REFS_DIR
from ..io import read_spectrum

REFERENCE_FILE = XANES_REFS_DIR / "FeLibNov2021.nor"
# Fe2+ and Fe3+ end members first: the cleanest pair in the library (same structure family).
DEFAULT_PHASES = ("LiFe(II)PO4", "Fe(III)PO4", "Magnetite")


@lru_cache(maxsize=4)
def _reference_table(phases: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    energy = None
    spectra = []
    for name in phases:
        spec = read_spectrum(REFERENCE_FILE, mu_column=name)
        energy = spec.energy
        spectra.append(spec.mu)
    return np.asarray(energy), np.vstack(spectra)


def reference_spectra(phases: tuple[str, ...] = DEFAULT_PHASES, energy: np.ndarray | None = None) -> np.ndarray:
    """Normalised XANES of ``phases`` on ``energy`` (eV), shape (n_phases, n_energy).

    Energies outside the library grid (7090-7199.7 eV) raise ``ValueError``.
    """
    grid, table = _reference_table(tuple(phases))
    if energy is None:
        return table.copy()
    energy = np.asarray(energy, float)
    if energy.min() < grid[0] or energy.max() > grid[-1]:
        raise ValueError(
            f"phantom energies {energy.min():.1f}-{energy.max():.1f} eV outside the reference grid "
            f"{grid[0]:.1f}-{grid[-1]:.1f} eV"
        )
    return np.vstack([np.interp(energy, grid, row) for row in table])


def default_map_energies(n: int = 100) -> np.ndarray:
    """``n`` energies (eV) over the Fe K-edge XANES: dense through the edge, sparser pre/post edge."""
    if n < 10:
        raise ValueError(f"need at least 10 map energies, got {n}")
    n_pre, n_post = n // 5, n // 5
    pre = np.linspace(7092.0, 7108.0, n_pre, endpoint=False)
    edge = np.linspace(7108.0, 7140.0, n - n_pre - n_post, endpoint=False)
    post = np.linspace(7140.0, 7190.0, n_post)
    return np.concatenate([pre, edge, post])


@dataclass
class Phantom:
    """Ground truth of a simulated μ-XANES sample.

    Attributes
    ----------
    energy : ndarray (n_e,), eV
    phases : names of the reference phases
    refs : ndarray (n_phases, n_e), normalised XANES of each phase on ``energy``
    labels : ndarray (ny, nx) int, the dominant phase of each pixel
    fractions : ndarray (n_phases, ny, nx), phase fractions (sum to 1 per pixel)
    thickness : ndarray (ny, nx), edge step in absorption lengths (μt units)
    domain_id : ndarray (ny, nx) int, which domain a pixel belongs to
    generating : dict of the values used to build it (for hyperparameter checks)
    """

    energy: np.ndarray
    phases: tuple[str, ...]
    refs: np.ndarray
    labels: np.ndarray
    fractions: np.ndarray
    thickness: np.ndarray
    domain_id: np.ndarray
    pre_edge_slope: float = -2.0e-4
    pre_edge_offset: float = 0.15
    generating: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.labels.shape)  # type: ignore[return-value]

    def normalized_stack(self) -> np.ndarray:
        """Noise-free normalised μ(E) per pixel, shape (n_e, ny, nx)."""
        return np.einsum("pe,pyx->eyx", self.refs, self.fractions)

    def absorption_stack(self) -> np.ndarray:
        """Noise-free μt per pixel and energy, shape (n_e, ny, nx): a sloped pre-edge plus thickness × XANES."""
        e0 = self.energy[0]
        background = self.pre_edge_offset + self.pre_edge_slope * (self.energy - e0)
        return self.thickness[None] * (background[:, None, None] + self.normalized_stack())

    def absorption_at(self, energy_ev: float, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """μt of a region at one energy (eV), interpolating the references (for a detector readout)."""
        refs = np.array([np.interp(energy_ev, self.energy, r) for r in self.refs])
        mix = np.tensordot(refs, self.fractions[:, rows, cols], axes=1)
        background = self.pre_edge_offset + self.pre_edge_slope * (energy_ev - self.energy[0])
        return self.thickness[rows, cols] * (background + mix)


def _smooth_field(shape: tuple[int, int], length_px: float, rng: np.random.Generator) -> np.ndarray:
    """A zero-mean, unit-variance Gaussian random field with correlation length ~``length_px`` pixels."""
    noise = rng.standard_normal(shape)
    field_ = ndimage.gaussian_filter(noise, sigma=length_px, mode="wrap")
    return (field_ - field_.mean()) / (field_.std() + 1e-12)


def make_phantom(
    shape: tuple[int, int] = (64, 64),
    *,
    n_phases: int = 3,
    n_domains: int = 12,
    energy: np.ndarray | None = None,
    phases: tuple[str, ...] | None = None,
    thickness_mean: float = 1.0,
    thickness_variation: float = 0.2,
    gradient_amplitude: float = 0.15,
    gradient_length_px: float = 8.0,
    seed: int = 0,
) -> Phantom:
    """Build a mesostructure phantom.

    Parameters
    ----------
    shape : (ny, nx) pixels
    n_phases : 2 or 3 phases (taken from ``phases`` or the defaults)
    n_domains : number of Voronoi domains
    energy : map energies in eV (default :func:`default_map_energies`)
    thickness_mean, thickness_variation : edge step (μt) and its relative smooth variation
    gradient_amplitude : how far the dominant fraction falls below 1 inside a domain (smoothly)
    gradient_length_px : correlation length of the gradient and thickness fields, pixels
    seed : random seed (the phantom is a pure function of its arguments)
    """
    ny, nx = (int(v) for v in shape)
    if ny < 2 or nx < 2:
        raise ValueError(f"phantom shape must be at least 2x2, got {shape}")
    if n_phases not in (2, 3):
        raise ValueError(f"n_phases must be 2 or 3, got {n_phases}")
    if n_domains < n_phases:
        raise ValueError(f"n_domains ({n_domains}) must be >= n_phases ({n_phases})")
    if not 0 <= gradient_amplitude < 0.5:
        raise ValueError(f"gradient_amplitude must be in [0, 0.5), got {gradient_amplitude}")
    phases = tuple(phases or DEFAULT_PHASES[:n_phases])
    if len(phases) != n_phases:
        raise ValueError(f"need {n_phases} phase names, got {phases}")
    energy = default_map_energies() if energy is None else np.asarray(energy, float)
    refs = reference_spectra(phases, energy)
    rng = np.random.default_rng(seed)

    seeds = rng.uniform([0, 0], [ny, nx], size=(n_domains, 2))
    # nearest seed per pixel with a k-d tree: the full (n_domains, ny, nx) distance array took ~10 GB of
    # memory for a 1000 x 1000 phantom with 625 domains (measured)
    yy, xx = np.mgrid[0:ny, 0:nx]
    _, nearest = cKDTree(seeds).query(np.column_stack([yy.ravel(), xx.ravel()]).astype(float))
    domain_id = nearest.reshape(ny, nx).astype(np.int64)
    # Every phase dominates at least one domain; the rest at random.
    dominant = np.concatenate([np.arange(n_phases), rng.integers(0, n_phases, n_domains - n_phases)])
    rng.shuffle(dominant)
    secondary = (dominant + rng.integers(1, n_phases, n_domains)) % n_phases
    labels = dominant[domain_id]

    gradient = _smooth_field((ny, nx), gradient_length_px, rng)
    # dominant fraction in (1 - 2*amplitude, 1], smooth inside each domain
    dominant_fraction = 1.0 - gradient_amplitude * (1.0 + np.tanh(gradient))
    fractions = np.zeros((n_phases, ny, nx))
    np.put_along_axis(fractions, labels[None], dominant_fraction[None], axis=0)
    sec = secondary[domain_id]
    np.put_along_axis(fractions, sec[None], (1.0 - dominant_fraction)[None], axis=0)

    thickness = thickness_mean * (1.0 + thickness_variation * _smooth_field((ny, nx), gradient_length_px, rng))
    thickness = np.clip(thickness, 0.05 * thickness_mean, None)
    generating = {
        "n_domains": n_domains,
        "gradient_amplitude": gradient_amplitude,
        "gradient_length_px": gradient_length_px,
        "thickness_mean": thickness_mean,
        "thickness_variation": thickness_variation,
        "seed": seed,
    }
    return Phantom(
        energy=energy, phases=phases, refs=refs, labels=labels, fractions=fractions,
        thickness=thickness, domain_id=domain_id, generating=generating,
    )
