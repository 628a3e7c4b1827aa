"""The model server's own HTTP/1.1 layer (serve/http.py) on raw sockets, as a library's would be tested.

Each test talks bytes to a real server on 127.0.0.1 and reads its answers with the standard
library's response parser (http.client), so the server's framing is checked by a parser it does
not share. Waiting is done by blocking reads with a socket timeout or by polling, never by sleeping.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import struct
from collections.abc import Callable, Iterator

import httpx
import pytest

from loopml.serve import ModelServer

from .conftest import parse_metrics, row

BODY = json.dumps({"inputs": row()}).encode()
PREDICT = b"POST /v1/models/mlp/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


class _Unclosed:
    """The shared buffered reader, but HTTPResponse's close() after a body leaves it open for the next answer."""

    def __init__(self, file: object) -> None:
        self.file = file

    def __getattr__(self, name: str) -> object:
        return getattr(self.file, name)

    def close(self) -> None:
        pass


class Wire:
    """One raw client connection. ``answer()`` parses the next response with http.client from one shared buffer
    (so pipelined answers are read one after the other); ``closed()`` is True once the server has closed it.
    """

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> "Wire":
        self.sock.sendall(data)
        return self

    def makefile(self, *args: object, **kwargs: object) -> object:  # what http.client.HTTPResponse reads from
        return _Unclosed(self.file)

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        r = http.client.HTTPResponse(self)  # type: ignore[arg-type]
        r.begin()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()

    def closed(self) -> bool:
        """Block (up to the socket timeout) until the server closes, with nothing more sent."""
        try:
            return self.file.read() == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def server(serve: Callable[..., ModelServer]) -> Iterator[ModelServer]:
    yield serve()


@pytest.fixture
def wire(server: ModelServer) -> Iterator[Wire]:
    w = Wire(server.port)
    yield w
    w.close()


def _error(answer: tuple[int, dict[str, str], bytes], status: int, code: str, match: str) -> None:
    got, headers, body = answer
    assert got == status, body
    assert headers["content-type"] == "application/json"
    assert set(json.loads(body)) == {"error"} and json.loads(body)["error"]["code"] == code, body
    assert match in json.loads(body)["error"]["message"], body


