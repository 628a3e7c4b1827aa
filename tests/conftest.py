"""Shared fixtures: real SQLite files in a temp dir and a real PostgreSQL.

`make test` starts PostgreSQL (scripts/test-postgres.sh) and sets
LOOPML_TEST_PG_URL. Without it the PostgreSQL cases skip, except on CI
(CI=true), where they fail: they must run there. Optional test dependencies
behave the same way through ``tests.deps.need`` (docs/testing.md).

Under pytest-xdist each worker gets its own PostgreSQL database on the server
of LOOPML_TEST_PG_URL (``<database>_gw0``, ...), created when missing, and
LOOPML_TEST_PG_URL is rewritten to it before any test runs: tests reset their
database, and two workers must never reset each other's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deps import ON_CI

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _worker_database(url: str, worker: str) -> str:
    """The URL of this xdist worker's own database on ``url``'s server, created when missing."""
    import sqlalchemy as sa

    base = sa.engine.make_url(url)
    name = f"{base.database}_{worker}"
    engine = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is None:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')  # a name from the URL and xdist's gwN
    except sa.exc.OperationalError:
        pass  # no server there: the PostgreSQL tests say so themselves, and still never share a database
    finally:
        engine.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if os.environ.get("LOOPML_TEST_PG_URL") and _WORKER:
    # at import, before any test module reads the variable; subprocesses of tests inherit it
    os.environ["LOOPML_TEST_PG_URL"] = _worker_database(os.environ["LOOPML_TEST_PG_URL"], _WORKER)
PG_URL = os.environ.get("LOOPML_TEST_PG_URL")


def _reset_postgres(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own LOOPML_HOME; nothing is written to the working directory."""
    monkeypatch.setenv("LOOPML_HOME", str(tmp_path / "home"))
    for var in ("LOOPML_TRACKING_URI", "LOOPML_TRACKING_TOKEN", "LOOPML_SERVER_TOKEN", "LOOPML_ARTIFACT_ROOT"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URI: a SQLite file, or a reset PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{(tmp_path / 'store' / 'loopml.db').as_posix()}"
        return
    if not PG_URL:
        if ON_CI:
            pytest.fail("LOOPML_TEST_PG_URL is not set on CI: run the suite through `make test`")
        pytest.skip("no PostgreSQL (set LOOPML_TEST_PG_URL or run `make test`)")
    _reset_postgres(PG_URL)
    yield PG_URL


@pytest.fixture
def store(db_uri: str, tmp_path: Path) -> Iterator["TrackingStore"]:  # noqa: F821
    from loopml.store import TrackingStore

    st = TrackingStore(db_uri, artifact_root=tmp_path / "artifacts")
    yield st
    st.close()


@pytest.fixture
def use_store(db_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the module-level client API (loopml.start_run, ...) at a fresh store."""
    import loopml
    from loopml.tracking import api

    monkeypatch.setenv("LOOPML_TRACKING_URI", db_uri)
    monkeypatch.setenv("LOOPML_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    yield db_uri
    loopml.set_tracking_uri(None)
    # PostgreSQL reuses one URL: drop the cached backend so the next test opens its fresh database
    api.close_all()
