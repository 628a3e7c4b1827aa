"""MLflow models in loopml's store: MLflow 3's logged models, and MLflow model folders as registry versions.

**Logged models** (what ``mlflow.<flavor>.log_model`` creates through the
MLflow-compatible API, :mod:`loopml.server.mlflow_models`) are rows of
``mlflow_logged_models``. Their files are *artifacts of a run*, under
``_mlflow_models/<model_id>/``: of the run that logged the model, or, for a model
logged outside any run, of a run made to hold it (named ``mlflow-model-<name>``,
tagged ``mlflow_logged_model``). Going through the tracking store's
artifact methods keeps one path check, one sha256 record and one storage backend
(the local folder or the S3 root) for every file, and loopml's own API lists a
run's models with its other artifacts.

**Versions**: :func:`create_mlflow_version` registers an MLflow model folder
(``MLmodel``, ``data/...``) as one file of format ``"mlflow"``, a zip of the
folder, with a loopml signature converted from ``MLmodel``'s tensor signature so
that ``loopml serve`` can check requests. What loading needs (the flavor, the
serialization, the model file's path in the zip) is kept in the file's details,
so that loading never parses YAML.

Example::

    models = LoggedModels(store)
    m = models.create(experiment_id=1, name="model", source_run_id=run_id)
    models.put_file(m.model_id, "MLmodel", Path("model/MLmodel"))
    v = create_mlflow_version(registry, "digits", Path("model"), run_id=run_id)
    sorted(v.files)                                   # ['mlflow']
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import ArgumentError, ArtifactPathError, NotFound
from . import schema as s
from .artifacts import safe_relpath
from .records import ArtifactInfo

if TYPE_CHECKING:
    from .registry import ModelVersion, RegistryStore
    from .tracking import TrackingStore

__all__ = [
    "FORMAT",
    "HOLDER_TAG",
    "MODELS_PREFIX",
    "STATUSES",
    "LoggedModel",
    "LoggedModels",
    "create_mlflow_version",
    "read_mlmodel",
    "zip_model_dir",
]

FORMAT = "mlflow"  # the registry format of an MLflow model folder (a zip of it)
MODELS_PREFIX = "_mlflow_models"  # where a logged model's files sit among its run's artifacts
HOLDER_TAG = "mlflow_logged_model"  # on a run made to hold a model logged outside any run
STATUSES = ("LOGGED_MODEL_PENDING", "LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED")
_MAX_ZIP_FILES = 10_000


@dataclass(frozen=True, kw_only=True)
class LoggedModel:
    """One MLflow logged model; its files are artifacts of ``storage_run_id`` under :attr:`prefix`."""

    model_id: str
    experiment_id: int
    name: str
    source_run_id: str | None
    storage_run_id: str
    model_type: str | None
    status: str
    status_message: str | None
    deleted: bool
    tags: dict[str, str]
    params: dict[str, str]
    created_at: float
    updated_at: float

    @property
    def prefix(self) -> str:
        return f"{MODELS_PREFIX}/{self.model_id}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_model_id(model_id: Any) -> str:
    # ids are made here ("m-" + 32 hex digits); anything else cannot name one, and must not reach a path
    if not isinstance(model_id, str) or not model_id.startswith("m-") or not model_id[2:].isalnum() or len(model_id) > 64:
        raise NotFound(f"No logged model {model_id!r}: logged model ids look like 'm-' followed by 32 hex digits")
    return model_id


def _str_map(value: Mapping[str, Any] | None, what: str) -> dict[str, str]:
    out = {}
    for k, v in (value or {}).items():
        if not isinstance(k, str) or not k or len(k) > 250:
            raise ArgumentError(f"Argument {what} should have non-empty string keys of at most 250 characters; got {k!r}")
        out[k] = "" if v is None else str(v)
    return out


class LoggedModels:
    """MLflow 3's logged models over a :class:`~loopml.store.tracking.TrackingStore` (see the module docstring)."""

    def __init__(self, store: "TrackingStore") -> None:
        self.store = store

    def _row(self, r: Any) -> LoggedModel:
        return LoggedModel(
            model_id=r.model_id, experiment_id=int(r.experiment_id), name=r.name, source_run_id=r.source_run_id,
            storage_run_id=r.storage_run_id, model_type=r.model_type, status=r.status,
            status_message=r.status_message, deleted=bool(r.deleted), tags=json.loads(r.tags),
            params=json.loads(r.params), created_at=r.created_at, updated_at=r.updated_at,
        )

    def create(
        self,
        *,
        experiment: str,
        name: str | None = None,
        source_run_id: str | None = None,
        model_type: str | None = None,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> LoggedModel:
        """A new logged model (status ``LOGGED_MODEL_PENDING``) in the experiment named ``experiment``."""
        model_id = "m-" + uuid.uuid4().hex
        name = name or f"model-{model_id[2:10]}"
        if not isinstance(name, str) or len(name) > 250 or "/" in name:
            raise ArgumentError(f"Argument name should be at most 250 characters without '/'; got {name!r}")
        clean_tags, clean_params = _str_map(tags, "tags"), _str_map(params, "params")
        exp = self.store.get_or_create_experiment(experiment)
        try:
            run = self.store.get_run(source_run_id) if source_run_id else None
        except NotFound:
            # MLflow records a source run it does not know (one of another server, say) as given:
            # so does loopml, keeping the files in a holder run as for a model without a run
            run = None
        if run is not None:
            if run.experiment_id != exp.id:
                raise ArgumentError(
                    f"Run {source_run_id} belongs to experiment {run.experiment!r}, not {exp.name!r}; "
                    "log the model in the run's experiment"
                )
            storage = source_run_id
        else:
            holder = self.store.create_run(
                experiment=exp.name, name=f"mlflow-model-{name}"[:200], tags={HOLDER_TAG: model_id}
            )
            self.store.set_status(holder.id, "FINISHED")
            storage = holder.id
        now = time.time()
        with self.store.transaction() as conn:
            conn.execute(
                s.mlflow_logged_models.insert().values(
                    model_id=model_id, experiment_id=exp.id, name=name, source_run_id=source_run_id or None,
                    storage_run_id=storage, model_type=model_type or None, status=STATUSES[0], status_message=None,
                    deleted=False, tags=json.dumps(clean_tags), params=json.dumps(clean_params),
                    created_at=now, updated_at=now,
                )
            )
        return self.get(model_id)

    def get(self, model_id: str, *, allow_deleted: bool = False) -> LoggedModel:
        _check_model_id(model_id)
        t = s.mlflow_logged_models
        with self.store.read() as conn:
            r = conn.execute(sa.select(t).where(t.c.model_id == model_id)).first()
        if r is None or (r.deleted and not allow_deleted):
            # "not found" and "No tag with key" below are the words MLflow's client and tests match
            raise NotFound(f"Logged model {model_id!r} not found")
        return self._row(r)

    def _update(self, model_id: str, **values: Any) -> LoggedModel:
        self.get(model_id)
        t = s.mlflow_logged_models
        with self.store.transaction() as conn:
            conn.execute(t.update().where(t.c.model_id == model_id).values(updated_at=time.time(), **values))
        return self.get(model_id, allow_deleted=True)

    def finalize(self, model_id: str, status: str) -> LoggedModel:
        if status not in STATUSES[1:]:
            raise ArgumentError(f"Argument status should be one of {', '.join(STATUSES[1:])}; got {status!r}")
        return self._update(model_id, status=status)

    def set_tags(self, model_id: str, tags: Mapping[str, Any]) -> LoggedModel:
        merged = {**self.get(model_id).tags, **_str_map(tags, "tags")}
        return self._update(model_id, tags=json.dumps(merged))

    def delete_tag(self, model_id: str, key: str) -> LoggedModel:
        tags = self.get(model_id).tags
        if key not in tags:
            raise NotFound(f"No tag with key {key!r} on logged model {model_id}")
        del tags[key]
        return self._update(model_id, tags=json.dumps(tags))

    def delete(self, model_id: str) -> None:
        """Mark the model deleted and delete its files (registered versions keep their own copy)."""
        m = self.get(model_id)
        if self.list_files(model_id):
            self.store.delete_artifact(m.storage_run_id, m.prefix)
        self._update(model_id, deleted=True)

    def search(
        self,
        experiment_ids: list[int],
        *,
        equals: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        ascending: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> list[LoggedModel]:
        """Models of the experiments, by creation time; ``equals``: column -> value (name, source_run_id,
        status, model_type, model_id); ``tags``: tag -> value, all of them to match."""
        t = s.mlflow_logged_models
        cols = {"name", "source_run_id", "status", "model_type", "model_id"}
        stmt = sa.select(t).where(t.c.deleted.is_(False), t.c.experiment_id.in_(experiment_ids))
        for col, value in (equals or {}).items():
            if col not in cols:
                raise ArgumentError(f"Logged models can be filtered on {', '.join(sorted(cols))} and tags; got {col!r}")
            stmt = stmt.where(t.c[col] == value)
        order = t.c.created_at.asc() if ascending else t.c.created_at.desc()
        with self.store.read() as conn:
            rows = conn.execute(stmt.order_by(order, t.c.model_id)).all()
        found = [self._row(r) for r in rows]
        if tags:  # tags are a JSON column: matched here, over the experiments' models only
            found = [m for m in found if all(m.tags.get(k) == v for k, v in tags.items())]
        return found[offset : offset + limit]

    # -- files: artifacts of the storage run under the model's prefix ---------------------------

    def _rel(self, m: LoggedModel, path: str) -> str:
        return f"{m.prefix}/{safe_relpath(path)}"

    def put_file(self, model_id: str, path: str, local_path: Path) -> ArtifactInfo:
        m = self.get(model_id)
        infos = self.store.log_artifact(m.storage_run_id, local_path, self._rel(m, path))
        return infos[0]

    def list_files(self, model_id: str, prefix: str | None = None) -> list[ArtifactInfo]:
        """The model's files, their paths relative to the model's folder."""
        m = self.get(model_id)
        where = self._rel(m, prefix) if prefix else m.prefix
        cut = len(m.prefix) + 1
        return [
            ArtifactInfo(path=a.path[cut:], size=a.size, sha256=a.sha256, created_at=a.created_at)
            for a in self.store.list_artifacts(m.storage_run_id, where)
        ]

    def file_path(self, model_id: str, path: str) -> Path:
        m = self.get(model_id)
        return self.store.artifact_path(m.storage_run_id, self._rel(m, path))

    def delete_file(self, model_id: str, path: str) -> None:
        m = self.get(model_id)
        self.store.delete_artifact(m.storage_run_id, self._rel(m, path))

    def download(self, model_id: str, dest: Path) -> Path:
        """Copy the model's files into the folder ``dest`` (made if missing), keeping their layout."""
        m = self.get(model_id)
        files = self.list_files(model_id)
        if not files:
            raise NotFound(f"Logged model {model_id} has no files yet (was log_model interrupted?)")
        for f in files:
            folder = dest / Path(f.path).parent
            self.store.download_artifact(m.storage_run_id, self._rel(m, f.path), folder)
        return dest


# -- MLflow model folders as registry versions ---------------------------------------------


def _yaml() -> Any:
    try:
        import yaml
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "Reading an MLflow model's MLmodel file (YAML) needs PyYAML: pip install 'loopml[mlflow]'"
        ) from exc
    return yaml


def read_mlmodel(model_dir: Path) -> dict[str, Any]:
    """The ``MLmodel`` document of an MLflow model folder (YAML, read with PyYAML's safe loader)."""
    path = Path(model_dir) / "MLmodel"
    if not path.is_file():
        raise NotFound(f"{model_dir} is not an MLflow model folder: it has no MLmodel file")
    yaml = _yaml()
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ArgumentError(f"{path} is not a readable MLmodel file: {exc}") from None
    if not isinstance(doc, dict):
        raise ArgumentError(f"{path} should hold a YAML mapping (flavors, signature, ...)")
    return doc


def _tensor_specs(text: Any, default_name: str) -> list[dict[str, Any]] | None:
    """MLflow's tensor-spec list (a JSON string in MLmodel) as loopml's specs; None for a column schema."""
    if not isinstance(text, str):
        return None
    try:
        specs = json.loads(text)
    except ValueError:
        return None
    out = []
    for i, spec in enumerate(specs if isinstance(specs, list) else []):
        ts = spec.get("tensor-spec") if isinstance(spec, dict) and spec.get("type") == "tensor" else None
        if not isinstance(ts, dict) or not isinstance(ts.get("shape"), list):
            return None
        shape = [None if (not isinstance(d, int) or d < 0) else d for d in ts["shape"]]
        name = spec.get("name") or (default_name if len(specs) == 1 else f"{default_name}{i}")
        out.append({"name": str(name), "dtype": str(ts.get("dtype")), "shape": shape})
    return out or None


def mlflow_signature(mlmodel: Mapping[str, Any]) -> dict[str, Any]:
    """loopml's signature document from MLmodel's tensor signature; ``{}`` when it has none loopml can use.

    A column-based signature (a DataFrame's named columns) has no tensor shape to check requests
    against, so it converts to ``{}``: such a version registers, and ``loopml serve`` says it needs a signature.
    """
    sig = mlmodel.get("signature")
    if not isinstance(sig, dict):
        return {}
    inputs, outputs = _tensor_specs(sig.get("inputs"), "x"), _tensor_specs(sig.get("outputs"), "output")
    if inputs is None or outputs is None:
        return {}
    return {"inputs": inputs, "outputs": outputs, "class_names": None}


def _pytorch_details(model_dir: Path, mlmodel: Mapping[str, Any]) -> dict[str, Any]:
    """How the pytorch flavor stored the model: ``serialization`` (pt2, pickle, torchscript) and ``model_file``."""
    raw = mlmodel.get("flavors")
    flavors: dict[str, Any] = raw if isinstance(raw, dict) else {}
    torch_flavor = flavors.get("pytorch")
    if not isinstance(torch_flavor, dict):
        return {"serialization": None, "model_file": None}
    data = safe_relpath(str(torch_flavor.get("model_data") or "data"))
    if (model_dir / data / "model.pt2").is_file():
        return {"serialization": "pt2", "model_file": f"{data}/model.pt2"}
    if (model_dir / data / "model.pth").is_file():
        return {"serialization": "torchscript" if _is_torchscript(model_dir / data / "model.pth") else "pickle",
                "model_file": f"{data}/model.pth"}
    return {"serialization": None, "model_file": None}


def _is_torchscript(path: Path) -> bool:
    # MLflow names both model.pth: torch.save of the whole module (a zip of pickles) and
    # torch.jit.save (a zip that also holds the model's TorchScript code under code/)
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n for n in z.namelist())


