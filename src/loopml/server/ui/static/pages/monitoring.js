// One model version's monitoring: a heat map of data drift per feature over windows, accuracy from feedback
// labels (with its confidence band) and the label-free estimate, the abstention rate, and the alerts fired.
// Everything comes from one JSON answer (/ui/api/models/{name}/versions/{v}/monitoring), bounded by the server.

import { api, download } from "../lib/api.js";
import { el, clear, main, fmtNum, fmtTime, showError, setTitle } from "../lib/dom.js";
import { plotlyReady, plotlyText } from "../lib/charts.js";

const args = new URL(location.href).searchParams;
const name = args.get("name");
const version = args.get("version");
const root = clear(main());
const CONFIG = { displaylogo: false, responsive: true };
// white through yellow to red: 0 is no change, 1 the smallest effect that can flag a feature
const SCALE = [[0, "#f7f7f7"], [0.2, "#fee08b"], [0.5, "#fc8d59"], [1, "#b2182b"]];

function base() {
  return "/ui/api/models/" + encodeURIComponent(name) + "/versions/" + encodeURIComponent(version) + "/monitoring";
}

function pct(v) {
  return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%";
}

function num(v) {
  return v === null || v === undefined ? "–" : fmtNum(v);
}

function starts(windows) {
  return windows.map((w) => new Date(w.window_start * 1000));
}

function note(text, id) {
  return el("p", { class: "muted note", id }, text);
}

// The heat map as a scatter (the basic plotly bundle has no heatmap trace): x = window, y = feature.
// Each cell is a "line-ns" marker: a vertical stroke as long as a row is high and as wide as a column,
// so 200 windows still fill the plot, which square markers (as wide as high) could not.
const LEFT = 210, RIGHT = 90, ROW = 22, NAME_CHARS = 30;

function shortName(name) {
  return name.length > NAME_CHARS ? name.slice(0, NAME_CHARS - 1) + "…" : name;
}

