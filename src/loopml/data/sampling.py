"""Neighbour sampling: mini-batches of sampled subgraphs, for graphs too large for one full-graph step.

:class:`NeighborSampler` draws, for a batch of seed nodes, up to ``num_neighbors[0]``
in-neighbours of each seed, then up to ``num_neighbors[1]`` in-neighbours of each node
the first hop added, and so on (uniformly, without replacement; ``-1``: every
neighbour), as PyG's ``NeighborLoader`` does. A batch is the subgraph of the sampled
edges, its nodes renumbered with the seeds first::

    ((x[nodes], edge_index_local), y[seeds], arange(len(seeds)))

the batch format the Trainer reads (``model(x, edge_index)``, the loss on the first
``len(seeds)`` output rows). Use it through :meth:`loopml.data.graph.Nodes.sampled`::

    trainer.fit(parts.train.sampled([10, 5]), val=parts.val, epochs=20, batch_size=512)

Why hand-written: every PyG sampler needs pyg-lib or torch-sparse, and neither installs
here (pyg-lib is not on PyPI; torch-sparse is an sdist that does not build). Measured
with torch_geometric 2.8.1: ``NeighborLoader`` raises ``'NeighborSampler' requires either
'pyg-lib' or 'torch-sparse'``, ``ClusterData`` the same, ``ShaDowKHopSampler`` and
``GraphSAINTRandomWalkSampler`` need torch-sparse. Only ``RandomNodeLoader`` runs, and it
partitions the nodes at random without sampling neighbours. This module is plain torch:
the in-neighbour lists as CSR built once, each hop a few vectorised tensor operations
(no Python loop over nodes).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from ..errors import ArgumentError, ArgumentTypeError

__all__ = ["NeighborSampler", "check_num_neighbors"]

Batch = tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor]


def check_num_neighbors(num_neighbors: Any) -> list[int]:
    """``num_neighbors`` as a list of ints, one per hop: each >= 0, or -1 for every neighbour."""
    example = "e.g. nodes.sampled([10, 5]): up to 10 neighbours per seed node, then up to 5 per node of the first hop"
    if isinstance(num_neighbors, (str, bytes)) or not isinstance(num_neighbors, Sequence):
        raise ArgumentTypeError(f"Argument num_neighbors should be a list of ints, one per hop, got {num_neighbors!r}; {example}")
    hops = list(num_neighbors)
    if not hops:
        raise ArgumentError(f"Argument num_neighbors should name at least one hop, got {num_neighbors!r}; {example}")
    for k in hops:
        if type(k) is not int or k < -1:
            raise ArgumentError(f"Argument num_neighbors should hold ints >= 0 (or -1: every neighbour), got {num_neighbors!r}; "
                                f"{example}")
    return hops


class NeighborSampler:
    """Samples subgraphs around seed nodes; ``sample(seeds)`` -> (node numbers, local edge_index).

    ``edge_index`` is the graph's (2 x edges, sources in row 0); a node's neighbours here are
    the sources of its incoming edges (the nodes whose messages it receives).
    """

    def __init__(self, edge_index: torch.Tensor, num_nodes: int, num_neighbors: Sequence[int]) -> None:
        self.num_neighbors = check_num_neighbors(num_neighbors)
        if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
            raise ArgumentError(f"The graph's edge_index names nodes outside 0..{num_nodes - 1}: "
                                "loopml.data.check(graph) lists the edges")
        src, dst = edge_index[0], edge_index[1]
        order = torch.argsort(dst, stable=True)
        self.col = src[order].contiguous()  # in-neighbours, grouped by target node
        self.rowptr = torch.zeros(num_nodes + 1, dtype=torch.int64)
        self.rowptr[1:] = torch.cumsum(torch.bincount(dst, minlength=num_nodes), 0)
        self.num_nodes = num_nodes
        # node number -> its number in the batch's subgraph (-1: not in it); kept between batches and
        # reset after each, so a batch costs its own size rather than a pass over every node
        self._local = torch.full((num_nodes,), -1, dtype=torch.int64)

    def _hop(self, frontier: torch.Tensor, k: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The sampled edges into ``frontier``'s nodes: (sources, targets), node numbers of the graph."""
        start = self.rowptr[frontier]
        deg = self.rowptr[frontier + 1] - start
        total = int(deg.sum())
        if total == 0 or k == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return empty, empty
        seg = torch.repeat_interleave(torch.arange(len(frontier)), deg)  # which frontier node each candidate edge is for
        offset = torch.arange(total) - (torch.cumsum(deg, 0) - deg)[seg]  # its place among that node's in-edges
        pos = start[seg] + offset
        if k > 0 and bool((deg > k).any()):
            # a random order within each node's in-edges (sorting by node + a key in [0, 1) keeps the
            # groups where they are), then the first k of each: k draws without replacement
            keys = torch.rand(total, generator=generator, dtype=torch.float64) + seg.to(torch.float64)
            pos = pos[torch.argsort(keys)]
            keep = offset < k
            pos, seg = pos[keep], seg[keep]
        return self.col[pos], frontier[seg]

    def sample(self, seeds: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(nodes, edge_index)``: the subgraph's node numbers in the graph (``seeds`` first, in order),
        and its sampled edges numbered within the subgraph (``nodes[edge_index]`` are the graph's edges)."""
        local, b = self._local, len(seeds)
        parts, srcs, dsts = [seeds], [], []
        try:
            local[seeds] = torch.arange(b)
            n, frontier = b, seeds
            for k in self.num_neighbors:
                src, dst = self._hop(frontier, k, generator)
                new = torch.unique(src[local[src] < 0])
                parts.append(new)
                local[new] = torch.arange(n, n + len(new))
                n += len(new)
                srcs.append(local[src])
                dsts.append(local[dst])
                frontier = new
            nodes = torch.cat(parts)
        finally:
            local[torch.cat(parts)] = -1
        return nodes, torch.stack([torch.cat(srcs), torch.cat(dsts)])

    def loader(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, *, batch_size: int, shuffle: bool,
               generator: torch.Generator | None = None) -> DataLoader[Any]:
        """A DataLoader of sampled batches around the nodes ``index`` (batches of ``batch_size`` seeds).

        ``generator`` draws both the order of the seeds and the neighbours (the Trainer's: an exact
        resume repeats them); without one, each loader draws the same batches (evaluate, predict).
        """
        if type(batch_size) is not int or batch_size < 1:
            raise ArgumentError(f"Argument batch_size should be an integer >= 1 (seed nodes per batch), got {batch_size!r}")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        seeds = _SeedBatches(len(index), batch_size, shuffle=shuffle, generator=gen)
        # generator=: the DataLoader's per-epoch seed comes from it too, not from torch's global RNG (dropout's)
        return DataLoader(_Subgraphs(self, x, y, index, gen), sampler=seeds, batch_size=None, generator=gen)


class _SeedBatches(Sampler[torch.Tensor]):
    """Positions in the seed set, a tensor per batch (one randperm an epoch, not one Python int per node)."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.shuffle, self.generator = n, batch_size, shuffle, generator

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        return iter(torch.split(order, self.batch_size))


class _Subgraphs(TorchDataset[Batch]):
    def __init__(self, sampler: NeighborSampler, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                 generator: torch.Generator) -> None:
        self.sampler, self.x, self.y, self.index, self.generator = sampler, x, y, index, generator

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, positions: torch.Tensor) -> Batch:
        seeds = self.index[positions]
        nodes, edge_index = self.sampler.sample(seeds, self.generator)
        return (self.x[nodes], edge_index), self.y[seeds], torch.arange(len(seeds))
