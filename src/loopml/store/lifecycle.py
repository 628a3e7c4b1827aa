"""Deleting and restoring runs and experiments, experiment tags, and what a run used and made.

What MLflow's clients need of a store besides loopml's own runs (revision 0007):
a run or an experiment is deleted by a time stamp (``deleted_at``) and comes
back with a restore; deleting an experiment deletes its runs with the same
stamp, so that restoring it brings back exactly those. Functions over a
:class:`~loopml.store.TrackingStore`, each one transaction::

    from loopml.store import lifecycle
    lifecycle.delete_run(store, run_id)
    store.search_runs(experiments="digits")                  # leaves it out
    store.search_runs(experiments="digits", deleted=True)    # only the deleted ones
    lifecycle.restore_run(store, run_id)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from ..errors import ArgumentError, Conflict, NotFound
from . import schema as s
from .tracking import TrackingStore
from .validation import check_key, check_text_value

__all__ = [
    "ExperimentInfo",
    "create_experiment",
    "delete_experiment",
    "delete_experiment_tag",
    "delete_run",
    "get_experiment",
    "link_run",
    "rename_experiment",
    "restore_experiment",
    "restore_run",
    "run_links",
    "search_experiments",
    "set_experiment_tag",
    "set_run_name",
]

LINK_KINDS = ("model_input", "model_output", "dataset_input")
_ORDERABLE = {"id": s.experiments.c.id, "name": s.experiments.c.name, "created_at": s.experiments.c.created_at}


@dataclass(kw_only=True)
class ExperimentInfo:
    """An experiment with its tags, deletion time and last activity (its newest run's start or end)."""

    id: int
    name: str
    created_at: float
    description: str | None
    deleted_at: float | None
    last_activity: float
    tags: dict[str, str] = field(default_factory=dict)


def _experiment_query() -> sa.Select[Any]:
    e, r = s.experiments, s.runs
    last = (
        sa.select(sa.func.max(sa.func.coalesce(r.c.end_time, r.c.start_time)))
        .where(r.c.experiment_id == e.c.id)
        .correlate(e)
        .scalar_subquery()
    )
    return sa.select(e.c.id, e.c.name, e.c.created_at, e.c.description, e.c.deleted_at, last.label("last"))


def _infos(conn: sa.Connection, rows: Sequence[Any]) -> list[ExperimentInfo]:
    out = [
        ExperimentInfo(
            id=i, name=n, created_at=c, description=d, deleted_at=x, last_activity=c if last is None else max(c, last)
        )
        for i, n, c, d, x, last in rows
    ]
    if out:
        by_id = {info.id: info for info in out}
        t = s.experiment_tags
        for eid, k, v in conn.execute(sa.select(t.c.experiment_id, t.c.key, t.c.value).where(t.c.experiment_id.in_(list(by_id)))):
            by_id[eid].tags[k] = v
    return out


def get_experiment(store: TrackingStore, *, id: int | None = None, name: str | None = None) -> ExperimentInfo:
    """The experiment with ``id`` or ``name``, deleted or not; :class:`NotFound` if none."""
    stmt = _experiment_query()
    stmt = stmt.where(s.experiments.c.id == id) if name is None else stmt.where(s.experiments.c.name == name)
    with store.read() as conn:
        infos = _infos(conn, conn.execute(stmt).all())
    if not infos:
        raise NotFound(f"Experiment {name!r} does not exist" if name is not None else f"Experiment id {id} does not exist")
    return infos[0]


def create_experiment(store: TrackingStore, name: str, *, tags: Mapping[str, Any] | None = None) -> int:
    """A new experiment's id; :class:`Conflict` if the name is taken (by a deleted experiment too)."""
    check_key(name, what="experiment")
    tvals = {check_key(k, what="tag key"): check_text_value(k, v, what="tag") for k, v in (tags or {}).items()}
    with store.transaction() as conn:
        stmt = store.upsert(s.experiments).values(name=name, created_at=time.time())
        stmt = stmt.on_conflict_do_nothing(index_elements=["name"]).returning(s.experiments.c.id)
        new_id = conn.execute(stmt).scalar()
        if new_id is None:
            deleted = conn.execute(sa.select(s.experiments.c.deleted_at).where(s.experiments.c.name == name)).scalar()
            state = " (deleted: restore it, or delete it for good with `loopml db`)" if deleted is not None else ""
            raise Conflict(f"Experiment {name!r} already exists{state}")
        if tvals:
            conn.execute(s.experiment_tags.insert(), [{"experiment_id": new_id, "key": k, "value": v} for k, v in tvals.items()])
    return int(new_id)


def search_experiments(
    store: TrackingStore,
    *,
    conditions: Iterable[tuple[str, str, str, Any]] = (),
    order_by: Sequence[tuple[str, bool]] = (),
    deleted: bool | None = False,
    limit: int = 1000,
    offset: int = 0,
) -> list[ExperimentInfo]:
    """Experiments matching every condition, ``(kind, key, op, value)``.

    ``kind`` is ``"attribute"`` (key ``name``, ``created_at``, ``last_activity``) or ``"tag"``;
    ``op`` one of ``= != < <= > >= LIKE ILIKE``. ``order_by``: ``(key, descending)`` over
    ``id``, ``name``, ``created_at``, ``last_activity``; then newest first, then by id.
    """
    e = s.experiments
    stmt = _experiment_query()
    last = stmt.selected_columns.last
    if deleted is not None:
        stmt = stmt.where(e.c.deleted_at.is_not(None) if deleted else e.c.deleted_at.is_(None))
    for kind, key, op, value in conditions:
        if kind == "tag":
            t = s.experiment_tags
            match = sa.select(t.c.experiment_id).where(t.c.key == key, _compare(t.c.value, op, value))
            stmt = stmt.where(e.c.id.in_(match))
        else:
            column = last if key == "last_activity" else _ORDERABLE[key]
            stmt = stmt.where(_compare(column, op, value))
    keys = [(last if key == "last_activity" else _ORDERABLE[key], desc) for key, desc in order_by]
    stmt = stmt.order_by(*[(c.desc() if d else c.asc()) for c, d in keys], e.c.created_at.desc(), e.c.id.asc())
    with store.read() as conn:
        return _infos(conn, conn.execute(stmt.limit(limit).offset(offset)).all())


def _compare(column: Any, op: str, value: Any) -> Any:
    if op == "LIKE":
        return column.like(value)
    if op == "ILIKE":
        return column.ilike(value)
    ops = {"=": "__eq__", "!=": "__ne__", "<": "__lt__", "<=": "__le__", ">": "__gt__", ">=": "__ge__"}
    if op not in ops:
        raise ArgumentError(f"Unknown operator {op!r}: expected one of {', '.join(ops)}, LIKE, ILIKE")
    return getattr(column, ops[op])(value)


def rename_experiment(store: TrackingStore, id: int, new_name: str) -> None:
    check_key(new_name, what="experiment")
    e = s.experiments
    with store.transaction() as conn:
        if conn.execute(sa.select(e.c.id).where(e.c.name == new_name, e.c.id != id)).first() is not None:
            raise Conflict(f"Experiment {new_name!r} already exists; choose another name")
        if not conn.execute(e.update().where(e.c.id == id).values(name=new_name)).rowcount:
            raise NotFound(f"Experiment id {id} does not exist")


def delete_experiment(store: TrackingStore, id: int) -> None:
    """Mark the experiment and its runs deleted (one stamp: :func:`restore_experiment` brings back those runs)."""
    e, r = s.experiments, s.runs
    now = time.time()
    with store.transaction() as conn:
        if not conn.execute(e.update().where(e.c.id == id).values(deleted_at=now)).rowcount:
            raise NotFound(f"Experiment id {id} does not exist")
        conn.execute(r.update().where(r.c.experiment_id == id, r.c.deleted_at.is_(None)).values(deleted_at=now))


def restore_experiment(store: TrackingStore, id: int) -> None:
    e, r = s.experiments, s.runs
    with store.transaction() as conn:
        stamp = conn.execute(sa.select(e.c.deleted_at).where(e.c.id == id)).first()
        if stamp is None:
            raise NotFound(f"Experiment id {id} does not exist")
        if stamp[0] is None:
            return
        conn.execute(e.update().where(e.c.id == id).values(deleted_at=None))
        conn.execute(r.update().where(r.c.experiment_id == id, r.c.deleted_at == stamp[0]).values(deleted_at=None))


def set_experiment_tag(store: TrackingStore, id: int, key: str, value: Any) -> None:
    key = check_key(key, what="tag key")
    text = check_text_value(key, value, what="tag")
    with store.transaction() as conn:
        if conn.execute(sa.select(s.experiments.c.id).where(s.experiments.c.id == id)).first() is None:
            raise NotFound(f"Experiment id {id} does not exist")
        stmt = store.upsert(s.experiment_tags).values(experiment_id=id, key=key, value=text)
        conn.execute(stmt.on_conflict_do_update(index_elements=["experiment_id", "key"], set_={"value": text}))


def delete_experiment_tag(store: TrackingStore, id: int, key: str) -> None:
    t = s.experiment_tags
    with store.transaction() as conn:
        if not conn.execute(t.delete().where(t.c.experiment_id == id, t.c.key == key)).rowcount:
            raise NotFound(f"Experiment id {id} has no tag {key!r}")


def _set_run_deleted(store: TrackingStore, run_id: str, deleted: bool) -> None:
    r = s.runs
    with store.transaction() as conn:
        n = conn.execute(r.update().where(r.c.id == run_id).values(deleted_at=time.time() if deleted else None)).rowcount
    if not n:
        raise NotFound(f"Run {run_id!r} does not exist")


def delete_run(store: TrackingStore, run_id: str) -> None:
    """Mark the run deleted: searches leave it out unless asked for deleted runs; nothing is erased."""
    _set_run_deleted(store, run_id, True)


def restore_run(store: TrackingStore, run_id: str) -> None:
    _set_run_deleted(store, run_id, False)


def link_run(store: TrackingStore, run_id: str, links: Iterable[tuple[str, str, int | None, Mapping[str, Any] | None]]) -> None:
    """Record ``(kind, ref, step, details)`` links of the run (a logged model it made, a dataset it read); kept once."""
    rows = []
    for kind, ref, step, details in links:
        if kind not in LINK_KINDS:
            raise ArgumentError(f"Argument kind should be one of {LINK_KINDS}, got {kind!r}")
        if not isinstance(ref, str) or not 0 < len(ref) <= 512:
            raise ArgumentError(f"A run link's ref should be a string of 1 to 512 characters, got {ref!r:.80}")
        rows.append({"run_id": run_id, "kind": kind, "ref": ref, "step": step,
                     "details": None if details is None else orjson.dumps(details).decode()})
    if not rows:
        return
    with store.transaction() as conn:
        if conn.execute(sa.select(s.runs.c.id).where(s.runs.c.id == run_id)).first() is None:
            raise NotFound(f"Run {run_id!r} does not exist")
        conn.execute(store.upsert(s.run_links).on_conflict_do_nothing(index_elements=["run_id", "kind", "ref"]), rows)


def run_links(store: TrackingStore, run_ids: Sequence[str]) -> dict[str, list[tuple[str, str, int | None, Any]]]:
    """``{run_id: [(kind, ref, step, details), ...]}`` for the runs that have links."""
    out: dict[str, list[tuple[str, str, int | None, Any]]] = {}
    if not run_ids:
        return out
    t = s.run_links
    stmt = sa.select(t.c.run_id, t.c.kind, t.c.ref, t.c.step, t.c.details).where(t.c.run_id.in_(list(run_ids)))
    with store.read() as conn:
        for rid, kind, ref, step, details in conn.execute(stmt.order_by(t.c.run_id, t.c.kind, t.c.ref)):
            out.setdefault(rid, []).append((kind, ref, step, None if details is None else orjson.loads(details)))
    return out


def set_run_name(store: TrackingStore, run_id: str, name: str) -> None:
    """Rename a run (MLflow's clients rename by ``update-run`` or the ``mlflow.runName`` tag)."""
    check_key(name, what="name")
    r = s.runs
    with store.transaction() as conn:
        if not conn.execute(r.update().where(r.c.id == run_id).values(name=name)).rowcount:
            raise NotFound(f"Run {run_id!r} does not exist")
