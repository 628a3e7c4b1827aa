"""Monitoring's tables: results per window of a version's request log, alert rules, fired alerts.

The SQL behind :mod:`loopml.monitor.alerts` and the monitors that store what they
computed. Results are kept by (model, version, kind, window); rules by the target
they watch as the user wrote it (``"digits@production"`` follows the alias,
``"digits/3"`` one version) and a name unique for that target. Example::

    log = MonitorLog(TrackingStore("sqlite:///./.loopml/loopml.db", artifact_root="./.loopml/artifacts"))
    log.save_result("digits", 3, "drift", window=(t0, t1), rows=5000, flagged=False, payload=report.to_dict())
    rule_id = log.add_rule("digits@production", "accuracy-floor", metric="accuracy", op="<", threshold=0.9)
    log.record_alert(rule_id, "digits", 3, value=0.84, message="accuracy 0.84 < 0.9")
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import ArgumentError, Conflict, NotFound
from . import schema as s

if TYPE_CHECKING:
    from .tracking import TrackingStore

__all__ = ["MonitorLog", "OPS"]

OPS = ("<", ">")


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, default=float)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"Argument {what} should be JSON (finite numbers, strings, lists, mappings): {exc}") from None


def _new_id(result: "sa.CursorResult[Any]") -> int:
    key = result.inserted_primary_key
    assert key is not None  # an INSERT of one row always has one
    return int(key[0])


class MonitorLog:
    """Monitoring results, alert rules and alerts in a :class:`~loopml.store.TrackingStore`'s database."""

    def __init__(self, store: "TrackingStore") -> None:
        self.store = store

    # -- results ------------------------------------------------------------------------------

    def save_result(self, model: str, version: int, kind: str, *, window: tuple[float, float], rows: int,
                    flagged: bool | None, payload: Mapping[str, Any]) -> int:
        """Store one result of ``kind`` for one window; returns its id."""
        start, end = (float(window[0]), float(window[1]))
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise ArgumentError(f"Argument window should be (start, end) times with start <= end; got {window!r}")
        row = {
            "model": model, "version": int(version), "kind": kind, "window_start": start, "window_end": end,
            "rows": int(rows), "flagged": flagged, "payload": _json(dict(payload), "payload"), "created_at": time.time(),
        }
        with self.store.transaction() as conn:
            return _new_id(conn.execute(s.monitor_results.insert().values(**row)))

    def results(self, model: str, version: int | None = None, kind: str | None = None, *,
                since: float | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Stored results, newest window last."""
        t = s.monitor_results
        q = sa.select(t).where(t.c.model == model)
        if version is not None:
            q = q.where(t.c.version == int(version))
        if kind is not None:
            q = q.where(t.c.kind == kind)
        if since is not None:
            q = q.where(t.c.window_end >= float(since))
        q = q.order_by(t.c.window_end.desc(), t.c.id.desc()).limit(int(limit))
        with self.store.read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        for r in rows:
            r["payload"] = json.loads(r["payload"])
        return rows[::-1]

    def result(self, result_id: int) -> dict[str, Any]:
        """One stored result by its id (what :meth:`save_result` returned); :class:`~loopml.errors.NotFound` if none."""
        t = s.monitor_results
        with self.store.read() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == int(result_id))).first()
        if row is None:
            raise NotFound(f"No monitoring result {result_id}")
        out = dict(row._mapping)
        out["payload"] = json.loads(out["payload"])
        return out

    # -- rules --------------------------------------------------------------------------------

    def add_rule(self, target: str, name: str, *, metric: str, op: str, threshold: float,
                 webhook: str | None = None, allow: Sequence[str] = ()) -> int:
        """Store a rule; a rule of the same name on the same target is a :class:`~loopml.errors.Conflict`."""
        if op not in OPS:
            raise ArgumentError(f"Argument op should be one of {OPS}; got {op!r}")
        row = {
            "target": target, "name": name, "metric": metric, "op": op, "threshold": float(threshold),
            "webhook": webhook, "allow": _json(list(allow), "allow"), "enabled": True, "created_at": time.time(),
        }
        t = s.alert_rules
        with self.store.transaction() as conn:
            exists = conn.execute(sa.select(t.c.id).where(t.c.target == target, t.c.name == name)).first()
            if exists is not None:
                raise Conflict(f"{target} already has an alert rule named {name!r}; delete it first or pick another name")
            return _new_id(conn.execute(t.insert().values(**row)))

    def rules(self, target: str | None = None) -> list[dict[str, Any]]:
        t = s.alert_rules
        q = sa.select(t).order_by(t.c.id)
        if target is not None:
            q = q.where(t.c.target == target)
        with self.store.read() as conn:
            out = [dict(r._mapping) for r in conn.execute(q)]
        for r in out:
            r["allow"] = json.loads(r["allow"])
        return out

    def delete_rule(self, target: str, name: str) -> None:
        """Delete a rule and the alerts it fired."""
        t = s.alert_rules
        with self.store.transaction() as conn:
            rule = conn.execute(sa.select(t.c.id).where(t.c.target == target, t.c.name == name)).first()
            if rule is None:
                raise NotFound(f"{target} has no alert rule named {name!r}")
            conn.execute(s.alerts.delete().where(s.alerts.c.rule_id == rule.id))
            conn.execute(t.delete().where(t.c.id == rule.id))

    # -- alerts -------------------------------------------------------------------------------

    def record_alert(self, rule_id: int, model: str, version: int, *, value: float, message: str,
                     delivered: bool | None = None, delivery_error: str | None = None, at: float | None = None) -> int:
        row = {
            "rule_id": int(rule_id), "model": model, "version": int(version), "fired_at": time.time() if at is None else at,
            "value": float(value), "message": message, "delivered": delivered, "delivery_error": delivery_error,
        }
        with self.store.transaction() as conn:
            return _new_id(conn.execute(s.alerts.insert().values(**row)))

    def alerts(self, model: str | None = None, *, since: float | None = None, limit: int = 1000,
               version: int | None = None) -> list[dict[str, Any]]:
        """Fired alerts with their rule's target, name and metric, oldest first (the newest ``limit``)."""
        a, r = s.alerts, s.alert_rules
        q = sa.select(a, r.c.target, r.c.name, r.c.metric, r.c.op, r.c.threshold).join(r, r.c.id == a.c.rule_id)
        if model is not None:
            q = q.where(a.c.model == model)
        if version is not None:
            q = q.where(a.c.version == int(version))
        if since is not None:
            q = q.where(a.c.fired_at >= float(since))
        q = q.order_by(a.c.fired_at.desc(), a.c.id.desc()).limit(int(limit))
        with self.store.read() as conn:
            return [dict(row._mapping) for row in conn.execute(q)][::-1]
