"""A version's monitoring page: /ui/api/.../monitoring over a real server, then the page in Chromium.

The results are written as the monitor writes them, through
:class:`~loopml.store.monitoring.MonitorLog` (``save_result``, ``add_rule``,
``record_alert``) into a real SQLite store; the drift payloads are real
:class:`~loopml.monitor.univariate.DriftReport` dicts of a table with a column named
``<img src=x onerror=alert(1)>``. The screenshot lands in docs/img/monitoring.png
(with LOOPML_UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from loopml.monitor import drift
from loopml.server import create_app
from loopml.store import TrackingStore
from loopml.store.monitoring import MonitorLog
from loopml.store.registry import RegistryStore

from ..conftest import LiveServer
from .test_browser import XSS, XSS_IMG, ready, shot

HOSTILE = "<img src=x onerror=alert(1)>"
HOUR = 3600.0
N_WINDOWS = 6
THIN = 3  # the window with too few rows


def drift_payload(shift: float, seed: int) -> dict[str, Any]:
    """What the scheduler stores for a drift window: the report's dict without histograms, plus share_drifted."""
    rng = np.random.default_rng(seed)
    n = 400
    ref = pd.DataFrame({HOSTILE: rng.normal(size=n), "age": rng.normal(40, 10, n), "plan": rng.choice(["a", "b"], n)})
    cur = pd.DataFrame({HOSTILE: rng.normal(shift, 1, n), "age": rng.normal(40, 10, n), "plan": rng.choice(["a", "b"], n)})
    d = drift(ref, cur).to_dict()
    d.pop("histograms")
    d["share_drifted"] = sum(f["drifted"] for f in d["features"]) / len(d["features"])
    return d


class Monitored:
    """``shop`` version 1 with six hourly windows of each kind and three alerts; version 2 with nothing."""

    def __init__(self, store: TrackingStore, server: LiveServer, tmp: Path) -> None:
        self.store, self.url = store, server.url
        weights = tmp / "weights.pt"
        weights.write_bytes(b"not a real model")
        reg = RegistryStore(store)
        for _ in range(2):
            reg.create_version("shop", files={"torch": (weights, {})}, signature={"inputs": [], "outputs": []})
        log = self.log = MonitorLog(store)
        self.t0 = t0 = time.time() - N_WINDOWS * HOUR
        self.drift_ids = []
        for i in range(N_WINDOWS):
            window = (t0 + i * HOUR, t0 + (i + 1) * HOUR)
            if i == THIN:
                payload: dict[str, Any] = {"status": "not enough data", "reason": "12 rows, fewer than 30"}
                flagged = None
            else:
                payload = drift_payload(0.8 * i, seed=10 + i)  # the hostile column drifts from window 1 on
                flagged = payload["drifted"]
            self.drift_ids.append(log.save_result("shop", 1, "drift", window=window, rows=400, flagged=flagged, payload=payload))
            acc = None if i == 0 else 0.95 - 0.05 * i
            log.save_result("shop", 1, "performance", window=window, rows=400, flagged=None, payload={
                "accuracy": acc, "accuracy_low": None if acc is None else acc - 0.04,
                "accuracy_high": None if acc is None else acc + 0.03, "labelled": 0 if acc is None else 120,
                "estimated_accuracy": 0.93 - 0.02 * i, "abstention_rate": 0.02 * i,
                "notes": {"accuracy": "no feedback label in the window"} if acc is None else {}})  # fmt: skip
            log.save_result("shop", 1, "predictions", window=window, rows=400, flagged=False, payload={
                "window_start": window[0], "window_end": window[1], "requests": 40, "rows": 400, "abstained": 8 * i,
                "abstention_rate": 8 * i / 400, "mean_confidence": 0.9, "classes": {"0": 200, "1": 200 - 8 * i},
                "prediction_drift_p": None, "prediction_drift_js": 0.01, "prediction_drifted": False})  # fmt: skip
        log.save_result("shop", 2, "performance", window=(t0, t0 + HOUR), rows=12, flagged=None, payload={
            "accuracy": None, "accuracy_low": None, "accuracy_high": None, "labelled": 12, "estimated_accuracy": None,
            "abstention_rate": None, "notes": {"accuracy": "12 labelled rows: fewer than 100", "estimated_accuracy": XSS}})  # fmt: skip
        rule = log.add_rule("shop@production", XSS_IMG, metric="accuracy", op="<", threshold=0.9)
        drift_rule = log.add_rule("shop/1", "drift", metric="drift", op=">", threshold=0.0)
        log.record_alert(drift_rule, "shop", 1, value=1 / 3, message="drift 0.333 > 0", at=t0 + 1.5 * HOUR)
        log.record_alert(rule, "shop", 1, value=0.8, message=f"accuracy 0.8 < 0.9 {XSS}", delivered=False,
                         delivery_error=f"refused {XSS_IMG}", at=t0 + 3.5 * HOUR)  # fmt: skip
        log.record_alert(rule, "shop", 2, value=0.5, message="another version's alert", at=t0 + 4 * HOUR)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    tmp = tmp_path_factory.mktemp("monitoring-ui")
    store = TrackingStore(f"sqlite:///{(tmp / 'loopml.db').as_posix()}", artifact_root=tmp / "artifacts")
    server = LiveServer(create_app(store))
    try:
        yield Monitored(store, server, tmp)
    finally:
        server.stop()
        store.close()


