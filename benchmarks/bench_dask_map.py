"""A stack larger than the memory its workers may use, mapped on a Dask LocalCluster: wall time and peak memory.

A float32 HDF5 stack of ``--size`` x ``--size`` pixels x 100 energies is written block by block (the simulated
beamline's phantom, 500 x 500 px, tiled with fresh noise, three phases), then ``xafs-stream map``'s Dask path
(:func:`xafs_stream.batch.stack.map_stack_on_cluster`) maps it on a LocalCluster of ``--workers`` processes with
``--memory-limit`` each: the workers read their own 256 x 256 tiles, the client assembles the feature maps and
solves the map model. Reported: time for the features (cluster) and for the map model (client), the peak RSS of
the client and of each worker (``ru_maxrss``), and the fraction of labels equal to the phantom's truth.

The in-memory path (``analyze_stack``) runs on a ``--compare-size`` crop in the same run, for the time per
pixel of one process (it cannot take the full stack: ``read_stack`` holds it as float64, 2x its size).

    python benchmarks/bench_dask_map.py [--quick] [--size 4000] [--workers 2] [--memory-limit 2GB]

``--quick``: 1000 x 1000 px (400 MB). The issue's case is the default, 4000 x 4000 x 100 (6.4 GB) with 2
workers of 2 GB each. Writes benchmarks/results/dask_map.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
BLOCK = 500
SIGMA = 0.3  # noise on μt (the phantom's edge step is ~1)


def write_stack(path: Path, size: int, seed: int = 0):
    """The phantom tiled to size x size px with independent noise per block; returns the phantom and truth."""
    import h5py

    from xafs_stream.simulated_devices.phantom import make_phantom

    ph = make_phantom((BLOCK, BLOCK), seed=2)
    clean = ph.absorption_stack().astype(np.float32)
    truth = np.empty((size, size), np.int8)
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as h5:
        dset = h5.create_dataset("stack", (ph.energy.size, size, size), np.float32,
                                 chunks=(ph.energy.size, 64, 64))
        h5["energy"] = ph.energy
        for name, ref in zip(ph.phases, ph.refs):
            h5[f"refs/{name}"] = ref
        for y in range(0, size, BLOCK):
            for x in range(0, size, BLOCK):
                h, w = min(BLOCK, size - y), min(BLOCK, size - x)
                noise = rng.normal(0, SIGMA, (ph.energy.size, h, w)).astype(np.float32)
                dset[:, y:y + h, x:x + w] = clean[:, :h, :w] + noise
                truth[y:y + h, x:x + w] = np.asarray(ph.labels)[:h, :w]
    return ph, truth


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1000 x 1000 px")
    ap.add_argument("--size", type=int, default=4000, help="image side in px (default 4000)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="2GB", help="per worker (default 2GB)")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--compare-size", type=int, default=500, help="crop for the in-memory path (px)")
    ap.add_argument("--dir", help="where to write the stack (default: a temporary directory)")
    args = ap.parse_args()
    size = 1000 if args.quick else args.size

    from xafs_stream.batch.cluster import dask_client
    from xafs_stream.batch.stack import features_on_cluster
    from xafs_stream.engines.imaging import ImagingSettings, analyze_stack
    from xafs_stream.engines.imaging.pipeline import solve_maps
    from xafs_stream.io.stack_tiles import open_stack_tiles

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "stack.h5"
        t0 = time.perf_counter()
        ph, truth = write_stack(path, size)
        t_write = time.perf_counter() - t0
        tiles = open_stack_tiles(path)
        print(f"stack {tiles.shape} float32, {tiles.nbytes / 1e9:.2f} GB written in {t_write:.0f} s", flush=True)
        settings = ImagingSettings(refs=ph.refs, ref_names=ph.phases).for_energy(tiles.energy)

        # the in-memory path on a crop, for the per-pixel time of one process
        n = min(args.compare_size, size)
        crop = tiles.read(0, n, 0, n).astype(np.float64)
        t0 = time.perf_counter()
        analyze_stack(tiles.energy, crop, settings, fft_workers=os.cpu_count() or 1)
        t_mem = time.perf_counter() - t0
        del crop

        t0 = time.perf_counter()
        with dask_client("local", n_workers=args.workers, memory_limit=args.memory_limit) as client:
            t_start = time.perf_counter() - t0
            t1 = time.perf_counter()
            last = [0.0]

            def progress(done, total):
                if time.perf_counter() - last[0] > 30 or done == total:
                    last[0] = time.perf_counter()
                    print(f"  tiles {done}/{total} ({time.perf_counter() - t1:.0f} s)", flush=True)

            raw, reasons = features_on_cluster(client, tiles, settings, tile=args.tile, progress=progress)
            t_features = time.perf_counter() - t1
            worker_rss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
        rss_after_features = _maxrss_mb()
        t0 = time.perf_counter()
        result = solve_maps(raw, reasons, settings, fft_workers=os.cpu_count() or 1)  # as `xafs-stream map`
        t_model = time.perf_counter() - t0
        correct = float(np.mean(result.labels == truth))

    px = size * size
    out = {
        "host": platform.node(), "cores": os.cpu_count(), "size_px": size, "n_energies": int(tiles.shape[0]),
        "stack_gb": tiles.nbytes / 1e9, "workers": args.workers, "memory_limit_per_worker": args.memory_limit,
        "tile_px": args.tile, "write_s": t_write, "cluster_start_s": t_start, "features_s": t_features,
        "features_px_per_s": px / t_features, "map_model_s": t_model, "total_s": t_features + t_model,
        "client_peak_rss_mb_after_features": rss_after_features, "client_peak_rss_mb": _maxrss_mb(),
        "worker_peak_rss_mb": sorted(worker_rss.values()), "labels_correct": correct,
        "in_memory": {"size_px": n, "seconds": t_mem, "px_per_s": n * n / t_mem},
    }
    print(f"\nDask map of a {size} x {size} x {tiles.shape[0]} float32 stack ({out['stack_gb']:.2f} GB), "
          f"{args.workers} workers x {args.memory_limit}, {os.cpu_count()} cores")
    print(f"{'stage':34} {'seconds':>9} {'px/s':>10} {'peak RSS MB':>12}")
    print(f"{'features on the cluster':34} {t_features:9.0f} {px / t_features:10.0f} "
          f"{max(out['worker_peak_rss_mb']):12.0f}  (largest worker)")
    print(f"{'map model in the client':34} {t_model:9.0f} {px / t_model:10.0f} {out['client_peak_rss_mb']:12.0f}  "
          f"(client)")
    print(f"{'in-memory analyze_stack, ' + str(n) + ' px crop':34} {t_mem:9.1f} {n * n / t_mem:10.0f}")
    print(f"labels equal to the phantom's truth: {100 * correct:.1f} %")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dask_map.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'dask_map.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
