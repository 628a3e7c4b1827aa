"""Graphs: node features, edges and (some) node labels, for graph neural networks.

A :class:`Graph` holds ``x`` (float32, nodes x features), ``edge_index`` (int64,
2 x edges: row 0 the source node, row 1 the target node, as PyTorch Geometric
keeps them) and ``y`` (int64 class per node, ``-1`` where a node has no label).
:class:`Nodes` is a set of a graph's nodes (its train, val or test nodes): what
``Trainer.fit``, ``evaluate`` and ``predict`` take. Each batch is
``((x, edge_index), y, rows)``: the model is called as ``model(x, edge_index)``
(PyG's convention, so PyG's own models train as they are) and the loss and the
metrics read only the output ``rows`` of the set's nodes that have a label.

Example::

    from loopml import data
    g = data.from_edges([[0, 1], [1, 2]], x=np.eye(3), y=[0, 1, -1])
    parts = data.split_nodes(g, per_class=1, val=0, test=0, seed=0)
    trainer.fit(parts.train, epochs=100)          # full batch: one step per epoch

PyTorch Geometric (extra ``graph``) is imported only by :meth:`Graph.to_pyg` and
:func:`from_pyg`; a Graph itself is plain torch.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import ArgumentError, ArgumentTypeError, DataError
from .dataset import as_array
from .fingerprint import canonical_bytes, fingerprint_graph
from .rows import write_arrays
from .sampling import NeighborSampler

if TYPE_CHECKING:
    from torch_geometric.data import Data

__all__ = ["Graph", "NeighborNodes", "Nodes"]


def _array(value: Any, what: str) -> np.ndarray:
    arr = as_array(value, what)
    if arr.dtype.kind not in "biuf":
        raise ArgumentTypeError(f"Argument {what} should hold numbers, got values of dtype {arr.dtype}")
    return arr


class Graph:
    """One graph: ``x`` (nodes x features), ``edge_index`` (2 x edges), ``y`` (a class per node, -1: none).

    ``masks`` names sets of nodes (``{"train": bool tensor, ...}``), as
    :func:`split_nodes` makes them; ``graph.nodes("train")`` is one as a :class:`Nodes`.
    Edges are directed; an undirected graph lists each edge both ways. ``node_ids``:
    each node's own id (a node table's ids, as :func:`from_edges` maps them to 0..N-1).

    The constructor takes edges that point at nodes the graph does not have (a
    number below 0 or from N up): :func:`loopml.data.check` reports them
    (``missing_nodes``) and ``Trainer.fit`` refuses such a graph, instead of the
    constructor failing before the data can be looked at.

    Example::

        g = Graph(np.eye(3), [[0, 1], [1, 2]], y=[0, 1, -1], masks={"train": [0, 1]})
        g.nodes("train")          # <Nodes 'train' of 'graph': 2 nodes, 2 labeled>
    """

    def __init__(
        self,
        x: Any,
        edge_index: Any,
        y: Any = None,
        *,
        masks: dict[str, Any] | None = None,
        feature_names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        name: str = "graph",
        source: str = "arrays",
        node_ids: Sequence[Any] | None = None,
    ) -> None:
        xa = _array(x, "x")
        if xa.ndim == 1:
            xa = xa[:, None]
        if xa.ndim != 2:
            raise ArgumentError(f"Argument x should be 2-D (nodes x features), got shape {xa.shape}")
        ea = _array(edge_index, "edge_index")
        if ea.size == 0:
            ea = ea.reshape(2, 0)
        if ea.ndim != 2 or ea.shape[0] != 2:
            raise ArgumentError(
                f"Argument edge_index should have shape (2, edges): sources in row 0, targets in row 1; got {ea.shape}; "
                "an edge list of (source, target) pairs is edges.T"
            )
        if ea.dtype.kind not in "iu" and not (ea.dtype.kind == "f" and np.all(ea == np.round(ea))):
            raise ArgumentTypeError(f"Argument edge_index should hold whole node numbers, got dtype {ea.dtype}")
        n = len(xa)
        ya = np.full(n, -1, dtype=np.int64) if y is None else _array(y, "y")
        if ya.ndim != 1 or len(ya) != n:
            raise ArgumentError(f"Argument y should have one label per node ({n}), got shape {ya.shape}; -1 for no label")
        if ya.dtype.kind == "f" and not np.all(np.isnan(ya) | (ya == np.round(ya))):
            raise ArgumentError("Argument y should hold whole-number classes 0..K-1 (-1 or NaN for no label)")
        if ya.dtype.kind == "f":
            ya = np.where(np.isnan(ya), -1, ya)
        ya = ya.astype(np.int64)
        if len(ya) and ya.min() < -1:
            raise ArgumentError(f"Argument y should hold classes 0..K-1 and -1 for no label, got {int(ya.min())}")
        n_classes = int(ya.max()) + 1 if len(ya) and ya.max() >= 0 else 0
        if class_names is not None and len(class_names) < n_classes:
            raise ArgumentError(f"Argument class_names should name every class 0..{n_classes - 1}, got {len(class_names)}")
        if feature_names is not None and len(feature_names) != xa.shape[1]:
            raise ArgumentError(f"Argument feature_names should have one name per feature ({xa.shape[1]}), got {len(feature_names)}")
        if not isinstance(name, str) or not name:
            raise ArgumentError(f"Argument name should be a non-empty string, got {name!r}")
        if node_ids is not None and len(node_ids) != n:
            raise ArgumentError(f"Argument node_ids should have one id per node ({n}), got {len(node_ids)}")
        self.node_ids: list[Any] | None = list(node_ids) if node_ids is not None else None
        # "W": a read-only array (pandas' copy-on-write columns, a loaded .npz) is copied, as torch needs
        self.x = torch.from_numpy(np.require(xa, dtype=np.float32, requirements=["C", "W"]))
        self.edge_index = torch.from_numpy(np.require(ea, dtype=np.int64, requirements=["C", "W"]))
        self.y = torch.from_numpy(np.require(ya, requirements=["C", "W"]))
        self.feature_names = [str(f) for f in feature_names] if feature_names is not None else [f"x{i}" for i in range(xa.shape[1])]
        self.class_names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(n_classes)]
        self.name, self.source = name, source
        self.masks: dict[str, torch.Tensor] = {}
        for key, mask in (masks or {}).items():
            self.set_mask(key, mask)

    # -- description ------------------------------------------------------

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def num_features(self) -> int:
        return int(self.x.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def labeled(self) -> torch.Tensor:
        """A bool tensor: the nodes that have a label."""
        return self.y >= 0

    kind = "graph"
    task = "classification"

    def __len__(self) -> int:
        return self.num_nodes

    def __repr__(self) -> str:
        return (f"<Graph {self.name!r} {self.num_nodes} nodes, {self.num_edges} edges, {self.num_features} features, "
                f"{self.num_classes} classes, {int(self.labeled.sum())} labeled>")

    @property
    def fingerprint(self) -> str:
        """sha256 of ``x``, ``edge_index`` and ``y`` (edge order is content; masks and names are not); cached."""
        cached = getattr(self, "_fingerprint", None)
        if cached is None or cached[0] is not self.x or cached[1] is not self.edge_index or cached[2] is not self.y:
            cached = (self.x, self.edge_index, self.y,
                      fingerprint_graph(self.x.numpy(), self.edge_index.numpy(), self.y.numpy()))
            self._fingerprint = cached
        return cached[3]

    def schema(self) -> dict[str, Any]:
        return {
            "kind": "graph",
            "task": "classification",
            "n_rows": self.num_nodes,
            "n_edges": self.num_edges,
            "x": {"dtype": "float32", "shape": [self.num_features]},
            "edge_index": {"dtype": "int64", "shape": [2, None]},
            "y": {"dtype": "int64"},
            "feature_names": list(self.feature_names),
            "class_names": list(self.class_names),
            "masks": {k: int(m.sum()) for k, m in self.masks.items()},
        }

    # -- node sets --------------------------------------------------------

    def set_mask(self, key: str, mask: Any) -> None:
        """Name a set of nodes: a bool mask over the nodes, or node numbers."""
        arr = _array(mask, f"masks[{key!r}]")
        if arr.dtype == bool:
            if arr.shape != (self.num_nodes,):
                raise ArgumentError(f"Mask {key!r} should have one entry per node ({self.num_nodes}), got shape {arr.shape}")
            t = torch.from_numpy(arr.copy())
        else:
            idx = arr.astype(np.int64).reshape(-1)
            if len(idx) and (idx.min() < 0 or idx.max() >= self.num_nodes):
                raise ArgumentError(f"Mask {key!r} names nodes outside 0..{self.num_nodes - 1}")
            t = torch.zeros(self.num_nodes, dtype=torch.bool)
            t[torch.from_numpy(idx)] = True
        self.masks[key] = t

    def nodes(self, which: str | Any | None = None) -> Nodes:
        """A set of nodes: a mask's name (``"train"``), a bool mask, node numbers, or None for all nodes."""
        if which is None:
            index = torch.arange(self.num_nodes)
            role = "all"
        elif isinstance(which, str):
            if which not in self.masks:
                raise ArgumentError(f"Graph {self.name!r} has no node set {which!r}; it has {sorted(self.masks)} "
                                    "(make them with loopml.data.split_nodes)")
            index, role = self.masks[which].nonzero().reshape(-1), which
        else:
            arr = _array(which, "which")
            if arr.dtype == bool:
                index = torch.from_numpy(arr).nonzero().reshape(-1)
            else:
                index = torch.from_numpy(arr.astype(np.int64).reshape(-1))
            role = "nodes"
        return Nodes(self, index, role=role)

    # -- files ------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the graph to ``path`` as a reproducible ``.npz``; :meth:`load` reads it back.

        Arrays ``x``, ``edge_index``, ``y``, ``masks`` (sets x nodes, bool) and ``mask_names``,
        ``feature_names``, ``class_names`` (text) and ``node_ids`` (text, when the graph has them):
        the same graph always gives the same bytes, so the store keeps it once by content.
        """
        arrays: dict[str, np.ndarray] = {
            "x": self.x.numpy(), "edge_index": self.edge_index.numpy(), "y": self.y.numpy(),
            "masks": (torch.stack(list(self.masks.values())).numpy() if self.masks
                      else np.zeros((0, self.num_nodes), dtype=bool)),
            "mask_names": np.array(list(self.masks), dtype=str),
            "feature_names": np.array(self.feature_names, dtype=str),
            "class_names": np.array(self.class_names, dtype=str),
        }
        if self.node_ids is not None:
            arrays["node_ids"] = np.array([str(i) for i in self.node_ids], dtype=str)
        return write_arrays(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, fingerprint: str | None = None, name: str | None = None,
             source: str | None = None) -> Graph:
        """The graph :meth:`save` wrote (no pickle); with ``fingerprint``, checked against it.

        Raises :class:`~loopml.errors.DataError` when the file is not such a graph, or has
        another fingerprint.
        """
        p = Path(path)
        need = {"x", "edge_index", "y"}
        try:
            with np.load(p, allow_pickle=False) as archive:
                if not isinstance(archive, np.lib.npyio.NpzFile) or need - set(archive.files):
                    raise DataError(f"{p.name} should be an .npz with the arrays x, edge_index and y (Graph.save writes one)")
                arrays = {k: archive[k] for k in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(f"{p.name} does not read as a graph's .npz: {exc}") from exc
        if fingerprint is not None:
            got = fingerprint_graph(arrays["x"], arrays["edge_index"], arrays["y"])
            if got != fingerprint:
                raise DataError(f"The graph in {p.name} has the fingerprint {got[:12]}..., not {fingerprint[:12]}...")
        names = [str(m) for m in arrays.get("mask_names", np.zeros(0, dtype=str))]
        masks = dict(zip(names, arrays["masks"])) if names else {}
        text = {k: [str(v) for v in arrays[k]] for k in ("feature_names", "class_names", "node_ids") if k in arrays}
        try:
            return cls(arrays["x"], arrays["edge_index"], arrays["y"], masks=masks,
                       feature_names=text.get("feature_names"), class_names=text.get("class_names") or None,
                       node_ids=text.get("node_ids"), name=name or p.stem or "graph", source=source or f"file:{p.name}")
        except (ArgumentError, ArgumentTypeError) as exc:
            raise DataError(f"{p.name} does not hold a valid graph: {exc}") from exc

    def to_pyg(self) -> "Data":
        """A ``torch_geometric.data.Data`` with ``x``, ``edge_index``, ``y`` and the masks as ``<name>_mask``."""
        from torch_geometric.data import Data

        return Data(x=self.x, edge_index=self.edge_index, y=self.y,
                    **{f"{k}_mask": m for k, m in self.masks.items()})


class Nodes:
    """Some nodes of a graph (``index``, node numbers): a train, val or test set.

    ``Trainer.fit(nodes)`` trains full-batch: each epoch is one step over the whole
    graph, the loss read on these nodes' labels. ``len(nodes)`` is the number of nodes.
    """

    def __init__(self, graph: Graph, index: torch.Tensor, *, role: str = "nodes") -> None:
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= graph.num_nodes):
            raise ArgumentError(f"Argument index should name nodes 0..{graph.num_nodes - 1}")
        self.graph, self.index, self.role = graph, index.to(torch.int64), role

    def __len__(self) -> int:
        return int(self.index.numel())

    def __repr__(self) -> str:
        return f"<Nodes {self.role!r} of {self.graph.name!r}: {len(self)} nodes, {self.labeled} labeled>"

    @property
    def labeled(self) -> int:
        return int((self.graph.y[self.index] >= 0).sum())

    @property
    def fingerprint(self) -> str:
        """The graph's fingerprint with these node numbers."""
        h = hashlib.sha256(f"loopml-nodes-v1\n{self.graph.fingerprint}\n".encode())
        h.update(canonical_bytes(self.index.numpy()).data.cast("B") if len(self) else b"")
        return h.hexdigest()

    def loader(self, *, batch_size: int, shuffle: bool,
               generator: torch.Generator | None = None) -> DataLoader[Any] | tuple[Any, ...]:
        """What the Trainer iterates: one full-graph batch (``batch_size`` and ``shuffle`` do not apply)."""
        # A one-item tuple, not a DataLoader: an epoch is one step, and a DataLoader's iterator cost as much
        # per epoch as the loss and metrics together (benchmarks/graph.py: the Trainer against a plain loop);
        # nor does it draw a base seed from torch's global RNG, which would move the next dropout masks away
        # from a plain PyG loop's with the same seed
        return ((self.graph.x, self.graph.edge_index), self.graph.y[self.index], self.index),

    def sampled(self, num_neighbors: Sequence[int]) -> NeighborNodes:
        """These nodes as the seeds of neighbour-sampled mini-batches, for a graph too large for one step.

        ``num_neighbors[i]``: up to that many in-neighbours per node at hop ``i`` (-1: all);
        ``trainer.fit(parts.train.sampled([10, 5]), epochs=20, batch_size=512)``.
        """
        return NeighborNodes(self.graph, self.index, num_neighbors=num_neighbors, role=self.role)


