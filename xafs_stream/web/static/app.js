/* xafs-stream dashboard: reads the JSON API, follows the live event stream (Server-Sent Events), draws with
   uPlot (vendored). No build step, no framework, nothing from the internet. */
"use strict";

const D = {
  runs: [],
  selected: null,       // uid shown in the main panel
  detail: null,         // /api/runs/<uid> of the selected run
  status: {},           // latest watcher snapshot (broker, active runs, errors)
  epoch: null,
  cursor: 0,
  plots: {},            // name -> uPlot instance
  arrays: {},           // "uid/analysis/unit@written" -> arrays
  lastChange: null,     // the last change event seen (for tests and the header)
  shown: {},            // "analysis/unit" -> written time of the result the page currently shows
  shownAt: {},          // "analysis/unit" -> when (unix s) that version first appeared on the page
  changeAt: {},         // "uid/analysis/unit" -> when (unix s) the stream announced its last change
  loads: 0,
};
window.dashboard = D;

const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const $ = (sel) => document.querySelector(sel);

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function fmt(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (typeof v !== "number") return esc(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(digits - 1);
  return v.toPrecision(digits).replace(/\.?0+$/, (m) => (m.startsWith(".") ? "" : m));
}
function pm(v, e, digits = 3) {
  return e === null || e === undefined ? fmt(v, digits) : `${fmt(v, digits)} ± ${fmt(e, 2)}`;
}
function duration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h} h ${m} min` : m ? `${m} min ${sec} s` : `${sec} s`;
}
function clock(t) {
  return t ? new Date(t * 1000).toLocaleTimeString() : "";
}
function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

async function api(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(`${path}: ${r.status} ${detail}`);
  }
  return r.json();
}
function banner(msg) {
  const b = $("#banner");
  b.hidden = !msg;
  b.textContent = msg || "";
}

/* ------------------------------------------------------------------ plots */

function plotWidth(el) {
  return Math.max(300, Math.floor(el.clientWidth || el.parentElement.clientWidth || 400));
}

/* series: [{label, x: [], y: [], color, width, dash}], opts: {xlabel, ylabel, bands: [[hiIdx, loIdx]]} */
function drawPlot(name, el, series, opts = {}) {
  if (D.plots[name]) { D.plots[name].destroy(); delete D.plots[name]; }
  el.innerHTML = "";
  series = series.filter((s) => s.x && s.x.length);
  if (!series.length) { el.innerHTML = '<p class="muted small">no data yet</p>'; return null; }
  const data = uPlot.join(series.map((s) => [s.x.map((v) => v ?? NaN), s.y]));
  const uSeries = [{ label: opts.xlabel || "x" }].concat(series.map((s, i) => ({
    label: s.label,
    stroke: s.color || COLORS[i % COLORS.length],
    width: s.width || 1.2,
    dash: s.dash,
    fill: s.fill,
    points: { show: s.points || false, size: 4 },
    ...(s.width === 0 ? { paths: () => null } : {}),  // width 0: points only, no line between them
    spanGaps: true,
  })));
  const bands = (opts.bands || []).map(([hi, lo]) => ({ series: [hi, lo], fill: "rgba(31,119,180,0.15)" }));
  const u = new uPlot({
    width: plotWidth(el), height: opts.height || 240,
    scales: { x: { time: false } },
    axes: [{ label: opts.xlabel, size: 40 }, { label: opts.ylabel, size: 60 }],
    series: uSeries, bands,
    legend: { live: false },
    cursor: { drag: { x: true, y: false } },
  }, data, el);
  u.xafsSeries = series.map((s) => ({ label: s.label, n: s.x.length }));
  D.plots[name] = u;
  return u;
}

/* ------------------------------------------------------------------ side panels */

function renderStatus(st) {
  D.status = st || {};
  const errs = Object.values(D.status.errors || {});
  banner(errs.join(" · "));
  const broker = D.status.broker;
  const q = $("#queue");
  const tbody = $("#workers tbody");
  if (broker) {
    q.innerHTML = `<span class="badge st-pending">${broker.pending} pending</span>` +
      `<span class="badge st-running">${broker.inflight} in flight</span>` +
      `<span class="badge st-ok">${(broker.stats || {}).done ?? 0} done</span>` +
      (broker.failing ? `<span class="badge st-error" title="${esc((broker.failing_units || []).map((f) =>
        `${f.unit_id}: ${f.reason} (retry in ${f.retry_in_s} s)`).join("\n"))}">${broker.failing} failing to store</span>` : "") +
      `<span class="small muted">${(broker.workers || []).length} worker(s)</span>` +
      Object.entries(broker.lanes || {}).map(([lane, l]) =>
        `<div class="small">${esc(lane)} lane: ${l.pending} waiting, ${l.inflight} in flight, ${l.workers} worker(s)` +
        (l.shedding ? ` <span class="badge st-error" title="more than ${broker.overload.shed_after} waiting: ` +
          `slow analyses run only for what [broker] shed_keep = ${esc(broker.overload.shed_keep)} keeps">` +
          `shedding: ${esc(broker.overload.shed_keep)} only</span>` : "") + "</div>").join("");
    tbody.innerHTML = (broker.workers || []).map((w) =>
      `<tr class="${w.idle_s > 5 ? "stale" : ""}"><td>${esc(w.worker || w.id)}</td><td>${esc(w.host || "")}/${esc(w.pid ?? "")}</td>` +
      `<td>${w.inflight}</td><td>${w.done}</td><td>${fmt(w.idle_s, 2)}</td></tr>`).join("");
    const s = broker.stats || {};
    const rej = (broker.recent_rejections || []).slice(-3).map(esc).join("; ");
    $("#broker-stats").innerHTML = `submitted ${s.submitted ?? 0} · redelivered ${s.redelivered ?? 0} · poisoned ${s.poisoned ?? 0}` +
      ` · rejected ${s.rejected ?? 0} · workers expired ${s.workers_expired ?? 0}` + (rej ? `<br>recent rejections: ${rej}` : "");
  } else {
    q.innerHTML = D.status.broker === null ? '<span class="badge st-error">broker not answering</span>' : '<span class="muted small">no broker configured</span>';
    tbody.innerHTML = "";
    $("#broker-stats").textContent = "";
  }
  const active = D.status.active || {};
  const uids = Object.keys(active);
  $("#now").innerHTML = uids.length ? uids.map((uid) => {
    const a = active[uid];
    const pct = a.fraction !== null && a.fraction !== undefined ? Math.round(100 * a.fraction) : 0;
    return `<div class="now-run" data-uid="${esc(uid)}"><b>#${esc(a.scan_id ?? "")} ${esc(a.sample || "")}</b> ${esc(a.plan_name || "")}` +
      `<div class="progress"><div class="bar" style="width:${pct}%"></div><span>${a.done}/${a.total ?? "?"} points · ` +
      `${duration(a.remaining_s)} left</span></div></div>`;
  }).join("") : '<p class="muted">no scan running</p>';
  if (D.detail && active[D.detail.uid]) renderProgress(active[D.detail.uid]);
}

