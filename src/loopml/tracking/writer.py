"""The background writer: logging never waits on I/O.

``Run.log`` appends points to a bounded in-memory buffer and returns. One
daemon thread per backend (per process) drains the buffer in batches, when
``batch_size`` points are waiting or ``flush_interval`` seconds have passed,
and on ``flush()`` (which ``Run.finish`` and interpreter exit call).

Memory bound: at most ``max_pending`` points (default 200,000, about 40 MB
of tuples) wait in the buffer. When the writer falls behind, ``add`` blocks
until there is room instead of growing memory without bound.

A batch that fails with a transient :class:`~loopml.errors.StoreError`
(``exc.transient``: a database locked by another process, a lost connection,
a tracking server that is down) is kept
and retried with backoff, so no point is lost; a permanent error (the store
refused the data) is kept and raised by the next ``flush``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import ArgumentError, LoopMLError, StoreError
from ..store.protocols import MetricPoint as Point

if TYPE_CHECKING:
    from ..store.protocols import TrackingBackend

__all__ = ["BatchWriter"]

log = logging.getLogger(__name__)



class BatchWriter:
    """Buffers metric points and writes them to ``backend.log_metrics`` in a thread.

    >>> from loopml.store import TrackingStore
    >>> store = TrackingStore("sqlite:///loopml.db", artifact_root="artifacts")
    >>> run = store.create_run(experiment="digits")
    >>> writer = BatchWriter(store)
    >>> writer.add([(run.id, "loss", 0, time.time(), 0.5)])
    >>> writer.flush()                       # True: everything added so far is written
    True
    >>> store.history(run.id, "loss").values
    array([0.5])
    """

    def __init__(
        self,
        backend: "TrackingBackend",
        *,
        max_pending: int = 200_000,
        batch_size: int = 20_000,
        flush_interval: float = 1.0,
        heartbeat_interval: float = 5.0,
        max_backoff: float = 2.0,
    ) -> None:
        if max_pending < batch_size:
            raise ArgumentError(f"Argument max_pending should be >= batch_size ({batch_size}), got {max_pending}")
        self.backend = backend
        self.max_pending = max_pending
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.heartbeat_interval = heartbeat_interval
        self.max_backoff = max_backoff
        self._buf: deque[Point] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._added = 0  # points ever accepted
        self._written = 0  # points ever made durable (or given up on, see _error)
        self._flush_wanted = False
        self._closed = False
        self._error: BaseException | None = None
        self._stuck = False  # a flush could not take the lock in time (see flush)
        self._live_runs: dict[str, int] = {}  # run id -> open count, for heartbeats
        self._runs_lock = threading.Lock()  # not the buffer's lock: finishing a run must not wait on it
        self._last_heartbeat = time.monotonic()
        self.retries = 0
        self._thread = threading.Thread(target=self._loop, name="loopml-writer", daemon=True)
        self._thread.start()

    # -- producers --------------------------------------------------------

    def add(self, points: Sequence[Point]) -> None:
        """Queue points; blocks only while ``max_pending`` points are already waiting."""
        n = len(points)
        cond = self._cond
        with cond:
            if self._closed:
                raise LoopMLError("The loopml writer is closed: the process is shutting down")
            while len(self._buf) + n > self.max_pending and self._buf:
                self._flush_wanted = True
                cond.notify_all()
                cond.wait()
            self._buf.extend(points)
            self._added += n
            if len(self._buf) >= self.batch_size:
                cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every point added before this call is durable.

        Returns False if ``timeout`` passed first. Raises the store's error if
        it refused points permanently.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        # With a timeout the lock itself is taken with one: a Ctrl-C that lands
        # between a `with cond:`'s acquire and its block (CPython bpo-29988)
        # can leave it held, and an interrupted program must still exit.
        if not self._cond.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            self._stuck = True
            return False
        try:
            target = self._added
            while self._written < target:
                if not self._thread.is_alive():
                    break
                self._flush_wanted = True
                self._cond.notify_all()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            err, self._error = self._error, None
        finally:
            self._cond.release()
        if err is not None:
            raise err
        return self._written >= target

    @property
    def pending(self) -> int:
        return self._added - self._written  # no lock: it may be the one stuck (see flush)

    # -- heartbeats -------------------------------------------------------

    def watch(self, run_id: str) -> None:
        with self._runs_lock:
            self._live_runs[run_id] = self._live_runs.get(run_id, 0) + 1

    def unwatch(self, run_id: str) -> None:
        with self._runs_lock:
            left = self._live_runs.get(run_id, 0) - 1
            if left > 0:
                self._live_runs[run_id] = left
            else:
                self._live_runs.pop(run_id, None)

    # -- the thread -------------------------------------------------------

    def _take(self) -> list[Point]:
        buf = self._buf
        if len(buf) <= self.batch_size:
            batch = list(buf)
            buf.clear()
        else:
            batch = [buf.popleft() for _ in range(self.batch_size)]
        return batch

    def _loop(self) -> None:
        cond = self._cond
        while True:
            with cond:
                deadline = time.monotonic() + self.flush_interval
                while (
                    len(self._buf) < self.batch_size
                    and not self._flush_wanted
                    and not self._closed
                    and (remaining := deadline - time.monotonic()) > 0
                ):
                    cond.wait(min(remaining, self.heartbeat_interval))
                batch = self._take() if self._buf else []
                if not self._buf:
                    self._flush_wanted = False
                closing = self._closed and not self._buf
            with self._runs_lock:
                live = list(self._live_runs)
            if batch:
                self._write(batch)
            self._maybe_heartbeat(live)
            if closing and not batch:
                return

    def _write(self, batch: list[Point]) -> None:
        delay = 0.05
        while True:
            try:
                self.backend.log_metrics(batch)
                break
            except StoreError as exc:
                if not exc.transient:  # permanent: surfaced by the next flush
                    log.error("loopml: the store refused %d points: %s", len(batch), exc)
                    with self._cond:
                        self._error = exc
                    break
                # transient (locked, connection lost, server down): keep the batch and retry
                self.retries += 1
                log.warning("loopml: writing %d points failed (%s); retrying in %.2fs", len(batch), exc, delay)
                time.sleep(delay)  # the writer thread backs off; producers keep buffering
                delay = min(delay * 2, self.max_backoff)
            except Exception as exc:  # permanent: surfaced by the next flush
                log.error("loopml: the store refused %d points: %s", len(batch), exc)
                with self._cond:
                    self._error = exc
                break
        with self._cond:
            self._written += len(batch)
            self._cond.notify_all()

    def _maybe_heartbeat(self, live: list[str]) -> None:
        now = time.monotonic()
        if not live or now - self._last_heartbeat < self.heartbeat_interval:
            return
        self._last_heartbeat = now
        try:
            self.backend.heartbeat(live)
        except Exception as exc:  # a missed heartbeat is retried at the next interval
            log.debug("loopml: heartbeat failed: %s", exc)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush and stop the thread; returns False if points were still pending at the timeout."""
        done = False
        try:
            done = not self._stuck and self.flush(timeout)
        finally:
            if self._cond.acquire(timeout=1.0 if self._stuck or not done else -1):
                self._closed = True
                self._cond.notify_all()
                self._cond.release()
            self._thread.join(timeout=1.0 if not done else None)
        if not done:
            log.error("loopml: %d points were not written before exit", self.pending)
        return done
