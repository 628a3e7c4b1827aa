"""Opening a database: engines, SQLite pragmas and the migration check."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..errors import ConfigError, MigrationRequired, StoreError
from .schema import HEAD_REVISION

__all__ = ["create_engine", "current_revision", "migrate", "open_engine"]

# How long a SQLite writer waits for another process's lock before the driver
# reports "database is locked" (the background writer then retries, so no
# point is lost).
SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_path(uri: str) -> Path | None:
    path = uri.removeprefix("sqlite:///")
    if path in ("", ":memory:"):
        return None
    return Path(path)


def create_engine(uri: str) -> Engine:
    """An engine for ``uri`` with loopml's settings; does not touch the schema."""
    if uri.startswith("sqlite:///"):
        path = _sqlite_path(uri)
        if path is None:
            raise ConfigError(
                "An in-memory SQLite store cannot be shared by the background writer; "
                "use a file, e.g. sqlite:///./loopml.db"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None hands transaction control to SQLAlchemy's BEGIN
        # (pysqlite's own implicit transactions defer locking in ways that let
        # two writers deadlock instead of waiting on busy_timeout).
        engine = sa.create_engine(
            f"sqlite:///{path}",
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "isolation_level": None},
        )

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # durable: a committed batch survives power loss
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn):  # type: ignore[no-untyped-def]
            # A write transaction (execution option loopml_write) takes the write lock at
            # BEGIN: a deferred one that reads first and then finds another process's newer
            # commit fails at once with "database is locked" instead of waiting busy_timeout.
            immediate = conn.get_execution_options().get("loopml_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    if uri.startswith(("postgresql://", "postgresql+psycopg://")):
        if uri.startswith("postgresql://"):
            uri = "postgresql+psycopg://" + uri.removeprefix("postgresql://")
        try:
            return sa.create_engine(uri, pool_pre_ping=True)
        except ModuleNotFoundError as exc:
            raise ConfigError(
                "PostgreSQL needs the psycopg driver: pip install 'loopml[postgres]'"
            ) from exc
    raise ConfigError(f"Cannot open {uri!r} as a database: use sqlite:///path or postgresql+psycopg://...")


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision of the database, or None for an empty database."""
    insp = sa.inspect(engine)
    try:
        if not insp.has_table("alembic_version"):
            if insp.has_table("runs"):
                return "unknown"
            return None
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError as exc:
        raise StoreError(f"Cannot read the database at {engine.url!r}: {exc.__class__.__name__}: {exc}") from exc


def migrate(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade the database to ``revision`` with Alembic; return the new revision."""
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    try:
        with engine.execution_options(loopml_write=True).begin() as conn:  # racing creators wait
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except SQLAlchemyError as exc:
        # Two processes creating the same new database: the loser sees tables
        # that already exist; that is fine if the winner got to the head.
        if current_revision(engine) == HEAD_REVISION:
            return HEAD_REVISION
        raise StoreError(f"Migrating the database failed: {exc}") from exc
    except CommandError as exc:  # e.g. a revision this loopml does not know (a newer loopml wrote it)
        raise StoreError(
            f"Migrating the database failed: {exc}. Was it written by a newer loopml? Upgrade loopml, "
            "or restore a backup."
        ) from exc
    return current_revision(engine)


def open_engine(uri: str) -> Engine:
    """Open the database at ``uri``, creating it at the newest revision if it is empty.

    An existing database at an older revision raises :class:`MigrationRequired`.
    """
    engine = create_engine(uri)
    try:
        rev = current_revision(engine)
    except StoreError:
        engine.dispose()
        raise
    if rev is None:
        migrate(engine)
    elif rev != HEAD_REVISION:
        engine.dispose()
        raise MigrationRequired(
            f"The database at {engine.url.render_as_string(hide_password=True)} is at schema revision "
            f"{rev!r}, this loopml needs {HEAD_REVISION!r}. Back it up, then run: loopml db upgrade"
        )
    return engine
