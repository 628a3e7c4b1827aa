// One model: its versions (kind, formats and file sizes, accuracy, size, latency, aliases, run),
// the selected version (signature, files, metrics, measurements, lineage, tags, and for a challenger the
// comparison with its champion that `loopml compare` stored with it), the explanation of its stored input example
// (a row of it, by a method chosen: lib/explain.js draws it) and the alias history. A version trained by a
// federation (lineage "federated") or with privacy.* tags shows its privacy and federation (lib/federated.js).

import { api } from "../lib/api.js";
import { el, clear, main, fmtNum, fmtTime, runLink, showError, setTitle } from "../lib/dom.js";
import { explanationView, methodSelect } from "../lib/explain.js";
import { versionFacts, federatedSection } from "../lib/federated.js";

const args = new URL(location.href).searchParams;
const name = args.get("name");
const root = clear(main());

// as `loopml models show` prints sizes: kB below 100 kB, MB above
function size(bytes) {
  if (bytes === null || bytes === undefined) return "";
  return bytes >= 1e5 ? (bytes / 1e6).toFixed(3) + " MB" : (bytes / 1e3).toFixed(1) + " kB";
}

function ms(v) {
  return v === null || v === undefined ? "" : v.toFixed(3);
}

function versionLink(version, text) {
  return el("a", { href: "/ui/model?name=" + encodeURIComponent(name) + "&version=" + encodeURIComponent(version) }, text ?? String(version));
}

function text(v) {
  if (v === null || v === undefined) return "";
  return typeof v === "object" ? JSON.stringify(v) : typeof v === "number" ? fmtNum(v) : String(v);
}

function kv(title, obj, id, render) {
  const keys = Object.keys(obj || {}).sort();
  return el("section", { id }, el("h2", {}, title),
    keys.length ? el("table", { class: "grid kv" }, el("tbody", {},
      keys.map((k) => el("tr", {}, el("th", {}, k), el("td", {}, render ? render(k, obj[k]) : text(obj[k])))))) :
      el("p", { class: "muted" }, "none"));
}

function versionsTable(rows, selected) {
  const body = rows.map((v) => {
    const kind = (v.depth ? "\u00a0\u00a0".repeat(v.depth) + "└ " : "") + v.kind;
    return el("tr", { dataset: { version: String(v.version) }, class: v.version === selected ? "selected" : undefined,
      style: v.version === selected ? "background: #eef2ff" : undefined },
      el("td", { class: "num" }, versionLink(v.version)),
      el("td", { class: "kind" }, kind),
      el("td", { class: "formats" }, v.formats.map((f) => f.format + " " + size(f.size)).join(", ")),
      el("td", { class: "num" }, v.accuracy === null || v.accuracy === undefined ? "" : v.accuracy.toFixed(4)),
      el("td", { class: "num" }, size(v.size_bytes)),
      el("td", { class: "num" }, ms(v.latency_ms["1"])),
      el("td", { class: "num" }, ms(v.latency_ms["64"])),
      el("td", { class: "aliases" }, v.aliases.map((a) => "@" + a).join(", ")),
      el("td", {}, v.run_id ? runLink(v.run_id, v.run_id.slice(0, 8)) : ""),
      el("td", {}, fmtTime(v.created_at)));
  });
  const heads = [["version", true], ["kind"], ["formats"], ["accuracy", true], ["size", true], ["batch-1 ms", true],
    ["batch-64 ms", true], ["aliases"], ["run"], ["created"]];
  return el("table", { class: "grid versions", id: "versions-table" },
    el("thead", {}, el("tr", {}, heads.map(([h, num]) => el("th", { class: num ? "num" : undefined }, h)))),
    el("tbody", {}, body));
}

function tensors(title, list) {
  return [el("h3", {}, title), (list || []).length ? el("table", { class: "grid" },
    el("thead", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "dtype"), el("th", {}, "shape"))),
    el("tbody", {}, list.map((t) => el("tr", {}, el("td", {}, t.name ?? ""), el("td", {}, t.dtype ?? ""),
      el("td", {}, "[" + (t.shape || []).map((d) => (d === null ? "batch" : String(d))).join(", ") + "]"))))) :
    el("p", { class: "muted" }, "none")];
}