def _predict(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return PREDICT + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


def _chunked(parts: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


# -- bodies ------------------------------------------------------------------------


def test_chunked_body_is_the_same_request_as_a_sized_one(wire: Wire) -> None:
    sized = json.loads(wire.send(_predict()).answer()[2])
    parts = [BODY[:7], BODY[7:100], BODY[100:]]
    wire.send(PREDICT + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(parts))
    status, headers, body = wire.answer()
    assert status == 200 and "connection" not in headers  # the connection stays open after a chunked body
    chunked = json.loads(body)
    assert chunked["prediction"] == sized["prediction"] and chunked["probabilities"] == sized["probabilities"]
    # a chunk extension and a trailer are legal HTTP/1.1 and change nothing
    wire.send(PREDICT + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x;ext=1\r\n%s\r\n0\r\nX-Trailer: 1\r\n\r\n" % (len(BODY), BODY))
    assert json.loads(wire.answer()[2])["probabilities"] == sized["probabilities"]


@pytest.mark.parametrize("chunks", [
    b"zz\r\n" + BODY + b"\r\n0\r\n\r\n",  # a size that is not hex
    b"3\r\n" + BODY + b"\r\n0\r\n\r\n",  # more data than the chunk's size says
])
def test_malformed_chunk_is_400_then_close(wire: Wire, chunks: bytes) -> None:
    wire.send(PREDICT + b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
    _error(wire.answer(), 400, "bad_request", "Malformed HTTP request")
    assert wire.closed()


def test_expect_100_continue_gets_the_interim_answer_then_the_answer(wire: Wire) -> None:
    wire.send(PREDICT + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(BODY))
    # the body is not sent until the 100 arrives (a blocking read: the socket timeout bounds it)
    assert wire.file.readline() == b"HTTP/1.1 100 Continue\r\n" and wire.file.readline() == b"\r\n"
    status, _, body = wire.send(BODY).answer()
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_expect_100_continue_over_the_body_limit_is_413_at_once(serve: Callable[..., ModelServer]) -> None:
    """The final status instead of 100 (RFC 7231 5.1.1): the client never sends the 10 MB."""
    w = Wire(serve(max_body=64 * 1024).port)
    w.send(PREDICT + b"Expect: 100-continue\r\nContent-Length: 10000000\r\n\r\n")
    _error(w.answer(), 413, "payload_too_large", "at most 65536 bytes")
    assert w.closed()
    w.close()


def test_body_that_ends_early_leaves_the_server_serving(server: ModelServer) -> None:
    for how in ("close", "reset"):
        w = Wire(server.port)
        w.send(PREDICT + b"Content-Length: 100000\r\n\r\n" + BODY[:50])
        if how == "reset":  # SO_LINGER 0: the client's kernel sends RST instead of FIN
            w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.close()
    r = httpx.post(f"{server.url}/v1/models/mlp/predict", content=BODY, headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["status"] == "ok"


# -- connection management -----------------------------------------------------------


def test_http_10_is_answered_and_closed(server: ModelServer) -> None:
    w = Wire(server.port)
    status, headers, body = w.send(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").answer()
    assert status == 200 and json.loads(body) == {"status": "ok"} and headers["connection"] == "close"
    assert w.closed()
    w.close()
    # Host is required in HTTP/1.0 too: the server checks it against its allowed hosts (DNS rebinding)
    w = Wire(server.port)
    _error(w.send(b"GET /health HTTP/1.0\r\n\r\n").answer(), 400, "invalid_host", "--allowed-host")
    assert w.closed()
    w.close()


def test_http_10_keep_alive_only_when_asked(wire: Wire) -> None:
    for _ in range(3):
        status, headers, _ = wire.send(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n").answer()
        assert status == 200 and headers["connection"] == "keep-alive"  # an HTTP/1.0 client must be told
    body = json.dumps({"inputs": row()}).encode()
    status, headers, _ = wire.send(b"POST /v1/models/mlp/predict HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body)).answer()
    assert status == 200 and headers["connection"] == "close"
    assert wire.closed()


def test_connection_close_is_answered_then_closed(wire: Wire) -> None:
    status, headers, _ = wire.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").answer()
    assert status == 200 and "connection" not in headers  # HTTP/1.1 keeps the connection by default
    status, headers, _ = wire.send(_predict(extra=b"Connection: close\r\n")).answer()
    assert status == 200 and headers["connection"] == "close"
    assert wire.closed()


def test_pipelined_requests_are_answered_in_order_past_the_backlog_limit(wire: Wire) -> None:
    """100 requests in one write (more than max_pipeline = 32: reading pauses and resumes), mixed routes and answers."""
    kinds = [
        (_predict(), 200, b'"status":"ok"'),
        (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, b'{"status":"ok"}'),
        (b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 404, b"No route GET /nope"),
        (_predict(b'{"inputs": [1.0]}'), 422, b"should have shape"),
        (b"GET /v1/models/mlp HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, b'"version":1'),
    ]
    wire.send(b"".join(kinds[i % len(kinds)][0] for i in range(100)))
    for i in range(100):
        _, status, needle = kinds[i % len(kinds)]
        got, _, body = wire.answer()
        assert (got, needle in body) == (status, True), (i, body)
    assert wire.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").answer()[0] == 200


# -- limits ------------------------------------------------------------------------------


def test_url_over_the_limit_is_414(server: ModelServer) -> None:
    w = Wire(server.port)
    assert w.send(b"GET /health?q=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % (b"a" * 8000)).answer()[0] == 200
    w.send(b"GET /health?q=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % (b"a" * 9000))
    _error(w.answer(), 414, "uri_too_long", "at most 8192 bytes")
    assert w.closed()
    w.close()


@pytest.mark.parametrize("headers", [
    b"".join(b"X-Pad-%d: %s\r\n" % (i, b"v" * 1000) for i in range(70)),  # many headers, 70 KB in all
    b"X-Big: " + b"v" * 200_000 + b"\r\n",  # one header the parser buffers whole before reporting it
], ids=["many", "one-huge"])
def test_headers_over_the_limit_are_431(server: ModelServer, headers: bytes) -> None:
    w = Wire(server.port)
    under = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"v" * 1000) for i in range(30))
    assert w.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % under).answer()[0] == 200
    w.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % headers)
    _error(w.answer(), 431, "headers_too_large", "at most 65536 bytes")
    assert w.closed()
    w.close()


# -- stalled clients --------------------------------------------------------------------


def test_half_a_request_then_silence_is_408_and_closed(serve: Callable[..., ModelServer]) -> None:
    server = serve(header_timeout=0.3)
    half = Wire(server.port).send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    silent = Wire(server.port)  # connected, never sends a byte
    after_one = Wire(server.port)  # one whole request answered, then half of the next
    assert after_one.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").answer()[0] == 200
    after_one.send(b"GET /hea")
    for w in (half, silent, after_one):
        _error(w.answer(), 408, "request_timeout", "within 0.3 s")  # a blocking read: the timeout bounds it
        assert w.closed()
        w.close()
    with pytest.raises(ValueError, match="Argument header_timeout should be a number of seconds > 0, like 10.0; got 0"):
        ModelServer("mlp@production", header_timeout=0)


def test_a_trickling_client_is_timed_out_from_its_first_byte(serve: Callable[..., ModelServer]) -> None:
    """Slowloris sends a byte now and then: bytes arriving do not restart the clock."""
    server = serve(header_timeout=0.3)
    w = Wire(server.port)
    w.send(b"GET /health HTTP/1.1\r\n")
    for _ in range(10_000):  # a byte every 10 ms until the server answers (a poll, bounded)
        if select.select([w.sock], [], [], 0.01)[0]:
            break
        w.send(b"x")
    _error(w.answer(), 408, "request_timeout", "within 0.3 s")
    w.close()


def test_slowloris_does_not_stop_a_normal_client(serve: Callable[..., ModelServer]) -> None:
    server = serve(header_timeout=60.0)  # the stalled clients stay open for the whole test
    stalled = [Wire(server.port).send(b"POST /v1/models/mlp/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-") for _ in range(200)]
    try:
        r = httpx.post(f"{server.url}/v1/models/mlp/predict", json={"inputs": row()}, timeout=10)
        assert r.status_code == 200 and r.json()["status"] == "ok"
        for w in stalled:  # every stalled client is still connected, with nothing answered
            w.sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                w.sock.recv(1)
    finally:
        for w in stalled:
            w.close()


# -- many connections ---------------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_thousand_connections_opened_and_dropped(server: ModelServer) -> None:
    """None completes a request: the counters do not move, no descriptor leaks, the server answers after."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("counting open descriptors needs /proc (Linux)")
    m0 = parse_metrics(httpx.get(f"{server.url}/metrics").text)
    fds0 = _open_fds()
    dropped = [b"", b"GET /heal", PREDICT + b"Content-Length: 1000\r\n\r\n" + BODY[:10], b"POST /v1/models/mlp/predict HTTP/1.1\r\n"]
    for wave in range(10):  # 100 open at once, then all dropped; half by FIN, half by RST
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(100)]
        for i, s in enumerate(socks):
            if data := dropped[i % len(dropped)]:
                s.sendall(data)
            if (i + wave) % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
    for _ in range(1000):  # the server closes its side of each (a poll, bounded to ~10 s)
        if _open_fds() <= fds0:
            break
        select.select([], [], [], 0.01)
    assert _open_fds() <= fds0
    assert httpx.get(f"{server.url}/health").status_code == 200
    r = httpx.post(f"{server.url}/v1/models/mlp/predict", json={"inputs": row()})
    assert r.status_code == 200
    m1 = parse_metrics(httpx.get(f"{server.url}/metrics").text)
    code = 'loopml_requests_total{model="mlp",code="%s"}'
    assert m1[code % 200] == m0.get(code % 200, 0) + 3  # the first /metrics, /health, the prediction
    assert {k for k in m1 if k.startswith("loopml_requests_total")} == {code % 200}  # no 400, 408 or 500
    assert m1['loopml_request_latency_seconds_count{model="mlp"}'] == m0['loopml_request_latency_seconds_count{model="mlp"}'] + 1
    assert m1['loopml_queue_depth{model="mlp"}'] == 0 and m1['loopml_ready{model="mlp"}'] == 1


def test_an_endless_header_is_431_before_it_ends(server: ModelServer) -> None:
    """A header that never ends (httptools holds it whole, so the server counts the bytes it reads): 431 while the
    client is still sending, and the client reads the answer, not a reset. The 1 MB goes in 4 KB writes, so all
    but the first read of it (at most 256 KB) lie wholly inside the head."""
    import threading

    w = Wire(server.port)

    def flood() -> None:
        try:
            w.sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            for _ in range(250):
                w.sock.sendall(b"v" * 4096)
        except OSError:
            pass  # the server has answered and closed: the rest of the flood has nowhere to go

    t = threading.Thread(target=flood)
    t.start()
    _error(w.answer(), 431, "headers_too_large", "at most 65536 bytes")
    t.join(30)
    w.close()
