"""The ``Run`` object: one run's logging and reading API."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ArgumentError, ArgumentTypeError, LoopMLError
from ..store.records import ArtifactInfo, History, RunRecord
from ..store.validation import RUN_STATUSES, check_key, check_metric_value, check_step

if TYPE_CHECKING:
    import pandas as pd

    from ..store.protocols import TrackingBackend
    from .writer import BatchWriter

__all__ = ["Run"]

log = logging.getLogger(__name__)

# Keys already checked, so that the hot path of `log` is a set lookup. Bounded:
# a program that invents keys without end only loses the cache, not memory.
_KNOWN_KEYS: set[str] = set()
_KNOWN_KEYS_MAX = 100_000


class Run:
    """A run: log to it while it is open, read it at any time.

    Get one from :func:`loopml.start_run` (open) or :func:`loopml.get_run`
    (read-only until resumed with ``loopml.start_run(run_id=...)``).

    >>> import loopml
    >>> with loopml.start_run(experiment="mnist", params={"lr": 0.01}) as run:
    ...     for step in range(100):
    ...         run.log({"loss": 1 / (step + 1)}, step=step)
    >>> float(run.history("loss").values[-1])
    0.01
    """

    #: After Ctrl-C, how long ``finish("KILLED")`` waits for pending points to be written.
    killed_flush_timeout = 10.0

    def __init__(
        self,
        backend: "TrackingBackend",
        record: RunRecord,
        *,
        writer: "BatchWriter | None" = None,
        on_finish: "Callable[[Run], None] | None" = None,
        next_step: int = 0,
    ) -> None:
        # on_finish: how the module-level API (tracking.api) drops a finished run from its
        # active-run stack; passed in so that run does not import api (api imports run).
        # next_step: the step `log` uses when given none (a resumed run continues after its last).
        self._backend = backend
        self._on_finish = on_finish
        self._record = record
        self._writer = writer
        self._lock = threading.Lock()
        self._next_step = next_step
        self._finished = writer is None
        self.id: str = record.id
        if writer is not None:
            writer.watch(self.id)

    # -- reading ----------------------------------------------------------

    def __repr__(self) -> str:
        return f"<Run {self.id} {self._record.name!r} experiment={self._record.experiment!r} status={self.status}>"

    @property
    def backend(self) -> "TrackingBackend":
        """The store this run reads and writes through (a database or a loopml server)."""
        return self._backend

    @property
    def record(self) -> RunRecord:
        """The stored record as last read (see :meth:`refresh`)."""
        return self._record

    @property
    def name(self) -> str:
        return self._record.name

    @property
    def experiment(self) -> str:
        return self._record.experiment

    @property
    def status(self) -> str:
        return "RUNNING" if not self._finished else self._record.status

    @property
    def params(self) -> dict[str, str]:
        return dict(self._record.params)

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._record.tags)

    @property
    def metrics(self) -> dict[str, float]:
        """The newest value of each metric (as last read; :meth:`refresh` re-reads)."""
        return {k: m.value for k, m in self._record.metrics.items()}

    @property
    def is_open(self) -> bool:
        return not self._finished

    def refresh(self) -> "Run":
        """Re-read the run from the store (after flushing this process's pending points)."""
        if self._writer is not None and not self._finished:
            self._writer.flush()
        self._record = self._backend.get_run(self.id)
        return self

    def history(self, key: str) -> History:
        """Every point of metric ``key``: ``steps``, ``timestamps`` and ``values`` arrays."""
        if self._writer is not None and not self._finished:
            self._writer.flush()
        return self._backend.history(self.id, key)

    def metric_keys(self) -> list[str]:
        if self._writer is not None and not self._finished:
            self._writer.flush()
        return self._backend.metric_keys(self.id)

    def artifacts(self, path: str | None = None) -> list[ArtifactInfo]:
        return self._backend.list_artifacts(self.id, path)

    def download_artifact(self, path: str, dest: str | os.PathLike[str]) -> Path:
        """Copy artifact ``path`` into the folder ``dest``; returns the local file."""
        return self._backend.download_artifact(self.id, path, Path(dest))

    def to_dict(self) -> dict[str, Any]:
        return self._record.to_dict()

    # -- logging ----------------------------------------------------------

    def _check_open(self) -> "BatchWriter":
        if self._finished or self._writer is None:
            raise LoopMLError(
                f"Run {self.id} is {self.status}, not open for logging. "
                f"Resume it with loopml.start_run(run_id={self.id!r})"
            )
        return self._writer

    def log(self, metrics: Mapping[str, Any], step: int | None = None, *, timestamp: float | None = None) -> None:
        """Log metric values for one step; returns at once (a background thread writes).

        ``step`` defaults to one more than the previous step of this run. Values
        may be Python or NumPy numbers or 0-d tensors; NaN and +/-inf are kept.
        """
        writer = self._check_open()
        if not isinstance(metrics, Mapping):
            raise ArgumentTypeError(
                f"Argument metrics should be a mapping of names to numbers, e.g. {{'loss': 0.3}}, "
                f"got {type(metrics).__name__}"
            )
        with self._lock:
            if step is None:
                step = self._next_step
            if type(step) is not int or not -(2**63) <= step < 2**63:  # out of int64: fail here, not in the writer
                step = check_step(step)
            self._next_step = step + 1
        ts = time.time() if timestamp is None else float(timestamp)
        rid = self.id
        points = []
        for key, value in metrics.items():
            if key not in _KNOWN_KEYS:
                check_key(key, what="metric key")
                if len(_KNOWN_KEYS) >= _KNOWN_KEYS_MAX:
                    _KNOWN_KEYS.clear()
                _KNOWN_KEYS.add(key)
            if type(value) is not float:
                value = check_metric_value(key, value)
            points.append((rid, key, step, ts, value))
        writer.add(points)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record params (strings; numbers are converted). A param cannot change its value."""
        self._check_open()
        self._backend.log_params(self.id, dict(params))
        self._record = replace(self._record, params={**self._record.params, **{k: str(v) for k, v in params.items()}})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (mutable strings)."""
        self._backend.set_tags(self.id, dict(tags))
        self._record = replace(self._record, tags={**self._record.tags, **{k: str(v) for k, v in tags.items()}})

    def log_artifact(self, path: str | os.PathLike[str], name: str | None = None) -> list[ArtifactInfo]:
        """Copy a file or a folder into the run's artifacts (as ``name``, default its base name)."""
        return self._backend.log_artifact(self.id, Path(path), name)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every point logged so far is durable in the store."""
        if self._writer is None:
            return True
        return self._writer.flush(timeout)

    def finish(self, status: str = "FINISHED") -> None:
        """Flush pending points and close the run with ``status``."""
        if status not in RUN_STATUSES or status == "RUNNING":
            raise ArgumentError(f"Argument status should be one of FINISHED, FAILED, KILLED, got {status!r}")
        if self._finished:
            return
        writer = self._check_open()
        self._finished = True
        try:
            # An interrupted program must end: after Ctrl-C, wait for the writer a bounded time.
            if not writer.flush(timeout=self.killed_flush_timeout if status == "KILLED" else None):
                log.warning("loopml: run %s ends with %d points not yet written", self.id, writer.pending)
        finally:
            writer.unwatch(self.id)
            self._backend.set_status(self.id, status)
            if self._on_finish is not None:
                self._on_finish(self)
            self._record = self._backend.get_run(self.id)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.finish("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("KILLED")
        else:
            self.finish("FAILED")

    # -- pandas -----------------------------------------------------------

    def history_frame(self, key: str) -> "pd.DataFrame":
        import pandas as pd

        h = self.history(key)
        return pd.DataFrame({"step": h.steps, "timestamp": h.timestamps, "value": h.values})