class NeighborNodes(Nodes):
    """A :class:`Nodes` set whose loader yields sampled subgraphs around batches of its nodes.

    Each batch is ``((x_sub, edge_index_sub), y[seeds], arange(len(seeds)))``, the seeds first
    in the subgraph (:mod:`loopml.data.sampling`, plain torch: PyG's samplers need pyg-lib or
    torch-sparse). ``graph.nodes("train").sampled([10, 5])`` makes one.
    """

    def __init__(self, graph: Graph, index: torch.Tensor, *, num_neighbors: Sequence[int], role: str = "nodes") -> None:
        super().__init__(graph, index, role=role)
        if len(self) and int(torch.unique(self.index).numel()) != len(self):
            raise ArgumentError("Argument index should name each node once: a seed node is one output row of its batch")
        self.sampler = NeighborSampler(graph.edge_index, graph.num_nodes, num_neighbors)
        self.num_neighbors = self.sampler.num_neighbors

    def __repr__(self) -> str:
        return f"<NeighborNodes {self.role!r} of {self.graph.name!r}: {len(self)} nodes, {self.num_neighbors} neighbours per hop>"

    def loader(self, *, batch_size: int, shuffle: bool, generator: torch.Generator | None = None) -> DataLoader[Any]:
        """Batches of ``batch_size`` seed nodes with their sampled neighbourhoods (``generator`` draws both)."""
        return self.sampler.loader(self.graph.x, self.graph.y, self.index, batch_size=batch_size, shuffle=shuffle,
                                   generator=generator)
