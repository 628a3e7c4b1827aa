"""The HTTP surface itself: one error shape, the security checks, the wire formats, page caps."""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount

from loopml.errors import ArgumentError, AuthError, StoreError
from loopml.server import create_app
from loopml.server.mlflow_wire import is_mlflow_path
from loopml.store import MAX_PAGE_SIZE, TrackingStore
from loopml.tracking.remote import RemoteStore, RemoteValueError

from .conftest import LiveServer

JSON = {"Content-Type": "application/json"}
OCTET = {"Content-Type": "application/octet-stream"}


def raw(
    server: LiveServer, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any] | None, bytes]:
    """Send ``target`` exactly as written (httpx would normalize '..' and re-encode).

    Returns the status, the parsed JSON body (None if not JSON) and the raw body.
    """
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        all_headers = {"Host": f"127.0.0.1:{server.port}", "Content-Length": str(len(body)), **(headers or {})}
        for k, v in all_headers.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        try:
            doc = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            doc = None
        return resp.status, doc, data
    finally:
        conn.close()


def assert_error(response: httpx.Response, status: int, code: str, message: str = "") -> dict[str, Any]:
    """The one error shape: exactly {"error": {"code", "message"}}, JSON, no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert set(doc) == {"error"} and set(doc["error"]) == {"code", "message"}
    assert doc["error"]["code"] == code
    assert isinstance(doc["error"]["message"], str) and doc["error"]["message"]
    assert "Traceback" not in response.text and "<html" not in response.text.lower()
    if message:
        assert re.search(message, doc["error"]["message"]), doc["error"]["message"]
    return doc


@pytest.fixture
def client(sqlite_server: LiveServer) -> httpx.Client:
    with httpx.Client(base_url=sqlite_server.url) as c:
        yield c


@pytest.fixture
def run_id(client: httpx.Client) -> str:
    r = client.post("/api/v1/runs", json={"experiment": "http"})
    assert r.status_code == 201
    return r.json()["id"]


# -- one error shape ------------------------------------------------------


def test_every_error_has_one_json_shape(client: httpx.Client, run_id: str) -> None:
    assert_error(client.get("/no/such/route"), 404, "not_found", "No route GET /no/such/route")
    assert_error(client.get("/api/v1/runs/" + "0" * 32), 404, "not_found", "does not exist")
    assert_error(client.delete("/health", headers=JSON), 405, "method_not_allowed")
    assert_error(client.post("/api/v1/runs", json={"experiment": "x", "bogus": 1}), 422, "invalid_request", "bogus")
    assert_error(client.get("/api/v1/runs", params={"limit": "many"}), 422, "invalid_request", "limit")
    assert_error(client.post("/api/v1/runs", content=b"{not json", headers=JSON), 400, "invalid_json")
    # a body cut off in the middle, on both kinds of route
    assert_error(client.post("/api/v1/runs", content=b'{"experiment": "tru', headers=JSON), 400, "invalid_json")
    assert_error(client.post("/api/v1/metrics", content=b'{"run_ids": ["a"], "st', headers=JSON), 400, "invalid_json")
    assert_error(client.post("/api/v1/metrics", content=b"", headers=JSON), 400, "invalid_json")
    assert_error(
        client.post("/api/v1/experiments", json={"name": "a..b"}), 400, "bad_request", "should not contain '..'"
    )
    assert_error(client.get("/api/v1/runs", params={"filter": "metrics.acc >> 1"}), 400, "invalid_filter", r"\n\s+\^")
    assert_error(
        client.post("/api/v1/runs", content=b"{}", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert_error(
        client.get(f"/api/v1/runs/{run_id}/artifacts", params={"prefix": "../x"}), 400, "invalid_artifact_path"
    )


def test_a_body_shorter_than_its_content_length_is_refused(sqlite_server: LiveServer) -> None:
    # The client says 100 bytes, sends 20 and stops: the server must not hang or store half a run.
    import socket

    with socket.create_connection(("127.0.0.1", sqlite_server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"experiment": "cut'
        )
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert b"201" not in answer.split(b"\r\n", 1)[0]
    assert httpx.get(f"{sqlite_server.url}/api/v1/runs/count").json() == {"count": 0}


class _FailingStore(TrackingStore):
    """A real store whose listing fails the way a locked database or a bug would."""

    error: BaseException = RuntimeError("boom: secret internals")

    def list_experiments(self) -> Any:
        raise self.error


def test_store_errors_and_bugs_keep_the_shape(tmp_path: Path, live_server: Callable[..., LiveServer]) -> None:
    st = _FailingStore(f"sqlite:///{tmp_path / 'f.db'}", artifact_root=tmp_path / "a")
    srv = live_server(create_app(st))
    remote = RemoteStore(srv.url)
    doc = assert_error(httpx.get(f"{srv.url}/api/v1/experiments"), 500, "internal_error", "RuntimeError")
    assert "secret internals" not in doc["error"]["message"]
    with pytest.raises(StoreError, match="Internal server error") as info:
        remote.list_experiments()
    assert info.value.transient is False  # a bug: retrying will not help, the writer surfaces it

    st.error = StoreError(
        "The store failed: OperationalError: database is locked\n[SQL: SELECT secret]", transient=True
    )
    doc = assert_error(httpx.get(f"{srv.url}/api/v1/experiments"), 503, "store_unavailable", "database is locked")
    assert "SELECT" not in doc["error"]["message"]
    with pytest.raises(StoreError, match="database is locked") as info:
        remote.list_experiments()
    assert info.value.transient is True  # the writer keeps the batch and retries

    st.error = StoreError("The store failed: IntegrityError: CHECK constraint failed")
    assert_error(httpx.get(f"{srv.url}/api/v1/experiments"), 500, "store_error", "IntegrityError")
    with pytest.raises(StoreError, match="IntegrityError") as info:
        remote.list_experiments()
    assert info.value.transient is False

    # a TypeError or ValueError from loopml's own code is a bug, never a client's bad request
    for bug in (TypeError("unsupported operand type(s) for +: 'int' and 'str'"), ValueError("too many values to unpack")):
        st.error = bug
        doc = assert_error(httpx.get(f"{srv.url}/api/v1/experiments"), 500, "internal_error", type(bug).__name__)
        assert "unsupported operand" not in doc["error"]["message"]
    st.error = ArgumentError("Argument name should not be empty")
    assert_error(httpx.get(f"{srv.url}/api/v1/experiments"), 400, "bad_request", "should not be empty")
    remote.close()
    st.close()


def test_openapi_describes_the_api(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert "/api/v1/metrics" in spec["paths"] and "/api/v1/runs/{run_id}/artifacts/{path}" in spec["paths"]
    assert client.get("/docs").status_code == 200
    assert client.get("/health").json()["status"] == "ok"


# -- Host header (DNS rebinding) -------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}"])
def test_loopback_host_headers_are_accepted(sqlite_server: LiveServer, host: str) -> None:
    status, doc, _ = raw(sqlite_server, "GET", "/health", headers={"Host": host.format(port=sqlite_server.port)})
    assert status == 200 and doc is not None and doc["status"] == "ok"


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:{port}",
        "127.0.0.1.evil.example",
        "localhost.evil.example:{port}",
        "",
        "[::1",
        "a:b:c",
    ],
)
def test_other_host_headers_are_refused(sqlite_server: LiveServer, host: str) -> None:
    for method, path in (("GET", "/api/v1/experiments"), ("GET", "/api/v1/predictions/x/explanation"),
                         ("POST", "/api/v1/models/m/versions/1/explain"), ("GET", "/ui/api/predictions/m")):
        status, doc, _ = raw(sqlite_server, method, path, body=b"{}",
                             headers={"Host": host.format(port=sqlite_server.port), **JSON})
        assert status == 400 and doc is not None and doc["error"]["code"] == "invalid_host", (method, path)


def test_allowed_hosts_extend_the_list(sqlite_store: TrackingStore, live_server: Callable[..., LiveServer]) -> None:
    srv = live_server(create_app(sqlite_store, allowed_hosts=["tracking.internal", "other.internal:8080"]))
    assert raw(srv, "GET", "/health", headers={"Host": "tracking.internal:1234"})[0] == 200
    assert raw(srv, "GET", "/health", headers={"Host": "other.internal:8080"})[0] == 200
    assert raw(srv, "GET", "/health", headers={"Host": "other.internal:8081"})[0] == 400
    assert raw(srv, "GET", "/health", headers={"Host": "evil.example"})[0] == 400
    anyhost = live_server(create_app(sqlite_store, allowed_hosts=["*"]))
    assert raw(anyhost, "GET", "/health", headers={"Host": "whatever.example"})[0] == 200
    with pytest.raises(ValueError, match="allowed_hosts"):
        create_app(sqlite_store, allowed_hosts=["http://bad/"])


# -- content types (CSRF) ---------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
    ],
)
def test_state_changing_requests_must_be_json(client: httpx.Client, run_id: str, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    body = b'{"experiment": "csrf"}'
    assert_error(client.post("/api/v1/runs", content=body, headers=headers), 415, "unsupported_media_type")
    assert_error(
        client.post(f"/api/v1/runs/{run_id}/tags", content=b'{"tags": {"a": "b"}}', headers=headers),
        415,
        "unsupported_media_type",
    )
    assert_error(client.delete(f"/api/v1/runs/{run_id}/artifacts/x", headers=headers), 415, "unsupported_media_type")
    explain = b'{"inputs": [[0.0]], "method": "saliency"}'  # a cross-site form cannot make the server load and run a model
    assert_error(client.post("/api/v1/models/m/versions/1/explain", content=explain, headers=headers), 415, "unsupported_media_type")
    assert client.get("/api/v1/runs/count").json() == {"count": 1}  # nothing was created
    assert client.get(f"/api/v1/runs/{run_id}").json()["tags"] == {}


def test_uploads_take_octet_stream_only(client: httpx.Client, run_id: str) -> None:
    url = f"/api/v1/runs/{run_id}/artifacts/a.txt"
    assert_error(client.put(url, content=b"x", headers=JSON), 415, "unsupported_media_type", "application/octet-stream")
    assert_error(client.put(url, content=b"x", headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type")
    r = client.put(url, content=b"x", headers=OCTET)
    assert r.status_code == 201 and r.json()["path"] == "a.txt" and r.json()["size"] == 1


def test_json_bodies_over_the_limit_are_refused(
    sqlite_store: TrackingStore, live_server: Callable[..., LiveServer]
) -> None:
    srv = live_server(create_app(sqlite_store, max_json_body=1000))
    big = orjson.dumps({"experiment": "x" * 2000})
    assert_error(httpx.post(f"{srv.url}/api/v1/runs", content=big, headers=JSON), 413, "payload_too_large")
    # without a Content-Length (chunked), counted while read
    r = httpx.post(f"{srv.url}/api/v1/metrics", content=iter([big]), headers=JSON)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


# -- the bearer token -------------------------------------------------------


def _fill(path: str) -> str:
    return re.sub(r"\{(\w+)(:path)?\}", lambda m: "a/b.txt" if m.group(2) else "0" * 32, path)


def all_routes(app: Any) -> list[tuple[str | None, set[str] | None, Any]]:
    """(path, methods, route) of every route, also those of included routers."""
    try:  # FastAPI >= 0.16x keeps included routers as one lazy route each
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return [(getattr(r, "path", None), getattr(r, "methods", None), r) for r in app.routes]
    return [(c.path, c.methods, c.original_route) for c in iter_route_contexts(app.routes)]


def test_every_route_needs_the_token(sqlite_store: TrackingStore, live_server: Callable[..., LiveServer]) -> None:
    app = create_app(sqlite_store, auth_token="s3cret-token")
    srv = live_server(app)
    routes = all_routes(app)
    assert len(routes) >= 20  # the walk below cannot pass by walking nothing
    api_routes = {path for path, _m, r in routes if isinstance(r, APIRoute)}
    assert {"/api/v1/metrics", "/api/v1/runs/{run_id}/artifacts/{path:path}", "/health"} <= api_routes
    assert {"/api/v1/models/{name}/versions/{ref}/explain", "/api/v1/predictions/{request_id}/explanation"} <= api_routes
    assert {"/ui/api/predictions/{name}", "/ui/api/models/{name}/versions/{version}/explain"} <= {p for p, _m, _r in routes}
    assert {"/docs", "/openapi.json"} <= {path for path, _m, _r in routes}
    mlflow_paths = {"/api/2.0/mlflow/runs/log-batch", "/api/2.0/mlflow/runs/search", "/api/2.0/mlflow/metrics/get-history"}
    assert mlflow_paths | {"/api/2.0/mlflow/experiments/get-by-name"} <= api_routes  # MLflow's REST API: behind the token too
    # The only routes a GET reaches without the token: the web UI's HTML shells and
    # static files, which hold no data (docs/ui.md). Adding one here is a decision.
    public = {
        "/", "/ui/", "/ui/runs", "/ui/run", "/ui/compare", "/ui/static/{path:path}", "/ui/vendor/plotly.min.js",
        "/ui/models", "/ui/model", "/ui/monitoring", "/ui/labeling", "/ui/predictions",
    }  # fmt: skip
    assert public <= {path for path, _m, _r in routes}
    checked = 0
    with httpx.Client(base_url=srv.url) as c:
        for path, methods, route in routes:
            assert path is not None, f"a route without a path: {route!r}; teach this test to reach it"
            if isinstance(route, Mount):  # a mounted app (static files, UI): any path under it
                path = path.rstrip("/") + "/x"
            for method in sorted(methods or ("GET", "POST", "PUT", "DELETE")):
                if path in public and method in ("GET", "HEAD"):
                    r = c.request(method, _fill(path).replace("a/b.txt", "ui.css"))
                    assert r.status_code in (200, 307), (method, path, r.status_code)
                    continue
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
                    r = c.request(method, _fill(path), headers={**JSON, **headers}, content=b"{}")
                    assert r.status_code == 401, (method, path, r.status_code)
                    assert r.headers["www-authenticate"] == "Bearer"
                    if method != "HEAD" and is_mlflow_path(path):  # MLflow's client reads MLflow's shape
                        assert r.json()["error_code"] == "UNAUTHENTICATED"
                    elif method != "HEAD":
                        assert r.json()["error"]["code"] == "unauthorized"
                checked += 1
        assert_error(c.get("/not/a/route"), 401, "unauthorized")  # unknown paths reveal nothing either
    assert checked >= 20

    with httpx.Client(base_url=srv.url, headers={"Authorization": "Bearer s3cret-token"}) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/openapi.json").status_code == 200
        assert c.post("/api/v1/runs", json={"experiment": "auth"}).status_code == 201
    with pytest.raises(AuthError, match="Bearer"):
        RemoteStore(srv.url).list_experiments()
    with pytest.raises(AuthError):
        RemoteStore(srv.url, token="wrong").list_experiments()
    good = RemoteStore(srv.url, token="s3cret-token")
    assert [e.name for e in good.list_experiments()] == ["auth"]
    good.close()


def test_the_module_api_sends_the_token(
    sqlite_store: TrackingStore, live_server: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    import loopml

    from .conftest import forget_http_backends

    srv = live_server(create_app(sqlite_store, auth_token="tok"))
    monkeypatch.setenv("LOOPML_TRACKING_URI", srv.url)
    monkeypatch.setenv("LOOPML_TRACKING_TOKEN", "tok")
    try:
        with loopml.start_run(experiment="tok") as run:
            run.log({"x": 1.0})
        assert sqlite_store.history(run.id, "x").values.tolist() == [1.0]
    finally:
        forget_http_backends()


# -- artifact paths ---------------------------------------------------------

TRAVERSALS = [
    "../x",
    "../../x",
    "a/../../x",
    "..%5Cx",  # ..\x
    "a%5C..%5C..%5Cx",
    "%2e%2e/x",
    "%2e%2e%2fx",
    "%252e%252e/x",
    "%252e%252e%252fx",
    "%25252e%25252e/x",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "C:%5Cwindows",
    "..",
    "link/pwned.txt",  # through a planted symlink to a folder outside
    "filelink",  # a planted symlink to a file outside
]


@pytest.fixture
def planted(sqlite_store: TrackingStore, run_id: str, tmp_path: Path) -> Path:
    """A folder outside the artifact root, reachable through symlinks planted in the run's folder."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    run_dir = sqlite_store.artifacts.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "link").symlink_to(outside, target_is_directory=True)
    (run_dir / "filelink").symlink_to(outside / "secret.txt")
    return outside


