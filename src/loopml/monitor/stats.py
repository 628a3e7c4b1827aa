"""The statistics of :mod:`loopml.monitor.drift`, each equal to SciPy's (tests/monitor/test_drift.py).

What is hand-written here and why:

- :func:`merge` and :func:`ks_wasserstein`: the two-sample Kolmogorov-Smirnov statistic
  and the Wasserstein-1 distance of two sorted samples, without merging them. SciPy's
  ``ks_2samp`` and ``wasserstein_distance`` each sort both samples and binary-search their
  sorted concatenation; drift sorts each column once and shares the sorted samples between
  the two statistics, the value counts of a discrete column and the histogram of the HTML
  page (benchmarks/drift.py).
- :func:`ks_pvalues`: the asymptotic KS p-value (SciPy's ``kstwobign`` with Stephens'
  correction) for every column in one call, within 2e-3 of ``ks_2samp``'s above 10,000 rows
  a side, where ``ks_2samp`` may spend up to 0.6 s per column on it.
- :func:`chi2_homogeneity`: the 2 x K chi-square test of ``scipy.stats.chi2_contingency``
  (no Yates correction) after pooling cells whose expected count is under 5 (Cochran's rule),
  which SciPy does not do.
- :func:`holm`: Holm's step-down adjustment (SciPy has only Benjamini-Hochberg).

Everything here takes and returns NumPy values; nothing reads a DataFrame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

try:
    from scipy import stats as sps
except ModuleNotFoundError as exc:  # SciPy comes with scikit-learn ('loopml[data]') or alone
    raise ModuleNotFoundError("Data drift needs SciPy: pip install 'loopml[monitor]'") from exc

__all__ = [
    "EXACT_KS_MAX_N",
    "MIN_EXPECTED",
    "Merged",
    "chi2_homogeneity",
    "chi2_pvalues",
    "finite",
    "holm",
    "jensen_shannon",
    "json_scalar",
    "ks_exact",
    "ks_pvalues",
    "ks_wasserstein",
    "ks_wasserstein_weighted",
    "merge",
    "new_category_pvalue",
    "sort",
    "two_proportions",
    "wasserstein_counts",
]

EXACT_KS_MAX_N = 10_000
"""Up to this many values a side SciPy's ``ks_2samp`` computes the exact p-value; drift calls it there."""

MIN_EXPECTED = 5.0
"""Cells of a chi-square table with a smaller expected count are pooled (Cochran's rule)."""


def finite(x: np.ndarray) -> tuple[np.ndarray, int]:
    """The finite values of ``x`` (a view when all are), and how many were NaN or infinite (counted as missing)."""
    ok = np.isfinite(x)
    if ok.all():
        return x, 0
    kept = x[ok]
    return kept, len(x) - len(kept)


