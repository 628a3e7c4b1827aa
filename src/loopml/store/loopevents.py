"""The loop's journal: one row per step the loop took (or skipped, or failed), with its cause.

Each retrain, compare, promote, rollback and shadow run writes a row of ``loop_events``:
the target as the user wrote it (``"digits@production"``), the model and version it
concerns, the step, its status, the cause (the alert id, or the command that asked for
it) and what it found (JSON). Example::

    events = LoopEvents(TrackingStore("sqlite:///./.loopml/loopml.db", artifact_root="./.loopml/artifacts"))
    events.record("digits@production", "digits", 4, "retrain", "done", cause={"command": "loopml retrain"},
                  details={"parent": 3, "labels": 120})
    events.events("digits@production")[-1]["step"]    # 'retrain'
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import ArgumentError
from . import schema as s

if TYPE_CHECKING:
    from .tracking import TrackingStore

__all__ = ["LoopEvents", "STATUSES", "STEPS"]

STEPS = ("monitor", "queue", "retrain", "compare", "promote", "rollback", "shadow")
STATUSES = ("done", "skipped", "failed")


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(dict(value or {}), allow_nan=False, default=str)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"Argument {what} should be a JSON mapping (finite numbers, strings, lists): {exc}") from None


class LoopEvents:
    """The ``loop_events`` table of a :class:`~loopml.store.TrackingStore`."""

    def __init__(self, store: "TrackingStore") -> None:
        self.store = store

    def record(self, target: str, model: str, version: int | None, step: str, status: str, *,
               cause: Mapping[str, Any] | None = None, details: Mapping[str, Any] | None = None) -> int:
        """Append one event; returns its id."""
        if step not in STEPS:
            raise ArgumentError(f"Argument step should be one of {', '.join(STEPS)}; got {step!r}")
        if status not in STATUSES:
            raise ArgumentError(f"Argument status should be one of {', '.join(STATUSES)}; got {status!r}")
        row = {
            "target": str(target)[:160], "model": model, "version": None if version is None else int(version),
            "step": step, "status": status, "cause": _json(cause, "cause"), "details": _json(details, "details"),
            "at": time.time(),
        }
        with self.store.transaction() as conn:
            key = conn.execute(s.loop_events.insert().values(**row)).inserted_primary_key
        assert key is not None  # an INSERT of one row always has one
        return int(key[0])

    def events(self, target: str | None = None, *, model: str | None = None, step: str | None = None,
               limit: int = 1000) -> list[dict[str, Any]]:
        """Stored events, oldest first (the newest ``limit``), by target and/or model and step."""
        t = s.loop_events
        q = sa.select(t)
        if target is not None:
            q = q.where(t.c.target == target)
        if model is not None:
            q = q.where(t.c.model == model)
        if step is not None:
            q = q.where(t.c.step == step)
        with self.store.read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q.order_by(t.c.id.desc()).limit(int(limit)))]
        for r in rows:
            r["cause"], r["details"] = json.loads(r["cause"]), json.loads(r["details"])
        return rows[::-1]
