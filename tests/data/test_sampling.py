"""Neighbour sampling (loopml.data.sampling, plain torch): every sampled edge is one of the graph's, each node
gets min(k, in-degree) distinct in-neighbours at its hop, the seeds come first, a generator repeats a draw,
the draws are uniform, and bad arguments are clear errors.

The graphs carry each node's number as feature 0, so a batch's ``x`` says which nodes it holds.
"""

from __future__ import annotations

import pytest
import torch

from loopml.data.graph import Graph, NeighborNodes
from loopml.data.sampling import NeighborSampler
from loopml.errors import ArgumentError, ArgumentTypeError


def random_graph(n: int = 300, edges: int = 3000, seed: int = 0) -> Graph:
    """Random directed edges without duplicates or self-loops, node 0 a hub that 150 nodes (at most) point at."""
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, edges), generator=g)
    hub = torch.arange(1, min(151, n))
    ei = torch.cat([ei, torch.stack([hub, torch.zeros_like(hub)])], dim=1)
    ei = torch.unique(ei[:, ei[0] != ei[1]], dim=1)
    x = torch.stack([torch.arange(n, dtype=torch.float32), torch.randn(n, generator=g)], dim=1)
    y = torch.randint(0, 3, (n,), generator=g)
    y[::7] = -1
    return Graph(x, ei, y, name="random")


def in_degree(graph: Graph) -> torch.Tensor:
    return torch.bincount(graph.edge_index[1], minlength=graph.num_nodes)


def batches(nodes: NeighborNodes, seed: int | None = 0, batch_size: int = 32, shuffle: bool = True) -> list:  # type: ignore[type-arg]
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    return list(nodes.loader(batch_size=batch_size, shuffle=shuffle, generator=gen))


def test_sampled_edges_exist_and_each_node_gets_min_k_in_degree_distinct_neighbours() -> None:
    graph = random_graph()
    n = graph.num_nodes
    edges = graph.edge_index[0] * n + graph.edge_index[1]
    deg = in_degree(graph)
    k1, k2 = 4, 3
    seen_seeds = []
    for (x, ei), y, rows in batches(graph.nodes().sampled([k1, k2])):
        nodes = x[:, 0].long()
        assert torch.equal(x, graph.x[nodes])
        assert len(set(nodes.tolist())) == len(nodes)  # each node once in a subgraph
        b = len(y)
        seeds = nodes[:b]
        seen_seeds += seeds.tolist()
        assert torch.equal(rows, torch.arange(b)) and torch.equal(y, graph.y[seeds])
        src, dst = nodes[ei[0]], nodes[ei[1]]
        assert bool(torch.isin(src * n + dst, edges).all())
        # no in-neighbour drawn twice (the graph has no duplicate edges)
        assert len(torch.unique(src * n + dst)) == ei.shape[1]
        got = torch.bincount(ei[1], minlength=len(nodes))
        # hop 1 draws into the seeds, hop 2 into the nodes hop 1 added; the rest (hop 2's) get no edges
        hop1 = torch.unique(ei[0][ei[1] < b])
        hop1 = hop1[hop1 >= b]
        assert torch.equal(got[:b], deg[seeds].clamp(max=k1))
        assert torch.equal(got[hop1], deg[nodes[hop1]].clamp(max=k2))
        rest = torch.ones(len(nodes), dtype=torch.bool)
        rest[:b], rest[hop1] = False, False
        assert int(got[rest].sum()) == 0
    assert sorted(seen_seeds) == list(range(graph.num_nodes))  # an epoch visits every seed once


def test_minus_one_takes_every_in_neighbour_and_zero_none() -> None:
    graph = random_graph()
    (x, ei), _, _ = batches(graph.nodes([0, 5, 9]).sampled([-1]), shuffle=False)[0]
    nodes = x[:, 0].long()
    assert nodes[:3].tolist() == [0, 5, 9]  # seeds first, in the set's order without shuffling
    assert torch.equal(torch.bincount(ei[1], minlength=len(nodes))[:3], in_degree(graph)[[0, 5, 9]])
    assert int(in_degree(graph)[0]) >= 150  # the hub
    (x, ei), _, _ = batches(graph.nodes([0, 5]).sampled([0]))[0]
    assert ei.shape == (2, 0) and x[:, 0].long().tolist() == [0, 5]


def test_a_generator_repeats_a_draw_and_evaluation_draws_the_same_batches() -> None:
    nodes = random_graph().nodes().sampled([5, 5])

    def flat(bs: list) -> list:  # type: ignore[type-arg]
        return [(x[:, 0].tolist(), ei.tolist()) for (x, ei), _, _ in bs]

    assert flat(batches(nodes, seed=3)) == flat(batches(nodes, seed=3))
    assert flat(batches(nodes, seed=3)) != flat(batches(nodes, seed=4))
    assert flat(batches(nodes, seed=None, shuffle=False)) == flat(batches(nodes, seed=None, shuffle=False))
    gen = torch.Generator().manual_seed(3)
    loader = nodes.loader(batch_size=32, shuffle=True, generator=gen)
    assert flat(list(loader)) != flat(list(loader))  # a new epoch, new draws
    assert len(loader) == 10  # 300 seeds, 32 a batch


def test_draws_are_uniform_over_the_in_neighbours() -> None:
    # 400 targets, each with the same 20 in-neighbours, 5 drawn for each: each neighbour ~ Binomial(400, 1/4)
    src = torch.arange(20).repeat(400)
    dst = torch.arange(20, 420).repeat_interleave(20)
    sampler = NeighborSampler(torch.stack([src, dst]), 420, [5])
    nodes, ei = sampler.sample(torch.arange(20, 420), torch.Generator().manual_seed(0))
    counts = torch.bincount(nodes[ei[0]], minlength=20)[:20]
    assert int(counts.sum()) == 2000
    assert int((counts - 100).abs().max()) < 43  # 5 standard deviations (8.7)


def test_bad_arguments_are_clear_errors() -> None:
    graph = random_graph(n=20, edges=40)
    for bad in ([], [3, -2], [2.5], [True]):
        with pytest.raises(ArgumentError, match="num_neighbors"):
            graph.nodes().sampled(bad)
    with pytest.raises(ArgumentTypeError, match="num_neighbors should be a list of ints"):
        graph.nodes().sampled(10)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="name each node once"):
        graph.nodes([1, 2, 1]).sampled([3])
    with pytest.raises(ArgumentError, match="batch_size should be an integer >= 1"):
        graph.nodes().sampled([3]).loader(batch_size=0, shuffle=False)
    broken = Graph(torch.zeros(3, 1), [[0, 1], [1, 7]])
    with pytest.raises(ArgumentError, match=r"edge_index names nodes outside 0..2"):
        broken.nodes().sampled([2])
