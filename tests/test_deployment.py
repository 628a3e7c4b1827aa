"""The team deployment (docs/deployment.md): two ``loopml serve`` processes and ``loopml server`` over one store.

PostgreSQL plus a shared artifact root (an S3 endpoint when the suite has one, else
one folder every process reads), as on a team's machines: the model servers follow
``scorer@production``; a third process (the CLI) moves the alias while clients keep
sending; both servers swap with no failed request, both log to the one request log,
and the tracking server shows the versions, the move and the requests over the same
store. Every process is a real subprocess on an ephemeral 127.0.0.1 port.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import torch

import loopml
from loopml.store import TrackingStore
from loopml.store.predictions import PredictionLog
from loopml.tracking import api

from .models.nets import MLP

ROOT = Path(__file__).resolve().parents[1]
NAME = "scorer"
CLASSES = ["low", "mid", "high"]
ROWS = [[0.25 * i - 1.0 for i in range(8)], [0.5] * 8, [-0.3] * 8]


def _register(seed: int) -> int:
    torch.manual_seed(seed)
    model = MLP(n_in=8, hidden=8, n_out=3).eval()
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    # the state dict only: no export to check, and the servers load it with torch
    v = loopml.register(model, NAME, input_example=x, class_names=CLASSES,
                        init_args={"n_in": 8, "hidden": 8, "n_out": 3}, formats=("torch",))
    return v.version


def _announced(proc: "subprocess.Popen[str]", marker: str, err: Path) -> str:
    """The first stdout line of ``proc`` holding ``marker`` (a server prints where it listens, then when ready)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()  # '' when the process died
    assert marker in line, (line, err.read_text())
    return line


