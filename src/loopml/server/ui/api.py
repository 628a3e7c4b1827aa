"""The JSON the UI's pages read, under ``/ui/api`` (behind the server's token like ``/api/v1``).

=====  ===========================================  ===============================================
GET    /ui/api/experiments                          experiments with run count and last activity
GET    /ui/api/runs?experiment=&filter=&order_by=   one page of the runs table, only the chosen
       &offset=&limit=&param=&metric=&keys=         columns; ``total``; ``keys=true``: every column
                                                    (and, with no column named, the first few)
GET    /ui/api/runs/{id}                            one run, its parent, children and artifacts
GET    /ui/api/runs/{id}/chart?key=&points=&offset  one metric, downsampled for display
GET    /ui/api/runs/{id}/history?key=&format=       the exact points: ``csv`` or ``json`` download
GET    /ui/api/compare?run=&run=                    runs side by side: params that differ, metrics
=====  ===========================================  ===============================================

Numbers that are not finite travel as ``"NaN"``, ``"Infinity"``,
``"-Infinity"`` (as in :mod:`loopml.tracking.wire`), except in chart points,
where they are ``null`` (a gap in the line). Filter errors answer ``400
invalid_filter`` with the caret lines of :class:`~loopml.errors.FilterError`.
"""

from __future__ import annotations

import io
import math
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query
from starlette.responses import Response

from ...errors import ArgumentError, NotFound
from ...store.records import RunRecord
from ...store.search import quote_string
from ...store.tracking import MAX_PAGE_SIZE
from ...tracking import wire
from ..errors import json_response
from ..routes_tracking import Store
from .downsample import DEFAULT_POINTS, MAX_POINTS, minmax_indices

__all__ = ["MAX_COLUMNS", "MAX_COMPARE", "router"]

MAX_COLUMNS = 50  # params + metrics shown as columns of the runs table
DEFAULT_COLUMNS = 4  # of each kind, when the page names none
MAX_COMPARE = 20  # runs on one compare page
MAX_CHILDREN = 1_000

router = APIRouter(prefix="/ui/api", include_in_schema=False)


def _num(x: float | None) -> float | str | None:
    return None if x is None else wire.encode_float(x)


def _run_row(r: RunRecord, params: list[str], metrics: list[str]) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "experiment": r.experiment,
        "status": r.status,
        "start_time": r.start_time,
        "end_time": r.end_time,
        "duration": r.duration,
        "parent_id": r.parent_id,
        "params": {k: r.params[k] for k in params if k in r.params},
        "metrics": {
            k: {"value": _num(m.value), "min": _num(m.min), "max": _num(m.max), "step": m.step, "count": m.count}
            for k in metrics
            if (m := r.metrics.get(k)) is not None
        },
    }


def _columns(values: list[str] | None, what: str) -> list[str]:
    out = list(dict.fromkeys(values or ()))
    if len(out) > MAX_COLUMNS:
        raise ArgumentError(f"Argument {what} should name at most {MAX_COLUMNS} columns, got {len(out)}")
    return out


@router.get("/experiments")
def experiments(store: Store) -> Response:
    return json_response({"experiments": [e.to_dict() for e in store.list_experiments()]})


@router.get("/runs")
def runs(
    store: Store,
    experiment: Annotated[list[str] | None, Query()] = None,
    filter: str | None = None,
    order_by: Annotated[list[str] | None, Query()] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
    param: Annotated[list[str] | None, Query()] = None,
    metric: Annotated[list[str] | None, Query()] = None,
    keys: bool = False,
) -> Response:
    """One page of runs with only the chosen param and metric columns (sorting and paging in SQL)."""
    params, metrics = _columns(param, "param"), _columns(metric, "metric")
    all_keys = store.run_keys(experiments=experiment) if keys else None
    if all_keys is not None and param is None and metric is None:  # a first visit: the first few of each
        params, metrics = all_keys["params"][:DEFAULT_COLUMNS], all_keys["metrics"][:DEFAULT_COLUMNS]
    records = store.search_runs(experiments=experiment, filter=filter, order_by=order_by, limit=limit, offset=offset)
    body: dict[str, Any] = {
        "total": store.count_runs(experiments=experiment, filter=filter),
        "offset": offset,
        "limit": limit,
        "columns": {"params": params, "metrics": metrics},
        "runs": [_run_row(r, params, metrics) for r in records],
    }
    if all_keys is not None:
        body["keys"] = all_keys
    return json_response(body)


