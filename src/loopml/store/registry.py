"""The model registry's storage: models, versions, their files and aliases.

A *version* is an immutable set of files (one per format) plus the JSON
documents that describe it (signature, how to rebuild the module, the run's
metrics, lineage, the training data's profile, measurements). Files are
copied from the source run's artifacts into ``<artifact root>/_models/<name>/<version>-<random>/``
(an S3 root, which cannot rename, has them uploaded to ``_models/<name>/<random>/``
before the version's rows are written, and removed again if that fails)
so that a version outlives its run, and each file's sha256 is recorded and
checked again before the file is handed out (:meth:`RegistryStore.file_path`:
from S3, a checked copy in the local cache).
The random part keeps two stores that share an artifact root (two databases
on the default ``$LOOPML_HOME/artifacts``) from writing or deleting each other's
``m/1``; where a version's files are is read from their recorded paths
(versions stored before kept ``<name>/<version>/``).

A version is only ever registered from a run's artifacts, named
``runs:/<run id>/<path>``: a "source" that names a file on the server (the
MLflow CVE-2023-1177 class) is refused before anything is read.

>>> from loopml import config
>>> from loopml.store import TrackingStore
>>> s = config.settings()                                          # LOOPML_HOME's database
>>> registry = RegistryStore(TrackingStore(s.tracking_uri, artifact_root=s.artifact_root))
>>> v = registry.create_version_from_run("digits", f"runs:/{run_id}/models/digits")   # what register logged
>>> v.ref                                                          # digits/1 came from the same files
'digits/2'
>>> event = registry.set_alias("digits", "production", v.version, by="ana")
>>> registry.resolve("digits@production").version
2
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import ArgumentError, ArtifactPathError, Conflict, IntegrityError, NotFound
from . import schema as s
from .artifacts import LocalRoot, ObjectChanged, ObjectMissing, Staging, safe_relpath, sha256_file

if TYPE_CHECKING:
    from .protocols import Registry
    from .tracking import TrackingStore

__all__ = [
    "MANIFEST",
    "AliasEvent",
    "ModelFile",
    "ModelInfo",
    "ModelVersion",
    "RegistryStore",
    "check_alias",
    "check_model_name",
    "local_registry",
    "parse_ref",
    "parse_source",
]

# The file in a run's artifact folder that describes a model to register.
MANIFEST = "loopml-model.json"
MODELS_DIR = "_models"  # under the artifact root; '_' keeps it apart from run ids (hex)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_FORMAT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
RESERVED_ALIASES = ("latest",)


def check_model_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ArgumentError(
            "Argument name should be 1 to 128 letters, digits, '_', '.' or '-' starting with a letter or digit "
            f"(no '..'), such as 'digits' or 'churn-mlp'; got {name!r}"
        )
    return name


def check_alias(alias: Any) -> str:
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        raise ArgumentError(
            "Argument alias should be 1 to 64 lowercase letters, digits, '_' or '-' starting with a letter, "
            f"such as 'production' or 'staging'; got {alias!r}"
        )
    if alias in RESERVED_ALIASES:
        raise ArgumentError(f"Alias {alias!r} is reserved: it always means the newest version")
    return alias


def check_format(fmt: Any) -> str:
    if not isinstance(fmt, str) or not _FORMAT.match(fmt):
        raise ArgumentError(f"Argument format should be a short lowercase name such as 'onnx' or 'pt2', got {fmt!r}")
    return fmt


def parse_ref(ref: Any) -> tuple[str, int | str | None]:
    """``"digits/3"`` → ("digits", 3); ``"digits@production"`` → ("digits", "production");
    ``"digits@3"`` → ("digits", 3); ``"digits"`` and ``"digits@latest"`` → ("digits", None) (the newest)."""
    if not isinstance(ref, str) or not ref:
        raise ArgumentError(f"A model reference should be NAME, NAME/VERSION or NAME@ALIAS, e.g. 'digits@production'; got {ref!r}")
    if "@" in ref:
        name, _, tail = ref.partition("@")
    elif "/" in ref:
        name, _, tail = ref.partition("/")
        if not tail.isdigit():
            raise ArgumentError(f"The version in {ref!r} should be a number, e.g. 'digits/3'")
    else:
        name, tail = ref, None
    check_model_name(name)
    if tail == "":
        raise ArgumentError(f"Nothing follows the '@' or '/' in {ref!r}: name a version or alias, e.g. 'digits@production'")
    if tail in (None, "latest"):
        return name, None
    if tail.isdigit():
        if int(tail) < 1:
            raise ArgumentError(f"Versions start at 1; got {ref!r}")
        return name, int(tail)
    try:
        return name, check_alias(tail)
    except ValueError as exc:
        raise ArgumentError(f"Cannot read the model reference {ref!r}: {exc}") from None


def parse_source(source: Any) -> tuple[str, str]:
    """``"runs:/<run id>/<path>"`` → (run id, clean relative path); anything else is refused."""
    if not isinstance(source, str) or not source.startswith("runs:/"):
        raise ArtifactPathError(
            "A model version is registered from a run's artifacts: source should be 'runs:/RUN_ID/PATH' "
            f"(e.g. 'runs:/3fa2.../model'), got {source!r}; files elsewhere on the server cannot be registered"
        )
    run_id, _, path = source[len("runs:/") :].partition("/")
    if not _RUN_ID.match(run_id):
        raise ArtifactPathError(f"The source {source!r} should name a run id (32 hex digits) after 'runs:/'")
    return run_id, safe_relpath(path)


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"Argument {what} should be JSON-serialisable without NaN or infinities: {exc}") from None




def _finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The newest value of each metric; NaN and infinities are left out (JSON has no place for them)."""
    out = {}
    for key, summary in metrics.items():
        value = float(getattr(summary, "value", summary))
        if math.isfinite(value):
            out[key] = value
    return out


