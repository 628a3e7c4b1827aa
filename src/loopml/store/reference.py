"""The stored drift reference: what a version keeps of its training inputs to compare live data with.

:class:`DriftReference` holds, per column of the training inputs, what
:func:`loopml.monitor.drift` needs and nothing more:

- a numeric column: its finite values as a weighted sample, sorted (``values``,
  ``counts``): **exact** (every distinct value and how often it occurs) when the
  column has at most ``points`` distinct values, otherwise a quantile sketch: the
  sorted values cut into ``points`` runs of about ``n / points`` rows, each kept as its
  median weighted by its rows; with the count, mean and sum of squared deviations
  (exact, so the sd is), the minimum and maximum, and the missing count;
- a categorical or boolean column: each category's count, and the missing count;
- the row count and each column's kind (``numeric``, ``categorical``, ``boolean``,
  ``empty``).

Images and other tensors are summarised first, as drift compares them: one column
per channel of per-image mean and sd (:func:`inputs_table`).

Columns alone cannot show a change in how columns move together, so the reference
also keeps ``rows``: a seeded uniform sample of the inputs themselves (float32, up to
:data:`SAMPLE_ROWS` = 20,000 rows and :data:`SAMPLE_BYTES` = 16 MiB; images as images),
which the multivariate test compares with live rows (:func:`merge` draws the merged
sample from each part in proportion to its rows). A category column is kept as the
index of each value among the column's categories (:meth:`DriftReference.sample_table`
reads them back); a ``sample`` that is not all numbers keeps none.

The error of a sketch is measured, not assumed: building one records
``eps_ks = sup |F_sketch - F|`` and ``eps_w = integral |F_sketch - F| dx`` against the
column's own empirical CDF ``F`` (at most half a run's rows over ``n``, about
``1 / (2 points)``, and each run's mean absolute deviation from its median), so the
KS statistic computed against the sketch is within ``eps_ks`` of the exact one and
the Wasserstein-1 distance within ``eps_w``. :func:`merge` adds
counts and moments exactly and, where the merged column has more than ``points``
distinct values, cuts it back once, adding the error of that cut to the recorded
bounds (the row-weighted mean of the parts' bounds plus the cut's): partitions can
be profiled apart and combined.

A quantile summary is kept by hand rather than with a streaming sketch library (Apache
DataSketches' KLL, t-digest; neither is a loopml dependency): the builder sees a whole
partition in memory, so its quantiles are exact, its error is measured rather than
bounded in probability (KLL's guarantee holds with a stated probability), the Wasserstein
error is known too, and merging two summaries needs only a sort.

The file is one ``.npz`` (no pickle): a JSON header (``header``: version, rows, the
columns' kinds, counts, moments and bounds, a sha256 of the arrays) and two arrays per
numeric column. :meth:`DriftReference.load` refuses a file that does not read or whose
arrays do not match its header, with a :class:`~loopml.errors.IntegrityError`.

>>> import pandas as pd
>>> rng = np.random.default_rng(0)
>>> frame = pd.DataFrame({"age": rng.normal(40, 10, 50_000), "plan": rng.choice(["a", "b"], 50_000)})
>>> ref = DriftReference.build(frame)
>>> ref
<DriftReference 50000 rows, 2 columns (1 sketched)>
>>> both = merge(DriftReference.build(frame[:20_000]), DriftReference.build(frame[20_000:]))
>>> both.columns["plan"].counts == ref.columns["plan"].counts, both.n_rows
(True, 50000)
>>> bool(both.columns["age"].eps_ks <= 2 / POINTS)
True
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ArgumentError, ArgumentTypeError, IntegrityError
from ..files import atomic_path

__all__ = [
    "FORMAT",
    "POINTS",
    "REFERENCE_VERSION",
    "SAMPLE_BYTES",
    "SAMPLE_ROWS",
    "CategoricalColumn",
    "DriftReference",
    "NumericColumn",
    "array_table",
    "column_kind",
    "inputs_table",
    "merge",
]

REFERENCE_VERSION = 1
FORMAT = "drift_reference"
"""The format name of the reference among a registered version's files."""

POINTS = 4096
"""Distinct values a numeric column may have and still be stored exactly; beyond, this many quantiles."""