function renderRuns() {
  const tbody = $("#runs-table tbody");
  tbody.innerHTML = D.runs.map((r) => {
    const statuses = Object.entries(r.status || {}).map(([a, s]) => {
      const q = (r.quality || {})[a];
      const cls = s === "ok" ? verdictClass(q) : s;  // a result is green only when its verdict is ok
      return `<span class="badge st-${esc(cls)}" title="${esc(a)}: ${esc(s)}${q ? ", quality " + esc(q) : ""}">${esc(a.replace("xafs_", ""))}</span>`;
    }).join("");
    const state = r.running ? '<span class="badge st-running">running</span>' :
      (r.exit_status && r.exit_status !== "success" ? `<span class="badge st-error">${esc(r.exit_status)}</span>` : "");
    const flag = r.flags && r.flags.length ? ` <span title="${esc(r.flags.join("; "))}">⚠</span>` : "";
    return `<tr data-uid="${esc(r.uid)}" class="${r.uid === D.selected ? "selected" : ""}"><td>${esc(r.scan_id ?? "")}</td>` +
      `<td>${esc(r.sample || "")}${flag}</td><td>${esc(r.plan_name || "")}</td><td>${state}${statuses}</td><td>${clock(r.time)}</td></tr>`;
  }).join("");
  const flagged = D.runs.filter((r) => r.flags && r.flags.length);
  $("#flagged").innerHTML = flagged.length ? flagged.map((r) =>
    `<li data-uid="${esc(r.uid)}"><b>#${esc(r.scan_id ?? "")} ${esc(r.sample || "")}</b>: ${r.flags.map(esc).join("; ")}</li>`).join("") :
    '<li class="muted">none</li>';
}

async function loadRuns() {
  const q = encodeURIComponent($("#run-filter").value || "");
  const res = await api(`api/runs?limit=100&q=${q}`);
  D.runs = res.runs;
  renderRuns();
  if (!D.selected && D.runs.length) await selectRun(D.runs[0].uid);
}
const loadRunsSoon = debounce(() => loadRuns().catch((e) => banner(e.message)), 300);

/* ------------------------------------------------------------------ selected run */

async function selectRun(uid) {
  if (uid !== D.selected) {
    D.selected = uid;
    D.shown = {};
    D.shownAt = {};
    for (const img of document.querySelectorAll("#map-panel img")) img.removeAttribute("src");
    for (const name of Object.keys(D.plots)) { D.plots[name].destroy(); delete D.plots[name]; }
  }
  renderRuns();
  await loadDetail();
}

function renderProgress(p) {
  if (!p) return;
  const pct = p.fraction !== null && p.fraction !== undefined ? 100 * p.fraction : 0;
  $("#run-progress-bar").style.width = `${pct.toFixed(1)}%`;
  const left = p.running ? ` · ${duration(p.remaining_s)} left` : "";
  $("#run-progress-text").textContent = `${p.done}/${p.total ?? "?"} points (${pct.toFixed(0)} %) · ${duration(p.elapsed_s)} elapsed${left}`;
}

