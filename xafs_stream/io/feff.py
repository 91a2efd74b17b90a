"""Read FEFF path files (``feffNNNN.dat``, ``files.dat``, ``paths.dat``) into arrays; generate paths with
xraylarch's bundled FEFF when it is installed.

A path set is a folder of ``feffNNNN.dat`` files (FEFF6/FEFF8 output). It is named either by its folder or
as ``packaged:<name>`` for the sets shipped in ``xafs_stream/data/feff`` (Cu fcc and Fe bcc metal).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engines.errors import InputError
from ..engines.spm.paths import PathAtom, ScatteringPath

PACKAGED_PREFIX = "packaged:"


class FeffFileError(InputError):
    """A FEFF file could not be understood (names the file and what was wrong)."""


@dataclass
class FeffPathSet:
    """The paths of one FEFF calculation.

    Attributes
    ----------
    name : set name (folder name)
    folder : where the files are
    paths : the paths, in FEFF's order
    title : first title line of the calculation
    files : rows of ``files.dat`` (file, sig2, amp_ratio, degeneracy, nleg, reff), empty when absent
    """

    name: str
    folder: Path
    paths: list[ScatteringPath]
    title: str = ""
    files: list[dict] = field(default_factory=list)

    def single_scattering(self) -> list[ScatteringPath]:
        return [p for p in self.paths if p.is_single_scattering]


def _element(z: int) -> tuple[str, float]:
    """Symbol and atomic mass (amu) of element ``z`` (xraydb tables)."""
    import xraydb

    return xraydb.atomic_symbol(z), float(xraydb.atomic_mass(z))


def read_feff_dat(path: str | Path) -> ScatteringPath:
    """Read one ``feffNNNN.dat`` file.

    Returns a :class:`~xafs_stream.engines.spm.paths.ScatteringPath` with amp = mag_feff·red_factor and
    phase = real[2*phc] + phase_feff on FEFF's k grid (as xraylarch's ``FeffDatFile``).

    Raises
    ------
    FeffFileError
        unreadable file, no path header, no atoms, or no 7-column data rows.
    """
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise FeffFileError(f"{path}: cannot read ({exc.strerror})") from exc
    title = lines[0].strip()[:64].strip() if lines else ""
    mode = "header"
    counter = 0
    nleg = degen = reff = rnorman = None
    atoms: list[PathAtom] = []
    rows: list[list[float]] = []
    for lineno, raw in enumerate(lines[1:], start=2):
        line = raw.strip().lstrip("#").strip()
        if not line:
            continue
        if mode != "arrays" and line.startswith("k") and line.endswith("real[p]@#"):
            mode = "arrays"
            continue
        if mode == "header" and "----" in line[:10]:
            mode = "path"
            continue
        if mode == "path":
            counter += 1
            words = line.split()
            try:
                if counter == 1:
                    nleg = int(float(words[0]))
                    degen, reff, rnorman = float(words[1]), float(words[2]), float(words[3])
                elif counter > 2:
                    x, y, z = (float(w) for w in words[:3])
                    ipot, zz = int(words[3]), int(words[4])
                    sym, mass = _element(zz)
                    atoms.append(PathAtom(symbol=sym, z=zz, ipot=ipot, mass=mass, xyz=(x, y, z)))
            except (ValueError, IndexError):
                raise FeffFileError(f"{path}:{lineno}: cannot parse path line {line[:60]!r}") from None
        elif mode == "arrays":
            words = line.split()
            if len(words) != 7:
                continue
            try:
                rows.append([float(w.replace("D", "E")) for w in words])
            except ValueError:
                raise FeffFileError(f"{path}:{lineno}: non-numeric data line {line[:60]!r}") from None
    if nleg is None or reff is None:
        raise FeffFileError(
            f"{path}: no path header (nleg, deg, reff line after '----'): not a feffNNNN.dat file"
        )
    if len(atoms) < 2:
        raise FeffFileError(f"{path}: path lists {len(atoms)} atoms, need the absorber and a scatterer")
    if len(rows) < 4:
        raise FeffFileError(f"{path}: {len(rows)} data rows with 7 columns, need at least 4")
    data = np.asarray(rows, dtype=float).T
    return ScatteringPath(
        k=data[0],
        amp=data[2] * data[4],
        phase=data[1] + data[3],
        lam=data[5],
        rep=data[6],
        reff=float(reff),
        degeneracy=float(degen),
        nleg=int(nleg),
        atoms=tuple(atoms),
        rnorman=float(rnorman),
        label=path.name,
        mag_feff=data[2],
        red_factor=data[4],
        phase_feff=data[3],
        real_phc=data[1],
        metadata={"title": title, "file": str(path)},
    )


def read_files_dat(path: str | Path) -> list[dict]:
    """Rows of FEFF's ``files.dat``: file, sig2, amp_ratio, degeneracy, nleg, reff."""
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise FeffFileError(f"{path}: cannot read ({exc.strerror})") from exc
    out = []
    for line in lines:
        words = line.split()
        if len(words) == 6 and re.match(r"feff\d+\.dat$", words[0], flags=re.IGNORECASE):
            try:
                sig2, ratio, deg, nleg, reff = (float(w) for w in words[1:])
            except ValueError:
                raise FeffFileError(f"{path}: cannot parse row {line.strip()!r}") from None
            out.append(
                dict(file=words[0], sig2=sig2, amp_ratio=ratio, degeneracy=deg, nleg=int(nleg), reff=reff)
            )
    return out


