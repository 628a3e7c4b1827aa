"""Every kind of bad input gets a 4xx in the one JSON error shape, naming what was wrong; never a 500."""

from __future__ import annotations

import io
import re
import socket
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest

from loopml.serve import ModelServer

from .conftest import row


@pytest.fixture
def server(serve: Callable[..., ModelServer]) -> Iterator[ModelServer]:
    yield serve(max_body=64 * 1024)


def _raw(server: ModelServer, body: bytes, ctype: str = "application/json") -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/mlp/predict", content=body, headers={"content-type": ctype})


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def _error(r: httpx.Response, status: int, code: str, match: str) -> None:
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and r.json()["error"]["code"] == code
    assert match in r.json()["error"]["message"], r.json()["error"]["message"]


def test_wrong_shape(server: ModelServer) -> None:
    _error(_raw(server, b'{"inputs": [[1.0, 2.0]]}'), 422, "invalid_input", "should have shape (batch, 64); got (1, 2)")


def test_wrong_dtype(server: ModelServer) -> None:
    body = b'{"inputs": [' + b",".join([b'"a"'] * 64) + b"]}"
    _error(_raw(server, body), 422, "invalid_input", "should have dtype float32; got strings")


def test_nan(server: ModelServer) -> None:
    x = np.zeros((1, 64), dtype=np.float32)
    x[0, 3] = np.nan
    _error(_raw(server, _npy(x), "application/x-npy"), 422, "invalid_input", "should hold finite numbers; got NaN")


def test_inf(server: ModelServer) -> None:
    x = np.zeros((2, 64), dtype=np.float32)
    x[1, 0] = np.inf
    _error(_raw(server, _npy(x), "application/x-npy"), 422, "invalid_input", "got infinity")


def test_nan_literal_in_json(server: ModelServer) -> None:
    _error(_raw(server, b'{"inputs": [NaN]}'), 400, "invalid_json", "not valid JSON")


def test_missing_inputs_field(server: ModelServer) -> None:
    _error(_raw(server, b'{"input": [1.0]}'), 422, "invalid_request", '"inputs"')


def test_unknown_field(server: ModelServer) -> None:
    _error(_raw(server, b'{"inputs": [1.0], "extra": 1}'), 422, "invalid_request", "Unknown fields ['extra']")


def test_body_not_an_object(server: ModelServer) -> None:
    _error(_raw(server, b"[1, 2, 3]"), 422, "invalid_request", "got list")


def test_ragged_rows(server: ModelServer) -> None:
    _error(_raw(server, b'{"inputs": [[1.0], [1.0, 2.0]]}'), 422, "invalid_input", "ragged")


def test_empty_batch(server: ModelServer) -> None:
    _error(_raw(server, b'{"inputs": []}'), 422, "invalid_input", "should have shape")


def test_body_over_the_size_limit(server: ModelServer) -> None:
    body = b'{"inputs": [' + b",".join([b"0.1"] * 40_000) + b"]}"
    _error(_raw(server, body), 413, "payload_too_large", "at most 65536 bytes")


def test_bad_json(server: ModelServer) -> None:
    _error(_raw(server, b'{"inputs": [1.0,'), 400, "invalid_json", "not valid JSON")


def test_bad_npy(server: ModelServer) -> None:
    _error(_raw(server, b"\x93NUMPY garbage", "application/x-npy"), 400, "invalid_npy", "not a .npy array")


def test_pickled_npy_is_refused(server: ModelServer) -> None:
    _error(_raw(server, _npy(np.array([{"a": 1}], dtype=object)), "application/x-npy"), 400, "invalid_npy", "not a .npy")


def test_wrong_content_type(server: ModelServer) -> None:
    _error(_raw(server, b"inputs=1", "text/plain"), 415, "unsupported_media_type", "application/json or application/x-npy")


def test_unknown_model(server: ModelServer) -> None:
    r = httpx.post(f"{server.url}/v1/models/other/predict", json={"inputs": row()})
    _error(r, 404, "not_found", "serves the model 'mlp', not 'other'")


def test_unknown_route_and_wrong_method(server: ModelServer) -> None:
    _error(httpx.get(f"{server.url}/nope"), 404, "not_found", "No route GET /nope")
    _error(httpx.get(f"{server.url}/v1/models/mlp/predict"), 405, "method_not_allowed", "use POST")


def test_bad_feedback(server: ModelServer) -> None:
    r = httpx.post(f"{server.url}/v1/feedback", json={"request_id": 3, "label": "x"})
    _error(r, 422, "invalid_request", "request_id should be")
    _error(httpx.post(f"{server.url}/v1/feedback", json={"label": "x"}), 422, "invalid_request", "exactly those fields")


def test_malformed_http_gets_400_and_the_connection_closes(server: ModelServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GARBAGE / HTTP/1.1\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400") and b'"code":"bad_request"' in data


def test_pipelined_requests_are_answered_in_order(server: ModelServer) -> None:
    ok = b'{"inputs": [' + b",".join([b"0.1"] * 64) + b"]}"
    req = b"POST /v1/models/mlp/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    last = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(req % (len(ok), ok) + req % (5, b"[1,2]") + last)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    assert statuses == [b"200", b"422", b"200"]
