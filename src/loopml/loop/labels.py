"""Labels for a served model's answers: given by annotators, agreed on, and made into a dataset.

- :func:`label` stores one annotator's answer for a row of a logged request (``kind``
  ``"label"``, ``"skip"`` or ``"none"``: none of these classes); the annotator's newest
  answer counts, and :func:`undo` withdraws it (history is kept: see
  :mod:`loopml.store.labels`);
- :func:`import_labels` reads a CSV or JSON-lines file of ``request_id,row,label``;
- :func:`agreement` reports how often annotators agree (percent agreement, and Cohen's
  kappa for two annotators, Fleiss' kappa for more);
- :func:`label_dataset` turns the agreed labels and the logged inputs into a
  :class:`~loopml.data.Dataset` with the version's class names (``reasons=("audit",)``:
  the unbiased audit slice only).

>>> label("no-such-id", "3", row=0, annotator="ann")
Traceback (most recent call last):
...
loopml.errors.NotFound: No prediction has request id 'no-such-id'; send feedback for an id the server answered with
>>> agreement("digits")["items"]                   # no item has two annotators' answers yet
0
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError, DataError, NotFound
from ..store.labels import REASONS, LabelStore, consensus
from ..store.predictions import PredictionLog, inputs_array
from ..store.registry import ModelVersion
from ..store.tracking import TrackingStore
from .queue import open_store, version_of

if TYPE_CHECKING:
    from ..data import Dataset

__all__ = ["agreement", "fleiss_kappa", "import_labels", "label", "label_dataset", "labelled_examples", "undo"]


def label(request_id: str, label: Any, *, row: int | None = 0, annotator: str | None, kind: str = "label",
          seconds: float | None = None, store: TrackingStore | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """Store ``annotator``'s answer for ``row`` of a logged request; returns what was stored.

    ``kind``: ``"label"`` (``label`` is a class of the version), ``"skip"`` or ``"none"``
    (none of these classes; ``label`` is ignored). A later answer by the same annotator
    supersedes theirs. NotFound for an unknown request id; ArgumentError for a row outside
    the batch or an unknown class.

    Example (an id the server answered with)::

        label("9f2c1a-1a", "3", annotator="ann", seconds=1.2)["kind"]      # 'label'
    """
    return LabelStore(open_store(store, tracking_uri)).add([{"request_id": request_id, "label": label, "row": row,
                                                          "annotator": annotator, "kind": kind, "seconds": seconds,
                                                          "source": "api"}])[0]


def undo(annotator: str | None, *, store: TrackingStore | None = None, tracking_uri: str | None = None) -> dict[str, Any] | None:
    """Withdraw ``annotator``'s newest standing answer (the page's Backspace); None when there is none."""
    return LabelStore(open_store(store, tracking_uri)).undo(annotator)


def _read_file(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8-sig")
    docs: list[dict[str, Any]] = []
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson") or text.lstrip().startswith("{"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not a JSON object ({exc.msg}); each line should be "
                                '{"request_id": "...", "row": 0, "label": "3"}') from None
            if not isinstance(doc, dict):
                raise DataError(f"{path}:{n}: each line should be a JSON object with request_id, row and label; got {doc!r}")
            docs.append(doc)
        return docs
    reader = csv.DictReader(text.splitlines())
    fields = set(reader.fieldnames or ())
    if not {"request_id", "label"} <= fields:
        raise DataError(f"{path}: a CSV of labels should have a header with request_id, row and label (kind, seconds optional); "
                        f"got {sorted(fields)}")
    for n, rec in enumerate(reader, 2):
        item: dict[str, Any] = {"request_id": rec["request_id"], "label": rec["label"]}
        for key, conv in (("row", int), ("seconds", float)):
            value = (rec.get(key) or "").strip()
            if value:
                try:
                    item[key] = conv(value)
                except ValueError:
                    raise DataError(f"{path}:{n}: {key} should be a number; got {value!r}") from None
        if (rec.get("kind") or "").strip():
            item["kind"] = rec["kind"].strip()
        docs.append(item)
    return docs


def import_labels(path: str | Path, *, annotator: str, store: TrackingStore | None = None,
                  tracking_uri: str | None = None) -> int:
    """Store the labels of a CSV (header ``request_id,row,label``; ``kind`` and ``seconds`` optional) or
    JSON-lines file (one ``{"request_id", "row", "label"}`` object a line) as ``annotator``'s, all or none.

    A missing ``row`` is row 0. Every line is checked before anything is stored; the error
    names the line. Returns how many labels were stored.

    Example::

        import_labels("labels.csv", annotator="ann")        # 120
    """
    if not isinstance(annotator, str) or not annotator.strip():
        raise ArgumentError(f"Argument annotator should be the name of who gave the labels; got {annotator!r}")
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"No file {str(p)!r}: give a CSV or JSON-lines file of request_id,row,label")
    docs = _read_file(p)
    for doc in docs:
        doc.setdefault("row", 0)
        doc["annotator"] = annotator
        doc["source"] = "file"
    return len(LabelStore(open_store(store, tracking_uri)).add(docs)) if docs else 0


def _rows(db: TrackingStore, mv: ModelVersion, reasons: Sequence[str] | None,
          since: float | None) -> list[tuple[str, int, Any]]:
    """(request_id, row, agreed label) of the version's labelled rows (in the queue for ``reasons`` when given)."""
    labels = LabelStore(db)
    wanted: set[tuple[str, int]] | None = None
    if reasons is not None:
        if isinstance(reasons, str) or not all(r in REASONS for r in reasons):
            raise ArgumentError(f"Argument reasons should be a tuple of {', '.join(REASONS)}; got {reasons!r}")
        wanted = set()
        for it in labels.items(mv.name, status=None, limit=None, version=mv.version):
            if it["reason"] in reasons or ("audit" in reasons and it["details"].get("audit")):
                wanted.add((it["request_id"], it["row"]))
    out = []
    for rec in labels.labelled_rows(mv.name, mv.version, since=since):
        key = (rec["request_id"], rec["row"])
        if wanted is not None and key not in wanted:
            continue
        status, agreed = consensus(rec["votes"])
        if status == "labelled" and agreed != "none":
            out.append((key[0], key[1], agreed))
    return out


