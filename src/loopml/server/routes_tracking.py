"""The tracking REST API under ``/api/v1``: one route per :class:`~loopml.store.TrackingStore` method.

=======  ====================================================  =====================================
method   path                                                  store method
=======  ====================================================  =====================================
GET      /api/v1/experiments                                   list_experiments
POST     /api/v1/experiments                                   get_or_create_experiment
POST     /api/v1/runs                                          create_run
GET      /api/v1/runs?experiment=&filter=&order_by=&limit=     search_runs
GET      /api/v1/runs/count?experiment=&filter=                count_runs
GET      /api/v1/runs/keys?experiment=                         run_keys
GET      /api/v1/runs/{run_id}                                 get_run
POST     /api/v1/runs/{run_id}/status                          set_status
POST     /api/v1/runs/{run_id}/params                          log_params
POST     /api/v1/runs/{run_id}/tags                            set_tags
DELETE   /api/v1/runs/{run_id}/tags/{key}                      delete_tag
POST     /api/v1/heartbeat                                     heartbeat
POST     /api/v1/metrics                                       log_metrics (columnar batch)
GET      /api/v1/runs/{run_id}/metrics                         metric_keys
GET      /api/v1/runs/{run_id}/history?key=&format=            history (JSON or binary)
GET      /api/v1/runs/{run_id}/artifacts?prefix=               list_artifacts
PUT      /api/v1/runs/{run_id}/artifacts/{path}                log_artifact (octet-stream body)
GET      /api/v1/runs/{run_id}/artifacts/{path}                download_artifact
DELETE   /api/v1/runs/{run_id}/artifacts/{path}                delete_artifact
=======  ====================================================  =====================================

Wire formats of the metrics batch and the history: :mod:`loopml.tracking.wire`.
Errors: :mod:`loopml.server.errors`. The routes find the store in
``request.app.state.store`` (see :func:`loopml.server.app.create_app`).

>>> import httpx
>>> run = httpx.post(f"{server_url}/api/v1/runs", json={"experiment": "digits"}).json()
>>> run["status"]
'RUNNING'
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response

from ..errors import ArgumentError
from ..store.tracking import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, TrackingStore
from ..tracking import wire
from .errors import json_response

__all__ = ["ARTIFACT_UPLOAD", "router"]

PREFIX = "/api/v1"
# (method, path regex) of the routes whose body is a file's bytes (see security.py)
ARTIFACT_UPLOAD = ("PUT", r"^/api/v1/runs/[^/]+/artifacts/.+$")
# Run ids known to exist, so a metrics batch does not look its runs up each
# time; runs are never deleted, so the set only needs bounding.
_KNOWN_RUNS_MAX = 100_000

router = APIRouter(prefix=PREFIX, tags=["tracking"])


def get_store(request: Request) -> TrackingStore:
    return request.app.state.store  # type: ignore[no-any-return]


Store = Annotated[TrackingStore, Depends(get_store)]


def _no_content() -> Response:
    return Response(status_code=204)


# -- bodies and answers (the answers document /docs; routes return orjson bytes) --


class StrictBody(BaseModel):
    """A request body that refuses unknown fields (a typo is a 422, not silently ignored); every route's body."""

    model_config = ConfigDict(extra="forbid")


class ExperimentIn(StrictBody):
    name: str = Field(description="Experiment name; created if it does not exist.", examples=["digits"])


class ExperimentOut(BaseModel):
    id: int
    name: str
    created_at: float
    description: str | None = None
    run_count: int = 0
    last_activity: float | None = None


class ExperimentsOut(BaseModel):
    experiments: list[ExperimentOut]


class RunIn(StrictBody):
    experiment: str = Field("default", examples=["digits"])
    name: str | None = None
    parent_id: str | None = None
    params: dict[str, Any] | None = Field(None, examples=[{"lr": "0.01"}])
    tags: dict[str, Any] | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    host: str | None = None
    user: str | None = None
    command: str | None = None
    start_time: float | None = None
    run_id: str | None = Field(None, description="A run id to use (1 to 32 letters and digits).")


class MetricSummaryOut(BaseModel):
    key: str
    step: int
    timestamp: float
    value: float | str = Field(description='A number, or "NaN", "Infinity", "-Infinity".')
    min: float | str
    max: float | str
    count: int


class RunOut(BaseModel):
    id: str
    experiment_id: int
    experiment: str
    name: str
    status: Literal["RUNNING", "FINISHED", "FAILED", "KILLED"]
    start_time: float
    end_time: float | None
    heartbeat_at: float
    parent_id: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    host: str | None = None
    user: str | None = None
    command: str | None = None
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, MetricSummaryOut]


class RunsOut(BaseModel):
    runs: list[RunOut]


class CountOut(BaseModel):
    count: int


class StatusIn(StrictBody):
    status: Literal["RUNNING", "FINISHED", "FAILED", "KILLED"]
    end_time: float | None = None


