"""A tabular signature's columns: feature names, category codes, imputed columns, records by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

import torch  # noqa: E402
import pandas as pd  # noqa: E402

from loopml import data  # noqa: E402
from loopml.models.signature import Signature, TensorSpec, infer_signature, random_inputs  # noqa: E402

torch.set_num_threads(1)

NAMES = ["age", "color", "income"]


@pytest.fixture(scope="module")
def table() -> data.Dataset:
    frame = pd.DataFrame({
        "age": [30.0, np.nan, 50.0, 41.0],
        "color": ["red", "blue", None, "red"],
        "income": [1.0, 2.0, 3.0, 4.0],
        "y": [0, 1, 0, 1],
    })
    return data.from_frame(frame, target="y")


@pytest.fixture(scope="module")
def sig(table: data.Dataset) -> Signature:
    """Imputes age and color (median / most frequent), income has no imputer."""
    doc = data.Preprocessor().fit(table).to_dict()
    doc["numeric"][1]["fill"] = None  # income: no imputer, so NaN there must be refused
    pre = data.Preprocessor.from_dict(doc)
    model = pre.then(torch.nn.Linear(pre.n_features_out, 2))
    return infer_signature(model, table.x[:2], class_names=["no", "yes"])


def test_a_preprocessor_gives_names_categories_imputed_columns_and_its_values(sig: Signature) -> None:
    assert sig.feature_names == tuple(NAMES)
    assert sig.categories == {"color": ("blue", "red")}
    assert sig.missing == ("age", "color")
    assert sig.preprocessing is not None and sig.preprocessing["outputs"] == ["age", "income", "color=blue", "color=red"]
    doc = json.loads(json.dumps(sig.to_dict(), allow_nan=False))
    assert Signature.from_dict(doc) == sig


def test_a_signature_without_columns_keeps_its_old_json(sig: Signature) -> None:
    plain = Signature(inputs=(TensorSpec("x", "float32", (None, 3)),), outputs=(TensorSpec("output", "float32", (None, 2)),))
    assert set(plain.to_dict()) == {"inputs", "outputs", "class_names"}
    assert Signature.from_dict(plain.to_dict()).feature_names is None


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(feature_names=["a", "b"]), r"'feature_names' should have one distinct name per input column \(3\)"),
        (lambda d: d.update(feature_names=["a", "a", "b"]), "one distinct name per input column"),
        (lambda d: d.update(feature_names="abc"), "'feature_names' should be a list of strings"),
        (lambda d: d.update(categories={"color": [1, 2]}), "'categories' should map column names to lists of strings"),
        (lambda d: d.update(categories={"shape": ["a"]}), r"should name input columns; unknown \['shape'\]"),
        (lambda d: d.update(missing="age"), "'missing' should be a list of column names"),
        (lambda d: d.update(preprocessing=[1]), "'preprocessing' should be an object"),
    ],
)
def test_from_dict_names_the_bad_column_field(sig: Signature, mutate: object, match: str) -> None:
    doc = json.loads(json.dumps(sig.to_dict()))
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(ValueError, match=match):
        Signature.from_dict(doc)


def test_records_columns_frames_and_rows_give_the_same_batch(sig: Signature) -> None:
    expected = np.array([[30.0, 1.0, 1.5], [np.nan, 0.0, 2.0]], dtype=np.float32)
    forms = [
        [{"age": 30, "color": "red", "income": 1.5}, {"income": 2.0, "color": "blue", "age": None}],
        {"age": [30, None], "color": ["red", "blue"], "income": [1.5, 2.0]},
        pd.DataFrame({"age": [30.0, np.nan], "color": ["red", "blue"], "income": [1.5, 2.0]}),
        pd.DataFrame({"age": pd.array([30, None], dtype="Int64"), "color": ["red", "blue"], "income": [1.5, 2.0]}),
        [[30, "red", 1.5], [None, "blue", 2.0]],
        [[30.0, 1.0, 1.5], [np.nan, 0.0, 2.0]],  # the positional form, codes for the category
        expected,
    ]
    for form in forms:
        x, single = sig.parse(form)
        np.testing.assert_array_equal(x, expected)
        assert x.dtype == np.float32 and not single
    x, single = sig.parse({"age": 30, "color": "red", "income": 1.5})
    assert single and x.shape == (1, 3)
    x, single = sig.parse([30, "red", 1.5])
    assert single and x.tolist() == [[30.0, 1.0, 1.5]]


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"age": 1, "color": "red"}, r"input is missing columns \['income'\]; the model takes 3 columns: 'age', 'color', 'income'"),
        ({"age": 1, "color": "red", "income": 1, "zip": 5}, r"input has unknown columns \['zip'\]"),
        ({"age": 1, "colour": "red", "income": 1}, r"is missing columns \['color'\] and has unknown columns \['colour'\]"),
        ([{"age": 1, "color": "red", "income": 1}, {"age": 1, "color": "red"}], r"input record 1 is missing columns \['income'\]"),
        ([{"age": 1, "color": "red", "income": 1}, [1, 2, 3]], "item 1 is list"),
        ({"age": [1, 2], "color": ["red"], "income": [1, 2]}, "should all have the same number of values"),
        ({"age": [1], "color": "red", "income": [1]}, r"got a mix of lists and single values \(lists in \['age', 'income'\]\)"),
        ({"age": [], "color": [], "income": []}, "at least one row"),
        ({}, "got an empty object"),
        ({"age": 1, "color": "purple", "income": 1}, r"column 'color' should hold one of \['blue', 'red'\]; got 'purple'"),
        ({"age": "old", "color": "red", "income": 1}, "column 'age' should hold a number .*got 'old'"),
        ({"age": [1], "color": ["red"], "income": [True]}, "column 'income' should hold a number .*got True"),
        ({"age": 1, "color": "red", "income": None}, r"columns \['income'\] should hold numbers; got a missing value .*accept one: \['age', 'color'\]"),
        ([[1.0, 0.0, np.nan]], r"columns \['income'\] should hold numbers; got a missing value"),
        ([[1.0, 0.0, np.inf]], "should hold finite numbers; got infinity"),
        ([[1.0, 2.0, 1.0]], r"column 'color' should hold one of \['blue', 'red'\] \(or its code 0..1\); got 2"),
        (np.array([[1.0, 0.5, 1.0]], dtype=np.float32), r"column 'color' .*; got 0.5"),
    ],
)
def test_bad_records_name_the_column(sig: Signature, payload: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sig.validate(payload)


def test_missing_values_are_accepted_in_imputed_columns_only(sig: Signature) -> None:
    x = sig.validate({"age": None, "color": None, "income": 3.0})
    assert np.isnan(x[0, :2]).all() and x[0, 2] == 3.0


def test_records_need_feature_names() -> None:
    plain = Signature(inputs=(TensorSpec("x", "float32", (None, 2)),), outputs=(TensorSpec("output", "float32", (None, 2)),))
    with pytest.raises(ValueError, match=r"has no column names in this model's signature; send rows as lists of 2 numbers"):
        plain.validate({"a": 1.0, "b": 2.0})
    with pytest.raises(ValueError, match="got NaN"):
        plain.validate([[1.0, np.nan]])


def test_explicit_feature_names_and_categories_without_a_preprocessor() -> None:
    model = torch.nn.Linear(2, 2)
    sig = infer_signature(model, torch.zeros(2, 2), feature_names=["a", "kind"], categories={"kind": ["x", "y"]})
    assert sig.validate({"a": 1.0, "kind": "y"}).tolist() == [[1.0, 1.0]]
    assert sig.missing == () and sig.preprocessing is None
    with pytest.raises(ValueError, match="one distinct name per input column; the input has shape \\(batch, 2\\) and 3"):
        infer_signature(model, torch.zeros(2, 2), feature_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="Argument feature_names should be a list of strings"):
        infer_signature(model, torch.zeros(2, 2), feature_names="ab")
    with pytest.raises(ValueError, match="Argument categories needs feature_names"):
        infer_signature(model, torch.zeros(2, 2), categories={"a": ["x"]})


def test_explicit_names_must_match_the_preprocessor(table: data.Dataset) -> None:
    pre = data.Preprocessor().fit(table)
    model = pre.then(torch.nn.Linear(pre.n_features_out, 2))
    with pytest.raises(ValueError, match="should match the model's Preprocessor"):
        infer_signature(model, table.x[:2], feature_names=["a", "b", "c"])
    assert infer_signature(model, table.x[:2], feature_names=NAMES).feature_names == tuple(NAMES)


def test_named_from_takes_a_tabular_schema_as_wide_as_the_input(table: data.Dataset) -> None:
    plain = infer_signature(torch.nn.Linear(3, 2), torch.zeros(2, 3))
    named = plain.named_from(table.schema())
    assert named.feature_names == tuple(NAMES) and named.categories == {"color": ("blue", "red")}
    assert plain.named_from(data.from_arrays(np.zeros((2, 4)), [0, 1]).schema()) is plain  # 4 columns, not 3
    assert plain.named_from(None) is plain
    assert named.named_from(data.from_arrays(np.zeros((2, 3)), [0, 1]).schema()) is named  # names already set


def test_random_inputs_give_valid_codes_and_missing_values_where_imputed(sig: Signature, table: data.Dataset) -> None:
    x = random_inputs(sig, 200, like=table.x.numpy())
    assert np.isnan(x[:, 0]).any() and not np.isnan(x[:, 2]).any()
    assert set(np.unique(x[:, 1][~np.isnan(x[:, 1])])) <= {0.0, 1.0}
    np.testing.assert_array_equal(sig.validate(x), x)
