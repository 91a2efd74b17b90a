"""Export one run (raw data and results) to files: XDI for spectra, HDF5 for maps (and spectra), CSV events.

Input is a :class:`~xafs_stream.client.catalog.RunData` (``fetch_run(client, uid)``); nothing here talks to
Tiled.

XDI (spectra only; one spectrum per file, as the format intends)
    ``repeat="all"`` (default) writes one file per repeat, ``<stem>_repeat<N>.xdi``, plus
    ``<stem>_merge.xdi`` when the run has a merged ``xafs.normalize`` result; ``repeat=N`` or
    ``repeat="merge"`` writes only that one. A repeat file holds the measured columns with XDI labels
    (``energy`` eV, ``i0``, ``itrans``, ``irefer``, ``ifluor``: whichever channels were recorded), ``mutrans``
    = ln(i0/itrans) (transmission) or ``mufluor`` = ifluor/i0 (fluorescence), ``murefer`` = ln(itrans/irefer)
    when there is a reference, and from the repeat's ``xafs.normalize`` result ``normtrans``/``normfluor`` and
    ``flat``. Energies are the monochromator readback as recorded; the calibration shift found on the
    reference (``XafsStream.energy_shift``) is in the header, not applied. The merge file holds the merged
    grid: ``energy`` (calibrated), ``mutrans``/``mufluor``, ``mu_noise``, ``normtrans``/``normfluor``, ``flat``.
    Header: ``Element.symbol``, ``Element.edge``, ``Scan.edge_energy`` (the E0 the scan was planned on),
    ``Scan.start_time``/``end_time`` (ISO 8601), ``Sample.name``, ``Mono.d_spacing`` (when recorded),
    ``Detector.*`` (data keys of the channels) and ``XafsStream.*`` (run uid, scan id, repeat, plan, mode,
    exit status, E0 found, edge step).
HDF5 (NeXus-like groups, h5py)
    ``/entry`` (NXentry: title, start_time, end_time, ``xafs_stream/start`` and ``stop`` as JSON);
    ``/entry/sample`` (NXsample). Maps: ``/entry/data`` (NXdata, signal ``optical_density`` (n_e, ny, nx) =
    ln(I0/I) reassembled from the tiles, NaN where not measured; ``counts`` (n_e, ny, nx); ``energy`` eV;
    ``y``, ``x`` µm; ``i0`` and ``measured`` (n_e, n_tiles)). Spectra: ``/entry/repeat_<N>`` (NXdata per
    repeat, the XDI columns). Results: ``/entry/results/<analysis>/<unit>`` (arrays, attributes status,
    version, error and JSON ``summary``/``params``); tile results are reassembled into whole maps under
    ``/entry/results/<analysis>/map`` (per-tile status in its ``tile_status`` attribute).
CSV
    ``<stem>_events.csv``: the primary event table (every column, one row per event, ``seq_num`` order), and
    ``<stem>_events.json`` beside it with the start and stop documents and the results summary. Map images
    are not in the CSV (use HDF5).

Existing files are never overwritten unless ``overwrite=True``; every target is checked before anything is
written.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engines.errors import InputError
from ..io.spectrum_file import write_xdi
from .catalog import RunData, iso_time

FORMATS = ("xdi", "hdf5", "csv")
_SUFFIX = {"xdi": ".xdi", "hdf5": ".h5", "csv": ".csv"}
# XDI dictionary labels of the recorded channels (start document "channels": channel -> data key)
XDI_CHANNELS = {"i0": "i0", "it": "itrans", "iref": "irefer", "ifluor": "ifluor"}
_DETECTOR_TAG = {"i0": "i0", "it": "it", "iref": "ir", "ifluor": "if"}


def default_format(run: RunData) -> str:
    """``hdf5`` for maps, ``xdi`` for spectra."""
    return "hdf5" if run.kind == "map" else "xdi"


def file_stem(run: RunData) -> str:
    """``<sample>_<scan_id>_<uid[:8]>`` with unsafe characters replaced."""
    sample = re.sub(r"[^\w.+-]+", "_", str(run.start.get("sample") or "run")).strip("_") or "run"
    scan = run.start.get("scan_id")
    return f"{sample}_{scan}_{run.uid[:8]}" if scan is not None else f"{sample}_{run.uid[:8]}"


def parse_repeat(value: Any) -> int | str:
    """``"all"``, ``"merge"`` or a repeat number (int or digits)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < 0:
            raise InputError(f"repeat must be >= 0, 'all' or 'merge', got {value!r}")
        return int(value)
    text = str(value).strip().lower()
    if text in ("all", "merge"):
        return text
    if text.isdigit():
        return int(text)
    raise InputError(f"repeat must be 'all', 'merge' or a repeat number, got {value!r}")


