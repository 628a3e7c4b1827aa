"""Reproducible train / val / test splits, stratified by class.

>>> from loopml.data import load, split
>>> parts = split(load("digits"), val=0.15, test=0.15, seed=0)
>>> len(parts.train), len(parts.val), len(parts.test)
(1257, 270, 270)

The test rows are taken first, then the val rows, from one permutation drawn
with ``numpy.random.default_rng(seed)``: the same data and arguments give the
same parts on every machine. Stratified splits give each class its share of
every part, rounded so that each class's count is within one row of its exact
proportion and the part sizes are ``round(N * fraction)``. Rows with
identical inputs are then moved into one part (the first of train, val, test
holding a copy), so no split leaks; sizes shift by the rows moved. Rows keep
their original order inside each part.

A graph's nodes are split with :func:`split_nodes` (masks over one graph, the
labeled nodes only, "k labels per class" for the semi-supervised setting):

>>> ring = np.stack([np.arange(60), (np.arange(60) + 1) % 60], axis=1)      # 60 nodes in a ring, 2 classes
>>> g = loopml.data.from_edges(ring, x=np.zeros((60, 2)), y=np.arange(60) % 2, undirected=True)
>>> nodes = split_nodes(g, per_class=5, val=10, test=0.5, seed=0)
>>> len(nodes.train), len(nodes.val), len(nodes.test)
(10, 10, 25)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError
from .dataset import Dataset
from .graph import Graph, Nodes

__all__ = ["NodeSplit", "Split", "split", "split_nodes"]


@dataclass(frozen=True)
class Split:
    """The parts of a split; ``val`` or ``test`` is None when its fraction was 0.

    ``indices`` holds each part's row numbers in the original dataset.
    """

    train: Dataset
    val: Dataset | None
    test: Dataset | None
    indices: dict[str, np.ndarray]

    def __iter__(self) -> Iterator[Dataset | None]:
        return iter((self.train, self.val, self.test))

    @property
    def fingerprints(self) -> dict[str, str]:
        return {k: ds.fingerprint for k, ds in (("train", self.train), ("val", self.val), ("test", self.test)) if ds}


def _allocate(counts: np.ndarray, total: int, caps: np.ndarray, fraction: float) -> np.ndarray:
    """Per-class counts summing to ``total``, each within one of ``counts * fraction`` and at most ``caps``."""
    exact = counts * fraction
    out: np.ndarray = np.minimum(np.floor(exact).astype(np.int64), caps)
    order = np.argsort(-(exact - out), kind="stable")
    i = 0
    while out.sum() < total and i < 2 * len(order):
        c = order[i % len(order)]
        if out[c] < caps[c] and out[c] < exact[c] + 1:
            out[c] += 1
        i += 1
    return out


def _keep_duplicates_together(x: np.ndarray, idx: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rows with identical inputs go to one part (the first of train, val, test that holds one),
    so that a split never leaks a row into two parts; part sizes move by the rows moved."""
    names = ("train", "val", "test")
    flat = np.ascontiguousarray(x.reshape(len(x), -1))
    _, group = np.unique(flat, axis=0, return_inverse=True)
    group = group.reshape(-1)
    part = np.empty(len(x), dtype=np.int64)
    for i, k in enumerate(names):
        part[idx[k]] = i
    first = np.full(group.max() + 1 if len(group) else 0, len(names), dtype=np.int64)
    np.minimum.at(first, group, part)
    moved = first[group]
    if np.array_equal(moved, part):
        return idx
    return {k: np.flatnonzero(moved == i) for i, k in enumerate(names)}


