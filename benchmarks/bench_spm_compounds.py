"""Benchmark: ``xafs-stream spm`` vs xraylarch ``feffit`` on real spectra of three compounds.

    python benchmarks/bench_spm_compounds.py            # the comparison (about a minute on one core)
    python benchmarks/bench_spm_compounds.py --make-paths   # rebuild the packaged FEFF path sets first

Data (see /work/shared/data/README.md, copied in ``xafs_stream/data/README.md``): real μ(E) spectra from the
xraylarch examples (MIT, (c) M. Newville et al.) and the XDI repository: ``feo_rt1.xdi`` (FeO wüstite,
Fe K, APS 20-BM), ``fe2o3_rt1.xmu`` (α-Fe2O3 hematite, Fe K, APS 20-BM), ``zn_znse_rt.xdi`` (ZnSe, Zn K,
APS 13-BM-D, μ = ln(i0/itrans)). Read from /work/shared/data/spectra/ when present, else the packaged copies
(``xafs_stream/data/spectra/``: the same files).

Paths: the packaged FEFF6L path sets ``xafs_stream/data/feff/feo_rocksalt_a4.33_feff6l``,
``fe2o3_hematite_feff6l`` and ``znse_zincblende_a5.6687_feff6l`` (``--make-paths`` rebuilds them: clusters
from the crystal structures of the shared data README, FEFF6L bundled with xraylarch, RMAX 5.0, NLEG 4).

Structural truth (shared data README): FeO rock salt a = 4.33 Å, Fe-O 6 @ 2.165, Fe-Fe 12 @ 3.062 Å;
α-Fe2O3 Fe-O 3 @ 1.945 + 3 @ 2.116, Fe-Fe 1 @ 2.90, 3 @ 2.97, 3 @ 3.36, 6 @ 3.70 Å; ZnSe zincblende
a = 5.6687 Å, Zn-Se 4 @ 2.4546, Zn-Zn 12 @ 4.0084 Å.

Two settings per compound:

(a) ``defaults``: ``xafs-stream spm FILE --paths DIR --json OUT`` with no other option (k 3-14 Å⁻¹ lowered to
    the data, k², Hanning dk 1, R 1.4-3.2 Å, S0² = 1);
(b) ``larch-like``: k 2-13.5 Å⁻¹ (ZnSe 2-12.5 asked: the data end at k ≈ 13.9 and the window needs dk/2, so
    the CLI lowers kmax to 12.0; feffit gets the kmax the CLI used), k³,
    Hanning dk 3, R 1.0-3.2 Å (ZnSe 1.5-2.8 Å, first shell only), S0² = 0.7 (ZnSe 0.9).

Per run, our CLI runs as a subprocess (stdout, exit code and the ``--json`` file are kept), then xraylarch's
``feffit`` runs on the SAME μ(E) file processed by larch itself (``pre_edge`` defaults, ``autobk`` rbkg 1.0,
kweight 2; its E0 is reported next to ours) with the SAME FEFF path files (``feffpath(feffNNNN.dat)``), the
same k range (the kmax our CLI actually used, read from its JSON), k weight, dk, Hanning window, R range
(R-space fit) and fixed S0². The feffit model has one single-scattering path per structural shell of the truth
list whose distance lies inside the R range (the nearest-reff path of that pair in the set), each with free
N (``degen`` = 1, amplitude S0²·N), ΔR and σ², and one shared ΔE0; it starts from the crystal values
(N, ΔR = 0, σ² = 0.006) with N ≥ 0, |ΔR| ≤ 0.25 Å and -0.005 ≤ σ² ≤ 0.05 Å². feffit is told the model;
``spm`` is told nothing but the path set and the ranges.

Our shells are matched to the truth shells by pair and nearest R within 0.15 Å (one to one, closest first);
``agree`` says per quantity (N R σ²) whether |ours - feffit| <= sqrt(err_ours² + err_feffit²) (``y``/``n``,
``?`` when an error is not finite). Truth shells not matched are ``missing``; our shells matched to no truth
shell are ``extra`` (their pair and R are printed as found). R-factors: ours is Σ residual²/Σ data² in the
fit space (JSON ``r_factor``); feffit's is its ``rfactor`` (the same definition in R space). Writes
benchmarks/results/spm_compounds.json. Runs on one core (BLAS/OpenMP threads set to 1, also for the CLI).
"""

