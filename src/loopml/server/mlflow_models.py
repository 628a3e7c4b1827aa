"""MLflow's model routes over loopml: MLflow 3's logged models and the model registry.

Under ``/api/2.0/mlflow`` (shapes from the pinned client's protos, ``service.proto``
and ``model_registry.proto``):

- logged models: ``POST /logged-models`` (create), ``GET|PATCH|DELETE /logged-models/{id}``
  (get, finalize, delete), ``POST /logged-models/search``, ``PATCH /logged-models/{id}/tags``,
  ``DELETE /logged-models/{id}/tags/{key}``, ``POST /logged-models/{id}/params``;
  stored by :class:`loopml.store.mlflow_models.LoggedModels`, their files served by
  :mod:`loopml.server.mlflow_artifacts`;
- registered models: ``registered-models/create|get|search|update|delete|rename|get-latest-versions``
  on loopml's models (MLflow's registered-model tags have no place in loopml's registry: answered empty);
- model versions: ``model-versions/create|get|search|update|delete|get-download-uri``.
  ``create`` copies the MLflow model folder (a logged model's files, ``models:/<model_id>``,
  or a run's folder holding ``MLmodel``, ``runs:/<run_id>/<path>``) into loopml's registry as a
  version of format ``mlflow`` (:func:`loopml.store.mlflow_models.create_mlflow_version`) and
  answers ``READY`` at once; ``get-download-uri`` points into that version's zip
  (``mlflow-artifacts:/_registry/<name>/<version>``), so MLflow's client loads what loopml serves;
- aliases: ``POST|DELETE|GET registered-models/alias``: loopml's aliases, with loopml's rules
  (lowercase, not ``latest``), so moving ``production`` here swaps a ``loopml serve`` that follows it.

MLflow's stages (``transition-stage``) are not supported: aliases replace them since MLflow 2.9.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..errors import ArgumentError, Conflict, NotFound
from ..store import schema as s
from ..store.artifacts import safe_relpath
from ..store.mlflow_models import FORMAT, LoggedModel, LoggedModels, create_mlflow_version
from ..store.registry import ModelInfo, ModelVersion, RegistryStore, check_alias, check_model_name
from ..store.tracking import TrackingStore
from .errors import json_response
from .mlflow_artifacts import REGISTRY_ROOT, mlflow_experiment_id
from .mlflow_wire import DEFAULT_EXPERIMENT, DEFAULT_EXPERIMENT_ID, PREFIX, MlflowError, next_page_token, page_offset, request_params

__all__ = ["router"]

router = APIRouter(prefix=PREFIX, tags=["mlflow"])
_MAX_RESULTS = 1000


def get_store(request: Request) -> TrackingStore:
    return request.app.state.store  # type: ignore[no-any-return]


Store = Annotated[TrackingStore, Depends(get_store)]


async def _params(request: Request) -> dict[str, Any]:
    return await request_params(request, lists=("stages", "experiment_ids"))


Params = Annotated[dict[str, Any], Depends(_params)]


def _need(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if value is None or value == "":
        raise MlflowError("INVALID_PARAMETER_VALUE", f"Missing value for required parameter '{key}'")
    return str(value)


def _ms(t: float) -> int:
    return int(round(t * 1000))


def _tags_in(items: Any) -> dict[str, str]:
    if items is None:
        return {}
    if not isinstance(items, list) or not all(isinstance(t, dict) and "key" in t for t in items):
        raise MlflowError("INVALID_PARAMETER_VALUE", "tags should be a list of {'key': ..., 'value': ...}")
    return {str(t["key"]): str(t.get("value", "")) for t in items}


def _kv(d: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in sorted(d.items())]


def _max_results(params: dict[str, Any], default: int = 100, cap: int = _MAX_RESULTS) -> int:
    try:
        n = int(params.get("max_results") or default)
    except (TypeError, ValueError):
        raise MlflowError("INVALID_PARAMETER_VALUE", f"max_results should be an integer, got {params.get('max_results')!r}") from None
    if not 0 < n <= cap:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"max_results should be from 1 to {cap}, got {n}")
    return n


def _offset(params: dict[str, Any]) -> int:
    return page_offset(params.get("page_token"))


def _page(items: list[Any], offset: int, limit: int) -> tuple[list[Any], str | None]:
    page = items[offset : offset + limit]
    return page, (next_page_token(offset + limit) if offset + limit < len(items) else None)


# -- filters: the part of MLflow's filter language the registry searches use -------------------

_CLAUSE = re.compile(
    r"""^\s*(?P<key>[A-Za-z_][A-Za-z0-9_]*(?:\.(?:`[^`]+`|"[^"]+"|[A-Za-z0-9_.\-]+))?)\s*"""
    r"""(?P<op>!=|=|(?i:ilike|like|in))\s*(?P<value>'(?:[^']|'')*'|"[^"]*"|\((?:[^)]*)\))\s*$"""
)


def _unquote(v: str) -> str:
    return v[1:-1].replace("''", "'") if v[0] == "'" else v[1:-1]


def parse_filter(text: str | None, keys: tuple[str, ...]) -> list[tuple[str, str, Any]]:
    """``"name = 'a' AND tags.team = 'x'"`` -> ``[("name", "=", "a"), ("tags.team", "=", "x")]``."""
    if not text or not text.strip():
        return []
    out = []
    for clause in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        m = _CLAUSE.match(clause)
        if m is None:
            raise MlflowError("INVALID_PARAMETER_VALUE", f"Cannot read the filter clause {clause!r}; e.g. \"name = 'digits'\"")
        key, op, raw = m["key"], m["op"].upper(), m["value"]
        if key.startswith(("tags.", "tag.")):
            key = "tags." + key.split(".", 1)[1].strip("`\"")
        elif key not in keys:
            raise MlflowError("INVALID_PARAMETER_VALUE", f"Cannot filter on {key!r} here; filter on {', '.join(keys)} or tags.<key>")
        if op == "IN":
            value: Any = [_unquote(x.strip()) for x in raw[1:-1].split(",") if x.strip()]
        elif raw.startswith("("):
            raise MlflowError("INVALID_PARAMETER_VALUE", f"Only IN takes a list, in {clause!r}")
        else:
            value = _unquote(raw)
        out.append((key, op, value))
    return out


def _like(pattern: str, value: str, *, fold: bool) -> bool:
    rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, flags=re.IGNORECASE | re.DOTALL if fold else re.DOTALL) is not None


