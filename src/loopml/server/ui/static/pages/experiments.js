// Experiments: each with its run count and last activity.

import { api } from "../lib/api.js";
import { el, clear, main, fmtTime, showError } from "../lib/dom.js";

async function render() {
  const root = clear(main());
  root.append(el("h1", {}, "Experiments"));
  let data;
  try {
    data = await api("/ui/api/experiments");
  } catch (err) {
    showError(root, err);
    return;
  }
  if (!data.experiments.length) {
    root.append(el("p", { class: "muted" }, "No experiments yet: log a run with loopml.start_run(experiment=...)."));
  }
  const rows = data.experiments.map((e) =>
    el("tr", {},
      el("td", {}, el("a", { href: "/ui/runs?experiment=" + encodeURIComponent(e.name) }, e.name)),
      el("td", { class: "num" }, e.run_count),
      el("td", {}, fmtTime(e.last_activity)),
      el("td", {}, fmtTime(e.created_at))));
  root.append(el("table", { class: "grid experiments" },
    el("thead", {}, el("tr", {}, el("th", {}, "experiment"), el("th", { class: "num" }, "runs"),
      el("th", {}, "last activity"), el("th", {}, "created"))),
    el("tbody", {}, rows)));
  root.dataset.ready = "true";
}

render();
