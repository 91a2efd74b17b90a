"""Read an image stack tile by tile from disk (HDF5 or zarr), for stacks larger than memory.

:func:`open_stack_tiles` reads only the small parts of a stack file (energies, I0, references, mask, the
array's shape) and returns a :class:`StackTiles`: a picklable description (path and dataset name, no open
file handle) whose :meth:`StackTiles.read` opens the file and reads one (n_e, h, w) tile as absorption, the
same conversion :func:`~xafs_stream.io.stack.read_stack` makes for the whole stack. A Dask task can receive it
and read its own tile, so no process ever holds the whole stack.

Layouts: the HDF5 names of :mod:`xafs_stream.io.stack` (``stack``/``data``/``exchange/data``, ``energy``...,
optional ``i0``, ``stack_kind``, ``mask``, group ``refs``); a zarr group (directory ``*.zarr``) with the same
array names (``stack`` (n_e, ny, nx), ``energy``, optional ``i0``, ``mask``, ``refs/<name>``, attribute
``stack_kind``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engines.errors import InputError
from .stack import _as_energy, _to_absorption, stack_sources

TILED_SUFFIXES = (".h5", ".hdf5", ".nxs", ".zarr")
_STACK_NAMES = ("stack", "data", "exchange/data")
_ENERGY_NAMES = ("energy", "energies", "exchange/energy")


@dataclass(frozen=True)
class StackTiles:
    """A stack on disk, read one tile at a time.

    Attributes
    ----------
    path : the HDF5 file or zarr directory
    dataset : name of the (n_e, ny, nx) array in it
    energy : ndarray (n_e,), eV
    shape : (n_e, ny, nx)
    kind : "absorption" or "intensity" (then ``i0`` converts each tile to OD = ln(I0/I))
    i0 : ndarray (n_e,) or None
    refs : reference spectra stored with the stack, name -> (n_e,)
    mask : (ny, nx) bool or None
    dtype : the stored dtype (its item size sizes the tiles)
    """

    path: str
    dataset: str
    energy: np.ndarray
    shape: tuple[int, int, int]
    kind: str
    i0: np.ndarray | None = None
    refs: dict[str, np.ndarray] = field(default_factory=dict)
    mask: np.ndarray | None = None
    dtype: str = "float32"

    @property
    def nbytes(self) -> int:
        """Size of the stored stack in bytes."""
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def tiles(self, tile: int) -> list[tuple[int, int, int, int]]:
        """(y0, y1, x0, x1) of the tiles of side ``tile`` px covering the image, row by row."""
        if tile < 1:
            raise InputError(f"tile size must be >= 1 px, got {tile}")
        _, ny, nx = self.shape
        return [(y, min(y + tile, ny), x, min(x + tile, nx)) for y in range(0, ny, tile) for x in range(0, nx, tile)]

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The tile [y0:y1, x0:x1] as absorption, shape (n_e, y1 - y0, x1 - x0); float64 for intensity
        stacks (converted), the stored dtype for absorption stacks."""
        if Path(self.path).suffix.lower() == ".zarr":
            import zarr

            block = np.asarray(zarr.open_group(self.path, mode="r")[self.dataset][:, y0:y1, x0:x1])
        else:
            import h5py

            with h5py.File(self.path, "r") as h5:
                block = h5[self.dataset][:, y0:y1, x0:x1]
        if self.kind == "intensity":
            block, _ = _to_absorption(block, self.i0, f"stack file {Path(self.path).name}")
        return block


