"""MLflow's tracking REST API under ``/api/2.0/mlflow``, over loopml's own store.

The official ``mlflow`` client works against ``loopml server`` with no change
but the tracking URI (docs/mlflow.md). What it logs is loopml data: an MLflow
run is a loopml run (same 32-hex ids), an MLflow experiment a loopml
experiment (its id as a string; ``"0"`` is loopml's ``default``, see
:mod:`loopml.server.mlflow_wire`), and loopml's own runs answer MLflow's
get and search. Units are converted at this boundary: MLflow's times are
milliseconds, loopml's seconds.

=========================================  =====================================
route (POST unless GET)                    loopml
=========================================  =====================================
experiments/get-by-name, get (GET)         lifecycle.get_experiment
experiments/create, search, update         lifecycle.create/search/rename_experiment
experiments/delete, restore                lifecycle.delete/restore_experiment
experiments/set-experiment-tag, delete-    lifecycle.set/delete_experiment_tag
runs/create, get (GET), update             create_run, get_run, set_status + set_run_name
runs/delete, restore                       lifecycle.delete/restore_run
runs/log-metric, log-parameter, set-tag,   TrackingStore.log_batch (one transaction,
log-batch                                  the write is the run's heartbeat)
runs/delete-tag                            delete_tag
runs/search                                search_runs (MLflow's filter parsed by loopml's
                                           parser, times converted in the tree)
runs/log-inputs, outputs                   lifecycle.link_run
metrics/get-history (GET),                 history
metrics/get-history-bulk-interval (GET)
=========================================  =====================================

Bodies are parsed with orjson, not pydantic, and answers are orjson bytes: a
search of 1,000 runs and a history of 100,000 points spend their time in the
database, not in validation models. No route needs ``mlflow`` installed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..errors import ArgumentError, Conflict, FilterError, NotFound
from ..store import lifecycle
from ..store.lifecycle import ExperimentInfo
from ..store.records import RunRecord
from ..store.search import And, Node, Not, Or, parse_filter
from ..store.tracking import MAX_PAGE_SIZE, TrackingStore
from ..store.validation import check_key, check_metric_value, check_step
from .mlflow_wire import DEFAULT_EXPERIMENT, DEFAULT_EXPERIMENT_ID, PREFIX, MlflowError, next_page_token, page_offset, request_params

__all__ = ["router"]

router = APIRouter(prefix=PREFIX, tags=["mlflow"])

# MLflow's limits (mlflow/utils/validation.py in the pinned client)
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_SEARCH_RESULTS = 50_000  # what MLflow's server accepts; one answer holds at most MAX_PAGE_SIZE runs
MAX_EXPERIMENTS_PER_PAGE = 50_000
MAX_BULK_RUNS = 200
RUN_NAME_TAG = "mlflow.runName"
USER_TAG = "mlflow.user"
_STATUS_NAMES = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}
_VIEW_TYPES = {"ACTIVE_ONLY": False, "DELETED_ONLY": True, "ALL": None, 1: False, 2: True, 3: None}

Handler = Callable[[TrackingStore, dict[str, Any]], Any]


# -- the wire: parameters in, JSON out ------------------------------------------------------------


def _route(method: str, path: str, handler: Handler) -> None:
    async def endpoint(request: Request) -> Response:
        params = await request_params(request)
        answer = await run_in_threadpool(handler, request.app.state.store, params)
        return Response(orjson.dumps(answer if answer is not None else {}), media_type="application/json")

    endpoint.__name__ = "mlflow_" + path.strip("/").replace("/", "_").replace("-", "_")
    router.add_api_route(path, endpoint, methods=[method], summary=f"MLflow {path}", include_in_schema=True)


def _get(name: str) -> Callable[[Handler], Handler]:
    def add(handler: Handler) -> Handler:
        _route("GET", name, handler)
        return handler

    return add


def _post(name: str) -> Callable[[Handler], Handler]:
    def add(handler: Handler) -> Handler:
        _route("POST", name, handler)
        return handler

    return add


def _invalid(name: str, value: Any, expected: str) -> MlflowError:
    # MLflow's own wording (its handlers' _assert_* checks), the value written as JSON: clients and
    # MLflow's tests match on "Invalid value ... for parameter '...' supplied"
    shown = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()[:200]
    return MlflowError("INVALID_PARAMETER_VALUE", f"Invalid value {shown} for parameter '{name}' supplied: expected {expected}")


def _missing(name: str) -> MlflowError:
    return MlflowError("INVALID_PARAMETER_VALUE", f"Missing value for required parameter '{name}'.")


def _str(p: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = p.get(name)
    if value is None or value == "":
        if required:
            raise _missing(name)
        return None
    if not isinstance(value, str):
        raise _invalid(name, value, "a string")
    return value


def _array(p: dict[str, Any], name: str) -> list[Any]:
    """A list parameter of a JSON body (tags, metrics, ...): absent is empty, anything but a list is refused."""
    value = p.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid(name, value, "a list")
    return value


def _tags(p: dict[str, Any]) -> dict[str, Any]:
    tags: dict[str, Any] = {}
    for i, t in enumerate(_array(p, "tags")):
        if not isinstance(t, dict) or not isinstance(t.get("key"), str) or not t["key"]:
            raise _missing(f"tags[{i}].key")
        tags[t["key"]] = t.get("value") or ""
    return tags


def _int(p: dict[str, Any], name: str, default: int | None = None, *, required: bool = False) -> int | None:
    value = p.get(name)
    if value is None or value == "":
        if required:
            raise _missing(name)
        return default
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise _invalid(name, value, "an integer") from None


def _list(p: dict[str, Any], name: str) -> list[Any]:
    value = p.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        return [value]  # a GET parameter given once
    return value


def _run_id_of(p: dict[str, Any]) -> str:
    name = "run_id" if p.get("run_id") not in (None, "") else "run_uuid"
    rid = p.get(name)
    if rid is None or rid == "":
        raise _missing("run_id")
    if not isinstance(rid, str):
        raise _invalid(name, rid, "a run id (a string)")
    return rid


def _float(value: Any, what: str) -> float:
    if isinstance(value, str):  # protobuf's JSON writes non-finite doubles as strings
        named = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
        if value in named:
            return named[value]
    try:
        return check_metric_value(what, value)
    except ArgumentError as exc:
        raise MlflowError("INVALID_PARAMETER_VALUE", str(exc)) from None


def _number(value: float) -> float | str:
    return value if math.isfinite(value) else ("NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity"))


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(round(seconds * 1000))


# -- experiments ----------------------------------------------------------------------------------


def _experiment_id(p: dict[str, Any], store: TrackingStore, name: str = "experiment_id") -> int:
    """loopml's id of MLflow's experiment id (``"0"``: the ``default`` experiment, made on first use)."""
    value = p.get(name)
    if value is None or value == "":
        raise _missing(name)
    return _to_loopml_id(store, str(value))


def _to_loopml_id(store: TrackingStore, mlflow_id: str) -> int:
    if mlflow_id == DEFAULT_EXPERIMENT_ID:
        return store.get_or_create_experiment(DEFAULT_EXPERIMENT).id
    if not mlflow_id.isdigit():
        raise MlflowError("INVALID_PARAMETER_VALUE", f"Invalid experiment ID '{mlflow_id}': loopml's experiment ids are integers")
    return int(mlflow_id)


def _mlflow_id(exp_id: int, name: str) -> str:
    return DEFAULT_EXPERIMENT_ID if name == DEFAULT_EXPERIMENT else str(exp_id)


def _experiment_json(e: ExperimentInfo) -> dict[str, Any]:
    eid = _mlflow_id(e.id, e.name)
    tags = dict(e.tags)
    if e.description and "mlflow.note.content" not in tags:
        tags["mlflow.note.content"] = e.description
    return {
        "experiment_id": eid,
        "name": e.name,
        "artifact_location": f"mlflow-artifacts:/{eid}",
        "lifecycle_stage": "active" if e.deleted_at is None else "deleted",
        "last_update_time": _ms(e.last_activity),
        "creation_time": _ms(e.created_at),
        "tags": [{"key": k, "value": v} for k, v in tags.items()],
    }


@_get("/experiments/get-by-name")
def get_experiment_by_name(store: TrackingStore, p: dict[str, Any]) -> Any:
    name = _str(p, "experiment_name")
    assert name is not None
    try:
        info = lifecycle.get_experiment(store, name=name)
    except NotFound:
        if name != DEFAULT_EXPERIMENT:
            raise MlflowError("RESOURCE_DOES_NOT_EXIST", f"Could not find experiment with name '{name}'") from None
        info = lifecycle.get_experiment(store, id=store.get_or_create_experiment(name).id)
    return {"experiment": _experiment_json(info)}


@_get("/experiments/get")
def get_experiment(store: TrackingStore, p: dict[str, Any]) -> Any:
    return {"experiment": _experiment_json(lifecycle.get_experiment(store, id=_experiment_id(p, store)))}


@_post("/experiments/create")
def create_experiment(store: TrackingStore, p: dict[str, Any]) -> Any:
    name = _str(p, "name")
    assert name is not None
    # checked for its type only: loopml keeps every experiment's artifacts in its own store
    # (docs/mlflow.md), so the location MLflow's client may ask for is not used
    _str(p, "artifact_location", required=False)
    tags = _tags(p)
    try:
        new_id = lifecycle.create_experiment(store, name, tags=tags)
    except Conflict as exc:
        raise MlflowError("RESOURCE_ALREADY_EXISTS", str(exc)) from None
    return {"experiment_id": _mlflow_id(new_id, name)}


# MLflow's experiment filter: clauses joined by AND; loopml's run filter language is about runs,
# so this small grammar is parsed here (it has no OR, no parentheses, no IN)
_EXP_CLAUSE = re.compile(
    r"""\s*(?:(?P<prefix>attributes?|attr|tags?)\.)?(?P<key>`[^`]+`|"[^"]+"|[\w.]+)\s*
        (?P<op>!=|<>|<=|>=|==|=|<|>|(?i:ilike|like))\s*
        (?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?)\s*(?:(?i:and)\b|$)""",
    re.X,
)
_EXP_ATTRIBUTES = {"name": "name", "creation_time": "created_at", "last_update_time": "last_activity", "experiment_id": "id"}


def _experiment_conditions(text: str, store: TrackingStore) -> list[tuple[str, str, str, Any]]:
    conditions: list[tuple[str, str, str, Any]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _EXP_CLAUSE.match(text, pos)
        if m is None or m.end() == pos:
            raise MlflowError(
                "INVALID_PARAMETER_VALUE",
                f"Invalid experiment filter {text!r} at {pos}: expected clauses such as name LIKE 'dig%' or "
                "tags.team = 'vision' joined by AND",
            )
        pos = m.end()
        key = m["key"].strip('`"')
        op = {"==": "=", "<>": "!="}.get(m["op"], m["op"].upper())
        raw = m["value"]
        value: Any = raw[1:-1].replace("\\'", "'").replace('\\"', '"') if raw[0] in "'\"" else float(raw)
        if (m["prefix"] or "").startswith("tag"):
            if not isinstance(value, str):
                raise MlflowError("INVALID_PARAMETER_VALUE", f"Tag values are strings: quote {raw}")
            conditions.append(("tag", key, op, value))
            continue
        attr = _EXP_ATTRIBUTES.get(key)
        if attr is None:
            raise MlflowError("INVALID_PARAMETER_VALUE", f"Invalid attribute key '{key}': expected one of {', '.join(_EXP_ATTRIBUTES)}")
        if attr == "name" and not isinstance(value, str):
            raise MlflowError("INVALID_PARAMETER_VALUE", f"The experiment name is a string: quote {raw}")
        if attr in ("created_at", "last_activity"):
            if isinstance(value, str):
                raise MlflowError("INVALID_PARAMETER_VALUE", f"{key} is a number of milliseconds, got {raw}")
            value = value / 1000.0
        if attr == "id":
            value = _to_loopml_id(store, str(value).removesuffix(".0"))
        conditions.append(("attribute", attr, op, value))
    return conditions