def labelled_examples(ref: str | ModelVersion, *, reasons: Sequence[str] | None = None, since: float | None = None,
                      store: TrackingStore | None = None, tracking_uri: str | None = None) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int]], int]:
    """``(x, y, keys, without_inputs)``: the agreed labels of ``ref``'s answers as class indices with their logged
    input rows, the ``(request_id, row)`` each came from, and how many labelled rows had no logged input."""
    db = open_store(store, tracking_uri)
    mv = version_of(db, ref)
    names = mv.signature.get("class_names")
    if not names:
        raise ArgumentError(f"{mv.ref} has no class names in its signature: a label dataset needs a classifier "
                            "(register it with class_names=...)")
    index = {str(n): i for i, n in enumerate(names)}
    rows = _rows(db, mv, reasons, since)
    recs = {r["request_id"]: r for r in PredictionLog(db).records(sorted({r[0] for r in rows}), inputs=True)} if rows else {}
    xs: list[np.ndarray] = []
    ys: list[int] = []
    keys: list[tuple[str, int]] = []
    missing = 0
    arrays: dict[str, np.ndarray] = {}
    for rid, r, agreed in rows:
        blob = recs.get(rid, {}).get("inputs")
        if blob is None or str(agreed) not in index:
            missing += 1
            continue
        if rid not in arrays:
            arrays[rid] = inputs_array(blob)
        xs.append(np.asarray(arrays[rid][r], dtype=np.float32))
        ys.append(index[str(agreed)])
        keys.append((rid, r))
    shape = tuple(mv.signature["inputs"][0]["shape"][1:]) if mv.signature.get("inputs") else ()
    x = np.stack(xs) if xs else np.zeros((0, *[d or 1 for d in shape]), dtype=np.float32)
    return x, np.asarray(ys, dtype=np.int64), keys, missing


def label_dataset(ref: str | ModelVersion, *, reasons: Sequence[str] | None = None, since: float | None = None,
                  store: bool = False, backend: TrackingStore | None = None, tracking_uri: str | None = None) -> "Dataset":
    """The agreed labels of a version's answers and their logged inputs, as a :class:`~loopml.data.Dataset`
    with the version's class names (skipped, "none of these classes" and disputed rows left out).

    ``reasons``: only rows queued for these reasons (``("audit",)``: the uniform audit
    slice, for an unbiased accuracy); ``since``: only requests logged from then on. Rows
    whose inputs the server did not log cannot be used (serve with ``--log-inputs 1``);
    none at all raises ArgumentError. ``store=True`` also stores the dataset by content
    (:func:`loopml.data.store_dataset`) with its origin (``{"kind": "labels", "model",
    "version", "reasons", "since", "rows", "without_inputs"}``) and the ``(request_id,
    row)`` each row came from; ``ds.fingerprint`` names it. ``backend``: the database
    (default: the current tracking URI's). ``ds.predictions`` is that list of pairs.

    Example::

        ds = label_dataset("digits@production", reasons=("audit",))     # the audit slice, for an unbiased accuracy
        label_dataset("digits@production", store=True).fingerprint       # stored: loopml data lineage shows it
    """
    from ..data import Dataset, store_dataset

    db = open_store(backend, tracking_uri)
    mv = version_of(db, ref)
    x, y, keys, missing = labelled_examples(mv, reasons=reasons, since=since, store=db)
    if not len(y):
        why = f" ({missing} labelled rows had no logged inputs: serve with --log-inputs 1)" if missing else ""
        raise ArgumentError(f"{mv.ref} has no agreed label with a logged input" + (f" for reasons {tuple(reasons)}" if reasons else "")
                            + why + "; label items first: loopml label queue, then the labeling page or loopml label import")
    if x.ndim == 3:  # H x W images: one channel
        x = x[:, None]
    elif x.ndim not in (2, 4):
        x = x.reshape(len(x), -1)
    features = mv.signature.get("feature_names") if x.ndim == 2 else None
    ds = Dataset(x, y, class_names=mv.signature["class_names"], feature_names=features, task="classification",
                 name=f"{mv.name}-labels", source=f"labels:{mv.ref}")
    ds.predictions = keys  # type: ignore[attr-defined]  # where each row came from: (request_id, row)
    if store:
        origin = {"kind": "labels", "model": mv.name, "version": mv.version,
                  "reasons": None if reasons is None else list(reasons), "since": since, "rows": len(keys),
                  "without_inputs": missing}
        store_dataset(ds, origin=origin, predictions=keys, backend=db)
    return ds


