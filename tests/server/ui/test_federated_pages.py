"""A federation's privacy and training on the run page and the version page, in Chromium.

The run and the version are written as :func:`loopml.federated.fit` writes them (the same
params, tags, metrics, artifacts and lineage), through the tracking and registry API over a
live server: no Flower is needed to draw them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

import loopml
from loopml.models import registry as R
from loopml.server import create_app
from loopml.store import TrackingStore

from ...models.nets import MLP
from ..conftest import LiveServer, forget_http_backends
from .test_browser import PNG, XSS, ready, shot

FEDERATED_PARAMS = {
    "clients": 3, "partition": "dirichlet", "partition.alpha": 0.5, "partition.column": XSS, "rounds": 2,
    "strategy": "fedprox", "engine": "simulation", "privacy.epsilon": 8.0, "privacy.delta": 1e-5,
    "privacy.max_grad_norm": 1.0, "privacy.mechanism": "dp-sgd", "privacy.noise_multiplier": 1.25,
}
LINEAGE = {"rounds": 2, "clients": 3, "strategy": "fedprox", "engine": "simulation", "failures": 1,
           "partition": {"how": "dirichlet", "alpha": 0.5, "seed": 0},
           "privacy": {"privacy.epsilon": 8.0, "privacy.delta": 1e-5, "privacy.max_grad_norm": 1.0,
                       "privacy.mechanism": "dp-sgd", "privacy.epsilon_spent": 3.21}}
PRIVACY_TAGS = {"privacy.mechanism": "dp-sgd", "privacy.epsilon": "3.21", "privacy.delta": "1e-05"}


class Federation:
    """A federation's run with three client runs and its version ``fed-digits/1``; a plain run and version beside."""

    def __init__(self, server: LiveServer, tmp: Path) -> None:
        self.url = server.url
        folder = tmp / "partition"
        folder.mkdir()
        (folder / "partition.png").write_bytes(PNG)
        (folder / "partition.json").write_text('{"sizes": [480, 479, 479]}', encoding="utf-8")
        torch.manual_seed(0)
        x = torch.randn(4, 64)
        with loopml.start_run("fed-digits", name="federated fedprox x3", params=FEDERATED_PARAMS,
                              tags={"loopml.federated": "true"}, tracking_uri=self.url) as run:
            for rnd in range(3):
                run.log({"central_accuracy": 0.1 + 0.3 * rnd, "epsilon": 1.5 * rnd}, step=rnd)
            run.log({"final_accuracy": 0.7, "clients_failed_total": 1, "epsilon_spent": 3.21})
            run.set_tags(PRIVACY_TAGS)
            run.log_artifact(folder, "federated")
            for i in range(3):
                with loopml.start_run("fed-digits", name=f"client {i}", parent=run, params={"client": i},
                                      tracking_uri=self.url):
                    pass
            R.register(MLP(hidden=8), "fed-digits", input_example=x, run=run, init_args={"hidden": 8},
                       formats=("torch",), lineage={"federated": LINEAGE}, tags=PRIVACY_TAGS)
            self.run_id = run.id
        with loopml.start_run("plain", name="centralised", tracking_uri=self.url) as plain:
            plain.log({"val_acc": 0.9})
            R.register(MLP(hidden=8), "plain", input_example=x, run=plain, init_args={"hidden": 8}, formats=("torch",))
            self.plain_id = plain.id
        forget_http_backends()


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    tmp = tmp_path_factory.mktemp("fed-ui")
    store = TrackingStore(f"sqlite:///{(tmp / 'loopml.db').as_posix()}", artifact_root=tmp / "artifacts")
    server = LiveServer(create_app(store))
    try:
        yield Federation(server, tmp)
    finally:
        forget_http_backends()
        server.stop()
        store.close()


def _rows(page: Any, table: str) -> dict[str, str]:
    keys = page.locator(f"#{table} tr").evaluate_all("rs => rs.map(r => [r.dataset.key, r.querySelector('td').innerText])")
    return dict(keys)


def test_the_run_page_shows_privacy_federation_and_partition(federation: Federation, page: Any) -> None:
    page.goto(f"{federation.url}/ui/run?id={federation.run_id}")
    ready(page)
    assert page.locator("#federated h2").inner_text() == "Federated training and privacy"
    privacy = _rows(page, "privacy-table")
    assert privacy["epsilon spent"] == "3.21" and privacy["epsilon target"] == "8" and privacy["delta"] == "0.00001"
    assert privacy["mechanism"].startswith("dp-sgd") and privacy["max grad norm"] == "1"
    assert privacy["protects"] == "each row of a client (sample-level)"
    assert privacy["noise multiplier"] == "1.25"
    fed = _rows(page, "federation-table")
    assert fed["rounds"] == "2" and fed["clients"] == "3" and fed["strategy"] == "fedprox" and fed["engine"] == "simulation"
    assert fed["client failures"] == "1" and fed["final central accuracy"] == "0.7"
    assert fed["partition"] == f"dirichlet: alpha 0.5, column {XSS}"  # a user's string stays text
    # the partition picture, fetched as the artifact with the page's token, drawn under the CSP
    page.wait_for_selector("#partition-picture[data-loaded='true']")
    assert page.locator("#partition-picture img").evaluate("i => i.naturalWidth") == 1
    assert page.locator(".children li").count() == 3
    assert page.locator("main script").count() == 0 and page.evaluate("window.__xss") is None
    assert page.problems == []  # no script error, no CSP violation
    shot(page, "federated-run.png")

    page.goto(f"{federation.url}/ui/run?id={federation.plain_id}")
    ready(page)
    assert page.locator("#federated").count() == 0 and page.locator("#params").count() == 1


def test_the_version_page_shows_its_privacy_and_federation(federation: Federation, page: Any) -> None:
    v = httpx.get(f"{federation.url}/ui/api/models/fed-digits/versions/1").json()
    assert v["lineage"]["federated"] == LINEAGE and v["tags"]["privacy.epsilon"] == "3.21"
    page.goto(f"{federation.url}/ui/model?name=fed-digits&version=1")
    ready(page)
    section = page.locator("#version #federated")
    assert section.get_attribute("data-mechanism") == "dp-sgd"
    privacy = _rows(page, "privacy-table")
    assert privacy["epsilon spent"] == "3.21" and privacy["epsilon target"] == "8" and privacy["delta"] == "0.00001"
    fed = _rows(page, "federation-table")
    assert fed["rounds"] == "2" and fed["clients"] == "3" and fed["strategy"] == "fedprox" and fed["client failures"] == "1"
    assert fed["partition"] == "dirichlet: alpha 0.5, seed 0"
    assert "federated" not in page.locator("#lineage").inner_text()  # shown once, in its own section
    assert federation.run_id in page.locator("#lineage").inner_text()
    assert page.problems == []
    shot(page, "federated-version.png")

    page.goto(f"{federation.url}/ui/model?name=plain&version=1")
    ready(page)
    assert page.locator("#federated").count() == 0 and page.locator("#lineage").count() == 1
