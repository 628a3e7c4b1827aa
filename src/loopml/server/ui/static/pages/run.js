// One run: status, duration, params, tags, git, command, parent and children,
// artifacts (download, preview), and one chart per metric, live while RUNNING. A federation's run
// (loopml.federated) also shows its privacy, its federation and its partition's picture.

import { api, apiBlob, download } from "../lib/api.js";
import { el, clear, main, fmtNum, fmtTime, fmtDuration, statusBadge, runLink, showError, setTitle } from "../lib/dom.js";
import { drawChart, chartControls } from "../lib/charts.js";
import { runFacts, federatedSection } from "../lib/federated.js";

const POLL_MS = 1500;
const IMAGE = /\.(png|jpe?g|gif|webp|bmp|svg)$/i;
const TEXT = /\.(txt|log|json|ya?ml|csv|tsv|md|py|cfg|ini|toml|out|err)$/i;
const PREVIEW_BYTES = 200000;
const PARTITION_PNG = "federated/partition.png"; // the clients x classes picture loopml.federated.fit logs

const runId = new URL(location.href).searchParams.get("id");
const opts = { x: "step", log: false, smoothing: 0 };
const series = new Map(); // metric key -> {name, steps, timestamps, values, total}
const chartDivs = new Map();
const root = clear(main());
let charts;

function kv(title, obj, id) {
  const keys = Object.keys(obj).sort();
  return el("section", { id }, el("h2", {}, title),
    keys.length ? el("table", { class: "grid kv" }, el("tbody", {},
      keys.map((k) => el("tr", {}, el("th", {}, k), el("td", {}, obj[k]))))) : el("p", { class: "muted" }, "none"));
}

function overview(run) {
  const rows = [
    ["experiment", el("a", { href: "/ui/runs?experiment=" + encodeURIComponent(run.experiment) }, run.experiment)],
    ["status", el("span", { id: "run-status" }, statusBadge(run.status))],
    ["run id", el("code", {}, run.id)],
    ["started", fmtTime(run.start_time)],
    ["ended", fmtTime(run.end_time)],
    ["duration", el("span", { id: "run-duration" }, fmtDuration(run.duration))],
    ["git commit", run.git_commit ? el("code", {}, run.git_commit + (run.git_dirty ? " (dirty)" : "")) : ""],
    ["command", run.command ? el("code", {}, run.command) : ""],
    ["host / user", [run.host, run.user].filter(Boolean).join(" / ")],
    ["parent", run.parent ? runLink(run.parent.id, run.parent.name || run.parent.id) : ""],
    ["children", run.children.length ? el("ul", { class: "children" }, run.children.map((c) => el("li", {}, runLink(c.id, c.name), " ", statusBadge(c.status)))) : ""],
  ];
  return el("table", { class: "grid kv overview" }, el("tbody", {}, rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v)))));
}

function artifacts(run) {
  const preview = el("div", { class: "preview", id: "artifact-preview" });
  const show = async (a) => {
    clear(preview).append(el("h3", {}, a.path));
    try {
      const blob = await apiBlob("/api/v1/runs/" + encodeURIComponent(run.id) + "/artifacts/" + a.path.split("/").map(encodeURIComponent).join("/"));
      if (IMAGE.test(a.path)) {
        const typed = new Blob([blob], { type: /\.svg$/i.test(a.path) ? "image/svg+xml" : "image/" + a.path.split(".").pop().toLowerCase() });
        preview.append(el("img", { src: URL.createObjectURL(typed), alt: a.path, class: "artifact-image" }));
      } else {
        const text = await blob.slice(0, PREVIEW_BYTES).text();
        preview.append(el("pre", { class: "artifact-text" }, text + (blob.size > PREVIEW_BYTES ? "\n…" : "")));
      }
    } catch (err) {
      showError(preview, err);
    }
  };
  const rows = run.artifacts.map((a) => {
    const dl = el("button", { type: "button", class: "link" }, "download");
    dl.addEventListener("click", () => download("/api/v1/runs/" + encodeURIComponent(run.id) + "/artifacts/" + a.path.split("/").map(encodeURIComponent).join("/"), null, a.path.split("/").pop()));
    const pv = IMAGE.test(a.path) || TEXT.test(a.path) ? el("button", { type: "button", class: "link preview-btn" }, "preview") : "";
    if (pv) pv.addEventListener("click", () => show(a));
    return el("tr", {}, el("td", {}, a.path), el("td", { class: "num" }, a.size), el("td", {}, dl, " ", pv));
  });
  return el("section", { id: "artifacts" }, el("h2", {}, "Artifacts"),
    run.artifacts.length ? el("table", { class: "grid" }, el("thead", {}, el("tr", {}, el("th", {}, "path"), el("th", { class: "num" }, "bytes"), el("th", {}, ""))), el("tbody", {}, rows)) : el("p", { class: "muted" }, "none"),
    preview);
}

