"""The server as a real ``loopml server`` process, and many client processes writing through one server."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import httpx
import numpy as np
import pytest

from loopml.server import create_app
from loopml.store import TrackingStore
from loopml.tracking.remote import RemoteStore

from ..deps import need
from .conftest import LiveServer

LISTENING = re.compile(r"loopml server listening on (http://127\.0\.0\.1:\d+)")


def _lines(stream: IO[str], out: queue.Queue[str | None]) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


@pytest.fixture
def cli_server(db_uri: str, tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[str], str]]]:
    """Start ``loopml server --port 0`` and return (process, url) once it prints its address."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], str]:
        env = {
            **os.environ,
            "LOOPML_HOME": str(tmp_path / "server-home"),
            "LOOPML_ARTIFACT_ROOT": str(tmp_path / "server-artifacts"),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("LOOPML_SERVER_TOKEN", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "loopml", "server", "--port", "0", "--store", db_uri, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        procs.append(proc)
        lines: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
        seen = []
        while True:
            line = lines.get(timeout=60)
            if line is None:
                pytest.fail(f"loopml server exited with {proc.wait()}: {''.join(seen)}")
            seen.append(line)
            if m := LISTENING.search(line):
                return proc, m.group(1)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_the_cli_server_process(cli_server: Callable[..., tuple[subprocess.Popen[str], str]], tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    proc, url = cli_server("--auth-token-file", str(token_file))
    assert httpx.get(f"{url}/health").status_code == 401
    remote = RemoteStore(url, token="from-a-file")
    run = remote.create_run(experiment="cli")
    remote.log_metrics([(run.id, "x", i, 1.0, float(i)) for i in range(100)])
    remote.put_artifact_bytes(run.id, "notes.txt", b"hi")
    assert remote.history(run.id, "x").values.sum() == sum(range(100))
    assert (tmp_path / "server-artifacts" / run.id / "notes.txt").read_bytes() == b"hi"
    remote.close()

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) in (0, 130, -signal.SIGINT)


def test_the_cli_refuses_a_wildcard_bind_without_allowed_hosts(tmp_path: Path) -> None:
    env = {**os.environ, "LOOPML_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "loopml", "server", "--host", "0.0.0.0", "--port", "0"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--allowed-host" in done.stderr and "Traceback" not in done.stderr


CHILD = """
import sys
import loopml
n = int(sys.argv[1])
with loopml.start_run(experiment="many", name=sys.argv[2]) as run:
    for i in range(n):
        run.log({"x": float(i)}, step=i)
print(run.id, flush=True)
"""


@pytest.mark.slow
def test_eight_processes_write_through_one_server(
    sqlite_store: TrackingStore, live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    srv = live_server(create_app(sqlite_store))
    n, procs = 20_000, 8
    env = {**os.environ, "LOOPML_TRACKING_URI": srv.url, "LOOPML_HOME": str(tmp_path / "clients")}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(n), f"proc-{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(procs)
    ]
    run_ids = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        run_ids.append(out.strip())
    assert len(set(run_ids)) == procs

    expected_sum = n * (n - 1) / 2
    for rid in run_ids:
        rec = sqlite_store.get_run(rid)
        assert rec.status == "FINISHED" and rec.metrics["x"].count == n
        h = sqlite_store.history(rid, "x")
        np.testing.assert_array_equal(h.steps, np.arange(n))
        assert h.values.sum() == expected_sum
    assert sqlite_store.count_runs(experiments="many") == procs


def test_the_cli_servers_explain_budget(cli_server: Callable[..., tuple[subprocess.Popen[str], str]], db_uri: str,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need("captum.attr", extra="explain")
    import torch

    import loopml
    from loopml.tracking import api
    from tests.models.nets import CNN

    torch.manual_seed(0)
    x = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
    monkeypatch.setenv("LOOPML_ARTIFACT_ROOT", str(tmp_path / "server-artifacts"))  # where the server reads the files
    loopml.Client(db_uri).register(CNN().eval(), "digits", input_example=x, formats=["torch"])
    api.close_all()
    _proc, url = cli_server("--explain-budget", "100")
    one = {"inputs": x[:1].tolist()}
    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/api/v1/models/digits/versions/1/explain", json={**one, "method": "saliency"})  # costs 64
        assert r.status_code == 200 and np.asarray(r.json()["results"][0]["attributions"]).shape == (1, 8, 8)
        r = c.post("/api/v1/models/digits/versions/1/explain", json={**one, "method": "ig", "steps": 2})  # costs 128
        assert r.status_code == 422 and r.json()["error"]["code"] == "over_budget"
        assert "budget of 100" in r.json()["error"]["message"]