# --------------------------------------------------------------------------------------------- spectra


@dataclass
class XdiSpectrum:
    """One spectrum ready for :func:`~xafs_stream.io.write_xdi`: ordered columns, header metadata, comments."""

    name: str  # "repeat0" or "merge"
    columns: dict[str, np.ndarray]
    metadata: dict[str, Any]
    comments: str = ""


def _mode(run: RunData) -> str:
    return "fluorescence" if run.start.get("mode") == "fluorescence" else "transmission"


def _fmt(value: Any, unit: str = "", digits: int = 6) -> str | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    return f"{number:.{digits}g}" + (f" {unit}" if unit else "")


def _base_metadata(run: RunData) -> dict[str, Any]:
    start = run.start
    md: dict[str, Any] = {}
    for key, tag in (("element", "Element.symbol"), ("edge", "Element.edge")):
        if start.get(key):
            md[tag] = start[key]
    if "Element.symbol" not in md:
        raise InputError(f"run {run.uid}: no element in the start document; XDI requires Element.symbol")
    md.setdefault("Element.edge", "K")
    e0 = _fmt(start.get("e0"), "eV", 8)
    if e0:
        md["Scan.edge_energy"] = e0
    if start.get("time") is not None:
        md["Scan.start_time"] = iso_time(start["time"])
    if run.stop.get("time") is not None:
        md["Scan.end_time"] = iso_time(run.stop["time"])
    if start.get("sample"):
        md["Sample.name"] = start["sample"]
    for key, tag in (("facility", "Facility.name"), ("beamline_id", "Beamline.name"), ("beamline", "Beamline.name")):
        if start.get(key) and tag not in md:
            md[tag] = start[key]
    energy_key = start.get("energy_key", "")
    d_spacing = run.configuration.get(f"{energy_key}_d_spacing")
    if _fmt(d_spacing):
        md["Mono.d_spacing"] = _fmt(d_spacing, digits=8)
    for channel, key in (start.get("channels") or {}).items():
        if channel in _DETECTOR_TAG and key in run.events.columns:
            md[f"Detector.{_DETECTOR_TAG[channel]}"] = key
    md["XafsStream.run_uid"] = run.uid
    for key in ("scan_id", "plan_name", "mode"):
        if start.get(key) is not None:
            md[f"XafsStream.{key}"] = start[key]
    if run.stop.get("exit_status"):
        md["XafsStream.exit_status"] = run.stop["exit_status"]
    return md


def _comments(run: RunData, what: str) -> str:
    from .. import __version__

    lines = [f"{what} of run {run.uid}, exported by xafs-stream {__version__}"]
    if run.start.get("regions"):
        lines.append("regions (start, stop, step, space[, dwell]): " + json.dumps(run.start["regions"]))
    return "\n".join(lines)


def _result_metadata(md: dict[str, Any], result: Any) -> None:
    summary = result.summary
    for key, tag, unit in (("e0", "XafsStream.e0_found", "eV"), ("edge_step", "XafsStream.edge_step", ""),
                           ("energy_shift", "XafsStream.energy_shift", "eV")):
        value = _fmt(summary.get(key), unit, 8)
        if value:
            md[tag] = value
    md["XafsStream.analysis"] = f"{result.analysis} {result.metadata.get('version', '')}".strip()


