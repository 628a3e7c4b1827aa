"""Reading what a served version saw (the request log's inputs) and what it was trained on."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from loopml.errors import ArgumentError, NotFound
from loopml.monitor.fromlog import logged_inputs
from loopml.store import TrackingStore
from loopml.store.predictions import PredictionLog
from loopml.tracking.api import backend_for


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return buf.getvalue()


def test_logged_inputs_are_stacked_oldest_first_and_requests_without_inputs_counted(use_store: str) -> None:
    store = backend_for()
    assert isinstance(store, TrackingStore)
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, 3)).astype(np.float32) for n in (1, 2, 1, 3)]
    records = []
    for i, x in enumerate(batches):
        records.append({"request_id": f"r{i}", "model": "m", "version": 1, "created_at": 1000.0 + i, "status": "ok",
                        "rows": len(x), "latency_ms": 0.3, "ood_score": None,
                        "inputs": None if i == 2 else _npy(x), "outputs": json.dumps({"prediction": 0})})
    PredictionLog(store).insert_many(records)

    x, missing = logged_inputs("m", 1)
    np.testing.assert_array_equal(x, np.concatenate([batches[0], batches[1], batches[3]]))
    assert missing == 1
    x_last, missing_last = logged_inputs("m", 1, last=2)  # the newest two requests: one kept none
    np.testing.assert_array_equal(x_last, batches[3])
    assert missing_last == 1
    with pytest.raises(NotFound, match="holds no inputs of m/2 in that window"):
        logged_inputs("m", 2)
    with pytest.raises(ArgumentError, match="Argument last should be a number of requests"):
        logged_inputs("m", 1, last=0)
