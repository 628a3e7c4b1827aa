"""The helpers behind benchmarks/graph.py's figures: homophily and the goals read from the results."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))  # the benchmark imports its sibling _common
    try:
        spec = importlib.util.spec_from_file_location("benchmark_graph", BENCHMARKS / "graph.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_homophily_is_the_share_of_edges_between_same_labels(bench: ModuleType) -> None:
    from loopml.data.graph import Graph

    # 0-1 same class, 1-2 different, both directions: half the edges join equal labels
    g = Graph(torch.zeros(3, 1), [[0, 1, 1, 2], [1, 0, 2, 1]], [0, 0, 1])
    assert bench.homophily(g) == pytest.approx(0.5)


def test_goals_read_the_digits_gap_at_five_labels_and_each_overhead(bench: ModuleType) -> None:
    acc = [{"graph": "sbm", "labels_per_class": 5, "best_gnn": "GCN", "gnn_minus_mlp_points": 50.0},
           {"graph": "digits", "labels_per_class": 5, "best_gnn": "GAT", "gnn_minus_mlp_points": 9.5}]
    tim = {"rows": [{"contender": "plain PyG loop", "wall_vs_plain": 0.0},
                    {"contender": "loopml Trainer, track=False", "wall_vs_plain": 0.049},
                    {"contender": "loopml Trainer, track=True", "wall_vs_plain": 0.051}]}
    goals = bench.goals(acc, tim)
    assert [g["met"] for g in goals] == [False, True, False]  # 9.5 points is short of 10; 5.1% is over 5%
    assert "GAT +9.5 points" in goals[0]["measured"]
    assert bench.goals([], None)[0]["met"] is None  # not measured is not a miss
