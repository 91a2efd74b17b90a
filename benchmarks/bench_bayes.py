"""Benchmark: Bayesian model selection K = 1..5 on 301 points, replica-exchange MC vs dynesty.

Same data (Nagata et al. 2012's three-peak synthetic set, noise sd 0.1 known), same models, priors and
likelihood. Both run their five K values in two worker processes. Reported per K: F = -log Z and its
standard error from REMC (batch means over 4 chains x 4 blocks) and from dynesty (its own logzerr), their
difference, and wall times; overall: total wall time of each and the ratio. Goal: REMC total <= 15 s on
2 cores with se(F) <= 0.1 for every K, agreeing with dynesty.

    python benchmarks/bench_bayes.py [--quick]
    python benchmarks/bench_bayes.py --scatter 10     # ΔF(K4 - K3) over realisations and sampler seeds
    python benchmarks/bench_bayes.py --live           # the live bayes.xanes analysis on the packaged spectra
    python benchmarks/bench_bayes.py --cluster 5      # the cluster-model Δ scan and its free-Δ check

--quick runs K = 1..3 with shorter chains and nlive = 250. Results: benchmarks/results/bayes.json.
``--scatter N``: N noise realisations of Nagata's data with the CLI's default settings (K = 1..5, published
priors, 16 replicas x 4 chains, 500 + 1500 sweeps, run-length control to se(ΔF) <= 0.1 nat within 120 s):
the chosen K and ΔF(K4 - K3) with its se per realisation; then 5 sampler seeds on realisation 0 (the
seed-to-seed scatter of ΔF against the mean quoted se), a long reference run (8x the sweeps) and dynesty
(nlive 1000, 2 seeds) on it. Results: benchmarks/results/bayes_scatter.json.
``--cluster N``: the Δ-region scan (4 regions over -2..18 eV) on N realisations of the published CeO2 and
La2O3 spectra: chosen region, Δ coverage, F(Δ free) vs the regions' combined F. Results: bayes_cluster.json.
``--live``: the worker's ``bayes.xanes`` analysis (default settings, or ``--live-config JSON``) on every
packaged spectrum: R-hat, converged (R-hat <= 1.05), the verdict and the wall time per fit (goal: 90 %
converged within 10 s). Results: benchmarks/results/bayes_live.json. Measured: default settings 5-7 s per fit,
R-hat 1.21-1.83; ``--live-config '{"preedge": false, "n_replicas": 48, "n_chains": 4, "n_burn": 1000,
"n_sweeps": 2000}'`` (10x the compute) 37-58 s per fit, R-hat 1.15-1.41: none converged either way;
``--live-config '{"collapsed": true}'`` (collapsed moves, see RemcSettings) 19-24 s per fit with a test run
beside it, R-hat 1.30-3.88 for the chosen K: none converged.
Timings depend on machine load (note the load average printed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from xafs_stream.engines.bayes import RemcSettings, decompose_peaks

X = np.linspace(0.0, 3.0, 301)
TRUE = [(0.587, 1.210, 95.689), (1.522, 1.455, 146.837), (1.183, 1.703, 164.469)]
NOISE = 0.1
RESULTS = Path(__file__).resolve().parent / "results"


def _write(path: Path, text: str) -> None:
    """Write one result file, creating ``benchmarks/results/`` on a fresh checkout."""
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)


def nagata_data(seed: int) -> np.ndarray:
    """Nagata et al.'s three peaks on X plus Gaussian noise of sd NOISE (one realisation per seed)."""
    return sum(a * np.exp(-b * (X - m) ** 2 / 2) for a, m, b in TRUE) + NOISE * np.random.default_rng(
        seed).standard_normal(X.size)


Y = nagata_data(2012)


def run_dynesty(args: tuple[int, int, int]) -> dict:
    """-log Z for K peaks with dynesty (rslice, multi-ellipsoid bounds), in a worker process."""
    from xafs_stream.engines.bayes.nested import nested_free_energy

    K, nlive, seed = args
    ev = nested_free_energy(X, Y, NOISE, K, nlive=nlive, seed=seed)
    return {"K": K, "F": ev.F, "se": ev.se, "time_s": ev.time_s, "ncall": ev.ncall}