def read_paths_dat(path: str | Path) -> list[dict]:
    """Paths listed in FEFF's ``paths.dat``: index, nleg, degeneracy, reff (Å) and the atom labels."""
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise FeffFileError(f"{path}: cannot read ({exc.strerror})") from exc
    out: list[dict] = []
    head = re.compile(r"^\s*(\d+)\s+(\d+)\s+([\d.]+)\s+index, nleg, degeneracy, r=\s*([\d.]+)")
    for line in lines:
        m = head.match(line)
        if m:
            out.append(
                dict(
                    index=int(m.group(1)),
                    nleg=int(m.group(2)),
                    degeneracy=float(m.group(3)),
                    reff=float(m.group(4)),
                    atoms=[],
                )
            )
            continue
        if out and "'" in line:
            label = line.split("'")[1].strip()
            out[-1]["atoms"].append(label)
    return out


def packaged_path_sets() -> list[str]:
    """Names of the packaged path sets (use as ``packaged:<name>``)."""
    from ..data import FEFF_DIR

    return sorted(p.name for p in FEFF_DIR.iterdir() if p.is_dir())


def resolve_path_set(spec: str | Path) -> Path:
    """Folder of a path set given as ``packaged:<name>`` or a directory path.

    Raises :class:`FeffFileError` for an unknown packaged name or a folder without ``feff*.dat`` files.
    """
    text = str(spec)
    if text.startswith(PACKAGED_PREFIX):
        from ..data import FEFF_DIR

        name = text[len(PACKAGED_PREFIX) :]
        folder = FEFF_DIR / name
        if not folder.is_dir():
            raise FeffFileError(f"no packaged path set {name!r}; known: {packaged_path_sets()}")
        return folder
    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise FeffFileError(
            f"path set {text!r}: not a directory (give a folder of FEFF path files "
            f"or packaged:<name>, known: {packaged_path_sets()})"
        )
    if not path_files(folder):
        raise FeffFileError(
            f"path set {text!r}: no FEFF path files in {folder} (files with FEFF's "
            f"'k real[2*phc] mag[feff] ...' column header, e.g. feffNNNN.dat or larch's feff_*.dat)"
        )
    return folder


#: The column header of a FEFF scattering-path file (FEFF6/8 ``feffNNNN.dat``, larch's ``feff_*.dat``).
_PATH_HEADER = re.compile(r"^\s*k\s+real\[2\*phc\]\s+mag\[feff\]", re.I)


def is_path_file(path: Path) -> bool:
    """True when ``path`` holds one FEFF scattering path (recognised by its column header, not its name)."""
    try:
        with open(path, errors="replace") as fh:
            for _, line in zip(range(400), fh):
                if _PATH_HEADER.match(line):
                    return True
    except (OSError, UnicodeError):
        return False
    return False


def path_files(folder: Path) -> list[str]:
    """Names of the FEFF path files in ``folder`` whatever their names, in FEFF's order: ``files.dat``'s
    order when present, else by path index (``feff0001.dat``, ``feff_feo01.dat``: the trailing number),
    then by name."""
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in (".dat", "")
             and p.name.lower() not in ("files.dat", "paths.dat", "chi.dat", "xmu.dat")]
    names = [p.name for p in files if is_path_file(p)]

    def index(name: str) -> tuple[int, str]:
        m = re.search(r"(\d+)\D*$", name)
        return (int(m.group(1)) if m else 10**9, name)

    return sorted(names, key=index)