@_post("/experiments/search")
def search_experiments(store: TrackingStore, p: dict[str, Any]) -> Any:
    limit = _int(p, "max_results", 1000)
    assert limit is not None
    if not 0 < limit <= MAX_EXPERIMENTS_PER_PAGE:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"Invalid value {limit} for parameter 'max_results': it must be at most {MAX_EXPERIMENTS_PER_PAGE}")
    deleted = _view_type(p.get("view_type"))
    conditions = _experiment_conditions(p.get("filter") or "", store)
    order: list[tuple[str, bool]] = []
    for item in _list(p, "order_by"):
        m = re.fullmatch(r"\s*(?:attributes?\.)?(\w+)\s*(?:\s(ASC|DESC))?\s*", str(item), re.I)
        key = _EXP_ATTRIBUTES.get(m[1]) if m else None
        if m is None or key is None:
            raise MlflowError("INVALID_PARAMETER_VALUE", f"Invalid order_by clause {item!r}: expected e.g. 'name ASC' or 'creation_time DESC'")
        order.append((key, (m[2] or "ASC").upper() == "DESC"))
    offset = page_offset(p.get("page_token"))
    if deleted is not True:
        store.get_or_create_experiment(DEFAULT_EXPERIMENT)  # MLflow always has experiment "0"
    infos = lifecycle.search_experiments(store, conditions=conditions, order_by=order, deleted=deleted, limit=limit, offset=offset)
    out: dict[str, Any] = {"experiments": [_experiment_json(e) for e in infos]}
    if len(infos) == limit:
        out["next_page_token"] = next_page_token(offset + limit)
    return out


