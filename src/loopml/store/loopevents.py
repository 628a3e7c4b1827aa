"""The loop's journal: one row per step the loop took (or skipped, or failed), with its cause.

Each retrain, compare, promote, rollback and shadow run writes a row of ``loop_events``:
the target as the user wrote it (``"digits@production"``), the model and version it
concerns, the step, its status, the cause (the alert id, or the command that asked for
it) and what it found (JSON). Example::

    events = LoopEvents(TrackingStore("sqlite:///./.loopml/loopml.db", artifact_root="./.loopml/artifacts"))
    events.record("digits@production", "digits", 4, "retrain", "done", cause={"command": "loopml retrain"},
                  details={"parent": 3, "labels": 120})
    events.events("digits@production")[-1]["step"]    # 'retrain'

The table also holds the loop's lock (:meth:`LoopEvents.acquire`): while ``loopml loop run``
works on a target, its ``run`` row has the status ``running`` and an expiry it refreshes;
when the run ends the row gets its final status and a summary of its steps.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import ArgumentError
from . import schema as s

if TYPE_CHECKING:
    from .tracking import TrackingStore

__all__ = ["LoopEvents", "RUNNING", "STATUSES", "STEPS"]

STEPS = ("monitor", "queue", "retrain", "compare", "promote", "rollback", "shadow", "run")
STATUSES = ("done", "skipped", "failed")
RUNNING = "running"  # the status of a ``run`` row while its run holds the target's lock (see LoopEvents.acquire)


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

    # -- the loop's lock: one ``run`` row per target with status ``running`` ---------------------

    def _serialise(self, conn: Any, target: str) -> None:
        """Make concurrent lock writers of one target wait for each other, until this transaction ends.

        SQLite: the store's write transactions are ``BEGIN IMMEDIATE``, one writer at a time already.
        PostgreSQL: a transaction-scoped advisory lock on the target (READ COMMITTED alone would let two
        transactions both see no holder and both insert a row).
        """
        if self.store.engine.dialect.name == "postgresql":
            key = int.from_bytes(hashlib.sha256(f"loopml-loop:{target}".encode()).digest()[:8], "big", signed=True)
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))

    def holder(self, target: str) -> dict[str, Any] | None:
        """The ``running`` row of ``target`` (its lock), or None."""
        t = s.loop_events
        with self.store.read() as conn:
            row = conn.execute(sa.select(t).where(t.c.target == target, t.c.step == "run", t.c.status == RUNNING)
                               .order_by(t.c.id.desc()).limit(1)).first()
        if row is None:
            return None
        out = dict(row._mapping)
        out["cause"], out["details"] = json.loads(out["cause"]), json.loads(out["details"])
        return out

    def acquire(self, target: str, model: str, version: int | None, *, ttl: float, holder: Mapping[str, Any],
                cause: Mapping[str, Any] | None = None, stale: Any = None, now: float | None = None) -> tuple[int | None, dict[str, Any] | None]:
        """Take ``target``'s loop lock: ``(id of the new running row, None)``, or ``(None, the holder's row)`` when held.

        The lock is a ``run`` row with status ``running`` and ``details["expires"]``; taking it
        checks for one and inserts one in a single serialised transaction, so of two runs at
        once exactly one gets it, on SQLite and PostgreSQL, across processes and machines.
        A holder whose ``expires`` has passed (its run was killed, or lost the database for
        longer than ``ttl``), or that ``stale(details)`` calls dead, is marked ``failed`` and
        the lock taken over.
        """
        t = s.loop_events
        at = time.time() if now is None else float(now)
        with self.store.transaction() as conn:
            self._serialise(conn, target)
            row = conn.execute(sa.select(t.c.id, t.c.details).where(t.c.target == target, t.c.step == "run",
                                                                     t.c.status == RUNNING)
                               .order_by(t.c.id.desc()).limit(1)).first()
            if row is not None:
                held = json.loads(row.details)
                dead = stale(held) if stale is not None else False
                if float(held.get("expires", 0.0)) > at and not dead:
                    return None, {"id": int(row.id), "details": held}
                why = (f"the lock was taken over at {at:.0f}: " + ("its process no longer runs" if dead else
                       f"not refreshed since {float(held.get('refreshed', 0.0)):.0f} (ttl {float(held.get('ttl', 0)):.0f} s)"))
                conn.execute(t.update().where(t.c.id == row.id).values(
                    status="failed", details=_json({**held, "error": f"stopped before it finished; {why}"}, "details")))
            details = {**dict(holder), "ttl": float(ttl), "started": at, "refreshed": at, "expires": at + float(ttl)}
            key = conn.execute(t.insert().values(
                target=str(target)[:160], model=model, version=None if version is None else int(version), step="run",
                status=RUNNING, cause=_json(cause, "cause"), details=_json(details, "details"), at=at)).inserted_primary_key
        assert key is not None
        return int(key[0]), None

    def refresh(self, lock_id: int, *, now: float | None = None) -> bool:
        """Move the lock's expiry ``ttl`` on from now; False when the row no longer holds the lock (taken over)."""
        t = s.loop_events
        at = time.time() if now is None else float(now)
        with self.store.transaction() as conn:
            row = conn.execute(sa.select(t.c.status, t.c.details, t.c.target).where(t.c.id == int(lock_id))).first()
            if row is None or row.status != RUNNING:
                return False
            self._serialise(conn, row.target)
            details = json.loads(row.details)
            details.update(refreshed=at, expires=at + float(details.get("ttl", 0.0)))
            conn.execute(t.update().where(t.c.id == int(lock_id), t.c.status == RUNNING)
                         .values(details=_json(details, "details")))
        return True

    def release(self, lock_id: int, status: str, details: Mapping[str, Any] | None = None) -> bool:
        """End the run: its row gets ``status`` (done, skipped, failed) and ``details`` merged in; False if it was taken over."""
        if status not in STATUSES:
            raise ArgumentError(f"Argument status should be one of {', '.join(STATUSES)}; got {status!r}")
        t = s.loop_events
        with self.store.transaction() as conn:
            row = conn.execute(sa.select(t.c.status, t.c.details).where(t.c.id == int(lock_id))).first()
            if row is None or row.status != RUNNING:
                return False
            merged = {**json.loads(row.details), **dict(details or {}), "finished": time.time()}
            res = conn.execute(t.update().where(t.c.id == int(lock_id), t.c.status == RUNNING)
                               .values(status=status, details=_json(merged, "details")))
        return bool(res.rowcount)
