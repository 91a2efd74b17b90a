"""Benchmark: μ-XANES imaging, incremental tile updates vs a batch re-solve, and a 1000 x 1000 x 100 stack.

    python benchmarks/bench_imaging.py [--quick]

Data: the simulated beamline's phantom (3 Fe phases, ``make_phantom``) at 100 energies, Gaussian noise 0.05 on
μt, built in float32 row blocks so that the big stack fits in memory.

1. Tiles: a map of MAP x MAP px (512, --quick 256) arrives in 64 x 64 tiles (row order). Per tile, in the same
   process: features of the 64 x 64 x 100 tile (``stack_features``: normalisation, features, LCF) and the
   MRF update (``MapModel.add_tile``: learning, window or whole-map re-solve); at every 8th tile (and the last)
   a batch re-solve of all data so far (``MapModel.solve_from_scratch``), the peer. Goal: features + MRF
   <= 50 ms per tile.
2. LCF: the exact vectorised non-negative fit vs a per-pixel ``scipy.optimize.nnls`` loop (20 000 pixels).
3. Full stack: BIG x BIG x 100 (1000, --quick 300), float32: features + MRF batch, wall time, and the peak
   memory the analysis allocates on top of the stack (tracemalloc, which numpy reports to), plus the process
   peak RSS (which includes building the phantom: its Voronoi distances alone are n_domains x BIG^2 floats).
   Goal: <= 60 s on 2 cores.

BLAS runs single-threaded inside the engine (see xafs_stream/engines/imaging/_threads.py). The machine is
shared with other jobs: times are noisy; compare ratios from the same run. Writes benchmarks/results/imaging.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIGMA = 0.05
TILE = 64


def phantom_stack(n: int, seed: int = 0, rows: int = 64) -> tuple[np.ndarray, np.ndarray, object]:
    """Noisy μt stack (100, n, n) float32 of a phantom with domains of ~40 px, built in row blocks."""
    from xafs_stream.simulated_devices.phantom import make_phantom

    ph = make_phantom((n, n), n_domains=max(12, (n // 40) ** 2), seed=seed)
    e = ph.energy
    background = ph.pre_edge_offset + ph.pre_edge_slope * (e - e[0])
    stack = np.empty((e.size, n, n), np.float32)
    rng = np.random.default_rng(seed + 1)
    for y0 in range(0, n, rows):
        sl = slice(y0, y0 + rows)
        mix = np.einsum("pe,pyx->eyx", ph.refs, ph.fractions[:, sl])
        block = ph.thickness[sl][None] * (background[:, None, None] + mix)
        stack[:, sl] = block + rng.normal(0, SIGMA, block.shape)
    return e, stack, ph


def bench_tiles(n_map: int) -> dict:
    from xafs_stream.engines.imaging import ImagingSettings, MapModel
    from xafs_stream.engines.imaging.pipeline import stack_features

    e, stack, ph = phantom_stack(n_map)
    settings = ImagingSettings(refs=ph.refs, ref_names=ph.phases)
    config = settings.map_config()
    names = tuple(dict.fromkeys(config.class_features + config.smooth))
    model = MapModel((n_map, n_map), config)
    rows = []
    tiles = [(y, x) for y in range(0, n_map, TILE) for x in range(0, n_map, TILE)]
    for i, (y, x) in enumerate(tiles):
        t0 = time.perf_counter()
        values, _ = stack_features(e, stack[:, y:y + TILE, x:x + TILE], settings)
        t1 = time.perf_counter()
        log = model.add_tile(y, x, {k: values[k] for k in names})
        t2 = time.perf_counter()
        row = {"tile": i, "features_s": t1 - t0, "mrf_s": t2 - t1, "kind": log.kind, "reason": log.reason,
               "refit": log.refit, "cg_iterations": log.cg_iterations}
        if (i + 1) % 8 == 0 or i == len(tiles) - 1:
            batch = MapModel((n_map, n_map), config)
            for (a, b) in tiles[: i + 1]:
                batch.set_pixels(a, b, {k: model.raw[k][a:a + TILE, b:b + TILE] for k in names})
            t3 = time.perf_counter()
            batch.solve_from_scratch()
            row["batch_resolve_s"] = time.perf_counter() - t3
            obs = batch.observed
            row["label_agreement"] = float(np.mean(batch.labels[obs] == model.labels[obs]))
        rows.append(row)
        print(f"  tile {i:3d} {log.kind:6s} features {1e3 * row['features_s']:7.1f} ms  "
              f"mrf {1e3 * row['mrf_s']:7.1f} ms" + (f"  batch re-solve {row['batch_resolve_s']:.2f} s"
                                                      if "batch_resolve_s" in row else ""), flush=True)
    feat = np.array([r["features_s"] for r in rows])
    mrf = np.array([r["mrf_s"] for r in rows])
    local = np.array([r["kind"] == "local" for r in rows])
    refit = np.array([r["refit"] for r in rows])
    total = feat + mrf
    last_batch = rows[-1]["batch_resolve_s"]

    def med(a, sel):
        return 1e3 * float(np.median(a[sel])) if sel.any() else None

    return {
        "map_px": n_map, "tile_px": TILE, "n_tiles": len(tiles), "n_local": int(local.sum()),
        "n_local_with_phase_refit": int((local & refit).sum()),
        "features_ms_median": 1e3 * float(np.median(feat)),
        "features_ms_min": 1e3 * float(np.min(feat)),
        "mrf_ms_median_local": med(mrf, local),
        "mrf_ms_median_local_no_refit": med(mrf, local & ~refit),
        "mrf_ms_median_local_refit": med(mrf, local & refit),
        "mrf_ms_median_global": med(mrf, ~local),
        "tile_total_ms_median": 1e3 * float(np.median(total)),
        "tile_total_ms_mean": 1e3 * float(np.mean(total)),
        "tile_total_ms_median_local": med(total, local),
        "tile_total_ms_p90_local": 1e3 * float(np.percentile(total[local], 90)) if local.any() else None,
        "tile_total_ms_median_local_no_refit": med(total, local & ~refit),
        "batch_resolve_s_final": last_batch,
        "speedup_local_vs_batch": last_batch / float(np.median(total[local])) if local.any() else None,
        "label_agreement_min": min(r["label_agreement"] for r in rows if "label_agreement" in r),
        "rows": rows,
    }


def bench_lcf(n_pix: int = 20000) -> dict:
    from scipy.optimize import nnls
    from xafs_stream.simulated_devices.phantom import make_phantom

    from xafs_stream.engines.imaging.lcf import fit_lcf

    ph = make_phantom((100, n_pix // 100), seed=3)
    rng = np.random.default_rng(4)
    mu = ph.absorption_stack().reshape(ph.energy.size, -1).T + rng.normal(0, SIGMA, (n_pix, ph.energy.size))
    t0 = time.perf_counter()
    ours = fit_lcf(mu, ph.refs, energy=ph.energy, background="linear")
    t_ours = time.perf_counter() - t0
    x = (ph.energy - ph.energy.mean()) / (0.5 * np.ptp(ph.energy))
    design = np.vstack([ph.refs, np.ones_like(x), -np.ones_like(x), x, -x]).T
    t0 = time.perf_counter()
    ref = np.array([nnls(design, row)[0][:3] for row in mu])
    t_nnls = time.perf_counter() - t0
    return {"n_pixels": n_pix, "ours_s": t_ours, "scipy_nnls_loop_s": t_nnls, "ratio_nnls_over_ours": t_nnls / t_ours,
            "max_abs_weight_difference": float(np.max(np.abs(ours.weights.T - ref)))}


def bench_full(n: int) -> dict:
    from xafs_stream.engines.imaging import ImagingSettings

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    e, stack, ph = phantom_stack(n)
    t_make = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    settings = ImagingSettings(refs=ph.refs, ref_names=ph.phases)
    labels_truth = ph.labels.copy()
    del ph
    import tracemalloc

    from xafs_stream.engines.imaging.pipeline import stack_features

    tracemalloc.start()
    t0 = time.perf_counter()
    raw, _ = stack_features(e, stack, settings)
    t_feat = time.perf_counter() - t0
    from xafs_stream.engines.imaging import MapModel

    config = settings.map_config()
    t0 = time.perf_counter()
    model = MapModel.batch((n, n), config, {k: raw[k] for k in dict.fromkeys(config.class_features + config.smooth)})
    t_mrf = time.perf_counter() - t0
    traced_peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    rss2 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    acc = float(np.mean(model.labels == labels_truth))
    return {"shape": [int(e.size), n, n], "stack_MB": stack.nbytes / 1e6, "make_stack_s": t_make,
            "features_s": t_feat, "mrf_s": t_mrf, "total_s": t_feat + t_mrf,
            "analysis_peak_alloc_MB": traced_peak,
            "peak_rss_MB_after_stack": rss1, "peak_rss_MB_after_analysis": rss2, "rss_MB_at_start": rss0,
            "label_accuracy": acc, "cg_iterations": model.log.cg_iterations, "beta_rounds": model.log.beta_rounds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    args = parser.parse_args(argv)
    n_map, n_big = (256, 300) if args.quick else (512, 1000)
    out = {"machine": platform.platform(), "python": sys.version.split()[0], "quick": args.quick,
           "note": "shared 2-core machine: times are noisy; compare ratios from the same run"}
    print(f"1. tiles: {n_map} x {n_map} map in {TILE} x {TILE} x 100 tiles")
    out["tiles"] = bench_tiles(n_map)
    print("2. LCF vs scipy nnls loop")
    out["lcf"] = bench_lcf(5000 if args.quick else 20000)
    print(f"3. full stack {n_big} x {n_big} x 100")
    out["full"] = bench_full(n_big)
    t, lcf, full = out["tiles"], out["lcf"], out["full"]
    print()
    print(f"{'measure':<52}{'value':>14}")
    print(f"{'tile: features, median (ms)':<52}{t['features_ms_median']:>14.1f}")
    if t["mrf_ms_median_local"] is not None:
        print(f"{'tile: MRF window update, median (ms)':<52}{t['mrf_ms_median_local']:>14.1f}")
        if t["mrf_ms_median_local_refit"] is not None:
            print(f"{'tile: ... of which with a phase-model refit (n, ms)':<52}"
                  f"{t['n_local_with_phase_refit']:>8d} {t['mrf_ms_median_local_refit']:>5.1f}")
        print(f"{'tile: features + MRF, window updates, median (ms)':<52}{t['tile_total_ms_median_local']:>14.1f}")
        print(f"{'tile: features + MRF, window updates, p90 (ms)':<52}{t['tile_total_ms_p90_local']:>14.1f}")
    if t["mrf_ms_median_global"] is not None:
        print(f"{'tile: MRF whole-map re-solve, median (ms)':<52}{t['mrf_ms_median_global']:>14.1f}")
    print(f"{'tile: features + MRF, all tiles, median / mean (ms)':<52}"
          f"{t['tile_total_ms_median']:>7.1f} / {t['tile_total_ms_mean']:.1f}")
    print(f"{'tile: window updates / tiles':<52}{t['n_local']:>8d} / {t['n_tiles']:<4d}")
    print(f"{'batch re-solve of the full map (s)':<52}{t['batch_resolve_s_final']:>14.2f}")
    if t["speedup_local_vs_batch"] is not None:
        print(f"{'ratio batch re-solve / window update':<52}{t['speedup_local_vs_batch']:>14.1f}")
    print(f"{'labels agreeing with batch (min over checks)':<52}{t['label_agreement_min']:>14.4f}")
    print(f"{'LCF: ours (s) / scipy nnls loop (s), ' + str(lcf['n_pixels']) + ' px':<52}"
          f"{lcf['ours_s']:>7.3f} / {lcf['scipy_nnls_loop_s']:.2f}  (x{lcf['ratio_nnls_over_ours']:.1f})")
    print(f"{'full ' + str(n_big) + '^2 x 100: features (s)':<52}{full['features_s']:>14.1f}")
    print(f"{'full: MRF (s)':<52}{full['mrf_s']:>14.1f}")
    print(f"{'full: total (s)':<52}{full['total_s']:>14.1f}")
    print(f"{'full: stack (MB) / analysis peak allocation (MB)':<52}"
          f"{full['stack_MB']:>7.0f} / {full['analysis_peak_alloc_MB']:.0f}")
    print(f"{'full: process peak RSS after stack / after analysis (MB)':<52}"
          f"{full['peak_rss_MB_after_stack']:>7.0f} / {full['peak_rss_MB_after_analysis']:.0f}")
    print(f"{'full: label accuracy vs phantom':<52}{full['label_accuracy']:>14.4f}")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "imaging.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {results / 'imaging.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