async function drawHeatmap(div, drift) {
  const Plotly = await plotlyReady();
  const windows = drift.windows, features = drift.features;
  const nW = Math.max(windows.length, 1), nF = Math.max(features.length, 1);
  const top0 = 30, bottom = 50, height = Math.max(170, nF * ROW + 110);
  const pitch = (height - top0 - bottom) / nF; // pixels per row
  const length = (pitch - 2) / 1.4; // plotly draws a line-ns marker 1.4 x its size long
  const colW = Math.max(200, div.clientWidth - LEFT - RIGHT) / nW;
  const stroke = Math.max(1, colW - (colW > 4 ? 1 : 0)); // a pixel between columns when there is room
  const labels = windows.map((w) => fmtTime(w.window_start));
  const cells = { x: [], y: [], c: [], text: [], opacity: [] };
  const drifted = { x: [], y: [], text: [] };
  const thin = { x: [], y: [], text: [] };
  let top = 2;
  features.forEach((f, j) => {
    const fy = plotlyText(f.feature);
    windows.forEach((w, i) => {
      if (w.status !== "ok") {
        thin.x.push(i); thin.y.push(j);
        thin.text.push(fy + "<br>" + labels[i] + "<br>not enough data: " + plotlyText(w.reason || ""));
        return;
      }
      const ratio = f.ratio[i];
      if (ratio === null && f.effect[i] === null) return; // not in that window's report
      const why = (f.why[i] || []).join(", ");
      const text = fy + "<br>" + labels[i] + "<br>effect " + num(f.effect[i]) + " (" + plotlyText(f.effect_name || "") + ")" +
        "<br>effect ÷ minimum " + num(ratio) + "<br>p adjusted " + num(f.p_adjusted[i]) +
        (f.significant[i] ? "" : " (not significant)") + "<br>" + (f.drifted[i] ? "drifted: " + why : "not drifted");
      cells.x.push(i); cells.y.push(j); cells.c.push(ratio ?? 0); cells.text.push(text);
      // a test that was not significant: its effect may be noise (small windows), so the cell is faded
      cells.opacity.push(f.significant[i] || f.drifted[i] ? 1 : 0.3);
      if (ratio !== null) top = Math.max(top, Math.min(ratio, 10));
      if (f.drifted[i]) { drifted.x.push(i); drifted.y.push(j); drifted.text.push(text); }
    });
  });
  const cell = (color, extra) => ({ symbol: "line-ns-open", size: length, color, line: { width: stroke, color }, ...extra });
  // drifted: an x where a column is wide enough to show one, else a dark stroke across the middle of the cell
  const mark = colW >= 9 ?
    { symbol: "x-thin-open", size: Math.min(colW, pitch) * 0.6, color: "#111827", line: { width: 2, color: "#111827" } } :
    { symbol: "line-ns-open", size: length * 0.45, color: "#111827", line: { width: Math.max(1, stroke * 0.6), color: "#111827" } };
  const traces = [
    { type: "scatter", mode: "markers", name: "effect ÷ minimum", x: cells.x, y: cells.y, text: cells.text, hoverinfo: "text",
      showlegend: false, marker: { ...cell(cells.c, { opacity: cells.opacity }), cmin: 0, cmax: top, colorscale: SCALE,
        line: { width: stroke, color: cells.c, cmin: 0, cmax: top, colorscale: SCALE },
        colorbar: { title: { text: "effect ÷ min", side: "right" }, thickness: 12, len: 0.9, x: 1.01, xanchor: "left" } } },
    { type: "scatter", mode: "markers", name: "not enough data", x: thin.x, y: thin.y, text: thin.text, hoverinfo: "text",
      marker: cell("#d1d5db") },
    { type: "scatter", mode: "markers", name: "drifted", x: drifted.x, y: drifted.y, text: drifted.text, hoverinfo: "text", marker: mark },
  ];
  const step = Math.max(1, Math.ceil(nW / 8));
  const ticks = windows.map((_, i) => i).filter((i) => i % step === 0);
  const layout = {
    height,
    margin: { l: LEFT, r: RIGHT, t: top0, b: bottom },
    xaxis: { title: { text: "window start" }, tickvals: ticks, ticktext: ticks.map((i) => labels[i]), range: [-0.5, nW - 0.5],
      zeroline: false, showgrid: false, fixedrange: true },
    yaxis: { tickvals: features.map((_, j) => j), ticktext: features.map((f) => plotlyText(shortName(f.feature))),
      range: [nF - 0.5, -0.5], zeroline: false, showgrid: false, fixedrange: true },
    legend: { orientation: "h", x: 0, y: 1, yanchor: "bottom" },
    hovermode: "closest",
  };
  div.dataset.cells = String(cells.x.length);
  div.dataset.drifted = String(drifted.x.length);
  div.dataset.thin = String(new Set(thin.x).size);
  return Plotly.react(div, traces, layout, CONFIG);
}

async function drawAccuracy(div, perf) {
  const Plotly = await plotlyReady();
  const x = starts(perf);
  const low = perf.map((w) => w.accuracy_low), high = perf.map((w) => w.accuracy_high);
  const labelled = perf.map((w) => "labelled: " + (w.labelled ?? "–"));
  const traces = [
    { type: "scatter", mode: "lines", x, y: high, line: { width: 0 }, hoverinfo: "skip", showlegend: false, name: "upper" },
    { type: "scatter", mode: "lines", x, y: low, line: { width: 0 }, fill: "tonexty", fillcolor: "rgba(31,119,180,0.18)",
      hoverinfo: "skip", name: "confidence interval" },
    { type: "scatter", mode: "lines+markers", x, y: perf.map((w) => w.accuracy), name: "accuracy (feedback labels)",
      text: labelled, line: { color: "#1f77b4", width: 2 }, marker: { size: 5 } },
    { type: "scatter", mode: "lines+markers", x, y: perf.map((w) => w.estimated_accuracy), name: "estimated (label-free)",
      line: { color: "#ff7f0e", width: 2, dash: "dash" }, marker: { size: 5 } },
  ];
  const layout = { height: 320, margin: { l: 55, r: 15, t: 10, b: 80 }, legend: { orientation: "h", y: -0.3 },
    xaxis: { type: "date", title: { text: "window start" } }, yaxis: { title: { text: "accuracy" }, rangemode: "tozero" } };
  div.dataset.points = String(perf.filter((w) => w.accuracy !== null || w.estimated_accuracy !== null).length);
  return Plotly.react(div, traces, layout, CONFIG);
}

