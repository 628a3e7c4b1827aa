"""Fault tests of the tracking client on SQLite: real processes, real files.

Each test starts child programs (``fault_scripts/child.py``) that log the way
a user's training script does, then does something unkind to them (many at
once, SIGKILL, another process holding the write lock, Ctrl-C, an uncaught
exception, exit without finishing) and reads the store back.

Nothing here sleeps to wait: children report progress on stdout lines that a
reader thread collects, and the database is polled with a deadline.
"""

from __future__ import annotations

import math
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import pytest

from loopml.store import TrackingStore

CHILD = Path(__file__).with_name("fault_scripts") / "child.py"

# Generous: the suite must pass on a loaded 2-core machine.
START_TIMEOUT = 120.0
STEP_TIMEOUT = 60.0

T = TypeVar("T")


def _poll(fetch: Callable[[], T], done: Callable[[T], bool], *, timeout: float, what: str) -> T:
    """Call ``fetch`` until ``done(value)``; fail with the last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f}s waiting for {what}; last value: {value!r}")
        time.sleep(0.05)  # the pause between polls, not a wait for the condition


class Child:
    """A child process whose stdout lines arrive on a queue (so reads can time out)."""

    def __init__(self, tmp_path: Path, env: dict[str, str], mode: str, *args: str) -> None:
        self.name = f"{mode}-{len(list(tmp_path.glob('*.stderr')))}"
        self.stderr_path = tmp_path / f"{self.name}.stderr"
        self._stderr: IO[bytes] = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), mode, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=tmp_path,  # nothing may be written to the repository
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def expect(self, prefix: str, timeout: float = STEP_TIMEOUT) -> str:
        """The next stdout line starting with ``prefix`` (other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0))
            except queue.Empty:
                raise AssertionError(
                    f"{self.name}: no line starting with {prefix!r} within {timeout:.0f}s\n{self.stderr()}"
                ) from None
            if line is None:
                self.lines.put(None)
                raise AssertionError(
                    f"{self.name} ended (exit {self.proc.poll()}) before printing {prefix!r}\n{self.stderr()}"
                )
            if line.startswith(prefix):
                return line

    def rest(self, timeout: float = STEP_TIMEOUT) -> list[str]:
        """Every line still to come, until the child's stdout closes."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while (line := self.lines.get(timeout=max(deadline - time.monotonic(), 0))) is not None:
            out.append(line)
        self.lines.put(None)
        return out

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = STEP_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout:.0f}s\n{self.stderr()}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)  # stdout is at EOF once the process is gone
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._stderr.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "loopml.db"


@pytest.fixture
def uri(db_path: Path) -> str:
    return f"sqlite:///{db_path.as_posix()}"


@pytest.fixture
def child_env(tmp_path: Path, uri: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LOOPML_TRACKING_URI=uri,
        LOOPML_HOME=str(tmp_path / "home"),
        LOOPML_ARTIFACT_ROOT=str(tmp_path / "artifacts"),
        LOOPML_HEARTBEAT_INTERVAL="0.2",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("LOOPML_HEARTBEAT_TIMEOUT", None)
    return env


@pytest.fixture
def spawn(tmp_path: Path, child_env: dict[str, str]) -> Iterator[Callable[..., Child]]:
    """Start child programs; any still running at the end of the test is killed."""
    started: list[Child] = []

    def start(mode: str, *args: str) -> Child:
        child = Child(tmp_path, child_env, mode, *args)
        started.append(child)
        return child

    yield start
    for child in started:
        child.stop()


@pytest.fixture
def open_store(tmp_path: Path, uri: str) -> Iterator[Callable[..., TrackingStore]]:
    """Open reader stores on the test's database (each with its own heartbeat timeout)."""
    opened: list[TrackingStore] = []

    def open_(heartbeat_timeout: float = 3600.0) -> TrackingStore:
        st = TrackingStore(uri, artifact_root=tmp_path / "artifacts", heartbeat_timeout=heartbeat_timeout)
        opened.append(st)
        return st

    yield open_
    for st in opened:
        st.close()


