"""The checks every request passes before it reaches a route.

They answer the classes of vulnerability published against tracking servers
(MLflow's CVEs among them):

1. **DNS rebinding.** A web page can make a victim's browser send requests
   to ``127.0.0.1`` under the attacker's host name. The server answers only
   requests whose ``Host`` header names it: ``127.0.0.1``, ``localhost`` or
   ``[::1]`` (any port), plus the ``allowed_hosts`` given (``name`` for any
   port, ``name:port`` for one port, ``*`` to turn the check off).
   Anything else gets ``400 invalid_host``.
2. **Bearer token.** With a token set, *every* request, ``/docs``,
   ``/openapi.json`` and ``/health`` included, must send
   ``Authorization: Bearer <token>`` or gets ``401 unauthorized``; only a
   GET of a ``public_paths`` entry (the web UI's data-free pages and
   scripts) is let through without it. The
   comparison takes constant time (:func:`hmac.compare_digest`). The check
   runs before routing, so a route added later cannot slip past it and an
   unknown path reveals nothing either.
3. **Cross-site requests (CSRF).** Every state-changing request (POST, PUT,
   PATCH, DELETE) must say ``Content-Type: application/json``, or
   ``application/octet-stream`` on the routes that take file uploads. A
   browser sends those cross-site only after a CORS preflight, which this
   server never grants, so a form or ``text/plain`` POST from another site
   gets ``415 unsupported_media_type``. ``any_media_uploads`` (PUT and DELETE
   on those paths) take any content type, or none: MLflow's client uploads an
   artifact with the file's guessed type (``text/plain`` for a .txt) and sends
   some DELETEs without a body, and a browser never sends a PUT or DELETE
   cross-site without a preflight, so the check adds nothing there.
4. **Memory.** A JSON body over ``max_json_body`` bytes gets ``413``.

The Host and token checks themselves live in :mod:`loopml.access`, without a
web framework, so the model server (``loopml serve``) applies the same ones.

Artifact paths are checked where they are used (:mod:`loopml.store.artifacts`),
and no route runs a shell command.

>>> from fastapi import FastAPI
>>> app = FastAPI()                      # create_app adds it to the tracking server for you
>>> app.add_middleware(SecurityMiddleware, auth_token="s3cret", allowed_hosts=["tracking.internal"])
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..access import LOOPBACK_HOSTS, HostAllowList, bearer_ok, check_allowed_hosts, is_loopback, parse_host
from .errors import PayloadTooLarge, error_response

__all__ = ["LOOPBACK_HOSTS", "SecurityMiddleware", "check_allowed_hosts", "is_loopback", "parse_host"]

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
DEFAULT_MAX_JSON_BODY = 64 * 1024 * 1024


class SecurityMiddleware:
    """ASGI middleware for the checks of this module (see its docstring).

    ``binary_uploads`` are ``(method, path regex)`` pairs that accept
    ``application/octet-stream`` bodies instead of JSON. ``public_paths`` are
    path regexes (matched in full) whose GET/HEAD needs no token: only pages
    and files that hold no data (the web UI's shells and scripts).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        auth_token: str | None = None,
        allowed_hosts: Sequence[str] = (),
        binary_uploads: Iterable[tuple[str, str]] = (),
        any_media_uploads: Iterable[str] = (),
        max_json_body: int = DEFAULT_MAX_JSON_BODY,
        public_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self._token = auth_token.encode() if auth_token else None
        self._hosts = HostAllowList(allowed_hosts)
        self._binary = [(m.upper(), re.compile(p)) for m, p in binary_uploads]
        self._any_media_put = [re.compile(p) for p in any_media_uploads]  # PUT and DELETE only: see the module's point 3
        self.max_json_body = max_json_body
        # GET/HEAD of these path regexes need no token: the web UI's HTML shells and
        # static files, which hold no data (their scripts fetch it with the token)
        self._public = [re.compile(p) for p in public_paths]

    # -- the checks -------------------------------------------------------

    def _host_ok(self, value: str | None) -> bool:
        return self._hosts.allows(value)

    def _token_ok(self, value: str | None) -> bool:
        assert self._token is not None
        return bearer_ok(value, self._token)

    def _media_types(self, method: str, path: str) -> tuple[str, ...]:
        if any(m == method and p.match(path) for m, p in self._binary):
            return (OCTET_STREAM,)
        return (JSON,)

    # -- ASGI -------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1")
            if name in ("host", "authorization", "content-type", "content-length"):
                headers[name] = raw_value.decode("latin-1")
        method: str = scope["method"]
        path: str = scope["path"]

        if not self._host_ok(headers.get("host")):
            host = headers.get("host")
            response = error_response(
                400,
                "invalid_host",
                f"This server does not answer to Host {host!r}. If that is how clients reach it, "
                f"start it with --allowed-host {host or 'NAME'} (allowed_hosts=[...]).",
            )
            await response(scope, receive, send)
            return
        public = method in ("GET", "HEAD") and any(p.fullmatch(path) for p in self._public)
        if self._token is not None and not public and not self._token_ok(headers.get("authorization")):
            response = error_response(
                401,
                "unauthorized",
                "This loopml server needs a token: send 'Authorization: Bearer <token>' "
                "(clients: set LOOPML_TRACKING_TOKEN).",
                {"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        if method in ("PUT", "DELETE") and any(p.fullmatch(path) for p in self._any_media_put):
            pass
        elif method in STATE_CHANGING:
            wanted = self._media_types(method, path)
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media not in wanted:
                response = error_response(
                    415,
                    "unsupported_media_type",
                    f"{method} {path} should send Content-Type: {' or '.join(wanted)}, got {media or 'none'!r}",
                )
                await response(scope, receive, send)
                return
            if media == JSON:
                length = headers.get("content-length")
                if length is not None and length.isdigit() and int(length) > self.max_json_body:
                    response = error_response(
                        413,
                        "payload_too_large",
                        f"A JSON body should be at most {self.max_json_body} bytes, got {length}; send smaller batches",
                    )
                    await response(scope, receive, send)
                    return
                if length is None:  # chunked: count while reading
                    receive = self._limited(receive)
        await self.app(scope, receive, send)

    def _limited(self, receive: Receive) -> Receive:
        limit = self.max_json_body
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"A JSON body should be at most {limit} bytes; send smaller batches")
            return message

        return limited_receive