@router.get("/runs/{run_id}")
def run(run_id: str, store: Store) -> Response:
    record = store.get_run(run_id)
    parent: dict[str, str | None] | None = None
    if record.parent_id is not None:
        try:
            p = store.get_run(record.parent_id)
            parent = {"id": p.id, "name": p.name, "status": p.status}
        except NotFound:
            parent = {"id": record.parent_id, "name": None, "status": None}
    children = store.search_runs(
        filter=f"parent_id = {quote_string(run_id)}", order_by=["start_time ASC"], limit=MAX_CHILDREN
    )
    body = wire.run_to_json(record)
    body["duration"] = record.duration
    body["parent"] = parent
    body["children"] = [{"id": c.id, "name": c.name, "status": c.status} for c in children]
    body["artifacts"] = [a.to_dict() for a in store.list_artifacts(run_id)]
    return json_response(body)


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    finite = np.isfinite(values)
    out: list[float | None] = values.tolist()
    if not finite.all():
        for i in np.flatnonzero(~finite).tolist():
            out[i] = None
    return out


@router.get("/runs/{run_id}/chart")
def chart(
    run_id: str,
    key: str,
    store: Store,
    points: Annotated[int, Query(ge=10, le=MAX_POINTS)] = DEFAULT_POINTS,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """The points of ``key`` from ``offset`` on, at most about ``points`` of them (min and max per bucket).

    ``total`` is the number of points the run has, so a live page asks for
    ``offset=total`` next time and gets only the new points.
    """
    h = store.history(run_id, key)
    total = int(h.steps.shape[0])
    if total == 0:
        store.get_run(run_id)  # 404 for a run that does not exist; an unknown key is just empty
    steps, times, values = h.steps[offset:], h.timestamps[offset:], h.values[offset:]
    picked = minmax_indices(values, max(1, points // 2))
    downsampled = picked.shape[0] < values.shape[0]
    if downsampled:
        steps, times, values = steps[picked], times[picked], values[picked]
    return json_response(
        {
            "key": key,
            "total": total,
            "offset": offset,
            "downsampled": downsampled,
            "steps": steps.tolist(),
            "timestamps": times.tolist(),
            "values": _finite_or_none(values),
        }
    )


def _csv_float(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return repr(x)


@router.get("/runs/{run_id}/history")
def history(run_id: str, key: str, store: Store, format: Literal["csv", "json"] = "csv") -> Response:
    """Every point of ``key``, exact, as a file download (``csv`` or ``json``)."""
    store.get_run(run_id)
    h = store.history(run_id, key)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[:100] or "metric"
    headers = {
        "Content-Disposition": f'attachment; filename="{run_id[:32]}-{safe}.{format}"',
        "X-Content-Type-Options": "nosniff",
    }
    if format == "json":
        return json_response({"key": key, **wire.history_to_json(h)}, headers=headers)
    buf = io.StringIO()
    buf.write("step,timestamp,value\n")
    for step, ts, value in zip(h.steps.tolist(), h.timestamps.tolist(), h.values.tolist()):
        buf.write(f"{step},{ts!r},{_csv_float(value)}\n")
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


@router.get("/compare")
def compare(store: Store, run: Annotated[list[str], Query()]) -> Response:
    """The runs side by side: their params split into those that differ and those that agree."""
    ids = list(dict.fromkeys(run))
    if not 1 <= len(ids) <= MAX_COMPARE:
        raise ArgumentError(f"Argument run should name 1 to {MAX_COMPARE} runs, got {len(ids)}")
    records = [store.get_run(i) for i in ids]
    keys = sorted({k for r in records for k in r.params})
    differ = {k: [r.params.get(k) for r in records] for k in keys if len({r.params.get(k) for r in records}) > 1}
    same = {k: records[0].params.get(k) for k in keys if k not in differ}
    return json_response(
        {
            "runs": [
                {
                    "id": r.id,
                    "name": r.name,
                    "experiment": r.experiment,
                    "status": r.status,
                    "start_time": r.start_time,
                    "duration": r.duration,
                    "metrics": {k: _num(m.value) for k, m in r.metrics.items()},
                }
                for r in records
            ],
            "params_differ": differ,
            "params_same": same,
            "metric_keys": sorted({k for r in records for k in r.metrics}),
        }
    )