def open_stack_tiles(path: str | Path, *, i0: str | Path | np.ndarray | None = None,
                     energies: str | Path | np.ndarray | None = None) -> StackTiles:
    """Describe an HDF5 or zarr stack for tile-by-tile reading (see the module docstring). ``i0`` and
    ``energies`` as for :func:`~xafs_stream.io.stack.read_stack` (arrays or files; they override the file's).

    Raises
    ------
    FileNotFoundError : no such file
    InputError : another format (one line naming the formats that can be read by tiles), a missing array
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no stack file {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix not in TILED_SUFFIXES:
        raise InputError(f"stack file {path.name}: tile-by-tile reading needs an HDF5 or zarr stack "
                         f"({', '.join(TILED_SUFFIXES)}), got {suffix or 'no suffix'!r}")
    what = f"stack file {path.name}"
    i0, energies = stack_sources(i0, energies)
    try:
        if suffix == ".zarr":
            import zarr

            group = zarr.open_group(str(path), mode="r")
            names = _members(group)
            getter, attrs = (lambda name: group[name]), dict(group.attrs)
        else:
            import h5py

            h5 = h5py.File(path, "r")
            names = _members(h5)
            getter, attrs = (lambda name: h5[name]), {}
        try:
            return _describe(path, what, names, getter, attrs, i0, energies)
        finally:
            if suffix != ".zarr":
                h5.close()
    except InputError:
        raise
    except Exception as exc:  # truncated or foreign content: whatever h5py/zarr raise
        message = " ".join(str(exc).split())[:200]
        raise InputError(f"{what}: not a readable {suffix[1:].upper()} stack ({type(exc).__name__}: {message})") \
            from None


def _members(group) -> set[str]:
    """Names of the arrays and groups at the top and one level down (``exchange/data``, ``refs/<name>``)."""
    out = set()
    for key in group.keys():
        out.add(key)
        sub = group[key]
        if hasattr(sub, "keys"):
            out.update(f"{key}/{k}" for k in sub.keys())
    return out


def _describe(path, what, names, getter, attrs, i0, energies) -> StackTiles:
    dataset = next((n for n in _STACK_NAMES if n in names), None)
    if dataset is None:
        raise InputError(f"{what}: no 'stack', 'data' or 'exchange/data' array (has {sorted(names)})")
    arr = getter(dataset)
    shape = tuple(int(s) for s in arr.shape)
    if len(shape) != 3:
        raise InputError(f"{what}: stack must have 3 dimensions (energy, y, x), got shape {shape}")
    ename = next((n for n in _ENERGY_NAMES if n in names), None)
    if energies is None and ename is None:
        raise InputError(f"{what}: no 'energy' array; give the energies explicitly")
    energy = _as_energy(np.asarray(getter(ename)[()]) if energies is None else energies, what)
    if energy.size != shape[0]:
        raise InputError(f"{what}: {energy.size} energies but the stack has {shape[0]} images (shape {shape}; "
                         "the energy axis must come first)")
    file_i0 = np.asarray(getter("i0")[()], float) if "i0" in names else None
    kind = attrs.get("stack_kind")
    if kind is None and "stack_kind" in names:
        kind = getter("stack_kind")[()]
    if kind is None:
        kind = getattr(arr, "attrs", {}).get("stack_kind")
    kind = kind.decode() if isinstance(kind, bytes) else (str(kind) if kind is not None else None)
    if callable(i0):  # a spectrum file's I0, put on the stack's energies
        i0 = i0(energy)
    use_i0 = np.asarray(i0, float).ravel() if i0 is not None else file_i0
    kind = kind or ("intensity" if use_i0 is not None else "absorption")
    if kind not in ("intensity", "absorption"):
        raise InputError(f"{what}: stack_kind must be 'intensity' or 'absorption', got {kind!r}")
    if kind == "intensity":
        if use_i0 is None:
            raise InputError(f"{what}: the stack holds transmitted intensities; give the incident intensity (i0)")
        if use_i0.size != shape[0] or not np.all(np.isfinite(use_i0)) or np.any(use_i0 <= 0):
            raise InputError(f"{what}: i0 must hold {shape[0]} positive, finite values")
    refs = {n.split("/", 1)[1]: np.asarray(getter(n)[()], float) for n in sorted(names) if n.startswith("refs/")}
    for name, spec in refs.items():
        if spec.shape != energy.shape:
            raise InputError(f"{what}: reference {name!r} has shape {spec.shape}, expected {energy.shape}")
    mask = np.asarray(getter("mask")[()], bool) if "mask" in names else None
    if mask is not None and mask.shape != shape[1:]:
        raise InputError(f"{what}: mask has shape {mask.shape}, expected {shape[1:]}")
    return StackTiles(path=str(path), dataset=dataset, energy=energy, shape=shape, kind=kind, i0=use_i0, refs=refs,
                      mask=mask, dtype=str(np.dtype(arr.dtype)))
