"""The MLflow peer-test runner's own argument handling (the peer run itself is slow and not part of `make test`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mlflow-peer-tests.py"


def _runner():  # the script's name has dashes: load it by path
    spec = importlib.util.spec_from_file_location("mlflow_peer_tests", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_folder_without_mlflows_test_file_is_refused_with_the_clone_command(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        _runner().parse_args(["--mlflow-tests", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "holds no tests/tracking/test_rest_tracking.py" in err
    assert "git clone --depth 1 --branch v3.17.2" in err


def test_servers_default_to_loopml_and_take_at_most_two(tmp_path: Path, capsys) -> None:
    (tmp_path / "tests" / "tracking").mkdir(parents=True)
    (tmp_path / "tests" / "tracking" / "test_rest_tracking.py").write_text("")
    runner = _runner()
    assert runner.parse_args(["--mlflow-tests", str(tmp_path)]).server == ["loopml"]
    both = runner.parse_args(["--mlflow-tests", str(tmp_path), "--server", "original", "--server", "loopml"])
    assert both.server == ["original", "loopml"]
    with pytest.raises(SystemExit):
        runner.parse_args(["--mlflow-tests", str(tmp_path)] + ["--server", "loopml"] * 3)
    assert "given once or twice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runner.parse_args(["--mlflow-tests", str(tmp_path), "--server", "fasttrack"])


def test_junit_outcomes_are_read_with_the_first_line_of_the_failure(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text(
        '<testsuites><testsuite>'
        '<testcase name="test_a[sqlalchemy]"/>'
        '<testcase name="test_b[sqlalchemy]"><failure message="assert 404 == 400&#10;more">x</failure></testcase>'
        '<testcase name="test_c[sqlalchemy]"><skipped type="pytest.xfail" message="not yet"/></testcase>'
        '<testcase name="test_d[sqlalchemy]"><error message="fixture broke"/></testcase>'
        '</testsuite></testsuites>'
    )
    assert _runner().read_junit(report) == {
        "test_a[sqlalchemy]": ("passed", ""),
        "test_b[sqlalchemy]": ("failed", "assert 404 == 400"),
        "test_c[sqlalchemy]": ("xfailed", "not yet"),
        "test_d[sqlalchemy]": ("error", "fixture broke"),
    }
