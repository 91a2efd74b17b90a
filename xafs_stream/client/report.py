"""An HTML report of one run: the data, the processing parameters and the results with their uncertainties.

``write_report(run, out_dir)`` writes ``<stem>_report.html`` and its PNG figures (``<stem>_<figure>.png``)
side by side, or one self-contained HTML file with the figures embedded (``inline=True``). Figures are made
with matplotlib's object API on the Agg canvas (no pyplot state, no display); the page loads nothing from
the internet.

Sections: run (metadata, timing, exit status), figures, results (E0 and edge step of every unit with the
spread over repeats; SpM shells N, R, σ² ± standard errors; Bayesian XANES F(K) ± s.e., chosen K and peak
parameters as posterior median ± half the 68 % credible interval; map statistics), processing parameters of each
analysis, and the status of every (analysis, unit) with its error message.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engines.errors import InputError
from ..storage.layout import flatten_summary
from .catalog import RunData, StoredResult, iso_time
from .export import file_stem, map_stack, tile_result_maps

# --------------------------------------------------------------------------------------------- numbers


def format_pm(value: Any, err: Any = None, *, digits: int = 2) -> str:
    """``value ± err`` with ``err`` rounded to ``digits`` significant figures and ``value`` to match.

    >>> format_pm(2.54311, 0.00442)
    '2.5431 ± 0.0044'
    >>> format_pm(11.2298, None)
    '11.23'
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "" if value is None else str(value)
    if not math.isfinite(v):
        return "n/a"
    try:
        e = float(err) if err is not None else math.nan
    except (TypeError, ValueError):
        e = math.nan
    if not (math.isfinite(e) and e >= 0):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.4g}"
        decimals = max(0, 4 - math.floor(math.log10(abs(v)))) if v != 0 else 0
        text = f"{v:.{decimals}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    if e == 0:
        return f"{format_pm(v)} ± 0"
    decimals = digits - 1 - math.floor(math.log10(e))
    if decimals > 8 or abs(v) >= 1e7:
        return f"{v:.{digits + 2}g} ± {e:.{digits}g}"
    decimals = max(decimals, 0)
    return f"{v:.{decimals}f} ± {e:.{decimals}f}"


# --------------------------------------------------------------------------------------------- figures


@dataclass
class Figure:
    name: str
    title: str
    png: bytes
    caption: str = ""


