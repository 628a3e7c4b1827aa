"""What MLflow's REST client expects of a server, shared by the MLflow routes.

The MLflow-compatible routes (:mod:`loopml.server.mlflow_tracking`,
:mod:`loopml.server.mlflow_models`, :mod:`loopml.server.mlflow_artifacts`) live
under :data:`PREFIX` and :data:`ARTIFACTS_PREFIX`. They answer errors in MLflow's
shape, ``{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "..."}``, with the
status MLflow gives that code: the client creates an experiment when it reads
``RESOURCE_DOES_NOT_EXIST``, and it retries every 5xx seven times with backoff,
so bad input must be a 4xx. :class:`MlflowErrorShape` rewrites every error
answer under those prefixes, whoever made it (a route, the exception handlers,
the security checks, an unknown path), so that no MLflow path can answer in
loopml's own ``{"error": {...}}`` shape.

A route raises :class:`MlflowError` for a code loopml's own errors do not map
to; loopml's errors (NotFound, ArgumentError, Conflict, ...) map by
:data:`CODES`.

MLflow's experiment ``"0"`` is its default experiment; here it is loopml's
experiment named ``default`` (the one loopml's own runs go to when they name
none). Every other experiment's MLflow id is its loopml id.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import LoopMLError

__all__ = [
    "ARTIFACTS_PREFIX",
    "CODES",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_EXPERIMENT_ID",
    "PREFIX",
    "MlflowError",
    "MlflowErrorShape",
    "is_mlflow_path",
    "mlflow_error_body",
    "next_page_token",
    "page_offset",
    "request_params",
]

PREFIX = "/api/2.0/mlflow"
ARTIFACTS_PREFIX = "/api/2.0/mlflow-artifacts"
# MLflow 3's client sends a few calls under /api/3.0/mlflow (traces, logged models' search in some
# versions); they answer in MLflow's shape too
_PREFIXES = (PREFIX + "/", ARTIFACTS_PREFIX + "/", "/api/3.0/mlflow/")

DEFAULT_EXPERIMENT = "default"  # loopml's default experiment's name
DEFAULT_EXPERIMENT_ID = "0"  # MLflow's id for it

# MLflow's error codes and the status it answers each with (mlflow/exceptions.py:
# ERROR_CODE_TO_HTTP_STATUS in the pinned client)
STATUS = {
    "INTERNAL_ERROR": 500,
    "INVALID_STATE": 500,
    "DATA_LOSS": 500,
    "NOT_IMPLEMENTED": 501,
    "TEMPORARILY_UNAVAILABLE": 503,
    "RESOURCE_CONFLICT": 409,
    "ENDPOINT_NOT_FOUND": 404,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "BAD_REQUEST": 400,
    "MALFORMED_REQUEST": 400,
    "RESOURCE_ALREADY_EXISTS": 400,
    "INVALID_PARAMETER_VALUE": 400,
}

# loopml's error codes (loopml.server.errors) -> MLflow's
CODES = {
    "bad_request": "INVALID_PARAMETER_VALUE",
    "invalid_json": "MALFORMED_REQUEST",
    "invalid_filter": "INVALID_PARAMETER_VALUE",
    "invalid_artifact_path": "INVALID_PARAMETER_VALUE",
    "invalid_data": "INVALID_PARAMETER_VALUE",
    "invalid_request": "INVALID_PARAMETER_VALUE",
    "invalid_host": "BAD_REQUEST",
    "unauthorized": "UNAUTHENTICATED",
    "forbidden": "PERMISSION_DENIED",
    "not_found": "RESOURCE_DOES_NOT_EXIST",
    "method_not_allowed": "ENDPOINT_NOT_FOUND",
    "conflict": "RESOURCE_ALREADY_EXISTS",
    "payload_too_large": "INVALID_PARAMETER_VALUE",
    "unsupported_media_type": "BAD_REQUEST",
    "export_failed": "INVALID_PARAMETER_VALUE",
    "internal_error": "INTERNAL_ERROR",
    "store_error": "INTERNAL_ERROR",
    "integrity_error": "DATA_LOSS",
    "config_error": "INTERNAL_ERROR",
    "migration_required": "TEMPORARILY_UNAVAILABLE",
    "store_unavailable": "TEMPORARILY_UNAVAILABLE",
}

# statuses kept as loopml answered them although MLflow would use another for the code:
# 401/403/405/413/415 say more than a plain 400, and the client treats every 4xx alike
_KEEP_STATUS = frozenset({401, 403, 413, 415})


def is_mlflow_path(path: str) -> bool:
    return path.startswith(_PREFIXES)


async def request_params(request: Request, lists: tuple[str, ...] = ()) -> dict[str, Any]:
    """A request's parameters as MLflow's client sends them: the query string merged with a JSON body.

    GET parameters come in the query string, a repeated key as a list (and ``lists``
    always as one); POST bodies are JSON objects.
    """
    out: dict[str, Any] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        out[key] = values if len(values) > 1 or key in lists else values[0]
    body = await request.body()
    if body.strip():
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise MlflowError("MALFORMED_REQUEST", f"The request body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise MlflowError("MALFORMED_REQUEST", "The request body should be a JSON object")
        out.update(doc)
    return out


def page_offset(token: Any) -> int:
    """Where a page starts, from the ``page_token`` a client sent back (none: the first page)."""
    if token is None or token == "":
        return 0
    try:
        offset = orjson.loads(base64.b64decode(str(token), validate=True))["offset"]
        if isinstance(offset, int) and offset >= 0:
            return offset
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        pass
    raise MlflowError("INVALID_PARAMETER_VALUE", f"Invalid page token {token!r:.80}: pass back the next_page_token of the previous page")


def next_page_token(offset: int) -> str:
    """The opaque ``next_page_token`` of a page that ends before ``offset``'s item."""
    return base64.b64encode(orjson.dumps({"offset": offset})).decode()


class MlflowError(LoopMLError):
    """An error with one of MLflow's codes, e.g. ``MlflowError("INVALID_STATE", "Run ... is deleted")``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = code
        self.http_status = STATUS.get(code, 400)


def mlflow_error_body(status: int, body: bytes) -> tuple[int, bytes]:
    """An error answer in MLflow's shape: ``(status, body)`` from loopml's ``(status, body)``."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    code, message = "", ""
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        code = str(doc["error"].get("code", ""))
        message = str(doc["error"].get("message", ""))
    elif isinstance(doc, dict) and "error_code" in doc:
        return status, body  # already MLflow's shape
    else:
        message = body.decode("utf-8", "replace")[:2000]
    if code.isupper():  # an MlflowError: its code is already MLflow's
        mlflow_code = code
    elif code == "not_found" and status == 404 and message.startswith("No route "):
        mlflow_code = "ENDPOINT_NOT_FOUND"
    else:
        mlflow_code = CODES.get(code) or ("INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")
    if status not in _KEEP_STATUS:
        status = STATUS.get(mlflow_code, status)
    return status, orjson.dumps({"error_code": mlflow_code, "message": message})


class MlflowErrorShape:
    """ASGI middleware: every error answer (status >= 400) under the MLflow prefixes in MLflow's shape.

    It sits outside every other middleware so that the security checks'
    answers are rewritten too. Only error answers are buffered (they are small);
    a download streams through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_mlflow_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] | None = None
        chunks: list[bytes] = []

        async def shaped_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = dict(message)
                return
            if start is not None and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                status, body = mlflow_error_body(start["status"], b"".join(chunks))
                headers = [
                    (k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")
                ]
                headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, shaped_send)