async function drawAbstention(div, windows, source) {
  const Plotly = await plotlyReady();
  const text = windows.map((w) => source === "predictions" ? w.abstained + " of " + w.rows + " rows" : "");
  const traces = [{ type: "scatter", mode: "lines+markers", x: starts(windows), y: windows.map((w) => w.abstention_rate),
    text, name: "abstention rate", line: { color: "#9467bd", width: 2 }, marker: { size: 5 } }];
  const layout = { height: 280, margin: { l: 55, r: 15, t: 10, b: 50 }, showlegend: false,
    xaxis: { type: "date", title: { text: "window start" } }, yaxis: { title: { text: "abstention rate" }, tickformat: ".3~%", rangemode: "tozero" } };
  div.dataset.points = String(windows.filter((w) => w.abstention_rate !== null).length);
  return Plotly.react(div, traces, layout, CONFIG);
}

function delivered(a) {
  if (a.delivered === null || a.delivered === undefined) return "no webhook";
  return a.delivered ? "sent" : "failed: " + (a.delivery_error || "");
}

function alertsTable(alerts) {
  const rows = alerts.rows;
  return el("section", { id: "alerts" }, el("h2", {}, "Alerts"),
    rows.length ? el("table", { class: "grid", id: "alerts-table" },
      el("thead", {}, el("tr", {}, ["fired", "rule", "metric", "condition", "value", "message", "webhook"].map((h) =>
        el("th", { class: h === "value" ? "num" : undefined }, h)))),
      el("tbody", {}, rows.map((a) => el("tr", { dataset: { alert: String(a.id) } },
        el("td", {}, fmtTime(a.fired_at)), el("td", { class: "rule" }, a.name), el("td", {}, a.metric),
        el("td", {}, a.op + " " + num(a.threshold)), el("td", { class: "num" }, num(a.value)),
        el("td", { class: "message" }, a.message), el("td", {}, delivered(a)))))) :
      note("No alert fired for this version. Add a rule: loopml monitor alert add " + name + "@ALIAS NAME --metric accuracy --below 0.9"),
    alerts.truncated ? note("The newest " + rows.length + " alerts are shown.", "alerts-truncated") : "");
}

function emptyState() {
  return el("section", { id: "monitoring-empty", class: "empty" },
    el("h2", {}, "No monitoring results yet"),
    el("p", {}, "This page draws what the monitor stores for this version, window by window: data drift, accuracy, " +
      "the abstention rate and the alerts. Nothing is stored yet. Serve the version with the monitor on, or run it beside the server:"),
    el("pre", {}, "loopml serve " + name + "@ALIAS --monitor\nloopml monitor watch " + name + "@ALIAS --every 5m"),
    el("p", { class: "muted" }, "Predictions are logged by the server; accuracy needs feedback labels " +
      "(POST /v1/feedback with the request id). See docs/monitoring.md."));
}

function driftSection(drift, limits) {
  const box = el("div", { class: "chart heatmap", id: "drift-heatmap" });
  const ok = drift.windows.filter((w) => w.status === "ok");
  const flagged = ok.filter((w) => w.drifted).length;
  const notes = [];
  if (drift.truncated) notes.push(note("The newest " + drift.windows.length + " windows are shown (limit " + limits.windows + ").", "drift-windows-truncated"));
  if (drift.features_truncated) {
    notes.push(note("The " + drift.features.length + " of " + drift.feature_count +
      " features that drifted most often, then had the largest effect, are shown.", "drift-features-truncated"));
  }
  const section = el("section", { id: "drift" }, el("h2", {}, "Data drift per feature"),
    el("p", { class: "muted" }, drift.windows.length + " windows, " + flagged + " drifted, " +
      (drift.windows.length - ok.length) + " with not enough data. Colour: the effect size divided by the smallest effect " +
      "that can flag a feature (1 = that minimum); faded: the test was not significant (at a few hundred rows, noise " +
      "alone reaches several times the minimum); × marks a drifted cell; grey: not enough data."),
    notes, drift.windows.length ? box : note("No drift window stored yet."));
  const last = [...drift.windows].reverse().find((w) => w.status === "ok");
  if (last) {
    const btn = el("button", { class: "link", id: "drift-report", type: "button" }, "the newest window's report (HTML)");
    btn.addEventListener("click", () => download(base() + "/drift/" + last.id, {}, "drift-" + name + "-" + version + "-" + last.id + ".html")
      .catch((err) => showError(section, err)));
    section.append(el("p", {}, "Download ", btn, " (" + fmtTime(last.window_start) + " – " + fmtTime(last.window_end) + ")."));
  }
  return { section, box: drift.windows.length ? box : null };
}