@dataclass(frozen=True, kw_only=True)
class ModelFile:
    format: str
    path: str  # relative to the artifact root
    size: int
    sha256: str
    details: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class ModelVersion:
    """One registered version: its documents and files (not the weights themselves)."""

    name: str
    version: int
    created_at: float
    created_by: str | None
    run_id: str | None
    parent_version: int | None
    description: str | None
    tags: dict[str, str]
    signature: dict[str, Any]
    model_spec: dict[str, Any] | None
    metrics: dict[str, float]
    lineage: dict[str, Any]
    profile: dict[str, Any] | None
    measurements: dict[str, Any]
    files: dict[str, ModelFile]
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["aliases"] = list(self.aliases)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelVersion":
        data = dict(d)
        data["files"] = {k: ModelFile(**v) for k, v in data.get("files", {}).items()}
        data["aliases"] = tuple(data.get("aliases", ()))
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    name: str
    description: str | None
    created_at: float
    updated_at: float
    latest_version: int | None
    version_count: int
    aliases: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class AliasEvent:
    name: str
    alias: str
    from_version: int | None
    to_version: int | None
    at: float
    by: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RegistryStore:
    """Models, versions, files and aliases in the tracking store's database and artifact root.

    It satisfies :class:`~loopml.store.protocols.Registry`, and has besides the
    methods that write files into the artifact root of this machine
    (:meth:`create_version`, :meth:`add_file`, :meth:`model_dir`,
    :meth:`versions_of_run`); :func:`local_registry` gets it from a ``Registry``.
    """

    def __init__(self, store: "TrackingStore") -> None:
        self.store = store

    # -- reading --------------------------------------------------------------

    def _versions(self, conn: Connection, where: Any, *, limit: int | None = None) -> list[ModelVersion]:
        v = s.model_versions
        stmt = sa.select(v).where(where).order_by(v.c.name, v.c.version.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        rows = conn.execute(stmt).all()
        if not rows:
            return []
        names = sorted({r.name for r in rows})
        f, a = s.model_files, s.model_aliases
        files: dict[tuple[str, int], dict[str, ModelFile]] = {}
        for r in conn.execute(sa.select(f).where(f.c.name.in_(names)).order_by(f.c.format)):
            files.setdefault((r.name, r.version), {})[r.format] = ModelFile(
                format=r.format, path=r.path, size=r.size, sha256=r.sha256,
                details=json.loads(r.details), created_at=r.created_at,
            )
        aliases: dict[tuple[str, int], list[str]] = {}
        for r in conn.execute(sa.select(a).where(a.c.name.in_(names)).order_by(a.c.alias)):
            aliases.setdefault((r.name, r.version), []).append(r.alias)
        return [
            ModelVersion(
                name=r.name,
                version=r.version,
                created_at=r.created_at,
                created_by=r.created_by,
                run_id=r.run_id,
                parent_version=r.parent_version,
                description=r.description,
                tags=json.loads(r.tags),
                signature=json.loads(r.signature),
                model_spec=json.loads(r.model_spec) if r.model_spec else None,
                metrics=json.loads(r.metrics),
                lineage=json.loads(r.lineage),
                profile=json.loads(r.profile) if r.profile else None,
                measurements=json.loads(r.measurements),
                files=files.get((r.name, r.version), {}),
                aliases=tuple(aliases.get((r.name, r.version), ())),
            )
            for r in rows
        ]

    def list_models(self) -> list[ModelInfo]:
        m, v, a = s.models, s.model_versions, s.model_aliases
        counts = (
            sa.select(v.c.name, sa.func.count().label("n"), sa.func.max(v.c.version).label("latest"))
            .group_by(v.c.name)
            .subquery()
        )
        stmt = (
            sa.select(m, counts.c.n, counts.c.latest)
            .select_from(m.outerjoin(counts, counts.c.name == m.c.name))
            .order_by(m.c.name)
        )
        with self.store.read() as conn:
            rows = conn.execute(stmt).all()
            alias_rows = conn.execute(sa.select(a.c.name, a.c.alias, a.c.version)).all()
        by_name: dict[str, dict[str, int]] = {}
        for r in alias_rows:
            by_name.setdefault(r.name, {})[r.alias] = r.version
        return [
            ModelInfo(
                name=r.name, description=r.description, created_at=r.created_at, updated_at=r.updated_at,
                latest_version=r.latest, version_count=r.n or 0, aliases=by_name.get(r.name, {}),
            )
            for r in rows
        ]

    def get_model(self, name: str) -> ModelInfo:
        check_model_name(name)
        for info in self.list_models():  # few models; one query path
            if info.name == name:
                return info
        raise NotFound(f"No model named {name!r}; `loopml models list` shows the registered ones")

    def list_versions(self, name: str) -> list[ModelVersion]:
        check_model_name(name)
        with self.store.read() as conn:
            self._require_model(conn, name)
            return self._versions(conn, s.model_versions.c.name == name)

    def _require_model(self, conn: Connection, name: str) -> None:
        if conn.execute(sa.select(s.models.c.name).where(s.models.c.name == name)).first() is None:
            raise NotFound(f"No model named {name!r}; `loopml models list` shows the registered ones")

    def get_version(self, name: str, version: int) -> ModelVersion:
        check_model_name(name)
        v = s.model_versions
        with self.store.read() as conn:
            found = self._versions(conn, sa.and_(v.c.name == name, v.c.version == int(version)))
            if not found:
                self._require_model(conn, name)
                raise NotFound(f"Model {name!r} has no version {version}; `loopml models show {name}` lists them")
        return found[0]

    def resolve(self, ref: str) -> ModelVersion:
        """The version that ``NAME``, ``NAME/VER``, ``NAME@VER``, ``NAME@ALIAS`` or ``NAME@latest`` names."""
        name, which = parse_ref(ref)
        if isinstance(which, int):
            return self.get_version(name, which)
        with self.store.read() as conn:
            self._require_model(conn, name)
            if which is None:
                version = conn.execute(
                    sa.select(sa.func.max(s.model_versions.c.version)).where(s.model_versions.c.name == name)
                ).scalar()
                if version is None:
                    raise NotFound(f"Model {name!r} has no versions")
            else:
                a = s.model_aliases
                version = conn.execute(
                    sa.select(a.c.version).where(a.c.name == name, a.c.alias == which)
                ).scalar()
                if version is None:
                    raise NotFound(
                        f"Model {name!r} has no alias {which!r}; set it with: loopml models alias {name} {which} VERSION"
                    )
        return self.get_version(name, int(version))

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        check_model_name(name)
        e = s.alias_events
        stmt = sa.select(e).where(e.c.name == name)
        if alias is not None:
            stmt = stmt.where(e.c.alias == alias)
        with self.store.read() as conn:
            rows = conn.execute(stmt.order_by(e.c.id)).all()
        return [
            AliasEvent(name=r.name, alias=r.alias, from_version=r.from_version, to_version=r.to_version, at=r.at, by=r.by)
            for r in rows
        ]

    def versions_of_run(self, run_id: str) -> list[ModelVersion]:
        with self.store.read() as conn:
            return self._versions(conn, s.model_versions.c.run_id == run_id)

    # -- files ----------------------------------------------------------------

    def file_path(self, name: str, version: int, fmt: str, *, verify: bool = True) -> Path:
        """The local file of one format of a version, after checking its sha256 (unless ``verify=False``)."""
        mv = self.get_version(name, version)
        info = mv.files.get(fmt)
        if info is None:
            have = ", ".join(sorted(mv.files)) or "none"
            raise NotFound(
                f"Version {mv.ref} has no {fmt!r} file (it has: {have}); "
                f"create it with: loopml models export {mv.ref} --format {fmt}"
            )
        try:
            return self.store.artifacts.local_file(info.path, sha256=info.sha256, verify=verify)
        except ObjectMissing:
            raise IntegrityError(f"The {fmt} file of {mv.ref} is missing from the artifact root ({info.path})") from None
        except ObjectChanged as exc:
            raise IntegrityError(
                f"The {fmt} file of {mv.ref} ({info.path}) does not match the sha256 recorded when it was stored "
                f"(expected {info.sha256[:12]}..., found {exc.found[:12]}...): it was changed after registration; "
                "loopml refuses to load it. Restore the file or register the model again."
            ) from None

    def _stage(self, name: str, files: Mapping[str, tuple[Path, Mapping[str, Any]]]) -> tuple[Staging, dict[str, dict[str, Any]]]:
        staging = self.store.artifacts.staging(f"{MODELS_DIR}/{name}")
        rows: dict[str, dict[str, Any]] = {}
        try:
            for fmt, (src, details) in files.items():
                check_format(fmt)
                src = Path(src)
                if any(r["file"] == src.name for r in rows.values()):
                    raise ArgumentError(f"Two formats use the same file name {src.name!r}")
                size, sha = staging.put(src)
                rows[fmt] = {
                    "format": fmt, "file": src.name, "size": size, "sha256": sha,
                    "details": _dumps(dict(details), f"details of {fmt}"),
                }
        except BaseException:
            staging.discard()
            raise
        return staging, rows

    # -- writing --------------------------------------------------------------

    def create_version(
        self,
        name: str,
        *,
        files: Mapping[str, tuple[Path, Mapping[str, Any]]],
        signature: Mapping[str, Any],
        model_spec: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        lineage: Mapping[str, Any] | None = None,
        profile: Mapping[str, Any] | None = None,
        measurements: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        description: str | None = None,
        run_id: str | None = None,
        parent_version: int | None = None,
        created_by: str | None = None,
    ) -> ModelVersion:
        """Copy ``files`` ({format: (local file, details)}) into the registry as the next version of ``name``."""
        check_model_name(name)
        if not files:
            raise ArgumentError("Argument files should hold at least one format, e.g. {'pt2': (path, {})}")
        clean_tags = {str(k): str(v) for k, v in (tags or {}).items()}
        doc = {
            "tags": _dumps(clean_tags, "tags"),
            "signature": _dumps(dict(signature), "signature"),
            "model_spec": _dumps(dict(model_spec), "model_spec") if model_spec is not None else None,
            "metrics": _dumps(dict(metrics or {}), "metrics"),
            "lineage": _dumps(dict(lineage or {}), "lineage"),
            "profile": _dumps(dict(profile), "profile") if profile is not None else None,
            "measurements": _dumps(dict(measurements or {}), "measurements"),
        }
        staging, file_rows = self._stage(name, files)
        now = time.time()
        try:
            with self.store.transaction() as conn:
                m = s.models
                # insert-if-missing then lock the row: two processes registering the first
                # version of a new name at once get 1 and 2, not a unique-key error
                conn.execute(
                    self.store.upsert(m)
                    .values(name=name, description=None, created_at=now, updated_at=now, last_version=0)
                    .on_conflict_do_nothing(index_elements=["name"])
                )
                last = conn.execute(sa.select(m.c.last_version).where(m.c.name == name).with_for_update()).scalar_one()
                version = int(last) + 1
                if parent_version is not None:
                    exists = conn.execute(
                        sa.select(s.model_versions.c.version).where(
                            s.model_versions.c.name == name, s.model_versions.c.version == parent_version
                        )
                    ).first()
                    if exists is None:
                        raise NotFound(f"Model {name!r} has no version {parent_version} to be the parent")
                conn.execute(m.update().where(m.c.name == name).values(last_version=version, updated_at=now))
                conn.execute(
                    s.model_versions.insert().values(
                        name=name, version=version, created_at=now, created_by=created_by, run_id=run_id,
                        parent_version=parent_version, description=description, **doc,
                    )
                )
                rel_dir = staging.final(version)  # unique: never another store's m/1
                conn.execute(
                    s.model_files.insert(),
                    [
                        {
                            "name": name, "version": version, "format": r["format"], "path": f"{rel_dir}/{r['file']}",
                            "size": r["size"], "sha256": r["sha256"], "details": r["details"], "created_at": now,
                        }
                        for r in file_rows.values()
                    ],
                )
                staging.commit()
        except BaseException:
            staging.discard()
            raise
        return self.get_version(name, version)

    def create_version_from_run(
        self,
        name: str,
        source: str,
        *,
        created_by: str | None = None,
        tags: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> ModelVersion:
        """Register the model a run logged under ``source`` (``runs:/RUN_ID/PATH``, holding ``loopml-model.json``).

        Each file the manifest lists must be an artifact of that run whose
        sha256 matches the one recorded when it was logged.
        """
        check_model_name(name)
        run_id, folder = parse_source(source)
        run = self.store.get_run(run_id)  # NotFound for an unknown run
        manifest_path = self.store.artifact_path(run_id, f"{folder}/{MANIFEST}")  # S3: a checked local copy
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArgumentError(f"{source}/{MANIFEST} is not a readable model manifest: {exc}") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise ArgumentError(f"{source}/{MANIFEST} should be a JSON object with a 'files' object")
        recorded = {a.path: a for a in self.store.list_artifacts(run_id, folder)}
        files: dict[str, tuple[Path, Mapping[str, Any]]] = {}
        for fmt, entry in manifest["files"].items():
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
                raise ArgumentError(f"{MANIFEST}: files.{fmt} should be {{'file': NAME, 'details': {{...}}}}")
            rel = safe_relpath(f"{folder}/{entry['file']}")
            if rel.count("/") != folder.count("/") + 1:
                raise ArtifactPathError(f"{MANIFEST}: the file of {fmt!r} should sit directly in {folder!r}")
            info = recorded.get(rel)
            if info is None:
                raise NotFound(f"Run {run_id} has no artifact {rel!r} (listed for {fmt!r} in {MANIFEST})")
            changed = f"Artifact {rel!r} of run {run_id} changed after it was logged; not registering it"
            try:
                path = self.store.artifact_path(run_id, rel)  # from S3: a copy checked against info.sha256 already
            except IntegrityError:
                raise IntegrityError(changed) from None
            if sha256_file(path) != info.sha256:
                raise IntegrityError(changed)
            files[fmt] = (path, entry.get("details") or {})
        lineage = dict(manifest.get("lineage") or {})
        lineage.setdefault("run_id", run_id)
        lineage.setdefault("experiment", run.experiment)
        try:
            lineage.setdefault("datasets", self.store.run_datasets(run_id))
        except NotFound:
            pass
        merged_tags = {**(manifest.get("tags") or {}), **(tags or {})}
        return self.create_version(
            name,
            files=files,
            signature=manifest.get("signature") or {},
            model_spec=manifest.get("model_spec"),
            metrics=manifest.get("metrics") if manifest.get("metrics") is not None else _finite_metrics(run.metrics),
            lineage=lineage,
            profile=manifest.get("profile"),
            measurements=manifest.get("measurements"),
            tags=merged_tags,
            description=description if description is not None else manifest.get("description"),
            run_id=run_id,
            parent_version=manifest.get("parent_version"),
            created_by=created_by,
        )

    def add_file(self, name: str, version: int, fmt: str, local_path: Path, details: Mapping[str, Any] | None = None) -> ModelVersion:
        """Add (or replace) one format's file of an existing version, e.g. an ONNX export made later."""
        check_format(fmt)
        mv = self.get_version(name, version)
        src = Path(local_path)
        key = f"{self._folder_key(mv)}/{src.name}"
        root = self.store.artifacts
        if isinstance(root, LocalRoot) and src.resolve() == (root.root / key).resolve():
            size, sha = src.stat().st_size, sha256_file(src)  # the file is there already
        else:
            size, sha = root.put_file(key, src)
        row = {
            "name": name, "version": mv.version, "format": fmt, "path": key, "size": size,
            "sha256": sha, "details": _dumps(dict(details or {}), "details"), "created_at": time.time(),
        }
        f = s.model_files
        with self.store.transaction() as conn:
            conn.execute(f.delete().where(f.c.name == name, f.c.version == mv.version, f.c.format == fmt))
            conn.execute(f.insert().values(**row))
        return self.get_version(name, mv.version)

    def set_measurements(self, name: str, version: int, measurements: Mapping[str, Any]) -> ModelVersion:
        """Merge ``measurements`` (accuracy, size, latency, ...) into the version's."""
        mv = self.get_version(name, version)
        merged = {**mv.measurements, **dict(measurements)}
        v = s.model_versions
        with self.store.transaction() as conn:
            conn.execute(
                v.update().where(v.c.name == name, v.c.version == mv.version)
                .values(measurements=_dumps(merged, "measurements"))
            )
        return self.get_version(name, mv.version)

    def set_alias(self, name: str, alias: str, version: int, *, by: str | None = None) -> AliasEvent:
        """Point ``alias`` at ``version`` and record the move (from, to, when, by whom)."""
        check_alias(alias)
        self.get_version(name, version)
        a, now = s.model_aliases, time.time()
        with self.store.transaction() as conn:
            old = conn.execute(sa.select(a.c.version).where(a.c.name == name, a.c.alias == alias)).scalar()
            if old is None:
                conn.execute(a.insert().values(name=name, alias=alias, version=version, updated_at=now))
            else:
                conn.execute(a.update().where(a.c.name == name, a.c.alias == alias).values(version=version, updated_at=now))
            conn.execute(
                s.alias_events.insert().values(name=name, alias=alias, from_version=old, to_version=version, at=now, by=by)
            )
            conn.execute(s.models.update().where(s.models.c.name == name).values(updated_at=now))
        return AliasEvent(name=name, alias=alias, from_version=old, to_version=version, at=now, by=by)

    def delete_alias(self, name: str, alias: str, *, by: str | None = None) -> AliasEvent:
        check_model_name(name)
        check_alias(alias)
        a, now = s.model_aliases, time.time()
        with self.store.transaction() as conn:
            old = conn.execute(sa.select(a.c.version).where(a.c.name == name, a.c.alias == alias)).scalar()
            if old is None:
                raise NotFound(f"Model {name!r} has no alias {alias!r}")
            conn.execute(a.delete().where(a.c.name == name, a.c.alias == alias))
            conn.execute(
                s.alias_events.insert().values(name=name, alias=alias, from_version=old, to_version=None, at=now, by=by)
            )
        return AliasEvent(name=name, alias=alias, from_version=old, to_version=None, at=now, by=by)

    def delete_version(self, name: str, version: int) -> None:
        """Delete a version and its files; refused while an alias points at it."""
        mv = self.get_version(name, version)
        v, a, f = s.model_versions, s.model_aliases, s.model_files
        with self.store.transaction() as conn:
            aliases = [
                r.alias
                for r in conn.execute(sa.select(a.c.alias).where(a.c.name == name, a.c.version == mv.version).order_by(a.c.alias))
            ]
            if aliases:
                names = ", ".join(f"@{x}" for x in aliases)
                raise Conflict(
                    f"Cannot delete {mv.ref}: alias {names} points at it. Move the alias first, e.g. "
                    f"loopml models alias {name} {aliases[0]} OTHER_VERSION"
                )
            conn.execute(f.delete().where(f.c.name == name, f.c.version == mv.version))
            conn.execute(v.delete().where(v.c.name == name, v.c.version == mv.version))
        self.store.artifacts.remove(self._folder_key(mv))

    def set_description(self, name: str, version: int, description: str | None) -> ModelVersion:
        mv = self.get_version(name, version)
        v = s.model_versions
        with self.store.transaction() as conn:
            conn.execute(v.update().where(v.c.name == name, v.c.version == mv.version).values(description=description))
        return self.get_version(name, mv.version)

    def model_dir(self, name: str, version: int) -> Path:
        """The folder that holds a version's files (a local artifact root only: S3 has no folders to hand out)."""
        check_model_name(name)
        root = self.store.artifacts
        if not isinstance(root, LocalRoot):
            raise ArgumentError(
                f"The files of {name}/{version} are in {root.uri}, not in a folder on this machine; "
                f"get each one with file_path({name!r}, {version}, FORMAT)"
            )
        return root.root / self._folder_key(self.get_version(name, int(version)))

    def _folder_key(self, mv: ModelVersion) -> str:
        # where its files were recorded; a version always has files, the fallback is the old layout
        for info in mv.files.values():
            return str(PurePosixPath(info.path).parent)
        return f"{MODELS_DIR}/{mv.name}/{mv.version}"


def local_registry(registry: "Registry", what: str) -> RegistryStore:
    """``registry`` as the :class:`RegistryStore` that ``what`` needs, to write a version's files on this machine.

    A registry over HTTP is refused with a ValueError that says where to run
    ``what`` instead::

        gate_registry = local_registry(registry_for(), "fit_ood")
    """
    if isinstance(registry, RegistryStore):
        return registry
    raise ArgumentError(
        f"{what} stores files with the version, which a loopml server does not accept over HTTP yet; "
        "run it where the store is (e.g. with --store sqlite:///... or postgresql+psycopg://...)"
    )
