// Drawing an explanation (the servers' JSON: loopml.explanations.Explanation.row_dict), shared by the prediction log,
// the labeling page and the Model page.
//
// An image row: a canvas of the image in grey with the attributions blended over it, red where a pixel pushes the
// explained class up, blue where it pushes it down, the more opaque the stronger (scaled to the row's largest), as
// Explanation.heatmap_rgba draws it in Python. A table row: signed horizontal bars of the strongest features (the
// answer's `top`), red to the right for positive, blue to the left for negative.

import { api } from "./api.js";
import { el, fmtNum } from "./dom.js";

export const POSITIVE = [0xc0, 0x39, 0x2b]; // #c0392b, as loopml.explanations.explanation.POSITIVE
export const NEGATIVE = [0x24, 0x71, 0xa3]; // #2471a3
const ALPHA = 0.75; // the most the colour covers the image

export const METHODS = [
  ["integrated_gradients", "integrated gradients"],
  ["saliency", "saliency"],
  ["gradient_shap", "gradient SHAP"],
  ["deeplift", "DeepLIFT"],
  ["occlusion", "occlusion"],
  ["feature_ablation", "feature ablation"],
];

function dims(a) {
  const out = [];
  let x = a;
  while (Array.isArray(x)) {
    out.push(x.length);
    x = x[0];
  }
  return out;
}

// The layout of one row: { image, h, w, c, at(flat, y, x, k) } for (h, w), (c, h, w) and (h, w, c); image false for a table row.
export function layoutOf(attributions) {
  const s = dims(attributions);
  if (s.length === 2) return { image: true, h: s[0], w: s[1], c: 1, at: (v, y, x) => v[y * s[1] + x] };
  if (s.length === 3 && s[0] <= 4 && s[2] > 4) {
    const [c, h, w] = s;
    return { image: true, h, w, c, at: (v, y, x, k) => v[k * h * w + y * w + x] };
  }
  if (s.length === 3) {
    const [h, w, c] = s;
    return { image: true, h, w, c, at: (v, y, x, k) => v[(y * w + x) * c + k] };
  }
  return { image: false };
}

const num = (x) => (typeof x === "number" && Number.isFinite(x) ? x : 0);

// The image of `input` in grey with `attributions` blended over it, scaled (nearest neighbour) to about `size` pixels.
export function heatmapCanvas(input, attributions, size) {
  const L = layoutOf(attributions);
  if (!L.image) return null;
  const { h, w, c, at } = L;
  const a = attributions.flat(Infinity);
  const v = Array.isArray(input) ? input.flat(Infinity) : [];
  const grey = new Float64Array(h * w);
  const heat = new Float64Array(h * w);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let g = 0, s = 0;
      for (let k = 0; k < c; k++) {
        g += v.length === a.length ? num(at(v, y, x, k)) : 0;
        s += num(at(a, y, x, k));
      }
      grey[y * w + x] = g / c;
      heat[y * w + x] = s;
    }
  }
  let lo = Infinity, hi = -Infinity, top = 0;
  for (let i = 0; i < h * w; i++) {
    lo = Math.min(lo, grey[i]);
    hi = Math.max(hi, grey[i]);
    top = Math.max(top, Math.abs(heat[i]));
  }
  const off = document.createElement("canvas");
  off.width = w;
  off.height = h;
  const octx = off.getContext("2d");
  const img = octx.createImageData(w, h);
  let positive = 0, negative = 0;
  for (let i = 0; i < h * w; i++) {
    const g = hi > lo ? (grey[i] - lo) / (hi - lo) : 0;
    const m = top > 0 ? Math.abs(heat[i]) / top : 0;
    const colour = heat[i] > 0 ? POSITIVE : NEGATIVE;
    const wgt = ALPHA * m;
    if (m > 0.05) heat[i] > 0 ? positive++ : negative++;
    for (let k = 0; k < 3; k++) img.data[4 * i + k] = Math.round(255 * ((1 - wgt) * g + wgt * (colour[k] / 255)));
    img.data[4 * i + 3] = 255;
  }
  octx.putImageData(img, 0, 0);
  const scale = Math.max(1, Math.floor(size / Math.max(h, w)));
  const canvas = el("canvas", { class: "heatmap", width: w * scale, height: h * scale,
    dataset: { pixels: w + "x" + h, positive: String(positive), negative: String(negative) } });
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, 0, 0, w * scale, h * scale);
  return canvas;
}

