"""Labels by annotators: agreement, disputes back to the queue, supersede and undo, bad input, concurrent writers,
the label dataset, the HTTP routes (model server and tracking server) and ``loopml label``."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from loopml.cli import app
from loopml.data import datasets_of_request
from loopml.errors import ArgumentError, DataError, NotFound
from loopml.loop.labels import (
    agreement,
    fleiss_kappa,
    import_labels,
    label,
    label_dataset,
    undo,
)
from loopml.loop.queue import build_queue, queue_items
from loopml.monitor import feedback_outcomes
from loopml.serve import ModelServer
from loopml.server import create_app
from loopml.store import TrackingStore
from loopml.store.labels import LabelStore
from loopml.store.predictions import PredictionLog
from tests.deps import need
from tests.serve.conftest import _mlp_template, mlp_store, rows, serve  # noqa: F401  (fixtures)
from tests.server.conftest import LiveServer, live_server  # noqa: F401

from .test_queue import log_requests


def _status(store: TrackingStore, rid: str, row: int = 0) -> str:
    (it,) = [i for i in queue_items("mlp", status=None, limit=None, store=store) if (i["request_id"], i["row"]) == (rid, row)]  # type: ignore[arg-type]
    return str(it["status"])


def test_annotators_agreement_disputes_supersede_and_undo(mlp_store: TrackingStore) -> None:  # noqa: F811
    log_requests(mlp_store)
    LabelStore(mlp_store).add_items("mlp", 1, [{"request_id": f"q{i:03d}", "row": 0} for i in range(40, 52)] +
                                    [{"request_id": "b", "row": r} for r in range(3)])
    for i in range(40, 50):  # ann and bob agree on 8 of 10; cy answers 4 of them
        label(f"q{i:03d}", str(i % 3), annotator="ann", seconds=1.5, store=mlp_store)
        label(f"q{i:03d}", str(i % 3) if i < 48 else "9", annotator="bob", store=mlp_store)
    assert _status(mlp_store, "q040") == "labelled" and _status(mlp_store, "q048") == "disputed"
    for i in range(40, 44):
        label(f"q{i:03d}", str(i % 3) if i != 43 else "7", annotator="cy", store=mlp_store)
    assert _status(mlp_store, "q043") == "disputed"  # a third annotator disagreeing sends it back
    # a later different label by the same annotator supersedes theirs (history kept): the dispute is resolved
    label("q048", "9", annotator="ann", store=mlp_store)
    assert _status(mlp_store, "q048") == "labelled"
    assert [f["label"] for f in PredictionLog(mlp_store).feedback("q048") if f["annotator"] == "ann"] == ["0", "9"]
    # skip and "none of these classes" are answers too
    label("q050", None, annotator="ann", kind="skip", store=mlp_store)
    assert _status(mlp_store, "q050") == "skipped"
    label("q050", None, annotator="bob", kind="none", store=mlp_store)
    assert _status(mlp_store, "q050") == "labelled"
    # undo withdraws the newest standing answer, then the one before (the page's Backspace)
    label("q051", "5", annotator="ann", store=mlp_store)
    assert undo("ann", store=mlp_store)["request_id"] == "q051" and _status(mlp_store, "q051") == "open"
    assert undo("ann", store=mlp_store)["request_id"] == "q050" and _status(mlp_store, "q050") == "labelled"
    assert undo("nobody", store=mlp_store) is None
    # a batch labelled row by row: row 1's dispute does not touch rows 0 and 2
    label("b", "1", row=0, annotator="ann", store=mlp_store)
    label("b", "3", row=1, annotator="ann", store=mlp_store)
    label("b", "4", row=1, annotator="bob", store=mlp_store)
    assert [_status(mlp_store, "b", r) for r in range(3)] == ["labelled", "disputed", "open"]

    out = agreement("mlp", store=mlp_store)
    # rows with 2+ non-skip answers: q040-q049 (q048 now agreed "9"), b row 1; q050 has one non-skip answer
    assert (out["items"], out["agreed"], out["kappa_method"]) == (11, 8, "fleiss")
    assert out["annotators"] == ["ann", "bob", "cy"] and out["percent_agreement"] == pytest.approx(100 * 8 / 11, abs=0.01)

    # accuracy counts agreed rows only: q040-q047 minus q043 (disputed), q048 ("9"), q049 disputed, b row 0
    outcomes = feedback_outcomes("mlp/1", store=mlp_store)
    assert sorted(outcomes.request_id.unique()) == ["b", "q040", "q041", "q042", "q044", "q045", "q046", "q047", "q048"]
    assert outcomes[outcomes.request_id == "b"].row.tolist() == [0]

    ds = label_dataset("mlp@production", store=True, backend=mlp_store)
    assert len(ds) == 9 and ds.class_names == [str(i) for i in range(10)] and ds.x.shape == (9, 64)
    assert ("b", 0) in ds.predictions and dict(zip(ds.predictions, ds.y.tolist()))[("q048", 0)] == 9  # type: ignore[attr-defined]
    record = mlp_store.get_dataset(ds.fingerprint)
    assert record["origin"]["kind"] == "labels" and record["origin"]["version"] == 1 and record["origin"]["rows"] == 9
    assert [(d["fingerprint"], d["rows"]) for d in datasets_of_request("b", backend=mlp_store)] == [(ds.fingerprint, [0])]
    with pytest.raises(ArgumentError, match="no agreed label with a logged input for reasons"):
        label_dataset("mlp@production", reasons=("audit",), backend=mlp_store)


def test_fleiss_kappa_against_statsmodels_numbers() -> None:
    # Fleiss (1971)'s worked example as given in statsmodels' tests (10 items, 14 raters, 5 categories): 0.20993
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=5e-6)


def test_each_bad_label_is_refused_and_nothing_is_stored(mlp_store: TrackingStore, tmp_path: Path) -> None:  # noqa: F811
    log_requests(mlp_store)
    with pytest.raises(NotFound, match="No prediction has request id 'nope'"):
        label("nope", "3", annotator="ann", store=mlp_store)
    with pytest.raises(ArgumentError, match=r"row of request 'q001''s batch \(0 to 0\); got 1"):
        label("q001", "3", row=1, annotator="ann", store=mlp_store)
    with pytest.raises(ArgumentError, match="one of the model's classes .*got 'cat'.*kind='none'"):
        label("q001", "cat", annotator="ann", store=mlp_store)
    with pytest.raises(ArgumentError, match="Argument kind should be one of label, skip, none"):
        label("q001", "3", annotator="ann", kind="maybe", store=mlp_store)
    with pytest.raises(ArgumentError, match="Argument seconds should be"):
        label("q001", "3", annotator="ann", seconds=-1, store=mlp_store)
    with pytest.raises(ArgumentError, match="should be a list of 3 labels"):
        PredictionLog(mlp_store).add_feedback("b", "3")
    bad = tmp_path / "labels.csv"
    bad.write_text("request_id,row,label\nq001,0,3\nq002,0,cat\n")
    with pytest.raises(ArgumentError, match="got .cat. for row 0 of request .q002."):
        import_labels(bad, annotator="ann", store=mlp_store)
    (tmp_path / "l.jsonl").write_text('{"request_id": "q001", "label": "3"}\nnot json\n')
    with pytest.raises(DataError, match="l.jsonl:2"):
        import_labels(tmp_path / "l.jsonl", annotator="ann", store=mlp_store)
    assert PredictionLog(mlp_store).feedback("q001") == []  # nothing stored by any of them
    good = tmp_path / "good.jsonl"
    good.write_text('{"request_id": "q001", "row": 0, "label": "3"}\n{"request_id": "b", "row": 2, "label": 2, "seconds": 2}\n')
    assert import_labels(good, annotator="ann", store=mlp_store) == 2
    assert PredictionLog(mlp_store).feedback("b")[0]["source"] == "file"


def test_concurrent_label_writers_lose_nothing(store: TrackingStore) -> None:
    """Four threads of four annotators label the same 10 queued items at once (SQLite and PostgreSQL)."""
    PredictionLog(store).insert_many([{"request_id": f"r{i}", "model": "m", "version": 1, "created_at": 1.0 + i, "status": "ok",
                                       "rows": 1, "latency_ms": 1.0, "ood_score": None, "inputs": None,
                                       "outputs": '{"prediction": "a"}'} for i in range(10)])
    LabelStore(store).add_items("m", 1, [{"request_id": f"r{i}", "row": 0} for i in range(10)])
    errors: list[BaseException] = []

    def write(who: int) -> None:
        try:
            for rep in range(3):
                for i in range(10):  # items 0-4: everyone says "a"; 5-9: annotator 3 says "b"
                    value = "b" if (i >= 5 and who == 3) else "a"
                    LabelStore(store).add([{"request_id": f"r{i}", "row": 0, "label": value, "annotator": f"a{who}"}])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    fb = LabelStore(store).feedback_rows([f"r{i}" for i in range(10)])
    assert sum(len(v) for v in fb.values()) == 4 * 3 * 10
    statuses = {it["request_id"]: it["status"] for it in LabelStore(store).items("m", status=None, limit=None)}
    assert statuses == {f"r{i}": "labelled" if i < 5 else "disputed" for i in range(10)}


def test_feedback_over_http_with_rows_annotators_and_kinds(serve: Callable[..., ModelServer], mlp_store: TrackingStore) -> None:  # noqa: F811
    server = serve(log_inputs=1.0)
    rid = httpx.post(f"{server.url}/v1/models/mlp/predict", json={"inputs": rows(3).tolist()}).json()["request_id"]
    url = f"{server.url}/v1/feedback"
    ok = httpx.post(url, json={"request_id": rid, "label": "3", "row": 2, "annotator": "ann", "kind": "label", "seconds": 1.5})
    assert ok.status_code == 200 and ok.json()["row"] == 2 and ok.json()["source"] == "http"
    assert httpx.post(url, json={"request_id": rid, "label": None, "row": 1, "annotator": "ann", "kind": "skip"}).status_code == 200
    for body, status, words in [
        ({"request_id": rid, "label": "3", "row": 3}, 400, "0 to 2"),
        ({"request_id": rid, "label": "cat", "row": 0}, 400, "one of the model's classes"),
        ({"request_id": rid, "label": "3", "row": -1}, 422, "row should be"),
        ({"request_id": rid, "label": "3", "kind": "maybe"}, 422, "kind should be"),
        ({"request_id": rid, "label": "3", "seconds": "fast"}, 422, "seconds should be"),
        ({"request_id": rid, "label": "3", "annotator": ""}, 422, "annotator should be"),
        ({"request_id": rid, "label": "3", "colour": "red"}, 422, "optionally"),
        ({"request_id": "nope", "label": "3", "row": 0}, 404, "nope"),
    ]:
        r = httpx.post(url, json=body)
        assert r.status_code == status and words in r.json()["error"]["message"], (body, r.text)
    got = PredictionLog(mlp_store).feedback(rid)
    assert [(f["row"], f["kind"], f["annotator"], f["seconds"]) for f in got] == [(2, "label", "ann", 1.5), (1, "skip", "ann", None)]


def test_tracking_server_label_routes(mlp_store: TrackingStore, live_server: Callable[..., LiveServer]) -> None:  # noqa: F811
    log_requests(mlp_store)
    build_queue("mlp@production", size=10, audit=0.2, store=mlp_store)
    srv = live_server(create_app(mlp_store))
    api = f"{srv.url}/api/v1/labels"
    page = httpx.get(f"{api}/queue", params={"model": "mlp", "limit": 4}).json()
    assert "items" in page, page
    assert len(page["items"]) == 4 and page["next_after"] == page["items"][-1]["id"]
    it = page["items"][0]
    assert {"input", "top", "ood_score", "reason", "classes", "prediction", "votes"} <= set(it)
    assert it["input"]["kind"] == "table" and len(it["input"]["values"]) == 64
    nxt = httpx.get(f"{api}/queue", params={"model": "mlp", "limit": 50, "after": page["next_after"]}).json()
    assert len(nxt["items"]) == 6 and nxt["next_after"] is None and nxt["counts"]["by_status"]["open"] == 10
    one = httpx.post(api, json={"request_id": it["request_id"], "row": it["row"], "label": "3", "annotator": "ann",
                                "seconds": 0.8, "source": "page"})
    assert one.status_code == 200 and one.json()["count"] == 1
    many = httpx.post(api, json=[{"request_id": i["request_id"], "row": i["row"], "label": "4", "annotator": "bob"}
                                 for i in page["items"][:2]])
    assert many.json()["count"] == 2
    assert httpx.get(f"{api}/agreement", params={"model": "mlp"}).json()["disputed"] == 1
    mine = httpx.get(f"{api}/queue", params={"model": "mlp", "annotator": "ann", "limit": 50}).json()["items"]
    assert it["id"] not in [i["id"] for i in mine]  # what ann answered is not shown to ann again; the dispute is open for bob
    assert httpx.post(f"{api}/undo", json={"annotator": "bob"}).json()["undone"]["request_id"] == page["items"][1]["request_id"]
    bad = httpx.post(api, json={"request_id": it["request_id"], "row": 0, "label": "cat", "annotator": "ann"})
    assert bad.status_code == 400 and "one of the model's classes" in bad.json()["error"]["message"]
    assert httpx.post(api, json={"request_id": "nope", "label": "3"}).status_code == 404
    assert httpx.post(api, json={"request_id": "q001", "label": "3", "kind": "maybe"}).status_code == 422
    assert httpx.post(api, content=b"{}", headers={"content-type": "text/plain"}).status_code == 415
    assert httpx.get(f"{api}/queue").status_code == 422  # model= is required


def test_cli_label_commands(mlp_store: TrackingStore, tmp_path: Path) -> None:  # noqa: F811
    need("sklearn", extra="data")  # Cohen's kappa
    log_requests(mlp_store)
    uri = str(mlp_store.engine.url.render_as_string(hide_password=False))
    run = CliRunner().invoke
    r = run(app, ["label", "queue", "mlp@production", "--size", "10", "--json", "--store", uri])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["added"] == {"abstained": 6, "uncertain": 3, "audit": 1}
    r = run(app, ["label", "list", "mlp", "--json", "--store", uri])
    items = json.loads(r.stdout)
    assert len(items) == 10
    f = tmp_path / "labels.csv"
    f.write_text("request_id,row,label\n" + "".join(f"{i['request_id']},{i['row']},5\n" for i in items))
    for who in ("ann", "bob"):
        r = run(app, ["label", "import", str(f), "--annotator", who, "--store", uri])
        assert r.exit_code == 0 and "stored 10 labels" in r.stdout, r.output
    r = run(app, ["label", "agreement", "mlp", "--store", uri])
    assert "10 items with 2+ answers, 100.0% agreed" in r.stdout, r.output
    out = tmp_path / "labels.npz"
    r = run(app, ["label", "export", "mlp@production", "--out", str(out), "--store", uri])
    assert r.exit_code == 0, r.output
    with np.load(out) as z:
        assert z["x"].shape == (10, 64) and set(z["y"].tolist()) == {5} and len(z["request_id"]) == 10
    for argv, words in [(["label", "queue", "mlp@production", "--uncertainty", "odd"], "margin or entropy"),
                        (["label", "queue", "mlp@production", "--size", "0"], "Argument size"),
                        (["label", "list", "mlp", "--status", "weird"], "Argument status"),
                        (["label", "import", str(tmp_path / "none.csv"), "--annotator", "ann"], "No file"),
                        (["label", "export", "mlp@production", "--out", str(tmp_path / "x.txt")], ".npz")]:
        r = run(app, [*argv, "--store", uri])
        assert r.exit_code == 2 and words in r.output, (argv, r.output)
