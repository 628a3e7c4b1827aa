"""A graph model on a live server: node predictions for a graph in the request (inductive) and for node ids of the
graph stored with the version (transductive), equal to the model called directly; every bad graph input a 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import torch

import loopml
from loopml.serve import ModelServer
from loopml.store import TrackingStore
from loopml.store.predictions import PredictionLog, inputs_array

from tests.deps import need

need("torch_geometric", extra="graph")

from ..models.graph_nets import GraphNet

torch.set_num_threads(1)
CLASSES = ["a", "b", "c"]
MAX_BODY = 64 * 1024


def _graph(nodes: int, edges: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(nodes, 5, generator=g), torch.randint(0, nodes, (2, edges), generator=g)


def _expected(model: torch.nn.Module, x: torch.Tensor, edge_index: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(x, edge_index), dim=1).numpy()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``g`` v1 (graph stored), v2 (no graph), v3 (graph stored with string node ids); a server on v1, v2 and v3."""
    from loopml.tracking import api

    tmp = tmp_path_factory.mktemp("graph-serve")
    uri = f"sqlite:///{(tmp / 'loopml.db').as_posix()}"
    mp = pytest.MonkeyPatch()
    mp.setenv("LOOPML_TRACKING_URI", uri)
    mp.setenv("LOOPML_ARTIFACT_ROOT", str(tmp / "artifacts"))
    torch.manual_seed(0)
    model = GraphNet(5, 3).eval()
    x, edge_index = _graph(12, 40, 1)
    from loopml.data.graph import Graph

    graph = Graph(x, edge_index, y=[0, 1, 2, -1] * 3, class_names=CLASSES)
    loopml.models.register(model, "g", input_example=graph, store_graph=True, formats=("torch",))
    loopml.models.register(model, "g", input_example=(x, edge_index), class_names=CLASSES, formats=("torch",))
    ids = [f"n{i}" for i in range(12)]
    loopml.models.register(model, "g", input_example=graph, graph=(x, edge_index, ids), formats=("torch",))
    store = TrackingStore(uri, artifact_root=tmp / "artifacts")
    servers = {v: ModelServer(f"g/{v}", store=store, port=0, max_body=MAX_BODY).start() for v in (1, 2, 3)}
    for server in servers.values():
        server.wait_ready(60)
    yield {"model": model, "x": x, "edge_index": edge_index, "servers": servers, "store": store}
    for server in servers.values():
        server.stop()
    store.close()
    loopml.set_tracking_uri(None)
    api.close_all()
    mp.undo()


def _post(world: dict[str, Any], body: Any, version: int = 1) -> httpx.Response:
    return httpx.post(f"{world['servers'][version].url}/v1/models/g/predict", json=body, timeout=30)


def test_transductive_answers_node_ids_of_the_stored_graph(world: dict[str, Any]) -> None:
    want = _expected(world["model"], world["x"], world["edge_index"])
    r = _post(world, {"nodes": [0, 7, 11, 7]})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["model"], doc["version"]) == ("g", 1)
    assert [item["node"] for item in doc["results"]] == [0, 7, 11, 7]
    got = np.array([item["probabilities"] for item in doc["results"]])
    np.testing.assert_allclose(got, want[[0, 7, 11, 7]], atol=1e-6)
    assert [item["prediction"] for item in doc["results"]] == [CLASSES[i] for i in want[[0, 7, 11, 7]].argmax(1)]
    # the request log keeps the answered nodes' features as the logged inputs
    server = world["servers"][1]
    assert server.requestlog.flush(10)
    record = PredictionLog(world["store"]).get(doc["request_id"])
    np.testing.assert_array_equal(inputs_array(bytes(record["inputs"])), world["x"].numpy()[[0, 7, 11, 7]])


def test_transductive_by_stored_node_ids(world: dict[str, Any]) -> None:
    want = _expected(world["model"], world["x"], world["edge_index"])
    r = _post(world, {"nodes": ["n3", "n0"]}, version=3)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [item["node"] for item in results] == ["n3", "n0"]
    np.testing.assert_allclose([item["probabilities"] for item in results], want[[3, 0]], atol=1e-6)
    r = _post(world, {"nodes": ["n12"]}, version=3)
    assert r.status_code == 422 and "'n12', which is not a node id" in r.json()["error"]["message"]


