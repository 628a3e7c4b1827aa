"""A small HTTP/1.1 server on asyncio + httptools: the model server's transport.

Why not uvicorn: its per-request ASGI machinery (scope dicts, receive/send
coroutines, a task per request) measured 45 us of server CPU per request on
an echo endpoint here, against 15 us for this protocol; at this model size
HTTP is most of the cost (see docs/serving.md).

What it does: keep-alive and ``Connection: close``, HTTP/1.0, pipelined
requests answered in order (one at a time per connection, reading paused
while a backlog waits), chunked request bodies, ``Expect: 100-continue``, a
body limit (413, then close: at once to an ``Expect: 100-continue``, else
once the rest of the body has been read and dropped),
a URL limit (414) and a request-head limit (431), both then close, malformed
requests (400, then close), a client that has not sent a whole request head
``header_timeout`` seconds after it started (or after it connected) answered
408 and closed (slowloris), idle connections closed after ``keep_alive``
seconds. Tested on raw sockets in tests/serve/test_http_protocol.py.
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
_WANTED = frozenset({b"host", b"authorization", b"content-type", b"content-length", b"expect", b"connection"})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(frozen=True)
class Limits:
    """``max_body``: largest request body in bytes; ``keep_alive``: idle seconds before a connection is closed;
    ``max_url``: longest request target in bytes (414 past it); ``max_head``: request line and headers in bytes
    (431 past it); ``header_timeout``: seconds a client has to send a whole request head (408, then close).
    """

    max_body: int = 16 * 1024 * 1024
    keep_alive: float = 75.0
    max_pipeline: int = 32
    max_url: int = 8 * 1024
    max_head: int = 64 * 1024
    header_timeout: float = 10.0


class _TooBig(Exception):
    """Raised from a parser callback to stop parsing a request over a limit: ``status``, ``code``, ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class Request:
    """One parsed request: ``method`` and ``path`` (str), ``query`` (str), lower-case ``headers`` (bytes), ``body``."""

    __slots__ = ("method", "path", "query", "headers", "body", "keep_alive", "t0", "too_large", "say_keep_alive")

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
        self.say_keep_alive = False  # the answer says ``connection: keep-alive`` (HTTP/1.0 needs it to keep it)


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
        # The request head being read: its bytes as parsed (0: none in progress) and as read in whole chunks, and
        # since when (perf_counter; None once the head is complete). The first request's clock starts when the
        # client connects, so a silent connection is timed out too.
        # The limits cost ~0.4 us a request (a parse micro-benchmark: 3.7 -> 4.1 us).
        self._head = 0
        self._raw_head = 0
        self._begun = 0  # requests begun: tells a chunk read wholly inside one head from one that spans two
        self.head_since: float | None = time.perf_counter()
        self._say_keep_alive = False
        self._early = False  # this message was answered from its headers (413 to an Expect: 100-continue)

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
        begun = self._begun if self._head else 0
        try:
            self.parser.feed_data(data)
            # httptools buffers a header's name and value until both are complete, so a single endless header
            # would never reach on_header: a chunk read wholly inside one request head counts whole here.
            if begun and begun == self._begun and self._head:
                self._raw_head += len(data)
                if self._raw_head > self.limits.max_head:
                    raise _TooBig(431, "headers_too_large", self._head_message())
        except _TooBig as exc:
            self._fail(exc.status, exc.code, str(exc))
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _TooBig):
                self._fail(exc.__context__.status, exc.__context__.code, str(exc.__context__))
            else:
                self._fail(400, "bad_request", f"Malformed HTTP request: {exc}")
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
        self._early = False
        self._t0 = time.perf_counter()
        self._begun += 1
        self._head = 1  # the head has begun (counted from here on in on_url, on_header and data_received)
        if self.head_since is None:
            self.head_since = self._t0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head += len(url)
        if len(self._url) > self.limits.max_url:
            raise _TooBig(414, "uri_too_long", f"The request URL should be at most {self.limits.max_url} bytes; "
                          f"got more than that. Send large inputs in the body (POST), not the query string")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head += len(name) + len(value) + 4  # checked once the head is complete: one chunk's worth at most
        name = name.lower()
        if name in _WANTED:
            self._headers[name] = value

    def _head_message(self) -> str:
        return (f"The request line and headers should be at most {self.limits.max_head} bytes in all; "
                f"got more than that. Send fewer or shorter headers (large values go in the body)")

    def on_headers_complete(self) -> None:
        if self._head > self.limits.max_head:
            raise _TooBig(431, "headers_too_large", self._head_message())
        self.head_since = None
        self._head = self._raw_head = 0
        length = self._headers.get(b"content-length")
        expect = self._headers.get(b"expect", b"").lower() == b"100-continue"
        if length is not None and length.isdigit() and int(length) > self.limits.max_body:
            self._too_large = True
            if expect:
                # Bug fix (tests/serve/test_http_protocol.py): the client waits for 100 before sending its body, and
                # a server "MUST either immediately respond with a 100 (Continue) ... or respond with a final status
                # code" (RFC 7231 5.1.1); this one did neither, so the client waited, then sent the whole body
                # anyway. Answer the 413 now (and close); the rest of this message, if sent, is not a request.
                self._early = True
                self._complete(Request(self.parser.get_method().decode("latin-1"), self._url, self._headers, b"",
                                       False, self._t0, True))
        elif expect and self.transport is not None:
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
        if self._early:
            return
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
        if req.keep_alive and b"connection" in self._headers:
            # Bug fix (tests/serve/test_http_protocol.py): an HTTP/1.0 client keeps the connection only when the
            # answer says so (RFC 7230 A.1.2); without the header it takes the connection as closing, and one that
            # reads to the end of the stream waits for a close that never comes. Said to any client that sent a
            # Connection header, as nginx does: asking the parser for the version cost 0.4 us a request.
            req.say_keep_alive = True
        self._body = []
        self._complete(req)

    def _complete(self, req: Request) -> None:
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
        self._say_keep_alive = req.say_keep_alive
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
            b"connection: close\r\n" if close else b"connection: keep-alive\r\n" if self._say_keep_alive else b"",
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
        """Called by the server's sweep: close a connection idle past ``keep_alive``, or answer 408 and close
        one whose request head is not complete ``header_timeout`` after it began (a stalled or slowloris client).
        """
        if self.busy or self.transport is None or self.closing:
            return  # an answer is pending (the head clock only matters once the server is waiting on the client)
        if self.head_since is not None and time.perf_counter() - self.head_since > self.limits.header_timeout:
            self._fail(408, "request_timeout", f"The request line and headers should arrive within "
                       f"{self.limits.header_timeout:g} s of the connection or the request's first byte; the connection is closed")
        elif now - self.last_active > self.limits.keep_alive:
            self.closing = True
            self.transport.close()
