"""``Preprocessor``: imputation, standardisation and one-hot encoding as a torch module, against scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.deps import need

from loopml import data
from loopml.data import Preprocessor
from loopml.data.preprocess import find_preprocessor

import pandas as pd  # noqa: E402
sklearn = need("sklearn", extra="data")

from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402

torch.set_num_threads(1)

# The transform runs in float32 (the model's dtype) and scikit-learn in float64:
# the largest difference measured on these tables was 2.3e-7 (values within about +-4).
ATOL = 1e-5


def _frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age": rng.normal(40, 12, n),
        "color": rng.choice(["red", "blue", "green"], n),
        "income": rng.lognormal(10, 1, n),
        "plan": rng.choice(["basic", "pro"], n, p=[0.7, 0.3]),
        "target": rng.integers(0, 2, n),
    })
    frame.loc[rng.random(n) < 0.1, "age"] = np.nan
    frame.loc[rng.random(n) < 0.15, "color"] = None
    frame.loc[rng.random(n) < 0.05, "income"] = np.nan
    return frame


@pytest.fixture(scope="module")
def table() -> data.Dataset:
    return data.from_frame(_frame(), target="target")


def _oracle(x: np.ndarray, ds: data.Dataset, impute: str = "median") -> ColumnTransformer:
    """scikit-learn's pipeline for the same transform: numeric columns first, then one-hot blocks."""
    num = [j for j, n in enumerate(ds.feature_names) if n not in ds.categories]
    cat = [j for j, n in enumerate(ds.feature_names) if n in ds.categories]
    codes = [[float(k) for k in range(len(ds.categories[ds.feature_names[j]]))] for j in cat]
    return ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy=impute), StandardScaler()), num),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"),
                              OneHotEncoder(categories=codes, sparse_output=False)), cat),
    ]).fit(x)


def test_matches_scikit_learn_imputer_scaler_and_one_hot_encoder(table: data.Dataset) -> None:
    parts = data.split(table, val=0.2, test=0.2, seed=0)
    pre = Preprocessor().fit(parts.train)
    oracle = _oracle(parts.train.x.numpy().astype(np.float64), table)
    for part in (parts.train, parts.test):  # the test split is transformed with the train split's values
        x = part.x.numpy()
        assert np.isnan(x).any(), "the table should exercise imputation"
        got = pre(part.x).numpy()
        np.testing.assert_allclose(got, oracle.transform(x.astype(np.float64)), rtol=0, atol=ATOL)
    assert pre.output_names == ["age", "income", "color=blue", "color=green", "color=red", "plan=basic", "plan=pro"]
    assert pre.n_features_in == 4 and pre.n_features_out == 7
    assert pre.imputed_columns == ["age", "color", "income", "plan"]
    assert list(pre.parameters()) == [], "the fitted values are buffers: training leaves them alone"


def test_mean_imputation_without_scaling_matches_simple_imputer(table: data.Dataset) -> None:
    x = table.x.numpy()
    numeric = x[:, [0, 2]].astype(np.float64)
    pre = Preprocessor(scale=None, impute="mean").fit(table)
    expected = SimpleImputer(strategy="mean").fit_transform(numeric)
    np.testing.assert_allclose(pre(table.x).numpy()[:, :2], expected, rtol=1e-6)  # float32 of values up to ~1e5


def test_constant_column_is_divided_by_one_like_standard_scaler() -> None:
    x = np.array([[5.0, 1.0], [5.0, 2.0], [5.0, 4.0]])
    pre = Preprocessor().fit(x, feature_names=["const", "v"])
    np.testing.assert_allclose(pre(torch.tensor(x, dtype=torch.float32)).numpy(),
                               StandardScaler().fit_transform(x), atol=ATOL)
    assert pre.to_dict()["numeric"][0]["std"] == 1.0


def test_unknown_category_code_gives_a_row_of_zeros_and_nan_takes_the_most_frequent(table: data.Dataset) -> None:
    pre = Preprocessor().fit(table)
    row = torch.tensor([[40.0, 7.0, 20000.0, float("nan")]])  # color code 7 does not exist; plan missing
    out = pre(row)[0].tolist()
    assert out[2:5] == [0.0, 0.0, 0.0]
    assert out[5:] == [1.0, 0.0], "NaN becomes the most frequent plan (basic, 70%)"
    assert pre.to_dict()["categorical"][1] == {"name": "plan", "categories": ["basic", "pro"], "fill": "basic"}