function pickUnit(units) {
  if (!units) return null;
  if (units.merge && units.merge.status === "ok") return "merge";
  if (units.map && units.map.status === "ok") return "map";
  const ok = Object.keys(units).filter((u) => units[u].status === "ok").sort((a, b) => (units[a].written || 0) - (units[b].written || 0));
  return ok.length ? ok[ok.length - 1] : null;
}

/* "repeat_2"/"merge" -> spectrum, "tile_3" -> tile, "map" -> map */
function family(unit) {
  return unit.startsWith("tile_") ? "tile" : unit === "map" ? "map" : "spectrum";
}

// status ok + verdict → badge class: ok (green) only for an ok verdict, warn (amber), bad (red); "unjudged"
// for an analysis that gives no verdict (grey-green, never the plain green of a checked result)
function verdictClass(verdict) {
  return verdict === "warn" ? "warn" : verdict === "bad" ? "bad" : verdict === "ok" ? "ok" : "unjudged";
}

function renderUnits(d) {
  const analyses = Object.keys(d.results || {});
  const units = [...d.expected_units];
  for (const a of analyses) for (const u of Object.keys(d.results[a])) if (!units.includes(u)) units.push(u);
  if (!units.length) { $("#units").innerHTML = '<p class="muted small">no units</p>'; return; }
  const shown = units.length > 40 ? units.slice(0, 40) : units;
  let html = '<table class="small"><thead><tr><th>analysis</th>' + shown.map((u) => `<th>${esc(u.replace("repeat_", "r").replace("tile_", "t"))}</th>`).join("") + "</tr></thead><tbody>";
  for (const a of analyses) {
    const families = new Set(Object.keys(d.results[a]).map(family));
    html += `<tr><th>${esc(a)}</th>` + shown.map((u) => {
      const r = d.results[a][u];
      if (!r && !families.has(family(u))) return "<td></td>";  // not a unit this analysis works on
      const st = r ? r.status : "pending";
      const cls = st === "ok" ? verdictClass(r.verdict) : st;
      const why = r && r.verdict_reasons && r.verdict_reasons.length ? ` · quality ${r.verdict}: ${r.verdict_reasons.join("; ")}` : "";
      const title = r ? `${a}/${u}: ${st}${r.error ? " — " + r.error : ""}${why} (worker ${r.worker || "?"}, ${clock(r.written)})` : `${a}/${u}: not yet`;
      const mark = { ok: "✓", unjudged: "✓", warn: "!", bad: "✗", error: "✗", skipped: "–" }[cls] || "…";
      return `<td><span class="badge st-${esc(cls)} unit" data-analysis="${esc(a)}" data-unit="${esc(u)}" data-status="${esc(st)}" data-verdict="${esc(r ? r.verdict || "" : "")}" title="${esc(title)}">${mark}</span></td>`;
    }).join("") + "</tr>";
  }
  html += "</tbody></table>";
  if (units.length > shown.length) html += `<p class="small muted">${units.length - shown.length} more units</p>`;
  if (!analyses.length) html += '<p class="small muted">no results yet (waiting for the workers)</p>';
  $("#units").innerHTML = html;
  const errors = [];
  for (const a of analyses) for (const [u, r] of Object.entries(d.results[a])) {
    if (r.status === "error") errors.push(`${a}/${u}: ${r.error}`);
    else if (r.status === "ok" && (r.verdict === "warn" || r.verdict === "bad")) errors.push(`${a}/${u}: quality ${r.verdict} (${(r.verdict_reasons || []).join("; ")})`);
  }
  // a skipped analysis says why once per analysis and reason (e.g. "spm: skipped: no path set for 'X' ...")
  const skips = new Set();
  for (const a of analyses) for (const r of Object.values(d.results[a])) {
    if (r.status === "skipped" && r.error && !r.error.startsWith("requires ") && !r.error.includes("runs on merged")) skips.add(`${a}: skipped: ${r.error}`);
  }
  errors.push(...skips);
  for (const f of d.flags || []) if (!f.endsWith(": error")) errors.push(f);
  $("#run-errors").innerHTML = errors.map((e) => `<li>${esc(e)}</li>`).join("");
}

