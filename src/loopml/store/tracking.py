"""The tracking store: experiments, runs, params, tags, metrics and artifacts.

One class over SQLAlchemy Core that works on SQLite and PostgreSQL alike. It
is what the local client, the tracking server and (later) the registry and
model server write through. Every public method is one transaction.

>>> store = TrackingStore("sqlite:///./.loopml/loopml.db", artifact_root="./.loopml/artifacts")
>>> run = store.create_run(experiment="digits")
>>> store.log_metrics([(run.id, "loss", 0, 1732000000.0, 0.5)])
>>> store.history(run.id, "loss").values
array([0.5])
>>> store.close()
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from ..errors import (
    ArgumentError,
    Conflict,
    IntegrityError,
    LoopMLError,
    NotFound,
    StoreError,
)
from ..files import atomic_path
from . import datasets as d
from . import schema as s
from .artifacts import ArtifactRoot, ObjectChanged, ObjectMissing, safe_relpath, sha256_file
from .engine import open_engine
from .points import decode_history, encode_blocks
from .protocols import MetricPoint
from .records import ArtifactInfo, Experiment, History, MetricSummary, RunRecord
from .roots import open_root
from .search import Node, compile_filter, compile_order_by, status_expression
from .validation import check_key, check_status, check_text_value

__all__ = ["MAX_PAGE_SIZE", "MetricPoint", "TrackingStore"]

# No query returns more rows than this; ask for the next page with offset.
MAX_PAGE_SIZE = 10_000
DEFAULT_PAGE_SIZE = 1_000


_NAN = float("nan")


class TrackingStore:
    """Experiments, runs, params, tags, metrics and artifacts in one database."""

    def __init__(
        self,
        uri: str,
        *,
        artifact_root: "str | Path | ArtifactRoot",
        heartbeat_timeout: float = 60.0,
        engine: Engine | None = None,
    ) -> None:
        self.uri = uri
        self.engine = engine if engine is not None else open_engine(uri)
        self._write_engine = self.engine.execution_options(loopml_write=True)  # BEGIN IMMEDIATE on SQLite
        self.artifacts: ArtifactRoot = open_root(artifact_root)  # a folder, or s3://bucket/prefix
        self.heartbeat_timeout = heartbeat_timeout
        self._dialect = self.engine.dialect.name
        if self._dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as upsert
        else:
            from sqlalchemy.dialects.postgresql import insert as upsert  # type: ignore[assignment]
        self._insert = upsert
        self._latest_upsert = self._build_latest_upsert()

    @classmethod
    def from_settings(cls, settings: Any) -> "TrackingStore":
        return cls(
            settings.tracking_uri,
            artifact_root=settings.artifact_root,
            heartbeat_timeout=settings.heartbeat_timeout,
        )

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"TrackingStore({self.engine.url.render_as_string(hide_password=True)!r})"

    # -- transactions ---------------------------------------------------------

    def _translate(self, exc: Exception) -> StoreError:
        """A driver or SQLAlchemy error as a StoreError; lock and connection trouble is transient."""
        dbapi = self.engine.dialect.dbapi
        orig = getattr(exc, "orig", None) or exc
        transient = isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)) or bool(
            getattr(exc, "connection_invalidated", False)
        )
        if dbapi is not None and isinstance(orig, (dbapi.OperationalError, dbapi.InterfaceError)):
            transient = True
        return StoreError(
            f"The store at {self!r} failed: {orig.__class__.__name__}: {orig}".strip(), transient=transient
        )

    def _is_db_error(self, exc: BaseException) -> bool:
        dbapi = self.engine.dialect.dbapi
        return isinstance(exc, SQLAlchemyError) or (dbapi is not None and isinstance(exc, dbapi.Error))

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection in one write transaction: committed at the end of the block, rolled back on an error.

        Database errors come out as :class:`~loopml.errors.StoreError` (``transient``
        for locks and lost connections). What the registry and the prediction log
        write through::

            with store.transaction() as conn:
                conn.execute(schema.tags.delete().where(schema.tags.c.run_id == run_id))
        """
        try:
            with self._write_engine.begin() as conn:
                yield conn
        except LoopMLError:
            raise
        except Exception as exc:
            if self._is_db_error(exc):
                raise self._translate(exc) from exc
            raise

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads (no write lock), with errors translated as in :meth:`transaction`."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except LoopMLError:
            raise
        except Exception as exc:
            if self._is_db_error(exc):
                raise self._translate(exc) from exc
            raise

    def upsert(self, table: sa.Table) -> Any:
        """An INSERT on ``table`` with this dialect's ``on_conflict_do_nothing`` / ``on_conflict_do_update``.

        SQLite's and PostgreSQL's insert constructs differ only in their import;
        both return a dialect ``Insert`` (typed Any here, as SQLAlchemy types them per dialect)::

            stmt = store.upsert(schema.models).values(name="digits").on_conflict_do_nothing(index_elements=["name"])
        """
        return self._insert(table)

    # -- experiments ----------------------------------------------------------

    def get_or_create_experiment(self, name: str) -> Experiment:
        check_key(name, what="experiment")
        with self.read() as conn:  # the common case: it exists, and a read takes no write lock
            row = conn.execute(sa.select(s.experiments).where(s.experiments.c.name == name)).first()
        if row is not None:
            return Experiment(id=row.id, name=row.name, created_at=row.created_at, description=row.description)
        with self.transaction() as conn:
            row = conn.execute(sa.select(s.experiments).where(s.experiments.c.name == name)).first()
            if row is None:
                stmt = self.upsert(s.experiments).values(name=name, created_at=time.time())
                conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
                row = conn.execute(sa.select(s.experiments).where(s.experiments.c.name == name)).one()
        return Experiment(id=row.id, name=row.name, created_at=row.created_at, description=row.description)

    def list_experiments(self) -> list[Experiment]:
        e, r = s.experiments, s.runs
        last = sa.func.max(sa.func.coalesce(r.c.end_time, r.c.heartbeat_at))
        stmt = (
            sa.select(e, sa.func.count(r.c.id).label("run_count"), last.label("last_activity"))
            .select_from(e.outerjoin(r, r.c.experiment_id == e.c.id))
            .group_by(e.c.id)
            .order_by(e.c.name)
            .limit(MAX_PAGE_SIZE)
        )
        with self.read() as conn:
            rows = conn.execute(stmt).all()
        return [
            Experiment(
                id=row.id,
                name=row.name,
                created_at=row.created_at,
                description=row.description,
                run_count=row.run_count,
                last_activity=row.last_activity if row.last_activity is not None else row.created_at,
            )
            for row in rows
        ]

    # -- runs -----------------------------------------------------------------

    def create_run(
        self,
        *,
        experiment: str,
        name: str | None = None,
        parent_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        git_commit: str | None = None,
        git_dirty: bool | None = None,
        host: str | None = None,
        user: str | None = None,
        command: str | None = None,
        start_time: float | None = None,
        run_id: str | None = None,
    ) -> RunRecord:
        exp = self.get_or_create_experiment(experiment)
        rid = run_id or uuid.uuid4().hex
        now = time.time() if start_time is None else start_time
        if name is None:
            name = f"run-{rid[:8]}"
        check_key(name, what="name")
        pvals = {check_key(k, what="param key"): check_text_value(k, v) for k, v in (params or {}).items()}
        tvals = {check_key(k, what="tag key"): check_text_value(k, v, what="tag") for k, v in (tags or {}).items()}
        with self.transaction() as conn:
            if parent_id is not None and conn.execute(
                sa.select(s.runs.c.id).where(s.runs.c.id == parent_id)
            ).first() is None:
                raise NotFound(f"Parent run {parent_id!r} does not exist")
            conn.execute(
                s.runs.insert().values(
                    id=rid,
                    experiment_id=exp.id,
                    name=name,
                    status="RUNNING",
                    start_time=now,
                    end_time=None,
                    heartbeat_at=now,
                    parent_id=parent_id,
                    git_commit=git_commit,
                    git_dirty=git_dirty,
                    host=host,
                    user=user,
                    command=command,
                )
            )
            if pvals:
                conn.execute(s.params.insert(), [{"run_id": rid, "key": k, "value": v} for k, v in pvals.items()])
            if tvals:
                conn.execute(s.tags.insert(), [{"run_id": rid, "key": k, "value": v} for k, v in tvals.items()])
        # everything a new run holds is known here: no read-back
        return RunRecord(
            id=rid, experiment_id=exp.id, experiment=exp.name, name=name, status="RUNNING", start_time=now,
            end_time=None, heartbeat_at=now, parent_id=parent_id, git_commit=git_commit, git_dirty=git_dirty,
            host=host, user=user, command=command, params=pvals, tags=tvals,
        )

    def set_status(self, run_id: str, status: str, *, end_time: float | None = None) -> None:
        check_status(status)
        now = time.time()
        values: dict[str, Any] = {"status": status, "heartbeat_at": now}
        values["end_time"] = None if status == "RUNNING" else (end_time if end_time is not None else now)
        with self.transaction() as conn:
            n = conn.execute(s.runs.update().where(s.runs.c.id == run_id).values(**values)).rowcount
        if n == 0:
            raise NotFound(f"Run {run_id!r} does not exist")

    def heartbeat(self, run_ids: Sequence[str], at: float | None = None) -> None:
        if not run_ids:
            return
        at = time.time() if at is None else at
        with self.transaction() as conn:
            conn.execute(
                s.runs.update()
                .where(s.runs.c.id.in_(list(run_ids)), s.runs.c.status == "RUNNING")
                .values(heartbeat_at=at)
            )

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Params are write-once: the same value again is fine, a different one is an error."""
        vals = {check_key(k, what="param key"): check_text_value(k, v) for k, v in params.items()}
        if not vals:
            return
        with self.transaction() as conn:
            self._require_run(conn, run_id)
            self._write_params(conn, run_id, vals)

    def _write_params(self, conn: Connection, run_id: str, vals: Mapping[str, str]) -> None:
        if vals:
            stmt = self.upsert(s.params).on_conflict_do_nothing(index_elements=["run_id", "key"])
            conn.execute(stmt, [{"run_id": run_id, "key": k, "value": v} for k, v in vals.items()])
            stored = dict(
                conn.execute(
                    sa.select(s.params.c.key, s.params.c.value).where(
                        s.params.c.run_id == run_id, s.params.c.key.in_(list(vals))
                    )
                ).all()
            )
            clash = {k: (stored[k], v) for k, v in vals.items() if stored.get(k) != v}
            if clash:
                k, (old, new) = next(iter(clash.items()))
                raise ArgumentError(
                    f"Param {k!r} of run {run_id} is already {old!r}; params cannot change (got {new!r}). "
                    "Use a tag for values that change, or start a new run."
                )

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        vals = {check_key(k, what="tag key"): check_text_value(k, v, what="tag") for k, v in tags.items()}
        if not vals:
            return
        with self.transaction() as conn:
            self._require_run(conn, run_id)
            self._write_tags(conn, run_id, vals)

    def _write_tags(self, conn: Connection, run_id: str, vals: Mapping[str, str]) -> None:
        if vals:
            stmt = self.upsert(s.tags)
            stmt = stmt.on_conflict_do_update(index_elements=["run_id", "key"], set_={"value": stmt.excluded.value})
            conn.execute(stmt, [{"run_id": run_id, "key": k, "value": v} for k, v in vals.items()])

    def log_batch(
        self,
        run_id: str,
        *,
        points: Sequence[MetricPoint] = (),
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """Metric points (validated, as for :meth:`log_metrics`), params and tags of one run in one transaction.

        The write counts as the run's heartbeat (for writers that send no other, such as
        MLflow's client). A deleted run takes no writes: :class:`~loopml.errors.Conflict`.
        """
        pvals = {check_key(k, what="param key"): check_text_value(k, v) for k, v in (params or {}).items()}
        tvals = {check_key(k, what="tag key"): check_text_value(k, v, what="tag") for k, v in (tags or {}).items()}
        r = s.runs
        with self.transaction() as conn:
            touched = conn.execute(
                r.update().where(r.c.id == run_id, r.c.deleted_at.is_(None)).values(heartbeat_at=time.time())
            ).rowcount
            if not touched:
                self._require_run(conn, run_id)
                raise Conflict(f"Run {run_id!r} is deleted; restore it before logging to it")
            self._write_params(conn, run_id, pvals)
            self._write_tags(conn, run_id, tvals)
            if points:
                blocks, latest = encode_blocks(points)
                conn.execute(s.metric_blocks.insert(), blocks)
                conn.execute(self._latest_upsert, latest)

    def delete_tag(self, run_id: str, key: str) -> None:
        with self.transaction() as conn:
            conn.execute(s.tags.delete().where(s.tags.c.run_id == run_id, s.tags.c.key == key))

    def _require_run(self, conn: Connection, run_id: str) -> None:
        if conn.execute(sa.select(s.runs.c.id).where(s.runs.c.id == run_id)).first() is None:
            raise NotFound(f"Run {run_id!r} does not exist")

    # -- metrics --------------------------------------------------------------

    def _build_latest_upsert(self) -> Any:
        lm = s.latest_metrics
        stmt = self.upsert(lm)
        ex = stmt.excluded
        newer = ex.step >= lm.c.step
        return stmt.on_conflict_do_update(
            index_elements=["run_id", "key"],
            set_={
                "step": sa.case((newer, ex.step), else_=lm.c.step),
                "timestamp": sa.case((newer, ex.timestamp), else_=lm.c.timestamp),
                "value": sa.case((newer, ex.value), else_=lm.c.value),
                "min_value": sa.case(
                    (lm.c.min_value.is_(None), ex.min_value),
                    (ex.min_value < lm.c.min_value, ex.min_value),
                    else_=lm.c.min_value,
                ),
                "max_value": sa.case(
                    (lm.c.max_value.is_(None), ex.max_value),
                    (ex.max_value > lm.c.max_value, ex.max_value),
                    else_=lm.c.max_value,
                ),
                "count": lm.c.count + ex.count,
            },
        )

    def log_metrics(self, points: Sequence[MetricPoint]) -> None:
        """Store a batch of ``(run_id, key, step, timestamp, value)`` points in one transaction.

        Points are assumed validated (the client checks them at ``log`` time;
        the server checks them on arrival). Each (run, key) of the batch
        becomes one block row (:mod:`loopml.store.points`).
        """
        if not points:
            return
        blocks, latest = encode_blocks(points)
        with self.transaction() as conn:
            conn.execute(s.metric_blocks.insert(), blocks)
            conn.execute(self._latest_upsert, latest)

    def history(self, run_id: str, key: str, *, offset: int = 0, limit: int | None = None) -> History:
        """The points of one metric, ordered by step then by the order they were logged.

        ``offset``/``limit`` page through the ordered points (default: all of them).
        """
        if not isinstance(offset, int) or offset < 0:
            raise ArgumentError(f"Argument offset should be a non-negative integer, got {offset!r}")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ArgumentError(f"Argument limit should be a positive integer or None, got {limit!r}")
        b = s.metric_blocks
        stmt = sa.select(b.c.data).where(b.c.run_id == run_id, b.c.key == key).order_by(b.c.id)
        with self.read() as conn:
            blobs = conn.execute(stmt).scalars().all()
        h = decode_history(blobs)
        if offset or limit is not None:
            end = None if limit is None else offset + limit
            h = History(h.steps[offset:end], h.timestamps[offset:end], h.values[offset:end])
        return h

    def metric_keys(self, run_id: str) -> list[str]:
        lm = s.latest_metrics
        with self.read() as conn:
            return list(
                conn.execute(sa.select(lm.c.key).where(lm.c.run_id == run_id).order_by(lm.c.key)).scalars()
            )

    # -- reading runs ---------------------------------------------------------

    def _status_expr(self) -> sa.ColumnElement[str]:
        return status_expression(time.time(), self.heartbeat_timeout)

    _RUN_FIELDS = (
        "id",
        "experiment_id",
        "experiment",
        "name",
        "status",
        "start_time",
        "end_time",
        "heartbeat_at",
        "parent_id",
        "git_commit",
        "git_dirty",
        "host",
        "user",
        "command",
        "deleted_at",
    )

    def _run_select(self, status: sa.ColumnElement[str]) -> sa.Select[Any]:
        r, e = s.runs, s.experiments
        return sa.select(
            r.c.id,
            r.c.experiment_id,
            e.c.name.label("experiment"),
            r.c.name,
            status.label("status"),
            r.c.start_time,
            r.c.end_time,
            r.c.heartbeat_at,
            r.c.parent_id,
            r.c.git_commit,
            r.c.git_dirty,
            r.c.host,
            r.c.user,
            r.c.command,
            r.c.deleted_at,
        ).select_from(r.join(e, e.c.id == r.c.experiment_id))

    def _records(self, conn: Connection, rows: Sequence[Any], *, ids: Any = None) -> list[RunRecord]:
        """RunRecords for run rows of ``_run_select``; ``ids`` selects the same runs' ids."""
        # Rows are unpacked by position: attribute access on SQLAlchemy rows
        # (row.key, row._asdict()) cost more than the queries for 1,000 runs.
        run_ids = [row[0] for row in rows]
        params: dict[str, dict[str, str]] = {i: {} for i in run_ids}
        tags: dict[str, dict[str, str]] = {i: {} for i in run_ids}
        metrics: dict[str, dict[str, MetricSummary]] = {i: {} for i in run_ids}
        if ids is None:
            ids = run_ids
        if run_ids:
            for table, out in ((s.params, params), (s.tags, tags)):
                stmt = sa.select(table.c.run_id, table.c.key, table.c.value).where(table.c.run_id.in_(ids))
                for rid, k, v in conn.execute(stmt).all():
                    out[rid][k] = v
            lm = s.latest_metrics
            stmt = sa.select(
                lm.c.run_id, lm.c.key, lm.c.step, lm.c.timestamp, lm.c.value, lm.c.min_value, lm.c.max_value, lm.c.count
            ).where(lm.c.run_id.in_(ids))
            row: Any
            for row in conn.execute(stmt).all():
                rid, k, step, ts, v, lo, hi, n = row
                metrics[rid][k] = MetricSummary(
                    key=k,
                    step=step,
                    timestamp=ts,
                    value=_NAN if v is None else v,
                    min=_NAN if lo is None else lo,
                    max=_NAN if hi is None else hi,
                    count=n,
                )
        fields = self._RUN_FIELDS
        out_records = []
        for row in rows:
            d = dict(zip(fields, row))
            # a run killed before its end_time was written ends at its last heartbeat
            if d["status"] == "KILLED" and d["end_time"] is None:
                d["end_time"] = d["heartbeat_at"]
            rid = d["id"]
            out_records.append(RunRecord(**d, params=params[rid], tags=tags[rid], metrics=metrics[rid]))
        return out_records

    def get_run(self, run_id: str) -> RunRecord:
        stmt = self._run_select(self._status_expr()).where(s.runs.c.id == run_id)
        with self.read() as conn:
            row = conn.execute(stmt).first()
            if row is None:
                raise NotFound(f"Run {run_id!r} does not exist")
            return self._records(conn, [row])[0]

    def search_runs(
        self,
        *,
        experiments: Sequence[str] | str | None = None,
        filter: str | Node | None = None,
        order_by: Sequence[str] | str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        offset: int = 0,
        experiment_ids: Sequence[int] | None = None,
        deleted: bool | None = False,
    ) -> list[RunRecord]:
        """Runs matching ``filter`` (the filter language of :mod:`loopml.store.search`, or its parsed tree).

        ``experiments`` (names) or ``experiment_ids`` narrow the search; ``deleted``: False
        for the runs not deleted (the default), True for the deleted ones, None for both.
        """
        if not isinstance(limit, int) or not 0 < limit <= MAX_PAGE_SIZE:
            raise ArgumentError(
                f"Argument limit should be an integer from 1 to {MAX_PAGE_SIZE}, got {limit!r}; "
                "page through more with offset"
            )
        if not isinstance(offset, int) or offset < 0:
            raise ArgumentError(f"Argument offset should be a non-negative integer, got {offset!r}")
        status = self._status_expr()
        stmt = self._run_select(status)
        if isinstance(experiments, str):
            experiments = [experiments]
        stmt = self._narrow(stmt, experiments, experiment_ids, deleted)
        where = compile_filter(filter, status=status)
        if where is not None:
            stmt = stmt.where(where)
        stmt = stmt.order_by(*compile_order_by(order_by, status=status)).limit(limit).offset(offset)
        with self.read() as conn:
            rows = conn.execute(stmt).all()
            # For a long page the params/tags/metrics queries select their runs with the
            # same query as a subquery: binding 1,000 ids costs more than running it again.
            ids = sa.select(stmt.with_only_columns(s.runs.c.id).subquery().c.id) if len(rows) > 300 else None
            return self._records(conn, rows, ids=ids)

    @staticmethod
    def _narrow(stmt: Any, experiments: Sequence[str] | None, ids: Sequence[int] | None, deleted: bool | None) -> Any:
        if experiments is not None:
            stmt = stmt.where(s.experiments.c.name.in_(list(experiments)))
        if ids is not None:
            stmt = stmt.where(s.runs.c.experiment_id.in_(list(ids)))
        if deleted is not None:
            stmt = stmt.where(s.runs.c.deleted_at.is_not(None) if deleted else s.runs.c.deleted_at.is_(None))
        return stmt

    def count_runs(
        self, *, experiments: Sequence[str] | str | None = None, filter: str | Node | None = None, deleted: bool | None = False
    ) -> int:
        status = self._status_expr()
        stmt = sa.select(sa.func.count()).select_from(
            s.runs.join(s.experiments, s.experiments.c.id == s.runs.c.experiment_id)
        )
        if isinstance(experiments, str):
            experiments = [experiments]
        stmt = self._narrow(stmt, experiments, None, deleted)
        where = compile_filter(filter, status=status)
        if where is not None:
            stmt = stmt.where(where)
        with self.read() as conn:
            return int(conn.execute(stmt).scalar_one())

    def run_keys(self, *, experiments: Sequence[str] | str | None = None) -> dict[str, list[str]]:
        """The distinct param, metric and tag keys of the experiments' runs: ``{"params": [...], ...}``.

        At most ``MAX_PAGE_SIZE`` keys of each kind, sorted (the web UI offers them as columns).
        """
        if isinstance(experiments, str):
            experiments = [experiments]
        out: dict[str, list[str]] = {}
        with self.read() as conn:
            for kind, table in (("params", s.params), ("metrics", s.latest_metrics), ("tags", s.tags)):
                stmt = sa.select(table.c.key).distinct()
                if experiments is not None:
                    runs_of = (
                        sa.select(s.runs.c.id)
                        .join(s.experiments, s.experiments.c.id == s.runs.c.experiment_id)
                        .where(s.experiments.c.name.in_(list(experiments)))
                    )
                    stmt = stmt.where(table.c.run_id.in_(runs_of))
                stmt = stmt.order_by(table.c.key).limit(MAX_PAGE_SIZE)
                out[kind] = list(conn.execute(stmt).scalars())
        return out

    # -- datasets -------------------------------------------------------------

    def log_dataset(self, run_id: str, record: Mapping[str, Any], role: str = "train") -> None:
        """Store a dataset record (kept if its fingerprint is known) and link it to the run as ``role``."""
        role = d.check_role(role)
        row = d.check_record(record)
        with self.transaction() as conn:
            self._require_run(conn, run_id)
            d.insert_dataset(conn, row, self.upsert)
            d.link_run(conn, run_id, row["fingerprint"], role, self.upsert)

    def get_dataset(self, fingerprint: str) -> dict[str, Any]:
        """The dataset record with ``fingerprint`` (schema and profile as dicts)."""
        with self.read() as conn:
            return d.get_dataset(conn, d.check_fingerprint(fingerprint))

    def run_datasets(self, run_id: str) -> dict[str, str]:
        """``{role: fingerprint}`` of the datasets linked to the run."""
        with self.read() as conn:
            self._require_run(conn, run_id)
            return d.run_datasets(conn, run_id)

    def put_dataset(
        self,
        record: Mapping[str, Any],
        *,
        origin: Mapping[str, Any] | None = None,
        predictions: Sequence[tuple[str, int]] | None = None,
    ) -> None:
        """Store a dataset record without a run (kept if its fingerprint is known), how it was made
        (``origin``, kept if one is recorded) and the ``(request_id, row)`` predictions its rows came from."""
        row = d.check_record(record)
        origin_text = d.check_origin(origin)
        links = d.check_predictions(predictions)
        with self.transaction() as conn:
            d.insert_dataset(conn, row, self.upsert)
            d.set_origin(conn, row["fingerprint"], origin_text)
            d.link_predictions(conn, row["fingerprint"], links, self.upsert)

    def put_dataset_rows(self, fingerprint: str, local_path: str | os.PathLike[str]) -> dict[str, Any]:
        """Keep the rows file of a stored record as ``_datasets/<fingerprint>.npz``, once per content.

        The caller vouches that the file holds the rows of ``fingerprint`` (loopml.data writes
        it; a server checks an upload first). A file already recorded is not written again;
        returns ``{"stored_path", "stored_size", "stored_sha256", "created"}``.
        """
        rel = d.rows_relpath(fingerprint)  # checks the fingerprint: 64 hex digits, no path in it
        src = Path(local_path)
        if not src.is_file():
            raise NotFound(f"Cannot store the rows of {fingerprint[:12]}...: no file {str(src)!r}")
        record = self.get_dataset(fingerprint)  # NotFound before anything is written
        if record.get("stored_path") is not None:
            self.dataset_rows_path(fingerprint)  # the recorded file is still whole (IntegrityError if not)
            return {k: record[k] for k in ("stored_path", "stored_size", "stored_sha256")} | {"created": False}
        sha = sha256_file(src)
        # the file may exist unrecorded (a store sharing this artifact root, a write cut short before
        # its record): keep it when it is these bytes, else replace it, whole, by the checked ones
        size = src.stat().st_size
        if self.artifacts.stored_sha256(rel) != sha:
            size, sha = self.artifacts.put_file(rel, src)
        with self.transaction() as conn:
            created = d.set_rows(conn, fingerprint, rel, size, sha)
        if not created:  # another writer recorded the same content first
            record = self.get_dataset(fingerprint)
            return {k: record[k] for k in ("stored_path", "stored_size", "stored_sha256")} | {"created": False}
        return {"stored_path": rel, "stored_size": size, "stored_sha256": sha, "created": True}

    def dataset_rows_path(self, fingerprint: str) -> Path:
        """The local rows file of a stored dataset, checked against its recorded sha256.

        :class:`~loopml.errors.NotFound` when the record keeps no rows,
        :class:`~loopml.errors.IntegrityError` when the file is gone or altered.
        With an S3 artifact root the file is a checked copy in the local cache.
        """
        record = self.get_dataset(fingerprint)
        if record.get("stored_path") is None:
            raise NotFound(
                f"Dataset {fingerprint[:12]}... ({record['name']}) is stored as a record only, not its rows; "
                "store them with loopml.data.store_dataset(ds)"
            )
        rel = d.rows_relpath(fingerprint)
        if record["stored_path"] != rel:
            raise IntegrityError(f"Dataset {fingerprint[:12]}... records its rows at {record['stored_path']!r}, not {rel!r}")
        try:
            return self.artifacts.local_file(rel, sha256=record["stored_sha256"])
        except ObjectMissing:
            raise IntegrityError(
                f"The rows of dataset {fingerprint[:12]}... are missing from the artifact root ({rel})"
            ) from None
        except ObjectChanged:
            raise IntegrityError(f"The rows file of dataset {fingerprint[:12]}... ({rel}) changed after it was stored") from None

    def download_dataset_rows(self, fingerprint: str, dest: str | os.PathLike[str]) -> Path:
        """Copy a stored dataset's rows file (checked) into the folder ``dest``; returns the new file's path."""
        import shutil

        src = self.dataset_rows_path(fingerprint)
        folder = Path(dest)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / src.name
        with atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
        return target

    def list_datasets(self, *, prefix: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Dataset records without schema and profile, newest first (``prefix``: of the fingerprint)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_PAGE_SIZE:
            raise ArgumentError(f"Argument limit should be an integer from 1 to {MAX_PAGE_SIZE}, got {limit!r}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ArgumentError(f"Argument offset should be a non-negative integer, got {offset!r}")
        with self.read() as conn:
            return d.list_datasets(conn, prefix=prefix, limit=limit, offset=offset)

    def dataset_lineage(self, fingerprint: str, *, limit: int = 100) -> dict[str, Any]:
        """Which runs (by role) and model versions used the dataset, which predictions its rows came from, its origin."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= d.MAX_LINEAGE:
            raise ArgumentError(f"Argument limit should be an integer from 1 to {d.MAX_LINEAGE}, got {limit!r}")
        with self.read() as conn:
            return d.lineage(conn, d.check_fingerprint(fingerprint), limit=limit)

    def datasets_of_request(self, request_id: str) -> list[dict[str, Any]]:
        """The datasets whose rows came from the logged request: ``[{"fingerprint", "name", "origin", "rows"}]``."""
        if not isinstance(request_id, str) or not request_id:
            raise ArgumentError(f"Argument request_id should be a logged request's id, got {request_id!r}")
        with self.read() as conn:
            return d.datasets_of_request(conn, request_id, limit=MAX_PAGE_SIZE)

    # -- artifacts ------------------------------------------------------------

    def _record_artifacts(self, run_id: str, infos: Iterable[ArtifactInfo]) -> None:
        stmt = self.upsert(s.artifacts)
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "path"],
            set_={"size": stmt.excluded.size, "sha256": stmt.excluded.sha256, "created_at": stmt.excluded.created_at},
        )
        rows = [{"run_id": run_id, **i.to_dict()} for i in infos]
        if rows:
            with self.transaction() as conn:
                conn.execute(stmt, rows)

    def log_artifact(self, run_id: str, local_path: str | os.PathLike[str], name: str | None = None) -> list[ArtifactInfo]:
        """Copy a file or folder under the run's artifact folder and record size and sha256."""
        self.get_run(run_id)
        infos = self.artifacts.put(run_id, local_path, name)
        self._record_artifacts(run_id, infos)
        return infos

    def put_artifact_bytes(self, run_id: str, path: str, data: bytes) -> ArtifactInfo:
        self.get_run(run_id)
        info = self.artifacts.put_bytes(run_id, path, data)
        self._record_artifacts(run_id, [info])
        return info

    def list_artifacts(self, run_id: str, prefix: str | None = None) -> list[ArtifactInfo]:
        a = s.artifacts
        stmt = sa.select(a.c.path, a.c.size, a.c.sha256, a.c.created_at).where(a.c.run_id == run_id)
        if prefix:
            clean = safe_relpath(prefix)
            stmt = stmt.where(sa.or_(a.c.path == clean, a.c.path.startswith(clean + "/", autoescape=True)))
        with self.read() as conn:
            rows = conn.execute(stmt.order_by(a.c.path).limit(MAX_PAGE_SIZE)).all()
        return [ArtifactInfo(path=r.path, size=r.size, sha256=r.sha256, created_at=r.created_at) for r in rows]

    def artifact_path(self, run_id: str, path: str) -> Path:
        """The local file of an artifact, after the path checks.

        With an S3 artifact root it is a local copy, checked against the sha256
        recorded when the artifact was logged.
        """
        clean = self.artifacts.check(run_id, path)  # ArtifactPathError before any query
        a = s.artifacts
        with self.read() as conn:
            sha = conn.execute(sa.select(a.c.sha256).where(a.c.run_id == run_id, a.c.path == clean)).scalar()
        return self.artifacts.open_path(run_id, clean, sha256=sha)

    def download_artifact(self, run_id: str, path: str, dest: str | os.PathLike[str]) -> Path:
        """Copy one artifact file into the folder ``dest``; returns the new file's path."""
        import shutil

        src = self.artifact_path(run_id, path)
        folder = Path(dest)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / src.name
        with atomic_path(target) as tmp:  # a copy over an earlier download is whole or not at all
            shutil.copyfile(src, tmp)
        return target

    def delete_artifact(self, run_id: str, path: str) -> None:
        clean = safe_relpath(path)
        self.artifacts.delete(run_id, clean)
        a = s.artifacts
        with self.transaction() as conn:
            conn.execute(
                a.delete().where(
                    a.c.run_id == run_id,
                    sa.or_(a.c.path == clean, a.c.path.startswith(clean + "/", autoescape=True)),
                )
            )
