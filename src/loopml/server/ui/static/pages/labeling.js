// The labeling page: the queued requests of a model, one at a time (or a grid of GRID), labelled with the keyboard.
//
// Keys (the table on the page says the same): a class key picks a class, Enter confirms it (the model's top class
// when none was picked), s skips, n answers "none of these classes", Backspace takes the last answer back (the server
// keeps it as history and an `undo` row supersedes it), the arrows move between items, g toggles the grid, Escape
// clears a pick, w shows why (the heat map of the model's predicted class over the image, or its strongest features as
// signed bars: GET /api/v1/predictions/{id}/explanation, drawn by lib/explain.js). Class keys: the class names themselves when every name is one character (digits 0-9), else 1-9 and
// 0 for up to 10 classes, else a code of two (or three) digits typed in a row: class 12 is "1" then "2".
//
// Each answer is sent at once (POST /api/v1/labels, source "page") with the seconds from the moment the item was
// shown to the confirm; the requests go out one after another, so an undo never overtakes the label it undoes.
// The page holds what it needs to keep going: the next items are fetched before the buffer runs out.

import { api, apiPost } from "../lib/api.js";
import { el, clear, main, fmtNum, showError, setTitle } from "../lib/dom.js";
import { explainRequest, explanationView } from "../lib/explain.js";

const args = new URL(location.href).searchParams;
const name = args.get("name");
const versionArg = args.get("version");
const root = clear(main());
const ANNOTATOR_KEY = "loopml.annotator";
const FETCH = 50; // queue items fetched at once
const REFILL = 10; // fetch more when fewer unanswered items than this are left ahead
const GRID = 20; // items on a grid page
const GRID_COLUMNS = 5;
const RESERVED = new Set(["s", "n", "g", "w"]); // keys that are commands, never classes
const WHY_METHOD = "integrated_gradients";
const VIEW = 256; // pixels of the large image; a grid cell's image is a third of it

const state = {
  meta: null, // /ui/api/labeling/{name}: version, class names, input kind, queue counts
  classes: [],
  keys: null, // { scheme, width, byKey: Map(key -> class index), keyOf: [key per class] }
  items: [],
  after: null, // the last queue id fetched
  exhausted: false,
  index: 0,
  answers: new Map(), // queue item id -> { kind, label } answered in this tab
  history: [], // answers sent, oldest first: [{ item, kind, label }] (Backspace pops)
  picked: null, // class index picked for the shown item
  code: "", // digits typed so far of a two-key code
  shownAt: 0,
  grid: null, // { items, answers: [{ kind, label, changed }], cursor, shownAt }
  annotator: localStorage.getItem(ANNOTATOR_KEY) || "",
  session: { labels: 0, started: 0 },
  pending: 0,
  sent: 0,
  chain: Promise.resolve(),
  message: "",
  why: false, // show the explanation over the item
  explained: new Map(), // "request_id/row" -> { answer } or { error }, fetched once
};

const view = el("div", { id: "labeling" });
const status = el("p", { id: "progress", class: "progress" });
const notice = el("p", { id: "notice", class: "notice", role: "status" });
const errors = el("div", { id: "errors" });

const LABELS = "/api/v1/labels"; // POST a label or a list; POST /undo

// ---- classes and their keys ------------------------------------------------------------------------------------

function classKeys(names) {
  const byKey = new Map();
  const one = names.length > 0 && names.every((n) => [...n].length === 1 && n.trim() && !RESERVED.has(n.toLowerCase())) &&
    new Set(names).size === names.length;
  let scheme, width, keyOf;
  if (one) {
    scheme = "name"; width = 1; keyOf = names.slice();
  } else if (names.length <= 10) {
    scheme = "index"; width = 1; keyOf = names.map((_, i) => String((i + 1) % 10));
  } else {
    scheme = "code"; width = String(names.length - 1).length; keyOf = names.map((_, i) => String(i).padStart(width, "0"));
  }
  keyOf.forEach((k, i) => byKey.set(k, i));
  return { scheme, width, byKey, keyOf };
}