API = "/ui/api/models/shop/versions/1/monitoring"


def test_monitoring_json(monitored: Monitored) -> None:
    body = httpx.get(monitored.url + API).json()
    assert body["model"] == "shop" and body["version"] == 1 and body["empty"] is False
    assert body["limits"] == {"windows": 200, "features": 30, "alerts": 100}
    d = body["drift"]
    assert [w["id"] for w in d["windows"]] == monitored.drift_ids  # oldest first
    assert [w["status"] for w in d["windows"]] == ["ok"] * THIN + ["not enough data"] + ["ok"] * (N_WINDOWS - THIN - 1)
    assert d["windows"][THIN]["reason"] == "12 rows, fewer than 30" and d["windows"][THIN]["drifted"] is None
    assert d["truncated"] is False and d["features_truncated"] is False and d["feature_count"] == 3
    top = d["features"][0]
    assert top["feature"] == HOSTILE and top["effect_name"] == "wasserstein/sd" and top["min_effect"] == 0.05
    assert top["drifted"][THIN] is None and top["ratio"][THIN] is None
    assert top["drifted"][5] is True and top["drifted"][0] is False
    assert top["ratio"][5] == pytest.approx(top["effect"][5] / 0.05)
    stored = monitored.log.result(monitored.drift_ids[5])["payload"]["features"]
    assert top["effect"][5] == next(f["effect"] for f in stored if f["feature"] == HOSTILE)
    assert top["why"][5] == ["distribution"] and top["significant"][5] is True
    for f in d["features"]:  # significant: the distribution test after Holm's correction, at the report's alpha
        assert f["significant"] == [None if p is None else p < 0.05 for p in f["p_adjusted"]]
        assert all(s for s, dr, why in zip(f["significant"], f["drifted"], f["why"]) if dr and "distribution" in why)
    assert top["significant"][0] is False and top["effect"][0] > 0  # no shift: an effect, but noise
    plan = next(f for f in d["features"] if f["feature"] == "plan")
    assert plan["effect_name"] == "jensen-shannon" and plan["min_effect"] == 0.02
    perf = body["performance"]["windows"]
    assert len(perf) == N_WINDOWS and perf[0]["accuracy"] is None and perf[2]["accuracy"] == pytest.approx(0.85)
    assert perf[1]["labelled"] == 120 and isinstance(perf[1]["labelled"], int)
    assert set(perf[0]) == {"id", "window_start", "window_end", "rows", "accuracy", "accuracy_low", "accuracy_high",
                            "labelled", "estimated_accuracy", "abstention_rate", "notes"}  # fmt: skip
    assert perf[0]["notes"] == {"accuracy": "no feedback label in the window"} and perf[1]["notes"] == {}
    pred = body["predictions"]["windows"]
    assert [p["abstained"] for p in pred] == [8 * i for i in range(N_WINDOWS)] and pred[1]["abstention_rate"] == 0.02
    alerts = body["alerts"]["rows"]
    assert [a["metric"] for a in alerts] == ["accuracy", "drift"]  # newest first, only version 1's
    assert alerts[0]["name"] == XSS_IMG and alerts[0]["message"].endswith(XSS) and alerts[0]["delivered"] is False
    assert alerts[0]["target"] == "shop@production" and alerts[0]["op"] == "<" and alerts[0]["threshold"] == 0.9