@dataclass(frozen=True)
class Merged:
    """Two finite samples, each sorted: what every statistic of a numeric column reads.

    ``a`` (the reference, ``n`` values) and ``b`` (the current sample, ``m`` values) sorted
    ascending; ``ref_distinct``: how many distinct values ``a`` holds. The two are never
    merged into one array: the statistics read one sample's CDF at the other's values by
    binary search (:func:`ks_wasserstein`), which costs less than merging them.
    """

    a: np.ndarray
    b: np.ndarray
    n: int
    m: int
    ref_distinct: int

    @property
    def low(self) -> float:
        """The smallest value of either sample."""
        return float(min(self.a[0] if self.n else np.inf, self.b[0] if self.m else np.inf))

    @property
    def high(self) -> float:
        """The largest value of either sample."""
        return float(max(self.a[-1] if self.n else -np.inf, self.b[-1] if self.m else -np.inf))

    def counts_at_ends(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(distinct values of both samples, sorted; reference count of each; current count of each)."""
        va, ca = _runs(self.a)
        vb, cb = _runs(self.b)
        values = np.union1d(va, vb)
        ref = np.zeros(len(values), dtype=np.int64)
        cur = np.zeros(len(values), dtype=np.int64)
        ref[np.searchsorted(values, va)] = ca
        cur[np.searchsorted(values, vb)] = cb
        return values, ref, cur

    def shares_below(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per bin of ``edges`` (the last bin closed), the share of each sample's values in it."""
        ref_cum = np.searchsorted(self.a, edges, side="left")
        cur_cum = np.searchsorted(self.b, edges, side="left")
        ref_cum[-1], cur_cum[-1] = self.n, self.m
        return np.diff(ref_cum) / max(self.n, 1), np.diff(cur_cum) / max(self.m, 1)


def _runs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of a sorted ``x`` and how often each occurs (``np.unique`` without its sort)."""
    if not len(x):
        return x, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], x[1:] != x[:-1]]))
    return x[starts], np.diff(np.append(starts, len(x))).astype(np.int64)


def sort(x: np.ndarray) -> np.ndarray:
    """``np.sort(x)``, in float32 when every value of a float64 ``x`` is a float32 (inputs a server logged as float32).

    The same array, exactly: float32 to float64 is exact and keeps the order. NumPy sorts
    100,000 float32 values in about half the time of float64 ones; the check costs two
    passes over ``x`` (a few percent of a sort), and a peek at the first values skips it for
    data that cannot pass. tests/monitor/test_stats.py holds the two equal.
    """
    if x.dtype == np.float64 and len(x) >= 1024:
        with np.errstate(over="ignore"):  # a value beyond float32's range becomes inf: not equal, float64 sort
            if np.array_equal(x[:64].astype(np.float32), x[:64]):
                narrow = x.astype(np.float32)
                if np.array_equal(narrow, x):
                    narrow.sort()
                    return narrow.astype(np.float64)
    return np.sort(x)


def merge(a: np.ndarray, b: np.ndarray) -> Merged:
    """Two finite samples, each sorted (:func:`sort`), ready for :func:`ks_wasserstein` and the histograms."""
    a, b = sort(a), sort(b)
    distinct = 1 + int(np.count_nonzero(a[1:] != a[:-1])) if len(a) else 0
    return Merged(a, b, len(a), len(b), distinct)


def ks_wasserstein(merged: Merged) -> tuple[float, float]:
    """(KS statistic D, Wasserstein-1 distance) of the two sorted, non-empty samples; equal to SciPy's.

    Hand-written for speed: SciPy's ``ks_2samp`` and ``wasserstein_distance`` each sort both
    samples, then binary-search the sorted concatenation; here the samples come sorted and
    neither statistic builds the merged sample (100,000 values a side, after the sorts: 4 ms
    against 7-24 ms for the stable-argsort merge this replaced; docs/benchmarks.md).

    D: ``F_a - F_b`` rises only at reference values and ``F_b - F_a`` only at current ones,
    so with ``r_k`` / ``l_k`` the current values ``<=`` / ``<`` the k-th smallest reference
    value, ``D = max(max_k (k+1)/n - r_k/m, max_k l_k/m - k/n)``: inside a run of ties the
    terms fall short of the run's last one, so no tie needs finding. Both maxima are taken on
    integers (numerators over ``n m``), and ``l`` is searched only where the samples share a
    value. W: the area between the CDFs equals the area between the quantile functions,
    ``W = integral_0^1 |Q_a(t) - Q_b(t)| dt``, a sum over the merged steps ``k/n`` and ``l/m``
    of ``[0, 1]``, read per step of either sample with integer arithmetic (no merge either):
    ``mean |a - b|`` when ``n == m``.
    """
    a, b, n, m = merged.a, merged.b, merged.n, merged.m
    right = np.searchsorted(b, a, side="right")
    # b[right - 1] == a[k] where a current value equals a reference one (right == 0: b[0] > a[k], not equal)
    shared = bool(np.equal(b.take(np.maximum(right - 1, 0)), a).any())
    left = np.searchsorted(b, a, side="left") if shared else right
    k = np.arange(n, dtype=np.int64)
    k *= m  # k m
    up = int(np.max((k + m) - right * n))  # (k + 1) m - r_k n
    down = int(np.max(left * n - k))  # l_k n - k m
    d = min(max(up, down, 0) / (n * m), 1.0)
    if n == m:
        w = float(np.abs(a - b).sum()) / n
    else:
        g = math.gcd(n, m)
        n_, m_ = n // g, m // g  # steps k/n = k m_/lcm and l/m = l n_/lcm, on integers up to lcm
        lcm = n * m_
        # a step: b[the current steps below it] against a[k]; its width from the step before, of either sample
        ka = np.arange(1, n + 1, dtype=np.int64) * m_
        below = (ka - 1) // n_
        width = ka - np.maximum(ka - m_, below * n_)
        w = float(np.dot(width.astype(np.float64), np.abs(a - b[below])))
        # a current step: a[the reference steps at or below it] against b[l] (a tie has width 0)
        lb = np.arange(1, m + 1, dtype=np.int64) * n_
        upto = lb // m_
        width = lb - np.maximum(lb - n_, upto * m_)
        np.minimum(upto, n - 1, out=upto)
        w = (w + float(np.dot(width.astype(np.float64), np.abs(a[upto] - b)))) / lcm
    return d, w


def ks_wasserstein_weighted(values: np.ndarray, counts: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(KS statistic D, Wasserstein-1 distance) of a weighted reference sample and a current sample ``b``.

    ``values``: the reference's distinct values, sorted, each occurring ``counts`` times (a
    stored :class:`~loopml.store.reference.DriftReference` column). The same CDF formulas as
    SciPy's ``ks_2samp`` and ``wasserstein_distance(u, v, u_weights=counts)``, read at every
    value of either sample: equal to them on the expanded sample (tests/monitor/test_reference.py).
    """
    b = sort(b)
    both = np.concatenate([values, b])
    both.sort(kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)])
    f_ref = cum[np.searchsorted(values, both, side="right")] / cum[-1]
    f_cur = np.searchsorted(b, both, side="right") / len(b)
    diff = np.abs(f_ref - f_cur)
    return float(min(diff.max(), 1.0)), float(np.dot(diff[:-1], np.diff(both)))


