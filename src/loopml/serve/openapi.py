"""The model server's OpenAPI document and the ``/docs`` page (Swagger UI).

Written out rather than generated: the server has a handful of routes and no
web framework on its request path. ``document(model, signature)`` fills in
the served model's input shape so that clients (and schemathesis) see what a
valid request looks like.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..explanations import ALIASES, METHODS

__all__ = ["DOCS_HTML", "document"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(c): {"description": "an error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for c in codes
    }


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def document(
    model: str, input_shape: list[int | None] | None = None, feature_names: list[str] | None = None,
    *, graph: tuple[int | None, bool] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a server for ``model`` (input shape with ``None`` for the batch).

    With ``feature_names`` (a tabular model's signature), records by column name
    are described too: one record, a list of records, or column-oriented lists.
    ``graph=(features, stored)``: a graph model's predict body instead (a graph in the
    request; node ids of the stored graph too when ``stored``).
    """
    if graph is not None:
        out = document(model)
        post = out["paths"]["/v1/models/{name}/predict"]["post"]
        post["summary"] = "Predict nodes of a graph (graph model)"
        post["requestBody"]["content"]["application/json"]["schema"] = _graph_body(*graph)
        item = {"type": "object", "properties": {"node": {"description": "the node (its number, or its id in the stored graph)"},
                                                 "status": {"type": "string"}, "prediction": {},
                                                 "probabilities": {"type": "array", "items": {"type": "number"}}}}
        post["responses"]["200"] = _json({"type": "object", "required": ["request_id", "model", "version", "results"],
                                          "properties": {"request_id": {"type": "string"}, "model": {"type": "string"},
                                                         "version": {"type": "integer"},
                                                         "results": {"type": "array", "items": item}}})
        return out
    row: dict[str, Any] = {"type": "number"}
    for dim in reversed((input_shape or [None, None])[1:]):
        row = {"type": "array", "items": row}
        if dim is not None:
            row["minItems"] = row["maxItems"] = dim
    forms: list[dict[str, Any]] = [row, {"type": "array", "items": row, "minItems": 1}]
    if feature_names:
        cell = {"type": ["number", "string", "null"]}
        record = {"type": "object", "required": list(feature_names), "additionalProperties": False,
                  "properties": {n: cell for n in feature_names}}
        columns = {"type": "object", "required": list(feature_names), "additionalProperties": False,
                   "properties": {n: {"type": "array", "items": cell, "minItems": 1} for n in feature_names}}
        forms += [record, {"type": "array", "items": record, "minItems": 1}, columns]
    inputs = {"oneOf": forms}
    predict_body: dict[str, Any] = {
        "type": "object",
        "required": ["inputs"],
        "additionalProperties": False,
        "properties": {
            "inputs": inputs,
            "include_prediction": {"type": "boolean", "description": "answer the prediction with an abstention too"},
        },
    }
    answer: dict[str, Any] = {
        "type": "object",
        "required": ["request_id", "model", "version"],
        "properties": {
            "request_id": {"type": "string"},
            "model": {"type": "string"},
            "version": {"type": "integer"},
            "status": {"type": "string", "enum": ["ok", "abstain"]},
            "prediction": {},
            "probabilities": {"type": "array", "items": {"type": "number"}},
            "ood_score": {"type": "number"},
            "reason": {"type": "string"},
            "results": {"type": "array", "items": {"type": "object"}},
        },
    }
    name_param = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    any_object = {"type": "object"}
    options = _explain_options()
    explain_body = {
        "type": "object",
        "required": ["inputs"],
        "additionalProperties": False,
        "properties": {**predict_body["properties"], **options},
    }
    explained_row: dict[str, Any] = {
        "type": "object",
        "properties": {
            "target": {"type": ["string", "null"], "description": "the explained class (its name)"},
            "target_index": {"type": ["integer", "null"]},
            "attributions": {"type": "array", "description": "shaped like one input"},
            "delta": {"type": ["number", "null"], "description": "sum(attributions) - (F(x) - F(baseline)): IG, GradientSHAP, DeepLIFT"},
            "top": {"type": "object", "description": '{"positive": [{"feature", "value", "attribution"}, ...], "negative": [...]}'},
        },
    }
    explanation = {
        "type": "object",
        "required": ["request_id", "model", "version", "method", "baseline", "evaluations"],
        "properties": {
            **answer["properties"],
            **explained_row["properties"],
            "method": {"type": "string", "enum": list(METHODS)},
            "baseline": {"type": "string"},
            "options": {"type": "object"},
            "evaluations": {"type": "integer", "description": "forward passes over the batch"},
            "seconds": {"type": "number"},
            "format": {"type": "string", "description": "the stored format explained (torch, pt2, onnx)"},
            "results": {"type": "array", "items": {"type": "object", "properties": {**answer["properties"], **explained_row["properties"]}}},
        },
    }
    # in a query string: window and stride as "2,2", feature groups as JSON text
    text = {"window": ", e.g. 2,2", "stride": ", e.g. 2,2", "feature_groups": ""}
    query = [{"name": k, "in": "query", "required": False, "schema": {"type": "string"} if k in text else v,
              "description": v["description"] + text.get(k, "")} for k, v in options.items()]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"loopml model server: {model}",
            "version": __version__,
            "description": "Predictions from a registered version with adaptive batching. "
            'Every error answers {"error": {"code": ..., "message": ...}}. A binary NumPy body '
            "(Content-Type: application/x-npy) is accepted on predict as well.",
        },
        "paths": {
            "/v1/models/{name}/predict": {
                "post": {
                    "summary": "Predict one row or a batch",
                    "parameters": name_param,
                    "requestBody": {"required": True, "content": {"application/json": {"schema": predict_body}}},
                    "responses": {"200": _json(answer), **_errors(400, 401, 404, 413, 415, 422, 503)},
                }
            },
            "/v1/models/{name}/explain": {
                "post": {
                    "summary": "Predict and explain one row or a batch (attributions by a Captum method)",
                    "description": "The predict body plus the method and its options; a .npy body takes them in the query "
                    "string. Saliency answers at once; the other methods run in the server's explanation thread. A request "
                    "costing more than the server's budget (evaluations x rows x input size, loopml serve --explain-budget) "
                    "is refused with 422 over_budget; a gradient method on a version stored only as ONNX with 422 cannot_explain.",
                    "parameters": name_param,
                    "requestBody": {"required": True, "content": {"application/json": {"schema": explain_body}}},
                    "responses": {"200": _json(explanation), **_errors(400, 401, 404, 413, 415, 422, 503)},
                }
            },
            "/v1/predictions/{request_id}/explanation": {
                "get": {
                    "summary": "Explain a logged request, by the version that answered it",
                    "description": "404: no such request; 409 no_inputs: its inputs were not logged (--log-inputs).",
                    "parameters": [
                        {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}},
                        {"name": "row", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0},
                         "description": "one row of the request's batch (answered at the top level); default: every row"},
                        *query,
                    ],
                    "responses": {"200": _json(explanation), **_errors(401, 404, 409, 422, 503)},
                }
            },
            "/v1/models": {"get": {"summary": "The served model", "responses": {"200": _json(any_object), **_errors(401)}}},
            "/v1/models/{name}": {
                "get": {
                    "summary": "Signature, version and aliases",
                    "parameters": name_param,
                    "responses": {"200": _json(any_object), **_errors(401, 404, 503)},
                }
            },
            "/v1/feedback": {
                "post": {
                    "summary": "The true label of a past prediction",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["request_id", "label"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "request_id": {"type": "string"}, "label": {},
                                        "row": {"type": ["integer", "null"], "minimum": 0, "description": "the row of a batch"},
                                        "annotator": {"type": ["string", "null"]},
                                        "kind": {"enum": ["label", "skip", "none"], "description": "none: none of these classes"},
                                        "seconds": {"type": ["number", "null"], "minimum": 0, "description": "time taken"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"200": _json(any_object), **_errors(400, 401, 404, 413, 415, 422, 503)},
                }
            },
            "/health": {"get": {"summary": "Alive", "responses": {"200": _json(any_object), **_errors(401)}}},
            "/ready": {"get": {"summary": "Model loaded and warmed up", "responses": {"200": _json(any_object), **_errors(401, 503)}}},
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}, **_errors(401)},
                }
            },
        },
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _graph_body(features: int | None, stored: bool) -> dict[str, Any]:
    """A graph model's predict body: the graph inline (inductive), or node ids of the stored graph (transductive)."""
    row: dict[str, Any] = {"type": "array", "items": {"type": "number"}}
    if features is not None:
        row["minItems"] = row["maxItems"] = features
    ints = {"type": "array", "items": {"type": "integer", "minimum": 0}}
    inline = {
        "type": "object", "required": ["x", "edge_index"], "additionalProperties": False,
        "properties": {
            "x": {"type": "array", "items": row, "minItems": 1, "description": "node features, one row per node"},
            "edge_index": {"type": "array", "items": ints, "minItems": 2, "maxItems": 2,
                           "description": "[[sources...], [targets...]]: node numbers 0..nodes-1"},
            "nodes": {**ints, "minItems": 1, "description": "the nodes to answer (default: all)"},
        },
    }
    if not stored:
        return inline
    ids = {"type": "object", "required": ["nodes"], "additionalProperties": False,
           "properties": {"nodes": {"type": "array", "items": {"type": ["integer", "string"]}, "minItems": 1,
                                    "description": "node ids of the graph stored with the version"}}}
    return {"oneOf": [inline, ids]}


