"""The request log's table: PredictionLog.insert_many on SQLite and PostgreSQL."""

from __future__ import annotations

import io

import numpy as np
import pytest

from loopml.store.predictions import PredictionLog, inputs_array


def _record(i: int, inputs: bytes | None = None) -> dict[str, object]:
    return {"request_id": f"req-{i}", "model": "mlp", "version": 1, "created_at": 1_700_000_000.0 + i, "status": "ok",
            "rows": 1, "latency_ms": 0.5 + i, "ood_score": None if i % 2 else 0.25 * i, "inputs": inputs,
            "outputs": f'{{"prediction": {i}}}'}


def test_insert_many_in_chunks_keeps_every_field(store) -> None:  # type: ignore[no-untyped-def]
    import io

    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype=np.float32).reshape(1, 6))
    log = PredictionLog(store)
    log.insert_many([_record(i, buf.getvalue() if i == 7 else None) for i in range(150)], chunk=64)

    assert log.request_ids("mlp") == {f"req-{i}" for i in range(150)}
    got = log.get("req-7")
    assert (got["version"], got["created_at"], got["status"], got["rows"]) == (1, 1_700_000_007.0, "ok", 1)
    assert got["latency_ms"] == 7.5 and got["ood_score"] is None and got["outputs"] == '{"prediction": 7}'
    assert inputs_array(got["inputs"]).tolist() == [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]]
    assert log.get("req-8")["ood_score"] == 2.0 and log.get("req-8")["inputs"] is None


def test_insert_many_skips_request_ids_already_stored(store) -> None:  # type: ignore[no-untyped-def]
    log = PredictionLog(store)
    log.insert_many([_record(i) for i in range(3)])
    retried = [_record(i) for i in range(1, 5)]
    retried[0]["status"] = "abstain"  # a retried batch after a lost commit: the stored row stays as it was
    log.insert_many(retried, chunk=2)

    assert log.request_ids("mlp") == {f"req-{i}" for i in range(5)}
    assert log.get("req-1")["status"] == "ok"


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.arange(64, dtype=np.float64).reshape(1, 1, 8, 8),
    np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
    np.array([[True, False]]),
    np.arange(4, dtype=">f4").reshape(2, 2),
    np.zeros((0, 5), dtype=np.float32),
    np.array(["a", "bc"]),
    np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
])
def test_inputs_array_reads_what_np_load_reads(array: np.ndarray) -> None:
    # the header cache must give what np.load gives, for every layout the server could write
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    got = inputs_array(buf.getvalue())
    want = np.load(io.BytesIO(buf.getvalue()), allow_pickle=False)
    assert got.dtype == want.dtype and got.shape == want.shape and got.flags.writeable
    np.testing.assert_array_equal(got, want)


def test_inputs_array_never_unpickles() -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        inputs_array(buf.getvalue())
    truncated = io.BytesIO()
    np.save(truncated, np.arange(10.0))
    with pytest.raises(ValueError):
        inputs_array(truncated.getvalue()[:-8])