async function loadDetail() {
  if (!D.selected) return;
  const uid = D.selected;
  const d = await api(`api/runs/${encodeURIComponent(uid)}`);
  if (uid !== D.selected) return;
  D.detail = d;
  const s = d.start || {};
  $("#run-title").textContent = `#${s.scan_id ?? ""} ${s.sample || "(no sample)"} — ${s.element || ""} ${s.edge || ""} ${s.plan_name || ""}`;
  $("#run-meta").innerHTML = `uid ${esc(d.uid)} · started ${clock(s.time)} · ` +
    (d.running ? '<span class="badge st-running">running</span>' : `${esc(d.exit_status || "")}`) +
    (s.mode ? ` · ${esc(s.mode)}` : "") + (s.e0 ? ` · E0 ${fmt(s.e0, 6)} eV (tabulated)` : "");
  renderProgress(d.progress);
  renderUnits(d);
  const kind = d.xafs_kind;
  $("#spectrum-panel").hidden = kind !== "spectrum";
  $("#map-panel").hidden = kind !== "map";
  $("#spm-panel").hidden = !(d.results.spm && pickUnit(d.results.spm));
  $("#bayes-panel").hidden = !(d.results.bayes_xanes && pickUnit(d.results.bayes_xanes));
  $("#adaptive-panel").hidden = s.plan_name !== "xafs_scan_adaptive";
  const jobs = [];
  if (!$("#adaptive-panel").hidden) jobs.push(loadAdaptive(d));
  if (kind === "spectrum") jobs.push(loadSpectra(d));
  if (!$("#spm-panel").hidden) jobs.push(loadSpm(d));
  if (!$("#bayes-panel").hidden) jobs.push(loadBayes(d));
  if (kind === "map") jobs.push(loadMap(d));
  await Promise.all(jobs);
  D.loads += 1;
}
/* one detail load at a time; changes arriving meanwhile trigger one more load when it ends */
let detailBusy = false, detailAgain = false;
async function refreshDetail() {
  if (detailBusy) { detailAgain = true; return; }
  detailBusy = true;
  try {
    do { detailAgain = false; await loadDetail(); } while (detailAgain);
    banner(Object.values(D.status.errors || {}).join(" · "));
  } catch (e) {
    banner(e.message);
    setTimeout(() => loadDetailSoon(), 2000);  // e.g. a result whose arrays were still being stored
  } finally {
    detailBusy = false;
  }
}
const loadDetailSoon = debounce(refreshDetail, 150);

/* a result's arrays (names: null for all, "none" for metadata and PNG names only), cached by version */
async function arraysOf(d, analysis, unit, names) {
  const meta = d.results[analysis][unit];
  // a result's arrays are stored after its metadata: the child count completes the version
  const key = `${d.uid}/${analysis}/${unit}@${meta.written}:${meta.n_children}:${names || "all"}`;
  if (!D.arrays[key]) {
    const q = names === "none" ? "?arrays=false" : "";
    D.arrays[key] = await api(`api/runs/${encodeURIComponent(d.uid)}/results/${analysis}/${unit}${q}`);
  }
  return D.arrays[key];
}

/* what the page shows: version "<written>:<number of stored children>" of each result */
function markShown(key, meta) {
  const version = `${meta.written}:${meta.n_children}`;
  if (D.shown[key] !== version) { D.shown[key] = version; D.shownAt[key] = Date.now() / 1000; }
}

function unitLabel(u) { return u === "merge" ? "merge" : u.replace("repeat_", "repeat "); }

/* μ(E), χ(k)k^w, |χ(R)| of every repeat and the merge (raw μ from the event table until results exist) */
async function loadSpectra(d) {
  const norm = d.results.xafs_normalize || {};
  const units = Object.keys(norm).filter((u) => norm[u].status === "ok")
    .sort((a, b) => (a === "merge") - (b === "merge") || a.localeCompare(b, undefined, { numeric: true }));
  const series = { mu: [], chik: [], chir: [] };
  const kw = (d.summary && d.summary.kweight) || 2;
  if (units.length) {
    const all = await Promise.all(units.map((u) => arraysOf(d, "xafs_normalize", u, null)));
    units.forEach((u, i) => {
      const a = all[i].arrays;
      const merge = u === "merge";
      const style = { label: unitLabel(u), width: merge ? 2.2 : 1, color: merge ? "#000" : COLORS[i % COLORS.length] };
      series.mu.push({ ...style, x: a.energy, y: a.norm });
      if (a.k) {
        const w = (all[i].metadata.summary || {}).kweight || kw;
        series.chik.push({ ...style, x: a.k, y: a.chi.map((c, j) => (c === null ? null : c * Math.pow(a.k[j], w))) });
        series.chir.push({ ...style, x: a.r, y: a.chir_mag });
      }
      markShown(`xafs_normalize/${u}`, norm[u]);
    });
    $("#mu-caption").textContent = "normalised μ(E): repeats and merge";
    $("#chik-caption").innerHTML = `χ(k)·k<sup>${esc(kw)}</sup>`;
  }
  if (!units.length) {
    try {
      const raw = await api(`api/runs/${encodeURIComponent(d.uid)}/raw`);
      raw.repeats.forEach((r, i) => series.mu.push({ label: `repeat ${r.repeat} (raw)`, x: r.energy, y: r.mu, color: COLORS[i % COLORS.length] }));
      $("#mu-caption").textContent = `raw μ(E) = ${raw.mode === "fluorescence" ? "If/I0" : "ln(I0/It)"}, as measured`;
    } catch (e) { /* no events yet */ }
  }
  drawPlot("mu", $("#plot-mu"), series.mu, { xlabel: "E / eV", ylabel: units.length ? "norm. μ" : "μ" });
  drawPlot("chik", $("#plot-chik"), series.chik, { xlabel: "k / Å⁻¹", ylabel: `χ·k^${kw}` });
  drawPlot("chir", $("#plot-chir"), series.chir, { xlabel: "R / Å", ylabel: "|χ(R)|" });
  const s = d.summary || {};
  $("#summary-line").innerHTML = s.e0 !== undefined ?
    `E0 ${fmt(s.e0, 7)} eV · edge step ${fmt(s.edge_step)} · repeats merged ${fmt(s.n_repeats_merged)}/${fmt(s.n_repeats)}` +
    ` · noise χ(k) ${fmt(s.noise_chi, 2)} · k range ${fmt(s.kmin)}–${fmt(s.kmax)} Å⁻¹` : "";
}

