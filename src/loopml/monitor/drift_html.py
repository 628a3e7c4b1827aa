"""A drift report as one standalone HTML page: inline CSS, inline SVG, no script, nothing fetched.

Every name and value from the data (feature names, category labels, notes) passes
through :func:`html.escape` before it reaches the page, so a column called
``<script>alert(1)</script>`` is shown as text, never run.

>>> page = render({"drifted": False, "drifted_features": [], "alpha": 0.05, "correction": "holm",
...                "min_effect": {}, "n_reference": 0, "n_current": 0, "features": [], "histograms": {},
...                "multivariate": None})
>>> page.startswith("<!DOCTYPE html>"), "<script" in page
(True, False)
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

__all__ = ["render"]

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px} .sub{color:#555;margin-bottom:16px}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:600}
.yes{background:#fde2e1;color:#a4161a} .no{background:#e3f4e8;color:#1b6b35}
table{border-collapse:collapse;width:100%} th,td{padding:4px 8px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:middle}
th{background:#f6f6f6;position:sticky;top:0} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.drifted td{background:#fff6f5} .note{color:#666;font-size:12px}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
"""

REF_COLOUR, CUR_COLOUR = "#4c78a8", "#f58518"


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"
    return escape(str(v))


def _svg(hist: dict[str, Any] | None) -> str:
    """Reference and current shares side by side: a histogram for numbers, bars for categories."""
    if not hist:
        return ""
    ref, cur = hist["reference"], hist["current"]
    n = len(ref)
    if n == 0:
        return ""
    width, height = 220, 48
    top = max(max(ref, default=0.0), max(cur, default=0.0)) or 1.0
    slot = width / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    labels = hist.get("labels") or [f"{a:.4g} .. {b:.4g}" for a, b in zip(hist.get("edges", [])[:-1], hist.get("edges", [])[1:])]
    for i in range(n):
        for j, (share, colour) in enumerate(((ref[i], REF_COLOUR), (cur[i], CUR_COLOUR))):
            h = height * share / top
            x = i * slot + j * slot / 2
            label = labels[i] if i < len(labels) else ""
            parts.append(
                f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{max(slot / 2 - 0.5, 0.5):.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{escape(str(label))}: {"reference" if j == 0 else "current"} {share:.2%}</title></rect>'
            )
    parts.append("</svg>")
    return "".join(parts)


def render(report: dict[str, Any]) -> str:
    """The page of :meth:`loopml.monitor.univariate.DriftReport.to_dict`'s dict."""
    drifted = bool(report["drifted"])
    flagged = report.get("drifted_features") or []
    rows = []
    for f in report["features"]:
        name = str(f["feature"])
        missing = f"{_pct(f.get('missing_reference'))} &rarr; {_pct(f.get('missing_current'))}"
        why = [w for w, key in (("distribution", "distribution_drifted"), ("missing rate", "missing_drifted"),
                                 ("new categories", "new_drifted")) if f.get(key)]
        new = f"{f.get('new_categories', 0)} ({_pct(f.get('new_rate'))})" if f.get("new_categories") else "-"
        rows.append(
            f'<tr class="{"drifted" if f["drifted"] else ""}"><td>{escape(name)}</td><td>{escape(str(f["kind"]))}</td>'
            f'<td>{escape(str(f["test"]))}</td><td class="num">{_num(f.get("statistic"))}</td>'
            f'<td class="num">{_num(f.get("p_adjusted"), 3)}</td>'
            f'<td class="num">{_num(f.get("effect"))}</td><td>{escape(str(f["effect_name"]))}</td>'
            f'<td>{escape(", ".join(why)) if why else "no"}</td><td>{missing}</td><td>{new}</td>'
            f'<td>{_svg(report.get("histograms", {}).get(name))}</td>'
            f'<td class="note">{escape(str(f.get("note") or ""))}</td></tr>'
        )
    multi = report.get("multivariate")
    multi_line = ""
    if multi:
        multi_line = (f'<p>Multivariate ({escape(str(multi.get("test")))}): statistic {_num(multi.get("statistic"))}, '
                      f'p = {_num(multi.get("p_value"))}, {"drifted" if multi.get("drifted") else "no drift"}</p>')
    minimums = ", ".join(f"{escape(str(k))} {v:g}" for k, v in report.get("min_effect", {}).items())
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>Drift report</title><style>{CSS}</style></head><body>"
        f'<h1>Drift report <span class="badge {"yes" if drifted else "no"}">{"drifted" if drifted else "no drift"}</span></h1>'
        f'<div class="sub">{len(report["features"])} features, {len(flagged)} drifted'
        + (f": {escape(', '.join(map(str, flagged)))}" if flagged else "")
        + f'; {report["n_reference"]:,} reference rows, {report["n_current"]:,} current rows; '
        f'Holm correction at alpha {report["alpha"]:g}; minimum effects: {minimums}</div>'
        f"{multi_line}"
        f'<div class="legend">shares:<span style="background:{REF_COLOUR}"></span>reference'
        f'<span style="background:{CUR_COLOUR}"></span>current</div>'
        "<table><thead><tr><th>feature</th><th>kind</th><th>test</th><th>statistic</th><th>p adjusted</th>"
        "<th>effect</th><th>effect size</th><th>drifted</th><th>missing</th><th>new categories</th>"
        "<th>distribution</th><th>note</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></body></html>\n"
    )


def _pct(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{float(v):.1%}"
