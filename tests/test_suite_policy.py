"""The suite's own rules (docs/testing.md): no silent skips of whole files, warnings from loopml fail."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests import deps

ROOT = Path(__file__).resolve().parents[1]


def test_no_test_uses_importorskip() -> None:
    # pytest.importorskip skips silently on CI too; tests.deps.need fails there instead
    offenders = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests").rglob("*.py"))
                 if p.name != "deps.py" and re.search(r"\bimportorskip\(", p.read_text())]
    assert offenders == [], f"use tests.deps.need(module, extra=...) instead of pytest.importorskip in {offenders}"


def test_warnings_from_loopml_are_errors() -> None:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert options["filterwarnings"][0] == "error:::loopml"
    assert "pytest-xdist" in " ".join(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                                      ["optional-dependencies"]["test"])


def test_need_fails_on_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deps, "ON_CI", True)
    with pytest.raises(pytest.fail.Exception, match=r"no_such_module_for_loopml.*pip install -e '\.\[edge,test\]'.*CI"):
        deps.need("no_such_module_for_loopml", extra="edge")
    monkeypatch.setattr(deps, "ON_CI", False)
    with pytest.raises(pytest.skip.Exception, match=r"no_such_module_for_loopml is not installed"):
        deps.need("no_such_module_for_loopml", extra="edge")
    assert deps.need("json", extra="test").dumps([1]) == "[1]"
