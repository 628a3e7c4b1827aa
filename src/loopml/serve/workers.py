"""Worker processes sharing one listening socket (``loopml serve --workers N``), kept alive.

The parent process forks ``N`` workers and then only watches them. A worker that
dies while the server is not stopping (killed, crashed, out of memory, exited on
its own) is replaced by a fresh fork of the parent, which loads the model again;
the others keep answering meanwhile, and the parent prints one line to stderr::

    loopml serve: worker 1 (pid 4242) was killed by SIGKILL; started pid 4250 in its place

Workers that keep dying are not restarted forever: past ``max_restarts`` deaths
within ``restart_window`` seconds (:class:`RestartLimit`) the parent stops the
others and raises :class:`~loopml.errors.LoopMLError` naming the last death and its
error, so ``loopml serve`` exits 2 with that one line (a worker that cannot start,
such as one whose store cannot be opened, fails that way within seconds).
SIGTERM or SIGINT to the parent is passed to every worker; it returns once all
have stopped. Example::

    pool = WorkerPool(4, max_restarts=5, restart_window=60.0)
    pool.run(lambda index, first: ModelServer(ref, sock=sock).run(announce=first and index == 0))
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from types import FrameType

from ..errors import ArgumentError, LoopMLError

__all__ = ["RestartLimit", "WorkerPool"]

_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class RestartLimit:
    """At most ``max_restarts`` restarts within any ``window`` seconds (0: a death is never restarted).

    >>> limit = RestartLimit(2, window=60.0)
    >>> [limit.allow(now) for now in (0.0, 1.0, 2.0)]      # a third death within 60 s: give up
    [True, True, False]
    >>> limit = RestartLimit(2, window=60.0)
    >>> [limit.allow(now) for now in (0.0, 30.0, 61.0, 62.0, 62.5)]   # the death at 0 s has aged out by 61 s
    [True, True, True, False, False]
    """

    def __init__(self, max_restarts: int, *, window: float) -> None:
        if not isinstance(max_restarts, int) or isinstance(max_restarts, bool) or max_restarts < 0:
            raise ArgumentError(f"Argument max_restarts should be an int >= 0 (0: never restart a worker); got {max_restarts!r}")
        if isinstance(window, bool) or not isinstance(window, (int, float)) or not window > 0:
            raise ArgumentError(f"Argument restart_window should be a number of seconds > 0, like 60.0; got {window!r}")
        self.max_restarts = max_restarts
        self.window = float(window)
        self._times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        """Record a death at ``now`` (seconds, monotonic); True when it may be restarted."""
        times = self._times
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.max_restarts:
            return False
        times.append(now)
        return True


class WorkerPool:
    """``workers`` forked processes, each running ``target(index, first)``; see the module docstring.

    ``first`` is False in a replacement. ``clock`` gives the death times (seconds).
    """

    def __init__(self, workers: int, *, max_restarts: int = 5, restart_window: float = 60.0,
                 name: str = "loopml serve", clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ArgumentError(f"Argument workers should be an int >= 1; got {workers!r}")
        self.workers = workers
        self.limit = RestartLimit(max_restarts, window=restart_window)
        self.name = name
        self.clock = clock
        self._children: dict[int, tuple[int, int]] = {}  # pid -> (worker index, read end of its error pipe)
        self._stopping: int | None = None  # the signal that asked the pool to stop

    def run(self, target: Callable[[int, bool], None]) -> None:
        """Fork the workers and watch them until SIGINT/SIGTERM (then return) or they keep dying (then raise)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _SIGNALS}
        failure: str | None = None
        try:
            for index in range(self.workers):
                self._fork(target, index, first=True)
            while self._children:
                try:
                    pid, status = os.waitpid(-1, 0)
                except ChildProcessError:  # none left (reaped elsewhere)
                    break
                if pid not in self._children:
                    continue
                index, errors = self._children.pop(pid)
                error = _read_all(errors)
                if self._stopping is not None:
                    continue
                why = _death(status) + (f" ({error})" if error else "")
                if self.limit.allow(self.clock()):
                    new = self._fork(target, index, first=False)
                    print(f"{self.name}: worker {index} (pid {pid}) {why}; started pid {new} in its place", file=sys.stderr, flush=True)
                else:
                    failure = (f"{self.name}: worker {index} (pid {pid}) {why}; more than {self.limit.max_restarts} workers died "
                               f"within {self.limit.window:g} s, so the server stopped")
                    self._on_signal(signal.SIGTERM, None)
        finally:
            if self._children:  # an exception here: leave no worker behind
                self._on_signal(signal.SIGTERM, None)
                for pid in list(self._children):
                    _reap(pid)
                    os.close(self._children.pop(pid)[1])
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if failure is not None:
            raise LoopMLError(failure)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = signum
        for pid in list(self._children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _fork(self, target: Callable[[int, bool], None], index: int, *, first: bool) -> int:
        read, write = os.pipe()
        # no signal handler may run between the fork and the bookkeeping (nor in the child, as the parent's)
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            sys.stdout.flush()  # or the child would write the parent's buffered lines again
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                os.close(read)
                self._child(target, index, first, write)
            self._children[pid] = (index, read)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            os.close(write)
        return pid

    def _child(self, target: Callable[[int, bool], None], index: int, first: bool, errors: int) -> None:
        code = 0
        try:
            self._children.clear()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            target(index, first)
        except KeyboardInterrupt:
            code = 130
        except BaseException as exc:
            code = 1
            line = f"{type(exc).__name__}: {exc}".replace("\n", " | ")
            if not isinstance(exc, (LoopMLError, ValueError, TypeError, OSError)):  # a bug: keep its traceback
                traceback.print_exc()
            try:  # the parent names it when it reports the death
                os.write(errors, line.encode()[:4000])
            except OSError:
                pass
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)


def _death(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _read_all(fd: int) -> str:
    try:
        chunks = []
        while chunk := os.read(fd, 4096):  # the worker has exited: its write end is closed, this ends
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace").strip()
    finally:
        os.close(fd)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
