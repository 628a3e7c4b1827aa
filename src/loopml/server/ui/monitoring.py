"""The monitoring page of one model version: data drift per feature over windows, accuracy, abstention, alerts.

=====  ==========================================================  ===========================================
GET    /ui/monitoring?name=&version=                               page: the heat map, the charts, the alerts
GET    /ui/api/models/{name}/versions/{ver}/monitoring             what the page draws, from the stored results
       ?windows=&features=&alerts=                                 (the newest ``windows`` per kind, the top
                                                                   ``features`` by effect, the newest ``alerts``)
GET    /ui/api/models/{name}/versions/{ver}/monitoring/drift/{id}  one stored drift window as the standalone
                                                                   HTML report (a download)
=====  ==========================================================  ===========================================

The results are those :class:`~loopml.store.monitoring.MonitorLog` holds, written by
``loopml monitor watch NAME@ALIAS`` or ``loopml serve --monitor``: one per window and
kind (``drift``, ``predictions``, ``performance``), and the alerts fired for the version.

**The heat map's value** is a feature's effect size divided by the smallest effect that
can flag it (the report's ``min_effect`` for that effect measure,
:data:`loopml.monitor.univariate.MIN_EFFECT` by default): the effects of numeric
(Wasserstein-1 / reference sd) and categorical (Jensen-Shannon distance) columns are on
different scales, and 1 is where each starts to count. ``significant`` says whether the
cell's test was significant after the correction (``p_adjusted < alpha``): with a few
hundred rows, noise alone gives effects of several times the minimum, and the page fades
those cells. Whether a cell drifted comes from
the report (significant after Holm's correction **and** at least the minimum effect, or a
missing-value or new-category change on its own). A window whose report is ``{"status":
"not enough data"}`` is sent as such, with no cells.

Bounds: at most :data:`MAX_WINDOWS` windows per kind and :data:`MAX_FEATURES` features
(those with the largest ratio in the windows shown); ``truncated`` says when more are
stored, and the page says so.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from ...errors import NotFound
from ...monitor.drift_html import render
from ...store.monitoring import MonitorLog
from ..errors import json_response
from ..routes_models import Registry
from .pages import SECURITY_HEADERS, Page, add_page

__all__ = ["DEFAULT_FEATURES", "DEFAULT_WINDOWS", "MAX_ALERTS", "MAX_FEATURES", "MAX_WINDOWS", "drift_matrix", "router"]

DEFAULT_WINDOWS = 200  # per kind: the newest; a chart 1,000 pixels wide has 5 pixels per window
MAX_WINDOWS = 1_000
DEFAULT_FEATURES = 30  # heat-map rows that still read at 22 pixels each
MAX_FEATURES = 200
DEFAULT_ALERTS = 100
DEFAULT_ALPHA = 0.05  # drift()'s default, for a stored report that does not say
MAX_ALERTS = 1_000

PERFORMANCE_KEYS = ("accuracy", "accuracy_low", "accuracy_high", "labelled", "estimated_accuracy", "abstention_rate")
PREDICTION_KEYS = ("requests", "rows", "abstained", "abstention_rate", "mean_confidence", "prediction_drift_js",
                   "prediction_drifted")  # fmt: skip
COUNT_KEYS = ("labelled", "requests", "rows", "abstained")
ALERT_KEYS = ("id", "fired_at", "name", "target", "metric", "op", "threshold", "value", "message", "delivered",
              "delivery_error")  # fmt: skip

router = APIRouter(include_in_schema=False)
add_page(router, Page(path="/ui/monitoring", title="Monitoring", script="monitoring.js", charts=True))


def _finite(v: Any) -> float | None:
    """A number for a chart, or None (a gap): stored NaN is already null, but a payload is user data."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _newest(log: MonitorLog, name: str, version: int, kind: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
    rows = log.results(name, version, kind, limit=limit + 1)  # one more: were there more than shown?
    return (rows[1:], True) if len(rows) > limit else (rows, False)


def _window(r: dict[str, Any]) -> dict[str, Any]:
    return {"id": r["id"], "window_start": r["window_start"], "window_end": r["window_end"], "rows": r["rows"]}


def _ratio(effect: float | None, minimum: Any) -> float | None:
    m = _finite(minimum)
    if effect is None:
        return None
    return effect / m if m else effect


