"""Per-feature data drift: has the data a model sees changed since its reference?

>>> import pandas as pd
>>> rng = np.random.default_rng(0)
>>> ref = pd.DataFrame({"age": rng.normal(40, 10, 5000), "plan": rng.choice(["a", "b", "c"], 5000)})
>>> cur = pd.DataFrame({"age": rng.normal(45, 10, 5000), "plan": rng.choice(["a", "b", "c"], 5000)})
>>> report = drift(ref, cur)
>>> report.drifted, report.drifted_features
(True, ['age'])
>>> report.features[["feature", "kind", "test", "effect_name", "drifted"]]
  feature         kind test     effect_name  drifted
0     age      numeric   ks  wasserstein/sd     True
1    plan  categorical chi2  jensen-shannon    False

Each column gets a test suited to it, with SciPy's null distributions:

========================  =================================================  =========================
column                    test                                               effect size
========================  =================================================  =========================
numeric, continuous       two-sample Kolmogorov-Smirnov (``ks``)             Wasserstein-1 / reference sd
numeric, few values       chi-square on the value counts (``chi2``)          Wasserstein-1 / reference sd
categorical, boolean      chi-square on the category counts (``chi2``)       Jensen-Shannon distance
========================  =================================================  =========================

"Few values" is at most :data:`MAX_LEVELS` distinct values in the reference with at
least 5 rows per value on average (integer codes, counts, ratings): the KS null
distribution assumes no ties, and with ties its p-value is conservative, so such a
column is compared cell by cell instead. A column is flagged only when its test is
significant after Holm's correction over every test of the report (family-wise error
rate ``alpha``) **and** its effect is at least the documented minimum
(:data:`MIN_EFFECT`): with 100,000 rows a side a KS test finds changes far too small to
matter, and with 50 rows an effect estimate is mostly noise.

Besides its distribution, each column's missing-value rate (NaN, None and infinities) is
compared with a two-proportion test, and a categorical column's share of rows in
categories the reference never saw with a binomial test against the Good-Turing
estimate of unseen mass; either can flag a column on its own. A column with fewer than
:data:`MIN_ROWS` values on a side gets no distribution test ("not enough data"), never a
false alarm.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ArgumentError, ArgumentTypeError
from ..files import atomic_write
from ..store.reference import (
    CategoricalColumn,
    DriftReference,
    NumericColumn,
    array_table,
    column_kind,
)
from . import stats
from .drift_html import render
from .multivariate import multivariate_drift

__all__ = ["DriftReport", "MAX_LEVELS", "MIN_EFFECT", "MIN_ROWS", "drift", "read_table"]

MIN_ROWS = 30
"""Fewer values than this on either side (missing ones left out): "not enough data", no test."""

MAX_LEVELS = 100
"""A numeric column with at most this many distinct reference values (and ties) is compared by counts."""

MIN_EFFECT: dict[str, float] = {
    # Half the smallest planted drift of the shared generator (a 0.1 sd mean shift, whose W/sd is 0.1);
    # Evidently's 0.1 threshold misses that shift. Undrifted columns at 100,000 rows measure under 0.01.
    "wasserstein/sd": 0.05,
    # The Jensen-Shannon distance between N(0, 1) and N(0.05, 1): the same size of change as the numeric minimum.
    "jensen-shannon": 0.02,
    # Missing-value rate and the share of rows in unseen categories: one percentage point.
    "missing rate": 0.01,
    "new category rate": 0.01,
}
"""The smallest effect that can flag a column (significance alone cannot); ``drift(min_effect=...)`` overrides."""

COLUMNS = [
    "feature", "kind", "test", "statistic", "p_value", "p_adjusted", "effect", "effect_name", "drifted",
    "distribution_drifted", "n_reference", "n_current",
    "missing_reference", "missing_current", "missing_p_value", "missing_p_adjusted", "missing_drifted",
    "new_categories", "new_rate", "new_p_value", "new_p_adjusted", "new_drifted", "note",
]
"""The columns of :attr:`DriftReport.features`, in order."""

HIST_BINS = 20
TOP_CATEGORIES = 12

# -- the report ---------------------------------------------------------------


@dataclass
class DriftReport:
    """What :func:`drift` found: one row per feature, and whether the data as a whole drifted.

    ``features`` has the columns of :data:`COLUMNS`; ``multivariate`` is the joint test's
    result (``test``, ``statistic``, ``p_value``, ``drifted``) or None when not computed;
    ``histograms`` holds, per feature, the binned shares drawn by :meth:`to_html`.

    >>> report = drift(pd.DataFrame({"x": np.arange(200.0)}), pd.DataFrame({"x": np.arange(200.0) + 100}))
    >>> report.drifted, report.to_dict()["features"][0]["test"]
    (True, 'ks')
    """

    features: pd.DataFrame
    alpha: float
    min_effect: dict[str, float]
    n_reference: int
    n_current: int
    multivariate: dict[str, Any] | None = None
    histograms: dict[str, dict[str, Any]] = field(default_factory=dict)
    correction: str = "holm"

    @property
    def drifted(self) -> bool:
        """True when any feature drifted (or the multivariate test, when it ran)."""
        multi = bool(self.multivariate and self.multivariate.get("drifted"))
        return bool(self.features["drifted"].any()) or multi

    @property
    def drifted_features(self) -> list[str]:
        """The names of the features flagged, in column order."""
        return [str(f) for f in self.features.loc[self.features["drifted"], "feature"]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: settings, ``drifted``, one record per feature, ``multivariate``, ``histograms``."""
        records = [{k: stats.json_scalar(v) for k, v in row.items()} for row in self.features.to_dict(orient="records")]
        return {
            "drifted": self.drifted, "drifted_features": self.drifted_features, "alpha": self.alpha,
            "correction": self.correction, "min_effect": dict(self.min_effect),
            "n_reference": self.n_reference, "n_current": self.n_current, "features": records,
            "multivariate": None if self.multivariate is None else {k: stats.json_scalar(v) for k, v in self.multivariate.items()},
            "histograms": self.histograms,
        }

    def to_html(self, path: str | Path) -> Path:
        """Write the report as one standalone HTML file (inline CSS and SVG, nothing fetched); returns its path."""
        return atomic_write(path, render(self.to_dict()).encode("utf-8"))

    def __repr__(self) -> str:
        flagged = self.drifted_features
        return (f"<DriftReport {len(self.features)} features, {len(flagged)} drifted"
                + (f": {', '.join(flagged[:5])}{', ...' if len(flagged) > 5 else ''}" if flagged else "") + ">")