@pytest.fixture
def local_client(tmp_path: Path, uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point this process's ``loopml.start_run`` at the test's database; close its writer afterwards."""
    from loopml.tracking import api

    monkeypatch.setenv("LOOPML_TRACKING_URI", uri)
    monkeypatch.setenv("LOOPML_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    yield uri
    api.close_all()


def _raw(db_path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db_path, timeout=60)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _assert_prefix(store: TrackingStore, run_id: str, *, at_least: int) -> int:
    """The run's ``x`` points are exactly steps 0..n-1 with value == step, n >= at_least; returns n."""
    h = store.history(run_id, "x")
    n = len(h.values)
    assert n >= at_least, f"only {n} points stored, {at_least} were reported flushed"
    np.testing.assert_array_equal(h.steps, np.arange(n))
    np.testing.assert_array_equal(h.values, np.arange(n, dtype=np.float64))
    assert store.get_run(run_id).metrics["x"].count == n  # latest_metrics moved with the points
    return n


def _flushed(line: str) -> int:
    return int(line.split()[1])


# -- 1. many writers ----------------------------------------------------------


@pytest.mark.slow
def test_eight_processes_log_to_one_new_store_at_once(
    spawn: Callable[..., Child], open_store: Callable[..., TrackingStore], db_path: Path
) -> None:
    """8 processes, released together, create the store, the experiment and their runs, then log 20,000 points each.

    Before loopml took SQLite's write lock at BEGIN for write transactions,
    the creators lost the race at once with "database is locked" (the
    migration, then ``get_or_create_experiment``) instead of waiting.
    """
    procs, n = 8, 20_000
    children = [spawn("burst", "sweep", str(i), str(n)) for i in range(procs)]
    for child in children:
        child.expect("ready", START_TIMEOUT)
    assert not db_path.exists(), "the store must be created by the children, at once"
    for child in children:  # the barrier: all are waiting on stdin
        child.send("go")
    run_ids = {i: child.expect("done ", START_TIMEOUT).split()[1] for i, child in enumerate(children)}
    for child in children:
        assert child.wait() == 0, child.stderr()

    store = open_store()
    steps = np.arange(n, dtype=np.float64)
    for i, run_id in run_ids.items():
        record = store.get_run(run_id)
        assert record.status == "FINISHED"
        assert record.params == {"index": str(i)}
        base = i * 1_000_000.0
        h = store.history(run_id, "x")
        assert len(h.values) == n
        np.testing.assert_array_equal(h.steps, np.arange(n))
        np.testing.assert_array_equal(h.values, base + steps)
        assert math.fsum(h.values) == n * base + n * (n - 1) / 2
        summary = record.metrics["x"]
        assert (summary.count, summary.step, summary.value) == (n, n - 1, base + n - 1)
        assert (summary.min, summary.max) == (base, base + n - 1)

    runs = store.search_runs(experiments="sweep")
    assert sorted(r.id for r in runs) == sorted(run_ids.values())
    assert {r.status for r in runs} == {"FINISHED"}
    assert store.count_runs(filter="status = 'FAILED'") == 0
    assert len(store.list_experiments()) == 1
    total_sum = sum(n * i * 1_000_000.0 + n * (n - 1) / 2 for i in range(procs))
    histories = [store.history(rid, "x") for rid in run_ids.values()]
    assert _raw(db_path, "SELECT SUM(n) FROM metric_blocks") == [(procs * n,)]
    assert sum(len(h.values) for h in histories) == procs * n
    assert sum(float(h.values.sum()) for h in histories) == total_sum
    assert _raw(db_path, "SELECT COUNT(*), SUM(count) FROM latest_metrics") == [(procs, procs * n)]


# -- 2. SIGKILL ---------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_mid_run_keeps_flushed_points_and_reads_killed(
    spawn: Callable[..., Child], open_store: Callable[..., TrackingStore], db_path: Path
) -> None:
    child = spawn("stream", "crash")
    run_id = child.expect("run ", START_TIMEOUT).split()[1]
    patient = open_store(heartbeat_timeout=3600.0)
    start = patient.get_run(run_id).start_time
    reported = 0
    while reported < 5_000:
        reported = _flushed(child.expect("flushed "))
    # the heartbeat must have moved before the kill, so that "KILLED" below means it stopped
    _poll(lambda: patient.get_run(run_id).heartbeat_at, lambda at: at > start, timeout=STEP_TIMEOUT, what="heartbeat")

    os.kill(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    reported = max([reported, *(_flushed(line) for line in child.rest() if line.startswith("flushed "))])

    assert _raw(db_path, "PRAGMA integrity_check") == [("ok",)]
    after = open_store(heartbeat_timeout=3600.0)  # a new store opens the crashed database
    record = after.get_run(run_id)
    assert record.status == "RUNNING"  # its heartbeat is a moment old against a 1-hour timeout
    assert record.end_time is None
    assert record.heartbeat_at > record.start_time
    n = _assert_prefix(after, run_id, at_least=reported)

    impatient = open_store(heartbeat_timeout=1.0)
    killed = _poll(
        lambda: impatient.get_run(run_id), lambda r: r.status == "KILLED", timeout=STEP_TIMEOUT, what="KILLED"
    )
    assert time.time() - killed.heartbeat_at > 1.0  # not before the heartbeat was older than the timeout
    assert killed.end_time == killed.heartbeat_at
    assert [r.id for r in impatient.search_runs(filter="status = 'KILLED'")] == [run_id]
    assert impatient.search_runs(filter="status = 'RUNNING'") == []
    assert after.get_run(run_id).status == "RUNNING"  # KILLED is read from the heartbeat, not written
    assert len(after.history(run_id, "x").values) == n


# -- 3. another process holds the write lock ----------------------------------


@pytest.mark.slow
def test_logging_does_not_block_while_another_process_holds_the_write_lock(
    spawn: Callable[..., Child],
    open_store: Callable[..., TrackingStore],
    db_path: Path,
    local_client: str,
) -> None:
    """This process logs (through its background writer) while a child holds SQLite's write lock for 2 s."""
    import loopml

    with loopml.start_run("locked") as run:
        holder = spawn("hold_lock", str(db_path), "2.0")
        step, worst = 0, 0.0
        window_start = window_end = None
        steps_at_lock = steps_mid = 0
        durable_at_lock = durable_mid = -1
        deadline = time.monotonic() + START_TIMEOUT
        while window_end is None:
            assert time.monotonic() < deadline, f"the lock holder never finished\n{holder.stderr()}"
            t0 = time.perf_counter()
            run.log({"x": float(step), "y": 2.0 * step}, step=step)
            worst = max(worst, time.perf_counter() - t0)
            step += 1
            if window_start is not None and steps_mid == 0 and time.monotonic() - window_start > 0.5:
                durable_mid, steps_mid = _raw(db_path, "SELECT COALESCE(SUM(n), 0) FROM metric_blocks")[0][0], step
            # one training step; it also keeps the logging rate well under the writer's buffer bound
            try:
                line = holder.lines.get(timeout=0.0002)
            except queue.Empty:
                continue
            if line == "locked":
                window_start, steps_at_lock = time.monotonic(), step
                durable_at_lock = _raw(db_path, "SELECT COALESCE(SUM(n), 0) FROM metric_blocks")[0][0]
            elif line == "released":
                window_end = time.monotonic()
            elif line is None:
                raise AssertionError(f"the lock holder ended early ({holder.proc.poll()})\n{holder.stderr()}")
        assert holder.wait() == 0
        assert window_start is not None and steps_mid > 0
        # half a second into the lock: nothing more was durable, yet logging went on
        assert durable_mid == durable_at_lock
        assert steps_mid - steps_at_lock > 50, "logging made no progress while the store was locked"
        assert worst < 0.5, f"a log call took {worst:.3f}s while the store was locked"
        assert run.flush(timeout=STEP_TIMEOUT)

    store = open_store()
    assert store.get_run(run.id).status == "FINISHED"
    n = _assert_prefix(store, run.id, at_least=step)
    assert n == step
    y = store.history(run.id, "y").values
    assert len(y) == step and math.fsum(y) == float(step * (step - 1))


# -- 4. heartbeat -------------------------------------------------------------


@pytest.mark.slow
def test_heartbeat_keeps_a_quiet_live_run_running(
    spawn: Callable[..., Child], open_store: Callable[..., TrackingStore]
) -> None:
    child = spawn("idle", "quiet")  # LOOPML_HEARTBEAT_INTERVAL=0.2
    run_id = child.expect("run ", START_TIMEOUT).split()[1]
    reader = open_store(heartbeat_timeout=1.5)
    start = reader.get_run(run_id).start_time
    polls = 0

    def still_running() -> float:
        nonlocal polls
        record = reader.get_run(run_id)
        age = time.time() - record.heartbeat_at
        assert record.status == "RUNNING", f"read {record.status} {age:.2f}s after the last heartbeat"
        polls += 1
        return record.heartbeat_at

    # ~3 s: twice the timeout, during which the child logs nothing
    last_beat = _poll(
        still_running,
        lambda at: time.time() - start > 3.0 and at > start + 1.5,
        timeout=STEP_TIMEOUT,
        what="3 s of heartbeats",
    )
    assert polls > 5
    assert last_beat > start + 1.5

    child.send("finish")
    child.expect("finished")
    assert child.wait() == 0, child.stderr()
    record = reader.get_run(run_id)
    assert record.status == "FINISHED"
    assert record.end_time is not None and record.end_time >= last_beat
    assert len(reader.history(run_id, "x").values) == 10


# -- 5. Ctrl-C and exceptions -------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_in_a_with_block_ends_the_run_killed(
    spawn: Callable[..., Child], open_store: Callable[..., TrackingStore]
) -> None:
    child = spawn("stream", "interrupted")
    run_id = child.expect("run ", START_TIMEOUT).split()[1]
    reported = 0
    while reported < 2_000:
        reported = _flushed(child.expect("flushed "))
    os.kill(child.pid, signal.SIGINT)
    code = child.wait()
    assert code != 0
    assert "KeyboardInterrupt" in child.stderr()

    store = open_store(heartbeat_timeout=3600.0)  # KILLED must be stored, not inferred from the heartbeat
    record = store.get_run(run_id)
    assert record.status == "KILLED"
    assert record.end_time is not None
    _assert_prefix(store, run_id, at_least=reported)
    assert store.count_runs(filter="status = 'KILLED'") == 1


