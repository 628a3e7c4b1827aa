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

from loopml.loop.compare import MEASUREMENT, Comparison, PairedResult
from loopml.loop.queue import build_queue
from loopml.server import create_app
from loopml.store import TrackingStore
from loopml.store.labels import LabelStore, item_votes
from loopml.store.predictions import PredictionLog
from loopml.store.registry import RegistryStore

from ...deps import need
from ..conftest import LiveServer
from .test_browser import XSS, XSS_IMG, ready, shot

DIGITS = [str(d) for d in range(10)]
SHOP_CLASSES = [XSS_IMG, "stays", "leaves", *(f"plan {i}" for i in range(3, 12))]  # 12: two-digit keys
SHOP_FEATURES = [XSS, "age", "fee"]
N_DIGITS = 60  # logged requests; the queue holds 45 of them: 20 labelled one by one, then a grid page of 20


def _sig(shape: list[int | None], classes: list[str], features: list[str] | None = None) -> dict[str, Any]:
    sig: dict[str, Any] = {"inputs": [{"name": "x", "dtype": "float32", "shape": shape}],
                           "outputs": [{"name": "output", "dtype": "float32", "shape": [None, len(classes)]}],
                           "class_names": classes}  # fmt: skip
    if features is not None:
        sig["feature_names"] = features
    return sig


def comparison_doc(champion: str, challenger: str) -> dict[str, Any]:
    """A stored comparison, as :func:`loopml.loop.compare.compare` stores it with the challenger, with a hostile reason."""
    def paired(which: str, b: int, c: int, p: float) -> PairedResult:
        return PairedResult(set=which, fingerprint="ab" * 32, rows=360, champion_accuracy=0.9, champion_interval=(0.865, 0.927),
                            challenger_accuracy=0.95, challenger_interval=(0.922, 0.968), champion_only=b, challenger_only=c,
                            alternative="worse" if which == "test" else "better", p_value=p, passed=True)  # fmt: skip

    return Comparison(champion=champion, challenger=challenger, alpha=0.01, min_gain=0.02, test=paired("test", 4, 6, 0.83),
                      recent=paired("recent", 2, 20, 0.0001), decision="promote",
                      reasons=["test: not worse (4 rows right only for the champion)", f"recent: better {XSS}"],
                      at=time.time()).to_dict()  # fmt: skip


def npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x.astype(np.float32))
    return buf.getvalue()


def answers(model: str, version: int, rows: np.ndarray, truth: np.ndarray, classes: list[str], seed: int) -> list[dict[str, Any]]:
    """One-row requests of ``rows`` as the model server logs them: inputs as .npy, the answer's JSON, probabilities
    leaning to the ``truth`` (an unsure model); every 7th abstained."""
    rng = np.random.default_rng(seed)
    t0 = time.time() - 3600
    records = []
    for i, row in enumerate(rows):
        x = row[None]
        p = 0.6 * rng.dirichlet(np.full(len(classes), 0.6)) + 0.4 * np.eye(len(classes))[truth[i]]
        rid = f"{model}-{i:03d}"
        abstain = i % 7 == 3
        ood = float(rng.uniform(5.0, 9.0) if abstain else rng.uniform(0.0, 2.0))
        item: dict[str, Any] = {"status": "abstain" if abstain else "ok", "ood_score": ood}
        if not abstain:
            item.update(prediction=classes[int(p.argmax())], probabilities=p.round(6).tolist())
        out = {"request_id": rid, "model": model, "version": version, **item}
        records.append({"request_id": rid, "model": model, "version": version, "created_at": t0 + i, "status": item["status"],
                        "rows": 1, "latency_ms": 0.5, "ood_score": ood, "inputs": npy(x), "outputs": json.dumps(out)})  # fmt: skip
    return records


