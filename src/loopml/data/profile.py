"""A dataset's profile: per-feature statistics, class balance and image statistics.

The profile is what a later stage compares live inputs against (the drift
reference), so it is plain JSON: every number is a Python float or int, and
a statistic that does not exist (the mean of an all-missing column) is
``None``. Statistics use only the finite values of a feature; ``missing``
counts NaN and ``non_finite`` counts +/-inf.

::

    {"version": 1, "kind": "tabular", "n_rows": 150,
     "features": {"sepal length (cm)": {"type": "numeric", "count": 150, "missing": 0, "non_finite": 0,
                  "mean": 5.84, "std": 0.83, "min": 4.3, "p05": ..., "p25": ..., "p50": ..., "p75": ...,
                  "p95": ..., "max": 7.9, "n_unique": 35, "histogram": {"edges": [...11], "counts": [...10]}},
                  "color": {"type": "categorical", "count": 150, "missing": 0, "n_unique": 3,
                            "counts": {"blue": 50, ...}}},
     "target": {"type": "classification", "counts": {"setosa": 50, ...}, "fractions": {...},
                "imbalance_ratio": 1.0},
     "image": null}

For images (``kind == "image"``) ``features`` is empty and ``image`` holds
per-channel statistics, an intensity histogram, and per-pixel mean and std
(C x H x W nested lists) when an image has at most ``MAX_PIXELS`` values.
``std`` is the sample standard deviation (ddof=1, as pandas).

A graph's profile (``kind == "graph"``, :func:`graph_profile`) describes its
structure instead: nodes and edges, the degree distribution, edge homophily,
connected components, isolated nodes, self-loops, duplicate edges, whether it
is undirected, its labels and its masks.

>>> from loopml.data import load, profile
>>> profile(load("iris"))["target"]["counts"]
{'setosa': 50, 'versicolor': 50, 'virginica': 50}
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArgumentTypeError
from .dataset import Dataset
from .graph import Graph

if TYPE_CHECKING:
    from .dataset import Dataset

__all__ = ["HISTOGRAM_BINS", "MAX_PIXELS", "PROFILE_VERSION", "graph_profile", "profile"]

PROFILE_VERSION = 1
HISTOGRAM_BINS = 10
MAX_PIXELS = 4096
_QUANTILES = {"p05": 5, "p25": 25, "p50": 50, "p75": 75, "p95": 95}


def _num(v: Any) -> float | None:
    """A JSON-safe float: None for NaN and infinities."""
    v = float(v)
    return v if math.isfinite(v) else None


def _numeric(col: np.ndarray) -> dict[str, Any]:
    nan = np.isnan(col)
    finite = col[np.isfinite(col)].astype(np.float64)
    out: dict[str, Any] = {
        "type": "numeric",
        "count": int(finite.size),
        "missing": int(nan.sum()),
        "non_finite": int((~nan & ~np.isfinite(col)).sum()),
    }
    if finite.size == 0:
        out.update({k: None for k in ("mean", "std", "min", *_QUANTILES, "max")})
        out.update({"n_unique": 0, "histogram": None})
        return out
    qs = np.percentile(finite, list(_QUANTILES.values()))
    counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS)
    out["mean"] = _num(finite.mean())
    out["std"] = _num(finite.std(ddof=1)) if finite.size > 1 else None
    out["min"] = _num(finite.min())
    out.update({k: _num(q) for k, q in zip(_QUANTILES, qs)})
    out["max"] = _num(finite.max())
    out["n_unique"] = int(np.unique(finite).size)
    out["histogram"] = {"edges": [_num(e) for e in edges], "counts": [int(c) for c in counts]}
    return out


def _categorical(col: np.ndarray, values: list[str]) -> dict[str, Any]:
    nan = np.isnan(col)
    codes = col[~nan].astype(np.int64)
    counts = np.bincount(codes, minlength=len(values)) if codes.size else np.zeros(len(values), dtype=np.int64)
    return {
        "type": "categorical",
        "count": int(codes.size),
        "missing": int(nan.sum()),
        "n_unique": int((counts > 0).sum()),
        "counts": {v: int(c) for v, c in zip(values, counts)},
    }


def _target(ds: "Dataset") -> dict[str, Any]:
    y = ds.y.numpy()
    if ds.task == "regression":
        stats = _numeric(y.astype(np.float32))
        stats["type"] = "regression"
        return stats
    names = ds.class_names or []
    counts = np.bincount(y, minlength=len(names)) if y.size else np.zeros(len(names), dtype=np.int64)
    total = max(int(counts.sum()), 1)
    present = counts[counts > 0]
    return {
        "type": "classification",
        "counts": {n: int(c) for n, c in zip(names, counts)},
        "fractions": {n: float(c) / total for n, c in zip(names, counts)},
        "imbalance_ratio": float(present.min() / present.max()) if present.size else None,
    }


def _image(x: np.ndarray) -> dict[str, Any]:
    n, c = x.shape[0], x.shape[1]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        clean = np.where(np.isfinite(x), x, np.nan).astype(np.float64)
        channels = []
        for ch in range(c):
            stats = _numeric(x[:, ch].reshape(-1))
            channels.append({k: stats[k] for k in ("count", "missing", "non_finite", "mean", "std", "min", "max")})
        out: dict[str, Any] = {
            "shape": list(x.shape[1:]),
            "channels": channels,
            "histogram": _numeric(x.reshape(-1))["histogram"],
            "pixel_mean": None,
            "pixel_std": None,
        }
        if int(np.prod(x.shape[1:])) <= MAX_PIXELS and n > 0:
            mean = np.nanmean(clean, axis=0)
            std = np.nanstd(clean, axis=0, ddof=1) if n > 1 else np.full(mean.shape, np.nan)
            out["pixel_mean"] = _nested(mean)
            out["pixel_std"] = _nested(std)
    return out


def _nested(a: np.ndarray) -> Any:
    if a.ndim == 0:
        return _num(a)
    return [_nested(sub) for sub in a]


def profile(ds: "Dataset | Graph") -> dict[str, Any]:
    """The profile of ``ds`` as a JSON-ready dict (see the module docstring for its keys)."""
    if isinstance(ds, Graph):
        return graph_profile(ds)
    if not isinstance(ds, Dataset):
        raise ArgumentTypeError(f"Argument ds should be a loopml.data.Dataset or Graph, got {type(ds).__name__}")
    x = ds.x.numpy()
    features: dict[str, Any] = {}
    image = None
    if ds.kind == "image":
        image = _image(x)
    else:
        for i, name in enumerate(ds.feature_names):
            col = x[:, i]
            cats = ds.categories.get(name)
            features[name] = _categorical(col, cats) if cats is not None else _numeric(col)
    return {
        "version": PROFILE_VERSION,
        "kind": ds.kind,
        "n_rows": len(ds),
        "features": features,
        "target": _target(ds),
        "image": image,
    }


def graph_profile(graph: Graph) -> dict[str, Any]:
    """The profile of a :class:`~loopml.data.graph.Graph` as a JSON-ready dict.

    ``degree``: each node's out-degree (edges from it: its neighbours when the graph is
    undirected), as min / mean / median / max and a histogram of at most 10 bins.
    ``homophily``: the share of edges between two labeled nodes (self-loops aside) whose
    labels agree (None without such an edge). ``components``: weakly connected
    components (scipy's ``connected_components``), ``largest_component`` the nodes of the
    largest. ``isolated_nodes``: nodes with no edge but self-loops. ``duplicate_edges``:
    edges that repeat an earlier one. ``undirected``: every edge's reverse is listed.
    ``missing_node_edges``: edges with an end outside 0..N-1, left out of every other figure.
    ``target``: label counts per class, the labeled nodes and their fraction. ``masks``: set sizes.

    Example::

        p = graph_profile(karate_club())
        p["edges"], p["degree"]["max"], p["components"]       # (156, 17, 1)
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n, ei = graph.num_nodes, graph.edge_index.numpy()
    valid = (ei >= 0).all(axis=0) & (ei < n).all(axis=0)
    src, dst = ei[0, valid], ei[1, valid]
    loops = src == dst
    degree = np.bincount(src, minlength=n)
    codes = src.astype(np.int64) * max(n, 1) + dst
    unique_codes = np.unique(codes)
    reverse = dst.astype(np.int64) * max(n, 1) + src
    touched = np.zeros(n, dtype=bool)
    touched[src[~loops]] = True
    touched[dst[~loops]] = True
    if n:
        adjacency = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
        n_comp, comp = connected_components(adjacency, directed=True, connection="weak")
        largest = int(np.bincount(comp).max())
    else:
        n_comp, largest = 0, 0
    y = graph.y.numpy()
    both = (y[src] >= 0) & (y[dst] >= 0) & ~loops
    labeled = y >= 0
    counts = np.bincount(y[labeled], minlength=graph.num_classes) if labeled.any() else np.zeros(graph.num_classes, dtype=np.int64)
    bins = min(HISTOGRAM_BINS, int(degree.max()) - int(degree.min()) + 1) if n else 0
    hist_counts, hist_edges = np.histogram(degree, bins=bins) if n else (np.zeros(0), np.zeros(0))
    return {
        "version": PROFILE_VERSION,
        "kind": "graph",
        "n_rows": n,
        "nodes": n,
        "edges": int(ei.shape[1]),
        "features": graph.num_features,
        "x": {k: v for k, v in _numeric(graph.x.numpy().reshape(-1)).items()
              if k in ("count", "missing", "non_finite", "mean", "std", "min", "max")},
        "degree": {
            "min": int(degree.min()) if n else None,
            "mean": _num(degree.mean()) if n else None,
            "median": _num(np.median(degree)) if n else None,
            "max": int(degree.max()) if n else None,
            "histogram": {"edges": [_num(e) for e in hist_edges], "counts": [int(c) for c in hist_counts]},
        },
        "homophily": _num(np.mean(y[src[both]] == y[dst[both]])) if both.any() else None,
        "labeled_edges": int(both.sum()),
        "components": int(n_comp),
        "largest_component": largest,
        "isolated_nodes": int(n - touched.sum()),
        "self_loops": int(loops.sum()),
        "duplicate_edges": int(len(codes) - len(unique_codes)),
        "undirected": bool(np.isin(reverse, unique_codes).all()),
        "missing_node_edges": int((~valid).sum()),
        "target": {
            "type": "classification",
            "counts": {name: int(c) for name, c in zip(graph.class_names, counts)},
            "labeled": int(labeled.sum()),
            "labeled_fraction": float(labeled.mean()) if n else 0.0,
        },
        "masks": {k: int(m.sum()) for k, m in graph.masks.items()},
    }
