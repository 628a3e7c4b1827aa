"""MLflow's own client (the pinned release) against a live loopml server: artifacts, logged models, the registry.

Runs are made with loopml's store where MLflow's run routes (loopml.server.mlflow_tracking) are not the point.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from loopml.errors import ExportError, LoopMLWarning
from loopml.models.registry import load_version
from loopml.serve import ModelServer
from loopml.server import create_app
from loopml.store import TrackingStore
from loopml.store.registry import RegistryStore
from tests.deps import need
from tests.server.conftest import LiveServer

mlflow = need("mlflow", extra="test")
torch = need("torch", extra="torch")


@pytest.fixture
def mlflow_server(
    sqlite_store: TrackingStore, live_server: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch, mlflow_fresh: None
) -> Iterator[LiveServer]:
    import mlflow.utils.requirements_utils as requirements_utils

    server = live_server(create_app(sqlite_store))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    # log_model checks the model's requirements against importlib's map of every installed package,
    # built once per process (6 s in this venv); the two packages the requirements name are enough
    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", {"torch": ["torch"], "mlflow": ["mlflow"]})
    mlflow.set_tracking_uri(server.url)
    torch.set_num_threads(1)
    yield server
    mlflow.set_tracking_uri(None)


def _model() -> Any:
    torch.manual_seed(0)
    # built-in layers only: the pickled module's classes are importable anywhere
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()


X = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)


def _log(model: Any, **kwargs: Any) -> Any:
    import mlflow.pytorch

    return mlflow.pytorch.log_model(model, name="model", input_example=X, pip_requirements=["torch"], **kwargs)


def test_artifacts_through_mlflows_client(mlflow_server: LiveServer, sqlite_store: TrackingStore, tmp_path: Path) -> None:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    run = sqlite_store.create_run(experiment="default")  # MLflow's experiment "0"
    (tmp_path / "report.txt").write_text("accuracy 0.97\n")
    repo = get_artifact_repository(f"mlflow-artifacts:/0/{run.id}/artifacts")
    repo.log_artifact(str(tmp_path / "report.txt"), "reports")

    # loopml's own view: the same file, its sha256 recorded
    [art] = sqlite_store.list_artifacts(run.id)
    assert (art.path, art.size) == ("reports/report.txt", 14)
    assert [(f.path, f.is_dir) for f in repo.list_artifacts()] == [("reports", True)]
    assert [(f.path, f.file_size) for f in repo.list_artifacts("reports")] == [("reports/report.txt", 14)]
    (tmp_path / "down").mkdir()
    out = Path(repo.download_artifacts("reports/report.txt", str(tmp_path / "down")))
    assert out.read_text() == "accuracy 0.97\n"
    repo.delete_artifacts("reports/report.txt")
    assert sqlite_store.list_artifacts(run.id) == []


def test_log_register_alias_load(mlflow_server: LiveServer, sqlite_store: TrackingStore) -> None:
    from mlflow import MlflowClient

    model = _model()
    expected = model(torch.from_numpy(X)).detach().numpy()
    info = _log(model)  # MLflow 3's default: a torch.export program (data/model.pt2)
    assert info.model_uri.startswith("models:/m-")
    client = MlflowClient()
    assert client.get_logged_model(info.model_id).status.to_int() == 2  # LOGGED_MODEL_READY (finalized)

    mv = mlflow.register_model(info.model_uri, "digits")
    assert (mv.version, mv.status) == ("1", "READY")
    client.set_registered_model_alias("digits", "production", mv.version)
    loaded = mlflow.pytorch.load_model("models:/digits@production")
    np.testing.assert_allclose(loaded(torch.from_numpy(X)).detach().numpy(), expected, rtol=1e-6, atol=1e-6)

    registry = RegistryStore(sqlite_store)
    version = registry.resolve("digits@production")
    assert (version.version, sorted(version.files)) == (1, ["mlflow"])
    assert version.files["mlflow"].details["serialization"] == "pt2"
    assert version.signature["inputs"] == [{"name": "x", "dtype": "float32", "shape": [None, 4]}]
    ours = load_version(registry, "digits@production")  # a torch.export program: no pickle, no opt-in
    np.testing.assert_allclose(ours(X), expected, rtol=1e-6, atol=1e-6)
    server = ModelServer("digits@production", store=sqlite_store, port=0).start().wait_ready(60)
    try:  # what `loopml serve digits@production` answers with the module MLflow's client logged
        doc = httpx.post(f"{server.url}/v1/models/digits/predict", json={"inputs": X.tolist()}).json()
    finally:
        server.stop()
    assert doc["version"] == 1 and len(doc["results"]) == len(X)
    # MLflow's MLmodel names no classes, so the server answers the module's outputs as they are
    np.testing.assert_allclose([r["prediction"] for r in doc["results"]], expected, rtol=1e-6, atol=1e-6)

    # a pickled module: MLflow loads it; loopml only on opt-in, with a warning naming the risk
    pickled = _log(model, serialization_format="pickle")
    v2 = mlflow.register_model(f"models:/{pickled.model_id}", "digits")
    client.set_registered_model_alias("digits", "production", v2.version)
    assert registry.resolve("digits@production").version == 2  # what `loopml serve digits@production` follows
    assert client.get_model_version_by_alias("digits", "production").version == "2"
    with pytest.raises(ExportError, match=r"unpickling runs arbitrary code.*allow_pickle=True"):
        load_version(registry, "digits@production")
    with pytest.warns(LoopMLWarning, match="unpickling runs arbitrary code"):
        ours = load_version(registry, "digits@production", allow_pickle=True)
    np.testing.assert_allclose(ours(X), expected, rtol=1e-6, atol=1e-6)
    from loopml.serve.backends import load_backend

    with pytest.warns(LoopMLWarning):
        backend = load_backend(registry, registry.resolve("digits@production"), allow_pickle=True, max_batch=4)
    assert backend.format == "mlflow"
    np.testing.assert_allclose(backend(X), expected, rtol=1e-6, atol=1e-6)

    assert [v.version for v in client.search_model_versions("name = 'digits'")] == ["2", "1"]
    assert client.get_registered_model("digits").aliases == {"production": "2"}
    # the client's search sends "tags.`mlflow.prompt.is_prompt` != 'true'": tagless models pass it
    assert [m.name for m in client.search_registered_models()] == ["digits"]
    client.delete_logged_model(pickled.model_id)  # the version keeps its own copy
    assert mlflow.pytorch.load_model("models:/digits/2")(torch.from_numpy(X)).shape == (4, 3)
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="not found"):  # the words MLflow's client matches
        client.get_logged_model(pickled.model_id)
    with pytest.raises(MlflowException, match="No tag with key"):
        client.delete_logged_model_tag(info.model_id, "absent")
    # a source run this server does not know is recorded as given, as MLflow does
    foreign = client.create_logged_model(client.get_logged_model(info.model_id).experiment_id, source_run_id="123")
    assert client.get_logged_model(foreign.model_id).source_run_id == "123"


def test_register_from_a_run(mlflow_server: LiveServer, sqlite_store: TrackingStore) -> None:
    model = _model()
    with mlflow.start_run() as run:
        _log(model)
    mv = mlflow.register_model(f"runs:/{run.info.run_id}/model", "from-run")
    assert RegistryStore(sqlite_store).get_version("from-run", int(mv.version)).run_id == run.info.run_id
    loaded = mlflow.pytorch.load_model(f"models:/from-run/{mv.version}")
    np.testing.assert_allclose(loaded(torch.from_numpy(X)).detach().numpy(), model(torch.from_numpy(X)).detach().numpy())


def _error(resp: httpx.Response) -> tuple[int, str]:
    return resp.status_code, resp.json()["error_code"]


def test_bad_input_answers_4xx_with_mlflows_codes(mlflow_server: LiveServer, sqlite_store: TrackingStore) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    url = mlflow_server.url
    with pytest.raises(MlflowException) as info:
        MlflowClient().get_registered_model("nope")
    assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    run = sqlite_store.create_run(experiment="default")
    with httpx.Client(base_url=url) as h:
        api = "/api/2.0/mlflow"
        assert _error(h.get(f"{api}/registered-models/get", params={"name": "nope"})) == (404, "RESOURCE_DOES_NOT_EXIST")
        assert h.post(f"{api}/registered-models/create", json={"name": "m"}).status_code == 200
        assert _error(h.post(f"{api}/registered-models/create", json={"name": "m"})) == (400, "RESOURCE_ALREADY_EXISTS")
        assert _error(h.post(f"{api}/registered-models/alias", json={"name": "m", "alias": "Prod!", "version": "1"})) == (
            400, "INVALID_PARAMETER_VALUE")
        assert _error(h.get(f"{api}/registered-models/alias", params={"name": "m", "alias": "production"})) == (
            404, "RESOURCE_DOES_NOT_EXIST")
        assert _error(h.get(f"{api}/model-versions/get", params={"name": "m", "version": "x"})) == (400, "INVALID_PARAMETER_VALUE")
        assert _error(h.get(f"{api}/logged-models/m-{'0' * 32}")) == (404, "RESOURCE_DOES_NOT_EXIST")
        assert _error(h.post(f"{api}/model-versions/create", json={"name": "m", "source": "/etc"})) == (
            400, "INVALID_PARAMETER_VALUE")
        assert _error(h.post(f"{api}/model-versions/create", json={"name": "m", "source": f"runs:/{run.id}/../x"})) == (
            400, "INVALID_PARAMETER_VALUE")
        arts = "/api/2.0/mlflow-artifacts/artifacts"
        for bad in (f"0/{run.id}/artifacts/%2e%2e/%2e%2e/x", f"0/{run.id}/artifacts/%252e%252e/x",
                    f"0/{run.id}/artifacts/_mlflow_models/m-1/MLmodel", "_registry/m/1/MLmodel", "x"):
            status, code = _error(h.put(f"{arts}/{bad}", content=b"x"))
            assert 400 <= status < 500 and code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST", "PERMISSION_DENIED"), bad
        assert _error(h.get(arts, params={"path": f"0/{run.id}/artifacts/../../etc"}))[0] == 400
        assert _error(h.get(f"{arts}/7/{run.id}/artifacts/a.txt")) == (404, "RESOURCE_DOES_NOT_EXIST")  # not its experiment
    # a raw '../' that no client normalized away
    conn = http.client.HTTPConnection("127.0.0.1", mlflow_server.port, timeout=10)
    conn.request("GET", f"/api/2.0/mlflow-artifacts/artifacts/0/{run.id}/artifacts/../../../../etc/passwd")
    resp = conn.getresponse()
    assert 400 <= resp.status < 500 and b"error_code" in resp.read()
    conn.close()
    assert sqlite_store.list_artifacts(run.id) == []