async function loadSpm(d) {
  const unit = pickUnit(d.results.spm);
  const meta = d.results.spm[unit];
  $("#spm-unit").textContent = `(${unitLabel(unit)}, ${meta.summary?.spm?.path_set || ""})`;
  const spm = (meta.summary || {}).spm || {};
  const rows = [];
  for (let i = 1; i <= (spm.n_shells || 0); i++) {
    const sh = spm[`shell${i}`] || {};
    rows.push(`<tr><td>${i}</td><td>${esc(sh.pair || "")}</td><td>${pm(sh.N, sh.N_err)}</td><td>${pm(sh.R, sh.R_err, 4)}</td><td>${pm(sh.sigma2, sh.sigma2_err, 3)}</td></tr>`);
  }
  $("#spm-shells tbody").innerHTML = rows.join("") || '<tr><td colspan="5" class="muted">no shells</td></tr>';
  $("#spm-fit-info").textContent = `R-factor ${fmt(spm.r_factor)} · ΔE0 ${pm(spm.de0, spm.de0_err)} eV · α ${fmt(spm.alpha)} · S0² ${fmt(spm.s02)}`;
  const res = await arraysOf(d, "spm", unit, null);
  const a = res.arrays;
  markShown(`spm/${unit}`, meta);
  const dist = a.spm_distribution || [];
  const rgrid = a.spm_r_grid || [];
  const pairs = (res.metadata.diagnostics?.shells || []).map((s) => s.pair);
  const series = dist.map((plane, p) => ({
    label: pairs[p] || `pair ${p + 1}`, x: rgrid, y: plane.map((row) => row.reduce((s, v) => s + (v || 0), 0)),
    color: COLORS[p % COLORS.length], width: 1.5, fill: COLORS[p % COLORS.length] + "33",
  }));
  drawPlot("spm_dist", $("#plot-spm-dist"), series, { xlabel: "R / Å", ylabel: "N" });
  drawHeatmap($("#spm-heatmap"), dist[0] || [], rgrid, a.spm_sigma2_grid || []);
  $("#spm-pair").textContent = pairs[0] || "pair 1";
  drawPlot("spm_fit", $("#plot-spm-fit"), [
    { label: "data", x: a.spm_r, y: a.spm_chir_mag_data, color: "#000" },
    { label: "SpM fit", x: a.spm_r, y: a.spm_chir_mag_fit, color: "#d62728", dash: [5, 3] },
  ], { xlabel: "R / Å", ylabel: "|χ(R)|" });
}

/* N(R, σ²) of one pair as a heat map: R across, σ² up */
function drawHeatmap(canvas, plane, rgrid, s2grid) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!plane.length || !plane[0].length) return;
  const nr = plane.length, ns = plane[0].length;
  const left = 50, bottom = 30, w = canvas.width - left - 10, h = canvas.height - bottom - 10;
  let max = 0;
  for (const row of plane) for (const v of row) if (v > max) max = v;
  let rlo = nr, rhi = 0;  // zoom on the R range holding weight
  plane.forEach((row, i) => { if (row.some((v) => v > 1e-3 * max)) { rlo = Math.min(rlo, i); rhi = Math.max(rhi, i); } });
  if (rlo > rhi) { rlo = 0; rhi = nr - 1; }
  rlo = Math.max(0, rlo - 10); rhi = Math.min(nr - 1, rhi + 10);
  const cw = w / (rhi - rlo + 1), ch = h / ns;
  for (let i = rlo; i <= rhi; i++) {
    for (let j = 0; j < ns; j++) {
      const v = max > 0 ? (plane[i][j] || 0) / max : 0;
      ctx.fillStyle = v > 0 ? `rgba(198,40,40,${Math.min(1, 0.15 + v)})` : "#f5f5f5";
      ctx.fillRect(left + (i - rlo) * cw, 10 + h - (j + 1) * ch, Math.ceil(cw), Math.ceil(ch));
    }
  }
  ctx.fillStyle = "#333";
  ctx.font = "11px sans-serif";
  ctx.fillText(`${fmt(rgrid[rlo], 3)} Å`, left, canvas.height - 12);
  ctx.fillText(`${fmt(rgrid[rhi], 3)} Å`, left + w - 40, canvas.height - 12);
  ctx.fillText("R →", left + w / 2 - 10, canvas.height - 12);
  ctx.save(); ctx.translate(12, 10 + h / 2 + 20); ctx.rotate(-Math.PI / 2); ctx.fillText("σ² →", 0, 0); ctx.restore();
  ctx.fillText(fmt(s2grid[0], 2), 2, 10 + h);
  ctx.fillText(fmt(s2grid[ns - 1], 2), 2, 18);
  canvas.dataset.max = String(max);
}