def fleiss_kappa(table: Any) -> float:
    """Fleiss' kappa of an items x categories table of counts (how many raters put item i in category j).

    Items may have different numbers of raters (each needs 2 or more): the per-item
    agreement is averaged as in Fleiss (1971) with n_i in place of n. Hand-written:
    scikit-learn has only Cohen's kappa, and statsmodels (which has this) is not a
    dependency. Checked against statsmodels' ``fleiss_kappa`` on a fixed table in the tests.

    >>> round(fleiss_kappa([[2, 0], [0, 2], [1, 1]]), 4)
    0.3333
    """
    t = np.asarray(table, dtype=np.float64)
    n = t.sum(axis=1)
    if t.ndim != 2 or not len(t) or (n < 2).any():
        raise ArgumentError("Argument table should be items x categories counts with at least 2 raters per item")
    p_i = ((t * t).sum(axis=1) - n) / (n * (n - 1))
    p_j = t.sum(axis=0) / n.sum()
    p_bar, p_e = float(p_i.mean()), float((p_j * p_j).sum())
    return 1.0 if p_e == 1.0 else (p_bar - p_e) / (1.0 - p_e)


def agreement(model: str, *, version: int | None = None, store: TrackingStore | None = None,
              tracking_uri: str | None = None) -> dict[str, Any]:
    """How well ``model``'s annotators agree, over the rows with two or more answers (skips left out).

    ``{"items", "agreed", "disputed", "percent_agreement", "annotators", "kappa", "kappa_method"}``:
    ``kappa_method`` is ``"cohen"`` (scikit-learn's ``cohen_kappa_score``, on the rows both
    answered) when two annotators answered, ``"fleiss"`` (:func:`fleiss_kappa`) for more,
    None when no row has two answers; ``kappa`` is None where it is undefined (every answer the same class). "None of these classes" counts as an answer.

    Example (two annotators, 25 rows both answered)::

        agreement("digits")
        # {'items': 25, 'agreed': 24, 'disputed': 1, 'percent_agreement': 96.0, 'annotators': ['ann', 'bob'],
        #  'kappa': 0.955, 'kappa_method': 'cohen'}
    """
    if not isinstance(model, str) or not model:
        raise ArgumentTypeError(f"Argument model should be a model name such as 'digits'; got {model!r}")
    if "@" in model or "/" in model:
        mv = version_of(open_store(store, tracking_uri), model)
        model, version = mv.name, mv.version
    db = open_store(store, tracking_uri)
    items: list[dict[str, str]] = []
    for rec in LabelStore(db).labelled_rows(model, version):
        answers = {w or "(anonymous)": ("none" if k == "none" else str(v)) for w, (k, v) in rec["votes"].items() if k != "skip"}
        if len(answers) >= 2:
            items.append(answers)
    agreed = sum(len(set(a.values())) == 1 for a in items)
    annotators = sorted({w for a in items for w in a})
    out: dict[str, Any] = {"items": len(items), "agreed": agreed, "disputed": len(items) - agreed,
                           "percent_agreement": round(100.0 * agreed / len(items), 2) if items else None,
                           "annotators": annotators, "kappa": None, "kappa_method": None}
    if not items:
        return out
    cats = sorted({v for a in items for v in a.values()})
    if len(cats) < 2:  # every answer the same class: chance agreement is 1 and kappa is undefined
        out["kappa_method"] = "cohen" if len(annotators) == 2 else "fleiss"
        return out
    if len(annotators) == 2:
        from sklearn.metrics import cohen_kappa_score

        a, b = annotators
        k = float(cohen_kappa_score([i[a] for i in items], [i[b] for i in items], labels=cats))
        out.update(kappa=None if math.isnan(k) else round(k, 4), kappa_method="cohen")
    else:
        table = [[list(a.values()).count(c) for c in cats] for a in items]
        out.update(kappa=round(fleiss_kappa(table), 4), kappa_method="fleiss")
    return out