@pytest.mark.slow
def test_ctrl_c_without_a_with_block_ends_the_run_killed_at_exit(
    spawn: Callable[..., Child], open_store: Callable[..., TrackingStore]
) -> None:
    child = spawn("stream_open", "interrupted")
    run_id = child.expect("run ", START_TIMEOUT).split()[1]
    reported = 0
    while reported < 2_000:
        reported = _flushed(child.expect("flushed "))
    os.kill(child.pid, signal.SIGINT)
    assert child.wait() != 0

    store = open_store(heartbeat_timeout=3600.0)
    assert store.get_run(run_id).status == "KILLED"
    _assert_prefix(store, run_id, at_least=reported)


@pytest.mark.slow
def test_exception_in_a_with_block_ends_the_run_failed(
    spawn: Callable[..., Child], open_store: Callable[..., TrackingStore]
) -> None:
    child = spawn("fail", "broken")
    run_id = child.expect("run ", START_TIMEOUT).split()[1]
    assert child.wait() == 1
    assert "RuntimeError: boom in the training loop" in child.stderr()
    store = open_store()
    record = store.get_run(run_id)
    assert record.status == "FAILED"
    assert record.end_time is not None
    assert _assert_prefix(store, run_id, at_least=100) == 100


@pytest.mark.slow
def test_uncaught_exception_with_an_open_run_ends_it_failed_at_exit(
    spawn: Callable[..., Child], open_store: Callable[..., TrackingStore]
) -> None:
    child = spawn("raise_open", "broken")
    run_id = child.expect("run ", START_TIMEOUT).split()[1]
    assert child.wait() == 1
    assert "RuntimeError: boom outside any with block" in child.stderr()
    store = open_store()
    assert store.get_run(run_id).status == "FAILED"
    assert _assert_prefix(store, run_id, at_least=100) == 100


# -- 6. exit without finishing ------------------------------------------------


@pytest.mark.slow
def test_exit_without_finish_finishes_the_run_at_exit(
    spawn: Callable[..., Child], open_store: Callable[..., TrackingStore]
) -> None:
    child = spawn("no_finish", "forgetful", "1000")
    run_id = child.expect("run ", START_TIMEOUT).split()[1]
    assert child.wait() == 0, child.stderr()
    store = open_store()
    record = store.get_run(run_id)
    assert record.status == "FINISHED"
    assert record.end_time is not None
    assert _assert_prefix(store, run_id, at_least=1_000) == 1_000
