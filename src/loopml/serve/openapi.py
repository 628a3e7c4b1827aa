"""The model server's OpenAPI document and the ``/docs`` page (Swagger UI).

Written out rather than generated: the server has a handful of routes and no
web framework on its request path. ``document(model, signature)`` fills in
the served model's input shape so that clients (and schemathesis) see what a
valid request looks like.
"""

from __future__ import annotations

from typing import Any

from .. import __version__

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
    model: str, input_shape: list[int | None] | None = None, feature_names: list[str] | None = None
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a server for ``model`` (input shape with ``None`` for the batch).

    With ``feature_names`` (a tabular model's signature), records by column name
    are described too: one record, a list of records, or column-oriented lists.
    """
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
    predict_body = {
        "type": "object",
        "required": ["inputs"],
        "additionalProperties": False,
        "properties": {
            "inputs": inputs,
            "include_prediction": {"type": "boolean", "description": "answer the prediction with an abstention too"},
        },
    }
    answer = {
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


DOCS_HTML = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>loopml model server</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>
"""
