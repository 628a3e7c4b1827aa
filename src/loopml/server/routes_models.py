"""The model registry under ``/api/v1/models``: the operations of ``loopml models ...`` over HTTP.

=======  ===================================================  ==========================================
method   path                                                 what
=======  ===================================================  ==========================================
GET      /api/v1/models                                       every model with its aliases and newest version
GET      /api/v1/models/{name}                                one model and its versions
POST     /api/v1/models/{name}/versions                       register from a run's artifacts: ``{"source": "runs:/RUN_ID/PATH"}``
GET      /api/v1/models/{name}/versions/{ref}                 a version by number, alias or ``latest``
DELETE   /api/v1/models/{name}/versions/{version}             delete (409 while an alias points at it)
PATCH    /api/v1/models/{name}/versions/{version}             merge ``measurements`` / set ``description``
GET      /api/v1/models/{name}/versions/{version}/files/{fmt} the file (sha256 checked first)
POST     /api/v1/models/{name}/versions/{version}/export      add formats: ``{"formats": ["onnx", "pte"]}``
POST     /api/v1/models/{name}/versions/{version}/quantize    a quantized variant: ``{"method": "static", "bits": 8}``
PUT      /api/v1/models/{name}/aliases/{alias}                point an alias: ``{"version": 3}``
DELETE   /api/v1/models/{name}/aliases/{alias}                remove an alias
GET      /api/v1/models/{name}/alias-history                  every alias move (``?alias=`` to pick one)
=======  ===================================================  ==========================================

A version is registered only from a run's artifacts (``runs:/...``): a
source naming a server path is refused with 400 (MLflow's CVE-2023-1177).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response

from ..errors import ArgumentError
from ..models.registry import export_version as do_export
from ..models.variants import quantize_version as do_quantize
from ..models.variants import server_data
from ..store.registry import RegistryStore
from .errors import json_response
from .routes_tracking import PREFIX, StrictBody

__all__ = ["router", "version_number"]

router = APIRouter(prefix=f"{PREFIX}/models", tags=["models"])


def get_registry(request: Request) -> RegistryStore:
    registry: RegistryStore | None = getattr(request.app.state, "registry", None)
    if registry is None:
        registry = request.app.state.registry = RegistryStore(request.app.state.store)
    return registry


Registry = Annotated[RegistryStore, Depends(get_registry)]


class RegisterIn(StrictBody):
    source: str = Field(description="The run's artifact folder holding loopml-model.json", examples=["runs:/3fa2c1d4e5f60718293a4b5c6d7e8f90/models/digits"])
    description: str | None = None
    tags: dict[str, str] | None = None
    created_by: str | None = None


class AliasIn(StrictBody):
    version: int = Field(ge=1, examples=[3])
    by: str | None = Field(None, description="Who moves the alias (recorded in its history)")


class PatchVersionIn(StrictBody):
    measurements: dict[str, Any] | None = None
    description: str | None = None


class ExportIn(StrictBody):
    formats: list[str] = Field(min_length=1, examples=[["onnx", "pte"]])


class QuantizeIn(StrictBody):
    method: str = Field(examples=["static"], description="dynamic, static, tqt or ptq")
    bits: int = Field(8, examples=[8])
    data: str | None = Field(
        None, examples=["iris"],
        description="A stored dataset's fingerprint or a bundled dataset's name (loopml.data.load) to calibrate and "
        "test on; default: the datasets logged with the version's run",
    )
    seed: int = 0
    epochs: int | None = Field(None, description="TQT fine-tuning epochs")


def version_number(registry: RegistryStore, name: str, ref: str) -> int:
    return int(ref) if ref.isdigit() else registry.resolve(f"{name}@{ref}").version


@router.get("", summary="Every model, with its aliases and newest version")
def list_models(registry: Registry) -> Response:
    return json_response({"models": [m.to_dict() for m in registry.list_models()]})


@router.get("/{name}", summary="A model and all its versions, newest first")
def get_model(name: str, registry: Registry) -> Response:
    info = registry.get_model(name)
    versions = registry.list_versions(name)
    return json_response({"model": info.to_dict(), "versions": [v.to_dict() for v in versions]})


@router.post("/{name}/versions", status_code=201, summary="Register a version from a run's artifacts")
async def create_version(name: str, body: RegisterIn, registry: Registry) -> Response:
    version = await run_in_threadpool(
        registry.create_version_from_run,
        name,
        body.source,
        created_by=body.created_by,
        tags=body.tags,
        description=body.description,
    )
    return json_response(version.to_dict(), 201)


@router.get("/{name}/versions/{ref}", summary="A version by number, alias or 'latest'")
def get_version(name: str, ref: str, registry: Registry) -> Response:
    return json_response(registry.get_version(name, version_number(registry, name, ref)).to_dict())


@router.delete("/{name}/versions/{version}", status_code=204, summary="Delete a version (refused while an alias points at it)")
def delete_version(name: str, version: int, registry: Registry) -> Response:
    registry.delete_version(name, version)
    return Response(status_code=204)


@router.patch("/{name}/versions/{version}", summary="Merge measurements or set the description")
def patch_version(name: str, version: int, body: PatchVersionIn, registry: Registry) -> Response:
    result = registry.get_version(name, version)
    if body.measurements is not None:
        result = registry.set_measurements(name, version, body.measurements)
    if "description" in body.model_fields_set:  # an explicit null clears it, as RegistryStore.set_description(None) does
        result = registry.set_description(name, version, body.description)
    return json_response(result.to_dict())


@router.get(
    "/{name}/versions/{version}/files/{fmt}",
    summary="Download one format's file (its sha256 is checked first)",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_file(name: str, version: int, fmt: str, registry: Registry) -> Response:
    path = await run_in_threadpool(registry.file_path, name, version, fmt)
    sha = registry.get_version(name, version).files[fmt].sha256
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=path.name,
        content_disposition_type="attachment",
        headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox", "X-Sha256": sha},
    )


@router.post("/{name}/versions/{version}/export", summary="Add formats (onnx, pte, pt2), checked against the module")
async def export_version(name: str, version: int, body: ExportIn, registry: Registry) -> Response:
    result = await run_in_threadpool(do_export, registry, f"{name}/{version}", body.formats)
    return json_response(result.to_dict())


@router.post("/{name}/versions/{version}/quantize", status_code=201, summary="Make a quantized variant as a new version")
async def quantize_version(name: str, version: int, body: QuantizeIn, registry: Registry) -> Response:
    if body.data is not None and not server_data(body.data):  # never a path on the server's disk
        raise ArgumentError(f"Field data should be a stored dataset's fingerprint or a bundled dataset's name, got {body.data!r}")
    result = await run_in_threadpool(
        do_quantize, registry, f"{name}/{version}", method=body.method, bits=body.bits, data=body.data,
        seed=body.seed, epochs=body.epochs,
    )
    return json_response(result.to_dict(), 201)


@router.put("/{name}/aliases/{alias}", summary="Point an alias at a version (the move is recorded)")
def set_alias(name: str, alias: str, body: AliasIn, registry: Registry) -> Response:
    return json_response(registry.set_alias(name, alias, body.version, by=body.by).to_dict())


@router.delete("/{name}/aliases/{alias}", summary="Remove an alias (recorded in its history)")
def delete_alias(name: str, alias: str, registry: Registry, by: str | None = None) -> Response:
    return json_response(registry.delete_alias(name, alias, by=by).to_dict())


@router.get("/{name}/alias-history", summary="Every alias move: from, to, when, by whom")
def alias_history(name: str, registry: Registry, alias: str | None = None) -> Response:
    registry.get_model(name)
    return json_response({"events": [e.to_dict() for e in registry.alias_history(name, alias)]})
