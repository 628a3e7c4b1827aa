"""The registry over HTTP: REST endpoints on a live server, and the Python API against it."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch

import loopml
from loopml.errors import Conflict, NotFound
from loopml.models import registry as R

from ..models.nets import MLP
from .conftest import LiveServer

torch.set_num_threads(1)


@pytest.fixture
def registered(use_server: LiveServer) -> tuple[LiveServer, MLP, torch.Tensor]:
    torch.manual_seed(0)
    model = MLP(hidden=16)
    x = torch.randn(6, 64, generator=torch.Generator().manual_seed(1))
    with loopml.start_run(experiment="remote-reg") as run:
        run.log({"val_accuracy": 0.875})
        R.register(model, "mlp", input_example=x, formats=("pt2", "torch"), init_args={"hidden": 16},
                   class_names=[str(i) for i in range(10)])
    return use_server, model, x


def test_python_api_against_a_server(registered: tuple[LiveServer, MLP, torch.Tensor]) -> None:
    server, model, x = registered
    assert [m.name for m in R.list_models()] == ["mlp"]
    v = R.get_version("mlp@latest")
    assert v.ref == "mlp/1" and v.metrics == {"val_accuracy": 0.875}
    R.set_alias("mlp", "production", 1)
    loaded = R.load_model("mlp@production")
    np.testing.assert_allclose(loaded(x.numpy()), model(x).detach().numpy(), atol=1e-6)
    with pytest.raises(Conflict, match="@production"):
        R.delete_version("mlp/1")
    assert [(e.from_version, e.to_version) for e in R.alias_history("mlp")] == [(None, 1)]
    with pytest.raises(NotFound):
        R.load_model("nothing@production")


def test_rest_endpoints(registered: tuple[LiveServer, MLP, torch.Tensor]) -> None:
    server, _model, _x = registered
    assert httpx.get(f"{server.url}/api/v1/models").json()["models"][0]["name"] == "mlp"
    api = httpx.Client(base_url=f"{server.url}/api/v1/models")
    doc = api.get("/mlp").json()
    assert [v["version"] for v in doc["versions"]] == [1]
    r = api.put("/mlp/aliases/staging", json={"version": 1, "by": "ana"})
    assert r.status_code == 200 and r.json()["to_version"] == 1
    assert api.get("/mlp/versions/staging").json()["version"] == 1
    assert api.get("/mlp/alias-history", params={"alias": "staging"}).json()["events"][0]["by"] == "ana"
    f = api.get("/mlp/versions/1/files/pt2")
    assert f.status_code == 200 and f.headers["x-sha256"] == doc["versions"][0]["files"]["pt2"]["sha256"]
    r = api.delete("/mlp/versions/1", headers={"Content-Type": "application/json"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict" and "@staging" in r.json()["error"]["message"]
    r = api.patch("/mlp/versions/1", json={"measurements": {"accuracy": 0.9}})
    assert r.json()["measurements"] == {"accuracy": 0.9}


@pytest.mark.parametrize(
    "source",
    ["/etc/passwd", "file:///etc/passwd", "runs:/" + "a" * 32 + "/../../../../etc", "runs:/x/%252e%252e/etc", "http://evil/model"],
)
def test_rest_refuses_sources_outside_the_artifact_root(use_server: LiveServer, source: str) -> None:
    r = httpx.post(f"{use_server.url}/api/v1/models/m/versions", json={"source": source})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_artifact_path"
    assert httpx.get(f"{use_server.url}/api/v1/models").json()["models"] == []


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("GET", "/nothing", None, 404),
        ("GET", "/bad name!", None, 400),
        ("GET", "/mlp/versions/99", None, 404),
        ("PUT", "/mlp/aliases/Prod!", {"version": 1}, 400),
        ("PUT", "/mlp/aliases/latest", {"version": 1}, 400),
        ("PUT", "/mlp/aliases/prod", {"version": 0}, 422),
        ("PUT", "/mlp/aliases/prod", {"version": 7}, 404),
        ("GET", "/mlp/versions/1/files/tflite", None, 404),
        ("POST", "/mlp/versions/1/export", {"formats": ["tflite"]}, 400),
        ("POST", "/mlp/versions/1/quantize", {"method": "magic", "data": "digits"}, 400),
        # data is a fingerprint or a bundled set's name, never a path on the server's disk
        ("POST", "/mlp/versions/1/quantize", {"method": "static", "data": "/etc/passwd"}, 400),
        ("POST", "/mlp/versions/1/quantize", {"method": "static", "data": "../../train.npz"}, 400),
    ],
)
def test_rest_bad_input(registered: tuple[LiveServer, MLP, torch.Tensor], method: str, path: str, body: object, status: int) -> None:
    server, _m, _x = registered
    r = httpx.request(method, f"{server.url}/api/v1/models{path}", json=body)
    assert r.status_code == status, r.text
    assert set(r.json()["error"]) == {"code", "message"}
