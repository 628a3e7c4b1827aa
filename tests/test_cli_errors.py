"""How the CLI reports an error: a loopml error is one line and the exit code its class names
(loopml.errors), a missing extra is one line naming the install command, anything else is a bug
and keeps its traceback."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from loopml.cli_common import friendly
from loopml.errors import ArgumentError, ArgumentTypeError, Conflict, IntegrityError, LoopMLError, NotFound, StoreError


def _app(exc: Exception) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @friendly
    def run() -> None:
        raise exc

    return app


def test_a_missing_extra_is_one_line_with_the_install_command() -> None:
    result = CliRunner().invoke(_app(ModuleNotFoundError("Reading .parquet files needs pyarrow: pip install 'loopml[parquet]'")))
    assert result.exit_code == 2
    assert result.output.strip() == "error: Reading .parquet files needs pyarrow: pip install 'loopml[parquet]'"


def test_a_module_error_loopml_did_not_name_keeps_its_traceback() -> None:
    result = CliRunner().invoke(_app(ModuleNotFoundError("No module named 'nothere'")))
    assert result.exit_code == 1
    assert isinstance(result.exception, ModuleNotFoundError)


@pytest.mark.parametrize("exc", [ArgumentError("Argument x should be 1"), ArgumentTypeError("Argument y should be a str"),
                                 NotFound("Run 'abc' does not exist"), Conflict("alias @production points at it")])
def test_bad_input_is_one_line_and_exit_2(exc: Exception) -> None:
    result = CliRunner().invoke(_app(exc))
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {exc}"


@pytest.mark.parametrize("exc", [StoreError("database is locked", transient=True), IntegrityError("sha256 differs")])
def test_a_failed_operation_is_one_line_and_exit_1(exc: LoopMLError) -> None:
    result = CliRunner().invoke(_app(exc))
    assert result.exit_code == exc.exit_code == 1
    assert result.output.strip() == f"error: {exc}"


@pytest.mark.parametrize("exc", [TypeError("unsupported operand type(s) for +: 'int' and 'str'"), ValueError("x"), KeyError("k")])
def test_an_error_that_is_not_loopml_s_is_a_bug_with_its_traceback(exc: Exception) -> None:
    # a TypeError from loopml's own code is a bug, not bad input: never "error: ..." with exit 2
    result = CliRunner().invoke(_app(exc))
    assert result.exit_code == 1
    assert result.exception is exc
    assert not result.output.startswith("error:")


def test_serve_refuses_a_header_timeout_that_is_not_positive() -> None:
    from loopml.cli import app

    result = CliRunner().invoke(app, ["serve", "mlp@production", "--header-timeout", "0"])
    assert result.exit_code == 2
    assert "Argument header_timeout should be a number of seconds > 0" in result.output
    assert "Traceback" not in result.output