def _matches(fields: dict[str, Any], clauses: list[tuple[str, str, Any]]) -> bool:
    for key, op, want in clauses:
        have = fields.get(key)
        if op == "=":
            ok = have is not None and str(have) == want
        elif op == "!=":
            ok = have is None or str(have) != want
        elif op == "IN":
            ok = have is not None and str(have) in want
        else:
            ok = have is not None and _like(want, str(have), fold=op == "ILIKE")
        if not ok:
            return False
    return True


# -- experiments ----------------------------------------------------------------------------


def _experiment_name(store: TrackingStore, experiment_id: Any) -> str:
    eid = str(experiment_id or DEFAULT_EXPERIMENT_ID)
    if eid == DEFAULT_EXPERIMENT_ID:
        return DEFAULT_EXPERIMENT
    for e in store.list_experiments():
        if str(e.id) == eid and e.name != DEFAULT_EXPERIMENT:
            return e.name
    raise MlflowError("RESOURCE_DOES_NOT_EXIST", f"No experiment with id {eid}")


def _experiment_ids(store: TrackingStore, ids: list[Any]) -> dict[int, str]:
    """loopml experiment id -> MLflow id, for the MLflow ids asked for (unknown ones are left out)."""
    wanted = {str(i) for i in ids}
    return {
        e.id: mid for e in store.list_experiments() if (mid := mlflow_experiment_id(e.id, e.name)) in wanted
    }


# -- logged models --------------------------------------------------------------------------


def _logged_model_json(m: LoggedModel, exp: str) -> dict[str, Any]:
    return {
        "info": {
            "model_id": m.model_id,
            "experiment_id": exp,
            "name": m.name,
            "artifact_uri": f"mlflow-artifacts:/{exp}/models/{m.model_id}/artifacts",
            "creation_timestamp_ms": _ms(m.created_at),
            "last_updated_timestamp_ms": _ms(m.updated_at),
            "status": m.status,
            **({"status_message": m.status_message} if m.status_message else {}),
            **({"model_type": m.model_type} if m.model_type else {}),
            **({"source_run_id": m.source_run_id} if m.source_run_id else {}),
            "tags": _kv(m.tags),
        },
        "data": {"params": _kv(m.params), "metrics": []},
    }


