// The prediction log: a model's newest logged requests (time, request id, version, status, prediction, confidence,
// OOD score, label), a page at a time; a click on a request shows its input and why the model answered it (the
// explanation of the version that answered it, GET /api/v1/predictions/{id}/explanation), with the method chosen.
//
// ?name=NAME (&version=N: one version's requests; &request=ID: open that request at once).

import { api, ApiError } from "../lib/api.js";
import { el, clear, main, fmtNum, fmtTime, showError, setTitle } from "../lib/dom.js";
import { explainRequest, explanationView, heatmapCanvas, layoutOf, methodSelect } from "../lib/explain.js";

const args = new URL(location.href).searchParams;
const name = args.get("name");
const versionArg = args.get("version");
const root = clear(main());
const PAGE = 50;
const VIEW = 256; // pixels of an image

const state = { meta: null, next: null, rows: [], selected: null, method: "integrated_gradients", row: 0, seq: 0 };

const tbody = el("tbody", {});
const more = el("button", { type: "button", id: "older" }, "Older requests");
const detail = el("section", { id: "request", class: "request-panel" });
const errors = el("div", { id: "errors" });

function pct(p) {
  return typeof p === "number" ? (100 * p).toFixed(1) + "%" : "";
}

function text(v) {
  if (v === null || v === undefined) return "";
  if (Array.isArray(v)) return v.map((x) => (x === null || x === undefined ? "–" : String(x))).join(", ");
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}

function confidence(c) {
  // an abstained row has no prediction, so no confidence: a dash, as in the prediction column
  return Array.isArray(c) ? c.map((p) => (typeof p === "number" ? pct(p) : "–")).join(", ") : pct(c);
}

function rowOf(r) {
  const tr = el("tr", { dataset: { requestId: r.request_id, status: r.status, hasInputs: String(r.has_inputs) } },
    el("td", {}, fmtTime(r.created_at)),
    el("td", {}, el("code", {}, r.request_id)),
    el("td", { class: "num" }, String(r.version)),
    el("td", {}, el("span", { class: "status status-" + (r.status === "ok" ? "finished" : "killed") }, r.status)),
    el("td", { class: "prediction" }, text(r.prediction) + (r.rows > 1 ? " (" + r.rows + " rows)" : "")),
    el("td", { class: "num" }, confidence(r.confidence)),
    el("td", { class: "num" }, r.ood_score === null || r.ood_score === undefined ? "" : fmtNum(r.ood_score)),
    el("td", { class: "label" }, text(r.label)),
    el("td", { class: "muted" }, r.has_inputs ? "" : "inputs not logged"));
  tr.addEventListener("click", () => open(r));
  return tr;
}

async function load() {
  const body = await api("/ui/api/predictions/" + encodeURIComponent(name),
    { version: versionArg, before: state.next, limit: PAGE });
  state.meta = state.meta || body;
  state.rows.push(...body.requests);
  tbody.append(...body.requests.map(rowOf));
  state.next = body.next;
  more.hidden = !body.next;
  root.dataset.count = String(state.rows.length);
  return body;
}

// The input of a row: the image in grey (no attributions) or a table of the features' values.
function inputView(input, answer) {
  const L = layoutOf(answer.attributions);
  if (L.image) {
    const zeros = JSON.parse(JSON.stringify(answer.attributions, (_, v) => (typeof v === "number" ? 0 : v)));
    const canvas = heatmapCanvas(input, zeros, VIEW);
    canvas.classList.replace("heatmap", "input-image");
    return canvas;
  }
  const values = Array.isArray(input) ? input.flat(Infinity) : [];
  const names = (state.meta && state.meta.feature_names) || values.map((_, i) => "x" + i);
  return el("table", { class: "grid kv features", id: "input-table" }, el("tbody", {},
    values.map((v, i) => el("tr", {}, el("th", {}, String(names[i] ?? "x" + i)), el("td", { class: "num" }, fmtNum(v))))));
}

