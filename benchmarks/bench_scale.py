"""Scaling: stored spectra per second and their lag against the number of workers and of Tiled server processes.

Every configuration runs the deployment of docs/deploy.md on this machine: PostgreSQL, ``tiled serve`` processes
on one PostgreSQL catalog (ports 8100, 8101, ...), the broker and ``xafs-stream worker`` processes (worker i
stores through Tiled process i mod T), as separate processes talking over TCP. A publisher offers Cu K-edge
spectra of 1,000 points at ``--rate`` per second for ``--seconds``, with the fast analyses only
(``xafs.normalize`` and ``xafs.quality``: two results per spectrum), then waits up to 120 s for the backlog.
The broker's result events give each result's lag (written - the unit's completion time).

Reported per configuration: spectra stored per second while offered (both results in Tiled), the lag of the
normalisation (median, p95), the backlog at the end of the offer, and the CPU each kind of process used per
wall second (1.0 = one core busy) beside the whole machine's: where the time goes.

    python benchmarks/bench_scale.py [--quick] [--workers 1 2 4] [--tiled 1 2] [--rate 20] [--seconds 60]

Needs the PostgreSQL server binaries (Debian package postgresql) and, as root, the ``postgres`` user; skips
(exit 0, saying why) otherwise. Writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from xafs_stream.testing import ThrowawayPostgres, free_port, postgres_bindir

RESULTS = Path(__file__).resolve().parent / "results"
KEY = "benchscalekey"
ANALYSES = ("xafs.normalize", "xafs.quality")


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime, stime, cutime, cstime: children count too (uvicorn/tiled may fork)
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


def _http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _spectrum_units(n_points: int):
    from xafs_stream.simulated_devices.samples import load_sample

    sample = load_sample("Cu")
    energy = np.linspace(sample.e0 - 150, sample.e0 + 850, n_points)
    return energy, sample.mu_t(energy)


def run_config(pg: ThrowawayPostgres, n_tiled: int, n_workers: int, rate: float, seconds: float, n_points: int,
               work: Path) -> dict:
    from xafs_stream.core import UnitEnvelope, WorkUnit
    from xafs_stream.transport.events import ResultEvents
    from xafs_stream.transport.publisher import UnitPublisher, broker_status

    tag = f"t{n_tiled}w{n_workers}"
    d = work / tag
    d.mkdir()
    procs: dict[str, subprocess.Popen] = {}
    logs = []

    def start(name: str, argv: list[str]) -> subprocess.Popen:
        log = (d / f"{name}.log").open("w")
        logs.append(log)
        procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        return procs[name]

    try:
        db = pg.new_database(f"catalog_{tag}")
        files = d / "tiled-data"
        files.mkdir()
        ports = [free_port() for _ in range(n_tiled)]
        for i, port in enumerate(ports):
            start(f"tiled{i}", [sys.executable, "-m", "tiled", "serve", "catalog", db, *(["--init"] if i == 0 else []),
                                "--host", "127.0.0.1", "--port", str(port), "-w", str(files), "-w", db,
                                "--api-key", KEY])
            _wait(lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"), 120, f"tiled serve #{i}")
        fp, bp, ep = free_port(), free_port(), free_port()
        frontend, backend, events = (f"tcp://127.0.0.1:{p}" for p in (fp, bp, ep))
        toml = d / "xafs-stream.toml"
        toml.write_text(f'[tiled]\nuri = "http://127.0.0.1:{ports[0]}/api/v1"\napi_key = "{KEY}"\n'
                        f'[broker]\nfrontend = "{frontend}"\nbackend = "{backend}"\nevents = "{events}"\n'
                        f'[worker]\nanalyses = "{",".join(ANALYSES)}"\n[service]\ndata_dir = "{d / "data"}"\n')
        ready = d / "broker.ready"
        start("broker", [sys.executable, "-m", "xafs_stream.cli.main", "broker", "--config", str(toml),
                         "--ready-file", str(ready)])
        _wait(ready.exists, 60, "the broker")
        for i in range(n_workers):
            start(f"worker{i}", [sys.executable, "-m", "xafs_stream.cli.main", "worker", "--config", str(toml),
                                 "--name", f"w{i}", "--tiled-uri", f"http://127.0.0.1:{ports[i % n_tiled]}/api/v1"])
        _wait(lambda: len(broker_status(frontend)["workers"]) >= n_workers, 60, "the workers")

        energy, mu = _spectrum_units(n_points)
        rng = np.random.default_rng(20)
        sent: dict[str, float] = {}
        lags: dict[str, list[float]] = {a: [] for a in ANALYSES}
        stored_at: list[float] = []
        sub = ResultEvents(events)
        sub.wait_ready(10)
        stop_listen = threading.Event()

        def listen() -> None:
            while not stop_listen.is_set():
                ev = sub.get(0.5)
                if ev is None or ev.unit_id not in sent:
                    continue
                lags[ev.analysis].append(ev.written - sent[ev.unit_id])
                stored_at.append(time.time())

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        pub = UnitPublisher(frontend, d / "outbox")
        # warm-up: a few units so that the first run's nodes and every import are done before timing
        run = uuid.uuid4().hex
        for i in range(2 * n_workers):
            unit = WorkUnit(run, "spectrum", i, {"energy": energy, "mu": mu + rng.normal(0, 0.01, mu.size)},
                            {"sample": "Cu foil", "element": "Cu", "edge": "K", "t_complete": time.time()})
            pub.submit(UnitEnvelope(unit))
        pub.flush(60)
        _wait(lambda: broker_status(frontend)["pending"] == 0 and broker_status(frontend)["inflight"] == 0, 120,
              "the warm-up units")
        cpu0 = {name: _cpu_s(p.pid) for name, p in procs.items()}
        busy0 = _machine_busy_s()
        run = uuid.uuid4().hex
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < seconds:
            wait = t0 + n / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            unit = WorkUnit(run, "spectrum", n, {"energy": energy, "mu": mu + rng.normal(0, 0.01, mu.size)},
                            {"sample": "Cu foil", "element": "Cu", "edge": "K", "t_complete": time.time()})
            sent[unit.unit_id] = unit.metadata["t_complete"]
            pub.submit(UnitEnvelope(unit))
            n += 1
        t_end = time.time()
        wall = time.monotonic() - t0
        cpu1 = {name: _cpu_s(p.pid) for name, p in procs.items()}
        cpu_machine = (_machine_busy_s() - busy0) / wall
        st = broker_status(frontend)
        backlog = int(st["pending"]) + int(st["inflight"]) + len(pub)
        done_in_window = sum(1 for t in stored_at if t <= t_end) / len(ANALYSES)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and min(len(v) for v in lags.values()) < n:
            time.sleep(0.5)
        stop_listen.set()
        listener.join(5)
        sub.close()
        pub.close(5)
        norm = np.array(lags["xafs.normalize"]) if lags["xafs.normalize"] else np.array([np.nan])
        cpu = {}
        for name in procs:
            kind = "tiled" if name.startswith("tiled") else "worker" if name.startswith("worker") else name
            cpu[kind] = cpu.get(kind, 0.0) + (cpu1[name] - cpu0[name]) / wall
        # the rest: PostgreSQL's backends, this publisher, the event listener, the system
        cpu["machine"] = cpu_machine
        return {"tiled_processes": n_tiled, "workers": n_workers, "offered_per_s": n / wall, "offered": n,
                "stored_per_s": done_in_window / wall, "stored_after_drain": min(len(v) for v in lags.values()),
                "backlog_at_end": backlog, "lag_median_s": float(np.nanmedian(norm)),
                "lag_p95_s": float(np.nanpercentile(norm, 95)), "cpu_per_wall_s": cpu}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 s per configuration")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--tiled", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rate", type=float, default=20.0, help="spectra offered per second (default 20)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--points", type=int, default=1000, help="points per spectrum (default 1000)")
    args = ap.parse_args()
    seconds = 20.0 if args.quick else args.seconds
    bindir = postgres_bindir()
    if bindir is None:
        print("bench_scale skipped: no PostgreSQL server binaries (Debian package postgresql)")
        return 0
    pg = ThrowawayPostgres(bindir, max_connections=300)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="xafs-scale-"))
    try:
        for n_tiled in args.tiled:
            for n_workers in args.workers:
                print(f"--- {n_tiled} Tiled process(es), {n_workers} worker(s): {args.rate:g} spectra/s for "
                      f"{seconds:.0f} s", flush=True)
                row = run_config(pg, n_tiled, n_workers, args.rate, seconds, args.points, work)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "cpu_per_wall_s"}), flush=True)
    finally:
        pg.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nScaling ({platform.node()}, {os.cpu_count()} cores; {args.points}-point spectra, "
          f"{' + '.join(ANALYSES)}, offered {args.rate:g}/s for {seconds:.0f} s)")
    print(f"{'Tiled':>5} {'workers':>7} {'stored/s':>9} {'lag p50 s':>10} {'lag p95 s':>10} {'backlog':>8}   "
          f"CPU per wall s: tiled / workers / broker / whole machine (max {os.cpu_count()})")
    for r in rows:
        c = r["cpu_per_wall_s"]
        print(f"{r['tiled_processes']:5d} {r['workers']:7d} {r['stored_per_s']:9.1f} {r['lag_median_s']:10.2f} "
              f"{r['lag_p95_s']:10.2f} {r['backlog_at_end']:8d}   {c.get('tiled', 0):.2f} / "
              f"{c.get('worker', 0):.2f} / {c.get('broker', 0):.2f} / {c.get('machine', 0):.2f}")
    RESULTS.mkdir(exist_ok=True)
    out = {"host": platform.node(), "cores": os.cpu_count(), "rate": args.rate, "seconds": seconds,
           "points": args.points, "analyses": list(ANALYSES), "rows": rows}
    (RESULTS / "scale.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'scale.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
