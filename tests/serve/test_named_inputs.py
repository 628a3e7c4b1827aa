"""Records by column name on a live model server: one record, a list, columns; the column named on a 422."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

import loopml
from loopml import data
from loopml.serve import ModelServer
from loopml.store import TrackingStore

import pandas as pd  # noqa: E402

torch.set_num_threads(1)


def _frame(n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "age": rng.normal(40, 12, n),
        "plan": rng.choice(["basic", "pro", "team"], n),
        "spend": rng.lognormal(3, 1, n),
        "churn": rng.integers(0, 2, n),
    })
    frame.loc[::7, "plan"] = None
    return frame


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{(tmp_path_factory.mktemp('named') / 'loopml.db').as_posix()}"


@pytest.fixture(scope="module")
def server(uri: str) -> Iterator[ModelServer]:
    """``churn`` v1: a Preprocessor (scaling; one-hot plan, imputed) before a linear layer; age and spend have no imputer."""
    from loopml.tracking import api

    tmp = Path(uri.removeprefix("sqlite:///")).parent
    mp = pytest.MonkeyPatch()
    mp.setenv("LOOPML_TRACKING_URI", uri)
    mp.setenv("LOOPML_ARTIFACT_ROOT", str(tmp / "artifacts"))
    ds = data.from_frame(_frame(), target="churn")
    torch.manual_seed(0)
    pre = data.Preprocessor(impute=None).fit(ds)
    model = pre.then(torch.nn.Linear(pre.n_features_out, 2)).eval()
    loopml.register(model, "churn", input_example=ds.x[:8], class_names=["stay", "leave"], formats=("pt2", "onnx"))
    store = TrackingStore(uri, artifact_root=tmp / "artifacts")
    srv = ModelServer("churn/1", store=store, port=0).start().wait_ready(60)
    yield srv
    srv.stop()
    store.close()
    loopml.set_tracking_uri(None)
    api.close_all()
    mp.undo()


def _post(server: ModelServer, inputs: object) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/churn/predict", json={"inputs": inputs})


RECORDS = [
    {"age": 31.0, "plan": "pro", "spend": 12.5},
    {"spend": 80.0, "plan": None, "age": 52.0},  # any key order; plan is imputed with the most frequent
    {"age": 67, "plan": "basic", "spend": 3},
]


def _expected(uri: str) -> np.ndarray:
    rows = np.array([[31.0, 1.0, 12.5], [52.0, np.nan, 80.0], [67.0, 0.0, 3.0]], dtype=np.float32)
    return loopml.load_model("churn/1", tracking_uri=uri).predict_proba(rows)  # the oracle: positional codes, loaded eagerly


def test_one_record_by_name_answers_like_the_loaded_model(server: ModelServer, uri: str) -> None:
    r = _post(server, RECORDS[0])
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "ok" and "results" not in doc, "one record is answered as one row"
    np.testing.assert_allclose(doc["probabilities"], _expected(uri)[0], atol=1e-5)
    assert doc["prediction"] == ["stay", "leave"][int(np.argmax(doc["probabilities"]))]


def test_records_columns_and_rows_give_the_same_answers(server: ModelServer, uri: str) -> None:
    columns = {k: [rec[k] for rec in RECORDS] for k in ("age", "plan", "spend")}
    positional = [[31.0, "pro", 12.5], [52.0, None, 80.0], [67, "basic", 3]]
    expected = _expected(uri)
    for form in (RECORDS, columns, positional):
        r = _post(server, form)
        assert r.status_code == 200, r.text
        got = np.array([item["probabilities"] for item in r.json()["results"]])
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        ({"age": 31.0, "plan": "pro"}, "input is missing columns ['spend']; the model takes 3 columns: 'age', 'plan', 'spend'"),
        ({"age": 31.0, "plan": "pro", "spend": 1.0, "city": "Oslo"}, "input has unknown columns ['city']"),
        ([RECORDS[0], {"age": 1.0, "plan": "pro"}], "input record 1 is missing columns ['spend']"),
        ({"age": 31.0, "plan": "gold", "spend": 1.0}, "input column 'plan' should hold one of ['basic', 'pro', 'team']; got 'gold'"),
        ({"age": 31.0, "plan": "pro", "spend": "high"}, "input column 'spend' should hold a number (or null where missing); got 'high'"),
    ],
)
def test_a_bad_record_is_a_422_that_names_the_column(server: ModelServer, inputs: object, match: str) -> None:
    r = _post(server, inputs)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "invalid_input" and error["message"].startswith(match), error["message"]


def test_missing_values_pass_only_where_the_model_imputes(server: ModelServer) -> None:
    assert _post(server, {"age": 40.0, "plan": None, "spend": 5.0}).status_code == 200
    r = _post(server, {"age": None, "plan": "pro", "spend": 5.0})
    assert r.status_code == 422
    assert r.json()["error"]["message"] == (
        "input columns ['age'] should hold numbers; got a missing value (NaN or null). "
        "Only the columns the model imputes accept one: ['plan']"
    )
    npy = io.BytesIO()
    np.save(npy, np.array([[40.0, np.nan, 5.0], [np.nan, 1.0, 5.0]], dtype=np.float32))
    r = httpx.post(f"{server.url}/v1/models/churn/predict", content=npy.getvalue(),
                   headers={"content-type": "application/x-npy"})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("input columns ['age']"), "npy: same rule"
    info = httpx.get(f"{server.url}/v1/models/churn").json()["signature"]
    assert info["feature_names"] == ["age", "plan", "spend"] and info["categories"] == {"plan": ["basic", "pro", "team"]}
    assert info["missing"] == ["plan"]
    assert info["preprocessing"]["outputs"] == ["age", "spend", "plan=basic", "plan=pro", "plan=team"]


def test_openapi_describes_records_by_name(server: ModelServer) -> None:
    doc = httpx.get(f"{server.url}/openapi.json").json()
    body = doc["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    forms = body["properties"]["inputs"]["oneOf"]
    record = next(f for f in forms if f["type"] == "object" and "additionalProperties" in f and
                  f["properties"]["age"].get("type") != "array")
    assert record["required"] == ["age", "plan", "spend"]
    assert len(forms) == 5, "row, rows, record, records, columns"