def _model_answer(store: TrackingStore, m: LoggedModel) -> Response:
    exp = next(
        (mlflow_experiment_id(e.id, e.name) for e in store.list_experiments() if e.id == m.experiment_id),
        str(m.experiment_id),
    )
    return json_response({"model": _logged_model_json(m, exp)})


@router.post("/logged-models", summary="Create a logged model (MLflow 3)")
def create_logged_model(params: Params, store: Store) -> Response:
    name = _experiment_name(store, params.get("experiment_id"))
    m = LoggedModels(store).create(
        experiment=name, name=params.get("name") or None, source_run_id=params.get("source_run_id") or None,
        model_type=params.get("model_type") or None, tags=_tags_in(params.get("tags")), params=_tags_in(params.get("params")),
    )
    return _model_answer(store, m)


@router.post("/logged-models/search", summary="Search logged models")
def search_logged_models(params: Params, store: Store) -> Response:
    ids = params.get("experiment_ids") or []
    if not isinstance(ids, list) or not ids:
        raise MlflowError("INVALID_PARAMETER_VALUE", "experiment_ids should be a non-empty list of experiment ids")
    exps = _experiment_ids(store, ids)
    clauses = parse_filter(params.get("filter"), ("name", "source_run_id", "status", "model_type", "model_id"))
    equals = {k: v for k, op, v in clauses if op == "=" and not k.startswith("tags.")}
    tags = {k[5:]: v for k, op, v in clauses if op == "=" and k.startswith("tags.")}
    if any(op != "=" for _, op, _ in clauses):
        raise MlflowError("INVALID_PARAMETER_VALUE", "Logged models are filtered with '=' only, e.g. \"name = 'model'\"")
    order = params.get("order_by") or []
    ascending = bool(order and isinstance(order[0], dict) and order[0].get("ascending", True))
    if order and (not isinstance(order[0], dict) or order[0].get("field_name") not in ("creation_timestamp", "creation_time")):
        raise MlflowError("INVALID_PARAMETER_VALUE", "Logged models are ordered by creation_timestamp only")
    limit, offset = _max_results(params), _offset(params)
    found = LoggedModels(store).search(list(exps), equals=equals, tags=tags, ascending=ascending,
                                       limit=limit + 1, offset=offset)
    body: dict[str, Any] = {"models": [_logged_model_json(m, exps[m.experiment_id]) for m in found[:limit]]}
    if len(found) > limit:
        body["next_page_token"] = next_page_token(offset + limit)
    return json_response(body)


@router.get("/logged-models/{model_id}", summary="Get a logged model")
def get_logged_model(model_id: str, store: Store, request: Request) -> Response:
    allow = request.query_params.get("allow_deleted", "").lower() == "true"
    return _model_answer(store, LoggedModels(store).get(model_id, allow_deleted=allow))


@router.patch("/logged-models/{model_id}", summary="Finalize a logged model (its status)")
def finalize_logged_model(model_id: str, params: Params, store: Store) -> Response:
    return _model_answer(store, LoggedModels(store).finalize(model_id, _need(params, "status")))


@router.delete("/logged-models/{model_id}", summary="Delete a logged model and its files")
def delete_logged_model(model_id: str, store: Store) -> Response:
    LoggedModels(store).delete(model_id)
    return json_response({})


@router.patch("/logged-models/{model_id}/tags", summary="Set tags on a logged model")
def set_logged_model_tags(model_id: str, params: Params, store: Store) -> Response:
    LoggedModels(store).set_tags(model_id, _tags_in(params.get("tags")))
    return json_response({})


@router.delete("/logged-models/{model_id}/tags/{key:path}", summary="Delete a tag of a logged model")
def delete_logged_model_tag(model_id: str, key: str, store: Store) -> Response:
    LoggedModels(store).delete_tag(model_id, key)
    return json_response({})


@router.post("/logged-models/{model_id}/params", summary="Log params of a logged model")
def log_logged_model_params(model_id: str, params: Params, store: Store) -> Response:
    models = LoggedModels(store)
    m = models.get(model_id)
    new = _tags_in(params.get("params"))
    t = s.mlflow_logged_models
    with store.transaction() as conn:
        conn.execute(t.update().where(t.c.model_id == m.model_id).values(params=orjson.dumps({**m.params, **new}).decode()))
    return json_response({})


# -- registered models ---------------------------------------------------------------------