def test_to_dict_is_json_and_from_dict_rebuilds_the_same_transform(table: data.Dataset) -> None:
    pre = Preprocessor().fit(table)
    doc = json.loads(json.dumps(pre.to_dict(), allow_nan=False))
    again = Preprocessor.from_dict(doc)
    torch.testing.assert_close(again(table.x), pre(table.x), rtol=0, atol=0)
    assert again.to_dict() == doc
    assert doc["outputs"] == pre.output_names and doc["inputs"] == table.feature_names
    with pytest.raises(ValueError, match=r"should be the output of Preprocessor.to_dict\(\)"):
        Preprocessor.from_dict({"kind": "other"})
    broken = dict(doc, numeric=[{"name": "age"}])
    with pytest.raises(ValueError, match="not a complete Preprocessor description \\(KeyError: 'fill'\\)"):
        Preprocessor.from_dict(broken)


def test_then_puts_it_in_front_of_a_model_and_find_preprocessor_finds_it(table: data.Dataset) -> None:
    pre = Preprocessor().fit(table)
    model = pre.then(torch.nn.Linear(pre.n_features_out, 2))
    assert isinstance(model, torch.nn.Sequential) and model[0] is pre
    assert model(table.x).shape == (len(table), 2)
    assert find_preprocessor(model) is pre
    assert find_preprocessor(torch.nn.Linear(2, 2)) is None
    two = torch.nn.Sequential(pre, Preprocessor().fit(table))
    with pytest.raises(ValueError, match="holds 2 Preprocessors"):
        find_preprocessor(two)
    with pytest.raises(TypeError, match="Argument model should be a torch.nn.Module"):
        pre.then("mlp")  # type: ignore[arg-type]


def test_without_an_imputer_a_column_with_missing_values_is_refused(table: data.Dataset) -> None:
    with pytest.raises(ValueError, match=r"Column 'age' has \d+ missing training values and no imputer; pass impute='median'"):
        Preprocessor(impute=None).fit(table)
    with pytest.raises(ValueError, match="Column 'color' .* pass impute_categorical='most_frequent'"):
        Preprocessor(impute_categorical=None).fit(table)
    clean = np.array([[1.0, 2.0], [3.0, 4.0]])
    pre = Preprocessor(impute=None).fit(clean)
    assert pre.imputed_columns == [] and pre.feature_names == ["x0", "x1"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": "minmax"}, "Argument scale should be one of 'standard', None; got 'minmax'"),
        ({"impute": "zero"}, "Argument impute should be one of 'median', 'mean', None"),
        ({"impute_categorical": "median"}, "Argument impute_categorical should be one of 'most_frequent', None"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Preprocessor(**kwargs)  # type: ignore[arg-type]


def test_bad_training_data_is_refused_with_the_column_named() -> None:
    with pytest.raises(ValueError, match="should be a tabular Dataset.*image"):
        Preprocessor().fit(data.from_arrays(np.zeros((4, 1, 2, 2)), [0, 1, 0, 1]))
    with pytest.raises(ValueError, match="Column 'b' holds infinity"):
        Preprocessor().fit(np.array([[1.0, np.inf], [2.0, 1.0]]), feature_names=["a", "b"])
    with pytest.raises(ValueError, match="Column 'b' has no value in any training row"):
        Preprocessor().fit(np.array([[1.0, np.nan], [2.0, np.nan]]), feature_names=["a", "b"])
    with pytest.raises(ValueError, match=r"Column 'c' should hold category codes 0..1 .*got values from 0 to 2"):
        Preprocessor().fit(np.array([[0.0], [2.0]]), feature_names=["c"], categories={"c": ["x", "y"]})
    with pytest.raises(ValueError, match=r"categories should name columns of the data; unknown \['z'\]"):
        Preprocessor().fit(np.array([[0.0]]), feature_names=["c"], categories={"z": ["x"]})
    with pytest.raises(ValueError, match="one distinct name per column"):
        Preprocessor().fit(np.zeros((2, 2)), feature_names=["a", "a"])
    with pytest.raises(ValueError, match="at least one row"):
        Preprocessor().fit(np.zeros((0, 2)))
    with pytest.raises(TypeError, match="should hold numbers"):
        Preprocessor().fit(np.array([["a"]]))


def test_an_unfitted_or_misfed_preprocessor_says_what_to_do(table: data.Dataset) -> None:
    with pytest.raises(RuntimeError, match=r"not fitted; call pre.fit\(train_split\)"):
        Preprocessor()(torch.zeros(2, 3))
    pre = Preprocessor().fit(table)
    with pytest.raises(ValueError, match=r"rows of 4 raw features \(age, color, income, plan\); got shape \(2, 7\)"):
        pre(torch.zeros(2, 7))