// A key press as a class: the class index when it completes a key, "partial" while a code is being typed, else null.
function classFromKey(key) {
  const k = state.keys;
  if (!k || key.length !== 1) return null;
  if (k.width === 1) return k.byKey.has(key) ? k.byKey.get(key) : null;
  if (!/^[0-9]$/.test(key)) return null;
  const code = state.code + key;
  if (k.byKey.has(code)) {
    state.code = "";
    return k.byKey.get(code);
  }
  const prefix = k.keyOf.some((c) => c.startsWith(code));
  state.code = prefix ? code : (k.keyOf.some((c) => c.startsWith(key)) ? key : "");
  return "partial";
}

// ---- what an item shows ----------------------------------------------------------------------------------------

function pct(p) {
  return typeof p === "number" ? (100 * p).toFixed(1) + "%" : "–";
}

// The model's top classes, best first: [{ cls, p }]
function topOf(item) {
  const raw = item.top ?? item.top3 ?? item.top_classes;
  if (Array.isArray(raw)) {
    return raw.map((t) => (Array.isArray(t) ? { cls: String(t[0]), p: t[1] } :
      { cls: String(t.class ?? t.label ?? t.name ?? t.prediction), p: t.probability ?? t.p ?? null }));
  }
  return item.prediction === null || item.prediction === undefined ? [] : [{ cls: String(item.prediction), p: null }];
}

function modelAnswer(item) {
  const top = topOf(item);
  return top.length ? top[0].cls : null;
}

function oodOf(item) {
  return item.ood_score ?? (item.input && item.input.ood_score) ?? null;
}

function flat(values) {
  return Array.isArray(values) ? values.flat(Infinity) : [];
}

// The input as a picture: [h, w, channels, get(y, x, c)] for shapes (h, w), (c, h, w), (h, w, c) and a square (n).
function imageLayout(values, shape) {
  const v = flat(values);
  const s = Array.isArray(shape) && shape.length ? shape.map(Number) : [v.length];
  if (s.length === 1) {
    const side = Math.round(Math.sqrt(s[0]));
    if (side * side !== s[0]) return null;
    return [side, side, 1, (y, x) => v[y * side + x], v];
  }
  if (s.length === 2) return [s[0], s[1], 1, (y, x) => v[y * s[1] + x], v];
  if (s.length === 3 && s[0] <= 4 && s[2] > 4) {
    const [c, h, w] = s;
    return [h, w, c, (y, x, k) => v[k * h * w + y * w + x], v];
  }
  if (s.length === 3) {
    const [h, w, c] = s;
    return [h, w, c, (y, x, k) => v[(y * w + x) * c + k], v];
  }
  return null;
}

// Nearest-neighbour scaling (imageSmoothingEnabled = false) of the pixels, min-max stretched to 0-255:
// 8x8 digits become 256x256 blocks of 32x32 pixels. Grey for one channel, RGB for three or four.
function drawImage(values, shape, size) {
  const layout = imageLayout(values, shape);
  if (!layout) return null;
  const [h, w, c, get, v] = layout;
  let lo = Infinity, hi = -Infinity;
  for (const x of v) {
    if (typeof x === "number" && Number.isFinite(x)) {
      if (x < lo) lo = x;
      if (x > hi) hi = x;
    }
  }
  const span = hi > lo ? hi - lo : 1;
  const off = document.createElement("canvas");
  off.width = w;
  off.height = h;
  const octx = off.getContext("2d");
  const img = octx.createImageData(w, h);
  const byte = (x) => (typeof x === "number" && Number.isFinite(x) ? Math.round(255 * (x - lo) / span) : 0);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const o = 4 * (y * w + x);
      const r = byte(get(y, x, 0));
      img.data[o] = r;
      img.data[o + 1] = c >= 3 ? byte(get(y, x, 1)) : r;
      img.data[o + 2] = c >= 3 ? byte(get(y, x, 2)) : r;
      img.data[o + 3] = 255;
    }
  }
  octx.putImageData(img, 0, 0);
  const scale = Math.max(1, Math.floor(size / Math.max(h, w)));
  const canvas = el("canvas", { class: "pixels", width: w * scale, height: h * scale,
    dataset: { pixels: w + "x" + h, scale: String(scale), channels: String(c) } });
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, 0, 0, w * scale, h * scale);
  return canvas;
}