def _view_type(value: Any) -> bool | None:
    if value is None or value == "":
        return False
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if value not in _VIEW_TYPES:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"Invalid view type {value!r}: expected ACTIVE_ONLY, DELETED_ONLY or ALL")
    return _VIEW_TYPES[value]


@_post("/experiments/update")
def update_experiment(store: TrackingStore, p: dict[str, Any]) -> Any:
    eid = _experiment_id(p, store)
    new_name = _str(p, "new_name")
    assert new_name is not None
    try:
        lifecycle.rename_experiment(store, eid, new_name)
    except Conflict as exc:
        raise MlflowError("RESOURCE_ALREADY_EXISTS", str(exc)) from None


@_post("/experiments/delete")
def delete_experiment(store: TrackingStore, p: dict[str, Any]) -> Any:
    if str(p.get("experiment_id")) == DEFAULT_EXPERIMENT_ID:
        raise MlflowError("INVALID_PARAMETER_VALUE", "Cannot delete the default experiment '0'. This is an internally reserved experiment.")
    lifecycle.delete_experiment(store, _experiment_id(p, store))


@_post("/experiments/restore")
def restore_experiment(store: TrackingStore, p: dict[str, Any]) -> Any:
    lifecycle.restore_experiment(store, _experiment_id(p, store))


