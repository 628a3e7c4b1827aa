"""The ``loopml`` command: help everywhere, data commands, one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import typer
from click.testing import Result
from typer.testing import CliRunner

from loopml.cli import app
from loopml.store import TrackingStore, open_engine
from loopml.tracking import api

WIDE = {"COLUMNS": "250"}  # rich tables would otherwise fold 32-character run ids


def command_paths(t: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group of a typer app, walked recursively, as argv prefixes."""
    paths = [prefix]
    for cmd in t.registered_commands:
        paths.append((*prefix, cmd.name or cmd.callback.__name__.replace("_", "-")))
    for group in t.registered_groups:
        paths.extend(command_paths(group.typer_instance, (*prefix, group.name)))
    return paths


PATHS = command_paths(app)

def test_the_walk_finds_every_command() -> None:
    assert {(), ("experiments", "list"), ("runs", "list"), ("runs", "show"), ("db", "upgrade"), ("server",)} <= set(PATHS)
    assert {("experiments",), ("runs",), ("db",)} <= set(PATHS)


@pytest.mark.parametrize(
    "path",
    PATHS,
    ids=lambda p: " ".join(p) or "loopml",
)
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])

    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    assert "Example" in result.stdout


def test_python_m_loopml_help(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "loopml", "--help"], capture_output=True, text=True, cwd=tmp_path)

    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout and "experiments" in out.stdout and "runs" in out.stdout
    assert list(tmp_path.iterdir()) == []  # --help writes nothing into the working directory


# -- data commands ---------------------------------------------------------------


@pytest.fixture
def data(store: TrackingStore, db_uri: str) -> Iterator[dict[str, str]]:
    """Three runs in two experiments, written through the store; the CLI reads them back."""
    ids = {}
    for name, exp, acc in (("good", "digits", 0.95), ("bad", "digits", 0.5), ("other", "mnist", 0.99)):
        run = store.create_run(experiment=exp, name=name, params={"lr": "0.01"}, tags={"who": name})
        store.log_metrics([(run.id, "val_acc", 0, 1.0, 0.1), (run.id, "val_acc", 1, 2.0, acc)])
        store.set_status(run.id, "FINISHED")
        ids[name] = run.id
    store.put_artifact_bytes(ids["good"], "notes.txt", b"hello")
    yield ids
    # The CLI caches one backend per URI; drop it so the next test's fresh database is opened anew.
    api.close_all()


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=WIDE)


def test_experiments_list_json(data: dict[str, str], db_uri: str) -> None:
    result = invoke("experiments", "list", "--store", db_uri, "--json")

    assert result.exit_code == 0, result.output
    assert {e["name"]: e["run_count"] for e in json.loads(result.stdout)} == {"digits": 2, "mnist": 1}


def test_runs_list_json(data: dict[str, str], db_uri: str) -> None:
    everything = invoke("runs", "list", "--store", db_uri, "--json")
    assert everything.exit_code == 0, everything.output
    assert {r["id"] for r in json.loads(everything.stdout)} == set(data.values())

    one_exp = invoke("runs", "list", "--store", db_uri, "--experiment", "digits", "--json")
    assert one_exp.exit_code == 0
    assert {r["id"] for r in json.loads(one_exp.stdout)} == {data["good"], data["bad"]}

    filtered = invoke("runs", "list", "--store", db_uri, "--filter", "metrics.val_acc > 0.9", "-o", "metrics.val_acc DESC", "--json")
    assert filtered.exit_code == 0
    rows = json.loads(filtered.stdout)
    assert [r["id"] for r in rows] == [data["other"], data["good"]]
    assert rows[0]["metrics"]["val_acc"]["value"] == 0.99 and rows[0]["params"] == {"lr": "0.01"}

    limited = invoke("runs", "list", "--store", db_uri, "-o", "metrics.val_acc DESC", "--limit", "1", "--json")
    assert [r["id"] for r in json.loads(limited.stdout)] == [data["other"]]


def test_runs_show_json(data: dict[str, str], db_uri: str) -> None:
    run_id = data["good"]
    result = invoke("runs", "show", run_id, "--store", db_uri, "--json")

    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert (d["id"], d["name"], d["status"], d["experiment"]) == (run_id, "good", "FINISHED", "digits")
    assert d["params"] == {"lr": "0.01"} and d["tags"] == {"who": "good"}
    assert d["metrics"]["val_acc"]["count"] == 2 and d["metrics"]["val_acc"]["value"] == 0.95
    assert [(a["path"], a["size"]) for a in d["artifacts"]] == [("notes.txt", 5)]


def test_experiments_list_table(data: dict[str, str], db_uri: str) -> None:
    result = invoke("experiments", "list", "--store", db_uri)

    assert result.exit_code == 0, result.output
    assert "digits" in result.stdout and "mnist" in result.stdout


def test_runs_list_table(data: dict[str, str], db_uri: str) -> None:
    result = invoke("runs", "list", "--store", db_uri, "--experiment", "digits")

    assert result.exit_code == 0, result.output
    assert data["good"] in result.stdout and data["bad"] in result.stdout and data["other"] not in result.stdout


def test_runs_show_table(data: dict[str, str], db_uri: str) -> None:
    run_id = data["good"]
    result = invoke("runs", "show", run_id, "--store", db_uri)

    assert result.exit_code == 0, result.output
    for text in (run_id, "good", "FINISHED", "val_acc", "notes.txt", "lr"):
        assert text in result.stdout, text


# -- errors: one line on stderr, exit code 2, no traceback -----------------------


def assert_one_error_line(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_unknown_run_id(data: dict[str, str], db_uri: str) -> None:
    result = invoke("runs", "show", "0" * 32, "--store", db_uri)
    assert_one_error_line(result, f"Run '{'0' * 32}' does not exist")


def test_bad_filter_shows_a_caret(data: dict[str, str], db_uri: str) -> None:
    result = invoke("runs", "list", "--store", db_uri, "--filter", "metrics.val_acc >> 1")

    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: ")
    assert lines[1].strip() == "metrics.val_acc >> 1"
    assert lines[2].index("^") == lines[1].index(">> 1") + 1  # points at the second '>'


def test_bad_limit(data: dict[str, str], db_uri: str) -> None:
    assert_one_error_line(invoke("runs", "list", "--store", db_uri, "--limit", "0"), "Argument limit should be an integer")


@pytest.mark.parametrize(
    "args",
    [("experiments", "list"), ("runs", "list"), ("runs", "show", "abc"), ("db", "upgrade")],
    ids=" ".join,
)
def test_bad_tracking_uri(args: tuple[str, ...]) -> None:
    result = invoke(*args, "--store", "mysql://db/x")
    assert_one_error_line(result, "Tracking URI 'mysql://db/x' is not supported")


def test_old_database_says_to_upgrade(db_uri: str) -> None:
    open_engine(db_uri).dispose()
    eng = sa.create_engine(db_uri)
    with eng.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'prehistoric'"))
    eng.dispose()

    assert_one_error_line(invoke("runs", "list", "--store", db_uri), "run: loopml db upgrade")