@pytest.mark.parametrize("path", TRAVERSALS)
def test_artifact_paths_cannot_escape(
    sqlite_server: LiveServer, run_id: str, planted: Path, tmp_path: Path, path: str
) -> None:
    base = f"/api/v1/runs/{run_id}/artifacts"
    attempts = [
        ("PUT", f"{base}/{path}", b"pwned", OCTET),
        ("GET", f"{base}/{path}", b"", {}),
        ("DELETE", f"{base}/{path}", b"", JSON),
        ("GET", f"{base}?prefix={path}", b"", {}),
    ]
    for method, target, body, headers in attempts:
        status, doc, data = raw(sqlite_server, method, target, body, headers)
        assert status == 400, (method, target, status, data[:200])
        assert doc is not None and doc["error"]["code"] == "invalid_artifact_path", (method, target, doc)
        assert b"secret" not in data
    # nothing outside the artifact root was written, read into a file, or deleted
    assert sorted(p.name for p in planted.iterdir()) == ["secret.txt"]
    assert (planted / "secret.txt").read_text() == "secret"
    for f in tmp_path.rglob("*"):
        if f.is_file() and not f.is_symlink():
            assert f.read_bytes() != b"pwned", f


def test_a_run_id_cannot_name_a_folder(sqlite_server: LiveServer) -> None:
    for run in ("..", "%2e%2e", "a.b"):
        status, doc, _ = raw(sqlite_server, "PUT", f"/api/v1/runs/{run}/artifacts/x.txt", b"pwned", OCTET)
        assert status == 400 and doc is not None and doc["error"]["code"] == "invalid_artifact_path", (run, doc)


