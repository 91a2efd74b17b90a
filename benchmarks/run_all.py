"""Run every benchmark in one go: ``python benchmarks/run_all.py [--quick] [--only NAME ...]``.

Each benchmark prints its own table and writes ``benchmarks/results/<name>.json``; this script runs them
one after another (never in parallel: they time CPU work) and prints how long each took and where its JSON is.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAMES = ("preprocess", "spm", "bayes", "imaging", "transport", "tiled_writes", "dask_map", "scale", "adaptive")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    ap.add_argument("--only", nargs="+", choices=NAMES, help="run only these")
    args = ap.parse_args()
    failed = []
    summary = []
    for name in args.only or NAMES:
        cmd = [sys.executable, str(HERE / f"bench_{name}.py")] + (["--quick"] if args.quick else [])
        print(f"\n===== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call(cmd)
        summary.append((name, rc, time.monotonic() - t0))
        if rc:
            failed.append(name)
    print("\nbenchmark      exit   wall time   results")
    for name, rc, wall in summary:
        print(f"{name:14} {rc:4d} {wall:9.0f} s   benchmarks/results/{name}.json")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
