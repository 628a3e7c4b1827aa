"""Building datasets from arrays, tensors, DataFrames and by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from loopml.data import NAMES, Dataset, from_arrays, from_frame, load


@pytest.mark.parametrize(
    ("name", "shape", "classes"),
    [
        ("digits", (1797, 1, 8, 8), [str(i) for i in range(10)]),
        ("breast_cancer", (569, 30), ["malignant", "benign"]),
        ("wine", (178, 13), ["class_0", "class_1", "class_2"]),
        ("iris", (150, 4), ["setosa", "versicolor", "virginica"]),
        ("diabetes", (442, 10), None),
    ],
)
def test_load_bundled_sets(name: str, shape: tuple[int, ...], classes: list[str] | None) -> None:
    ds = load(name)

    assert tuple(ds.x.shape) == shape and ds.x.dtype == torch.float32
    assert ds.class_names == classes
    assert len(ds) == shape[0] and ds.name == name and ds.source == f"sklearn.datasets.load_{name}"
    if classes is None:
        assert ds.task == "regression" and ds.y.dtype == torch.float32
    else:
        assert ds.task == "classification" and ds.y.dtype == torch.int64
        assert int(ds.y.max()) == len(classes) - 1
    assert set(NAMES) >= {name}


def test_digits_are_scaled_images(digits: Dataset) -> None:
    from sklearn.datasets import load_digits

    raw = load_digits()
    assert digits.kind == "image" and digits.feature_names == []
    np.testing.assert_array_equal(digits.x[:, 0].numpy(), raw.images.astype(np.float32) / 16)
    np.testing.assert_array_equal(digits.y.numpy(), raw.target)
    assert float(digits.x.max()) == 1.0


def test_unknown_name_says_what_exists() -> None:
    with pytest.raises(ValueError, match=r"Argument name should be one of breast_cancer, diabetes, digits, iris, wine, got 'mnist'"):
        load("mnist")


def test_is_a_map_style_torch_dataset(iris: Dataset) -> None:
    x0, y0 = iris[0]
    assert x0.shape == (4,) and y0.dtype == torch.int64
    xb, yb = next(iter(DataLoader(iris, batch_size=16)))
    assert xb.shape == (16, 4) and yb.shape == (16,)


def test_from_arrays_infers_the_task() -> None:
    assert from_arrays(np.zeros((3, 2)), [0, 1, 1]).task == "classification"
    assert from_arrays(np.zeros((3, 2)), [0.5, 1.0, 2.0]).task == "regression"
    assert from_arrays(np.zeros((3, 2)), np.array([[0], [1], [2]])).y.shape == (3,)


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "error", "match"),
    [
        (np.zeros(5), [0] * 5, {}, ValueError, r"Argument x should be 2-D \(rows x features\) or 4-D"),
        (np.zeros((5, 2)), [0] * 4, {}, ValueError, r"Argument y should have one label per row of x: x has 5 rows, y has 4"),
        (np.zeros((2, 2)), [0.5, 1.0], {"task": "classification"}, ValueError, "whole-number class indices"),
        (np.zeros((2, 2)), [0, 1], {"task": "ranking"}, ValueError, "Argument task should be one of"),
        (np.zeros((2, 2)), [0, 1], {"feature_names": ["a"]}, ValueError, "Argument feature_names should have one name"),
        (np.zeros((2, 2)), [0, 3], {"class_names": ["a", "b"]}, ValueError, "Argument class_names should name every class"),
        (np.zeros((2, 2)), [-1, 0], {}, ValueError, r"class indices 0..K-1"),
        (np.array([["a", "b"]], dtype=object), [0], {}, TypeError, "from_frame"),
    ],
)
def test_bad_input_is_explained(x: object, y: object, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        from_arrays(x, y, **kwargs)


def test_from_frame_encodes_categories_and_text_targets() -> None:
    df = pd.DataFrame({"a": [1.0, np.nan, 3.0], "c": ["y", "x", None], "flag": [True, False, True], "t": ["no", "yes", "no"]})

    ds = from_frame(df, target="t", name="toy")

    assert ds.feature_names == ["a", "c", "flag"] and ds.categories == {"c": ["x", "y"]}
    assert ds.class_names == ["no", "yes"] and ds.y.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(ds.x.numpy(), np.array([[1, 1, 1], [np.nan, 0, 0], [3, np.nan, 1]], dtype=np.float32))
    with pytest.raises(ValueError, match=r"Argument target should be a column of frame, got 'nope'"):
        from_frame(df, target="nope")


def test_subset_keeps_names(iris: Dataset) -> None:
    sub = iris.subset([3, 1], name="two")
    assert sub.name == "two" and sub.class_names == iris.class_names and sub.feature_names == iris.feature_names
    assert torch.equal(sub.x, iris.x[[3, 1]])