def test_artifact_round_trip_over_raw_http(client: httpx.Client, run_id: str) -> None:
    url = f"/api/v1/runs/{run_id}/artifacts/dir/page.html"
    html = b"<script>alert(document.cookie)</script>"
    assert client.put(url, content=html, headers=OCTET).status_code == 201
    r = client.get(url)
    assert r.content == html
    # served as a download that a browser never renders (stored XSS)
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith("attachment")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get(f"/api/v1/runs/{run_id}/artifacts").json()["artifacts"][0]["path"] == "dir/page.html"
    assert client.delete(url, headers=JSON).status_code == 204
    assert_error(client.get(url), 404, "not_found")


# -- page sizes -------------------------------------------------------------


def test_page_sizes_are_capped(client: httpx.Client) -> None:
    assert_error(client.get("/api/v1/runs", params={"limit": MAX_PAGE_SIZE + 1}), 400, "bad_request", "limit should be")
    assert_error(client.get("/api/v1/runs", params={"limit": 0}), 400, "bad_request", "limit should be")
    assert_error(client.get("/api/v1/runs", params={"offset": -1}), 400, "bad_request", "offset should be")
    assert client.get("/api/v1/runs", params={"limit": MAX_PAGE_SIZE}).status_code == 200
    r = client.post("/api/v1/heartbeat", json={"run_ids": ["a"] * (MAX_PAGE_SIZE + 1)})
    assert_error(r, 422, "invalid_request", "run_ids")


