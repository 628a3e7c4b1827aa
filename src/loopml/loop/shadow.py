"""Shadow scoring: the challenger's answers to the champion's logged traffic, without serving it.

The inputs the model server kept in the request log of the champion's version are
scored by the challenger, row by row, and set beside the answers the champion gave.
The report has the agreement (over the rows the champion answered), the disagreement
per class the champion answered, and each disagreement (request id, row, both answers),
ready for the labeling queue as ``disagreement`` items::

    report = shadow("digits@production", "digits/4", since="1h")
    report.agreement, report.disagreements[0]          # 0.94, Disagreement(request_id='...', row=0, ...)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

from ..errors import ArgumentError, DataError
from ..models.registry import (
    current_user,
    registry_for,
    resolve_version,
)
from ..monitor.windows import parse_duration
from ..store.labels import LabelStore
from ..store.loopevents import LoopEvents
from ..store.predictions import PredictionLog, inputs_array
from ..store.registry import local_registry
from .compare import check_signatures, scoring_model

__all__ = ["Disagreement", "ShadowReport", "shadow"]


@dataclass(frozen=True, kw_only=True)
class Disagreement:
    request_id: str
    row: int
    champion: str
    challenger: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def queue_item(self) -> dict[str, Any]:
        """The item for the labeling queue (reason ``disagreement``)."""
        return {"request_id": self.request_id, "row": self.row, "reason": "disagreement",
                "details": {"champion": self.champion, "challenger": self.challenger}}


@dataclass(frozen=True, kw_only=True)
class ShadowReport:
    champion: str
    challenger: str
    requests: int  # requests read (with kept inputs)
    without_inputs: int  # requests whose inputs the log did not keep
    rows: int  # rows the champion answered and both scored
    abstained: int  # rows the champion abstained on (not counted in the agreement)
    agreement: float | None
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)  # champion's class -> rows, disagree, rate
    disagreements: list[Disagreement] = field(default_factory=list)
    queued: int | None = None  # disagreements added to the labeling queue (to_queue=True); None: not asked

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["disagreements"] = [x.to_dict() for x in self.disagreements]
        return d

    def queue_items(self) -> list[dict[str, Any]]:
        return [d.queue_item() for d in self.disagreements]


def _since(since: float | str | None) -> float | None:
    """A time (epoch seconds) as it is; a duration (``"1h"``) back from now."""
    if since is None or (isinstance(since, (int, float)) and not isinstance(since, bool)):
        return since
    return time.time() - parse_duration(since, "since")


def shadow(
    champion: Any,
    challenger: Any,
    *,
    since: float | str | None = None,
    last: int | None = None,
    to_queue: bool = False,
    cause: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
) -> ShadowReport:
    """Score ``challenger`` on the champion's logged inputs (``since``: a time or ``"1h"``; ``last``: newest N requests).

    Requests whose inputs were not kept are counted, not scored. Signatures that differ
    are refused (:class:`~loopml.errors.Conflict`); a champion with no logged inputs in the
    window is a :class:`~loopml.errors.DataError`. ``to_queue=True`` adds each disagreement
    to the champion's labeling queue (reason ``disagreement``; an item already queued is left
    as it is), ``report.queued`` says how many were new. A ``shadow`` loop event records it. Example::

        report = shadow("churn@production", "churn/2", last=500)
        report.agreement, len(report.disagreements)   # (0.97, 15)
    """
    if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
        raise ArgumentError(f"Argument last should be a number of requests >= 1, got {last!r}")
    if not isinstance(to_queue, bool):
        raise ArgumentError(f"Argument to_queue should be True or False, got {to_queue!r}")
    registry = local_registry(registry_for(tracking_uri), "shadow")
    champ_v, chall_v = resolve_version(registry, champion), resolve_version(registry, challenger)
    check_signatures(champ_v, chall_v)
    log = PredictionLog(registry.store)
    start = _since(since)
    ids = log.window_ids(champ_v.name, champ_v.version, since=start, with_inputs=True)
    if last is not None:
        ids = ids[-last:]
    counts = log.window_counts(champ_v.name, champ_v.version, since=start)
    if not ids:
        raise DataError(f"{champ_v.ref} has no logged inputs{'' if since is None else f' since {since}'} to score "
                        f"{chall_v.ref} on: serve it with the request log keeping inputs, or widen --since")
    records = log.records(ids)
    model = scoring_model(registry, chall_v)
    classes = list(model.class_names or ())
    rows = abstained = 0
    per_class: dict[str, dict[str, Any]] = {}
    disagreements: list[Disagreement] = []
    for rec in records:
        x = inputs_array(rec["inputs"])
        out = orjson.loads(rec["outputs"])
        items = out["results"] if "results" in out else [out]
        if len(items) != len(x):
            continue  # a request whose answers and inputs do not line up: nothing to pair
        answers = model.predict(x)
        for i, item in enumerate(items):
            if item.get("status", "ok") != "ok":
                abstained += 1
                continue
            said = str(item.get("prediction"))
            mine = classes[int(answers[i])] if classes else str(int(answers[i]))
            rows += 1
            entry = per_class.setdefault(said, {"rows": 0, "disagree": 0})
            entry["rows"] += 1
            if mine != said:
                entry["disagree"] += 1
                disagreements.append(Disagreement(request_id=rec["request_id"], row=i, champion=said, challenger=mine))
    for entry in per_class.values():
        entry["rate"] = entry["disagree"] / entry["rows"]
    report = ShadowReport(
        champion=champ_v.ref, challenger=chall_v.ref, requests=len(records),
        without_inputs=max(0, counts["requests"] - counts["input_requests"]) if last is None else 0,
        rows=rows, abstained=abstained, agreement=None if rows == 0 else 1 - len(disagreements) / rows,
        per_class=dict(sorted(per_class.items())), disagreements=disagreements,
    )
    if to_queue:
        added = LabelStore(registry.store).add_items(champ_v.name, champ_v.version, report.queue_items(),
                                                     reason="disagreement")
        report = replace(report, queued=added)
    target = champion if isinstance(champion, str) else champ_v.ref
    LoopEvents(registry.store).record(
        target, champ_v.name, chall_v.version, "shadow", "done", cause=dict(cause or {"command": "shadow"}),
        details={"champion": champ_v.ref, "challenger": chall_v.ref, "rows": rows, "agreement": report.agreement,
                 "disagreements": len(disagreements), "queued": report.queued, "at": time.time(), "by": current_user()})
    return report

