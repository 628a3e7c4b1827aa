"""loopml.access: the Host and token checks both servers share, without a web framework."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loopml.access import HostAllowList, bearer_ok, read_token_file
from loopml.errors import ConfigError


def test_host_allow_list() -> None:
    hosts = HostAllowList(["tracking.internal:5000", "models.internal"])
    assert [hosts.allows(h) for h in ("127.0.0.1:8080", "localhost", "[::1]:1", "tracking.internal:5000",
                                      "models.internal:9", "MODELS.internal")] == [True] * 6
    assert [hosts.allows(h) for h in ("tracking.internal", "tracking.internal:5001", "evil.example", "", None,
                                      "a/b", "127.0.0.1:99999")] == [False] * 7
    assert HostAllowList(["*"]).allows("anything.example") and HostAllowList(["*"]).allows(None)
    with pytest.raises(ValueError, match="Argument allowed_hosts should hold host names .* got 'http://x'"):
        HostAllowList(["http://x"])
    with pytest.raises(TypeError, match="should be a list of host names, got the string"):
        HostAllowList("localhost")  # type: ignore[arg-type]


def test_bearer_token() -> None:
    assert bearer_ok(b"Bearer s3cret", b"s3cret") and bearer_ok("bearer  s3cret ", b"s3cret")
    for header in (None, b"", b"s3cret", b"Basic s3cret", b"Bearer s3cre", b"Bearer s3cret2"):
        assert not bearer_ok(header, b"s3cret"), header


def test_token_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    assert read_token_file(tmp_path / "token") == "s3cret"
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(ConfigError, match="is empty; put the token on its first line"):
        read_token_file(tmp_path / "empty")
    with pytest.raises(ConfigError, match="Cannot read the auth token file"):
        read_token_file(tmp_path / "missing")


def test_importing_it_imports_no_web_framework() -> None:
    code = "import sys, loopml.access; print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