from __future__ import annotations

import os

ONE_CORE_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
for _key, _value in ONE_CORE_ENV.items():
    os.environ[_key] = _value

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED_SPECTRA = Path("/work/shared/data/spectra")
OUT_JSON = HERE / "results" / "spm_compounds.json"
MATCH_TOL = 0.15  # Å: our shell matches a truth shell of the same pair within this distance
DEFAULTS = dict(kmin=3.0, kmax=14.0, kweight=2.0, dk=1.0, rmin=1.4, rmax=3.2, s02=1.0)  # `spm --help`

COMPOUNDS = {
    "FeO": dict(
        spectrum="feo_rt1.xdi",
        paths="feo_rocksalt_a4.33_feff6l",
        mu="col2",
        truth=[("Fe-O", 6, 2.165), ("Fe-Fe", 12, 3.062)],
        larch_like=dict(kmin=2.0, kmax=13.5, kweight=3.0, dk=3.0, rmin=1.0, rmax=3.2, s02=0.7),
    ),
    "Fe2O3": dict(
        spectrum="fe2o3_rt1.xmu",
        paths="fe2o3_hematite_feff6l",
        mu="col2",
        truth=[
            ("Fe-O", 3, 1.945),
            ("Fe-O", 3, 2.116),
            ("Fe-Fe", 1, 2.90),
            ("Fe-Fe", 3, 2.97),
            ("Fe-Fe", 3, 3.36),
            ("Fe-Fe", 6, 3.70),
        ],
        larch_like=dict(kmin=2.0, kmax=13.5, kweight=3.0, dk=3.0, rmin=1.0, rmax=3.2, s02=0.7),
    ),
    "ZnSe": dict(
        spectrum="zn_znse_rt.xdi",
        paths="znse_zincblende_a5.6687_feff6l",
        mu="ln(i0/itrans)",
        truth=[("Zn-Se", 4, 2.4546), ("Zn-Zn", 12, 4.0084)],
        larch_like=dict(kmin=2.0, kmax=12.5, kweight=3.0, dk=3.0, rmin=1.5, rmax=2.8, s02=0.9),
    ),
}


# ----------------------------------------------------------------------------------------------------------
# path sets: clusters from the crystal structures, FEFF6L (``--make-paths``)


def _lattice_cluster(sites, cell, absorber_frac, radius):
    """[(symbol, x, y, z)] in Å of every site image within ``radius`` of the absorber, absorber first,
    sorted by distance. ``sites`` = [(symbol, fractional xyz)]; cartesian = fractional @ ``cell``
    (rows a, b, c).
    """
    cell = np.asarray(cell, float)
    a0 = np.asarray(absorber_frac, float)
    n = math.ceil(radius / min(np.linalg.norm(cell, axis=1))) + 1
    shifts = np.array(
        [(i, j, k) for i in range(-n, n + 1) for j in range(-n, n + 1) for k in range(-n, n + 1)]
    )
    found = []
    for sym, frac in sites:
        d = (np.asarray(frac, float) + shifts - a0) @ cell
        r = np.linalg.norm(d, axis=1)
        found += [(float(rr), sym, dd) for rr, dd in zip(r, d) if rr <= radius + 1e-6]
    found.sort(key=lambda t: (round(t[0], 4), t[1], tuple(np.round(t[2], 4))))
    if found[0][0] > 1e-6:
        raise RuntimeError("the absorber position is not a site of the structure")
    return [(sym, *(float(v) for v in d)) for _, sym, d in found]


def _fcc(a, first, second, offset):
    fcc = np.array([(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)])
    sites = [(first, f) for f in fcc] + [(second, (f + offset) % 1.0) for f in fcc]
    return sites, np.eye(3) * a


def _r3c_orbit(xyz):
    """Positions (fractional, hexagonal axes) generated from ``xyz`` by the 36 operations of R-3c (No. 167):
    the 12 point operations of -3m with the c-glide, times the R-centring translations."""
    x, y, z = xyz
    ops = [
        (x, y, z), (-y, x - y, z), (-x + y, -x, z),
        (y, x, -z + 0.5), (x - y, -y, -z + 0.5), (-x, -x + y, -z + 0.5),
        (-x, -y, -z), (y, -x + y, -z), (x - y, x, -z),
        (-y, -x, z + 0.5), (-x + y, y, z + 0.5), (x, x - y, z + 0.5),
    ]  # fmt: skip
    centring = [(0, 0, 0), (2 / 3, 1 / 3, 1 / 3), (1 / 3, 2 / 3, 2 / 3)]
    out: list[np.ndarray] = []
    for op in ops:
        for c in centring:
            q = (np.array(op, float) + c) % 1.0
            q[np.isclose(q, 1.0, atol=1e-7)] = 0.0
            if not any(np.allclose(q, p, atol=1e-6) for p in out):
                out.append(q)
    return out


