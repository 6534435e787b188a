// metalm watch: polls /api/update with what it already holds (a cursor per run) and draws with
// plotly.js. Only new metric rows travel after the first answer; the server resends a fresh,
// downsampled copy when ours stops being a prefix of its data or grows too long.
"use strict";

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const X_LABELS = { step: "optimizer steps", tokens: "tokens", flops: "FLOPs", time: "seconds" };
const X_KEYS = ["step", "tokens", "flops", "time"];
const LOSS_KEYS = ["loss", "val_loss"];
const META_ACC = [["support_acc_before", "support before", "dot"], ["support_acc_after", "support after", "dash"], ["query_acc", "query", "solid"]];
const META_OTHER = ["meta_loss", "meta_share"];
const KNOWN = new Set([...LOSS_KEYS, ...META_ACC.map((m) => m[0]), ...META_OTHER]);
const PLOT_CONFIG = { displaylogo: false, responsive: true, displayModeBar: "hover" };

const state = {
  runs: new Map(), // id -> run
  order: [],
  revision: 0,
  maxPoints: 2000,
  interval: 1000,
  selection: { group: "activations", component: "", value: "erank", attention_value: "entropy_norm" },
  dirty: { metrics: true, dynamics: new Set(), info: true, verdict: false },
  experiments: [], // the watched experiments' verdicts (summary.json)
  experimentsText: "[]",
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function fmtCount(v) {
  if (v === null || v === undefined) return "–";
  const units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [size, unit] of units) if (Math.abs(v) >= size) return (v / size).toFixed(2) + unit;
  return String(Math.round(v));
}

function fmtDuration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (h > 0) return `${h}h${String(m).padStart(2, "0")}m`;
  if (m > 0) return `${m}m${String(sec).padStart(2, "0")}s`;
  return `${sec}s`;
}

function emptySeries() {
  return { step: [], tokens: [], flops: [], time: [], y: [] };
}

function applyRun(r) {
  let run = state.runs.get(r.id);
  if (!run) {
    run = { id: r.id, color: COLORS[r.id % COLORS.length], generation: -1, n: 0, series: {}, dynamicsKey: "", dynamics: null, infoRevision: -1, info: null };
    state.runs.set(r.id, run);
    state.dirty.info = true;
  }
  run.name = r.name;
  run.path = r.path;
  run.status = r;
  const m = r.metrics;
  if (m.reset) {
    run.series = {};
    state.dirty.metrics = true;
  }
  let tooLong = false;
  for (const [key, s] of Object.entries(m.series)) {
    const mine = run.series[key] || (run.series[key] = emptySeries());
    for (const k of [...X_KEYS, "y"]) for (const v of s[k]) mine[k].push(v);
    state.dirty.metrics = true;
    if (mine.y.length > 2 * state.maxPoints) tooLong = true;
  }
  // Too many points to draw smoothly: hold nothing, so the next answer is a fresh downsampled copy.
  run.generation = tooLong ? -1 : m.generation;
  run.n = tooLong ? 0 : m.n;
  if (r.dynamics) {
    run.dynamics = r.dynamics;
    run.dynamicsKey = r.dynamics.key;
    state.dirty.dynamics.add(run.id);
  }
  if (r.info) {
    run.info = r.info;
    run.infoRevision = r.info.revision;
    state.dirty.info = true;
  }
}

function apply(answer) {
  state.interval = Math.max(250, 1000 * answer.poll_interval);
  state.maxPoints = answer.max_points;
  const ids = answer.runs.map((r) => r.id);
  for (const id of [...state.runs.keys()]) {
    if (!ids.includes(id)) {
      state.runs.delete(id);
      state.dirty.metrics = state.dirty.info = true;
    }
  }
  if (ids.join() !== state.order.join()) state.dirty.metrics = state.dirty.info = true;
  state.order = ids;
  for (const r of answer.runs) applyRun(r);
  state.configDifferences = answer.config_differences;
  const experiments = JSON.stringify(answer.experiments || []);
  if (experiments !== state.experimentsText) {
    state.experimentsText = experiments;
    state.experiments = answer.experiments || [];
    state.dirty.verdict = true;
  }
}

// ---- the experiment's verdict (summary.json, once its report is written) -------------------

function renderVerdict() {
  const box = $("verdicts");
  box.replaceChildren(...state.experiments.map((x) => el("div", { class: "verdict" }, [
    el("h3", { text: x.name }),
    el("p", { class: "report-path", text: `report: ${x.report}` }),
    ...(x.unfinished.length ? [el("p", { class: "warning", text: `Unfinished: ${x.unfinished.join("; ")}` })] : []),
    table(["arm", "role", "seeds", "final validation loss (mean)"],
          x.arms.map((a) => [a.arm, a.role, a.seeds, a.final_val_loss === null ? null : a.final_val_loss.toFixed(4)])),
    el("ul", {}, x.verdict.map((line) => el("li", { text: line }))),
  ])));
  $("verdict-section").classList.toggle("hidden", state.experiments.length === 0);
}