function signature(sig) {
  const classes = sig.class_names;
  return el("section", { id: "signature" }, el("h2", {}, "Signature"),
    tensors("inputs", sig.inputs), tensors("outputs", sig.outputs),
    classes ? el("p", {}, el("strong", {}, "classes: "), classes.join(", ")) : "");
}

function files(list) {
  return el("section", { id: "files" }, el("h2", {}, "Files"),
    el("table", { class: "grid" },
      el("thead", {}, el("tr", {}, el("th", {}, "format"), el("th", { class: "num" }, "size"), el("th", { class: "num" }, "bytes"),
        el("th", {}, "sha256"), el("th", {}, "details"))),
      el("tbody", {}, list.map((f) => el("tr", {}, el("td", {}, f.format), el("td", { class: "num" }, size(f.size)),
        el("td", { class: "num" }, f.size), el("td", {}, el("code", { title: f.sha256 }, f.sha256.slice(0, 16) + "…")),
        el("td", {}, Object.keys(f.details).length ? JSON.stringify(f.details) : ""))))));
}

function lineage(v) {
  const lin = v.lineage || {};
  const rows = [];
  if (lin.run_id) rows.push(["run", runLink(lin.run_id, lin.run_id)]);
  if (lin.experiment) rows.push(["experiment", el("a", { href: "/ui/runs?experiment=" + encodeURIComponent(lin.experiment) }, lin.experiment)]);
  const ds = lin.datasets || {};
  for (const role of Object.keys(ds).sort()) rows.push(["dataset: " + role, el("code", {}, text(ds[role]))]);
  rows.push(["parent", v.parent_version ? versionLink(v.parent_version, name + "/" + v.parent_version) : "none (trained)"]);
  for (const k of Object.keys(lin).sort()) {
    if (!["run_id", "experiment", "datasets", "federated"].includes(k)) rows.push([k, text(lin[k])]); // federated: its own section
  }
  if (v.has_profile) rows.push(["training data profile", "stored (the drift reference)"]);
  return el("section", { id: "lineage" }, el("h2", {}, "Lineage"),
    el("table", { class: "grid kv" }, el("tbody", {}, rows.map(([k, val]) => el("tr", {}, el("th", {}, k), el("td", {}, val))))));
}

function measurements(m) {
  const flat = {};
  for (const [k, val] of Object.entries(m || {})) {
    if (k === COMPARISON) continue; // its own section
    if (k === "latency_ms" && val && typeof val === "object") {
      for (const [b, t] of Object.entries(val)) flat["latency (batch " + b + "), ms"] = ms(t);
    } else if (k === "size_bytes") {
      flat["size"] = size(val) + " (" + val + " bytes)";
    } else flat[k] = text(val);
  }
  return kv("Measurements", flat, "measurements");
}

// The champion-vs-challenger report stored with a challenger (loopml.loop.compare: the "comparison" measurement).
const COMPARISON = "comparison";
const SETS = { test: "the champion's test split: the challenger must not be worse",
  recent: "recent audit-labelled data: the challenger must be better" };

function pct(v) {
  return typeof v === "number" ? (100 * v).toFixed(1) + "%" : "–";
}

function accuracy(v, interval) {
  const band = Array.isArray(interval) && interval.length === 2 ? " [" + pct(interval[0]) + ", " + pct(interval[1]) + "]" : "";
  return pct(v) + band;
}

// a ref "name/3" as a link to that version's page (another model's too); anything else as text
function refLink(ref) {
  const m = /^(.+)\/(\d+)$/.exec(String(ref ?? ""));
  if (!m) return String(ref ?? "");
  return el("a", { href: "/ui/model?name=" + encodeURIComponent(m[1]) + "&version=" + encodeURIComponent(m[2]), class: "ref" }, String(ref));
}