# -- reading the inputs -------------------------------------------------------

TABLE_SUFFIXES = (".csv", ".parquet", ".npz")


def read_table(path: str | Path, *, role: str = "data") -> pd.DataFrame:
    """A ``.csv``, ``.parquet`` or ``.npz`` file as a DataFrame (an ``.npz``: its array ``x``, or its only array).

    >>> pd.DataFrame({"a": [1, 2]}).to_csv("t.csv", index=False)
    >>> read_table("t.csv").shape
    (2, 1)
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ArgumentError(f"Argument {role} should be a .csv, .parquet or .npz file, got {str(p)!r}")
    if not p.is_file():
        raise ArgumentError(f"Argument {role} should be an existing file; {str(p)!r} does not exist")
    if suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as archive:
                names = list(archive.files)
                if "x" not in names and len(names) != 1:
                    raise ArgumentError(
                        f"Argument {role} should be an .npz with an array 'x' (or a single array); {p.name} has {names}"
                    )
                x = archive["x" if "x" in names else names[0]]
        except (OSError, ValueError) as exc:
            raise ArgumentError(f"Argument {role} should be a NumPy .npz archive; {str(p)!r} does not read as one: {exc}") from exc
        return array_table(x, role)
    try:
        if suffix == ".csv":
            return pd.read_csv(p)
        return pd.read_parquet(p)
    except ImportError as exc:
        raise ModuleNotFoundError("Reading .parquet files needs pyarrow: pip install 'loopml[parquet]'") from exc
    except Exception as exc:  # pandas and pyarrow raise many parser errors; the user's file is at fault, say which
        raise ArgumentError(f"Argument {role} should be a readable {suffix} table; {str(p)!r}: {type(exc).__name__}: {exc}") from exc


def _frame(data: Any, role: str) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, pd.Series):
        return data.to_frame(name=str(data.name) if data.name is not None else "x0")
    if isinstance(data, (str, Path)):
        if Path(data).suffix.lower() not in TABLE_SUFFIXES:
            raise ArgumentError(
                f"Argument {role} should be a DataFrame, an array, a loopml Dataset or a .csv/.parquet/.npz path, "
                f"got {str(data)!r}"
            )
        return read_table(data, role=role)
    if "loopml.data.dataset" in sys.modules:  # a Dataset exists only if loopml.data (torch) was imported
        from ..data.dataset import Dataset

        if isinstance(data, Dataset):
            x = data.x.numpy()
            if data.kind == "image":
                return array_table(x, role)
            frame = pd.DataFrame(x.astype(np.float64), columns=data.feature_names, copy=False)
            for name, levels in data.categories.items():  # codes back to their names, so two datasets compare
                codes = frame[name].to_numpy()
                labels = np.asarray(levels, dtype=object)
                ok = np.isfinite(codes)
                decoded = np.full(len(codes), None, dtype=object)
                decoded[ok] = labels[codes[ok].astype(np.int64)]
                frame[name] = decoded
            return frame
    if isinstance(data, (np.ndarray, list, tuple)) or hasattr(data, "__array__"):
        return array_table(data, role)
    raise ArgumentTypeError(
        f"Argument {role} should be a pandas DataFrame, a NumPy array, a loopml Dataset or a .csv/.parquet/.npz path, "
        f"got {type(data).__name__}"
    )


# -- the comparison -----------------------------------------------------------


def drift(
    reference: Any,
    current: Any,
    *,
    columns: Sequence[str] | None = None,
    target: str | None = None,
    alpha: float = 0.05,
    min_effect: Mapping[str, float] | None = None,
    min_rows: int = MIN_ROWS,
    threads: int | None = None,
    multivariate: bool | None = None,
    seed: int = 0,
) -> DriftReport:
    """Compare ``current`` with ``reference``, feature by feature (see the module docstring).

    ``reference`` and ``current``: DataFrames, NumPy arrays (columns ``x0``, ``x1``, ...;
    images by per-channel mean and sd), loopml Datasets, or ``.csv`` / ``.parquet`` /
    ``.npz`` paths, with the same columns. ``columns``: compare only these; ``target``: a
    label column left out of the features. ``alpha``: the family-wise error rate of Holm's
    correction over all the report's tests. ``min_effect``: overrides of :data:`MIN_EFFECT`.
    ``threads``: columns compared at once (default: the CPU count, at most 4); the result
    does not depend on it. ``multivariate``: also run
    :func:`~loopml.monitor.multivariate.multivariate_drift` on the same columns (a
    classifier two-sample test of the joint distribution, seeded by ``seed``; missing
    values kept, so their pattern counts), whose result is ``report.multivariate``; by
    default it runs when ``reference`` holds rows.

    ``reference`` may also be a stored :class:`~loopml.store.reference.DriftReference`
    (what a registered version keeps of its training inputs): every per-column test then
    runs against it, exactly where it holds a column's values and within its recorded
    bounds where it holds a quantile sketch (the row's ``note`` says how close); the
    multivariate test runs on its row sample (up to 20,000 rows of the training inputs),
    when it keeps one, against as many current rows (a seeded sample of them).

    >>> rng = np.random.default_rng(1)
    >>> report = drift(rng.normal(size=(1000, 3)), rng.normal(size=(1000, 3)))
    >>> report.drifted, list(report.features["feature"])
    (False, ['x0', 'x1', 'x2'])
    """
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise ArgumentError(f"Argument alpha should be a number between 0 and 1, e.g. 0.05, got {alpha!r}")
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 2:
        raise ArgumentError(f"Argument min_rows should be an integer of at least 2, got {min_rows!r}")
    if threads is None:
        threads = min(os.cpu_count() or 1, 4)
    if multivariate is not None and not isinstance(multivariate, bool):
        raise ArgumentTypeError(f"Argument multivariate should be True, False or None (when there are rows), got {multivariate!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ArgumentError(f"Argument threads should be a positive integer, got {threads!r}")
    thresholds = dict(MIN_EFFECT)
    for key, value in (min_effect or {}).items():
        if key not in MIN_EFFECT:
            raise ArgumentError(f"Argument min_effect should have keys among {sorted(MIN_EFFECT)}, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ArgumentError(f"Argument min_effect[{key!r}] should be a number >= 0, got {value!r}")
        thresholds[key] = float(value)
    stored = reference if isinstance(reference, DriftReference) else None
    sample = stored.sample_table() if stored is not None else None
    if stored is not None and multivariate and sample is None:
        raise ArgumentError("Argument multivariate=True needs reference rows, and this stored DriftReference keeps no row "
                            "sample of its columns (inputs that are not all numbers, or images): pass multivariate=False, "
                            "or the reference rows themselves")
    cur = _frame(current, "current")
    ref = _frame(reference, "reference") if stored is None else pd.DataFrame(columns=list(stored.columns))
    names = _feature_names(ref, cur, columns, target)

    kinds = {label: _common_kind(str(label), stored.columns[str(label)].kind if stored is not None
                                 else column_kind(ref[label], str(label), "reference"),
                                 column_kind(cur[label], str(label), "current"))
             for label in names}

    def one(label: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        if stored is not None:
            return _against_stored(str(label), kinds[label], stored.columns[str(label)], cur[label], min_rows)
        if kinds[label] == "numeric":
            return _numeric(str(label), ref[label], cur[label], min_rows)
        return _categorical(str(label), kinds[label], ref[label], cur[label], min_rows)

    # NumPy's sorts and arithmetic release the GIL: numeric columns run on `threads` threads
    workers = min(threads, len(names))
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, names))
    else:
        results = [one(label) for label in names]
    rows = [row for row, _ in results]
    hists = {str(label): hist for label, (_, hist) in zip(names, results) if hist}
    features = _decide(rows, alpha, thresholds)
    joint_ref = ref if stored is None else sample
    joint_cur = cur[names]
    if stored is not None and joint_ref is not None and len(joint_cur) > len(joint_ref):
        # a stored reference keeps a sample of rows: the current side is sampled to the same size (seeded), so the
        # classifier's held-out rows are balanced; 90,000 current rows against 10,000 cost 5x the time for an AUC
        # standard error of 0.0030 instead of 0.0041 (benchmarks/drift_fromlog.py)
        joint_cur = joint_cur.sample(n=len(joint_ref), random_state=seed)
    joint = (multivariate_drift(joint_ref[names], joint_cur, seed=seed, missing="keep")
             if joint_ref is not None and multivariate is not False else None)
    return DriftReport(features=features, alpha=float(alpha), min_effect=thresholds,
                       n_reference=len(ref) if stored is None else stored.n_rows,
                       n_current=len(cur), multivariate=joint, histograms=hists)


def _feature_names(ref: pd.DataFrame, cur: pd.DataFrame, columns: Sequence[str] | None, target: str | None) -> list[Any]:
    for frame, role in ((ref, "reference"), (cur, "current")):
        dup = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        if dup:
            raise ArgumentError(f"Argument {role} should have unique column names, got {dup} more than once")
    ref_cols = [c for c in ref.columns if c != target]
    cur_cols = [c for c in cur.columns if c != target]
    if target is not None and target not in ref.columns and target not in cur.columns:
        raise ArgumentError(f"Argument target should be a column of reference or current, got {target!r}")
    if columns is not None:
        if isinstance(columns, str):
            raise ArgumentTypeError(f"Argument columns should be a list of column names, got the string {columns!r}")
        wanted = list(columns)
        for cols, role in ((ref_cols, "reference"), (cur_cols, "current")):
            absent = [str(c) for c in wanted if c not in cols]
            if absent:
                raise ArgumentError(f"Argument columns should name columns of {role}; it has no {absent}")
        return wanted
    only_ref = [str(c) for c in ref_cols if c not in set(cur_cols)]
    only_cur = [str(c) for c in cur_cols if c not in set(ref_cols)]
    if only_ref or only_cur:
        raise ArgumentError(
            "Argument current should have the columns of reference: "
            + "; ".join(p for p in (f"missing {only_ref}" if only_ref else "", f"extra {only_cur}" if only_cur else "") if p)
            + "; pass columns=[...] to compare the ones both have"
        )
    if not ref_cols:
        raise ArgumentError("Argument reference should have at least one feature column, got none")
    return ref_cols


def _common_kind(name: str, kr: str, kc: str) -> str:
    if kr == kc:
        return "numeric" if kr == "empty" else kr
    if kr == "empty" or kc == "empty":  # every value missing on one side: the other side says what it is
        return kc if kr == "empty" else kr
    if {kr, kc} <= {"boolean", "categorical"}:
        return "categorical"
    raise ArgumentTypeError(
        f"Argument current should have the reference's type in column {name!r}: {kr} in reference, {kc} in current"
    )


def _row(name: str, kind: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "feature": name, "kind": kind, "test": "none", "statistic": math.nan, "p_value": math.nan,
        "effect": math.nan, "effect_name": "jensen-shannon" if kind in ("categorical", "boolean") else "wasserstein/sd",
        "new_categories": 0, "new_rate": 0.0, "new_p_value": math.nan, "note": "", "_dof": 0,
    }
    row.update(values)
    return row



def _discrete(row: dict[str, Any], values: np.ndarray, ca: np.ndarray, cb: np.ndarray) -> float:
    """A few-valued column's chi-square test of its counts into ``row``; returns the Wasserstein distance."""
    stat, dof, pooled = stats.chi2_homogeneity(ca, cb)
    row.update(kind="discrete", test="chi2", statistic=stat, _dof=dof)
    if pooled:
        row["note"] = f"{pooled} rare values pooled"
    return stats.wasserstein_counts(values, ca, cb)

def _numeric(name: str, ref: pd.Series, cur: pd.Series, min_rows: int) -> tuple[dict[str, Any], dict[str, Any]]:
    a, miss_a = stats.finite(ref.to_numpy(dtype=np.float64, na_value=np.nan))
    b, miss_b = stats.finite(cur.to_numpy(dtype=np.float64, na_value=np.nan))
    row = _row(name, "numeric", n_reference=len(a), n_current=len(b), missing_reference=miss_a, missing_current=miss_b)
    if len(a) < min_rows or len(b) < min_rows:
        row["note"] = f"not enough data: {len(a)} values in reference, {len(b)} in current (at least {min_rows} needed)"
        return row, (_numeric_hist(stats.merge(a, b)) if len(a) + len(b) else {})
    merged = stats.merge(a, b)
    sd = float(a.std(ddof=1))
    distinct = merged.ref_distinct
    if distinct <= MAX_LEVELS and len(a) >= 5 * distinct:  # few values, many ties: compare counts
        w = _discrete(row, *merged.counts_at_ends())
    else:
        d, w = stats.ks_wasserstein(merged)
        p = math.nan  # computed below for every such column in one call
        if max(len(a), len(b)) <= stats.EXACT_KS_MAX_N:  # SciPy's exact p-value; its per-call cost is small here
            d, p = stats.ks_exact(a, b)
        row.update(test="ks", statistic=d, p_value=p)
    row["effect"] = w / sd if sd > 0 else (math.inf if w > 0 else 0.0)
    return row, _numeric_hist(merged)


def _against_stored(name: str, kind: str, col: NumericColumn | CategoricalColumn, cur: pd.Series,
                    min_rows: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """One column's row and histogram against a stored reference column (see :func:`drift`)."""
    if isinstance(col, CategoricalColumn):
        return _categorical_counts(name, kind, col.counts, col.missing, cur, min_rows)
    if kind != "numeric":  # an all-missing reference column against categories
        return _categorical_counts(name, kind, {}, col.missing, cur, min_rows)
    b, miss_b = stats.finite(cur.to_numpy(dtype=np.float64, na_value=np.nan))
    n = col.n
    row = _row(name, "numeric", n_reference=n, n_current=len(b), missing_reference=col.missing, missing_current=miss_b)
    hist = _stored_hist(col, b) if n + len(b) else {}
    if n < min_rows or len(b) < min_rows:
        row["note"] = f"not enough data: {n} values in reference, {len(b)} in current (at least {min_rows} needed)"
        return row, hist
    sd = col.sd
    distinct = len(col.values)
    if col.exact and distinct <= MAX_LEVELS and n >= 5 * distinct:  # few values, many ties: compare counts
        values = np.union1d(col.values, b)
        ca = np.zeros(len(values), dtype=np.int64)
        ca[np.searchsorted(values, col.values)] = col.counts
        uniq, cnt = np.unique(b, return_counts=True)
        cb = np.zeros(len(values), dtype=np.int64)
        cb[np.searchsorted(values, uniq)] = cnt
        w = _discrete(row, values, ca, cb)
    else:
        if col.exact and max(n, len(b)) <= stats.EXACT_KS_MAX_N:  # the sample itself: SciPy's exact p-value
            d, p = stats.ks_exact(col.sample(), b)
            _, w = stats.ks_wasserstein_weighted(col.values, col.counts, b)
        else:
            (d, w), p = stats.ks_wasserstein_weighted(col.values, col.counts, b), math.nan
        row.update(test="ks", statistic=d, p_value=p)
        if not col.exact:
            row["note"] = (f"reference sketch: statistic within {col.eps_ks:.1e}, "
                           f"effect within {col.eps_w / sd if sd > 0 else 0.0:.1e}")
    row["effect"] = w / sd if sd > 0 else (math.inf if w > 0 else 0.0)
    return row, hist


def _stored_hist(col: NumericColumn, b: np.ndarray) -> dict[str, Any]:
    lo = min(col.low if col.n else math.inf, float(b.min()) if len(b) else math.inf)
    hi = max(col.high if col.n else -math.inf, float(b.max()) if len(b) else -math.inf)
    edges = np.linspace(lo, hi, HIST_BINS + 1) if hi > lo else np.array([lo, lo])
    ref_cum = col.cdf_counts(edges, side="left").astype(np.float64)
    ref_cum[-1] = col.n
    cur_cum = np.searchsorted(np.sort(b), edges, side="left").astype(np.float64)
    cur_cum[-1] = len(b)
    ref, cur = np.diff(ref_cum) / max(col.n, 1), np.diff(cur_cum) / max(len(b), 1)
    return {"type": "numeric", "edges": [float(e) for e in edges],
            "reference": [round(float(v), 5) for v in ref], "current": [round(float(v), 5) for v in cur]}


def _numeric_hist(merged: stats.Merged) -> dict[str, Any]:
    lo, hi = merged.low, merged.high
    edges = np.linspace(lo, hi, HIST_BINS + 1) if hi > lo else np.array([lo, lo])
    ref, cur = merged.shares_below(edges)
    return {"type": "numeric", "edges": [float(e) for e in edges],
            "reference": [round(float(v), 5) for v in ref], "current": [round(float(v), 5) for v in cur]}


def _categorical(name: str, kind: str, ref: pd.Series, cur: pd.Series, min_rows: int) -> tuple[dict[str, Any], dict[str, Any]]:
    vr = ref.value_counts(dropna=True)
    vr = vr[vr > 0]
    ref_counts = dict(zip(vr.index, vr.to_numpy(dtype=np.int64)))
    return _categorical_counts(name, kind, ref_counts, len(ref) - int(vr.sum()), cur, min_rows)


def _categorical_counts(name: str, kind: str, ref_counts: dict[Any, Any], missing_ref: int, cur: pd.Series,
                        min_rows: int) -> tuple[dict[str, Any], dict[str, Any]]:
    vc = cur.value_counts(dropna=True)
    vc = vc[vc > 0]
    n_a, n_b = int(sum(ref_counts.values())), int(vc.sum())
    cur_counts = dict(zip(vc.index, vc.to_numpy(dtype=np.int64)))
    new = [k for k in cur_counts if k not in ref_counts]
    new_set = set(new)
    keys = list(ref_counts) + new
    ca = np.array([ref_counts.get(k, 0) for k in keys], dtype=np.float64)
    cb = np.array([cur_counts.get(k, 0) for k in keys], dtype=np.float64)
    new_rows = int(sum(cur_counts[k] for k in new))
    row = _row(name, kind, n_reference=n_a, n_current=n_b, missing_reference=missing_ref, missing_current=len(cur) - n_b,
               new_categories=len(new), new_rate=new_rows / n_b if n_b else 0.0)
    if new_rows and n_a >= min_rows and n_b >= min_rows:
        row["new_p_value"] = stats.new_category_pvalue(new_rows, n_b, int(np.sum(ca == 1)), n_a)
    order = np.argsort(-(ca / max(n_a, 1) + cb / max(n_b, 1)), kind="stable")
    top = order[:TOP_CATEGORIES]
    hist = {
        "type": "categorical", "labels": [str(keys[i]) for i in top],
        "reference": [round(float(ca[i]) / max(n_a, 1), 5) for i in top],
        "current": [round(float(cb[i]) / max(n_b, 1), 5) for i in top],
        "new": [keys[i] in new_set for i in top],
    }
    if n_a < min_rows or n_b < min_rows:
        row["note"] = f"not enough data: {n_a} values in reference, {n_b} in current (at least {min_rows} needed)"
        return row, hist
    stat, dof, pooled = stats.chi2_homogeneity(ca, cb)
    row.update(test="chi2", statistic=stat, _dof=dof, effect=stats.jensen_shannon(ca, cb))
    if pooled:
        row["note"] = f"{pooled} rare categories pooled"
    return row, hist


def _decide(rows: list[dict[str, Any]], alpha: float, thresholds: dict[str, float]) -> pd.DataFrame:
    """p-values computed in bulk, Holm's correction over every test, and the flags."""
    f = pd.DataFrame(rows)
    ks = (f["test"] == "ks").to_numpy() & f["p_value"].isna().to_numpy()
    if ks.any():
        f.loc[ks, "p_value"] = stats.ks_pvalues(f.loc[ks, "statistic"].to_numpy(), f.loc[ks, "n_reference"].to_numpy(),
                                                f.loc[ks, "n_current"].to_numpy())
    chi = (f["test"] == "chi2").to_numpy()
    if chi.any():
        # one cell left (a constant column on both sides): dof 0, nothing to test, p = 1
        f.loc[chi, "p_value"] = stats.chi2_pvalues(f.loc[chi, "statistic"].to_numpy(), f.loc[chi, "_dof"].to_numpy())
    total_r = (f["n_reference"] + f["missing_reference"]).to_numpy(dtype=np.float64)
    total_c = (f["n_current"] + f["missing_current"]).to_numpy(dtype=np.float64)
    miss_r, miss_c = f["missing_reference"].to_numpy(dtype=np.float64), f["missing_current"].to_numpy(dtype=np.float64)
    testable = (miss_r + miss_c > 0) & (total_r > 0) & (total_c > 0)
    miss_p = np.full(len(f), np.nan)
    if testable.any():
        miss_p[testable] = stats.two_proportions(miss_r[testable], total_r[testable], miss_c[testable], total_c[testable])
    f["missing_p_value"] = miss_p
    main_p = f["p_value"].to_numpy(dtype=np.float64)
    new_p = f["new_p_value"].to_numpy(dtype=np.float64)
    adjusted = stats.holm(np.concatenate([main_p, miss_p, new_p]))  # one family: every test the report ran
    k = len(f)
    f["p_adjusted"], f["missing_p_adjusted"], f["new_p_adjusted"] = adjusted[:k], adjusted[k:2 * k], adjusted[2 * k:]
    with np.errstate(divide="ignore", invalid="ignore"):
        rate_r = np.where(total_r > 0, miss_r / total_r, 0.0)
        rate_c = np.where(total_c > 0, miss_c / total_c, 0.0)
    minimum = f["effect_name"].map(thresholds).to_numpy(dtype=np.float64)
    f["distribution_drifted"] = (f["p_adjusted"].to_numpy() < alpha) & (f["effect"].to_numpy(dtype=np.float64) >= minimum)
    f["missing_drifted"] = (f["missing_p_adjusted"].to_numpy() < alpha) & (np.abs(rate_c - rate_r) >= thresholds["missing rate"])
    f["new_drifted"] = (f["new_p_adjusted"].to_numpy() < alpha) & (f["new_rate"].to_numpy() >= thresholds["new category rate"])
    f["drifted"] = f["distribution_drifted"] | f["missing_drifted"] | f["new_drifted"]
    f["missing_reference"] = rate_r
    f["missing_current"] = rate_c
    for col in ("n_reference", "n_current", "new_categories"):
        f[col] = f[col].astype(np.int64)
    for col in ("drifted", "distribution_drifted", "missing_drifted", "new_drifted"):
        f[col] = f[col].astype(bool)
    return f[COLUMNS].reset_index(drop=True)