def _new_figure(n_panels: int = 1, width: float = 5.0, height: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width * n_panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, list(axes)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _ok_arrays(result: StoredResult | None) -> dict[str, np.ndarray]:
    return result.arrays if result is not None and result.ok else {}


def spectrum_figures(run: RunData) -> list[Figure]:
    """μ(E) of every repeat, normalised μ(E), χ(k) / |χ(R)| (with the SpM fit), Bayesian XANES fit."""
    from .export import measured_mu

    figs: list[Figure] = []
    merge = run.result("xafs.normalize", "merge")
    norm = _ok_arrays(merge) or _ok_arrays(run.result("xafs.normalize", "repeat_0"))
    norm_res = merge if _ok_arrays(merge) else run.result("xafs.normalize", "repeat_0")
    fig, (ax_mu, ax_norm) = _new_figure(2)
    for rep in run.repeats():
        energy, mu = measured_mu(run, rep)
        if mu is not None:
            ax_mu.plot(energy, mu, lw=0.8, label=f"repeat {rep}")
    if "mu" in norm:
        ax_mu.plot(norm["energy"], norm["mu"], "k", lw=1.2, label="merged" if norm_res is merge else "μ")
        for name, style in (("pre_edge_line", "--"), ("post_edge_curve", ":")):
            if name in norm:
                ax_mu.plot(norm["energy"], norm[name], style, color="gray", lw=0.8, label=name.replace("_", " "))
    ax_mu.set(xlabel="energy (eV)", ylabel="μ(E)", title="measured μ(E)")
    ax_mu.legend(fontsize=7)
    if "norm" in norm:
        e0 = (norm_res.summary.get("e0") if norm_res else None)
        ax_norm.plot(norm["energy"], norm["norm"], "k", lw=1)
        if e0 is not None:
            ax_norm.axvline(float(e0), color="C3", lw=0.8, label=f"E0 = {float(e0):.2f} eV")
            ax_norm.set_xlim(float(e0) - 40, float(e0) + 80)
            ax_norm.legend(fontsize=7)
        ax_norm.set(xlabel="energy (eV)", ylabel="normalised μ(E)", title="normalised XANES")
    else:
        ax_norm.text(0.5, 0.5, "no normalisation stored", ha="center", va="center", transform=ax_norm.transAxes)
        ax_norm.set_axis_off()
    figs.append(Figure("mu", "Absorption", _png(fig), "Measured μ(E) of each repeat and the merged spectrum "
                       "with the pre-edge line and post-edge curve; normalised μ(E) around E0."))

    spm = _ok_arrays(run.result("spm"))
    if "k" in norm and "chi" in norm:
        kw = float((norm_res.summary.get("kweight") if norm_res else None) or 2)
        fig, (ax_k, ax_r) = _new_figure(2)
        ax_k.plot(norm["k"], norm["k"] ** kw * norm["chi"], "k", lw=0.9, label="data")
        if "spm_k" in spm:
            spm_kw = float(run.result("spm").params.get("kweight", kw))
            ax_k.plot(spm["spm_k"], spm["spm_k"] ** spm_kw * spm["spm_chi_fit"], "C3", lw=0.9,
                      label=f"SpM shell fit (k^{spm_kw:g})")
        ax_k.set(xlabel="k (1/Å)", ylabel=f"k^{kw:g} χ(k)", title="EXAFS")
        ax_k.legend(fontsize=7)
        if "r" in norm:
            ax_r.plot(norm["r"], norm["chir_mag"], "k", lw=0.9, label="data")
        if "spm_r" in spm:
            ax_r.plot(spm["spm_r"], spm["spm_chir_mag_data"], color="gray", lw=0.8, ls="--", label="data (SpM window)")
            ax_r.plot(spm["spm_r"], spm["spm_chir_mag_fit"], "C3", lw=0.9, label="SpM shell fit")
        ax_r.set(xlabel="R (Å, not phase corrected)", ylabel="|χ(R)|", title="Fourier transform", xlim=(0, 6))
        ax_r.legend(fontsize=7)
        figs.append(Figure("exafs", "EXAFS", _png(fig), "k-weighted χ(k) and |χ(R)| (Hanning window), with the "
                           "sparse-modeling shell fit when one is stored."))
    if "spm_distribution" in spm and "spm_r_grid" in spm:
        fig, (ax,) = _new_figure(1, width=6)
        dist = np.asarray(spm["spm_distribution"], float)
        weights = np.nansum(dist, axis=-1) if dist.ndim == 3 else np.atleast_2d(dist)
        pairs = run.result("spm").params.get("pairs") or [f"pair {i}" for i in range(len(weights))]
        for i, row in enumerate(weights):
            ax.vlines(spm["spm_r_grid"], 0, row, color=f"C{i}", lw=2, label=str(pairs[i] if i < len(pairs) else i))
        ax.set(xlabel="R (Å)", ylabel="N (summed over σ²)", title="sparse distribution N(R)")
        ax.legend(fontsize=7)
        figs.append(Figure("spm", "Sparse modeling", _png(fig), "Non-zero coefficients of the cross-validated "
                           "LASSO over the (pair, R, σ²) dictionary, summed over σ²."))
    bayes = _ok_arrays(run.result("bayes.xanes"))
    if "bayes_energy" in bayes:
        fig, (ax, ax_f) = _new_figure(2)
        x = bayes["bayes_energy"]
        if "bayes_band_lo95" in bayes:
            ax.fill_between(x, bayes["bayes_pred_lo95"], bayes["bayes_pred_hi95"], color="C0", alpha=0.15,
                            label="95 % predictive")
            ax.fill_between(x, bayes["bayes_band_lo95"], bayes["bayes_band_hi95"], color="C0", alpha=0.35,
                            label="95 % credible")
        ax.plot(x, bayes["bayes_data"], "k.", ms=2, label="data")
        ax.plot(x, bayes["bayes_best_fit"], "C3", lw=1, label="best fit")
        ax.set(xlabel="energy (eV)", ylabel="normalised μ(E)", title="Bayesian XANES fit")
        ax.legend(fontsize=7)
        ax_f.errorbar(bayes["bayes_k"], bayes["bayes_F"], yerr=bayes.get("bayes_F_se"), fmt="o-", capsize=3)
        ax_f.set(xlabel="number of peaks K", ylabel="free energy F(K)", title="model selection (min F)")
        figs.append(Figure("bayes", "Bayesian XANES", _png(fig), "Data, best fit and 95 % bands of the chosen "
                           "model; Bayesian free energy F(K) ± standard error."))
    return figs


def _imshow(ax, image: np.ndarray, title: str, cmap: str = "viridis", colorbar: bool = True) -> None:
    im = ax.imshow(np.asarray(image, float), cmap=cmap, origin="upper", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        ax.figure.colorbar(im, ax=ax, shrink=0.8)


def map_figures(run: RunData) -> list[Figure]:
    """Edge jump and mean spectrum of the stack; stored map results (labels, fractions, smoothed maps)."""
    figs: list[Figure] = []
    stack = map_stack(run)
    od = stack.optical_density
    with np.errstate(invalid="ignore"):
        jump = od[-1] - od[0]
        mean_spectrum = np.nanmean(od.reshape(od.shape[0], -1), axis=1) if np.isfinite(od).any() else None
    fig, (ax_img, ax_spec) = _new_figure(2)
    _imshow(ax_img, jump, f"OD({stack.energy[-1]:.1f}) − OD({stack.energy[0]:.1f} eV)")
    if mean_spectrum is not None:
        ax_spec.plot(stack.energy, mean_spectrum, "k.-", ms=3, lw=0.8)
    ax_spec.set(xlabel="energy (eV)", ylabel="mean optical density", title="map-average spectrum")
    figs.append(Figure("map_data", "Map data", _png(fig), "Edge jump of the reassembled stack (NaN = not "
                       f"measured; {int(stack.measured.sum())} of {stack.measured.size} tile frames recorded) "
                       "and the map-average spectrum."))
    panels: list[tuple[np.ndarray, str, str]] = []
    whole = _ok_arrays(run.result("imaging.map", "map"))
    if whole:
        if "labels" in whole:
            panels.append((np.where(whole["labels"] >= 0, whole["labels"], np.nan), "phase labels (Potts MRF)", "tab10"))
        for name in sorted(whole):
            if name.startswith("fraction."):
                panels.append((whole[name], name, "coolwarm"))
        if "label_uncertainty" in whole:
            panels.append((whole["label_uncertainty"], "label uncertainty", "magma"))
        for name in sorted(whole):
            if name.startswith("smoothed.") and len(panels) < 6:
                panels.append((whole[name], name, "viridis"))
    else:
        units = {k: v for k, v in run.results.get("xafs_normalize_tile", {}).items() if k.startswith("tile_")}
        if units:
            maps, _ = tile_result_maps(run, units)
            for name, title in (("e0", "E0 (eV)"), ("edge_step", "edge step")):
                if name in maps and maps[name].ndim == 2:
                    panels.append((maps[name], f"{title}, per pixel", "viridis"))
    if panels:
        fig, axes = _new_figure(min(len(panels), 4), width=3.6, height=3.2)
        for ax, (image, title, cmap) in zip(axes, panels[:4]):
            _imshow(ax, image, title, cmap)
        figs.append(Figure("map_results", "Map results", _png(fig), "Stored whole-map results "
                           "(imaging.map) or per-tile normalisation placed into the map."))
    return figs


# ------------------------------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; font-size: 1.2em; }
table { border-collapse: collapse; margin: 0.5em 0 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-family: monospace; }
.ok { color: #196619; } .error { color: #b00020; } .skipped { color: #8a6d00; }
.warn { color: #c25400; } .bad { color: #b00020; font-weight: bold; } .unjudged { color: #555; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; max-width: 100%; }
figure img { max-width: 100%; border: 1px solid #eee; } figcaption { font-size: 0.85em; color: #555; max-width: 60em; }
.small { font-size: 0.85em; color: #555; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(header: list[str], rows: list[list[Any]], numeric_from: int = 1) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if i >= numeric_from else ""
            cells.append(f"<td{cls}>{cell if isinstance(cell, _Raw) else _e(cell)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def _status(status: str) -> _Raw:
    return _Raw(f'<span class="{_e(status)}">{_e(status)}</span>')


def _verdict(res: StoredResult) -> _Raw:
    """``quality warn: reasons`` (coloured) for a stored result."""
    level = res.metadata.get("verdict") or ""
    reasons = res.metadata.get("verdict_reasons") or []
    text = f"quality {level or 'not judged'}" + (f": {'; '.join(map(str, reasons))}" if reasons else "")
    return _Raw(f'<span class="{_e(level or "unjudged")}">{_e(text)}</span>')


def _run_section(run: RunData) -> str:
    s, stop = run.start, run.stop
    t0, t1 = s.get("time"), stop.get("time")
    duration = f"{float(t1) - float(t0):.1f} s" if t0 is not None and t1 is not None else "running / unknown"
    rows = [
        ["run uid", run.uid], ["scan id", s.get("scan_id")], ["sample", s.get("sample")],
        ["element / edge", f"{s.get('element', '')} {s.get('edge', '')}"], ["E0 (planned)", format_pm(s.get("e0")) + " eV"],
        ["mode", s.get("mode")], ["kind / plan", f"{run.kind} / {s.get('plan_name', '')}"],
        ["start", iso_time(t0)], ["end", iso_time(t1)], ["duration", duration],
        ["exit status", _status(str(stop.get("exit_status", "no stop document")))],
        ["events", len(run.events) if run.events is not None else 0],
    ]
    if stop.get("reason"):
        rows.append(["stop reason", stop["reason"]])
    if run.kind == "spectrum":
        rows.append(["repeats recorded", ", ".join(map(str, run.repeats())) or "none"])
        if s.get("regions"):
            rows.append(["regions", json.dumps(s["regions"])])
        if s.get("channels"):
            rows.append(["channels", json.dumps(s["channels"])])
    elif run.kind == "map":
        n_e = s.get("n_energies", len(s.get("energies", [])))
        geometry = (f"{s.get('map_ny')} × {s.get('map_nx')} px in {s.get('n_tiles')} tiles "
                    f"({s.get('tile_ny')} × {s.get('tile_nx')}), {n_e} energies, order {s.get('order')}, "
                    f"pixel {s.get('pixel_size_um')} µm")
        rows.append(["map", geometry])
    return "<h2>Run</h2>\n" + _table(["field", "value"], rows, numeric_from=99)


def _normalize_section(run: RunData) -> str:
    units = run.results.get("xafs_normalize", {})
    if not units:
        return ""
    rows = []
    e0s = []
    for ukey in sorted(units, key=lambda k: (k == "merge", k)):
        res = units[ukey]
        sm = res.summary
        if res.ok and ukey != "merge" and sm.get("e0") is not None:
            e0s.append(float(sm["e0"]))
        rows.append([ukey, _status(res.status), format_pm(sm.get("e0")), format_pm(sm.get("edge_step")),
                     format_pm(sm.get("energy_shift")), format_pm(sm.get("kmax_data")), format_pm(sm.get("noise_chi"))])
    text = "<h3>Normalisation (xafs.normalize)</h3>\n" + _table(
        ["unit", "status", "E0 (eV)", "edge step", "energy shift (eV)", "k max of data (1/Å)", "noise of χ(k)"], rows)
    if len(e0s) > 1:
        text += (f"<p>E0 over {len(e0s)} repeats: {format_pm(np.mean(e0s), np.std(e0s, ddof=1))} eV "
                 f"(mean ± standard deviation).</p>")
    return text


def _spm_section(run: RunData) -> str:
    res = run.result("spm")
    if res is None:
        return ""
    if not res.ok:
        return f"<h3>Sparse modeling (spm)</h3><p>{_status(res.status)}: {_e(res.error)}</p>"
    spm = res.summary.get("spm", {})
    rows = []
    boot = any(isinstance(v, Mapping) and "N_err_boot" in v for v in spm.values())
    for i in range(1, int(spm.get("n_shells", 0) or 0) + 1):
        sh = spm.get(f"shell{i}", {})
        row = [f"shell {i}", sh.get("pair", ""), format_pm(sh.get("N"), sh.get("N_err")),
               format_pm(sh.get("R"), sh.get("R_err")), format_pm(sh.get("sigma2"), sh.get("sigma2_err"))]
        if boot:
            row += [format_pm(sh.get("N_err_boot")), format_pm(sh.get("R_err_boot")), format_pm(sh.get("sigma2_err_boot"))]
        rows.append(row)
    header = ["shell", "pair", "N", "R (Å)", "σ² (Å²)"] + (["N err (boot)", "R err (boot)", "σ² err (boot)"] if boot else [])
    text = f"<h3>Sparse modeling (spm)</h3>\n<p>{_verdict(res)}</p>\n" + _table(header, rows, numeric_from=2)
    text += _table(["fit", "value"], [
        ["ΔE0 (eV)", format_pm(spm.get("de0"), spm.get("de0_err"))], ["R-factor", format_pm(spm.get("r_factor"))],
        ["reduced χ²", format_pm(spm.get("redchi"))], ["LASSO α (CV)", format_pm(spm.get("alpha"))],
        ["S0² (N is N·S0²/s02)", format_pm(spm.get("s02"))], ["FEFF path set", spm.get("path_set", "")],
    ])
    text += '<p class="small">Errors: standard errors from the covariance of the shell refinement.</p>'
    return text


def _bayes_section(run: RunData) -> str:
    res = run.result("bayes.xanes")
    if res is None:
        return ""
    if not res.ok:
        return f"<h3>Bayesian XANES (bayes.xanes)</h3><p>{_status(res.status)}: {_e(res.error)}</p>"
    b = res.summary.get("bayes", {})
    chosen = b.get("K")
    f_rows = []
    for key in sorted((b.get("F") or {}), key=lambda k: int(k[1:]) if k[1:].isdigit() else 0):
        mark = " (chosen)" if key == f"K{chosen}" else ""
        f_rows.append([f"{key[1:]}{mark}", format_pm(b["F"][key], (b.get("F_se") or {}).get(key))])
    text = "<h3>Bayesian XANES (bayes.xanes)</h3>\n"
    text += _table(["K", "free energy F(K) ± s.e."], f_rows)
    params = [[p, format_pm(b.get(p), b.get(f"{p}_err"))] for p in ("step", "e_edge", "edge_width", "c0") if p in b]
    peaks = []
    for key in sorted((k for k in b if k.startswith("peak") and isinstance(b[k], Mapping)), key=lambda k: int(k[4:] or 0)):
        pk = b[key]
        peaks.append([key, format_pm(pk.get("center"), pk.get("center_err")), format_pm(pk.get("height"), pk.get("height_err")),
                      format_pm(pk.get("width"), pk.get("width_err")), format_pm(pk.get("area"))])
    if params:
        text += _table(["edge parameter", "value ± err"], params)
    if peaks:
        text += _table(["peak", "centre (eV)", "height", "width", "area"], peaks)
    rows = [["chosen K", chosen], ["noise", format_pm(b.get("noise"))], ["noise mode", b.get("noise_mode")],
            ["largest R-hat", format_pm(b.get("rhat_max"))], ["smallest exchange rate", format_pm(b.get("exchange_min"))],
            ["converged (R-hat ≤ 1.05)", b.get("converged")], ["verdict", _verdict(res)]]
    if "preedge_centroid" in b:
        rows.append(["pre-edge centroid (eV)", format_pm(b.get("preedge_centroid"), b.get("preedge_centroid_err"))])
        rows.append(["pre-edge area", format_pm(b.get("preedge_area"))])
    text += _table(["", "value"], rows)
    text += '<p class="small">Values: posterior medians ± half the central 68 % credible interval.</p>'
    return text


def _generic_section(title: str, res: StoredResult | None, prefix: str) -> str:
    if res is None:
        return ""
    if not res.ok:
        return f"<h3>{_e(title)}</h3><p>{_status(res.status)}: {_e(res.error)}</p>"
    flat = flatten_summary(res.summary)
    rows = [[k, format_pm(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v]
            for k, v in sorted(flat.items()) if k.startswith(prefix)]
    return f"<h3>{_e(title)}</h3>\n" + _table(["quantity", "value"], rows)


def _short(value: Any, limit: int = 160) -> Any:
    text = str(value)
    return value if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def _params_section(run: RunData) -> str:
    parts = ["<h2>Processing parameters</h2>"]
    for akey, units in sorted(run.results.items()):
        res = next((units[k] for k in ("merge", "map") if k in units and units[k].ok), None)
        res = res or next((r for r in units.values() if r.ok), None)
        if res is None:
            continue
        flat = flatten_summary(res.params)
        rows = [[k, _short(json.dumps(v) if isinstance(v, (list, dict)) else v)] for k, v in sorted(flat.items())]
        if len(rows) > 60:
            rows = rows[:60] + [["…", f"{len(flat) - 60} more in the result metadata"]]
        parts.append(f"<h3>{_e(res.analysis)} {_e(res.metadata.get('version', ''))} "
                     f'<span class="small">(unit {_e(res.unit_key)})</span></h3>')
        parts.append(_table(["parameter", "value"], rows, numeric_from=99))
    if len(parts) == 1:
        parts.append("<p>No analysis results stored for this run.</p>")
    return "\n".join(parts)


def _status_section(run: RunData) -> str:
    rows = []
    for akey, units in sorted(run.results.items()):
        for ukey, res in sorted(units.items()):
            t = (res.metadata.get("timings") or {}).get("compute_s")
            rows.append([res.analysis, ukey, _status(res.status), _verdict(res) if res.ok else "",
                         res.metadata.get("version", ""), f"{t:.2f}" if isinstance(t, (int, float)) else "",
                         res.error])
    if not rows:
        return "<h2>Analysis status</h2><p>No analysis results stored for this run (see "\
               "<code>xafs-stream reprocess</code>).</p>"
    return "<h2>Analysis status</h2>\n" + _table(["analysis", "unit", "status", "quality", "version", "compute (s)",
                                                  "error"], rows, numeric_from=5)


def render_html(run: RunData, figures: list[tuple[Figure, str]]) -> str:
    """The report page; ``figures`` pairs each figure with its ``src`` (file name or data URI)."""
    from .. import __version__

    s = run.start
    title = f"{s.get('sample') or 'run'} — {s.get('element', '')} {s.get('edge', '')} {run.kind} — {run.uid[:8]}"
    credit = (f'<p class="small">xafs-stream {_e(__version__)} report of run {_e(run.uid)}, written '
              f"{_e(iso_time(time.time()))}.</p>")
    body = [f"<h1>{_e(title)}</h1>", credit, _run_section(run)]
    if figures:
        body.append("<h2>Data and fits</h2>")
        for fig, src in figures:
            body.append(f'<figure><img src="{_e(src)}" alt="{_e(fig.title)}">'
                        f"<figcaption><b>{_e(fig.title)}.</b> {_e(fig.caption)}</figcaption></figure>")
    results = [_normalize_section(run), _spm_section(run), _bayes_section(run),
               _generic_section("Map (imaging.map)", run.result("imaging.map", "map"), "imaging.")]
    results = [r for r in results if r]
    body.append("<h2>Results</h2>")
    body.extend(results or ["<p>No analysis results stored for this run.</p>"])
    body.append(_params_section(run))
    body.append(_status_section(run))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(run: RunData, out_dir: str | Path, *, inline: bool = False, overwrite: bool = False) -> Path:
    """Write ``<stem>_report.html`` (and ``<stem>_<figure>.png`` unless ``inline``) into ``out_dir``.

    Returns the HTML path. Raises InputError before writing if a target exists and ``overwrite`` is false.
    """
    if run.kind not in ("spectrum", "map"):
        raise InputError(f"run {run.uid}: not an XAFS scan or map (xafs_kind {run.kind!r}); nothing to report")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a directory")
    stem = file_stem(run)
    figures = spectrum_figures(run) if run.kind == "spectrum" else map_figures(run)
    page = out / f"{stem}_report.html"
    targets = [page] + ([] if inline else [out / f"{stem}_{f.name}.png" for f in figures])
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise InputError(f"not overwriting existing file(s): {', '.join(existing)} (use --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for fig, target in zip(figures, targets[1:] if not inline else [None] * len(figures)):
        if inline:
            pairs.append((fig, "data:image/png;base64," + base64.b64encode(fig.png).decode()))
        else:
            target.write_bytes(fig.png)
            pairs.append((fig, target.name))
    page.write_text(render_html(run, pairs), encoding="utf-8")
    return page