def test_monitoring_json_limits(monitored: Monitored) -> None:
    with httpx.Client(base_url=monitored.url) as c:
        body = c.get(API, params={"windows": 2, "features": 1, "alerts": 1}).json()
        assert [w["id"] for w in body["drift"]["windows"]] == monitored.drift_ids[-2:]  # the newest two
        assert body["drift"]["truncated"] and body["performance"]["truncated"] and body["predictions"]["truncated"]
        assert len(body["performance"]["windows"]) == len(body["predictions"]["windows"]) == 2
        assert [f["feature"] for f in body["drift"]["features"]] == [HOSTILE]
        assert body["drift"]["features_truncated"] and body["drift"]["feature_count"] == 3
        assert len(body["alerts"]["rows"]) == 1 and body["alerts"]["truncated"] and body["alerts"]["rows"][0]["metric"] == "accuracy"
        whole = c.get(API, params={"windows": N_WINDOWS}).json()
        assert not whole["drift"]["truncated"] and not whole["alerts"]["truncated"]
        for bad in ({"windows": 0}, {"windows": 1001}, {"features": 201}, {"alerts": 0}, {"windows": "x"}):
            r = c.get(API, params=bad)
            assert r.status_code == 422 and "error" in r.json(), bad


def test_monitoring_json_unknown_and_empty(monitored: Monitored) -> None:
    with httpx.Client(base_url=monitored.url) as c:
        for path in ("/ui/api/models/nope/versions/1/monitoring", "/ui/api/models/shop/versions/9/monitoring",
                     "/ui/api/models/nope/versions/1/monitoring/drift/1"):  # fmt: skip
            r = c.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
        empty = c.get("/ui/api/models/shop/versions/2/monitoring").json()
        assert empty["empty"] is False  # version 2 has an alert
        assert empty["drift"]["windows"] == [] and empty["drift"]["features"] == [] and empty["predictions"]["windows"] == []
        assert [w["accuracy"] for w in empty["performance"]["windows"]] == [None]
        assert [a["message"] for a in empty["alerts"]["rows"]] == ["another version's alert"]


