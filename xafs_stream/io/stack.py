"""Read XANES image stacks (energy, y, x) with their energies: NPZ, HDF5, TIFF and the STXM ``.hdr``/``.xim`` format.

Every reader returns an :class:`ImageStack` holding *absorption* (optical density, ln(I0/I), for transmission
stacks). A stack of transmitted intensities is converted when the incident intensity I0 is known (an ``i0``
array in the file or the ``i0=`` argument); without I0 it is refused rather than guessed. Pixels whose
intensity is not positive become NaN (masked downstream, counted in ``metadata["n_nonpositive"]``).

File layouts
------------
NPZ : ``energy`` (n_e,) eV, ``stack`` (n_e, ny, nx); optional ``i0`` (n_e,) (then ``stack`` is intensity),
    ``stack_kind`` ("intensity" or "absorption"), ``mask`` (ny, nx) bool, and reference spectra on the same
    energies as ``ref_<name>`` (n_e,).
HDF5 : the same names as datasets (also ``exchange/data`` + ``exchange/energy``, the Data Exchange layout);
    references in a group ``refs``.
TIFF : a multi-page stack; energies from ``energies=`` or a sidecar text file ``<stem>.energies.txt`` /
    ``<stem>.txt`` (one energy per line, or energy in the first column).
STXM : ``<stem>.hdr`` (its ``StackAxis`` lists the energies) beside ``<stem>_a000.xim`` ... (one whitespace
    separated image per energy, transmitted counts), as written by ALS/aXis2000-style STXM software.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engines.errors import InputError
from .spectrum_file import read_spectrum

STACK_SUFFIXES = (".npz", ".h5", ".hdf5", ".nxs", ".tif", ".tiff", ".hdr")


@dataclass
class ImageStack:
    """A XANES image stack.

    Attributes
    ----------
    energy : ndarray of shape (n_e,), eV, strictly increasing
    stack : ndarray of shape (n_e, ny, nx), absorption (optical density for transmission); NaN = no data
    i0 : ndarray of shape (n_e,) or None, the incident intensity used for the conversion (if any)
    refs : reference spectra stored with the stack, name -> ndarray of shape (n_e,) on ``energy``
    mask : ndarray of shape (ny, nx) bool or None, a region mask stored with the stack (True = selected)
    pixel_size_um : pixel size in µm if known
    metadata : flat dict (source format, conversions made)
    path : where it came from
    """

    energy: np.ndarray
    stack: np.ndarray
    i0: np.ndarray | None = None
    refs: dict[str, np.ndarray] = field(default_factory=dict)
    mask: np.ndarray | None = None
    pixel_size_um: float | None = None
    metadata: dict = field(default_factory=dict)
    path: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.stack.shape[1]), int(self.stack.shape[2]))


def _as_energy(values, what: str) -> np.ndarray:
    energy = np.asarray(values, dtype=float).ravel()
    if energy.size < 2:
        raise InputError(f"{what}: need at least 2 energies, got {energy.size}")
    if not np.all(np.isfinite(energy)):
        raise InputError(f"{what}: energies contain NaN or inf")
    if not np.all(np.diff(energy) > 0):
        raise InputError(f"{what}: energies must be strictly increasing")
    return energy


def _to_absorption(stack: np.ndarray, i0: np.ndarray, what: str) -> tuple[np.ndarray, int]:
    """OD = ln(I0 / I) per energy; non-positive intensities become NaN (returned count)."""
    i0 = np.asarray(i0, dtype=float).ravel()
    if i0.shape[0] != stack.shape[0]:
        raise InputError(f"{what}: i0 has {i0.shape[0]} values but the stack has {stack.shape[0]} energies")
    if not np.all(np.isfinite(i0)) or np.any(i0 <= 0):
        raise InputError(f"{what}: i0 must be positive and finite at every energy")
    intensity = np.asarray(stack, dtype=np.float64)
    bad = ~(intensity > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        od = np.log(i0[:, None, None] / np.where(bad, 1.0, intensity))
    od[bad] = np.nan
    return od, int(bad.sum())


def _finish(
    energy: np.ndarray,
    data: np.ndarray,
    *,
    what: str,
    kind: str,
    i0: np.ndarray | None,
    refs: dict[str, np.ndarray],
    mask: np.ndarray | None,
    metadata: dict,
    path: Path,
    pixel_size_um: float | None = None,
) -> ImageStack:
    data = np.asarray(data)
    if data.ndim != 3:
        raise InputError(f"{what}: stack must have 3 dimensions (energy, y, x), got shape {data.shape}")
    if data.shape[0] != energy.shape[0]:
        raise InputError(
            f"{what}: {energy.shape[0]} energies but the stack has {data.shape[0]} images "
            f"(shape {data.shape}; the energy axis must come first)"
        )
    if kind not in ("intensity", "absorption"):
        raise InputError(f"{what}: stack_kind must be 'intensity' or 'absorption', got {kind!r}")
    metadata = dict(metadata)
    if callable(i0):
        i0 = i0(energy)
    if kind == "intensity":
        if i0 is None:
            raise InputError(
                f"{what}: the stack holds transmitted intensities; give the incident intensity (i0) to convert "
                "it to optical density"
            )
        stack, n_bad = _to_absorption(data, i0, what)
        metadata["converted"] = "OD = ln(I0/I)"
        metadata["n_nonpositive"] = n_bad
    else:
        stack = np.asarray(data, dtype=np.float64)
    for name, spec in refs.items():
        if np.asarray(spec).shape != energy.shape:
            raise InputError(f"{what}: reference {name!r} has shape {np.shape(spec)}, expected {energy.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != stack.shape[1:]:
            raise InputError(f"{what}: mask has shape {mask.shape}, expected {stack.shape[1:]}")
    return ImageStack(
        energy=energy, stack=stack, i0=None if i0 is None else np.asarray(i0, float).ravel(),
        refs={k: np.asarray(v, float) for k, v in refs.items()}, mask=mask, pixel_size_um=pixel_size_um,
        metadata=metadata, path=str(path),
    )


def _read_npz(path: Path, i0, energies) -> ImageStack:
    what = f"stack file {path.name}"
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{what}: not a readable NPZ file ({exc})") from None
    with archive as npz:
        keys = set(npz.files)
        if "stack" not in keys:
            raise InputError(f"{what}: no 'stack' array (has {sorted(keys)})")
        if energies is None and "energy" not in keys:
            raise InputError(f"{what}: no 'energy' array (has {sorted(keys)}); give the energies explicitly")
        energy = _as_energy(npz["energy"] if energies is None else energies, what)
        data = npz["stack"]
        file_i0 = npz["i0"] if "i0" in keys else None
        kind = str(npz["stack_kind"]) if "stack_kind" in keys else ("intensity" if file_i0 is not None else None)
        refs = {k[4:]: npz[k] for k in sorted(keys) if k.startswith("ref_") and k != "ref_energy"}
        mask = npz["mask"] if "mask" in keys else None
        meta = json.loads(str(npz["metadata"])) if "metadata" in keys else {}
        pixel = float(npz["pixel_size_um"]) if "pixel_size_um" in keys else None
    use_i0 = i0 if i0 is not None else file_i0
    if kind is None:
        kind = "intensity" if use_i0 is not None else "absorption"
    meta["format"] = "npz"
    return _finish(energy, data, what=what, kind=kind, i0=use_i0, refs=refs, mask=mask, metadata=meta,
                   path=path, pixel_size_um=pixel)


def _first(h5, names: Sequence[str]):
    for name in names:
        if name in h5:
            return h5[name]
    return None


def _read_hdf5(path: Path, i0, energies) -> ImageStack:
    import h5py

    what = f"stack file {path.name}"
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{what}: not a readable HDF5 file ({exc})") from None
    with h5:
        dset = _first(h5, ("stack", "data", "exchange/data"))
        if dset is None:
            raise InputError(f"{what}: no 'stack', 'data' or 'exchange/data' dataset (has {sorted(h5)})")
        edset = _first(h5, ("energy", "energies", "exchange/energy"))
        if energies is None and edset is None:
            raise InputError(f"{what}: no 'energy' dataset; give the energies explicitly")
        energy = _as_energy(edset[()] if energies is None else energies, what)
        data = dset[()]
        file_i0 = h5["i0"][()] if "i0" in h5 else None
        kind = h5["stack_kind"][()] if "stack_kind" in h5 else dset.attrs.get("stack_kind")
        kind = kind.decode() if isinstance(kind, bytes) else (str(kind) if kind is not None else None)
        refs = {}
        if "refs" in h5:
            refs = {name: h5["refs"][name][()] for name in h5["refs"]}
        mask = h5["mask"][()] if "mask" in h5 else None
    use_i0 = i0 if i0 is not None else file_i0
    if kind is None:
        kind = "intensity" if use_i0 is not None else "absorption"
    return _finish(energy, data, what=what, kind=kind, i0=use_i0, refs=refs, mask=mask,
                   metadata={"format": "hdf5"}, path=path)


def _read_energy_list(path: Path) -> np.ndarray:
    try:
        table = np.loadtxt(path, comments="#", ndmin=2)
    except ValueError as exc:
        raise InputError(f"energy file {path.name}: not numeric columns ({exc})") from None
    return _as_energy(table[:, 0], f"energy file {path.name}")


def _read_tiff(path: Path, i0, energies) -> ImageStack:
    import tifffile

    what = f"stack file {path.name}"
    try:
        data = tifffile.imread(path)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise InputError(f"{what}: not a readable TIFF stack ({exc})") from None
    if energies is None:
        for candidate in (path.with_suffix(".energies.txt"), path.with_suffix(".txt")):
            if candidate.is_file():
                energies = _read_energy_list(candidate)
                break
        else:
            raise InputError(
                f"{what}: TIFF stacks carry no energies; give them (a text file, one per line) or put "
                f"{path.with_suffix('.energies.txt').name} beside the stack"
            )
    energy = _as_energy(energies, what)
    kind = "intensity" if i0 is not None else "absorption"
    return _finish(energy, data, what=what, kind=kind, i0=i0, refs={}, mask=None, metadata={"format": "tiff"},
                   path=path)


_NUMBER = r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?"


def _axis_points(text: str, axis: str) -> np.ndarray | None:
    m = re.search(axis + r"\s*=\s*\{[^}]*?Points\s*=\s*\(([^)]*)\)", text, flags=re.DOTALL)
    if not m:
        return None
    values = np.array([float(v) for v in re.findall(_NUMBER, m.group(1))])
    n = int(values[0])
    if values.size != n + 1:
        raise InputError(f"STXM header: {axis} says {n} points but lists {values.size - 1}")
    return values[1:]


def parse_stxm_header(path: str | Path) -> dict:
    """Energies (eV) and pixel positions (µm) from an STXM ``.hdr`` file.

    Returns a dict with ``energy`` (n_e,), ``x_um`` (nx,) and ``y_um`` (ny,) arrays (positions may be None).
    """
    path = Path(path)
    text = path.read_text(errors="replace")
    energy = _axis_points(text, "StackAxis")
    if energy is None:
        raise InputError(f"STXM header {path.name}: no StackAxis with energy points (not an image stack?)")
    return {
        "energy": _as_energy(energy, f"STXM header {path.name}"),
        "x_um": _axis_points(text, "PAxis"),
        "y_um": _axis_points(text, "QAxis"),
    }


def read_stxm_intensity(path: str | Path) -> tuple[dict, np.ndarray]:
    """The header and the raw transmitted-intensity images of an STXM stack, shape (n_e, ny, nx)."""
    path = Path(path)
    header = parse_stxm_header(path)
    n_e = header["energy"].size
    images = []
    for index in range(n_e):
        xim = path.with_name(f"{path.stem}_a{index:03d}.xim")
        if not xim.is_file():
            raise InputError(f"STXM stack {path.name}: image {xim.name} (energy index {index}) is missing")
        try:
            images.append(np.loadtxt(xim, ndmin=2))
        except ValueError as exc:
            raise InputError(f"STXM image {xim.name}: not a numeric array ({exc})") from None
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise InputError(f"STXM stack {path.name}: images differ in shape {sorted(shapes)}")
    return header, np.stack(images)


def _read_stxm(path: Path, i0, energies) -> ImageStack:
    header, data = read_stxm_intensity(path)
    energy = header["energy"] if energies is None else _as_energy(energies, f"STXM stack {path.name}")
    pixel = None
    if header["x_um"] is not None and header["x_um"].size > 1:
        pixel = float(np.median(np.diff(header["x_um"])))
    return _finish(energy, data, what=f"STXM stack {path.name}", kind="intensity", i0=i0, refs={}, mask=None,
                   metadata={"format": "stxm"}, path=path, pixel_size_um=pixel)


def _on_grid(e_src: np.ndarray, y_src: np.ndarray, energy: np.ndarray, what: str, tol_ev: float = 1e-3):
    order = np.argsort(e_src)
    e_src, y_src = np.asarray(e_src, float)[order], np.asarray(y_src, float)[order]
    if energy[0] < e_src[0] - tol_ev or energy[-1] > e_src[-1] + tol_ev:
        raise InputError(
            f"{what}: covers {e_src[0]:.2f}-{e_src[-1]:.2f} eV but the stack needs {energy[0]:.2f}-{energy[-1]:.2f} eV"
        )
    if e_src.shape == energy.shape and np.allclose(e_src, energy, atol=tol_ev, rtol=0):
        return y_src.copy()
    return np.interp(energy, e_src, y_src)


def stack_sources(i0: str | Path | np.ndarray | None, energies: str | Path | np.ndarray | None
                  ) -> tuple[Any, np.ndarray | None]:
    """The ``i0`` and ``energies`` arguments of a stack reader, read and checked: I0 as an array (n_e,) or, for
    a spectrum file, a function of the stack's energies (interpolated onto them); energies as an array (from
    a text file or values), or None (the file's own)."""
    if isinstance(energies, (str, Path)):
        energies = _read_energy_list(Path(energies))
    elif energies is not None:
        energies = _as_energy(energies, "energies")
    if isinstance(i0, (str, Path)):
        spec = read_spectrum(i0)
        name = Path(i0).name

        def i0_source(grid: np.ndarray) -> np.ndarray:
            return _on_grid(spec.energy, spec.mu, grid, f"i0 file {name}")

        return i0_source, energies
    return (None if i0 is None else np.asarray(i0, float).ravel()), energies


def read_stack(
    path: str | Path,
    *,
    i0: str | Path | np.ndarray | None = None,
    energies: str | Path | np.ndarray | None = None,
) -> ImageStack:
    """Read an image stack file (format from its suffix) as absorption with its energies.

    Parameters
    ----------
    path : .npz, .h5/.hdf5/.nxs, .tif/.tiff or STXM .hdr
    i0 : incident intensity (array of shape (n_e,) or a spectrum file); needed for intensity stacks
        (STXM ``.xim`` images always are), overrides an ``i0`` stored in the file
    energies : energies in eV (array or text file); overrides the file's own

    Raises
    ------
    InputError : unknown format, missing energies or I0, energies not matching the stack
    FileNotFoundError : no such file
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no stack file {str(path)!r}")
    i0_source, energies = stack_sources(i0, energies)
    suffix = path.suffix.lower()
    readers = {".npz": _read_npz, ".h5": _read_hdf5, ".hdf5": _read_hdf5, ".nxs": _read_hdf5,
               ".tif": _read_tiff, ".tiff": _read_tiff, ".hdr": _read_stxm}
    if suffix not in readers:
        raise InputError(f"stack file {path.name}: unknown format {suffix!r}; expected one of {STACK_SUFFIXES}")
    try:
        return readers[suffix](path, i0_source, energies)
    except InputError:
        raise
    except Exception as exc:  # truncated, binary or foreign content: whatever numpy/h5py/tifffile raise
        message = " ".join(str(exc).split())[:200]
        raise InputError(f"stack file {path.name}: not a readable {suffix[1:].upper()} stack "
                         f"({type(exc).__name__}: {message})") from None


def read_reference_spectra(
    paths: Sequence[str | Path], energy: np.ndarray, *, mu_column: str | None = None
) -> tuple[list[str], np.ndarray]:
    """Reference spectra from files (via :func:`read_spectrum`) on the stack energies.

    Returns names (file stems) and an array of shape (n_refs, n_e). A reference that does not cover the
    stack's energy range raises :class:`InputError` naming the file (no extrapolation).
    """
    energy = _as_energy(energy, "stack energies")
    names, rows = [], []
    for p in paths:
        p = Path(p)
        spec = read_spectrum(p, mu_column=mu_column)
        rows.append(_on_grid(spec.energy, spec.mu, energy, f"reference {p.name}"))
        names.append(p.stem)
    if len(set(names)) != len(names):
        names = [f"{n}_{i}" for i, n in enumerate(names)]
    return names, np.vstack(rows) if rows else np.zeros((0, energy.size))