function featureTable(names, values) {
  const v = flat(values);
  const cols = Array.isArray(names) && names.length === v.length ? names : v.map((_, i) => "x" + i);
  return el("table", { class: "grid kv features" }, el("thead", {}, el("tr", {}, el("th", {}, "feature"), el("th", { class: "num" }, "value"))),
    el("tbody", {}, cols.map((n, i) => el("tr", {}, el("th", {}, String(n)),
      el("td", { class: "num" }, typeof v[i] === "number" ? fmtNum(v[i]) : String(v[i] ?? ""))))));
}

function inputView(item, size) {
  const input = item.input;
  if (!input || input.values === undefined || input.values === null) {
    return el("p", { class: "muted no-input" }, "The request's input was not logged (the server logs a sample of the inputs: " +
      "loopml serve --log-inputs 1.0 logs them all).");
  }
  if (input.kind === "image") {
    const canvas = drawImage(input.values, input.shape, size);
    if (canvas) return canvas;
  }
  if (input.kind === "table" || input.kind === "image") {
    return featureTable(input.feature_names ?? (state.meta && state.meta.feature_names), input.values);
  }
  return el("pre", { class: "raw-input" }, JSON.stringify(input.values));
}

// The item's input, or with "why" on its explanation: the heat map blended over the image, the bars beside a table.
function whyKey(item) {
  return item.request_id + "/" + (item.row ?? 0);
}

function explainItem(item) {
  const key = whyKey(item);
  if (state.explained.has(key)) return;
  state.explained.set(key, { loading: true });
  explainRequest(item.request_id, item.row ?? 0, WHY_METHOD).then((answer) => {
    state.explained.set(key, { answer });
  }, (err) => {
    state.explained.set(key, { error: err });
  }).then(() => {
    const shown = state.grid ? null : state.items[state.index];
    if (state.why && shown && whyKey(shown) === key) draw();
  });
}

function whyView(item) {
  if (!state.why || !item.input || item.input.values === undefined || item.input.values === null) return null;
  const got = state.explained.get(whyKey(item));
  if (!got) explainItem(item);
  if (!got || got.loading) return el("p", { class: "muted", id: "why-loading" }, "Explaining the model's answer…");
  if (got.error) return el("p", { class: "error", id: "why-error" }, "No explanation: " + (got.error.message || String(got.error)));
  return el("div", { id: "why" }, explanationView(got.answer, item.input.values, VIEW));
}

const SHOWN = new Set(["top", "prediction", "ood_score", "probabilities"]); // beside the item already

function reasonText(item) {
  const parts = [item.reason ?? ""];
  if (typeof item.score === "number") parts.push("score " + fmtNum(item.score));
  const d = item.details && typeof item.details === "object" ? item.details : {};
  for (const k of Object.keys(d).sort()) {
    if (SHOWN.has(k)) continue;
    const v = d[k];
    parts.push(k + ": " + (typeof v === "number" ? fmtNum(v) : typeof v === "object" ? JSON.stringify(v) : String(v)));
  }
  return parts.filter(Boolean).join(" · ");
}

// ---- sending ---------------------------------------------------------------------------------------------------

function busyChanged() {
  root.dataset.pending = String(state.pending);
  root.dataset.sent = String(state.sent);
}

// Requests go out in order; a failure shows and gives the affected items back.
function send(what, body, onFail, onDone) {
  state.pending += 1;
  busyChanged();
  state.chain = state.chain.then(() => apiPost(what, body)).then((answer) => {
    state.sent += 1;
    if (onDone) onDone(answer);
  }, (err) => {
    showError(errors, err);
    if (onFail) onFail(err);
  }).finally(() => {
    state.pending -= 1;
    busyChanged();
    refreshCounts();
  });
}

