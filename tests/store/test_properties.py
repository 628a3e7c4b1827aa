"""Round-trips through the store, with hypothesis (derandomized, modest example counts).

Histories are compared by IEEE-754 bit pattern: points are stored in binary
blocks, so every value (NaN payloads and -0.0 included) reads back exactly.
The newest-value summary lives in a REAL column where NaN is stored as NULL
(so any NaN reads back as a NaN) and, on SQLite, -0.0 reads back as 0.0.
"""

from __future__ import annotations

import math
import string
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopml.store import TrackingStore

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# A safe alphabet for keys; the key checks have their own tests with unsafe keys.
keys = st.text(alphabet=string.ascii_letters + string.digits + "_-/:", min_size=1, max_size=40).filter(
    lambda k: not k.startswith("/")
)
# Any text PostgreSQL and SQLite both store: everything but NUL (refused by the store) and lone surrogates.
texts = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=200)
floats64 = st.floats(allow_nan=True, allow_infinity=True, width=64)


def same_float(want: float, got: float, *, keeps_zero_sign: bool) -> bool:
    if math.isnan(want):
        return math.isnan(got)
    if want == 0.0 and not keeps_zero_sign:
        return got == 0.0
    return struct.pack("<d", want) == struct.pack("<d", got)


@SETTINGS
@given(params=st.dictionaries(keys, st.one_of(texts, st.integers(-(2**70), 2**70)), max_size=8))
def test_params_round_trip(store: TrackingStore, params: dict) -> None:
    run = store.create_run(experiment="props", params=params)
    store.log_params(run.id, params)  # the same values again are fine

    assert store.get_run(run.id).params == {k: str(v) for k, v in params.items()}


@SETTINGS
@given(first=st.dictionaries(keys, texts, max_size=6), second=st.dictionaries(keys, texts, max_size=6))
def test_tags_round_trip_and_overwrite(store: TrackingStore, first: dict, second: dict) -> None:
    run = store.create_run(experiment="props", tags=first)
    store.set_tags(run.id, second)

    assert store.get_run(run.id).tags == {**first, **second}


@SETTINGS
@given(key=keys, values=st.lists(floats64, min_size=1, max_size=40), batch=st.integers(1, 40))
def test_metric_values_round_trip(store: TrackingStore, key: str, values: list[float], batch: int) -> None:
    run = store.create_run(experiment="props")
    points = [(run.id, key, step, 1_700_000_000.0 + step / 8, v) for step, v in enumerate(values)]
    for i in range(0, len(points), batch):
        store.log_metrics(points[i : i + batch])
    keeps_zero_sign = not store.uri.startswith("sqlite")

    h = store.history(run.id, key)
    summary = store.get_run(run.id).metrics[key]

    assert h.steps.tolist() == list(range(len(values)))
    assert h.timestamps.tolist() == [p[3] for p in points]
    assert [struct.pack("<d", v) for v in values] == [struct.pack("<d", v) for v in h.values.tolist()]
    # The summary: newest by step, min/max ignoring NaN (NaN when there is nothing else), count.
    assert summary.step == len(values) - 1 and summary.count == len(values)
    assert same_float(values[-1], summary.value, keeps_zero_sign=keeps_zero_sign)
    finite = np.array([v for v in values if not math.isnan(v)], dtype=np.float64)
    if finite.size:
        assert summary.min == finite.min() and summary.max == finite.max()
    else:
        assert math.isnan(summary.min) and math.isnan(summary.max)


@SETTINGS
@given(steps=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=20, unique=True))
def test_steps_round_trip_and_order(store: TrackingStore, steps: list[int]) -> None:
    run = store.create_run(experiment="props")
    store.log_metrics([(run.id, "m", s, 1.0, float(i)) for i, s in enumerate(steps)])

    h = store.history(run.id, "m")
    order = sorted(range(len(steps)), key=steps.__getitem__)

    assert h.steps.tolist() == sorted(steps)
    assert h.values.tolist() == [float(i) for i in order]
    assert store.get_run(run.id).metrics["m"].step == max(steps)
