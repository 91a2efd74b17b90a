"""Produce the xraylarch reference numbers used by the SpM tests when xraylarch is not installed.

Run from the repository root with xraylarch installed (``pip install 'xafs-stream[larch]'``)::

    python tools/make_feffit_fixtures.py

Writes to ``tests/fixtures/feffit/``:

- ``cu_metal_rt_chi.txt``, ``fe_metal_rt_chi.txt``: χ(k) of the packaged Cu and Fe foil spectra from the
  project's preprocessing (``xafs_stream.engines.xafs.process_spectrum``, defaults), so SpM and feffit are
  compared on identical data even after the preprocessing changes;
- ``feffit_reference.json``: xraylarch ``feffit`` results on those χ(k) with the ranges of the tests
  (``FEFFIT_CASES``), the ``path2chi`` χ(k) of a few parameter sets, and ``sigma2_eins`` /
  ``sigma2_debye`` values for the Cu first-shell path;
- ``feo_rocksalt_feff6l/``: FEFF6L paths of rocksalt FeO (a = 4.307 Å) computed with xraylarch's ``feff6l``,
  used for the two-pair synthetic tests (Fe-O and Fe-Fe paths).

The functions here (``feffit_shells``, ``larch_path_chi``) are also used by the larch-marked tests and by
``benchmarks/bench_spm.py`` to run feffit live.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "feffit"

# name: (spectrum, path set, feff files of the shells, ranges)
FEFFIT_CASES = {
    "cu_first_shell": dict(
        spectrum="cu_metal_rt.xdi",
        path_set="cu_fcc_a3.615_feff6l",
        files=["feff0001.dat"],
        kmin=3.0,
        kmax=14.0,
        kweight=2,
        dk=1.0,
        rmin=1.4,
        rmax=3.2,
    ),
    "fe_two_shells": dict(
        spectrum="fe_metal_rt.xdi",
        path_set="fe_bcc_a2.8665_feff6l",
        files=["feff0001.dat", "feff0002.dat"],
        kmin=3.0,
        kmax=14.0,
        kweight=2,
        dk=1.0,
        rmin=1.4,
        rmax=3.2,
    ),
}
PATH_CHI_CASES = [
    dict(n=12.0, r=2.5562, sigma2=0.0085, de0=0.0, s02=1.0),
    dict(n=10.0, r=2.5362, sigma2=0.0080, de0=3.0, s02=0.9),
    dict(n=6.0, r=3.6500, sigma2=0.0120, de0=-4.0, s02=1.0),
]
THERMAL_TEMPS = [10.0, 80.0, 150.0, 300.0, 500.0, 800.0]
THERMAL_THETAS = [232.0, 315.0]
FEO_A = 4.307


def feffit_shells(
    k: np.ndarray,
    chi: np.ndarray,
    feff_files: list[str | Path],
    *,
    kmin: float,
    kmax: float,
    kweight: float,
    dk: float,
    rmin: float,
    rmax: float,
    fitspace: str = "r",
    start: list[dict] | None = None,
) -> dict:
    """xraylarch ``feffit`` with one free (N·S0², ΔR, σ²) per path and one shared ΔE0.

    Returns {"shells": [{n, n_err, r, r_err, sigma2, sigma2_err}], "de0", "de0_err", "redchi", "rfactor",
    "n_idp"}. ``start`` gives starting (n, r, sigma2) per path (default: the path's degeneracy, reff, 0.006).
    """
    from larch import Group
    from larch.fitting import param, param_group
    from larch.xafs import feffit, feffit_dataset, feffit_transform, feffpath

    pars = dict(de0=param(0.0, vary=True))
    paths = {}
    for i, fname in enumerate(feff_files):
        p = feffpath(str(fname))
        guess = (start or [{}] * len(feff_files))[i]
        pars[f"n{i}"] = param(guess.get("n", p.degen), vary=True)
        pars[f"dr{i}"] = param(guess.get("r", p.reff) - p.reff, vary=True)
        pars[f"ss{i}"] = param(guess.get("sigma2", 0.006), vary=True)
        paths[f"p{i}"] = feffpath(
            str(fname), degen=1, s02=f"n{i}", e0="de0", sigma2=f"ss{i}", deltar=f"dr{i}"
        )
    group = param_group(**pars)
    trans = feffit_transform(
        kmin=kmin, kmax=kmax, kw=kweight, dk=dk, window="hanning", rmin=rmin, rmax=rmax, fitspace=fitspace
    )
    data = Group(k=np.asarray(k, float), chi=np.asarray(chi, float))
    out = feffit(group, feffit_dataset(data=data, paths=paths, transform=trans))
    P = out.params
    shells = []
    for i in range(len(feff_files)):
        reff = paths[f"p{i}"].reff
        shells.append(
            dict(
                n=P[f"n{i}"].value,
                n_err=P[f"n{i}"].stderr,
                r=reff + P[f"dr{i}"].value,
                r_err=P[f"dr{i}"].stderr,
                sigma2=P[f"ss{i}"].value,
                sigma2_err=P[f"ss{i}"].stderr,
            )
        )
    return dict(
        shells=shells,
        de0=P["de0"].value,
        de0_err=P["de0"].stderr,
        redchi=float(out.chi2_reduced),
        rfactor=float(out.rfactor),
        n_idp=float(out.n_independent),
    )


def larch_path_chi(
    feff_file: str | Path, k: np.ndarray, *, n: float, r: float, sigma2: float, de0: float, s02: float
) -> np.ndarray:
    """χ(k) of one path from xraylarch's ``path2chi`` (N as degeneracy, R = reff + ΔR)."""
    from larch.xafs import feffpath, path2chi

    probe = feffpath(str(feff_file))
    p = feffpath(str(feff_file), degen=n, s02=s02, e0=de0, sigma2=sigma2, deltar=r - probe.reff)
    path2chi(p, k=np.asarray(k, float))
    return np.asarray(p.chi, float)


def feo_feff_inp(a: float = FEO_A, rmax_atoms: float = 4.5) -> str:
    """feff.inp for rocksalt FeO (Fe at the origin, O and Fe on the fcc sublattices)."""
    rows = []
    for i, j, k in itertools.product(range(-2, 3), repeat=3):
        x, y, z = i * a / 2, j * a / 2, k * a / 2
        r = math.sqrt(x * x + y * y + z * z)
        if r > rmax_atoms:
            continue
        ipot = 0 if r == 0 else (1 if (i + j + k) % 2 else 2)
        rows.append((r, x, y, z, ipot, {0: "Fe", 1: "O", 2: "Fe"}[ipot]))
    rows.sort()
    atoms = "\n".join(
        f"  {x:10.5f} {y:10.5f} {z:10.5f} {ip} {sym:2s} {r:9.5f}" for r, x, y, z, ip, sym in rows
    )
    return (
        f"TITLE FeO rocksalt a={a} A\n HOLE 1 1.0   * Fe K edge\n CONTROL 1 1 1 1\n PRINT 1 0 0 0\n"
        f" RMAX 4.4\n NLEG 2\n\n POTENTIALS\n   0 26 Fe\n   1 8  O\n   2 26 Fe\n\n ATOMS\n{atoms}\n END\n"
    )


def make_feo_paths(dest: Path) -> None:
    from larch.xafs import feff6l

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "feff.inp").write_text(feo_feff_inp())
        feff6l(folder=tmp, feffinp="feff.inp", verbose=False)
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for f in sorted(Path(tmp).iterdir()):
            if f.name in ("feff.inp", "files.dat", "paths.dat") or (
                f.name.startswith("feff") and f.suffix == ".dat"
            ):
                shutil.copy(f, dest / f.name)


