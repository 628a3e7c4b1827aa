"""The prediction log page, and the explanation of a version's stored input example (the Model page's).

=====  ==================================================  ==================================================
GET    /ui/predictions?name=&version=                      page: a model's newest logged requests, paged; a click
                                                           shows one request's input and its explanation
GET    /ui/api/predictions/{name}?version=&before=&limit=  one page of the log, newest first: time, request id,
                                                           version, status, prediction, confidence, OOD score, label;
                                                           ``next``: the ``before`` of the next page (null: the end)
GET    /ui/api/models/{name}/versions/{version}/explain    the version's stored input example explained:
       ?row=&method=&target=&steps=                        ``GET /api/v1/predictions/{id}/explanation``'s shape,
                                                           with ``rows`` (the example's row count)
=====  ==================================================  ==================================================

A request's explanation is ``GET /api/v1/predictions/{request_id}/explanation``
(:mod:`loopml.server.routes_explain`), which the page calls as the Python client would;
the drawing (a heat map blended over an image, signed bars for a table row) is
``static/lib/explain.js``, shared with the labeling page and the Model page.
Paging is by keyset (:meth:`~loopml.store.predictions.PredictionLog.newest`): ``before``
is ``"<created_at>~<request_id>"`` of the last request shown.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ...explanations import baseline_from_text
from ...errors import ArgumentError
from ...models.registry import version_example
from ...store.labels import LabelStore, consensus, item_votes
from ...store.predictions import PredictionLog
from ..errors import json_response
from ..routes_explain import budget_of, explainers, predicted, query_target, run_explanation
from ..routes_models import Registry
from . import labeling  # noqa: F401  imported first: Labeling comes before Predictions in the navigation bar
from .pages import Page, add_page

__all__ = ["MAX_PAGE", "router"]

MAX_PAGE = 200
router = APIRouter(include_in_schema=False)
add_page(router, Page(path="/ui/predictions", title="Predictions", script="predictions.js", nav=True))


def _cursor(text: str | None) -> tuple[float, str] | None:
    if text is None or not text:
        return None
    t, sep, rid = text.partition("~")
    try:
        at = float(t)
    except ValueError:
        at = float("nan")
    if not sep or not rid or math.isnan(at):
        raise ArgumentError(f"Argument before should be the 'next' of the previous page (<created_at>~<request_id>); got {text!r}")
    return at, rid


def _answer(outputs: str | None) -> dict[str, Any]:
    """The prediction and its confidence from the JSON the model server sent (a batch: every row's)."""
    try:
        doc = json.loads(outputs) if outputs else {}
    except ValueError:
        return {}
    found = doc.get("results") if isinstance(doc, dict) else None
    rows: list[Any] = found if isinstance(found, list) else [doc]
    preds, confs = [], []
    for r in rows:
        r = r if isinstance(r, dict) else {}
        p = r.get("probabilities")
        preds.append(r.get("prediction"))
        confs.append(max(p) if isinstance(p, list) and p and all(isinstance(v, (int, float)) for v in p) else None)
    return {"prediction": preds[0] if len(rows) == 1 else preds, "confidence": confs[0] if len(rows) == 1 else confs}


def _labels(store: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Each request's standing label: one row's consensus (a batch: a list per row; ``disputed`` where annotators differ)."""
    fb = LabelStore(store).feedback_rows([r["request_id"] for r in records])
    out: dict[str, Any] = {}
    for r in records:
        rows = fb.get(r["request_id"])
        if not rows:
            continue
        try:
            votes = item_votes(rows, int(r["rows"]))
        except ArgumentError:
            continue
        per_row = []
        for i in range(int(r["rows"])):
            status, label = consensus(votes.get(i, {}))
            per_row.append(label if status == "labelled" else ("disputed" if status == "disputed" else None))
        out[r["request_id"]] = per_row[0] if len(per_row) == 1 else per_row
    return out


@router.get("/ui/api/predictions/{name}")
def predictions(
    name: str,
    registry: Registry,
    version: Annotated[int | None, Query(ge=1)] = None,
    before: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> Response:
    info = registry.get_model(name)  # 404 for a model that does not exist
    shown = version if version is not None else info.latest_version
    sig: dict[str, Any] = registry.get_version(name, shown).signature if shown is not None else {}
    log = PredictionLog(registry.store)
    records = log.newest(name, version, before=_cursor(before), limit=limit)
    labels = _labels(registry.store, records)
    rows = [{"request_id": r["request_id"], "version": r["version"], "created_at": r["created_at"], "status": r["status"],
             "rows": r["rows"], "latency_ms": r["latency_ms"], "ood_score": r["ood_score"], "has_inputs": r["has_inputs"],
             **_answer(r["outputs"]), "label": labels.get(r["request_id"])} for r in records]  # fmt: skip
    last = records[-1] if len(records) == limit else None
    return json_response({
        "model": name, "version": version, "versions": [v.version for v in registry.list_versions(name)],
        "class_names": sig.get("class_names"), "feature_names": sig.get("feature_names"),
        "requests": rows, "next": None if last is None else f"{last['created_at']!r}~{last['request_id']}",
    })  # fmt: skip


@router.get("/ui/api/models/{name}/versions/{version}/explain")
def explain_example(
    name: str,
    version: int,
    request: Request,
    registry: Registry,
    row: Annotated[int, Query(ge=0)] = 0,
    method: str = "integrated_gradients",
    target: str | None = None,
    baseline: str | None = None,
    steps: int | None = None,
) -> Response:
    v = registry.get_version(name, version)
    x = version_example(registry, v)  # NotFound when the version has no stored example
    if x.ndim < 1 or len(x) == 0 or not 0 <= row < len(x):
        raise ArgumentError(f"Argument row should be a row of the stored input example, 0 to {max(0, len(x) - 1)}; got {row}")
    explainer = explainers(request).get(registry, v)
    classes = explainer.signature.class_names if explainer.signature is not None else None
    opts: dict[str, Any] = {"method": method, "target": query_target(target, classes), "baseline": baseline_from_text(baseline),
                            "steps": steps}
    e = run_explanation(lambda: explainer.explain(x[row : row + 1], budget=budget_of(request), **opts), v.ref)
    items = predicted(e, classes)
    items[0]["row"] = row
    items[0]["input"] = np.asarray(x[row], dtype=np.float64).tolist()
    return json_response(e.answer({"model": v.name, "version": v.version, "rows": len(x)}, items, single=True))
