"""``loopml ui``: a server on the local store, on 127.0.0.1, that prints the UI's address."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
from typer.testing import CliRunner

from loopml.cli import app
from loopml.store import TrackingStore


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["ui", "--help"])
    assert result.exit_code == 0 and "Example" in result.output


def test_loopml_ui_prints_its_address_and_serves_the_local_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = TrackingStore(f"sqlite:///{(home / 'loopml.db').as_posix()}", artifact_root=home / "artifacts")
    store.create_run(experiment="local")
    store.close()
    env = {**os.environ, "LOOPML_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("LOOPML_TRACKING_URI", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopml", "ui"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        seen = []
        while True:
            line = lines.get(timeout=60)
            assert line is not None, f"loopml ui exited with {proc.wait()}: {''.join(seen)}"
            seen.append(line)
            if m := re.search(r"loopml UI at (http://127\.0\.0\.1:\d+/ui/)", line):
                break
        url = m.group(1)
        assert httpx.get(url).status_code == 200
        exps = httpx.get(url + "api/experiments").json()["experiments"]
        assert [e["name"] for e in exps] == ["local"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
