"""No point is lost while the server is down: the writer keeps and retries its batches."""

from __future__ import annotations

import socket
from collections.abc import Callable

import numpy as np
import pytest

import loopml
from loopml.errors import StoreError
from loopml.server import create_app
from loopml.store import TrackingStore
from loopml.tracking.remote import RemoteStore
from loopml.tracking.writer import BatchWriter

from .conftest import LiveServer, forget_http_backends


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_is_a_store_error() -> None:
    remote = RemoteStore(f"http://127.0.0.1:{_free_port()}", connect_timeout=2.0)
    with pytest.raises(
        StoreError, match=r"Cannot reach the loopml server at http://127\.0\.0\.1:\d+ \(ConnectError"
    ) as info:
        remote.log_metrics([("a" * 32, "x", 0, 1.0, 1.0)])
    assert info.value.transient is True  # the writer keeps the batch
    with pytest.raises(StoreError, match="Cannot reach"):
        remote.get_run("a" * 32)
    remote.close()


def test_points_logged_while_the_server_is_down_arrive_after_a_restart(
    store: TrackingStore, live_server: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = live_server(create_app(store))
    monkeypatch.setenv("LOOPML_TRACKING_URI", first.url)
    try:
        run = loopml.start_run(experiment="outage")
        for i in range(1000):
            run.log({"x": float(i)}, step=i)
        assert run.flush(timeout=30)

        first.stop()
        for i in range(1000, 2000):
            run.log({"x": float(i)}, step=i)
        assert run.flush(timeout=0.5) is False  # kept in the buffer, not durable, not dropped
        assert run._writer is not None and run._writer.pending == 1000
        assert len(store.history(run.id, "x").steps) == 1000

        second = live_server(create_app(store), port=first.port)  # same store, same address
        assert run.flush(timeout=30)
        run.finish()
        h = store.history(run.id, "x")
        np.testing.assert_array_equal(h.steps, np.arange(2000))
        assert h.values.sum() == sum(range(2000))
        assert store.get_run(run.id).status == "FINISHED"
        assert run._writer.retries > 0
        second.stop()
    finally:
        forget_http_backends()


def test_the_writer_retries_until_a_server_comes_up(
    sqlite_store: TrackingStore, live_server: Callable[..., LiveServer]
) -> None:
    port = _free_port()
    run = sqlite_store.create_run(experiment="late")
    remote = RemoteStore(f"http://127.0.0.1:{port}", connect_timeout=2.0)
    writer = BatchWriter(remote, flush_interval=0.05, max_backoff=0.2)
    writer.add([(run.id, "x", i, 1.0, float(i)) for i in range(5000)])
    assert writer.flush(timeout=0.5) is False
    assert writer.retries > 0 and writer.pending == 5000

    live_server(create_app(sqlite_store), port=port)
    assert writer.flush(timeout=30)
    assert writer.close()
    assert sqlite_store.history(run.id, "x").steps.tolist() == list(range(5000))
    remote.close()
