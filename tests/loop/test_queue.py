"""The labeling queue on a real SQLite store with a registered classifier: reasons, idempotence, spreading out, audit."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from loopml.errors import ArgumentError
from loopml.loop.labels import label
from loopml.loop.queue import build_queue, next_items, queue_items, uncertainty_scores
from loopml.store import TrackingStore
from loopml.store.labels import LabelStore
from loopml.store.predictions import PredictionLog
from tests.serve.conftest import _mlp_template, mlp_store  # noqa: F401  (fixtures: mlp v1, 10 classes, production)

T0 = 1_700_000_000.0


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x.astype(np.float32))
    return buf.getvalue()


def _probs(margin: float) -> list[float]:
    """Ten class probabilities whose two largest differ by ``margin``."""
    top = (1.0 + margin) / 2 * 0.9
    p = [top, top - margin * 0.9] + [0.1 / 8] * 8
    return p


def log_requests(store: TrackingStore, *, inputs: bool = True) -> dict[str, list[str]]:
    """200 one-row requests (margins spread over [0, 1]), 30 of them the same input with a tiny margin
    (near-duplicates: without spreading out they would fill the uncertain picks), 6 abstained, and one batch of 3
    with an abstained middle row."""
    rng = np.random.default_rng(0)
    recs, groups = [], {"dup": [], "abstain": [], "other": []}
    dup = rng.normal(size=64)
    for i in range(200):
        rid = f"q{i:03d}"
        if i < 30:
            x, margin, g = dup + rng.normal(scale=1e-4, size=64), 0.001 * (i + 1), "dup"
        else:
            x, margin, g = rng.normal(size=64), float(rng.uniform(0.0, 1.0)), "other"
        out = {"request_id": rid, "status": "ok", "prediction": "0", "probabilities": _probs(margin)}
        status = "ok"
        if i % 40 == 39:
            out, status, g = {"request_id": rid, "status": "abstain", "prediction": None, "ood_score": 9.0}, "abstain", "abstain"
        groups[g].append(rid)
        recs.append({"request_id": rid, "model": "mlp", "version": 1, "created_at": T0 + i, "status": status, "rows": 1,
                     "latency_ms": 1.0, "ood_score": 9.0 if status == "abstain" else 1.0,
                     "inputs": _npy(x[None]) if inputs else None, "outputs": json.dumps(out)})
    batch = {"request_id": "b", "results": [{"status": "ok", "prediction": "1", "probabilities": _probs(0.9)},
                                            {"status": "abstain", "prediction": None, "ood_score": 7.0},
                                            {"status": "ok", "prediction": "2", "probabilities": _probs(0.8)}]}
    recs.append({"request_id": "b", "model": "mlp", "version": 1, "created_at": T0 + 300, "status": "abstain", "rows": 3,
                 "latency_ms": 1.0, "ood_score": 7.0, "inputs": _npy(rng.normal(size=(3, 64))) if inputs else None,
                 "outputs": json.dumps(batch)})
    PredictionLog(store).insert_many(recs)
    return groups


def test_reasons_idempotence_spreading_and_audit(mlp_store: TrackingStore) -> None:  # noqa: F811
    groups = log_requests(mlp_store)
    first = build_queue("mlp@production", size=40, audit=0.25, store=mlp_store)
    assert first.added == {"abstained": 6, "uncertain": 24, "audit": 10}  # 5 + the batch's row 1; 40 - 10 - 6
    items = queue_items("mlp", limit=None, store=mlp_store)  # type: ignore[arg-type]
    by = {r: [it for it in items if it["reason"] == r] for r in ("abstained", "uncertain", "audit")}
    assert {(it["request_id"], it["row"]) for it in by["abstained"]} == {(r, 0) for r in groups["abstain"]} | {("b", 1)}
    # near-duplicates are not labeled twice: of the 30 copies (the 30 most uncertain rows) one is picked
    assert sum(it["request_id"] in groups["dup"] for it in by["uncertain"]) == 1
    assert all(it["details"]["picked_by"] == "k-center" and len(it["details"]["top"]) == 3 for it in by["uncertain"])
    assert all(it["score"] is not None and 0 <= it["score"] <= 1 for it in by["uncertain"])
    # every uncertain pick is among the pool: the 5 x 30 most uncertain answered rows not in the audit slice (the pool
    # is sized before the abstained rows are known: 5 x (size - audit))
    answered = [json.loads(r["outputs"]) for r in PredictionLog(mlp_store).records(PredictionLog(mlp_store).window_ids("mlp"), inputs=False)]
    u = sorted((float(uncertainty_scores([o["probabilities"]])[0]) for o in answered if "probabilities" in o), reverse=True)
    assert min(it["score"] for it in by["uncertain"]) >= u[5 * 30 + 10 - 1] - 1e-12
    # the audit slice: answered rows only, no duplicates across reasons (one item per request and row)
    assert all(it["request_id"] not in groups["abstain"] for it in by["audit"])
    assert len({(it["request_id"], it["row"]) for it in items}) == len(items) == 40
    # building again adds nothing; labelling 3 items makes room for exactly 3 more of the same reasons
    assert sum(build_queue("mlp@production", size=40, audit=0.25, store=mlp_store).added.values()) == 0
    for it in by["uncertain"][:3]:
        label(it["request_id"], "4", row=it["row"], annotator="ann", store=mlp_store)
    again = build_queue("mlp@production", size=40, audit=0.25, store=mlp_store)
    assert again.added == {"abstained": 0, "uncertain": 3, "audit": 0}
    assert LabelStore(mlp_store).counts("mlp")["uncertain"] == {"open": 24, "labelled": 3}


def test_audit_slice_is_uniform_over_answered_rows(mlp_store: TrackingStore) -> None:  # noqa: F811
    log_requests(mlp_store)
    build_queue("mlp@production", size=120, audit=1.0, store=mlp_store)  # only an audit slice: 120 of 196 answered rows
    audit = queue_items("mlp", limit=None, store=mlp_store)  # type: ignore[arg-type]
    assert len(audit) == 120 and {it["reason"] for it in audit} == {"audit"}
    # the 30 near-duplicates are 30 of the 196 answered rows; a draw blind to uncertainty takes about 120 * 30/196
    # of them (hypergeometric sd 2.6): between 10 and 27 (+-3.3 sd); picking by uncertainty would take all 30
    dup = sum(it["request_id"] < "q030" for it in audit)
    assert 10 <= dup <= 27, dup


def test_no_logged_inputs_and_the_page_view(mlp_store: TrackingStore) -> None:  # noqa: F811
    log_requests(mlp_store, inputs=False)
    res = build_queue("mlp@production", size=20, audit=0.0, uncertainty="entropy", store=mlp_store)
    assert res.added["uncertain"] == 14 and any("no logged inputs" in n for n in res.notes)
    view = next_items("mlp", annotator="ann", limit=1, store=mlp_store)[0]
    assert view["input"] is None and view["classes"] == [str(i) for i in range(10)]
    with pytest.raises(ArgumentError, match="Argument uncertainty should be one of margin, entropy"):
        build_queue("mlp@production", uncertainty="variance", store=mlp_store)
    with pytest.raises(ArgumentError, match="Argument audit should be"):
        build_queue("mlp@production", audit=2, store=mlp_store)


def test_add_items_for_disagreements_is_idempotent(mlp_store: TrackingStore) -> None:  # noqa: F811
    log_requests(mlp_store)
    labels = LabelStore(mlp_store)
    items = [{"request_id": "q050", "row": 0, "score": 0.7, "details": {"champion": "0", "challenger": "3"}}]
    assert labels.add_items("mlp", 1, items) == 1 and labels.add_items("mlp", 1, items) == 0
    (it,) = queue_items("mlp", store=mlp_store)
    assert it["reason"] == "disagreement" and it["details"]["challenger"] == "3"
    view = next_items("mlp", annotator="ann", store=mlp_store)[0]
    assert view["input"]["kind"] == "table" and view["input"]["shape"] == [64] and len(view["input"]["feature_names"]) == 64
    assert [t["class"] for t in view["top"]] == ["0", "1", "2"]
    with pytest.raises(ArgumentError, match="row"):
        labels.add_items("mlp", 1, [{"request_id": "q1", "row": -1}])