function comparison(c) {
  if (!c || typeof c !== "object") return "";
  const sets = ["test", "recent"].map((k) => [k, c[k]]);
  const heads = [["set"], ["rows", true], ["champion", true], ["challenger", true], ["right only for the champion", true],
    ["right only for the challenger", true], ["one-sided p", true], ["passed"]];
  const decision = String(c.decision ?? "");
  return el("section", { id: "comparison" }, el("h2", {}, "Champion vs challenger"),
    el("p", {}, refLink(c.challenger), " against the champion ", refLink(c.champion), ": ",
      el("strong", { id: "comparison-decision", class: "decision decision-" + (decision === "promote" ? "promote" : "keep") }, decision),
      c.at ? el("span", { class: "muted" }, " (" + fmtTime(c.at) + ")") : ""),
    el("table", { class: "grid", id: "comparison-table" },
      el("thead", {}, el("tr", {}, heads.map(([h, num]) => el("th", { class: num ? "num" : undefined }, h)))),
      el("tbody", {}, sets.map(([k, r]) => r ? el("tr", { dataset: { set: k } },
        el("td", { title: SETS[k] }, k), el("td", { class: "num" }, text(r.rows)),
        el("td", { class: "num" }, accuracy(r.champion_accuracy, r.champion_interval)),
        el("td", { class: "num" }, accuracy(r.challenger_accuracy, r.challenger_interval)),
        el("td", { class: "num" }, text(r.champion_only)), el("td", { class: "num" }, text(r.challenger_only)),
        el("td", { class: "num" }, text(r.p_value)), el("td", { class: "passed" }, r.passed ? "yes" : "no")) :
        el("tr", { dataset: { set: k } }, el("td", {}, k), el("td", { colspan: heads.length - 1, class: "muted" }, "no such set"))))),
    el("p", { class: "muted" }, "Accuracy with its Wilson 95% interval. Exact McNemar tests on the rows where the two models " +
      "disagree, at level " + text(c.alpha) + "; the challenger is promoted when it is not worse on the test split and better on " +
      "recent data by at least " + text(c.min_gain) + " in accuracy."),
    el("ul", { id: "comparison-reasons" }, (Array.isArray(c.reasons) ? c.reasons : []).map((r) => el("li", {}, String(r)))));
}

function privacy(v) {
  const facts = versionFacts(v);
  return facts ? federatedSection(facts) : "";
}

function versionDetail(v) {
  const overview = [
    ["version", name + "/" + v.version],
    ["kind", v.kind],
    ["aliases", v.aliases.map((a) => "@" + a).join(", ")],
    ["description", v.description || ""],
    ["created", fmtTime(v.created_at) + (v.created_by ? " by " + v.created_by : "")],
    ["run", v.run_id ? runLink(v.run_id, v.run_id) : ""],
    ["monitoring", el("a", { id: "monitoring-link", href: "/ui/monitoring?name=" + encodeURIComponent(name) + "&version=" + encodeURIComponent(v.version) },
      "drift, accuracy, abstention and alerts")],
    ["predictions", el("a", { id: "predictions-link", href: "/ui/predictions?name=" + encodeURIComponent(name) + "&version=" + encodeURIComponent(v.version) },
      "the logged requests, each explained")],
    ["labeling", el("a", { id: "labeling-link", href: "/ui/labeling?name=" + encodeURIComponent(name) + "&version=" + encodeURIComponent(v.version) },
      "label the queued requests")],
    ["rebuilt from", v.model_spec ? el("code", {}, v.model_spec.class_path + "(**" + JSON.stringify(v.model_spec.init_args || {}) + ")") : "the exported program (no class needed)"],
  ];
  return el("section", { id: "version" },
    el("h2", { id: "version-title" }, "Version " + v.version),
    el("table", { class: "grid kv overview" }, el("tbody", {}, overview.map(([k, val]) => el("tr", {}, el("th", {}, k), el("td", {}, val))))),
    comparison((v.measurements || {})[COMPARISON]), privacy(v), signature(v.signature || {}), exampleExplanation(v), files(v.files), kv("Metrics", v.metrics, "metrics"), measurements(v.measurements),
    lineage(v), kv("Tags", v.tags, "tags"));
}

