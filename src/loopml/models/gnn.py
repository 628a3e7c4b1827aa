"""Graph neural networks ready to train on a graph's nodes, and the baselines that show what the edges buy.

``GCN``, ``GraphSAGE`` and ``GAT`` are PyTorch Geometric's models
(``torch_geometric.nn.models``) inside a loopml module that records its constructor
arguments (:func:`~loopml.models.rebuild.keep_init_args`), so a registered version keeps
its ``torch`` format and rebuilds without ``init_args=``. Each is called as
``model(x, edge_index)`` and returns class scores (logits) per node, as the Trainer calls
it on a graph's :class:`~loopml.data.graph.Nodes`::

    from loopml.models import GCN
    model = GCN(graph.num_features, graph.num_classes)
    Trainer(model, metrics=["accuracy"]).fit(parts.train, val=parts.val, epochs=200)

The baselines: :class:`NodeMLP` reads each node's features alone (it ignores the
edges), and :func:`propagate_labels` spreads the known labels along the edges (it
ignores the features). :func:`node_accuracy` scores either on a set of nodes.

What runs here without pyg-lib, torch-scatter and torch-sparse (torch_geometric 2.8.1,
checked by tests/train/test_graph_training.py): ``GCNConv``, ``SAGEConv`` and ``GATConv``
(PyG's ``GCN``, ``GraphSAGE`` and ``GAT`` models, forward and backward) and
``LabelPropagation``; PyG falls back to torch's own scatter for their message passing.
PyG's neighbour samplers do not run (see :mod:`loopml.data.sampling`). PyG (extra
``graph``) is imported when a model is built, not when this module is.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from ..data.graph import Graph, Nodes
from ..errors import ArgumentError, ArgumentTypeError
from .rebuild import keep_init_args

__all__ = ["GAT", "GCN", "GraphSAGE", "NodeMLP", "node_accuracy", "propagate_labels"]


def _pyg_models() -> Any:
    try:
        from torch_geometric.nn import models
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"Graph neural networks need {exc.name}: pip install 'loopml[graph]'") from exc
    return models


def _check(in_features: Any, classes: Any, hidden: Any, layers: Any, dropout: Any) -> None:
    for name, value in (("in_features", in_features), ("classes", classes), ("hidden", hidden), ("layers", layers)):
        if type(value) is not int or value < 1:
            raise ArgumentError(f"Argument {name} should be an integer >= 1, got {value!r}; "
                                "e.g. GCN(graph.num_features, graph.num_classes, hidden=64, layers=2)")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ArgumentError(f"Argument dropout should be a number in [0, 1), got {dropout!r}")


class _PyGNodeModel(nn.Module):
    """``model(x, edge_index)`` -> logits per node, through one of PyG's ``BasicGNN`` models in ``self.net``."""

    net: nn.Module

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x, edge_index)  # nn.Module.__call__ is typed Any
        return out


@keep_init_args
class GCN(_PyGNodeModel):
    """Graph convolutional network (Kipf & Welling): PyG's ``GCN`` (``GCNConv`` layers, ReLU, dropout).

    ``layers`` graph convolutions, ``hidden`` wide, the last one mapping to ``classes``.

    >>> model = GCN(34, 4, hidden=16)
    >>> model(torch.randn(3, 34), torch.tensor([[0, 1], [1, 2]])).shape
    torch.Size([3, 4])
    """

    def __init__(self, in_features: int, classes: int, hidden: int = 64, layers: int = 2, dropout: float = 0.5) -> None:
        super().__init__()
        _check(in_features, classes, hidden, layers, dropout)
        self.net = _pyg_models().GCN(in_features, hidden, layers, out_channels=classes, dropout=float(dropout))


@keep_init_args
class GraphSAGE(_PyGNodeModel):
    """GraphSAGE (Hamilton et al.): PyG's ``GraphSAGE`` (``SAGEConv`` layers, mean of the neighbours).

    Each layer adds a node's own features to the mean of its neighbours', so it suits
    sampled neighbourhoods (:meth:`Nodes.sampled <loopml.data.graph.Nodes.sampled>`) and graphs unseen in training.

    >>> GraphSAGE(34, 4)(torch.randn(3, 34), torch.tensor([[0, 1], [1, 2]])).shape
    torch.Size([3, 4])
    """

    def __init__(self, in_features: int, classes: int, hidden: int = 64, layers: int = 2, dropout: float = 0.5) -> None:
        super().__init__()
        _check(in_features, classes, hidden, layers, dropout)
        self.net = _pyg_models().GraphSAGE(in_features, hidden, layers, out_channels=classes, dropout=float(dropout))


@keep_init_args
class GAT(_PyGNodeModel):
    """Graph attention network (Veličković et al.): PyG's ``GAT`` (``GATConv`` layers).

    Hidden layers run ``heads`` attention heads of ``hidden // heads`` channels each,
    concatenated; the last layer averages its heads. ``dropout`` applies to the features
    and to the attention weights.

    >>> GAT(34, 4, hidden=16, heads=2)(torch.randn(3, 34), torch.tensor([[0, 1], [1, 2]])).shape
    torch.Size([3, 4])
    """

    def __init__(self, in_features: int, classes: int, hidden: int = 64, layers: int = 2, dropout: float = 0.5,
                 heads: int = 4) -> None:
        super().__init__()
        _check(in_features, classes, hidden, layers, dropout)
        if type(heads) is not int or heads < 1 or hidden % heads:
            raise ArgumentError(f"Argument heads should be an integer >= 1 that divides hidden ({hidden}), got {heads!r}; "
                                "e.g. GAT(n_features, n_classes, hidden=64, heads=8)")
        self.net = _pyg_models().GAT(in_features, hidden, layers, out_channels=classes, dropout=float(dropout), heads=heads)


