"""Each check fires on crafted data and stays quiet on clean data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rich.console import Console

from loopml.data import CODES, CheckReport, Dataset, check, from_arrays, split
from loopml.errors import DataError, LoopMLError


def _clean(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)), np.arange(n) % 3


def codes(report: CheckReport) -> list[str]:
    return sorted(i.code for i in report.issues)


def test_clean_data_has_no_findings() -> None:
    report = check(from_arrays(*_clean()))
    assert report.ok and report.issues == [] and report.errors == [] and report.warnings == []


def test_digits_has_no_errors_and_warns_of_its_constant_pixels(digits: Dataset) -> None:
    report = check(digits)

    assert report.ok
    assert [(i.code, i.severity) for i in report.warnings] == [("constant_features", "warning")]
    assert report.warnings[0].details["features"] == [[0, 0, 0], [0, 4, 0], [0, 4, 7]]  # (channel, row, col)


@pytest.mark.parametrize(
    ("mutate", "code", "severity"),
    [
        (lambda x, y: x.__setitem__((3, 1), np.nan), "missing_values", "error"),
        (lambda x, y: x.__setitem__((3, 1), np.inf), "non_finite", "error"),
        (lambda x, y: x.__setitem__((slice(None), 2), 7.0), "constant_features", "warning"),
        (lambda x, y: (x.__setitem__(5, x[4]), y.__setitem__(5, y[4])), "duplicate_rows", "warning"),
        (lambda x, y: (x.__setitem__(5, x[4]), y.__setitem__(5, (y[4] + 1) % 3)), "conflicting_labels", "error"),
        (lambda x, y: y.__setitem__(slice(None), np.where(np.arange(len(y)) < 3, 2, y % 2)), "class_imbalance", "warning"),
        (lambda x, y: y.__setitem__(slice(None), 0), "single_class", "error"),
    ],
)
def test_each_check_triggers(mutate, code: str, severity: str) -> None:  # type: ignore[no-untyped-def]
    x, y = _clean()
    mutate(x, y)

    report = check(from_arrays(x, y, class_names=["a", "b", "c"], name="crafted"))

    assert codes(report) == [code]
    issue = report.issues[0]
    assert issue.severity == severity == CODES[code] and issue.dataset == "crafted"
    assert report.ok is (severity == "warning")


def test_missing_values_name_the_features() -> None:
    x, y = _clean()
    x[[1, 2], 3] = np.nan
    issue = check(from_arrays(x, y, feature_names=["a", "b", "c", "d"])).errors[0]
    assert issue.details == {"count": 2, "features": ["d"]}
    assert "2 missing input values in 1 feature(s)" in issue.message


def test_regression_targets_are_checked() -> None:
    x, _ = _clean()
    y = np.linspace(0, 1, len(x))
    y[0] = np.nan
    y[1] = np.inf
    assert codes(check(from_arrays(x, y, task="regression"))) == ["missing_values", "non_finite"]


def test_a_named_class_without_rows_is_a_warning() -> None:
    x, y = _clean()
    report = check(from_arrays(x, y, class_names=["a", "b", "c", "d"]))
    assert codes(report) == ["class_imbalance"] and report.warnings[0].details["empty_classes"] == ["d"]


def test_leakage_between_parts(iris: Dataset) -> None:
    parts = split(iris, seed=0)
    assert check(parts).ok
    leaky_val = iris.subset(np.r_[parts.indices["val"], parts.indices["train"][:2]])

    report = check(parts.train, val=leaky_val, test=parts.test)

    assert [(i.code, i.dataset) for i in report.errors] == [("leakage", "train+val")]
    assert report.errors[0].details["count"] == 2


def test_raise_if_errors_names_the_problem_and_the_override() -> None:
    x, y = _clean()
    x[0, 0] = np.nan
    report = check(from_arrays(x, y, name="bad"))

    with pytest.raises(DataError, match=r"(?s)1 error\(s\):\n  missing_values \[bad\].*To go on anyway: Trainer\(check_data=False\)") as exc:
        report.raise_if_errors(override_hint="Trainer(check_data=False)")
    assert exc.value.report is report and isinstance(exc.value, (LoopMLError, ValueError))
    with pytest.raises(DataError, match=r"ignore=\['missing_values'\]"):
        report.raise_if_errors()
    check(from_arrays(*_clean())).raise_if_errors()  # no errors: nothing raised


def test_ignore_moves_findings_aside() -> None:
    x, y = _clean()
    x[0, 0] = np.nan
    report = check(from_arrays(x, y), ignore=["missing_values"])
    assert report.ok and [i.code for i in report.ignored] == ["missing_values"]
    with pytest.raises(ValueError, match=r"Argument ignore should name checks among .*got \['typo'\]"):
        check(from_arrays(x, y), ignore=["typo"])


def test_report_renders_and_serializes(digits: Dataset) -> None:
    report = check(split(digits, seed=1))
    text = str(report)
    assert text.startswith("data check of train (1257 rows), val (270 rows), test (270 rows): 0 errors")
    assert "WARNING constant_features [train]" in text
    doc = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert doc["ok"] is True and set(doc["datasets"]) == {"train", "val", "test"}
    console = Console(record=True, width=140)
    console.print(report)
    assert "constant_features" in console.export_text()


def test_check_wants_a_dataset() -> None:
    with pytest.raises(TypeError, match="Argument data should be a loopml.data.Dataset or Split"):
        check(np.zeros((2, 2)))  # type: ignore[arg-type]
