"""Benchmark: Bayesian model selection K = 1..5 on 301 points, replica-exchange MC vs dynesty.

Same data (Nagata et al. 2012's three-peak synthetic set, noise sd 0.1 known), same models, priors and
likelihood. Both run their five K values in two worker processes. Reported per K: F = -log Z and its
standard error from REMC (batch means over 4 chains x 4 blocks) and from dynesty (its own logzerr), their
difference, and wall times; overall: total wall time of each and the ratio. Goal: REMC total <= 15 s on
2 cores with se(F) <= 0.1 for every K, agreeing with dynesty.

    python benchmarks/bench_bayes.py [--quick]

--quick runs K = 1..3 with shorter chains and nlive = 250. Results: benchmarks/results/bayes.json.
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
Y = sum(a * np.exp(-b * (X - m) ** 2 / 2) for a, m, b in TRUE) + NOISE * np.random.default_rng(
    2012
).standard_normal(X.size)


def run_dynesty(args: tuple[int, int, int]) -> dict:
    """-log Z for K peaks with dynesty (rslice, multi-ellipsoid bounds), in a worker process."""
    from xafs_stream.engines.bayes.nested import nested_free_energy

    K, nlive, seed = args
    ev = nested_free_energy(X, Y, NOISE, K, nlive=nlive, seed=seed)
    return {"K": K, "F": ev.F, "se": ev.se, "time_s": ev.time_s, "ncall": ev.ncall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="K = 1..3, short chains, nlive 250")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes for each method (default 2)")
    ap.add_argument("--no-dynesty", action="store_true", help="REMC only")
    args = ap.parse_args()
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
    path = Path(__file__).resolve().parent / "results" / "bayes.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=float))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
