"""Data quality checks: ``check(ds)`` returns a :class:`CheckReport`.

===================== ======== ==================================================================
code                  severity triggers when
===================== ======== ==================================================================
``missing_values``    error    an input is NaN (a categorical value is missing), or a target is NaN
``non_finite``        error    an input or a regression target is +inf or -inf
``conflicting_labels`` error   identical inputs carry different labels (classification)
``single_class``      error    a classification dataset has fewer than two classes present
``leakage``           error    the same input occurs in two of train / val / test
``constant_features`` warning  a feature (or pixel) has one value in every row
``duplicate_rows``    warning  a row (inputs and label) occurs more than once
``class_imbalance``   warning  the rarest present class has < ``imbalance_ratio`` x the rows of the
                               most common one, or a named class has no rows
===================== ======== ==================================================================

Errors stop training (``report.raise_if_errors()``); warnings are printed and
logged. Any code can be ignored: ``check(ds, ignore=["duplicate_rows"])``
moves its findings to ``report.ignored``.

>>> from loopml.data import check, load
>>> report = check(load("digits"))
>>> report.ok, [i.code for i in report.warnings]
(True, ['constant_features'])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError, DataError
from .dataset import Dataset
from .fingerprint import canonical_bytes
from .split import Split

if TYPE_CHECKING:
    from .dataset import Dataset
    from .split import Split

__all__ = ["CODES", "CheckReport", "Issue", "check"]

CODES = {
    "missing_values": "error",
    "non_finite": "error",
    "conflicting_labels": "error",
    "single_class": "error",
    "leakage": "error",
    "constant_features": "warning",
    "duplicate_rows": "warning",
    "class_imbalance": "warning",
}


@dataclass(frozen=True)
class Issue:
    """One finding: ``code`` (see :data:`CODES`), ``severity``, the ``dataset`` it is in, a message, details."""

    code: str
    severity: str
    dataset: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckReport:
    """What :func:`check` found. ``ok`` is True when there are no errors."""

    issues: list[Issue]
    datasets: dict[str, dict[str, Any]]
    ignored: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "datasets": self.datasets,
            "issues": [i.to_dict() for i in self.issues],
            "ignored": [i.to_dict() for i in self.ignored],
        }

    def __str__(self) -> str:
        parts = ", ".join(f"{k} ({v['n_rows']} rows)" for k, v in self.datasets.items())
        head = f"data check of {parts}: {len(self.errors)} errors, {len(self.warnings)} warnings"
        lines = [head]
        lines += [f"  {i.severity.upper():7} {i.code} [{i.dataset}]: {i.message}" for i in self.issues]
        lines += [f"  ignored {i.code} [{i.dataset}]: {i.message}" for i in self.ignored]
        return "\n".join(lines)

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(title=str(self).splitlines()[0], show_lines=False)
        for col in ("severity", "check", "dataset", "finding"):
            table.add_column(col)
        style = {"error": "bold red", "warning": "yellow"}
        for i in self.issues:
            table.add_row(f"[{style.get(i.severity, '')}]{i.severity}[/]", i.code, i.dataset, i.message)
        return table

    def raise_if_errors(self, override_hint: str | None = None) -> None:
        """Raise :class:`~loopml.errors.DataError` naming every error, and how to go on anyway."""
        if self.ok:
            return
        codes = sorted({i.code for i in self.errors})
        hint = override_hint or f"fix the data, or skip these checks with check(..., ignore={codes!r})"
        lines = [f"The data has {len(self.errors)} error(s):"]
        lines += [f"  {i.code} [{i.dataset}]: {i.message}" for i in self.errors]
        lines.append(f"To go on anyway: {hint}")
        raise DataError("\n".join(lines), report=self)


def _row_keys(x: np.ndarray) -> np.ndarray:
    """One opaque, comparable value per row: the row's canonical bytes."""
    flat = canonical_bytes(x.reshape(len(x), -1))
    return flat.view(np.dtype((np.void, flat.dtype.itemsize * max(flat.shape[1], 1)))).reshape(len(x))


