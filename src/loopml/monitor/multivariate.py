"""Multivariate drift: can a classifier tell the current rows from the reference rows?

Per-feature tests look at one column at a time, so they miss a change in how
columns move together: two columns whose correlation flips from +0.8 to -0.8
keep exactly the same marginals, and every per-column KS test passes.
:func:`multivariate_drift` compares the joint distributions with a
**classifier two-sample test** (Lopez-Paz and Oquab, 2017):

1. each side is shuffled (``seed``) and cut in two; a gradient-boosted tree
   classifier (scikit-learn's ``HistGradientBoostingClassifier``) learns to
   tell reference rows (label 0) from current rows (label 1) on equal-sized
   training halves (at most ``max_train_rows`` a side);
2. it scores the held-out rows, and the test is the one-sided Mann-Whitney U
   test (SciPy) of the current rows' scores against the reference rows'.
   The statistic is the held-out AUC, ``U / (n_ref * n_cur)``: 0.5 when the
   classifier cannot tell the two apart, 1.0 when it always can.

>>> from loopml.monitor import multivariate_drift
>>> rng = np.random.default_rng(0)
>>> ref = rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], size=5_000)
>>> cur = rng.multivariate_normal([0, 0], [[1, -0.8], [-0.8, 1]], size=5_000)   # same marginals
>>> result = multivariate_drift(ref, cur)
>>> result["drifted"], round(result["statistic"], 2), result["p_value"] < 1e-100
(True, 0.89, True)
>>> multivariate_drift(ref[:2_500], ref[2_500:])["drifted"]                       # no drift
False

**Why the p-value is valid.** The held-out rows take no part in training, so
given the trained classifier they are independent draws. With no drift, a
reference row and a current row come from the same distribution, so their
scores are exchangeable, and the rank test's null distribution holds exactly
(SciPy computes it exactly for small sides without ties, else by the normal
approximation with the tie correction, accurate at these sizes). The false-alarm
rate is therefore at most ``alpha`` whatever the classifier learned; a poor
classifier costs power, never calibration. Training on equal halves keeps the
classifier from learning the sizes of the sides; the test itself allows
unequal sides (which an accuracy-against-0.5 binomial test would not: a
classifier that always answers "the larger side" beats 0.5 with no drift).

**Why this test** (measured with ``benchmarks/drift_multivariate.py`` on the
shared generator's 55 input columns, one thread on the 2-core development
machine; docs/benchmarks.md, "Multivariate drift"): no alarm on no-drift data
for seeds 0-4 at 20,000 and 100,000 rows a side, a flipped correlation hidden
among those columns caught at both sizes (held-out AUC 0.88) where per-column KS
tests flag none of the 52 numeric columns, and at most 2 s a call at 100,000
rows a side (0.24-0.27 s at 20,000). The classifier must be non-linear: the
flipped correlation leaves both sides with the same means, so no hyperplane
separates them (``LogisticRegression`` in the same test: AUC 0.4925, p 0.97),
while the sign of ``a * b`` is two splits of a tree. The alternatives cost more
for less: an MMD test needs a kernel width and a permutation loop whose cost is
rows x permutations (alibi-detect's MMD, as the issue measured it: 12.9 s at
2,000 rows a side; its LSDD ran out of memory at 20,000), and NannyML's PCA
reconstruction error has no p-value (it alerts on 10 of 10 no-drift chunks). The
classifier also says *how* different the data are (the AUC), needs no kernel
width, takes categorical columns natively and mixes numeric scales freely. Its
limit: it finds what a classifier learns from at most 20,000 rows a side, so a
0.1 sd shift of one column in five at 20,000 rows a side reached AUC 0.509 and
p 0.014, unflagged; one-column changes are the per-feature tests' job.

What is compared:

- **arrays** (or tensors): 2-D, numeric, the same number of columns; for an
  image model pass its penultimate features (``MahalanobisDetector(model).embed(x)``,
  the features the OOD gate exports), not the pixels;
- **DataFrames**: the reference's columns (or ``columns=``), which the current
  frame must have too. Numeric and boolean columns are used as they are: a tree
  is invariant to any monotone rescaling, so standardising by the reference
  (which a distance-based test would need) would change nothing. Text and
  categorical columns are coded by the reference's categories and given to the
  classifier as categorical features (no one-hot); a category never seen in
  the reference gets one code of its own, so new categories count as drift.
  Columns with more than 250 categories in the reference (identifiers) and
  columns of other types (dates) are left out, and ``left_out`` names them
  with the reason.

Bad input is an :class:`~loopml.errors.ArgumentError` (different columns or
widths, non-numeric arrays, infinities, missing values unless ``missing=``
says what to do); too few rows is a result with ``enough_data`` False and
``drifted`` False, never a false alarm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ArgumentError, ArgumentTypeError

__all__ = ["MAX_CATEGORIES", "TEST", "multivariate_drift"]

#: the ``test`` field of every result
TEST = "classifier two-sample test (gradient-boosted trees, held-out AUC, one-sided Mann-Whitney U)"

#: a text column with more distinct values than this in the reference is left out (an identifier, not a category);
#: HistGradientBoostingClassifier takes at most 255 bins, one of them for missing values
MAX_CATEGORIES = 250

_MISSING = ("error", "drop", "keep")

#: training rows (both sides) from which the classifier stops early on a tenth of them
EARLY_STOPPING_ROWS = 200


def multivariate_drift(
    reference: Any,
    current: Any,
    *,
    seed: int = 0,
    alpha: float = 0.01,
    columns: Sequence[str] | None = None,
    missing: str = "error",
    min_rows: int = 100,
    max_train_rows: int = 20_000,
    min_auc: float = 0.5,
) -> dict[str, Any]:
    """Test whether ``current`` comes from the same joint distribution as ``reference``.

    ``reference`` and ``current``: two 2-D numeric arrays (or tensors) with the
    same number of columns, or two DataFrames (see the module docstring for how
    columns are used). ``seed`` fixes the split and the classifier;
    ``alpha`` is the significance level. ``columns`` picks DataFrame columns.
    ``missing``: what a missing value (NaN, None) does: ``"error"`` (default)
    raises, ``"drop"`` leaves out rows that have one, ``"keep"`` gives them to
    the classifier, so a change in how often a value is missing counts as drift.
    A side with fewer than ``min_rows`` usable rows gives a "not enough data"
    result. Each side trains the classifier with at most ``max_train_rows`` rows
    (half of the smaller side when that is less); every other row is held out
    for the test. ``drifted`` needs both ``p_value < alpha`` and a held-out AUC of
    at least ``min_auc`` (0.5, no minimum, by default).

    Returns a dict: ``test``, ``statistic`` (the held-out AUC; None without
    enough data), ``statistic_name`` (``"auc"``), ``p_value``, ``alpha``,
    ``drifted``, ``enough_data``, ``note``, ``rows`` (as given, reference and
    current), ``rows_used`` (after ``missing="drop"``), ``train_rows``,
    ``test_rows``, ``columns`` (the columns compared), ``categorical`` (those
    coded as categories), ``left_out`` (column -> why) and ``seed``.

    >>> rng = np.random.default_rng(1)
    >>> ref = rng.normal(size=(2_000, 3))
    >>> result = multivariate_drift(ref, rng.normal(size=(2_000, 3)) + [0, 0, 0.5])
    >>> result["drifted"], result["rows"], result["train_rows"], result["test_rows"]
    (True, (2000, 2000), (1000, 1000), (1000, 1000))
    >>> multivariate_drift(ref, ref[:10])["note"]
    'not enough data: current has 10 rows, at least 100 are needed (min_rows)'
    """
    _check_options(seed=seed, alpha=alpha, missing=missing, min_rows=min_rows,
                   max_train_rows=max_train_rows, min_auc=min_auc)
    ref, cur, names, categorical, left_out = _encode(reference, current, columns)
    rows = (int(ref.shape[0]), int(cur.shape[0]))
    ref = _handle_missing(ref, "reference", names, missing)
    cur = _handle_missing(cur, "current", names, missing)
    result: dict[str, Any] = {
        "test": TEST, "statistic": None, "statistic_name": "auc", "p_value": None, "alpha": alpha,
        "drifted": False, "enough_data": False, "note": "", "rows": rows,
        "rows_used": (int(ref.shape[0]), int(cur.shape[0])), "train_rows": (0, 0), "test_rows": (0, 0),
        "columns": names, "categorical": [names[i] for i in np.flatnonzero(categorical)],
        "left_out": left_out, "seed": seed,
    }
    for side, x in (("reference", ref), ("current", cur)):
        if x.shape[0] < min_rows:
            dropped = " after dropping rows with missing values" if missing == "drop" else ""
            result["note"] = (f"not enough data: {side} has {x.shape[0]} rows{dropped}, "
                              f"at least {min_rows} are needed (min_rows)")
            return result

    auc, p_value, train_rows, test_rows = _classifier_test(ref, cur, categorical, seed, max_train_rows)
    result.update(
        statistic=auc, p_value=p_value, enough_data=True, train_rows=train_rows, test_rows=test_rows,
        drifted=bool(p_value < alpha and auc >= min_auc),
    )
    return result


def _check_options(*, seed: int, alpha: float, missing: str, min_rows: int, max_train_rows: int,
                   min_auc: float) -> None:
    def integer(name: str, value: Any, low: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ArgumentTypeError(f"Argument {name} should be an integer >= {low}, got {value!r}")
        if value < low:
            raise ArgumentError(f"Argument {name} should be an integer >= {low}, got {value!r}")

    integer("seed", seed, 0)
    integer("min_rows", min_rows, 10)
    integer("max_train_rows", max_train_rows, 10)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ArgumentError(f"Argument alpha should be a number between 0 and 1 (exclusive), got {alpha!r}")
    if isinstance(min_auc, bool) or not isinstance(min_auc, (int, float)) or not 0.5 <= min_auc < 1:
        raise ArgumentError(f"Argument min_auc should be a number from 0.5 (no minimum) up to 1 (exclusive), got {min_auc!r}")
    if missing not in _MISSING:
        raise ArgumentError(f"Argument missing should be one of {', '.join(map(repr, _MISSING))}, got {missing!r}")


# -- turning the inputs into two float matrices -------------------------------------------------


def _encode(
    reference: Any, current: Any, columns: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, dict[str, str]]:
    """(reference, current, column names, categorical mask, left-out columns): two float64 matrices."""
    frames = isinstance(reference, pd.DataFrame), isinstance(current, pd.DataFrame)
    if all(frames):
        return _encode_frames(reference, current, columns)
    if any(frames):
        which = "current" if frames[0] else "reference"
        raise ArgumentTypeError(
            f"Argument {which} should be a DataFrame like the other side, got {type(current if frames[0] else reference).__name__}"
        )
    if columns is not None:
        raise ArgumentError("Argument columns should be None for arrays (it picks DataFrame columns); slice the arrays instead")
    ref, cur = _array(reference, "reference"), _array(current, "current")
    if ref.shape[1] != cur.shape[1]:
        raise ArgumentError(
            f"Argument current should have as many columns as the reference ({ref.shape[1]}), got {cur.shape[1]}"
        )
    names = [str(i) for i in range(ref.shape[1])]
    for side, x in (("reference", ref), ("current", cur)):
        _check_finite(x, side, names)
    return ref, cur, names, np.zeros(ref.shape[1], dtype=bool), {}


def _array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    try:
        x = np.asarray(value)
    except (TypeError, ValueError) as exc:  # ragged lists
        raise ArgumentTypeError(f"Argument {name} should be a 2-D numeric array or a DataFrame, got {type(value).__name__}") from exc
    if x.dtype.kind not in "biuf":
        raise ArgumentTypeError(
            f"Argument {name} should be a 2-D numeric array or a DataFrame (for text columns), got an array of dtype {x.dtype}"
        )
    if x.ndim != 2:
        hint = (" (rows x features; for images, the model's penultimate features, e.g. "
                "MahalanobisDetector(model).embed(x), not the pixels)" if x.ndim > 2 else " (rows x features)")
        raise ArgumentError(f"Argument {name} should be a 2-D array{hint}, got shape {x.shape}")
    if x.shape[1] == 0:
        raise ArgumentError(f"Argument {name} should have at least one column, got shape {x.shape}")
    return x.astype(np.float64, copy=False)


def _check_finite(x: np.ndarray, side: str, names: Sequence[str]) -> None:
    bad = np.isinf(x).any(axis=0)
    if bad.any():
        column = names[int(np.flatnonzero(bad)[0])]
        count = int(np.isinf(x[:, names.index(column)]).sum())
        raise ArgumentError(
            f"Argument {side} should hold finite numbers, got {count} infinite value(s) in column {column!r}"
        )


def _encode_frames(
    reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, dict[str, str]]:
    for side, frame in (("reference", reference), ("current", current)):
        if not frame.columns.is_unique:
            dupes = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
            raise ArgumentError(f"Argument {side} should have unique column names, got duplicates {dupes[:10]}")
    if columns is None:
        wanted = list(reference.columns)
        absent = [c for c in wanted if c not in current.columns]
        extra = [c for c in current.columns if c not in reference.columns]
        if absent or extra:
            raise ArgumentError(
                "Argument current should have the reference's columns (or pass columns=[...]), got "
                + "; ".join(part for part in (
                    f"missing {_names(absent)}" if absent else "", f"extra {_names(extra)}" if extra else "") if part)
            )
    else:
        if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
            raise ArgumentTypeError(f"Argument columns should be a list of column names, got {columns!r}")
        wanted = list(columns)
        for side, frame in (("reference", reference), ("current", current)):
            absent = [c for c in wanted if c not in frame.columns]
            if absent:
                raise ArgumentError(f"Argument columns should name columns of both frames; {side} lacks {_names(absent)}")
    if not wanted:
        raise ArgumentError("Argument reference should have at least one column, got none")

    ref_cols: list[np.ndarray] = []
    cur_cols: list[np.ndarray] = []
    names: list[str] = []
    categorical: list[bool] = []
    left_out: dict[str, str] = {}
    for column in wanted:
        name = str(column)
        r, c = reference[column], current[column]
        kinds = _kind(r), _kind(c)
        if kinds[0] == "other" or kinds[1] == "other":
            left_out[name] = f"a column of dtype {r.dtype if kinds[0] == 'other' else c.dtype} is not compared"
            continue
        if kinds[0] != kinds[1]:
            raise ArgumentTypeError(
                f"Argument current should have the reference's kind of column in {name!r}: "
                f"{kinds[0]} ({r.dtype}) in the reference, got {kinds[1]} ({c.dtype})"
            )
        if kinds[0] == "numeric":
            ref_cols.append(r.to_numpy(dtype=np.float64, na_value=np.nan))
            cur_cols.append(c.to_numpy(dtype=np.float64, na_value=np.nan))
            categorical.append(False)
        else:
            coded = _categories(r, c, name)
            if coded is None:
                left_out[name] = f"more than {MAX_CATEGORIES} categories in the reference (an identifier?)"
                continue
            ref_cols.append(coded[0])
            cur_cols.append(coded[1])
            categorical.append(True)
        names.append(name)
    if not names:
        raise ArgumentError(f"Argument reference should have a numeric or categorical column to compare, got only {left_out}")
    ref = np.column_stack(ref_cols) if ref_cols else np.empty((len(reference), 0))
    cur = np.column_stack(cur_cols) if cur_cols else np.empty((len(current), 0))
    mask = np.array(categorical, dtype=bool)
    for side, x in (("reference", ref), ("current", cur)):
        _check_finite(x, side, names)
    return ref, cur, names, mask, left_out


def _names(columns: Sequence[Any]) -> str:
    shown = ", ".join(repr(str(c)) for c in columns[:10])
    return f"[{shown}{', ...' if len(columns) > 10 else ''}] ({len(columns)})"


def _kind(series: pd.Series) -> str:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or (
        pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype)
    ):
        return "numeric"
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
        return "categorical"
    return "other"


def _categories(ref: pd.Series, cur: pd.Series, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Codes 0..k-1 for the reference's k categories, k for a category it never saw, NaN for missing; None past MAX_CATEGORIES."""
    try:
        levels = pd.unique(ref.dropna().astype(object))
        if len(levels) > MAX_CATEGORIES:
            return None
        index = pd.Index(levels)
        coded = []
        for series in (ref, cur):
            values = series.astype(object)
            codes = index.get_indexer(values).astype(np.float64)
            missing = values.isna().to_numpy()
            codes[(codes < 0) & ~missing] = len(levels)  # never seen in the reference
            codes[missing] = np.nan
            coded.append(codes)
    except TypeError as exc:  # unhashable values (lists, dicts) in an object column
        raise ArgumentTypeError(f"Argument reference should hold numbers or categories in column {name!r}: {exc}") from exc
    return coded[0], coded[1]


