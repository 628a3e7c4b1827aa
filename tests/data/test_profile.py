"""Profiles against NumPy and pandas as oracles; JSON-safe throughout."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from loopml.data import Dataset, from_arrays, from_frame, load, profile


def test_numeric_features_match_pandas(iris: Dataset) -> None:
    p = profile(iris)
    frame = pd.DataFrame(iris.x.numpy().astype(np.float64), columns=iris.feature_names)
    desc = frame.describe(percentiles=[0.05, 0.25, 0.5, 0.75, 0.95])

    assert p["kind"] == "tabular" and p["n_rows"] == 150 and p["image"] is None
    for name in iris.feature_names:
        f = p["features"][name]
        assert f["type"] == "numeric" and f["count"] == 150 and f["missing"] == 0
        for key, row in [("mean", "mean"), ("std", "std"), ("min", "min"), ("p05", "5%"), ("p25", "25%"),
                         ("p50", "50%"), ("p75", "75%"), ("p95", "95%"), ("max", "max")]:
            assert f[key] == pytest.approx(desc.loc[row, name], rel=1e-9), (name, key)
        assert f["n_unique"] == frame[name].nunique()
        counts, edges = np.histogram(frame[name], bins=10)
        assert f["histogram"]["counts"] == counts.tolist() and f["histogram"]["edges"] == pytest.approx(edges.tolist())


def test_class_balance(iris: Dataset) -> None:
    t = profile(iris.subset(range(0, 120)))["target"]
    assert t["counts"] == {"setosa": 50, "versicolor": 50, "virginica": 20}
    assert t["fractions"]["virginica"] == pytest.approx(20 / 120)
    assert t["imbalance_ratio"] == pytest.approx(0.4)


def test_regression_target_and_missing_values_are_json_safe() -> None:
    x = np.array([[1.0, np.nan], [2.0, np.nan], [np.inf, np.nan]])
    p = profile(from_arrays(x, [0.5, 1.5, 2.5]))

    a, b = p["features"]["x0"], p["features"]["x1"]
    assert (a["count"], a["missing"], a["non_finite"], a["mean"], a["max"]) == (2, 0, 1, 1.5, 2.0)
    assert (b["count"], b["missing"], b["mean"], b["std"], b["histogram"]) == (0, 3, None, None, None)
    assert p["target"]["type"] == "regression" and p["target"]["mean"] == pytest.approx(1.5)
    json.dumps(p, allow_nan=False)  # no NaN or inf anywhere


def test_categorical_features_are_counted() -> None:
    df = pd.DataFrame({"c": ["b", "a", "b", None], "t": [0, 1, 0, 1]})
    f = profile(from_frame(df, target="t"))["features"]["c"]
    assert f == {"type": "categorical", "count": 3, "missing": 1, "n_unique": 2, "counts": {"a": 1, "b": 2}}


def test_images_get_channel_and_pixel_statistics(digits: Dataset) -> None:
    img = profile(digits)["image"]
    x = digits.x.numpy().astype(np.float64)

    assert profile(digits)["features"] == {} and img["shape"] == [1, 8, 8]
    ch = img["channels"][0]
    assert ch["mean"] == pytest.approx(x.mean()) and ch["std"] == pytest.approx(x.std(ddof=1))
    assert (ch["min"], ch["max"], ch["count"]) == (0.0, 1.0, x.size)
    np.testing.assert_allclose(np.array(img["pixel_mean"]), x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(np.array(img["pixel_std"]), x.std(axis=0, ddof=1), rtol=1e-12)
    assert sum(img["histogram"]["counts"]) == x.size
    json.dumps(profile(digits), allow_nan=False)


def test_large_images_skip_per_pixel_statistics() -> None:
    ds = from_arrays(np.random.default_rng(0).random((3, 3, 32, 48)), [0, 1, 0])
    img = profile(ds)["image"]
    assert img["pixel_mean"] is None and len(img["channels"]) == 3


def test_profile_wants_a_dataset() -> None:
    with pytest.raises(TypeError, match="Argument ds should be a loopml.data.Dataset"):
        profile(np.zeros((2, 2)))  # type: ignore[arg-type]


def test_every_bundled_profile_is_json(iris: Dataset) -> None:
    for name in ("wine", "breast_cancer", "diabetes"):
        json.dumps(profile(load(name)), allow_nan=False)