def _dataset_issues(ds: "Dataset", label: str, imbalance_ratio: float, max_examples: int) -> list[Issue]:
    out: list[Issue] = []
    x = ds.x.numpy()
    y = ds.y.numpy()
    n = len(ds)
    names = ds.feature_names if ds.kind == "tabular" else None

    def where(cols: np.ndarray) -> list[Any]:
        idx = [int(c) for c in cols[:max_examples]]
        if names:
            return [names[c] for c in idx]
        return [[int(v) for v in np.unravel_index(c, x.shape[1:])] for c in idx]  # (channel, row, column)

    def issue(code: str, message: str, **details: Any) -> None:
        out.append(Issue(code, CODES[code], label, message, details))

    flat = x.reshape(n, -1)
    nan_cols = np.isnan(flat).sum(axis=0)
    if nan_cols.any():
        cols = np.flatnonzero(nan_cols)
        issue("missing_values", f"{int(nan_cols.sum())} missing input values in {cols.size} feature(s), e.g. "
              f"{where(cols)}", count=int(nan_cols.sum()), features=where(cols))
    inf_cols = np.isinf(flat).sum(axis=0)
    if inf_cols.any():
        cols = np.flatnonzero(inf_cols)
        issue("non_finite", f"{int(inf_cols.sum())} infinite input values in {cols.size} feature(s), e.g. {where(cols)}",
              count=int(inf_cols.sum()), features=where(cols))
    if ds.task == "regression":
        if np.isnan(y).any():
            issue("missing_values", f"{int(np.isnan(y).sum())} missing targets", count=int(np.isnan(y).sum()),
                  features=["<target>"])
        if np.isinf(y).any():
            issue("non_finite", f"{int(np.isinf(y).sum())} infinite targets", count=int(np.isinf(y).sum()),
                  features=["<target>"])
    if n > 1:
        with np.errstate(invalid="ignore"):
            same = np.all((flat == flat[0]) | (np.isnan(flat) & np.isnan(flat[0])), axis=0)
        if same.any():
            cols = np.flatnonzero(same)
            issue("constant_features", f"{cols.size} feature(s) have one value in every row, e.g. {where(cols)}",
                  count=int(cols.size), features=where(cols))
    if n:
        keys = _row_keys(x)
        ykeys = canonical_bytes(y)
        pairs = np.empty(n, dtype=[("x", keys.dtype), ("y", ykeys.dtype)])
        pairs["x"], pairs["y"] = keys, ykeys
        _, first, counts = np.unique(pairs, return_index=True, return_counts=True)
        dups = int((counts - 1).sum())
        if dups:
            rows = sorted(int(r) for r in first[counts > 1])[:max_examples]
            issue("duplicate_rows", f"{dups} row(s) repeat an earlier row exactly, e.g. copies of rows {rows}",
                  count=dups, rows=rows)
        if ds.task == "classification":
            _, inv = np.unique(keys, return_inverse=True)
            # groups of identical inputs whose labels differ
            order = np.lexsort((y, inv))
            inv_s, y_s = inv[order], y[order]
            bad_groups = np.unique(inv_s[1:][(inv_s[1:] == inv_s[:-1]) & (y_s[1:] != y_s[:-1])])
            if bad_groups.size:
                groups = [sorted(int(r) for r in np.flatnonzero(inv == g)) for g in bad_groups[:max_examples]]
                issue("conflicting_labels", f"{bad_groups.size} input(s) occur with different labels, e.g. rows {groups}",
                      count=int(bad_groups.size), rows=groups)
    if ds.task == "classification":
        counts = np.bincount(y, minlength=len(ds.class_names or [])) if n else np.zeros(0, dtype=np.int64)
        present = counts[counts > 0]
        if present.size < 2:
            issue("single_class", f"only {present.size} class(es) have rows; a classifier needs at least two",
                  classes=int(present.size))
        else:
            ratio = float(present.min() / present.max())
            empty = [ds.class_names[i] for i in np.flatnonzero(counts == 0)] if ds.class_names else []
            if ratio < imbalance_ratio or empty:
                names_ = ds.class_names or []
                rare = names_[int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))]
                common = names_[int(np.argmax(counts))]
                msg = f"class {rare!r} has {int(present.min())} rows, class {common!r} {int(present.max())} " \
                      f"(ratio {ratio:.3f} < {imbalance_ratio})" if ratio < imbalance_ratio else ""
                if empty:
                    msg = (msg + "; " if msg else "") + f"classes without rows: {empty[:max_examples]}"
                issue("class_imbalance", msg, ratio=ratio, empty_classes=empty)
    return out