def _handle_missing(x: np.ndarray, side: str, names: Sequence[str], missing: str) -> np.ndarray:
    if missing == "keep":
        return x
    gaps = np.isnan(x)
    rows: np.ndarray = gaps.any(axis=1)
    if not rows.any():
        return x
    if missing == "drop":
        kept: np.ndarray = x[~rows]
        return kept
    per_column = gaps.sum(axis=0)
    column = int(np.argmax(per_column))
    raise ArgumentError(
        f"Argument {side} should have no missing values (or pass missing='drop' to leave those rows out, "
        f"missing='keep' to let the classifier see them), got {int(rows.sum())} row(s) with one, "
        f"{int(per_column[column])} in column {names[column]!r}"
    )


# -- the test -------------------------------------------------------------------------------------


def _classifier_test(
    ref: np.ndarray, cur: np.ndarray, categorical: np.ndarray, seed: int, max_train_rows: int
) -> tuple[float, float, tuple[int, int], tuple[int, int]]:
    """(held-out AUC, one-sided p-value, training rows a side, held-out rows a side)."""
    try:
        from scipy.stats import mannwhitneyu
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "The multivariate drift test needs scikit-learn (and SciPy, which it brings): pip install 'loopml[data]'"
        ) from exc

    rng = np.random.default_rng(seed)
    k = min(ref.shape[0] // 2, cur.shape[0] // 2, max_train_rows)
    order_ref, order_cur = rng.permutation(ref.shape[0]), rng.permutation(cur.shape[0])
    train = np.concatenate([ref[order_ref[:k]], cur[order_cur[:k]]])
    labels = np.repeat(np.array([0, 1], dtype=np.int8), k)
    held_ref, held_cur = ref[order_ref[k:]], cur[order_cur[k:]]

    model = HistGradientBoostingClassifier(
        max_iter=100, learning_rate=0.1, max_leaf_nodes=31,
        # stop once a held-back tenth of the training rows stops improving: with no drift that is
        # after a few trees, which is most of the speed; the test's held-out rows are never used.
        # Below EARLY_STOPPING_ROWS that tenth is too small to judge by.
        early_stopping=2 * k >= EARLY_STOPPING_ROWS, validation_fraction=0.1, n_iter_no_change=10,
        categorical_features=categorical if categorical.any() else None,
        random_state=seed,
    )
    model.fit(train, labels)
    # the raw margin: the same order as the probability, without the sigmoid
    s_ref = np.asarray(model.decision_function(held_ref), dtype=np.float64)
    s_cur = np.asarray(model.decision_function(held_cur), dtype=np.float64)
    n_ref, n_cur = len(s_ref), len(s_cur)
    if np.ptp(np.concatenate([s_ref, s_cur])) == 0:  # a constant classifier: no evidence at all
        return 0.5, 1.0, (k, k), (n_ref, n_cur)
    test = mannwhitneyu(s_cur, s_ref, alternative="greater")
    auc = float(test.statistic) / (n_ref * n_cur)
    return auc, float(test.pvalue), (k, k), (n_ref, n_cur)
