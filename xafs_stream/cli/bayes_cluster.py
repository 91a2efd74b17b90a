"""``xafs-stream bayes FILE --model cluster``: which charge-transfer-energy (Δ) region of the cluster-model
Hamiltonian (Mototake et al. 2019) the spectrum supports.

FILE is a plain two-column energy (eV), intensity file; energies are relative to the model's reference (the
initial-state ground energy), within the ``--shift`` range. The Δ range is cut into ``--regions`` equal
regions, each sampled by REMC with Δ uniform over it, and once more with Δ free over the whole range. Prints
F per region, the chosen region, the Δ posterior, the free-Δ check (F(Δ free) against
-ln Σ (w_r/W) exp(-F_r), ≈ F(best) + ln n) and ``quality: ok|warn|bad (reasons)``.
"""

from __future__ import annotations

import math

from .errors import CliError


def add_arguments(p) -> None:
    """The cluster-model options of ``xafs-stream bayes``."""
    g = p.add_argument_group("cluster model (--model cluster)")
    g.add_argument("--delta-range", metavar="A:B", default="-2:18",
                   help="charge-transfer energy Δ range scanned, eV (default -2:18)")
    g.add_argument("--regions", type=int, default=4, help="equal Δ regions compared (default 4)")
    g.add_argument("--configs", type=int, choices=(2, 3), default=3,
                   help="configurations: 3 = f0, f1, f2 (default); 2 = f0, f1")
    g.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                   help="fix a parameter (eV): uff (default 10.5), v, ufc, gamma, scale, shift, c0; repeatable")
    g.add_argument("--prior", action="append", default=[], metavar="NAME=A:B",
                   help="uniform prior of a parameter (log-uniform for gamma and scale); repeatable; "
                        "defaults: v 0.2:1.5, ufc 8:16, gamma 0.2:2, scale from the data's area")
    g.add_argument("--shift", metavar="A:B", default="-5:5",
                   help="range of the energy shift between the model and the data, eV (default -5:5)")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise CliError(f"{what} must be NAME=VALUE, got {item!r}")
        out[name.strip()] = value.strip()
    return out


def parse_fixed(items: list[str]) -> dict[str, float]:
    out = {}
    for name, value in _pairs(items, "--fix").items():
        try:
            out[name] = float(value)
        except ValueError:
            raise CliError(f"--fix {name}= needs a number, got {value!r}") from None
    return out


def parse_priors(items: list[str], parse_range) -> dict:
    from ..engines.bayes import LogUniform, Uniform

    out = {}
    for name, value in _pairs(items, "--prior").items():
        lo, hi = parse_range(value)
        if name in ("gamma", "scale"):
            if lo <= 0:
                raise CliError(f"--prior {name}= must be positive (log-uniform), got {value!r}")
            out[name] = LogUniform(lo, hi)
        else:
            out[name] = Uniform(lo, hi)
    return out


def run_cluster(args, x, y, settings, noise, parse_range):
    """Run the Δ scan; returns (scan, report, verdict)."""
    from ..engines import bayes as B
    from ..engines.bayes.verdict import judge_cluster_scan

    lo, hi = parse_range(args.delta_range)
    scan = B.scan_delta(
        x, y, B.delta_regions(lo, hi, args.regions),
        n_config=args.configs,
        priors=parse_priors(args.prior, parse_range),
        fixed=parse_fixed(args.fix),
        shift=parse_range(args.shift),
        noise=noise,
        settings=settings,
        seed=args.seed,
        n_jobs=args.jobs,
        target_se=args.target_se or None,
        budget_s=args.budget,
    )
    rep = B.report(scan.selection, seed=args.seed)
    return scan, rep, judge_cluster_scan(scan, rep)


def format_scan(path: str, scan, rep, x) -> str:
    sel = scan.selection
    fits = sel.fits
    lines = [f"{path}: cluster model ({fits[0].model.n_config} configurations), Δ scanned over "
             f"{scan.regions[0][0]:g}..{scan.regions[-1][1]:g} eV in {len(fits)} regions, "
             f"x {x[0]:g} .. {x[-1]:g} eV ({x.size} points)",
             f"noise: {'known' if sel.noise_mode == 'known' else 'estimated by minimum F per candidate'}",
             f"{'region (eV)':>16} {'F (nat)':>12} {'± se':>7} {'dF':>9} {'P':>7} {'R-hat':>6}"]
    for f, row in zip(fits, sel.table()):
        lines.append(f"{f.name:>16} {row['F']:12.3f} {row['F_se']:7.3f} {row['dF']:9.3f} "
                     f"{row['probability']:7.3f} {float(max(f.rhat)):6.3f}")
    lines.append(f"chosen region: {sel.best_fit.name} (lowest free energy)")
    import numpy as np

    q = np.quantile(scan.delta_posterior(), [0.025, 0.16, 0.5, 0.84, 0.975])
    lines.append(f"Δ = {q[2]:.3f} eV (68 % [{q[1]:.3f}, {q[3]:.3f}], 95 % [{q[0]:.3f}, {q[4]:.3f}])")
    fc, sc = scan.combined
    gap, se = scan.consistency()
    lines.append(f"free-Δ check: F(Δ free) = {scan.free.F:.3f} ± {scan.free.F_se:.3f} nat; "
                 f"-ln Σ (w/W) exp(-F_r) = {fc:.3f} ± {sc:.3f} (min F + ln {len(fits)} = "
                 f"{sel.best_fit.F + math.log(len(fits)):.3f}); difference {gap:+.3f} ± {se:.3f} nat")
    for p in rep.parameters + rep.derived:
        lines.append(f"{p.name:>8} = {p.median:.4g} (68 % [{p.lo68:.4g}, {p.hi68:.4g}])")
    lines.append(f"diagnostics: R-hat max {rep.rhat_max:.3f}, min exchange rate {rep.exchange_min:.2f}")
    return "\n".join(lines)


def to_json(scan, rep, verdict) -> dict:
    def finite(v):
        return v if isinstance(v, float) and math.isfinite(v) else None

    fc, sc = scan.combined
    gap, se = scan.consistency()
    return {
        "regions": [{"low": a, "high": b, "F": finite(f.F), "F_se": finite(f.F_se)}
                    for (a, b), f in zip(scan.regions, scan.selection.fits)],
        "chosen": scan.selection.best_fit.name,
        "free": {"F": finite(scan.free.F), "F_se": finite(scan.free.F_se)},
        "combined": {"F": finite(fc), "F_se": finite(sc)},
        "consistency": {"difference": finite(gap), "se": finite(se)},
        "parameters": [{k: (finite(v) if isinstance(v, float) else v) for k, v in p.as_dict().items()}
                       for p in rep.parameters + rep.derived],
        "quality": verdict.level,
        "quality_reasons": verdict.reasons,
    }