@keep_init_args
class NodeMLP(nn.Module):
    """The baseline that ignores the edges: ``model(x, edge_index=None)`` reads each node's features alone.

    The same arguments and layout as :class:`GCN` (``layers`` linear layers, ReLU and dropout
    between them, as PyG's models place them), so that a GCN against a NodeMLP measures
    what the edges add. Plain torch rather than PyG's ``MLP``: the baseline then needs no
    PyG to train, export or serve.

    >>> NodeMLP(34, 4)(torch.randn(3, 34)).shape
    torch.Size([3, 4])
    """

    def __init__(self, in_features: int, classes: int, hidden: int = 64, layers: int = 2, dropout: float = 0.5) -> None:
        super().__init__()
        _check(in_features, classes, hidden, layers, dropout)
        widths = [in_features] + [hidden] * (layers - 1) + [classes]
        parts: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            parts.append(nn.Linear(a, b))
            if i < layers - 1:
                parts += [nn.ReLU(), nn.Dropout(float(dropout))]
        self.net = nn.Sequential(*parts)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor | None = None) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


def _known(data: Graph | Nodes) -> tuple[Graph, torch.Tensor]:
    """The graph and the node numbers whose labels propagate."""
    if isinstance(data, Nodes):
        graph, index = data.graph, data.index
    elif isinstance(data, Graph):
        graph = data
        index = graph.masks["train"].nonzero().reshape(-1) if "train" in graph.masks else torch.arange(graph.num_nodes)
    else:
        raise ArgumentTypeError(f"Argument data should be a loopml Graph or its Nodes (e.g. parts.train), got {type(data).__name__}")
    index = index[graph.y[index] >= 0]
    if not len(index):
        raise ArgumentError("Argument data should hold labeled nodes (y >= 0) to propagate from; it has none. "
                            "Label some nodes, or split with loopml.data.split_nodes(graph, per_class=5)")
    return graph, index


def propagate_labels(data: Graph | Nodes, *, layers: int = 50, alpha: float = 0.9) -> torch.Tensor:
    """Label propagation (Zhou et al.), the baseline that ignores the features: class scores per node.

    The labels of ``data``'s labeled nodes (a :class:`Nodes` set such as ``parts.train``; a
    :class:`Graph`: its ``"train"`` nodes, or every labeled node when it has no ``"train"``
    mask) spread along the edges for ``layers`` steps, each keeping ``1 - alpha`` of the
    known labels. Returns a float tensor, nodes x classes, the arg max the predicted class;
    a node that no label reaches scores 0 for every class. PyG's ``LabelPropagation``
    (pure Python here). Its accuracy on the test nodes::

        node_accuracy(propagate_labels(parts.train), parts.test)
    """
    if type(layers) is not int or layers < 1:
        raise ArgumentError(f"Argument layers should be an integer >= 1 (propagation steps), got {layers!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
        raise ArgumentError(f"Argument alpha should be a number in (0, 1], got {alpha!r}; e.g. alpha=0.9")
    graph, known = _known(data)
    seed = torch.zeros(graph.num_nodes, max(graph.num_classes, int(graph.y.max()) + 1))
    seed[known, graph.y[known]] = 1.0  # one-hot on the known nodes, zeros elsewhere: LabelPropagation's mask= would one-hot y's -1
    propagation = _pyg_models().LabelPropagation(num_layers=layers, alpha=float(alpha))
    with torch.no_grad():
        out: torch.Tensor = propagation(seed, graph.edge_index)
    return out


def node_accuracy(scores: torch.Tensor, nodes: Nodes) -> float:
    """The share of ``nodes``' labeled nodes whose arg max score is their label.

    ``scores``: a row per node of the graph (:func:`propagate_labels`, a model's output on
    the whole graph) or a row per node of ``nodes`` (``trainer.predict(nodes)``).
    """
    if not isinstance(nodes, Nodes):
        raise ArgumentTypeError(f"Argument nodes should be a loopml Nodes set (e.g. parts.test), got {type(nodes).__name__}")
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2:
        raise ArgumentTypeError(f"Argument scores should be a 2-D tensor (nodes x classes), got {type(scores).__name__}")
    if len(scores) == nodes.graph.num_nodes:
        scores = scores[nodes.index]
    elif len(scores) != len(nodes):
        raise ArgumentError(f"Argument scores should have a row per node of the graph ({nodes.graph.num_nodes}) or of the "
                            f"set ({len(nodes)}), got {len(scores)}")
    y = nodes.graph.y[nodes.index]
    keep = y >= 0
    if not bool(keep.any()):
        raise ArgumentError(f"Argument nodes has no labeled node to score ({nodes!r})")
    return float((scores[keep].argmax(dim=1) == y[keep]).double().mean())
