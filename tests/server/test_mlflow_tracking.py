"""The official mlflow client (the pinned release) logging to and reading from a live loopml server."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from loopml.server import create_app
from loopml.store import TrackingStore
from loopml.store import lifecycle
from tests.deps import need
from tests.server.conftest import LiveServer

mlflow = need("mlflow", extra="test")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag, ViewType  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

API = "/api/2.0/mlflow"


pytestmark = pytest.mark.usefixtures("mlflow_fresh")  # tests/server/conftest.py


def _serve(store: TrackingStore, live_server: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch) -> LiveServer:
    srv = live_server(create_app(store))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", srv.url)
    mlflow.set_tracking_uri(srv.url)
    return srv


def test_the_issue_snippet_logs_loopml_runs(store: TrackingStore, live_server: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch) -> None:
    _serve(store, live_server, monkeypatch)
    exp = mlflow.set_experiment("digits")  # get-by-name answers RESOURCE_DOES_NOT_EXIST, then create
    ids = []
    for lr, loss in (("0.01", 0.3), ("0.1", 0.7), ("0.05", 0.2)):
        with mlflow.start_run(run_name=f"lr-{lr}") as run:
            mlflow.log_params({"lr": lr})
            mlflow.log_metric("loss", 1.0, step=0)
            mlflow.log_metric("loss", loss, step=1)
            mlflow.set_tag("team", "vision")
            ids.append(run.info.run_id)
    found = mlflow.search_runs(filter_string="metrics.loss < 0.5", order_by=["metrics.loss ASC"], output_format="list")
    assert [r.info.run_id for r in found] == [ids[2], ids[0]]
    assert found[0].data.params == {"lr": "0.05"} and found[0].data.tags["team"] == "vision"
    assert found[0].info.status == "FINISHED" and found[0].info.run_name == "lr-0.05"
    assert found[0].info.artifact_uri == f"mlflow-artifacts:/{exp.experiment_id}/{ids[2]}/artifacts"
    history = MlflowClient().get_metric_history(ids[0], "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.3)]
    assert all(abs(m.timestamp / 1000 - run.info.start_time / 1000) < 60 for m in history)  # milliseconds

    # MLflow's runs are loopml's runs
    mine = store.get_run(ids[0])
    assert mine.experiment == "digits" and str(mine.experiment_id) == exp.experiment_id
    assert mine.params == {"lr": "0.01"} and mine.tags["team"] == "vision" and mine.status == "FINISHED"
    assert mine.name == "lr-0.01" and mine.metrics["loss"].value == 0.3
    assert abs(mine.start_time - run.info.start_time / 1000) < 60  # seconds in loopml
    assert list(store.history(ids[0], "loss").values) == [1.0, 0.3]
    assert {r.id for r in store.search_runs(experiments="digits", filter="metrics.loss < 0.5")} == {ids[0], ids[2]}
    assert mine.user and mine.user == mine.tags.get("mlflow.user")


def test_loopml_runs_appear_to_mlflow(sqlite_store: TrackingStore, live_server: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch) -> None:
    _serve(sqlite_store, live_server, monkeypatch)
    run = sqlite_store.create_run(experiment="default", name="native", params={"lr": "0.1"}, tags={"t": "x"})
    sqlite_store.log_metrics([(run.id, "acc", 3, 1_700_000_000.25, 0.9), (run.id, "acc", 4, 1_700_000_001.5, math.nan)])
    client = MlflowClient()
    got = client.get_run(run.id)
    assert got.info.experiment_id == "0" and got.info.run_name == "native" and got.info.status == "RUNNING"
    assert got.data.params == {"lr": "0.1"} and got.data.tags["t"] == "x"
    assert math.isnan(got.data.metrics["acc"])
    history = client.get_metric_history(run.id, "acc")
    assert [(m.step, m.timestamp) for m in history] == [(3, 1_700_000_000_250), (4, 1_700_000_001_500)]
    assert history[0].value == 0.9 and math.isnan(history[1].value)
    assert [r.info.run_id for r in client.search_runs(["0"], "params.lr = '0.1' and attributes.run_name = 'native'")] == [run.id]
    assert client.get_experiment("0").name == "default"


def test_log_batch_delete_restore_and_paging(sqlite_store: TrackingStore, live_server: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch) -> None:
    _serve(sqlite_store, live_server, monkeypatch)
    client = MlflowClient()
    eid = client.create_experiment("batch", tags={"owner": "ml"})
    run = client.create_run(eid, run_name="b")
    rid = run.info.run_id
    assert len(rid) == 32 and int(rid, 16) >= 0  # loopml's run ids are MLflow's: 32 hex
    metrics = [Metric("m", float(i), 1_700_000_000_000 + i, i) for i in range(1000)]
    client.log_batch(rid, metrics=metrics, params=[Param("p", "1")], tags=[RunTag("mlflow.runName", "renamed")])
    assert list(sqlite_store.history(rid, "m").steps) == list(range(1000))
    assert sqlite_store.get_run(rid).name == "renamed"
    paged = client.get_metric_history(rid, "m")
    assert len(paged) == 1000 and paged[-1].timestamp == 1_700_000_000_999
    client.log_param(rid, "p", "1")  # the same value again is fine
    with pytest.raises(MlflowException, match="INVALID_PARAMETER_VALUE"):
        client.log_param(rid, "p", "2")  # params never change
    client.set_tag(rid, "k", "v")
    client.delete_tag(rid, "k")
    assert "k" not in client.get_run(rid).data.tags
    client.set_terminated(rid, "FAILED")
    assert sqlite_store.get_run(rid).status == "FAILED"

    client.delete_run(rid)
    assert client.get_run(rid).info.lifecycle_stage == "deleted"
    assert client.search_runs([eid]) == [] and sqlite_store.search_runs(experiments="batch") == []
    assert [r.info.run_id for r in client.search_runs([eid], run_view_type=ViewType.DELETED_ONLY)] == [rid]
    with pytest.raises(MlflowException, match="active"):
        client.log_metric(rid, "m", 1.0)
    client.restore_run(rid)
    assert [r.info.run_id for r in client.search_runs([eid])] == [rid]

    more = [client.create_run(eid).info.run_id for _ in range(4)]
    page1 = client.search_runs([eid], max_results=3, order_by=["attributes.start_time ASC"])
    page2 = client.search_runs([eid], max_results=3, order_by=["attributes.start_time ASC"], page_token=page1.token)
    assert [r.info.run_id for r in page1] + [r.info.run_id for r in page2] == [rid, *more]
    assert page2.token is None

    # experiments: tags, rename, search, delete (with its runs) and restore
    client.set_experiment_tag(eid, "stage", "dev")
    client.rename_experiment(eid, "batch2")
    exp = client.get_experiment_by_name("batch2")
    assert exp.tags == {"owner": "ml", "stage": "dev"} and exp.experiment_id == eid
    assert [e.name for e in client.search_experiments(filter_string="name LIKE 'batch%'")] == ["batch2"]
    assert [e.name for e in client.search_experiments(filter_string="tags.stage = 'dev'")] == ["batch2"]
    client.delete_experiment(eid)
    assert [e.name for e in client.search_experiments(view_type=ViewType.DELETED_ONLY)] == ["batch2"]
    assert client.search_runs([eid]) == []
    client.restore_experiment(eid)
    assert len(client.search_runs([eid])) == 5
    assert lifecycle.get_experiment(sqlite_store, name="batch2").deleted_at is None


def test_outputs_link_runs_to_logged_models(sqlite_store: TrackingStore, live_server: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch) -> None:
    srv = _serve(sqlite_store, live_server, monkeypatch)
    from mlflow.entities import LoggedModelOutput

    client = MlflowClient()
    rid = client.create_run("0", start_time=456_000).info.run_id
    # a start time in the past is not a stale heartbeat: the run just began (it read KILLED)
    assert [(r.info.status, r.info.start_time) for r in client.search_runs(["0"])] == [("RUNNING", 456_000)]
    client._tracking_client.store.log_outputs(rid, [LoggedModelOutput("m-abc", 7)])
    got = client.get_run(rid)
    assert [(o.model_id, o.step) for o in got.outputs.model_outputs] == [("m-abc", 7)]
    assert httpx.post(f"{srv.url}{API}/runs/outputs", json={"run_id": "0" * 32, "models": [{"model_id": "m"}]}).json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


BAD_INPUTS: list[tuple[str, str, dict[str, Any], int, str]] = [  # method, path, body, status, error_code

    ("GET", "/runs/get", {"run_id": "f" * 32}, 404, "RESOURCE_DOES_NOT_EXIST"),
    ("GET", "/runs/get", {}, 400, "INVALID_PARAMETER_VALUE"),
    ("GET", "/experiments/get-by-name", {"experiment_name": "nope"}, 404, "RESOURCE_DOES_NOT_EXIST"),
    ("GET", "/experiments/get", {"experiment_id": "x1"}, 400, "INVALID_PARAMETER_VALUE"),
    ("POST", "/experiments/create", {}, 400, "INVALID_PARAMETER_VALUE"),
    ("POST", "/runs/search", {"filter": "metrics.loss <"}, 400, "INVALID_PARAMETER_VALUE"),
    ("POST", "/runs/search", {"filter": "datasets.name = 'x'"}, 400, "INVALID_PARAMETER_VALUE"),
    ("POST", "/runs/search", {"max_results": 50001}, 400, "INVALID_PARAMETER_VALUE"),
    ("POST", "/runs/search", {"page_token": "not a token"}, 400, "INVALID_PARAMETER_VALUE"),
    ("POST", "/runs/log-metric", {"run_id": "f" * 32, "key": "k", "value": 1, "timestamp": 1}, 404, "RESOURCE_DOES_NOT_EXIST"),
    ("POST", "/runs/log-metric", {"run_id": "RUN", "key": "k", "value": "high", "timestamp": 1}, 400, "INVALID_PARAMETER_VALUE"),
    ("POST", "/runs/log-metric", {"run_id": "RUN", "key": "k", "value": 1}, 400, "INVALID_PARAMETER_VALUE"),
    ("POST", "/runs/log-batch", {"run_id": "RUN", "metrics": [{"key": "k", "value": 1, "timestamp": 1}] * 1001}, 400, "INVALID_PARAMETER_VALUE"),
    ("POST", "/runs/log-batch", {"run_id": "RUN", "params": [{"key": "p", "value": "1"}] * 2}, 400, "INVALID_PARAMETER_VALUE"),
    ("POST", "/runs/log-batch", {"run_id": "RUN", "tags": [{"key": "../x", "value": "1"}]}, 400, "INVALID_PARAMETER_VALUE"),
    ("POST", "/runs/update", {"run_id": "RUN", "status": "DONE"}, 400, "INVALID_PARAMETER_VALUE"),
    ("POST", "/experiments/delete", {"experiment_id": "0"}, 400, "INVALID_PARAMETER_VALUE"),
    ("GET", "/metrics/get-history", {"run_id": "RUN", "metric_key": "k", "max_results": "0"}, 400, "INVALID_PARAMETER_VALUE"),
]


# POST bodies and the words of MLflow's own messages, which its clients and tests match
MLFLOW_WORDING: list[tuple[str, dict[str, Any], str]] = [
    ("/runs/log-metric", {"run_id": 31, "key": "k", "value": 1, "timestamp": 1}, "Invalid value 31 for parameter 'run_id' supplied"),
    ("/runs/log-metric", {"run_id": None, "key": "k", "value": 1, "timestamp": 1}, "Missing value for required parameter 'run_id'"),
    ("/runs/log-metric", {"run_id": "RUN", "key": 31, "value": 1, "timestamp": 1}, "Invalid value 31 for parameter 'key' supplied"),
    ("/runs/log-metric", {"run_id": "RUN", "key": "k", "value": 1, "timestamp": 1, "step": "foo"}, 'Invalid value "foo" for parameter \'step\' supplied'),
    ("/runs/log-batch", {"run_id": "RUN", "tags": "foo"}, 'Invalid value "foo" for parameter \'tags\' supplied'),
    ("/runs/log-batch", {"run_id": "RUN", "metrics": [{"key": "k", "value": 1}]}, "Missing value for required parameter 'metrics[0].timestamp'"),
    ("/runs/set-tag", {"run_id": "RUN", "key": "k", "value": 41}, "Invalid value 41 for parameter 'value' supplied"),
    ("/runs/log-parameter", {"run_id": "RUN", "value": "1"}, "Missing value for required parameter 'key'"),
    ("/experiments/create", {"name": 123}, "Invalid value 123 for parameter 'name' supplied"),
    ("/experiments/create", {"name": "x", "artifact_location": 9.0}, "Invalid value 9.0 for parameter 'artifact_location' supplied"),
]


def test_bad_input_is_a_4xx_in_mlflows_shape(sqlite_server: LiveServer, sqlite_store: TrackingStore) -> None:
    rid = sqlite_store.create_run(experiment="default").id
    with httpx.Client(base_url=sqlite_server.url + API) as c:
        for method, path, body, status, code in BAD_INPUTS:
            filled = {k: (rid if v == "RUN" else v) for k, v in body.items()}
            r = c.get(path, params=filled) if method == "GET" else c.post(path, json=filled)
            assert (r.status_code, r.json()["error_code"]) == (status, code), (path, body, r.text)
            assert r.json()["message"]
        for path, body, words in MLFLOW_WORDING:
            r = c.post(path, json={k: (rid if v == "RUN" else v) for k, v in body.items()})
            assert r.status_code == 400 and words in r.json()["message"], (path, body, r.text)
    assert sqlite_store.get_run(rid).metrics == {} and sqlite_store.get_run(rid).tags == {}
