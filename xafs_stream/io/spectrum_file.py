"""Read XDI 1.0 and plain column spectrum files; write XDI.

Handles the three header styles found in the field's public data: XDI (``# XDI/1.0``, ``# Key.sub: value``
lines, ``# ///`` and ``#----`` separators, last comment line naming the columns), IFEFFIT/Athena ``#%`` headers,
and bare whitespace-separated columns. μ(E) is taken from a ``mu``-like column or computed as
ln(I0/It) (transmission) or If/I0 (fluorescence) when only intensities are present.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engines.errors import InputError

_ENERGY_NAMES = ("energy", "e", "ev", "energy_ev", "enc", "en", "mono_energy", "energy_kev", "kev")
_MU_NAMES = ("mutrans", "mu", "xmu", "mufluor", "mu_trans", "norm", "normtrans")
_I0_NAMES = ("i0", "izero")
_IT_NAMES = ("itrans", "it", "i1")
_IF_NAMES = ("ifluor", "if", "fluor")


class SpectrumFileError(InputError):
    """A spectrum file could not be understood (names the file and what was wrong)."""


class NoEnergyColumn(SpectrumFileError):
    """The file names its columns, none of them energy (a χ(k) file, or give ``energy_column``)."""


@dataclass
class SpectrumFile:
    """One spectrum read from a file.

    Attributes
    ----------
    energy : ndarray of shape (n,), in eV
    mu : ndarray of shape (n,), absorption (arbitrary units)
    columns : dict of column name -> ndarray of shape (n,)
    metadata : flat dict of header fields ("Element.symbol": "Cu", ...)
    path : where it came from
    energy_guessed : how the energy column was chosen when the file does not name one ("" when it does)
    """

    energy: np.ndarray
    mu: np.ndarray
    columns: dict[str, np.ndarray]
    metadata: dict[str, str] = field(default_factory=dict)
    path: str = ""
    energy_guessed: str = ""

    @property
    def element(self) -> str | None:
        return self.metadata.get("Element.symbol")

    @property
    def edge(self) -> str | None:
        return self.metadata.get("Element.edge")


def _column_names_from_header(header: list[str], n_cols: int) -> list[str] | None:
    """Find column labels: XDI ``Column.N`` fields, else the last comment line with n_cols words (None:
    the file names no columns)."""
    xdi_cols: dict[int, str] = {}
    for line in header:
        m = re.match(r"#\s*Column\.(\d+)\s*:\s*(\S+)", line, flags=re.IGNORECASE)
        if m:
            xdi_cols[int(m.group(1))] = m.group(2).lower()
    if len(xdi_cols) == n_cols:
        return [xdi_cols[i + 1] for i in range(n_cols)]
    for line in reversed(header):
        words = line.lstrip("#%").split()
        if len(words) == n_cols and not any(":" in w for w in words):
            return [w.lower() for w in words]
    return None


def _header_fields(header: list[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in header:
        body = line.lstrip("#%").strip()
        m = re.match(r"([A-Za-z][\w.]*)\s*:\s*(.*)$", body)
        if m and not body.startswith("XDI/"):
            fields[m.group(1)] = m.group(2).strip()
    # Athena-style '#%atom:' / '#%edge:' map onto XDI names where unambiguous.
    if "Element.edge" not in fields and "edge" in fields:
        fields["Element.edge"] = fields["edge"]
    return fields


def _pick(columns: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray | None:
    for name in names:
        if name in columns:
            return columns[name]
    return None


def read_spectrum(path: str | Path, *, mu_column: str | None = None,
                  energy_column: str | int | None = None) -> SpectrumFile:
    """Read an XDI or column file into a :class:`SpectrumFile`.

    ``mu_column`` names the column to use as μ (case-insensitive) in multi-column files such as
    Athena ``.nor`` exports; by default a ``mu``-like column, ln(I0/It) or If/I0 is used.
    ``energy_column`` names the energy column (or gives its 0-based index); by default the column the
    header calls energy (``energy``, ``e``, ``ev``, ...). A file whose header names its columns but none as energy is refused (give
    ``energy_column``); a file without column names uses its first column, and ``energy_guessed`` says so.

    Raises :class:`SpectrumFileError` naming the file when there is no numeric data, rows of unequal
    length, or no way to obtain μ(E).
    """
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise SpectrumFileError(f"{path}: cannot read ({exc.strerror})") from exc
    header: list[str] = []
    rows: list[list[float]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            header.append(stripped)
            continue
        try:
            rows.append([float(w.replace("D", "E")) for w in stripped.split()])
        except ValueError:
            if rows:
                raise SpectrumFileError(f"{path}:{lineno}: non-numeric data line {stripped[:60]!r}") from None
            header.append("#" + stripped)  # a bare label line before the data
    if not rows:
        raise SpectrumFileError(f"{path}: no numeric data rows")
    n_cols = len(rows[0])
    bad = [i for i, r in enumerate(rows) if len(r) != n_cols]
    if bad:
        raise SpectrumFileError(f"{path}: data row {bad[0] + 1} has {len(rows[bad[0]])} values, expected {n_cols}")
    if n_cols < 2:
        raise SpectrumFileError(f"{path}: need at least two columns (energy, mu), found {n_cols}")
    data = np.asarray(rows, dtype=float)
    named = _column_names_from_header(header, n_cols)
    names = named or (["energy", "mu"] + [f"col{i + 1}" for i in range(2, n_cols)])[:n_cols]
    columns = {name: data[:, i].copy() for i, name in enumerate(names)}
    guessed = ""
    if isinstance(energy_column, int) and not isinstance(energy_column, bool):
        if not 0 <= energy_column < n_cols:
            raise SpectrumFileError(f"{path}: no column {energy_column} (0-based); the file has {n_cols}")
        energy = data[:, energy_column]
    elif energy_column is not None:
        if energy_column.lower() not in columns:
            raise SpectrumFileError(f"{path}: no column {energy_column!r}; columns are {names}")
        energy = columns[energy_column.lower()]
    elif named is None:
        energy, guessed = data[:, 0], "the first column (the file names no columns)"
    else:
        energy = _pick(columns, _ENERGY_NAMES)
        if energy is None:
            raise NoEnergyColumn(f"{path}: no energy column among {names}; name it with --energy-column")
    if not np.all(np.isfinite(energy)):
        raise SpectrumFileError(f"{path}: the energy column has {int(np.sum(~np.isfinite(energy)))} "
                                f"NaN/inf value(s)")
    if energy.max() < 100:  # keV files
        energy = energy * 1000.0
    if mu_column is not None:
        if mu_column.lower() not in columns:
            raise SpectrumFileError(f"{path}: no column {mu_column!r}; columns are {names}")
        mu = columns[mu_column.lower()]
    else:
        mu = _pick(columns, _MU_NAMES)
    if mu is None:
        i0, it, i_f = (_pick(columns, n) for n in (_I0_NAMES, _IT_NAMES, _IF_NAMES))
        with np.errstate(divide="ignore", invalid="ignore"):
            if i0 is not None and it is not None:
                mu = np.log(i0 / it)
            elif i0 is not None and i_f is not None:
                mu = i_f / i0
            elif n_cols == 2:
                mu = data[:, 1]
    if mu is None:
        raise SpectrumFileError(f"{path}: no mu column and no i0/itrans pair among columns {names}")
    return SpectrumFile(
        energy=np.asarray(energy, float), mu=np.asarray(mu, float), columns=columns,
        metadata=_header_fields(header), path=str(path), energy_guessed=guessed,
    )


def write_xdi(
    path: str | Path,
    columns: dict[str, np.ndarray],
    metadata: dict[str, object] | None = None,
    *,
    units: dict[str, str] | None = None,
    comments: str = "",
) -> Path:
    """Write columns (first one must be ``energy`` in eV) as an XDI 1.0 file.

    ``metadata`` keys are ``Namespace.tag`` (e.g. ``Element.symbol``); values are written with ``str``.
    Raises InputError (a ValueError) for a missing energy column, unequal lengths or a bad metadata key.
    """
    path = Path(path)
    names = list(columns)
    if not names or names[0] != "energy":
        raise InputError(f"write_xdi: first column must be 'energy', got {names[:1]}")
    arrays = [np.asarray(columns[n], float) for n in names]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise InputError("write_xdi: columns have different lengths " + str({k: len(v) for k, v in columns.items()}))
    units = {"energy": "eV", **(units or {})}
    lines = ["# XDI/1.0 xafs-stream/0.1"]
    for i, name in enumerate(names, start=1):
        unit = f" {units[name]}" if name in units else ""
        lines.append(f"# Column.{i}: {name}{unit}")
    for key, value in (metadata or {}).items():
        if "." not in key:
            raise InputError(f"write_xdi: metadata key {key!r} must be 'Namespace.tag'")
        if isinstance(value, float) and not math.isfinite(value):
            continue
        lines.append(f"# {key}: {value}")
    lines.append("# ///")
    for comment in comments.splitlines():
        lines.append(f"# {comment}")
    lines.append("#----")
    lines.append("# " + " ".join(names))
    table = np.column_stack(arrays)
    body = "\n".join(" ".join(f"{v:.10g}" for v in row) for row in table)
    path.write_text("\n".join(lines) + "\n" + body + "\n")
    return path


def chi_columns(spec: SpectrumFile, *, force: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """(k, chi) sorted by k when ``spec`` is a χ(k) file, else None.

    A χ(k) file names columns ``k`` and ``chi``, or (``force``, the ``--chi`` option) is taken as one; a
    file without those names whose first column lies in 0 <= x < 30 starting below 1 is read as k too
    (an energy column in eV or keV never does: keV edges start above 1).
    """
    names = list(spec.columns)
    first = np.asarray(spec.columns[names[0]], float)
    named = "k" in spec.columns and "chi" in spec.columns
    if not (force or named or (first.min() >= 0 and first.min() < 1.0 and first.max() < 30.0)):
        return None
    if len(names) < 2:
        raise SpectrumFileError(f"{spec.path}: a χ(k) file needs columns k and chi")
    k = np.asarray(spec.columns["k"] if "k" in spec.columns else first, float)
    chi = np.asarray(spec.columns["chi"] if "chi" in spec.columns else spec.columns[names[1]], float)
    order = np.argsort(k, kind="stable")
    return k[order], chi[order]


def read_chi_or_spectrum(path: str | Path, *, force_chi: bool = False, mu_column: str | None = None,
                         energy_column: str | int | None = None
                         ) -> tuple[SpectrumFile, tuple[np.ndarray, np.ndarray] | None]:
    """Read a file that holds μ(E) or χ(k): (spec, (k, chi)) for χ(k), (spec, None) for μ(E)."""
    try:
        spec = read_spectrum(path, mu_column=mu_column, energy_column=energy_column)
    except NoEnergyColumn:  # a χ(k) file names k and chi, no energy: its first column is x
        spec = read_spectrum(path, mu_column=mu_column, energy_column=0)
        chi = chi_columns(spec, force=force_chi)
        if chi is None:
            raise  # named columns, none of them energy nor k/chi: the one-line error stands
        return spec, chi
    return spec, chi_columns(spec, force=force_chi)