def drift_matrix(rows: list[dict[str, Any]], max_features: int) -> dict[str, Any]:
    """The heat map of stored drift results (oldest window first): windows, and per feature one cell per window.

    >>> w = {"id": 1, "window_start": 0.0, "window_end": 60.0, "rows": 500, "flagged": True,
    ...      "payload": {"min_effect": {"wasserstein/sd": 0.05}, "share_drifted": 0.5, "features": [
    ...          {"feature": "age", "kind": "numeric", "effect": 0.2, "effect_name": "wasserstein/sd", "drifted": True},
    ...          {"feature": "fee", "kind": "numeric", "effect": 0.01, "effect_name": "wasserstein/sd", "drifted": False}]}}
    >>> m = drift_matrix([w, {**w, "id": 2, "flagged": None, "payload": {"status": "not enough data", "reason": "9 rows"}}], 1)
    >>> [f["feature"] for f in m["features"]], m["features"][0]["ratio"], m["feature_count"]
    (['age'], [4.0, None], 2)
    >>> [x["status"] for x in m["windows"]]
    ['ok', 'not enough data']
    """
    windows: list[dict[str, Any]] = []
    cells: dict[str, dict[int, dict[str, Any]]] = {}
    meta: dict[str, dict[str, Any]] = {}
    for i, r in enumerate(rows):
        p = r["payload"] if isinstance(r["payload"], dict) else {}
        w = _window(r)
        features = p.get("features")
        if not isinstance(features, list):
            w.update(status="not enough data", reason=str(p.get("reason") or p.get("status") or "no report"), drifted=None)
            windows.append(w)
            continue
        multi = p.get("multivariate") if isinstance(p.get("multivariate"), dict) else None
        w.update(status="ok", reason=None, drifted=r["flagged"], share_drifted=_finite(p.get("share_drifted")),
                 n_reference=p.get("n_reference"), n_current=p.get("n_current"),
                 multivariate=None if multi is None else {k: multi.get(k) for k in ("test", "statistic", "p_value", "drifted")})  # fmt: skip
        windows.append(w)
        alpha = _finite(p.get("alpha")) or DEFAULT_ALPHA
        raw_minimums = p.get("min_effect")
        minimums: dict[Any, Any] = raw_minimums if isinstance(raw_minimums, dict) else {}
        for f in features:
            if not isinstance(f, dict) or "feature" not in f:
                continue
            name = str(f["feature"])
            effect = _finite(f.get("effect"))
            why = [label for label, key in (("distribution", "distribution_drifted"), ("missing rate", "missing_drifted"),
                                            ("new categories", "new_drifted")) if f.get(key) is True]  # fmt: skip
            p_adjusted = _finite(f.get("p_adjusted"))
            cells.setdefault(name, {})[i] = {
                "ratio": _ratio(effect, minimums.get(f.get("effect_name"))), "effect": effect,
                "p_adjusted": p_adjusted, "significant": p_adjusted is not None and p_adjusted < alpha,
                "drifted": f.get("drifted") is True, "why": why,
            }  # fmt: skip
            meta.setdefault(name, {"kind": f.get("kind"), "effect_name": f.get("effect_name"),
                                   "min_effect": _finite(minimums.get(f.get("effect_name")))})  # fmt: skip

    def rank(name: str) -> tuple[int, float]:
        values = [c["ratio"] for c in cells[name].values() if c["ratio"] is not None]
        return (-sum(c["drifted"] for c in cells[name].values()), -max(values, default=-math.inf))

    order = sorted(cells, key=rank)  # most often drifted, then largest effect; stable: column order on ties
    shown = order[:max_features]
    out = []
    for name in shown:
        by_window = cells[name]
        row = [by_window.get(i) for i in range(len(windows))]
        out.append({
            "feature": name, **meta[name],
            "ratio": [c["ratio"] if c else None for c in row], "effect": [c["effect"] if c else None for c in row],
            "p_adjusted": [c["p_adjusted"] if c else None for c in row],
            "significant": [c["significant"] if c else None for c in row],
            "drifted": [c["drifted"] if c else None for c in row], "why": [c["why"] if c else None for c in row],
        })  # fmt: skip
    return {"windows": windows, "features": out, "feature_count": len(order), "features_truncated": len(order) > len(shown)}


