"""monitor.stats.sort: the float32 fast path gives np.sort's array exactly, and the statistics SciPy's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from loopml.monitor import stats


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    narrow = rng.normal(size=5000).astype(np.float32).astype(np.float64)  # every value a float32: the fast path
    ties = np.round(narrow * 4).astype(np.float32).astype(np.float64)
    ties[::7] = -0.0  # signed zeros among the ties
    tail = narrow.copy()
    tail[-1] = 0.1  # not a float32: only the full check sees it
    wide = narrow.copy()
    wide[-1] = 1e300  # beyond float32's range: inf when narrowed, no warning, float64 sort
    return {"float32 values": narrow, "ties and signed zeros": ties, "one value not a float32 at the end": tail,
            "a value beyond float32's range": wide, "float64 values": rng.normal(size=5000),
            "short": narrow[:100], "float32 array": narrow.astype(np.float32)}


@pytest.mark.parametrize("name", list(_cases()))
def test_sort_equals_numpys(name: str) -> None:
    x = _cases()[name]
    got, want = stats.sort(x), np.sort(x)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got[got == 0]).sum(), np.signbit(want[want == 0]).sum())


def test_ks_and_wasserstein_of_float32_data_equal_scipy() -> None:
    # logged float32 inputs against float32 training rows, widened to float64 as drift reads them
    rng = np.random.default_rng(3)
    a = rng.normal(0, 1, 20_000).astype(np.float32).astype(np.float64)
    b = rng.normal(0.05, 1.1, 15_000).astype(np.float32).astype(np.float64)
    d, w = stats.ks_wasserstein(stats.merge(a, b))
    assert d == pytest.approx(float(sps.ks_2samp(a, b, method="asymp").statistic), rel=1e-12, abs=1e-15)
    assert w == pytest.approx(sps.wasserstein_distance(a, b), rel=1e-12)