MIN_POINTS = 256  # above drift's MAX_LEVELS (100): a sketched column is never taken for a discrete one

SAMPLE_ROWS = 20_000
"""Rows of the inputs kept (a seeded uniform sample) for the multivariate test, which needs rows, not columns."""

SAMPLE_BYTES = 16 * 2**20
"""The most bytes the row sample may take (float32): wide inputs (images) keep fewer rows."""


# -- turning inputs into columns ------------------------------------------------


def array_table(x: Any, role: str = "data") -> pd.DataFrame:
    """A 1-D or 2-D array as columns x0, x1, ...; images (N x C x H x W, N x H x W) as per-channel mean and sd."""
    a = np.asarray(x)
    if a.ndim == 0:
        raise ArgumentError(f"Argument {role} should have one row per sample, got a scalar")
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim >= 3:  # images or tensors: compared by summary statistics per channel
        if a.dtype.kind not in "biuf":
            raise ArgumentTypeError(f"Argument {role} should hold numbers, got dtype {a.dtype}")
        chans = a.reshape(len(a), a.shape[1] if a.ndim == 4 else 1, -1).astype(np.float64)
        cols: dict[str, np.ndarray] = {}
        for c in range(chans.shape[1]):
            cols[f"c{c}_mean"] = chans[:, c].mean(axis=1)
            cols[f"c{c}_std"] = chans[:, c].std(axis=1)
        return pd.DataFrame(cols)
    return pd.DataFrame(a, columns=[f"x{i}" for i in range(a.shape[1])], copy=False)


def inputs_table(x: Any, names: Sequence[str] | None = None, role: str = "data") -> pd.DataFrame:
    """A model's input rows as drift compares them: named by ``names`` when 2-D and as wide, else :func:`array_table`."""
    a = np.asarray(x)
    if names is not None and a.ndim == 2 and a.shape[1] == len(names):
        return pd.DataFrame(a, columns=list(names), copy=False)
    return array_table(a, role)


def column_kind(series: pd.Series, name: str, role: str) -> str:
    """numeric, boolean, categorical, or empty (every value missing, no type to go by)."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if isinstance(dtype, pd.CategoricalDtype):
        return "categorical" if series.notna().any() else "empty"
    if pd.api.types.is_numeric_dtype(dtype):
        if pd.api.types.is_complex_dtype(dtype):
            raise ArgumentTypeError(f"Argument {role} should hold real numbers or categories in column {name!r}, got {dtype}")
        return "numeric" if len(series) and series.notna().any() else "empty"
    if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        raise ArgumentTypeError(
            f"Argument {role} should hold numbers, booleans or categories in column {name!r}, got {dtype}; "
            f"convert times to numbers first, e.g. df[{name!r}].astype('int64')"
        )
    inferred = pd.api.types.infer_dtype(series, skipna=True)
    if inferred == "empty":
        return "empty"
    if inferred == "boolean":
        return "boolean"
    if inferred in ("integer", "floating", "mixed-integer-float", "decimal"):
        return "numeric"
    return "categorical"


# -- the columns ----------------------------------------------------------------


@dataclass
class NumericColumn:
    """One numeric column: its finite values as a sorted weighted sample, moments, missing count, error bounds.

    ``exact``: ``values`` are every distinct value and ``counts`` their counts (the
    sample itself, up to order); else a quantile sketch whose empirical CDF is within
    ``eps_ks`` (sup) and ``eps_w`` (integral) of the data's. ``low``, ``high``: the
    smallest and largest value, exact either way (NaN without values).
    """

    values: np.ndarray
    counts: np.ndarray
    missing: int
    mean: float
    m2: float
    exact: bool = True
    eps_ks: float = 0.0
    eps_w: float = 0.0
    kind: str = "numeric"
    low: float = math.nan
    high: float = math.nan

    def __post_init__(self) -> None:
        if math.isnan(self.low) and len(self.values):  # exact: the ends are the values' own
            self.low, self.high = float(self.values[0]), float(self.values[-1])

    @property
    def n(self) -> int:
        """The finite values the column had."""
        return int(self.counts.sum())

    @property
    def sd(self) -> float:
        """The sample standard deviation (ddof=1) of the finite values, NaN below two."""
        n = self.n
        return math.sqrt(max(self.m2, 0.0) / (n - 1)) if n > 1 else math.nan

    def sample(self) -> np.ndarray:
        """The values themselves, sorted (exact columns; a sketch repeats each quantile by its weight)."""
        return np.repeat(self.values, self.counts)

    def cdf_counts(self, x: np.ndarray, side: str = "right") -> np.ndarray:
        """How many of the column's values are ``<= x`` (``side="right"``) or ``< x`` (``"left"``)."""
        cum = np.concatenate([[0], np.cumsum(self.counts)])
        return cum[np.searchsorted(self.values, x, side=side)]  # type: ignore[call-overload]


