"""Real tracking servers on 127.0.0.1 with ephemeral ports, run by uvicorn in a thread.

``live_server(app)`` starts one and returns once it listens (an Event set
by uvicorn's startup, no sleeping); ``server`` is one over the ``store``
fixture (SQLite and PostgreSQL), ``sqlite_server`` one over SQLite only for
the tests of HTTP behaviour that no database changes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from loopml.server import create_app
from loopml.store import TrackingStore
from loopml.tracking.remote import RemoteStore


class _ThreadServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()  # also when startup failed, so the waiter does not hang


class LiveServer:
    """A uvicorn server in a daemon thread; ``url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self, app: Any, *, port: int = 0) -> None:
        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        self._server = _ThreadServer(config)
        self._thread = threading.Thread(target=self._server.run, name="test-uvicorn", daemon=True)
        self._thread.start()
        if not self._server.ready.wait(timeout=30) or not self._server.started:
            self.stop()
            raise RuntimeError(f"the test server did not start on port {port}")
        self.port: int = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the test server did not stop"


@pytest.fixture
def live_server() -> Iterator[Callable[..., LiveServer]]:
    """A factory: ``live_server(app, port=0)``; every server it started is stopped afterwards."""
    started: list[LiveServer] = []

    def start(app: Any, *, port: int = 0) -> LiveServer:
        srv = LiveServer(app, port=port)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        if srv._thread.is_alive():
            srv.stop()


@pytest.fixture
def server(store: TrackingStore, live_server: Callable[..., LiveServer]) -> LiveServer:
    """A server over the ``store`` fixture (parametrized: SQLite and PostgreSQL)."""
    return live_server(create_app(store))


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[TrackingStore]:
    st = TrackingStore(f"sqlite:///{(tmp_path / 'db' / 'loopml.db').as_posix()}", artifact_root=tmp_path / "artifacts")
    yield st
    st.close()


@pytest.fixture
def sqlite_server(sqlite_store: TrackingStore, live_server: Callable[..., LiveServer]) -> LiveServer:
    return live_server(create_app(sqlite_store))


@pytest.fixture
def remote(server: LiveServer) -> Iterator[RemoteStore]:
    rs = RemoteStore(server.url)
    yield rs
    rs.close()


def forget_http_backends() -> None:
    """Drop the module API's cached HTTP backends and their writers.

    Ports are reused between tests; a cached client for a port (with another
    token, or with points for a dead server) must not leak into the next test.
    """
    from loopml.tracking import api

    with api._lock:
        stale = [u for u in api._backends if u.startswith(("http://", "https://"))]
        backends = [api._backends.pop(u) for u in stale]
        writers = [api._writers.pop(id(b), None) for b in backends]
    for w in writers:
        if w is not None:
            w.close(timeout=5.0)
    for b in backends:
        b.close()


@pytest.fixture
def use_server(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    """Point the module-level client API (loopml.start_run, ...) at ``server``."""
    import loopml

    monkeypatch.setenv("LOOPML_TRACKING_URI", server.url)
    yield server
    forget_http_backends()
    loopml.set_tracking_uri(None)