async function loadBayes(d) {
  const unit = pickUnit(d.results.bayes_xanes);
  const meta = d.results.bayes_xanes[unit];
  const b = (meta.summary || {}).bayes || {};
  $("#bayes-unit").textContent = `(${unitLabel(unit)})`;
  const res = await arraysOf(d, "bayes_xanes", unit, null);
  const a = res.arrays;
  markShown(`bayes_xanes/${unit}`, meta);
  const fmin = Math.min(...(a.bayes_F || []).filter((v) => v !== null));
  $("#bayes-table tbody").innerHTML = (a.bayes_k || []).map((k, i) =>
    `<tr class="${a.bayes_F[i] === fmin ? "best" : ""}"><td>${k}${k === b.K ? " ★" : ""}</td><td>${fmt(a.bayes_F[i], 5)}</td><td>${fmt(a.bayes_F_se[i], 2)}</td></tr>`).join("");
  const peaks = [];
  for (let i = 1; b[`peak${i}`]; i++) peaks.push(b[`peak${i}`]);
  $("#bayes-peaks tbody").innerHTML = peaks.map((p, i) =>
    `<tr><td>${i + 1}</td><td>${pm(p.center, p.center_err, 6)}</td><td>${pm(p.height, p.height_err)}</td><td>${pm(p.width, p.width_err)}</td></tr>`).join("");
  $("#bayes-info").textContent = `K = ${b.K} by minimum F · noise ${fmt(b.noise)} (${b.noise_mode || ""}) · R̂max ${fmt(b.rhat_max)}` +
    ` · quality ${meta.verdict || "not judged"}` + ((meta.verdict_reasons || []).length ? `: ${meta.verdict_reasons.join("; ")}` : "");
  $("#bayes-info").className = `small verdict-${esc(meta.verdict || "none")}`;
  const x = a.bayes_energy || [];
  const shape = res.metadata.params?.config?.peak_shape || "gaussian";
  const series = [
    { label: "data", x, y: a.bayes_data, color: "#000", points: true, width: 0 },
    { label: "best fit", x, y: a.bayes_best_fit, color: "#d62728", width: 1.8 },
    { label: "95 % hi", x, y: a.bayes_band_hi95, color: "rgba(31,119,180,0.4)" },
    { label: "95 % lo", x, y: a.bayes_band_lo95, color: "rgba(31,119,180,0.4)" },
  ];
  peaks.forEach((p, i) => {
    const y = x.map((e) => {
      const t = (e - p.center) / p.width;
      return shape.startsWith("lor") ? p.height / (1 + 4 * t * t) : p.height * Math.exp(-4 * Math.LN2 * t * t);
    });
    series.push({ label: `peak ${i + 1}`, x, y, color: COLORS[(i + 2) % COLORS.length], dash: [4, 3] });
  });
  drawPlot("bayes", $("#plot-bayes"), series, { xlabel: "E / eV", ylabel: "norm. μ", bands: [[3, 4]] });
}

/* an adaptive scan: its points as they arrive, the local fits' posterior band, each target's sd against beam
   time, every decision and why it stopped (GET api/runs/<uid>/adaptive) */
function meanByEnergy(energy, mu) {
  const acc = new Map();
  energy.forEach((e, i) => {
    if (e === null || mu[i] === null) return;
    const key = Math.round(e * 1000) / 1000;
    const a = acc.get(key) || [0, 0];
    acc.set(key, [a[0] + mu[i], a[1] + 1]);
  });
  const x = [...acc.keys()].sort((a, b) => a - b);
  return { x, y: x.map((e) => acc.get(e)[0] / acc.get(e)[1]) };
}

