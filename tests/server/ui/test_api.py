"""The UI's JSON endpoints, its pages' headers and its auth, over a real server."""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable

import httpx
import numpy as np
import pytest

from loopml.server import create_app
from loopml.store import TrackingStore

from ..conftest import LiveServer

XSS = "<script>alert(1)</script>"


def _fill(store: TrackingStore, n: int = 250) -> list[str]:
    ids = []
    now = time.time()
    for i in range(n):
        r = store.create_run(
            experiment="grid",
            name=f"run-{i:03d}",
            params={"lr": f"{(i % 7) / 100:.2f}", "opt": "adam" if i % 2 else "sgd", "layers": str(i % 5)},
            start_time=now + i,
        )
        store.log_metrics([(r.id, "acc", s, now + s, (i % 10) / 10 + s / 1000) for s in range(3)])
        store.log_metrics([(r.id, "loss", 0, now, float(i % 13))])
        store.set_status(r.id, "FINISHED")
        ids.append(r.id)
    return ids


def test_runs_page_pagination_sort_and_columns(sqlite_store: TrackingStore, sqlite_server: LiveServer) -> None:
    _fill(sqlite_store)
    with httpx.Client(base_url=sqlite_server.url) as c:
        first = c.get("/ui/api/runs", params={"experiment": "grid", "keys": "true"}).json()
        assert first["total"] == 250 and len(first["runs"]) == 100
        assert first["keys"] == {"params": ["layers", "lr", "opt"], "metrics": ["acc", "loss"], "tags": []}
        assert first["columns"] == {"params": ["layers", "lr", "opt"], "metrics": ["acc", "loss"]}
        last = c.get("/ui/api/runs", params={"experiment": "grid", "offset": 200, "limit": 100}).json()
        assert len(last["runs"]) == 50 and last["offset"] == 200
        # only the chosen columns travel
        page = c.get(
            "/ui/api/runs",
            params={"experiment": "grid", "param": "lr", "metric": "acc", "order_by": "params.lr DESC", "limit": 20},
        ).json()
        assert all(set(r["params"]) == {"lr"} and set(r["metrics"]) == {"acc"} for r in page["runs"])
        assert [r["params"]["lr"] for r in page["runs"]] == ["0.06"] * 20
        m = page["runs"][0]["metrics"]["acc"]
        assert set(m) == {"value", "min", "max", "step", "count"} and m["count"] == 3
        by_loss = c.get("/ui/api/runs", params={"experiment": "grid", "metric": "loss", "order_by": "metrics.loss ASC"})
        losses = [r["metrics"]["loss"]["value"] for r in by_loss.json()["runs"]]
        assert losses == sorted(losses)
        by_best = c.get("/ui/api/runs", params={"experiment": "grid", "metric": "acc", "order_by": "max(metrics.acc) DESC"})
        best = [r["metrics"]["acc"]["max"] for r in by_best.json()["runs"]]
        assert best == sorted(best, reverse=True) and best[0] == pytest.approx(0.902)
        filtered = c.get("/ui/api/runs", params={"experiment": "grid", "filter": "params.opt = 'adam' and metrics.loss < 3"})
        assert filtered.json()["total"] == sqlite_store.count_runs(filter="params.opt = 'adam' and metrics.loss < 3")


