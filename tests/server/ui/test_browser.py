"""The UI in a real browser: headless Chromium against a live server on 127.0.0.1.

Each test waits on what the page shows (Playwright's waits), never on a clock.
The screenshots land in docs/img/, where the README shows them, when
LOOPML_UPDATE_SCREENSHOTS=1 is set; otherwise in a temporary folder (a test run
never rewrites files in the source tree).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loopml.server import create_app
from loopml.store import TrackingStore

from ..conftest import LiveServer

IMG = Path(__file__).resolve().parents[3] / "docs" / "img"
XSS = "<script>alert(1)</script>"
XSS_IMG = '<img src=x onerror="window.__xss=1">'
N_RUNS = 130
# a 1x1 red PNG
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108020000009077"
    "53de0000000c4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082"
)


class Site:
    def __init__(self, store: TrackingStore, server: LiveServer) -> None:
        self.store, self.server, self.url = store, server, server.url
        now = time.time() - 3600
        self.runs: list[str] = []
        rng = np.random.default_rng(0)
        for i in range(N_RUNS):
            lr = ["0.001", "0.01", "0.1"][i % 3]
            r = store.create_run(
                experiment="mnist",
                name=f"cnn-{i:03d}",
                params={"lr": lr, "optimizer": "adam" if i % 2 else "sgd", "batch_size": "64"},
                tags={"stage": "sweep"},
                start_time=now + i,
                git_commit="4f2a9c1",
                command="python train.py --sweep",
            )
            steps = np.arange(60)
            loss = 2.0 * np.exp(-steps / (10 + i % 17)) + 0.05 * rng.random(60)
            acc = 1 - loss / 2.2
            store.log_metrics(
                [(r.id, "loss", int(s), now + i + s, float(v)) for s, v in zip(steps, loss)]
                + [(r.id, "val_acc", int(s), now + i + s, float(v)) for s, v in zip(steps, acc)]
            )
            store.set_status(r.id, "FINISHED", end_time=now + i + 60)
            self.runs.append(r.id)
        self.evil = store.create_run(experiment="mnist", name=XSS, params={"note": XSS, "html": XSS_IMG},
                                     tags={XSS_IMG: XSS}, start_time=now + N_RUNS).id  # fmt: skip
        store.log_metrics([(self.evil, "loss", s, now + s, 1.0 / (s + 1)) for s in range(10)])
        store.put_artifact_bytes(self.evil, "notes.txt", f"notes {XSS}".encode())
        store.put_artifact_bytes(self.evil, "page.html", XSS.encode())
        store.put_artifact_bytes(self.evil, "plots/dot.png", PNG)
        store.set_status(self.evil, "FINISHED")
        self.child = store.create_run(experiment="mnist", name="fine-tune", parent_id=self.runs[0]).id
        store.set_status(self.child, "FINISHED")
        self.long = store.create_run(experiment="long", name="100k").id
        values = rng.standard_normal(100_000).cumsum()
        store.log_metrics([(self.long, "loss", i, now + i / 100, float(v)) for i, v in enumerate(values)])
        store.set_status(self.long, "FINISHED")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("ui")
    store = TrackingStore(f"sqlite:///{(tmp / 'loopml.db').as_posix()}", artifact_root=tmp / "artifacts")
    server = LiveServer(create_app(store))
    yield Site(store, server)
    server.stop()
    store.close()



def shot(page: Any, name: str) -> None:
    folder = IMG if os.environ.get("LOOPML_UPDATE_SCREENSHOTS") == "1" else Path(tempfile.gettempdir()) / "loopml-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=False)
    assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def ready(page: Any) -> None:
    page.wait_for_selector("main[data-ready='true']")


def test_experiments_page(site: Site, page: Any) -> None:
    page.goto(f"{site.url}/ui/")
    ready(page)
    row = page.locator("table.experiments tbody tr", has_text="mnist")
    assert row.locator("td").nth(1).inner_text() == str(N_RUNS + 2)
    shot(page, "experiments.png")
    row.get_by_role("link", name="mnist").click()
    page.wait_for_url("**/ui/runs?experiment=mnist*")


def _column(page: Any, index: int) -> list[str]:
    return page.locator(f"#runs-table tbody tr td:nth-child({index})").all_inner_texts()


def test_runs_table_filters_sorts_and_pages(site: Site, page: Any) -> None:
    page.goto(f"{site.url}/ui/runs?experiment=mnist")
    ready(page)
    assert "param=batch_size" in page.url  # with no columns named, the first few of each kind
    page.locator("details.columns summary").click()
    page.locator("details.columns input[data-key='optimizer']").check()
    page.wait_for_selector("#runs-table th:has-text('optimizer')")
    page.goto(f"{site.url}/ui/runs?experiment=mnist&param=lr&param=optimizer&metric=loss&metric=val_acc")
    ready(page)
    assert page.locator("#runs-table tbody tr").count() == 100
    assert page.locator("#range").inner_text().strip() == f"1–100 of {N_RUNS + 2}"
    headers = page.locator("#runs-table thead th").all_inner_texts()
    assert headers[:6] == ["", "name", "status", "started", "ended", "duration"]
    assert {"lr", "optimizer", "loss", "val_acc"} <= set(headers)

    # sort by a metric, both ways
    acc_col = headers.index("val_acc") + 1
    page.locator("#runs-table th[data-field='metrics.`val_acc`']").click()
    page.wait_for_selector("#runs-table th.sortable:has-text('val_acc ▲')")
    ascending = [float(v) for v in _column(page, acc_col) if v]
    assert ascending == sorted(ascending) and len(ascending) == 100
    page.locator("#runs-table th[data-field='metrics.`val_acc`']").click()
    page.wait_for_selector("#runs-table th.sortable:has-text('val_acc ▼')")
    descending = [float(v) for v in _column(page, acc_col) if v]
    assert descending == sorted(descending, reverse=True)
    best = max(r.metrics["val_acc"].value for r in site.store.search_runs(experiments="mnist", limit=1000) if "val_acc" in r.metrics)
    assert descending[0] == pytest.approx(best, rel=1e-5)

    # the filter language, with its error inline
    page.fill("#filter", "params.lr = '0.1' and metrics.val_acc > 0.5")
    page.click("#filter-form button")
    expected = site.store.count_runs(experiments="mnist", filter="params.lr = '0.1' and metrics.val_acc > 0.5")
    page.wait_for_selector(f"#range:has-text('of {expected}')")
    assert set(_column(page, headers.index("lr") + 1)) == {"0.1"}
    assert "filter=params.lr" in page.url  # the view is in the address
    page.fill("#filter", "metrics.val_acc foo 3")
    page.click("#filter-form button")
    error = page.locator("#filter-error .error")
    error.wait_for()
    assert "invalid_filter" in error.inner_text() and "^" in error.inner_text()
    assert page.problems == ["console: Failed to load resource: the server responded with a status of 400 (Bad Request)"]
    page.problems.clear()  # that 400 is the answer shown above
    page.fill("#filter", "")
    page.click("#filter-form button")
    page.wait_for_selector(f"#range:has-text('of {N_RUNS + 2}')")

    # pagination
    page.click("#next")
    page.wait_for_selector(f"#range:has-text('101–{N_RUNS + 2} of {N_RUNS + 2}')")
    assert page.locator("#runs-table tbody tr").count() == N_RUNS + 2 - 100
    page.click("#prev")
    page.wait_for_selector("#range:has-text('1–100')")
    shot(page, "runs.png")


def test_run_page_has_one_chart_per_metric(site: Site, page: Any) -> None:
    page.goto(f"{site.url}/ui/run?id={site.runs[0]}")
    ready(page)
    charts = page.locator(".chart")
    assert sorted(charts.evaluate_all("els => els.map(e => e.dataset.metric)")) == ["loss", "val_acc"]
    points = page.evaluate("() => [...document.querySelectorAll('.chart')].map(d => d.data.map(t => t.x.length))")
    assert points == [[60], [60]]
    assert page.locator("#params").inner_text().count("0.001") == 1
    assert "4f2a9c1" in page.locator(".overview").inner_text()
    assert "python train.py --sweep" in page.locator(".overview").inner_text()
    assert page.locator(".children a", has_text="fine-tune").count() == 1
    # controls: log scale, wall time, smoothing (a raw trace and a smoothed one)
    page.check("#log-y")
    page.wait_for_function("() => document.querySelector('.chart').layout.yaxis.type === 'log'")
    page.select_option("#x-mode", "time")
    page.wait_for_function("() => document.querySelector('.chart').layout.xaxis.type === 'date'")
    page.locator("#smoothing").fill("0.6")
    page.wait_for_function("() => document.querySelector('.chart').data.length === 2")
    page.select_option("#x-mode", "step")
    page.uncheck("#log-y")
    page.locator("#smoothing").fill("0")
    page.wait_for_function("() => document.querySelector('.chart').data.length === 1")
    shot(page, "run.png")


def test_a_100k_point_history_draws_downsampled(site: Site, page: Any) -> None:
    page.goto(f"{site.url}/ui/run?id={site.long}")
    ready(page)
    n = page.evaluate("document.querySelector('.chart').data[0].x.length")
    assert 1_000 < n <= 2_002
    assert "100000 points" in page.locator(".chart-foot").inner_text()
    with page.expect_download() as info:
        page.locator(".chart-foot button", has_text="CSV").click()
    path = info.value.path()
    assert len(Path(path).read_text().splitlines()) == 100_001  # the exact points, header included


def test_user_strings_show_as_text_and_never_run(site: Site, page: Any) -> None:
    page.goto(f"{site.url}/ui/run?id={site.evil}")
    ready(page)
    assert page.locator("#run-name").inner_text() == XSS
    assert XSS in page.locator("#params").inner_text() and XSS_IMG in page.locator("#params").inner_text()
    assert XSS_IMG in page.locator("#tags").inner_text()
    assert page.locator("main script, main img[src='x']").count() == 0
    page.locator("#artifacts tr", has_text="notes.txt").locator(".preview-btn").click()
    assert page.locator(".artifact-text").inner_text() == f"notes {XSS}"
    assert page.locator("#artifacts tr", has_text="page.html").locator(".preview-btn").count() == 0
    page.locator("#artifacts tr", has_text="dot.png").locator(".preview-btn").click()
    page.wait_for_function("() => { const i = document.querySelector('img.artifact-image'); return i && i.complete && i.naturalWidth === 1; }")
    page.goto(f"{site.url}/ui/runs?experiment=mnist&filter=" + "name%20LIKE%20'%25script%25'")
    ready(page)
    assert page.locator("#runs-table tbody .name").inner_text() == XSS
    # an injected inline script would be refused by the CSP even if it reached the DOM
    assert page.evaluate("window.__xss") is None
    page.evaluate("() => { const s = document.createElement('script'); s.textContent = 'window.__xss = 2'; document.body.append(s); }")
    assert page.evaluate("window.__xss") is None
    page.problems[:] = [p for p in page.problems if "Content Security Policy" not in p]  # that refusal is the point


def test_select_two_runs_and_compare(site: Site, page: Any) -> None:
    page.goto(f"{site.url}/ui/runs?experiment=mnist&filter=name%20IN%20('cnn-001'%2C%20'cnn-002')")
    ready(page)
    page.locator("#runs-table tbody input.select-run").nth(0).check()
    assert page.locator("#compare").is_disabled()
    page.locator("#runs-table tbody input.select-run").nth(1).check()
    page.click("#compare")
    page.wait_for_url("**/ui/compare?run=*")
    ready(page)
    traces = page.evaluate("() => [...document.querySelectorAll('.chart')].map(d => [d.dataset.metric, d.data.length])")
    assert sorted(traces) == [["loss", 2], ["val_acc", 2]]
    differ = page.locator("#params-differ").inner_text()
    assert "lr" in differ and "optimizer" in differ and "batch_size" not in differ
    shot(page, "compare.png")


def test_a_running_runs_chart_grows(site: Site, page: Any) -> None:
    run = site.store.create_run(experiment="live", name="training")
    t0 = time.time()
    site.store.log_metrics([(run.id, "loss", s, t0 + s, 1.0 / (s + 1)) for s in range(5)])
    page.goto(f"{site.url}/ui/run?id={run.id}")
    ready(page)
    assert page.evaluate("document.querySelector('.chart').data[0].x.length") == 5
    site.store.log_metrics([(run.id, "loss", s, t0 + s, 1.0 / (s + 1)) for s in range(5, 25)])
    page.wait_for_function("() => document.querySelector('.chart').data[0].x.length === 25")
    site.store.log_metrics([(run.id, "acc", 0, t0, 0.5)])  # a new metric gets its chart
    page.wait_for_selector(".chart[data-metric='acc']")
    site.store.set_status(run.id, "FINISHED")
    page.wait_for_selector("#run-status .status-finished")
    page.wait_for_selector("main[data-live='done']")


def test_a_token_is_asked_for_once(site: Site, browser: Any, tmp_path: Path) -> None:
    server = LiveServer(create_app(site.store, auth_token="s3cret"))
    context = browser.new_context()
    try:
        pg = context.new_page()
        pg.set_default_timeout(15_000)
        pg.goto(f"{server.url}/ui/")
        pg.wait_for_selector("#token-form")
        assert pg.locator("table.experiments").count() == 0  # no token, no data
        pg.fill("#token-input", "wrong")
        pg.click("#token-form button")
        pg.wait_for_selector("#token-form:has-text('refused')")
        pg.fill("#token-input", "s3cret")
        pg.click("#token-form button")
        pg.wait_for_selector("main[data-ready='true']")
        assert pg.locator("table.experiments tbody tr", has_text="mnist").count() == 1
        pg.goto(f"{server.url}/ui/runs?experiment=mnist")  # kept for the tab: not asked again
        pg.wait_for_selector("main[data-ready='true']")
        assert pg.locator("#token-form").count() == 0
    finally:
        context.close()
        server.stop()
