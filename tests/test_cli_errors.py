"""The CLI turns a missing extra into one line naming the install command, exit code 2."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from loopml.cli_common import _friendly


def _app(exc: Exception) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @_friendly
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


@pytest.mark.parametrize("exc", [ValueError("Argument x should be 1"), TypeError("Argument y should be a str")])
def test_bad_arguments_are_one_line(exc: Exception) -> None:
    result = CliRunner().invoke(_app(exc))
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {exc}"


def test_serve_refuses_a_header_timeout_that_is_not_positive() -> None:
    from loopml.cli import app

    result = CliRunner().invoke(app, ["serve", "mlp@production", "--header-timeout", "0"])
    assert result.exit_code == 2
    assert "Argument header_timeout should be a number of seconds > 0" in result.output
    assert "Traceback" not in result.output
