"""Adaptive batching: concurrent requests share one forward pass, a lone request runs at once.

The batcher lives on the server's event loop. ``submit`` queues a request and,
when nothing is scheduled yet, schedules a flush with ``call_soon``: it runs
right after the loop has handed out every socket read that arrived in the
same poll, so the requests that came in together are coalesced and a lone
request waits for nobody (no timer at low load). While a forward pass runs,
new requests queue up and form the next batch.

Under sustained load (the last batch was full) a short linger fills the next
batch: it waits until ``max_batch`` rows are queued or the oldest request has
waited ``max_wait`` seconds, whichever comes first.

Where the model runs (see :mod:`loopml.serve.backends`): a small model runs
in the loop thread (a thread hop costs more than its forward pass); a slower
one in one worker thread, while the loop keeps reading requests.

When the model runs in the loop thread and a read pass queues ``max_batch``
rows, the batch runs at once, inside the pass: with a thousand connections
sending at once the loop would otherwise read (and refuse) every request of
the pass before running one batch, and spend its time on refusals.

Backpressure: at most ``max_queue`` requests wait; ``admit`` (checked before
a request's body is parsed) and ``submit`` return False beyond that and the
server answers 503 with ``Retry-After``. With the model in the loop thread
the queue never holds more than a batch: a request waits in its socket
instead, one per connection (a connection stops reading after 32 pipelined
requests), so memory is bounded by the connections and a request's wait by
connections / throughput. Example::

    batcher = Batcher(loop, max_batch=64, max_wait=0.002, max_queue=1024)
    if not batcher.admit() or not batcher.submit(job):
        answer_503()

Shedding by delay (PIE, RFC 8033: refuse a growing share of requests while
the loop runs late) was tried and left out: a refusal costs the server about
as much as an answer here (reading, parsing and writing dominate at ~50 us
either way), so against clients that send again at once it cut the answered
rate by half without lowering the answered requests' p99 (1,024 connections
at 4x load: 10,600 answered/s, p99 286 ms, against 17,000/s, p99 259 ms
without it).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from ..errors import ArgumentError

if TYPE_CHECKING:
    from .backends import Backend

__all__ = ["Batcher", "Gate", "Job"]

log = logging.getLogger("loopml.serve")


class Gate(Protocol):
    """An out-of-distribution gate: ``score(batch)`` gives one score per row; above ``threshold`` abstains."""

    threshold: float

    def score(self, x: np.ndarray) -> np.ndarray: ...


class Job:
    """One request's rows on their way through the batcher.

    ``done(outputs, scores)`` is called on the loop thread with the request's
    slice of the batch output (and of the gate's scores, or None);
    ``failed(exc)`` when the forward pass raised.
    """

    __slots__ = ("backend", "x", "rows", "t0", "done", "failed")

    def __init__(
        self,
        backend: "Backend",
        x: np.ndarray,
        t0: float,
        done: Callable[[np.ndarray, np.ndarray | None], None],
        failed: Callable[[BaseException], None],
    ) -> None:
        self.backend = backend
        self.x = x
        self.rows = len(x)
        self.t0 = t0
        self.done = done
        self.failed = failed


class Batcher:
    """See the module docstring. ``on_batch(size)`` is told the size of every forward pass."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_batch: int = 64,
        max_wait: float = 0.002,
        max_queue: int = 1024,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ArgumentError(f"Argument max_batch should be an int >= 1; got {max_batch!r}")
        if not isinstance(max_queue, int) or max_queue < 1:
            raise ArgumentError(f"Argument max_queue should be an int >= 1; got {max_queue!r}")
        if not isinstance(max_wait, (int, float)) or max_wait < 0:
            raise ArgumentError(f"Argument max_wait should be seconds >= 0; got {max_wait!r}")
        self.loop = loop
        self.max_batch = max_batch
        self.max_wait = float(max_wait)
        self.max_queue = max_queue
        self.gate: Gate | None = None
        self.on_batch = on_batch
        self._pending: deque[Job] = deque()
        self._pending_rows = 0
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_full = False
        self._busy = False  # a worker thread is running a batch
        self._worker: _Worker | None = None

    @property
    def depth(self) -> int:
        """Requests waiting for a forward pass."""
        return len(self._pending)

    def admit(self) -> bool:
        """False when the queue is full: answer 503 before parsing the request."""
        return len(self._pending) < self.max_queue

    def submit(self, job: Job) -> bool:
        """Queue ``job``; False when the queue is full (answer 503)."""
        if len(self._pending) >= self.max_queue:
            return False
        self._pending.append(job)
        self._pending_rows += job.rows
        if self._pending_rows >= self.max_batch:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._scheduled = False
            if not self._busy and self._pending[0].backend.inline:
                self._run_inline()  # a full batch in the loop thread: run it now, inside this read pass
                return True
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._flush)
        return True

    def _take(self) -> list[Job]:
        pending = self._pending
        first = pending.popleft()
        batch = [first]
        rows = first.rows
        backend = first.backend
        while pending and rows + pending[0].rows <= self.max_batch and pending[0].backend is backend:
            job = pending.popleft()
            batch.append(job)
            rows += job.rows
        self._pending_rows -= rows
        return batch

    def _flush(self) -> None:
        self._scheduled = False
        self._timer = None
        if not self._pending or self._busy:
            return  # a worker's completion flushes again
        if self._last_full and self._pending_rows < self.max_batch and self.max_wait > 0:
            wait = self._pending[0].t0 + self.max_wait - time.perf_counter()
            if wait > 0:  # sustained load: let the next batch fill
                self._scheduled = True
                self._timer = self.loop.call_later(wait, self._flush)
                return
        if self._pending[0].backend.inline:
            self._run_inline()
            return
        batch, x = self._batch()
        if self._worker is None:
            self._worker = _Worker(self.loop, self._done)
        self._busy = True
        self._worker.put(batch, batch[0].backend, self.gate, x)

    def _batch(self) -> tuple[list[Job], np.ndarray]:
        batch = self._take()
        x = batch[0].x if len(batch) == 1 else np.concatenate([j.x for j in batch])
        self._last_full = len(x) >= self.max_batch
        if self.on_batch is not None:
            self.on_batch(len(x))
        return batch, x

    def _run_inline(self) -> None:
        batch, x = self._batch()
        try:
            out, scores = _forward(batch[0].backend, self.gate, x)
        except Exception as exc:  # the model or gate failed on validated input: a server error
            self._finish(batch, None, None, exc)
        else:
            self._finish(batch, out, scores, None)
        if self._pending and not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._flush)

    def _done(self, batch: list[Job], out: np.ndarray | None, scores: np.ndarray | None, exc: BaseException | None) -> None:
        self._busy = False
        self._finish(batch, out, scores, exc)
        if self._pending and not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._flush)

    @staticmethod
    def _finish(batch: list[Job], out: np.ndarray | None, scores: np.ndarray | None, exc: BaseException | None) -> None:
        i = 0
        for job in batch:
            j = i + job.rows
            try:
                if exc is not None or out is None:
                    job.failed(exc or RuntimeError("no output"))
                elif len(batch) == 1:
                    job.done(out, scores)
                else:
                    job.done(out[i:j], None if scores is None else scores[i:j])
            except Exception:  # one answer failing (a closed connection, a bug) must not lose the others
                log.exception("loopml serve: answering a request failed")
            i = j

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._worker is not None:
            self._worker.close()


