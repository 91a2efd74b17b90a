"""What the dashboard shows, read from Tiled: runs, their progress, result trees and result arrays.

Raw runs live at the catalog root under their uid (start/stop documents in the metadata, the event table in
``run["primary"].base["internal"]``); results at ``/xafs_results/<uid>/<analysis>/<unit>`` (see
:mod:`xafs_stream.storage.layout`). Every function returns plain JSON-able data (NaN → None).

Reading a result node's arrays costs 0.3-0.9 s here (one HTTP request per table/array child, measured on the
shared 2-core machine), so arrays are cached by (node path, ``written`` time): a result is read once per
version, however many browsers show it.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..core import check_id, to_json_safe
from ..storage import layout
from ..storage.layout import (
    ResultIncomplete,
    expected_units,
    is_raw_run_key,
    read_arrays,
    read_named,
    result_layout,
)

log = logging.getLogger(__name__)

#: how long a PNG request waits for a result node being replaced when no earlier picture is cached, s
PNG_WAIT_S = 3.0
#: longest array sent to the browser (longer ones are thinned by a stride; spectra have ~400 points)
MAX_POINTS = 4000


class NotFound(LookupError):
    """The run, analysis, unit or array asked for does not exist (HTTP 404)."""


def plain(obj: Any) -> Any:
    """Tiled metadata views (Mappings, tuples, numpy scalars) as plain JSON types, NaN → None."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    try:
        return to_json_safe(obj)
    except TypeError:
        return str(obj)