def _published_fit(y: np.ndarray, k: int, seed: int):
    from xafs_stream.engines.bayes import free_energy, run_remc
    from xafs_stream.engines.bayes.models.peaks import PeakModel, published_nagata_priors

    model = PeakModel(X, k, **published_nagata_priors())
    run = run_remc(model, y, beta_max=1 / NOISE**2, seed=seed,
                   settings=RemcSettings(n_replicas=16, n_chains=4, n_burn=500, n_sweeps=1500))
    return free_energy(run.betas, run.energies, X.size), run.elapsed_s


def _default_selection(y: np.ndarray, seed: int, jobs: int):
    """What ``xafs-stream bayes FILE --model peaks --noise 0.1`` does: K = 1..5, published priors, 16 replicas
    x 4 chains, 500 + 1500 sweeps, run-length control to se(ΔF) <= 0.1 nat within 120 s."""
    return decompose_peaks(X, y, k_range=range(1, 6), noise=NOISE, priors="nagata", seed=seed, n_jobs=jobs,
                           settings=RemcSettings(n_replicas=16, n_chains=4, n_burn=500, n_sweeps=1500, thin=6),
                           target_se=0.1, budget_s=120.0)


def _dF(sel) -> tuple[float, float]:
    f = {fit.name: fit for fit in sel.fits}
    a, b = f["K=3"], f["K=4"]
    return b.F - a.F, float(np.hypot(a.F_se, b.F_se))