function doc(item, kind, label, seconds) {
  return { request_id: item.request_id, row: item.row ?? 0, kind, label: kind === "label" ? label : null,
    annotator: state.annotator, seconds: Math.max(0.001, Math.round(seconds * 1000) / 1000), source: "page" };
}

function elapsed(since) {
  return (performance.now() - since) / 1000;
}

function noteLabel() {
  if (!state.session.started) state.session.started = performance.now();
  state.session.labels += 1;
}

// An item's answer in this tab; a second answer to one item replaces the first in the history (the server's
// newest answer per item counts, and its undo withdraws that item's answer as a whole).
function remember(item, entry) {
  const before = state.history.length;
  state.history = state.history.filter((e) => e.item !== item);
  if (state.history.length === before) noteLabel();
  state.answers.set(item.id, { kind: entry.kind, label: entry.label });
  state.history.push(entry);
}

function answer(kind, label) {
  const item = state.items[state.index];
  if (!item) return;
  const seconds = elapsed(state.shownAt);
  const entry = { item, kind, label };
  remember(item, entry);
  send(LABELS, doc(item, kind, label, seconds), () => {  // refused (the error shows): back to the item
    state.answers.delete(item.id);
    state.history = state.history.filter((e) => e !== entry);
    state.session.labels -= 1;
    if (!state.grid && state.items.indexOf(item) >= 0) state.index = state.items.indexOf(item);
    show();
  });
  state.message = "";
  next(true);
}

function undo() {
  const last = state.history.pop();
  if (!last) {
    say("Nothing to take back in this session.");
    return;
  }
  state.answers.delete(last.item.id);
  state.session.labels -= 1;
  // the server withdraws this annotator's newest standing answer: the one on top of this tab's history
  send(LABELS + "/undo", { annotator: state.annotator }, null, (body) => {
    const u = body && body.undone;
    if (!u || u.request_id !== last.item.request_id || (u.row ?? 0) !== (last.item.row ?? 0)) {
      say("The server took back another answer than this tab's last one (labelled in another tab?): " +
        (u ? "request " + u.request_id + " row " + u.row : "none stood") + ".");
    }
  });
  const i = state.items.indexOf(last.item);
  if (state.grid) state.grid = null;
  if (i >= 0) state.index = i;
  say("Took back " + describe(last) + " of the item shown.");
  show();
}

function describe(a) {
  return a.kind === "label" ? "\u201c" + a.label + "\u201d" : a.kind === "skip" ? "the skip" : "\u201cnone of these\u201d";
}

// ---- moving between items --------------------------------------------------------------------------------------

async function fetchMore() {
  if (state.exhausted || state.fetching) return state.fetching;
  const params = { limit: FETCH, after: state.after, annotator: state.annotator, version: versionArg ? state.meta.version : null };
  state.fetching = api("/ui/api/labeling/" + encodeURIComponent(name) + "/queue", params).then((body) => {
    const known = new Set(state.items.map((it) => it.id));
    for (const it of body.items) if (!known.has(it.id)) state.items.push(it);
    if (body.items.length) state.after = body.items[body.items.length - 1].id;
    if (body.next_after === null || body.next_after === undefined) state.exhausted = true;
    state.meta.counts = body.counts.by_status;
  }).finally(() => {
    state.fetching = null;
  });
  return state.fetching;
}

function unansweredAhead() {
  let n = 0;
  for (let i = state.index; i < state.items.length; i++) if (!state.answers.has(state.items[i].id)) n++;
  return n;
}

// To the next item without an answer in this tab (skipAnswered), or simply the next one.
async function next(skipAnswered) {
  let i = state.index + 1;
  if (skipAnswered) while (i < state.items.length && state.answers.has(state.items[i].id)) i++;
  if (i >= state.items.length && !state.exhausted) {
    try {
      await fetchMore();
    } catch (err) {
      showError(errors, err);
    }
  }
  state.index = Math.min(i, state.items.length);
  show();
  if (unansweredAhead() < REFILL && !state.exhausted) fetchMore().then(draw, (err) => showError(errors, err));
}