def hematite_structure(a=5.0356, c=13.7489, z_fe=0.35530, x_o=0.3059):
    """α-Fe2O3 (R-3c, hexagonal axes): sites, cell, and the Fe (12c) and O (18e) positions."""
    fe = _r3c_orbit((0.0, 0.0, z_fe))
    o = _r3c_orbit((x_o, 0.0, 0.25))
    cell = np.array([[a, 0.0, 0.0], [-a / 2, a * math.sqrt(3) / 2, 0.0], [0.0, 0.0, c]])
    return [("Fe", p) for p in fe] + [("O", p) for p in o], cell, fe, o


def shell_list(atoms, rmax, tol=0.002):
    """[(R, symbol, N)] of the neighbours of atoms[0] up to ``rmax``, distances grouped within ``tol``."""
    x0 = np.array(atoms[0][1:])
    rows = sorted((float(np.linalg.norm(np.array(a[1:]) - x0)), a[0]) for a in atoms[1:])
    out: list[list] = []
    for r, sym in rows:
        if r > rmax:
            break
        for s in out:
            if s[1] == sym and abs(s[0] - r) <= tol:
                s[2] += 1
                break
        else:
            out.append([r, sym, 1])
    return [tuple(s) for s in sorted(out)]


def path_set_specs():
    """name -> (atoms, title, MS amplitude-ratio cut in %: MS paths below it are not kept)."""
    specs = {}
    sites, cell = _fcc(4.33, "Fe", "O", np.array([0.5, 0.0, 0.0]))
    specs["feo_rocksalt_a4.33_feff6l"] = (
        _lattice_cluster(sites, cell, (0, 0, 0), 5.8),
        "FeO rocksalt (wustite) a=4.33 A, Fe K",
        0.0,
    )
    sites, cell, fe, _ = hematite_structure()
    if (len(fe), len(sites) - len(fe)) != (12, 18):
        raise RuntimeError(f"R-3c orbits: {len(fe)} Fe and {len(sites) - len(fe)} O, expected 12c and 18e")
    specs["fe2o3_hematite_feff6l"] = (
        _lattice_cluster(sites, cell, fe[0], 6.0),
        "alpha-Fe2O3 hematite R-3c a=5.0356 c=13.7489 A, Fe 12c z=0.3553, O 18e x=0.3059, Fe K",
        10.0,
    )
    sites, cell = _fcc(5.6687, "Zn", "Se", np.array([0.25, 0.25, 0.25]))
    specs["znse_zincblende_a5.6687_feff6l"] = (
        _lattice_cluster(sites, cell, (0, 0, 0), 6.0),
        "ZnSe zincblende a=5.6687 A, Zn K",
        0.0,
    )
    return specs