# -- the metrics batch -------------------------------------------------------


def test_a_columnar_batch_for_several_runs(client: httpx.Client, run_id: str, sqlite_store: TrackingStore) -> None:
    other = client.post("/api/v1/runs", json={"experiment": "http"}).json()["id"]
    batch = {
        "run_ids": [run_id, other],
        "keys": ["loss", "acc"],
        "run": [0, 0, 1, 1],
        "key": [0, 1, 0, 0],
        "steps": [0, 0, 0, 1],
        "timestamps": [1.5, 1.5, 2, 3],
        "values": [0.5, "NaN", "Infinity", 7],
    }
    r = client.post("/api/v1/metrics", json=batch)
    assert r.status_code == 200 and r.json() == {"count": 4}
    h = sqlite_store.history(other, "loss")
    assert h.values.tolist() == [float("inf"), 7.0] and h.timestamps.tolist() == [2.0, 3.0]
    assert sqlite_store.metric_keys(run_id) == ["acc", "loss"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"values": [True]}, "value should be a number"),
        ({"values": ["nan"]}, "value should be a number"),
        ({"values": [None]}, "value should be a number"),
        ({"steps": [1.0]}, "step should be an integer"),
        ({"steps": [2**63]}, "step should be an integer"),
        ({"steps": ["1"]}, "step should be an integer"),
        ({"timestamps": ["now"]}, "timestamp should be a number"),
        ({"timestamps": [1.0, 2.0]}, "same length"),
        ({"keys": ["a..b"]}, "should not contain '..'"),
        ({"keys": [""]}, "non-empty"),
        ({"keys": ["a", "b"]}, "'key' of the metrics batch should be an array"),
        ({"keys": ["a", "b"], "key": [2]}, "integers from 0 to 1"),
        ({"run_ids": ["x" * 33]}, "run ids"),
        ({"extra": 1}, "unknown fields: extra"),
        ({"steps": 5}, "'steps' of the metrics batch should be an array"),
    ],
)
def test_bad_batches_are_refused_with_the_field_named(
    client: httpx.Client, run_id: str, change: dict[str, Any], message: str
) -> None:
    batch = {"run_ids": [run_id], "keys": ["loss"], "steps": [0], "timestamps": [1.0], "values": [0.5], **change}
    assert_error(client.post("/api/v1/metrics", json=batch), 400, "bad_request", message)
    assert client.get(f"/api/v1/runs/{run_id}/metrics").json() == {"keys": []}