function previous() {
  if (state.index > 0) state.index -= 1;
  show();
}

function show() {
  state.picked = null;
  state.code = "";
  state.shownAt = performance.now();
  if (!state.session.started) state.session.started = state.shownAt;
  draw();
}

function say(text) {
  state.message = text;
  notice.textContent = text;
}

// ---- the grid --------------------------------------------------------------------------------------------------

async function openGrid() {
  if (unansweredAhead() < GRID && !state.exhausted) {
    try {
      await fetchMore();
    } catch (err) {
      showError(errors, err);
    }
  }
  const items = [];
  for (let i = state.index; i < state.items.length && items.length < GRID; i++) {
    if (!state.answers.has(state.items[i].id)) items.push(state.items[i]);
  }
  if (!items.length) {
    say("No unanswered item left for a grid.");
    draw();
    return;
  }
  state.grid = { items, cursor: 0, shownAt: performance.now(),
    answers: items.map((it) => { const m = modelAnswer(it); return m === null ? { kind: "skip", label: null, changed: false } : { kind: "label", label: m, changed: false }; }) };
  say("");
  draw();
}

function gridSet(kind, label) {
  const g = state.grid;
  const model = modelAnswer(g.items[g.cursor]);
  g.answers[g.cursor] = { kind, label, changed: !(kind === "label" && label === model) };
  if (g.cursor < g.items.length - 1) g.cursor += 1;
  draw();
}

function gridReset() {
  const g = state.grid;
  const m = modelAnswer(g.items[g.cursor]);
  g.answers[g.cursor] = m === null ? { kind: "skip", label: null, changed: false } : { kind: "label", label: m, changed: false };
  draw();
}

function gridConfirm() {
  const g = state.grid;
  const each = elapsed(g.shownAt) / g.items.length;
  const docs = [];
  const entries = [];
  g.items.forEach((item, i) => {
    const a = g.answers[i];
    const entry = { item, kind: a.kind, label: a.label };
    remember(item, entry);
    entries.push(entry);
    docs.push(doc(item, a.kind, a.label, each));
  });
  send(LABELS, docs, () => {
    for (const e of entries) state.answers.delete(e.item.id);
    state.history = state.history.filter((e) => !entries.includes(e));
    state.session.labels -= entries.length;
    draw();
  });
  const lastIndex = state.items.indexOf(g.items[g.items.length - 1]);
  state.index = Math.max(state.index, lastIndex);
  say("Confirmed a page of " + g.items.length + " answers.");
  state.grid = null;
  next(true).then(() => openGrid());
}

function gridMove(delta) {
  const g = state.grid;
  g.cursor = Math.min(g.items.length - 1, Math.max(0, g.cursor + delta));
  draw();
}

// ---- keys ------------------------------------------------------------------------------------------------------

function onKey(ev) {
  if (!state.meta || !state.annotator || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const t = ev.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) return;
  if (t && (t.tagName === "A" || t.tagName === "BUTTON") && (ev.key === "Enter" || ev.key === " ")) return; // the link's own
  const key = ev.key;
  const handled = state.grid ? gridKey(key) : singleKey(key);
  if (handled) ev.preventDefault();
}

function singleKey(key) {
  const item = state.items[state.index];
  if (key === "g") {
    openGrid();
    return true;
  }
  if (key === "w") {
    state.why = !state.why;
    draw();
    return true;
  }
  if (key === "ArrowRight" || key === "ArrowDown") {
    if (item) next(false);
    return true;
  }
  if (key === "ArrowLeft" || key === "ArrowUp") {
    previous();
    return true;
  }
  if (key === "Backspace") {
    undo();
    return true;
  }
  if (key === "Escape") {
    state.picked = null;
    state.code = "";
    draw();
    return true;
  }
  if (!item) return false;
  if (key === "Enter") {
    const label = state.picked !== null ? state.classes[state.picked] : modelAnswer(item);
    if (label === null) {
      say("The model gave no answer for this item: press a class key first (or s to skip, n for none of these).");
      return true;
    }
    answer("label", label);
    return true;
  }
  if (key === "s") {
    answer("skip", null);
    return true;
  }
  if (key === "n") {
    answer("none", null);
    return true;
  }
  const c = classFromKey(key);
  if (c === null) return false;
  if (c !== "partial") state.picked = c;
  draw();
  return true;
}

