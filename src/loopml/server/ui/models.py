"""The model registry in the UI: the Models and Model pages and the JSON they read.

=====  ======================================  ==================================================
GET    /ui/models                              page: every model (versions, newest, aliases)
GET    /ui/model?name=&version=                page: one model's versions, one version, aliases
GET    /ui/api/models                          every model with its version count and aliases
GET    /ui/api/models/{name}                   the versions table (variants under their parent)
                                               and the alias history
GET    /ui/api/models/{name}/versions/{ver}    one version: signature, files, metrics,
                                               measurements, lineage, tags
=====  ======================================  ==================================================

The pages are public shells (:func:`~loopml.server.ui.pages.add_page`); the
``/ui/api/models`` routes sit behind the server's token like every route.
The rows hold what ``loopml models show`` prints (:mod:`loopml.models.report`),
as numbers: the page formats them.

:mod:`loopml.server.ui` includes ``router`` in the server's app:

>>> import httpx
>>> [m["name"] for m in httpx.get(f"{server_url}/ui/api/models").json()["models"]]
['digits']
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from ...store.registry import AliasEvent, ModelVersion
from ..errors import json_response
from ..routes_models import Registry
from .pages import Page, add_page

__all__ = ["EXAMPLE_FILE", "router", "version_kind", "version_rows"]

EXAMPLE_FILE = "input_example"  # a file of every version, not a format to load

router = APIRouter(include_in_schema=False)
add_page(router, Page(path="/ui/models", title="Models", script="models.js", nav=True))
add_page(router, Page(path="/ui/model", title="Model", script="model.js"))


def version_kind(v: ModelVersion) -> str:
    """``fp32``, or the quantization method and bits of a variant: ``static int8``."""
    method = v.tags.get("quantization.method")
    return "fp32" if method is None else f"{method} int{v.tags.get('quantization.bits', '?')}"


def _row(v: ModelVersion, depth: int) -> dict[str, Any]:
    m = v.measurements
    raw = m.get("latency_ms")
    latency: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return {
        "version": v.version,
        "depth": depth,
        "kind": version_kind(v),
        "parent_version": v.parent_version,
        "formats": [{"format": f.format, "size": f.size} for k, f in sorted(v.files.items()) if k != EXAMPLE_FILE],
        "accuracy": m.get("accuracy"),
        "size_bytes": m.get("size_bytes"),
        "latency_ms": {"1": latency.get("1"), "64": latency.get("64")},
        "aliases": list(v.aliases),
        "run_id": v.run_id,
        "created_at": v.created_at,
        "created_by": v.created_by,
        "description": v.description,
    }


def version_rows(versions: list[ModelVersion]) -> list[dict[str, Any]]:
    """The versions in ascending order, each variant right under its parent (``depth`` 1, 2, ...)."""
    present = {v.version for v in versions}
    children: dict[int, list[ModelVersion]] = {}
    roots = []
    for v in sorted(versions, key=lambda v: v.version):
        if v.parent_version is not None and v.parent_version in present and v.parent_version != v.version:
            children.setdefault(v.parent_version, []).append(v)
        else:
            roots.append(v)
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()

    def walk(v: ModelVersion, depth: int) -> None:
        if v.version in seen:  # a parent cycle cannot be made through the API; never loop on one
            return
        seen.add(v.version)
        rows.append(_row(v, depth))
        for c in children.get(v.version, []):
            walk(c, depth + 1)

    for r in roots:
        walk(r, 0)
    for v in versions:  # only reachable through a cycle: list them anyway
        if v.version not in seen:
            walk(v, 0)
    return rows


def _event(e: AliasEvent) -> dict[str, Any]:
    return {"alias": e.alias, "from": e.from_version, "to": e.to_version, "at": e.at, "by": e.by}


@router.get("/ui/api/models")
def models(registry: Registry) -> Response:
    return json_response({"models": [m.to_dict() for m in registry.list_models()]})


@router.get("/ui/api/models/{name}")
def model(name: str, registry: Registry) -> Response:
    info = registry.get_model(name)
    versions = registry.list_versions(name)
    history = registry.alias_history(name)
    return json_response(
        {
            "model": info.to_dict(),
            "versions": version_rows(versions),
            "alias_history": [_event(e) for e in reversed(history)],  # newest first
        }
    )


@router.get("/ui/api/models/{name}/versions/{version}")
def model_version(name: str, version: int, registry: Registry) -> Response:
    v = registry.get_version(name, version)
    body = v.to_dict()
    body.pop("profile", None)  # the drift reference can be large; the page only says whether there is one
    body["has_profile"] = v.profile is not None
    body["kind"] = version_kind(v)
    body["files"] = [
        {"format": f.format, "size": f.size, "sha256": f.sha256, "details": f.details}
        for _k, f in sorted(v.files.items())
    ]
    return json_response(body)
