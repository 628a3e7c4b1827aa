"""``loopml quantize`` and ``loopml monitor fit-ood`` take their data from --data (a file, a fingerprint, a named
bundled set) or the version's logged datasets, never from the demo; bad data is one error line and exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopml.cli import app
from loopml.models import registry as R

from tests.deps import need

from .models.test_version_data import files, register_mlp  # noqa: F401  # files: a fixture

need("onnxruntime", extra="export")

WIDE = {"COLUMNS": "250"}
# SQLite only: the subject is the command line (file kinds, output), not the store; tests/models/test_version_data.py
# quantizes and fits gates from each file kind on both stores
SQLITE_ONLY = pytest.mark.parametrize("db_uri", ["sqlite"], indirect=True)


def invoke(*args: str) -> object:
    return CliRunner().invoke(app, list(args), env=WIDE)


def assert_one_error_line(result: object, *messages: str) -> None:
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
    err = result.stderr  # type: ignore[attr-defined]
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for message in messages:
        assert message in err, err


@SQLITE_ONLY
def test_quantize_a_64_input_mlp_from_each_file_kind(use_store: str, files: dict[str, Path]) -> None:
    register_mlp()
    ok = invoke("quantize", "mlp/1", "--method", "dynamic", "--data", str(files["npz"]))
    assert ok.exit_code == 0, ok.output
    assert "registered mlp/2 (dynamic int8 of mlp/1)" in ok.stdout
    for kind in ("csv", "parquet"):
        ok = invoke("models", "quantize", "mlp/1", "--method", "dynamic", "--data", str(files[kind]), "--target", "label")
        assert ok.exit_code == 0, ok.output
    assert [v.version for v in R.list_versions("mlp")] == [4, 3, 2, 1]
    assert all(v.measurements["accuracy"] > 0.6 for v in R.list_versions("mlp"))


@SQLITE_ONLY
def test_fit_ood_of_a_64_input_mlp_from_a_csv(use_store: str, files: dict[str, Path]) -> None:
    register_mlp()
    ok = invoke("monitor", "fit-ood", "mlp/1", "--data", str(files["csv"]), "--target", "label",
                "--detector", "mahalanobis", "--target-false-abstain", "0.05", "--json")
    assert ok.exit_code == 0, ok.output
    summary = json.loads(ok.stdout)
    assert summary["detectors"] == ["mahalanobis"] and summary["test_false_abstain"] is not None
    assert "ood_gate" in R.get_version("mlp/1").files


def test_wrong_shapes_name_both_shapes(use_store: str) -> None:
    register_mlp()
    for argv in (("quantize", "mlp/1", "--method", "static", "--data", "digits"),
                 ("monitor", "fit-ood", "mlp/1", "--data", "digits")):
        assert_one_error_line(invoke(*argv), "mlp/1's signature shape (batch, 64)", "shape (batch, 1, 8, 8)")
    assert [v.version for v in R.list_versions("mlp")] == [1] and "ood_gate" not in R.get_version("mlp/1").files


def test_a_missing_target_column(use_store: str, files: dict[str, Path]) -> None:
    register_mlp()
    assert_one_error_line(invoke("quantize", "mlp/1", "--method", "static", "--data", str(files["csv"]), "--target", "y"),
                          "Argument target should be a column of train.csv, got 'y'")
    assert_one_error_line(invoke("monitor", "fit-ood", "mlp/1", "--data", str(files["parquet"])),
                          "Argument target should name the label column of train.parquet", "--target label")
    assert_one_error_line(invoke("quantize", "mlp/1", "--method", "static", "--data", "nowhere.npz"),
                          "'nowhere.npz' does not exist")


def test_no_data_at_all_says_what_to_pass(use_store: str) -> None:
    register_mlp()
    assert_one_error_line(invoke("quantize", "mlp/1", "--method", "static"),
                          "mlp/1 has no training data logged with its run, and no data was passed",
                          "loopml quantize mlp/1 --method static --data train.npz")
    assert_one_error_line(invoke("monitor", "fit-ood", "mlp/1"),
                          "loopml monitor fit-ood mlp/1 --data train.npz")


@SQLITE_ONLY
def test_the_installed_command_prints_one_line_without_a_traceback(use_store: str) -> None:
    register_mlp()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "loopml", "quantize", "mlp/1", "--method", "static"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: mlp/1 has no training data logged") and proc.stderr.count("\n") == 1