def test_inductive_answers_the_graph_in_the_request(world: dict[str, Any]) -> None:
    x, edge_index = _graph(9, 20, 2)  # not the stored graph: another size
    want = _expected(world["model"], x, edge_index)
    body = {"x": x.tolist(), "edge_index": edge_index.tolist()}
    for version in (1, 2):  # with or without a stored graph
        r = _post(world, body, version)
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [item["node"] for item in results] == list(range(9))
        np.testing.assert_allclose([item["probabilities"] for item in results], want, atol=1e-5)
    r = _post(world, {**body, "nodes": [8, 2]})
    np.testing.assert_allclose([item["probabilities"] for item in r.json()["results"]], want[[8, 2]], atol=1e-5)
    r = _post(world, {"x": x[:3].tolist(), "edge_index": [[], []]})  # no edges: each node on its own
    np.testing.assert_allclose([item["probabilities"] for item in r.json()["results"]],
                               _expected(world["model"], x[:3], torch.zeros(2, 0, dtype=torch.int64)), atol=1e-5)


X3 = [[0.1] * 5] * 3
BAD = [
    ({"x": X3, "edge_index": [[0, 3], [1, 0]]}, "names node 3, out of range: the graph has 3 nodes"),
    ({"x": X3, "edge_index": [[0, -1], [1, 0]]}, "got -1 (negative)"),
    ({"x": X3, "edge_index": [[0.0, 1.5], [1.0, 0.0]]}, "whole node numbers"),
    ({"x": X3, "edge_index": [[0, 1], [1, 0], [2, 2]]}, "shape (2, edges)"),
    ({"x": X3, "edge_index": [0, 1]}, "shape (2, edges)"),
    ({"x": X3, "edge_index": [[0, 1], [1]]}, "rectangular"),
    ({"x": [[0.1] * 4] * 3, "edge_index": [[0], [1]]}, "should have 5 features per node"),
    ({"x": [[0.1, "a", 0, 0, 0]], "edge_index": [[0], [0]]}, "should hold floats"),
    ({"x": X3}, "needs both x"),
    ({"x": X3, "edge_index": [[0], [1]], "nodes": [3]}, "names node 3, out of range"),
    ({"nodes": [12]}, "names node 12, out of range: the graph has 12 nodes"),
    ({"nodes": ["0"]}, "node numbers (integers)"),
    ({"nodes": []}, "non-empty list"),
    ({"inputs": [[0.1] * 5]}, "This is a graph model"),
]


@pytest.mark.parametrize(("body", "message"), BAD, ids=[m[:24] for _, m in BAD])
def test_bad_graph_input_is_422(world: dict[str, Any], body: Any, message: str) -> None:
    r = _post(world, body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_input"
    assert message in r.json()["error"]["message"]


def test_other_refusals(world: dict[str, Any]) -> None:
    r = _post(world, {"nodes": [0]}, version=2)
    assert r.status_code == 422 and "no stored graph" in r.json()["error"]["message"]
    big = {"x": [[0.123456] * 5] * 2000, "edge_index": [[0] * 10, [1] * 10]}
    r = _post(world, big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    url = world["servers"][1].url
    r = httpx.post(f"{url}/v1/models/g/predict", content=b"\x93NUMPY", headers={"content-type": "application/x-npy"})
    assert r.status_code == 415 and "graph model" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/models/g/explain", json={"inputs": [[0.1] * 5]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "cannot_explain"


def test_describe_and_openapi(world: dict[str, Any]) -> None:
    url = world["servers"][1].url
    info = httpx.get(f"{url}/v1/models/g").json()
    assert info["signature"]["kind"] == "graph"
    assert info["graph"] == {"stored": True, "nodes": 12, "edges": 40, "node_ids": False}
    body = httpx.get(f"{url}/openapi.json").json()["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]
    inline, ids = body["content"]["application/json"]["schema"]["oneOf"]
    assert inline["required"] == ["x", "edge_index"] and inline["properties"]["x"]["items"]["minItems"] == 5
    assert ids["required"] == ["nodes"]
    body2 = httpx.get(f"{world['servers'][2].url}/openapi.json").json()
    assert body2["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["required"] == ["x", "edge_index"]
