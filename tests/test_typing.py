"""loopml ships py.typed: its source must type-check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.deps import need

ROOT = Path(__file__).resolve().parents[1]


def test_package_is_typed() -> None:
    assert (ROOT / "src" / "loopml" / "py.typed").exists()


def test_mypy_finds_no_errors(tmp_path: Path) -> None:
    need("mypy", extra="test")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--cache-dir", str(tmp_path / "cache"),
         str(ROOT / "src" / "loopml")],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