def make_path_sets(rmax: float = 5.0, nleg: int = 4) -> None:
    """Build the clusters, print their shells, run FEFF6L and keep feff.inp, feffNNNN.dat, files.dat,
    paths.dat (multiple-scattering paths under the set's amplitude-ratio cut are dropped; files.dat and
    paths.dat keep FEFF's full listing)."""
    from xafs_stream.data import FEFF_DIR
    from xafs_stream.io.feff import feff_inp_for_cluster, generate_feff_paths, read_files_dat

    # hematite: every Fe (12c) site must see the same shells (else the space-group operations are wrong)
    sites, cell, fe, _ = hematite_structure()
    ref = [(round(r, 3), s, n) for r, s, n in shell_list(_lattice_cluster(sites, cell, fe[0], 5.0), 5.0)]
    for p in fe[1:]:
        other = shell_list(_lattice_cluster(sites, cell, p, 5.0), 5.0)
        if [(round(r, 3), s, n) for r, s, n in other] != ref:
            raise RuntimeError("hematite: Fe sites not equivalent (wrong space-group operations)")
    for name, (atoms, title, ms_cut) in path_set_specs().items():
        print(f"{name}: {len(atoms)} atoms within {max(math.dist(atoms[0][1:], a[1:]) for a in atoms):.2f} Å")
        for r, sym, n in shell_list(atoms, rmax):
            print(f"    {atoms[0][0]}-{sym:2s} N={n:2d} @ {r:.4f} Å")
        inp = feff_inp_for_cluster(atoms, title=title, edge="K", rmax=rmax, nleg=nleg)
        with tempfile.TemporaryDirectory() as tmp:
            generate_feff_paths(inp, tmp, code="feff6l")
            tmp = Path(tmp)
            rows = read_files_dat(tmp / "files.dat")
            keep = [r["file"] for r in rows if r["nleg"] == 2 or r["amp_ratio"] >= ms_cut]
            dest = FEFF_DIR / name
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            for f in ["feff.inp", "files.dat", "paths.dat", *keep]:
                shutil.copy2(tmp / f, dest / f)
        n_ss = sum(r["nleg"] == 2 for r in rows)
        print(f"    FEFF6L: {len(rows)} paths ({n_ss} single scattering) up to {rmax} Å, kept {len(keep)}")


# ----------------------------------------------------------------------------------------------------------
# the comparison


def spectrum_file(name: str) -> Path:
    shared = SHARED_SPECTRA / name
    if shared.is_file():
        return shared
    from xafs_stream.data import spectrum_path

    return spectrum_path(name)


def read_mu(path: Path, recipe: str) -> tuple[np.ndarray, np.ndarray]:
    data = np.loadtxt(path, comments="#")
    if recipe == "col2":
        return data[:, 0], data[:, 1]
    if recipe == "ln(i0/itrans)":
        return data[:, 0], np.log(data[:, 2] / data[:, 3])
    raise ValueError(recipe)


def run_cli(spectrum: Path, paths: Path, options: dict | None, workdir: Path, tag: str) -> dict:
    """``xafs-stream spm`` as a subprocess: command, exit code, stdout, stderr, JSON, E0 and quality line."""
    out_json = workdir / f"{tag}.json"
    exe = Path(sys.executable).parent / "xafs-stream"
    exe = str(exe) if exe.is_file() else (shutil.which("xafs-stream") or "xafs-stream")
    cmd = [exe, "spm", str(spectrum), "--paths", str(paths)]
    if options:
        cmd += [
            "--kmin", f"{options['kmin']:g}", "--kmax", f"{options['kmax']:g}",
            "--kweight", f"{options['kweight']:g}", "--dk", f"{options['dk']:g}",
            "--rrange", f"{options['rmin']:g}", f"{options['rmax']:g}", "--s02", f"{options['s02']:g}",
        ]  # fmt: skip
    cmd += ["--json", str(out_json)]
    env = dict(os.environ, **ONE_CORE_ENV)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
    wall = time.perf_counter() - t0
    payload = json.loads(out_json.read_text()) if out_json.is_file() else None
    e0 = re.search(r"E0 = ([\d.]+) eV", proc.stdout)
    quality = [ln for ln in proc.stdout.splitlines() if ln.startswith("quality:")]
    return dict(
        command=" ".join(cmd[: cmd.index("--json")] + ["--json", "OUT.json"]),
        exit_code=proc.returncode,
        stdout=proc.stdout,
        stderr=proc.stderr[-4000:],
        json=payload,
        e0=float(e0.group(1)) if e0 else None,
        quality_line=quality[-1] if quality else "(no quality line)",
        wall_s=wall,
    )


def larch_chi(energy: np.ndarray, mu: np.ndarray):
    """larch's own processing: pre_edge (defaults), autobk rbkg 1.0, kweight 2."""
    from larch import Group
    from larch.xafs import autobk, pre_edge

    g = Group(energy=np.asarray(energy, float), mu=np.asarray(mu, float))
    pre_edge(g)
    autobk(g, rbkg=1.0, kweight=2)
    return g


def shell_path_files(folder: Path, shells: list[tuple]) -> list[Path]:
    """The single-scattering path file of the same pair with the nearest reff, per truth shell."""
    from xafs_stream.io.feff import read_feff_dir

    pset = read_feff_dir(folder)
    ss = [p for p in pset.paths if p.is_single_scattering]
    out = []
    for pair, _n, r in shells:
        cands = [p for p in ss if p.pair == pair]
        best = min(cands, key=lambda p: abs(p.reff - r))
        out.append(Path(best.metadata["file"]))
    return out


