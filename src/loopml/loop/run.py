"""One pass of the loop for a target: monitor -> queue -> retrain -> compare -> promote, each step recorded.

:func:`run` takes ``"digits@production"`` through the loop once, under the target's lock:

1. **monitor**: one :func:`loopml.monitor.watch.check` cycle over the newest ``window``
   (results stored, alert rules evaluated);
2. **queue**: :func:`loopml.loop.queue.build_queue`, when an alert fired or drift was flagged
   on the version since its last queue step, or its queue is short (fewer open items than
   half of ``queue_size``), and only within the **label budget**: the items the model's
   queue asked for in the last ``budget_period`` plus those still open stay at or under
   ``label_budget``;
3. **retrain**: :func:`loopml.loop.retrain.retrain` on the version's agreed labels, when at
   least ``min_labels`` of them were not used by an earlier retrain of it, the label
   dataset is not the one the last retrain of it used, and the **cooldown** since the
   model's last retrain has passed;
4. **compare**: the challenger against the champion (:func:`loopml.loop.compare.compare`);
5. **promote**: :func:`loopml.loop.promote.promote` when the comparison says promote and
   ``promote=True``.

Each step writes a ``loop_events`` row with its status (``done``, ``skipped`` with why, or
``failed`` with the error) and its cause (the alert ids and rules, the command, the label
counts). Running it again with nothing new records skips and changes nothing: a second
challenger is never made from the same labels. A challenger left uncompared or unpromoted
by a run that stopped is picked up by the next one (never one that was promoted before
and rolled back).

**The lock**: a ``run`` row with status ``running`` (:meth:`loopml.store.loopevents.LoopEvents.acquire`),
taken in one serialised transaction (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL advisory
transaction lock), so of two runs at once on one target one does the work and the other
records a skipped ``run``. The holder refreshes it at each step and each training epoch;
a lock not refreshed for ``lock_ttl`` (30 minutes) expires, and one held by a process that
no longer runs on this machine is taken over at once::

    report = run("digits@production", label_budget=500, cooldown="6h")
    [(s.step, s.status) for s in report.steps]
    # [('monitor', 'done'), ('queue', 'done'), ('retrain', 'skipped'), ('compare', 'skipped'), ('promote', 'skipped')]
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import ArgumentError, ArgumentTypeError, Conflict, LoopMLError, NotFound
from ..models.registry import current_user, registry_for
from ..monitor.windows import parse_duration
from ..store import schema as s
from ..store.labels import LabelStore
from ..store.loopevents import LoopEvents
from ..store.monitoring import MonitorLog
from ..store.registry import ModelVersion, check_alias, local_registry
from .compare import ALPHA, MIN_GAIN, Comparison
from .compare import compare as compare_versions
from .labels import label_dataset
from .promote import promote as move_alias
from .queue import build_queue
from .retrain import MIN_LABELS, check_count, check_holdout
from .retrain import retrain as retrain_version

if TYPE_CHECKING:
    from ..store.registry import RegistryStore
    from ..store.tracking import TrackingStore
    from ..train.callbacks import Callback

__all__ = ["LABEL_BUDGET", "LOCK_TTL", "LoopReport", "StepResult", "check_options", "run"]

LABEL_BUDGET = 1000
"""Queue items a model may ask annotators for per ``budget_period`` (default 7 days), open ones included."""
BUDGET_PERIOD = "7d"
COOLDOWN = "6h"
LOCK_TTL = "30m"
"""A lock not refreshed for this long expires (its run was killed or lost the database); the holder refreshes it at each step and epoch."""
SHORT = 0.5  # a queue with fewer open items than this share of queue_size is topped up
STEPS = ("monitor", "queue", "retrain", "compare", "promote")


@dataclass(frozen=True, kw_only=True)
class StepResult:
    """One step of a pass: its status (``done``, ``skipped``, ``failed``), why, its cause, what it found, its loop event."""

    step: str
    status: str
    why: str
    cause: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    event: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True)
class LoopReport:
    """What :func:`run` did: the target, the champion it started from, each step, the challenger and the promotion."""

    target: str
    model: str
    champion: str
    steps: list[StepResult] = field(default_factory=list)
    challenger: str | None = None
    promoted: str | None = None
    locked_by: dict[str, Any] | None = None  # the holder's details when another run held the lock (nothing done)
    run_event: int | None = None
    seconds: float = 0.0

    @property
    def status(self) -> str:
        """``failed`` if a step failed; ``skipped`` if the lock was held elsewhere; else ``done``."""
        if any(s.status == "failed" for s in self.steps):
            return "failed"
        return "skipped" if self.locked_by is not None else "done"

    def step(self, name: str) -> StepResult | None:
        return next((s for s in self.steps if s.step == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "model": self.model, "champion": self.champion, "status": self.status,
                "challenger": self.challenger, "promoted": self.promoted, "locked_by": self.locked_by,
                "run_event": self.run_event, "seconds": self.seconds, "steps": [s.to_dict() for s in self.steps]}


def _duration(value: Any, what: str, *, zero: bool = False) -> float:
    """Seconds from ``"6h"`` or a number; ``zero``: 0 is allowed (it turns the thing off)."""
    if zero and not isinstance(value, bool) and (value == 0 or value == "0"):
        return 0.0
    return parse_duration(value, what)


def check_options(*, queue_size: int = 200, audit: float = 0.1, min_labels: int = MIN_LABELS,
                  label_budget: int = LABEL_BUDGET, budget_period: str | float = BUDGET_PERIOD,
                  cooldown: str | float = COOLDOWN, window: str | float = "1h", lock_ttl: str | float = LOCK_TTL,
                  holdout: float = 0.3, epochs: int = 10, seed: int = 0) -> dict[str, float]:
    """Check :func:`run`'s options before any work; the durations in seconds (``ArgumentError`` says which is wrong)."""
    check_count(queue_size, "queue_size", 1)
    check_count(min_labels, "min_labels", 1)
    check_count(label_budget, "label_budget", 0)
    check_count(epochs, "epochs", 1)
    check_count(seed, "seed", 0)
    if isinstance(audit, bool) or not isinstance(audit, (int, float)) or not 0 <= audit <= 1:
        raise ArgumentError(f"Argument audit should be the audit slice's share of the queue, 0 to 1; got {audit!r}")
    check_holdout(holdout)
    return {"budget_period": _duration(budget_period, "budget_period"), "cooldown": _duration(cooldown, "cooldown", zero=True),
            "window": _duration(window, "window"), "lock_ttl": _duration(lock_ttl, "lock_ttl")}


