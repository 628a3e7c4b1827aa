"""``loopml serve --monitor``: the scheduled monitor of the served model, in a process of its own.

The monitor (:func:`loopml.monitor.watch.watch`) reads the request log, runs the
drift tests and the label-free estimate: CPU work in Python that, in a thread of
the serving process, would hold the GIL away from the event loop and the model.
So :class:`MonitorProcess` runs it as a separate process (``python -m
loopml.serve.monitoring``) that runs only on CPU time the server leaves (Linux's
``SCHED_IDLE``; elsewhere ``nice 19``), started and stopped with the server:

- ``stop()`` (the server shutting down) sends SIGTERM, waits, and kills it if it
  has not exited within ``timeout``; the server reaps it, so nothing is left behind;
- if the server dies without stopping it (SIGKILL, a crash), the monitor sees that
  its parent changed within a second and exits on its own: never an orphan.

Its lines (one per cycle, failures, alerts) go to the server's stderr, prefixed
``loopml serve --monitor:``. Example::

    monitor = MonitorProcess("digits@production", every="5m", store="sqlite:///./.loopml/loopml.db").start()
    ...
    monitor.stop()
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import ArgumentTypeError
from ..monitor.watch import watch
from ..monitor.windows import parse_duration
from ..store.s3 import S3Root

if TYPE_CHECKING:
    from ..store.tracking import TrackingStore

__all__ = ["MonitorProcess", "main"]

PREFIX = "loopml serve --monitor:"


class MonitorProcess:
    """``watch(ref, every)`` in a child process of the server; see the module docstring.

    ``store``: the server's store (a database URI, a TrackingStore, or None for the
    configured one). ``window``: as ``loopml monitor watch --window`` (default ``every``).
    """

    def __init__(self, ref: str, *, every: float | str = "5m", window: float | str | None = None,
                 store: "TrackingStore | str | None" = None, min_rows: int = 100) -> None:
        self.every = parse_duration(every, "monitor_every")
        self.window = parse_duration(window, "monitor_window") if window is not None else self.every
        if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 1:
            raise ArgumentTypeError(f"Argument min_rows should be a whole number of at least 1; got {min_rows!r}")
        self.ref = ref
        self.min_rows = min_rows
        self.env = dict(os.environ)
        self.env.setdefault("OMP_NUM_THREADS", "1")
        if store is None or isinstance(store, str):
            self.uri = store
        else:
            self.uri = store.uri
            self.env["LOOPML_ARTIFACT_ROOT"] = store.artifacts.uri  # a folder or s3://bucket/prefix
            if isinstance(store.artifacts, S3Root) and store.artifacts.endpoint_url:  # given in code, not the env
                self.env["LOOPML_S3_ENDPOINT_URL"] = store.artifacts.endpoint_url
        self.proc: "subprocess.Popen[bytes] | None" = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> "MonitorProcess":
        argv = [sys.executable, "-m", "loopml.serve.monitoring", self.ref, "--every", repr(self.every),
                "--window", repr(self.window), "--min-rows", str(self.min_rows), "--parent", str(os.getpid()),
                "--since", repr(time.time())]  # the first window starts now: no request is answered before it
        if self.uri:
            argv += ["--store", self.uri]
        # stdout is the server's (its "listening" and "ready" lines): the monitor writes to stderr only
        try:
            err: int | None = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):  # stderr replaced by an object without a file (a test's capture)
            err = None
        self.proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=err)
        print(f"{PREFIX} watching {self.ref} every {self.every:g} s in process {self.proc.pid}", file=sys.stderr, flush=True)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; returns once the process is reaped."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _yield_cpu() -> None:
    """Requests first: run only on CPU time the server leaves (Linux's SCHED_IDLE), else at the lowest priority.

    ``nice 10`` was not enough: on 2 busy cores a monitor at nice 10 still took 0.3 of a core from a
    server under load (benchmarks/monitor_overhead.py); a SCHED_IDLE process runs only when no other
    process wants the CPU.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux
        try:
            os.nice(19)
        except OSError:
            pass


def _exit_with_parent(parent: int) -> None:
    # the server died without stopping us (SIGKILL, a crash): we were re-parented
    while True:
        if os.getppid() != parent:
            os._exit(0)  # mid-cycle writes are transactions: an interrupted one leaves nothing half-written
        threading.Event().wait(1.0)


def main(argv: Sequence[str] | None = None) -> None:
    """The monitor process: ``watch`` until SIGTERM or until the server that started it is gone."""
    import logging
    import signal

    parser = argparse.ArgumentParser(prog="python -m loopml.serve.monitoring")
    parser.add_argument("ref")
    parser.add_argument("--every", type=float, required=True)
    parser.add_argument("--window", type=float, required=True)
    parser.add_argument("--min-rows", type=int, default=100)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--store", default=None)
    parser.add_argument("--since", type=float, default=None)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # stop at once: the server is shutting down
    # OMP_NUM_THREADS=1 (set by MonitorProcess): one core at most, at the lowest priority
    _yield_cpu()
    threading.Thread(target=_exit_with_parent, args=(args.parent,), daemon=True, name="loopml-monitor-parent").start()
    logging.basicConfig(stream=sys.stderr, format=f"{PREFIX} %(message)s", level=logging.WARNING)

    def line(text: str) -> None:
        print(f"{PREFIX} {text}", file=sys.stderr, flush=True)

    try:
        watch(args.ref, args.every, window=args.window, min_rows=args.min_rows, tracking_uri=args.store, wait_first=True,
              since=args.since,
              on_result=lambda r: line(r.summary()), on_error=lambda exc: None)  # failures are logged by watch
    except Exception as exc:  # noqa: BLE001 - the reference is gone or the store cannot be read: say so, serve on
        line(f"not monitoring {args.ref}: {type(exc).__name__}: {exc}")
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover - run as a process by MonitorProcess
    main()
