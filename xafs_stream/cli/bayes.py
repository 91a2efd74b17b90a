"""``xafs-stream bayes FILE``: Bayesian peak decomposition, the number of peaks K chosen by the free energy.

Prints the F(K) table, a line naming the chosen K, the peak table and the verdict line
``quality: ok|warn|bad (reasons)`` (R-hat, exchange rates, K at the top of the range, an undecided K); the
exit code is 3 when the verdict is bad. Models:

- ``xanes`` (default): FILE is a spectrum (XDI or columns). Raw μ(E) is normalised with the project's
  preprocessing engine (``--normalized`` if FILE already holds normalised μ); the fit covers
  ``--xrange`` relative to E0 (default -20:30 eV) with an arctan edge step plus K Gaussian peaks, and the
  pre-edge centroid is reported. As in the live service, K = kmin, kmin + 1, ... are fitted until one does
  not converge (``--every-k`` fits the whole range) and the default sampler is tempered SMC.
- ``peaks``: FILE is a plain two-column x, y file; y is decomposed into K Gaussian peaks with the priors
  of Nagata et al. (2012) scaled to the data's x and y ranges. ``--xrange`` is absolute.
- ``xmcd``: FILE is a plain two-column energy, dichroism file; K signed peaks. ``--xrange`` is absolute.
- ``cluster``: FILE is a plain two-column energy, intensity file; the cluster-model Hamiltonian's Δ range
  is scanned region by region (:mod:`.bayes_cluster`). ``--xrange`` is absolute.

Negative ranges need the ``=`` form or are accepted directly: ``--xrange=-20:30`` or ``--xrange -20:30``.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from ..engines.verdict import THRESHOLDS
from .common import strict_json
from .errors import CliError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bayes",
        help="Bayesian spectroscopy: peaks with K chosen by the free energy (REMC)",
        description="Replica-exchange Monte Carlo over K = kmin..kmax peaks; prints F(K), the chosen K and "
        "the peak table (medians with 68 % / 95 % intervals).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  xafs-stream bayes fe.xdi --model xanes --xrange=-20:30\n"
        "  xafs-stream bayes synthetic.txt --model peaks --kmax 5 --noise 0.1 --plot fit.png\n"
        "  xafs-stream bayes ce3d.txt --model cluster --delta-range=-2:18 --regions 4 --noise 0.2",
    )
    if hasattr(p, "_negative_number_matcher"):
        # let "--xrange -20:30" through (argparse would take "-20:30" for an option otherwise)
        p._negative_number_matcher = re.compile(r"^-\d*\.?\d+(:-?\d*\.?\d+)?$")
    p.add_argument("file", help="spectrum file (xanes) or two-column x, y file (peaks, xmcd)")
    p.add_argument(
        "--model", choices=("xanes", "peaks", "xmcd", "cluster"), default="xanes",
        help="model (default xanes); cluster: Hamiltonian selection over Δ regions"
    )
    p.add_argument(
        "--xrange",
        metavar="A:B",
        help="fit range: eV relative to E0 for xanes (default -20:30), absolute x otherwise (default all)",
    )
    p.add_argument("--kmin", type=int, default=1, help="smallest K (default 1)")
    p.add_argument("--kmax", type=int, default=None, help="largest K (default 5; 4 for xanes and xmcd)")
    p.add_argument(
        "--noise",
        default="auto",
        metavar="S|auto",
        help="noise standard deviation in y units, or auto to estimate it by minimum F (default auto)",
    )
    p.add_argument(
        "--shape",
        choices=("gaussian", "lorentzian", "pseudo_voigt"),
        default="gaussian",
        help="peak shape (default gaussian)",
    )
    p.add_argument("--column", help="xanes: column to use as μ in a multi-column file")
    p.add_argument("--ycol", type=int, default=1, help="peaks/xmcd: 0-based column index of y (default 1)")
    p.add_argument("--normalized", action="store_true", help="xanes: FILE already holds normalised μ(E)")
    p.add_argument("--e0", type=float, help="xanes: E0 in eV (default: maximum of dμ/dE)")
    p.add_argument("--edges", metavar="L3:L2", help="xmcd: L3 and L2 edge energies for per-edge areas")
    p.add_argument("--no-preedge", action="store_true", help="xanes: skip the pre-edge centroid fit")
    p.add_argument("--sampler", choices=("remc", "smc"), default=None,
                   help="replica-exchange MC, or tempered SMC with jumps between least-squares optima "
                        "(default: smc for --model xanes, as the live service; remc otherwise)")
    p.add_argument("--particles", type=int, default=None, help="smc: particles per population (default 128)")
    p.add_argument("--groups", type=int, default=None,
                   help="smc: independent populations, the 'chains' of R-hat and se(F) (default 4)")
    p.add_argument("--replicas", type=int, default=None,
                   help="remc: replicas on the temperature ladder (default 24 for xanes, 16 otherwise)")
    p.add_argument("--chains", type=int, default=None, help="remc: independent chains (default 4)")
    p.add_argument("--burn", type=int, default=None, help="remc: burn-in sweeps (default 500)")
    p.add_argument("--sweeps", type=int, default=None, help="remc: recorded sweeps (default 1500)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--stop-unconverged", action="store_true",
                   help="xanes (the default there, as the live service): try K = kmin, kmin + 1, ... until a fit "
                        "does not converge (R-hat above 1.05) and choose among the converged ones")
    p.add_argument("--every-k", action="store_true",
                   help="xanes: fit every K of the range, past one that does not converge (the verdict then "
                        "judges the chosen fit's R-hat)")
    p.add_argument("--collapsed", action="store_true",
                   help="also move centres and widths with all heights redrawn from their exact conditional: "
                        "better mixing of overlapping peaks, ~3-4x the time per sweep")
    p.add_argument("--priors", choices=("nagata", "scaled"), default="nagata",
                   help="peaks: Nagata et al. (2012)'s priors exactly as published (default; their data's "
                        "units: x in [0, 3], heights ~1) or the same shapes scaled to the data")
    p.add_argument("--target-se", type=float, default=0.1, metavar="NAT",
                   help="extend the runs of the best two K until se(ΔF) and the run-length drift of ΔF are "
                        "within this (default 0.1 nat; 0 = one run each)")
    p.add_argument("--budget", type=float, default=120.0, metavar="S",
                   help="wall-time budget of the run-length control, s (default 120)")
    p.add_argument("--jobs", type=int, default=1, help="processes running candidates in parallel (default 1)")
    p.add_argument("--plot", metavar="PNG", help="write a figure: data, fit, band, peaks and F(K)")
    p.add_argument("--json", metavar="FILE", help="write the F table, peaks and parameters as JSON")
    from .bayes_cluster import add_arguments

    add_arguments(p)
    p.set_defaults(func=run)


def parse_range(text: str) -> tuple[float, float]:
    """'A:B' -> (A, B) with A < B."""
    parts = text.split(":")
    try:
        lo, hi = (float(v) for v in parts)
    except ValueError:
        raise CliError(f"--xrange must be A:B with two numbers, got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise CliError(f"--xrange must be A:B with A < B, got {text!r}")
    return lo, hi


def parse_noise(text: str) -> float | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise CliError(f"--noise must be a positive number or 'auto', got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise CliError(f"--noise must be a positive number or 'auto', got {text!r}")
    return value


def load_xy(path: str, ycol: int = 1):
    """x, y from a plain whitespace/comma separated file (lines starting with # are comments)."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows = []
    for lineno, line in enumerate(p.read_text(errors="replace").splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith(("#", "%", ";")):
            continue
        words = s.replace(",", " ").split()
        try:
            rows.append([float(w) for w in words])
        except ValueError:
            if rows:
                raise CliError(f"{path}:{lineno}: non-numeric data line {s[:60]!r}") from None
            continue  # a label line before the data
    if not rows:
        raise CliError(f"{path}: no numeric data rows")
    width = min(len(r) for r in rows)
    if width < 2 or ycol < 1 or ycol >= width:
        raise CliError(f"{path}: need columns x and y (y column {ycol}); rows have {width} column(s)")
    data = np.array([r[:width] for r in rows], float)
    x, y = data[:, 0], data[:, ycol]
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def load_xanes(args):
    """(energy, norm, e0, description) for the xanes model."""
    from ..io import read_spectrum

    if not Path(args.file).is_file():
        raise FileNotFoundError(f"{args.file}: no such file")
    spec = read_spectrum(args.file, mu_column=args.column)
    try:
        from ..engines.xafs import find_e0, pre_edge
    except ImportError as exc:  # engine not part of this build
        raise CliError(
            f"the preprocessing engine (xafs_stream.engines.xafs) is not available: {exc}"
        ) from None
    if args.normalized:
        e0 = args.e0 if args.e0 is not None else float(find_e0(spec.energy, spec.mu))
        return spec.energy, spec.mu, e0, "normalised μ(E) as given"
    pre = pre_edge(spec.energy, spec.mu, e0=args.e0)
    return pre.energy, pre.norm, float(pre.e0), f"μ(E) normalised here (edge step {float(pre.edge_step):.4g})"


def _settings(args):
    from ..engines.bayes import RemcSettings, SmcSettings

    sampler = args.sampler or ("smc" if args.model == "xanes" else "remc")
    own = {"smc": ("particles", "groups"), "remc": ("replicas", "chains", "burn", "sweeps", "collapsed")}
    for other, names in own.items():
        given = [f"--{n}" for n in names if other != sampler and getattr(args, n) not in (None, False)]
        if given:
            raise CliError(f"{', '.join(given)} apply to --sampler {other}, but the sampler is {sampler}")
    if sampler == "smc":
        return SmcSettings(n_particles=args.particles or 128, n_groups=args.groups or 4)
    sweeps = args.sweeps or 1500
    return RemcSettings(
        n_replicas=args.replicas or (24 if args.model == "xanes" else 16),
        n_chains=args.chains or 4,
        n_burn=500 if args.burn is None else args.burn,
        n_sweeps=sweeps,
        thin=max(1, sweeps // 250),
        collapsed=args.collapsed,
    )


def run(args) -> int:

    from ..engines import bayes as B
    from ..engines.bayes.verdict import judge_preedge, judge_selection

    noise = parse_noise(args.noise)
    kmax = args.kmax if args.kmax is not None else (5 if args.model == "peaks" else 4)
    ks = B.check_k_range(args.kmin, kmax)
    settings = _settings(args)
    preedge = None
    if args.model == "xanes":
        if args.every_k and args.stop_unconverged:
            raise CliError("--every-k and --stop-unconverged: choose one")
        stop = None if args.every_k else THRESHOLDS["rhat_warn"]  # the live service's search by default
        energy, norm, e0, how = load_xanes(args)
        region = parse_range(args.xrange) if args.xrange else (-20.0, 30.0)
        energy, norm = B.check_xy(energy, norm, x_name="energy", y_name="μ")
        sel = B.fit_xanes(
            energy,
            norm,
            e0,
            region=region,
            k_range=ks,
            noise=noise,
            peak_shape=args.shape,
            settings=settings,
            seed=args.seed,
            n_jobs=args.jobs,
            stop_at_rhat=stop,
        )
        head = (
            f"{args.file}: XANES, {how}, E0 = {e0:.2f} eV, fit range E0{region[0]:+g} .. E0{region[1]:+g} eV "
            f"({sel.x.size} points)"
        )
        if not args.no_preedge:
            from ..engines.errors import InputError

            try:
                preedge = B.fit_preedge(energy, norm, e0, noise=noise, settings=settings, seed=args.seed,
                                        stop_at_rhat=stop)
            except InputError as exc:
                preedge = str(exc)
    else:
        x, y = load_xy(args.file, args.ycol)
        x, y = B.check_xy(x, y)
        if args.xrange:
            lo, hi = parse_range(args.xrange)
            x, y = B.window(x, y, lo, hi, what="--xrange")
        if args.model == "cluster":
            from .bayes_cluster import format_scan, run_cluster
            from .bayes_cluster import to_json as cluster_json

            scan, rep, verdict = run_cluster(args, x, y, settings, noise, parse_range)
            print(format_scan(args.file, scan, rep, x))
            print(run_length_line(scan.selection.run_length))
            print(verdict.line())
            if args.json:
                Path(args.json).write_text(strict_json(cluster_json(scan, rep, verdict)))
                print(f"json: {args.json}")
            return 3 if verdict.level == "bad" else 0
        if args.model == "peaks":
            sel = B.decompose_peaks(
                x,
                y,
                k_range=ks,
                noise=noise,
                shape=args.shape,
                settings=settings,
                seed=args.seed,
                n_jobs=args.jobs,
                priors=args.priors,
                target_se=args.target_se or None,
                budget_s=args.budget,
            )
            head = f"{args.file}: {args.shape} peaks, " + (
                "Nagata et al. (2012) priors as published" if args.priors == "nagata"
                else "Nagata et al. (2012) priors scaled to the data")
        else:
            edges = parse_range(args.edges) if args.edges else None
            sel = B.decompose_xmcd(
                x,
                y,
                k_range=ks,
                noise=noise,
                shape=args.shape,
                edges=edges,
                settings=settings,
                seed=args.seed,
                n_jobs=args.jobs,
            )
            head = f"{args.file}: XMCD, signed {args.shape} peaks"
        head += f", x {sel.x[0]:g} .. {sel.x[-1]:g} ({sel.x.size} points)"
    rep = B.report(sel, seed=args.seed)
    verdict = judge_selection(sel, rep)
    if preedge is not None and not isinstance(preedge, str):
        judge_preedge(preedge, verdict)
    if args.model == "peaks" and args.priors == "nagata":
        from ..engines.bayes.models.peaks import published_nagata_priors
        from ..engines.bayes.priors import mass_in

        inside = mass_in(published_nagata_priors()["center"], float(sel.x[0]), float(sel.x[-1]))
        if inside < 0.9:
            verdict.warn(f"Nagata's published priors are for x in [0, 3]: only {inside:.0%} of the centre "
                         f"prior lies in the data's x range; use --priors scaled")
    print(format_report(head, rep, noise, preedge))
    print(run_length_line(sel.run_length))
    print(verdict.line())
    if args.plot:
        plot(args.plot, sel, rep)
        print(f"figure: {args.plot}")
    if args.json:
        Path(args.json).write_text(strict_json({**to_json(rep, preedge), "quality": verdict.level,
                                                "quality_reasons": verdict.reasons}))
        print(f"json: {args.json}")
    return 3 if verdict.level == "bad" else 0


def run_length_line(info: dict) -> str:
    """``run length: se(ΔF K=3, K=4) 0.07 nat, drift 0.03 nat after 2 extensions (target reached)``."""
    if info.get("stopped") == "not requested":
        return "run length: one run per candidate (no target; --target-se)"
    pair = " vs ".join(info["pair"])
    return (f"run length: ΔF {pair} = {info['dF']:.2f} ± {info['se_diff']:.2f} nat, drift {info['drift_diff']:+.2f} "
            f"nat, after {info['extensions']} extension(s) in {info['elapsed_s']:.0f} s ({info['stopped']}; "
            f"target {info['target_se']:g} nat)")


def format_report(head: str, rep, noise, preedge=None) -> str:
    """The printed report: header, F table, chosen-K line, peak table, diagnostics."""
    lines = [head]
    mode = "known" if rep.noise_mode == "known" else "estimated by minimum F per candidate"
    lines.append(f"noise: {mode}")
    lines.append(f"{'K':>3} {'F (nat)':>12} {'± se':>7} {'noise':>10} {'dF':>9} {'P(K)':>7}")
    for row in rep.table:
        k = row["name"].split("=")[-1]
        lines.append(
            f"{k:>3} {row['F']:12.3f} {row['F_se']:7.3f} {row['noise']:10.4g} {row['dF']:9.3f} "
            f"{row['probability']:7.3f}"
        )
    chosen = rep.chosen.split("=")[-1]
    gap = next((row["dF"] for row in rep.table if row["name"] == rep.chosen), 0.0)
    rule = "lowest free energy" if gap == 0 else f"simplest within the parsimony margin of the lowest F, +{gap:.2f} nat"
    lines.append(
        f"chosen K = {chosen} ({rule}; noise {rep.noise:.4g}"
        f"{' estimated' if rep.noise_mode == 'auto' else ''})"
    )
    lines.append(
        f"{'peak':>4} {'center':>12} {'± err':>9} {'95% interval':>25} {'height':>10} {'± err':>9} "
        f"{'FWHM':>9} {'± err':>8} {'area':>10}"
    )
    for pk in rep.peaks:
        c, h, w, a = pk.center, pk.height, pk.width, pk.area
        lines.append(
            f"{pk.index:>4} {c.median:12.5g} {c.err:9.3g} {f'[{c.lo95:.5g}, {c.hi95:.5g}]':>25} "
            f"{h.median:10.4g} {h.err:9.2g} {w.median:9.4g} {w.err:8.2g} {a.median:10.4g}"
        )
    if isinstance(preedge, str):
        lines.append(f"pre-edge centroid: not fitted ({preedge})")
    elif preedge is not None:
        pc = preedge.centroid
        lines.append(
            f"pre-edge centroid = {pc.median:.2f} ± {pc.err:.2f} eV "
            f"(95% [{pc.lo95:.2f}, {pc.hi95:.2f}]; {preedge.selection.best_fit.name}, "
            f"window {preedge.window[0]:.1f}-{preedge.window[1]:.1f} eV; R-hat {preedge.centroid_rhat:.3f})"
        )
    lines.append(
        f"diagnostics: R-hat max {rep.rhat_max:.3f}, min exchange rate {rep.exchange_min:.2f}, "
        f"acceptance {rep.acceptance[0]:.2f}-{rep.acceptance[1]:.2f}"
    )
    if rep.rhat_max > 1.1:
        lines.append(
            "warning: R-hat > 1.1: chains disagree; use more --sweeps/--burn before trusting intervals"
        )
    return "\n".join(lines)


def to_json(rep, preedge=None) -> dict:
    out = {
        "table": rep.table,
        "chosen": rep.chosen,
        "noise": rep.noise,
        "noise_mode": rep.noise_mode,
        "parameters": [p.as_dict() for p in rep.parameters],
        "peaks": [
            {q: getattr(pk, q).as_dict() for q in ("center", "height", "width", "area")} for pk in rep.peaks
        ],
        "derived": [d.as_dict() for d in rep.derived],
        "diagnostics": {
            "rhat_max": rep.rhat_max,
            "exchange_min": rep.exchange_min,
            "acceptance": list(rep.acceptance),
        },
    }
    if preedge is not None and not isinstance(preedge, str):
        out["preedge"] = {
            "centroid": preedge.centroid.as_dict(),
            "area": preedge.area.as_dict(),
            "window": list(preedge.window),
            "K": preedge.selection.best_fit.name,
            "rhat": preedge.centroid_rhat,
        }
    return out


def plot(path: str, sel, rep) -> None:
    """Data with the fit, 95 % bands and the chosen model's peaks; F(K) beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fit = sel.best_fit
    band = rep.band
    fig, (ax, axf) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [2.2, 1]})
    ax.plot(sel.x, sel.y, ".", ms=3, color="k", label="data")
    ax.fill_between(band.x, band.pred_lo95, band.pred_hi95, color="C0", alpha=0.15, label="95 % predictive")
    ax.fill_between(band.x, band.lo95, band.hi95, color="C0", alpha=0.4, label="95 % model")
    ax.plot(band.x, band.median, color="C0", lw=1.2, label=f"fit ({rep.chosen})")
    theta = np.array([p.median for p in rep.parameters])[None, :]
    comps = fit.model.components(theta)[:, 0, :]
    pcs = fit.model.peaks.components if fit.model.peaks is not None else np.arange(comps.shape[0])
    base = fit.model.edge_curve(theta)[0] if hasattr(fit.model, "edge_curve") else 0.0
    if hasattr(fit.model, "edge_curve"):
        ax.plot(sel.x, base, lw=0.8, ls=":", color="0.4", label="edge + constant")
    for i, c in enumerate(pcs):
        ax.plot(sel.x, base + comps[c] if fit.model.kind == "xanes" else comps[c], lw=0.8, ls="--",
                color=f"C{(i % 8) + 1}")
    ax.set_xlabel("x" if fit.model.kind in ("peaks",) else "energy (eV)")
    ax.set_ylabel("y")
    ax.legend(fontsize=8)
    ks = [int(r["name"].split("=")[-1]) for r in rep.table]
    axf.errorbar(ks, [r["F"] for r in rep.table], yerr=[r["F_se"] for r in rep.table], marker="o", capsize=3)
    axf.set_xlabel("K")
    axf.set_ylabel("free energy F (nat)")
    axf.set_xticks(ks)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
