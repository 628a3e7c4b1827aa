"""loopml ships py.typed: its source must type-check, in mypy's strict mode.

The settings are pyproject.toml's ``[tool.mypy]`` (``strict = true`` on ``src/loopml``,
``ignore_missing_imports`` only for third-party packages without types), so that
``python -m mypy`` at the repository root checks exactly what this test checks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.deps import need

ROOT = Path(__file__).resolve().parents[1]


def _mypy(cache: Path, *paths: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(cache), *paths],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )


def test_package_is_typed() -> None:
    assert (ROOT / "src" / "loopml" / "py.typed").exists()


def test_mypy_config_is_strict() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True and config["files"] == ["src/loopml"]
    for override in config.get("overrides", []):
        # only third-party modules may skip their (missing) types, never loopml's own
        assert not any(m.split(".")[0] == "loopml" for m in override["module"]), override
        assert set(override) - {"follow_imports"} == {"module", "ignore_missing_imports"}, override
        assert override.get("follow_imports", "skip") == "skip", override  # a big typed package read as Any


def test_mypy_finds_no_errors(tmp_path: Path) -> None:
    need("mypy", extra="test")
    proc = _mypy(tmp_path / "cache")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found" in proc.stdout
    # each implementation satisfies its Protocol (tests/contracts/conformance.py assigns one to the other)
    proc = _mypy(tmp_path / "cache", "tests/contracts/conformance.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