def _plain_row(r: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    p = r["payload"] if isinstance(r["payload"], dict) else {}
    out = _window(r)
    for k in keys:
        v = p.get(k)
        out[k] = v if v is None or isinstance(v, bool) or (isinstance(v, int) and k in COUNT_KEYS) else _finite(v)
    return out


def _performance_row(r: dict[str, Any]) -> dict[str, Any]:
    out = _plain_row(r, PERFORMANCE_KEYS)
    notes = r["payload"].get("notes") if isinstance(r["payload"], dict) else None
    # why a figure is missing ("no calibration for digits/3", "12 labelled rows: ..."), as the watcher wrote it
    out["notes"] = {str(k): str(v) for k, v in notes.items()} if isinstance(notes, dict) else {}
    return out


@router.get("/ui/api/models/{name}/versions/{version}/monitoring")
def monitoring(
    name: str,
    version: int,
    registry: Registry,
    windows: Annotated[int, Query(ge=1, le=MAX_WINDOWS)] = DEFAULT_WINDOWS,
    features: Annotated[int, Query(ge=1, le=MAX_FEATURES)] = DEFAULT_FEATURES,
    alerts: Annotated[int, Query(ge=1, le=MAX_ALERTS)] = DEFAULT_ALERTS,
) -> Response:
    registry.get_version(name, version)  # 404 for a model or version that does not exist
    log = MonitorLog(registry.store)
    drift_rows, drift_more = _newest(log, name, version, "drift", windows)
    perf_rows, perf_more = _newest(log, name, version, "performance", windows)
    pred_rows, pred_more = _newest(log, name, version, "predictions", windows)
    fired = log.alerts(name, version=version, limit=alerts + 1)
    alerts_more = len(fired) > alerts
    fired = fired[-alerts:][::-1]  # newest first
    matrix = drift_matrix(drift_rows, features)
    body = {
        "model": name,
        "version": version,
        "limits": {"windows": windows, "features": features, "alerts": alerts},
        "drift": {**matrix, "truncated": drift_more},
        "performance": {"windows": [_performance_row(r) for r in perf_rows], "truncated": perf_more},
        "predictions": {"windows": [_plain_row(r, PREDICTION_KEYS) for r in pred_rows], "truncated": pred_more},
        "alerts": {
            "rows": [{k: (_finite(a[k]) if k in ("value", "threshold") else a[k]) for k in ALERT_KEYS} for a in fired],
            "truncated": alerts_more,
        },
        "empty": not (drift_rows or perf_rows or pred_rows or fired),
    }
    return json_response(body)


@router.get("/ui/api/models/{name}/versions/{version}/monitoring/drift/{result_id}")
def drift_report(name: str, version: int, result_id: int, registry: Registry) -> Response:
    """The stored drift window as :meth:`~loopml.monitor.univariate.DriftReport.to_html`'s page (no histograms: not stored)."""
    registry.get_version(name, version)
    log = MonitorLog(registry.store)
    try:
        r = log.result(result_id)
    except NotFound:
        r = None
    if r is None or (r["model"], r["version"], r["kind"]) != (name, version, "drift"):
        raise NotFound(f"{name}/{version} has no stored drift result {result_id}")
    if not isinstance(r["payload"].get("features"), list):
        raise NotFound(f"Drift result {result_id} of {name}/{version} has no report: {r['payload'].get('reason') or 'not enough data'}")
    p = r["payload"]
    # the page of DriftReport.to_dict(); what a payload lacks is filled, so a partial one still renders
    features = [{"kind": "", "test": "", "effect_name": "", "drifted": False, **f}
                for f in p["features"] if isinstance(f, dict) and "feature" in f]  # fmt: skip
    report = {
        "drifted": bool(p.get("drifted", r["flagged"])), "drifted_features": p.get("drifted_features") or [],
        "alpha": _finite(p.get("alpha")) or 0.05, "min_effect": p.get("min_effect") or {},
        "n_reference": int(p.get("n_reference") or 0), "n_current": int(p.get("n_current") or 0),
        "multivariate": p.get("multivariate"), "features": features, "histograms": {},
    }  # fmt: skip
    headers = {**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="drift-{result_id}.html"'}
    return Response(render(report), media_type="text/html; charset=utf-8", headers=headers)