def run_feffit(group, files: list[Path], shells: list[tuple], s: dict) -> dict:
    """feffit with one path per shell: free N (degen 1, amplitude S0²·N), ΔR, σ²; one shared ΔE0."""
    from larch import Group
    from larch.fitting import param, param_group
    from larch.xafs import feffit, feffit_dataset, feffit_transform, feffpath

    pars = dict(de0=param(0.0, vary=True))
    paths = {}
    reffs = []
    for i, (fname, (_pair, n, _r)) in enumerate(zip(files, shells)):
        pars[f"n{i}"] = param(float(n), vary=True, min=0.0)
        pars[f"dr{i}"] = param(0.0, vary=True, min=-0.25, max=0.25)
        pars[f"ss{i}"] = param(0.006, vary=True, min=-0.005, max=0.05)
        p = feffpath(
            str(fname), label=f"p{i}", degen=1, s02=f"{s['s02']:g}*n{i}", e0="de0",
            sigma2=f"ss{i}", deltar=f"dr{i}",
        )  # fmt: skip
        paths[f"p{i}"] = p
        reffs.append(p.reff)
    trans = feffit_transform(
        kmin=s["kmin"], kmax=s["kmax"], kw=s["kweight"], dk=s["dk"], window="hanning",
        rmin=s["rmin"], rmax=s["rmax"], fitspace="r",
    )  # fmt: skip
    data = Group(k=np.asarray(group.k, float), chi=np.asarray(group.chi, float))
    t0 = time.perf_counter()
    out = feffit(param_group(**pars), feffit_dataset(data=data, paths=paths, transform=trans))
    wall = time.perf_counter() - t0
    P = out.params

    def val(name, offset=0.0):
        v, e = P[name].value, P[name].stderr
        return float(v) + offset, (float(e) if e is not None else float("nan"))

    def at_bound(name):
        p = P[name]
        scale = max(abs(p.value), 1e-3) * 1e-4
        return any(b is not None and math.isfinite(b) and abs(p.value - b) <= scale for b in (p.min, p.max))

    fitted = []
    for i, (pair, _n, r_true) in enumerate(shells):
        n, n_err = val(f"n{i}")
        r, r_err = val(f"dr{i}", reffs[i])
        s2, s2_err = val(f"ss{i}")
        bounds = [q for q, nm in (("N", f"n{i}"), ("R", f"dr{i}"), ("sigma2", f"ss{i}")) if at_bound(nm)]
        fitted.append(
            dict(pair=pair, r_true=r_true, path=files[i].name, reff=reffs[i], n=n, n_err=n_err, r=r,
                 r_err=r_err, sigma2=s2, sigma2_err=s2_err, at_bound=bounds)
        )  # fmt: skip
    de0, de0_err = val("de0")
    return dict(
        shells=fitted,
        de0=de0,
        de0_err=de0_err,
        rfactor=float(out.rfactor),
        redchi=float(out.chi2_reduced),
        n_independent=float(out.n_independent),
        n_varys=int(out.nvarys),
        wall_s=wall,
    )


def match(ours: list[dict], truth: list[tuple]) -> dict[int, int]:
    """truth index -> our shell index: same pair, |ΔR| <= MATCH_TOL, one to one, closest pairs first."""
    cand = sorted(
        (abs(o["r"] - t[2]), ti, oi)
        for ti, t in enumerate(truth)
        for oi, o in enumerate(ours)
        if o["pair"] == t[0] and abs(o["r"] - t[2]) <= MATCH_TOL
    )
    used_t, used_o, out = set(), set(), {}
    for _, ti, oi in cand:
        if ti not in used_t and oi not in used_o:
            out[ti] = oi
            used_t.add(ti)
            used_o.add(oi)
    return out


def agree(a, ea, b, eb) -> str:
    vals = [a, ea, b, eb]
    if any(v is None or not math.isfinite(v) for v in vals):
        return "?"
    return "y" if abs(a - b) <= math.hypot(ea, eb) else "n"


