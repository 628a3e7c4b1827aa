// Fetching the UI's JSON with the server's bearer token.
//
// The token is asked for once per tab (a form shown on the first 401) and kept in
// sessionStorage; `#token=...` in the address is read once and removed from it.

import { el } from "./dom.js";

const TOKEN_KEY = "loopml.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

(function readTokenFromAddress() {
  const m = /^#token=(.+)$/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
})();

function headers() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

let asking = null;

// Show the token form (once, however many requests are waiting) and resolve when it is sent.
function askToken(wrong) {
  if (asking) return asking;
  asking = new Promise((resolve) => {
    const input = el("input", { type: "password", name: "token", autocomplete: "off", id: "token-input" });
    const form = el(
      "form",
      { class: "token-form", id: "token-form" },
      el("h2", {}, "This loopml server needs a token"),
      el("p", { class: "muted" }, wrong ? "That token was refused; try again." :
        "Paste the server's token (LOOPML_SERVER_TOKEN). It is kept in this tab only."),
      el("label", { for: "token-input" }, "Token "),
      input,
      el("button", { type: "submit" }, "Open"),
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      form.remove();
      asking = null;
      resolve();
    });
    document.body.prepend(form);
    input.focus();
  });
  return asking;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "") continue;
    for (const item of Array.isArray(v) ? v : [v]) q.append(k, String(item));
  }
  const s = q.toString();
  return s ? "?" + s : "";
}

async function request(path, params, init) {
  for (;;) {
    const extra = (init && init.headers) || {};
    const resp = await fetch(path + query(params), { cache: "no-store", ...(init || {}), headers: { ...headers(), ...extra } });
    if (resp.status === 401) {
      await askToken(Boolean(sessionStorage.getItem(TOKEN_KEY)));
      continue;
    }
    if (!resp.ok) {
      let code = "http_" + resp.status, message = resp.statusText;
      try {
        const body = await resp.json();
        code = body.error.code;
        message = body.error.message;
      } catch (_) { /* not our JSON error shape */ }
      throw new ApiError(resp.status, code, message);
    }
    return resp;
  }
}

export async function api(path, params) {
  return (await request(path, params)).json();
}

// POST a JSON body (the server takes state-changing requests as application/json only) and read the JSON answer.
export async function apiPost(path, body) {
  const init = { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } };
  return (await request(path, {}, init)).json();
}

export async function apiBlob(path, params) {
  return (await request(path, params)).blob();
}

// Download through fetch (a plain link could not send the token).
export async function download(path, params, filename) {
  const blob = await apiBlob(path, params);
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
