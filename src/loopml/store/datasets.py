"""Dataset records and the runs that used them: the SQL behind ``TrackingStore.log_dataset`` and friends.

A dataset record is a plain dict (what :func:`loopml.data.log_dataset`
builds and what ``GET /api/v1/datasets/{fingerprint}`` answers)::

    {"fingerprint": "3f2a...", "name": "digits", "task": "classification", "n_rows": 1797,
     "schema": {...}, "profile": {...}, "source": "sklearn:load_digits", "created_at": 1732000000.0}

Records are keyed by content: logging a dataset that is already stored
keeps the first record (same content, same fingerprint) and only links the
run to it. ``schema`` and ``profile`` are stored as JSON text; NaN and
infinities are refused (:mod:`loopml.data.profile` writes them as null).

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

__all__ = ["check_record", "check_role", "get_dataset", "insert_dataset", "link_run", "run_datasets"]

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


def get_dataset(conn: Connection, fingerprint: str) -> dict[str, Any]:
    d = s.datasets
    row = conn.execute(sa.select(d).where(d.c.fingerprint == fingerprint)).first()
    if row is None:
        raise NotFound(f"Dataset {fingerprint!r} does not exist; log it with loopml.data.log_dataset(run, ds)")
    out = {str(k): v for k, v in row._mapping.items()}  # plain str keys (orjson refuses quoted_name)
    out["schema"] = json.loads(out["schema"])
    out["profile"] = json.loads(out["profile"])
    return out


def run_datasets(conn: Connection, run_id: str) -> dict[str, str]:
    rd = s.run_datasets
    rows = conn.execute(sa.select(rd.c.role, rd.c.fingerprint).where(rd.c.run_id == run_id).order_by(rd.c.role))
    return {role: fp for role, fp in rows.all()}
