"""Graph datasets: constructors, profiles, checks, node splits, and a graph's trip through fit and tracking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import loopml
from loopml import data
from loopml.data import Graph, check, profile, split_nodes
from loopml.errors import ArgumentError, ArgumentTypeError, DataError
from tests.deps import need

need("torch_geometric", extra="graph")


@pytest.fixture(scope="module")
def karate() -> Graph:
    return data.karate_club()


def _edges(g: Graph) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in g.edge_index.T}


# -- constructors -------------------------------------------------------------


def test_from_edges_pairs_and_edge_index_give_one_graph() -> None:
    pairs = data.from_edges([[0, 1], [1, 2], [2, 0]], x=np.eye(3), y=[0, 1, -1])
    index = data.from_edges(torch.tensor([[0, 1, 2], [1, 2, 0]]), x=np.eye(3), y=[0, 1, -1])
    assert pairs.fingerprint == index.fingerprint
    assert pairs.num_nodes == 3 and pairs.labeled.tolist() == [True, True, False]
    bare = data.from_edges([[0, 4]])  # no features: one constant column; nodes up to the largest id
    assert bare.num_nodes == 5 and bare.x.tolist() == [[1.0]] * 5


def test_undirected_adds_each_missing_reverse_once() -> None:
    g = data.from_edges([[0, 1], [1, 0], [1, 2], [1, 2]], undirected=True)
    assert g.edge_index.T.tolist() == [[0, 1], [1, 0], [1, 2], [1, 2], [2, 1]]
    assert profile(g)["undirected"] is True


def test_node_table_maps_text_ids_labels_and_features(tmp_path: Path) -> None:
    nodes = pd.DataFrame({"id": ["cy", "ann", "bob"], "age": [27.0, 31.0, 45.0], "label": ["b", "a", None]})
    edges = pd.DataFrame({"from": ["ann", "bob"], "to": ["bob", "cy"]})
    g = data.from_edges(edges, nodes=nodes, source="from", target="to", name="people")
    assert g.node_ids == ["cy", "ann", "bob"]
    assert g.edge_index.tolist() == [[1, 2], [2, 0]]
    assert g.feature_names == ["age"] and g.x[:, 0].tolist() == [27.0, 31.0, 45.0]
    assert g.class_names == ["a", "b"] and g.y.tolist() == [1, 0, -1]
    nodes.to_csv(tmp_path / "nodes.csv", index=False)
    edges.to_csv(tmp_path / "edges.csv", index=False)
    from_files = data.from_edges(tmp_path / "edges.csv", nodes=tmp_path / "nodes.csv", source="from", target="to")
    assert from_files.fingerprint == g.fingerprint and from_files.name == "edges"
    # an edge to an id the table lacks is kept (numbered from N up) for check to report
    stray = data.from_edges([["ann", "zed"]], nodes=nodes)
    assert stray.edge_index.tolist() == [[1], [3]] and not check(stray).ok
    with pytest.raises(ArgumentError, match="ids repeat in column 'id'"):
        data.from_edges(edges, nodes=pd.concat([nodes, nodes]), source="from", target="to")
    with pytest.raises(ArgumentError, match="columns 'source' and 'target'"):
        data.from_edges(edges)


def test_text_ids_without_a_table_are_numbered_in_sorted_order() -> None:
    g = data.from_edges(pd.DataFrame({"source": ["b", "a"], "target": ["c", "b"]}))
    assert g.node_ids == ["a", "b", "c"] and g.edge_index.tolist() == [[1, 0], [2, 1]]


def test_pyg_round_trip(karate: Graph) -> None:
    from torch_geometric.datasets import KarateClub

    original = KarateClub()[0]
    assert karate.num_nodes == 34 and karate.num_edges == 156 and karate.num_classes == 4
    assert karate.masks["train"].nonzero().reshape(-1).tolist() == original.train_mask.nonzero().reshape(-1).tolist()
    back = karate.to_pyg()
    assert torch.equal(back.edge_index, original.edge_index) and torch.equal(back.y, original.y)
    assert torch.equal(back.train_mask, original.train_mask)
    assert data.from_pyg(back).fingerprint == karate.fingerprint


def test_sbm_is_seeded_and_leaves_the_global_generators_alone() -> None:
    torch.manual_seed(1)
    before = torch.random.get_rng_state()
    a = data.sbm([20, 30], 0.3, 0.02, features=4, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert a.fingerprint == data.sbm([20, 30], 0.3, 0.02, features=4, seed=3).fingerprint
    assert a.fingerprint != data.sbm([20, 30], 0.3, 0.02, features=4, seed=4).fingerprint
    assert a.num_nodes == 50 and a.num_features == 4 and np.bincount(a.y.numpy()).tolist() == [20, 30]
    assert profile(a)["undirected"] and profile(a)["homophily"] > 0.7
    with pytest.raises(ArgumentError, match="block_sizes"):
        data.sbm([0, 3], 0.1, 0.1)


def test_knn_graph_is_symmetric_and_carries_names(iris: data.Dataset, digits: data.Dataset) -> None:
    g = data.knn_graph(iris, k=5)
    p = profile(g)
    assert p["undirected"] and p["self_loops"] == 0 and p["duplicate_edges"] == 0 and p["degree"]["min"] >= 5
    assert g.class_names == iris.class_names and g.feature_names == iris.feature_names
    assert torch.equal(g.y, iris.y) and torch.equal(g.x, iris.x)
    images = data.knn_graph(digits.subset(range(200)), k=3)  # images flattened: 64 features
    assert images.num_features == 64 and images.num_nodes == 200
    with pytest.raises(ArgumentError, match="Argument k should be an integer from 1 to 149"):
        data.knn_graph(iris, k=150)


# -- profile --------------------------------------------------------------------


def test_profile_figures_match_a_hand_count() -> None:
    # 6 nodes: a triangle 0-1-2 both ways, 2->3 one way, a self-loop on 3, 0->1 twice, 4 and 5 alone
    edges = [[0, 1], [1, 0], [1, 2], [2, 1], [0, 2], [2, 0], [2, 3], [3, 3], [0, 1]]
    g = data.from_edges(edges, x=np.zeros((6, 2)), y=[0, 0, 1, 1, -1, 0], name="hand")
    g.set_mask("train", [0, 2])
    p = profile(g)
    assert (p["nodes"], p["edges"]) == (6, 9)
    # out-degrees: 0 -> 3, 1 -> 2, 2 -> 3, 3 -> 1, 4 -> 0, 5 -> 0
    assert p["degree"] | {"histogram": None} == {"min": 0, "mean": 1.5, "median": 1.5, "max": 3, "histogram": None}
    assert sum(p["degree"]["histogram"]["counts"]) == 6
    # edges between labeled nodes, self-loops aside: all but 3->3; same label: 0-1 (x3), 2-3 -> 4 of 8
    assert p["labeled_edges"] == 8 and p["homophily"] == 0.5
    assert (p["components"], p["largest_component"], p["isolated_nodes"]) == (3, 4, 2)
    assert (p["self_loops"], p["duplicate_edges"], p["undirected"]) == (1, 1, False)
    assert p["target"] == {"type": "classification", "counts": {"0": 3, "1": 2}, "labeled": 5, "labeled_fraction": 5 / 6}
    assert p["masks"] == {"train": 2} and p["missing_node_edges"] == 0
    json.dumps(p, allow_nan=False)


# -- checks ---------------------------------------------------------------------


def test_a_clean_graph_passes(karate: Graph) -> None:
    report = check(karate, min_labels=1)
    assert report.ok and report.issues == []


def test_every_graph_code_is_triggered() -> None:
    x = np.array([[np.nan, 0.0], [np.inf, 1.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    edges = torch.tensor([[0, 1, 1, 2, 2, 0, 3], [1, 0, 1, 7, 0, 1, 0]])  # 1->1 loop, 2->7 missing, 0->1 twice
    g = Graph(x, edges, y=[0, 0, 1, 2, -1], masks={"train": [0, 1, 2], "test": [2, 3]})
    report = check(g, min_labels=2)
    codes = {i.code: i for i in report.issues}
    assert set(codes) == {"missing_nodes", "missing_values", "non_finite", "leakage", "unlabeled_classes", "few_labels",
                          "self_loops", "duplicate_edges", "isolated_nodes", "directed"}
    assert set(data.CODES) >= set(codes)
    assert codes["missing_nodes"].details["examples"] == [[2, 7]]
    assert codes["leakage"].dataset == "train+test" and codes["leakage"].details["nodes"] == [2]
    assert codes["unlabeled_classes"].details["classes"] == ["2"]  # class 2's only node is in test, not train
    assert codes["few_labels"].details["classes"] == ["1"]
    assert codes["isolated_nodes"].details["nodes"] == [4]
    assert codes["duplicate_edges"].details["count"] == 1 and codes["self_loops"].details["nodes"] == [1]
    assert {i.code for i in report.errors} == {"missing_nodes", "missing_values", "non_finite", "leakage"}
    assert check(g, ignore=["directed"]).ignored[0].code == "directed"
    with pytest.raises(DataError, match="missing_nodes"):
        report.raise_if_errors()


def test_nodes_sets_are_checked_for_leakage(karate: Graph) -> None:
    parts = split_nodes(karate, per_class=1, val=4, test=0, seed=0)
    assert check(parts.train, val=parts.val, min_labels=1).ok
    leaky = karate.nodes(np.concatenate([parts.indices["train"], parts.indices["val"][:1]]))
    report = check(leaky, val=parts.val, min_labels=1)
    assert [i.code for i in report.errors] == ["leakage"]


# -- node splits ----------------------------------------------------------------


def test_per_class_split_is_exact_disjoint_and_reproducible() -> None:
    g = data.sbm([40, 30, 30], 0.2, 0.02, features=4, seed=0)
    y = g.y.numpy().copy()
    y[::10] = -1  # some nodes without a label go in no set
    g = Graph(g.x, g.edge_index, y)
    parts = split_nodes(g, per_class=5, val=0.2, test=30, seed=1)
    idx = parts.indices
    assert np.bincount(y[idx["train"]], minlength=3).tolist() == [5, 5, 5]
    assert len(idx["test"]) == 30 and len(idx["val"]) == round(0.2 * (90 - 15))
    everything = np.concatenate(list(idx.values()))
    assert len(np.unique(everything)) == len(everything) and (y[everything] >= 0).all()
    assert parts.graph.masks["train"].sum() == 15 and "train" not in g.masks  # the input graph is untouched
    assert parts.train.role == "train" and len(parts.val) == len(idx["val"])  # type: ignore[arg-type]
    again = split_nodes(g, per_class=5, val=0.2, test=30, seed=1)
    assert all(np.array_equal(idx[k], again.indices[k]) for k in idx)
    assert not np.array_equal(idx["train"], split_nodes(g, per_class=5, val=0.2, test=30, seed=2).indices["train"])
    assert check(parts, min_labels=5).ok


def test_fraction_split_is_stratified(karate: Graph) -> None:
    parts = split_nodes(karate, val=0.2, test=0.2, seed=0)
    y = karate.y.numpy()
    counts = np.bincount(y, minlength=4)
    for k, frac in (("val", 0.2), ("test", 0.2)):
        got = np.bincount(y[parts.indices[k]], minlength=4)
        assert (np.abs(got - counts * frac) <= 1).all() and len(parts.indices[k]) == round(34 * frac)
    assert sum(len(v) for v in parts.indices.values()) == 34
    assert split_nodes(karate, val=0, test=0).val is None


def test_split_errors_say_what_to_do(karate: Graph) -> None:
    with pytest.raises(ArgumentError, match=r"per_class=5 should not exceed .*\[\('2', 4\)\]"):
        split_nodes(karate, per_class=5)
    with pytest.raises(ArgumentError, match="should fit in the 30 labeled nodes"):
        split_nodes(karate, per_class=1, val=20, test=20)
    with pytest.raises(ArgumentTypeError, match="split_nodes"):
        data.split(karate)  # type: ignore[arg-type]


# -- files, the store, fit ------------------------------------------------------


def test_save_and_load_keep_the_graph(tmp_path: Path, karate: Graph) -> None:
    path = karate.save(tmp_path / "karate.npz")
    assert path.read_bytes() == karate.save(tmp_path / "again.npz").read_bytes()  # the same graph, the same bytes
    back = Graph.load(path, fingerprint=karate.fingerprint)
    assert back.fingerprint == karate.fingerprint and torch.equal(back.masks["train"], karate.masks["train"])
    assert back.class_names == karate.class_names
    with pytest.raises(DataError, match="has the fingerprint"):
        Graph.load(path, fingerprint="0" * 64)


class _MeanGraphNet(torch.nn.Module):
    """A one-layer graph net (sum of neighbours' features), so this test needs no PyG model."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(features, classes)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        agg = torch.zeros_like(x).index_add_(0, edge_index[1], x[edge_index[0]])
        return self.lin(x + agg)


def test_fit_refuses_a_graph_with_edges_to_missing_nodes(karate: Graph) -> None:
    from loopml.train import Trainer

    broken = Graph(karate.x, torch.cat([karate.edge_index, torch.tensor([[0], [40]])], dim=1), karate.y,
                   masks=karate.masks, name="broken")
    with pytest.raises(DataError, match=r"missing_nodes \[broken\]: 1 edge\(s\) point at nodes .* \[\[0, 40\]\]"):
        Trainer(_MeanGraphNet(34, 4), track=False).fit(broken.nodes("train"), epochs=1)


def test_a_tracked_fit_logs_its_graph() -> None:
    from loopml.train import Trainer

    g = data.sbm([15, 15], 0.3, 0.03, features=4, seed=0)
    parts = split_nodes(g, per_class=5, val=10, test=0, seed=0)
    with loopml.start_run(experiment="graph") as run:
        Trainer(_MeanGraphNet(4, 2), metrics=["accuracy"], seed=0).fit(parts.train, val=parts.val, epochs=2)
    run = loopml.get_run(run.id)
    assert run.tags["dataset.train"] == run.tags["dataset.val"] == g.fingerprint
    assert (run.tags["dataset.train.nodes"], run.tags["dataset.train.labeled"], run.tags["dataset.val.nodes"]) == ("10", "10", "10")
    assert run.tags["data_check"].startswith("ok")
    record = run.backend.get_dataset(g.fingerprint)
    assert record["schema"]["kind"] == "graph" and record["profile"]["edges"] == g.num_edges
    back = data.stored_graph(g.fingerprint[:12])
    assert back.fingerprint == g.fingerprint and back.masks["train"].sum() == 10
    with pytest.raises(DataError, match="is a graph"):
        from loopml.data.sources import stored

        stored(run.backend, g.fingerprint)


def test_a_graph_is_stored_through_the_server(remote, karate: Graph) -> None:  # type: ignore[no-untyped-def]
    fp = data.store_dataset(karate, backend=remote)  # the server checks the upload against the graph's fingerprint
    back = data.stored_graph(fp, backend=remote)
    assert back.fingerprint == karate.fingerprint and back.name == "karate_club"
    assert remote.get_dataset(fp)["profile"]["kind"] == "graph"