function gridKey(key) {
  const g = state.grid;
  const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: GRID_COLUMNS, ArrowUp: -GRID_COLUMNS };
  if (key in moves) {
    gridMove(moves[key]);
    return true;
  }
  if (key === "g" || key === "Escape") {
    state.grid = null;
    show();
    return true;
  }
  if (key === "Enter") {
    gridConfirm();
    return true;
  }
  if (key === "Backspace") {
    gridReset();
    return true;
  }
  if (key === "s") {
    gridSet("skip", null);
    return true;
  }
  if (key === "n") {
    gridSet("none", null);
    return true;
  }
  const c = classFromKey(key);
  if (c === null) return false;
  if (c !== "partial") gridSet("label", state.classes[c]);
  else draw();
  return !!g;
}

// ---- drawing ---------------------------------------------------------------------------------------------------

function countsText() {
  const c = state.meta.counts || {};
  const total = Object.values(c).reduce((a, b) => a + b, 0);
  const done = total - (c.open || 0);
  const minutes = state.session.started ? (performance.now() - state.session.started) / 60000 : 0;
  const rate = state.session.labels > 0 && minutes > 0 ? (state.session.labels / minutes).toFixed(1) : "–";
  return [done + " labelled of " + total + " queued", (c.open || 0) + " open",
    state.session.labels + " answered by " + state.annotator + " in this tab", rate + " labels per minute"].join(" · ");
}

function classList(item, picked) {
  const top = item ? topOf(item) : [];
  const probs = new Map(top.map((t) => [t.cls, t.p]));
  const model = top.length ? top[0].cls : null;
  return el("ol", { class: "classes", id: "classes" }, state.classes.map((cls, i) => {
    const key = state.keys.keyOf[i];
    const typed = state.code && key.startsWith(state.code);
    return el("li", { class: [i === picked ? "picked" : "", cls === model ? "model" : "", typed ? "typed" : ""].filter(Boolean).join(" ") || undefined,
      dataset: { cls, key } },
      el("kbd", {}, key), " ", el("span", { class: "cls" }, cls),
      probs.has(cls) ? el("span", { class: "muted" }, " " + pct(probs.get(cls))) : "");
  }));
}

function topTable(item) {
  const top = topOf(item).slice(0, 3);
  if (!top.length) return el("p", { class: "muted", id: "top3" }, "The model gave no class (it abstained, or its answer was not logged).");
  return el("table", { class: "grid top3", id: "top3" }, el("tbody", {}, top.map((t) => el("tr", {},
    el("td", { class: "cls" }, t.cls), el("td", { class: "num" }, pct(t.p)),
    el("td", {}, el("span", { class: "bar", style: "width: " + Math.round(100 * (t.p || 0)) + "px" }))))));
}

