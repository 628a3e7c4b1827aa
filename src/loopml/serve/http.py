"""A small HTTP/1.1 server on asyncio + httptools: the model server's transport.

Why not uvicorn: its per-request ASGI machinery (scope dicts, receive/send
coroutines, a task per request) measured 45 us of server CPU per request on
an echo endpoint here, against 15 us for this protocol; at this model size
HTTP is most of the cost (see docs/serving.md).

What it does: keep-alive and ``Connection: close``, HTTP/1.0, pipelined
requests answered in order (one at a time per connection, reading paused
while a backlog waits), chunked request bodies, ``Expect: 100-continue``, a
body limit (413 without reading the rest, then close), malformed requests
(400, then close), idle connections closed after ``keep_alive`` seconds.
The handler gets a :class:`Request` and answers through
:meth:`Connection.respond`, now or later (from the loop thread). Example::

    def handle(request: Request, conn: Connection) -> None:
        conn.respond(200, b'{"ok": true}')

    server = await loop.create_server(lambda: Connection(handle, limits), "127.0.0.1", 8080)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools

__all__ = ["Connection", "Limits", "Request"]

JSON = b"application/json"
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_WANTED = frozenset({b"host", b"authorization", b"content-type", b"content-length", b"expect"})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(frozen=True)
class Limits:
    """``max_body``: largest request body in bytes; ``keep_alive``: idle seconds before a connection is closed."""

    max_body: int = 16 * 1024 * 1024
    keep_alive: float = 75.0
    max_pipeline: int = 32


class Request:
    """One parsed request: ``method`` and ``path`` (str), ``query`` (str), lower-case ``headers`` (bytes), ``body``."""

    __slots__ = ("method", "path", "query", "headers", "body", "keep_alive", "t0", "too_large")

    def __init__(self, method: str, url: bytes, headers: dict[bytes, bytes], body: bytes, keep_alive: bool, t0: float, too_large: bool) -> None:
        self.method = method
        path, _, query = url.partition(b"?")
        self.path = path.decode("latin-1")
        self.query = query.decode("latin-1")
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.t0 = t0
        self.too_large = too_large


Handler = Callable[[Request, "Connection"], None]


class Connection(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    # set by the server: every open connection, for the idle sweep and shutdown
    registry: set["Connection"] | None = None

    def __init__(self, handler: Handler, limits: Limits, on_error: Callable[[int, str, str], bytes]) -> None:
        self.handler = handler
        self.limits = limits
        self.error_body = on_error
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request] = deque()
        self.busy = False
        self.closing = False
        self.paused = False
        self.keep_alive = True
        self.last_active = time.monotonic()
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._too_large = False
        self._t0 = 0.0

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.registry is not None:
            self.registry.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.queue.clear()
        if self.registry is not None:
            self.registry.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "bad_request", "Protocol upgrades (websockets, h2c) are not supported")
        except httptools.HttpParserError as exc:
            self._fail(400, "bad_request", f"Malformed HTTP request: {exc}")

    # -- httptools callbacks ----------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0
        self._too_large = False
        self._t0 = time.perf_counter()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _WANTED:
            self._headers[name] = value

    def on_headers_complete(self) -> None:
        length = self._headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limits.max_body:
            self._too_large = True
        elif self._headers.get(b"expect", b"").lower() == b"100-continue" and self.transport is not None:
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self._too_large:
            return
        self._size += len(body)
        if self._size > self.limits.max_body:
            self._too_large = True
            self._body = []
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        req = Request(
            self.parser.get_method().decode("latin-1"),
            self._url,
            self._headers,
            body,
            self.parser.should_keep_alive() and not self._too_large,
            self._t0,
            self._too_large,
        )
        self._body = []
        if self.busy:
            self.queue.append(req)
            if len(self.queue) >= self.limits.max_pipeline and self.transport is not None:
                self.transport.pause_reading()
                self.paused = True
            return
        self._dispatch(req)

    # -- answering --------------------------------------------------------------

    def _dispatch(self, req: Request) -> None:
        self.busy = True
        self.last_active = time.monotonic()
        self.keep_alive = req.keep_alive
        self.handler(req, self)

    def respond(
        self,
        status: int,
        body: bytes,
        content_type: bytes = JSON,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        """Send the answer to the request being handled (loop thread), then handle the next queued one."""
        if self.closing or self.transport is None:
            self.busy = False
            return
        extra = b"".join(b"%s: %s\r\n" % kv for kv in headers)
        close = not self.keep_alive
        head = b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s%s\r\n" % (
            status, _REASONS.get(status, b"Unknown"), content_type, len(body), extra,
            b"connection: close\r\n" if close else b"",
        )
        self.transport.write(head + body)
        self.busy = False
        self.last_active = time.monotonic()
        if close:
            self.closing = True
            self.transport.close()
            return
        if self.queue:
            self._dispatch(self.queue.popleft())
            if self.paused and len(self.queue) < self.limits.max_pipeline // 2:
                self.paused = False
                self.transport.resume_reading()

    def _fail(self, status: int, code: str, message: str) -> None:
        """A request that cannot be parsed: answer it (after the ones before it are answered) and close."""
        if self.transport is None:
            return
        self.queue.clear()
        self.keep_alive = False
        if self.busy:  # the earlier request's answer is pending; do not interleave
            self.closing = True
            self.transport.close()
            return
        self.busy = True
        self.respond(status, self.error_body(status, code, message))

    def close_if_idle(self, now: float) -> None:
        if not self.busy and now - self.last_active > self.limits.keep_alive and self.transport is not None:
            self.closing = True
            self.transport.close()