@_post("/experiments/set-experiment-tag")
def set_experiment_tag(store: TrackingStore, p: dict[str, Any]) -> Any:
    key = _str(p, "key")
    lifecycle.set_experiment_tag(store, _experiment_id(p, store), key or "", p.get("value") or "")


@_post("/experiments/delete-experiment-tag")
def delete_experiment_tag(store: TrackingStore, p: dict[str, Any]) -> Any:
    lifecycle.delete_experiment_tag(store, _experiment_id(p, store), _str(p, "key") or "")


# -- runs -----------------------------------------------------------------------------------------


def _run_json(r: RunRecord, links: list[tuple[str, str, int | None, Any]] | None = None) -> dict[str, Any]:
    eid = _mlflow_id(r.experiment_id, r.experiment)
    tags = [{"key": k, "value": v} for k, v in r.tags.items()]
    tags.append({"key": RUN_NAME_TAG, "value": r.name})
    if r.user and USER_TAG not in r.tags:
        tags.append({"key": USER_TAG, "value": r.user})
    info = {
        "run_id": r.id,
        "run_uuid": r.id,
        "run_name": r.name,
        "experiment_id": eid,
        "user_id": r.user or "",
        "status": r.status,
        "start_time": _ms(r.start_time),
        "artifact_uri": f"mlflow-artifacts:/{eid}/{r.id}/artifacts",
        "lifecycle_stage": "active" if r.deleted_at is None else "deleted",
    }
    if r.end_time is not None:
        info["end_time"] = _ms(r.end_time)
    metrics = [
        {"key": m.key, "value": _number(m.value), "timestamp": _ms(m.timestamp), "step": m.step}
        for m in r.metrics.values()
    ]
    out: dict[str, Any] = {
        "info": info,
        "data": {"metrics": metrics, "params": [{"key": k, "value": v} for k, v in r.params.items()], "tags": tags},
        "inputs": {},
        "outputs": {},
    }
    for kind, ref, step, details in links or ():
        if kind == "model_output":
            out["outputs"].setdefault("model_outputs", []).append({"model_id": ref, "step": step or 0})
        elif kind == "model_input":
            out["inputs"].setdefault("model_inputs", []).append({"model_id": ref})
        else:
            out["inputs"].setdefault("dataset_inputs", []).append(details)
    return out


