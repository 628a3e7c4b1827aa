"""``loopml serve --monitor``: the scheduled monitor runs beside the server in a process of its own, and dies with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from loopml.store import TrackingStore
from loopml.store.monitoring import MonitorLog

from .conftest import rows, serve_process

ARGV = [sys.executable, "-m", "loopml", "serve", "mlp@production", "--port", "0", "--no-gate", "--monitor",
        "--monitor-every", "1s"]


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that never reaps it has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def _poll(condition: object, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_serve_monitor_stores_results_while_serving_and_stops_with_the_server(mlp_store: TrackingStore) -> None:
    log = MonitorLog(mlp_store)
    with serve_process(ARGV) as (proc, url, _ready):
        (monitor,) = _children(proc.pid)  # the one child: the monitor process
        with httpx.Client(base_url=url, timeout=30) as client:
            for r in rows(5, seed=2):
                assert client.post("/v1/models/mlp/predict", json={"inputs": r.tolist()}).status_code == 200

            def seen() -> bool:  # the windows tile the log: each request is counted once, none is missed
                return sum(r["payload"]["requests"] for r in log.results("mlp", 1, "predictions")) == 5

            def stored() -> bool:  # a cycle stores its three results one after the other: the last one too
                return {r["kind"] for r in log.results("mlp", 1)} == {"predictions", "drift", "performance"}

            _poll(seen)
            _poll(stored)
            assert client.get("/ready").status_code == 200  # still serving
        kinds = {r["kind"] for r in log.results("mlp", 1)}
        assert kinds == {"predictions", "drift", "performance"}
        drift = log.results("mlp", 1, "drift")[-1]
        assert drift["payload"]["status"] == "not enough data" and drift["flagged"] is None
    # serve_process sent SIGTERM and saw exit 0: the server reaped its monitor
    assert not _alive(monitor) and not Path(f"/proc/{monitor}").exists()


def test_the_monitor_exits_when_the_server_is_killed(mlp_store: TrackingStore) -> None:
    proc = subprocess.Popen(ARGV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout is not None
    try:
        assert "listening" in proc.stdout.readline()
        (monitor,) = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)  # no chance to stop its monitor
        proc.wait(30)
        _poll(lambda: not _alive(monitor), timeout=30)  # it notices within a second
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_bad_monitor_interval_is_refused_before_serving(mlp_store: TrackingStore) -> None:
    bad = subprocess.run([*ARGV[:-1], "soon"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: Argument monitor_every should be a duration")
    assert "Traceback" not in bad.stderr and bad.stdout == ""

