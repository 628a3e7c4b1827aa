// Building DOM nodes from data without ever parsing data as HTML.
//
// el(tag, attrs, ...children): strings become text nodes (textContent), so a run
// named "<script>" shows as those characters. Never use innerHTML with data.

const SAFE_URL = /^(\/|\?|#|blob:)/;

export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      node.addEventListener(k.slice(2), v);
    } else if ((k === "href" || k === "src") && !SAFE_URL.test(String(v))) {
      throw new Error("refusing a URL that is not same-origin: " + v);
    } else if (k === "dataset") {
      Object.assign(node.dataset, v);
    } else {
      node.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

export function main() {
  return document.getElementById("main");
}

export function fmtNum(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "string") return v; // "NaN", "Infinity", "-Infinity"
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(4) : String(Number(v.toPrecision(6)));
}

export function fmtTime(t) {
  if (t === null || t === undefined) return "";
  const d = new Date(t * 1000);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function fmtDuration(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}

export function statusBadge(status) {
  return el("span", { class: "status status-" + String(status).toLowerCase() }, status);
}

export function runLink(id, name) {
  return el("a", { href: "/ui/run?id=" + encodeURIComponent(id), class: "run-link" }, name || id);
}

export function showError(container, err) {
  const box = el("div", { class: "error", role: "alert" },
    el("strong", {}, err.code ? err.code + ": " : "error: "),
    el("pre", {}, err.message || String(err)));
  container.append(box);
  return box;
}

export function setTitle(text) {
  document.title = text + " · loopml";
}
