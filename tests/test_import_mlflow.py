"""``loopml import mlflow`` on stores the real MLflow client wrote (SQLite; PostgreSQL where it runs)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopml import config
from loopml.cli import app
from loopml.store import TrackingStore
from loopml.store.mlflow_import import IMPORT_TAG, VERSION_TAG, MlflowSource, import_mlflow
from loopml.store.registry import RegistryStore
from loopml.tracking import api
from tests.conftest import PG_URL, _reset_postgres
from tests.deps import ON_CI, need

mlflow = need("mlflow", extra="test")

# Model versions go through store/mlflow_models.py (branch mlf-models). Until it is in this
# tree, the import reports each version as left out and the version checks below are skipped.
T0 = 1_700_000_000_000  # ms, MLflow's unit


@dataclass
class Source:
    uri: str
    artifacts: Path
    first: str  # run ids
    child: str
    failed: str


def _write_mlflow_store(uri: str, root: Path) -> Source:
    """Two experiments, three runs (one nested, one failed), metric histories, artifacts, a registered model
    with two versions and two aliases, written by MLflow's own client."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    e1 = c.create_experiment("digits", artifact_location=str(root / "mlruns" / "1"))
    e2 = c.create_experiment("churn", artifact_location=str(root / "mlruns" / "2"))
    first = c.create_run(e1, run_name="first", start_time=T0, tags={"team": "vision"}).info.run_id
    loss = [Metric("loss", 1.0 / (i + 1), T0 + 10 * i, i) for i in range(500)]
    acc = [Metric("acc", 0.5, T0, 0), Metric("acc", 0.7, T0 + 5, 0), Metric("acc", float("nan"), T0 + 9, 3)]
    c.log_batch(first, metrics=loss + acc, params=[Param("lr", "0.01"), Param("layers", "3")],
                tags=[RunTag("mlflow.source.git.commit", "a" * 40)])
    src = root / "src"
    (src / "plots").mkdir(parents=True)
    (src / "report.txt").write_text("accuracy 0.97\n")
    (src / "plots" / "loss.bin").write_bytes(bytes(range(256)) * 4)
    c.log_artifact(first, str(src / "report.txt"))
    c.log_artifacts(first, str(src / "plots"), "plots")
    child = c.create_run(e1, run_name="child", start_time=T0 + 1000, tags={"mlflow.parentRunId": first}).info.run_id
    c.log_metric(child, "loss", 0.25, timestamp=T0 + 2000, step=7)
    c.set_terminated(child, end_time=T0 + 3000)
    failed = c.create_run(e2, run_name="broken", start_time=T0 + 5000, tags={"bad..key": "x"}).info.run_id
    c.log_param(failed, "seed", "1")
    c.set_terminated(failed, status="FAILED", end_time=T0 + 6000)

    class Echo(mlflow.pyfunc.PythonModel):  # the cheapest flavour to log (0.8 s; pytorch's takes 9 s)
        def predict(self, context, model_input):  # type: ignore[no-untyped-def]
            return model_input

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        with mlflow.start_run(run_id=first):
            info = mlflow.pyfunc.log_model(name="model", python_model=Echo(), pip_requirements=["mlflow"])
        mlflow.register_model(info.model_uri, "digits")
        mlflow.register_model(info.model_uri, "digits")
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)  # leaves MLFLOW_REGISTRY_URI set: a later test would register here
        os.environ.pop("MLFLOW_REGISTRY_URI", None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    c.set_terminated(first, end_time=T0 + 60_000)  # after start_run(run_id=first), which ends it now
    c.set_registered_model_alias("digits", "production", "1")
    c.set_registered_model_alias("digits", "Champion", "2")  # uppercase: not a loopml alias
    c.update_model_version("digits", "2", description="second")
    return Source(uri, root / "mlruns", first, child, failed)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    root = tmp_path_factory.mktemp("mlflow")
    return _write_mlflow_store(f"sqlite:///{root / 'mlflow.db'}", root)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[str]:
    uri = f"sqlite:///{tmp_path / 'loopml.db'}"
    yield uri
    api.close_all()


def _import(source: Source, target: str, *extra: str) -> dict:  # type: ignore[type-arg]
    result = CliRunner().invoke(app, ["import", "mlflow", "--from", source.uri, "--artifacts", str(source.artifacts),
                                      "--store", target, "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _check_everything_is_there(source: Source, store: TrackingStore) -> None:
    first = store.get_run(source.first)
    assert (first.experiment, first.name, first.status) == ("digits", "first", "FINISHED")
    assert (first.start_time, first.end_time) == (T0 / 1000, T0 / 1000 + 60)
    assert first.params == {"lr": "0.01", "layers": "3"}
    assert first.tags["team"] == "vision" and first.git_commit == "a" * 40
    assert first.tags[IMPORT_TAG].endswith(f"run {source.first}")
    loss = store.history(source.first, "loss")
    assert list(loss.steps) == list(range(500))
    assert list(loss.timestamps) == [(T0 + 10 * i) / 1000 for i in range(500)]
    assert list(loss.values) == [1.0 / (i + 1) for i in range(500)]
    acc = store.history(source.first, "acc")
    assert list(acc.steps) == [0, 0, 3] and list(acc.values[:2]) == [0.5, 0.7] and math.isnan(acc.values[2])
    assert first.metrics["loss"].count == 500 and first.metrics["loss"].value == 1.0 / 500

    arts = {a.path: a.size for a in store.list_artifacts(source.first)}
    assert arts == {"report.txt": 14, "plots/loss.bin": 1024}
    assert store.artifact_path(source.first, "plots/loss.bin").read_bytes() == bytes(range(256)) * 4

    child = store.get_run(source.child)
    assert child.parent_id == source.first and store.history(source.child, "loss").steps.tolist() == [7]
    failed = store.get_run(source.failed)
    assert (failed.experiment, failed.status, failed.end_time, failed.params) == ("churn", "FAILED", T0 / 1000 + 6, {"seed": "1"})
    assert "bad..key" not in failed.tags

    registry = RegistryStore(store)
    versions = registry.list_versions("digits")
    assert sorted(v.tags[VERSION_TAG] for v in versions) == ["1", "2"]
    by_number = {v.tags[VERSION_TAG]: v for v in versions}
    assert by_number["2"].description == "second" and by_number["1"].run_id == source.first
    assert registry.resolve("digits@production").version == by_number["1"].version
    assert set(by_number["1"].files) == {"mlflow"}


def test_import_copies_everything_and_a_second_import_nothing(source: Source, target: str) -> None:
    summary = _import(source, target)

    copied, existing = summary["copied"], summary["existing"]
    assert (copied["experiments"], copied["runs"], copied["params"]) == (2, 3, 3)
    assert copied["metric points"] == 500 + 3 + 1 and copied["artifact files"] == 2
    assert not any(existing.values())
    left_out = "\n".join(summary["skipped"])
    assert "bad..key" in left_out and "Champion" in left_out  # reported, not a crash
    assert (copied["models"], copied["versions"], copied["aliases"]) == (1, 2, 1)
    store = TrackingStore(target, artifact_root=config.settings().artifact_root)
    _check_everything_is_there(source, store)

    shown = CliRunner().invoke(app, ["import", "mlflow", "--from", source.uri, "--artifacts", str(source.artifacts),
                                     "--store", target], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "already there" in shown.output and "runs" in shown.output and "100%" not in shown.output.split("imported")[0][:0]
    assert "Champion" in shown.output and "Traceback" not in shown.output
    again = _import(source, target)

    assert not any(again["copied"].values()), again
    assert again["existing"]["runs"] == 3 and again["existing"]["metric points"] == 504
    assert again["existing"]["artifact files"] == 2
    _check_everything_is_there(source, store)
    assert store.history(source.first, "loss").values.size == 500
    assert len(RegistryStore(store).list_versions("digits")) == 2
    store.close()


def test_a_run_with_new_points_and_moved_artifacts_is_brought_up_to_date(tmp_path: Path, target: str) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    uri = f"sqlite:///{tmp_path / 'small.db'}"
    c = MlflowClient(tracking_uri=uri)
    rid = c.create_run(c.create_experiment("e", artifact_location=str(tmp_path / "old" / "1")), start_time=T0).info.run_id
    c.log_batch(rid, metrics=[Metric("loss", float(i), T0 + i, i) for i in range(100)])
    c.set_tag(rid, "phase", "one")
    (tmp_path / "notes.txt").write_text("moved with the folder")
    c.log_artifact(rid, str(tmp_path / "notes.txt"))
    (tmp_path / "old").rename(tmp_path / "mlruns")  # as if copied from another machine
    store = TrackingStore(target, artifact_root=tmp_path / "artifacts")
    first = import_mlflow(MlflowSource(uri), store)

    assert first.copied["metric points"] == 100 and first.copied["artifact files"] == 0
    assert any("pass --artifacts" in line for line in first.skipped)

    c.log_batch(rid, metrics=[Metric("loss", float(i), T0 + i, i) for i in range(100, 150)])
    c.log_metric(rid, "acc", 0.9, timestamp=T0, step=0)
    c.set_tag(rid, "phase", "two")
    summary = import_mlflow(MlflowSource(uri, artifacts=tmp_path / "mlruns"), store)

    assert (summary.copied["metric points"], summary.existing["metric points"]) == (51, 100)
    assert store.history(rid, "loss").steps.tolist() == list(range(150))
    assert store.get_run(rid).tags["phase"] == "two" and store.get_run(rid).metrics["acc"].value == 0.9
    assert summary.copied["artifact files"] == 1 and summary.skipped == []
    assert store.artifact_path(rid, "notes.txt").read_text() == "moved with the folder"
    store.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: "mysqlx://host/db", "should be an MLflow tracking URI"),
        (lambda d: f"sqlite:///{d / 'missing.db'}", "No MLflow database at"),
        (lambda d: f"sqlite:///{d / 'loopml.db'}", "is not an MLflow database"),
        (lambda d: f"http://127.0.0.1:{_closed_port()}", "Cannot reach the MLflow server"),
    ],
    ids=["unknown scheme", "no file", "not mlflow", "no server"],
)
def test_bad_sources_are_one_line_errors_and_write_nothing(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    other = TrackingStore(f"sqlite:///{tmp_path / 'loopml.db'}", artifact_root=tmp_path / "a")  # a loopml database
    other.close()
    target = tmp_path / "target" / "loopml.db"

    result = CliRunner().invoke(app, ["import", "mlflow", "--from", make(tmp_path), "--store", f"sqlite:///{target}"])

    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "target").exists() and not (tmp_path / "missing.db").exists()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.postgres
def test_import_from_postgresql(tmp_path: Path, target: str) -> None:
    if not PG_URL:
        if ON_CI:
            pytest.fail("LOOPML_TEST_PG_URL is not set on CI: run the suite through `make test`")
        pytest.skip("no PostgreSQL (set LOOPML_TEST_PG_URL or run `make test`)")
    _reset_postgres(PG_URL)
    from mlflow import MlflowClient

    pg = PG_URL  # MLflow creates its own tables there with its own migrations
    c = MlflowClient(tracking_uri=pg)
    rid = c.create_run(c.create_experiment("pg", artifact_location=str(tmp_path / "a")), start_time=T0).info.run_id
    c.log_metric(rid, "loss", 0.5, timestamp=T0, step=3)
    c.log_param(rid, "lr", "0.1")
    plain = "postgresql://" + pg.split("://", 1)[1]  # as a user writes it

    summary = _import(Source(plain, tmp_path, rid, rid, rid), target)

    assert (summary["copied"]["runs"], summary["copied"]["metric points"]) == (1, 1)
    store = TrackingStore(target, artifact_root=config.settings().artifact_root)
    assert store.get_run(rid).params == {"lr": "0.1"} and store.history(rid, "loss").steps.tolist() == [3]
    store.close()