def _version_json(mv: ModelVersion) -> dict[str, Any]:
    details = mv.files[FORMAT].details if FORMAT in mv.files else {}
    out: dict[str, Any] = {
        "name": mv.name,
        "version": str(mv.version),
        "creation_timestamp": _ms(mv.created_at),
        "last_updated_timestamp": _ms(mv.created_at),
        "current_stage": "None",
        "source": details.get("source") or f"models:/{mv.name}/{mv.version}",
        "status": "READY",
        "tags": _kv(mv.tags),
        "aliases": list(mv.aliases),
    }
    if mv.description is not None:
        out["description"] = mv.description
    if mv.created_by:
        out["user_id"] = mv.created_by
    if mv.run_id:
        out["run_id"] = mv.run_id
    if details.get("model_id"):
        out["model_id"] = details["model_id"]
    return out


def _registered_json(info: ModelInfo, latest: list[ModelVersion]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": info.name,
        "creation_timestamp": _ms(info.created_at),
        "last_updated_timestamp": _ms(info.updated_at),
        "latest_versions": [_version_json(v) for v in latest],
        "aliases": [{"alias": a, "version": str(v)} for a, v in sorted(info.aliases.items())],
        "tags": [],
    }
    if info.description is not None:
        out["description"] = info.description
    return out


def _name(params: dict[str, Any]) -> str:
    name = _need(params, "name")
    try:
        return check_model_name(name)
    except ArgumentError as exc:
        raise MlflowError("INVALID_PARAMETER_VALUE", str(exc)) from None


def _registered(registry: RegistryStore, name: str) -> dict[str, Any]:
    info = registry.get_model(name)
    versions = registry.list_versions(name)
    return _registered_json(info, versions[:1])


@router.post("/registered-models/create", summary="Create a registered model")
def create_registered_model(params: Params, store: Store) -> Response:
    name = _name(params)
    registry = RegistryStore(store)
    m, now = s.models, time.time()
    with store.transaction() as conn:
        made = conn.execute(
            store.upsert(m).values(name=name, description=params.get("description"), created_at=now,
                                   updated_at=now, last_version=0).on_conflict_do_nothing(index_elements=["name"])
        ).rowcount
    if not made:
        raise MlflowError("RESOURCE_ALREADY_EXISTS", f"Registered Model (name={name}) already exists.")
    return json_response({"registered_model": _registered(registry, name)})


@router.get("/registered-models/get", summary="Get a registered model")
def get_registered_model(params: Params, store: Store) -> Response:
    return json_response({"registered_model": _registered(RegistryStore(store), _name(params))})


@router.get("/registered-models/search", summary="Search registered models")
def search_registered_models(params: Params, store: Store) -> Response:
    registry = RegistryStore(store)
    clauses = parse_filter(params.get("filter"), ("name",))
    # loopml's models carry no tags: a tag clause reads a missing tag (MLflow's client always sends
    # "tags.`mlflow.prompt.is_prompt` != 'true'", which every model passes)
    found = [i for i in registry.list_models() if _matches({"name": i.name}, clauses)]
    order = params.get("order_by") or []
    order = order if isinstance(order, list) else [order]
    if order and str(order[0]).lower().startswith(("last_updated_timestamp", "timestamp")):
        found.sort(key=lambda i: i.updated_at, reverse="desc" in str(order[0]).lower())
    elif order and "desc" in str(order[0]).lower():
        found.reverse()
    page, token = _page(found, _offset(params), _max_results(params))
    body: dict[str, Any] = {"registered_models": [_registered(registry, i.name) for i in page]}
    if token:
        body["next_page_token"] = token
    return json_response(body)


@router.patch("/registered-models/update", summary="Update a registered model's description")
def update_registered_model(params: Params, store: Store) -> Response:
    name = _name(params)
    registry = RegistryStore(store)
    registry.get_model(name)
    with store.transaction() as conn:
        conn.execute(s.models.update().where(s.models.c.name == name)
                     .values(description=params.get("description"), updated_at=time.time()))
    return json_response({"registered_model": _registered(registry, name)})


@router.delete("/registered-models/delete", summary="Delete a registered model and all its versions")
def delete_registered_model(params: Params, store: Store) -> Response:
    name = _name(params)
    registry = RegistryStore(store)
    registry.get_model(name)
    with store.transaction() as conn:
        conn.execute(s.model_aliases.delete().where(s.model_aliases.c.name == name))  # MLflow deletes them too
    for mv in registry.list_versions(name):
        registry.delete_version(name, mv.version)
    with store.transaction() as conn:
        conn.execute(s.models.delete().where(s.models.c.name == name))
    return json_response({})