def test_stored_drift_window_as_the_standalone_report(monitored: Monitored) -> None:
    with httpx.Client(base_url=monitored.url) as c:
        r = c.get(f"{API}/drift/{monitored.drift_ids[5]}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "attachment" in r.headers["content-disposition"] and "script-src 'self'" in r.headers["content-security-policy"]
        assert "&lt;img src=x onerror=alert(1)&gt;" in r.text and "<img" not in r.text and "<script" not in r.text
        assert "badge yes" in r.text and r.text.count("<tr class=") == 3
        thin = c.get(f"{API}/drift/{monitored.drift_ids[THIN]}")
        assert thin.status_code == 404 and "fewer than 30" in thin.json()["error"]["message"]
        other_version = c.get(f"/ui/api/models/shop/versions/2/monitoring/drift/{monitored.drift_ids[5]}")
        assert other_version.status_code == 404
        assert c.get(f"{API}/drift/999999").status_code == 404


def test_monitoring_needs_the_token(monitored: Monitored, live_server: Callable[..., LiveServer]) -> None:
    srv = live_server(create_app(monitored.store, auth_token="s3cret"))
    with httpx.Client(base_url=srv.url) as c:
        for path in (API, f"{API}/drift/{monitored.drift_ids[0]}"):
            r = c.get(path)
            assert r.status_code == 401 and "wasserstein" not in r.text, path
        page = c.get("/ui/monitoring", params={"name": XSS, "version": "1"})
        assert page.status_code == 200 and "alert" not in page.text and "script-src 'self'" in page.headers["content-security-policy"]
        assert c.get(API, headers={"Authorization": "Bearer s3cret"}).json()["drift"]["feature_count"] == 3


def test_monitor_log_reads_by_id_and_version(store: TrackingStore) -> None:
    log = MonitorLog(store)
    rid = log.save_result("m", 1, "drift", window=(0.0, 1.0), rows=3, flagged=None, payload={"status": "not enough data"})
    got = log.result(rid)
    assert (got["model"], got["version"], got["kind"], got["payload"]) == ("m", 1, "drift", {"status": "not enough data"})
    with pytest.raises(Exception, match=f"No monitoring result {rid + 1}"):
        log.result(rid + 1)
    rule = log.add_rule("m", "r", metric="drift", op=">", threshold=0.0)
    for version in (1, 2, 1):
        log.record_alert(rule, "m", version, value=1.0, message=f"v{version}")
    assert [a["version"] for a in log.alerts("m", version=1)] == [1, 1]
    assert [a["version"] for a in log.alerts("m", version=1, limit=1)] == [1]
    assert len(log.alerts("m")) == 3


def test_monitoring_page_in_chromium(monitored: Monitored, page: Any) -> None:
    page.goto(f"{monitored.url}/ui/model?name=shop&version=1")
    ready(page)
    page.locator("#monitoring-link").click()
    page.wait_for_url("**/ui/monitoring?name=shop&version=1")
    ready(page)
    assert page.locator("#monitoring-title").inner_text() == "Monitoring: shop/1"
    heat = page.locator("#drift-heatmap")
    # 5 windows with a report x 3 features; the thin window is grey; the hostile column drifted in windows 1, 2, 4, 5
    assert heat.get_attribute("data-cells") == "15" and heat.get_attribute("data-thin") == "1"
    assert heat.get_attribute("data-drifted") == "4"
    assert heat.locator(".scatterlayer .trace").count() == 3
    ticks = heat.locator(".ytick text").evaluate_all("els => els.map(e => e.textContent)")
    assert set(ticks) == {HOSTILE, "age", "plan"}  # shown literally, not parsed
    assert "not enough data" in page.locator("#drift").inner_text()
    acc = page.locator("#accuracy-chart")
    assert acc.get_attribute("data-points") == str(N_WINDOWS) and acc.locator(".scatterlayer .trace").count() == 4
    legend = set(acc.locator(".legendtext").all_text_contents())
    assert legend == {"confidence interval", "accuracy (feedback labels)", "estimated (label-free)"}
    ab = page.locator("#abstention-chart")
    assert ab.get_attribute("data-points") == str(N_WINDOWS) and ab.locator(".scatterlayer .point").count() == N_WINDOWS
    rows = page.locator("#alerts-table tbody tr")
    assert rows.count() == 2
    first = rows.nth(0)
    assert first.locator("td.rule").inner_text() == XSS_IMG
    assert first.locator("td.message").inner_text() == f"accuracy 0.8 < 0.9 {XSS}"
    assert first.locator("td").nth(6).inner_text() == f"failed: refused {XSS_IMG}"
    assert page.locator("main script, main img").count() == 0
    assert page.evaluate("window.__xss") is None
    assert page.problems == []  # no dialog (alert(1) never ran), no script error, no CSP violation
    shot(page, "monitoring.png")

    with page.expect_download() as dl:
        page.locator("#drift-report").click()
    assert dl.value.suggested_filename == f"drift-shop-1-{monitored.drift_ids[5]}.html"

    page.goto(f"{monitored.url}/ui/monitoring?name=shop&version=2")
    ready(page)
    assert page.locator("#drift-heatmap").count() == 0 and page.locator("#alerts-table tbody tr").count() == 1
    assert "No drift window stored yet" in page.locator("#drift").inner_text()
    assert page.locator("#accuracy-chart, #abstention-chart").count() == 0 and page.locator("#accuracy-none").count() == 1
    assert page.locator("#accuracy-notes").inner_text() == (
        f"Newest window: accuracy: 12 labelled rows: fewer than 100; estimated accuracy: {XSS}")
    page.goto(f"{monitored.url}/ui/monitoring?name=nope&version=1")
    ready(page)
    assert "not_found" in page.locator(".error").inner_text()
    assert page.problems == [p for p in page.problems if "404" in p]  # the failed fetch is logged by the browser


def test_monitoring_page_empty_state(page: Any, tmp_path: Path, live_server: Callable[..., LiveServer]) -> None:
    store = TrackingStore(f"sqlite:///{(tmp_path / 'loopml.db').as_posix()}", artifact_root=tmp_path / "artifacts")
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    RegistryStore(store).create_version("quiet", files={"torch": (weights, {})}, signature={})
    srv = live_server(create_app(store))
    try:
        page.goto(f"{srv.url}/ui/monitoring?name=quiet&version=1")
        ready(page)
        text = page.locator("#monitoring-empty").inner_text()
        assert "loopml serve quiet@ALIAS --monitor" in text and "loopml monitor watch quiet@ALIAS" in text
        assert page.locator(".js-plotly-plot").count() == 0 and page.problems == []
    finally:
        srv.stop()
        store.close()
