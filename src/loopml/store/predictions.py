"""The model server's request log and feedback labels: the SQL behind ``loopml serve``'s writes.

A prediction record is what one answered request leaves (one row per request,
however many input rows it held)::

    {"request_id": "9f2c...-1a", "model": "digits", "version": 3, "created_at": 1764000000.0,
     "status": "ok", "rows": 1, "latency_ms": 0.41, "ood_score": None,
     "inputs": b"\\x93NUMPY..." or None, "outputs": '{"prediction": "3", ...}'}

``inputs`` is the request's input batch as ``.npy`` bytes (read back with
:func:`inputs_array`, never unpickled), ``outputs`` the JSON the server sent.
:meth:`PredictionLog.insert_many` writes a batch in one transaction (the
server's background writer calls it). Example::

    log = PredictionLog(TrackingStore("sqlite:///./.loopml/loopml.db", artifact_root="./.loopml/artifacts"))
    log.insert_many(records)
    log.get("9f2c...-1a")["status"]
    log.add_feedback("9f2c...-1a", "3")
"""

from __future__ import annotations

import functools
import io
import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import orjson
import sqlalchemy as sa

from ..errors import ArgumentError, NotFound
from . import schema as s
from .labels import LabelStore
from .window import in_window

if TYPE_CHECKING:
    from .tracking import TrackingStore

__all__ = ["ANSWER_FIELDS", "COLUMNS", "PredictionLog", "answered_rows", "inputs_array", "stack_inputs"]

COLUMNS = ("request_id", "model", "version", "created_at", "status", "rows", "latency_ms", "ood_score", "inputs", "outputs")
_IDENTITY = tuple(range(len(COLUMNS)))
_UNSEEN: Any = object()


def inputs_array(data: bytes) -> np.ndarray:
    """The input batch stored with a prediction (``.npy`` bytes, read without pickle).

    >>> buf = io.BytesIO(); np.save(buf, np.arange(6, dtype=np.float32).reshape(2, 3))
    >>> inputs_array(buf.getvalue()).tolist()
    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """
    # np.load parses each file's header with ast.literal_eval: 60% of a monitor cycle over 40,000 logged
    # requests was that parse. The server writes the same few headers again and again (one per batch
    # shape), so each is parsed once here; anything unusual goes to np.load, which checks it.
    if data[:8] == b"\x93NUMPY\x01\x00" and len(data) >= 10:
        start = 10 + int.from_bytes(data[8:10], "little")
        layout = _npy_layout(bytes(data[10:start]))
        if layout is not None:
            dtype, shape, order = layout
            count = math.prod(shape)
            if len(data) - start == count * dtype.itemsize:
                return np.frombuffer(data, dtype=dtype, count=count, offset=start).reshape(shape, order=order).copy()
    return np.asarray(np.load(io.BytesIO(data), allow_pickle=False))


@functools.lru_cache(maxsize=256)
def _npy_layout(header: bytes) -> tuple[np.dtype[Any], tuple[int, ...], Literal["C", "F"]] | None:
    """``(dtype, shape, order)`` of a version 1.0 ``.npy`` header of a plain numeric array; None otherwise."""
    import ast

    try:
        doc = ast.literal_eval(header.decode("latin-1"))
        descr, shape, fortran = doc["descr"], doc["shape"], doc["fortran_order"]
        dtype = np.dtype(descr) if isinstance(descr, str) else None
    except (ValueError, TypeError, SyntaxError, KeyError, MemoryError, RecursionError):
        return None
    if (dtype is None or dtype.hasobject or not isinstance(shape, tuple) or not isinstance(fortran, bool)
            or not all(isinstance(d, int) and d >= 0 for d in shape)):
        return None
    return dtype, shape, "F" if fortran else "C"