async function loadAdaptive(d) {
  const a = await api(`api/runs/${encodeURIComponent(d.uid)}/adaptive`);
  if (d.uid !== D.selected) return;
  D.adaptive = a;
  const n = a.decisions.length;
  const cls = verdictClass(a.verdict);
  const badge = $("#adaptive-verdict");
  badge.className = `badge st-${cls}`;
  badge.textContent = a.verdict ? `quality ${a.verdict}` : "not judged yet";
  const last = n ? a.decisions[n - 1] : null;
  // K (the number of peaks): its column holds the most probable K, K_sd 1 − its (cautious) probability
  // chi_noise: ε, the RMS noise of χ per 0.05 Å⁻¹ point at high k (its _sd column holds the same)
  const estOf = (t) => t === "K"
    ? `K = ${last.K ?? "?"}, P ${last.K_sd == null ? "?" : (1 - last.K_sd).toFixed(2)} (target P ≥ ${a.target.K})`
    : t === "chi_noise"
      ? `χ noise ${last.chi_noise == null ? "?" : last.chi_noise.toPrecision(3)} (target ≤ ${a.target.chi_noise})`
      : `${t} ${pm(last[t], last[`${t}_sd`], 7)} eV (target ± ${a.target[t]})`;
  const est = last ? Object.keys(a.target).map(estOf).join(" · ") : "";
  const state = a.running ? `running · decision ${n}${last ? ": " + last.reason : ""}` : `stopped: ${a.stop_reason || "(no reason recorded)"}`;
  const why = a.verdict_reasons.length ? `<div class="verdict-${esc(a.verdict)}">quality ${esc(a.verdict)}: ${esc(a.verdict_reasons.join("; "))}</div>` : "";
  const used = last ? ` · ${last.points} points, ${duration(last.beam_time_s)} of beam` : "";
  $("#adaptive-status").innerHTML = `<div id="adaptive-state">${esc(state)}</div><div>${esc(est)}${esc(used)}</div>${why}`;
  // points: the coarse pass (decision 0) and the design's picks, revisited energies averaged for the plot
  const coarse = new Set((n ? a.decisions[0].energies : []).map((e) => Math.round(e * 1000) / 1000));
  const all = meanByEnergy(a.points.energy, a.points.mu);
  const pick = (inCoarse) => {
    const x = [], y = [];
    all.x.forEach((e, i) => { if (coarse.has(e) === inCoarse) { x.push(e); y.push(all.y[i]); } });
    return { x, y };
  };
  const series = [
    { label: "coarse pass", ...pick(true), color: "#7f7f7f", points: true, width: 0 },
    { label: "chosen", ...pick(false), color: "#000", points: true, width: 0 },
  ].filter((x) => x.x.length);  // drawPlot drops empty series: keep the band indices below right
  const bands = [];
  Object.entries(a.band || {}).forEach(([t, b], i) => {
    const color = COLORS[(i + 1) % COLORS.length];
    series.push({ label: `${t} fit`, x: b.energy, y: b.mu, color, width: 1.8 });
    series.push({ label: `${t} +2 sd`, x: b.energy, y: b.mu.map((m, j) => m + 2 * b.sd[j]), color: "rgba(31,119,180,0.4)" });
    series.push({ label: `${t} −2 sd`, x: b.energy, y: b.mu.map((m, j) => m - 2 * b.sd[j]), color: "rgba(31,119,180,0.4)" });
    bands.push([series.length - 1, series.length]);  // uPlot series indices (x is 0)
  });
  drawPlot("adaptive-points", $("#plot-adaptive-points"), series, { xlabel: "E / eV", ylabel: "μ", bands });
  const t = a.decisions.map((x) => x.beam_time_s);
  const sdSeries = [];
  Object.keys(a.target).forEach((name, i) => {
    const color = COLORS[(i + 1) % COLORS.length];
    const isK = name === "K";  // for K: 1 − P(K) against 1 − its target
    sdSeries.push({ label: isK ? "K: 1 − P" : name === "chi_noise" ? "χ noise ε" : `${name} sd`, x: t, y: a.decisions.map((x) => x[`${name}_sd`]), color, points: true, width: 1.5 });
    sdSeries.push({ label: `${name} target`, x: t, y: t.map(() => (isK ? 1 - a.target[name] : a.target[name])), color, dash: [5, 4] });
  });
  drawPlot("adaptive-sd", $("#plot-adaptive-sd"), sdSeries, { xlabel: "beam time / s", ylabel: "sd / eV" + ("K" in a.target ? "; 1 − P for K" : "") + ("chi_noise" in a.target ? "; ε for χ" : "") });
  $("#adaptive-decisions").innerHTML = a.decisions.slice(-8).reverse().map((x) =>
    `<li value="${x.decision}">${esc(x.energies.length)} point(s) · ${esc(x.reason)}</li>`).join("");
}