async function explain(r) {
  const seq = ++state.seq;
  const out = el("div", { id: "explanation-body" }, el("p", { class: "muted" }, "Explaining…"));
  const rowSelect = r.rows > 1 ? el("select", { id: "row" }, Array.from({ length: r.rows }, (_, i) =>
    el("option", { value: String(i), selected: i === state.row }, "row " + i))) : null;
  if (rowSelect) rowSelect.addEventListener("change", () => { state.row = Number(rowSelect.value); explain(r); });
  clear(detail).append(
    el("h2", {}, "Request ", el("code", {}, r.request_id)),
    el("p", { class: "muted" }, fmtTime(r.created_at) + " · version " + r.version + " · " + r.status +
      (r.label !== null && r.label !== undefined ? " · label " + text(r.label) : "")),
    el("div", { class: "explain-controls" }, methodSelect(state.method, (m) => { state.method = m; explain(r); }),
      rowSelect ? el("label", {}, "row ", rowSelect) : ""),
    out);
  detail.dataset.state = "loading";
  delete detail.dataset.row;
  try {
    const answer = await explainRequest(r.request_id, state.row, state.method);
    if (seq !== state.seq) return;
    clear(out).append(el("div", { class: "request-detail" },
      el("div", {}, el("h3", {}, "Input"), inputView(answer.input, answer)),
      el("div", {}, el("h3", {}, "Why: " + (answer.prediction !== undefined ? "the model answered " + text(answer.prediction) : "")),
        explanationView(answer, answer.input, VIEW))));
    detail.dataset.row = String(state.row);
    detail.dataset.state = "explained";
  } catch (err) {
    if (seq !== state.seq) return;
    clear(out);
    if (err instanceof ApiError && err.code === "no_inputs") {
      out.append(el("p", { class: "muted", id: "no-inputs" }, "This request's inputs were not logged, so it cannot be explained " +
        "(loopml serve --log-inputs 1.0 logs them all)."));
      detail.dataset.state = "no-inputs";
    } else {
      showError(out, err);
      detail.dataset.state = "error";
    }
  }
}

function open(r) {
  state.selected = r.request_id;
  state.row = 0;
  for (const tr of tbody.children) tr.classList.toggle("selected", tr.dataset.requestId === r.request_id);
  explain(r);
  detail.scrollIntoView({ block: "start" }); // the panel is below the page of requests
}

async function chooseModel() {
  setTitle("Predictions");
  root.append(el("h1", {}, "Predictions"), el("p", { class: "muted" }, "Choose a model to see the requests its servers logged."));
  const body = await api("/ui/api/models");
  root.append(body.models.length ? el("ul", { id: "prediction-models" }, body.models.map((m) =>
    el("li", {}, el("a", { href: "/ui/predictions?name=" + encodeURIComponent(m.name) }, m.name)))) :
    el("p", { class: "muted" }, "No model is registered yet."));
}

async function start() {
  try {
    if (!name) {
      await chooseModel();
      return;
    }
    setTitle("Predictions of " + name);
    root.append(el("p", {}, el("a", { href: "/ui/models" }, "Models"), " / ",
      el("a", { href: "/ui/model?name=" + encodeURIComponent(name) + (versionArg ? "&version=" + encodeURIComponent(versionArg) : "") }, name), " /"),
      el("h1", { id: "predictions-title" }, "Predictions: " + name + (versionArg ? "/" + versionArg : "")), errors);
    await load();
    const m = state.meta;
    const filter = el("select", { id: "version-filter" }, el("option", { value: "" }, "all versions"),
      m.versions.map((v) => el("option", { value: String(v), selected: String(v) === versionArg }, "version " + v)));
    filter.addEventListener("change", () => {
      const q = new URLSearchParams({ name });
      if (filter.value) q.set("version", filter.value);
      location.href = "/ui/predictions?" + q.toString();
    });
    more.addEventListener("click", () => load().catch((err) => showError(errors, err)));
    const heads = ["time", "request", "version", "status", "prediction", "confidence", "OOD score", "label", ""];
    root.append(el("div", { class: "toolbar" }, el("label", {}, "Show ", filter),
      el("span", { class: "muted" }, "Newest first; click a request to see why the model answered it.")),
      state.rows.length ? el("table", { class: "grid predictions", id: "predictions-table" },
        el("thead", {}, el("tr", {}, heads.map((h) => el("th", {}, h)))), tbody) :
        el("p", { class: "muted", id: "no-requests" }, "No request of " + name + " was logged yet (loopml serve logs each request it answers)."),
      more, detail);
    const wanted = args.get("request");
    const first = wanted && state.rows.find((r) => r.request_id === wanted);
    if (first) open(first);
  } catch (err) {
    showError(root, err);
  } finally {
    root.dataset.ready = "true";
  }
}

start();
