"""``xafs-stream analyze FILE [FILE...] [--plot out.png] [--json]``: preprocess spectrum files.

The live service's ``xafs.normalize`` analysis on files: the same chain, settings (one option per setting
of ``[analysis."xafs.normalize"]``) and verdict. Prints per file E0 (eV), edge step, χ(k) noise, the k
range and a line ``quality: ok|warn|bad (reasons)``; ``--plot`` draws, per file, μ(E) with the
pre-edge line and post-edge curve, k^w·χ(k) and |χ(R)| (Athena / Larch style). Scans that end less than
3 Å⁻¹ above E0 (XANES only) get E0 and the edge step only. A file that fails is reported on stderr and the
others are still analysed (exit code 2 if any failed, 3 if any verdict is bad).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# options with their own help text; every other field of ProcessSettings gets --<field-name>
_HELP = {
    "e0": "edge energy, eV (default: maximum of dμ/dE)",
    "rbkg": "AUTOBK Rbkg, Å (default 1.0)",
    "kmin": "FT window start, Å⁻¹ (default 3)",
    "kmax": "FT window end, Å⁻¹ (default: end of data - 1, rounded down to 0.5)",
    "kweight": "k-weight of χ(k) for the FT and plot (default 2)",
    "dk": "FT window taper, Å⁻¹ (default 1)",
    "window": "FT window (hanning, kaiser, parzen, welch, sine, gaussian)",
    "deglitch": "replace single-point glitches by interpolation before processing",
}


def add_processing_options(p: argparse.ArgumentParser) -> None:
    """One option per field of :class:`~xafs_stream.engines.xafs.ProcessSettings` (the same settings as
    ``[analysis."xafs.normalize"]``), default None: the engine's default applies."""
    from dataclasses import fields

    from ..engines.xafs import ProcessSettings

    group = p.add_argument_group("processing (the same settings as [analysis.\"xafs.normalize\"])")
    for f in fields(ProcessSettings):
        flag = "--" + f.name.replace("_", "-")
        help_text = _HELP.get(f.name, f"{f.name} (default {f.default})")
        if f.type == "bool":
            group.add_argument(flag, dest=f.name, action="store_true", default=None, help=help_text)
        else:
            kind = str if "str" in f.type else int if f.type.startswith("int") else float
            group.add_argument(flag, dest=f.name, type=kind, default=None, help=help_text)


def processing_config(args: argparse.Namespace) -> dict:
    """The ``[analysis."xafs.normalize"]``-style settings given on the command line."""
    from ..engines.xafs import ProcessSettings

    return {name: getattr(args, name) for name in ProcessSettings.names() if getattr(args, name, None) is not None}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="E0, normalisation, χ(k), χ(R) and noise of spectrum files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--chi", action="store_true",
                   help="FILE holds χ(k) (columns k, chi); recognised without this when the header names k and chi")
    p.add_argument("files", nargs="+", metavar="FILE", help="XDI or column files (energy in eV, μ or I0/It)")
    p.add_argument("--plot", metavar="PNG", help="write a figure: μ(E) with pre/post lines, k^w χ(k), |χ(R)|")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--mu-column", help="column to use as μ (default: a mu-like column or ln(I0/It))")
    p.add_argument("--energy-column", help="column to use as energy (default: the one the header calls energy)")
    add_processing_options(p)
    p.set_defaults(func=run)


@dataclass
class _FileResult:
    name: str
    result: object  # AnalysisResult of xafs.normalize

    @property
    def arrays(self) -> dict:
        return self.result.arrays

    def row(self, path: str) -> dict:
        return {"file": path, **self.result.summary, "quality": self.result.verdict,
                "quality_reasons": list(self.result.verdict_reasons)}


def _analyse(path: str, args: argparse.Namespace) -> _FileResult:
    """The live service's analysis (``xafs.normalize``) on one file: the same chain, settings and verdict.
    A χ(k) file (columns k and chi, or ``--chi``) gets the FT and noise steps of the same chain."""
    from ..analyses.preprocess import normalize_spectrum
    from ..core import WorkUnit
    from ..io.spectrum_file import read_chi_or_spectrum

    spec, chi_data = read_chi_or_spectrum(path, force_chi=args.chi, mu_column=args.mu_column,
                                          energy_column=args.energy_column)
    if chi_data is not None:
        return _FileResult(Path(path).name, _analyse_chi(*chi_data, args))
    unit = WorkUnit("analyze", "spectrum", 0, {"energy": spec.energy, "mu": spec.mu},
                    {"energy_guessed": spec.energy_guessed})
    return _FileResult(Path(path).name, normalize_spectrum(unit, {}, processing_config(args)))


def _analyse_chi(k: np.ndarray, chi: np.ndarray, args: argparse.Namespace):
    """An AnalysisResult for a χ(k) file: FT k range, noise, suggested kmax and the k-range verdict."""
    from ..core import AnalysisResult
    from ..engines.xafs import ProcessSettings
    from ..engines.xafs.process import process_chi
    from ..engines.xafs.verdict import judge_chi

    settings = ProcessSettings.from_mapping(processing_config(args))
    proc = process_chi(k, chi, settings)
    verdict = judge_chi(proc)
    summary = {"input": "chi", "e0": None, "edge_step": None, "has_exafs": True, "noise_chi": float(proc.noise_chi),
               "noise_chir": float(proc.noise_chir), "kmin": float(proc.kmin), "kmax": float(proc.kmax),
               "kmax_suggest": float(proc.kmax_suggest), "kmax_data": proc.k_data}
    arrays = {"k": proc.k, "chi": proc.chi, "r": proc.ft.r, "chir_mag": proc.ft.chir_mag,
              "chir_re": proc.ft.chir_re}
    return AnalysisResult(summary=summary, arrays=arrays, verdict=verdict.level,
                          verdict_reasons=list(verdict.reasons))


