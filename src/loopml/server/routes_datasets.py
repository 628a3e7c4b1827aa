"""Dataset records and run lineage under ``/api/v1``.

=======  ==========================================  ====================================
method   path                                        store method
=======  ==========================================  ====================================
POST     /api/v1/runs/{run_id}/datasets              log_dataset (body: role and record)
GET      /api/v1/runs/{run_id}/datasets              run_datasets: ``{"datasets": {role: fingerprint}}``
GET      /api/v1/datasets/{fingerprint}              get_dataset: the record
POST     /api/v1/datasets                            put_dataset (body: record, origin, predictions)
GET      /api/v1/datasets?prefix=&limit=&offset=     list_datasets: ``{"datasets": [...]}``
PUT      /api/v1/datasets/{fingerprint}/rows         put_dataset_rows (octet-stream body: the .npz)
GET      /api/v1/datasets/{fingerprint}/rows         download_dataset_rows (sha256-checked)
GET      /api/v1/datasets/{fingerprint}/lineage      dataset_lineage
GET      /api/v1/requests/{request_id}/datasets      datasets_of_request: ``{"datasets": [...]}``
=======  ==========================================  ====================================

An uploaded rows file is read (NumPy, no pickle) and hashed before it is
kept: rows that do not have the fingerprint they are stored under are
refused (400 ``invalid_data``), so no client can put other content under a
fingerprint. The body is spooled to a temporary file, never held in memory.

Records are plain JSON (see :mod:`loopml.store.datasets`); NaN and
infinities inside a profile are null.

>>> import httpx
>>> httpx.get(f"{server_url}/api/v1/runs/{run_id}/datasets").json()    # a run the Trainer logged
{'datasets': {'train': '701273ed...', 'val': '...'}}
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response

from ..store.datasets import MAX_LINEAGE, check_fingerprint
from ..store.tracking import MAX_PAGE_SIZE
from .errors import json_response
from .routes_tracking import PREFIX, Store, StrictBody

__all__ = ["ROWS_UPLOAD", "router"]

# (method, path regex) of the upload whose body is a file's bytes (see security.py)
ROWS_UPLOAD = ("PUT", r"^/api/v1/datasets/[0-9a-f]{64}/rows$")

router = APIRouter(prefix=PREFIX, tags=["datasets"])


class DatasetRecord(BaseModel):
    fingerprint: str = Field(description="sha256 of the inputs and labels (64 hex digits)")
    name: str
    task: str = Field(examples=["classification"])
    n_rows: int
    schema_: dict[str, Any] = Field(alias="schema")
    profile: dict[str, Any]
    source: str | None = None
    created_at: float | None = None


class LogDatasetIn(StrictBody):
    role: str = Field("train", examples=["train"], description="train, val, test, eval, ...")
    dataset: dict[str, Any] = Field(description="The record: fingerprint, name, task, n_rows, schema, profile, source")


class RunDatasetsOut(BaseModel):
    datasets: dict[str, str]


@router.post("/runs/{run_id}/datasets", status_code=204, summary="Store a dataset record and link it to the run")
def log_dataset(run_id: str, body: LogDatasetIn, store: Store) -> Response:
    store.log_dataset(run_id, body.dataset, body.role)
    return Response(status_code=204)


@router.get("/runs/{run_id}/datasets", response_model=RunDatasetsOut, summary="The run's datasets by role")
def run_datasets(run_id: str, store: Store) -> Response:
    return json_response({"datasets": store.run_datasets(run_id)})


@router.get("/datasets/{fingerprint}", response_model=DatasetRecord, summary="A dataset record")
def get_dataset(fingerprint: str, store: Store) -> Response:
    return json_response(store.get_dataset(fingerprint))


class PutDatasetIn(StrictBody):
    dataset: dict[str, Any] = Field(description="The record: fingerprint, name, task, n_rows, schema, profile, source")
    origin: dict[str, Any] | None = Field(None, examples=[{"kind": "labels", "model": "digits", "version": 3}])
    predictions: list[tuple[str, int]] | None = Field(None, description="(request_id, row) pairs the rows came from")


class DatasetsOut(BaseModel):
    datasets: list[dict[str, Any]]


@router.post("/datasets", status_code=204, summary="Store a dataset record without a run (origin, predictions)")
def put_dataset(body: PutDatasetIn, store: Store) -> Response:
    store.put_dataset(body.dataset, origin=body.origin, predictions=body.predictions)
    return Response(status_code=204)


@router.get("/datasets", response_model=DatasetsOut, summary="Dataset records, newest first")
def list_datasets(
    store: Store,
    prefix: str | None = None,
    limit: int = Query(100, ge=1, le=MAX_PAGE_SIZE),
    offset: int = Query(0, ge=0),
) -> Response:
    return json_response({"datasets": store.list_datasets(prefix=prefix, limit=limit, offset=offset)})


def _check_upload(path: Path, fingerprint: str) -> None:
    from ..data.rows import read_rows

    read_rows(path, fingerprint)  # DataError when it is not an archive of x and y with this fingerprint


@router.put(
    "/datasets/{fingerprint}/rows",
    summary="Upload a dataset's rows (the body is the .npz with arrays x and y)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def put_rows(fingerprint: str, request: Request, store: Store) -> Response:
    check_fingerprint(fingerprint)
    await run_in_threadpool(store.get_dataset, fingerprint)  # an unknown record is refused before the body is read
    with tempfile.TemporaryDirectory(prefix="loopml-rows-") as tmp:
        spool = Path(tmp) / "rows.npz"
        async with await anyio.open_file(spool, "wb") as f:
            async for chunk in request.stream():
                await f.write(chunk)
        await run_in_threadpool(_check_upload, spool, fingerprint)
        info = await run_in_threadpool(store.put_dataset_rows, fingerprint, spool)
    return json_response(info, 201 if info.get("created") else 200)


@router.get(
    "/datasets/{fingerprint}/rows",
    summary="Download a dataset's rows (.npz)",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def get_rows(fingerprint: str, store: Store) -> Response:
    file = store.dataset_rows_path(check_fingerprint(fingerprint))
    return FileResponse(
        file, media_type="application/octet-stream", filename=file.name, content_disposition_type="attachment",
        headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"},
    )


@router.get("/datasets/{fingerprint}/lineage", summary="Runs and versions that used a dataset; predictions it came from")
def dataset_lineage(fingerprint: str, store: Store, limit: int = Query(100, ge=1, le=MAX_LINEAGE)) -> Response:
    return json_response(store.dataset_lineage(fingerprint, limit=limit))


@router.get("/requests/{request_id}/datasets", response_model=DatasetsOut, summary="The datasets a logged request went into")
def datasets_of_request(request_id: str, store: Store) -> Response:
    return json_response({"datasets": store.datasets_of_request(request_id)})
