"""Which plotly.js the UI serves: the basic bundle from npm when there is one, else the plotly package's full one."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from loopml.server.ui import assets

from ..conftest import LiveServer

BASIC_BANNER = b"/**\n* plotly.js (basic - minified) v4.1.1\n* Copyright 2012-2026, Plotly, Inc.\n*/\nwindow.Plotly = {};\n"


def _bundle(server: LiveServer) -> tuple[httpx.Response, str]:
    with httpx.Client(base_url=server.url) as c:
        shell = c.get("/ui/run").text
        return c.get("/ui/vendor/plotly.min.js"), shell


def test_the_file_the_variable_names(sqlite_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    basic = tmp_path / "plotly-basic.min.js"
    basic.write_bytes(BASIC_BANNER)
    monkeypatch.setenv(assets.PLOTLY_ENV, str(basic))
    r, shell = _bundle(sqlite_server)
    assert r.status_code == 200 and r.headers["x-loopml-plotly"] == "basic" and r.content == BASIC_BANNER
    assert r.headers["content-type"].startswith("text/javascript") and "immutable" in r.headers["cache-control"]
    assert 'src="/ui/vendor/plotly.min.js?v=4.1.1-basic"' in shell  # another bundle, another cached URL


def test_a_missing_basic_bundle_falls_back_to_the_full_one(
    sqlite_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(assets.PLOTLY_ENV, str(tmp_path / "not-installed.js"))
    r, shell = _bundle(sqlite_server)
    assert r.status_code == 200 and r.headers["x-loopml-plotly"] == "full"
    assert len(r.content) > 3_000_000 and b"plotly.js v" in r.content[:200]
    assert "-full" in shell
    assert "not-installed.js: no such file" in caplog.text


def test_the_npm_bundle_of_a_checkout(sqlite_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(assets.PLOTLY_ENV, raising=False)
    root = Path(__file__).resolve().parents[3]
    if not (root / assets._NPM_BASIC).is_file():
        pytest.skip("plotly.js-basic-dist-min is not installed: run `make js` (needs npm)")
    r, _shell = _bundle(sqlite_server)
    assert r.headers["x-loopml-plotly"] == "basic" and 1_000_000 < len(r.content) < 2_000_000
    assert b"plotly.js (basic - minified) v" in r.content[:200]
    # the version the lockfile pins is the one served
    assert b'"version": "' + assets.plotly_js().version.encode() + b'"' in (root / "js" / "package-lock.json").read_bytes()