class ParamsIn(StrictBody):
    params: dict[str, Any] = Field(examples=[{"lr": "0.01", "epochs": "10"}])


class TagsIn(StrictBody):
    tags: dict[str, Any] = Field(examples=[{"stage": "tuning"}])


class HeartbeatIn(StrictBody):
    run_ids: list[str] = Field(max_length=MAX_PAGE_SIZE, description="The server stamps its own time.")


class MetricBatchIn(BaseModel):
    """The columnar metrics batch (documentation only: the route parses it with orjson)."""

    run_ids: list[str] = Field(description="Distinct run ids.")
    keys: list[str] = Field(description="Distinct metric keys.")
    run: list[int] | None = Field(None, description="Per point: index into run_ids (omit if one run).")
    key: list[int] | None = Field(None, description="Per point: index into keys (omit if one key).")
    steps: list[int]
    timestamps: list[float]
    values: list[float | Literal["NaN", "Infinity", "-Infinity"]]


class KeysOut(BaseModel):
    keys: list[str]


class HistoryOut(BaseModel):
    steps: list[int]
    timestamps: list[float]
    values: list[float | Literal["NaN", "Infinity", "-Infinity"]]


class ArtifactOut(BaseModel):
    path: str
    size: int
    sha256: str
    created_at: float


class ArtifactsOut(BaseModel):
    artifacts: list[ArtifactOut]


# -- experiments ----------------------------------------------------------


@router.get("/experiments", response_model=ExperimentsOut, summary="List experiments")
def list_experiments(store: Store) -> Response:
    return json_response({"experiments": [e.to_dict() for e in store.list_experiments()]})


@router.post("/experiments", response_model=ExperimentOut, summary="Get or create an experiment")
def get_or_create_experiment(body: ExperimentIn, store: Store) -> Response:
    return json_response(store.get_or_create_experiment(body.name).to_dict())


# -- runs -----------------------------------------------------------------


@router.post("/runs", status_code=201, response_model=RunOut, summary="Create a run")
def create_run(body: RunIn, store: Store) -> Response:
    if body.run_id is not None and not (body.run_id.isalnum() and body.run_id.isascii() and len(body.run_id) <= 32):
        raise ArgumentError(f"Argument run_id should be 1 to 32 letters and digits, got {body.run_id!r:.60}")
    record = store.create_run(**body.model_dump())
    return json_response(wire.run_to_json(record), 201)


def _page(limit: int, offset: int) -> None:
    if not 0 < limit <= MAX_PAGE_SIZE:
        raise ArgumentError(
            f"Argument limit should be an integer from 1 to {MAX_PAGE_SIZE}, got {limit}; page through more with offset"
        )
    if offset < 0:
        raise ArgumentError(f"Argument offset should be a non-negative integer, got {offset}")


@router.get("/runs", response_model=RunsOut, summary="Search runs")
def search_runs(
    store: Store,
    experiment: Annotated[list[str] | None, Query(description="Only runs of these experiments (repeatable).")] = None,
    filter: Annotated[str | None, Query(description="e.g. metrics.acc > 0.9 and params.lr = '0.01'")] = None,
    order_by: Annotated[list[str] | None, Query(description="e.g. 'metrics.acc DESC' (repeatable).")] = None,
    limit: Annotated[int, Query(description=f"At most {MAX_PAGE_SIZE}.")] = DEFAULT_PAGE_SIZE,
    offset: int = 0,
) -> Response:
    _page(limit, offset)
    records = store.search_runs(experiments=experiment, filter=filter, order_by=order_by, limit=limit, offset=offset)
    return json_response({"runs": [wire.run_to_json(r) for r in records]})


@router.get("/runs/count", response_model=CountOut, summary="Count runs")
def count_runs(
    store: Store,
    experiment: Annotated[list[str] | None, Query()] = None,
    filter: str | None = None,
) -> Response:
    return json_response({"count": store.count_runs(experiments=experiment, filter=filter)})


class KeysByKindOut(BaseModel):
    params: list[str]
    metrics: list[str]
    tags: list[str]


@router.get("/runs/keys", response_model=KeysByKindOut, summary="The distinct param, metric and tag keys of runs")
def run_keys(store: Store, experiment: Annotated[list[str] | None, Query()] = None) -> Response:
    return json_response(store.run_keys(experiments=experiment))


@router.get("/runs/{run_id}", response_model=RunOut, summary="Get a run")
def get_run(run_id: str, store: Store) -> Response:
    return json_response(wire.run_to_json(store.get_run(run_id)))


@router.post("/runs/{run_id}/status", status_code=204, summary="Set a run's status (finish it)")
def set_status(run_id: str, body: StatusIn, store: Store) -> Response:
    store.set_status(run_id, body.status, end_time=body.end_time)
    return _no_content()


@router.post("/runs/{run_id}/params", status_code=204, summary="Log params (write-once)")
def log_params(run_id: str, body: ParamsIn, store: Store) -> Response:
    store.log_params(run_id, body.params)
    return _no_content()