function runs() {
  return state.order.map((id) => state.runs.get(id)).filter(Boolean);
}

// ---- status -------------------------------------------------------------------------------

function renderStatus() {
  const body = $("status-table").querySelector("tbody");
  body.replaceChildren();
  let latest = null;
  for (const run of runs()) {
    const s = run.status;
    if (s.step !== null && (latest === null || s.step > latest)) latest = s.step;
    const progress = s.total_steps ? el("progress", { max: s.total_steps, value: s.step || 0 }) : "";
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = run.color;
    body.append(el("tr", { "data-run": run.id }, [
      el("td", {}, [swatch]),
      el("td", { text: run.name, title: run.path }),
      el("td", { class: `state state-${s.state}`, text: s.state }),
      el("td", { class: "num run-step", "data-run": run.id, text: s.step === null ? "–" : s.total_steps ? `${s.step} / ${s.total_steps}` : String(s.step) }),
      el("td", {}, [progress]),
      el("td", { class: "num", text: fmtCount(s.tokens) }),
      el("td", { class: "num", text: fmtCount(s.tokens_per_s) }),
      el("td", { class: "num", text: fmtDuration(s.eta_s) }),
      el("td", { class: "num", text: s.age_s === null ? "–" : fmtDuration(s.age_s) + " ago" }),
    ]));
  }
  $("no-runs").classList.toggle("hidden", state.order.length > 0);
  $("latest-step").textContent = latest === null ? "–" : String(latest);
}

// ---- metric charts ------------------------------------------------------------------------

function xaxis() {
  const key = $("x-axis").value;
  return { title: { text: X_LABELS[key] }, exponentformat: "SI", automargin: true };
}

function trace(run, key, label, style = {}) {
  const s = run.series[key];
  if (!s) return null;
  const xKey = $("x-axis").value;
  return Object.assign({ type: "scatter", mode: "lines", x: s[xKey], y: s.y, name: `${run.name} · ${label}`, legendgroup: String(run.id), line: { color: run.color, width: 1.5 } }, style);
}

function layout(extra) {
  return Object.assign({ margin: { l: 60, r: 60, t: 30, b: 50 }, legend: { orientation: "h", y: -0.25 }, hovermode: "closest", uirevision: $("x-axis").value }, extra);
}

// plotly's `responsive` follows window resizes only; a chart whose column narrows because another
// run's column appeared must be told too.
const resizer = new ResizeObserver((entries) => {
  for (const entry of entries) if (entry.target._fullLayout) Plotly.Plots.resize(entry.target);
});
const observed = new WeakSet();

function plot(div, traces, plotLayout) {
  Plotly.react(div, traces, plotLayout, PLOT_CONFIG);
  if (!observed.has(div)) {
    observed.add(div);
    resizer.observe(div);
  }
}

function draw(id, traces, extraLayout) {
  // New points are pushed into the arrays plotly already holds; datarevision tells it they changed.
  plot($(id), traces.filter(Boolean), layout(Object.assign({ datarevision: state.revision }, extraLayout)));
}

function renderMetrics() {
  const all = runs();
  const logY = $("log-y").checked;
  draw("chart-loss", all.flatMap((run) => [
    trace(run, "loss", "train", { opacity: 0.55, line: { color: run.color, width: 1 } }),
    trace(run, "val_loss", "validation", { mode: "lines+markers", marker: { size: 4 }, line: { color: run.color, width: 2.5 } }),
  ]), { xaxis: xaxis(), yaxis: { title: { text: "loss (nats/token)" }, type: logY ? "log" : "linear" } });

  const hasMeta = all.some((run) => run.series.meta_loss || run.series.query_acc);
  $("no-meta").classList.toggle("hidden", hasMeta);
  draw("chart-meta-acc", all.flatMap((run) => META_ACC.map(([key, label, dash]) => trace(run, key, label, { line: { color: run.color, dash, width: 1.5 } }))),
    { title: { text: "episode accuracy", font: { size: 13 }, x: 0.01, xanchor: "left" }, xaxis: xaxis(), yaxis: { range: [0, 1], title: { text: "accuracy" } } });
  draw("chart-meta-loss", all.flatMap((run) => [
    trace(run, "meta_loss", "meta loss"),
    trace(run, "meta_share", "share of meta steps", { yaxis: "y2", line: { color: run.color, dash: "dot", width: 1.5 } }),
  ]), { title: { text: "meta loss and share of meta steps", font: { size: 13 }, x: 0.01, xanchor: "left" }, xaxis: xaxis(), yaxis: { title: { text: "meta loss" } },
    yaxis2: { title: { text: "share of meta steps" }, overlaying: "y", side: "right", range: [0, 1], tickmode: "linear", tick0: 0, dtick: 0.25, showgrid: false } });

  const otherKeys = [...new Set(all.flatMap((run) => Object.keys(run.series)))].filter((k) => !KNOWN.has(k)).sort();
  const select = $("other-key");
  const chosen = select.value || (otherKeys.includes("lr") ? "lr" : otherKeys[0]);
  if (select.options.length !== otherKeys.length || otherKeys.some((k, i) => select.options[i].value !== k)) {
    select.replaceChildren(...otherKeys.map((k) => el("option", { value: k, text: k })));
  }
  if (chosen) select.value = chosen;
  $("other-section").classList.toggle("hidden", otherKeys.length === 0);
  if (chosen) draw("chart-other", all.map((run) => trace(run, chosen, chosen)), { xaxis: xaxis(), yaxis: { title: { text: chosen } } });
}