def _stack_layout(header: bytes) -> tuple[np.dtype[Any], tuple[int, ...]] | None:
    """(dtype, shape) of a ``.npy`` header (magic, version, header dict) read by NumPy's own parser, or None
    where :func:`stack_inputs` leaves the batch to ``np.load``: Fortran order, objects, a non-native byte order,
    a 0-d array, a version NumPy reads only through private functions, or a header NumPy refuses."""
    fp = io.BytesIO(header)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            return None
    except ValueError:
        return None
    if (fortran and len(shape) > 1) or dtype.hasobject or not dtype.isnative or not shape:
        return None
    return dtype, tuple(shape)


def _header_size(blob: bytes) -> int:
    """Bytes of a ``.npy`` blob's magic, version and header (version 1.0: a 2-byte length; 2.0 and 3.0: 4 bytes)."""
    return 10 + int.from_bytes(blob[8:10], "little") if blob[6] == 1 else 12 + int.from_bytes(blob[8:12], "little")


def _one_header(blobs: Sequence[bytes]) -> np.ndarray | None:
    """:func:`stack_inputs` where every batch is the same bytes long with the same header (one-row requests
    of one input shape, the common case): one join, one comparison of the headers, one copy of the payloads,
    with no Python work per batch. None where that does not hold."""
    if not blobs or not all(type(b) is bytes for b in blobs):
        return None
    first = blobs[0]
    length = len(first)
    if length < 12 or not first.startswith(b"\x93NUMPY") or any(len(b) != length for b in blobs):
        return None
    size = _header_size(first)
    layout = _stack_layout(first[:size])
    if layout is None or length - size != layout[0].itemsize * math.prod(layout[1]):
        return None
    dtype, shape = layout
    raw = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), length)
    if not (raw[:, :size] == raw[0, :size]).all():
        return None
    payload = raw[:, size:].copy()  # writable, as np.load's arrays are
    return payload.view(dtype).reshape((len(blobs) * shape[0], *shape[1:]))


def stack_inputs(blobs: Sequence[bytes]) -> np.ndarray:
    """Logged input batches (``.npy`` bytes) stacked into one array: ``np.concatenate([inputs_array(b) for b in blobs])``.

    Hand-written for speed: ``np.load`` parses each batch's header with ``ast.literal_eval``
    (about 80 us a batch, 8 s for 100,000 one-row requests on a loaded core), and even with
    that parse cached (:func:`inputs_array`) one array per batch and a concatenation cost
    Python work per request, while the batches of one served version share a handful of
    headers (the server builds one per input shape, ``Backend.npy_bytes``). Here each distinct
    header is parsed once, by NumPy's own header reader, and the payloads are joined and
    viewed as one array (batches all of one length and header, :func:`_one_header`, with no
    Python work per batch). Any batch it does not handle the same way (see
    :func:`_stack_layout`), a short payload, or batches whose dtype or row shape differ: the
    whole list goes through :func:`inputs_array` and ``np.concatenate`` as before, which also
    raises their errors. tests/store/test_predictions.py holds the two paths equal.
    """
    same = _one_header(blobs)
    if same is not None:
        return same
    layouts: dict[bytes, tuple[np.dtype[Any], tuple[int, ...]] | None] = {}
    payloads: list[bytes] = []
    first: tuple[np.dtype[Any], tuple[int, ...]] | None = None
    rows = 0
    for blob in blobs:  # bytes operations only: comparing memoryviews costs microseconds each
        if not isinstance(blob, bytes) or not blob.startswith(b"\x93NUMPY") or len(blob) < 12:
            break
        size = _header_size(blob)
        header = blob[:size]
        layout = layouts.get(header, _UNSEEN)
        if layout is _UNSEEN:
            layout = layouts[header] = _stack_layout(header)
        if layout is None:
            break
        dtype, shape = layout
        if first is None:
            first = layout
        elif dtype != first[0] or shape[1:] != first[1][1:]:
            break
        if len(blob) - size != dtype.itemsize * math.prod(shape):
            break
        payloads.append(blob[size:])  # a copy, but memoryviews are tracked by the garbage collector: 5x slower
        rows += shape[0]
    else:
        if first is None:  # no batch: np.concatenate's own error below
            return np.concatenate([])
        dtype, shape = first
        joined = bytearray().join(payloads)  # one copy, writable (np.load's arrays are)
        return np.frombuffer(joined, dtype=dtype).reshape((rows, *shape[1:]))
    return np.concatenate([inputs_array(b) for b in blobs])