class _Clients:
    """``threads`` clients per server sending predictions until ``stop`` is set; every answer kept."""

    def __init__(self, urls: list[str], threads: int = 2) -> None:
        self.stop = threading.Event()
        self.answers: list[tuple[int, int, int, dict[str, Any]]] = []  # (server, client, HTTP status, body)
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._send, args=(i, j, url), daemon=True)
                         for i, url in enumerate(urls) for j in range(threads)]

    def _send(self, server: int, me: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    r = client.post(f"/v1/models/{NAME}/predict", json={"inputs": ROWS[n % len(ROWS)]})
                    body = r.json()
                except (httpx.HTTPError, ValueError) as exc:  # a refused connection, a cut answer: a failed request
                    with self._lock:
                        self.errors.append(f"server {server}: {type(exc).__name__}: {exc}")
                    continue
                with self._lock:
                    self.answers.append((server, me, r.status_code, body))

    def start(self) -> "_Clients":
        for t in self._threads:
            t.start()
        return self

    def join(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def versions(self, server: int, client: int | None = None) -> list[int]:
        with self._lock:
            return [body.get("version") for s, c, _, body in self.answers if s == server and client in (None, c)]

    def wait(self, done: Any, timeout: float) -> None:
        """Poll ``done()`` (no sleeping on a server: the clients are the clock) until true or ``timeout``."""
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, (self.errors[:5], [self.versions(i)[-5:] for i in (0, 1)])
            assert not self.errors, self.errors[:5]
            self.stop.wait(0.02)


@pytest.fixture
def shared_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The artifact root every process shares: the suite's S3 prefix (``s3_root``, with the endpoint and AWS_*
    variables set for the processes) where tests/conftest.py has one, else one local folder."""
    try:
        return str(request.getfixturevalue("s3_root"))
    except pytest.FixtureLookupError:
        return str(tmp_path / "artifacts")


@pytest.mark.postgres
@pytest.mark.parametrize("db_uri", ["postgres"], indirect=True)
def test_two_model_servers_follow_one_alias_over_one_store(db_uri: str, shared_root: str, tmp_path: Path) -> None:
    env = {**os.environ, "LOOPML_TRACKING_URI": db_uri, "LOOPML_ARTIFACT_ROOT": shared_root,
           "LOOPML_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    procs: list[subprocess.Popen[str]] = []
    logs: list[IO[str]] = []

    def start(*args: str) -> tuple["subprocess.Popen[str]", Path]:
        err = tmp_path / f"stderr-{len(procs)}.txt"
        logs.append(err.open("w"))
        proc = subprocess.Popen([sys.executable, "-m", "loopml", *args], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=logs[-1])
        procs.append(proc)
        return proc, err

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOPML_TRACKING_URI", db_uri)
        mp.setenv("LOOPML_ARTIFACT_ROOT", shared_root)
        try:
            v1, v2 = _register(seed=0), _register(seed=1)
            loopml.models.set_alias(NAME, "production", v1)
        finally:
            loopml.set_tracking_uri(None)
            api.close_all()
    clients = None
    try:
        # a short poll so that the test waits less; a deployment keeps the default (docs/deployment.md)
        servers = [start("serve", f"{NAME}@production", "--port", "0", "--poll-interval", "0.2", "--no-gate")
                   for _ in range(2)]
        tracking, tracking_err = start("server", "--port", "0")
        urls = [_announced(p, "loopml serve listening on http://127.0.0.1:", e).split(" on ", 1)[1].split()[0]
                for p, e in servers]
        for p, e in servers:
            assert f"{NAME}/{v1} ready" in _announced(p, "ready", e)
        clients = _Clients(urls).start()
        clients.wait(lambda: all(len(clients.versions(i)) >= 20 for i in (0, 1)), timeout=60)

        # a third process moves the alias, as an engineer or `loopml loop run` would
        moved = subprocess.run([sys.executable, "-m", "loopml", "models", "alias", NAME, "production", str(v2)],
                               env=env, capture_output=True, text=True, timeout=120)
        assert moved.returncode == 0, moved.stderr
        clients.wait(lambda: all(clients.versions(i)[-10:] == [v2] * 10 for i in (0, 1)), timeout=60)
        clients.join()

        assert not clients.errors, clients.errors[:5]
        failed = [a for a in clients.answers if a[2] != 200 or a[3].get("status") != "ok"]
        assert not failed, failed[:5]
        for i, j in [(0, 0), (0, 1), (1, 0), (1, 1)]:
            seen = clients.versions(i, j)
            switch = seen.index(v2)
            # each client's requests, one after another, were answered by v1, then by v2 only: one swap, never back
            assert set(seen[:switch]) == {v1} and set(seen[switch:]) == {v2}, seen
        ids = [{body["request_id"] for s, _, _, body in clients.answers if s == i} for i in (0, 1)]

        url = _announced(tracking, "loopml server listening on http://127.0.0.1:", tracking_err).split(" on ", 1)[1].strip()
        with httpx.Client(base_url=url, timeout=30) as ui:
            model = ui.get(f"/api/v1/models/{NAME}").json()
            assert sorted(v["version"] for v in model["versions"]) == [v1, v2], model
            assert model["model"]["aliases"] == {"production": v2}, model
            events = ui.get(f"/api/v1/models/{NAME}/alias-history").json()["events"]
            assert sorted((e["from_version"] or 0, e["to_version"]) for e in events) == [(0, v1), (v1, v2)], events
            page = ui.get("/ui/")
            assert page.status_code == 200 and "text/html" in page.headers["content-type"], page.text[:200]

        for p, _ in servers:  # SIGTERM: each writes out its request log, then exits 0
            p.send_signal(signal.SIGTERM)
        for p, e in servers:
            assert p.wait(timeout=60) == 0, e.read_text()
        with httpx.Client(base_url=url, timeout=30) as ui:
            newest = ui.get(f"/ui/api/predictions/{NAME}", params={"limit": 200}).json()["requests"]
            shown = {r["request_id"] for r in newest}
            assert shown & ids[0] and shown & ids[1], "the UI shows both servers' requests"
        store = TrackingStore(db_uri, artifact_root=shared_root)
        try:
            logged = PredictionLog(store).request_ids(NAME)
        finally:
            store.close()
        assert ids[0] <= logged and ids[1] <= logged and not ids[0] & ids[1]
    finally:
        if clients is not None:
            clients.join()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
        for f in logs:
            f.close()


def _parse(argv: list[str], where: str) -> None:
    """``argv`` (after ``loopml``) names a command and options it takes, with values of the right type."""
    import typer.main

    from loopml.cli import app

    cmd: Any = typer.main.get_command(app)
    words = list(argv)
    while hasattr(cmd, "commands"):  # typer's vendored click: duck-type groups
        assert words and words[0] in cmd.commands, f"{where}: loopml {' '.join(argv)}: no such command"
        cmd = cmd.commands[words.pop(0)]
    if not words:
        return  # a command named in prose (`loopml models alias`), not a call
    try:
        cmd.make_context(f"loopml {cmd.name}", words)  # parses and converts, runs nothing
    except Exception as exc:  # click's UsageError and BadParameter, whichever click typer brings
        raise AssertionError(f"{where}: loopml {' '.join(argv)}: {exc}") from None


def _env_example(name: str) -> dict[str, str]:
    text = (ROOT / "deploy" / "env" / f"{name}.env.example").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_the_units_and_the_deployment_doc_run_real_commands() -> None:
    """Each unit's ExecStart (its env file's values filled in) and each ``loopml ...`` in docs/deployment.md parses."""
    units = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
    assert {u.name for u in units} >= {"loopml-server.service", "loopml-serve@.service", "loopml-loop.service"}
    for unit in units:
        text = unit.read_text()
        env: dict[str, str] = _env_example("loopml")
        for name in re.findall(r"^EnvironmentFile=-?/etc/loopml/(\w+)\.env$", text, re.M):
            env.update(_env_example(name))
        [exec_start] = re.findall(r"^ExecStart=/opt/loopml/bin/loopml (.*)$", text, re.M)
        line = exec_start.replace("%i", "8081")
        line = re.sub(r"\$\{(\w+)\}", lambda m: shlex.quote(env[m.group(1)]), line)  # one word, as systemd does
        line = re.sub(r"\$(\w+)", lambda m: env[m.group(1)], line)  # split on spaces, as systemd does
        _parse(shlex.split(line), unit.name)
    doc = (ROOT / "docs" / "deployment.md").read_text()
    calls = re.findall(r"`loopml ([^`]*)`", doc) + re.findall(r"^(?:[A-Z_]+=\S+\s+)*loopml (.*)$", doc, re.M)
    assert len(calls) > 8
    for call in calls:
        _parse([w for w in shlex.split(call.split("#")[0]) if w != "..."], "docs/deployment.md")


def test_serve_refuses_a_poll_interval_that_is_not_positive() -> None:
    from typer.testing import CliRunner

    from loopml.cli import app

    result = CliRunner().invoke(app, ["serve", f"{NAME}@production", "--poll-interval", "0"])
    assert result.exit_code == 2, result.output
    assert "Argument poll_interval should be a number of seconds > 0, like 5.0; got 0.0" in result.output
    assert "Traceback" not in result.output