class Site:
    """``digits`` 1 (8x8 images, a queue of 45), 2 (a challenger with its comparison); ``shop`` 1 (table rows, hostile names)."""

    def __init__(self, store: TrackingStore, server: LiveServer, tmp: Path) -> None:
        self.store, self.url = store, server.url
        weights = tmp / "weights.pt"
        weights.write_bytes(b"not a real model")
        reg = self.registry = RegistryStore(store)
        reg.create_version("digits", files={"torch": (weights, {})}, signature=_sig([None, 8, 8], DIGITS))
        reg.create_version("digits", files={"torch": (weights, {})}, signature=_sig([None, 8, 8], DIGITS), parent_version=1,
                           measurements={MEASUREMENT: comparison_doc("digits/1", "digits/2"), "size_bytes": 1234})  # fmt: skip
        reg.create_version("shop", files={"torch": (weights, {})}, signature=_sig([None, 3], SHOP_CLASSES, SHOP_FEATURES))
        log = PredictionLog(store)
        digits = need("sklearn.datasets", extra="data").load_digits()
        rng = np.random.default_rng(2)
        self.records = {r["request_id"]: r for r in answers("digits", 1, digits.images[:N_DIGITS], digits.target[:N_DIGITS],
                                                              DIGITS, seed=1)}  # fmt: skip
        table = np.column_stack([rng.normal(size=12), rng.integers(18, 80, 12), rng.uniform(0, 50, 12)])
        self.shop_records = {r["request_id"]: r for r in answers("shop", 1, table, rng.integers(0, 12, 12), SHOP_CLASSES, seed=2)}
        log.insert_many(list(self.records.values()))
        log.insert_many(list(self.shop_records.values()))
        self.queue = build_queue("digits/1", size=45, store=store)
        build_queue("shop/1", size=5, store=store)
        self.labels = LabelStore(store)

    def prediction(self, request_id: str) -> str | None:
        out = json.loads((self.records | self.shop_records)[request_id]["outputs"])
        return out.get("prediction")

    def current(self, request_id: str) -> dict[Any, Any]:
        """The request's row 0 answers that stand, by annotator: ``{annotator: (kind, label)}``."""
        rows = self.labels.feedback_rows([request_id]).get(request_id, [])
        return item_votes(rows, 1).get(0, {})


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
    stored = Comparison.from_dict(site.registry.get_version("digits", 2).measurements[MEASUREMENT])  # as comparison_of reads it
    assert stored.promote and stored.recent is not None and stored.recent.challenger_only == 20
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


def test_labeling_json(site: Site) -> None:
    with httpx.Client(base_url=site.url) as c:
        meta = c.get("/ui/api/labeling/digits", params={"version": 1}).json()
        assert meta["version"] == 1 and meta["class_names"] == DIGITS and meta["feature_names"] is None
        assert meta["counts"]["open"] == sum(site.queue.open.values()) == 45
        assert c.get("/ui/api/labeling/digits").json()["version"] == 2  # the newest without version=
        q = c.get("/ui/api/labeling/digits/queue", params={"version": 1, "limit": 3}).json()
        assert len(q["items"]) == 3 and q["next_after"] == q["items"][-1]["id"]
        it = q["items"][0]
        assert it["input"]["kind"] == "image" and it["input"]["shape"] == [8, 8] and it["reason"] in ("abstained", "uncertain", "audit")
        assert c.get("/ui/api/labeling/digits/queue", params={"version": 2}).json()["items"] == []  # nothing queued for 2
        shop = c.get("/ui/api/labeling/shop/queue").json()["items"][0]
        assert shop["input"]["kind"] == "table" and shop["input"]["feature_names"] == SHOP_FEATURES
        for path, params in (("/ui/api/labeling/nope", {}), ("/ui/api/labeling/digits", {"version": 9}),
                             ("/ui/api/labeling/digits/queue", {"version": 9})):  # fmt: skip
            r = c.get(path, params=params)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
        assert c.get("/ui/api/labeling/digits/queue", params={"limit": 0}).status_code == 422


def _answered(page: Any, n: int) -> str:
    """Wait until the page has drawn its n-th answer; the request id of the item it shows then."""
    page.wait_for_selector(f"main[data-answered='{n}'][data-mode='single']")
    return str(page.locator("#item").get_attribute("data-request-id"))