def _user_run(store: TrackingStore, run_id: str) -> RunRecord:
    try:
        return store.get_run(run_id)
    except NotFound:
        raise MlflowError("RESOURCE_DOES_NOT_EXIST", f"Run with id={run_id} not found") from None


@_post("/runs/create")
def create_run(store: TrackingStore, p: dict[str, Any]) -> Any:
    eid = _to_loopml_id(store, str(p.get("experiment_id") or DEFAULT_EXPERIMENT_ID))
    exp = lifecycle.get_experiment(store, id=eid)
    if exp.deleted_at is not None:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"Could not create run under non-active experiment with id {_mlflow_id(eid, exp.name)}.")
    tags = _tags(p)
    name = tags.pop(RUN_NAME_TAG, None) or p.get("run_name") or None
    start = _int(p, "start_time")
    run = store.create_run(
        experiment=exp.name,
        name=name,
        tags=tags,
        user=p.get("user_id") or tags.get(USER_TAG) or None,
        git_commit=tags.get("mlflow.source.git.commit") or None,
        start_time=None if start is None else start / 1000.0,
    )
    if start is not None:
        # loopml starts a run's heartbeat at its start time (a store can record a run that began
        # earlier); MLflow's client sends the time it was called, and creating the run is its
        # first sign of life, so a start time in the past must not read as a dead run
        run.heartbeat_at = time.time()
        store.heartbeat([run.id], run.heartbeat_at)
    return {"run": _run_json(run)}


@_get("/runs/get")
def get_run(store: TrackingStore, p: dict[str, Any]) -> Any:
    run = _user_run(store, _run_id_of(p))
    return {"run": _run_json(run, lifecycle.run_links(store, [run.id]).get(run.id))}


@_post("/runs/update")
def update_run(store: TrackingStore, p: dict[str, Any]) -> Any:
    rid = _run_id_of(p)
    _user_run(store, rid)
    name = p.get("run_name")
    if name:
        lifecycle.set_run_name(store, rid, name)
    status = p.get("status")
    if status is not None and status != "":
        status = _STATUS_NAMES.get(status, status) if not isinstance(status, str) else status.upper()
        if status == "SCHEDULED":
            status = "RUNNING"  # loopml has no queue: a scheduled run reads as running
        if status not in _STATUS_NAMES.values():
            raise MlflowError("INVALID_PARAMETER_VALUE", f"Invalid run status {p.get('status')!r}: expected one of {', '.join(_STATUS_NAMES.values())}")
        end = _int(p, "end_time")
        store.set_status(rid, status, end_time=None if end is None else end / 1000.0)
    return {"run_info": _run_json(store.get_run(rid))["info"]}


@_post("/runs/delete")
def delete_run(store: TrackingStore, p: dict[str, Any]) -> Any:
    lifecycle.delete_run(store, _run_id_of(p))