@dataclass
class CategoricalColumn:
    """One categorical or boolean column: each category's count (JSON scalars) and the missing count."""

    counts: dict[Any, int]
    missing: int
    kind: str = "categorical"

    @property
    def n(self) -> int:
        return int(sum(self.counts.values()))


Column = NumericColumn | CategoricalColumn


def _numeric_column(series: pd.Series, points: int) -> NumericColumn:
    x = series.to_numpy(dtype=np.float64, na_value=np.nan)
    ok = np.isfinite(x)
    a = x[ok]
    missing = int(len(x) - len(a))
    if not len(a):
        return NumericColumn(np.empty(0), np.empty(0, dtype=np.int64), missing, 0.0, 0.0)
    values, counts = np.unique(a, return_counts=True)
    mean = float(a.mean())
    m2 = float(np.square(a - mean).sum())
    col = NumericColumn(values, counts.astype(np.int64), missing, mean, m2)
    return _compressed(col, points) if len(values) > points else col


def _compressed(col: NumericColumn, points: int) -> NumericColumn:
    """``col`` cut down to ``points`` weighted quantiles, with the error of the cut added to its bounds.

    The sorted values are cut into ``points`` runs of about ``n / points`` rows (run ``j``
    ends at the first value whose cumulative count reaches ``ceil(j n / points)``); each
    run is kept as its weighted median, weighted by the run's rows. Inside a run the two
    CDFs differ by at most half its rows (over ``n``), and the Wasserstein error is the
    run's mean absolute deviation from its median, the smallest any one point allows.
    Both gaps are measured exactly, on every interval between old values.
    """
    cum = np.cumsum(col.counts)
    n = int(cum[-1])
    targets = (np.arange(1, points + 1, dtype=np.int64) * n + points - 1) // points
    ends = np.unique(np.searchsorted(cum, targets, side="left"))
    before = np.concatenate([[0], cum[ends[:-1]]])
    weights = cum[ends] - before
    keep = np.searchsorted(cum, before + (weights + 1) // 2, side="left")  # each run's weighted median
    new_cum = np.cumsum(weights)
    pos = np.searchsorted(keep, np.arange(len(cum)), side="right") - 1
    below = np.where(pos >= 0, new_cum[np.maximum(pos, 0)], 0)
    gap = np.abs(cum - below) / n  # the old CDF minus the new one, on [values[k], values[k + 1])
    return NumericColumn(
        col.values[keep], weights.astype(np.int64), col.missing, col.mean, col.m2, exact=False,
        eps_ks=col.eps_ks + float(gap.max()), eps_w=col.eps_w + float(np.dot(gap[:-1], np.diff(col.values))),
        low=col.low, high=col.high,
    )


def _categorical_column(series: pd.Series, kind: str) -> CategoricalColumn:
    vc = series.value_counts(dropna=True)
    vc = vc[vc > 0]
    counts = {_scalar(k): int(c) for k, c in zip(vc.index, vc.to_numpy(dtype=np.int64))}
    return CategoricalColumn(counts, int(len(series) - vc.sum()), kind)


def _scalar(v: Any) -> Any:
    """A category as a JSON scalar: str, bool, int and finite float kept, anything else its str."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v)):
        return v
    return str(v)


# -- the reference ----------------------------------------------------------------


@dataclass
class DriftReference:
    """Per column, what drift compares live data with (see the module docstring); build, merge, save, load.

    >>> ref = DriftReference.build(np.arange(1000.0).reshape(500, 2))
    >>> list(ref.columns), ref.n_rows, ref.columns["x0"].exact
    (['x0', 'x1'], 500, True)
    """

    columns: dict[str, Column]
    n_rows: int
    points: int = POINTS
    meta: dict[str, Any] = field(default_factory=dict)
    rows: np.ndarray | None = None
    """A seeded uniform sample of the inputs themselves (float32, at most :data:`SAMPLE_ROWS` rows and
    :data:`SAMPLE_BYTES`), for the multivariate test; None when the inputs are not all numbers."""

    @classmethod
    def build(cls, data: Any, *, points: int = POINTS, sample: Any = None, sample_rows: int = SAMPLE_ROWS,
              seed: int = 0) -> "DriftReference":
        """The reference of ``data``: a DataFrame, or an array (:func:`array_table`: images by per-channel mean and sd).

        ``sample``: the inputs whose rows are sampled for the multivariate test (default:
        ``data`` itself when every value is a number; a summarised image table passes
        the images); ``sample_rows``: how many (0 keeps none); ``seed``: which.
        """
        _check_points(points)
        if isinstance(sample_rows, bool) or not isinstance(sample_rows, int) or sample_rows < 0:
            raise ArgumentError(f"Argument sample_rows should be an integer >= 0, e.g. {SAMPLE_ROWS}; got {sample_rows!r}")
        frame = data if isinstance(data, pd.DataFrame) else array_table(data, "data")
        names = [str(c) for c in frame.columns]
        if len(set(names)) != len(names):
            raise ArgumentError(f"Argument data should have unique column names, got {names}")
        if not names:
            raise ArgumentError("Argument data should have at least one column, got none")
        columns: dict[str, Column] = {}
        for label, name in zip(frame.columns, names):
            series = frame[label]
            kind = column_kind(series, name, "data")
            if kind in ("numeric", "empty"):
                col = _numeric_column(series, points)
                col.kind = kind
                columns[name] = col
            else:
                columns[name] = _categorical_column(series, kind)
        if sample is None and isinstance(data, pd.DataFrame):  # the table, categories as codes of the reference's
            rows = _row_sample(_codes(frame, columns), len(frame), sample_rows, seed)
        else:
            rows = _row_sample(data if sample is None else sample, len(frame), sample_rows, seed)
        return cls(columns, len(frame), points, rows=rows)

    @property
    def sketched(self) -> list[str]:
        """The numeric columns kept as quantile sketches (every other column is exact)."""
        return [k for k, c in self.columns.items() if isinstance(c, NumericColumn) and not c.exact]

    def merge(self, other: "DriftReference") -> "DriftReference":
        """This reference and ``other`` (another partition of the same columns) as one; see :func:`merge`."""
        return merge(self, other)

    def __repr__(self) -> str:
        return f"<DriftReference {self.n_rows} rows, {len(self.columns)} columns ({len(self.sketched)} sketched)>"

    def sample_table(self) -> pd.DataFrame | None:
        """The row sample as a table of the reference's columns (2-D inputs as wide as the columns), else None.

        A category column's codes are read back as its categories (a missing value as None),
        a boolean column's as 1.0 and 0.0 (NaN where missing).
        """
        if self.rows is None or self.rows.ndim != 2 or self.rows.shape[1] != len(self.columns):
            return None
        out: dict[str, Any] = {}
        for i, (name, col) in enumerate(self.columns.items()):
            values = self.rows[:, i]
            if isinstance(col, CategoricalColumn) and col.kind == "boolean":  # as numbers, as the joint test reads booleans
                truth = np.array([float(bool(k)) for k in col.counts] + [np.nan])
                codes = np.where(np.isfinite(values), values, -1).astype(np.int64)
                values = truth[np.where((codes >= 0) & (codes < len(col.counts)), codes, len(col.counts))]
            elif isinstance(col, CategoricalColumn):
                cats = np.array([*col.counts, None], dtype=object)
                codes = np.where(np.isfinite(values), values, -1).astype(np.int64)
                values = cats[np.where((codes >= 0) & (codes < len(col.counts)), codes, len(col.counts))]
            out[name] = values
        return pd.DataFrame(out, copy=False)

    # -- the file ------------------------------------------------------------

    def _parts(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays: dict[str, np.ndarray] = {}
        cols: list[dict[str, Any]] = []
        for i, (name, col) in enumerate(self.columns.items()):
            if isinstance(col, NumericColumn):
                arrays[f"v{i}"] = np.ascontiguousarray(col.values, dtype=np.float64)
                arrays[f"c{i}"] = np.ascontiguousarray(col.counts, dtype=np.int64)
                cols.append({"name": name, "kind": col.kind, "missing": col.missing, "mean": col.mean, "m2": col.m2,
                             "exact": col.exact, "eps_ks": col.eps_ks, "eps_w": col.eps_w, "n": col.n,
                             "low": col.low if col.n else None, "high": col.high if col.n else None})
            else:
                cols.append({"name": name, "kind": col.kind, "missing": col.missing,
                             "counts": [[k, v] for k, v in col.counts.items()]})
        if self.rows is not None:
            arrays["rows"] = np.ascontiguousarray(self.rows, dtype=np.float32)
        header = {"format": FORMAT, "version": REFERENCE_VERSION, "n_rows": self.n_rows, "points": self.points,
                  "columns": cols, "meta": self.meta, "sha256": _digest(arrays)}
        return header, arrays

    def to_bytes(self) -> bytes:
        """The ``.npz`` file's bytes (compressed; a JSON header and two arrays per numeric column)."""
        header, arrays = self._parts()
        buf = io.BytesIO()
        text = json.dumps(header, allow_nan=False).encode("utf-8")
        payload: dict[str, Any] = {"header": np.frombuffer(text, dtype=np.uint8), **arrays}
        np.savez_compressed(buf, **payload)
        return buf.getvalue()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the reference to ``path`` (an ``.npz``), whole or not at all; returns the path."""
        data = self.to_bytes()
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "DriftReference":
        """Read a reference :meth:`save` wrote; :class:`~loopml.errors.IntegrityError` when it is damaged."""
        p = Path(path)
        if not p.is_file():
            raise ArgumentError(f"Argument path should be a drift reference file; {str(p)!r} does not exist")
        try:
            with np.load(p, allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
            header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # a damaged file
            raise IntegrityError(f"{str(p)!r} is not a readable drift reference ({type(exc).__name__}: {exc}); "
                                 "build it again: loopml.models.store_reference(VERSION)") from None
        return cls._from_parts(header, arrays, str(p))

    @classmethod
    def _from_parts(cls, header: Any, arrays: dict[str, np.ndarray], where: str) -> "DriftReference":
        def bad(why: str) -> IntegrityError:
            return IntegrityError(f"{where!r} is a damaged drift reference: {why}; "
                                  "build it again: loopml.models.store_reference(VERSION)")

        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise bad("its header is not a drift reference's")
        if header.get("version") != REFERENCE_VERSION:
            raise ArgumentError(f"{where!r} is a drift reference of version {header.get('version')!r}; this loopml reads "
                                f"version {REFERENCE_VERSION}: upgrade loopml, or build it again")
        if header.get("sha256") != _digest(arrays):
            raise bad("its arrays do not match the sha256 in its header (changed after it was written)")
        rows = arrays.get("rows")
        if rows is not None and (rows.dtype != np.float32 or rows.ndim < 1 or len(rows) > header.get("n_rows", 0)):
            raise bad("its row sample is not float32 rows of the data")
        try:
            columns: dict[str, Column] = {}
            for i, c in enumerate(header["columns"]):
                if "counts" in c:
                    columns[str(c["name"])] = CategoricalColumn({k: int(v) for k, v in c["counts"]}, int(c["missing"]),
                                                                str(c["kind"]))
                    continue
                values, counts = arrays[f"v{i}"], arrays[f"c{i}"]
                if (values.ndim != 1 or values.shape != counts.shape or values.dtype != np.float64
                        or counts.dtype != np.int64 or (len(values) > 1 and not (np.diff(values) > 0).all())
                        or (counts <= 0).any() or int(counts.sum()) != int(c["n"])):
                    raise bad(f"column {c['name']!r} is not a sorted weighted sample of {c['n']} values")
                columns[str(c["name"])] = NumericColumn(values, counts, int(c["missing"]), float(c["mean"]),
                                                        float(c["m2"]), bool(c["exact"]), float(c["eps_ks"]),
                                                        float(c["eps_w"]), str(c["kind"]),
                                                        math.nan if c["low"] is None else float(c["low"]),
                                                        math.nan if c["high"] is None else float(c["high"]))
            return cls(columns, int(header["n_rows"]), int(header["points"]), dict(header.get("meta") or {}), rows)
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"{type(exc).__name__}: {exc}") from None


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _codes(frame: pd.DataFrame, columns: Mapping[str, Column]) -> np.ndarray:
    """``frame`` as float64 numbers: category columns as the index of each value among the column's categories."""
    out = np.empty((len(frame), len(columns)), dtype=np.float64)
    for i, (label, col) in enumerate(zip(frame.columns, columns.values())):
        series = frame[label]
        if isinstance(col, CategoricalColumn):
            index = pd.Index(list(col.counts))
            keys = series.map(_scalar) if series.dtype == object else series
            codes = index.get_indexer(keys.where(series.notna(), None)).astype(np.float64)
            codes[codes < 0] = np.nan
            out[:, i] = codes
        else:
            out[:, i] = series.to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def _sample_cap(a: np.ndarray) -> int:
    """The most rows of ``a``'s width a sample keeps: :data:`SAMPLE_ROWS`, fewer for wide rows (:data:`SAMPLE_BYTES`)."""
    width = max(1, int(np.prod(a.shape[1:])))
    return min(SAMPLE_ROWS, max(1, SAMPLE_BYTES // (4 * width)))


def _row_sample(data: Any, n_rows: int, sample_rows: int, seed: int) -> np.ndarray | None:
    """A seeded uniform sample of ``data``'s rows as float32 (in their order), or None when they are not all numbers."""
    if sample_rows == 0:
        return None
    if isinstance(data, pd.DataFrame):
        if not all(pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_complex_dtype(t) for t in data.dtypes):
            return None  # categories have no float32 form to keep without a pickle
        a = data.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        a = np.asarray(data)
        if a.dtype.kind not in "biuf":
            return None
    if a.ndim == 0 or len(a) != n_rows:
        raise ArgumentError(f"Argument sample should have the data's {n_rows} rows, got {a.shape}")
    if a.ndim == 1:
        a = a[:, None]
    k = min(sample_rows, len(a), _sample_cap(a))
    pick = np.sort(np.random.default_rng(seed).choice(len(a), size=k, replace=False)) if k < len(a) else slice(None)
    return np.ascontiguousarray(a[pick], dtype=np.float32)


def _recoded(part: DriftReference, merged: Mapping[str, Column]) -> np.ndarray:
    """``part``'s row sample with its category codes turned into codes of the ``merged`` columns' categories."""
    rows = part.rows
    assert rows is not None  # the caller checked
    if rows.ndim != 2 or rows.shape[1] != len(part.columns):
        return rows
    out = rows
    for i, (name, col) in enumerate(part.columns.items()):
        new = merged[name]
        if isinstance(col, CategoricalColumn) and isinstance(new, CategoricalColumn) and list(col.counts) != list(new.counts):
            where = pd.Index(list(new.counts)).get_indexer(list(col.counts)).astype(np.float32)
            codes = rows[:, i]
            ok = np.isfinite(codes)
            out = out.copy() if out is rows else out
            out[:, i] = np.nan
            out[ok, i] = where[codes[ok].astype(np.int64)]
    return out


def _merge_rows(a: DriftReference, b: DriftReference, merged: Mapping[str, Column], seed: int = 0) -> np.ndarray | None:
    """The parts' row samples as one sample of the union: each part's share of its rows, at most the larger cap."""
    if a.rows is None or b.rows is None or a.rows.shape[1:] != b.rows.shape[1:]:
        return None
    rows_a, rows_b = _recoded(a, merged), _recoded(b, merged)
    n = a.n_rows + b.n_rows
    # the largest sample in which each part has its share of the rows (a part sampled sparsely limits it), capped
    k = min(_sample_cap(rows_a), *(len(r) * n // p.n_rows for r, p in ((rows_a, a), (rows_b, b)) if p.n_rows))
    take_a = min(len(rows_a), round(k * a.n_rows / n))
    take_b = min(len(rows_b), k - take_a)
    rng = np.random.default_rng(seed)
    pick_a = np.sort(rng.choice(len(rows_a), size=take_a, replace=False))
    pick_b = np.sort(rng.choice(len(rows_b), size=take_b, replace=False))
    return np.concatenate([rows_a[pick_a], rows_b[pick_b]])


def _check_points(points: Any) -> None:
    if isinstance(points, bool) or not isinstance(points, int) or points < MIN_POINTS:
        raise ArgumentError(f"Argument points should be an integer of at least {MIN_POINTS}, e.g. {POINTS}; got {points!r}")


def _merge_numeric(a: NumericColumn, b: NumericColumn) -> NumericColumn:
    """The union of two columns' weighted samples, not yet cut back to ``points``."""
    na, nb = a.n, b.n
    n = na + nb
    values, inverse = np.unique(np.concatenate([a.values, b.values]), return_inverse=True)
    counts = np.zeros(len(values), dtype=np.int64)
    np.add.at(counts, inverse, np.concatenate([a.counts, b.counts]))
    if n == 0:
        mean, m2 = 0.0, 0.0
    else:  # Chan et al.'s pairwise update: the mean and sum of squares of the union, exactly
        delta = b.mean - a.mean
        mean = a.mean + delta * nb / n
        m2 = a.m2 + b.m2 + delta * delta * na * nb / n
    kind = "numeric" if "numeric" in (a.kind, b.kind) else "empty"
    col = NumericColumn(values, counts, a.missing + b.missing, mean, m2, a.exact and b.exact,
                        (na * a.eps_ks + nb * b.eps_ks) / n if n else 0.0,
                        (na * a.eps_w + nb * b.eps_w) / n if n else 0.0, kind,
                        float(np.nanmin([a.low, b.low])) if n else math.nan,
                        float(np.nanmax([a.high, b.high])) if n else math.nan)
    return col


def merge(*references: DriftReference) -> DriftReference:
    """One reference of several partitions of the same columns (counts exact, sketches within their recorded bounds).

    >>> parts = [DriftReference.build(np.full((10, 1), float(i))) for i in range(3)]
    >>> merge(*parts).columns["x0"].counts.tolist()
    [10, 10, 10]
    """
    if not references:
        raise ArgumentError("merge needs at least one DriftReference, got none")
    for r in references:
        if not isinstance(r, DriftReference):
            raise ArgumentTypeError(f"Arguments of merge should be DriftReference objects, got {type(r).__name__}")
    out = references[0]
    for other in references[1:]:
        if list(other.columns) != list(out.columns):
            raise ArgumentError(f"merge needs references of the same columns: {list(out.columns)} and {list(other.columns)}")
        points = min(out.points, other.points)
        columns: dict[str, Column] = {}
        for name, a in out.columns.items():
            b = other.columns[name]
            if isinstance(a, NumericColumn) and isinstance(b, NumericColumn):
                columns[name] = _merge_numeric(a, b)
            elif isinstance(a, CategoricalColumn) and isinstance(b, CategoricalColumn):
                counts = dict(a.counts)
                for k, v in b.counts.items():
                    counts[k] = counts.get(k, 0) + v
                kind = a.kind if a.kind == b.kind else "categorical"
                columns[name] = CategoricalColumn(dict(sorted(counts.items(), key=lambda kv: -kv[1])),
                                                  a.missing + b.missing, kind)
            elif isinstance(a, NumericColumn) and a.kind == "empty" and isinstance(b, CategoricalColumn):
                columns[name] = CategoricalColumn(dict(b.counts), a.missing + b.missing, b.kind)
            elif isinstance(b, NumericColumn) and b.kind == "empty" and isinstance(a, CategoricalColumn):
                columns[name] = CategoricalColumn(dict(a.counts), a.missing + b.missing, a.kind)
            else:
                raise ArgumentError(f"merge needs column {name!r} of one kind in every part: {a.kind} and {b.kind}")
        out = DriftReference(columns, out.n_rows + other.n_rows, points, dict(out.meta), _merge_rows(out, other, columns))
    # one cut at the end, not one per part: its error is added once
    for name, col in out.columns.items():
        if isinstance(col, NumericColumn) and len(col.values) > out.points:
            out.columns[name] = _compressed(col, out.points)
    return out
