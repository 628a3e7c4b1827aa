"""MLflow's proxied artifact routes (``mlflow server --serve-artifacts`` style) over loopml's artifacts.

=======  ==============================================================  ====================================
method   path (under /api/2.0/mlflow-artifacts)                          what
=======  ==============================================================  ====================================
PUT      /artifacts/{path}                                               upload one file (the body, streamed)
GET      /artifacts/{path}                                               download one file (streamed)
DELETE   /artifacts/{path}                                               delete a file or folder
GET      /artifacts?path=...                                             list a folder's direct entries
=======  ==============================================================  ====================================

``path`` is one of:

- ``{experiment_id}/{run_id}/artifacts/{rel}``: run ``run_id``'s loopml artifact
  ``{rel}`` (the same files ``/api/v1/runs/{run_id}/artifacts`` lists, sha256
  recorded); a run's ``artifact_uri`` is ``mlflow-artifacts:/{experiment_id}/{run_id}/artifacts``;
- ``{experiment_id}/models/{model_id}/artifacts/{rel}``: a logged model's file
  (:class:`loopml.store.mlflow_models.LoggedModels`: an artifact of its run under
  ``_mlflow_models/{model_id}/``, a folder hidden from, and closed to, the run's own paths);
- ``_registry/{name}/{version}/{rel}``: read only, a member of a registered
  version's ``mlflow`` zip, what ``get-download-uri`` hands out, so that MLflow's
  client loads exactly the bytes loopml serves (sha256 checked).

Every path goes through :func:`loopml.store.artifacts.safe_relpath` (``..``,
``%2e%2e``, absolute paths refused) before anything is read or written, and the
experiment in a path must be the run's or the model's.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response, StreamingResponse

from ..errors import NotFound
from ..store.artifacts import safe_relpath
from ..store.mlflow_models import FORMAT, MODELS_PREFIX, LoggedModels
from ..store.registry import RegistryStore
from ..store.tracking import TrackingStore
from .errors import json_response
from .mlflow_wire import ARTIFACTS_PREFIX, DEFAULT_EXPERIMENT, DEFAULT_EXPERIMENT_ID, MlflowError

__all__ = ["REGISTRY_ROOT", "mlflow_experiment_id", "router"]

REGISTRY_ROOT = "_registry"
_SAFE_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}

router = APIRouter(prefix=ARTIFACTS_PREFIX, tags=["mlflow"])


def get_store(request: Request) -> TrackingStore:
    return request.app.state.store  # type: ignore[no-any-return]


Store = Annotated[TrackingStore, Depends(get_store)]


def mlflow_experiment_id(experiment_id: int, name: str) -> str:
    """MLflow's id of a loopml experiment: ``"0"`` for loopml's ``default``, else its loopml id."""
    return DEFAULT_EXPERIMENT_ID if name == DEFAULT_EXPERIMENT else str(experiment_id)


@dataclass(frozen=True)
class Target:
    """Where an MLflow artifact path leads: a run's artifact, a logged model's file, or a zip member."""

    kind: str  # "run" | "model" | "registry"
    owner: str  # run id, model id, or "name/version"
    rel: str  # "" for the root folder


def _bad(path: str, why: str) -> MlflowError:
    return MlflowError(
        "INVALID_PARAMETER_VALUE",
        f"Artifact path {path!r} {why}; paths look like EXPERIMENT_ID/RUN_ID/artifacts/FILE, "
        "EXPERIMENT_ID/models/MODEL_ID/artifacts/FILE or _registry/NAME/VERSION/FILE",
    )


def _experiment_of_run(store: TrackingStore, run_id: str) -> str:
    run = store.get_run(run_id)
    return mlflow_experiment_id(run.experiment_id, run.experiment)


def resolve(store: TrackingStore, path: str, *, root_ok: bool = False) -> Target:
    """The checked :class:`Target` of an MLflow artifact path (MlflowError or NotFound when it names none)."""
    clean = safe_relpath(path)  # '..', '%2e%2e', absolute: refused before anything else
    parts = clean.split("/")
    if parts[0] == REGISTRY_ROOT:
        if len(parts) < 3 or not parts[2].isdigit():
            raise _bad(path, "does not name a registered version")
        return Target("registry", f"{parts[1]}/{parts[2]}", "/".join(parts[3:]))
    if len(parts) >= 4 and parts[1] == "models" and parts[3] == "artifacts":
        model = LoggedModels(store).get(parts[2], allow_deleted=False)
        if parts[0] != _model_experiment(store, model.experiment_id):
            raise NotFound(f"Logged model {model.model_id} is not in experiment {parts[0]}")
        rel = "/".join(parts[4:])
        if not rel and not root_ok:
            raise _bad(path, "names the model's folder, not a file")
        return Target("model", model.model_id, rel)
    if len(parts) >= 3 and parts[2] == "artifacts" and parts[1].isalnum():
        if parts[0] != _experiment_of_run(store, parts[1]):
            raise NotFound(f"Run {parts[1]} is not in experiment {parts[0]}")
        rel = "/".join(parts[3:])
        if rel.split("/")[0] == MODELS_PREFIX:
            raise _bad(path, f"is in {MODELS_PREFIX}/, where logged models keep their files (use the model's own path)")
        if not rel and not root_ok:
            raise _bad(path, "names the run's artifact folder, not a file")
        return Target("run", parts[1], rel)
    raise _bad(path, "is not an artifact path of this server")


def _model_experiment(store: TrackingStore, experiment_id: int) -> str:
    for e in store.list_experiments():
        if e.id == experiment_id:
            return mlflow_experiment_id(e.id, e.name)
    raise NotFound(f"No experiment {experiment_id}")


def _registry_zip(store: TrackingStore, owner: str) -> Path:
    name, version = owner.split("/")
    registry = RegistryStore(store)
    mv = registry.get_version(name, int(version))
    if FORMAT not in mv.files:
        raise NotFound(
            f"{mv.ref} has no MLflow model (its formats: {', '.join(sorted(mv.files))}); load it with loopml.load_model"
        )
    return registry.file_path(name, int(version), FORMAT)


# -- upload, download, delete ---------------------------------------------------------------


@router.put("/artifacts/{path:path}", summary="Upload one artifact file (MLflow's proxied upload)")
async def upload(path: str, request: Request, store: Store) -> Response:
    target = await run_in_threadpool(resolve, store, path)  # refuse a bad path before reading the body
    if target.kind == "registry":
        raise MlflowError("PERMISSION_DENIED", "Registered versions are read only; register a new version instead")
    with tempfile.TemporaryDirectory(prefix="loopml-mlflow-upload-") as tmp:
        spool = Path(tmp) / "body"
        async with await anyio.open_file(spool, "wb") as f:  # streamed: a model file is never whole in memory
            async for chunk in request.stream():
                await f.write(chunk)
        if target.kind == "run":
            await run_in_threadpool(store.log_artifact, target.owner, spool, target.rel)
        else:
            await run_in_threadpool(LoggedModels(store).put_file, target.owner, target.rel, spool)
    return json_response({})


def _zip_member(archive: Path, member: str) -> Iterator[bytes]:
    with zipfile.ZipFile(archive) as z, z.open(member) as f:
        while chunk := f.read(1 << 20):
            yield chunk


@router.get("/artifacts/{path:path}", summary="Download one artifact file (streamed)")
def download(path: str, store: Store) -> Response:
    target = resolve(store, path)
    if target.kind == "registry":
        archive = _registry_zip(store, target.owner)
        with zipfile.ZipFile(archive) as z:
            if target.rel not in z.namelist():
                raise NotFound(f"{target.owner} has no file {target.rel!r} in its MLflow model")
        return StreamingResponse(_zip_member(archive, target.rel), media_type="application/octet-stream",
                                 headers=_SAFE_HEADERS)
    if target.kind == "run":
        file = store.artifact_path(target.owner, target.rel)
    else:
        file = LoggedModels(store).file_path(target.owner, target.rel)
    return FileResponse(file, media_type="application/octet-stream", headers=_SAFE_HEADERS)


@router.delete("/artifacts/{path:path}", summary="Delete an artifact file or folder")
def delete(path: str, store: Store) -> Response:
    target = resolve(store, path)
    if target.kind == "registry":
        raise MlflowError("PERMISSION_DENIED", "Registered versions are read only; delete the version instead")
    if target.kind == "run":
        store.delete_artifact(target.owner, target.rel)
    else:
        LoggedModels(store).delete_file(target.owner, target.rel)
    return json_response({})


# -- listing --------------------------------------------------------------------------------


def _entries(paths: list[tuple[str, int]], folder: str) -> list[dict[str, object]]:
    """The direct entries of ``folder`` among ``(file path, size)``: MLflow's ``{"path", "is_dir", "file_size"}``."""
    if folder and any(p == folder for p, _ in paths):  # a file: MLflow lists it as itself
        size = next(sz for p, sz in paths if p == folder)
        return [{"path": folder.rsplit("/", 1)[-1], "is_dir": False, "file_size": size}]
    start = folder + "/" if folder else ""
    out: dict[str, dict[str, object]] = {}
    for p, size in paths:
        if not p.startswith(start):
            continue
        head, sep, _ = p[len(start):].partition("/")
        if sep:
            out.setdefault(head, {"path": head, "is_dir": True})
        else:
            out[head] = {"path": head, "is_dir": False, "file_size": size}
    return [out[k] for k in sorted(out)]


@router.get("/artifacts", summary="List a folder's files and folders (?path=...)")
def list_artifacts(store: Store, path: Annotated[str | None, Query()] = None) -> Response:
    if not path:
        return json_response({"files": []})  # the root holds experiments, which are not listed here
    target = resolve(store, path, root_ok=True)
    if target.kind == "registry":
        with zipfile.ZipFile(_registry_zip(store, target.owner)) as z:
            paths = [(i.filename, i.file_size) for i in z.infolist() if not i.is_dir()]
    elif target.kind == "run":
        arts = store.list_artifacts(target.owner, target.rel or None)
        paths = [(a.path, a.size) for a in arts if a.path.split("/")[0] != MODELS_PREFIX]
    else:
        paths = [(a.path, a.size) for a in LoggedModels(store).list_files(target.owner)]
    return json_response({"files": _entries(paths, target.rel)})