def _plot(results: list[_FileResult], out: str, kweight: float) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.4 * len(results)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(results), 3, squeeze=False)
    kw = f"{kweight:g}"
    for row, res in zip(axes, results):
        a, sm = res.arrays, res.result.summary
        ax = row[0]
        if sm.get("input") == "chi":
            ax.text(0.5, 0.5, f"{res.name}: χ(k) file (no μ(E)); quality {res.result.verdict}", ha="center",
                    va="center", transform=ax.transAxes)
            ax.set_axis_off()
        else:
            _plot_mu(ax, res, a, sm)
        if not sm["has_exafs"]:
            for ax in row[1:]:
                ax.text(0.5, 0.5, f"XANES only: data end at k = {sm['kmax_data']:.2f} Å⁻¹", ha="center",
                        va="center", transform=ax.transAxes)
                ax.set_axis_off()
            continue
        k = a["k"]
        kchi = a["chi"] * k**kweight
        ax = row[1]
        ax.plot(k, kchi, "k", lw=1.2)
        inside = (k >= sm["kmin"]) & (k <= sm["kmax"])
        ax.axvspan(sm["kmin"], sm["kmax"], color="c", alpha=0.1, label="FT range")
        ax.set(xlabel="k (Å⁻¹)", ylabel=f"k^{kw} χ(k) (Å^-{kw})", title=f"χ(k), k {sm['kmin']:g}-{sm['kmax']:g} Å⁻¹",
               ylim=(-1.2 * max(1e-12, np.abs(kchi[inside]).max()), 1.2 * max(1e-12, np.abs(kchi[inside]).max())))
        ax.legend(fontsize=7)
        ax = row[2]
        ax.plot(a["r"], a["chir_mag"], "k", lw=1.2, label="|χ(R)|")
        ax.plot(a["r"], a["chir_re"], "b", lw=0.6, alpha=0.6, label="Re")
        ax.set(
            xlabel="R (Å)",
            ylabel=f"|χ(R)| (Å^-{float(kweight) + 1:g})",
            xlim=(0, 6),
            title="|χ(R)| (not phase-corrected)",
        )
        ax.legend(fontsize=7)
    fig.savefig(out, dpi=110)


def _plot_mu(ax, res: _FileResult, a: dict, sm: dict) -> None:
    ax.plot(a["energy"], a["mu"], "k", lw=1.2, label="μ(E)")
    ax.plot(a["energy"], a["pre_edge_line"], "b--", lw=1, label="pre-edge")
    ax.plot(a["energy"], a["post_edge_curve"], "r--", lw=1, label="post-edge")
    ax.axvline(sm["e0"], color="g", lw=0.8, label=f"E0 = {sm['e0']:.2f} eV")
    ax.set(xlabel="E (eV)", ylabel="μ(E)", title=f"{res.name}  (step {sm['edge_step']:.4g}, "
           f"quality {res.result.verdict})")
    ax.legend(fontsize=7)


def _print_table(rows: list[dict]) -> None:
    from ..engines.verdict import quality_line

    ok_rows = [row for row in rows if "error" not in row]
    if not ok_rows:
        return
    width = max(len(Path(row["file"]).name) for row in ok_rows)
    print(
        f"{'file':<{width}}  {'E0 (eV)':>10}  {'edge step':>10}  {'noise χ(k)':>10}  {'k range (1/Å)':>14}"
        f"  {'k data':>7}  quality"
    )
    for row in ok_rows:
        if row["has_exafs"]:
            noise, krange = f"{row['noise_chi']:.2e}", f"{row['kmin']:g}-{row['kmax']:g}"
        else:
            noise, krange = "-", "XANES only"
        e0, step = ((f"{row['e0']:>10.2f}", f"{row['edge_step']:>10.4g}") if row.get("input") != "chi"
                    else (f"{'χ(k) file':>10}", f"{'-':>10}"))
        print(
            f"{Path(row['file']).name:<{width}}  {e0}  {step}  {noise:>10}  "
            f"{krange:>14}  {row['kmax_data']:>7.2f}  {row['quality']}"
        )
    for row in ok_rows:
        prefix = f"{Path(row['file']).name}: " if len(ok_rows) > 1 else ""
        print(prefix + quality_line(row["quality"], row["quality_reasons"]))


def run(args: argparse.Namespace) -> int:
    from ..engines.errors import InputError
    from .common import strict_json
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
        print(strict_json(rows))
    else:
        _print_table(rows)
    if args.plot:
        if not done:
            raise CliError("--plot: no file could be analysed, nothing to draw")
        _plot(done, args.plot, args.kweight if args.kweight is not None else 2.0)
        if not args.json:
            print(f"plot written to {args.plot}")
    if len(done) < len(args.files):
        return 2
    return 3 if any(res.result.verdict == "bad" for res in done) else 0
