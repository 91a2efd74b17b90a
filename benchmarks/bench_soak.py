"""Soak benchmark: the whole service for minutes at a steady offered load, with faults injected.

    python benchmarks/bench_soak.py [--minutes 10] [--profile step|qxafs|both] [--no-faults] [--quick]

Profiles (units are real Cu K-edge spectra from the simulated beamline's sample, 1 % noise):

- ``step``: 10x a busy step-scanning beamline. Such a beamline finishes one repeat every ~90 s, three repeats
  and their merge per sample; 10x that is one repeat unit every 9 s and a merge unit after every third, with
  every default analysis (normalisation, quality, sparse modeling, Bayesian XANES on merges).
- ``qxafs``: a quick-XAFS rate, 50 spectra per second offered, normalisation and quality only. More than two
  workers on two cores finish: it shows what a backlog does to memory and disk, not a sustainable rate.

The service is the real one: the embedded Tiled process, the broker process and two worker processes,
kept alive as ``serve`` keeps them. Faults, at 20/40/60/80 % of the run:
1. kill -9 of a worker;
2. kill -9 of the broker;
3. Tiled not answering for 10 s (SIGSTOP, then SIGCONT);
4. a full disk for 20 s: the data directory lives on a tmpfs of its own, filled to the last byte, then freed.
   This needs root to mount; it is skipped otherwise, and the table says so.

Every 30 s (every 10 s with ``--quick``) the benchmark records units finished and their rate, the queue
(pending, in flight, failing), the resident memory of every process and the disk used. At the end it stops
offering, waits until the queue is empty, and checks in Tiled that each unit has exactly one result of each
analysis (none missing, none twice). Prints a table; writes ``benchmarks/results/soak.json``
(``soak-<profile>.json`` for one profile).

Goals (issue 16): at the sustainable rate (``step``), resident memory grows < 10 % after the warm-up (the
first sample after 20 % of the run); zero units lost and zero duplicates with faults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PROFILES = {
    # name: (units offered per s, merge after every n repeats (0: none), analyses ([] = all))
    "step": (1 / 9, 3, []),
    "qxafs": (50.0, 0, ["xafs.normalize", "xafs.quality"]),
}


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _disk_used(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _fill(path: Path) -> Path:
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


class Offer:
    """Submits units at the profile's rate from a thread; remembers what it submitted."""

    def __init__(self, publisher, rate: float, merge_every: int, stop: threading.Event):
        from xafs_stream.simulated_devices.samples import load_sample

        self.publisher, self.rate, self.merge_every, self.stop = publisher, rate, merge_every, stop
        sample = load_sample("Cu")
        self.energy = np.linspace(sample.e0 - 150, sample.e0 + 800, 400)
        self.mu = sample.mu_t(self.energy)
        self.rng = np.random.default_rng(16)
        self.submitted: list[tuple[str, str, object]] = []  # (run, kind, index)
        self.refused = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _spectrum(self) -> np.ndarray:
        return self.mu + self.rng.normal(0, 0.01, self.mu.size)

    def _loop(self) -> None:
        from xafs_stream.core import UnitEnvelope, WorkUnit
        from xafs_stream.transport.publisher import OutboxError

        md = {"sample": "Cu foil", "element": "Cu", "edge": "K", "e0": 8979.0, "mode": "transmission"}
        run, repeat, start = uuid.uuid4().hex, 0, time.monotonic()
        n = 0
        while not self.stop.is_set():
            wait = start + n / self.rate - time.monotonic()
            if wait > 0 and self.stop.wait(wait):
                return
            n += 1
            units = [WorkUnit(run, "spectrum", repeat, {"energy": self.energy, "mu": self._spectrum()},
                              {**md, "t_complete": time.time()})]
            repeat += 1
            if self.merge_every and repeat == self.merge_every:
                rows = np.vstack([self._spectrum() for _ in range(repeat)])
                units.append(WorkUnit(run, "spectrum", "merge", {
                    "energy_repeats": np.tile(self.energy, (repeat, 1)), "mu_repeats": rows},
                    {**md, "t_complete": time.time(), "repeats": repeat}))
                run, repeat = uuid.uuid4().hex, 0
            elif not self.merge_every and repeat == 1000:
                run, repeat = uuid.uuid4().hex, 0
            for unit in units:
                try:
                    self.publisher.submit(UnitEnvelope(unit))
                    self.submitted.append((unit.run_uid, unit.kind, unit.index))
                except OutboxError:  # the outbox's disk is full (the disk fault): told, not lost
                    self.refused += 1


