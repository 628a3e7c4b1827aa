"""The labeling page: a model's queued requests labelled with the keyboard, one at a time or a grid at once.

=====  ==========================================  ==========================================================
GET    /ui/labeling?name=&version=                 page: the queue of ``name`` (of one version with ``version``);
                                                   without ``name``, the models to choose from
GET    /ui/api/labeling/{name}?version=            what the page needs besides the queue: the version (given,
                                                   else the newest), its class names and feature names, and
                                                   the queue's counts by status and by reason
GET    /ui/api/labeling/{name}/queue               ``GET /api/v1/labels/queue``'s answer for one version's items
       ?version=&annotator=&after=&limit=          (all versions' without ``version``)
=====  ==========================================  ==========================================================

The labels and the undo go through the tracking server's label routes (``POST
/api/v1/labels``, ``POST /api/v1/labels/undo``, :mod:`loopml.server.routes_labels`),
which the Python client and ``curl`` use too; the page sends ``source: "page"``, the
annotator's name and the seconds each answer took. The items come from the same
:func:`~loopml.loop.queue.item_views` as ``GET /api/v1/labels/queue``, through the
page's own route because that one has no version filter.
The keys, the grid and the timing are the page's (``static/pages/labeling.js``;
docs/ui.md has the keys table).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from ...loop.queue import item_views
from ...store.labels import STATUSES, LabelStore
from ..errors import json_response
from ..routes_models import Registry
from . import models  # noqa: F401  imported first, so that Models comes before Labeling in the navigation bar
from .pages import Page, add_page

__all__ = ["MAX_PAGE", "queue_counts", "router"]

MAX_PAGE = 200  # items per answer, as GET /api/v1/labels/queue

router = APIRouter(include_in_schema=False)
add_page(router, Page(path="/ui/labeling", title="Labeling", script="labeling.js", nav=True))


def queue_counts(by_reason: dict[str, dict[str, int]]) -> dict[str, int]:
    """Items per status (every status present, 0 when none) from :meth:`LabelStore.counts`'s ``{reason: {status: n}}``.

    >>> queue_counts({"uncertain": {"open": 3, "labelled": 2}, "audit": {"open": 1}})
    {'open': 4, 'labelled': 2, 'disputed': 0, 'skipped': 0}
    """
    out = dict.fromkeys(STATUSES, 0)
    for statuses in by_reason.values():
        for status, n in statuses.items():
            out[status] = out.get(status, 0) + int(n)
    return out


@router.get("/ui/api/labeling/{name}")
def labeling(name: str, registry: Registry, version: Annotated[int | None, Query(ge=1)] = None) -> Response:
    info = registry.get_model(name)  # 404 for a model that does not exist
    number = version if version is not None else info.latest_version
    if number is None:
        return json_response({"model": name, "version": None, "class_names": None, "feature_names": None,
                              "counts": queue_counts({}), "by_reason": {}})  # fmt: skip
    v = registry.get_version(name, number)  # 404 for a version that does not exist
    sig: dict[str, Any] = v.signature or {}
    by_reason = LabelStore(registry.store).counts(name, version=version)  # one version's queue, or the model's
    names = sig.get("class_names")
    features = sig.get("feature_names")
    return json_response({
        "model": name,
        "version": v.version,
        "class_names": [str(c) for c in names] if isinstance(names, list) else None,
        "feature_names": [str(f) for f in features] if isinstance(features, list) else None,
        "counts": queue_counts(by_reason),
        "by_reason": by_reason,
    })  # fmt: skip


@router.get("/ui/api/labeling/{name}/queue")
def queue(
    name: str,
    registry: Registry,
    version: Annotated[int | None, Query(ge=1)] = None,
    annotator: Annotated[str | None, Query(min_length=1, max_length=250)] = None,
    after: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> Response:
    """Open and disputed items of ``name`` (of ``version``), oldest first, without those ``annotator`` has answered."""
    registry.get_model(name)
    if version is not None:
        registry.get_version(name, version)
    labels = LabelStore(registry.store)
    items = labels.items(name, status=["open", "disputed"], limit=limit, after_id=after, version=version, not_by=annotator)
    by_reason = labels.counts(name, version=version)
    return json_response({"model": name, "version": version, "items": item_views(registry.store, items),
                          "next_after": items[-1]["id"] if len(items) == limit else None,
                          "counts": {"by_reason": by_reason, "by_status": queue_counts(by_reason)}})  # fmt: skip
