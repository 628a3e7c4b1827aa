"""Dataset records and run lineage under ``/api/v1``.

=======  ==========================================  ====================================
method   path                                        store method
=======  ==========================================  ====================================
POST     /api/v1/runs/{run_id}/datasets              log_dataset (body: role and record)
GET      /api/v1/runs/{run_id}/datasets              run_datasets: ``{"datasets": {role: fingerprint}}``
GET      /api/v1/datasets/{fingerprint}              get_dataset: the record
=======  ==========================================  ====================================

Records are plain JSON (see :mod:`loopml.store.datasets`); NaN and
infinities inside a profile are null.

>>> import httpx
>>> httpx.get(f"{server_url}/api/v1/runs/{run_id}/datasets").json()    # a run the Trainer logged
{'datasets': {'train': '701273ed...', 'val': '...'}}
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import Response

from .errors import json_response
from .routes_tracking import PREFIX, Store, StrictBody

__all__ = ["router"]

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
