"""Labels by row and annotator, and the labeling queue: the SQL behind :mod:`loopml.loop.queue` and :mod:`loopml.loop.labels`.

A label is a ``feedback`` row: the request it answers, the ``row`` of the request's
batch (``None``: the whole request; a batch's label is then a list, one per row),
the ``annotator`` and the ``kind`` of answer:

- ``label``: a class (checked against the version's class names when it has them);
- ``skip``: the annotator passed on it;
- ``none``: "none of these classes" (an answer, not a class: left out of datasets);
- ``undo``: the annotator took their answer back (what the labeling page's Backspace
  and ``POST /api/v1/labels/undo`` write).

Rows are only ever added (history is kept): for each (request, row, annotator) the
newest row counts, so a later label by the same annotator supersedes theirs and an
``undo`` withdraws it. Labels without an annotator (``POST /v1/feedback`` as it was)
count as one anonymous annotator. Where a row has row-level labels, a whole-request
label does not count for it.

An item's **consensus** (:func:`consensus`) over the annotators' current answers:
``labelled`` when every answer that is not a skip agrees (the label, or ``"none"``),
``disputed`` when they disagree, ``skipped`` when everyone skipped, ``open`` when no
answer stands. The queue item of a labelled row takes that status in the same
transaction as the label (the queue rows are locked first, so two annotators
labelling one item at once both count). ``LabelStore(store)`` holds the SQL.

>>> consensus({"ann": ("label", "3"), "bob": ("label", 3)})    # compared as text: 3 and "3" agree
('labelled', '3')
>>> consensus({"ann": ("label", "3"), "bob": ("label", "5")})
('disputed', None)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import ArgumentError, ArgumentTypeError, NotFound
from . import schema as s
from .validation import KEY_LENGTH
from .window import in_window

if TYPE_CHECKING:
    from .tracking import TrackingStore

__all__ = [
    "KINDS", "MAX_LABEL_BYTES", "REASONS", "SOURCES", "STATUSES", "LabelStore", "consensus", "item_votes",
]

KINDS = ("label", "skip", "none")
REASONS = ("abstained", "uncertain", "disagreement", "audit")
STATUSES = ("open", "labelled", "disputed", "skipped")
SOURCES = ("api", "http", "file", "page")
MAX_LABEL_BYTES = 4096
_CHUNK = 500  # ids per IN list

Vote = tuple[str, Any]  # (kind, label): kind label | skip | none


def consensus(votes: Mapping[Any, Vote]) -> tuple[str, Any]:
    """``(status, label)`` of one item from each annotator's current ``(kind, label)``.

    ``labelled`` with the label (as text) or ``"none"`` when every answer that is not a
    skip agrees; ``disputed`` (label None) when they differ; ``skipped`` when every
    answer is a skip; ``open`` when there is none.
    """
    answers: dict[str | None, Any] = {}  # text -> the value first given (3 stays 3)
    for kind, label in votes.values():
        if kind != "skip":
            answers.setdefault(None if kind == "none" else str(label), "none" if kind == "none" else label)
    if not answers:
        return ("skipped" if votes else "open"), None
    if len(answers) > 1:
        return "disputed", None
    return "labelled", next(iter(answers.values()))


def item_votes(feedback: Iterable[Mapping[str, Any]], rows: int) -> dict[int, dict[Any, Vote]]:
    """Each row's current answers by annotator, from a request's ``feedback`` rows (oldest first) of a ``rows``-row batch.

    Row-level labels count where a row has any; elsewhere a whole-request label does
    (a list for a batch, one value for a single row). A whole-request label that does
    not fit the batch raises :class:`~loopml.errors.ArgumentError`.
    """
    by_row: dict[int, dict[Any, Vote | None]] = {}
    whole: dict[Any, Vote | None] = {}
    request_id = None
    for fb in feedback:
        request_id = fb["request_id"]
        who = fb["annotator"] or ""
        kind = fb["kind"] or "label"
        vote: Vote | None = None if kind == "undo" else (kind, json.loads(fb["label"]))
        if fb["row"] is None:
            whole.pop(who, None)
            whole[who] = vote
        else:
            by_row.setdefault(int(fb["row"]), {})[who] = vote
    out: dict[int, dict[Any, Vote]] = {}
    for r, votes in by_row.items():
        standing = {w: v for w, v in votes.items() if v is not None}
        if r < rows and standing:
            out[r] = standing
    row_level = set(out)
    for who, vote in whole.items():
        if vote is None:
            continue
        kind, label = vote
        if kind == "label":
            if rows > 1 or (isinstance(label, list) and len(label) == 1):
                if not isinstance(label, list) or len(label) != rows:
                    raise ArgumentError(f"The label of request {request_id!r} should be a list of {rows} labels "
                                        f"(one per row of the batch); got {label!r}")
                per_row = [(kind, v) for v in label]
            else:
                per_row = [(kind, label)]
        else:
            per_row = [(kind, None)] * rows
        for r, v in enumerate(per_row):
            if r not in row_level:
                out.setdefault(r, {})[who] = v
    return out


def _label_text(label: Any, what: str) -> str:
    try:
        text = json.dumps(label, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(f"Argument {what} should be a JSON value (a class name, number or list); got {label!r}: {exc}") from None
    if len(text.encode()) > MAX_LABEL_BYTES:
        raise ArgumentError(f"Argument {what} should be at most {MAX_LABEL_BYTES} bytes of JSON; got {len(text.encode())}")
    return text


def _check_label(doc: Mapping[str, Any], where: str) -> dict[str, Any]:
    """One label document checked and normalised (what the user sent; nothing read from the store yet)."""
    unknown = set(doc) - {"request_id", "label", "row", "annotator", "kind", "seconds", "source", "at"}
    if unknown:
        raise ArgumentError(f"{where} has unknown fields {sorted(unknown)}; expected request_id, label, row, annotator, kind, seconds")
    request_id = doc.get("request_id")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= 64:
        raise ArgumentError(f"Argument request_id should be the id a prediction answered with (a string); got {request_id!r}{where}")
    row = doc.get("row")
    if row is not None and (type(row) is not int or row < 0):
        raise ArgumentError(f"Argument row should be the row of the request's batch (0, 1, ...) or None for the whole request; "
                            f"got {row!r}{where}")
    kind = doc.get("kind", "label") or "label"
    if kind not in KINDS:
        raise ArgumentError(f"Argument kind should be one of {', '.join(KINDS)} ('none': none of these classes); got {kind!r}{where}")
    label = doc.get("label")
    if kind == "label" and label is None:
        raise ArgumentError(f"Argument label should be the true label (a class name, number or list), not None{where}; "
                            "send kind='skip' to pass or kind='none' for none of these classes")
    if kind != "label":
        label = None
    annotator = doc.get("annotator")
    if annotator is not None and (not isinstance(annotator, str) or not annotator.strip() or len(annotator) > KEY_LENGTH):
        raise ArgumentError(f"Argument annotator should be a name of 1 to {KEY_LENGTH} characters or None; got {annotator!r}{where}")
    seconds = doc.get("seconds")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not math.isfinite(seconds) or seconds < 0):
        raise ArgumentError(f"Argument seconds should be the time taken, a finite number >= 0, or None; got {seconds!r}{where}")
    source = doc.get("source", "api") or "api"
    if source not in SOURCES:
        raise ArgumentError(f"Argument source should be one of {', '.join(SOURCES)}; got {source!r}{where}")
    at = doc.get("at")
    return {"request_id": request_id, "row": row, "kind": kind, "label": label, "text": _label_text(label, "label"),
            "annotator": annotator, "seconds": None if seconds is None else float(seconds), "source": source,
            "created_at": time.time() if at is None else float(at)}


def _check_class(label: Any, names: Sequence[str] | None, request_id: str, row: int | None) -> None:
    if names is None:
        return
    if str(label) not in names:
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        where = f"row {row} of request {request_id!r}" if row is not None else f"request {request_id!r}"
        raise ArgumentError(f"Argument label should be one of the model's classes ({shown}); got {label!r} for {where}. "
                            "Send kind='none' when none of these classes fits")


class LabelStore:
    """Labels and the labeling queue in a :class:`~loopml.store.TrackingStore`'s database."""

    def __init__(self, store: "TrackingStore") -> None:
        self.store = store

    # -- labels -----------------------------------------------------------------------------

    def add(self, docs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Store labels (dicts: ``request_id``, ``label``, ``row``, ``annotator``, ``kind``, ``seconds``, ``source``)
        in one transaction, and move their queue items to their new consensus status.

        Every label is checked first: an unknown request id raises :class:`~loopml.errors.NotFound`,
        a row outside the request's batch or a class the version does not know
        :class:`~loopml.errors.ArgumentError`; then nothing is stored.
        """
        if isinstance(docs, Mapping) or not isinstance(docs, Sequence):
            raise ArgumentTypeError(f"Argument labels should be a list of label objects; got {type(docs).__name__}")
        checked = []
        for i, doc in enumerate(docs):
            if not isinstance(doc, Mapping):
                raise ArgumentTypeError(f"Argument labels should hold objects with request_id and label; item {i} is {doc!r}")
            checked.append(_check_label(doc, "" if len(docs) == 1 else f" (label {i})"))
        if not checked:
            return []
        ids = sorted({c["request_id"] for c in checked})
        p, f, q = s.predictions, s.feedback, s.label_queue
        with self.store.transaction() as conn:
            # the queue rows first, locked (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers): the
            # status written below is computed from every label committed before, a concurrent writer's included
            queued: list[Any] = []
            for part in _chunks(ids):
                queued += conn.execute(sa.select(q.c.id, q.c.request_id, q.c.row).where(q.c.request_id.in_(part))
                                       .order_by(q.c.id).with_for_update()).all()
            known: dict[str, Any] = {}
            for part in _chunks(ids):
                for r in conn.execute(sa.select(p.c.request_id, p.c.model, p.c.version, p.c.rows).where(p.c.request_id.in_(part))):
                    known[r.request_id] = r
            missing = [i for i in ids if i not in known]
            if missing:
                raise NotFound(f"No prediction has request id {missing[0]!r}" + (f" ({len(missing)} unknown); nothing was stored"
                               if len(checked) > 1 else "; send feedback for an id the server answered with"))
            names = self._class_names(conn, {(r.model, r.version) for r in known.values()})
            for c in checked:
                rec = known[c["request_id"]]
                classes = names.get((rec.model, rec.version))
                if c["row"] is not None and c["row"] >= rec.rows:
                    raise ArgumentError(f"Argument row should be a row of request {c['request_id']!r}'s batch (0 to {rec.rows - 1}); "
                                        f"got {c['row']} (nothing was stored)")
                if c["kind"] != "label":
                    continue
                if c["row"] is not None or rec.rows == 1:
                    value = c["label"][0] if isinstance(c["label"], list) and len(c["label"]) == 1 and c["row"] is None else c["label"]
                    _check_class(value, classes, c["request_id"], c["row"])
                elif classes is not None:
                    if not isinstance(c["label"], list) or len(c["label"]) != rec.rows:
                        raise ArgumentError(f"Argument label should be a list of {rec.rows} labels for request {c['request_id']!r} "
                                            f"(one per row of its batch), or give row=N; got {c['label']!r}")
                    for j, value in enumerate(c["label"]):
                        _check_class(value, classes, c["request_id"], j)
            conn.execute(f.insert(), [{"request_id": c["request_id"], "label": c["text"], "created_at": c["created_at"],
                                       "row": c["row"], "annotator": c["annotator"], "kind": c["kind"],
                                       "seconds": c["seconds"], "source": c["source"]} for c in checked])
            self._update_status(conn, queued, {i: known[i].rows for i in ids})
        return [{k: c[k] for k in ("request_id", "row", "label", "kind", "annotator", "seconds", "source", "created_at")}
                for c in checked]

    def undo(self, annotator: str | None) -> dict[str, Any] | None:
        """Withdraw ``annotator``'s newest answer that still stands (an ``undo`` row; history kept); None when none stands.

        Returns the withdrawn answer (``request_id``, ``row``, ``label``, ``kind``); its queue
        item goes back to the status the other annotators' answers give it (``open`` when none).
        Called again, it withdraws the answer before that one.
        """
        if annotator is not None and (not isinstance(annotator, str) or not annotator.strip()):
            raise ArgumentError(f"Argument annotator should be the annotator's name; got {annotator!r}")
        f, q = s.feedback, s.label_queue
        who = f.c.annotator.is_(None) if annotator is None else f.c.annotator == annotator
        with self.store.transaction() as conn:
            # newest first; the first (request, row) whose newest row is not an undo is the answer to withdraw
            seen: set[tuple[str, int | None]] = set()
            target = None
            offset = 0
            while target is None:
                batch = conn.execute(sa.select(f.c.request_id, f.c.row, f.c.kind, f.c.label).where(who)
                                     .order_by(f.c.id.desc()).limit(200).offset(offset)).all()
                if not batch:
                    return None
                for r in batch:
                    key = (r.request_id, r.row)
                    if key in seen:
                        continue
                    seen.add(key)
                    if r.kind != "undo":
                        target = r
                        break
                offset += len(batch)
            queued = conn.execute(sa.select(q.c.id, q.c.request_id, q.c.row).where(q.c.request_id == target.request_id)
                                  .with_for_update()).all()
            rows = conn.execute(sa.select(s.predictions.c.rows).where(s.predictions.c.request_id == target.request_id)).scalar_one()
            conn.execute(f.insert().values(request_id=target.request_id, row=target.row, annotator=annotator, kind="undo",
                                           label="null", created_at=time.time(), source="page"))
            self._update_status(conn, queued, {target.request_id: rows})
        return {"request_id": target.request_id, "row": target.row, "label": json.loads(target.label), "kind": target.kind,
                "annotator": annotator}

    def feedback_rows(self, request_ids: Sequence[str], conn: Any = None) -> dict[str, list[dict[str, Any]]]:
        """Every feedback row of these requests, oldest first, by request id."""
        f = s.feedback
        cols = [f.c.id, f.c.request_id, f.c.row, f.c.annotator, f.c.kind, f.c.label, f.c.created_at, f.c.seconds, f.c.source]
        out: dict[str, list[dict[str, Any]]] = {}
        ids = sorted(set(request_ids))

        def read(c: Any) -> None:
            for part in _chunks(ids):
                for r in c.execute(sa.select(*cols).where(f.c.request_id.in_(part)).order_by(f.c.id)).mappings():
                    out.setdefault(r["request_id"], []).append(_plain(r))

        if conn is not None:
            read(conn)
        else:
            with self.store.read() as c:
                read(c)
        return out

    def _update_status(self, conn: Any, queued: Sequence[Any], rows: Mapping[str, int]) -> None:
        if not queued:
            return
        votes = self.feedback_rows(sorted({r.request_id for r in queued}), conn)
        now = time.time()
        per_request = {rid: item_votes(votes.get(rid, []), rows.get(rid, 1)) for rid in {r.request_id for r in queued}}
        for item in queued:
            status, _ = consensus(per_request[item.request_id].get(item.row, {}))
            conn.execute(s.label_queue.update().where(s.label_queue.c.id == item.id).values(status=status, updated_at=now))

    def _class_names(self, conn: Any, versions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], list[str] | None]:
        v = s.model_versions
        out: dict[tuple[str, int], list[str] | None] = {}
        for name, number in versions:
            sig = conn.execute(sa.select(v.c.signature).where(v.c.name == name, v.c.version == number)).scalar()
            names = json.loads(sig).get("class_names") if sig else None
            out[(name, number)] = [str(n) for n in names] if isinstance(names, list) else None
        return out

    def class_names(self, model: str, version: int) -> list[str] | None:
        """The version's class names (from its signature); None when it has none or is not registered here."""
        with self.store.read() as conn:
            return self._class_names(conn, [(model, int(version))])[(model, int(version))]

    def labelled_rows(self, model: str, version: int | None = None, *, since: float | None = None,
                      until: float | None = None, chunk: int = _CHUNK) -> Iterable[dict[str, Any]]:
        """Every labelled (request, row) of ``model`` with its current answers, oldest request first, read ``chunk``
        requests at a time: ``{"request_id", "version", "created_at", "labelled_at", "rows", "outputs", "row", "votes"}``
        (``votes``: annotator -> (kind, label); ``labelled_at``: the request's newest label)."""
        p, f = s.predictions, s.feedback
        q = in_window(sa.select(p.c.request_id, p.c.version, p.c.created_at, p.c.rows, p.c.outputs)
                      .where(p.c.request_id.in_(sa.select(f.c.request_id).distinct()))
                      .order_by(p.c.created_at, p.c.request_id), model, version, since, until)
        with self.store.read() as conn:
            recs = [_plain(r) for r in conn.execute(q).mappings()]
        for i in range(0, len(recs), chunk):
            part = recs[i : i + chunk]
            fb = self.feedback_rows([r["request_id"] for r in part])
            for rec in part:
                rows = fb.get(rec["request_id"], [])
                if not rows:
                    continue
                for r, votes in sorted(item_votes(rows, rec["rows"]).items()):
                    yield {**rec, "row": r, "votes": votes, "labelled_at": rows[-1]["created_at"]}

    # -- the queue --------------------------------------------------------------------------

    def add_items(self, model: str, version: int, items: Sequence[Mapping[str, Any]], *, reason: str = "disagreement") -> int:
        """Queue ``items`` (dicts: ``request_id``, ``row``, ``score``, ``details``) of ``model``/``version`` for ``reason``.

        An item already queued for the model (whatever its reason) is left as it is, so
        calling again adds nothing twice (``INSERT ... ON CONFLICT DO NOTHING``). Returns how
        many were added. What the shadow scorer calls with its disagreements::

            LabelStore(store).add_items("digits", 3, [{"request_id": "9f2c-1a", "row": 0, "score": 0.8,
                                                      "details": {"champion": "3", "challenger": "8"}}])
        """
        if reason not in REASONS:
            raise ArgumentError(f"Argument reason should be one of {', '.join(REASONS)}; got {reason!r}")
        if not isinstance(model, str) or not model or type(version) is not int:
            raise ArgumentError(f"Arguments model and version should name a model version, e.g. ('digits', 3); got {model!r}, {version!r}")
        now = time.time()
        values = []
        for i, it in enumerate(items):
            if not isinstance(it, Mapping) or not isinstance(it.get("request_id"), str):
                raise ArgumentError(f"Argument items should hold objects with request_id, row, score and details; item {i} is {it!r}")
            row = it.get("row", 0)
            if type(row) is not int or row < 0:
                raise ArgumentError(f"Argument items should give each item's row (0, 1, ...); item {i} has row {row!r}")
            score = it.get("score")
            if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score)):
                raise ArgumentError(f"Argument items should give each item's score as a finite number or None; item {i} has {score!r}")
            values.append({"model": model, "version": version, "request_id": it["request_id"], "row": row,
                           "reason": it.get("reason", reason), "score": None if score is None else float(score),
                           "status": "open", "details": json.dumps(it.get("details") or {}, allow_nan=False, default=str),
                           "created_at": now, "updated_at": now})
            if values[-1]["reason"] not in REASONS:
                raise ArgumentError(f"Argument items should give reasons among {', '.join(REASONS)}; item {i} has {values[-1]['reason']!r}")
        if not values:
            return 0
        stmt = self.store.upsert(s.label_queue).on_conflict_do_nothing(index_elements=["model", "request_id", "row"])
        added = 0
        with self.store.transaction() as conn:
            for part in range(0, len(values), _CHUNK):
                res = conn.execute(stmt, values[part : part + _CHUNK])
                added += max(res.rowcount, 0)
        return added

    def mark_audit(self, model: str, keys: Sequence[tuple[str, int]]) -> int:
        """Flag already-queued items as drawn for the audit slice too (``details["audit"] = true``)."""
        q = s.label_queue
        n = 0
        with self.store.transaction() as conn:
            for rid, row in keys:
                found = conn.execute(sa.select(q.c.id, q.c.details).where(q.c.model == model, q.c.request_id == rid, q.c.row == row)).first()
                if found is None:
                    continue
                details = json.loads(found.details)
                if not details.get("audit"):
                    details["audit"] = True
                    conn.execute(q.update().where(q.c.id == found.id).values(details=json.dumps(details)))
                    n += 1
        return n

    def items(self, model: str, *, status: str | Sequence[str] | None = "open", limit: int | None = 100,
              after_id: int | None = None, version: int | None = None, reasons: Sequence[str] | None = None,
              not_by: str | None = None) -> list[dict[str, Any]]:
        """Queue items of ``model``, oldest first (by id): ``status`` one or several of :data:`STATUSES` (None: all),
        at most ``limit`` after ``after_id`` (paging); ``not_by``: only items that annotator has no answer standing on."""
        q, f = s.label_queue, s.feedback
        statuses = [status] if isinstance(status, str) else status
        for st in statuses or ():
            if st not in STATUSES:
                raise ArgumentError(f"Argument status should be one of {', '.join(STATUSES)}; got {st!r}")
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ArgumentError(f"Argument limit should be a whole number >= 1; got {limit!r}")
        sel = sa.select(q).where(q.c.model == model).order_by(q.c.id)
        if statuses:
            sel = sel.where(q.c.status.in_(list(statuses)))
        if after_id is not None:
            sel = sel.where(q.c.id > int(after_id))
        if version is not None:
            sel = sel.where(q.c.version == int(version))
        if reasons:
            sel = sel.where(q.c.reason.in_(list(reasons)))
        out: list[dict[str, Any]] = []
        with self.store.read() as conn:
            page = limit if not_by is None else (limit or 100) * 4
            cursor = sel
            while True:
                rows = [_plain(r) for r in conn.execute(cursor.limit(page) if page else cursor).mappings()]
                if not_by is not None and rows:
                    mine = conn.execute(sa.select(f.c.request_id, f.c.row, f.c.kind).where(
                        f.c.annotator == not_by, f.c.request_id.in_([r["request_id"] for r in rows])).order_by(f.c.id)).all()
                    standing: dict[tuple[str, int | None], str] = {}
                    for m in mine:
                        standing[(m.request_id, m.row)] = m.kind
                    rows_kept = [r for r in rows if standing.get((r["request_id"], r["row"]), "undo") == "undo"
                                 and standing.get((r["request_id"], None), "undo") == "undo"]
                else:
                    rows_kept = rows
                out += [{**r, "details": json.loads(r["details"])} for r in rows_kept]
                if limit is None or len(out) >= limit or not page or len(rows) < page:
                    break
                cursor = sel.where(q.c.id > rows[-1]["id"])
        return out[:limit] if limit is not None else out

    def counts(self, model: str, *, version: int | None = None) -> dict[str, dict[str, int]]:
        """``{reason: {status: count}}`` of ``model``'s queue (one version, or all)."""
        q = s.label_queue
        sel = sa.select(q.c.reason, q.c.status, sa.func.count()).where(q.c.model == model).group_by(q.c.reason, q.c.status)
        if version is not None:
            sel = sel.where(q.c.version == int(version))
        out: dict[str, dict[str, int]] = {}
        with self.store.read() as conn:
            for reason, status, n in conn.execute(sel):
                out.setdefault(reason, {})[status] = int(n)
        return out

    def requests(self, model: str, version: int | None = None, *, since: float | None = None,
                 last: int | None = None) -> list[tuple[str, int]]:
        """``(request_id, rows)`` of ``model``'s logged requests (one version, or all), oldest first (ties by id),
        the newest ``last`` only: what a queue draws from, no blob or JSON read."""
        p = s.predictions
        q = sa.select(p.c.request_id, p.c.rows, p.c.created_at).where(p.c.model == model)
        if version is not None:
            q = q.where(p.c.version == int(version))
        if since is not None:
            q = q.where(p.c.created_at >= float(since))
        q = q.order_by(p.c.created_at.desc(), p.c.request_id.desc())
        if last is not None:
            q = q.limit(int(last))
        with self.store.read() as conn:
            rows = conn.execute(q).all()
        return [(r.request_id, int(r.rows)) for r in reversed(rows)]

    def queued_keys(self, model: str, request_ids: Sequence[str]) -> set[tuple[str, int]]:
        """Which (request, row) of these requests are queued for ``model`` already."""
        q = s.label_queue
        out: set[tuple[str, int]] = set()
        with self.store.read() as conn:
            for part in _chunks(sorted(set(request_ids))):
                out.update((r.request_id, r.row) for r in conn.execute(
                    sa.select(q.c.request_id, q.c.row).where(q.c.model == model, q.c.request_id.in_(part))))
        return out


def _plain(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A result row as a dict of plain ``str`` keys (SQLAlchemy's may be a ``str`` subclass, which orjson refuses)."""
    return {str(k): v for k, v in row.items()}


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]
