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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError
from .dataset import Dataset

__all__ = ["Split", "split"]


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