def split(ds: Dataset, val: float = 0.15, test: float = 0.15, *, stratify: bool = True, seed: int = 0) -> Split:
    """Split ``ds`` into train, val and test parts (see the module docstring).

    ``stratify`` applies to classification; a regression dataset is split at random.
    """
    if isinstance(ds, Graph):
        raise ArgumentTypeError("Argument ds should be a loopml.data.Dataset; a Graph's nodes are split with "
                                "loopml.data.split_nodes(graph, val=0.15, test=0.15, seed=0) (or per_class=k)")
    if not isinstance(ds, Dataset):
        raise ArgumentTypeError(f"Argument ds should be a loopml.data.Dataset, got {type(ds).__name__}")
    for arg, frac in (("val", val), ("test", test)):
        if not isinstance(frac, (int, float)) or isinstance(frac, bool) or not 0 <= frac < 1:
            raise ArgumentError(f"Argument {arg} should be a fraction from 0 to below 1, got {frac!r}")
    if val + test >= 1:
        raise ArgumentError(f"Arguments val and test should leave rows for training: val + test = {val + test}")
    if not isinstance(seed, int):
        raise ArgumentTypeError(f"Argument seed should be an integer, got {type(seed).__name__}")
    n = len(ds)
    n_test, n_val = round(n * test), round(n * val)
    if (test and not n_test) or (val and not n_val) or n - n_test - n_val < 1:
        raise ArgumentError(f"Argument ds should have enough rows for every part: {n} rows, val={val}, test={test}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    if stratify and ds.task == "classification":
        y = ds.y.numpy()[perm]
        counts = np.bincount(y)
        t = _allocate(counts, n_test, counts, test)
        v = _allocate(counts, n_val, counts - t, val)
        parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
        for c in np.flatnonzero(counts):
            rows = perm[y == c]
            parts["test"].append(rows[: t[c]])
            parts["val"].append(rows[t[c] : t[c] + v[c]])
            parts["train"].append(rows[t[c] + v[c] :])
        idx = {k: np.sort(np.concatenate(p)) for k, p in parts.items()}
    else:
        idx = {
            "test": np.sort(perm[:n_test]),
            "val": np.sort(perm[n_test : n_test + n_val]),
            "train": np.sort(perm[n_test + n_val :]),
        }
    idx = _keep_duplicates_together(ds.x.numpy(), idx)
    return Split(
        train=ds.subset(idx["train"], name=f"{ds.name}-train"),
        val=ds.subset(idx["val"], name=f"{ds.name}-val") if val else None,
        test=ds.subset(idx["test"], name=f"{ds.name}-test") if test else None,
        indices=idx,
    )


@dataclass(frozen=True)
class NodeSplit:
    """The node sets of :func:`split_nodes`: ``graph`` (a copy holding the masks ``train``, and ``val`` and
    ``test`` when asked for), each set as :class:`Nodes` (None when it has no node), and ``indices``:
    each set's node numbers."""

    graph: Graph
    train: Nodes
    val: Nodes | None
    test: Nodes | None
    indices: dict[str, np.ndarray]

    def __iter__(self) -> Iterator[Nodes | None]:
        return iter((self.train, self.val, self.test))


def _size(value: Any, arg: str, of: int, *, whole: bool = False) -> int:
    """A part's node count: a whole number is a count, a fraction from 0 to below 1 a share of ``of``
    (up to 1.0 with ``whole``: every node train leaves, with ``per_class``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer)):
        raise ArgumentTypeError(f"Argument {arg} should be a fraction (0 to below 1) or a number of nodes, got {value!r}")
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise ArgumentError(f"Argument {arg} should be a number of nodes >= 0, got {value}")
        return int(value)
    if not (0 <= value <= 1 if whole else 0 <= value < 1):
        top = "1" if whole else "below 1"
        raise ArgumentError(f"Argument {arg} should be a fraction from 0 to {top} (or a whole number of nodes), got {value}")
    return round(of * value)


def split_nodes(graph: Graph, *, per_class: int | None = None, train: float | int | None = None,
                val: float | int = 0.15, test: float | int = 0.15, seed: int = 0) -> NodeSplit:
    """Split a graph's labeled nodes into train, val and test sets, stratified by class; unlabeled nodes go in none.

    ``val``, ``test`` (and ``train``): a fraction of the labeled nodes, or a number of nodes.
    ``train=None`` takes every labeled node that val and test leave. ``per_class=k`` puts
    exactly ``k`` labeled nodes of each class in train (the semi-supervised setting: a few
    labels, many nodes); ``val`` and ``test`` then come from the rest, as counts or fractions
    of the rest (``test=1.0``: every node train leaves). Test nodes are drawn first, then val, then train (train first with
    ``per_class``), each class's nodes in one permutation of ``numpy.random.default_rng(seed)``,
    so the same graph and arguments give the same sets everywhere. Without ``per_class`` each
    class keeps at least one train node.

    Example::

        parts = split_nodes(karate_club(), per_class=1, val=0, test=0.5, seed=0)
        trainer.fit(parts.train, epochs=200)
    """
    if not isinstance(graph, Graph):
        raise ArgumentTypeError(f"Argument graph should be a loopml.data.Graph, got {type(graph).__name__}; "
                                "a Dataset's rows are split with loopml.data.split")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ArgumentTypeError(f"Argument seed should be an integer, got {type(seed).__name__}")
    y_all = graph.y.numpy()
    labeled = np.flatnonzero(y_all >= 0)
    if not len(labeled):
        raise ArgumentError(f"Argument graph should have labeled nodes to split; {graph.name!r} has none (y is -1 everywhere)")
    k_classes = max(graph.num_classes, int(y_all.max()) + 1)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(labeled)
    y = y_all[perm]
    counts = np.bincount(y, minlength=k_classes)
    take = {"train": np.zeros(k_classes, dtype=np.int64), "val": np.zeros(k_classes, dtype=np.int64),
            "test": np.zeros(k_classes, dtype=np.int64)}
    if per_class is not None:
        if train is not None:
            raise ArgumentError("Arguments per_class and train should not both be given: per_class=k sets the train nodes")
        if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
            raise ArgumentError(f"Argument per_class should be an integer >= 1 (labeled train nodes per class), got {per_class!r}")
        short = [(graph.class_names[c] if c < graph.num_classes else str(c), int(counts[c]))
                 for c in range(k_classes) if counts[c] < per_class]
        if short:
            raise ArgumentError(f"Argument per_class={per_class} should not exceed any class's labeled nodes; "
                                f"too few in (class, labeled nodes) {short[:10]}: lower per_class or label more nodes")
        take["train"][:] = per_class
        rest = counts - per_class
        n_rest = int(rest.sum())
        n_test, n_val = _size(test, "test", n_rest, whole=True), _size(val, "val", n_rest, whole=True)
        if n_test + n_val > n_rest:
            raise ArgumentError(f"Arguments val and test should fit in the {n_rest} labeled nodes that train leaves, "
                                f"got {n_val} + {n_test}")
        take["test"] = _allocate(rest, n_test, rest, n_test / n_rest if n_rest else 0.0)
        take["val"] = _allocate(rest, n_val, rest - take["test"], n_val / n_rest if n_rest else 0.0)
        order = ("train", "test", "val")
    else:
        n = len(labeled)
        n_test, n_val = _size(test, "test", n), _size(val, "val", n)
        keep_one = np.minimum(counts, 1)  # each class present keeps a train node
        if n_test + n_val > n - int(keep_one.sum()):
            raise ArgumentError(f"Arguments val and test should leave train nodes of every class: {n} labeled nodes, "
                                f"val {n_val} + test {n_test}")
        take["test"] = _allocate(counts, n_test, counts - keep_one, n_test / n)
        take["val"] = _allocate(counts, n_val, counts - keep_one - take["test"], n_val / n)
        rest = counts - take["test"] - take["val"]
        if train is None:
            take["train"] = rest
        else:
            n_train = _size(train, "train", n)
            if n_train > int(rest.sum()):
                raise ArgumentError(f"Argument train should fit in the {int(rest.sum())} labeled nodes val and test leave, "
                                    f"got {n_train}")
            take["train"] = _allocate(counts, n_train, rest, n_train / n)
        order = ("test", "val", "train")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in take}
    for c in np.flatnonzero(counts):
        nodes_c = perm[y == c]
        start = 0
        for part in order:
            parts[part].append(nodes_c[start: start + take[part][c]])
            start += int(take[part][c])
    idx = {k: np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for k, p in parts.items()}
    out = copy.copy(graph)  # the same tensors (and cached fingerprint), its own masks
    out.masks = {k: m for k, m in graph.masks.items() if k not in ("train", "val", "test")}
    for part in ("train", "val", "test"):
        if part == "train" or len(idx[part]):
            out.set_mask(part, idx[part])
    return NodeSplit(graph=out, train=out.nodes("train"),
                     val=out.nodes("val") if len(idx["val"]) else None,
                     test=out.nodes("test") if len(idx["test"]) else None, indices=idx)