def measured_columns(run: RunData, repeat: int) -> dict[str, np.ndarray]:
    """The measured columns of one repeat with XDI labels: energy (eV), the recorded channels, and
    ``mutrans`` = ln(i0/itrans) or ``mufluor`` = ifluor/i0 (by the run's mode), ``murefer`` = ln(itrans/irefer)."""
    if run.kind != "spectrum":
        raise InputError(f"run {run.uid} is a {run.kind or 'non-XAFS'} run; XDI export needs an XAFS scan")
    if repeat not in run.repeats():
        raise InputError(f"run {run.uid} has no repeat {repeat}; repeats: {run.repeats()}")
    events = run.repeat_events(repeat)
    energy_key = run.start.get("energy_key")
    if energy_key not in events.columns:
        raise InputError(f"run {run.uid}: energy column {energy_key!r} (start document energy_key) not in the "
                         f"events; columns: {list(events.columns)}")
    columns: dict[str, np.ndarray] = {"energy": events[energy_key].to_numpy(dtype=float)}
    raw: dict[str, np.ndarray] = {}
    for channel, key in (run.start.get("channels") or {}).items():
        if channel in XDI_CHANNELS and key in events.columns:
            raw[channel] = events[key].to_numpy(dtype=float)
            columns[XDI_CHANNELS[channel]] = raw[channel]
    with np.errstate(divide="ignore", invalid="ignore"):
        if _mode(run) == "fluorescence" and {"i0", "ifluor"} <= set(raw):
            columns["mufluor"] = raw["ifluor"] / raw["i0"]
        elif {"i0", "it"} <= set(raw):
            columns["mutrans"] = np.log(raw["i0"] / raw["it"])
        if {"it", "iref"} <= set(raw):
            columns["murefer"] = np.log(raw["it"] / raw["iref"])
    return columns