@router.post("/registered-models/rename", summary="Rename a registered model")
def rename_registered_model(params: Params, store: Store) -> Response:
    name = _name(params)
    new = _need(params, "new_name")
    try:
        check_model_name(new)
    except ArgumentError as exc:
        raise MlflowError("INVALID_PARAMETER_VALUE", str(exc)) from None
    registry = RegistryStore(store)
    registry.get_model(name)
    with store.transaction() as conn:
        if conn.execute(s.models.select().where(s.models.c.name == new)).first() is not None:
            raise MlflowError("RESOURCE_ALREADY_EXISTS", f"Registered Model (name={new}) already exists.")
        row = conn.execute(s.models.select().where(s.models.c.name == name)).one()
        conn.execute(s.models.insert().values(**{**row._mapping, "name": new, "updated_at": time.time()}))
        # children first point at the new row, then the old row goes (the keys reference models.name);
        # the files keep their recorded paths, so nothing moves on disk
        for table in (s.model_versions, s.model_files, s.model_aliases, s.alias_events):
            conn.execute(table.update().where(table.c.name == name).values(name=new))
        conn.execute(s.models.delete().where(s.models.c.name == name))
    return json_response({"registered_model": _registered(registry, new)})


@router.post("/registered-models/get-latest-versions", summary="The newest version of a registered model")
@router.get("/registered-models/get-latest-versions", include_in_schema=False)
def get_latest_versions(params: Params, store: Store) -> Response:
    registry = RegistryStore(store)
    versions = registry.list_versions(_name(params))
    stages = params.get("stages") or []
    stages = stages if isinstance(stages, list) else [stages]
    # loopml has no stages: every version is in MLflow's "None" stage
    wanted = not stages or any(str(st).lower() == "none" for st in stages)
    return json_response({"model_versions": [_version_json(versions[0])] if versions and wanted else []})


# -- model versions -------------------------------------------------------------------------


def _version_number(params: dict[str, Any]) -> int:
    v = _need(params, "version")
    if not v.isdigit() or int(v) < 1:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"version should be a positive integer, got {v!r}")
    return int(v)


def _model_folder(store: TrackingStore, source: str, run_id: str | None, model_id: str | None, tmp: Path) -> tuple[Path, str | None, str | None]:
    """The MLflow model folder a version is made from, copied into ``tmp``; also its run id and model id."""
    models = LoggedModels(store)
    if model_id or source.startswith("models:/"):
        mid = model_id or source[len("models:/"):].strip("/")
        m = models.get(mid)
        return models.download(mid, tmp / "model"), run_id or m.source_run_id, mid
    if source.startswith("runs:/"):
        rid, _, folder = source[len("runs:/"):].partition("/")
        run_id = run_id or rid
    elif source.startswith("mlflow-artifacts:/"):
        parts = safe_relpath(source[len("mlflow-artifacts:/"):]).split("/")
        if len(parts) >= 4 and parts[1] == "models" and parts[3] == "artifacts":
            return models.download(parts[2], tmp / "model"), run_id, parts[2]
        if len(parts) < 3 or parts[2] != "artifacts":
            raise MlflowError("INVALID_PARAMETER_VALUE", f"source {source!r} is not a run's or a logged model's artifact path")
        rid, folder = parts[1], "/".join(parts[3:])
        run_id = run_id or rid
    else:
        raise MlflowError(
            "INVALID_PARAMETER_VALUE",
            f"source {source!r} should be models:/MODEL_ID, runs:/RUN_ID/PATH or an mlflow-artifacts:/ path of this "
            "server; files elsewhere cannot be registered",
        )
    if not folder:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"source {source!r} should name the model's folder in the run")
    folder = safe_relpath(folder)
    arts = store.list_artifacts(rid, folder)
    if not any(a.path == f"{folder}/MLmodel" for a in arts):
        raise NotFound(f"Run {rid} has no MLflow model at {folder!r} (no {folder}/MLmodel)")
    dest = tmp / "model"
    for a in arts:
        store.download_artifact(rid, a.path, dest / Path(a.path[len(folder) + 1:]).parent)
    return dest, run_id, None


