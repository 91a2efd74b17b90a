"""``xafs-stream spm FILE --paths DIR``: EXAFS sparse modeling of one spectrum; prints the shell table.

FILE is a μ(E) file (XDI or columns: E0, normalisation and AUTOBK are run with the project's preprocessing
engine) or a χ(k) file (two columns k, chi; recognised by column names ``k``/``chi``, by a first column that
runs from ~0 to < 30, or forced with ``--chi``).

Ends with the verdict line ``quality: ok|warn|bad (reasons)`` (thresholds: ``xafs_stream.engines.verdict``);
the exit code is 3 when the verdict is bad, 1 when the fit failed outright.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import strict_json
from .errors import CliError


def add_fit_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``spm`` and ``einstein``."""
    from ..io.feff import packaged_path_sets

    p.add_argument(
        "--paths",
        required=True,
        help="FEFF path set: a folder of FEFF path files whatever their names (feffNNNN.dat, larch's "
        f"feff_*.dat), or packaged:<name> (packaged: {', '.join(packaged_path_sets())})",
    )
    p.add_argument("--kmin", type=float, default=3.0, help="k range start, 1/Å (default 3)")
    p.add_argument(
        "--kmax",
        type=float,
        default=14.0,
        help="k range end, 1/Å (default 14, lowered to the end of the data)",
    )
    p.add_argument("--kweight", type=float, default=2.0, help="k weight (default 2)")
    p.add_argument("--dk", type=float, default=1.0, help="Hanning window taper, 1/Å (default 1)")
    p.add_argument(
        "--rrange",
        nargs=2,
        type=float,
        default=(1.4, 3.2),
        metavar=("RMIN", "RMAX"),
        help="R range of the fit and of the candidate distances, Å (default 1.4 3.2)",
    )
    p.add_argument("--space", choices=("r", "k"), default="r", help="fit space (default r: windowed FT)")
    p.add_argument("--s02", type=float, default=1.0, help="S0² (fixed; default 1: N is N·S0²)")
    p.add_argument("--pairs", nargs="+", metavar="PAIR", help="restrict to these pairs, e.g. Fe-O Fe-Fe")
    p.add_argument(
        "--bootstrap", type=int, default=0, metavar="N", help="bootstrap refits over k (default 0)"
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap random seed (default 0)")
    p.add_argument("--split-test", choices=("auto", "on", "off"), default="auto",
                   help="try two sub-shells for a strong shell: auto (default) where the path set has two or "
                        "more distances of the pair near it, on for every strong shell, off")
    p.add_argument("--structure-window", type=_positive_or_off, default=0.35, metavar="Å|off",
                   help="candidates of a pair only within this of one of its FEFF paths (default 0.35 Å); "
                        "off: any distance (for a path set that is not a model of the sample)")
    p.add_argument("--max-n-factor", type=_positive_or_off, default=1.5, metavar="F|off",
                   help="a shell with N above F times the path set's neighbours near its R is rejected "
                        "(default 1.5; off: no limit)")
    p.add_argument("--chi", action="store_true", help="FILE holds χ(k) (columns k, chi)")
    p.add_argument("--mu-column", help="column to use as μ in a multi-column μ(E) file")


def _positive_or_off(text: str) -> float | None:
    if text.strip().lower() in ("off", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or 'off', got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number > 0 or 'off', got {text!r}")
    return value


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "spm",
        help="EXAFS sparse modeling: shell table from a spectrum and FEFF paths",
        description="Sparse modeling of EXAFS: a non-negative LASSO over candidate neighbours (pair, R, σ²) "
        "with the regularisation chosen by cross-validation, then least-squares shells with "
        "standard errors.",
    )
    p.add_argument("file", help="μ(E) file (XDI/columns) or χ(k) file (k, chi)")
    add_fit_arguments(p)
    p.add_argument("--plot", metavar="PNG", help="write a figure: sparse N(R, σ²), χ(k) and |χ(R)| fits")
    p.add_argument("--json", metavar="FILE", help="write shells and fit statistics as JSON")
    p.set_defaults(func=run)


def load_chi(path: str, *, force_chi: bool = False, mu_column: str | None = None):
    """(k, chi, description) from a χ(k) or μ(E) file."""
    return load_chi_judged(path, force_chi=force_chi, mu_column=mu_column)[:3]


def load_chi_judged(path: str, *, force_chi: bool = False, mu_column: str | None = None):
    """(k, chi, description, verdict) from a χ(k) or μ(E) file; the verdict on the μ(E) processing, None
    for a χ(k) file."""
    from ..io.spectrum_file import read_chi_or_spectrum

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    spec, chi_data = read_chi_or_spectrum(path, force_chi=force_chi, mu_column=mu_column)
    if chi_data is not None:
        return chi_data[0], chi_data[1], "χ(k) file", None
    from ..engines.errors import InputError
    from ..engines.xafs import process_spectrum
    from ..engines.xafs.verdict import judge_processing

    try:
        proc = process_spectrum(spec.energy, spec.mu)
    except InputError as exc:
        raise CliError(
            f"{path}: read as μ(E), but preprocessing failed ({exc}); for a χ(k) file use --chi"
        ) from exc
    return (proc.k, proc.chi, f"μ(E) file, E0 = {proc.e0:.1f} eV (AUTOBK Rbkg 1 Å)",
            judge_processing(proc, energy_guessed=spec.energy_guessed))


def fit_settings(args, k) -> dict:
    """Engine settings from the parsed options (kmax lowered to the data when needed)."""
    kmax = args.kmax
    top = float(k[-1]) - (args.dk / 2.0 if args.space == "r" else 0.0)
    if kmax > top:
        kmax = float(int(top * 2.0) / 2.0)
    if kmax - args.kmin < 2.0:
        raise CliError(f"k range {args.kmin}-{kmax} 1/Å is too short (the data end at {k[-1]:.2f} 1/Å)")
    rmin, rmax = args.rrange
    out = dict(
        kmin=args.kmin,
        kmax=kmax,
        kweight=args.kweight,
        dk=args.dk,
        space=args.space,
        rmin=rmin,
        rmax=rmax,
        s02=args.s02,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        split_test=args.split_test,
        structure_window=args.structure_window,
        max_n_factor=args.max_n_factor,
    )
    if args.pairs:
        out["pairs"] = tuple(args.pairs)
    return out


def load_paths(spec: str):
    from ..io.feff import read_feff_dir

    return read_feff_dir(spec)


def run(args) -> int:
    import numpy as np

    from ..engines.spm import spm_fit
    from ..engines.spm.verdict import judge_spm

    k, chi, what, processing = load_chi_judged(args.file, force_chi=args.chi, mu_column=args.mu_column)
    pset = load_paths(args.paths)
    settings = fit_settings(args, k)
    with np.errstate(all="ignore"):  # overflow in a hopeless fit is reported by the verdict, not by numpy
        res = spm_fit(k, chi, pset.paths, **settings)
    verdict = judge_spm(res)
    if processing is not None:
        verdict.merge(processing, prefix="μ(E): ")
    print(
        f"{args.file}: {what}; paths {pset.name} ({len(pset.single_scattering())} single-scattering of "
        f"{len(pset.paths)})"
    )
    print(
        f"k {settings['kmin']:g}-{settings['kmax']:g} 1/Å, k-weight {settings['kweight']:g}, "
        f"{settings['space']}-space fit, R {settings['rmin']:g}-{settings['rmax']:g} Å, "
        f"{res.diagnostics['n_atoms']} candidates, {res.diagnostics['n_active']} active at the CV α"
    )
    print(res.shell_table())
    notes = []
    if res.diagnostics.get("pruned_shells_r"):
        notes.append(f"dropped as not significant: R = {res.diagnostics['pruned_shells_r']} Å")
    for trial in res.diagnostics.get("split_tests", []):
        if trial["accepted"]:
            notes.append(f"shell at {trial['r']} Å split in two (CV gain {trial['cv_gain_se']:.1f} SE)")
        elif trial.get("reason"):
            notes.append(f"split of the shell at {trial['r']} Å refused: {trial['reason']}")
    for rej in res.diagnostics.get("rejected_shells", []):
        notes.append(f"rejected as implausible: {rej['pair']} N = {rej['n']:.2f} at {rej['r']:.3f} Å "
                     f"({rej['reason']})")
    for note in notes:
        print("note:", note)
    print(verdict.line())
    if args.json:
        payload = dict(
            file=str(args.file),
            paths=pset.name,
            settings={k_: (list(v) if isinstance(v, tuple) else v) for k_, v in settings.items()},
            shells=[s.as_dict() for s in res.shells],
            de0=res.fit.de0,
            de0_err=res.fit.de0_err,
            r_factor=res.fit.r_factor,
            redchi=res.fit.redchi,
            alpha=res.alpha,
            n_independent=res.fit.n_independent,
            rejected_shells=res.diagnostics.get("rejected_shells", []),
            split_tests=res.diagnostics.get("split_tests", []),
            quality=verdict.level,
            quality_reasons=verdict.reasons,
        )
        Path(args.json).write_text(strict_json(payload))
    if args.plot:
        plot_result(res, args.plot, title=Path(args.file).name)
    if not np.isfinite(res.fit.r_factor):
        return 1
    return 3 if verdict.level == "bad" else 0


def plot_result(res, out: str, *, title: str = "") -> None:
    """Figure with the sparse distribution, χ(k) and |χ(R)| (data, sparse model, refined fit)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    kw = res.params.get("kweight", 2)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    markers = "osd^v<>"
    for ip, pair in enumerate(res.pairs):
        d = res.distribution[ip]
        ii, jj = np.nonzero(d > 0)
        if ii.size:
            ax.scatter(
                res.r_grid[ii],
                res.sigma2_grid[jj],
                s=20 + 60 * d[ii, jj],
                marker=markers[ip % len(markers)],
                alpha=0.7,
                label=pair,
            )
    for s in res.shells:
        ax.errorbar(s.r, s.sigma2, xerr=s.r_err, yerr=s.sigma2_err, fmt="k+", ms=10)
    ax.set_xlabel("R / Å")
    ax.set_ylabel("σ² / Å²")
    ax.set_title("sparse N(R, σ²) (size ∝ N), + refined shells")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(res.k, res.k**kw * res.chi_data, "k-", lw=1, label="data")
    ax.plot(res.k, res.k**kw * res.chi_sparse, "c--", lw=1, label="sparse model")
    ax.plot(res.k, res.k**kw * res.chi_fit, "r-", lw=1, label="refined fit")
    ax.set_xlabel("k / Å⁻¹")
    ax.set_ylabel(f"k^{kw:g} χ(k)")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(res.r, np.abs(res.chir_data), "k-", lw=1, label="|χ(R)| data")
    ax.plot(res.r, np.abs(res.chir_fit), "r-", lw=1, label="|χ(R)| fit")
    ax.axvspan(res.params["rmin"], res.params["rmax"], color="0.9", zorder=0)
    ax.set_xlabel("R / Å (not phase-corrected)")
    ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