@_post("/runs/restore")
def restore_run(store: TrackingStore, p: dict[str, Any]) -> Any:
    lifecycle.restore_run(store, _run_id_of(p))


def _metric_point(run_id: str, m: dict[str, Any], where: str) -> tuple[str, str, int, float, float]:
    key = m.get("key")
    if key is None or key == "":
        raise _missing(f"{where}key")
    if not isinstance(key, str):
        raise _invalid(f"{where}key", key, "a string")
    if m.get("value") is None:
        raise _missing(f"{where}value")
    named = {f"{where}{k}": v for k, v in m.items()}  # so that errors name 'metrics[0].timestamp'
    ts = _int(named, f"{where}timestamp", required=True)
    assert ts is not None
    try:
        step = check_step(_int(named, f"{where}step", 0))
        return (run_id, check_key(key, what="metric key"), step, ts / 1000.0, _float(m["value"], key))
    except ArgumentError as exc:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"{where}: {exc}" if where else str(exc)) from None


def _log(store: TrackingStore, run_id: str, points: list[Any], params: dict[str, Any], tags: dict[str, Any]) -> None:
    name = tags.pop(RUN_NAME_TAG, None)
    try:
        store.log_batch(run_id, points=points, params=params, tags=tags)
    except Conflict as exc:  # a deleted run
        raise MlflowError("INVALID_PARAMETER_VALUE", f"{exc}. The run must be in the 'active' state.") from None
    except NotFound:
        raise MlflowError("RESOURCE_DOES_NOT_EXIST", f"Run with id={run_id} not found") from None
    if name:
        lifecycle.set_run_name(store, run_id, name)


@_post("/runs/log-metric")
def log_metric(store: TrackingStore, p: dict[str, Any]) -> Any:
    rid = _run_id_of(p)
    _log(store, rid, [_metric_point(rid, p, "")], {}, {})


def _key_value(p: dict[str, Any]) -> tuple[str, str, str]:
    """``(run_id, key, value)`` of log-parameter and set-tag, checked in MLflow's order."""
    rid = _run_id_of(p)
    key = _str(p, "key") or ""
    value = p.get("value")
    if value is not None and not isinstance(value, str):
        raise _invalid("value", value, "a string")
    return rid, key, value or ""


@_post("/runs/log-parameter")
def log_param(store: TrackingStore, p: dict[str, Any]) -> Any:
    rid, key, value = _key_value(p)
    _log(store, rid, [], {key: value}, {})


@_post("/runs/set-tag")
def set_tag(store: TrackingStore, p: dict[str, Any]) -> Any:
    rid, key, value = _key_value(p)
    _log(store, rid, [], {}, {key: value})


@_post("/runs/log-batch")
def log_batch(store: TrackingStore, p: dict[str, Any]) -> Any:
    rid = _run_id_of(p)
    metrics, params, tags = _array(p, "metrics"), _array(p, "params"), _array(p, "tags")
    for what, items, limit in (("metrics", metrics, MAX_METRICS_PER_BATCH), ("params", params, MAX_PARAMS_TAGS_PER_BATCH), ("tags", tags, MAX_PARAMS_TAGS_PER_BATCH)):
        if len(items) > limit:
            raise MlflowError("INVALID_PARAMETER_VALUE", f"A batch logging request can contain at most {limit} {what}. Got {len(items)} {what}. Please split up {what} across multiple requests and try again.")
        if not all(isinstance(i, dict) for i in items):
            raise MlflowError("INVALID_PARAMETER_VALUE", f"Each of {what} should be an object with a key and a value")
    total = len(metrics) + len(params) + len(tags)
    if total > MAX_ENTITIES_PER_BATCH:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"A batch logging request can contain at most {MAX_ENTITIES_PER_BATCH} metrics, params, and tags. Got {total}.")
    points = [_metric_point(rid, m, f"metrics[{i}].") for i, m in enumerate(metrics)]
    pvals: dict[str, Any] = {}
    for i, item in enumerate(params):
        key = item.get("key")
        if not key:
            raise _missing(f"params[{i}].key")
        if key in pvals:
            raise MlflowError("INVALID_PARAMETER_VALUE", f"Duplicate parameter keys have been submitted: ['{key}']. Please ensure the request contains only one param value per param key.")
        pvals[key] = item.get("value") or ""
    tvals: dict[str, Any] = {}
    for i, item in enumerate(tags):
        if not item.get("key"):
            raise _missing(f"tags[{i}].key")
        tvals[item["key"]] = item.get("value") or ""
    _log(store, rid, points, pvals, tvals)


