"""The model server's explanations: ``POST /v1/models/{name}/explain`` and ``GET /v1/predictions/{id}/explanation``.

Real servers on ephemeral ports over a real SQLite store (tests/serve/conftest.py). The
oracle is the library: the server's attributions are ``loopml.explain``'s on the same
version and inputs, number for number. That predictions flow while integrated gradients
runs is shown without timing: the explained model's forward pass waits, in the server's
explanation thread, until the test lets it go, and predictions are answered meanwhile.
"""

from __future__ import annotations

import concurrent.futures
import io
import sys
import threading
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
import torch

import loopml
from loopml.explanations import DEFAULT_BUDGET
from loopml.serve import ModelServer
from loopml.store import TrackingStore

from ..models.nets import MLP
from .conftest import CLASSES, AbsGate, register_mlp, rows, serve_process

ENTERED = threading.Event()  # the explanation thread is inside GatedMLP.forward
RELEASE = threading.Event()  # ... and may leave it


class GatedMLP(MLP):
    """The MLP, whose forward pass in the server's explanation thread waits for the test's RELEASE."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if threading.current_thread().name.startswith("loopml-serve-explain"):
            ENTERED.set()
            assert RELEASE.wait(60), "the test never released the explanation"
        return super().forward(x)


def _explain(server: ModelServer, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/mlp/explain", json=body, timeout=60, **kw)


def _logged(server: ModelServer, request_id: str, query: str = "") -> httpx.Response:
    return httpx.get(f"{server.url}/v1/predictions/{request_id}/explanation{query}", timeout=60)


def _error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["code"] == code, err
    return str(err["message"])


def _attr(answer: dict[str, Any]) -> np.ndarray:
    return np.asarray(answer["attributions"], dtype=np.float32)


def test_integrated_gradients_of_a_batch_equal_the_librarys(serve: Callable[..., ModelServer]) -> None:
    server = serve()
    assert server.backend is not None and server.backend.format == "onnx"  # served by ONNX Runtime: no gradients there
    x = rows(3, seed=1)
    r = _explain(server, {"inputs": x.tolist(), "method": "ig", "steps": 32})
    assert r.status_code == 200, r.text
    answer = r.json()
    e = loopml.explain("mlp/1", x, method="integrated_gradients", steps=32)
    assert {k: answer[k] for k in ("model", "version", "method", "baseline", "evaluations", "format")} == {
        "model": "mlp", "version": 1, "method": "integrated_gradients", "baseline": "zeros", "evaluations": 32, "format": "torch"}
    assert answer["options"] == {"steps": 32}
    assert len(answer["results"]) == 3
    for i, res in enumerate(answer["results"]):
        np.testing.assert_array_equal(_attr(res), e.attributions[i])  # the same numbers
        assert res["delta"] == pytest.approx(float(e.delta[i]), abs=0)
        assert res["target_index"] == int(e.target[i]) and res["target"] == CLASSES[int(e.target[i])]
        # the prediction, as predict answers it (ONNX Runtime's probabilities), beside the attributions
        assert res["status"] == "ok" and res["prediction"] == CLASSES[int(np.argmax(res["probabilities"]))]
        assert res["top"] == e.row_dict(i)["top"]
    predicted = httpx.post(f"{server.url}/v1/models/mlp/predict", json={"inputs": x.tolist()}, timeout=30).json()
    assert [p["probabilities"] for p in predicted["results"]] == [res["probabilities"] for res in answer["results"]]


def test_one_row_answers_at_the_top_level_and_options_and_targets_pass_through(serve: Callable[..., ModelServer]) -> None:
    server = serve()
    x = rows(1, seed=2)[0]
    body = {"inputs": x.tolist(), "method": "occlusion", "window": [4], "stride": 2, "target": "7", "baseline": 0.5}
    r = _explain(server, body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert "results" not in answer and answer["request_id"] and answer["target"] == "7" and answer["target_index"] == 7
    e = loopml.explain("mlp/1", x[None], method="occlusion", window=[4], stride=2, target="7", baseline=0.5)
    np.testing.assert_array_equal(_attr(answer), e.attributions[0])
    assert answer["baseline"] == "constant 0.5" and answer["options"] == {"window": [4], "stride": [2]}
    # a .npy body takes the options in the query string
    buf = io.BytesIO()
    np.save(buf, x[None], allow_pickle=False)
    r = httpx.post(f"{server.url}/v1/models/mlp/explain?method=occlusion&window=4&stride=2&target=7&baseline=0.5",
                   content=buf.getvalue(), headers={"Content-Type": "application/x-npy"}, timeout=60)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(_attr(r.json()["results"][0]), e.attributions[0])


def test_saliency_is_answered_and_equals_the_librarys(serve: Callable[..., ModelServer]) -> None:
    server = serve()
    x = rows(2, seed=3)
    e = loopml.explain("mlp/1", x, method="saliency")
    for _ in range(2):  # the first loads the explainer (in the worker), the second runs on the loop
        r = _explain(server, {"inputs": x.tolist(), "method": "saliency"})
        assert r.status_code == 200, r.text
        assert [res["delta"] for res in r.json()["results"]] == [None, None]
        np.testing.assert_array_equal(np.array([_attr(res) for res in r.json()["results"]]), e.attributions)
    assert server.explanations is not None and server.explanations.loaded() == ["mlp/1"]
    checked = _explain(server, {"inputs": x.tolist(), "method": "ig", "check": True}).json()["results"]
    want = loopml.explain("mlp/1", x, method="ig", check=True).to_dict()["results"]
    assert [r["faithfulness"] for r in checked] == [w["faithfulness"] for w in want]  # the faithfulness check, asked for
    _error(_explain(server, {"inputs": x.tolist(), "method": "ig", "check": "yes"}), 422, "invalid_request")


def test_a_request_over_the_budget_is_refused_before_it_runs(serve: Callable[..., ModelServer]) -> None:
    server = serve(explain_budget=1000)
    x = rows(1, seed=4)
    message = _error(_explain(server, {"inputs": x.tolist(), "method": "integrated_gradients"}), 422, "over_budget")
    assert "3,200 (50 evaluations x 1 rows x 64 values)" in message and "budget of 1,000" in message, message
    assert "--explain-budget" in message and "saliency costs 64" in message, message
    assert server.explanations is not None and server.explanations.loaded() == []  # nothing was loaded, nothing queued
    assert _explain(server, {"inputs": x.tolist(), "method": "ig", "steps": 10}).status_code == 200  # 640: fits


def test_bad_requests_are_4xx_never_500(serve: Callable[..., ModelServer]) -> None:
    server = serve()
    one = rows(1)[0].tolist()
    msg = _error(_explain(server, {"inputs": [one], "method": "lime"}), 422, "invalid_request")
    assert "saliency, integrated_gradients, gradient_shap, deeplift, occlusion, feature_ablation" in msg, msg
    _error(_explain(server, {"inputs": [[1.0, 2.0]], "method": "saliency"}), 422, "invalid_input")
    _error(_explain(server, {"inputs": [one], "method": "ig", "steps": "many"}), 422, "invalid_request")
    _error(_explain(server, {"inputs": [one], "method": "ig", "steps": 0}), 422, "invalid_request")
    _error(_explain(server, {"inputs": [one], "method": "saliency", "steps": 5}), 422, "invalid_request")  # not its option
    _error(_explain(server, {"inputs": [one], "method": "occlusion", "window": "big"}), 422, "invalid_request")
    _error(_explain(server, {"inputs": [one], "method": "ig", "target": {"class": 3}}), 422, "invalid_request")
    _error(_explain(server, {"inputs": [one], "method": "ig", "target": 12}), 422, "cannot_explain")  # 10 classes
    _error(_explain(server, {"inputs": [one], "method": "ig", "baseline": [[1.0], [2.0, 3.0]]}), 422, "invalid_request")
    _error(_explain(server, {"inputs": [one], "method": "ig", "baseline": [0.0] * 3}), 422, "invalid_request")  # its shape
    _error(_explain(server, {"inputs": [one], "method": "ig", "baseline": "mean"}), 422, "cannot_explain")  # no reference
    _error(_explain(server, {"inputs": [one], "method": "ig", "colour": "red"}), 422, "invalid_request")
    _error(_explain(server, {"method": "ig"}), 422, "invalid_request")
    _error(httpx.post(f"{server.url}/v1/models/mlp/explain", content=b"{", headers={"Content-Type": "application/json"}), 400, "invalid_json")
    _error(httpx.post(f"{server.url}/v1/models/other/explain", json={"inputs": [one]}), 404, "not_found")
    _error(httpx.get(f"{server.url}/v1/models/mlp/explain"), 405, "method_not_allowed")
    _error(httpx.post(f"{server.url}/v1/predictions/abc/explanation"), 405, "method_not_allowed")
    _error(httpx.post(f"{server.url}/v1/models/mlp/explain?method=ig&steps=x", content=b"\x93NUMPY",
                      headers={"Content-Type": "application/x-npy"}), 400, "invalid_npy")
    buf = io.BytesIO()
    np.save(buf, np.asarray([one], dtype=np.float32), allow_pickle=False)
    for query in ("method=ig&steps=x", "method=ig&colour=red", "method=ig&steps=1&steps=2", "method=occlusion&window=a"):
        _error(httpx.post(f"{server.url}/v1/models/mlp/explain?{query}", content=buf.getvalue(),
                          headers={"Content-Type": "application/x-npy"}), 422, "invalid_request")


def test_an_abstaining_row_is_explained_with_its_ood_status(serve: Callable[..., ModelServer]) -> None:
    server = serve(gate=AbsGate())
    x = np.stack([rows(1, seed=9)[0], np.full(64, 8.0, dtype=np.float32)])  # the second is out of distribution
    answer = _explain(server, {"inputs": x.tolist(), "method": "saliency"}).json()
    inside, outside = answer["results"]
    assert inside["status"] == "ok" and outside["status"] == "abstain" and "ood_score" in outside
    assert outside["prediction"] is None and "probabilities" not in outside  # as predict answers an abstention
    np.testing.assert_array_equal(_attr(outside), loopml.explain("mlp/1", x, method="saliency").attributions[1])
    shown = _explain(server, {"inputs": x[1].tolist(), "method": "saliency", "include_prediction": True}).json()
    assert shown["status"] == "abstain" and shown["prediction"] in CLASSES


def test_the_routes_are_behind_the_token(serve: Callable[..., ModelServer]) -> None:
    server = serve(auth_token="s3cret")
    one = rows(1)[0].tolist()
    _error(_explain(server, {"inputs": [one], "method": "saliency"}), 401, "unauthorized")
    _error(_logged(server, "abc"), 401, "unauthorized")
    r = _explain(server, {"inputs": [one], "method": "saliency"}, headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200, r.text


def test_a_logged_request_is_explained_by_the_version_that_answered_it(serve: Callable[..., ModelServer]) -> None:
    server = serve(poll_interval=0.1)
    x = rows(3, seed=5)
    first = httpx.post(f"{server.url}/v1/models/mlp/predict", json={"inputs": x.tolist()}, timeout=30).json()
    # asked at once: the record may still be in the request log's buffer; the route flushes it
    r = _logged(server, first["request_id"], "?method=ig&row=2&steps=20")
    assert r.status_code == 200, r.text
    answer = r.json()
    e1 = loopml.explain("mlp/1", x[2:3], method="ig", steps=20)
    assert answer["version"] == 1 and answer["request_id"] == first["request_id"] and "results" not in answer
    np.testing.assert_array_equal(_attr(answer), e1.attributions[0])
    assert answer["prediction"] == first["results"][2]["prediction"]  # the logged answer beside the attributions
    assert answer["probabilities"] == first["results"][2]["probabilities"]
    whole = _logged(server, first["request_id"], "?method=saliency").json()  # no row: the whole batch
    np.testing.assert_array_equal(np.array([_attr(res) for res in whole["results"]]),
                                  loopml.explain("mlp/1", x, method="saliency").attributions)

    v2 = register_mlp(seed=7)
    loopml.models.set_alias("mlp", "production", v2)
    for _ in range(100_000):  # the follower polls every 0.1 s; the swap installs on the loop
        if httpx.get(f"{server.url}/ready", timeout=30).json()["version"] == v2:
            break
    second = httpx.post(f"{server.url}/v1/models/mlp/predict", json={"inputs": x[:1].tolist()}, timeout=30).json()
    assert second["version"] == v2
    old = _logged(server, first["request_id"], "?method=ig&row=0&steps=20").json()
    new = _logged(server, second["request_id"], "?method=ig&row=0&steps=20").json()
    assert (old["version"], new["version"]) == (1, v2)
    np.testing.assert_array_equal(_attr(old), loopml.explain("mlp/1", x[:1], method="ig", steps=20).attributions[0])
    np.testing.assert_array_equal(_attr(new), loopml.explain(f"mlp/{v2}", x[:1], method="ig", steps=20).attributions[0])
    assert not np.array_equal(_attr(old), _attr(new))
    # the served version is explained with the new model after the swap
    posted = _explain(server, {"inputs": x[:1].tolist(), "method": "ig", "steps": 20}).json()
    assert posted["version"] == v2
    np.testing.assert_array_equal(_attr(posted["results"][0]), _attr(new))
    assert server.explanations is not None and sorted(server.explanations.loaded()) == ["mlp/1", f"mlp/{v2}"]


def test_logged_request_errors(serve: Callable[..., ModelServer]) -> None:
    server = serve(log_inputs=0.0)
    _error(_logged(server, "no-such-request", "?method=ig"), 404, "not_found")
    answer = httpx.post(f"{server.url}/v1/models/mlp/predict", json={"inputs": rows(2).tolist()}, timeout=30).json()
    msg = _error(_logged(server, answer["request_id"], "?method=ig&row=0"), 409, "no_inputs")
    assert "--log-inputs" in msg, msg
    server.stop()
    server = serve(log_inputs=1.0)
    answer = httpx.post(f"{server.url}/v1/models/mlp/predict", json={"inputs": rows(2).tolist()}, timeout=30).json()
    rid = answer["request_id"]
    assert "0 to 1" in _error(_logged(server, rid, "?method=ig&row=2"), 422, "invalid_request")
    _error(_logged(server, rid, "?method=ig&row=-1"), 422, "invalid_request")
    _error(_logged(server, rid, "?method=ig&row=one"), 422, "invalid_request")
    _error(_logged(server, rid, "?method=lime"), 422, "invalid_request")
    _error(_logged(server, rid, "?method=ig&steps=100000"), 422, "invalid_request")
    _error(_logged(server, rid, "?method=ig&target=cat"), 422, "cannot_explain")
    _error(_logged(server, rid, "?method=ig&depth=3"), 422, "invalid_request")
    assert _logged(server, rid, "?method=ig&target=3&row=1").json()["target_index"] == 3


def test_a_version_stored_only_as_onnx_answers_occlusion_but_not_gradients(
        mlp_store: TrackingStore, serve: Callable[..., ModelServer]) -> None:
    v = register_mlp(seed=3, formats=("onnx",))
    assert set(loopml.models.get_version(f"mlp/{v}").files) & {"torch", "pt2"} == set()
    server = serve(ref=f"mlp/{v}")
    x = rows(2, seed=6)
    for method in ("integrated_gradients", "saliency", "gradient_shap", "deeplift"):
        msg = _error(_explain(server, {"inputs": x.tolist(), "method": method}), 422, "cannot_explain")
        assert "onnx" in msg and "occlusion" in msg, msg
    r = _explain(server, {"inputs": x.tolist(), "method": "occlusion"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["format"] == "onnx" and answer["version"] == v
    e = loopml.explain(f"mlp/{v}", x, method="occlusion")
    np.testing.assert_array_equal(np.array([_attr(res) for res in answer["results"]]), e.attributions)
    r = _explain(server, {"inputs": x.tolist(), "method": "feature_ablation", "feature_groups": [[0, 1, 2], [3]]})
    assert r.status_code == 200, r.text


def test_predictions_are_answered_while_integrated_gradients_runs(mlp_store: TrackingStore,
                                                                  serve: Callable[..., ModelServer]) -> None:
    torch.manual_seed(0)
    model = GatedMLP(hidden=16).eval()
    v = loopml.register(model, "mlp", input_example=torch.randn(8, 64), class_names=CLASSES, init_args={"hidden": 16},
                        formats=("onnx", "torch")).version
    server = serve(ref=f"mlp/{v}", explain_queue=2)
    x = rows(4, seed=8)
    ENTERED.clear()
    RELEASE.clear()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        try:
            ig = pool.submit(_explain, server, {"inputs": x.tolist(), "method": "ig", "steps": 16})
            assert ENTERED.wait(60), ig.result() if ig.done() else "the explanation never started"
            # the explanation thread is held inside the model: predictions keep being answered on the loop
            for i in range(20):
                p = httpx.post(f"{server.url}/v1/models/mlp/predict", json={"inputs": x[i % 4].tolist()}, timeout=30)
                assert p.status_code == 200 and p.json()["version"] == v, p.text
            assert not ig.done()
            queued = pool.submit(_explain, server, {"inputs": x.tolist(), "method": "ig", "steps": 16})
            for _ in range(10_000):  # the second takes the last place (explain_queue=2) as soon as the server reads it
                if server.explanations is not None and server.explanations.pending == 2:
                    break
                httpx.get(f"{server.url}/health", timeout=30)  # a round trip: the server's loop runs meanwhile
            assert server.explanations is not None and server.explanations.pending == 2
            full = _explain(server, {"inputs": x.tolist(), "method": "ig", "steps": 16})
            _error(full, 503, "overloaded")
            assert full.headers["retry-after"] == "1"
        finally:
            RELEASE.set()
        first, second = ig.result(), queued.result()
    assert first.status_code == 200 and second.status_code == 200, (first.text, second.text)
    e = loopml.explain(f"mlp/{v}", x, method="ig", steps=16)
    np.testing.assert_array_equal(np.array([_attr(res) for res in first.json()["results"]]), e.attributions)
    assert server.explanations.pending == 0


def test_saliency_is_answered_on_the_loop_while_the_worker_is_busy(mlp_store: TrackingStore,
                                                                  serve: Callable[..., ModelServer]) -> None:
    server = serve(poll_interval=0.1)
    x = rows(2, seed=10)
    first = httpx.post(f"{server.url}/v1/models/mlp/predict", json={"inputs": x.tolist()}, timeout=30).json()
    assert _logged(server, first["request_id"], "?method=saliency").status_code == 200  # mlp/1's explainer loaded
    torch.manual_seed(1)
    v = loopml.register(GatedMLP(hidden=16).eval(), "mlp", input_example=torch.randn(8, 64), class_names=CLASSES,
                        init_args={"hidden": 16}, formats=("onnx", "torch")).version
    loopml.models.set_alias("mlp", "production", v)
    for _ in range(100_000):
        if httpx.get(f"{server.url}/ready", timeout=30).json()["version"] == v:
            break
    ENTERED.clear()
    RELEASE.clear()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            ig = pool.submit(_explain, server, {"inputs": x.tolist(), "method": "ig", "steps": 8})
            assert ENTERED.wait(60), ig.result() if ig.done() else "the explanation never started"
            # the worker is held inside mlp/2's model: mlp/1's saliency is answered all the same, on the loop
            r = _logged(server, first["request_id"], "?method=saliency&row=1")
            assert r.status_code == 200 and r.json()["version"] == 1, r.text
            np.testing.assert_array_equal(_attr(r.json()), loopml.explain("mlp/1", x[1:], method="saliency").attributions[0])
            assert not ig.done()
        finally:
            RELEASE.set()
        assert ig.result().status_code == 200 and ig.result().json()["version"] == v


def test_the_openapi_document_describes_the_routes(serve: Callable[..., ModelServer]) -> None:
    server = serve()
    doc = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    post = doc["paths"]["/v1/models/{name}/explain"]["post"]
    props = post["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"inputs", "method", "steps", "target", "baseline", "window", "stride", "feature_groups"} <= set(props)
    assert "integrated_gradients" in props["method"]["enum"]
    get = doc["paths"]["/v1/predictions/{request_id}/explanation"]["get"]
    assert {p["name"] for p in get["parameters"]} >= {"request_id", "method", "row", "target", "steps"}
    assert {"404", "409", "422"} <= set(get["responses"])


def test_the_server_refuses_a_bad_budget() -> None:
    with pytest.raises(ValueError, match="explain_budget should be an int >= 1"):
        ModelServer("mlp@production", explain_budget=0)
    with pytest.raises(ValueError, match="explain_queue should be an int >= 1"):
        ModelServer("mlp@production", explain_queue=0)
    assert ModelServer("mlp@production").explain_budget == DEFAULT_BUDGET


def test_a_server_without_captum_says_it_cannot_explain(mlp_store: TrackingStore) -> None:
    # `loopml serve` in a Python where Captum cannot be imported (None in sys.modules stops an import)
    child = "import runpy, sys; sys.modules['captum'] = None; sys.argv = ['loopml', *sys.argv[1:]]; " \
            "runpy.run_module('loopml', run_name='__main__', alter_sys=True)"
    with serve_process([sys.executable, "-c", child, "serve", "mlp@production", "--port", "0"]) as (_, url, _ready):
        body = {"inputs": rows(1).tolist(), "method": "saliency"}
        r = httpx.post(f"{url}/v1/models/mlp/explain", json=body, timeout=60)
        assert "pip install 'loopml[explain]'" in _error(r, 501, "explain_unavailable")
        assert httpx.post(f"{url}/v1/models/mlp/predict", json={"inputs": body["inputs"]}, timeout=30).status_code == 200
