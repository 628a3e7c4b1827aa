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


def _pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(5)
    return {
        "equal sizes": (rng.normal(size=4000), rng.normal(0.1, 1, 4000)),
        "coprime sizes": (rng.normal(size=3001), rng.normal(0.1, 1.2, 2003)),
        "ties inside and across samples": (rng.integers(0, 9, 700).astype(float), rng.integers(3, 12, 1100).astype(float)),
        "ties, equal sizes": (np.round(rng.normal(size=900), 1), np.round(rng.normal(size=900), 1)),
        "signed zeros": (np.where(rng.random(500) < 0.3, -0.0, rng.normal(size=500)),
                         np.where(rng.random(400) < 0.3, 0.0, rng.normal(size=400))),
        "large offset": (1e9 + rng.normal(size=1500), 1e9 + rng.normal(0.2, 1, 1700)),
        "disjoint": (rng.normal(size=50), 10 + rng.normal(size=70)),
        "identical": (np.arange(30.0), np.arange(30.0)),
        "one value each": (np.array([1.0]), np.array([2.0])),
        "one against many": (np.array([0.5]), rng.normal(size=9)),
    }


@pytest.mark.parametrize("name", list(_pairs()))
def test_ks_and_wasserstein_of_sorted_samples_equal_scipy(name: str) -> None:
    # no merged sample: D from binary searches on integers, W from the quantile functions
    a, b = _pairs()[name]
    d, w = stats.ks_wasserstein(stats.merge(a, b))
    with np.errstate(divide="ignore"):  # SciPy's asymptotic p-value of one value a side divides by zero; D is unaffected
        want = float(sps.ks_2samp(a, b, method="asymp").statistic)
    assert d == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert w == pytest.approx(sps.wasserstein_distance(a, b), rel=1e-12, abs=1e-300)
    d2, w2 = stats.ks_wasserstein(stats.merge(b, a))  # symmetric
    assert d2 == pytest.approx(d, rel=1e-12, abs=1e-15) and w2 == pytest.approx(w, rel=1e-12, abs=1e-300)
