"""Dataset records and the runs that used them: the SQL behind ``TrackingStore.log_dataset`` and friends.

A dataset record is a plain dict (what :func:`loopml.data.log_dataset`
builds and what ``GET /api/v1/datasets/{fingerprint}`` answers)::

    {"fingerprint": "3f2a...", "name": "digits", "task": "classification", "n_rows": 1797,
     "schema": {...}, "profile": {...}, "source": "sklearn:load_digits", "created_at": 1732000000.0}

Records are keyed by content: logging a dataset that is already stored
keeps the first record (same content, same fingerprint) and only links the
run to it. ``schema`` and ``profile`` are stored as JSON text; NaN and
infinities are refused (:mod:`loopml.data.profile` writes them as null).

Since revision 0006 a record may also hold its rows, once per content: the
file ``_datasets/<fingerprint>.npz`` under the artifact root (``stored_path``,
``stored_size``, ``stored_sha256`` of the file's bytes), how the dataset was
made (``origin``, JSON), and which logged predictions its rows came from
(``dataset_predictions``). The file is written by
:meth:`loopml.store.TrackingStore.put_dataset_rows`, never rewritten once
recorded, and checked against ``stored_sha256`` whenever it is read.

The functions take an open connection; the caller owns the transaction.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import ArgumentError, ArgumentTypeError, NotFound
from . import schema as s
from .validation import KEY_LENGTH

__all__ = [
    "ROWS_DIR",
    "check_origin",
    "check_predictions",
    "check_record",
    "check_role",
    "datasets_of_request",
    "get_dataset",
    "insert_dataset",
    "lineage",
    "link_predictions",
    "link_run",
    "list_datasets",
    "rows_relpath",
    "run_datasets",
    "set_origin",
    "set_rows",
]

ROWS_DIR = "_datasets"  # under the artifact root; '_' keeps it apart from run folders (hex ids)
MAX_LINEAGE = 1_000  # the most runs, versions or request ids one lineage answer lists
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
_ROLE = re.compile(r"^[a-z][a-z0-9_-]{0,15}$")
TASKS = ("classification", "regression")


def check_role(role: Any) -> str:
    if not isinstance(role, str) or not _ROLE.match(role):
        raise ArgumentError(
            "Argument role should be 1 to 16 lowercase letters, digits, '_' or '-' starting with a letter, "
            f"such as 'train', 'val', 'test' or 'eval'; got {role!r}"
        )
    return role


def check_fingerprint(fingerprint: Any) -> str:
    if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
        raise ArgumentError(
            f"Argument fingerprint should be 64 lowercase hex digits (a sha256), got {fingerprint!r}"
        )
    return fingerprint


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(
            f"Argument record[{what!r}] should be JSON (numbers finite, NaN and inf as null): {exc}"
        ) from exc


def check_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The row to insert for ``record``; raises ValueError/TypeError naming the bad field."""
    if not isinstance(record, Mapping):
        raise ArgumentTypeError(f"Argument record should be a dict (see loopml.data.dataset_record), got {type(record).__name__}")
    missing = [k for k in ("fingerprint", "name", "task", "n_rows", "schema", "profile") if k not in record]
    if missing:
        raise ArgumentError(f"Argument record should have the keys {missing} (see loopml.data.dataset_record)")
    name = record["name"]
    if not isinstance(name, str) or not 0 < len(name) <= KEY_LENGTH:
        raise ArgumentError(f"Argument record['name'] should be a string of 1 to {KEY_LENGTH} characters, got {name!r}")
    if record["task"] not in TASKS:
        raise ArgumentError(f"Argument record['task'] should be one of {TASKS}, got {record['task']!r}")
    n_rows = record["n_rows"]
    if not isinstance(n_rows, int) or isinstance(n_rows, bool) or n_rows < 0:
        raise ArgumentError(f"Argument record['n_rows'] should be a non-negative integer, got {n_rows!r}")
    source = record.get("source")
    if source is not None and not isinstance(source, str):
        raise ArgumentTypeError(f"Argument record['source'] should be a string or None, got {type(source).__name__}")
    return {
        "fingerprint": check_fingerprint(record["fingerprint"]),
        "name": name,
        "task": record["task"],
        "n_rows": n_rows,
        "schema": _json(record["schema"], "schema"),
        "profile": _json(record["profile"], "profile"),
        "source": source,
        "created_at": time.time(),
    }