ANSWER_FIELDS = ("status", "prediction", "probabilities", "ood_score", "reason")
"""The fields of each row of a logged answer (the model server's predict JSON) that say what was answered."""


def answered_rows(outputs: str | bytes | None, rows: Sequence[int], total: int) -> list[dict[str, Any]] | None:
    """The :data:`ANSWER_FIELDS` of ``rows`` of a logged answer (its JSON, a batch of ``total``); None when unreadable.

    >>> answered_rows('{"request_id": "a", "status": "ok", "prediction": "3"}', [0], 1)
    [{'status': 'ok', 'prediction': '3'}]
    """
    if not outputs:
        return None
    try:
        doc = orjson.loads(outputs)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    results = doc.get("results")
    if not isinstance(results, list):
        results = [doc] if total == 1 else None
    if results is None or len(results) != total or not all(isinstance(r, dict) for r in results):
        return None
    return [{k: results[i][k] for k in ANSWER_FIELDS if k in results[i]} for i in rows]


class PredictionLog:
    """Predictions and feedback in a :class:`~loopml.store.TrackingStore`'s database."""

    def __init__(self, store: "TrackingStore") -> None:
        self.store = store

    def insert_many(self, records: Sequence[Mapping[str, Any]], *, chunk: int = 0) -> None:
        """Insert prediction records (dicts with :data:`COLUMNS`) in one transaction.

        A request id already stored (a retried batch after a lost commit
        acknowledgement) is skipped rather than failing the whole batch
        (``INSERT ... ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL).
        """
        self.insert_rows([tuple(r[c] for c in COLUMNS) for r in records], chunk=chunk)

    def insert_rows(self, rows: Sequence[Sequence[Any]], *, chunk: int = 0) -> None:
        """:meth:`insert_many` for rows already in :data:`COLUMNS` order (what the model server's writer sends).

        ``chunk`` > 0 executes the rows ``chunk`` at a time and releases the GIL
        between chunks: the server's writer thread shares it with the event loop,
        which must never wait long for it.
        """
        if not rows:
            return
        sql, order = self._insert
        step = chunk if chunk > 0 else len(rows)
        with self.store.transaction() as conn:
            for i in range(0, len(rows), step):
                if i:
                    time.sleep(0)  # let a thread waiting for the GIL (the server's event loop) run now
                part = rows[i : i + step]
                if order is None:  # pyformat (psycopg): named parameters
                    conn.exec_driver_sql(sql, [dict(zip(COLUMNS, r)) for r in part])
                else:
                    conn.exec_driver_sql(sql, part if order == _IDENTITY else [tuple(r[j] for j in order) for r in part])

    @functools.cached_property
    def _insert(self) -> tuple[str, tuple[int, ...] | None]:
        # The statement is built and compiled by SQLAlchemy once and run through the driver's executemany:
        # SQLAlchemy's own executemany spends ~15 us a row in Python (bind processing, result set-up), 3x the
        # driver's, and that Python time is GIL time taken from the server's event loop.
        stmt = self.store.upsert(s.predictions).on_conflict_do_nothing(index_elements=["request_id"])
        compiled = stmt.compile(dialect=self.store.engine.dialect)
        if compiled.positional and compiled.positiontup:
            return str(compiled), tuple(COLUMNS.index(n) for n in compiled.positiontup)
        return str(compiled), None

    def get(self, request_id: str) -> dict[str, Any]:
        """One prediction record; :class:`~loopml.errors.NotFound` when no request has that id."""
        with self.store.read() as conn:
            row = conn.execute(sa.select(s.predictions).where(s.predictions.c.request_id == request_id)).mappings().first()
        if row is None:
            raise NotFound(f"No prediction has request id {request_id!r}")
        return dict(row)

    def exists(self, request_id: str) -> bool:
        with self.store.read() as conn:
            found = conn.execute(
                sa.select(s.predictions.c.request_id).where(s.predictions.c.request_id == request_id)
            ).first()
        return found is not None

    def count(self, model: str | None = None, version: int | None = None) -> int:
        """How many predictions are logged (for one model, or one version)."""
        q = sa.select(sa.func.count()).select_from(s.predictions)
        if model is not None:
            q = q.where(s.predictions.c.model == model)
        if version is not None:
            q = q.where(s.predictions.c.version == int(version))
        with self.store.read() as conn:
            return int(conn.execute(q).scalar_one())

    def request_ids(self, model: str | None = None) -> set[str]:
        q = sa.select(s.predictions.c.request_id)
        if model is not None:
            q = q.where(s.predictions.c.model == model)
        with self.store.read() as conn:
            return set(conn.execute(q).scalars())

    def add_feedback(self, request_id: str, label: Any, *, row: int | None = None, annotator: str | None = None,
                     kind: str = "label", seconds: float | None = None, source: str = "api",
                     at: float | None = None) -> dict[str, Any]:
        """Store the true ``label`` of a logged prediction (``row`` of its batch; None: the whole request, a list for a batch).

        ``annotator``: who labelled it (their newest answer per row counts; a later one
        supersedes theirs, the history is kept); ``kind``: ``"label"``, ``"skip"`` or
        ``"none"`` (none of the classes); ``seconds``: the time it took; ``source``: api,
        http, file or page. An unknown id raises NotFound; a row outside the batch or a class the
        version does not know, ArgumentError (see :class:`~loopml.store.labels.LabelStore`).
        """
        doc = {"request_id": request_id, "label": label, "row": row, "annotator": annotator, "kind": kind,
               "seconds": seconds, "source": source, "at": at}
        return LabelStore(self.store).add([doc])[0]

    def labelled(
        self, model: str, version: int | None = None, *, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """The predictions of ``model`` (one ``version``, or all) that have a label, oldest first, in one query.

        Each is ``{"request_id", "version", "created_at", "status", "rows", "outputs", "label", "labelled_at"}``:
        ``outputs`` the JSON text the server sent, ``label`` the newest label given for the request (decoded JSON),
        whatever its row, annotator or kind: the request-level view. Accuracy reads the row-level consensus
        (:meth:`~loopml.store.labels.LabelStore.labelled_rows`, :func:`~loopml.store.labels.consensus`).
        ``since`` and ``until`` (seconds since the epoch) bound the prediction's ``created_at``: ``since <= t < until``.
        """
        p, f = s.predictions, s.feedback
        newest = sa.select(f.c.request_id, sa.func.max(f.c.id).label("id")).group_by(f.c.request_id).subquery()
        q = (
            sa.select(p.c.request_id, p.c.version, p.c.created_at, p.c.status, p.c.rows, p.c.outputs,
                      f.c.label, f.c.created_at.label("labelled_at"))
            .join(newest, newest.c.request_id == p.c.request_id)
            .join(f, f.c.id == newest.c.id)
            .order_by(p.c.created_at, p.c.request_id)
        )
        with self.store.read() as conn:
            rows = conn.execute(in_window(q, model, version, since, until)).mappings().all()
        return [{**r, "label": json.loads(r["label"])} for r in rows]

    def answers(
        self, model: str, version: int | None = None, *, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Every prediction of ``model`` (one ``version``, or all) in ``since <= created_at < until``, oldest first,
        labelled or not: ``{"request_id", "version", "created_at", "status", "rows", "outputs"}`` (inputs left out)."""
        p = s.predictions
        q = (
            sa.select(p.c.request_id, p.c.version, p.c.created_at, p.c.status, p.c.rows, p.c.outputs)
            .order_by(p.c.created_at, p.c.request_id)
        )
        with self.store.read() as conn:
            return [dict(r) for r in conn.execute(in_window(q, model, version, since, until)).mappings()]

    def logged_inputs(self, model: str, version: int | None = None, *, since: float | None = None,
                      until: float | None = None, last: int | None = None) -> tuple[list[bytes], int]:
        """The ``.npy`` input batches the log kept (oldest first), and how many requests kept none.

        ``last``: only the newest ``last`` requests (those with and without inputs).
        """
        p = s.predictions
        q = in_window(sa.select(p.c.inputs), model, version, since, until).order_by(p.c.created_at.desc())
        if last is not None:
            q = q.limit(int(last))
        with self.store.read() as conn:
            rows = list(conn.execute(q).scalars())
        kept = [bytes(b) for b in reversed(rows) if b is not None]
        return kept, len(rows) - len(kept)

    def window_counts(self, model: str, version: int | None = None, *, since: float | None = None,
                      until: float | None = None) -> dict[str, int]:
        """Exact sums over a window by one SQL aggregate (no blob or JSON is read, however large the window).

        ``requests``; ``rows`` (input rows answered); ``input_requests`` and ``input_rows`` (those whose
        inputs were kept); ``abstaining`` (requests with at least one abstained row); ``abstained_single``
        (abstaining requests of one row: one abstained row each; a batch's abstained rows are in its outputs).
        """
        p = s.predictions
        kept = p.c.inputs.is_not(None)
        abstain = p.c.status == "abstain"

        def total(value: Any, when: Any) -> Any:
            return sa.func.coalesce(sa.func.sum(sa.case((when, value), else_=0)), 0)

        q = in_window(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(p.c.rows), 0), total(1, kept),
                                 total(p.c.rows, kept), total(1, abstain), total(1, abstain & (p.c.rows == 1))),
                       model, version, since, until)
        with self.store.read() as conn:
            values = conn.execute(q).one()
        keys = ("requests", "rows", "input_requests", "input_rows", "abstaining", "abstained_single")
        return {k: int(v) for k, v in zip(keys, values)}

    def window_ids(self, model: str, version: int | None = None, *, since: float | None = None,
                   until: float | None = None, abstained_batches: bool = False, with_inputs: bool = False) -> list[str]:
        """The request ids of a window, oldest first (ties by id): what a sample is drawn from, no blob read.

        ``abstained_batches``: only the requests of more than one row with an abstained row;
        ``with_inputs``: only the requests whose inputs were kept.
        """
        p = s.predictions
        q = in_window(sa.select(p.c.request_id), model, version, since, until).order_by(p.c.created_at, p.c.request_id)
        if abstained_batches:
            q = q.where(p.c.status == "abstain", p.c.rows > 1)
        if with_inputs:
            q = q.where(p.c.inputs.is_not(None))
        with self.store.read() as conn:
            return list(conn.execute(q).scalars())

    def records(self, request_ids: Sequence[str], *, inputs: bool = True, chunk: int = 500) -> list[dict[str, Any]]:
        """The records of these request ids (unknown ids left out), oldest first, ``chunk`` ids per query.

        Each chunk is its own short read (no snapshot held across the whole list: on SQLite in WAL mode a
        long reader stops checkpoints, and the server's writer pays for it). ``inputs=False`` leaves the
        ``.npy`` bytes out (``None``).
        """
        p = s.predictions
        columns = [p.c.request_id, p.c.version, p.c.created_at, p.c.status, p.c.rows, p.c.outputs]
        if inputs:
            columns.append(p.c.inputs)
        out: list[dict[str, Any]] = []
        ids = list(request_ids)
        for i in range(0, len(ids), chunk):
            with self.store.read() as conn:
                part = conn.execute(sa.select(*columns).where(p.c.request_id.in_(ids[i : i + chunk]))).mappings().all()
            out.extend({**r, "inputs": (bytes(r["inputs"]) if r["inputs"] is not None else None) if inputs else None}
                       for r in part)
        out.sort(key=lambda r: (r["created_at"], r["request_id"]))
        return out

    def span(self, model: str, version: int | None = None, *, last: int, until: float | None = None) -> tuple[float, float, int] | None:
        """``(oldest, newest, count)`` of the ``created_at`` of the newest ``last`` requests (before ``until``); None when none.

        What a window of the newest N requests spans (``loopml monitor watch --last N``).
        """
        p = s.predictions
        newest = in_window(sa.select(p.c.created_at), model, version, None, until).order_by(p.c.created_at.desc())
        sub = newest.limit(int(last)).subquery()
        q = sa.select(sa.func.min(sub.c.created_at), sa.func.max(sub.c.created_at), sa.func.count())
        with self.store.read() as conn:
            oldest, latest, count = conn.execute(q).one()
        return None if not count else (float(oldest), float(latest), int(count))

    def newest(self, model: str, version: int | None = None, *, before: tuple[float, str] | None = None,
               limit: int = 50, versions: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """One page of ``model``'s logged requests (one ``version``, or all), newest first (ties: the larger id first).

        ``before``: the ``(created_at, request_id)`` of the last request of the previous page (keyset paging:
        each page costs the same however deep). Each record has ``request_id``, ``version``, ``created_at``,
        ``status``, ``rows``, ``latency_ms``, ``ood_score``, ``outputs`` and ``has_inputs`` (the blob itself is
        not read). Every query walks the ``(model, version, created_at)`` index backwards and stops after
        ``limit`` rows: without ``version``, one such walk per version (``versions``, else the versions the log
        holds, found by one index seek each) merged here, rather than sorting every request of the model.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ArgumentError(f"Argument limit should be an int >= 1, got {limit!r}")
        p = s.predictions
        cols = [p.c.request_id, p.c.version, p.c.created_at, p.c.status, p.c.rows, p.c.latency_ms, p.c.ood_score,
                p.c.outputs, p.c.inputs.is_not(None).label("has_inputs")]
        out: list[dict[str, Any]] = []
        with self.store.read() as conn:
            wanted = [int(version)] if version is not None else (
                [int(v) for v in versions] if versions is not None else self._versions(conn, model))
            for v in wanted:
                q = sa.select(*cols).where(p.c.model == model, p.c.version == v)
                if before is not None:
                    t, rid = float(before[0]), str(before[1])
                    # created_at <= t is the index's range; the tie on t is broken by the id
                    q = q.where(p.c.created_at <= t, sa.or_(p.c.created_at < t, p.c.request_id < rid))
                q = q.order_by(p.c.created_at.desc(), p.c.request_id.desc()).limit(limit)
                out.extend(dict(r) for r in conn.execute(q).mappings())
        out.sort(key=lambda r: (r["created_at"], r["request_id"]), reverse=True)
        return [{**r, "has_inputs": bool(r["has_inputs"])} for r in out[:limit]]

    @staticmethod
    def _versions(conn: Any, model: str) -> list[int]:
        """The versions ``model``'s requests were answered by: the next larger one, one index seek at a time
        (a loose index scan; ``SELECT DISTINCT`` would read every request of the model)."""
        p = s.predictions
        found: list[int] = []
        last: int | None = None
        while True:
            q = sa.select(sa.func.min(p.c.version)).where(p.c.model == model)
            if last is not None:
                q = q.where(p.c.version > last)
            nxt = conn.execute(q).scalar()
            if nxt is None:
                return found
            last = int(nxt)
            found.append(last)

    def add_feedback_many(self, labels: Sequence[tuple[str, Any]], *, at: float | None = None) -> int:
        """:meth:`add_feedback` for many ``(request_id, label)`` pairs in one transaction (a backfill of labels).

        Every id is checked first; one unknown id stores nothing (``NotFound`` names it). Returns the count stored.
        """
        return len(LabelStore(self.store).add([{"request_id": rid, "label": label, "at": at} for rid, label in labels]))

    def feedback(self, request_id: str) -> list[dict[str, Any]]:
        """Every label given for a request, oldest first (undone and superseded ones too: the history):
        ``{"request_id", "label", "created_at", "row", "annotator", "kind", "seconds", "source"}``."""
        rows = LabelStore(self.store).feedback_rows([request_id]).get(request_id, [])
        return [{"request_id": request_id, "label": json.loads(r["label"]), "created_at": r["created_at"], "row": r["row"],
                 "annotator": r["annotator"], "kind": r["kind"], "seconds": r["seconds"], "source": r["source"]} for r in rows]
