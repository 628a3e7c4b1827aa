"""Where graphs come from: a PyG ``Data``, edge lists and node tables, KarateClub, a stochastic block model, k-NN.

================================  =====================================================================
call                              the graph
================================  =====================================================================
``from_pyg(data)``                a ``torch_geometric.data.Data``; its ``*_mask`` attributes become masks
``from_edges(edges, ...)``        an edge list (arrays, a DataFrame, a .csv / .parquet file) and
                                  optionally a node table whose ``id`` column names the nodes
``karate_club()``                 Zachary's karate club (PyG's ``KarateClub``, no download), 4 train labels
``sbm([100, 100], 0.1, 0.01)``    a stochastic block model (PyG's generator), features drawn per block
``knn_graph(dataset, k=10)``      each row of a loopml Dataset linked to its k nearest rows
================================  =====================================================================

PyTorch Geometric (extra ``graph``) is imported only by :func:`from_pyg`,
:func:`karate_club` and :func:`sbm`; :func:`knn_graph` needs scikit-learn.

Example::

    import pandas as pd
    from loopml import data
    edges = pd.DataFrame({"source": ["ann", "bob"], "target": ["bob", "cy"]})
    people = pd.DataFrame({"id": ["ann", "bob", "cy"], "age": [31, 45, 27], "label": ["a", "b", None]})
    g = data.from_edges(edges, nodes=people, undirected=True)   # 3 nodes, 4 edges, 2 labeled
    g.node_ids                                                  # ['ann', 'bob', 'cy']
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ArgumentError, ArgumentTypeError
from .dataset import Dataset
from .graph import Graph
from .sources import read_table

if TYPE_CHECKING:
    import pandas as pd
    from torch_geometric.data import Data

__all__ = ["from_edges", "from_pyg", "karate_club", "knn_graph", "sbm"]


def _pyg(what: str) -> None:
    try:
        import torch_geometric  # noqa: F401
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"{what} needs PyTorch Geometric: pip install 'loopml[graph]'") from exc


def from_pyg(data: "Data", *, name: str = "graph", source: str = "pyg",
             feature_names: Sequence[str] | None = None, class_names: Sequence[str] | None = None) -> Graph:
    """A :class:`Graph` of a ``torch_geometric.data.Data``: ``x``, ``edge_index``, ``y``, and each ``<name>_mask``
    attribute as the mask ``<name>`` (``train_mask`` -> ``"train"``). ``graph.to_pyg()`` gives it back.

    A ``Data`` without ``x`` gets one constant feature per node; without ``y``, no labels.

    Example::

        from torch_geometric.datasets import KarateClub
        g = from_pyg(KarateClub()[0], name="karate")
        sorted(g.masks)          # ['train']
    """
    _pyg("from_pyg")
    from torch_geometric.data import Data

    if not isinstance(data, Data):
        raise ArgumentTypeError(f"Argument data should be a torch_geometric.data.Data, got {type(data).__name__}; "
                                "for a dataset of graphs pass one graph: dataset[0]")
    if data.edge_index is None:
        raise ArgumentError("Argument data should have an edge_index (2 x edges)")
    n = int(data.num_nodes) if data.num_nodes is not None else 0
    x = data.x if data.x is not None else torch.ones(n, 1)
    y = data.y
    if y is not None and y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y is not None and (y.dim() != 1 or len(y) != n):
        raise ArgumentError(f"Argument data should have one class per node in y (graph-level or multi-label y is not "
                            f"node classification), got y of shape {tuple(y.shape)} for {n} nodes")
    masks = {key[: -len("_mask")]: data[key] for key in data.keys()
             if key.endswith("_mask") and isinstance(data[key], torch.Tensor)}
    return Graph(x, data.edge_index, y, masks=masks, feature_names=feature_names, class_names=class_names,
                 name=name, source=source)


def _is_frame(value: Any) -> bool:
    return type(value).__module__.startswith("pandas") and hasattr(value, "columns")


def _edge_ends(edges: Any, source: str, target: str) -> tuple[np.ndarray, np.ndarray]:
    """The source and target ids of each edge, as two arrays (numbers or text)."""
    if isinstance(edges, (str, os.PathLike)):
        edges = read_table(edges, what="edges")
    if _is_frame(edges):
        missing = [c for c in (source, target) if c not in edges.columns]
        if missing:
            raise ArgumentError(f"Argument edges should have the columns {source!r} and {target!r} (or pass "
                                f"source=, target=); it has {[str(c) for c in edges.columns][:20]}")
        return edges[source].to_numpy(), edges[target].to_numpy()
    arr = edges.detach().cpu().numpy() if isinstance(edges, torch.Tensor) else np.asarray(edges)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if arr.ndim != 2 or 2 not in arr.shape:
        raise ArgumentError(f"Argument edges should be (edges, 2) pairs or a (2, edges) edge_index, got shape {arr.shape}")
    if arr.shape[1] == 2:  # (source, target) pairs; a 2 x 2 array reads as two pairs
        return arr[:, 0], arr[:, 1]
    return arr[0], arr[1]


def _whole(values: np.ndarray) -> bool:
    return values.dtype.kind in "iu" or (values.dtype.kind == "f" and bool(np.all(values == np.round(values))))


def _labels(values: np.ndarray) -> tuple[np.ndarray, list[str] | None]:
    """Class numbers (-1 where missing) and class names, from a label column of numbers or text."""
    import pandas as pd

    missing = pd.isna(values)
    if values.dtype.kind in "iuf":
        present = values[~missing].astype(np.float64)
        if present.size and _whole(present) and present.min() >= 0:  # already class numbers 0..K-1
            y = np.full(len(values), -1, dtype=np.int64)
            y[~missing] = present.astype(np.int64)
            return y, None
    text = np.array([str(v) for v in values[~missing]], dtype=object)
    names = sorted(set(text))
    lookup = {c: i for i, c in enumerate(names)}
    y = np.full(len(values), -1, dtype=np.int64)
    y[~missing] = [lookup[t] for t in text]
    return y, names


def from_edges(
    edges: Any,
    x: Any = None,
    y: Any = None,
    *,
    nodes: Any = None,
    source: str = "source",
    target: str = "target",
    id: str = "id",
    label: str = "label",
    undirected: bool = False,
    name: str | None = None,
) -> Graph:
    """A :class:`Graph` from an edge list and, optionally, a node table.

    ``edges``: ``(edges, 2)`` pairs or a ``(2, edges)`` edge_index (array, tensor or
    list; a 2 x 2 array reads as two pairs), a DataFrame with the columns ``source``
    and ``target``, or such a ``.csv`` / ``.parquet`` file.

    ``nodes``: a node table (DataFrame or file). Its ``id`` column names the nodes
    (numbers or text, in any order): node ``i`` of the graph is the table's row ``i``
    and ``graph.node_ids`` keeps the ids. Its ``label`` column (when present) gives the
    labels (text becomes class names in sorted order; empty cells: no label); every other
    column is a numeric feature. An edge whose end is not in the table gets a node number
    from N up: :func:`loopml.data.check` reports it (``missing_nodes``).

    Without ``nodes``: whole-number ids are the node numbers (N is ``len(x)``, or the
    largest id + 1); text ids are numbered in sorted order. ``x``: node features (default:
    one constant feature), ``y``: a class per node (-1: no label); either overrides the table's.
    ``undirected=True`` adds each edge's reverse (once: an edge listed both ways stays two edges).

    Example::

        g = from_edges([[0, 1], [1, 2]], x=np.eye(3), y=[0, 1, -1], undirected=True)
        g.num_edges              # 4
        from_edges("edges.csv", nodes="nodes.csv", label="club")
    """
    if not isinstance(undirected, bool):
        raise ArgumentTypeError(f"Argument undirected should be True or False, got {undirected!r}")
    src, dst = _edge_ends(edges, source, target)
    feature_names: list[str] | None = None
    class_names: list[str] | None = None
    node_ids: list[Any] | None = None
    table_x: np.ndarray | None = None
    table_y: np.ndarray | None = None
    if nodes is not None:
        import pandas as pd

        table = read_table(nodes, what="nodes") if isinstance(nodes, (str, os.PathLike)) else nodes
        if not _is_frame(table):
            raise ArgumentTypeError(f"Argument nodes should be a pandas DataFrame or a .csv / .parquet file, got "
                                    f"{type(nodes).__name__}")
        if id not in table.columns:
            raise ArgumentError(f"Argument nodes should have the id column {id!r} (or pass id=); it has "
                                f"{[str(c) for c in table.columns][:20]}")
        ids = table[id].to_numpy()
        if pd.isna(ids).any():
            raise ArgumentError(f"Argument nodes should give every node an id; column {id!r} has empty cells")
        keys = [_key(v) for v in ids]
        if len(set(keys)) != len(keys):
            dup = sorted({str(k) for k in keys if keys.count(k) > 1})[:5]
            raise ArgumentError(f"Argument nodes should list each node once; ids repeat in column {id!r}, e.g. {dup}")
        node_ids = [v.item() if isinstance(v, np.generic) else v for v in ids]
        lookup = {k: i for i, k in enumerate(keys)}
        unknown: dict[Any, int] = {}  # ends not in the table: numbers from N up, reported by check

        def number(v: Any) -> int:
            k = _key(v)
            if k in lookup:
                return lookup[k]
            return unknown.setdefault(k, len(keys) + len(unknown))

        src = np.array([number(v) for v in src], dtype=np.int64)
        dst = np.array([number(v) for v in dst], dtype=np.int64)
        if label in table.columns:
            table_y, class_names = _labels(table[label].to_numpy())
        features = [c for c in table.columns if c not in (id, label)]
        bad = [str(c) for c in features if not pd.api.types.is_numeric_dtype(table[c])]
        if bad and x is None:
            raise ArgumentError(f"Argument nodes should hold numeric feature columns; {bad[:5]} are not: encode them "
                                "(e.g. pandas.get_dummies) or drop them, or pass x=")
        if features and x is None:
            table_x = table[features].to_numpy(dtype=np.float32)
            feature_names = [str(c) for c in features]
        n = len(table)
        if x is not None and len(x) != n:
            raise ArgumentError(f"Argument x should have one row per node of the table ({n}), got {len(x)}")
    else:
        if not (len(src) == 0 or (_numeric(src) and _numeric(dst))):
            ends = np.concatenate([src, dst]).astype(str)
            names, inverse = np.unique(ends, return_inverse=True)
            src, dst = inverse[: len(src)].astype(np.int64), inverse[len(src):].astype(np.int64)
            node_ids = [str(v) for v in names]
            n = len(names)
        else:
            for ends in (src, dst):
                if len(ends) and not _whole(ends.astype(np.float64)):
                    raise ArgumentError("Argument edges should hold whole node numbers (or text ids), got fractions")
            src, dst = src.astype(np.int64), dst.astype(np.int64)
            n = int(max(src.max(initial=-1), dst.max(initial=-1))) + 1
            if x is not None:
                n = len(x)
            elif y is not None:
                n = len(y)
    edge_index = np.stack([src, dst]).astype(np.int64) if len(src) else np.zeros((2, 0), dtype=np.int64)
    if undirected and edge_index.shape[1]:
        edge_index = _with_reverse(edge_index)
    if x is None:
        x = table_x if table_x is not None else np.ones((n, 1), dtype=np.float32)
    if y is None:
        y = table_y
    elif nodes is not None:
        class_names = None
    if isinstance(edges, (str, os.PathLike)):
        src_text, default_name = f"file:{Path(edges).name}", Path(edges).stem or "graph"
    else:
        src_text, default_name = "edges", "graph"
    return Graph(x, edge_index, y, feature_names=feature_names, class_names=class_names, node_ids=node_ids,
                 name=name or default_name, source=src_text)


def _key(v: Any) -> Any:
    """One key per id, so that 3, 3.0 and np.int64(3) are one node and "3" another."""
    if isinstance(v, (bool, np.bool_)):
        return ("b", bool(v))
    if isinstance(v, (int, np.integer)) or (isinstance(v, (float, np.floating)) and float(v).is_integer()):
        return ("n", int(v))
    return ("s", str(v))


def _numeric(values: np.ndarray) -> bool:
    return values.dtype.kind in "iuf"


def _with_reverse(edge_index: np.ndarray) -> np.ndarray:
    """``edge_index`` with the reverse of each edge that is not already listed."""
    n = int(edge_index.max()) + 1 if edge_index.size else 0
    n = max(n, 1)
    codes = edge_index[0] * n + edge_index[1]
    rev = edge_index[::-1]
    rev_codes = rev[0] * n + rev[1]
    keep = ~np.isin(rev_codes, codes) & (rev[0] != rev[1])
    _, first = np.unique(rev_codes[keep], return_index=True)  # one reverse per edge listed twice one way
    return np.concatenate([edge_index, rev[:, keep][:, np.sort(first)]], axis=1)


def karate_club() -> Graph:
    """Zachary's karate club: 34 members (one-hot features), 156 directed edges (78 friendships both ways),
    4 communities. Every node has its label; the mask ``"train"`` holds PyG's 4 labeled nodes (one per
    community), the semi-supervised setting. PyG's ``KarateClub``, which needs no download.

    Example::

        g = karate_club()
        g.num_nodes, g.num_edges, int(g.masks["train"].sum())     # (34, 156, 4)
    """
    _pyg("karate_club")
    from torch_geometric.datasets import KarateClub

    return from_pyg(KarateClub()[0], name="karate_club", source="pyg:KarateClub")


def sbm(
    block_sizes: Sequence[int],
    p_in: float,
    p_out: float,
    *,
    features: int = 16,
    noise: float = 2.0,
    seed: int = 0,
) -> Graph:
    """A stochastic block model: ``block_sizes`` blocks (the classes), an edge between two nodes of one block
    with probability ``p_in`` and of two blocks with ``p_out``, undirected (PyG's
    ``stochastic_blockmodel_graph``). Node features: a centre per block (standard normal,
    ``features`` wide) plus Gaussian ``noise`` of that standard deviation per node, so that the
    features alone classify imperfectly and the edges carry information. Every node is labeled.

    ``seed`` makes the graph (edges and features) the same on every call; the global
    torch and NumPy generators are left as they were.

    Example::

        g = sbm([100, 100, 100], p_in=0.1, p_out=0.01, features=16, seed=0)
        g.num_classes            # 3
    """
    sizes = list(block_sizes) if not isinstance(block_sizes, (str, bytes)) else []
    if not sizes or not all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) and b > 0 for b in sizes):
        raise ArgumentError(f"Argument block_sizes should be a list of positive integers (nodes per block), got {block_sizes!r}")
    for arg, p in (("p_in", p_in), ("p_out", p_out)):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ArgumentError(f"Argument {arg} should be a probability from 0 to 1, got {p!r}")
    if isinstance(features, bool) or not isinstance(features, int) or features < 1:
        raise ArgumentError(f"Argument features should be an integer >= 1, got {features!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ArgumentError(f"Argument noise should be a standard deviation >= 0, got {noise!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ArgumentTypeError(f"Argument seed should be an integer, got {type(seed).__name__}")
    _pyg("sbm")
    from torch_geometric.utils import stochastic_blockmodel_graph

    k = len(sizes)
    probs = torch.full((k, k), float(p_out))
    probs.fill_diagonal_(float(p_in))
    with torch.random.fork_rng(devices=[]):  # PyG draws from torch's global generator: seed it, then restore it
        torch.manual_seed(seed)
        edge_index = stochastic_blockmodel_graph(sizes, probs)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), sizes)
    centres = rng.normal(size=(k, features))
    x = centres[y] + noise * rng.normal(size=(len(y), features))
    return Graph(x, edge_index, y, name="sbm", source=f"sbm:{sizes},{p_in},{p_out},seed={seed}")


def knn_graph(dataset: Dataset, k: int = 10, *, metric: str = "euclidean", name: str | None = None) -> Graph:
    """The k-nearest-neighbour graph of a loopml Dataset: node ``i`` is row ``i`` (images flattened),
    linked both ways to each of its ``k`` nearest other rows (scikit-learn's ``NearestNeighbors``,
    ``metric``), so the graph is undirected; a pair that are each other's neighbours is one
    edge each way. The rows' labels are ``y``; class and feature names carry over.

    Scale the features first where their units differ (:class:`loopml.data.Preprocessor`):
    distances read them as they are. The search is exact, hence reproducible.

    Example::

        g = knn_graph(data.load("digits"), k=10)     # 1,797 nodes, 64 features, 10 classes
    """
    if not isinstance(dataset, Dataset):
        raise ArgumentTypeError(f"Argument dataset should be a loopml.data.Dataset, got {type(dataset).__name__}; "
                                "e.g. knn_graph(data.load('digits'), k=10)")
    if dataset.task != "classification":
        raise ArgumentError("Argument dataset should be a classification dataset: a Graph's labels are classes")
    n = len(dataset)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise ArgumentError(f"Argument k should be an integer from 1 to {n - 1} (the rows but one), got {k!r}")
    x = dataset.x.numpy().reshape(n, -1)
    if not np.isfinite(x).all():
        raise ArgumentError("Argument dataset should have finite inputs (no NaN or inf) to measure distances; "
                            "impute them first, e.g. with loopml.data.Preprocessor")
    try:
        from sklearn.neighbors import NearestNeighbors
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("knn_graph needs scikit-learn: pip install 'loopml[data]'") from exc
    try:
        finder = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(x)
    except ValueError as exc:
        raise ArgumentError(f"Argument metric should be a metric scikit-learn's NearestNeighbors knows, got {metric!r}: {exc}") from exc
    _, neighbours = finder.kneighbors(x)
    rows = np.repeat(np.arange(n), k + 1)
    cols = neighbours.reshape(-1)
    keep = rows != cols  # a row is its own nearest neighbour (or ties with a duplicate): no self-loops
    pairs = np.concatenate([np.stack([rows[keep], cols[keep]]), np.stack([cols[keep], rows[keep]])], axis=1)
    edge_index = np.unique(pairs, axis=1)  # both directions, each once, sorted by source
    return Graph(x, edge_index, dataset.y, feature_names=dataset.feature_names if dataset.x.ndim == 2 else None,
                 class_names=dataset.class_names, name=name or f"{dataset.name}-knn{k}",
                 source=f"knn:{dataset.fingerprint[:12]},k={k}")