def fmt(v, e, nd, bound=False) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    es = f"{e:.{nd}f}" if e is not None and math.isfinite(e) else "nan"
    return f"{v:.{nd}f}±{es}" + ("!" if bound else "")


def one_run(name: str, comp: dict, setting: str, workdir: Path, larch_group) -> dict:
    spectrum = spectrum_file(comp["spectrum"])
    from xafs_stream.data import FEFF_DIR

    folder = FEFF_DIR / comp["paths"]
    options = None if setting == "defaults" else comp["larch_like"]
    cli = run_cli(spectrum, folder, options, workdir, f"{name}_{setting}")
    payload = cli["json"]
    if payload is not None:
        st = payload["settings"]
        s = {key: float(st[key]) for key in ("kmin", "kmax", "kweight", "dk", "rmin", "rmax", "s02")}
        ours = payload["shells"]
    else:  # the CLI failed before writing its JSON: give feffit the nominal settings (kmax to the data)
        s = dict(options or DEFAULTS)
        top = float(larch_group.k[-1]) - s["dk"] / 2.0
        s["kmax"] = min(s["kmax"], float(int(top * 2.0) / 2.0))
        ours = []
    inside = [t for t in comp["truth"] if s["rmin"] <= t[2] <= s["rmax"]]
    files = shell_path_files(folder, inside)
    try:
        ff = run_feffit(larch_group, files, inside, s)
        ff_error = None
    except Exception as exc:  # a failed reference fit is recorded, not fatal
        ff, ff_error = None, f"{type(exc).__name__}: {exc}"
    m = match(ours, inside)
    rows = []
    for ti, t in enumerate(inside):
        f = ff["shells"][ti] if ff else None
        o = ours[m[ti]] if ti in m else None
        row = dict(
            status="matched" if o else "missing", pair=t[0], n_true=t[1], r_true=t[2], ours=o, feffit=f
        )
        if o and f:
            row["agree"] = dict(
                N=agree(o["n"], o["n_err"], f["n"], f["n_err"]),
                R=agree(o["r"], o["r_err"], f["r"], f["r_err"]),
                sigma2=agree(o["sigma2"], o["sigma2_err"], f["sigma2"], f["sigma2_err"]),
            )
        rows.append(row)
    matched = set(m.values())
    for oi, o in enumerate(ours):
        if oi not in matched:
            rows.append(dict(status="extra", pair=o["pair"], n_true=None, r_true=None, ours=o, feffit=None))
    return dict(
        compound=name,
        setting=setting,
        spectrum=str(spectrum),
        paths=str(folder.relative_to(ROOT)),
        settings=s,
        truth_in_range=[list(t) for t in inside],
        feffit_paths=[f.name for f in files],
        cli={k: v for k, v in cli.items() if k != "json"},
        spm=None
        if payload is None
        else dict(
            shells=ours,
            de0=payload.get("de0"),
            de0_err=payload.get("de0_err"),
            r_factor=payload.get("r_factor"),
            redchi=payload.get("redchi"),
            n_independent=payload.get("n_independent"),
            quality=payload.get("quality"),
            quality_reasons=payload.get("quality_reasons"),
        ),
        feffit=ff,
        feffit_error=ff_error,
        larch_e0=float(larch_group.e0),
        rows=rows,
    )


