"""Migrations: new databases at HEAD, metadata == migrated schema, old databases refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from typer.testing import CliRunner

import loopml.store.engine as engine_module
from loopml.cli import app
from loopml.errors import MigrationRequired, StoreError
from loopml.store import TrackingStore, current_revision, open_engine
from loopml.store.schema import HEAD_REVISION, metadata

TABLES = {
    "alembic_version", "experiments", "runs", "params", "tags", "metric_blocks", "latest_metrics", "artifacts",
    "datasets", "run_datasets", "models", "model_versions", "model_files", "model_aliases", "alias_events",
    "predictions", "feedback", "monitor_results", "alert_rules", "alerts",
    "dataset_predictions", "label_queue", "loop_events", "experiment_tags", "run_links", "mlflow_logged_models",
}


def _set_revision(uri: str, revision: str) -> None:
    eng = engine_module.create_engine(uri)
    with eng.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
    eng.dispose()


def test_script_directory_head_is_head_revision() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(engine_module.__file__).with_name("migrations")))

    assert ScriptDirectory.from_config(cfg).get_heads() == [HEAD_REVISION]


def test_new_database_is_created_at_head(db_uri: str) -> None:
    eng = open_engine(db_uri)
    try:
        assert current_revision(eng) == HEAD_REVISION
        assert set(sa.inspect(eng).get_table_names()) == TABLES
    finally:
        eng.dispose()


def test_migrated_database_matches_metadata(db_uri: str) -> None:
    eng = open_engine(db_uri)
    try:
        with eng.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            diff = compare_metadata(ctx, metadata)
    finally:
        eng.dispose()

    assert diff == []


def test_reopening_a_database_at_head_keeps_its_data(db_uri: str, tmp_path: Path) -> None:
    first = TrackingStore(db_uri, artifact_root=tmp_path / "a")
    run = first.create_run(experiment="digits")
    first.close()

    second = TrackingStore(db_uri, artifact_root=tmp_path / "a")
    try:
        assert second.get_run(run.id).experiment == "digits"
    finally:
        second.close()


def test_unknown_revision_requires_upgrade(db_uri: str, tmp_path: Path) -> None:
    open_engine(db_uri).dispose()
    _set_revision(db_uri, "prehistoric")

    with pytest.raises(MigrationRequired, match=r"at schema revision 'prehistoric'.*run: loopml db upgrade"):
        open_engine(db_uri)
    with pytest.raises(MigrationRequired, match="loopml db upgrade"):
        TrackingStore(db_uri, artifact_root=tmp_path / "a")


def test_older_revision_requires_upgrade_when_head_moves(db_uri: str) -> None:
    # A real database at 0001 (before datasets), opened by this loopml whose newest migration is newer.
    eng = engine_module.create_engine(db_uri)
    engine_module.migrate(eng, "0001")
    eng.dispose()

    with pytest.raises(
        MigrationRequired, match=rf"at schema revision '0001', this loopml needs '{HEAD_REVISION}'\. Back it up, then run: loopml db upgrade"
    ):
        open_engine(db_uri)


def test_upgrade_from_0001_keeps_runs_and_adds_datasets(db_uri: str, tmp_path: Path) -> None:
    eng = engine_module.create_engine(db_uri)
    assert engine_module.migrate(eng, "0001") == "0001"
    with eng.begin() as conn:
        conn.execute(sa.text("INSERT INTO experiments (name, created_at) VALUES ('old', 1.0)"))
    assert engine_module.migrate(eng) == HEAD_REVISION
    assert {"datasets", "run_datasets"} <= set(sa.inspect(eng).get_table_names())
    eng.dispose()

    st = TrackingStore(db_uri, artifact_root=tmp_path / "a")
    try:
        assert [e.name for e in st.list_experiments()] == ["old"]
    finally:
        st.close()


def test_database_without_alembic_version_requires_upgrade(db_uri: str) -> None:
    eng = engine_module.create_engine(db_uri)
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE runs (id VARCHAR(32) PRIMARY KEY)"))
    eng.dispose()

    with pytest.raises(MigrationRequired, match=r"revision 'unknown'.*loopml db upgrade"):
        open_engine(db_uri)


def test_db_upgrade_brings_an_empty_database_to_head(db_uri: str) -> None:
    result = CliRunner().invoke(app, ["db", "upgrade", "--store", db_uri])

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"database at revision {HEAD_REVISION} (was empty)"
    eng = open_engine(db_uri)  # no MigrationRequired
    try:
        assert current_revision(eng) == HEAD_REVISION
    finally:
        eng.dispose()

    again = CliRunner().invoke(app, ["db", "upgrade", "--store", db_uri])
    assert again.exit_code == 0
    assert again.stdout.strip() == f"database at revision {HEAD_REVISION} (was {HEAD_REVISION})"


def test_migrate_translates_an_unknown_revision(db_uri: str) -> None:
    open_engine(db_uri).dispose()
    _set_revision(db_uri, "prehistoric")
    eng = engine_module.create_engine(db_uri)
    try:
        with pytest.raises(StoreError, match=r"Can't locate revision identified by 'prehistoric'.*newer loopml"):
            engine_module.migrate(eng)
    finally:
        eng.dispose()


def test_db_upgrade_of_an_unknown_revision_is_one_error_line(db_uri: str) -> None:
    open_engine(db_uri).dispose()
    _set_revision(db_uri, "prehistoric")

    result = CliRunner().invoke(app, ["db", "upgrade", "--store", db_uri])

    assert result.exit_code == 1  # a StoreError: the operation failed (loopml.errors: exit codes)
    assert result.stderr.startswith("error: Migrating the database failed")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_in_memory_sqlite_is_refused() -> None:
    from loopml.errors import ConfigError

    with pytest.raises(ConfigError, match="use a file, e.g. sqlite:///./loopml.db"):
        open_engine("sqlite:///:memory:")
