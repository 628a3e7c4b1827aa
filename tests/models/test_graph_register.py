"""Registering a graph model (model(x, edge_index)): its two-input signature, the stored graph, and the formats
that export (pt2, onnx with dynamic nodes and edges) loading back equal to eager; one that does not export is left out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import torch

import loopml
from loopml.errors import ArgumentError, LoopMLWarning
from loopml.models.graphs import export_graph, load_graph_predictor
from loopml.models.registry import stored_graph

from tests.deps import need

need("torch_geometric", extra="graph")

from .graph_nets import GraphNet, HostGraphNet

torch.set_num_threads(1)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from loopml.tracking import api

    monkeypatch.setenv("LOOPML_TRACKING_URI", f"sqlite:///{(tmp_path / 'loopml.db').as_posix()}")
    monkeypatch.setenv("LOOPML_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    yield
    loopml.set_tracking_uri(None)
    api.close_all()


def _graph(nodes: int, edges: int, seed: int, width: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(nodes, width, generator=g), torch.randint(0, nodes, (2, edges), generator=g)


def _eager(model: torch.nn.Module, x: torch.Tensor, edge_index: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x, edge_index).numpy()


def test_register_load_and_export_a_gcn(store: None) -> None:
    from loopml.data.graph import Graph

    torch.manual_seed(0)
    model = GraphNet(5, 3).eval()
    x, edge_index = _graph(12, 40, 1)
    graph = Graph(x, edge_index, y=[0, 1, 2, -1] * 3, class_names=["a", "b", "c"])
    v = loopml.models.register(model, "gcn", input_example=graph, store_graph=True)
    assert sorted(v.files) == ["graph", "input_example", "pt2", "torch"]
    assert v.signature["kind"] == "graph" and v.signature["class_names"] == ["a", "b", "c"]
    assert [(s["name"], s["dtype"], s["shape"]) for s in v.signature["inputs"]] == [
        ("x", "float32", [None, 5]), ("edge_index", "int64", [2, None])]
    v = loopml.models.export(v.ref, ["onnx"])  # added later, from the torch format
    assert v.files["onnx"].details["max_abs_diff"] <= 1e-4
    sx, sei, ids = stored_graph(v.ref)
    np.testing.assert_array_equal(sx, x.numpy())
    np.testing.assert_array_equal(sei, edge_index.numpy())
    assert ids is None
    other = _graph(30, 7, 2)  # another number of nodes and edges than the example's
    for fmt in ("torch", "pt2", "onnx"):
        loaded = loopml.load_model(v.ref, format=fmt)
        np.testing.assert_allclose(loaded(*other), _eager(model, *other), atol=1e-5)
        np.testing.assert_array_equal(loaded.predict(graph), _eager(model, x, edge_index).argmax(1))
    with pytest.raises(ArgumentError, match="should have 5 features per node"):
        loaded(torch.zeros(3, 4), torch.zeros(2, 0, dtype=torch.int64))
    with pytest.raises(ArgumentError, match="names node 3, out of range"):
        loaded(torch.zeros(3, 5), torch.tensor([[0], [3]]))


@pytest.mark.parametrize("conv", ["sage", "gat"])
def test_graphsage_and_gat_export_to_pt2_and_onnx(conv: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = GraphNet(5, 3, conv=conv).eval()
    x, edge_index = _graph(10, 30, 3)
    other = _graph(1, 0, 4)  # one node, no edges
    for fmt in ("pt2", "onnx"):
        details = export_graph(fmt, model, x, edge_index, tmp_path / f"m.{fmt}")  # checked against eager inside
        assert details["max_abs_diff"] <= 1e-4
        np.testing.assert_allclose(load_graph_predictor(fmt, tmp_path / f"m.{fmt}")(other[0].numpy(), other[1].numpy()),
                                   _eager(model, *other), atol=1e-5)


def test_a_format_that_does_not_export_is_left_out_with_the_reason(store: None) -> None:
    model = HostGraphNet(5, 3)
    x, edge_index = _graph(6, 9, 5)
    with pytest.warns(LoopMLWarning, match=r"left out pt2: pt2 export of the graph model HostGraphNet failed: .*data-dependent"):
        v = loopml.models.register(model, "host", input_example=(x, edge_index))
    assert sorted(v.files) == ["input_example", "torch"]
    np.testing.assert_allclose(loopml.load_model(v.ref)(x, edge_index), _eager(model, x, edge_index), atol=1e-6)


def test_graph_arguments_need_a_graph_model(store: None) -> None:
    from tests.models.nets import MLP

    with pytest.raises(ArgumentError, match="store_graph and graph are for graph models"):
        loopml.models.register(MLP(), "mlp", input_example=torch.zeros(2, 64), store_graph=True)
    pair = (torch.zeros(3, 5), torch.zeros(2, 0, dtype=torch.int64))
    with pytest.raises(ArgumentError, match=r"failed when called as model\(x, edge_index\)"):
        loopml.models.register(torch.nn.Identity(), "bad", input_example=pair)
    with pytest.raises(ArgumentError, match="one row per node"):
        loopml.models.register(_PerGraph(), "bad", input_example=pair)


class _PerGraph(torch.nn.Module):
    """One row for the whole graph: not a node model."""

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return x.sum(0, keepdim=True)