def scatter(n_real: int, jobs: int, dynesty: bool) -> int:
    """With the CLI's default settings: the chosen K over noise realisations, the seed-to-seed scatter of
    ΔF(K4 - K3) against its quoted se, a long reference run and dynesty on realisation 0."""
    from xafs_stream.engines.bayes import free_energy, run_remc
    from xafs_stream.engines.bayes.models.peaks import PeakModel, published_nagata_priors

    rows = []
    for i in range(n_real):
        t0 = time.perf_counter()
        sel = _default_selection(nagata_data(1000 + i), i, jobs)
        dF, se = _dF(sel)
        rows.append({"realisation": i, "chosen": sel.best_fit.name, "dF": dF, "se": se,
                     "stopped": sel.run_length.get("stopped"), "time_s": time.perf_counter() - t0})
        r = rows[-1]
        print(f"realisation {i}: chosen {r['chosen']}, ΔF(K4-K3) {dF:+.3f} ± {se:.3f} nat ({r['stopped']}), "
              f"{r['time_s']:.0f} s", flush=True)
    wins = sum(r["chosen"] == "K=3" for r in rows)
    y0 = nagata_data(1000)
    seeds = []
    for s in range(5):
        sel = _default_selection(y0, 100 + s, jobs)
        dF, se = _dF(sel)
        seeds.append({"seed": 100 + s, "chosen": sel.best_fit.name, "dF": dF, "se": se})
        print(f"realisation 0, sampler seed {100 + s}: chosen {sel.best_fit.name}, ΔF {dF:+.3f} ± {se:.3f}",
              flush=True)
    sd = float(np.std([s["dF"] for s in seeds], ddof=1))
    quoted = float(np.mean([s["se"] for s in seeds]))
    mean_dF = float(np.mean([s["dF"] for s in seeds]))
    # long reference: 8x the default recorded sweeps, K = 3 and 4
    ref = {}
    for k in (3, 4):
        run = run_remc(PeakModel(X, k, **published_nagata_priors()), y0, beta_max=1 / NOISE**2, seed=7,
                       settings=RemcSettings(n_replicas=16, n_chains=4, n_burn=1000, n_sweeps=12000, thin=48))
        ref[k] = free_energy(run.betas, run.energies, X.size)
    ref_dF, ref_se = ref[4].F - ref[3].F, float(np.hypot(ref[3].se, ref[4].se))
    print(f"K = 3 chosen in {wins} of {n_real} realisations (goal >= 9 of 10)")
    print(f"realisation 0: seed-to-seed sd of ΔF {sd:.3f} nat, mean quoted se {quoted:.3f} (covers: {quoted >= sd}); "
          f"mean ΔF {mean_dF:+.3f} vs long reference {ref_dF:+.3f} ± {ref_se:.3f} (goal within 0.15)")
    out = {"realisations": rows, "k3_wins": wins, "sampler_seeds": seeds, "seed_sd": sd, "mean_quoted_se": quoted,
           "mean_seed_dF": mean_dF, "reference": {"dF": ref_dF, "se": ref_se, "sweeps": 12000},
           "settings": "CLI defaults: K 1..5, published priors, noise 0.1 known, 16 replicas x 4 chains, "
                       "500 + 1500 sweeps, target se 0.1 nat, budget 120 s"}
    if dynesty:
        from xafs_stream.engines.bayes.nested import nested_free_energy

        dyn = []
        for s in (1, 2):
            e3 = nested_free_energy(X, y0, NOISE, 3, nlive=1000, seed=s, priors="nagata")
            e4 = nested_free_energy(X, y0, NOISE, 4, nlive=1000, seed=s, priors="nagata")
            dyn.append({"seed": s, "dF": e4.F - e3.F, "se": float(np.hypot(e3.se, e4.se)),
                        "time_s": e3.time_s + e4.time_s})
            print(f"dynesty nlive 1000 seed {s}: ΔF {dyn[-1]['dF']:+.3f} ± {dyn[-1]['se']:.3f} "
                  f"({dyn[-1]['time_s']:.0f} s); REMC reference {ref_dF:+.3f} ± {ref_se:.3f}", flush=True)
        out["dynesty"] = dyn
    path = RESULTS / "bayes_scatter.json"
    _write(path, json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


def cluster(n_seeds: int, jobs: int) -> int:
    """The Δ-region scan on the published CeO2 and La2O3 parameters over noise realisations: the chosen
    region, Δ in its 95 % interval, and F(Δ free) against -ln Σ (w/W) exp(-F_r) in units of its se."""
    from xafs_stream.engines.bayes import PUBLISHED, cluster_spectrum, delta_regions, scan_delta

    x = np.linspace(-20, 12, 81)
    rows = []
    for compound in ("CeO2", "La2O3"):
        p = PUBLISHED[compound]
        f = 10 * cluster_spectrum(x, p["delta"], p["v"], p["uff"], p["ufc"], p["gamma"])[0]
        noise = 0.05 * f.max()
        for s in range(n_seeds):
            y = f + noise * np.random.default_rng(500 + s).standard_normal(x.size)
            t0 = time.perf_counter()
            scan = scan_delta(x, y, delta_regions(-2, 18, 4), noise=noise, seed=s, n_jobs=jobs,
                              settings=RemcSettings(n_replicas=16, n_chains=4, n_burn=500, n_sweeps=1500, thin=6))
            gap, se = scan.consistency()
            q = np.quantile(scan.delta_posterior(), [0.025, 0.975])
            rows.append({"compound": compound, "seed": s, "chosen": scan.selection.best_fit.name,
                         "delta_95": [float(q[0]), float(q[1])], "covers": bool(q[0] <= p["delta"] <= q[1]),
                         "free_minus_combined": gap, "se": se, "time_s": time.perf_counter() - t0})
            r = rows[-1]
            print(f"{compound} seed {s}: {r['chosen']}, Δ 95 % [{q[0]:.2f}, {q[1]:.2f}] (true {p['delta']}), "
                  f"F(free) - combined {gap:+.2f} ± {se:.2f} nat, {r['time_s']:.0f} s", flush=True)
    z = np.array([r["free_minus_combined"] / r["se"] for r in rows])
    print(f"|difference| <= 2 se in {int(np.sum(np.abs(z) <= 2))} of {len(rows)}; Δ covered in "
          f"{sum(r['covers'] for r in rows)} of {len(rows)}")
    path = RESULTS / "bayes_cluster.json"
    _write(path, json.dumps({"scans": rows}, indent=2))
    print(f"wrote {path}")
    return 0


def live(config: dict | None = None, samplers: tuple[str, ...] = ("smc", "remc"), seeds: int = 3) -> int:
    """The worker's bayes.xanes on each packaged spectrum (after xafs.normalize), for each sampler and
    ``seeds`` sampler seeds, in one run: default settings, or the ``[analysis."bayes.xanes"]`` keys in
    ``config`` (e.g. more particles)."""
    from xafs_stream.analyses.bayes import SAMPLER_KEYS, bayes_xanes
    from xafs_stream.analyses.preprocess import normalize_spectrum
    from xafs_stream.core import WorkUnit
    from xafs_stream.data import SPECTRA_DIR
    from xafs_stream.io import read_spectrum

    rows = []
    paths = sorted([*SPECTRA_DIR.glob("*.xdi"), *SPECTRA_DIR.glob("*.xmu")])
    for sampler in samplers:
        for path in paths:
            spec = read_spectrum(path)
            unit = WorkUnit("bench", "spectrum", "merge", {"energy": spec.energy, "mu": spec.mu})
            norm = normalize_spectrum(unit, {}, {})
            for seed in range(seeds):
                cfg = {"sampler": sampler, "seed": seed, **(config or {})}
                if sampler == "remc":  # the other sampler's keys are refused
                    cfg = {k: v for k, v in cfg.items() if k not in SAMPLER_KEYS["smc"]}
                t0 = time.perf_counter()
                res = bayes_xanes(unit, {"xafs.normalize": norm}, cfg)
                dt = time.perf_counter() - t0
                b = res.summary
                rows.append({"sampler": sampler, "spectrum": path.name, "seed": seed, "K": b.get("bayes.K"),
                             "rhat_max": b.get("bayes.rhat_max"), "converged": b.get("bayes.converged"),
                             "verdict": res.verdict, "reasons": res.verdict_reasons, "time_s": dt,
                             "F_chosen": b.get(f"bayes.F.K{b.get('bayes.K')}")})
                print(f"{sampler:5} {path.name:18} seed {seed} K={b.get('bayes.K')} "
                      f"R-hat {b.get('bayes.rhat_max'):.2f} "
                      f"converged {b.get('bayes.converged')} verdict {res.verdict} {dt:.1f} s", flush=True)
    print("\n| sampler | fits | converged (R-hat <= 1.05) | time per fit, median (max) | non-converged fits ok |")
    print("|---|---|---|---|---|")
    summary = {}
    for sampler in samplers:
        sub = [r for r in rows if r["sampler"] == sampler]
        conv = sum(bool(r["converged"]) for r in sub)
        times = np.array([r["time_s"] for r in sub])
        bad_ok = sum(1 for r in sub if not r["converged"] and r["verdict"] == "ok")
        summary[sampler] = {"fits": len(sub), "converged": conv, "median_s": float(np.median(times)),
                            "max_s": float(times.max()), "nonconverged_ok": bad_ok}
        print(f"| {sampler} | {len(sub)} | {conv} ({conv / len(sub):.0%}) | {np.median(times):.1f} s "
              f"({times.max():.1f} s) | {bad_ok} |")
    print("goal: >= 90 % converged within 10 s each, no non-converged fit ok")
    path = RESULTS / "bayes_live.json"
    _write(path, json.dumps({"fits": rows, "summary": summary, "config": config or {}, "seeds": seeds},
                            indent=2, default=float))
    print(f"wrote {path}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="K = 1..3, short chains, nlive 250")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes for each method (default 2)")
    ap.add_argument("--no-dynesty", action="store_true", help="REMC only")
    ap.add_argument("--scatter", type=int, metavar="N", help="ΔF(K4-K3) over N realisations and 5 sampler seeds")
    ap.add_argument("--live", action="store_true", help="the live bayes.xanes analysis on the packaged spectra")
    ap.add_argument("--live-config", metavar="JSON", default="{}",
                    help='with --live: bayes.xanes settings, e.g. \'{"n_replicas": 48, "n_sweeps": 2000}\'')
    ap.add_argument("--samplers", default="smc,remc", help="with --live: samplers to compare (default smc,remc)")
    ap.add_argument("--seeds", type=int, default=3, help="with --live: sampler seeds per spectrum (default 3)")
    ap.add_argument("--cluster", type=int, metavar="N", help="the Δ-region scan over N realisations per compound")
    args = ap.parse_args()
    if args.scatter:
        return scatter(args.scatter, args.jobs, not args.no_dynesty)
    if args.cluster:
        return cluster(args.cluster, args.jobs)
    if args.live:
        try:
            config = json.loads(args.live_config)
        except ValueError as exc:
            ap.error(f"--live-config: not JSON ({exc})")
        return live(config, tuple(args.samplers.split(",")), args.seeds)
    kmax = 3 if args.quick else 5
    # sweeps and rungs grow with K so that every se(F) lands near 0.1 (measured: se ~ 0.06-0.1 at 2500 sweeps)
    ks = range(1, kmax + 1)
    if args.quick:
        settings = [RemcSettings(n_replicas=12 if k == 1 else 16, n_burn=300, n_sweeps=1000) for k in ks]
    else:
        settings = [
            RemcSettings(
                n_replicas=12 if k == 1 else 16, n_burn=500, n_sweeps={1: 2000, 5: 3000}.get(k, 2500)
            )
            for k in ks
        ]
    nlive = 250 if args.quick else 1000
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    t0 = time.perf_counter()
    sel = decompose_peaks(X, Y, k_range=ks, noise=NOISE, settings=settings, seed=1, n_jobs=args.jobs)
    remc_total = time.perf_counter() - t0
    remc = [
        {
            "K": f.model.n_peaks,
            "F": f.F,
            "se": f.F_se,
            "time_s": f.run.elapsed_s,
            "exchange_min": float(np.nanmin(f.run.exchange_rate)),
            "rhat_max": float(np.nanmax(f.rhat)),
        }
        for f in sel.fits
    ]

    dyn, dyn_total = [], float("nan")
    if not args.no_dynesty:
        t0 = time.perf_counter()
        jobs = [(K, nlive, 100 + K) for K in range(kmax, 0, -1)]
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            dyn = sorted(pool.map(run_dynesty, jobs), key=lambda d: d["K"])
        dyn_total = time.perf_counter() - t0

    print(
        f"Bayesian model selection, K = 1..{kmax}, N = {X.size}, noise {NOISE} known; "
        f"{args.jobs} processes each; load average {load:.2f} at start (shared machine: timings are noisy)"
    )
    desc = ", ".join(
        f"K={k}: {s.n_replicas}x{s.n_chains}, {s.n_burn}+{s.n_sweeps}" for k, s in zip(ks, settings)
    )
    print(f"REMC (replicas x chains, burn + sweeps): {desc}; dynesty: nlive {nlive}, rslice, dlogz 0.01")
    head = ("K", "F REMC", "se", "t REMC s", "F dynesty", "err", "t dyn s", "|dF|")
    widths = (2, 11, 6, 9, 11, 6, 8, 6)
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, widths)))
    rows = []
    for i, r in enumerate(remc):
        d = dyn[i] if dyn else None
        diff = abs(r["F"] - d["F"]) if d else float("nan")
        rows.append({"K": r["K"], "remc": r, "dynesty": d, "abs_diff": diff})
        print(
            f"{r['K']:>2} {r['F']:11.3f} {r['se']:6.3f} {r['time_s']:9.2f} "
            + (f"{d['F']:11.3f} {d['se']:6.3f} {d['time_s']:8.1f} {diff:6.3f}" if d else "")
        )
    chosen_remc = sel.best_fit.model.n_peaks
    chosen_dyn = min(dyn, key=lambda d: d["F"])["K"] if dyn else None
    print(f"chosen K: REMC {chosen_remc}" + (f", dynesty {chosen_dyn}" if dyn else ""))
    print(
        f"total wall time: REMC {remc_total:.1f} s"
        + (f", dynesty {dyn_total:.1f} s, ratio dynesty/REMC {dyn_total / remc_total:.1f}" if dyn else "")
    )
    print(
        f"goal REMC <= 15 s: {'met' if remc_total <= 15 else 'not met'}; "
        f"max se(F) {max(r['se'] for r in remc):.3f} (goal <= 0.1)"
    )
    out = {
        "benchmark": "bayes",
        "quick": args.quick,
        "n_points": int(X.size),
        "k_max": kmax,
        "noise": NOISE,
        "jobs": args.jobs,
        "load_average_start": load,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "remc_settings": [st.__dict__ for st in settings],
        "dynesty_nlive": None if args.no_dynesty else nlive,
        "remc_total_s": remc_total,
        "dynesty_total_s": dyn_total,
        "ratio_dynesty_over_remc": (dyn_total / remc_total) if dyn else None,
        "chosen_k": {"remc": chosen_remc, "dynesty": chosen_dyn},
        "per_k": rows,
    }
    path = RESULTS / "bayes.json"
    _write(path, json.dumps(out, indent=2, default=float))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
