"""Predictions, the read-only routes, feedback, auth and the OOD gate hook on a live server."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
import numpy as np
import pytest

import loopml
from loopml.serve import ModelServer
from loopml.store.predictions import PredictionLog, inputs_array

from .conftest import AbsGate, parse_metrics, row, rows


def _post(server: ModelServer, body: object, **kw: object) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/mlp/predict", json=body, **kw)  # type: ignore[arg-type]


def test_one_row_answers_class_probabilities_version_and_request_id(serve: Callable[..., ModelServer]) -> None:
    server = serve()
    x = rows(1)
    r = _post(server, {"inputs": x[0].tolist()})

    assert r.status_code == 200
    doc = r.json()
    assert doc["model"] == "mlp" and doc["version"] == 1 and doc["status"] == "ok" and doc["request_id"]
    expected = loopml.load_model("mlp/1").predict_proba(x)[0]  # the oracle: eager load + softmax
    np.testing.assert_allclose(doc["probabilities"], expected, atol=1e-5)
    assert doc["prediction"] == str(int(expected.argmax()))


def test_many_rows_and_npy_body_answer_one_result_per_row(serve: Callable[..., ModelServer]) -> None:
    server = serve()
    x = rows(5)
    a = _post(server, {"inputs": x.tolist()}).json()
    buf = io.BytesIO()
    np.save(buf, x)
    b = httpx.post(f"{server.url}/v1/models/mlp/predict", content=buf.getvalue(), headers={"content-type": "application/x-npy"}).json()

    assert len(a["results"]) == len(b["results"]) == 5
    assert [r["prediction"] for r in a["results"]] == [r["prediction"] for r in b["results"]]
    assert a["request_id"] != b["request_id"]


def test_models_health_ready_docs_and_openapi(serve: Callable[..., ModelServer]) -> None:
    server = serve()
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/health").json() == {"status": "ok"}
        assert c.get("/ready").json()["version"] == 1
        models = c.get("/v1/models").json()["models"]
        info = c.get("/v1/models/mlp").json()
        assert models == [info]
        assert info["aliases"] == ["production"] and info["version"] == 1
        assert info["signature"]["inputs"][0]["shape"] == [None, 64]
        assert c.get("/v1/models/other").json()["error"]["code"] == "not_found"
        assert "swagger-ui" in c.get("/docs").text
        spec = c.get("/openapi.json").json()
        assert "/v1/models/{name}/predict" in spec["paths"]


def test_metrics_parse_and_count_requests(serve: Callable[..., ModelServer]) -> None:
    server = serve()
    for _ in range(3):
        _post(server, {"inputs": row()})
    _post(server, {"inputs": [1.0]})
    m = parse_metrics(httpx.get(f"{server.url}/metrics").text)

    assert m['loopml_requests_total{model="mlp",code="200"}'] == 3
    assert m['loopml_requests_total{model="mlp",code="422"}'] == 1
    assert m['loopml_request_latency_seconds_count{model="mlp"}'] == 3
    assert m['loopml_batch_size_count{model="mlp"}'] == 3
    assert m['loopml_model_version{model="mlp"}'] == 1
    for name in ("loopml_queue_depth", "loopml_abstentions_total", "loopml_request_log_dropped_total"):
        assert f'{name}{{model="mlp"}}' in m


def test_every_prediction_is_in_the_request_log(serve: Callable[..., ModelServer], mlp_store: object) -> None:
    server = serve()
    x = rows(3)
    ids = [_post(server, {"inputs": r.tolist()}).json()["request_id"] for r in x]
    assert server.requestlog.flush(10)

    log = PredictionLog(mlp_store)  # type: ignore[arg-type]
    records = [log.get(i) for i in ids]
    assert [r["version"] for r in records] == [1, 1, 1] and all(r["status"] == "ok" for r in records)
    np.testing.assert_array_equal(inputs_array(records[1]["inputs"]), x[1:2])
    assert '"request_id"' in records[0]["outputs"] and records[0]["latency_ms"] > 0


def test_feedback_stores_the_label_and_unknown_ids_get_404(serve: Callable[..., ModelServer], mlp_store: object) -> None:
    server = serve()
    rid = _post(server, {"inputs": row()}).json()["request_id"]
    ok = httpx.post(f"{server.url}/v1/feedback", json={"request_id": rid, "label": "3"})
    missing = httpx.post(f"{server.url}/v1/feedback", json={"request_id": "nope", "label": "3"})

    assert ok.status_code == 200 and ok.json()["label"] == "3"
    assert PredictionLog(mlp_store).feedback(rid)[0]["label"] == "3"  # type: ignore[arg-type]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_bearer_token_is_required_on_every_route(serve: Callable[..., ModelServer]) -> None:
    server = serve(auth_token="s3cret")
    denied = [httpx.get(f"{server.url}{p}") for p in ("/health", "/metrics", "/v1/models", "/openapi.json")]
    wrong = _post(server, {"inputs": row()}, headers={"authorization": "Bearer nope"})
    ok = _post(server, {"inputs": row()}, headers={"authorization": "Bearer s3cret"})

    assert {r.status_code for r in denied} == {401} and wrong.status_code == 401
    assert denied[0].json()["error"]["code"] == "unauthorized" and denied[0].headers["www-authenticate"] == "Bearer"
    assert ok.status_code == 200


def test_foreign_host_header_is_refused(serve: Callable[..., ModelServer]) -> None:
    server = serve()
    r = httpx.get(f"{server.url}/health", headers={"host": "evil.example"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host"


def test_ood_gate_abstains_above_its_threshold(serve: Callable[..., ModelServer], mlp_store: object) -> None:
    gate = AbsGate()
    server = serve(gate=gate)
    fine = _post(server, {"inputs": row(0.5)}).json()
    odd = _post(server, {"inputs": row(9.0)}).json()
    odd_with = _post(server, {"inputs": row(9.0), "include_prediction": True}).json()
    mixed = _post(server, {"inputs": [row(0.5), row(9.0)]}).json()

    assert fine["status"] == "ok" and fine["ood_score"] == pytest.approx(0.5)
    assert odd["status"] == "abstain" and odd["prediction"] is None and odd["ood_score"] == pytest.approx(9.0)
    assert "above the threshold 5" in odd["reason"]
    assert odd_with["status"] == "abstain" and odd_with["prediction"] is not None
    assert [r["status"] for r in mixed["results"]] == ["ok", "abstain"]
    m = parse_metrics(httpx.get(f"{server.url}/metrics").text)
    assert m['loopml_abstentions_total{model="mlp"}'] == 3
    server.requestlog.flush(10)
    assert PredictionLog(mlp_store).get(odd["request_id"])["status"] == "abstain"  # type: ignore[arg-type]


def test_a_gate_without_score_and_threshold_is_refused() -> None:
    with pytest.raises(TypeError, match="score\\(batch\\)"):
        ModelServer("mlp@production", gate=object())  # type: ignore[arg-type]


def test_store_down_keeps_serving_and_counts_dropped_records(serve: Callable[..., ModelServer], mlp_store: object) -> None:
    server = serve()
    with mlp_store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.exec_driver_sql("DROP TABLE predictions")  # every insert now fails
    answers = [_post(server, {"inputs": row()}) for _ in range(5)]
    server.requestlog.flush(10)

    assert [a.status_code for a in answers] == [200] * 5
    m = parse_metrics(httpx.get(f"{server.url}/metrics").text)
    assert m['loopml_request_log_dropped_total{model="mlp"}'] == 5


def test_fixed_version_reference_serves_that_version(serve: Callable[..., ModelServer]) -> None:
    from .conftest import register_mlp

    register_mlp(seed=1)
    server = serve("mlp/2", backend="torch")
    doc = _post(server, {"inputs": row()}).json()
    assert doc["version"] == 2 and httpx.get(f"{server.url}/v1/models/mlp").json()["format"] in ("pt2", "torch")
