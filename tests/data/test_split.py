"""Splits: reproducible, stratified within one row, disjoint."""

from __future__ import annotations

import numpy as np
import pytest

from loopml.data import Dataset, from_arrays, load, split


def test_same_seed_same_parts_other_seed_other_parts(digits: Dataset) -> None:
    a, b, c = split(digits, seed=0), split(digits, seed=0), split(digits, seed=1)
    assert a.fingerprints == b.fingerprints
    assert a.fingerprints["train"] != c.fingerprints["train"]
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(a.indices[k], b.indices[k])


@pytest.mark.parametrize("name", ["digits", "iris", "wine", "breast_cancer"])
@pytest.mark.parametrize("seed", [0, 7])
def test_stratified_within_one_row(name: str, seed: int) -> None:
    ds = load(name)
    parts = split(ds, val=0.15, test=0.2, seed=seed)
    counts = np.bincount(ds.y.numpy())
    n = len(ds)

    assert (len(parts.val), len(parts.test)) == (round(n * 0.15), round(n * 0.2))
    for part, frac in ((parts.train, 0.65), (parts.val, 0.15), (parts.test, 0.2)):
        got = np.bincount(part.y.numpy(), minlength=len(counts))
        assert np.all(np.abs(got - counts * frac) <= 1), (part.name, got, counts * frac)


def test_parts_are_disjoint_and_cover_the_rows(digits: Dataset) -> None:
    parts = split(digits, seed=3)
    idx = np.concatenate([parts.indices[k] for k in ("train", "val", "test")])

    assert np.array_equal(np.sort(idx), np.arange(len(digits)))
    assert len(set(parts.fingerprints.values())) == 3
    assert parts.train.name == "digits-train" and parts.val.class_names == digits.class_names  # type: ignore[union-attr]
    np.testing.assert_array_equal(parts.test.x.numpy(), digits.x.numpy()[parts.indices["test"]])  # type: ignore[union-attr]


def test_unstratified_and_regression_and_empty_parts() -> None:
    diabetes = load("diabetes")
    parts = split(diabetes, val=0.1, test=0.0, seed=0)
    assert parts.test is None and len(parts.val) == 44 and len(parts.train) == 398  # type: ignore[arg-type]
    train, val, test = split(load("iris"), stratify=False, seed=0)
    assert len(train) + len(val) + len(test) == 150  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val": 1.2}, r"Argument val should be a fraction from 0 to below 1, got 1.2"),
        ({"val": 0.5, "test": 0.5}, r"Arguments val and test should leave rows for training"),
        ({"seed": "x"}, r"Argument seed should be an integer"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        split(from_arrays(np.zeros((10, 2)), np.arange(10) % 2), **kwargs)


def test_too_few_rows() -> None:
    with pytest.raises(ValueError, match="Argument ds should have enough rows for every part: 2 rows"):
        split(from_arrays(np.zeros((2, 2)), [0, 1]))


def test_identical_inputs_stay_in_one_part() -> None:
    """iris has an exact duplicate row: no seed may put its copies in two parts (leakage)."""
    from loopml import data

    iris = data.load("iris")
    for seed in range(30):
        parts = data.split(iris, seed=seed)
        assert not [i for i in data.check(parts).errors if i.code == "leakage"], f"seed {seed}"
        assert sum(len(p) for p in (parts.train, parts.val, parts.test)) == len(iris)
