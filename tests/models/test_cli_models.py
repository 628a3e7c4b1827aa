"""``loopml models ...`` on a real store."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import loopml
from loopml.cli import app
from loopml.models import registry as R

from .nets import MLP

WIDE = {"COLUMNS": "250"}


@pytest.fixture
def two_versions(use_store: str) -> str:
    torch.manual_seed(0)
    x = torch.randn(4, 64)
    with loopml.start_run(experiment="cli"):
        for _ in range(2):
            R.register(MLP(hidden=16), "mlp", input_example=x, formats=("torch",), init_args={"hidden": 16})
    return use_store


def _run(*args: str) -> object:
    return CliRunner().invoke(app, list(args), env=WIDE)


def test_list_show_alias_delete(two_versions: str) -> None:
    r = _run("models", "list")
    assert r.exit_code == 0 and "mlp" in r.stdout  # type: ignore[attr-defined]
    r = _run("models", "alias", "mlp", "production", "1")
    assert r.exit_code == 0 and "mlp@production moved to 1" in r.stdout  # type: ignore[attr-defined]
    r = _run("models", "alias", "mlp", "production", "2")
    assert "moved from 1 to 2" in r.stdout  # type: ignore[attr-defined]
    r = _run("models", "show", "mlp")
    assert r.exit_code == 0 and "@production" in r.stdout and "fp32" in r.stdout  # type: ignore[attr-defined]
    r = _run("models", "show", "mlp@production", "--json")
    doc = json.loads(r.stdout)  # type: ignore[attr-defined]
    assert doc["version"] == 2 and [(e["from_version"], e["to_version"]) for e in doc["alias_history"]] == [(None, 1), (1, 2)]
    r = _run("models", "show", "mlp/1")
    assert r.exit_code == 0 and "signature" in r.stdout and "alias history" in r.stdout  # type: ignore[attr-defined]
    r = _run("models", "delete", "mlp/2")
    assert r.exit_code == 2 and "alias @production points at it" in r.stderr  # type: ignore[attr-defined]
    r = _run("models", "delete", "mlp/1")
    assert r.exit_code == 0 and [v.version for v in R.list_versions("mlp")] == [2]


@pytest.mark.parametrize(
    "args, message",
    [
        (("models", "show", "nothing"), "No model named 'nothing'"),
        (("models", "show", "mlp/9"), "has no version 9"),
        (("models", "show", "mlp@"), "Nothing follows"),
        (("models", "alias", "mlp", "Prod!", "1"), "Argument alias"),
        (("models", "alias", "mlp", "production"), "Name the version"),
        (("models", "delete", "mlp@production"), "by number"),
        (("models", "export", "mlp/1", "--format", "tflite"), "Argument formats"),
        (("quantize", "mlp/1", "--method", "magic"), "Argument method"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(two_versions: str, args: tuple[str, ...], message: str) -> None:
    r = _run(*args)
    assert r.exit_code == 2, r.stdout  # type: ignore[attr-defined]
    assert r.stderr.startswith("error: ") and message in r.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in r.stderr  # type: ignore[attr-defined]


def test_the_early_data_file_check_knows_the_same_suffixes() -> None:
    # `loopml quantize --data missing.npz` is refused before torch loads, with read_file's suffixes and words
    from loopml.cli_models import DATA_FILE_SUFFIXES
    from loopml.data.sources import FILE_SUFFIXES

    assert DATA_FILE_SUFFIXES == FILE_SUFFIXES
