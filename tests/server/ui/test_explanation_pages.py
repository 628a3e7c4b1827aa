"""Explanations in Chromium: the prediction log, the labeling page's "why", a version's input example.

Two real registered models (tests/server/explained.py): ``digits`` (a CNN on 8x8 images) and
``shop`` (an MLP on table rows with named features), with request logs written as the model
server writes them; the pages call the tracking server's explanation routes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.deps import need

need("captum.attr", extra="explain")

import loopml  # noqa: E402
from loopml.loop.queue import build_queue  # noqa: E402
from loopml.server import create_app  # noqa: E402

from ..conftest import LiveServer  # noqa: E402
from ..explained import N_LOGGED, SHOP_FEATURES, Explained  # noqa: E402
from .test_browser import ready  # noqa: E402

# The heat map's pixels: how many are coloured (not grey: red and blue differ), and how many lean red or blue.
COLOURED = """(c) => {
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let coloured = 0, red = 0, blue = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (Math.abs(d[i] - d[i + 2]) > 8) { coloured++; if (d[i] > d[i + 2]) red++; else blue++; }
  }
  return { coloured, red, blue, total: d.length / 4 };
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Explained, str]]:
    s = Explained(tmp_path_factory.mktemp("explain-ui"))
    build_queue("digits/1", size=6, store=s.store)
    server = LiveServer(create_app(s.store))
    try:
        yield s, server.url
    finally:
        server.stop()
        s.close()


def _no_problems(page: Any, allowed: str = "") -> None:
    left = [p for p in page.problems if not (allowed and allowed in p and "Failed to load resource" in p)]
    assert left == []  # no dialog, no script error, no CSP violation


def test_the_log_json_pages_newest_first(site: tuple[Explained, str]) -> None:
    s, url = site
    with httpx.Client(base_url=url) as c:
        first = c.get("/ui/api/predictions/digits", params={"limit": 5}).json()
        assert [r["request_id"] for r in first["requests"]] == [f"digits-{i:03d}" for i in range(N_LOGGED - 1, N_LOGGED - 6, -1)]
        rest = c.get("/ui/api/predictions/digits", params={"limit": 50, "before": first["next"]}).json()
        assert len(rest["requests"]) == N_LOGGED + 1 - 5 and rest["next"] is None
        assert rest["requests"][-1]["request_id"] == s.batch_id and rest["requests"][-1]["rows"] == 3
        row = next(r for r in rest["requests"] if r["request_id"] == "digits-001")
        assert row["label"] == "7" and row["has_inputs"] is True and 0 < row["confidence"] <= 1
        assert next(r for r in rest["requests"] if r["request_id"] == "digits-003")["has_inputs"] is False
        assert c.get("/ui/api/predictions/digits", params={"before": "nope"}).status_code == 400
        assert c.get("/ui/api/predictions/nope").status_code == 404
        assert c.get("/ui/api/predictions/digits", params={"version": 2}).status_code == 404


def test_the_prediction_log_explains_an_image_request(site: tuple[Explained, str], page: Any) -> None:
    s, url = site
    page.goto(f"{url}/ui/predictions?name=digits")
    ready(page)
    rows = page.locator("#predictions-table tbody tr")
    assert rows.count() == N_LOGGED + 1
    assert rows.first.get_attribute("data-request-id") == f"digits-{N_LOGGED - 1:03d}"  # newest first
    labelled = page.locator("tr[data-request-id='digits-001']")
    assert labelled.locator("td.label").inner_text() == "7"
    page.locator("tr[data-request-id='digits-002']").click()
    page.wait_for_selector("#request[data-state='explained']")
    canvas = page.locator("#request canvas.heatmap")
    assert canvas.get_attribute("data-pixels") == "8x8" and canvas.get_attribute("width") == "256"
    pixels = canvas.evaluate(COLOURED)
    assert pixels["coloured"] > 0.1 * pixels["total"] and pixels["red"] > 0  # the heat map is drawn, not a blank image
    assert page.locator("#request canvas.input-image").evaluate(COLOURED)["coloured"] == 0  # the input alone, in grey
    want = loopml.explain("digits/1", s.logged("digits-002"), method="ig", tracking_uri=s.uri)
    summary = page.locator("#request .explain-summary").inner_text()
    assert summary.startswith("integrated gradients · class " + str(want.target_names[0]))  # type: ignore[index]
    assert "delta" in summary and "red" in page.locator("#request .explain-legend").inner_text()
    checked = loopml.explain("digits/1", s.logged("digits-002"), method="ig", check=True, tracking_uri=s.uri).faithfulness
    line = page.locator("#request p.faithfulness")  # the deletion test rides along with the explanation
    assert line.get_attribute("data-faithful") == str(bool(checked.faithful[0])).lower()  # type: ignore[union-attr]
    assert "removing the 6 values with the largest attributions" in line.inner_text()
    page.select_option("#method", "saliency")
    page.wait_for_selector("#request .explanation[data-method='saliency']")
    assert page.locator("#request canvas.heatmap").evaluate(COLOURED)["coloured"] > 0
    page.locator("tr[data-request-id='digits-003']").click()  # its inputs were not logged
    page.wait_for_selector("#request[data-state='no-inputs']")
    page.locator(f"tr[data-request-id='{s.batch_id}']").click()
    page.wait_for_selector("#request[data-state='explained']")
    page.select_option("#row", "2")
    page.wait_for_selector("#request[data-state='explained'][data-row='2']")
    _no_problems(page, "409")