// The newest window's reasons for a missing accuracy or estimate, as the monitor stored them.
function whyMissing(perf) {
  const last = perf[perf.length - 1];
  if (!last) return "";
  const reasons = [["accuracy", "accuracy"], ["estimated_accuracy", "estimated accuracy"]]
    .filter(([k]) => last[k] === null && last.notes && last.notes[k]).map(([k, label]) => label + ": " + last.notes[k]);
  return reasons.length ? el("p", { class: "muted note", id: "accuracy-notes" }, "Newest window: " + reasons.join("; ")) : "";
}

async function render() {
  if (!name || !version) {
    showError(root, new Error("No version given: open /ui/monitoring?name=NAME&version=N"));
    return;
  }
  let data;
  try {
    data = await api(base());
  } catch (err) {
    showError(root, err);
    root.dataset.ready = "true";
    return;
  }
  setTitle(name + "/" + version + " monitoring");
  const modelHref = "/ui/model?name=" + encodeURIComponent(name) + "&version=" + encodeURIComponent(version);
  root.append(
    el("p", {}, el("a", { href: "/ui/models" }, "Models"), " / ", el("a", { href: modelHref, id: "model-link" }, name + "/" + version), " /"),
    el("h1", { id: "monitoring-title" }, "Monitoring: " + name + "/" + version),
    el("p", {}, el("a", { id: "labeling-link", href: "/ui/labeling?name=" + encodeURIComponent(name) + "&version=" + encodeURIComponent(version) },
      "Label the queued requests"), el("span", { class: "muted" }, " (labels give the accuracy below and the data to retrain on)")));
  if (data.empty) {
    root.append(emptyState());
    root.dataset.ready = "true";
    return;
  }
  const drift = driftSection(data.drift, data.limits);
  const accBox = el("div", { class: "chart", id: "accuracy-chart" });
  const absBox = el("div", { class: "chart", id: "abstention-chart" });
  const perf = data.performance.windows;
  const hasAcc = perf.some((w) => w.accuracy !== null || w.estimated_accuracy !== null);
  // the abstention rate of the prediction windows (with counts), else the one stored with performance
  const pred = data.predictions.windows;
  const absSource = pred.some((w) => w.abstention_rate !== null) ? "predictions" : "performance";
  const absWindows = absSource === "predictions" ? pred : perf;
  const hasAbs = absWindows.some((w) => w.abstention_rate !== null);
  root.append(drift.section,
    el("section", { id: "accuracy" }, el("h2", {}, "Accuracy"),
      hasAcc ? accBox : note("No accuracy yet: it needs feedback labels, or a calibration for the label-free estimate.", "accuracy-none"),
      whyMissing(perf),
      data.performance.truncated ? note("The newest " + perf.length + " windows are shown.", "performance-truncated") : ""),
    el("section", { id: "abstention" }, el("h2", {}, "Abstention rate"),
      hasAbs ? absBox : note("No abstention rate yet: the version has no OOD gate, or no prediction window is stored."),
      data.predictions.truncated ? note("The newest " + pred.length + " windows are shown.", "predictions-truncated") : ""),
    alertsTable(data.alerts));
  const draws = [];
  if (drift.box) draws.push(drawHeatmap(drift.box, data.drift));
  if (hasAcc) draws.push(drawAccuracy(accBox, perf));
  if (hasAbs) draws.push(drawAbstention(absBox, absWindows, absSource));
  try {
    await Promise.all(draws);
  } catch (err) {
    showError(root, err);
  }
  root.dataset.ready = "true";
}

render();