def test_label_20_items_with_the_keyboard_alone(site: Site, page: Any) -> None:
    page.goto(f"{site.url}/ui/labeling?name=digits&version=1")
    page.wait_for_selector("#annotator-input:focus")
    page.keyboard.type("ann")
    page.keyboard.press("Enter")
    page.wait_for_selector("#item")
    canvas = page.locator("#item canvas.pixels")
    assert canvas.get_attribute("data-pixels") == "8x8" and canvas.get_attribute("width") == "256"
    assert page.locator("#classes li kbd").all_inner_texts() == DIGITS  # a digit's own key
    expected: dict[str, tuple[str, Any]] = {}
    rid = str(page.locator("#item").get_attribute("data-request-id"))
    undone = None
    for i in range(20):
        assert page.locator("#reason").inner_text().startswith("Queued because: ")
        model = site.prediction(rid)
        if model is not None:
            assert page.locator("#top3 td.cls").first.inner_text() == model  # the model's best class on top
        if i == 4:
            page.keyboard.press("s")
            expected[rid] = ("skip", None)
        elif model is not None and i % 3 == 0:
            page.keyboard.press("Enter")  # the model's answer
            expected[rid] = ("label", model)
        else:
            key = str((i * 7) % 10)
            page.keyboard.press(key)
            assert page.locator("#classes li.picked").get_attribute("data-cls") == key
            page.keyboard.press("Enter")
            expected[rid] = ("label", key)
        nxt = _answered(page, i + 1)
        if i == 9:  # take it back and answer again
            undone = (rid, expected[rid])
            page.keyboard.press("Backspace")
            assert _answered(page, i) == rid
            page.keyboard.press("ArrowRight")  # the arrows move without answering
            page.wait_for_selector(f"#item[data-request-id='{nxt}']")
            page.keyboard.press("ArrowLeft")
            page.wait_for_selector(f"#item[data-request-id='{rid}']")
            page.keyboard.press("n")
            expected[rid] = ("none", None)
            assert _answered(page, i + 1) == nxt
        rid = nxt
    page.wait_for_selector("main[data-pending='0']")
    assert len(expected) == 20
    for request_id, (kind, label) in expected.items():
        rows = site.labels.feedback_rows([request_id])[request_id]
        assert [(r["annotator"], r["source"]) for r in rows] == [("ann", "page")] * len(rows)
        assert all(r["seconds"] > 0 for r in rows if r["kind"] != "undo")
        assert site.current(request_id) == {"ann": (kind, label)}, request_id
    assert undone is not None
    history = site.labels.feedback_rows([undone[0]])[undone[0]]
    assert [r["kind"] for r in history] == [undone[1][0], "undo", "none"]  # the undone label is kept, superseded
    statuses = {it["request_id"]: it["status"] for it in site.labels.items("digits", status=None, limit=None)}
    assert all(statuses[r] == ("skipped" if k == "skip" else "labelled") for r, (k, _) in expected.items())
    progress = page.locator("#progress").inner_text()
    assert "20 labelled of 45 queued" in progress and "20 answered by ann" in progress and "labels per minute" in progress
    assert page.problems == []
    shot(page, "labeling.png")

    # the grid: a page of the model's answers, one corrected, confirmed at once
    page.keyboard.press("g")
    page.wait_for_selector("main[data-mode='grid']")
    cells = page.locator("#grid .cell")
    assert cells.count() == 20
    grid_ids = [str(c.get_attribute("data-queue-id")) for c in cells.all()]
    by_id = {str(it["id"]): it["request_id"] for it in site.labels.items("digits", status=None, limit=None)}
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("7")
    assert cells.nth(2).get_attribute("data-answer") == "7" and "cursor" in str(cells.nth(3).get_attribute("class"))
    page.keyboard.press("Enter")
    page.wait_for_selector("main[data-answered='40']")
    page.wait_for_selector("main[data-pending='0']")
    for i, qid in enumerate(grid_ids):
        request_id = by_id[qid]
        model = site.prediction(request_id)
        want = ("label", "7") if i == 2 else ("label", model) if model is not None else ("skip", None)
        assert site.current(request_id) == {"ann": want}, (i, request_id)
        assert all(r["seconds"] > 0 for r in site.labels.feedback_rows([request_id])[request_id])
    assert page.problems == []
    page.reload()  # the name is kept; what ann answered is not offered again
    page.wait_for_selector("#item")
    assert page.locator("#annotator").inner_text() == "ann" and page.locator("#annotator-form").count() == 0
    left = {it["request_id"] for it in site.labels.items("digits", status="open", limit=None)}
    assert len(left) == 5 and page.locator("#item").get_attribute("data-request-id") in left


def test_hostile_class_and_feature_names_are_text(site: Site, page: Any) -> None:
    page.goto(f"{site.url}/ui/labeling?name=shop")
    page.wait_for_selector("#annotator-input:focus")
    page.keyboard.type(XSS)
    page.keyboard.press("Enter")
    page.wait_for_selector("#item")
    assert page.locator("#classes li .cls").all_inner_texts() == SHOP_CLASSES
    # names of many characters, 12 classes: a two-digit code each
    assert page.locator("#classes li kbd").all_inner_texts() == [f"{i:02d}" for i in range(12)]
    assert page.locator("#item table.features th").all_inner_texts()[2:] == SHOP_FEATURES
    assert page.locator("#annotator").inner_text() == XSS
    rid = str(page.locator("#item").get_attribute("data-request-id"))
    page.keyboard.press("0")
    assert page.locator("#classes li.typed").count() == 10 and page.locator("#classes li.picked").count() == 0
    page.keyboard.press("0")
    assert page.locator("#classes li.picked .cls").inner_text() == XSS_IMG
    page.keyboard.press("Enter")
    page.wait_for_selector("main[data-answered='1'][data-pending='0']")
    assert site.current(rid) == {XSS: ("label", XSS_IMG)}
    page.keyboard.press("g")  # the grid shows the model's answers as text too
    page.wait_for_selector("main[data-mode='grid']")
    shown = page.locator("#grid .cell-answer").all_inner_texts()
    assert shown and set(shown) <= {*SHOP_CLASSES, "skip"}
    page.keyboard.press("Escape")
    page.wait_for_selector("main[data-mode='single']")
    assert page.locator("main script, main img").count() == 0
    assert page.evaluate("window.__xss") is None
    assert page.problems == []
    page.goto(f"{site.url}/ui/labeling?name=digits&version=2")  # nothing queued for version 2
    page.wait_for_selector("#queue-done")
    assert "no open item" in page.locator("#queue-done").inner_text()
    page.locator("header nav a", has_text="Labeling").click()  # the bar's entry lists the models
    page.wait_for_selector("#label-models")
    assert page.locator("#label-models a").all_inner_texts() == ["digits", "shop"]
    assert page.problems == []
