"""Shared fixtures: real SQLite files in a temp dir, a real PostgreSQL and a real S3 endpoint.

The stores come in two set-ups (the ``db_uri`` params): ``sqlite`` is SQLite with
a local artifact folder (the laptop), ``postgres`` is PostgreSQL with an S3
artifact root (the team): every test of the ``store`` and ``use_store`` fixtures
runs on both, artifacts and registry files included.

`make test` starts PostgreSQL (scripts/test-postgres.sh) and sets
LOOPML_TEST_PG_URL. Without it the PostgreSQL cases skip, except on CI
(CI=true), where they fail: they must run there. It also starts moto's S3
server (scripts/test-s3.sh) and sets LOOPML_TEST_S3_ENDPOINT; without it a
session starts one in-process (moto's ThreadedMotoServer on 127.0.0.1), except
on CI, where a missing endpoint fails. Optional test dependencies
behave the same way through ``tests.deps.need`` (docs/testing.md).

Under pytest-xdist each worker gets its own PostgreSQL database on the server
of LOOPML_TEST_PG_URL (``<database>_gw0``, ...), created when missing, and
LOOPML_TEST_PG_URL is rewritten to it before any test runs: tests reset their
database, and two workers must never reset each other's.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deps import ON_CI, need

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
    for var in ("LOOPML_TRACKING_URI", "LOOPML_TRACKING_TOKEN", "LOOPML_SERVER_TOKEN", "LOOPML_ARTIFACT_ROOT",
                "LOOPML_S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)


S3_ENV = {"AWS_ACCESS_KEY_ID": "loopml-test", "AWS_SECRET_ACCESS_KEY": "loopml-test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of an S3 endpoint on 127.0.0.1: LOOPML_TEST_S3_ENDPOINT, else moto's server in this process."""
    url = os.environ.get("LOOPML_TEST_S3_ENDPOINT")
    if url:
        yield url
        return
    if ON_CI:
        pytest.fail("LOOPML_TEST_S3_ENDPOINT is not set on CI: run the suite through `make test`", pytrace=False)
    server_mod = need("moto.server", extra="test")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _host, port = server.get_host_and_port()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def s3_client(endpoint: str) -> Any:
    boto3 = need("boto3", extra="test")
    return boto3.client("s3", endpoint_url=endpoint, region_name=S3_ENV["AWS_DEFAULT_REGION"],
                        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"], aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture(scope="session")
def s3_admin(s3_endpoint: str) -> Any:
    """A boto3 client of the endpoint for the fixtures (one per session: making one costs ~50 ms)."""
    return s3_client(s3_endpoint)


@pytest.fixture(scope="session")
def s3_bucket(s3_admin: Any) -> str:
    """This worker's bucket on the S3 endpoint (each test has its own prefix in it)."""
    name = f"loopml-test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    client = s3_admin
    try:
        client.create_bucket(Bucket=name)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    return name


@pytest.fixture
def s3_root(s3_endpoint: str, s3_bucket: str, s3_admin: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``s3://<bucket>/<a prefix of this test's own>``, with the environment a process needs to reach it."""
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    for var, value in {**S3_ENV, "LOOPML_S3_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(var, value)
    prefix = f"t-{uuid.uuid4().hex}"
    yield f"s3://{s3_bucket}/{prefix}"
    client = s3_admin  # the endpoint lives for the whole session: free what this test stored
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket, Prefix=prefix + "/"):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=s3_bucket, Delete={"Objects": keys, "Quiet": True})


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
def artifact_root(db_uri: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The artifact root of the set-up: a local folder beside SQLite, an S3 prefix beside PostgreSQL."""
    if db_uri.startswith("sqlite"):
        return str(tmp_path / "artifacts")
    return str(request.getfixturevalue("s3_root"))


@pytest.fixture
def store(db_uri: str, artifact_root: str) -> Iterator["TrackingStore"]:  # noqa: F821
    from loopml.store import TrackingStore

    st = TrackingStore(db_uri, artifact_root=artifact_root)
    yield st
    st.close()


@pytest.fixture
def use_store(db_uri: str, artifact_root: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the module-level client API (loopml.start_run, ...) at a fresh store."""
    import loopml
    from loopml.tracking import api

    monkeypatch.setenv("LOOPML_TRACKING_URI", db_uri)
    monkeypatch.setenv("LOOPML_ARTIFACT_ROOT", artifact_root)
    yield db_uri
    loopml.set_tracking_uri(None)
    # PostgreSQL reuses one URL: drop the cached backend so the next test opens its fresh database
    api.close_all()


@pytest.fixture
def mlflow_fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """MLflow's client as a new process has it: no retries, no experiment or registry left by an earlier test.

    ``mlflow.set_experiment`` keeps the experiment id in a module global and in
    ``MLFLOW_EXPERIMENT_ID``, and ``mlflow.set_registry_uri`` keeps the URI in one
    and in ``MLFLOW_REGISTRY_URI`` (``set_registry_uri(None)`` leaves the variable);
    a later test's ``start_run`` or ``register_model`` against another server would
    use them (xdist runs several files in one process).
    """
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry_utils

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a 5xx would be retried for minutes
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


# The files that take a worker longest (measured with --durations=0, about 20-50 s each on 2 cores).
# `make test` hands whole files to workers in collection order (xdist --dist loadfile); starting with
# these keeps a long file from being the last one left running on one worker while the other idles.
LONGEST_FIRST = (
    "tests/federated/test_federation.py",
    "tests/test_readme.py",
    "tests/test_typing.py",
    "tests/test_doctests.py",
    "tests/models/test_version_data.py",
    "tests/server/test_models_api.py",
    "tests/models/test_registry.py",
    "tests/federated/test_deployment.py",
    "tests/server/test_processes.py",
    "tests/contracts/test_tracking_backend.py",
    "tests/test_demo.py",
    "tests/server/test_http_api.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: the rest keep their order
