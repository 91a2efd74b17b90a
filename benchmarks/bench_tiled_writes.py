"""What storing results costs Tiled: HTTP requests per result and the server's CPU per request.

A worker's real handler (``UnitHandler`` with the map owner) stores the results of a Cu spectrum run (three
repeats and the merge: ``xafs.normalize``, ``xafs.quality``, ``spm``, ``bayes.xanes``) and of a 2x2-tile
Fe map (``imaging.features`` and the whole map, ``imaging.map``) into the embedded Tiled server, run in its
own process as ``serve`` runs it. For every stored record: the requests the client sent (counted on the
httpx transport), the wall time of the store, and the CPU time the server process used meanwhile
(``/proc/<pid>/stat``; the server does nothing else here). The first unit of a run also creates the run's
containers, so it is shown apart.

    python benchmarks/bench_tiled_writes.py [--quick]

prints a table and writes benchmarks/results/tiled_writes.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Counter:
    """Counts the requests every httpx client in this process sends."""

    def __init__(self) -> None:
        import httpx

        self.n = collections.Counter()
        original = httpx.Client.send
        counter = self

        def send(client, request, **kw):
            counter.n[request.method] += 1
            return original(client, request, **kw)

        httpx.Client.send = send

    def total(self) -> int:
        return sum(self.n.values())


def _units(quick: bool) -> list:
    from xafs_stream.core import UnitEnvelope, WorkUnit
    from xafs_stream.simulated_devices.phantom import make_phantom
    from xafs_stream.simulated_devices.samples import load_sample

    rng = np.random.default_rng(0)
    sample = load_sample("Cu")
    energy = np.linspace(sample.e0 - 150, sample.e0 + 900, 600)
    md = {"sample": "Cu foil", "element": "Cu", "edge": "K"}
    spectra = []
    for i in range(2 if quick else 3):
        mu = sample.mu_t(energy) + 2e-4 * rng.standard_normal(energy.size)
        spectra.append(UnitEnvelope(WorkUnit("bench-spectra", "spectrum", i, {"energy": energy, "mu": mu}, md)))
    spectra.append(UnitEnvelope(WorkUnit("bench-spectra", "spectrum", "merge",
                                         {"energy": energy, "mu": sample.mu_t(energy)}, md)))
    ph = make_phantom(seed=0)
    stack = ph.absorption_stack() + 0.01 * rng.standard_normal((ph.energy.size, *ph.shape))
    ny, nx = ph.shape
    th, tw = ny // 2, nx // 2
    tiles = []
    for t in range(4):
        r, c = divmod(t, 2)
        tmd = {"element": "Fe", "sample": "phantom", "tile_row": r, "tile_col": c, "y0": r * th, "x0": c * tw,
               "map_ny": ny, "map_nx": nx, "n_tiles": 4}
        tiles.append(UnitEnvelope(WorkUnit("bench-map", "tile", t, {
            "energy": ph.energy, "stack": stack[:, r * th:(r + 1) * th, c * tw:(c + 1) * tw].astype("float32"),
            "i0": np.ones(ph.energy.size)}, tmd)))
    return spectra + tiles


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="two repeats instead of three")
    args = ap.parse_args()
    from xafs_stream.analyses.registry import load_registry
    from xafs_stream.storage.results import ResultStore
    from xafs_stream.storage.tiled_server import start_tiled_process
    from xafs_stream.worker import MapOwner, UnitHandler

    counter = _Counter()
    handle = start_tiled_process(tempfile.mkdtemp(prefix="bench-tiled-"))
    pid = handle.server.proc.pid
    store = ResultStore(handle.client)
    store.warm_up()
    rows = []

    class Measured:
        """The store, measured per record."""

        client = store.client

        def write(self, record):
            n0, c0, t0 = counter.total(), _cpu_s(pid), time.perf_counter()
            out = store.write(record)
            wall = time.perf_counter() - t0
            time.sleep(0.05)  # let the server finish accounting the last request's CPU
            rows.append({"analysis": record.analysis, "unit": str(record.index), "run": record.run_uid,
                         "status": record.status, "requests": counter.total() - n0,
                         "store_ms": 1e3 * wall, "server_cpu_ms": 1e3 * (_cpu_s(pid) - c0)})
            return out

    measured = Measured()
    handler = UnitHandler(measured, load_registry([]), post_process=MapOwner(measured, {}),
                          enabled=["xafs.normalize", "xafs.quality", "spm", "bayes.xanes", "imaging.features"])
    for env in _units(args.quick):
        handler.handle(env)
    handle.close()

    first = {}
    for r in rows:  # the first record stored for a run creates its containers
        first.setdefault(r["run"], id(r))
    print(f"\nTiled writes per result ({platform.node()}, {os.cpu_count()} cores; embedded Tiled in its own process)")
    print(f"{'analysis':18} {'unit':8} {'status':8} {'requests':>8} {'store ms':>9} {'server CPU ms':>14} "
          f"{'CPU ms/request':>15}")
    for r in rows:
        per = r["server_cpu_ms"] / r["requests"] if r["requests"] else float("nan")
        mark = " (creates the run)" if first[r["run"]] == id(r) else ""
        print(f"{r['analysis']:18} {r['unit']:8} {r['status']:8} {r['requests']:8d} {r['store_ms']:9.0f} "
              f"{r['server_cpu_ms']:14.0f} {per:15.1f}{mark}")
    later = [r for r in rows if first[r["run"]] != id(r) and r["requests"]]
    spectrum_unit = [r for r in later if r["run"] == "bench-spectra" and r["unit"] != "merge"]
    by_unit = collections.defaultdict(int)
    cpu_unit = collections.defaultdict(float)
    for r in spectrum_unit:
        by_unit[r["unit"]] += r["requests"]
        cpu_unit[r["unit"]] += r["server_cpu_ms"]
    total_req = sum(r["requests"] for r in later)
    total_cpu = sum(r["server_cpu_ms"] for r in later)
    summary = {
        "server_cpu_ms_per_request": total_cpu / total_req if total_req else None,
        "requests_per_repeat_unit": float(np.median(list(by_unit.values()))) if by_unit else None,
        "server_cpu_ms_per_repeat_unit": float(np.median(list(cpu_unit.values()))) if cpu_unit else None,
    }
    print(f"\nserver CPU per request (all but the first record of each run): "
          f"{summary['server_cpu_ms_per_request']:.1f} ms")
    print(f"a repeat's results (normalisation + quality + SpM; Bayes runs on merges): "
          f"{summary['requests_per_repeat_unit']:.0f} requests, {summary['server_cpu_ms_per_repeat_unit']:.0f} ms "
          f"of server CPU -> one Tiled process stores at most "
          f"~{1e3 / summary['server_cpu_ms_per_repeat_unit']:.1f} such units per second")
    RESULTS.mkdir(exist_ok=True)
    out = {"machine": platform.node(), "cpus": os.cpu_count(), "time": time.time(), "rows": rows,
           "summary": summary, "load_avg": os.getloadavg()}
    (RESULTS / "tiled_writes.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'tiled_writes.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