function singleView() {
  const item = state.items[state.index];
  if (!item) {
    return el("section", { id: "queue-done", class: "empty" }, el("h2", {}, "Nothing left to label"),
      el("p", {}, state.items.length ? "Every item fetched has an answer from " + state.annotator + ". Backspace takes the last one back; " +
        "the arrows go back through them." : "The queue of " + name + " has no open item."),
      el("pre", {}, "loopml label queue " + name + "@ALIAS --size 200"));
  }
  const given = state.answers.get(item.id);
  const ood = oodOf(item);
  const model = modelAnswer(item);
  const choice = state.picked !== null ? state.classes[state.picked] : null;
  const pending = choice !== null ? "Enter confirms \u201c" + choice + "\u201d" :
    model !== null ? "Enter confirms the model's \u201c" + model + "\u201d" : "press a class key, then Enter";
  const why = whyView(item);
  const image = item.input && item.input.kind === "image";
  const toggle = el("button", { type: "button", id: "why-toggle", "aria-pressed": String(state.why) }, state.why ? "hide why (w)" : "why? (w)");
  toggle.addEventListener("click", () => { state.why = !state.why; draw(); });
  return el("section", { id: "item", class: "label-item", dataset: { queueId: String(item.id), requestId: String(item.request_id), row: String(item.row ?? 0) } },
    el("div", { class: "label-view" + (why && image && state.explained.get(whyKey(item))?.answer ? " why" : "") }, inputView(item, VIEW), why ?? "", toggle,
      el("p", { class: "muted" }, "item " + (state.index + 1) + " of " + state.items.length + (state.exhausted ? "" : "+") +
        " · request " + item.request_id + (item.row ? " row " + item.row : "") + (item.version ? " · version " + item.version : ""))),
    el("aside", { class: "label-side" },
      el("h3", {}, "The model's answer"), topTable(item),
      el("p", { id: "ood" }, "OOD score: ", el("strong", {}, ood === null ? "–" : fmtNum(ood))),
      el("p", { id: "reason" }, "Queued because: ", el("strong", {}, reasonText(item))),
      given ? el("p", { id: "given", class: "given" }, "Answered: " + describe(given)) : "",
      el("p", { id: "pending", class: "pending" }, pending + (state.code ? " · typed " + state.code + "…" : "")),
      el("h3", {}, "Classes"), classList(item, state.picked)));
}

function gridView() {
  const g = state.grid;
  return el("section", { id: "grid", class: "label-grid" },
    el("p", { class: "muted" }, "Grid: " + g.items.length + " items with the model's answers. Arrows move, a class key (or s, n) " +
      "corrects the item under the cursor, Backspace resets it, Enter confirms the whole page, g or Escape goes back."),
    el("div", { class: "cells" }, g.items.map((item, i) => {
      const a = g.answers[i];
      const cell = el("div", { class: "cell" + (i === g.cursor ? " cursor" : "") + (a.changed ? " changed" : ""),
        dataset: { index: String(i), queueId: String(item.id), answer: a.kind === "label" ? a.label : a.kind } },
      inputView(item, VIEW / 3),
      el("div", { class: "cell-answer" }, a.kind === "label" ? a.label : a.kind === "skip" ? "skip" : "none"),
      el("div", { class: "muted cell-meta" }, item.reason ?? ""));
      cell.addEventListener("click", () => {
        g.cursor = i;
        draw();
      });
      return cell;
    })),
    el("h3", {}, "Classes"), classList(null, null));
}

function keysTable() {
  const k = state.keys;
  const classKey = k.scheme === "name" ? "the class's own key (0-9)" : k.scheme === "index" ? "1-9, 0 (shown beside each class)" :
    "its " + k.width + "-digit code, typed in a row (shown beside each class)";
  const rows = [[classKey, "pick that class (grid: set the item under the cursor)"], ["Enter", "confirm (the model's answer when no class was picked; grid: the whole page)"],
    ["s", "skip"], ["n", "none of these classes"], ["Backspace", "take the last answer back (grid: reset the item)"],
    ["\u2190 \u2192 \u2191 \u2193", "previous / next item (grid: move the cursor)"], ["g", "grid mode on / off"], ["w", "why: the model's reasons for its answer on / off"], ["Escape", "clear the pick"]];
  return el("table", { class: "grid keys", id: "keys" }, el("tbody", {}, rows.map(([a, b]) => el("tr", {}, el("th", {}, el("kbd", {}, a)), el("td", {}, b)))));
}

function draw() {
  status.textContent = countsText();
  notice.textContent = state.message;
  clear(view).append(state.grid ? gridView() : singleView());
  root.dataset.mode = state.grid ? "grid" : "single";
  root.dataset.index = String(state.index);
  root.dataset.answered = String(state.session.labels);
}