// ---- dynamics -----------------------------------------------------------------------------

function layerColor(i, n) {
  const stops = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];
  return stops[Math.round((stops.length - 1) * (n > 1 ? i / (n - 1) : 0))];
}

function curves(view, yTitle) {
  const traces = view.layers.map((layer, i) => ({ type: "scatter", mode: "lines", x: view.steps, y: view.z[i], name: `layer ${layer}`, line: { color: layerColor(i, view.layers.length), width: 1.5 }, connectgaps: true }));
  return [traces, { xaxis: { title: { text: "step" } }, yaxis: { title: { text: yTitle } }, legend: { orientation: "v" } }];
}

function heatmap(view, label) {
  return [[{ type: "heatmap", x: view.steps, y: view.layers, z: view.z, colorscale: "Viridis", colorbar: { title: { text: label, side: "right" } }, hoverongaps: false }],
    { xaxis: { title: { text: "step" } }, yaxis: { title: { text: "layer" }, type: "category" } }];
}

function dynamicsCard(run) {
  const id = `dyn-${run.id}`;
  let card = $(id);
  if (!card) {
    card = el("div", { id, class: "dyn-run" }, [
      el("h3", { text: run.name }),
      el("div", { class: "dyn-grid" }, ["rank-curves", "rank-map", "entropy-curves", "entropy-map"].map((part) => el("div", { class: "chart", id: `${id}-${part}` }))),
    ]);
    $("dynamics").append(card);
  }
  return card;
}

function renderDynamics(run) {
  const view = run.dynamics;
  if (!view) return;
  const hasRank = view.rank.layers.length > 0, hasEntropy = view.entropy.layers.length > 0;
  if (!hasRank && !hasEntropy) {
    const old = $(`dyn-${run.id}`);
    if (old) old.remove();
    return;
  }
  dynamicsCard(run);
  const sel = state.selection;
  const rankLabel = `${sel.value === "per" ? "PER" : "erank"} (${sel.group}${sel.component ? " " + sel.component : ""})`;
  const entropyLabel = sel.attention_value === "entropy" ? "head entropy (nats)" : "head entropy / log(t+1)";
  const parts = [
    ["rank-curves", hasRank, () => curves(view.rank, rankLabel), rankLabel],
    ["rank-map", hasRank, () => heatmap(view.rank, sel.value), rankLabel + " per layer"],
    ["entropy-curves", hasEntropy, () => curves(view.entropy, entropyLabel), entropyLabel],
    ["entropy-map", hasEntropy, () => heatmap(view.entropy, "entropy"), entropyLabel + " per layer"],
  ];
  for (const [part, present, build, title] of parts) {
    const div = $(`dyn-${run.id}-${part}`);
    div.classList.toggle("hidden", !present);
    if (!present) continue;
    const [traces, extra] = build();
    plot(div, traces, layout(Object.assign({ title: { text: title, font: { size: 12 }, x: 0.01, xanchor: "left" }, uirevision: "dyn" }, extra)));
  }
  const components = new Set(runs().flatMap((r) => (r.dynamics ? r.dynamics.components : [])));
  const select = $("dyn-component");
  const wanted = ["", ...[...components].sort()];
  if ([...select.options].map((o) => o.value).join("|") !== wanted.join("|")) {
    select.replaceChildren(...wanted.map((c) => el("option", { value: c, text: c || "mean over components" })));
    select.value = wanted.includes(sel.component) ? sel.component : "";
  }
}

