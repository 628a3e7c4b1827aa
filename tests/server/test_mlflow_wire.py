"""Every error under the MLflow prefixes answers in MLflow's shape, whoever made it.

MLflow's client reads ``{"error_code", "message"}``: it creates an experiment on
``RESOURCE_DOES_NOT_EXIST`` and retries every 5xx seven times, so the shape and
the status both matter (loopml.server.mlflow_wire).
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from loopml.server import create_app
from loopml.server.mlflow_wire import mlflow_error_body
from loopml.store import TrackingStore

from .conftest import LiveServer


def test_errors_under_the_mlflow_prefixes_use_mlflows_shape(
    sqlite_store: TrackingStore, live_server: Callable[..., LiveServer]
) -> None:
    srv = live_server(create_app(sqlite_store, auth_token="tok"))
    with httpx.Client(base_url=srv.url) as c:
        r = c.get("/api/2.0/mlflow/experiments/get", params={"experiment_id": "1"})
        assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED" and "Bearer" in r.json()["message"]
        auth = {"Authorization": "Bearer tok"}
        r = c.get("/api/2.0/mlflow/no/such/route", headers=auth)
        assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND"
        r = c.post("/api/2.0/mlflow/runs/create", headers={**auth, "Content-Type": "text/plain"}, content=b"{}")
        assert r.status_code == 415 and r.json()["error_code"] == "BAD_REQUEST"
        assert "application/json" in r.json()["message"]
        r = c.get("/api/2.0/mlflow-artifacts/no/such", headers={**auth, "Host": "evil.example"})
        assert r.status_code == 400 and r.json()["error_code"] == "BAD_REQUEST"
        # loopml's own routes keep loopml's shape
        r = c.get("/api/v1/no/such/route", headers=auth)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_loopml_codes_map_to_mlflow_codes_and_statuses() -> None:
    def shaped(status: int, code: str, message: str = "m") -> tuple[int, dict[str, str]]:
        s, body = mlflow_error_body(status, httpx.Response(200, json={"error": {"code": code, "message": message}}).content)
        return s, httpx.Response(200, content=body).json()

    assert shaped(404, "not_found") == (404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "m"})
    assert shaped(409, "conflict") == (400, {"error_code": "RESOURCE_ALREADY_EXISTS", "message": "m"})
    assert shaped(422, "invalid_request") == (400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "m"})
    assert shaped(400, "INVALID_STATE") == (500, {"error_code": "INVALID_STATE", "message": "m"})
    assert shaped(503, "store_unavailable")[1]["error_code"] == "TEMPORARILY_UNAVAILABLE"
    # a body that is not loopml's shape still becomes MLflow's
    s, body = mlflow_error_body(500, b"Internal Server Error")
    assert s == 500 and httpx.Response(200, content=body).json()["error_code"] == "INTERNAL_ERROR"