def test_the_prediction_log_explains_a_table_row_with_signed_bars(site: tuple[Explained, str], page: Any) -> None:
    s, url = site
    page.goto(f"{url}/ui/predictions?name=shop&version=1&request=shop-005")
    ready(page)
    page.wait_for_selector("#request[data-state='explained']")
    assert page.locator("#request canvas").count() == 0
    bars = page.locator("#request table.explain-bars tbody tr")
    assert bars.count() >= 2
    signs = bars.evaluate_all("rows => rows.map(r => r.dataset.sign)")
    want = loopml.explain("shop/1", s.logged("shop-005"), method="ig", tracking_uri=s.uri)
    a = want.attributions[0]
    assert signs.count("+") == int(min(5, (a > 0).sum())) and signs.count("-") == int(min(5, (a < 0).sum()))
    assert signs == sorted(signs, key=lambda x: x != "+")  # positive first, then negative
    first = bars.first.get_attribute("data-feature")
    assert first == SHOP_FEATURES[int(np.argmax(a))]
    assert "<b>bold</b>" in page.locator("#input-table").inner_text()  # a hostile feature name shows as text
    widths = bars.evaluate_all("rows => rows.map(r => r.querySelector('span.sbar').getBoundingClientRect().width)")
    assert max(widths) == pytest.approx(160, abs=1) and all(w >= 1 for w in widths)
    _no_problems(page)


def test_the_labeling_pages_why_overlays_the_heat_map(site: tuple[Explained, str], page: Any) -> None:
    _, url = site
    page.add_init_script("localStorage.setItem('loopml.annotator', 'ann')")
    page.goto(f"{url}/ui/labeling?name=digits&version=1")
    page.wait_for_selector("#item")
    while page.locator("#item .no-input").count():  # an item whose inputs were not logged has nothing to explain
        page.keyboard.press("ArrowRight")
    assert page.locator("#item canvas.heatmap").count() == 0
    page.keyboard.press("w")
    page.wait_for_selector("#why canvas.heatmap")
    assert page.locator("#item canvas.heatmap").evaluate(COLOURED)["coloured"] > 0
    assert not page.locator("#item canvas.pixels").is_visible()  # the heat map takes the image's place
    assert page.locator("#why-toggle").get_attribute("aria-pressed") == "true"
    assert "w" in page.locator("#keys").inner_text()
    page.keyboard.press("w")
    page.wait_for_selector("#item canvas.pixels", state="visible")
    assert page.locator("#why").count() == 0
    page.locator("#why-toggle").click()
    page.wait_for_selector("#why canvas.heatmap")
    _no_problems(page)


def test_a_versions_page_explains_its_input_example(site: tuple[Explained, str], page: Any) -> None:
    _, url = site
    page.goto(f"{url}/ui/model?name=digits&version=1")
    ready(page)
    assert page.locator("#predictions-link").get_attribute("href") == "/ui/predictions?name=digits&version=1"
    page.click("#example-explain")
    page.wait_for_selector("#example-explanation[data-state='explained']")
    assert page.locator("#example-explanation canvas.heatmap").evaluate(COLOURED)["coloured"] > 0
    assert page.locator("#example-row option").count() == 4  # the stored example's rows
    page.select_option("#example-row", "3")
    page.wait_for_selector("#example-explanation[data-state='loading']", state="detached")
    page.select_option("#example-method", "occlusion")
    page.wait_for_selector("#example-explanation .explanation[data-method='occlusion']")
    page.goto(f"{url}/ui/model?name=shop&version=1")
    ready(page)
    page.click("#example-explain")
    page.wait_for_selector("#example-explanation[data-state='explained']")
    assert page.locator("#example-explanation table.explain-bars tbody tr").count() >= 1
    _no_problems(page)