def insert_dataset(conn: Connection, row: Mapping[str, Any], upsert: Any) -> None:
    """Store the row of :func:`check_record` unless a record with its fingerprint exists."""
    conn.execute(upsert(s.datasets).values(**row).on_conflict_do_nothing(index_elements=["fingerprint"]))


def link_run(conn: Connection, run_id: str, fingerprint: str, role: str, upsert: Any) -> None:
    """Point the run's ``role`` at the dataset (a later call for the same role replaces it)."""
    stmt = upsert(s.run_datasets).values(run_id=run_id, role=role, fingerprint=fingerprint)
    conn.execute(
        stmt.on_conflict_do_update(index_elements=["run_id", "role"], set_={"fingerprint": stmt.excluded.fingerprint})
    )


def rows_relpath(fingerprint: str) -> str:
    """Where a dataset's rows live, relative to the artifact root: ``_datasets/<fingerprint>.npz``."""
    return f"{ROWS_DIR}/{check_fingerprint(fingerprint)}.npz"


def check_origin(origin: Any) -> str | None:
    """``origin`` (a JSON object or None) as the text to store."""
    if origin is None:
        return None
    if not isinstance(origin, Mapping):
        raise ArgumentTypeError(
            f"Argument origin should be a JSON object such as {{'kind': 'labels', 'model': 'digits', 'version': 3}}, "
            f"got {type(origin).__name__}"
        )
    try:
        return json.dumps(dict(origin), allow_nan=False, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"Argument origin should be JSON (strings, finite numbers, lists, objects): {exc}") from exc


def check_predictions(predictions: Any) -> list[dict[str, Any]]:
    """``[(request_id, row), ...]`` as rows of ``dataset_predictions`` (without the fingerprint)."""
    if predictions is None:
        return []
    if isinstance(predictions, (str, bytes, Mapping)):
        raise ArgumentTypeError(
            "Argument predictions should be a list of (request_id, row) pairs, e.g. [('3f2a...', 0)], "
            f"got {type(predictions).__name__}"
        )
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for item in predictions:
        try:
            request_id, row = item
        except (TypeError, ValueError):
            raise ArgumentError(f"Argument predictions should hold (request_id, row) pairs, got {item!r}") from None
        if not isinstance(request_id, str) or not _REQUEST_ID.match(request_id):
            raise ArgumentError(f"Argument predictions should name request ids (1 to 64 letters, digits, '._:-'), got {request_id!r}")
        if not isinstance(row, int) or isinstance(row, bool) or row < 0:
            raise ArgumentError(f"Argument predictions should give each request's row as an integer >= 0, got {row!r}")
        out[(request_id, row)] = {"request_id": request_id, "row": row}
    return list(out.values())


def _decode(row: Any) -> dict[str, Any]:
    out = {str(k): v for k, v in row._mapping.items()}  # plain str keys (orjson refuses quoted_name)
    for key in ("schema", "profile", "origin"):
        if key in out and out[key] is not None:
            out[key] = json.loads(out[key])
    return out


def get_dataset(conn: Connection, fingerprint: str) -> dict[str, Any]:
    d = s.datasets
    row = conn.execute(sa.select(d).where(d.c.fingerprint == fingerprint)).first()
    if row is None:
        raise NotFound(f"Dataset {fingerprint!r} does not exist; log it with loopml.data.log_dataset(run, ds)")
    return _decode(row)


def set_origin(conn: Connection, fingerprint: str, origin: str | None) -> None:
    """Record how the dataset was made, unless it already says (the first origin stays, like the record)."""
    if origin is not None:
        d = s.datasets
        conn.execute(d.update().where(d.c.fingerprint == fingerprint, d.c.origin.is_(None)).values(origin=origin))


def link_predictions(conn: Connection, fingerprint: str, rows: list[dict[str, Any]], upsert: Any) -> None:
    if rows:
        stmt = upsert(s.dataset_predictions).on_conflict_do_nothing(index_elements=["fingerprint", "request_id", "row"])
        conn.execute(stmt, [{"fingerprint": fingerprint, **r} for r in rows])


def set_rows(conn: Connection, fingerprint: str, path: str, size: int, sha256: str) -> bool:
    """Record the rows' file unless one is recorded (same content, same file); True when this call did."""
    d = s.datasets
    result = conn.execute(
        d.update().where(d.c.fingerprint == fingerprint, d.c.stored_path.is_(None))
        .values(stored_path=path, stored_size=size, stored_sha256=sha256)
    )
    return bool(result.rowcount)