def _split_target(target: Any) -> tuple[str, str]:
    if not isinstance(target, str):
        raise ArgumentTypeError(f"Argument target should be NAME@ALIAS, e.g. 'digits@production'; got {type(target).__name__}")
    if target.count("@") != 1 or "/" in target:
        raise ArgumentError(f"Argument target should be NAME@ALIAS, e.g. 'digits@production' (the loop promotes by "
                            f"moving the alias); got {target!r}")
    name, alias = target.split("@")
    check_alias(alias)
    return name, alias


def _this_host_dead(holder: Mapping[str, Any]) -> bool:
    """True when the lock's holder ran on this machine and its process is gone (its lock is stale at once)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive but not ours to signal
        return False
    return False


class _Lost(LoopMLError):
    """The run's lock was taken over (it was not refreshed within its ttl): stop before writing more."""


class _Pass:
    """The state of one pass: the store, the target, the champion, the steps so far."""

    def __init__(self, target: str, name: str, alias: str, registry: "RegistryStore", *, opts: dict[str, Any],
                 cause: dict[str, Any], tracking_uri: str | None) -> None:
        self.target, self.name, self.alias = target, name, alias
        self.registry = registry
        self.db: "TrackingStore" = registry.store
        self.events = LoopEvents(self.db)
        self.opts = opts
        self.cause = cause
        self.uri = tracking_uri
        self.lock: int | None = None
        self.champion: ModelVersion = registry.resolve(target)
        self.report = LoopReport(target=target, model=name, champion=self.champion.ref)

    # -- records ------------------------------------------------------------------------------

    def record(self, step: str, status: str, why: str, *, cause: Mapping[str, Any] | None = None,
               details: Mapping[str, Any] | None = None, version: int | None = None, event: int | None = None) -> StepResult:
        """Append the step to the report, writing its loop event unless the step's own function wrote it (``event``)."""
        c = {**self.cause, **dict(cause or {})}
        d = {"why": why, **dict(details or {})}
        if event is None:
            event = self.events.record(self.target, self.name, self.champion.version if version is None else version, step,
                                       status, cause=c, details=d)
        result = StepResult(step=step, status=status, why=why, cause=c, details=d, event=event)
        self.report.steps.append(result)
        return result

    def newest(self, step: str, *, after: int = 0, status: str | None = None) -> dict[str, Any] | None:
        """The newest loop event of this target and step (after the event id ``after``; of ``status``)."""
        for e in reversed(self.events.events(self.target, step=step, limit=50)):
            if e["id"] > after and (status is None or e["status"] == status):
                return dict(e)
        return None

    def mark(self) -> int:
        """The id of the newest loop event of the target: what a step's own events come after."""
        got = self.events.events(self.target, limit=1)
        return int(got[-1]["id"]) if got else 0

    def heartbeat(self) -> None:
        if self.lock is not None and not self.events.refresh(self.lock):
            raise _Lost(f"The loop's lock on {self.target} was taken over (not refreshed within "
                        f"{self.opts['lock_ttl']:.0f} s); this run stops here. Raise lock_ttl (--lock-ttl) above the "
                        "longest step")

    def retrains(self) -> list[dict[str, Any]]:
        """The model's finished retrains (any target), oldest first."""
        return [e for e in self.events.events(model=self.name, step="retrain", limit=1000) if e["status"] == "done"]

    # -- monitor -----------------------------------------------------------------------------

    def monitor(self) -> None:
        from ..monitor.watch import check

        if not self.opts["monitor"]:
            self.record("monitor", "skipped", "monitor=False (--no-monitor): no cycle run")
            return
        clock = time.time()
        result = check(self.target, window=self.opts["window"], now=clock, seed=self.opts["seed"], tracking_uri=self.uri)
        fired = [a for a in MonitorLog(self.db).alerts(self.name, since=clock, version=result.version)
                 if a["fired_at"] == clock]
        alerts = [{"id": int(a["id"]), "rule": a["name"], "metric": a["metric"], "value": a["value"]} for a in fired]
        details = {"window": list(result.window), "requests": result.requests, "rows": result.rows,
                   "values": result.values, "stored": result.stored, "notes": result.notes, "alerts": alerts}
        why = (f"{result.requests} requests in the window; "
               + (f"{len(alerts)} alert(s): " + ", ".join(f"{a['rule']} (#{a['id']})" for a in alerts) if alerts
                  else "no alert fired"))
        self.record("monitor", "done", why, details=details, version=result.version)

    # -- queue -------------------------------------------------------------------------------

    def budget_used(self, since: float) -> int:
        """Queue items of the model asked for since ``since``, plus those open from before: what the budget counts."""
        q = s.label_queue
        sel = sa.select(sa.func.count()).where(q.c.model == self.name, sa.or_(q.c.created_at >= since, q.c.status == "open"))
        with self.db.read() as conn:
            return int(conn.execute(sel).scalar_one())

    def queue(self) -> None:

        v = self.champion
        last = next((e for e in reversed(self.events.events(self.target, step="queue", limit=200))
                     if e["status"] == "done" and e["version"] == v.version), None)
        since = float(last["at"]) if last is not None else None
        log = MonitorLog(self.db)
        alerts = [{"id": int(a["id"]), "rule": a["name"], "metric": a["metric"], "value": a["value"]}
                  for a in log.alerts(self.name, since=since, version=v.version)]
        flagged = [{"kind": r["kind"], "result": int(r["id"])}
                   for kind in ("drift", "predictions") for r in log.results(self.name, v.version, kind, since=since)
                   if r["flagged"]]
        counts = LabelStore(self.db).counts(self.name, version=v.version)
        open_now = sum(c.get("open", 0) for c in counts.values())
        queued_before = sum(sum(c.values()) for c in counts.values())
        size = self.opts["queue_size"]
        short = queued_before > 0 and open_now < size * SHORT
        cause: dict[str, Any] = {}
        if alerts:
            cause["alerts"] = alerts
        if flagged:
            cause["flagged"] = flagged[-5:]
        if short:
            cause["short"] = {"open": open_now, "queue_size": size}
        when = "ever" if since is None else f"since its last queue step (event {last['id'] if last else ''})"
        if not cause:
            self.record("queue", "skipped", f"no alert and no drift flagged on {v.ref} {when}, and no queue to top up "
                        f"({open_now} open items)", details={"open": open_now})
            return
        budget, period = self.opts["label_budget"], self.opts["budget_period"]
        used = self.budget_used(time.time() - period)
        figures = {"budget": budget, "period_s": period, "used": used, "open": open_now}
        left = budget - used
        if left <= 0:
            self.record("queue", "skipped", f"label budget spent: {used} items asked for in the last {_human(period)} or "
                        f"still open, budget {budget}", cause=cause, details=figures)
            return
        want = min(size, open_now + left)
        if want <= open_now:
            self.record("queue", "skipped", f"{open_now} items already open (queue_size {size})", cause=cause,
                        details=figures)
            return
        self.heartbeat()
        built = build_queue(v, size=want, audit=self.opts["audit"], uncertainty=self.opts["uncertainty"],
                            seed=self.opts["seed"], store=self.db)
        added = sum(built.added.values())
        details = {**figures, **built.to_dict(), "size": want}
        if not added:
            self.record("queue", "skipped", "nothing new to queue: " + ("; ".join(built.notes) or "every candidate is queued"),
                        cause=cause, details=details)
            return
        why = f"{added} items queued ({', '.join(f'{k} {n}' for k, n in built.added.items() if n)}) for {v.ref}"
        self.record("queue", "done", why, cause=cause, details=details)

    # -- retrain -----------------------------------------------------------------------------

    def used_keys(self, fingerprints: Sequence[str]) -> set[tuple[str, int]]:
        """The (request_id, row) pairs that the stored label datasets ``fingerprints`` came from."""
        t = s.dataset_predictions
        out: set[tuple[str, int]] = set()
        if not fingerprints:
            return out
        with self.db.read() as conn:
            for r in conn.execute(sa.select(t.c.request_id, t.c.row).where(t.c.fingerprint.in_(list(fingerprints)))):
                out.add((r.request_id, int(r.row)))
        return out

    def retrain(self) -> ModelVersion | None:

        v = self.champion
        now = time.time()
        done = self.retrains()
        cooldown = self.opts["cooldown"]
        if done and now - float(done[-1]["at"]) < cooldown:
            last = done[-1]
            self.record("retrain", "skipped", f"cooldown: {self.name} was last retrained {_human(now - last['at'])} ago "
                        f"(event {last['id']}); the cooldown is {_human(cooldown)}",
                        details={"last_retrain": last["id"], "next_after": last["at"] + cooldown})
            return None
        try:
            ds = label_dataset(v, backend=self.db)
        except ArgumentError as exc:
            self.record("retrain", "skipped", f"no labels to retrain {v.ref} on: {exc}")
            return None
        keys = {(str(r), int(i)) for r, i in ds.predictions}  # type: ignore[attr-defined]
        mine = [e for e in done if e["details"].get("champion") == v.ref]
        fps = [str(e["details"].get("labels_fingerprint")) for e in mine if e["details"].get("labels_fingerprint")]
        figures = {"labels": len(keys), "labels_fingerprint": ds.fingerprint, "min_labels": self.opts["min_labels"]}
        if fps and fps[-1] == ds.fingerprint:
            self.record("retrain", "skipped", f"the labels of {v.ref} are those its last retrain used "
                        f"({mine[-1]['details'].get('challenger')}, dataset {ds.fingerprint[:12]}): no new information",
                        details=figures)
            return None
        new = len(keys - self.used_keys(fps))
        figures["new_labels"] = new
        if new < self.opts["min_labels"]:
            self.record("retrain", "skipped", f"{new} new labels of {v.ref} ({len(keys)} in all), at least "
                        f"{self.opts['min_labels']} needed (min_labels)", details=figures)
            return None
        if self.registry.resolve(self.target).version != v.version:
            self.record("retrain", "skipped", f"{self.target} moved away from {v.ref} during this run; the next run goes on")
            return None
        self.heartbeat()
        ds = label_dataset(v, store=True, backend=self.db)  # stored by content, with the (request_id, row) of each row
        queued = [e for e in self.events.events(self.target, step="queue", limit=200)
                  if e["status"] == "done" and e["version"] == v.version]
        alerts = sorted({a["id"] for e in queued for a in e["cause"].get("alerts", [])})
        cause = {**self.cause, "loop": self.target, "labels": len(ds), "new_labels": new,
                 "labels_fingerprint": ds.fingerprint, **({"alerts": alerts} if alerts else {})}
        mark = self.mark()
        try:
            challenger, report = retrain_version(
                self.target, ds, cause=cause, min_labels=self.opts["min_labels"], from_scratch=self.opts["from_scratch"],
                epochs=self.opts["epochs"], holdout=self.opts["holdout"], replay=self.opts["replay"],
                seed=self.opts["seed"], callbacks=[_heartbeat(self), *self.opts["callbacks"]], tracking_uri=self.uri)
        except LoopMLError as exc:
            own = self.newest("retrain", after=mark, status="failed")
            self.record("retrain", "failed", f"{type(exc).__name__}: {exc}", cause=cause,
                        details={"error": f"{type(exc).__name__}: {exc}", **figures},
                        event=None if own is None else int(own["id"]))
            if isinstance(exc, _Lost):
                raise
            return None
        assert challenger is not None
        own = self.newest("retrain", after=mark, status="done")
        self.record("retrain", "done", f"{challenger.ref} retrained from {v.ref} on {report.labels} labels ({new} new, "
                    f"{report.recent} held out) + {report.replay} replayed rows", cause=cause,
                    details=report.to_dict(), version=challenger.version, event=None if own is None else int(own["id"]))
        self.report.challenger = challenger.ref
        return challenger

    # -- compare and promote -----------------------------------------------------------------

    def pending(self) -> tuple[str | None, dict[str, Any] | None]:
        """The newest challenger retrained from the champion, and its stored comparison with it (if any)."""
        v = self.champion
        mine = [e for e in self.retrains() if e["details"].get("champion") == v.ref and e["details"].get("challenger")]
        if not mine:
            return None, None
        ref = str(mine[-1]["details"]["challenger"])
        try:
            chall = self.registry.resolve(ref)
        except NotFound:  # deleted since
            return None, None
        stored = (chall.measurements or {}).get("comparison")
        return ref, stored if stored and stored.get("champion") == v.ref else None

    def compare(self, challenger: ModelVersion | None) -> Comparison | None:

        v = self.champion
        ref = challenger.ref if challenger is not None else None
        recovered = False
        if ref is None:
            ref, stored = self.pending()
            if ref is None:
                self.record("compare", "skipped", f"no challenger of {v.ref} to compare")
                return None
            if stored is not None:
                self.record("compare", "skipped", f"{ref} was compared with {v.ref} already: {stored['decision']}",
                            details={"challenger": ref, "decision": stored["decision"]})
                return Comparison.from_dict(stored)
            recovered = True  # retrained by a run that stopped before comparing
        self.heartbeat()
        cause = {**self.cause, "loop": self.target, "challenger": ref, **({"recovered": True} if recovered else {})}
        mark = self.mark()
        try:
            result = compare_versions(self.target, ref, alpha=self.opts["alpha"], min_gain=self.opts["min_gain"], cause=cause,
                             tracking_uri=self.uri)
        except LoopMLError as exc:
            self.record("compare", "failed", f"{type(exc).__name__}: {exc}", cause=cause,
                        details={"challenger": ref, "error": f"{type(exc).__name__}: {exc}"})
            return None
        own = self.newest("compare", after=mark, status="done")
        self.record("compare", "done", f"{result.decision}: " + "; ".join(result.reasons), cause=cause,
                    details={"challenger": ref, "decision": result.decision}, event=None if own is None else int(own["id"]))
        return result

    def promote(self, comparison: Comparison | None, fresh: bool) -> None:

        if comparison is None:
            self.record("promote", "skipped", "no comparison to act on")
            return
        chall = self.registry.resolve(comparison.challenger)
        if not comparison.promote:
            self.record("promote", "skipped", f"the comparison of {comparison.challenger} decided keep: "
                        + "; ".join(comparison.reasons), details={"challenger": comparison.challenger})
            return
        if not fresh:  # a comparison of an earlier run: act on it only if that challenger never served here
            promoted = [e for e in self.events.events(model=self.name, step="promote", limit=1000)
                        if e["status"] == "done" and e["version"] == chall.version]
            current = self.registry.resolve(self.target).version
            if promoted or current == chall.version:
                self.record("promote", "skipped", f"{comparison.challenger} was promoted to {self.target} before"
                            + ("" if current == chall.version else " and rolled back since: not promoting it again"),
                            details={"challenger": comparison.challenger})
                return
        if not self.opts["promote"]:
            self.record("promote", "skipped", f"promote=False (--no-promote): the comparison says promote "
                        f"{comparison.challenger}; to do it: loopml models alias {self.name} {self.alias} {chall.version}",
                        details={"challenger": comparison.challenger})
            return
        self.heartbeat()
        cause = {**self.cause, "loop": self.target, "challenger": comparison.challenger}
        mark = self.mark()
        try:
            event = move_alias(comparison, self.alias, cause=cause, tracking_uri=self.uri)
        except Conflict as exc:  # refused (stale comparison): promote() recorded it as skipped
            own = self.newest("promote", after=mark)
            self.record("promote", "skipped", str(exc), cause=cause, details={"challenger": comparison.challenger},
                        event=None if own is None else int(own["id"]))
            return
        except LoopMLError as exc:
            self.record("promote", "failed", f"{type(exc).__name__}: {exc}", cause=cause,
                        details={"challenger": comparison.challenger, "error": f"{type(exc).__name__}: {exc}"})
            return
        own = self.newest("promote", after=mark, status="done")
        self.record("promote", "done", f"{self.target} moved from {event.from_version} to {event.to_version}", cause=cause,
                    details={"from": event.from_version, "to": event.to_version}, version=event.to_version,
                    event=None if own is None else int(own["id"]))
        self.report.promoted = chall.ref