function renderAllDynamics() {
  for (const node of [...$("dynamics").children]) {
    if (!state.runs.has(Number(node.id.slice(4)))) node.remove();
  }
  for (const id of state.dirty.dynamics) {
    const run = state.runs.get(id);
    if (run) renderDynamics(run);
  }
  const cards = runs().map((run) => $(`dyn-${run.id}`)).filter(Boolean);
  if (cards.some((card, i) => $("dynamics").children[i] !== card)) $("dynamics").append(...cards); // run order
  $("no-dynamics").classList.toggle("hidden", runs().some((r) => r.dynamics && (r.dynamics.rank.layers.length || r.dynamics.entropy.layers.length)));
}

// ---- phases and configs -------------------------------------------------------------------

function table(columns, rows) {
  return el("table", {}, [
    el("thead", {}, [el("tr", {}, columns.map((c) => el("th", { text: c })))]),
    el("tbody", {}, rows.map((row) => el("tr", {}, row.map((v) => el("td", { class: typeof v === "number" ? "num" : "", text: v === null || v === undefined ? "–" : String(v) }))))),
  ]);
}

function renderInfo() {
  const phases = $("phases");
  phases.replaceChildren();
  let anyPhases = false;
  for (const run of runs()) {
    const info = run.info;
    if (!info || info.phases === null || info.phases === undefined) continue;
    anyPhases = true;
    const block = el("div", {}, [el("h3", { text: run.name })]);
    if (info.phase_table) block.append(table(info.phase_table.columns, info.phase_table.rows));
    if (info.component_phase_table) block.append(table(info.component_phase_table.columns, info.component_phase_table.rows));
    block.append(el("details", info.phase_table || info.component_phase_table ? {} : { open: "" }, [el("summary", { text: "phases.json" }), el("pre", { text: JSON.stringify(info.phases, null, 2) })]));
    phases.append(block);
  }
  $("no-phases").classList.toggle("hidden", anyPhases);

  const diff = state.configDifferences || { keys: [], values: {} };
  const names = Object.keys(diff.values);
  $("config-diff").replaceChildren(diff.keys.length
    ? table(["key", ...names], diff.keys.map((key, i) => [key, ...names.map((n) => { const v = diff.values[n][i]; return v !== null && typeof v === "object" ? JSON.stringify(v) : v; })]))
    : el("p", { class: "empty", text: names.length > 1 ? "The runs' configurations are identical." : "Differences between runs' configurations are listed here when several runs are watched." }));
  $("configs").replaceChildren(...runs().filter((run) => run.info && run.info.config).map((run) =>
    el("details", {}, [el("summary", { text: `${run.name}: config.yaml` }), el("pre", { text: JSON.stringify(run.info.config, null, 2) })])));
}

// ---- loop ---------------------------------------------------------------------------------

function render() {
  if (state.dirty.metrics) state.revision += 1;
  renderStatus();
  if (state.dirty.metrics) renderMetrics();
  if (state.dirty.dynamics.size) renderAllDynamics();
  if (state.dirty.info) renderInfo();
  if (state.dirty.verdict) renderVerdict();
  state.dirty = { metrics: false, dynamics: new Set(), info: false, verdict: false };
}

function query() {
  const q = { runs: {}, selection: state.selection };
  for (const run of state.runs.values()) q.runs[run.id] = { generation: run.generation, n: run.n, dynamics: run.dynamicsKey, info: run.infoRevision };
  return "/api/update?q=" + encodeURIComponent(JSON.stringify(q));
}

async function poll() {
  try {
    const response = await fetch(query(), { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    apply(await response.json());
    render();
    $("connection").textContent = "updated " + new Date().toLocaleTimeString();
    $("connection").classList.remove("lost");
  } catch (err) {
    $("connection").textContent = `no answer from the watch server (${err.message}); retrying`;
    $("connection").classList.add("lost");
  }
  setTimeout(poll, state.interval);
}

function onSelection() {
  state.selection = { group: $("dyn-group").value, component: $("dyn-component").value, value: $("dyn-value").value, attention_value: $("dyn-attention").value };
}

document.addEventListener("DOMContentLoaded", () => {
  $("x-axis").addEventListener("change", () => { state.dirty.metrics = true; render(); });
  $("log-y").addEventListener("change", () => { state.dirty.metrics = true; render(); });
  $("other-key").addEventListener("change", () => { state.dirty.metrics = true; render(); });
  $("dyn-group").addEventListener("change", () => { $("dyn-component").value = ""; onSelection(); });
  for (const id of ["dyn-component", "dyn-value", "dyn-attention"]) $(id).addEventListener("change", onSelection);
  poll();
});
