"""The request log's table: PredictionLog.insert_many on SQLite and PostgreSQL."""

from __future__ import annotations

import io

import numpy as np
import pytest

from loopml.errors import ArgumentError
from loopml.store.predictions import PredictionLog, inputs_array, stack_inputs


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


def test_newest_pages_through_a_models_requests_newest_first(store) -> None:  # type: ignore[no-untyped-def]
    log = PredictionLog(store)
    records = [_record(i, b"\x93NUMPY" if i % 3 == 0 else None) for i in range(40)]
    for r in records:
        r["version"] = 1 + int(r["request_id"][4:]) % 3  # three versions, interleaved in time
    records[10]["created_at"] = records[11]["created_at"]  # a tie, broken by the id
    other = {**_record(99), "request_id": "other-99", "model": "cnn", "created_at": 1_800_000_000.0}
    log.insert_many([*records, other])
    want = sorted(records, key=lambda r: (r["created_at"], r["request_id"]), reverse=True)

    pages, before = [], None
    while True:
        page = log.newest("mlp", before=before, limit=7)
        if not page:
            break
        pages.append(page)
        before = (page[-1]["created_at"], page[-1]["request_id"])
    got = [r for page in pages for r in page]
    assert [r["request_id"] for r in got] == [r["request_id"] for r in want]  # each once, newest first, across versions
    assert [len(p) for p in pages] == [7, 7, 7, 7, 7, 5]
    first = got[0]
    assert first["request_id"] == "req-39" and first["version"] == 1 + 39 % 3 and first["has_inputs"] is True
    assert first["outputs"] == '{"prediction": 39}' and "inputs" not in first and first["latency_ms"] == 39.5
    assert got[1]["has_inputs"] is False

    two = log.newest("mlp", 2, limit=100)
    assert [r["request_id"] for r in two] == [r["request_id"] for r in want if r["version"] == 2]
    assert log.newest("mlp", versions=[3], limit=2) == log.newest("mlp", 3, limit=2)
    assert log.newest("nope") == [] and log.newest("mlp", 9) == []
    with pytest.raises(ArgumentError, match="limit"):
        log.newest("mlp", limit=0)


def test_newest_walks_the_index_without_sorting_the_log(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    from loopml.store import TrackingStore
    from loopml.store import schema as s

    st = TrackingStore(f"sqlite:///{(tmp_path / 'loopml.db').as_posix()}", artifact_root=tmp_path / "artifacts")
    try:
        p = s.predictions
        q = (sa.select(p.c.request_id).where(p.c.model == "mlp", p.c.version == 1, p.c.created_at <= 5.0,
                                             sa.or_(p.c.created_at < 5.0, p.c.request_id < "x"))
             .order_by(p.c.created_at.desc(), p.c.request_id.desc()).limit(50))  # what newest() runs per version
        sql = str(q.compile(st.engine, compile_kwargs={"literal_binds": True}))
        with st.read() as conn:
            plan = " | ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
        assert "USING INDEX ix_predictions_model_version_created_at" in plan, plan
        assert "TEMP B-TREE FOR ORDER BY" not in plan, plan  # at most a sort of equal times ("RIGHT PART")
    finally:
        st.close()


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


def _npy(x: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buf = io.BytesIO()
    if version is None:
        np.save(buf, x, allow_pickle=False)
    else:
        np.lib.format.write_array(buf, x, version=version, allow_pickle=False)
    return buf.getvalue()


def _objects() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([[None] * 4], dtype=object), allow_pickle=True)
    return buf.getvalue()


def _slow(blobs: list[bytes]) -> np.ndarray:
    return np.concatenate([inputs_array(b) for b in blobs])


def test_stack_inputs_equals_loading_each_batch() -> None:
    # stack_inputs parses each distinct .npy header once and joins the payloads; every case below must
    # give what np.load on each batch and np.concatenate give, values, dtype, shape and writability alike
    rng = np.random.default_rng(0)
    rows = [rng.normal(size=(n, 4)).astype(np.float32) for n in (1, 1, 3, 0, 2)]
    cases = {
        "one-row and batch requests": [_npy(x) for x in rows],
        "version 2.0 headers mixed with 1.0": [_npy(x, (2, 0) if i % 2 else None) for i, x in enumerate(rows)],
        "float64 images": [_npy(rng.normal(size=(n, 1, 3, 3))) for n in (2, 1)],
        "1-d batches": [_npy(np.arange(3, dtype=np.int64)), _npy(np.arange(2, dtype=np.int64))],
        "dtypes differ (upcast as np.concatenate does)": [_npy(rows[0]), _npy(rows[2].astype(np.float64))],
        "Fortran order": [_npy(np.asfortranarray(rng.normal(size=(3, 4)))), _npy(rng.normal(size=(2, 4)))],
        "big-endian": [_npy(rows[0].astype(">f4")), _npy(rows[1].astype(">f4"))],
        "booleans": [_npy(rng.random((2, 4)) < 0.5), _npy(rng.random((1, 4)) < 0.5)],
        "one-row requests of one shape (one header)": [_npy(x[None]) for x in rng.normal(size=(50, 4)).astype(np.float32)],
        "one request": [_npy(rows[0])],
        "one length, headers differ (byte order)": [_npy(rows[0]), _npy(rows[1].astype(">f4"))],
        "one length, headers differ (dtype)": [_npy(rows[0]), _npy(np.arange(4, dtype=np.int32)[None])],
    }
    for name, blobs in cases.items():
        fast, slow = stack_inputs(blobs), _slow(blobs)
        assert fast.dtype == slow.dtype and fast.shape == slow.shape, name
        np.testing.assert_array_equal(fast, slow, err_msg=name)
        assert fast.flags.writeable, name
    first = stack_inputs(cases["one-row and batch requests"])
    first[0, 0] = 1.0  # a writable copy: the logged bytes are not touched
    np.testing.assert_array_equal(inputs_array(cases["one-row and batch requests"][0]), rows[0])


def test_stack_inputs_raises_what_loading_each_batch_raises() -> None:
    good = _npy(np.zeros((1, 4), dtype=np.float32))
    bad = {
        "row shapes differ": [good, _npy(np.zeros((1, 5), dtype=np.float32))],
        "a truncated payload": [good, good[:-3]],
        "not .npy bytes": [good, b"not an array"],
        "an object array": [good, _objects()],
        "no batch": [],
    }
    for name, blobs in bad.items():
        with pytest.raises(ValueError) as slow:
            _slow(blobs)
        with pytest.raises(ValueError) as fast:
            stack_inputs(blobs)
        assert str(fast.value) == str(slow.value), name
