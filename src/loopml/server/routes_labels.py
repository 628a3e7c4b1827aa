"""The labeling queue and labels under ``/api/v1/labels``: what the labeling page reads and writes.

=======  ==============================  ==================================================================
method   path                            what
=======  ==============================  ==================================================================
GET      /api/v1/labels/queue            ``?model=NAME&status=open&limit=20&after=ID&annotator=ann``: items with their input,
                                         the model's top-3 classes, the OOD score and why each was picked
POST     /api/v1/labels                  one label object, or a list of them (one transaction): ``request_id``, ``row``,
                                         ``label``, ``kind`` (label, skip, none), ``annotator``, ``seconds``, ``source``
POST     /api/v1/labels/undo             ``{"annotator": "ann"}``: withdraw that annotator's newest standing answer
GET      /api/v1/labels/agreement        ``?model=NAME``: percent agreement and kappa between annotators
=======  ==============================  ==================================================================

The shapes are in docs/loop.md ("Labeling"). Errors are the server's one JSON shape:
an unknown request id 404, a row outside the batch or a class the model does not know 400,
a body that does not fit 422.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field
from starlette.responses import Response

from ..loop.labels import agreement as do_agreement
from ..loop.queue import item_views
from ..store.labels import STATUSES, LabelStore
from .errors import json_response
from .routes_tracking import PREFIX, Store, StrictBody

__all__ = ["router"]

router = APIRouter(prefix=f"{PREFIX}/labels", tags=["labels"])

MAX_PAGE = 200


class LabelIn(StrictBody):
    request_id: str = Field(min_length=1, max_length=64, examples=["9f2c1a-1a"])
    row: int | None = Field(0, ge=0, description="The row of the request's batch; null: the whole request")
    label: Any = Field(None, examples=["3"], description="A class of the model (null for kind skip and none)")
    kind: Literal["label", "skip", "none"] = Field("label", description="none: none of these classes")
    annotator: str | None = Field(None, min_length=1, max_length=250)
    seconds: float | None = Field(None, ge=0, description="Time the annotator took")
    source: Literal["http", "page"] = Field("http", description="page: sent by the labeling page")


class UndoIn(StrictBody):
    annotator: str | None = Field(None, min_length=1, max_length=250)


@router.get("/queue", summary="Queue items with what a labeling page shows")
def queue(
    store: Store,
    model: Annotated[str, Query(min_length=1, description="The model's name")],
    status: Annotated[list[Literal["open", "labelled", "disputed", "skipped"]] | None,
                      Query(description="Repeatable; default open and disputed")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    after: Annotated[int | None, Query(ge=0, description="The last id of the previous page")] = None,
    annotator: Annotated[str | None, Query(description="Leave out items this annotator has answered")] = None,
) -> Response:
    labels = LabelStore(store)
    wanted = list(status) if status else ["open", "disputed"]
    items = labels.items(model, status=wanted, limit=limit, after_id=after, not_by=annotator)
    counts = labels.counts(model)
    by_status = {s: sum(c.get(s, 0) for c in counts.values()) for s in STATUSES}
    return json_response({"model": model, "items": item_views(store, items),
                          "next_after": items[-1]["id"] if len(items) == limit else None,
                          "counts": {"by_reason": counts, "by_status": by_status}})


@router.post("", summary="Store one label or a list of labels (all or none)")
def add_labels(store: Store, body: LabelIn | list[LabelIn]) -> Response:
    docs = [b.model_dump() for b in (body if isinstance(body, list) else [body])]
    stored = LabelStore(store).add(docs)
    return json_response({"stored": stored, "count": len(stored)})


@router.post("/undo", summary="Withdraw the annotator's newest standing answer")
def undo(store: Store, body: UndoIn) -> Response:
    return json_response({"undone": LabelStore(store).undo(body.annotator)})


@router.get("/agreement", summary="How well the annotators agree")
def agreement(store: Store, model: Annotated[str, Query(min_length=1)]) -> Response:
    return json_response({"model": model, **do_agreement(model, store=store)})