export function legend(image) {
  const swatch = (rgb) => el("span", { class: "swatch", style: "background: rgb(" + rgb.join(",") + ")" });
  return el("p", { class: "explain-legend muted" }, swatch(POSITIVE), " red: pushes the output toward the explained class · ",
    swatch(NEGATIVE), " blue: pushes it away" + (image ? "; the stronger, the more opaque (over the image in grey)" :
      "; bar length: the attribution"));
}

// Signed bars of a table row's strongest features (`top`: { positive: [{feature, value, attribution}], negative: [...] }).
export function barsView(top) {
  const rows = [...(top && top.positive) || [], ...((top && top.negative) || []).slice().reverse()];
  const most = Math.max(1e-12, ...rows.map((r) => Math.abs(num(r.attribution))));
  const HALF = 160; // pixels of the longest bar
  return el("table", { class: "grid explain-bars" },
    el("thead", {}, el("tr", {}, el("th", {}, "feature"), el("th", { class: "num" }, "value"), el("th", { class: "bars" }, "attribution"),
      el("th", { class: "num" }, ""))),
    el("tbody", {}, rows.map((r) => {
      const a = num(r.attribution);
      const px = Math.max(1, Math.round(HALF * Math.abs(a) / most));
      const bar = el("span", { class: "sbar " + (a > 0 ? "pos" : "neg"), style: "width: " + px + "px; background: rgb(" +
        (a > 0 ? POSITIVE : NEGATIVE).join(",") + ")" });
      return el("tr", { dataset: { feature: String(r.feature), sign: a > 0 ? "+" : "-" } },
        el("th", {}, String(r.feature)), el("td", { class: "num" }, fmtNum(r.value)),
        el("td", { class: "bars" }, el("span", { class: "half neg" }, a < 0 ? bar : ""), el("span", { class: "half pos" }, a > 0 ? bar : "")),
        el("td", { class: "num" }, fmtNum(Number(a.toPrecision(4)))));
    })));
}

// The method, explained class and delta of an answer, as a line.
export function summary(answer) {
  const parts = [String(answer.method || "").replace(/_/g, " ")];
  if (answer.target !== null && answer.target !== undefined) parts.push("class " + answer.target);
  if (typeof answer.delta === "number") parts.push("delta " + Number(answer.delta.toPrecision(2)));
  if (answer.baseline) parts.push("baseline " + answer.baseline);
  if (typeof answer.evaluations === "number") parts.push(answer.evaluations + " evaluations");
  if (typeof answer.seconds === "number") parts.push((1000 * answer.seconds).toFixed(1) + " ms");
  return el("p", { class: "explain-summary" }, parts.join(" · "));
}

// The whole view of one explained row: the summary, the heat map (image) or the bars (table), and the legend.
// `input`: the row's values (default: the answer's own `input`).
export function explanationView(answer, input, size) {
  const values = input ?? answer.input;
  const canvas = heatmapCanvas(values, answer.attributions, size || 256);
  return el("div", { class: "explanation", dataset: { method: String(answer.method), target: String(answer.target ?? "") } },
    summary(answer), canvas || barsView(answer.top), legend(Boolean(canvas)), faithfulness(answer.faithfulness));
}

// The deletion test of the row (loopml.explanations.Explainer.faithfulness), when the answer has it.
export function faithfulness(f) {
  if (!f) return "";
  const n = (v) => Number(Number(v).toPrecision(3));
  return el("p", { class: "faithfulness muted", dataset: { faithful: String(f.faithful) } },
    (f.faithful ? "Faithful: " : "Not shown faithful: ") + "removing the " + f.removed + " values with the largest " +
    "attributions lowers the class's output by " + n(f.top_drop) + "; removing as many at random, by " + n(f.random_drop) +
    " ± " + n(f.random_sd) + ".");
}

export function methodSelect(current, onChange, id) {
  const select = el("select", { id: id || "method", name: "method" },
    METHODS.map(([value, text]) => el("option", { value, selected: value === current }, text)));
  select.addEventListener("change", () => onChange(select.value));
  return el("label", { class: "method-select" }, "method ", select);
}

// GET a logged request's explanation (row `row`) by `method`.
export function explainRequest(requestId, row, method) {
  // check: the faithfulness test rides along (one batched forward pass)
  return api("/api/v1/predictions/" + encodeURIComponent(requestId) + "/explanation", { method, row, check: true });
}