def main() -> int:
    try:
        import larch  # noqa: F401
    except ImportError:
        print("xraylarch is needed: pip install 'xafs-stream[larch]'", file=sys.stderr)
        return 1
    sys.path.insert(0, str(ROOT))
    from larch.xafs import feffpath
    from larch.xafs.sigma2_models import sigma2_debye, sigma2_eins

    from xafs_stream.data import FEFF_DIR, SPECTRA_DIR
    from xafs_stream.engines.xafs import process_spectrum
    from xafs_stream.io import read_spectrum

    FIXTURES.mkdir(parents=True, exist_ok=True)
    out: dict = {
        "generator": "tools/make_feffit_fixtures.py",
        "larch_version": larch.__version__,
        "feffit": {},
        "path_chi": {},
        "thermal": {},
    }
    chis = {}
    for name in ("cu_metal_rt.xdi", "fe_metal_rt.xdi"):
        spec = read_spectrum(SPECTRA_DIR / name)
        proc = process_spectrum(spec.energy, spec.mu)
        stem = name.replace(".xdi", "")
        np.savetxt(
            FIXTURES / f"{stem}_chi.txt",
            np.column_stack([proc.k, proc.chi]),
            fmt="%.10g",
            header=f"chi(k) of xafs_stream/data/spectra/{name}: process_spectrum defaults, "
            f"E0 = {proc.e0:.2f} eV\nk chi",
        )
        chis[name] = (proc.k, proc.chi)
    for case, cfg in FEFFIT_CASES.items():
        k, chi = chis[cfg["spectrum"]]
        files = [FEFF_DIR / cfg["path_set"] / f for f in cfg["files"]]
        ranges = {key: cfg[key] for key in ("kmin", "kmax", "kweight", "dk", "rmin", "rmax")}
        out["feffit"][case] = dict(config=cfg, result=feffit_shells(k, chi, files, **ranges))
    k = 0.05 * np.arange(1, 361)
    cu1 = FEFF_DIR / "cu_fcc_a3.615_feff6l" / "feff0001.dat"
    out["path_chi"] = dict(
        file="cu_fcc_a3.615_feff6l/feff0001.dat",
        k=k.tolist(),
        cases=[dict(params=c, chi=larch_path_chi(cu1, k, **c).tolist()) for c in PATH_CHI_CASES],
    )
    p = feffpath(str(cu1))
    out["thermal"] = dict(
        file="cu_fcc_a3.615_feff6l/feff0001.dat",
        temps=THERMAL_TEMPS,
        thetas=THERMAL_THETAS,
        einstein={str(th): [float(sigma2_eins(t, th, p)) for t in THERMAL_TEMPS] for th in THERMAL_THETAS},
        debye={str(th): [float(sigma2_debye(t, th, p)) for t in THERMAL_TEMPS] for th in THERMAL_THETAS},
    )
    (FIXTURES / "feffit_reference.json").write_text(json.dumps(out, indent=1, default=float))
    make_feo_paths(FIXTURES / "feo_rocksalt_feff6l")
    print(f"wrote {FIXTURES}")
    for case, v in out["feffit"].items():
        print(case, json.dumps(v["result"], default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
