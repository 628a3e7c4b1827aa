"""The standalone drift report (``DriftReport.to_html``) in headless Chromium: hostile names stay text, nothing is fetched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loopml.monitor import drift


def test_drift_page_shows_hostile_names_as_text_and_fetches_nothing(page: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    hostile = "<script>alert(1)</script>"
    img = "<img src=x onerror=alert(2)>"
    ref = pd.DataFrame({hostile: rng.normal(size=500), "plan": rng.choice([img, "basic"], 500), "ok": rng.normal(size=500)})
    cur = pd.DataFrame({hostile: rng.normal(1, 1, 500), "plan": rng.choice([img, "basic", "\"'><svg onload=alert(3)>"], 500),
                        "ok": rng.normal(size=500)})
    path = drift(ref, cur).to_html(tmp_path / "drift.html")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.resolve().as_uri())

    assert page.problems == []  # no dialog, no script error, no CSP violation
    assert requests == [path.resolve().as_uri()]  # the page itself, nothing else
    rows = page.locator("tbody tr")
    assert rows.count() == 3
    assert rows.nth(0).locator("td").first.inner_text() == hostile
    assert page.locator("script").count() == 0 and page.locator("img").count() == 0
    assert page.locator("tbody svg").count() == 3
    assert "drifted" in page.locator("h1").inner_text()
    titles = page.locator("tbody svg title").evaluate_all("els => els.map(e => e.textContent)")  # SVG: no innerText
    assert any(t.startswith(img) for t in titles)