_SUMMARY = ("fingerprint", "name", "task", "n_rows", "source", "created_at", "stored_path", "stored_size", "stored_sha256", "origin")


def list_datasets(conn: Connection, *, prefix: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
    """Records without schema and profile, newest first; ``prefix``: fingerprints that start with it."""
    d = s.datasets
    stmt = sa.select(*(d.c[k] for k in _SUMMARY))
    if prefix:
        if not re.fullmatch(r"[0-9a-f]{1,64}", prefix):
            raise ArgumentError(f"Argument prefix should be lowercase hex digits (a fingerprint's start), got {prefix!r}")
        stmt = stmt.where(d.c.fingerprint.startswith(prefix, autoescape=True))
    stmt = stmt.order_by(d.c.created_at.desc(), d.c.fingerprint).limit(limit).offset(offset)
    return [_decode(r) for r in conn.execute(stmt).all()]


def lineage(conn: Connection, fingerprint: str, *, limit: int) -> dict[str, Any]:
    """Both ways round one dataset: the runs and model versions that used it, the predictions it came from."""
    record = get_dataset(conn, fingerprint)
    rd, r, e = s.run_datasets, s.runs, s.experiments
    runs = conn.execute(
        sa.select(rd.c.run_id, rd.c.role, r.c.name, e.c.name.label("experiment"), r.c.start_time)
        .join(r, r.c.id == rd.c.run_id).join(e, e.c.id == r.c.experiment_id)
        .where(rd.c.fingerprint == fingerprint).order_by(r.c.start_time.desc(), rd.c.role).limit(limit)
    ).all()
    mv = s.model_versions
    # the lineage column is JSON text; a 64-hex fingerprint cannot collide with other content in it
    candidates = conn.execute(
        sa.select(mv.c.name, mv.c.version, mv.c.lineage)
        .where(mv.c.lineage.contains(fingerprint, autoescape=True)).order_by(mv.c.name, mv.c.version).limit(limit)
    ).all()
    versions = []
    for name, version, text in candidates:
        recorded = json.loads(text) or {}
        roles = sorted(role for role, fp in (recorded.get("datasets") or {}).items() if fp == fingerprint)
        versions.append({"name": name, "version": version, "roles": roles})
    dp = s.dataset_predictions
    count = conn.execute(sa.select(sa.func.count()).where(dp.c.fingerprint == fingerprint)).scalar_one()
    requests = conn.execute(
        sa.select(dp.c.request_id).where(dp.c.fingerprint == fingerprint).distinct().order_by(dp.c.request_id).limit(limit)
    ).scalars().all()
    return {
        "fingerprint": fingerprint,
        "origin": record.get("origin"),
        "stored": record.get("stored_path") is not None,
        "runs": [
            {"run_id": x.run_id, "role": x.role, "run_name": x.name, "experiment": x.experiment, "start_time": x.start_time}
            for x in runs
        ],
        "versions": versions,
        "predictions": {"rows": int(count), "request_ids": list(requests), "truncated": len(requests) >= limit},
    }


def datasets_of_request(conn: Connection, request_id: str, *, limit: int) -> list[dict[str, Any]]:
    """The datasets whose rows came from the logged request ``request_id``: fingerprint, name, origin, rows."""
    dp, d = s.dataset_predictions, s.datasets
    rows = conn.execute(
        sa.select(dp.c.fingerprint, dp.c.row, d.c.name, d.c.origin, d.c.created_at)
        .join(d, d.c.fingerprint == dp.c.fingerprint).where(dp.c.request_id == request_id)
        .order_by(d.c.created_at, dp.c.fingerprint, dp.c.row).limit(limit)
    ).all()
    out: dict[str, dict[str, Any]] = {}
    for fp, row, name, origin, created in rows:
        entry = out.setdefault(fp, {"fingerprint": fp, "name": name, "origin": json.loads(origin) if origin else None,
                                    "created_at": created, "rows": []})
        entry["rows"].append(row)
    return list(out.values())


def run_datasets(conn: Connection, run_id: str) -> dict[str, str]:
    rd = s.run_datasets
    rows = conn.execute(sa.select(rd.c.role, rd.c.fingerprint).where(rd.c.run_id == run_id).order_by(rd.c.role))
    return {role: fp for role, fp in rows.all()}
