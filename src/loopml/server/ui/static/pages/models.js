// Models: each registered model with its version count, newest version, aliases and last change.

import { api } from "../lib/api.js";
import { el, clear, main, fmtTime, showError } from "../lib/dom.js";

function modelLink(name, version, text) {
  const q = "?name=" + encodeURIComponent(name) + (version ? "&version=" + encodeURIComponent(version) : "");
  return el("a", { href: "/ui/model" + q }, text);
}

function aliasList(name, aliases) {
  const names = Object.keys(aliases).sort();
  if (!names.length) return el("span", { class: "muted" }, "none");
  return names.flatMap((a, i) => [i ? ", " : "", modelLink(name, aliases[a], "@" + a + " → " + aliases[a])]);
}

async function render() {
  const root = clear(main());
  root.append(el("h1", {}, "Models"));
  let data;
  try {
    data = await api("/ui/api/models");
  } catch (err) {
    showError(root, err);
    return;
  }
  if (!data.models.length) {
    root.append(el("p", { class: "muted" }, "No models yet: register one with loopml.register(model, \"name\", input_example=x)."));
  }
  const rows = data.models.map((m) =>
    el("tr", { dataset: { model: m.name } },
      el("td", { class: "name" }, modelLink(m.name, null, m.name)),
      el("td", { class: "num" }, m.version_count),
      el("td", { class: "num" }, m.latest_version === null ? "" : modelLink(m.name, m.latest_version, String(m.latest_version))),
      el("td", { class: "aliases" }, aliasList(m.name, m.aliases)),
      el("td", {}, fmtTime(m.updated_at)),
      el("td", {}, fmtTime(m.created_at))));
  root.append(el("table", { class: "grid models", id: "models-table" },
    el("thead", {}, el("tr", {}, el("th", {}, "model"), el("th", { class: "num" }, "versions"),
      el("th", { class: "num" }, "newest"), el("th", {}, "aliases"),
      el("th", {}, "updated"), el("th", {}, "created"))),
    el("tbody", {}, rows)));
  root.dataset.ready = "true";
}

render();