@router.post("/runs/{run_id}/tags", status_code=204, summary="Set tags")
def set_tags(run_id: str, body: TagsIn, store: Store) -> Response:
    store.set_tags(run_id, body.tags)
    return _no_content()


@router.delete("/runs/{run_id}/tags/{key:path}", status_code=204, summary="Delete a tag")
def delete_tag(run_id: str, key: str, store: Store) -> Response:
    store.delete_tag(run_id, key)
    return _no_content()


@router.post("/heartbeat", status_code=204, summary="Mark runs as alive (one UPDATE)")
def heartbeat(body: HeartbeatIn, store: Store) -> Response:
    store.heartbeat(body.run_ids)  # the server's clock: a client's cannot keep a dead run alive
    return _no_content()


# -- metrics --------------------------------------------------------------


def _ingest(store: TrackingStore, known: set[str], body: bytes) -> int:
    run_ids, points = wire.decode_metric_batch(body)
    for rid in run_ids:
        if rid not in known:
            store.get_run(rid)  # NotFound -> 404, before anything is written
            if len(known) >= _KNOWN_RUNS_MAX:
                known.clear()
            known.add(rid)
    store.log_metrics(points)
    return len(points)


@router.post(
    "/metrics",
    response_model=CountOut,
    summary="Log a batch of metric points (columnar JSON)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": MetricBatchIn.model_json_schema()}},
        }
    },
)
async def log_metrics(request: Request, store: Store) -> Response:
    body = await request.body()
    n = await run_in_threadpool(_ingest, store, request.app.state.known_runs, body)
    return json_response({"count": n})


@router.get("/runs/{run_id}/metrics", response_model=KeysOut, summary="The run's metric keys")
def metric_keys(run_id: str, store: Store) -> Response:
    return json_response({"keys": store.metric_keys(run_id)})


@router.get(
    "/runs/{run_id}/history",
    response_model=HistoryOut,
    summary="The points of one metric, a page of at most wire.MAX_HISTORY_POINTS",
    description="format=binary answers application/octet-stream in the layout of loopml.tracking.wire.encode_history.",
)
def history(
    run_id: str,
    key: str,
    store: Store,
    format: Literal["json", "binary"] = "json",
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(description=f"At most {wire.MAX_HISTORY_POINTS}; page with offset.")] = wire.MAX_HISTORY_POINTS,
) -> Response:
    if not 0 < limit <= wire.MAX_HISTORY_POINTS:
        raise ArgumentError(
            f"Argument limit should be an integer from 1 to {wire.MAX_HISTORY_POINTS}, got {limit}; "
            "page through more with offset"
        )
    h = store.history(run_id, key, offset=offset, limit=limit)
    if format == "binary":
        return Response(wire.encode_history(h), media_type="application/octet-stream")
    return json_response(wire.history_to_json(h))


# -- artifacts ------------------------------------------------------------


@router.get("/runs/{run_id}/artifacts", response_model=ArtifactsOut, summary="List artifacts")
def list_artifacts(run_id: str, store: Store, prefix: str | None = None) -> Response:
    if prefix:
        # the listing reads the database, but a prefix that leads out of the
        # run's folder (through '..' or a planted symlink) is refused all the same
        store.artifacts.check(run_id, prefix)
    return json_response({"artifacts": [a.to_dict() for a in store.list_artifacts(run_id, prefix)]})


@router.put(
    "/runs/{run_id}/artifacts/{path:path}",
    status_code=201,
    response_model=ArtifactOut,
    summary="Upload one artifact file (the body is its bytes)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_artifact(run_id: str, path: str, request: Request, store: Store) -> Response:
    # Refuse a bad path or run before reading a byte of the body.
    await run_in_threadpool(store.artifacts.check, run_id, path)
    await run_in_threadpool(store.get_run, run_id)
    with tempfile.TemporaryDirectory(prefix="loopml-upload-") as tmp:
        spool = Path(tmp) / "body"
        async with await anyio.open_file(spool, "wb") as f:
            async for chunk in request.stream():
                await f.write(chunk)
        infos = await run_in_threadpool(store.log_artifact, run_id, spool, path)
    return json_response(infos[0].to_dict(), 201)


@router.get(
    "/runs/{run_id}/artifacts/{path:path}",
    summary="Download one artifact file",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_artifact(run_id: str, path: str, store: Store) -> Response:
    file = store.artifact_path(run_id, path)
    return FileResponse(
        file,
        media_type="application/octet-stream",
        filename=file.name,
        content_disposition_type="attachment",
        # never rendered by a browser: an uploaded HTML file cannot script this origin
        headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"},
    )


@router.delete("/runs/{run_id}/artifacts/{path:path}", status_code=204, summary="Delete an artifact (file or folder)")
def delete_artifact(run_id: str, path: str, store: Store) -> Response:
    store.delete_artifact(run_id, path)
    return _no_content()
