"""Each implementation of a Protocol of :mod:`loopml.store.protocols`, as a fixture parametrized over all of them.

``backend`` is a :class:`~loopml.store.protocols.TrackingBackend`: a
TrackingStore on a SQLite file, a TrackingStore on PostgreSQL (LOOPML_TEST_PG_URL;
skipped locally without it, failing on CI like every PostgreSQL test), and a
RemoteStore talking to a real loopml server (uvicorn on an ephemeral 127.0.0.1
port) over a SQLite store. ``registry`` is the :class:`~loopml.store.protocols.Registry`
over that backend: a RegistryStore, or a RemoteRegistry over HTTP.

A test of the contract suites uses only what the Protocol offers, so that the
same assertions hold for every implementation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loopml.store.protocols import Registry, TrackingBackend
from tests.conftest import PG_URL, _reset_postgres
from tests.deps import ON_CI
from tests.server.conftest import LiveServer

KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "http"]


def _database(kind: str, tmp_path: Path) -> str:
    if kind == "postgres":
        if not PG_URL:
            if ON_CI:
                pytest.fail("LOOPML_TEST_PG_URL is not set on CI: run the suite through `make test`")
            pytest.skip("no PostgreSQL (set LOOPML_TEST_PG_URL or run `make test`)")
        _reset_postgres(PG_URL)
        return PG_URL
    return f"sqlite:///{(tmp_path / 'store' / 'loopml.db').as_posix()}"


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TrackingBackend]:
    """A fresh, empty tracking backend of each kind."""
    from loopml.store.tracking import TrackingStore

    kind: str = request.param
    store = TrackingStore(_database(kind, tmp_path), artifact_root=tmp_path / "artifacts")
    if kind == "http":
        from loopml.server import create_app
        from loopml.tracking.remote import RemoteStore

        server = LiveServer(create_app(store))
        remote = RemoteStore(server.url)
        yield remote
        remote.close()
        server.stop()
    else:
        yield store
    store.close()


@pytest.fixture
def registry(backend: TrackingBackend) -> Registry:
    """The registry over ``backend``: in the database, or the server's over HTTP."""
    from loopml.models.registry import registry_of

    return registry_of(backend)