def _human(seconds: float) -> str:
    seconds = float(seconds)
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.3g}s"


def _heartbeat(p: _Pass) -> "Callback":
    """A Trainer callback that refreshes the run's lock after each epoch (a long retrain keeps it)."""
    from ..train.callbacks import Callback

    class Heartbeat(Callback):
        def on_epoch_end(self, trainer: Any) -> None:
            p.heartbeat()

    return Heartbeat()


def run(
    target: str,
    *,
    queue_size: int = 200,
    audit: float = 0.1,
    uncertainty: str = "margin",
    min_labels: int = MIN_LABELS,
    label_budget: int = LABEL_BUDGET,
    budget_period: str | float = BUDGET_PERIOD,
    cooldown: str | float = COOLDOWN,
    promote: bool = True,
    from_scratch: bool = False,
    epochs: int = 10,
    holdout: float = 0.3,
    replay: float = 1.0,
    alpha: float = ALPHA,
    min_gain: float = MIN_GAIN,
    monitor: bool = True,
    window: str | float = "1h",
    lock_ttl: str | float = LOCK_TTL,
    seed: int = 0,
    cause: Mapping[str, Any] | None = None,
    callbacks: Sequence["Callback"] = (),
    tracking_uri: str | None = None,
) -> LoopReport:
    """One pass of the loop for ``target`` (``NAME@ALIAS``): monitor -> queue -> retrain -> compare -> promote.

    ``queue_size``, ``audit``, ``uncertainty``: as for :func:`~loopml.loop.queue.build_queue`;
    ``label_budget`` items per ``budget_period`` (the model's queue items asked for in the
    period plus those open; 0: no queueing); ``min_labels``: new agreed labels (not used by
    an earlier retrain of the version) a retrain needs; ``cooldown``: the least time between
    two retrains of the model (``"6h"``; 0: none); ``promote=False``: compare but leave the
    alias; ``from_scratch``, ``epochs``, ``holdout``, ``replay``: as for
    :func:`~loopml.loop.retrain.retrain`, ``alpha``, ``min_gain`` as for
    :func:`~loopml.loop.compare.compare`; ``monitor=False``: no monitoring cycle; ``window``:
    the cycle's window; ``lock_ttl``: how long a lock lives without a refresh; ``cause``:
    what started the run (``{"command": ...}``), kept with every step; ``callbacks``: more
    Trainer callbacks for the retrain.

    Returns a :class:`LoopReport`. A step that fails is recorded (``failed``) and the steps
    that need it are skipped; the store stays consistent (nothing half-registered, the alias
    moved only by a passing comparison). When another run holds the target's lock, nothing
    is done and a skipped ``run`` event says who holds it. Example::

        report = run("churn@production", min_labels=50, cooldown="1d", promote=False)
        report.status, report.challenger          # ('done', 'churn/4')
    """
    name, alias = _split_target(target)
    secs = check_options(queue_size=queue_size, audit=audit, min_labels=min_labels, label_budget=label_budget,
                         budget_period=budget_period, cooldown=cooldown, window=window, lock_ttl=lock_ttl,
                         holdout=holdout, epochs=epochs, seed=seed)
    for flag, what in ((promote, "promote"), (from_scratch, "from_scratch"), (monitor, "monitor")):
        if not isinstance(flag, bool):
            raise ArgumentTypeError(f"Argument {what} should be True or False; got {flag!r}")
    opts: dict[str, Any] = {
        "queue_size": queue_size, "audit": float(audit), "uncertainty": uncertainty, "min_labels": min_labels,
        "label_budget": label_budget, "promote": promote, "from_scratch": from_scratch, "epochs": epochs,
        "holdout": float(holdout), "replay": replay, "alpha": alpha, "min_gain": min_gain, "monitor": monitor,
        "seed": seed, "callbacks": list(callbacks), **secs,
    }
    began = time.perf_counter()
    registry = local_registry(registry_for(tracking_uri), "loop run")
    p = _Pass(target, name, alias, registry, opts=opts, cause=dict(cause or {"command": "loop run"}),
              tracking_uri=tracking_uri)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "by": current_user()}
    p.lock, held = p.events.acquire(target, name, p.champion.version, ttl=secs["lock_ttl"], holder=holder, cause=p.cause,
                                    stale=_this_host_dead)
    if p.lock is None:
        assert held is not None
        d = held["details"]
        p.report.locked_by = d
        p.report.run_event = p.events.record(
            target, name, p.champion.version, "run", "skipped", cause=p.cause,
            details={"why": f"another run holds the lock (event {held['id']}: pid {d.get('pid')} on {d.get('host')}, "
                            f"until {d.get('expires', 0):.0f} unless refreshed)", "holder": held["id"]})
        p.report.seconds = time.perf_counter() - began
        return p.report
    p.report.run_event = p.lock
    status = "failed"
    try:
        _steps(p)
        status = p.report.status
    finally:
        p.report.seconds = time.perf_counter() - began
        summary = {"steps": {s.step: s.status for s in p.report.steps}, "challenger": p.report.challenger,
                   "promoted": p.report.promoted, "seconds": p.report.seconds}
        try:
            p.events.release(p.lock, status, summary)
        except LoopMLError:  # the store is what failed: the lock expires after lock_ttl, the error in hand says why
            if status != "failed":
                raise
    return p.report


def _steps(p: _Pass) -> None:
    """The five steps; a failure is recorded and the steps that depend on it are skipped."""

    def guarded(step: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except _Lost:
            raise
        except LoopMLError as exc:  # recorded; the next steps decide whether they can go on
            p.record(step, "failed", f"{type(exc).__name__}: {exc}", details={"error": f"{type(exc).__name__}: {exc}"})
            return None

    guarded("monitor", p.monitor)
    guarded("queue", p.queue)
    before = len(p.report.steps)
    challenger = guarded("retrain", p.retrain)
    if any(s.status == "failed" for s in p.report.steps[before:]):
        p.record("compare", "skipped", "the retrain failed")
        p.record("promote", "skipped", "the retrain failed: the alias stays")
        return
    before = len(p.report.steps)
    comparison = guarded("compare", p.compare, challenger)
    if any(s.status == "failed" for s in p.report.steps[before:]):
        p.record("promote", "skipped", "the comparison failed: the alias stays")
        return
    fresh = any(s.step == "compare" and s.status == "done" for s in p.report.steps)
    guarded("promote", p.promote, comparison, fresh)
