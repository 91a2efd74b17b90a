"""A simulated beamtime on the embedded default: scans and a map → live analysis → results in Tiled.

Runs through the real service path: embedded Tiled, the broker process, worker processes, the RunEngine
session from :func:`~xafs_stream.service.subscribe`. Prints progress, a summary of runs and results,
the per-unit latency and the Tiled address to browse.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

import numpy as np

from .config import Config

# (label, sample, repeats, faults) of the XAFS scans; the glitch energies sit in Fe's EXAFS region
DEMO_SCANS: list[tuple[str, str, int, dict]] = [
    ("Cu foil", "Cu", 2, {}),
    ("Fe foil", "Fe", 2, {}),
    ("Fe foil, mono glitches", "Fe", 1, {"glitch_energies_ev": (7300.0, 7450.0), "glitch_width_ev": 4.0}),
    ("FeO powder", "FeO", 1, {}),
]


@dataclass
class DemoReport:
    """What the demo did (for the summary and for tests)."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    latencies_s: dict[str, list[float]] = field(default_factory=dict)  # analysis -> latencies
    tiled_url: str = ""
    dashboard_url: str = ""
    elapsed_s: float = 0.0
    all_processed: bool = False


class _Progress:
    """One-line progress of the current run (rewritten in place on a terminal)."""

    def __init__(self, out: TextIO, label: str, total: int):
        self.out, self.label, self.total = out, label, max(total, 1)
        self.done = 0
        self.t0 = time.monotonic()
        self.tty = out.isatty()
        self._last = 0.0

    def __call__(self, name: str, doc: dict) -> None:
        if name != "event":
            return
        self.done += 1
        now = time.monotonic()
        if now - self._last > 0.25 or self.done == self.total:
            self._last = now
            rate = self.done / max(now - self.t0, 1e-6)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            line = f"  {self.label}: {self.done}/{self.total} points, ~{eta:.0f} s left"
            if self.tty:
                self.out.write("\r" + line.ljust(70))
            elif self.done == self.total or self.done % max(self.total // 4, 1) == 0:
                self.out.write(line + "\n")
            self.out.flush()

    def finish(self) -> None:
        if self.tty:
            self.out.write("\n")


def run_demo(config: Config, *, quick: bool = False, out: TextIO = sys.stdout, keep: Callable | None = None) -> DemoReport:
    """Run the demo beamtime with ``config`` (its data directory holds Tiled, broker store, logs).

    ``quick`` runs fewer/shorter scans (for tests). ``keep`` is called with the service before it stops
    (e.g. to keep serving until Ctrl-C).
    """
    from bluesky import RunEngine

    from .plans import mu_xafs_map, xafs_scan
    from .service import Service, subscribe
    from .simulated_devices.beamline import make_beamline
    from .simulated_devices.phantom import default_map_energies

    t_start = time.monotonic()
    report = DemoReport()
    print(f"xafs-stream demo: data in {config.data_dir}", file=out)
    print("  starting embedded Tiled, broker and workers ...", file=out, flush=True)
    with Service(config) as service:
        report.tiled_url = service.tiled.browse_url
        print(f"  Tiled: {report.tiled_url}", file=out)
        if service.dashboard is not None:
            report.dashboard_url = service.dashboard.link
            print(f"  live dashboard: {report.dashboard_url}", file=out)
        print(f"  broker: {service.frontend} (producers), {service.backend} (workers); "
              f"{len(service.worker_procs)} workers", file=out, flush=True)
        if service.events:
            print(f"  follow the results live: xafs-stream watch --events {service.events}", file=out, flush=True)
        RE = RunEngine({})
        session = subscribe(RE, config, tiled_client=service.tiled.client, frontend=service.frontend)
        bl = make_beamline(sample="Cu", seed=7, map_flux_cps=2e7)
        scans = DEMO_SCANS[:2] if quick else DEMO_SCANS
        regions = [[-150, -30, 10, "E"], [-30, 40, 1.0, "E"], [3.2, 12, 0.1, "k"]] if quick else None
        plans = []
        for label, sample, repeats, faults in scans:
            plans.append((label, sample, faults, lambda s=sample, r=repeats: xafs_scan(
                [bl.scaler], bl.dcm, regions, element=_element(s), sample=s, repeats=r, dwell_s=0.5)))
        energies = list(default_map_energies(40 if quick else 60))
        plans.append(("mu-XANES map (2x2 tiles)", None, {}, lambda: mu_xafs_map(
            bl.mapdet, bl.dcm, bl.stage, energies, n_tile_rows=2, n_tile_cols=2, element="Fe",
            sample="phantom", order="energy-outer")))
        for i, (label, sample, faults, make_plan) in enumerate(plans, start=1):
            if sample is not None:
                bl.load_sample(sample)
            bl.set_faults(**faults)
            plan = make_plan()
            uid_box: list[str] = []
            start_token = RE.subscribe(lambda n, d: uid_box.append(d["uid"]) if n == "start" else None)
            total = _expected_points(plan_label=label, bl=bl, regions=regions, scans=scans, energies=energies)
            progress = _Progress(out, f"[{i}/{len(plans)}] {label}", total)
            token = RE.subscribe(progress)
            try:
                RE(plan)
            finally:
                RE.unsubscribe(token)
                RE.unsubscribe(start_token)
                progress.finish()
                bl.set_faults()
            report.runs.append({"uid": uid_box[0] if uid_box else "", "label": label})
        print("  waiting for the analyses ...", file=out, flush=True)
        session.flush()
        report.all_processed = service.wait_idle(240, publisher=session.publisher)
        session.close()
        _collect(service.tiled.client, report)
        _print_summary(report, out)
        if keep is not None:
            keep(service)
    report.elapsed_s = time.monotonic() - t_start
    print(f"demo finished in {report.elapsed_s:.0f} s. Data stay in {config.data_dir}; browse them with "
          f"`xafs-stream serve --data-dir {config.service.data_dir}`.", file=out)
    return report


def _element(sample: str) -> str:
    from .simulated_devices.samples import SAMPLE_LIBRARY

    return SAMPLE_LIBRARY[sample][1]


def _expected_points(*, plan_label: str, bl: Any, regions: Any, scans: list, energies: list) -> int:
    from .plans.regions import parse_regions, region_energies

    for label, sample, repeats, _ in scans:
        if label == plan_label:
            from .simulated_devices.samples import load_sample

            return repeats * len(region_energies(parse_regions(regions), load_sample(sample).e0)[0])
    return len(energies) * 4


def _collect(client: Any, report: DemoReport) -> None:
    from .storage.layout import run_results, stored_results

    for run in report.runs:
        uid = run["uid"]
        raw = client[uid].metadata
        run["plan"] = raw["start"].get("plan_name")
        run["sample"] = raw["start"].get("sample")
        run["exit_status"] = (raw.get("stop") or {}).get("exit_status", "running")
        run["results"] = {}
        node = run_results(client, uid)
        if node is None:
            continue
        run["summary"] = dict(node.metadata.get("summary", {}))
        run["status"] = dict(node.metadata.get("status", {}))
        run["quality"] = dict(node.metadata.get("quality", {}))
        for analysis, units in stored_results(client, uid).items():
            for unit, result in units.items():
                md = result.metadata
                run["results"][f"{analysis}/{unit}"] = md.get("status")
                if md.get("status") == "ok" and md.get("verdict") in ("warn", "bad"):
                    run.setdefault("verdicts", {})[f"{analysis}/{unit}"] = (md["verdict"],
                                                                             md.get("verdict_reasons") or [])
                t_complete = (md.get("timings") or {}).get("t_complete")
                if md.get("written") and t_complete:
                    report.latencies_s.setdefault(analysis, []).append(float(md["written"]) - float(t_complete))


def _verdict_tag(level: str | None) -> str:
    """`` (quality bad)`` after a number whose verdict is not ok."""
    return f" (quality {level})" if level in ("warn", "bad") else ""


def _print_summary(report: DemoReport, out: TextIO) -> None:
    print("\nRuns", file=out)
    print(f"  {'uid':8}  {'what':28} {'status':8} {'ok/skip/err':>11}  highlights", file=out)
    for run in report.runs:
        summary = run.get("summary", {})
        statuses = list(run.get("results", {}).values())
        ok = sum(s == "ok" for s in statuses)
        skipped = sum(s == "skipped" for s in statuses)
        failed = sum(s == "error" for s in statuses)
        bits = []
        if "e0" in summary:
            bits.append(f"E0 {summary['e0']:.1f} eV")
        if "edge_step" in summary and summary["edge_step"] is not None:
            bits.append(f"step {summary['edge_step']:.2f}")
        quality = run.get("quality", {})
        shell = (summary.get("spm") or {}).get("shell1") or {}
        if shell.get("N") is not None:
            bits.append(f"shell1 N={shell['N']:.1f} R={shell['R']:.3f} Å" + _verdict_tag(quality.get("spm")))
        bayes = summary.get("bayes") or {}
        if bayes.get("K") is not None:
            bits.append(f"Bayes K={bayes['K']}" + _verdict_tag(quality.get("bayes_xanes")))
        imaging = summary.get("imaging") or {}
        if imaging.get("n_tiles_done") is not None:
            bits.append(f"map tiles {imaging['n_tiles_done']}")
        errors = [k for k, s in run.get("results", {}).items() if s == "error"]
        if errors:
            bits.append(f"{len(errors)} error(s): {', '.join(errors[:3])}")
        verdicts = run.get("verdicts", {})
        bad = [k for k, (level, _) in verdicts.items() if level == "bad"]
        warn = [k for k, (level, _) in verdicts.items() if level == "warn"]
        if bad:
            bits.append(f"{len(bad)} bad: {', '.join(bad[:3])}")
        if warn:
            bits.append(f"{len(warn)} warn: {', '.join(warn[:3])}")
        print(f"  {run['uid'][:8]:8}  {run['label'][:28]:28} {run.get('exit_status', '?'):8} "
              f"{f'{ok}/{skipped}/{failed}':>11}  {'; '.join(bits)}", file=out)
    if report.latencies_s:
        print("\nPer-unit latency, end of the unit (its last event) → result stored in Tiled:", file=out)
        for analysis, values in sorted(report.latencies_s.items()):
            lat = np.asarray(values)
            print(f"  {analysis:22} {lat.size:3} results  median {1e3 * np.median(lat):7.0f} ms  "
                  f"p95 {1e3 * np.percentile(lat, 95):7.0f} ms  max {1e3 * lat.max():7.0f} ms", file=out)
    print(f"\nBrowse: {report.tiled_url}", file=out)
    if report.dashboard_url:
        print(f"Dashboard (while serving): {report.dashboard_url}", file=out)
    if not report.all_processed:
        print("WARNING: some units were still pending when the demo stopped waiting", file=out)