async function loadMap(d) {
  const s = d.start || {};
  const nr = s.n_tile_rows || 1, nc = s.n_tile_cols || Math.max(1, s.n_tiles || 1);
  const feats = d.results.imaging_features || {};
  const grid = $("#tile-grid");
  grid.style.gridTemplateColumns = `repeat(${nc}, 28px)`;
  let cells = "";
  for (let i = 0; i < nr * nc; i++) {
    const st = feats[`tile_${i}`] ? feats[`tile_${i}`].status : "pending";
    cells += `<div class="st-${esc(st)}" data-tile="${i}" data-status="${esc(st)}" title="tile ${i}: ${esc(st)}">${i}</div>`;
  }
  grid.innerHTML = cells;
  const maps = d.results.imaging_map || {};
  const m = maps.map;
  if (!m || m.status !== "ok") {
    $("#map-quicklook").removeAttribute("src");
    $("#map-stats").innerHTML = m && m.error ? `<tr><td class="errors">${esc(m.error)}</td></tr>` : "";
    return;
  }
  const base = `api/runs/${encodeURIComponent(d.uid)}/results/imaging_map/map`;
  const res = await arraysOf(d, "imaging_map", "map", "none");  // PNG names only: the maps can be large
  markShown("imaging_map/map", m);
  // a new version of the map (or the rest of its PNGs) reloads the images; PNGs not stored yet (the store
  // writes a result's arrays after its metadata) keep the previous picture until they are
  const v = `${m.written}:${m.n_children}`;
  if (res.pngs.includes("quicklook_png")) $("#map-quicklook").src = `${base}/png/quicklook_png?v=${v}`;
  const sel = $("#map-select");
  const keep = sel.value;
  const order = (n) => (n === "png.labels" ? 0 : n.startsWith("png.fraction") ? 1 : 2);
  const pngs = res.pngs.filter((n) => n !== "quicklook_png");
  if (pngs.length) sel.innerHTML = pngs.sort((p, q) => order(p) - order(q) || p.localeCompare(q)).map((n) => `<option value="${esc(n)}">${esc(n.replace("png.", ""))}</option>`).join("");
  if (keep && pngs.includes(keep)) sel.value = keep;
  if (sel.value && pngs.includes(sel.value)) $("#map-image").src = `${base}/png/${sel.value}?v=${v}`;
  const im = (m.summary || {}).imaging || {};
  const rows = [["tiles done", `${im.n_tiles_done ?? "?"} / ${s.n_tiles ?? "?"}`], ["coverage", fmt(im.coverage)],
    ["last update", im.update || ""], ["Potts β", fmt(im.beta)]];
  for (const [k, v] of Object.entries(im.label_fraction || {})) rows.push([`fraction of ${k}`, fmt(v)]);
  if (im.domain) rows.push(["domains", `${fmt(im.domain.n)} (mean area ${fmt(im.domain.mean_area_px)} px, diameter ${fmt(im.domain.diameter_px)} px)`]);
  for (const [k, v] of Object.entries(im.corr_length || {})) rows.push([`correlation length ${k}`, `${fmt(v)} px`]);
  $("#map-stats").innerHTML = rows.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${v}</td></tr>`).join("");
}

/* ------------------------------------------------------------------ live stream */

function connect() {
  const es = new EventSource("api/stream");
  const conn = $("#conn");
  es.addEventListener("open", () => { conn.textContent = "live"; conn.className = "conn conn-on"; });
  es.addEventListener("error", () => { conn.textContent = "reconnecting…"; conn.className = "conn conn-off"; });
  es.addEventListener("hello", (ev) => {
    const h = JSON.parse(ev.data);
    const restarted = D.epoch && D.epoch !== h.epoch;
    D.epoch = h.epoch; D.cursor = h.cursor;
    conn.textContent = "live"; conn.className = "conn conn-on";
    if (restarted) { loadRunsSoon(); loadDetailSoon(); }
  });
  es.addEventListener("reset", () => { loadRunsSoon(); loadDetailSoon(); });
  es.addEventListener("status", (ev) => renderStatus(JSON.parse(ev.data)));
  es.addEventListener("change", (ev) => {
    const c = JSON.parse(ev.data);
    D.cursor = c.id; D.lastChange = c;
    if (c.kind === "result") D.changeAt[`${c.uid}/${c.analysis}/${c.unit}`] = Date.now() / 1000;
    $("#last-update").textContent = `last change ${clock(c.time)}: ${c.kind} ${c.analysis ? c.analysis + "/" + c.unit : c.event || ""}`;
    loadRunsSoon();
    if (c.kind === "run" && c.event === "started" && $("#follow").checked) {
      selectRun(c.uid).catch((e) => banner(e.message));
    } else if (c.uid === D.selected) {
      loadDetailSoon();
    }
  });
  D.source = es;
}

/* a running spectrum scan without results yet: refresh its raw μ(E) every 2 s (results come by the stream) */
setInterval(() => {
  const d = D.detail;
  const norm = d && d.results && d.results.xafs_normalize;
  if (d && d.running && d.xafs_kind === "spectrum" && !pickUnit(norm) && document.visibilityState !== "hidden") loadDetailSoon();
}, 2000);

document.addEventListener("click", (ev) => {
  const row = ev.target.closest("[data-uid]");
  if (row && (row.closest("#runs-table") || row.closest("#flagged") || row.closest("#now"))) {
    $("#follow").checked = false;
    selectRun(row.dataset.uid).catch((e) => banner(e.message));
  }
});
$("#run-filter").addEventListener("input", loadRunsSoon);
/* a PNG asked for in the moment between its node's creation and its data upload: try again a little later */
for (const img of document.querySelectorAll("#map-panel img")) {
  img.addEventListener("error", () => {
    if (!img.getAttribute("src")) return;
    const u = new URL(img.src);
    const n = Number(u.searchParams.get("retry") || 0);
    if (n < 3) setTimeout(() => { u.searchParams.set("retry", String(n + 1)); img.src = u.toString(); }, 1500);
  });
}
$("#map-select").addEventListener("change", () => {
  const d = D.detail;
  if (d) $("#map-image").src = `api/runs/${encodeURIComponent(d.uid)}/results/imaging_map/map/png/${$("#map-select").value}?v=${Date.now()}`;
});
window.addEventListener("resize", debounce(() => { for (const u of Object.values(D.plots)) u.setSize({ width: plotWidth(u.root.parentElement), height: u.height }); }, 200));

loadRuns().catch((e) => banner(e.message));
api("api/status").then(renderStatus).catch(() => {});
connect();