def zip_model_dir(model_dir: Path, target: Path) -> Path:
    """Zip an MLflow model folder into ``target``: regular files only, sorted, fixed times (same folder, same bytes)."""
    model_dir = Path(model_dir)
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() or p.is_symlink())
    if len(files) > _MAX_ZIP_FILES:
        raise ArgumentError(f"{model_dir} holds {len(files)} files; an MLflow model folder holds at most {_MAX_ZIP_FILES}")
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for f in files:
            if f.is_symlink():
                raise ArtifactPathError(f"{model_dir} holds a symlink {f.relative_to(model_dir).as_posix()!r}; loopml zips regular files only")
            rel = safe_relpath(f.relative_to(model_dir).as_posix())
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(f, "rb") as src, z.open(info, "w") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
    return target


def create_mlflow_version(
    registry: "RegistryStore",
    name: str,
    model_dir: Path,
    *,
    run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    created_by: str | None = None,
    source: str | None = None,
    model_id: str | None = None,
) -> "ModelVersion":
    """Register the MLflow model folder ``model_dir`` as the next version of ``name`` (format ``"mlflow"``).

    The folder becomes one zip file; its details keep the MLmodel's flavors, the
    pytorch flavor's serialization (``pt2``: a ``torch.export`` program, loaded
    without unpickling; ``pickle``: ``torch.save`` of the module, loaded only on
    opt-in) and MLflow's ``source`` / ``model_id`` when given. The signature comes
    from MLmodel's tensor signature. Example::

        v = create_mlflow_version(registry, "digits", Path("mlruns/1/abc/artifacts/model"), run_id="abc...")
        v.files["mlflow"].details["serialization"]   # 'pt2'
    """
    model_dir = Path(model_dir)
    mlmodel = read_mlmodel(model_dir)
    raw = mlmodel.get("flavors")
    flavors: dict[str, Any] = raw if isinstance(raw, dict) else {}
    details: dict[str, Any] = {
        "runtime": FORMAT,
        "flavors": sorted(str(f) for f in flavors),
        "mlflow_version": str(mlmodel.get("mlflow_version") or ""),
        **_pytorch_details(model_dir, mlmodel),
    }
    if source is not None:
        details["source"] = source
    if model_id is not None:
        details["model_id"] = model_id
    lineage: dict[str, Any] = {"mlflow": {k: v for k, v in (("source", source), ("model_id", model_id)) if v}}
    if run_id is not None:
        lineage["run_id"] = run_id
    with tempfile.TemporaryDirectory(prefix="loopml-mlflow-") as tmp:
        archive = zip_model_dir(model_dir, Path(tmp) / "mlflow-model.zip")
        return registry.create_version(
            name,
            files={FORMAT: (archive, details)},
            signature=mlflow_signature(mlmodel),
            tags=tags,
            description=description,
            run_id=run_id,
            created_by=created_by,
            lineage=lineage,
        )