@_post("/runs/delete-tag")
def delete_tag(store: TrackingStore, p: dict[str, Any]) -> Any:
    rid = _run_id_of(p)
    key = _str(p, "key")
    run = _user_run(store, rid)
    if run.deleted_at is not None:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"The run {rid} must be in the 'active' state. Current state is deleted.")
    if key not in run.tags:
        raise MlflowError("RESOURCE_DOES_NOT_EXIST", f"No tag with name: {key} in run with id {rid}")
    store.delete_tag(rid, key or "")


@_post("/runs/log-inputs")
def log_inputs(store: TrackingStore, p: dict[str, Any]) -> Any:
    rid = _run_id_of(p)
    links: list[tuple[str, str, int | None, Any]] = []
    for item in _array(p, "datasets"):
        ds = item.get("dataset") if isinstance(item, dict) else None
        if not isinstance(ds, dict) or not ds.get("name") or not ds.get("digest"):
            raise MlflowError("INVALID_PARAMETER_VALUE", "Each of datasets should hold a dataset with a name and a digest")
        links.append(("dataset_input", f"{ds['digest']}/{ds['name']}"[:512], None, item))
    for item in _array(p, "models"):
        if not isinstance(item, dict) or not item.get("model_id"):
            raise MlflowError("INVALID_PARAMETER_VALUE", "Each of models should hold a model_id")
        links.append(("model_input", str(item["model_id"]), None, None))
    _user_run(store, rid)
    lifecycle.link_run(store, rid, links)


@_post("/runs/outputs")
def log_outputs(store: TrackingStore, p: dict[str, Any]) -> Any:
    rid = _run_id_of(p)
    links: list[tuple[str, str, int | None, Any]] = []
    for item in _array(p, "models"):
        if not isinstance(item, dict) or not item.get("model_id"):
            raise MlflowError("INVALID_PARAMETER_VALUE", "Each of models should hold a model_id")
        links.append(("model_output", str(item["model_id"]), _int(item, "step", 0), None))
    _user_run(store, rid)
    lifecycle.link_run(store, rid, links)


# MLflow's filter is loopml's filter language but for three things fixed up in the parsed tree:
# times are milliseconds, the run name is also the tag mlflow.runName, and `run.` means attributes
# (an alias in loopml's parser, with user_id for user)
def _mlflow_tree(node: Node) -> Node:
    if isinstance(node, (And, Or)):
        return type(node)(tuple(_mlflow_tree(i) for i in node.items))
    if isinstance(node, Not):
        return Not(_mlflow_tree(node.item))
    f = node.field
    if f.kind == "tags" and f.key == RUN_NAME_TAG:
        return dataclasses.replace(node, field=dataclasses.replace(f, kind="attributes", key="name"))
    if f.kind == "attributes" and f.key in ("start_time", "end_time") and node.value is not None:
        v = node.value
        value = tuple(x / 1000.0 for x in v) if isinstance(v, tuple) else v / 1000.0  # type: ignore[operator]
        return dataclasses.replace(node, value=value)
    return node