def _explain_options() -> dict[str, Any]:
    """The explanation's fields (JSON body) and query parameters."""
    positive = {"type": "integer", "minimum": 1}
    sizes = {"oneOf": [positive, {"type": "array", "items": positive}]}
    out: dict[str, dict[str, Any]] = {
        "method": {"type": "string", "enum": [*METHODS, *ALIASES], "default": "integrated_gradients",
                   "description": "the attribution method (or an alias: ig, shap, gs, dl, ablation)"},
        "target": {"description": "the explained class (index or name, or one per row); default: each row's prediction"},
        "baseline": {"description": 'the input meaning "nothing": zeros (default), mean, blur, a number, or an array shaped like one input'},
        "steps": {**positive, "description": "integrated gradients' steps (50)"},
        "samples": {**positive, "description": "GradientSHAP's samples (20)"},
        "stdevs": {"type": "number", "minimum": 0, "description": "GradientSHAP's noise"},
        "seed": {"type": "integer", "description": "GradientSHAP's draws"},
        "window": {**sizes, "description": "occlusion's window, one size per input dimension"},
        "stride": {**sizes, "description": "occlusion's stride"},
        "feature_groups": {"description": 'feature ablation\'s groups: {"name": [features]} or [[features], ...] (JSON in a query)'},
        "check": {"type": "boolean", "default": False,
                  "description": "also test the attributions' faithfulness (the top 10% removed against random sets)"},
    }
    return out


DOCS_HTML = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>loopml model server</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>
"""
