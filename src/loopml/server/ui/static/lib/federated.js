// A federation's facts (loopml.federated.fit) on the run page and the version page: the privacy
// spent and promised (epsilon, delta, mechanism) and how it was trained (rounds, clients, strategy,
// partition, failures). Both pages read the same facts from different places: the run from its
// params, tags and metrics, the version from its lineage ("federated") and tags (privacy.*).

import { el } from "./dom.js";

function num(v) {
  if (v === null || v === undefined || v === "") return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

// Params and tags are text ("1e-05", "8.0"), lineage holds numbers: both are shown alike (0.00001, 8),
// six significant digits, where fmtNum would write small deltas as 1.0000e-5.
function show(v) {
  if (v === null || v === undefined || v === "") return "";
  if (typeof v === "object") return JSON.stringify(v);
  const n = typeof v === "number" ? v : num(v);
  return n === null ? String(v) : String(Number(n.toPrecision(6)));
}

// "dirichlet: alpha 0.5, seed 0": the scheme and its settings (the run keeps them as partition.* params,
// the version as lineage.federated.partition, with how and clients beside them)
function partitionText(how, params) {
  const rest = Object.keys(params || {}).filter((k) => k !== "how" && k !== "clients").sort()
    .map((k) => k + " " + show(params[k]));
  return how ? String(how) + (rest.length ? ": " + rest.join(", ") : "") : "";
}

function table(id, rows) {
  const kept = rows.filter(([, v]) => v !== "" && v !== null && v !== undefined);
  return el("table", { class: "grid kv", id }, el("tbody", {},
    kept.map(([k, v]) => el("tr", { dataset: { key: k } }, el("th", {}, k), el("td", {}, v)))));
}

// The facts of a run that loopml.federated.fit made (tag loopml.federated = true), or null.
export function runFacts(run) {
  const p = run.params || {}, t = run.tags || {}, m = run.metrics || {};
  const mechanism = t["privacy.mechanism"] || p["privacy.mechanism"];
  if (t["loopml.federated"] !== "true" && !mechanism) return null;
  const metric = (k) => (m[k] ? m[k].value : null);
  const partition = {};
  for (const k of Object.keys(p).sort()) if (k.startsWith("partition.")) partition[k.slice("partition.".length)] = p[k];
  return {
    federated: t["loopml.federated"] === "true",
    mechanism: mechanism || "none",
    epsilon: t["privacy.epsilon"] ?? metric("epsilon_spent"),
    target: p["privacy.epsilon"],
    delta: t["privacy.delta"] ?? p["privacy.delta"],
    maxGradNorm: p["privacy.max_grad_norm"],
    noise: p["privacy.noise_multiplier"],
    rounds: p.rounds,
    clients: p.clients,
    strategy: p.strategy,
    engine: p.engine,
    partition: partitionText(p.partition, partition),
    failures: metric("clients_failed_total"),
    accuracy: metric("final_accuracy"),
  };
}

// The facts of a version registered from a federation (lineage.federated) or with privacy.* tags, or null.
export function versionFacts(v) {
  const fed = (v.lineage || {}).federated;
  const t = v.tags || {};
  const hasFed = fed && typeof fed === "object";
  if (!hasFed && !t["privacy.mechanism"]) return null;
  const priv = hasFed && fed.privacy && typeof fed.privacy === "object" ? fed.privacy : {};
  const pick = (k) => priv["privacy." + k] ?? priv[k];
  const part = hasFed ? fed.partition : null;
  return {
    federated: Boolean(hasFed),
    mechanism: t["privacy.mechanism"] || pick("mechanism") || "none",
    epsilon: t["privacy.epsilon"] ?? pick("epsilon_spent"),
    target: pick("epsilon"),
    delta: t["privacy.delta"] ?? pick("delta"),
    maxGradNorm: pick("max_grad_norm"),
    noise: pick("noise_multiplier"),
    rounds: hasFed ? fed.rounds : null,
    clients: hasFed ? fed.clients : null,
    strategy: hasFed ? fed.strategy : null,
    engine: hasFed ? fed.engine : null,
    partition: part && typeof part === "object" ? partitionText(part.how, part) : part,
    failures: hasFed ? fed.failures : null,
    accuracy: null,
  };
}

// The "Federated training and privacy" section of the facts; `extra` (the partition picture) goes below.
export function federatedSection(f, ...extra) {
  const none = f.mechanism === "none";
  const privacy = none ? [["mechanism", "none: no differential privacy"]] : [
    ["mechanism", f.mechanism === "dp-sgd" ? "dp-sgd (per-client DP-SGD, Opacus)" : f.mechanism === "central" ? "central (server-side clipping and noise, Flower)" : f.mechanism],
    ["protects", f.mechanism === "dp-sgd" ? "each row of a client (sample-level)" : f.mechanism === "central" ? "each client's whole contribution (client-level)" : ""],
    ["epsilon spent", show(f.epsilon)],
    ["epsilon target", show(f.target)],
    ["delta", show(f.delta)],
    ["max grad norm", show(f.maxGradNorm)],
    ["noise multiplier", show(f.noise)],
  ];
  const training = [
    ["rounds", show(f.rounds)],
    ["clients", show(f.clients)],
    ["strategy", show(f.strategy)],
    ["engine", show(f.engine)],
    ["partition", show(f.partition)],
    ["client failures", show(f.failures)],
    ["final central accuracy", show(f.accuracy)],
  ];
  return el("section", { id: "federated", dataset: { mechanism: f.mechanism } },
    el("h2", {}, f.federated ? "Federated training and privacy" : "Privacy"),
    el("h3", {}, "Privacy"),
    table("privacy-table", privacy),
    none ? "" : el("p", { class: "muted" }, "(epsilon, delta)-differential privacy: the smaller epsilon, the less any one " +
      (f.mechanism === "central" ? "client" : "row") + " can change what the model learnt; epsilon spent is what the " +
      "accountant measured, at most the target."),
    f.federated ? [el("h3", {}, "Federation"), table("federation-table", training)] : "",
    extra);
}