def print_table(results: list[dict]) -> None:
    head = (
        f"{'compound':8s} {'setting':10s} {'shell':12s} {'truth':>9s} | {'SpM N':>11s} {'SpM R/Å':>15s} "
        f"{'SpM σ²/Å²':>15s} | {'feffit N':>11s} {'feffit R/Å':>15s} {'feffit σ²/Å²':>15s} | agree N R σ²"
    )
    print(head)
    print("-" * len(head))
    for res in results:
        for row in res["rows"]:
            o, f = row["ours"] or {}, row["feffit"] or {}
            fb = f.get("at_bound", [])
            truth = f"{row['n_true']}@{row['r_true']:.3f}" if row["r_true"] is not None else "-"
            label = f"{row['pair']}" + ("" if row["status"] == "matched" else f" {row['status']}")
            ag = row.get("agree")
            ag = f"{ag['N']} {ag['R']} {ag['sigma2']}" if ag else "-"
            print(
                f"{res['compound']:8s} {res['setting']:10s} {label:12s} {truth:>9s} | "
                f"{fmt(o.get('n'), o.get('n_err'), 2):>11s} {fmt(o.get('r'), o.get('r_err'), 3):>15s} "
                f"{fmt(o.get('sigma2'), o.get('sigma2_err'), 4):>15s} | "
                f"{fmt(f.get('n'), f.get('n_err'), 2, 'N' in fb):>11s} "
                f"{fmt(f.get('r'), f.get('r_err'), 3, 'R' in fb):>15s} "
                f"{fmt(f.get('sigma2'), f.get('sigma2_err'), 4, 'sigma2' in fb):>15s} | {ag}"
            )
        s, spm, ff = res["settings"], res["spm"], res["feffit"]
        rf_o = f"{spm['r_factor']:.4f}" if spm and spm["r_factor"] is not None else "-"
        rf_f = f"{ff['rfactor']:.4f}" if ff else f"failed ({res['feffit_error']})"
        e0_o = f"{res['cli']['e0']:.1f}" if res["cli"]["e0"] else "-"
        de0_o = fmt(spm["de0"], spm["de0_err"], 2) if spm else "-"
        de0_f = fmt(ff["de0"], ff["de0_err"], 2) if ff else "-"
        print(
            f"{'':8s} {res['setting']:10s} k {s['kmin']:g}-{s['kmax']:g} kw {s['kweight']:g} dk {s['dk']:g} "
            f"R {s['rmin']:g}-{s['rmax']:g} S0² {s['s02']:g} | R-factor SpM {rf_o}, feffit {rf_f} | "
            f"E0 SpM {e0_o} (ΔE0 {de0_o}), larch {res['larch_e0']:.1f} (ΔE0 {de0_f}) eV"
        )
        counts = Counter(r["status"] for r in res["rows"])
        print(
            f"{'':8s} {res['setting']:10s} exit {res['cli']['exit_code']}, {res['cli']['quality_line']}; "
            f"missing {counts['missing']}, extra {counts['extra']}; "
            f"feffit paths {', '.join(res['feffit_paths'])}; "
            f"time SpM {res['cli']['wall_s']:.1f} s, feffit {ff['wall_s'] if ff else float('nan'):.1f} s"
        )
        print()


def code_state() -> dict:
    """Git commit, and the uncommitted changes of the SpM engine/CLI the run used (edited concurrently)."""
    import hashlib

    def git(*a):
        try:
            return subprocess.run(
                ["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    digest = hashlib.sha256()
    for f in sorted((ROOT / "xafs_stream" / "engines" / "spm").glob("*.py")) + [
        ROOT / "xafs_stream/cli/spm.py"
    ]:
        digest.update(f.name.encode() + f.read_bytes())
    return dict(
        commit=git("rev-parse", "HEAD"),
        dirty_spm=git(
            "status", "--porcelain", "xafs_stream/engines/spm", "xafs_stream/cli/spm.py"
        ).splitlines(),
        spm_sources_sha256=digest.hexdigest()[:16],
    )


def finite(obj):
    """``obj`` with NaN/inf floats as None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--make-paths", action="store_true", help="rebuild the three packaged FEFF path sets first"
    )
    ap.add_argument("--only", nargs="+", choices=sorted(COMPOUNDS), help="run only these compounds")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.make_paths:
        make_path_sets()
    warnings.simplefilter("ignore")
    import larch

    t_start = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, comp in COMPOUNDS.items():
            if args.only and name not in args.only:
                continue
            energy, mu = read_mu(spectrum_file(comp["spectrum"]), comp["mu"])
            group = larch_chi(energy, mu)
            for setting in ("defaults", "larch-like"):
                results.append(one_run(name, comp, setting, Path(tmp), group))
    total = time.perf_counter() - t_start
    print_table(results)
    print(
        "! = feffit parameter at a bound (N >= 0, |ΔR| <= 0.25 Å, -0.005 <= σ² <= 0.05 Å²): "
        "its error is not meaningful"
    )
    print(f"total {total:.1f} s")
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(
        benchmark="spm_compounds",
        time=time.time(),
        machine=platform.node(),
        python=platform.python_version(),
        larch=larch.__version__,
        cpus=os.cpu_count(),
        total_s=total,
        match_tol_A=MATCH_TOL,
        code=code_state(),
        results=results,
    )
    OUT_JSON.write_text(json.dumps(finite(payload), indent=1))
    print(f"wrote {OUT_JSON.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