def _leakage(parts: Mapping[str, "Dataset"], max_examples: int) -> list[Issue]:
    out = []
    keys = {name: _row_keys(ds.x.numpy()) for name, ds in parts.items() if len(ds)}
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared, ia, ib = np.intersect1d(keys[a], keys[b], return_indices=True)
            if shared.size:
                pairs = [[int(p), int(q)] for p, q in zip(ia[:max_examples], ib[:max_examples])]
                out.append(Issue("leakage", "error", f"{a}+{b}",
                                 f"{shared.size} input(s) of {a} also occur in {b}, e.g. rows ({a}, {b}) {pairs}",
                                 {"count": int(shared.size), "rows": pairs}))
    return out


def check(
    data: "Dataset | Split",
    *,
    val: "Dataset | None" = None,
    test: "Dataset | None" = None,
    ignore: Iterable[str] = (),
    imbalance_ratio: float = 0.1,
    max_examples: int = 5,
    verbose: bool = False,
) -> CheckReport:
    """Check a dataset, or the parts of a split (each part, and leakage between them).

    ``check(split)`` and ``check(train, val=val, test=test)`` are the same.
    ``ignore``: codes whose findings go to ``report.ignored`` instead.
    ``verbose``: print the report's summary (rich, when a terminal shows it).

    >>> from loopml.data import load
    >>> report = check(load("iris"))
    >>> report.ok
    True
    """
    ignore = set(ignore)
    unknown = ignore - set(CODES)
    if unknown:
        raise ArgumentError(f"Argument ignore should name checks among {sorted(CODES)}, got {sorted(unknown)}")
    if not (isinstance(imbalance_ratio, (int, float)) and 0 <= imbalance_ratio <= 1):
        raise ArgumentError(f"Argument imbalance_ratio should be a number from 0 to 1, got {imbalance_ratio!r}")
    if isinstance(data, Split):
        parts = {k: v for k, v in (("train", data.train), ("val", data.val), ("test", data.test)) if v is not None}
    elif isinstance(data, Dataset):
        parts = {"train" if (val is not None or test is not None) else data.name: data}
        parts.update({k: v for k, v in (("val", val), ("test", test)) if v is not None})
    else:
        raise ArgumentTypeError(f"Argument data should be a loopml.data.Dataset or Split, got {type(data).__name__}")
    for k, v in parts.items():
        if not isinstance(v, Dataset):
            raise ArgumentTypeError(f"Argument {k} should be a loopml.data.Dataset, got {type(v).__name__}")
    found: list[Issue] = []
    for label, ds in parts.items():
        found += _dataset_issues(ds, label, float(imbalance_ratio), max_examples)
    if len(parts) > 1:
        found += _leakage(parts, max_examples)
    report = CheckReport(
        issues=[i for i in found if i.code not in ignore],
        datasets={k: {"name": v.name, "fingerprint": v.fingerprint, "n_rows": len(v)} for k, v in parts.items()},
        ignored=[i for i in found if i.code in ignore],
    )
    if verbose:
        from rich.console import Console

        Console().print(report)
    return report
