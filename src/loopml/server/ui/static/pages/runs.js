// Runs of an experiment: chosen param and metric columns, sort, filter, select, paginate.
//
// Everything heavy happens in SQL on the server (filter, order, offset/limit), so a
// page of 100 rows costs the same with 10,000 runs as with 100. The state lives in
// the address (?experiment=&filter=&order=&param=&metric=&offset=&limit=), so a view
// can be bookmarked and the back button works.

import { api } from "../lib/api.js";
import { el, clear, main, fmtNum, fmtTime, fmtDuration, statusBadge, runLink, showError, setTitle } from "../lib/dom.js";

const url = new URL(location.href);
const state = {
  experiment: url.searchParams.get("experiment"),
  filter: url.searchParams.get("filter") || "",
  order: url.searchParams.get("order") || "",
  params: url.searchParams.getAll("param"),
  metrics: url.searchParams.getAll("metric"),
  metricValue: url.searchParams.get("value") || "last",
  offset: Number(url.searchParams.get("offset") || 0),
  limit: Number(url.searchParams.get("limit") || 100),
  columnsChosen: url.searchParams.has("param") || url.searchParams.has("metric"),
};
const selected = new Set();
let keys = null;

function quoteKey(k) {
  return "`" + k.replace(/\\/g, "\\\\").replace(/`/g, "\\`") + "`";
}

function metricField(k) {
  const f = "metrics." + quoteKey(k);
  return state.metricValue === "last" ? f : `${state.metricValue}(${f})`;
}

function saveState() {
  const q = new URLSearchParams();
  if (state.experiment !== null) q.set("experiment", state.experiment);
  if (state.filter) q.set("filter", state.filter);
  if (state.order) q.set("order", state.order);
  state.params.forEach((p) => q.append("param", p));
  state.metrics.forEach((m) => q.append("metric", m));
  if (state.metricValue !== "last") q.set("value", state.metricValue);
  if (state.offset) q.set("offset", String(state.offset));
  if (state.limit !== 100) q.set("limit", String(state.limit));
  history.replaceState(null, "", location.pathname + "?" + q.toString());
}

const root = clear(main());
const title = el("h1", {}, "Runs");
const filterInput = el("input", { type: "search", id: "filter", size: "70", placeholder: "metrics.acc > 0.9 and params.lr = '0.01'", value: state.filter, spellcheck: "false" });
const filterError = el("div", { id: "filter-error" });
const filterForm = el("form", { class: "filter", id: "filter-form" }, el("label", { for: "filter" }, "Filter "), filterInput, el("button", { type: "submit" }, "Apply"));
const columns = el("details", { class: "columns" }, el("summary", {}, "Columns"));
const valueSel = el("select", { id: "metric-value", "aria-label": "metric value" },
  el("option", { value: "last" }, "metrics: last value"), el("option", { value: "min" }, "metrics: min"), el("option", { value: "max" }, "metrics: max"));
valueSel.value = state.metricValue;
const compareBtn = el("button", { type: "button", id: "compare", disabled: true }, "Compare selected");
const pager = el("span", { class: "pager" });
const table = el("table", { class: "grid runs", id: "runs-table" });
root.append(el("p", {}, el("a", { href: "/ui/" }, "Experiments"), " / "), title, filterForm, filterError,
  el("div", { class: "toolbar" }, columns, valueSel, compareBtn, pager), table);

filterForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.filter = filterInput.value.trim();
  state.offset = 0;
  load();
});
valueSel.addEventListener("change", () => {
  if (state.order.startsWith("min(") || state.order.startsWith("max(") || state.order.startsWith("metrics.")) state.order = "";
  state.metricValue = valueSel.value;
  load();
});
compareBtn.addEventListener("click", () => {
  const q = new URLSearchParams();
  selected.forEach((id) => q.append("run", id));
  location.href = "/ui/compare?" + q.toString();
});

function updateCompare() {
  compareBtn.disabled = selected.size < 2;
  compareBtn.textContent = `Compare selected (${selected.size})`;
}

function renderColumns() {
  clear(columns).append(el("summary", {}, "Columns"));
  const group = (label, all, chosen) => el("fieldset", {}, el("legend", {}, label),
    all.map((k) => {
      const box = el("input", { type: "checkbox", dataset: { key: k } });
      box.checked = chosen.includes(k);
      box.addEventListener("change", () => {
        const i = chosen.indexOf(k);
        if (box.checked && i < 0) chosen.push(k);
        if (!box.checked && i >= 0) chosen.splice(i, 1);
        state.columnsChosen = true;
        load();
      });
      return el("label", { class: "col-choice" }, box, " ", k);
    }));
  columns.append(group("params", keys.params, state.params), group("metrics", keys.metrics, state.metrics));
}

function header(label, field, cls) {
  const [curField, curDir] = splitOrder(state.order);
  const active = field && curField === field;
  const arrow = active ? (curDir === "DESC" ? " ▼" : " ▲") : "";
  const th = el("th", { class: (cls || "") + (field ? " sortable" : ""), dataset: field ? { field } : undefined }, label + arrow);
  if (field) {
    th.addEventListener("click", () => {
      state.order = field + (active && curDir === "ASC" ? " DESC" : active ? "" : " ASC");
      if (active && curDir === "DESC") state.order = "";
      state.offset = 0;
      load();
    });
  }
  return th;
}

function splitOrder(order) {
  const m = /^(.*) (ASC|DESC)$/.exec(order);
  return m ? [m[1], m[2]] : [order, "ASC"];
}

function renderTable(data) {
  const allBox = el("input", { type: "checkbox", "aria-label": "select all" });
  allBox.addEventListener("change", () => {
    table.querySelectorAll("tbody input[type=checkbox]").forEach((b) => {
      b.checked = allBox.checked;
      b.dispatchEvent(new Event("change"));
    });
  });
  const head = el("tr", {}, el("th", {}, allBox), header("name", "name"), header("status", "status"),
    header("started", "start_time"), header("ended", "end_time"), el("th", { class: "num" }, "duration"),
    state.params.map((p) => header(p, "params." + quoteKey(p), "param")),
    state.metrics.map((m) => header(state.metricValue === "last" ? m : `${m} (${state.metricValue})`, metricField(m), "num metric")));
  const rows = data.runs.map((r) => {
    const box = el("input", { type: "checkbox", class: "select-run", "aria-label": "select " + r.name, dataset: { id: r.id } });
    box.checked = selected.has(r.id);
    box.addEventListener("change", () => {
      if (box.checked) selected.add(r.id); else selected.delete(r.id);
      updateCompare();
    });
    return el("tr", { dataset: { id: r.id } }, el("td", {}, box), el("td", { class: "name" }, runLink(r.id, r.name)),
      el("td", {}, statusBadge(r.status)), el("td", {}, fmtTime(r.start_time)), el("td", {}, fmtTime(r.end_time)),
      el("td", { class: "num" }, fmtDuration(r.duration)),
      state.params.map((p) => el("td", { class: "param" }, r.params[p] ?? "")),
      state.metrics.map((m) => {
        const v = r.metrics[m];
        return el("td", { class: "num metric", title: v ? `last ${fmtNum(v.value)} at step ${v.step}; min ${fmtNum(v.min)}; max ${fmtNum(v.max)}; ${v.count} points` : "" },
          v ? fmtNum(state.metricValue === "last" ? v.value : v[state.metricValue]) : "");
      }));
  });
  clear(table).append(el("thead", {}, head), el("tbody", {}, rows));
}

function renderPager(data) {
  const first = data.total ? data.offset + 1 : 0;
  const last = data.offset + data.runs.length;
  const prev = el("button", { type: "button", id: "prev", disabled: data.offset === 0 }, "‹ Prev");
  const next = el("button", { type: "button", id: "next", disabled: last >= data.total }, "Next ›");
  prev.addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); load(); });
  next.addEventListener("click", () => { state.offset += state.limit; load(); });
  const size = el("select", { id: "page-size", "aria-label": "runs per page" },
    [25, 50, 100, 250, 1000].map((n) => el("option", { value: String(n) }, n + " per page")));
  size.value = String(state.limit);
  size.addEventListener("change", () => { state.limit = Number(size.value); state.offset = 0; load(); });
  clear(pager).append(prev, el("span", { id: "range" }, ` ${first}–${last} of ${data.total} `), next, " ", size);
}

let generation = 0;

async function load() {
  const mine = ++generation;
  saveState();
  delete root.dataset.ready;
  clear(filterError);
  let data;
  try {
    data = await api("/ui/api/runs", {
      experiment: state.experiment ?? undefined, filter: state.filter, order_by: state.order || undefined,
      offset: state.offset, limit: state.limit, keys: keys ? undefined : "true",
      param: state.columnsChosen ? state.params : undefined, metric: state.columnsChosen ? state.metrics : undefined,
    });
  } catch (err) {
    if (mine !== generation) return;
    showError(filterError, err);
    root.dataset.ready = "error";
    return;
  }
  if (mine !== generation) return; // a newer request is on its way
  if (data.keys) {
    keys = data.keys;
    if (!state.columnsChosen) { // the server chose the first few of each
      state.params.push(...data.columns.params);
      state.metrics.push(...data.columns.metrics);
      state.columnsChosen = true;
      saveState();
    }
    renderColumns();
  }
  renderTable(data);
  renderPager(data);
  updateCompare();
  root.dataset.ready = "true";
}

setTitle(state.experiment ? "Runs of " + state.experiment : "Runs");
title.textContent = state.experiment !== null ? state.experiment : "All runs";
load();