def ks_pvalues(d: np.ndarray, n: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Two-sided KS p-values for statistics ``d`` of samples of ``n`` and ``m`` values, for every column at once.

    The limiting Kolmogorov distribution with Stephens' small-sample correction,
    ``kstwobign.sf((sqrt(en) + 0.12 + 0.11 / sqrt(en)) * d)`` with ``en = n m / (n + m)``
    (what SciPy's ``ks_2samp`` used before 1.5). ``ks_2samp`` now evaluates the finite-n
    distribution ``kstwo.sf(d, round(en))``, whose cost grows with n where the p-value is
    small (36 ms per column at en = 50,000, 0.6 s at 500,000, measured); the two agree
    within 2e-3 absolute at en >= 5,000 and the gap shrinks as 1/sqrt(en) (the test holds
    them to 2e-3). drift uses SciPy's exact ``ks_2samp`` itself up to :data:`EXACT_KS_MAX_N` rows a side.
    """
    n, m = np.asarray(n, dtype=np.float64), np.asarray(m, dtype=np.float64)
    root = np.sqrt(n * m / (n + m))
    z = (root + 0.12 + 0.11 / root) * np.asarray(d, dtype=np.float64)
    return np.clip(np.asarray(sps.kstwobign.sf(z), dtype=np.float64), 0.0, 1.0)


def ks_exact(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """SciPy's own ``ks_2samp(a, b)`` (exact p-value up to 10,000 values a side): (statistic, p-value)."""
    res = sps.ks_2samp(a, b)
    return float(res.statistic), float(res.pvalue)


def chi2_pvalues(statistic: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """``chi2.sf(statistic, dof)`` for every column at once; 1 where there is nothing to test (dof 0)."""
    statistic, dof = np.asarray(statistic, dtype=np.float64), np.asarray(dof, dtype=np.float64)
    p = np.ones(len(statistic))
    ok = dof > 0
    p[ok] = sps.chi2.sf(statistic[ok], dof[ok])
    return p


def pool_rare(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Cells of the 2 x K table with an expected count under :data:`MIN_EXPECTED` merged into one.

    The pooled cell joins the smallest remaining one while it is still too small. Returns
    the reduced counts and how many cells were pooled.
    """
    ref, cur = np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64)
    keep = (ref + cur) > 0
    ref, cur = ref[keep], cur[keep]
    total, share = ref.sum() + cur.sum(), min(ref.sum(), cur.sum())
    if total == 0:
        return ref, cur, 0
    expected_min = (ref + cur) * share / total  # the smaller row's expected count per cell
    rare = expected_min < MIN_EXPECTED
    if rare.sum() == 0:
        return ref, cur, 0
    pooled_r, pooled_c = ref[rare].sum(), cur[rare].sum()
    ref, cur = ref[~rare], cur[~rare]
    n_pooled = int(rare.sum())
    while len(ref) and (pooled_r + pooled_c) * share / total < MIN_EXPECTED:
        j = int(np.argmin(ref + cur))
        pooled_r, pooled_c = pooled_r + ref[j], pooled_c + cur[j]
        ref, cur = np.delete(ref, j), np.delete(cur, j)
        n_pooled += 1
    return np.append(ref, pooled_r), np.append(cur, pooled_c), n_pooled


def chi2_homogeneity(ref: np.ndarray, cur: np.ndarray) -> tuple[float, int, int]:
    """(chi-square statistic, degrees of freedom, cells pooled) of the 2 x K table of counts.

    The statistic equals ``scipy.stats.chi2_contingency([ref, cur], correction=False)``
    on the pooled table; the p-value is ``chi2.sf(statistic, dof)`` (drift computes those
    for every column in one call). Fewer than two cells left: statistic 0, dof 0.
    """
    r, c, pooled = pool_rare(ref, cur)
    if len(r) < 2 or r.sum() == 0 or c.sum() == 0:
        return 0.0, 0, pooled
    table = np.vstack([r, c])
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    return float(((table - expected) ** 2 / expected).sum()), len(r) - 1, pooled


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, 0..1) of two count or probability vectors.

    Equal to ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p, q = p / p.sum(), q / q.sum()
    mid = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / mid), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log2(q / mid), 0.0).sum()
    return float(np.sqrt(max((kl_p + kl_q) / 2, 0.0)))


def wasserstein_counts(values: np.ndarray, ref: np.ndarray, cur: np.ndarray) -> float:
    """Wasserstein-1 distance of two distributions given as counts over the same sorted ``values``.

    Equal to ``scipy.stats.wasserstein_distance(values, values, ref, cur)``.
    """
    if len(values) < 2:
        return 0.0
    cdf_r = np.cumsum(ref) / np.sum(ref)
    cdf_c = np.cumsum(cur) / np.sum(cur)
    return float(np.dot(np.abs(cdf_r - cdf_c)[:-1], np.diff(values)))


def two_proportions(k1: np.ndarray, n1: np.ndarray, k2: np.ndarray, n2: np.ndarray) -> np.ndarray:
    """Two-sided p-values of the pooled two-proportion z-test (k1 of n1 against k2 of n2).

    The same as the 2 x 2 chi-square test without Yates correction (z**2 is its statistic).
    Where both proportions are 0 or both 1 there is nothing to test: p = 1.
    """
    k1, n1, k2, n2 = (np.asarray(v, dtype=np.float64) for v in (k1, n1, k2, n2))
    pooled = (k1 + k2) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (k1 / n1 - k2 / n2) / se, 0.0)
    return np.asarray(2 * sps.norm.sf(np.abs(z)), dtype=np.float64)


def new_category_pvalue(new_rows: int, n_current: int, singletons: int, n_reference: int) -> float:
    """How unlikely ``new_rows`` of ``n_current`` rows in categories the reference never saw are by chance.

    Under no drift a current row falls in a category absent from a reference sample of
    ``n_reference`` rows with probability about the Good-Turing missing mass, (categories
    seen once in the reference) / ``n_reference`` (at least 1 / ``n_reference``); the p-value
    is the binomial tail ``P(X >= new_rows)``.
    """
    if new_rows == 0 or n_current == 0 or n_reference == 0:
        return 1.0
    mass = max(singletons, 1) / n_reference
    return float(sps.binom.sf(new_rows - 1, n_current, min(mass, 1.0)))


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error rate); NaN stays NaN, outside the family.

    Equal to ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]``: sort
    ascending, multiply the i-th smallest by (m - i), take the running maximum, cap at 1.
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out


def json_scalar(v: object) -> object:
    """A JSON-ready scalar for a stored result: NumPy types unwrapped, NaN and infinities as None."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