def test_a_bad_filter_answers_the_caret_message(sqlite_server: LiveServer) -> None:
    r = httpx.get(f"{sqlite_server.url}/ui/api/runs", params={"filter": "metrics.acc foo 3"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "invalid_filter"
    assert "metrics.acc foo 3\n" in err["message"] and err["message"].rstrip().endswith("^")
    r = httpx.get(f"{sqlite_server.url}/ui/api/runs", params={"order_by": "min(params.lr)"})
    assert r.status_code == 400 and "min() takes a metric" in r.json()["error"]["message"]


def test_run_detail_children_and_artifacts(sqlite_store: TrackingStore, sqlite_server: LiveServer, tmp_path) -> None:
    parent = sqlite_store.create_run(experiment="e", name=XSS, params={"p": XSS}, git_commit="abc123", command="train.py")
    child = sqlite_store.create_run(experiment="e", name="child", parent_id=parent.id)
    sqlite_store.put_artifact_bytes(parent.id, "notes/readme.txt", b"hello")
    with httpx.Client(base_url=sqlite_server.url) as c:
        body = c.get(f"/ui/api/runs/{parent.id}").json()
        # JSON carries the strings as they are; the pages put them in the DOM as text
        assert body["name"] == XSS and body["params"] == {"p": XSS}
        assert body["children"] == [{"id": child.id, "name": "child", "status": "RUNNING"}]
        assert [a["path"] for a in body["artifacts"]] == ["notes/readme.txt"]
        assert c.get(f"/ui/api/runs/{child.id}").json()["parent"]["id"] == parent.id
        assert c.get("/ui/api/runs/nope").status_code == 404


def test_chart_downsamples_and_history_is_exact(sqlite_store: TrackingStore, sqlite_server: LiveServer) -> None:
    run = sqlite_store.create_run(experiment="long")
    values = np.random.default_rng(1).standard_normal(100_000).cumsum()
    values[5] = math.nan
    values[77_777] = 1e6
    sqlite_store.log_metrics([(run.id, "loss", i, 1.0 + i, float(v)) for i, v in enumerate(values)])
    with httpx.Client(base_url=sqlite_server.url) as c:
        d = c.get(f"/ui/api/runs/{run.id}/chart", params={"key": "loss"}).json()
        assert d["total"] == 100_000 and d["downsampled"] is True
        assert len(d["steps"]) <= 2_002 and 77_777 in d["steps"] and max(v for v in d["values"] if v) == 1e6
        new = c.get(f"/ui/api/runs/{run.id}/chart", params={"key": "loss", "offset": 99_990}).json()
        assert new["steps"] == list(range(99_990, 100_000)) and new["downsampled"] is False
        assert c.get(f"/ui/api/runs/{run.id}/chart", params={"key": "nothing"}).json()["total"] == 0
        r = c.get(f"/ui/api/runs/{run.id}/history", params={"key": "loss", "format": "csv"})
        assert r.headers["content-disposition"].startswith("attachment")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert len(rows) == 100_000
        got = np.array([float(row["value"]) for row in rows])
        assert np.array_equal(got, values, equal_nan=True)  # exact, bit for bit
        j = c.get(f"/ui/api/runs/{run.id}/history", params={"key": "loss", "format": "json"}).json()
        assert j["values"][5] == "NaN" and len(j["steps"]) == 100_000


def test_compare_lists_the_params_that_differ(sqlite_store: TrackingStore, sqlite_server: LiveServer) -> None:
    a = sqlite_store.create_run(experiment="c", params={"lr": "0.1", "seed": "1", "only_a": "x"})
    b = sqlite_store.create_run(experiment="c", params={"lr": "0.2", "seed": "1"})
    sqlite_store.log_metrics([(a.id, "acc", 0, 1.0, 0.5), (b.id, "loss", 0, 1.0, 0.7)])
    d = httpx.get(f"{sqlite_server.url}/ui/api/compare", params=[("run", a.id), ("run", b.id)]).json()
    assert d["params_differ"] == {"lr": ["0.1", "0.2"], "only_a": ["x", None]}
    assert d["params_same"] == {"seed": "1"}
    assert d["metric_keys"] == ["acc", "loss"]
    assert httpx.get(f"{sqlite_server.url}/ui/api/compare").status_code == 422


def test_pages_are_shells_with_a_strict_csp(sqlite_server: LiveServer) -> None:
    with httpx.Client(base_url=sqlite_server.url) as c:
        for path in ("/ui/", "/ui/runs", "/ui/run", "/ui/compare"):
            r = c.get(path, params={"id": XSS, "experiment": XSS})
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-eval" not in csp and "default-src 'none'" in csp
            assert "<script>alert" not in r.text  # the shell never echoes the address
            assert r.headers["x-frame-options"] == "DENY"
        assert c.get("/").status_code == 307 and c.get("/").headers["location"] == "/ui/"
        js = c.get("/ui/static/pages/runs.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        for bad in ("/ui/static/../assets.py", "/ui/static/%2e%2e/assets.py", "/ui/static/", "/ui/static/nope.js"):
            assert c.get(bad).status_code == 404, bad
        plotly = c.get("/ui/vendor/plotly.min.js")
        assert plotly.status_code == 200 and "immutable" in plotly.headers["cache-control"]
        assert len(plotly.content) > 1_000_000


def test_no_token_no_data(sqlite_store: TrackingStore, live_server: Callable[..., LiveServer]) -> None:
    sqlite_store.create_run(experiment="secret")
    srv = live_server(create_app(sqlite_store, auth_token="s3cret"))
    with httpx.Client(base_url=srv.url) as c:
        for path in ("/ui/api/experiments", "/ui/api/runs", "/ui/api/compare?run=x", "/ui/api/runs/x/chart?key=a"):
            r = c.get(path)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", path
            assert "secret" not in r.text
        # the shells and scripts hold no data and load without the token...
        for path in ("/ui/", "/ui/runs", "/ui/run", "/ui/compare", "/ui/static/lib/api.js", "/ui/vendor/plotly.min.js"):
            assert c.get(path).status_code == 200, path
            assert "secret" not in c.get(path).text
        # ...but only for GET, and the Host check still holds
        assert c.post("/ui/", json={}).status_code == 401
        assert c.get("/ui/", headers={"Host": "evil.example"}).status_code == 400
        ok = c.get("/ui/api/experiments", headers={"Authorization": "Bearer s3cret"})
        assert [e["name"] for e in ok.json()["experiments"]] == ["secret"]


def test_run_keys_and_best_value_order(store: TrackingStore) -> None:
    a = store.create_run(experiment="k", params={"lr": "1"}, tags={"t": "x"})
    b = store.create_run(experiment="k", params={"wd": "2"})
    other = store.create_run(experiment="other", params={"zzz": "3"})
    store.log_metrics([(a.id, "acc", 0, 1.0, 0.9), (a.id, "acc", 1, 2.0, 0.1), (b.id, "acc", 0, 1.0, 0.5)])
    store.log_metrics([(other.id, "m", 0, 1.0, 1.0)])
    assert store.run_keys(experiments="k") == {"params": ["lr", "wd"], "metrics": ["acc"], "tags": ["t"]}
    assert store.run_keys()["params"] == ["lr", "wd", "zzz"]
    ids = lambda order: [r.id for r in store.search_runs(experiments="k", order_by=order)]
    assert ids("max(metrics.acc) DESC") == [a.id, b.id]  # a peaked at 0.9
    assert ids("metrics.acc DESC") == [b.id, a.id]  # a ended at 0.1
    assert ids("MIN(metrics.acc) ASC, name") == [a.id, b.id]


def test_run_keys_through_the_server(store: TrackingStore, live_server: Callable[..., LiveServer]) -> None:
    from loopml.tracking.remote import RemoteStore

    store.create_run(experiment="k", params={"lr": "1"}, tags={"t": "x"})
    store.create_run(experiment="other", params={"zzz": "3"})
    remote = RemoteStore(live_server(create_app(store)).url)
    try:
        assert remote.run_keys(experiments="k") == {"params": ["lr"], "metrics": [], "tags": ["t"]}
        assert remote.run_keys()["params"] == ["lr", "zzz"]
        assert remote.run_keys(experiments=[]) == {"params": [], "metrics": [], "tags": []}
    finally:
        remote.close()