def _forward(backend: "Backend", gate: Gate | None, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    if backend.joint is not None and gate is not None and gate is backend.gate:
        # the version's own gate with its joint file: the prediction and the Mahalanobis features in one pass
        stored: Any = backend.gate
        raw, features = backend.joint(x)
        out = backend.finish(raw)
        joint_scores = np.asarray(stored.score(x, features=features), dtype=np.float64).reshape(-1)
        if len(out) != len(x) or len(joint_scores) != len(x):
            raise RuntimeError(f"{backend.version.ref}'s joint model returned {len(out)} rows and {len(joint_scores)} scores for {len(x)} inputs")
        return out, joint_scores
    out = backend(x)
    if len(out) != len(x):
        raise RuntimeError(f"{backend.version.ref} returned {len(out)} rows for {len(x)} inputs")
    scores = None
    if gate is not None:
        scores = np.asarray(gate.score(x), dtype=np.float64).reshape(-1)
        if len(scores) != len(x):
            raise RuntimeError(f"The OOD gate returned {len(scores)} scores for {len(x)} rows")
    return out, scores


class _Worker:
    """One thread that runs forward passes for a model too slow for the loop thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, done: Callable[..., None]) -> None:
        import queue

        self.loop = loop
        self.done = done
        self.q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="loopml-serve-model", daemon=True)
        self.thread.start()

    def put(self, batch: list[Job], backend: "Backend", gate: Gate | None, x: np.ndarray) -> None:
        self.q.put((batch, backend, gate, x))

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            batch, backend, gate, x = item
            try:
                out, scores = _forward(backend, gate, x)  # the predictor sets torch's threads in this thread
            except Exception as exc:
                result: tuple[Any, ...] = (batch, None, None, exc)
            else:
                result = (batch, out, scores, None)
            try:
                self.loop.call_soon_threadsafe(self.done, *result)
            except RuntimeError:  # the loop closed while shutting down
                return

    def close(self) -> None:
        self.q.put(None)