def measured_mu(run: RunData, repeat: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(energy eV, μ) of one repeat as measured (None when the channels for μ were not recorded)."""
    columns = measured_columns(run, repeat)
    return columns["energy"], columns.get("mutrans", columns.get("mufluor"))


def repeat_spectrum(run: RunData, repeat: int) -> XdiSpectrum:
    """The measured columns of one repeat (and its normalisation when stored) for XDI."""
    columns = measured_columns(run, repeat)
    suffix = "fluor" if _mode(run) == "fluorescence" else "trans"
    md = _base_metadata(run)
    md["XafsStream.repeat"] = repeat
    comments = _comments(run, f"repeat {repeat}")
    result = run.result("xafs.normalize", f"repeat_{repeat}")
    if result is not None and result.ok:
        arrays = result.arrays
        shift = float(result.summary.get("energy_shift") or 0.0)
        e_res = np.asarray(arrays.get("energy", []), float)
        if e_res.shape == columns["energy"].shape and np.allclose(e_res - shift, columns["energy"], atol=1e-6):
            for name, label in (("norm", f"norm{suffix}"), ("flat", "flat")):
                if name in arrays:
                    columns[label] = np.asarray(arrays[name], float)
            _result_metadata(md, result)
        else:
            comments += "\nnormalisation not included: its energy grid differs from the measured one"
    return XdiSpectrum(f"repeat{repeat}", columns, md, comments)


def merge_spectrum(run: RunData) -> XdiSpectrum:
    """The merged spectrum of the run's ``xafs.normalize`` merge result for XDI."""
    result = run.result("xafs.normalize", "merge")
    if result is None or not result.ok:
        why = "none stored" if result is None else f"status {result.status}: {result.error}"
        raise InputError(f"run {run.uid}: no merged xafs.normalize result ({why}); "
                         f"run `xafs-stream reprocess {run.uid[:8]}` or export single repeats")
    arrays = result.arrays
    suffix = "fluor" if _mode(run) == "fluorescence" else "trans"
    columns = {"energy": np.asarray(arrays["energy"], float)}
    for name, label in (("mu", f"mu{suffix}"), ("mu_noise", "mu_noise"), ("norm", f"norm{suffix}"),
                        ("flat", "flat")):
        if name in arrays:
            columns[label] = np.asarray(arrays[name], float)
    md = _base_metadata(run)
    md["XafsStream.repeat"] = "merge"
    merged = result.metadata.get("summary", {}).get("n_repeats_merged")
    if merged is not None:
        md["XafsStream.n_repeats_merged"] = merged
    _result_metadata(md, result)
    comments = _comments(run, "merged spectrum") + "\nenergy is calibrated (XafsStream.energy_shift applied)"
    return XdiSpectrum("merge", columns, md, comments)


def xdi_spectra(run: RunData, repeat: int | str = "all") -> list[XdiSpectrum]:
    """Spectra to write for ``repeat`` ("all", "merge" or a number); see the module docstring."""
    if run.kind != "spectrum":
        raise InputError(f"run {run.uid} is a {run.kind or 'non-XAFS'} run: XDI holds single spectra; "
                         f"export maps with --format hdf5 (or csv for the event table)")
    repeat = parse_repeat(repeat)
    if repeat == "merge":
        return [merge_spectrum(run)]
    if repeat != "all":
        return [repeat_spectrum(run, int(repeat))]
    if not run.repeats():
        raise InputError(f"run {run.uid} has no events to export")
    spectra = [repeat_spectrum(run, r) for r in run.repeats()]
    merge = run.result("xafs.normalize", "merge")
    if merge is not None and merge.ok:
        spectra.append(merge_spectrum(run))
    return spectra


# ------------------------------------------------------------------------------------------------ maps


@dataclass
class MapStack:
    """A map run's frames put back together.

    Attributes
    ----------
    energy : (n_e,) eV
    optical_density : (n_e, ny, nx) ln(I0/I), NaN where no frame was recorded
    counts : (n_e, ny, nx) detector intensity, NaN where no frame was recorded
    i0 : (n_e, n_tiles) incident intensity per frame
    measured : (n_e, n_tiles) bool
    y, x : pixel positions (ny,), (nx,), µm
    """

    energy: np.ndarray
    optical_density: np.ndarray
    counts: np.ndarray
    i0: np.ndarray
    measured: np.ndarray
    y: np.ndarray
    x: np.ndarray


def map_stack(run: RunData) -> MapStack:
    """Reassemble the (energy, y, x) stack of a map run from its per-tile frames."""
    start = run.start
    try:
        energy = np.asarray(start["energies"], float)
        th, tw = int(start["tile_ny"]), int(start["tile_nx"])
        ny, nx = int(start["map_ny"]), int(start["map_nx"])
        n_tiles, n_cols = int(start["n_tiles"]), int(start["n_tile_cols"])
        i0_key = start["i0_key"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"run {run.uid}: map start document lacks {exc}") from None
    images = run.images
    ev = run.events
    if images is None:
        raise InputError(f"run {run.uid}: no map images ({start.get('image_key')!r}) stored")
    if len(images) != len(ev):
        raise InputError(f"run {run.uid}: {len(images)} images for {len(ev)} events")
    n_e = energy.size
    od = np.full((n_e, ny, nx), np.nan)
    counts = np.full((n_e, ny, nx), np.nan)
    i0 = np.full((n_e, n_tiles), np.nan)
    measured = np.zeros((n_e, n_tiles), bool)
    tiles = ev["tile_index"].to_numpy(int)
    e_idx = ev["energy_index"].to_numpy(int)
    i0_values = ev[i0_key].to_numpy(float)
    for j in range(len(ev)):
        t, e = tiles[j], e_idx[j]
        if not (0 <= t < n_tiles and 0 <= e < n_e) or images[j].shape != (th, tw):
            raise InputError(f"run {run.uid}: event {j} (tile {t}, energy index {e}, image {images[j].shape}) "
                             f"does not fit the map geometry")
        row, col = divmod(int(t), n_cols)
        frame = np.asarray(images[j], float)
        sl = (e, slice(row * th, (row + 1) * th), slice(col * tw, (col + 1) * tw))
        counts[sl] = frame
        with np.errstate(divide="ignore", invalid="ignore"):
            od[sl] = np.log(i0_values[j] / frame)
        i0[e, t] = i0_values[j]
        measured[e, t] = True
    pixel = float(start.get("pixel_size_um", 1.0))
    x0, y0 = (list(start.get("origin_um") or [0.0, 0.0]) + [0.0, 0.0])[:2]
    return MapStack(energy, od, counts, i0, measured, float(y0) + pixel * np.arange(ny),
                    float(x0) + pixel * np.arange(nx))


def tile_result_maps(run: RunData, units: dict) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Arrays of per-tile results (``units``: unit_key -> StoredResult) placed into whole maps.

    Arrays whose last two dimensions are the tile shape become (..., map_ny, map_nx) with NaN where a tile has
    no result; 1-D arrays (e.g. energy) are taken from the first tile. Returns (arrays, {unit_key: status}).
    """
    th, tw = int(run.start["tile_ny"]), int(run.start["tile_nx"])
    ny, nx, n_cols = int(run.start["map_ny"]), int(run.start["map_nx"]), int(run.start["n_tile_cols"])
    maps: dict[str, np.ndarray] = {}
    shared: dict[str, np.ndarray] = {}
    status: dict[str, str] = {}
    for ukey, res in sorted(units.items()):
        status[ukey] = res.status
        if not res.ok:
            continue
        row, col = divmod(int(ukey.split("_")[1]), n_cols)
        for name, arr in res.arrays.items():
            arr = np.asarray(arr)
            if arr.ndim >= 2 and arr.shape[-2:] == (th, tw) and arr.dtype.kind in "biuf":
                if name not in maps:
                    maps[name] = np.full(arr.shape[:-2] + (ny, nx), np.nan)
                maps[name][..., row * th:(row + 1) * th, col * tw:(col + 1) * tw] = arr
            elif arr.ndim == 1 and arr.dtype.kind in "biuf":
                shared.setdefault(name, arr)
    return {**shared, **maps}, status


# ------------------------------------------------------------------------------------------------ HDF5


def _attrs_json(obj: Any) -> str:
    from ..core import to_json_safe

    return json.dumps(to_json_safe(obj))


def _write_arrays(group: Any, arrays: dict[str, np.ndarray]) -> None:
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype.kind in "biuf":
            group.create_dataset(name.replace("/", "_"), data=arr, compression="gzip" if arr.size > 4096 else None)


def _write_results(entry: Any, run: RunData) -> None:
    if not run.results:
        return
    results = entry.create_group("results")
    results.attrs["NX_class"] = "NXcollection"
    results.attrs["summary"] = _attrs_json(run.summary)
    results.attrs["status"] = _attrs_json(run.status)
    for akey, units in run.results.items():
        group = results.create_group(akey)
        tile_units = {k: v for k, v in units.items() if k.startswith("tile_")}
        if tile_units and run.kind == "map":
            arrays, status = tile_result_maps(run, tile_units)
            sub = group.create_group("map")
            sub.attrs["tile_status"] = _attrs_json(status)
            sub.attrs["description"] = "per-tile results placed into whole maps (NaN where a tile has none)"
            _write_arrays(sub, arrays)
        for ukey, res in units.items():
            if ukey in tile_units and run.kind == "map":
                continue
            sub = group.create_group(ukey)
            for key in ("analysis", "version", "status", "error"):
                sub.attrs[key] = str(res.metadata.get(key, ""))
            sub.attrs["summary"] = _attrs_json(res.summary)
            sub.attrs["params"] = _attrs_json(res.params)
            _write_arrays(sub, res.arrays)


def write_hdf5(run: RunData, path: str | Path) -> Path:
    """Write the run (and its results) as NeXus-like HDF5; see the module docstring for the layout."""
    import h5py

    from .. import __version__

    path = Path(path)
    stack = map_stack(run) if run.kind == "map" else None
    spectra = [repeat_spectrum(run, r) for r in run.repeats()] if run.kind == "spectrum" else []
    with h5py.File(path, "w") as h5:
        h5.attrs["creator"] = f"xafs-stream {__version__}"
        h5.attrs["default"] = "entry"
        entry = h5.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.create_dataset("title", data=f"{run.start.get('sample', '')} {run.start.get('element', '')} "
                                           f"{run.start.get('edge', '')} {run.kind}".strip())
        entry.create_dataset("start_time", data=iso_time(run.start.get("time")))
        entry.create_dataset("end_time", data=iso_time(run.stop.get("time")))
        entry.create_dataset("run_uid", data=run.uid)
        sample = entry.create_group("sample")
        sample.attrs["NX_class"] = "NXsample"
        sample.create_dataset("name", data=str(run.start.get("sample", "")))
        sample.create_dataset("element", data=str(run.start.get("element", "")))
        sample.create_dataset("edge", data=str(run.start.get("edge", "")))
        meta = entry.create_group("xafs_stream")
        meta.attrs["NX_class"] = "NXcollection"
        meta.create_dataset("start", data=_attrs_json(run.start))
        meta.create_dataset("stop", data=_attrs_json(run.stop))
        meta.create_dataset("configuration", data=_attrs_json(run.configuration))
        if stack is not None:
            data = entry.create_group("data")
            data.attrs.update({"NX_class": "NXdata", "signal": "optical_density", "axes": ["energy", "y", "x"]})
            entry.attrs["default"] = "data"
            ds = data.create_dataset("optical_density", data=stack.optical_density, compression="gzip")
            ds.attrs["long_name"] = "optical density ln(I0/I)"
            data.create_dataset("counts", data=stack.counts, compression="gzip")
            data.create_dataset("energy", data=stack.energy).attrs["units"] = "eV"
            data.create_dataset("y", data=stack.y).attrs["units"] = "um"
            data.create_dataset("x", data=stack.x).attrs["units"] = "um"
            data.create_dataset("i0", data=stack.i0).attrs["dims"] = "energy, tile"
            data.create_dataset("measured", data=stack.measured).attrs["dims"] = "energy, tile"
        for spec in spectra:
            group = entry.create_group(spec.name.replace("repeat", "repeat_"))
            signal = next((c for c in ("mutrans", "mufluor") if c in spec.columns), list(spec.columns)[-1])
            group.attrs.update({"NX_class": "NXdata", "signal": signal, "axes": ["energy"]})
            for name, arr in spec.columns.items():
                group.create_dataset(name, data=arr)
            group["energy"].attrs["units"] = "eV"
        if spectra:
            entry.attrs["default"] = "repeat_0" if "repeat_0" in entry else spectra[0].name
        _write_results(entry, run)
    return path


# ------------------------------------------------------------------------------------------------- CSV


def write_events_csv(run: RunData, path: str | Path) -> list[Path]:
    """The event table as CSV, and ``<stem>.json`` with the start/stop documents and results summary."""
    path = Path(path)
    if run.events is None or len(run.events) == 0:
        raise InputError(f"run {run.uid} has no events to export")
    run.events.to_csv(path, index=False)
    side = path.with_suffix(".json")
    info = {"run_uid": run.uid, "start": run.start, "stop": run.stop, "summary": run.summary, "status": run.status,
            "configuration": run.configuration}
    if run.start.get("image_key"):
        info["images"] = f"{run.start['image_key']} frames are not in the CSV; export with --format hdf5"
    side.write_text(_attrs_json(info))
    return [path, side]


# ------------------------------------------------------------------------------------------------- all


def export_run(run: RunData, out_dir: str | Path, *, fmt: str | None = None, repeat: int | str = "all",
               overwrite: bool = False) -> list[Path]:
    """Write the run to ``out_dir`` (created if needed) in ``fmt`` ("xdi", "hdf5", "csv"; default: xdi for
    spectra, hdf5 for maps). Returns the paths written. Raises InputError before writing anything when a
    target exists (without ``overwrite``) or the format does not fit the run."""
    fmt = (fmt or default_format(run)).lower()
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a directory")
    stem = file_stem(run)
    if fmt == "xdi":
        spectra = xdi_spectra(run, repeat)
        targets = [(out / f"{stem}_{s.name}.xdi", s) for s in spectra]
    elif fmt == "hdf5":
        if parse_repeat(repeat) != "all":
            raise InputError("--repeat applies to XDI export; HDF5 holds every repeat and result")
        targets = [(out / f"{stem}.h5", None)]
    else:
        targets = [(out / f"{stem}_events.csv", None), (out / f"{stem}_events.json", None)]
    existing = [str(p) for p, _ in targets if p.exists()]
    if existing and not overwrite:
        raise InputError(f"not overwriting existing file(s): {', '.join(existing)} (use --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "xdi":
        return [write_xdi(p, s.columns, s.metadata, comments=s.comments) for p, s in targets]
    if fmt == "hdf5":
        return [write_hdf5(run, targets[0][0])]
    return write_events_csv(run, targets[0][0])
