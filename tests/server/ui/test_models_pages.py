"""The registry pages: /ui/api/models over a real server, then both pages in Chromium.

The models are registered with :func:`loopml.models.registry.register` through
the server (the small MLP, ``torch`` format only); the quantized variant is
a version with its parent and measurements, as ``loopml quantize`` makes it.
The screenshots land in docs/img/models.png and docs/img/model.png (with LOOPML_UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import torch

import loopml
from loopml.data import Dataset, dataset_record
from loopml.models import registry as R
from loopml.server import create_app
from loopml.store import TrackingStore
from loopml.store.registry import RegistryStore

from ...models.nets import MLP
from ..conftest import LiveServer, forget_http_backends
from .test_browser import XSS, XSS_IMG, ready, shot

CLASSES = [str(i) for i in range(10)]


class Registry:
    """One store and server: ``digits`` (two fp32 versions, an int8 variant of 1, aliases moved) and ``xss``."""

    def __init__(self, store: TrackingStore, server: LiveServer) -> None:
        self.store, self.server, self.url = store, server, server.url
        torch.manual_seed(0)
        x = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))
        rng = np.random.default_rng(0)
        train = Dataset(rng.standard_normal((40, 64)).astype(np.float32), rng.integers(0, 10, 40), name="digits-train")
        self.train_fingerprint = train.fingerprint
        for i, description in enumerate(("fp32 baseline", "wider head")):
            with loopml.start_run(experiment="digits", tracking_uri=self.url) as run:
                run.log({"val_accuracy": 0.9 + i / 100, "loss": 0.3})
                if i == 0:
                    store.log_dataset(run.id, dataset_record(train), role="train")
                R.register(MLP(hidden=16), "digits", input_example=x, run=run, class_names=CLASSES,
                           init_args={"hidden": 16}, formats=("torch",), description=description)  # fmt: skip
        with loopml.start_run(experiment="xss", tracking_uri=self.url) as run:
            R.register(MLP(hidden=16), "xss", input_example=x, run=run, formats=("torch",), description=XSS,
                       tags={"note": XSS, XSS_IMG: XSS})  # fmt: skip
        forget_http_backends()
        reg = self.registry = RegistryStore(store)
        v1 = reg.get_version("digits", 1)
        reg.set_measurements("digits", 1, {"accuracy": 0.9312, "size_bytes": 5_100, "latency_ms": {"1": 0.041, "64": 0.39}})
        torch_file = store.artifacts.root / v1.files["torch"].path
        reg.create_version(
            "digits", files={"torch": (torch_file, {"quantized": True})}, signature=v1.signature,
            parent_version=1, run_id=v1.run_id, lineage={"parent": "digits/1", "quantization": {"data_matches_lineage": True}},
            tags={"quantization.method": "static", "quantization.bits": "8"},
            measurements={"accuracy": 0.9287, "size_bytes": 1_830, "latency_ms": {"1": 0.022, "64": 0.17}},
        )  # fmt: skip
        reg.set_alias("digits", "staging", 1, by="ana")
        reg.set_alias("digits", "production", 1, by="ana")
        reg.set_alias("digits", "production", 3, by="bo")
        reg.delete_alias("digits", "staging", by="bo")
        reg.set_alias("xss", "production", 1, by=XSS)


@pytest.fixture(scope="module")
def models_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("models-ui")
    store = TrackingStore(f"sqlite:///{(tmp / 'loopml.db').as_posix()}", artifact_root=tmp / "artifacts")
    server = LiveServer(create_app(store))
    try:
        yield Registry(store, server)
    finally:
        forget_http_backends()
        server.stop()
        store.close()



def test_models_list(models_site: Registry) -> None:
    models = httpx.get(f"{models_site.url}/ui/api/models").json()["models"]
    assert [m["name"] for m in models] == ["digits", "xss"]
    digits = models[0]
    assert digits["version_count"] == 3 and digits["latest_version"] == 3
    assert digits["aliases"] == {"production": 3}
    assert digits["updated_at"] >= digits["created_at"]


def test_versions_variants_under_their_parent_and_alias_history(models_site: Registry) -> None:
    d = httpx.get(f"{models_site.url}/ui/api/models/digits").json()
    rows = d["versions"]
    assert [(r["version"], r["depth"], r["kind"]) for r in rows] == [(1, 0, "fp32"), (3, 1, "static int8"), (2, 0, "fp32")]
    one, variant = rows[0], rows[1]
    assert [f["format"] for f in one["formats"]] == ["torch"]  # the input example is a file, not a format
    assert one["formats"][0]["size"] == models_site.registry.get_version("digits", 1).files["torch"].size
    assert one["accuracy"] == 0.9312 and one["size_bytes"] == 5_100 and one["latency_ms"] == {"1": 0.041, "64": 0.39}
    assert variant["parent_version"] == 1 and variant["aliases"] == ["production"] and variant["run_id"] == one["run_id"]
    assert rows[2]["latency_ms"] == {"1": None, "64": None} and rows[2]["accuracy"] is None
    history = [(e["alias"], e["from"], e["to"], e["by"]) for e in d["alias_history"]]
    assert history == [("staging", 1, None, "bo"), ("production", 1, 3, "bo"), ("production", None, 1, "ana"),
                       ("staging", None, 1, "ana")]  # fmt: skip
    assert all(isinstance(e["at"], float) for e in d["alias_history"])


def test_one_version(models_site: Registry) -> None:
    with httpx.Client(base_url=models_site.url) as c:
        v = c.get("/ui/api/models/digits/versions/1").json()
        assert v["kind"] == "fp32" and v["description"] == "fp32 baseline"
        assert v["signature"]["inputs"] == [{"name": "x", "dtype": "float32", "shape": [None, 64]}]
        assert v["signature"]["class_names"] == CLASSES
        assert v["metrics"]["val_accuracy"] == pytest.approx(0.9)
        assert v["lineage"]["datasets"] == {"train": models_site.train_fingerprint}
        assert v["lineage"]["experiment"] == "digits"
        assert {f["format"] for f in v["files"]} == {"torch", "input_example"}
        assert all(len(f["sha256"]) == 64 for f in v["files"])
        assert "profile" not in v and v["has_profile"] is True
        assert c.get("/ui/api/models/digits/versions/3").json()["parent_version"] == 1
        missing = c.get("/ui/api/models/nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert c.get("/ui/api/models/digits/versions/9").status_code == 404
        assert c.get("/ui/api/models/digits/versions/x").status_code == 422


def test_registry_pages_need_the_token_for_data(models_site: Registry, live_server: Callable[..., LiveServer]) -> None:
    srv = live_server(create_app(models_site.store, auth_token="s3cret"))
    with httpx.Client(base_url=srv.url) as c:
        for path in ("/ui/api/models", "/ui/api/models/digits", "/ui/api/models/digits/versions/1"):
            r = c.get(path)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", path
            assert "digits" not in r.text
        for path in ("/ui/models", "/ui/model?name=digits", "/ui/static/pages/models.js", "/ui/static/pages/model.js"):
            r = c.get(path)
            assert r.status_code == 200 and "fp32" not in r.text, path
        assert "script-src 'self'" in c.get("/ui/model").headers["content-security-policy"]
        assert c.get("/ui/model", params={"name": XSS}).text.count("alert") == 0  # the shell never echoes the address
        ok = c.get("/ui/api/models", headers={"Authorization": "Bearer s3cret"})
        assert [m["name"] for m in ok.json()["models"]] == ["digits", "xss"]


def test_models_and_model_pages_in_chromium(models_site: Registry, page: Any) -> None:
    page.goto(f"{models_site.url}/ui/models")
    ready(page)
    row = page.locator("#models-table tr[data-model='digits']")
    cells = row.locator("td").all_inner_texts()
    assert cells[:4] == ["digits", "3", "3", "@production → 3"]
    assert page.locator("header nav a", has_text="Models").count() == 1
    shot(page, "models.png")

    row.get_by_role("link", name="digits").click()
    page.wait_for_url("**/ui/model?name=digits")
    ready(page)
    versions = page.locator("#versions-table tbody tr")
    assert versions.evaluate_all("rs => rs.map(r => r.dataset.version)") == ["1", "3", "2"]
    variant = versions.nth(1).locator("td").all_inner_texts()
    assert "└ static int8" in variant[1] and variant[3:7] == ["0.9287", "1.8 kB", "0.022", "0.170"]
    assert variant[7] == "@production" and versions.nth(1).locator("a.run-link").count() == 1
    assert page.locator("#version-title").inner_text() == "Version 3"  # the newest, at first
    page.goto(f"{models_site.url}/ui/model?name=digits&version=1")
    ready(page)
    assert page.locator("#version-title").inner_text() == "Version 1"
    assert "float32" in page.locator("#signature").inner_text()
    assert models_site.train_fingerprint in page.locator("#lineage").inner_text()
    history = page.locator("#alias-history tbody tr").all_inner_texts()
    assert len(history) == 4 and history[0].split("\t")[:3] == ["@staging", "1", "removed"]
    shot(page, "model.png")

    page.goto(f"{models_site.url}/ui/model?name=xss")
    ready(page)
    assert XSS in page.locator("#version .overview").inner_text()
    tags = page.locator("#tags").inner_text()
    assert XSS in tags and XSS_IMG in tags
    assert XSS in page.locator("#alias-history").inner_text()
    assert page.locator("main script, main img[src='x']").count() == 0
    assert page.evaluate("window.__xss") is None
