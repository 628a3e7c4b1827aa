// Metric charts with plotly.js (loaded by the page shell: npm's basic bundle, else the plotly package's full one).
// Only `scatter` traces: the basic bundle has no WebGL `scattergl`, and a downsampled curve does not need it.
//
// A series is {name, steps, timestamps, values}; values hold null where the
// logged value was NaN or infinite (a gap). The server has already reduced long
// histories to the min and max of each bucket, so every chart draws a few
// thousand points at most.

import { el } from "./dom.js";

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

// Exponential moving average, debiased as TensorBoard's smoothing slider (0: none).
export function smooth(values, weight) {
  if (!weight) return values;
  const out = new Array(values.length);
  let last = 0, n = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || !Number.isFinite(v)) { out[i] = null; continue; }
    last = last * weight + (1 - weight) * v;
    n++;
    out[i] = last / (1 - Math.pow(weight, n));
  }
  return out;
}

function xs(series, mode) {
  return mode === "time" ? series.timestamps.map((t) => new Date(t * 1000)) : series.steps;
}

// plotly.js loads async (see pages.py): resolves once window.Plotly exists.
let plotlyPromise = null;
export function plotlyReady() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyPromise) {
    plotlyPromise = new Promise((resolve, reject) => {
      const script = document.getElementById("plotly-js");
      if (!script) { reject(new Error("this page does not load plotly.js")); return; }
      script.addEventListener("load", () => resolve(window.Plotly));
      script.addEventListener("error", () => reject(new Error("plotly.js did not load: is the plotly package installed?")));
      if (window.Plotly) resolve(window.Plotly); // loaded between the check and the listener
    });
  }
  return plotlyPromise;
}

// plotly.js reads a few HTML-like tags in labels and hover text (<b>, <br>, <a href>); escaped, a
// name such as "<img src=x>" shows as those characters. (It never builds HTML from them either way.)
export function plotlyText(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export async function drawChart(div, key, seriesList, opts) {
  const Plotly = await plotlyReady();
  const traces = [];
  seriesList.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const x = xs(s, opts.x);
    if (opts.smoothing > 0) {
      traces.push({ type: "scatter", mode: "lines", x, y: s.values, name: plotlyText(s.name) + " (raw)", showlegend: false,
        line: { color, width: 1 }, opacity: 0.25, hoverinfo: "skip" });
    }
    traces.push({ type: "scatter", mode: s.values.length === 1 ? "markers" : "lines", x, y: smooth(s.values, opts.smoothing),
      name: plotlyText(s.name), line: { color, width: 1.5 }, marker: { color } });
  });
  const layout = {
    title: { text: plotlyText(key), font: { size: 14 } },
    margin: { l: 55, r: 15, t: 35, b: seriesList.length > 1 ? 70 : 40 },
    height: seriesList.length > 1 ? 330 : 300,
    showlegend: seriesList.length > 1,
    legend: { orientation: "h", y: -0.3 },
    xaxis: { title: { text: opts.x === "time" ? "wall time" : "step" }, type: opts.x === "time" ? "date" : "linear" },
    yaxis: { type: opts.log ? "log" : "linear" },
    uirevision: key,
  };
  const config = { displaylogo: false, responsive: true };
  div.dataset.points = String(seriesList.reduce((n, s) => n + s.values.length, 0));
  return Plotly.react(div, traces, layout, config);
}

// The x / log / smoothing controls shared by the run and compare pages.
export function chartControls(opts, onChange) {
  const xSel = el("select", { id: "x-mode", "aria-label": "x axis" },
    el("option", { value: "step" }, "x: step"), el("option", { value: "time" }, "x: wall time"));
  xSel.value = opts.x;
  xSel.addEventListener("change", () => { opts.x = xSel.value; onChange(); });
  const log = el("input", { type: "checkbox", id: "log-y" });
  log.checked = opts.log;
  log.addEventListener("change", () => { opts.log = log.checked; onChange(); });
  const sm = el("input", { type: "range", id: "smoothing", min: "0", max: "0.99", step: "0.01", value: String(opts.smoothing) });
  const smValue = el("span", { class: "muted" }, String(opts.smoothing));
  sm.addEventListener("input", () => { opts.smoothing = Number(sm.value); smValue.textContent = sm.value; onChange(); });
  return el("div", { class: "controls" }, xSel, el("label", {}, log, " log scale"),
    el("label", { for: "smoothing" }, "smoothing "), sm, smValue);
}
