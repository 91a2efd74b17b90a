"""``xafs-stream analyze FILE [FILE...] [--plot out.png] [--json]``: preprocess spectrum files.

Prints per file E0 (eV), edge step, χ(k) noise and the k range; ``--plot`` draws, per file, μ(E) with the
pre-edge line and post-edge curve, k^w·χ(k) and |χ(R)| (Athena / Larch style). Scans that end less than
3 Å⁻¹ above E0 (XANES only) get E0 and the edge step only. A file that fails is reported on stderr and the
others are still analysed (exit code 2 if any failed).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_MIN_EXAFS_K = 3.0  # Å⁻¹ of data above E0 before χ(k) is extracted


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="E0, normalisation, χ(k), χ(R) and noise of spectrum files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="XDI or column files (energy in eV, μ or I0/It)")
    p.add_argument("--plot", metavar="PNG", help="write a figure: μ(E) with pre/post lines, k^w χ(k), |χ(R)|")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--mu-column", help="column to use as μ (default: a mu-like column or ln(I0/It))")
    p.add_argument("--e0", type=float, help="edge energy, eV (default: maximum of dμ/dE)")
    p.add_argument("--rbkg", type=float, default=1.0, help="AUTOBK Rbkg, Å (default 1.0)")
    p.add_argument("--kmin", type=float, default=3.0, help="FT window start, Å⁻¹ (default 3)")
    p.add_argument("--kmax", type=float, help="FT window end, Å⁻¹ (default: end of data - 1)")
    p.add_argument(
        "--kweight", type=float, default=2, help="k-weight of χ(k) for the FT and plot (default 2)"
    )
    p.add_argument("--dk", type=float, default=1.0, help="FT window taper, Å⁻¹ (default 1)")
    p.add_argument(
        "--window", default="hanning", help="FT window (hanning, kaiser, parzen, welch, sine, gaussian)"
    )
    p.set_defaults(func=run)


@dataclass
class _FileResult:
    name: str
    energy: np.ndarray
    mu: np.ndarray
    pre: object  # PreEdgeResult
    full: object | None  # ProcessedSpectrum, None for XANES-only scans
    k_data: float

    def row(self, path: str) -> dict:
        row = {
            "file": path,
            "e0": round(float(self.pre.e0), 4),
            "edge_step": float(self.pre.edge_step),
            "k_data_max": round(self.k_data, 3),
            "exafs": self.full is not None,
        }
        if self.full is not None:
            row.update(
                noise_chi=float(self.full.noise_chi),
                kmin=float(self.full.kmin),
                kmax=float(self.full.kmax),
                kmax_suggest=float(self.full.kmax_suggest),
            )
        return row


def _analyse(path: str, args: argparse.Namespace) -> _FileResult:
    from ..engines.xafs import pre_edge, process_spectrum
    from ..engines.xafs.kspace import ETOK
    from ..engines.xafs.process import default_ft_kmax
    from ..io import read_spectrum

    spec = read_spectrum(path, mu_column=args.mu_column)
    pre = pre_edge(spec.energy, spec.mu, e0=args.e0)
    k_data = float(np.sqrt(max(pre.energy[-1] - pre.e0, 0.0) * ETOK))
    kmax = args.kmax if args.kmax is not None else default_ft_kmax(k_data)
    full = None
    if k_data >= _MIN_EXAFS_K and kmax > args.kmin:
        full = process_spectrum(
            spec.energy,
            spec.mu,
            e0=args.e0,
            rbkg=args.rbkg,
            kmin=args.kmin,
            kmax=args.kmax,
            kweight=args.kweight,
            dk=args.dk,
            window=args.window,
        )
    return _FileResult(Path(path).name, pre.energy, np.asarray(spec.mu, float), pre, full, k_data)


def _plot(results: list[_FileResult], out: str, kweight: float) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.4 * len(results)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(results), 3, squeeze=False)
    kw = f"{kweight:g}"
    for row, res in zip(axes, results):
        pre = res.pre
        ax = row[0]
        ax.plot(res.energy, res.mu, "k", lw=1.2, label="μ(E)")
        ax.plot(res.energy, pre.pre_edge_line, "b--", lw=1, label="pre-edge")
        ax.plot(res.energy, pre.post_edge_curve, "r--", lw=1, label="post-edge")
        ax.axvline(pre.e0, color="g", lw=0.8, label=f"E0 = {pre.e0:.2f} eV")
        ax.set(xlabel="E (eV)", ylabel="μ(E)", title=f"{res.name}  (step {pre.edge_step:.4g})")
        ax.legend(fontsize=7)
        r = res.full
        if r is None:
            for ax in row[1:]:
                ax.text(
                    0.5,
                    0.5,
                    f"XANES only: data end at k = {res.k_data:.2f} Å⁻¹",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                )
                ax.set_axis_off()
            continue
        kchi = r.chi * r.k**kweight
        ax = row[1]
        ax.plot(r.k, kchi, "k", lw=1.2)
        ax.plot(r.k, r.ft.kwin[: r.k.size] * max(1e-12, np.abs(kchi).max()), "c", lw=0.8, label="window")
        ax.set(xlabel="k (Å⁻¹)", ylabel=f"k^{kw} χ(k) (Å^-{kw})", title=f"χ(k), k {r.kmin:g}-{r.kmax:g} Å⁻¹")
        ax.legend(fontsize=7)
        ax = row[2]
        ax.plot(r.r, r.chir_mag, "k", lw=1.2, label="|χ(R)|")
        ax.plot(r.r, r.chir_re, "b", lw=0.6, alpha=0.6, label="Re")
        ax.set(
            xlabel="R (Å)",
            ylabel=f"|χ(R)| (Å^-{float(kweight) + 1:g})",
            xlim=(0, 6),
            title="|χ(R)| (not phase-corrected)",
        )
        ax.legend(fontsize=7)
    fig.savefig(out, dpi=110)


def _print_table(rows: list[dict]) -> None:
    ok_rows = [row for row in rows if "error" not in row]
    if not ok_rows:
        return
    width = max(len(Path(row["file"]).name) for row in ok_rows)
    print(
        f"{'file':<{width}}  {'E0 (eV)':>10}  {'edge step':>10}  {'noise χ(k)':>10}  {'k range (1/Å)':>14}"
        f"  {'k data':>7}"
    )
    for row in ok_rows:
        if row["exafs"]:
            noise, krange = f"{row['noise_chi']:.2e}", f"{row['kmin']:g}-{row['kmax']:g}"
        else:
            noise, krange = "-", "XANES only"
        print(
            f"{Path(row['file']).name:<{width}}  {row['e0']:>10.2f}  {row['edge_step']:>10.4g}  {noise:>10}  "
            f"{krange:>14}  {row['k_data_max']:>7.2f}"
        )


def run(args: argparse.Namespace) -> int:
    from ..engines.errors import InputError
    from .errors import CliError

    rows: list[dict] = []
    done: list[_FileResult] = []
    for path in args.files:
        try:
            res = _analyse(path, args)
        except (InputError, OSError) as exc:
            rows.append({"file": path, "error": str(exc)})
            message = str(exc) if path in str(exc) else f"{path}: {exc}"
            print(f"xafs-stream analyze: error: {message}", file=sys.stderr)
            continue
        done.append(res)
        rows.append(res.row(path))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    if args.plot:
        if not done:
            raise CliError("--plot: no file could be analysed, nothing to draw")
        _plot(done, args.plot, args.kweight)
        if not args.json:
            print(f"plot written to {args.plot}")
    return 2 if len(done) < len(args.files) else 0
