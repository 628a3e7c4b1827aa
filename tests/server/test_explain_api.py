"""The tracking server's explanation routes against loopml.explain on the same version and inputs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.deps import need

need("captum.attr", extra="explain")

import loopml  # noqa: E402
from loopml.server import create_app  # noqa: E402
from loopml.server.routes_explain import ExplainerCache  # noqa: E402

from .conftest import LiveServer  # noqa: E402
from .explained import DIGITS, SHOP_CLASSES, SHOP_FEATURES, Explained  # noqa: E402

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Explained]:
    s = Explained(tmp_path_factory.mktemp("explain-api"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def server(site: Explained) -> Iterator[LiveServer]:
    srv = LiveServer(create_app(site.store))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def _error(r: httpx.Response, status: int, code: str, text: str = "") -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert text.lower() in body["error"]["message"].lower(), body
    return str(body["error"]["message"])


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency", "gradient_shap", "occlusion"])
def test_a_version_explains_like_loopml_explain(site: Explained, client: httpx.Client, method: str) -> None:
    x = site.images[:3]
    r = client.post("/api/v1/models/digits/versions/latest/explain", json={"inputs": x.tolist(), "method": method})
    assert r.status_code == 200, r.text
    body = r.json()
    want = loopml.explain("digits/1", x, method=method, tracking_uri=site.uri)
    assert (body["model"], body["version"], body["method"], body["baseline"]) == ("digits", 1, method, "zeros")
    assert body["evaluations"] == want.evaluations and body["format"] == "torch"
    got = np.array([row["attributions"] for row in body["results"]], dtype=np.float32)
    np.testing.assert_allclose(got, want.attributions, atol=1e-6, rtol=1e-5)
    assert want.target is not None
    for i, row in enumerate(body["results"]):
        assert row["target_index"] == int(want.target[i]) and row["target"] == DIGITS[int(want.target[i])]
        assert row["status"] == "ok" and row["prediction"] == row["target"]  # None explains the predicted class
        assert len(row["probabilities"]) == 10 and abs(sum(row["probabilities"]) - 1) < 1e-6
        assert (row["delta"] is None) == (want.delta is None)
        if want.delta is not None:
            assert row["delta"] == pytest.approx(float(want.delta[i]), abs=1e-6)
        assert {"positive", "negative"} == set(row["top"])


def test_one_row_answers_at_the_top_level_and_options_reach_the_method(site: Explained, client: httpx.Client) -> None:
    x = site.rows[0]
    r = client.post("/api/v1/models/shop/versions/1/explain",
                    json={"inputs": x.tolist(), "method": "ig", "steps": 16, "target": "leaves", "baseline": "zeros"})
    assert r.status_code == 200, r.text
    body = r.json()
    want = loopml.explain("shop/1", x[None], method="ig", steps=16, target="leaves", tracking_uri=site.uri)
    assert "results" not in body and body["target"] == "leaves" and body["target_index"] == 1
    assert body["options"] == {"steps": 16} and body["evaluations"] == 16
    np.testing.assert_allclose(body["attributions"], want.attributions[0], atol=1e-6)
    features = [e["feature"] for e in body["top"]["positive"] + body["top"]["negative"]]
    assert features and set(features) <= set(SHOP_FEATURES)
    assert body["prediction"] in SHOP_CLASSES
    checked = client.post("/api/v1/models/shop/versions/1/explain", json={"inputs": x.tolist(), "method": "ig", "check": True})
    want = loopml.explain("shop/1", x[None], method="ig", check=True, tracking_uri=site.uri).to_dict()["results"][0]
    assert checked.json()["faithfulness"] == want["faithfulness"]  # the faithfulness check, asked for
    logged = client.get("/api/v1/predictions/digits-002/explanation", params={"method": "saliency", "row": 0, "check": "true"})
    assert logged.json()["faithfulness"]["removed"] == 6  # 10% of the 64 pixels


def test_a_logged_request_is_explained_by_the_version_that_answered_it(site: Explained, client: httpx.Client) -> None:
    r = client.get("/api/v1/predictions/digits-002/explanation", params={"method": "saliency", "row": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    x = site.logged("digits-002")
    want = loopml.explain("digits/1", x, method="saliency", tracking_uri=site.uri)
    np.testing.assert_allclose(body["attributions"], want.attributions[0], atol=1e-6)
    assert body["request_id"] == "digits-002" and body["version"] == 1 and body["rows"] == 1
    assert body["input"] == x[0].astype(np.float64).tolist()  # the logged row, for drawing it
    logged = site.records["digits-002"]
    assert body["ood_score"] is None or isinstance(body["ood_score"], float)
    assert body["prediction"] == __import__("json").loads(logged["outputs"])["prediction"]

    batch = client.get(f"/api/v1/predictions/{site.batch_id}/explanation",
                       params={"method": "integrated_gradients", "steps": 8, "target": "3"}).json()
    want = loopml.explain("digits/1", site.logged(site.batch_id), method="ig", steps=8, target="3", tracking_uri=site.uri)
    assert [row["row"] for row in batch["results"]] == [0, 1, 2] and all(row["target"] == "3" for row in batch["results"])
    np.testing.assert_allclose([row["attributions"] for row in batch["results"]], want.attributions, atol=1e-6)
    occl = client.get("/api/v1/predictions/digits-000/explanation", params={"method": "occlusion", "window": "1,2,2", "stride": "1,2,2"})
    assert occl.status_code == 200 and occl.json()["results"][0]["row"] == 0 and occl.json()["options"]["window"] == [1, 2, 2]


def test_bad_requests_get_clear_errors(site: Explained, client: httpx.Client) -> None:
    url = "/api/v1/models/digits/versions/1/explain"
    one = site.images[:1].tolist()
    msg = _error(client.post(url, json={"inputs": one, "method": "lime"}), 400, "bad_request", "method")
    assert "integrated_gradients" in msg  # the methods are listed
    _error(client.post(url, json={"inputs": one, "method": "saliency", "steps": 5}), 400, "bad_request", "steps")
    _error(client.post(url, json={"inputs": one, "bogus": 1}), 422, "invalid_request", "bogus")
    _error(client.post(url, json={"inputs": [[1.0, 2.0]]}), 400, "bad_request")  # a shape the signature refuses
    _error(client.post(url, json={"inputs": one, "target": "eleven"}), 422, "cannot_explain", "target")
    _error(client.post(url, json={"inputs": one, "baseline": "mean"}), 422, "cannot_explain", "mean")
    _error(client.post(url, content=b'{"inputs": []}', headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type")
    _error(client.post("/api/v1/models/nope/versions/1/explain", json={"inputs": one}), 404, "not_found")
    _error(client.post("/api/v1/models/digits/versions/9/explain", json={"inputs": one}), 404, "not_found")

    _error(client.get("/api/v1/predictions/no-such-id/explanation"), 404, "not_found", "no-such-id")
    _error(client.get("/api/v1/predictions/digits-003/explanation"), 409, "no_inputs", "not logged")
    _error(client.get("/api/v1/predictions/digits-002/explanation", params={"row": 1}), 422, "invalid_request", "row")
    _error(client.get("/api/v1/predictions/digits-002/explanation", params={"row": -1}), 422, "invalid_request", "row")
    _error(client.get("/api/v1/predictions/digits-002/explanation", params={"row": "x"}), 422, "invalid_request", "row")
    _error(client.get("/api/v1/predictions/digits-002/explanation", params={"method": "nope"}), 400, "bad_request", "method")
    _error(client.get("/api/v1/predictions/digits-002/explanation", params={"method": "occlusion", "window": "a,b"}), 400, "bad_request", "window")
    _error(client.get("/api/v1/predictions/digits-002/explanation", params={"baseline": "nan"}), 400, "bad_request", "baseline")


def test_the_budget_refuses_a_costly_explanation(site: Explained, tmp_path: Path) -> None:
    srv = LiveServer(create_app(site.store, explain_budget=64 * 10))
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            one = site.images[:1].tolist()
            msg = _error(c.post("/api/v1/models/digits/versions/1/explain", json={"inputs": one, "method": "ig", "steps": 50}),
                         422, "over_budget", "budget of 640")
            assert "3,200" in msg  # the cost: 50 steps x 1 row x 64 values
            assert c.post("/api/v1/models/digits/versions/1/explain", json={"inputs": one, "method": "saliency"}).status_code == 200
            _error(c.get("/api/v1/predictions/digits-000/explanation", params={"method": "ig"}), 422, "over_budget")
    finally:
        srv.stop()
    with pytest.raises(loopml.errors.ArgumentError, match="explain_budget"):
        create_app(site.store, explain_budget=0)


def test_the_explainer_cache_is_bounded_and_loads_a_version_once(site: Explained) -> None:
    cache = ExplainerCache(keep=1)
    digits, shop = site.registry.get_version("digits", 1), site.registry.get_version("shop", 1)
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(site.registry, digits))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(e) for e in got}) == 1 and cache.loaded() == [("digits", 1)]
    cache.get(site.registry, shop)
    assert cache.loaded() == [("shop", 1)]  # the least recently used dropped