def soak(profile: str, minutes: float, faults: bool, sample_s: float) -> dict:
    from xafs_stream.analyses.registry import default_registry
    from xafs_stream.config import load_config
    from xafs_stream.service import Service, ServiceFailed
    from xafs_stream.storage.layout import analysis_results, unit_key
    from xafs_stream.transport.publisher import UnitPublisher

    rate, merge_every, analyses = PROFILES[profile]
    base = Path(tempfile.mkdtemp(prefix=f"soak-{profile}-"))
    data = base / "data"
    on_tmpfs = faults and _mount_tmpfs(data, "3g")
    cfg = load_config(overrides={
        "service": {"data_dir": str(data), "workers": 2, "reconcile_recent": 0},
        "broker": {"frontend": "tcp://127.0.0.1:0", "backend": "tcp://127.0.0.1:0", "events": "",
                   "failed_retry_s": 5.0, "failed_retry_max_s": 20.0},
        "worker": {"analyses": ",".join(analyses)}, "dashboard": {"enabled": False}})
    samples, events = [], []
    stop_offer, stop_watch = threading.Event(), threading.Event()
    with Service(cfg) as svc:
        pub = UnitPublisher(svc.frontend, base / "outbox")
        offer = Offer(pub, rate, merge_every, stop_offer)

        def supervise() -> None:  # what serve does
            while not stop_watch.wait(1.0):
                try:
                    for line in svc.supervise():
                        events.append((time.monotonic() - t0, line))
                except ServiceFailed as exc:
                    events.append((time.monotonic() - t0, f"serve would stop here: {exc}"))
                    return

        def pids() -> dict[str, int]:
            out = {"broker": svc.broker_proc.pid, "tiled": svc.tiled.server.proc.pid, "bench": os.getpid()}
            out.update({f"worker{i}": p.pid for i, p in enumerate(svc.worker_procs)})
            return out

        def sample() -> None:
            try:
                st = svc.status(timeout_s=10)
            except TimeoutError:
                st = {"pending": None, "inflight": None, "failing": None, "stats": {"done": None}}
            running = pids()
            samples.append({"t_s": round(time.monotonic() - t0, 1), "offered": len(offer.submitted),
                            "done": st["stats"]["done"], "pending": st["pending"], "inflight": st["inflight"],
                            "failing": st.get("failing"), "outbox": len(pub),
                            "rss_kb": {k: _rss_kb(v) for k, v in running.items()}, "pids": running,
                            "disk_bytes": _disk_used(data)})

        t0 = time.monotonic()
        threading.Thread(target=supervise, daemon=True).start()
        offer.thread.start()
        duration = 60 * minutes
        schedule = [(0.2, "kill -9 of a worker"), (0.4, "kill -9 of the broker"), (0.6, "Tiled stopped for 10 s"),
                    (0.8, "disk full for 20 s")] if faults else []
        next_sample = 0.0
        while time.monotonic() - t0 < duration:
            now = time.monotonic() - t0
            if schedule and now >= schedule[0][0] * duration:
                _, what = schedule.pop(0)
                if what.startswith("kill -9 of a worker"):
                    os.kill(svc.worker_procs[0].pid, signal.SIGKILL)
                elif what.startswith("kill -9 of the broker"):
                    os.kill(svc.broker_proc.pid, signal.SIGKILL)
                elif what.startswith("Tiled"):
                    tiled_pid = svc.tiled.server.proc.pid
                    os.kill(tiled_pid, signal.SIGSTOP)
                    threading.Timer(10.0, os.kill, (tiled_pid, signal.SIGCONT)).start()
                elif on_tmpfs:
                    filler = _fill(data)
                    threading.Timer(20.0, filler.unlink).start()
                else:
                    what += " (skipped: no tmpfs could be mounted)"
                events.append((now, what))
            if now >= next_sample:
                sample()
                next_sample += sample_s
            time.sleep(0.2)
        stop_offer.set()
        offer.thread.join(10)
        # drain: everything offered must come out, however long the backlog takes (up to a limit)
        drained = pub.flush(1800) and svc.wait_idle(1800)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and svc.status(timeout_s=10).get("failing"):
            time.sleep(2)
        sample()
        stop_watch.set()
        pub.close(5)
        # exactly once: one result of every applicable analysis for every unit offered
        registry = default_registry()
        names = {kind: [a.name for a in registry.for_kind(kind, set(analyses) or None)] for kind in ("spectrum",)}
        client = svc.tiled.client
        missing, extra, statuses = 0, 0, {}
        by_run: dict[str, list] = {}
        for run, kind, index in offer.submitted:
            by_run.setdefault(run, []).append((kind, index))
        for run, units in by_run.items():
            for analysis in names["spectrum"]:
                stored = analysis_results(client, run, analysis)
                expected = {unit_key(kind, index) for kind, index in units}
                extra += len(set(stored) - expected) if stored is not None else 0  # results nobody offered
                for kind, index in units:
                    node = stored.get(unit_key(kind, index))
                    if node is None:
                        missing += 1
                        continue
                    status = node.metadata.get("status")
                    statuses[status] = statuses.get(status, 0) + 1
        final = svc.status(timeout_s=10)
        logs = base / "logs"  # kept after the tmpfs is gone
        shutil.copytree(svc.log_dir, logs, dirs_exist_ok=True)
    if on_tmpfs:
        subprocess.run(["umount", "-l", str(data)], check=False)
    warm = next((s for s in samples if s["t_s"] >= 0.2 * duration), samples[0])
    last_running = [s for s in samples if s["t_s"] <= duration][-1]
    # growth of each process from its first sample after the warm-up (a process restarted by a fault is
    # measured from its own first sample: a new process's size is not growth)
    growth = {}
    for role, pid in last_running["pids"].items():
        mine = [x for x in samples if x["t_s"] <= duration and x["pids"].get(role) == pid and x["rss_kb"].get(role)]
        after = [x for x in mine if x["t_s"] >= warm["t_s"]] or mine
        if after and after[0] is not last_running:
            growth[role] = (last_running["rss_kb"][role] - after[0]["rss_kb"][role]) / after[0]["rss_kb"][role]
    finished = last_running["done"] or 0
    return {
        "profile": profile, "minutes": minutes, "offered_per_s": rate, "analyses": analyses or "all",
        "offered": len(offer.submitted), "refused_by_full_outbox": offer.refused,
        "finished_per_s_while_offered": finished / duration, "drained": drained,
        "results_missing": missing, "result_statuses": statuses,
        # a result is one node per (unit, analysis): a unit processed twice overwrites its node, so "twice"
        # shows as redeliveries below; a result stored under a key nobody offered counts here
        "unexpected_results": extra,
        "redelivered": final["stats"].get("redelivered"), "failed_to_store": final["stats"].get("failed"),
        "failing_at_end": final.get("failing_units", []), "logs": str(logs),
        "rss_growth_after_warmup": growth, "faults": events, "disk_fault_on_tmpfs": on_tmpfs, "samples": samples,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--profile", choices=("step", "qxafs", "both"), default="both")
    ap.add_argument("--no-faults", action="store_true")
    ap.add_argument("--quick", action="store_true", help="2 minutes per profile, samples every 10 s")
    args = ap.parse_args()
    minutes = 2.0 if args.quick else args.minutes
    runs = []
    for profile in (("step", "qxafs") if args.profile == "both" else (args.profile,)):
        print(f"soak {profile}: {minutes:g} min, faults {'off' if args.no_faults else 'on'}", flush=True)
        runs.append(soak(profile, minutes, not args.no_faults, 10.0 if args.quick else 30.0))
    print(f"\nSoak ({platform.node()}, {os.cpu_count()} cores)")
    print(f"{'profile':8} {'offered/s':>9} {'offered':>8} {'finished/s':>10} {'missing':>8} {'extra':>6} "
          f"{'redeliv.':>8} "
          f"{'failed':>6}  RSS growth after warm-up (broker, workers, Tiled)")
    for r in runs:
        g = r["rss_growth_after_warmup"]
        growth = ", ".join(f"{k} {100 * v:+.0f}%" for k, v in g.items() if k != "bench")
        print(f"{r['profile']:8} {r['offered_per_s']:9.2f} {r['offered']:8d} {r['finished_per_s_while_offered']:10.2f} "
              f"{r['results_missing']:8d} {r['unexpected_results']:6d} {r['redelivered']:8} "
              f"{r['failed_to_store']:6}  {growth}")
        for t, what in r["faults"]:
            print(f"  t={t:6.0f} s  {what}")
        print("  queue every sample (t s: pending/in flight/failing/outbox): " + "; ".join(
            f"{s['t_s']:.0f}: {s['pending']}/{s['inflight']}/{s['failing']}/{s['outbox']}" for s in r["samples"]))
    RESULTS.mkdir(exist_ok=True)
    out = {"machine": platform.node(), "cpus": os.cpu_count(), "time": time.time(), "runs": runs}
    path = RESULTS / ("soak.json" if args.profile == "both" else f"soak-{args.profile}.json")
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {path}")
    ok = all(r["results_missing"] == 0 and r["drained"] for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