function artifactUrl(run, path) {
  return "/api/v1/runs/" + encodeURIComponent(run.id) + "/artifacts/" + path.split("/").map(encodeURIComponent).join("/");
}

// The federation's privacy and training facts, and the partition picture fetched (with the token) as a blob.
function federated(run) {
  const facts = runFacts(run);
  if (!facts) return "";
  const picture = el("div", { class: "preview", id: "partition-picture" });
  if (run.artifacts.some((a) => a.path === PARTITION_PNG)) {
    picture.append(el("h3", {}, "Partition: rows of each class per client"));
    apiBlob(artifactUrl(run, PARTITION_PNG)).then((blob) => {
      const img = el("img", { src: URL.createObjectURL(new Blob([blob], { type: "image/png" })), alt: "the partition: rows of each class per client" });
      img.addEventListener("load", () => { picture.dataset.loaded = "true"; });
      picture.append(img);
    }).catch((err) => showError(picture, err));
  }
  return federatedSection(facts, picture);
}

function chartBox(key) {
  const div = el("div", { class: "chart", dataset: { metric: key } });
  const csv = el("button", { type: "button", class: "link" }, "CSV");
  const json = el("button", { type: "button", class: "link" }, "JSON");
  const path = "/ui/api/runs/" + encodeURIComponent(runId) + "/history";
  csv.addEventListener("click", () => download(path, { key, format: "csv" }, key + ".csv"));
  json.addEventListener("click", () => download(path, { key, format: "json" }, key + ".json"));
  const note = el("span", { class: "muted note" });
  chartDivs.set(key, { div, note });
  return el("div", { class: "chart-box" }, div, el("div", { class: "chart-foot" }, note, " exact points: ", csv, " ", json));
}

async function fetchSeries(key, offset) {
  return api("/ui/api/runs/" + encodeURIComponent(runId) + "/chart", { key, offset: offset || undefined });
}

function redraw(key) {
  const s = series.get(key);
  const { div, note } = chartDivs.get(key);
  note.textContent = s.downsampled ? `${s.total} points, ${s.values.length} drawn (min/max per bucket);` : `${s.total} points;`;
  return drawChart(div, key, [s], opts);
}

async function loadCharts(keys) {
  await Promise.all(keys.map(async (key) => {
    if (!chartDivs.has(key)) charts.append(chartBox(key));
    const d = await fetchSeries(key);
    series.set(key, { name: key, ...d });
    await redraw(key);
  }));
}

async function poll(run) {
  // While the run is RUNNING: new points are fetched from where the chart ends (offset = total).
  while (run.status === "RUNNING") {
    await new Promise((r) => setTimeout(r, POLL_MS));
    try {
      run = await api("/ui/api/runs/" + encodeURIComponent(runId));
    } catch (_) { continue; }
    clear(document.getElementById("run-status")).append(statusBadge(run.status));
    document.getElementById("run-duration").textContent = fmtDuration(run.duration);
    const keys = Object.keys(run.metrics).sort();
    const fresh = keys.filter((k) => !series.has(k));
    if (fresh.length) await loadCharts(fresh);
    await Promise.all(keys.filter((k) => !fresh.includes(k)).map(async (key) => {
      const s = series.get(key);
      if (run.metrics[key].count <= s.total) return;
      const d = await fetchSeries(key, s.total);
      s.steps.push(...d.steps);
      s.timestamps.push(...d.timestamps);
      s.values.push(...d.values);
      s.total = d.total;
      s.downsampled = s.downsampled || d.downsampled;
      await redraw(key);
    }));
    main().dataset.points = String([...series.values()].reduce((n, s) => n + s.total, 0));
  }
  main().dataset.live = "done";
}

async function render() {
  if (!runId) {
    showError(root, new Error("No run given: open /ui/run?id=RUN_ID"));
    return;
  }
  let run;
  try {
    run = await api("/ui/api/runs/" + encodeURIComponent(runId));
  } catch (err) {
    showError(root, err);
    return;
  }
  setTitle(run.name);
  const keys = Object.keys(run.metrics).sort();
  charts = el("div", { class: "charts", id: "charts" });
  root.append(
    el("p", {}, el("a", { href: "/ui/" }, "Experiments"), " / ",
      el("a", { href: "/ui/runs?experiment=" + encodeURIComponent(run.experiment) }, run.experiment), " /"),
    el("h1", { id: "run-name" }, run.name),
    overview(run),
    federated(run),
    el("section", {}, el("h2", {}, "Metrics"),
      chartControls(opts, () => { for (const k of series.keys()) redraw(k); }),
      keys.length ? "" : el("p", { class: "muted" }, "no metrics yet"), charts),
    kv("Params", run.params, "params"),
    kv("Tags", run.tags, "tags"),
    artifacts(run),
  );
  try {
    await loadCharts(keys);
  } catch (err) {
    showError(charts, err);
  }
  root.dataset.ready = "true";
  if (run.status === "RUNNING") poll(run);
}

render();