@_post("/runs/search")
def search_runs(store: TrackingStore, p: dict[str, Any]) -> Any:
    limit = _int(p, "max_results", 1000)
    assert limit is not None
    if not 0 < limit <= MAX_SEARCH_RESULTS:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"Invalid value {limit} for parameter 'max_results' supplied. It must be at most {MAX_SEARCH_RESULTS}")
    limit = min(limit, MAX_PAGE_SIZE)
    ids = [_to_loopml_id(store, str(e)) for e in _list(p, "experiment_ids")]
    deleted = _view_type(p.get("run_view_type"))
    text = p.get("filter") or ""
    try:
        tree = _mlflow_tree(parse_filter(text)) if text.strip() else None
    except FilterError as exc:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"Invalid filter {text!r}: {exc}") from None
    order = [str(o) for o in _list(p, "order_by")]
    offset = page_offset(p.get("page_token"))
    runs = store.search_runs(experiment_ids=ids, filter=tree, order_by=order, limit=limit, offset=offset, deleted=deleted)
    links = lifecycle.run_links(store, [r.id for r in runs])
    out: dict[str, Any] = {"runs": [_run_json(r, links.get(r.id)) for r in runs]}
    if len(runs) == limit:
        out["next_page_token"] = next_page_token(offset + limit)
    return out


# -- metric histories -----------------------------------------------------------------------------


def _history_json(key: str, steps: np.ndarray, times: np.ndarray, values: np.ndarray, run_id: str | None = None) -> list[dict[str, Any]]:
    ms = np.rint(times * 1000).astype(np.int64).tolist()
    vals: list[Any] = values.tolist()
    if not np.isfinite(values).all():
        vals = [_number(v) for v in vals]
    if run_id is None:
        return [{"key": key, "value": v, "timestamp": t, "step": s} for s, t, v in zip(steps.tolist(), ms, vals)]
    return [{"key": key, "value": v, "timestamp": t, "step": s, "run_id": run_id} for s, t, v in zip(steps.tolist(), ms, vals)]


@_get("/metrics/get-history")
def get_metric_history(store: TrackingStore, p: dict[str, Any]) -> Any:
    rid = _run_id_of(p)
    key = _str(p, "metric_key")
    assert key is not None
    limit = _int(p, "max_results")
    if limit is not None and limit <= 0:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"Invalid value {limit} for parameter 'max_results' supplied. It must be a positive integer.")
    offset = page_offset(p.get("page_token"))
    _user_run(store, rid)
    h = store.history(rid, key, offset=offset, limit=None if limit is None else limit + 1)
    more = limit is not None and len(h.steps) > limit
    n = len(h.steps) if limit is None else min(limit, len(h.steps))
    out: dict[str, Any] = {"metrics": _history_json(key, h.steps[:n], h.timestamps[:n], h.values[:n])}
    if more:
        out["next_page_token"] = next_page_token(offset + n)
    return out


@_get("/metrics/get-history-bulk-interval")
def get_metric_history_bulk_interval(store: TrackingStore, p: dict[str, Any]) -> Any:
    run_ids = [str(r) for r in _list(p, "run_ids")]
    if not run_ids:
        raise MlflowError("INVALID_PARAMETER_VALUE", "Missing value for required parameter 'run_ids'.")
    if len(run_ids) > MAX_BULK_RUNS:
        raise MlflowError("INVALID_PARAMETER_VALUE", f"GetMetricHistoryBulkInterval request must specify at most {MAX_BULK_RUNS} run_ids. Received {len(run_ids)} run_ids.")
    key = _str(p, "metric_key")
    assert key is not None
    limit = _int(p, "max_results", 2500)
    assert limit is not None
    if not 1 <= limit <= 2500:
        raise MlflowError("INVALID_PARAMETER_VALUE", "max_results must be between 1 and 2500.")
    start, end = _int(p, "start_step"), _int(p, "end_step")
    if (start is None) != (end is None):
        raise MlflowError("INVALID_PARAMETER_VALUE", "If either start step or end step are specified, both must be specified.")
    out: list[dict[str, Any]] = []
    for rid in sorted(set(run_ids)):
        _user_run(store, rid)
        h = store.history(rid, key)
        keep = np.ones(len(h.steps), dtype=bool) if start is None else (h.steps >= start) & (h.steps <= end)
        idx = np.flatnonzero(keep)
        if len(idx) > limit:  # evenly spaced points, the first and the last always in (MLflow's sampling)
            idx = idx[np.unique(np.linspace(0, len(idx) - 1, limit).round().astype(np.int64))]
        out.extend(_history_json(key, h.steps[idx], h.timestamps[idx], h.values[idx], rid))
    return {"metrics": out}