def read_feff_dir(spec: str | Path) -> FeffPathSet:
    """Read every FEFF path file of a path set, whatever its name (see :func:`path_files`); the order of
    ``files.dat`` when present, else by path index."""
    folder = resolve_path_set(spec)
    files_info = read_files_dat(folder / "files.dat") if (folder / "files.dat").is_file() else []
    names = [row["file"] for row in files_info if (folder / row["file"]).is_file()] if files_info else []
    if not names:  # no files.dat, or one listing files that are not here (renamed by larch, copied)
        names = path_files(folder)
    if not names:
        raise FeffFileError(f"{folder}: no FEFF path files")
    paths = [read_feff_dat(folder / n) for n in names]
    return FeffPathSet(
        name=folder.name,
        folder=folder,
        paths=paths,
        title=paths[0].metadata.get("title", ""),
        files=files_info,
    )


def feff_inp_for_cluster(
    atoms: list[tuple[str, float, float, float]],
    *,
    title: str = "cluster",
    edge: str = "K",
    rmax: float = 5.0,
    nleg: int = 4,
) -> str:
    """Text of a FEFF6/8 ``feff.inp`` for a cluster: ``atoms`` = [(symbol, x, y, z) in Å], absorber first.

    Potentials: 0 for the absorber, then one per element in order of appearance.
    """
    import xraydb

    if not atoms:
        raise InputError("atoms: empty cluster")
    holes = {"K": 1, "L1": 2, "L2": 3, "L3": 4}
    if edge not in holes:
        raise InputError(f"edge: must be one of {sorted(holes)}, got {edge!r}")
    elements: list[str] = []
    for sym, *_ in atoms[1:]:
        if sym not in elements:
            elements.append(sym)
    ipot = {sym: i + 1 for i, sym in enumerate(elements)}
    try:
        pots = [f"   0 {xraydb.atomic_number(atoms[0][0])} {atoms[0][0]}"]
        pots += [f"   {ipot[sym]} {xraydb.atomic_number(sym)} {sym}" for sym in elements]
    except ValueError as exc:
        raise InputError(f"atoms: unknown element ({exc})") from None
    x0, y0, z0 = atoms[0][1:]
    lines = []
    for i, (sym, x, y, z) in enumerate(atoms):
        r = float(np.sqrt((x - x0) ** 2 + (y - y0) ** 2 + (z - z0) ** 2))
        lines.append(
            f"  {x - x0:10.5f} {y - y0:10.5f} {z - z0:10.5f} {0 if i == 0 else ipot[sym]} {sym:2s} {r:9.5f}"
        )
    return (
        f"TITLE {title}\n HOLE {holes[edge]} 1.0\n CONTROL 1 1 1 1\n PRINT 1 0 0 0\n RMAX {rmax}\n"
        f" NLEG {nleg}\n\n POTENTIALS\n" + "\n".join(pots) + "\n\n ATOMS\n" + "\n".join(lines) + "\n END\n"
    )


def generate_feff_paths(feff_inp: str | Path, folder: str | Path, *, code: str = "feff6l") -> FeffPathSet:
    """Run xraylarch's bundled FEFF (``feff6l`` or ``feff8l``) on a ``feff.inp`` and read the paths.

    ``feff_inp`` is a file path or the text of a ``feff.inp`` (see :func:`feff_inp_for_cluster` to make one
    from atom positions); the calculation runs in ``folder`` (created).
    Needs the optional xraylarch extra (``pip install 'xafs-stream[larch]'``).
    """
    try:
        from larch.xafs import feff6l, feff8l
    except ImportError as exc:
        raise InputError("generating FEFF paths needs xraylarch: pip install 'xafs-stream[larch]'") from exc
    runners = {"feff6l": feff6l, "feff8l": feff8l}
    if code not in runners:
        raise InputError(f"code must be one of {sorted(runners)}, got {code!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = str(feff_inp)
    candidate = Path(text)
    if "\n" not in text and candidate.is_file():
        text = candidate.read_text()
    if "ATOMS" not in text.upper():
        raise InputError("feff_inp: no ATOMS card; give a feff.inp file or its text")
    (folder / "feff.inp").write_text(text)
    runners[code](folder=str(folder), feffinp="feff.inp", verbose=False)
    if not any(folder.glob("feff*.dat")):
        raise InputError(f"{code} produced no feffNNNN.dat files in {folder} (see {folder}/feff.inp)")
    return read_feff_dir(folder)