def _create_version(store: TrackingStore, params: dict[str, Any]) -> ModelVersion:
    name = _name(params)
    registry = RegistryStore(store)
    registry.get_model(name)  # MLflow: the registered model must exist first
    source = _need(params, "source")
    with tempfile.TemporaryDirectory(prefix="loopml-mlflow-version-") as tmp:
        folder, run_id, model_id = _model_folder(store, source, params.get("run_id") or None, params.get("model_id") or None, Path(tmp))
        return create_mlflow_version(
            registry, name, folder, run_id=run_id, tags=_tags_in(params.get("tags")),
            description=params.get("description"), source=source, model_id=model_id,
        )


@router.post("/model-versions/create", summary="Register an MLflow model as a new version (READY at once)")
async def create_model_version(params: Params, store: Store) -> Response:
    mv = await run_in_threadpool(_create_version, store, params)
    return json_response({"model_version": _version_json(mv)})


@router.get("/model-versions/get", summary="Get a model version")
def get_model_version(params: Params, store: Store) -> Response:
    mv = RegistryStore(store).get_version(_name(params), _version_number(params))
    return json_response({"model_version": _version_json(mv)})


@router.patch("/model-versions/update", summary="Update a model version's description")
def update_model_version(params: Params, store: Store) -> Response:
    mv = RegistryStore(store).set_description(_name(params), _version_number(params), params.get("description"))
    return json_response({"model_version": _version_json(mv)})


@router.delete("/model-versions/delete", summary="Delete a model version")
def delete_model_version(params: Params, store: Store) -> Response:
    try:
        RegistryStore(store).delete_version(_name(params), _version_number(params))
    except Conflict as exc:
        raise MlflowError("RESOURCE_CONFLICT", str(exc)) from None
    return json_response({})


@router.get("/model-versions/search", summary="Search model versions")
@router.post("/model-versions/search", include_in_schema=False)
def search_model_versions(params: Params, store: Store) -> Response:
    registry = RegistryStore(store)
    clauses = parse_filter(params.get("filter"), ("name", "run_id", "source_path", "version_number", "model_id"))
    names = [v for k, op, v in clauses if k == "name" and op == "="]
    infos = [registry.get_model(names[0])] if names and _exists(registry, names[0]) else ([] if names else registry.list_models())
    found = []
    for info in infos:
        for mv in registry.list_versions(info.name):
            j = _version_json(mv)
            fields = {"name": mv.name, "run_id": mv.run_id, "source_path": j["source"], "version_number": str(mv.version),
                      "model_id": j.get("model_id"), **{f"tags.{k}": v for k, v in mv.tags.items()}}
            if _matches(fields, clauses):
                found.append(j)
    page, token = _page(found, _offset(params), _max_results(params, 10_000, cap=200_000))  # MLflow's own limits
    body: dict[str, Any] = {"model_versions": page}
    if token:
        body["next_page_token"] = token
    return json_response(body)


def _exists(registry: RegistryStore, name: str) -> bool:
    try:
        registry.get_model(name)
    except (NotFound, ArgumentError):
        return False
    return True


@router.get("/model-versions/get-download-uri", summary="Where MLflow's client downloads a version from")
def get_download_uri(params: Params, store: Store) -> Response:
    mv = RegistryStore(store).get_version(_name(params), _version_number(params))
    if FORMAT not in mv.files:
        raise NotFound(
            f"{mv.ref} has no MLflow model (its formats: {', '.join(sorted(mv.files))}); load it with loopml.load_model"
        )
    return json_response({"artifact_uri": f"mlflow-artifacts:/{REGISTRY_ROOT}/{mv.name}/{mv.version}"})


# -- aliases ----------------------------------------------------------------------------------


def _alias(params: dict[str, Any]) -> str:
    alias = _need(params, "alias")
    try:
        return check_alias(alias)
    except ArgumentError as exc:
        raise MlflowError("INVALID_PARAMETER_VALUE", str(exc)) from None


@router.post("/registered-models/alias", summary="Point an alias at a version (loopml serve follows it)")
def set_alias(params: Params, store: Store) -> Response:
    RegistryStore(store).set_alias(_name(params), _alias(params), _version_number(params), by="mlflow")
    return json_response({})


@router.delete("/registered-models/alias", summary="Delete an alias")
def delete_alias(params: Params, store: Store) -> Response:
    RegistryStore(store).delete_alias(_name(params), _alias(params), by="mlflow")
    return json_response({})


@router.get("/registered-models/alias", summary="The version an alias points at")
def get_by_alias(params: Params, store: Store) -> Response:
    name, alias = _name(params), _alias(params)
    mv = RegistryStore(store).resolve(f"{name}@{alias}")
    return json_response({"model_version": _version_json(mv)})