// Why the version answers its stored input example (row 0 first; the row and the method selectable), on a click.
function exampleExplanation(v) {
  const section = el("section", { id: "example-explanation" }, el("h2", {}, "Explanation of the input example"));
  if (!v.files.some((f) => f.format === "input_example")) {
    section.append(el("p", { class: "muted" }, "This version has no stored input example to explain."));
    return section;
  }
  const choice = { row: 0, method: "integrated_gradients", seq: 0 };
  const rowSelect = el("select", { id: "example-row" }, el("option", { value: "0" }, "row 0"));
  rowSelect.addEventListener("change", () => { choice.row = Number(rowSelect.value); if (choice.seq) run(); });
  const out = el("div", { id: "example-body" });
  // on demand: the first explanation loads the model (seconds), which a look at the page should not cost
  const go = el("button", { type: "button", id: "example-explain" }, "Explain");
  go.addEventListener("click", () => run());
  section.append(el("div", { class: "explain-controls" }, methodSelect(choice.method, (m) => { choice.method = m; if (choice.seq) run(); }, "example-method"),
    el("label", {}, "row ", rowSelect), go), out);
  async function run() {
    const seq = ++choice.seq;
    section.dataset.state = "loading";
    clear(out).append(el("p", { class: "muted" }, "Explaining…"));
    try {
      const answer = await api("/ui/api/models/" + encodeURIComponent(name) + "/versions/" + encodeURIComponent(v.version) + "/explain",
        { row: choice.row, method: choice.method });
      if (seq !== choice.seq) return;
      if (rowSelect.options.length !== answer.rows) {
        clear(rowSelect).append(...Array.from({ length: answer.rows }, (_, i) => el("option", { value: String(i), selected: i === choice.row }, "row " + i)));
      }
      clear(out).append(el("p", { class: "muted" }, "The model answers " + (typeof answer.prediction === "number" ? fmtNum(answer.prediction) : String(answer.prediction)) + "."),
        explanationView(answer, answer.input, 256));
      section.dataset.state = "explained";
    } catch (err) {
      if (seq !== choice.seq) return;
      clear(out);
      showError(out, err);
      section.dataset.state = "error";
    }
  }
  return section;
}

function aliasHistory(events) {
  return el("section", { id: "alias-history" }, el("h2", {}, "Alias history"),
    events.length ? el("table", { class: "grid" },
      el("thead", {}, el("tr", {}, el("th", {}, "alias"), el("th", { class: "num" }, "from"), el("th", { class: "num" }, "to"),
        el("th", {}, "when"), el("th", {}, "by"))),
      el("tbody", {}, events.map((e) => el("tr", {}, el("td", {}, "@" + e.alias),
        el("td", { class: "num" }, e.from === null ? "–" : versionLink(e.from)),
        el("td", { class: "num" }, e.to === null ? "removed" : versionLink(e.to)),
        el("td", {}, fmtTime(e.at)), el("td", {}, e.by || ""))))) :
      el("p", { class: "muted" }, "no alias set yet"));
}

async function render() {
  if (!name) {
    showError(root, new Error("No model given: open /ui/model?name=NAME"));
    return;
  }
  let data;
  try {
    data = await api("/ui/api/models/" + encodeURIComponent(name));
  } catch (err) {
    showError(root, err);
    return;
  }
  setTitle(name);
  const m = data.model;
  const asked = Number(args.get("version"));
  const selected = data.versions.some((v) => v.version === asked) ? asked : m.latest_version;
  const aliases = Object.keys(m.aliases).sort().map((a) => "@" + a + " → " + m.aliases[a]).join(", ");
  root.append(
    el("p", {}, el("a", { href: "/ui/models" }, "Models"), " /"),
    el("h1", { id: "model-name" }, name),
    el("p", { class: "muted" }, m.version_count + " versions" + (aliases ? "; " + aliases : "") + "; updated " + fmtTime(m.updated_at)),
    el("section", {}, el("h2", {}, "Versions"), versionsTable(data.versions, selected)),
  );
  if (selected) {
    try {
      const v = await api("/ui/api/models/" + encodeURIComponent(name) + "/versions/" + encodeURIComponent(selected));
      root.append(versionDetail(v));
    } catch (err) {
      showError(root, err);
    }
  }
  root.append(aliasHistory(data.alias_history));
  root.dataset.ready = "true";
}

render();
