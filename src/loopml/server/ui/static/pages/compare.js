// Compare: the selected runs' curves overlaid per metric, and the params that differ.

import { api } from "../lib/api.js";
import { el, clear, main, fmtNum, fmtTime, statusBadge, runLink, showError, setTitle } from "../lib/dom.js";
import { drawChart, chartControls } from "../lib/charts.js";

const ids = new URL(location.href).searchParams.getAll("run");
const opts = { x: "step", log: false, smoothing: 0 };
const root = clear(main());
const perMetric = new Map(); // key -> {div, series: [...]}

function redrawAll() {
  for (const [key, m] of perMetric) drawChart(m.div, key, m.series, opts);
}

async function render() {
  setTitle("Compare");
  root.append(el("h1", {}, "Compare runs"));
  let data;
  try {
    data = await api("/ui/api/compare", { run: ids });
  } catch (err) {
    showError(root, err);
    return;
  }
  const runs = data.runs;
  const head = el("tr", {}, el("th", {}, ""), runs.map((r) => el("th", {}, runLink(r.id, r.name))));
  const row = (label, cells) => el("tr", {}, el("th", {}, label), cells.map((c) => el("td", {}, c)));
  const diffKeys = Object.keys(data.params_differ).sort();
  const sameKeys = Object.keys(data.params_same).sort();
  root.append(
    el("table", { class: "grid compare-runs" }, el("thead", {}, head), el("tbody", {},
      row("experiment", runs.map((r) => r.experiment)),
      row("status", runs.map((r) => statusBadge(r.status))),
      row("started", runs.map((r) => fmtTime(r.start_time))))),
    el("h2", {}, "Params that differ"),
    diffKeys.length ? el("table", { class: "grid params-differ", id: "params-differ" }, el("thead", {}, head.cloneNode(true)),
      el("tbody", {}, diffKeys.map((k) => row(k, data.params_differ[k].map((v) => v === null ? el("span", { class: "muted" }, "—") : v)))))
      : el("p", { class: "muted" }, "none: every param is the same"),
    sameKeys.length ? el("details", {}, el("summary", {}, `${sameKeys.length} params the same`),
      el("table", { class: "grid kv" }, el("tbody", {}, sameKeys.map((k) => el("tr", {}, el("th", {}, k), el("td", {}, data.params_same[k])))))) : "",
    el("h2", {}, "Metrics"),
    chartControls(opts, redrawAll),
  );
  const charts = el("div", { class: "charts", id: "charts" });
  root.append(charts);
  try {
    await Promise.all(data.metric_keys.map(async (key) => {
      const div = el("div", { class: "chart", dataset: { metric: key } });
      charts.append(el("div", { class: "chart-box" }, div));
      const series = await Promise.all(runs.filter((r) => key in r.metrics).map(async (r) => {
        const d = await api("/ui/api/runs/" + encodeURIComponent(r.id) + "/chart", { key });
        return { name: r.name, ...d };
      }));
      perMetric.set(key, { div, series });
      await drawChart(div, key, series, opts);
    }));
  } catch (err) {
    showError(charts, err);
  }
  root.dataset.ready = "true";
}

render();