def thin(a: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Every n-th point of a 1-D array so that at most ``max_points`` remain (first and last kept)."""
    a = np.asarray(a)
    if a.ndim != 1 or a.size <= max_points:
        return a
    idx = np.unique(np.r_[np.arange(0, a.size, math.ceil(a.size / max_points)), a.size - 1])
    return a[idx]


def total_events(start: Mapping[str, Any]) -> int | None:
    """Events a complete run holds: ``n_points`` per repeat for spectra, ``n_points`` in all for maps."""
    n = start.get("n_points")
    if n is None:
        return None
    if start.get("xafs_kind") == "spectrum":
        return int(n) * int(start.get("repeats") or 1)
    return int(n)


def run_flags(start: Mapping[str, Any], stop: Mapping[str, Any] | None, status: Mapping[str, Any],
              summary: Mapping[str, Any], quality: Mapping[str, Any] | None = None) -> list[str]:
    """Why a run deserves a second look: an unsuccessful stop, analysis errors, a warn or bad verdict,
    repeats left out of the merge, glitches found."""
    flags = []
    if stop and stop.get("exit_status") not in (None, "success"):
        reason = stop.get("reason") or ""
        flags.append(f"run {stop.get('exit_status')}" + (f": {reason}" if reason else ""))
    for analysis, state in sorted(status.items()):
        if state == "error":
            flags.append(f"{analysis}: error")
        elif state == "ok" and quality and quality.get(analysis) in ("warn", "bad"):
            flags.append(f"{analysis}: quality {quality[analysis]}")
    n_rep, n_used = summary.get("n_repeats"), summary.get("n_repeats_merged")
    if isinstance(n_rep, int) and isinstance(n_used, int) and n_used < n_rep:
        flags.append(f"{n_rep - n_used} of {n_rep} repeats left out of the merge")
    if summary.get("n_glitches"):
        flags.append(f"{summary['n_glitches']} glitch point(s)")
    return flags


def progress(start: Mapping[str, Any], stop: Mapping[str, Any] | None, seq_times: np.ndarray | None,
             now: float | None = None) -> dict[str, Any]:
    """Progress of a run: events done and expected, fraction, elapsed and remaining scan time (s).

    Remaining time = events left / measured event rate (over the last 50 events), or the plan's
    ``scan_time_estimate_s`` scaled by the fraction left while fewer than 5 events exist.
    """
    total = total_events(start)
    done = int(seq_times.size) if seq_times is not None else 0
    if stop:
        done = int((stop.get("num_events") or {}).get("primary", done))
    now = time.time() if now is None else now
    t0 = float(start["time"]) if start.get("time") is not None else now
    t_end = float(stop["time"]) if stop and stop.get("time") is not None else now
    out: dict[str, Any] = {"done": done, "total": total, "running": stop is None, "elapsed_s": t_end - t0,
                           "fraction": (min(done / total, 1.0) if total else None), "remaining_s": None}
    if stop is None and total:
        left = max(total - done, 0)
        if seq_times is not None and seq_times.size >= 5:
            recent = np.sort(seq_times)[-50:]
            rate = (recent.size - 1) / max(recent[-1] - recent[0], 1e-9)
            out["remaining_s"] = left / rate if rate > 0 else None
            out["rate_per_s"] = rate
        elif start.get("scan_time_estimate_s"):
            out["remaining_s"] = float(start["scan_time_estimate_s"]) * left / total
    elif stop is not None:
        out["remaining_s"] = 0.0
    return out


class Catalog:
    """Read-only view of raw runs and results for the dashboard.

    Parameters
    ----------
    client : the Tiled catalog root (raw runs by uid and the ``xafs_results`` container)
    cache_size : result nodes whose arrays are kept in memory
    """

    def __init__(self, client: Any, *, cache_size: int = 64, tree_max_age_s: float = 2.0):
        self.client = client
        self.cache_size = int(cache_size)
        self.tree_max_age_s = float(tree_max_age_s)
        self._cache: OrderedDict[tuple[str, str, str], tuple[float, dict[str, np.ndarray]]] = OrderedDict()
        self._reading: dict[tuple, threading.Event] = {}
        self._trees: dict[str, tuple[float, dict]] = {}
        self._pngs: dict[tuple[str, str, str, str], bytes] = {}  # last PNG served per result and name
        self._bands: dict[str, tuple[int, dict]] = {}  # adaptive scan uid -> (decisions read, last report's band)
        self._lock = threading.Lock()
        self._prefetcher: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Stop the prefetch thread (reads in progress finish)."""
        if self._prefetcher is not None:
            self._prefetcher.shutdown(wait=False, cancel_futures=True)
            self._prefetcher = None

    # -- helpers ------------------------------------------------------------------------------------
    def _get(self, *path: str) -> Any | None:
        """The node at ``path`` or None (one request for the whole path; none for a part that is not a safe
        id, which no run has)."""
        try:
            for part in path:
                check_id(part)
            return self.client["/".join(path)]
        except (KeyError, ValueError):
            return None

    def results_root(self) -> Any | None:
        return layout.results_root(self.client)

    def _raw(self, uid: str) -> Any:
        node = self._get(uid) if is_raw_run_key(uid) and "/" not in uid else None
        if node is None:
            raise NotFound(f"no run {uid!r} in Tiled")
        return node

    def _result_run(self, uid: str) -> Any | None:
        return layout.run_results(self.client, uid)

    # -- runs ---------------------------------------------------------------------------------------
    def recent_uids(self, limit: int = 50) -> list[str]:
        """Uids of the ``limit`` most recent raw runs, newest first."""
        keys = list(self.client.keys()[-1:-(limit + 2):-1])
        return [k for k in keys if is_raw_run_key(k)][:limit]

    def runs(self, limit: int = 50, *, text: str = "") -> list[dict[str, Any]]:
        """Newest runs first: identity, state, progress counts, analysis status and flags."""
        items = [(k, v) for k, v in self.client.items()[-1:-(limit + 2):-1] if is_raw_run_key(k)][:limit]
        results: dict[str, Mapping[str, Any]] = {}
        root = self.results_root()
        if root is not None and items:
            from tiled.queries import In

            for key, node in root.search(In("run_uid", [k for k, _ in items])).items():
                results[key] = node.metadata
        out = []
        for uid, node in items:
            md = node.metadata
            start = plain(md.get("start") or {})
            stop = plain(md.get("stop")) if md.get("stop") else None
            res = plain(results.get(uid, {}))
            row = run_row(uid, start, stop, res)
            if text and text.lower() not in " ".join(str(row.get(k, "")) for k in
                                                       ("uid", "sample", "element", "plan_name")).lower():
                continue
            out.append(row)
        return out

    def run(self, uid: str) -> dict[str, Any]:
        """One run: start/stop essentials, progress, and every result's metadata (no arrays)."""
        raw = self._raw(uid)
        md = raw.metadata
        start = plain(md.get("start") or {})
        stop = plain(md.get("stop")) if md.get("stop") else None
        seq_times = self.event_times(uid) if stop is None else None
        res_run = self._result_run(uid)
        res_md = plain(res_run.metadata) if res_run is not None else {}
        detail = run_row(uid, start, stop, res_md)
        detail["progress"] = progress(start, stop, seq_times)
        detail["start"] = {k: start.get(k) for k in (
            "plan_name", "sample", "element", "edge", "e0", "mode", "regions", "n_points", "repeats", "dwell_s",
            "scan_time_estimate_s", "energy_key", "channels", "n_tiles", "map_ny", "map_nx", "tile_ny", "tile_nx",
            "n_tile_rows", "n_tile_cols", "order", "n_energies", "pixel_size_um", "scan_id", "time") if k in start}
        detail["stop"] = stop
        detail["summary"] = res_md.get("summary", {})
        detail["results"] = self._tree_of(uid, res_run)
        detail["expected_units"] = expected_units(start)
        return detail

    def result_tree(self, res_run: Any) -> dict[str, dict[str, dict[str, Any]]]:
        """``{analysis_key: {unit_key: metadata}}`` of one result run node (one request per analysis)."""
        tree: dict[str, dict[str, dict[str, Any]]] = {}
        for analysis_key, analysis_node in res_run.items():
            units = {}
            for unit, node in analysis_node.items():
                md = plain(node.metadata)
                md.pop("params", None)  # large and not shown; the Tiled browser has them
                md["n_children"] = _child_count(node)
                units[unit] = md
            tree[analysis_key] = units
        return tree

    def _tree_of(self, uid: str, res_run: Any | None) -> dict[str, dict[str, dict[str, Any]]]:
        """The result tree, taken from the watcher's last look if that is recent (it read the same metadata
        a moment ago; this saves 1 + n_analyses requests per page update while results stream in)."""
        with self._lock:
            cached = self._trees.get(uid)
        if cached is not None and time.monotonic() - cached[0] < self.tree_max_age_s:
            return cached[1]
        return self.result_tree(res_run) if res_run is not None else {}

    def fingerprint(self, uid: str) -> dict[str, tuple[Any, Any, Any]]:
        """``{"analysis/unit": (written, status, n_children)}`` of a run's results: cheap change detection
        (the tree read for it is kept a moment for :meth:`run`). The results store creates a node with its
        metadata first and adds the arrays after, so the child count tells when a result is complete."""
        res_run = self._result_run(uid)
        tree = self.result_tree(res_run) if res_run is not None else {}
        with self._lock:
            self._trees[uid] = (time.monotonic(), tree)
        return {f"{a}/{u}": (md.get("written"), md.get("status"), md.get("n_children")) for a, units in tree.items()
                for u, md in units.items()}

    def prefetch(self, uid: str, analysis: str, unit: str) -> None:
        """Read a new result's arrays in the background, so the pages that will ask for it find them cached."""
        if self._prefetcher is None:
            # a few at once: a finished spectrum brings 3 results at a time, each a few HTTP requests
            self._prefetcher = ThreadPoolExecutor(max_workers=3, thread_name_prefix="dashboard-prefetch")
        self._prefetcher.submit(self._prefetch, uid, analysis, unit)

    def _prefetch(self, uid: str, analysis: str, unit: str) -> None:
        try:
            self.arrays(uid, analysis, unit)
        except Exception as exc:  # noqa: BLE001 - a page asking later gets the error; nothing to do here
            log.debug("prefetch %s/%s/%s: %s", uid, analysis, unit, exc)

    def event_table(self, uid: str) -> Any | None:
        """The event table of a run's primary stream (Tiled table client), or None before the first event."""
        return self._get(uid, "primary", "internal")

    def event_times(self, uid: str) -> np.ndarray | None:
        """Event times (unix s) of a run's primary stream so far, or None before the first event."""
        table = self.event_table(uid)
        if table is None:
            return None
        return table.read(["time"])["time"].to_numpy(dtype=float)

    def _measured_mu(self, uid: str, start: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Energy (eV), μ and repeat number of each event of a spectrum run so far, in the order measured
        (ln(I0/It), or If/I0 in fluorescence); None before the first event."""
        channels = start.get("channels") or {}
        ekey = start.get("energy_key")
        table = self.event_table(uid)
        if table is None:
            return None
        fluor = start.get("mode") == "fluorescence"
        signal = channels.get("ifluor") if fluor else channels.get("it")
        cols = [c for c in (ekey, channels.get("i0"), signal, "repeat") if c]
        if len(cols) < 4:
            raise NotFound(f"run {uid}: start document lacks energy_key/channels")
        frame = table.read(cols)
        energy = frame[ekey].to_numpy(float)
        i0 = frame[channels["i0"]].to_numpy(float)
        sig = frame[signal].to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = sig / i0 if fluor else np.log(i0 / sig)
        rep = frame["repeat"].to_numpy(int) if "repeat" in frame else np.zeros(energy.size, int)
        return energy, mu, rep

    def raw_spectra(self, uid: str) -> dict[str, Any]:
        """μ(E) of each repeat straight from the event table (ln(I0/It), or If/I0 in fluorescence):
        what the scan has measured so far, before any analysis."""
        raw = self._raw(uid)
        start = plain(raw.metadata.get("start") or {})
        if start.get("xafs_kind") != "spectrum":
            raise NotFound(f"run {uid} is not a spectrum scan")
        measured = self._measured_mu(uid, start)
        if measured is None:
            return {"repeats": []}
        energy, mu, rep = measured
        repeats = []
        for r in np.unique(rep):
            sel = rep == r
            repeats.append({"repeat": int(r), "energy": plain(thin(energy[sel])), "mu": plain(thin(mu[sel]))})
        return {"repeats": repeats, "mode": start.get("mode", "transmission")}

    def adaptive(self, uid: str) -> dict[str, Any]:
        """An adaptive scan as it goes (``xafs_scan_adaptive``): its target, every decision so far (points
        chosen, why, the estimates and their sd, points and beam seconds used, the verdict), the points
        measured (energy eV, μ, in the order measured), the local fits' posterior band of the last decision
        and, once it stopped, why. Two table reads per call (the decisions, the points), and a third (the
        reports, for the band) only when the number of decisions changed since the last call."""
        raw = self._raw(uid)
        start = plain(raw.metadata.get("start") or {})
        if start.get("plan_name") != "xafs_scan_adaptive":
            raise NotFound(f"run {uid} is not an adaptive scan")
        stop = plain(raw.metadata.get("stop") or {})
        out: dict[str, Any] = {"target": start.get("adaptive_target") or {}, "running": not stop,
                               "stop_reason": stop.get("reason") if stop else None, "decisions": [], "band": {},
                               "verdict": "", "verdict_reasons": [], "points": {"energy": [], "mu": []}}
        table = self._get(uid, "adaptive", "internal")
        if table is not None:
            from ..engines.adaptive import TARGETS as ADAPTIVE_TARGETS

            names = ("decision", "energies", "reason", "points", "beam_time_s",
                     *(n for t in ADAPTIVE_TARGETS for n in (t, f"{t}_sd")), "verdict", "verdict_reasons")
            # a scan recorded before a target existed has no column for it
            columns = set(table.columns)
            names = tuple(n for n in names if f"adaptive_{n}" in columns)
            frame = table.read(["time", *(f"adaptive_{n}" for n in names)])
            for row in frame.to_dict("records"):
                d = {n: row[f"adaptive_{n}"] for n in names}
                d["energies"] = json.loads(d["energies"] or "[]")
                d["verdict_reasons"] = json.loads(d["verdict_reasons"] or "[]")
                d["time"] = row["time"]
                out["decisions"].append(plain(d))
            if out["decisions"]:
                last = out["decisions"][-1]
                out["verdict"], out["verdict_reasons"] = last["verdict"], last["verdict_reasons"]
                out["band"] = self._band(uid, table, len(out["decisions"]))
        measured = self._measured_mu(uid, start)
        if measured is not None:
            energy, mu, _ = measured
            out["points"] = {"energy": plain(energy), "mu": plain(mu)}
        return out

    def _band(self, uid: str, table: Any, n_decisions: int) -> dict[str, Any]:
        """The last report's posterior band, read again only when the scan made a decision since (the reports
        column is the bulk of the ``adaptive`` stream and grows with every decision)."""
        with self._lock:
            hit = self._bands.get(uid)
        if hit is not None and hit[0] == n_decisions:
            return hit[1]
        reports = table.read(["adaptive_report"])["adaptive_report"]
        band = json.loads(reports.iloc[-1] or "{}").get("band") or {}
        with self._lock:
            self._bands[uid] = (n_decisions, band)
            while len(self._bands) > self.cache_size:
                self._bands.pop(next(iter(self._bands)))
        return band

    # -- result arrays --------------------------------------------------------------------------------
    def result_node(self, uid: str, analysis: str, unit: str) -> Any:
        safe = "/" not in uid + analysis + unit
        node = layout.result_node(self.client, uid, analysis, unit) if safe else None
        if node is None:
            raise NotFound(f"no result {analysis}/{unit} for run {uid!r}")
        return node

    def arrays(self, uid: str, analysis: str, unit: str, node: Any = None) -> dict[str, np.ndarray]:
        """All arrays of a result node, cached by its ``written`` time; concurrent asks for the same version
        share one read."""
        node = node if node is not None else self.result_node(uid, analysis, unit)
        # the version: the store rewrites "written" on every write and adds array children after the metadata
        written = (node.metadata.get("written"), _child_count(node))
        key = (uid, analysis, unit)
        while True:
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None and hit[0] == written:
                    self._cache.move_to_end(key)
                    return hit[1]
                reading = self._reading.get((key, written))
                if reading is None:
                    reading = self._reading[(key, written)] = threading.Event()
                    break
            reading.wait(60.0)  # another thread reads this version; then look again
        try:
            data = read_arrays(node)
            with self._lock:
                self._cache[key] = (written, data)
                self._cache.move_to_end(key)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            return data
        finally:
            with self._lock:
                self._reading.pop((key, written), None)
            reading.set()

    def result(self, uid: str, analysis: str, unit: str, names: list[str] | None = None, *,
               arrays: bool = True) -> dict[str, Any]:
        """A result for the browser: metadata (without ``params``' bulk), numeric arrays as lists (1-D thinned
        to :data:`MAX_POINTS`, N-D nested; all, only ``names``, or none if not ``arrays``) and the names of its
        stored PNGs (fetch those with :meth:`png`)."""
        node = self.result_node(uid, analysis, unit)
        layout = result_layout(node)
        stored = [n for names_ in layout.values() for n in names_[1]]
        if not arrays:
            data: dict[str, np.ndarray] = {}
        elif names:
            missing = [n for n in names if n not in stored]
            if missing:
                raise NotFound(f"result {analysis}/{unit} of run {uid} has no array(s) {missing}")
            data = self._named(uid, analysis, unit, node, layout, names)
        else:
            data = self.arrays(uid, analysis, unit, node)
        out = {}
        for name, arr in data.items():
            if _is_png(name) or (names and name not in names):
                continue
            arr = np.asarray(arr)
            if arr.dtype.kind == "b":
                arr = arr.astype(np.int8)
            out[name] = plain(thin(arr) if arr.ndim == 1 else arr)
        md = plain(node.metadata)
        params = md.pop("params", None) or {}
        md["params"] = {"config": params["config"]} if isinstance(params, dict) and "config" in params else {}
        return {"metadata": md, "arrays": out, "pngs": sorted(n for n in stored if _is_png(n))}

    def png(self, uid: str, analysis: str, unit: str, name: str) -> bytes:
        """The PNG bytes stored as a uint8 array (``png.labels``, ``quicklook_png``, ...).

        A live map's node is replaced at every update (deleted, created, then its arrays added); asked for in
        that moment, the previous version's picture is returned rather than an error.
        """
        key = (uid, analysis, unit, name)
        deadline = time.monotonic() + PNG_WAIT_S
        while True:
            try:
                node = self.result_node(uid, analysis, unit)
                layout = result_layout(node)
                if _is_png(name) and any(name in names for _, names in layout.values()):
                    png = np.asarray(self._named(uid, analysis, unit, node, layout, [name])[name],
                                     dtype=np.uint8).tobytes()
                    with self._lock:
                        self._pngs[key] = png
                        while len(self._pngs) > 4 * self.cache_size:
                            self._pngs.pop(next(iter(self._pngs)))
                    return png
            except (NotFound, ResultIncomplete):
                pass
            with self._lock:
                previous = self._pngs.get(key)
            if previous is not None:
                return previous
            # no earlier picture: the node may be in the middle of a replacement (an <img> cannot retry)
            if not _is_png(name) or time.monotonic() > deadline:
                raise NotFound(f"result {analysis}/{unit} of run {uid} has no PNG {name!r}")
            time.sleep(0.2)

    def _named(self, uid: str, analysis: str, unit: str, node: Any, layout: dict, names: list[str]) -> dict:
        """Only the children holding ``names`` (from the full-read cache when it has this version): a map's
        PNG must not cost reading its ~20 full-size maps."""
        version = (node.metadata.get("written"), _child_count(node))
        with self._lock:
            hit = self._cache.get((uid, analysis, unit))
        if hit is not None and hit[0] == version:
            return {n: hit[1][n] for n in names}
        return read_named(node, layout, names)


def _child_count(node: Any) -> int | None:
    """Number of children of a container node, from the listing already fetched (no request)."""
    structure = node.item["attributes"].get("structure") or {}
    return structure.get("count")


def _is_png(name: str) -> bool:
    return name.startswith("png.") or name.endswith("_png")


def run_row(uid: str, start: Mapping[str, Any], stop: Mapping[str, Any] | None,
            results_md: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of one line of the run list."""
    status = dict(results_md.get("status") or {})
    quality = dict(results_md.get("quality") or {})
    summary = dict(results_md.get("summary") or {})
    return {
        "uid": uid,
        "scan_id": start.get("scan_id"),
        "time": start.get("time"),
        "plan_name": start.get("plan_name"),
        "xafs_kind": start.get("xafs_kind"),
        "sample": start.get("sample"),
        "element": start.get("element"),
        "edge": start.get("edge"),
        "running": stop is None,
        "exit_status": stop.get("exit_status") if stop else None,
        "status": status,
        "quality": quality,
        "flags": run_flags(start, stop, status, summary, quality),
    }