function refreshCounts() {
  if (state.pending) return;
  metaRequest().then((m) => {
    state.meta.counts = m.counts;
    status.textContent = countsText();
  }, () => {});
}

function metaRequest() {
  return api("/ui/api/labeling/" + encodeURIComponent(name), versionArg ? { version: versionArg } : {});
}

// ---- start -----------------------------------------------------------------------------------------------------

function askAnnotator() {
  return new Promise((resolve) => {
    const input = el("input", { type: "text", id: "annotator-input", name: "annotator", autocomplete: "name", maxlength: 250 });
    const form = el("form", { id: "annotator-form", class: "token-form" },
      el("h2", {}, "Who is labelling?"),
      el("p", { class: "muted" }, "Your name goes with each label (several annotators may label one item; their agreement is reported). " +
        "It is kept in this browser."),
      el("label", { for: "annotator-input" }, "Name "), input, el("button", { type: "submit" }, "Start"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const v = input.value.trim();
      if (!v) return;
      localStorage.setItem(ANNOTATOR_KEY, v);
      form.remove();
      resolve(v);
    });
    root.append(form);
    input.focus();
  });
}

// Without ?name=: the models, each a link to its queue.
async function chooseModel() {
  setTitle("Labeling");
  root.append(el("h1", {}, "Labeling"), el("p", { class: "muted" }, "Choose a model to label its queued requests " +
    "(loopml label queue NAME@ALIAS builds the queue from the requests the server logged)."));
  try {
    const body = await api("/ui/api/models");
    root.append(body.models.length ? el("ul", { id: "label-models" }, body.models.map((m) =>
      el("li", {}, el("a", { href: "/ui/labeling?name=" + encodeURIComponent(m.name) }, m.name)))) :
      el("p", { class: "muted" }, "No model is registered yet."));
  } catch (err) {
    showError(root, err);
  }
}

async function start() {
  if (!name) {
    await chooseModel();
    root.dataset.ready = "true";
    return;
  }
  try {
    state.meta = await metaRequest();
  } catch (err) {
    showError(root, err);
    root.dataset.ready = "true";
    return;
  }
  const m = state.meta;
  setTitle("Label " + name + "/" + m.version);
  state.classes = (m.class_names || []).map(String);
  state.keys = classKeys(state.classes);
  const modelHref = "/ui/model?name=" + encodeURIComponent(name) + "&version=" + encodeURIComponent(m.version);
  root.append(
    el("p", {}, el("a", { href: "/ui/models" }, "Models"), " / ", el("a", { href: modelHref, id: "model-link" }, name + "/" + m.version),
      " / ", el("a", { href: "/ui/monitoring?name=" + encodeURIComponent(name) + "&version=" + encodeURIComponent(m.version), id: "monitoring-link" }, "monitoring"), " /"),
    el("h1", { id: "labeling-title" }, "Labeling: " + name + (versionArg ? "/" + m.version : "")));
  if (!state.classes.length) {
    root.append(el("p", { class: "error", id: "no-classes" }, name + "/" + m.version + " has no class names in its signature, so the page " +
      "has no classes to offer. Register the version with class_names=[...] to label its requests here."));
    root.dataset.ready = "true";
    return;
  }
  if (!state.annotator) {
    root.dataset.ready = "true";
    root.dataset.asking = "annotator";
    state.annotator = await askAnnotator();
    delete root.dataset.asking;
  }
  const who = el("button", { type: "button", class: "link", id: "change-annotator" }, "change");
  who.addEventListener("click", () => {
    localStorage.removeItem(ANNOTATOR_KEY);
    location.reload();
  });
  root.append(el("p", { class: "muted" }, "Labelling as ", el("strong", { id: "annotator" }, state.annotator), " (", who, ")."),
    status, notice, errors, view, el("h2", {}, "Keys"), keysTable());
  try {
    await fetchMore();
  } catch (err) {
    showError(errors, err);
  }
  state.index = 0;
  document.addEventListener("keydown", onKey);
  show();
  busyChanged();
  root.dataset.ready = "true";
}

start();
