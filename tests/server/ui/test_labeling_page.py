"""The labeling page in Chromium, and a challenger's comparison report on its Model page.

A registered classifier ``digits`` (8x8 images, class names 0-9) has a request log
written with :meth:`PredictionLog.insert_many` as the server writes it and a queue
built from it by :func:`loopml.loop.queue.build_queue`; a second model ``shop`` takes
table rows, with a hostile class name and a hostile feature name. The browser labels
with the keyboard alone and the test reads the labels back from the store.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from loopml.server import create_app
from loopml.store import TrackingStore
from loopml.store.registry import RegistryStore

from ..conftest import LiveServer
from .test_browser import XSS, XSS_IMG, ready, shot

DIGITS = [str(d) for d in range(10)]


def _sig(shape: list[int | None], classes: list[str], features: list[str] | None = None) -> dict[str, Any]:
    sig: dict[str, Any] = {"inputs": [{"name": "x", "dtype": "float32", "shape": shape}],
                           "outputs": [{"name": "output", "dtype": "float32", "shape": [None, len(classes)]}],
                           "class_names": classes}  # fmt: skip
    if features is not None:
        sig["feature_names"] = features
    return sig


def comparison_doc(champion: str, challenger: str) -> dict[str, Any]:
    """A stored comparison as ``loopml.loop.compare.Comparison.to_dict`` writes it, with a hostile reason."""
    def paired(which: str, b: int, c: int, p: float, passed: bool) -> dict[str, Any]:
        return {"set": which, "fingerprint": "ab" * 32, "rows": 360, "champion_accuracy": 0.9, "champion_interval": [0.865, 0.927],
                "challenger_accuracy": 0.95, "challenger_interval": [0.922, 0.968], "champion_only": b, "challenger_only": c,
                "alternative": "worse" if which == "test" else "better", "p_value": p, "passed": passed}  # fmt: skip

    return {"champion": champion, "challenger": challenger, "alpha": 0.01, "min_gain": 0.02,
            "test": paired("test", 4, 6, 0.83, True), "recent": paired("recent", 2, 20, 0.0001, True),
            "decision": "promote", "reasons": ["test: not worse (4 rows right only for the champion)", f"recent: better {XSS}"],
            "at": time.time()}  # fmt: skip


class Site:
    def __init__(self, store: TrackingStore, server: LiveServer, tmp: Path) -> None:
        self.store, self.url = store, server.url
        weights = tmp / "weights.pt"
        weights.write_bytes(b"not a real model")
        reg = self.registry = RegistryStore(store)
        reg.create_version("digits", files={"torch": (weights, {})}, signature=_sig([None, 8, 8], DIGITS))
        reg.create_version("digits", files={"torch": (weights, {})}, signature=_sig([None, 8, 8], DIGITS), parent_version=1,
                           measurements={"comparison": comparison_doc("digits/1", "digits/2"), "size_bytes": 1234})  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("labeling-ui")
    store = TrackingStore(f"sqlite:///{(tmp / 'loopml.db').as_posix()}", artifact_root=tmp / "artifacts")
    server = LiveServer(create_app(store))
    try:
        yield Site(store, server, tmp)
    finally:
        server.stop()
        store.close()


def test_a_challengers_comparison_on_its_model_page(site: Site, page: Any) -> None:
    page.goto(f"{site.url}/ui/model?name=digits&version=2")
    ready(page)
    section = page.locator("#comparison")
    assert page.locator("#comparison-decision").inner_text() == "promote"
    assert [r.get_attribute("data-set") for r in page.locator("#comparison-table tbody tr").all()] == ["test", "recent"]
    test_row = page.locator("#comparison-table tr[data-set='test'] td").all_inner_texts()
    assert test_row == ["test", "360", "90.0% [86.5%, 92.7%]", "95.0% [92.2%, 96.8%]", "4", "6", "0.83", "yes"]
    assert page.locator("#comparison-reasons li").all_inner_texts()[1] == f"recent: better {XSS}"
    assert "digits/1" in section.inner_text() and section.locator("a.ref").first.get_attribute("href") == "/ui/model?name=digits&version=2"
    assert "comparison" not in page.locator("#measurements").inner_text()  # its own section, not a measurement row
    assert page.locator("#labeling-link").get_attribute("href") == "/ui/labeling?name=digits&version=2"
    page.goto(f"{site.url}/ui/model?name=digits&version=1")
    ready(page)
    assert page.locator("#comparison").count() == 0
    assert page.problems == []
