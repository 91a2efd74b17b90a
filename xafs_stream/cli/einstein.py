"""``xafs-stream einstein FILE... --temps T... --paths DIR``: σ²(T) of a shell over a temperature series,
fitted by the correlated Einstein and/or Debye model.

Every FILE is fitted by sparse modeling (same options as ``spm``); the shell followed is shell ``--shell``
of the lowest-temperature spectrum, and in the others the shell of the same pair nearest to it in R.
"""

from __future__ import annotations

from pathlib import Path

from .common import strict_json
from .errors import CliError
from .spm import add_fit_arguments, fit_settings, load_chi, load_paths


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "einstein",
        help="σ²(T) of a shell over a temperature series → Einstein/Debye temperature",
        description="Fit every spectrum by sparse modeling, follow one shell's σ² with temperature, and fit "
        "the correlated Einstein (and/or Debye) model (a static offset from 4 temperatures on); σ² in excess of "
        "the thermal curve is flagged.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="spectra (μ(E) or χ(k)), one per temperature")
    p.add_argument(
        "--temps",
        nargs="+",
        type=float,
        required=True,
        metavar="T",
        help="temperatures in K, one per FILE, in the same order",
    )
    p.add_argument("--shell", type=int, default=1, help="shell number in the lowest-T spectrum (default 1)")
    p.add_argument(
        "--model",
        choices=("einstein", "debye", "both"),
        default="both",
        help="thermal model(s) to fit (default both)",
    )
    p.add_argument("--static", choices=("auto", "on", "off"), default="auto",
                   help="fit a temperature-independent σ² offset: auto (default) only with 4 or more "
                        "temperatures (with 3 it is nearly degenerate with θ and widens its error several "
                        "times), on, off")
    p.add_argument("--no-static", action="store_true", help="the same as --static off")
    p.add_argument(
        "--z-flag",
        type=float,
        default=3.0,
        help="flag σ² more than this many standard errors above the curve (default 3)",
    )
    add_fit_arguments(p)
    p.add_argument("--json", metavar="FILE", help="write σ²(T) and the model fits as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from ..engines.spm import fit_thermal, spm_fit

    if len(args.files) != len(args.temps):
        raise CliError(f"{len(args.files)} files but {len(args.temps)} temperatures: give one T per file")
    if any(t <= 0 for t in args.temps):
        raise CliError("temperatures must be > 0 K")
    pset = load_paths(args.paths)
    order = np.argsort(args.temps)
    results = {}
    for i in order:
        k, chi, _ = load_chi(args.files[i], force_chi=args.chi, mu_column=args.mu_column)
        results[i] = spm_fit(k, chi, pset.paths, **fit_settings(args, k))
    ref = results[order[0]]
    if not 1 <= args.shell <= len(ref.shells):
        raise CliError(f"--shell {args.shell}: the lowest-T spectrum has {len(ref.shells)} shell(s)")
    target = ref.shells[args.shell - 1]
    rows = []
    for i in order:
        same = [s for s in results[i].shells if s.pair == target.pair]
        if not same:
            raise CliError(f"{args.files[i]}: no {target.pair} shell found")
        s = min(same, key=lambda x: abs(x.r - target.r))
        err = s.sigma2_err_boot if args.bootstrap and np.isfinite(s.sigma2_err_boot) else s.sigma2_err
        rows.append((args.temps[i], s, max(err, 1e-6), args.files[i]))
    t = np.array([r[0] for r in rows])
    s2 = np.array([r[1].sigma2 for r in rows])
    e2 = np.array([r[2] for r in rows])
    path = next(p for p in pset.single_scattering() if p.label == target.path_label)
    mean_r = float(np.mean([r[1].r for r in rows]))
    print(f"{target.pair} shell near R = {target.r:.3f} Å, reduced mass {path.reduced_mass:.3f} amu")
    print(f"{'T/K':>8} {'N':>7} {'R/Å':>8} {'σ²/Å²':>9} {'±':>8}  file")
    for tt, s, err, name in rows:
        print(f"{tt:8.1f} {s.n:7.2f} {s.r:8.4f} {s.sigma2:9.5f} {err:8.5f}  {name}")
    models = ("einstein", "debye") if args.model == "both" else (args.model,)
    fits = {}
    for model in models:
        kw = (
            dict(reduced_mass=path.reduced_mass)
            if model == "einstein"
            else dict(r=mean_r, rnorman=path.rnorman, masses=(path.atoms[0].mass, path.atoms[1].mass))
        )
        static = "auto" if args.static == "auto" and not args.no_static else args.static == "on" and not args.no_static
        fits[model] = fit_thermal(t, s2, e2, model=model, fit_static=static, z_flag=args.z_flag, **kw)
        print()
        print(fits[model].table())
        if not fits[model].static_fitted:
            print(f"  (no static σ² offset: {'--static off' if static is False else f'{t.size} temperatures; the offset is fitted from 4 on, or with --static on'})")
    if args.json:
        payload = dict(
            pair=target.pair,
            r=mean_r,
            t=t.tolist(),
            sigma2=s2.tolist(),
            sigma2_err=e2.tolist(),
            fits={
                m: dict(
                    theta=f.theta,
                    theta_err=f.theta_err,
                    static=f.static,
                    static_err=f.static_err,
                    static_fitted=f.static_fitted,
                    redchi=f.redchi,
                    flagged=f.flagged.tolist(),
                )
                for m, f in fits.items()
            },
        )
        Path(args.json).write_text(strict_json(payload))
    return 0
