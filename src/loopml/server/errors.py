"""One JSON shape for every error the server sends.

::

    HTTP/1.1 404 Not Found
    content-type: application/json

    {"error": {"code": "not_found", "message": "Run 'abc' does not exist"}}

Unknown routes (404), wrong methods (405), request validation (422), bad
JSON (400), refused requests (400/401/413/415) and unexpected exceptions
(500) all use it; no traceback or HTML page ever reaches a client. The
``code`` is stable and tells a client which error it got:

=========================  ======  =============================================
code                       status  raised for
=========================  ======  =============================================
``bad_request``            400     :class:`~loopml.errors.ArgumentError`: a bad argument
``invalid_json``           400     a body that is not (complete) JSON
``invalid_filter``         400     :class:`~loopml.errors.FilterError` (caret lines kept)
``invalid_artifact_path``  400     :class:`~loopml.errors.ArtifactPathError`
``invalid_host``           400     a Host header this server does not answer to
``unauthorized``           401     no or a wrong bearer token
``not_found``              404     :class:`~loopml.errors.NotFound`, unknown route
``method_not_allowed``     405     a known route with another method
``conflict``               409     :class:`~loopml.errors.Conflict` (e.g. a version an alias points at)
``payload_too_large``      413     a JSON body over the server's limit
``unsupported_media_type`` 415     a state-changing request that is not JSON
``invalid_request``        422     a body or query that does not fit the schema
``internal_error``         500     a bug: the traceback goes to the server log only
``store_error``            500     a :class:`~loopml.errors.StoreError` that is not transient
``integrity_error``        500     :class:`~loopml.errors.IntegrityError`: a stored file was altered
``migration_required``     503     :class:`~loopml.errors.MigrationRequired`
``store_unavailable``      503     a transient :class:`~loopml.errors.StoreError` (e.g. database locked)
``invalid_data``           400     :class:`~loopml.errors.DataError`
``export_failed``          422     :class:`~loopml.errors.ExportError`
``config_error``           500     :class:`~loopml.errors.ConfigError` (the server's own set-up)
=========================  ======  =============================================

Which status and code a loopml error gets is an attribute of its class
(``http_status``, ``error_code``; see :mod:`loopml.errors`), shared with the model
server and the CLI. A ``ValueError`` or ``TypeError`` that is not a loopml error
is a bug and answers 500 ``internal_error``.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ..errors import ConfigError, LoopMLError, StoreError, http_answer

__all__ = ["PayloadTooLarge", "error_response", "install_error_handlers", "json_response"]

log = logging.getLogger("loopml.server")

_CODE_FOR_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
    503: "store_unavailable",
}


class PayloadTooLarge(Exception):
    """A request body grew past the server's limit while it was read."""


def json_response(obj: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialized with orjson (NaN must already be encoded, see ``wire``)."""
    return Response(orjson.dumps(obj), status_code=status_code, headers=headers, media_type="application/json")


def error_response(status_code: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """``{"error": {"code": code, "message": message}}`` with ``status_code``."""
    return json_response({"error": {"code": code, "message": message}}, status_code, headers)


def _clean_store_message(message: str) -> str:
    # SQLAlchemy appends the SQL text, its parameters and a link; a client needs none of them.
    for marker in ("\n[SQL:", "\n(Background on this error"):
        message = message.split(marker, 1)[0]
    return message.strip()


def loopml_error_response(exc: LoopMLError) -> Response:
    """The answer for a loopml error: its class says the status and code (loopml.errors.http_answer)."""
    status, code, message = http_answer(exc)
    if isinstance(exc, StoreError):
        message = _clean_store_message(message)
    if isinstance(exc, ConfigError):
        log.error("loopml server configuration error: %s", exc)
    return error_response(status, code, message, dict(exc.http_headers) or None)


async def _loopml_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoopMLError)
    return loopml_error_response(exc)


async def _bad_json(_request: Request, exc: Exception) -> Response:
    return error_response(400, "invalid_json", f"The request body is not valid JSON: {exc}")


async def _too_large(_request: Request, exc: Exception) -> Response:
    return error_response(413, "payload_too_large", str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _CODE_FOR_STATUS.get(status, f"http_{status}")
    if status == 404 and exc.detail == "Not Found":
        message = f"No route {request.method} {request.url.path}; the API is described at /docs"
    elif status == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    headers = dict(exc.headers) if exc.headers else None
    return error_response(status, code, message, headers)


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx") or {}
        detail = ctx.get("error", "it does not parse")
        return error_response(400, "invalid_json", f"The request body is not valid JSON: {detail}")
    parts = [f"{_location(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:10]]
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    return error_response(422, "invalid_request", "Invalid request: " + "; ".join(parts) + more)


async def _internal_error(_request: Request, exc: Exception) -> Response:
    # Starlette re-raises the exception after this response is sent, so the
    # server logs the traceback; the client gets only the exception's class.
    # A ValueError or TypeError that is not a loopml error lands here too: loopml
    # raises ArgumentError for bad input, so any other one is a bug, not a 400.
    status, code, message = http_answer(exc)
    return error_response(status, code, message)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the one JSON shape."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(orjson.JSONDecodeError, _bad_json)
    app.add_exception_handler(PayloadTooLarge, _too_large)
    app.add_exception_handler(LoopMLError, _loopml_error)
    app.add_exception_handler(Exception, _internal_error)