def test_batches_for_unknown_runs_or_too_large_are_refused(client: httpx.Client, run_id: str) -> None:
    batch = {
        "run_ids": [run_id, "f" * 32],
        "keys": ["x"],
        "run": [0, 1],
        "steps": [0, 0],
        "timestamps": [1, 1],
        "values": [1, 2],
    }
    assert_error(client.post("/api/v1/metrics", json=batch), 404, "not_found", "f" * 32)
    assert client.get(f"/api/v1/runs/{run_id}/history", params={"key": "x"}).json()["values"] == []  # all or nothing
    n = 100_001
    big = {"run_ids": [run_id], "keys": ["x"], "steps": [0] * n, "timestamps": [1.0] * n, "values": [1.0] * n}
    assert_error(client.post("/api/v1/metrics", json=big), 400, "bad_request", "at most 100000 points")
    with pytest.raises(RemoteValueError, match="step should be an integer") as info:
        RemoteStore(str(client.base_url)).log_metrics([(run_id, "x", 1.5, 1.0, 1.0)])  # type: ignore[list-item]
    assert info.value.code == "bad_request" and info.value.status == 400


def test_heartbeat_uses_the_server_clock(client: httpx.Client, run_id: str, sqlite_store: TrackingStore) -> None:
    before = time.time()
    assert client.post("/api/v1/heartbeat", json={"run_ids": [run_id]}).status_code == 204
    assert sqlite_store.get_run(run_id).heartbeat_at >= before
    assert_error(client.post("/api/v1/heartbeat", json={"run_ids": [run_id], "at": 9e18}), 422, "invalid_request")
