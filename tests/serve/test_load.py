"""Batching, backpressure, hot swap under load, the soak, and schemathesis against the OpenAPI document."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable

import httpx
import numpy as np
import pytest

from tests.deps import need

import loopml
from loopml.serve import ModelServer
from loopml.store.predictions import PredictionLog

from .conftest import parse_metrics, register_mlp, row


class SlowGate:
    """Holds each forward pass (or only the first: ``first_only``) until released, so that requests pile up behind it."""

    threshold = 1e9

    def __init__(self, *, first_only: bool = False) -> None:
        self.first_only = first_only
        self.entered = threading.Event()
        self.release = threading.Event()

    def score(self, x: np.ndarray) -> np.ndarray:
        if not (self.first_only and self.entered.is_set()):
            self.entered.set()
            self.release.wait(30)
        return np.zeros(len(x))


def _metrics(server: ModelServer) -> dict[str, float]:
    return parse_metrics(httpx.get(f"{server.url}/metrics").text)


async def _load(url: str, n: int, concurrency: int, body: bytes) -> list[httpx.Response | BaseException]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    results: list[httpx.Response | BaseException] = []
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        todo = iter(range(n))

        async def worker() -> None:
            for _ in todo:
                try:
                    results.append(await client.post(url, content=body, headers={"content-type": "application/json"}))
                except httpx.HTTPError as exc:
                    results.append(exc)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


BODY = b'{"inputs": [' + b",".join([b"0.25"] * 64) + b"]}"


def test_concurrent_requests_share_a_forward_pass(serve: Callable[..., ModelServer]) -> None:
    gate = SlowGate()
    server = serve(gate=gate, inline=False)
    url = f"{server.url}/v1/models/mlp/predict"
    first = threading.Thread(target=httpx.post, args=(url,), kwargs={"content": BODY, "headers": {"content-type": "application/json"}})
    first.start()
    assert gate.entered.wait(30)  # the first batch holds the worker; the next 16 queue behind it
    runner = threading.Thread(target=lambda: asyncio.run(_load(url, 16, 16, BODY)))
    runner.start()
    while _metrics(server)['loopml_queue_depth{model="mlp"}'] < 16:
        pass
    gate.release.set()
    first.join(30)
    runner.join(60)

    m = _metrics(server)
    assert m['loopml_request_latency_seconds_count{model="mlp"}'] == 17  # predictions answered
    assert m['loopml_batch_size_sum{model="mlp"}'] == 17
    assert m['loopml_batch_size_count{model="mlp"}'] <= 3  # 1 + the 16 queued ones in one or two passes
    assert m['loopml_batch_size_bucket{model="mlp",le="4"}'] < m['loopml_batch_size_count{model="mlp"}']


def test_a_lone_request_does_not_wait_for_a_batch(serve: Callable[..., ModelServer]) -> None:
    server = serve(max_wait_ms=60_000)  # a fixed-window batcher would hold it for a minute
    r = httpx.post(f"{server.url}/v1/models/mlp/predict", json={"inputs": row()}, timeout=30)
    assert r.status_code == 200
    assert _metrics(server)['loopml_batch_size_bucket{model="mlp",le="1"}'] == 1


def test_a_full_queue_answers_503_with_retry_after(serve: Callable[..., ModelServer]) -> None:
    gate = SlowGate()
    server = serve(gate=gate, inline=False, max_queue=1)
    url = f"{server.url}/v1/models/mlp/predict"
    post = lambda: httpx.post(url, content=BODY, headers={"content-type": "application/json"}, timeout=60)  # noqa: E731
    answers: list[httpx.Response] = []
    t1 = threading.Thread(target=lambda: answers.append(post()))
    t1.start()
    assert gate.entered.wait(30)  # in the worker
    t2 = threading.Thread(target=lambda: answers.append(post()))
    t2.start()
    while _metrics(server)['loopml_queue_depth{model="mlp"}'] < 1:
        pass
    refused = post()
    gate.release.set()
    t1.join(30)
    t2.join(30)

    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "overloaded"
    assert [a.status_code for a in answers] == [200, 200]


class Clients:
    """``n`` threads posting BODY to ``url`` until stopped: the version of each answer, and every failure."""

    def __init__(self, url: str, n: int) -> None:
        self.url, self.stop_event = url, threading.Event()
        self.versions: list[int] = []
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._client) for _ in range(n)]
        for th in self.threads:
            th.start()

    def _client(self) -> None:
        with httpx.Client(timeout=60) as c:
            while not self.stop_event.is_set():
                try:
                    r = c.post(self.url, content=BODY, headers={"content-type": "application/json"})
                    if r.status_code != 200:
                        self.failures.append(r.text)
                    else:
                        self.versions.append(r.json()["version"])
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def stop(self) -> None:
        self.stop_event.set()
        for th in self.threads:
            th.join(60)


def test_hot_swap_under_load_fails_no_request(serve: Callable[..., ModelServer]) -> None:
    server = serve(poll_interval=0.05)
    url = f"{server.url}/v1/models/mlp/predict"
    clients = Clients(url, 8)
    versions, failures = clients.versions, clients.failures
    v2 = register_mlp(seed=1)
    loopml.models.set_alias("mlp", "production", v2)
    while 2 not in versions[-8:] and not failures:
        pass
    n_after = len(versions) + 200
    while len(versions) < n_after and not failures:
        pass
    clients.stop()

    assert failures == []
    assert versions[0] == 1 and versions[-1] == 2
    assert _metrics(server)['loopml_model_swaps_total{model="mlp"}'] == 1
    assert httpx.get(f"{server.url}/v1/models/mlp").json()["version"] == 2


def test_promotion_and_rollback_while_a_version_is_loading_fail_no_request(serve: Callable[..., ModelServer]) -> None:
    """The alias moves to a new version and straight back (a promotion, then ``loopml models rollback``) while the
    server may still be loading the first move: it keeps answering, fails no request, and ends on where the alias is."""
    from loopml.models.registry import rollback

    server = serve(poll_interval=0.05)
    url = f"{server.url}/v1/models/mlp/predict"
    clients = Clients(url, 4)
    versions, failures = clients.versions, clients.failures
    before = loopml.models.get_version("mlp@production").version
    new = register_mlp(seed=2)
    loopml.models.set_alias("mlp", "production", new)  # promote ...
    event = rollback("mlp", "production")  # ... and roll back at once, before or while the server loads `new`
    assert (event.from_version, event.to_version) == (new, before)
    n_after = len(versions) + 300  # requests answered after both moves, whatever the follower saw of them
    deadline = time.monotonic() + 120  # a bound, not a wait: the loop ends as soon as the server settles

    def settled() -> bool:
        if len(versions) < n_after or versions[-1] != before:
            return False
        return bool(httpx.get(f"{server.url}/v1/models/mlp").json()["version"] == before)

    while not failures and time.monotonic() < deadline and not settled():
        pass
    clients.stop()

    assert failures == []
    assert versions[-1] == before, "the server ends on the version the alias names"
    assert httpx.get(f"{server.url}/v1/models/mlp").json()["version"] == before


def _request(port: int) -> bytes:
    return (b"POST /v1/models/mlp/predict HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (port, len(BODY), BODY))


def _status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    return int(data[9:12])


def test_a_burst_on_many_connections_is_served_not_refused(serve: Callable[..., ModelServer]) -> None:
    # 400 requests reach an inline server in one read pass, with room for 32 in its queue. Each full batch
    # runs as soon as it is queued, so all are answered; before, the pass queued 32 and refused 368.
    gate = SlowGate(first_only=True)  # holds the loop thread (an inline model) once
    server = serve(gate=gate, inline=True, max_batch=16, max_queue=32)
    first = threading.Thread(target=httpx.post, args=(f"{server.url}/v1/models/mlp/predict",),
                             kwargs={"content": BODY, "headers": {"content-type": "application/json"}, "timeout": 60})
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=60) for _ in range(400)]
    try:
        first.start()
        assert gate.entered.wait(30)  # the loop thread is inside a forward pass: the burst waits in the sockets
        for s in socks:
            s.sendall(_request(server.port))
        gate.release.set()
        statuses = [_status(s) for s in socks]
    finally:
        gate.release.set()
        for s in socks:
            s.close()
        first.join(30)

    assert statuses == [200] * 400
    m = _metrics(server)
    assert m['loopml_batch_size_sum{model="mlp"}'] == 401
    assert m['loopml_batch_size_bucket{model="mlp",le="8"}'] <= 3  # full batches of 16, not a batch per request


async def _raw_load(port: int, n: int, concurrency: int, body: bytes) -> list[tuple[int, bytes]]:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: httpx costs ~1 ms a request, too slow for a soak."""
    request = (
        b"POST /v1/models/mlp/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    out: list[tuple[int, bytes]] = []
    todo = iter(range(n))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in todo:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
                out.append((status, await reader.readexactly(length)))
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


@pytest.mark.slow
def test_soak_20000_requests_at_concurrency_64(serve: Callable[..., ModelServer], mlp_store: object) -> None:
    import orjson

    # The log never slows an answer: past its buffer, records are dropped and counted. How far the
    # writer falls behind depends on the machine's load (it failed on a loaded 2-core machine with
    # the default 8,192), so the soak gives it room for every request: then nothing may be lost.
    server = serve(log_buffer=20_000)
    results = asyncio.run(_raw_load(server.port, 20_000, 64, BODY))
    assert server.requestlog.flush(60)

    assert len(results) == 20_000
    assert [r for r in results if r[0] != 200] == []
    ids = {orjson.loads(body)["request_id"] for _, body in results}
    assert len(ids) == 20_000
    assert _metrics(server)['loopml_request_log_dropped_total{model="mlp"}'] == 0
    assert ids <= PredictionLog(mlp_store).request_ids("mlp")  # type: ignore[arg-type]


def test_a_full_request_log_drops_and_counts_what_it_does_not_keep(
    serve: Callable[..., ModelServer], mlp_store: object
) -> None:
    import orjson

    server = serve(log_buffer=1)
    results = asyncio.run(_raw_load(server.port, 2_000, 64, BODY))
    assert server.requestlog.flush(60)

    assert [r for r in results if r[0] != 200] == []  # a full log never refuses or delays an answer
    ids = {orjson.loads(body)["request_id"] for _, body in results}
    kept = ids & PredictionLog(mlp_store).request_ids("mlp")  # type: ignore[arg-type]
    dropped = _metrics(server)['loopml_request_log_dropped_total{model="mlp"}']
    assert len(kept) + dropped == len(ids)  # every record is either stored or counted


def test_schemathesis_finds_no_server_error(serve: Callable[..., ModelServer]) -> None:
    schemathesis = need("schemathesis", extra="test")
    from hypothesis import HealthCheck, given, settings

    server = serve()
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    failures: list[str] = []
    for op in schema.get_all_operations():
        operation = op.ok()

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case: object) -> None:
            response = case.call(base_url=server.url)  # type: ignore[attr-defined]
            if response.status_code >= 500 and response.status_code != 503:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}")  # type: ignore[attr-defined]

        check()
    assert failures == []
    assert httpx.get(f"{server.url}/health").status_code == 200  # still alive


def test_a_request_log_buffer_below_one_record_is_refused(mlp_store: object) -> None:
    with pytest.raises(ValueError, match="Argument log_buffer should be an int >= 1"):
        ModelServer("mlp@production", store=mlp_store, log_buffer=0)  # type: ignore[arg-type]
