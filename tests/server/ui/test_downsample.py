"""Min/max downsampling against a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopml.server.ui.downsample import minmax_indices


def reference(values: list[float], buckets: int) -> list[int]:
    """One bucket at a time in plain Python: the first min and the first max, NaN skipped."""
    n = len(values)
    if n <= 2 * buckets:
        return list(range(n))
    size = -(-n // buckets)
    picked = {0, n - 1}
    for start in range(0, n, size):
        chunk = [(v, i) for i, v in enumerate(values[start : start + size], start) if not math.isnan(v)]
        if not chunk:
            picked.add(start)  # an all-NaN bucket keeps one point: a gap in the line
            continue
        lo = min(v for v, _ in chunk)
        hi = max(v for v, _ in chunk)
        picked.add(next(i for v, i in chunk if v == lo))
        picked.add(next(i for v, i in chunk if v == hi))
    return sorted(picked)


finite_or_not = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(finite_or_not, max_size=300), st.integers(1, 40))
def test_matches_the_brute_force_reference(values: list[float], buckets: int) -> None:
    got = minmax_indices(np.array(values, dtype=np.float64), buckets).tolist()
    want = reference(values, buckets)
    # an all-NaN bucket may keep another of its NaN points than the reference: compare values
    assert len(got) == len(want)
    for g, w in zip(got, want):
        a, b = values[g], values[w]
        assert (math.isnan(a) and math.isnan(b)) or g == w


def test_keeps_the_extremes_of_a_long_history() -> None:
    rng = np.random.default_rng(0)
    v = rng.standard_normal(100_000).cumsum()
    v[12_345] = 1e9  # a spike that averaging or striding would lose
    idx = minmax_indices(v, 1_000)
    assert len(idx) <= 2_002
    assert np.all(np.diff(idx) > 0)
    assert {0, 99_999, 12_345, int(np.argmin(v))} <= set(idx.tolist())


def test_short_histories_are_kept_whole() -> None:
    assert minmax_indices(np.arange(10.0), 5).tolist() == list(range(10))
    assert minmax_indices(np.array([]), 3).tolist() == []


def test_bad_bucket_count() -> None:
    with pytest.raises(ValueError, match="Argument buckets should be a positive integer"):
        minmax_indices(np.arange(3.0), 0)


def test_nan_never_hides_an_infinite_extreme() -> None:
    v = np.array([np.nan, np.inf, 0.0, np.nan, -np.inf, np.nan, 1.0, 2.0, np.nan, np.nan, np.nan, np.nan])
    assert minmax_indices(v, 3).tolist() == reference(v.tolist(), 3)
    assert {1, 4} <= set(minmax_indices(v, 3).tolist())
