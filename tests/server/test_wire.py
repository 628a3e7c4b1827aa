"""The wire formats round-trip every value exactly (hypothesis as the oracle)."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopml.tracking import wire
from loopml.store.records import History, MetricSummary, RunRecord

floats = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True, width=64)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
keys = st.sampled_from(["loss", "acc", "val/loss", "a b", "ü"])
runs = st.sampled_from(["a" * 32, "b" * 32, "c1"])
points = st.lists(
    st.tuples(runs, keys, int64, st.floats(allow_nan=False, allow_infinity=False, width=64), floats), max_size=60
)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))


@settings(max_examples=200, deadline=None)
@given(points)
def test_metric_batches_round_trip(batch: list[tuple[str, str, int, float, float]]) -> None:
    run_ids, got = wire.decode_metric_batch(wire.encode_metric_batch(batch))
    assert set(run_ids) == {p[0] for p in batch}
    assert len(got) == len(batch)
    for (r, k, s, t, v), (r2, k2, s2, t2, v2) in zip(batch, got):
        assert (r, k, s) == (r2, k2, s2) and type(s2) is int
        assert _same(t, t2) and type(t2) is float
        assert _same(v, v2) and type(v2) is float


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(int64, floats, floats), max_size=60))
def test_histories_round_trip_in_both_forms(rows: list[tuple[int, float, float]]) -> None:
    h = History(
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.float64),
        np.array([r[2] for r in rows], dtype=np.float64),
    )
    binary = wire.decode_history(wire.encode_history(h))
    for a, b in zip(h, binary):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()  # bit for bit, NaN payloads too
    assert binary.values.flags.writeable
    doc = orjson.loads(orjson.dumps(wire.history_to_json(h)))
    back = wire.history_from_json(doc)
    assert back.steps.tolist() == h.steps.tolist()
    assert all(_same(a, b) for a, b in zip(back.values.tolist(), h.values.tolist()))


def test_non_finite_floats_are_strings_on_the_wire() -> None:
    body = orjson.loads(
        wire.encode_metric_batch([("r", "k", 0, 1.0, v) for v in (math.nan, math.inf, -math.inf, -0.0)])
    )
    assert body["values"] == ["NaN", "Infinity", "-Infinity", -0.0]
    assert "run" not in body and "key" not in body  # one run, one key: no index arrays


def test_run_records_round_trip_with_non_finite_summaries() -> None:
    rec = RunRecord(
        id="a" * 32,
        experiment_id=1,
        experiment="e",
        name="n",
        status="RUNNING",
        start_time=1.0,
        end_time=None,
        heartbeat_at=2.0,
        params={"p": "1"},
        tags={"t": "x"},
        metrics={
            "m": MetricSummary(key="m", step=3, timestamp=4.0, value=math.nan, min=-math.inf, max=math.inf, count=2)
        },
    )
    doc = orjson.loads(orjson.dumps(wire.run_to_json(rec)))
    assert doc["metrics"]["m"]["value"] == "NaN"
    back = wire.run_from_json(doc)
    assert math.isnan(back.metrics["m"].value) and back.metrics["m"].min == -math.inf
    assert back.params == rec.params and back.start_time == rec.start_time


def test_damaged_binary_histories_are_refused() -> None:
    data = wire.encode_history(History(np.arange(3), np.zeros(3), np.ones(3)))
    with pytest.raises(ValueError, match="should have 88 bytes"):
        wire.decode_history(data[:-1])
    with pytest.raises(ValueError, match="Not a loopml binary history"):
        wire.decode_history(b"HTTP" + data[4:])
    with pytest.raises(ValueError, match="header"):
        wire.decode_history(b"LM")
