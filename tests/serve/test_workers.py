"""``loopml serve --workers N`` keeps its workers: one that dies is replaced; ones that keep dying stop the server.

Real processes: the CLI as a subprocess over a real SQLite store, workers found in
/proc and killed with real signals. Nothing waits on a clock: the parent's report of
a death is read from its stderr, and readiness is polled.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

import httpx
import pytest

from loopml.serve.workers import RestartLimit, WorkerPool
from loopml.store import TrackingStore

from .conftest import row, serve_process

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads worker pids from /proc")


def _workers(parent: int) -> set[int]:
    with open(f"/proc/{parent}/task/{parent}/children") as f:
        return {int(pid) for pid in f.read().split()}


def _report(proc: "subprocess.Popen[str]", what: str, guard: float = 300.0) -> str:
    """The first stderr line of the server that contains ``what``, as soon as it is written.

    ``guard`` only keeps a broken server from hanging the test: nothing is timed.
    """
    assert proc.stderr is not None
    fd, seen = proc.stderr.fileno(), b""
    while True:
        readable, _, _ = select.select([fd], [], [], guard)
        assert readable, f"the server wrote no {what!r} in {guard:g} s; its stderr so far: {seen.decode(errors='replace')}"
        chunk = os.read(fd, 65536)
        assert chunk, f"the server exited (code {proc.wait()}) without writing {what!r}: {seen.decode(errors='replace')}"
        seen += chunk
        for line in seen.decode(errors="replace").splitlines():
            if what in line:
                return line


def test_a_killed_worker_is_replaced_by_one_that_serves(mlp_store: TrackingStore) -> None:
    argv = [sys.executable, "-m", "loopml", "serve", "mlp@production", "--port", "0", "--workers", "2", "--no-gate"]
    with serve_process(argv) as (proc, url, _ready):
        first = _workers(proc.pid)
        assert len(first) == 2, first
        victim, survivor = sorted(first)
        os.kill(victim, signal.SIGKILL)
        line = _report(proc, "in its place")
        assert f"(pid {victim}) was killed by SIGKILL; started pid " in line, line
        new = int(line.split("started pid ")[1].split()[0])
        assert _workers(proc.pid) == {survivor, new}

        # with the survivor stopped, only the new worker can accept: it loads the model, then answers
        os.kill(survivor, signal.SIGSTOP)
        try:
            for _ in range(1_000_000):
                answer = httpx.post(f"{url}/v1/models/mlp/predict", json={"inputs": row()}, timeout=60)
                if answer.status_code == 200:
                    break
                assert (answer.status_code, answer.json()["error"]["code"]) == (503, "not_ready"), answer.text
            assert answer.status_code == 200 and answer.json()["status"] == "ok", answer.text
        finally:
            os.kill(survivor, signal.SIGCONT)
        assert _workers(proc.pid) == {survivor, new}
    # serve_process: SIGTERM reaches every worker and the server exits 0


def test_workers_that_keep_dying_stop_the_server_with_one_line() -> None:
    # every worker fails as it starts (a model server cannot read its registry over HTTP): after 5 restarts,
    # the sixth death stops the server
    argv = [sys.executable, "-m", "loopml", "serve", "mlp@production", "--port", "0", "--workers", "2",
            "--store", "http://127.0.0.1:9/"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert sum("in its place" in line for line in lines) == 5, lines
    last = lines[-1]
    assert last.startswith("error: loopml serve: worker ") and last.endswith("more than 5 workers died within 60 s, so the server stopped"), last
    assert "exited with code 1 (LoopMLError: loopml serve reads the registry and writes the request log in a database" in last, last
    assert "Traceback" not in done.stderr


def test_the_restart_limit_counts_deaths_in_a_sliding_window() -> None:
    limit = RestartLimit(3, window=10.0)
    assert [limit.allow(t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
    assert not limit.allow(9.9)  # a fourth death within 10 s
    assert limit.allow(10.5)  # the death at 0 s has aged out (the refused one was never counted)
    never = RestartLimit(0, window=60.0)
    assert not never.allow(0.0)  # max_restarts=0: the first death stops the server


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 0}, r"Argument workers should be an int >= 1; got 0"),
        ({"workers": 2, "max_restarts": -1}, r"Argument max_restarts should be an int >= 0 \(0: never restart a worker\); got -1"),
        ({"workers": 2, "restart_window": 0}, r"Argument restart_window should be a number of seconds > 0, like 60.0; got 0"),
    ],
)
def test_bad_pool_arguments_say_what_is_expected(kwargs: dict[str, int], message: str) -> None:
    workers = kwargs.pop("workers")
    with pytest.raises(ValueError, match=message):
        WorkerPool(workers, **kwargs)
