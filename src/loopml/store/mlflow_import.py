"""Copy an MLflow tracking store and model registry into loopml (``loopml import mlflow``).

MLflow's store is read with MLflow's own client (``mlflow.MlflowClient``), so
every backend MLflow reads works as a source: its SQLite or PostgreSQL
database, or a running ``mlflow server`` over HTTP. What is copied:
experiments (by name), runs (same run id, status, times, user, parent, git
commit), params, tags, every metric point with its step and timestamp,
run artifacts, registered models, their versions (the model folder, through
``create_mlflow_version`` of ``store/mlflow_models.py``) and aliases.

Running it again duplicates nothing: a run is matched by its id, a metric
point by (step, timestamp, value), an artifact by path and size, a version by
MLflow's version number (kept as the tag ``mlflow_version``). A run that got
new metrics, tags or artifacts since is brought up to date; one whose status,
end time and newest metric values did not change is not read again. (An example, not a doctest: it
needs an MLflow store)::

    from loopml.store import TrackingStore
    source = MlflowSource("sqlite:///mlflow.db", artifacts="./mlruns")     # checked before anything is written
    summary = import_mlflow(source, TrackingStore("sqlite:///loopml.db", artifact_root="artifacts"))
    summary.copied["runs"], summary.existing["runs"]                      # (12, 0), then (0, 12) the next time
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote, urlparse

import sqlalchemy as sa

from ..errors import ArgumentError, LoopMLError, NotFound, StoreError
from . import schema as s
from .validation import check_key, check_text_value
from .mlflow_models import create_mlflow_version
from .registry import RegistryStore, check_alias, check_model_name

if TYPE_CHECKING:
    from .records import RunRecord
    from .tracking import TrackingStore

__all__ = ["IMPORT_TAG", "VERSION_TAG", "ImportSummary", "MlflowSource", "import_mlflow"]

# Set on every imported run: where it came from (the source URI without its password).
IMPORT_TAG = "imported_from"
# Set on every imported model version: its number in MLflow's registry (loopml's may differ).
VERSION_TAG = "mlflow_version"

KINDS = ("experiments", "runs", "params", "tags", "metric points", "artifact files", "artifact bytes",
         "models", "versions", "aliases")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_DB_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+", "mysql://", "mysql+", "mssql+")
_HTTP_SCHEMES = ("http://", "https://")
_BATCH = 100_000  # metric points per store write: one transaction, one block row per (run, key)
_PAGE = 1_000
# Why a run id becomes a new one: loopml's run ids are 32 hex digits; MLflow's always are
# unless something wrote its database directly. uuid5 keeps a re-import on the same id.
_ID_NAMESPACE = uuid.UUID("6f3b2c1e-8a53-4d0e-9d7a-3c1f0e2b9a47")

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: stage is "runs" or "models"."""


def _require_mlflow() -> Any:
    try:
        import mlflow
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "Importing from MLflow reads its store with MLflow's own client: pip install 'loopml[mlflow]' (or pip install mlflow)"
        ) from exc
    return mlflow


def _redact(uri: str) -> str:
    """``uri`` without a password, as it is shown and recorded."""
    parsed = urlparse(uri)
    if parsed.password:
        netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
        return parsed._replace(netloc=netloc).geturl()
    return uri


@dataclass
class ImportSummary:
    """What an import copied, what was already there, and what it could not take (one line each)."""

    source: str
    copied: Counter[str] = field(default_factory=Counter)
    existing: Counter[str] = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[str, int, int]]:
        """``(kind, copied, already there)`` for each kind, in a fixed order."""
        return [(k, self.copied[k], self.existing[k]) for k in KINDS]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "copied": {k: self.copied[k] for k in KINDS},
                "existing": {k: self.existing[k] for k in KINDS}, "skipped": list(self.skipped)}


class MlflowSource:
    """An MLflow store to read: a database URI or an MLflow server, checked when it is made.

    ``artifacts`` is the folder that holds the runs' files when their recorded
    locations are local and have moved (an ``mlruns`` folder copied from another
    machine) or are ``mlflow-artifacts:/`` (a server's ``--artifacts-destination``).
    Nothing is ever written to the source: a database that MLflow would first have
    to create or upgrade is refused.
    """

    def __init__(self, uri: str, *, artifacts: str | os.PathLike[str] | None = None) -> None:
        if not isinstance(uri, str) or not uri.startswith(_DB_SCHEMES + _HTTP_SCHEMES):
            raise ArgumentError(
                f"Argument source should be an MLflow tracking URI: sqlite:///path/mlflow.db, "
                f"postgresql://user@host/db or http://host:5000 (an MLflow server); got {uri!r}"
            )
        self.artifacts = Path(artifacts).expanduser().resolve() if artifacts is not None else None
        if self.artifacts is not None and not self.artifacts.is_dir():
            raise ArgumentError(f"Argument artifacts should be a folder (MLflow's mlruns or artifact folder); "
                                f"{str(self.artifacts)!r} is not one")
        self.display = _redact(uri)
        mlflow = _require_mlflow()
        if uri.startswith("postgresql://"):
            uri = "postgresql+psycopg://" + uri.removeprefix("postgresql://")  # the driver loopml installs
        self.uri = uri
        self.is_http = uri.startswith(_HTTP_SCHEMES)
        self.engine: sa.Engine | None = None  # a database source's, read-only where the driver allows
        if self.is_http:
            self._check_server()
        else:
            self._check_database()
        try:
            self.client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
            self.client.search_experiments(max_results=1)
        except LoopMLError:
            raise
        except Exception as exc:  # MlflowException, driver errors: one line naming the source
            raise StoreError(f"Cannot read the MLflow store at {self.display}: {_one_line(exc)}") from exc

    def _check_database(self) -> None:
        """Refuse what is not a current MLflow database before MLflow's client opens it (it would create or
        upgrade the tables in place)."""
        from mlflow.store.db import utils

        db_utils: Any = utils  # private and untyped; pinned: mlflow==3.17.2 in the extras

        if self.uri.startswith("sqlite:///"):
            path = Path(self.uri.removeprefix("sqlite:///"))
            if not path.is_file():
                raise ArgumentError(f"No MLflow database at {str(path)!r}: --from should name the mlflow.db file "
                                    "MLflow wrote, e.g. sqlite:///./mlflow.db")
            engine = sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
        else:
            try:
                engine = sa.create_engine(self.uri)
            except (ModuleNotFoundError, sa.exc.ArgumentError) as exc:
                raise ArgumentError(f"Cannot open {self.display}: {_one_line(exc)}") from None
        try:
            with engine.connect():
                pass
            inspector = sa.inspect(engine)
            tables = set(inspector.get_table_names())
            # loopml's own database has experiments, runs and alembic_version too: MLflow's runs have run_uuid
            if not {"experiments", "runs", "alembic_version"} <= tables or "run_uuid" not in {
                c["name"] for c in inspector.get_columns("runs")
            }:
                raise ArgumentError(
                    f"{self.display} is not an MLflow database (it has no MLflow experiments, runs and "
                    "alembic_version tables); --from should name the database `mlflow server` or "
                    "mlflow.set_tracking_uri wrote"
                )
            found, head = db_utils._get_schema_version(engine), db_utils._get_latest_schema_revision()
            if found != head or not db_utils._all_tables_exist(engine):
                raise ArgumentError(
                    f"The MLflow database at {self.display} has schema {found}, and this mlflow "
                    f"({_require_mlflow().__version__}) reads {head}. Import from an upgraded copy: copy it, "
                    "then `mlflow db upgrade <copy's URI>`"
                )
        except LoopMLError:
            raise
        except BaseException as exc:
            engine.dispose()
            if isinstance(exc, sa.exc.SQLAlchemyError):
                raise ArgumentError(f"Cannot read {self.display} as an MLflow database: {_one_line(exc)}") from None
            raise
        self.engine = engine

    def _check_server(self) -> None:
        """One request without retries: MLflow's client retries a dead server for minutes."""
        from mlflow.utils import credentials, rest_utils

        rest: Any = rest_utils  # untyped
        try:
            resp = rest.http_request(cast(Any, credentials).get_default_host_creds(self.uri), "/api/2.0/mlflow/experiments/search", "GET",
                                max_retries=0, timeout=10, params={"max_results": 1})
        except Exception as exc:
            raise ArgumentError(f"Cannot reach the MLflow server at {self.display}: {_one_line(exc)}") from None
        if resp.status_code != 200:
            raise ArgumentError(f"{self.display} answered {resp.status_code} to MLflow's experiments/search: "
                                "is it an MLflow server (and are MLFLOW_TRACKING_TOKEN or _USERNAME/_PASSWORD set)?")

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()

    # -- reading -------------------------------------------------------------

    def histories(self, run_id: str, keys: list[str]) -> dict[str, list[tuple[int, float, float]]]:
        """Every point of each metric in ``keys``: ``{key: [(step, timestamp in s, value), ...]}``.

        A database is read with one query per run: MLflow's client builds an ORM object per point
        (``get_metric_history`` took 11 s for 100,000 points here). Its ``metrics`` table has kept
        these columns since MLflow 1.x; NaN is stored as ``is_nan`` with value 0, as MLflow's store reads it.
        """
        out: dict[str, list[tuple[int, float, float]]] = {k: [] for k in keys}
        if self.engine is None:
            for key in keys:
                out[key] = [(m.step, m.timestamp / 1000, m.value) for m in self.client.get_metric_history(run_id, key)]
            return out
        query = sa.text("SELECT key, step, timestamp, value, is_nan FROM metrics WHERE run_uuid = :run")
        nan = math.nan
        with self.engine.connect() as conn:
            for key, step, ts, value, is_nan in conn.execute(query, {"run": run_id}):
                points = out.get(key)
                if points is not None:
                    points.append((int(step), ts / 1000, nan if is_nan else float(value)))
        return out


    def _pages(self, call: Callable[..., Any], **kwargs: Any) -> Iterator[Any]:
        token = None
        while True:
            page = call(max_results=_PAGE, page_token=token, **kwargs)
            yield from page
            token = page.token
            if not token:
                return

    def local_dir(self, uri: str | None) -> Path | None:
        """The local folder an artifact URI names, found again under ``artifacts`` when it has moved."""
        if not uri:
            return None
        parts: list[str]
        if uri.startswith("mlflow-artifacts:"):
            parts = [p for p in urlparse(uri).path.split("/") if p]
            path = None
        elif uri.startswith("file:"):
            path = Path(unquote(urlparse(uri).path))
            parts = list(path.parts[1:])
        elif _remote(uri):
            return None  # s3://, gs://, ... : the client downloads
        else:
            path = Path(uri).expanduser()
            parts = list(path.parts)
        if path is not None and path.is_dir():
            return path
        if self.artifacts is None:
            return None
        # the longest tail of the recorded path that exists under the given root:
        # .../mlruns/1/<run>/artifacts moved to <root>/1/<run>/artifacts
        for start in range(len(parts) - 1):
            candidate = self.artifacts.joinpath(*parts[start:])
            if candidate.is_dir():
                return candidate
        return None


def _remote(uri: str) -> bool:
    """s3://, gs://, http://...: what MLflow's client downloads (not a path, file: or mlflow-artifacts:)."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", uri)) and not uri.startswith("file:")


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _point_key(step: int, ts: float, value: float) -> tuple[int, float, Any]:
    return (step, ts, "nan" if value != value else value)  # NaN != NaN would never match


class _Importer:
    def __init__(self, source: MlflowSource, store: "TrackingStore", progress: Progress | None) -> None:
        self.src, self.store, self.progress = source, store, progress
        self.client = source.client
        self.summary = ImportSummary(source=source.display)
        self.points: list[tuple[str, str, int, float, float]] = []
        self.run_ids: dict[str, str] = {}  # MLflow run id -> loopml run id

    def skip(self, line: str) -> None:
        self.summary.skipped.append(line)

    def flush(self) -> None:
        if self.points:
            self.store.log_metrics(self.points)
            self.points = []

    # -- experiments and runs -----------------------------------------------

    def runs(self) -> None:
        from mlflow.entities import ViewType

        todo: list[tuple[str, Any]] = []
        known = {e.name for e in self.store.list_experiments()}
        for exp in self.src._pages(self.client.search_experiments, view_type=ViewType.ACTIVE_ONLY):
            try:
                check_key(exp.name, what="experiment")
            except ArgumentError as exc:
                self.skip(f"experiment {exp.name!r} and its runs: {exc}")
                continue
            runs = list(self.src._pages(self.client.search_runs, experiment_ids=[exp.experiment_id],
                                        run_view_type=ViewType.ACTIVE_ONLY, order_by=["attributes.start_time ASC"]))
            if exp.experiment_id == "0" and not runs:
                continue  # the "Default" experiment MLflow makes by itself, never used
            if exp.name in known:
                self.summary.existing["experiments"] += 1
            else:
                self.store.get_or_create_experiment(exp.name)
                self.summary.copied["experiments"] += 1
            todo.extend((exp.name, run) for run in runs)
        for done, (exp_name, run) in enumerate(todo, 1):
            self.run(exp_name, run)
            if self.progress:
                self.progress("runs", done, len(todo))
        self.flush()
        self.parents(todo)

    def run(self, exp_name: str, run: Any) -> None:
        info, data = run.info, run.data
        mid = info.run_id
        rid = mid if _RUN_ID.match(mid) else uuid.uuid5(_ID_NAMESPACE, mid).hex
        self.run_ids[mid] = rid
        params = self.valid(mid, "param", data.params)
        tags = self.valid(mid, "tag", data.tags)
        tags[IMPORT_TAG] = f"mlflow {self.src.display} run {mid}"
        try:
            record: RunRecord | None = self.store.get_run(rid)
        except NotFound:
            record = None
        if record is not None and record.tags.get(IMPORT_TAG) is None:
            self.skip(f"run {mid}: loopml already has a run with id {rid} that was not imported from MLflow")
            return
        end = info.end_time / 1000 if info.end_time else None
        status = info.status if info.status in ("FINISHED", "FAILED", "KILLED") else "RUNNING"
        if record is None:
            name = info.run_name
            try:
                check_key(name, what="name")
            except ArgumentError:
                name = None
            git = data.tags.get("mlflow.source.git.commit")
            self.store.create_run(
                experiment=exp_name, name=name, run_id=rid, params=params, tags=tags,
                start_time=(info.start_time or 0) / 1000, user=(info.user_id or None) and info.user_id[:250],
                git_commit=git if git and len(git) <= 64 else None, command=data.tags.get("mlflow.source.name"),
            )
            self.summary.copied["runs"] += 1
            self.summary.copied["params"] += len(params)
            self.summary.copied["tags"] += len(tags)
        else:
            self.summary.existing["runs"] += 1
            new_params = {k: v for k, v in params.items() if k not in record.params}
            if new_params:
                self.store.log_params(rid, new_params)
            changed = {k: v for k, v in tags.items() if record.tags.get(k) != v}
            if changed:
                self.store.set_tags(rid, changed)
            self.summary.copied["params"] += len(new_params)
            self.summary.existing["params"] += len(params) - len(new_params)
            self.summary.copied["tags"] += len(changed)
            self.summary.existing["tags"] += len(tags) - len(changed)
        unchanged = (
            record is not None and status != "RUNNING" and record.status == status and record.end_time == end
            and set(record.metrics) == set(data.metrics)
            and all(_same(record.metrics[k].value, v) for k, v in data.metrics.items())
            # RunData's public metrics hold values only; its Metric objects also have step and timestamp
            and all(record.metrics[m.key].step == m.step and record.metrics[m.key].timestamp == m.timestamp / 1000
                    for m in getattr(data, "_metric_objs", ()) if m.key in record.metrics)
        )
        if unchanged and record is not None:
            self.summary.existing["metric points"] += sum(m.count for m in record.metrics.values())
        else:
            self.metrics(mid, rid, data.metrics, record)
        self.artifacts(mid, rid, info.artifact_uri)
        if record is None or record.status != status or record.end_time != end:
            self.flush()  # the status is written once its points are
            if status != "RUNNING":
                self.store.set_status(rid, status, end_time=end if end is not None else (info.start_time or 0) / 1000)

    def valid(self, mid: str, what: str, values: dict[str, str]) -> dict[str, str]:
        out = {}
        for k, v in values.items():
            try:
                out[check_key(k, what=f"{what} key")] = check_text_value(k, v, what=what)
            except ArgumentError as exc:
                self.skip(f"run {mid}: {what} {k[:60]!r}: {exc}")
        return out

    def metrics(self, mid: str, rid: str, latest: dict[str, float], record: "RunRecord | None") -> None:
        keys = []
        for key in sorted(latest):
            try:
                keys.append(check_key(key, what="metric key"))
            except ArgumentError as exc:
                self.skip(f"run {mid}: metric {key[:60]!r}: {exc}")
        for key, points in self.src.histories(mid, keys).items():
            # MLflow's newest point is the largest (step, timestamp, value); logged in that order,
            # loopml's (largest step, the last logged among equal steps) is the same point
            points.sort(key=lambda p: (p[0], p[1], p[2] if p[2] == p[2] else -math.inf))
            have: Counter[tuple[int, float, Any]] = Counter()
            if record is not None and key in record.metrics:
                h = self.store.history(rid, key)
                have.update(_point_key(int(a), float(b), float(c)) for a, b, c in zip(h.steps, h.timestamps, h.values))
            added = 0
            for step, ts, value in points:
                pk = _point_key(step, ts, value)
                if have[pk] > 0:
                    have[pk] -= 1
                    continue
                self.points.append((rid, key, step, ts, value))
                added += 1
            self.summary.copied["metric points"] += added
            self.summary.existing["metric points"] += len(points) - added
            if len(self.points) >= _BATCH:
                self.flush()

    def artifacts(self, mid: str, rid: str, uri: str | None) -> None:
        have = {a.path: a.size for a in self.store.list_artifacts(rid)}
        folder = self.src.local_dir(uri)
        if folder is not None:
            files = [(f.relative_to(folder).as_posix(), f.stat().st_size, f)
                     for f in sorted(folder.rglob("*")) if f.is_file() and not f.is_symlink()]
            self.copy_files(mid, rid, have, [(rel, size, partial(Path, f)) for rel, size, f in files])
            return
        if not uri:
            return
        if not self.src.is_http and not _remote(uri):
            # MLflow makes a run's folder with its first artifact, so a missing one is a run without
            # artifacts, unless the whole root (<root>/<experiment>/<run>/artifacts) is gone: then they moved
            if self.src.artifacts is None and self.src.local_dir(uri.rstrip("/").rsplit("/", 3)[0]) is None:
                self.skip(f"run {mid}: artifacts at {uri}: not there; pass --artifacts, the folder that holds them")
            return
        try:  # s3://, an MLflow server's proxied artifacts: the client lists and downloads
            listing = self.remote_listing(mid, None)
        except Exception as exc:
            self.skip(f"run {mid}: cannot list artifacts at {uri}: {_one_line(exc)}")
            return
        with tempfile.TemporaryDirectory(prefix="loopml-import-") as tmp:
            def fetch(rel: str) -> Path:
                return Path(self.client.download_artifacts(mid, rel, dst_path=tmp))

            self.copy_files(mid, rid, have, [(rel, size, partial(fetch, rel)) for rel, size in listing])

    def remote_listing(self, mid: str, path: str | None) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for fi in self.client.list_artifacts(mid, path):
            if fi.is_dir:
                out.extend(self.remote_listing(mid, fi.path))
            else:
                out.append((fi.path, int(fi.file_size or 0)))
        return out

    def copy_files(self, mid: str, rid: str, have: dict[str, int],
                   files: list[tuple[str, int, Callable[[], Path]]]) -> None:
        for rel, size, get in files:
            if have.get(rel) == size:
                self.summary.existing["artifact files"] += 1
                self.summary.existing["artifact bytes"] += size
                continue
            try:
                info = self.store.log_artifact(rid, get(), rel)
            except LoopMLError as exc:
                self.skip(f"run {mid}: artifact {rel!r}: {exc}")
                continue
            self.summary.copied["artifact files"] += 1
            self.summary.copied["artifact bytes"] += sum(i.size for i in info)

    def parents(self, todo: list[tuple[str, Any]]) -> None:
        """Parent links once every run exists (a child may be listed before its parent)."""
        links = {}
        for _exp, run in todo:
            parent = run.data.tags.get("mlflow.parentRunId")
            if parent in self.run_ids and run.info.run_id in self.run_ids:
                links[self.run_ids[run.info.run_id]] = self.run_ids[parent]
        if not links:
            return
        r = s.runs
        with self.store.transaction() as conn:
            for child, parent in links.items():
                conn.execute(r.update().where(r.c.id == child, r.c.parent_id.is_(None)).values(parent_id=parent))

    # -- the registry --------------------------------------------------------

    def models(self) -> None:
        registry = RegistryStore(self.store)
        rms = list(self.src._pages(self.client.search_registered_models))
        for done, rm in enumerate(rms, 1):
            try:
                check_model_name(rm.name)
            except ArgumentError as exc:
                self.skip(f"registered model {rm.name!r}: {exc}")
                continue
            self.model(registry, rm, check_alias)
            if self.progress:
                self.progress("models", done, len(rms))

    def model(self, registry: "RegistryStore", rm: Any, check_alias: Callable[[str], str]) -> None:
        name = rm.name
        try:
            ours = {int(v.tags[VERSION_TAG]): v.version for v in registry.list_versions(name) if VERSION_TAG in v.tags}
            self.summary.existing["models"] += 1
            existed = True
        except NotFound:
            ours, existed = {}, False
        versions = sorted(self.src._pages(self.client.search_model_versions, filter_string=f"name='{name}'"),
                          key=lambda v: int(v.version))
        for mv in versions:
            number = int(mv.version)
            if number in ours:
                self.summary.existing["versions"] += 1
                continue
            made = self.version(registry, name, mv)
            if made is not None:
                ours[number] = made
        if ours and not existed:
            self.summary.copied["models"] += 1
        aliases = dict(getattr(rm, "aliases", None) or {})
        if not aliases:
            return
        current = registry.get_model(name).aliases if ours else {}
        for alias, number in sorted(aliases.items()):
            try:
                check_alias(alias)
            except ArgumentError as exc:
                self.skip(f"alias {name}@{alias}: {exc}")
                continue
            target = ours.get(int(number))
            if target is None:
                self.skip(f"alias {name}@{alias}: its version {number} was not imported")
            elif current.get(alias) == target:
                self.summary.existing["aliases"] += 1
            else:
                registry.set_alias(name, alias, target, by="loopml import mlflow")
                self.summary.copied["aliases"] += 1

    def version(self, registry: "RegistryStore", name: str, mv: Any) -> int | None:
        tags = {k: v for k, v in (mv.tags or {}).items()}
        tags[VERSION_TAG] = str(mv.version)
        if mv.current_stage and mv.current_stage != "None":
            tags["mlflow_stage"] = mv.current_stage
        run_id = self.run_ids.get(mv.run_id) if mv.run_id else None
        try:
            uri = self.client.get_model_version_download_uri(name, mv.version)
        except Exception as exc:
            self.skip(f"version {name}/{mv.version}: {_one_line(exc)}")
            return None
        folder = self.src.local_dir(uri)
        with tempfile.TemporaryDirectory(prefix="loopml-import-") as tmp:
            if folder is None:
                try:
                    mlflow = _require_mlflow()
                    folder = Path(mlflow.artifacts.download_artifacts(
                        artifact_uri=f"models:/{name}/{mv.version}", dst_path=tmp, tracking_uri=self.src.uri))
                except Exception as exc:
                    hint = "" if self.src.artifacts else " (pass --artifacts, the folder that holds MLflow's files)"
                    self.skip(f"version {name}/{mv.version}: its files at {uri}: {_one_line(exc)}{hint}")
                    return None
            try:
                made = create_mlflow_version(registry, name, folder, run_id=run_id, tags=tags,
                                             description=mv.description or None, created_by=mv.user_id or None)
            except LoopMLError as exc:
                self.skip(f"version {name}/{mv.version}: {exc}")
                return None
        self.summary.copied["versions"] += 1
        return int(made.version)


def import_mlflow(source: MlflowSource, store: "TrackingStore", *, progress: Progress | None = None) -> ImportSummary:
    """Copy everything ``source`` holds into ``store``; safe to run again (see the module's docstring).

    Example::

        summary = import_mlflow(MlflowSource("sqlite:///mlflow.db"), TrackingStore(uri, artifact_root=root))
        for kind, copied, existing in summary.rows(): print(kind, copied, existing)
    """
    from mlflow.exceptions import MlflowException

    importer = _Importer(source, store, progress)
    try:
        importer.runs()
        importer.models()
    except (MlflowException, OSError, sa.exc.SQLAlchemyError) as exc:  # the source (or a disk) failed half-way
        raise StoreError(f"The import from {source.display} stopped: {_one_line(exc)}. What was "
                         "copied so far is kept; run the import again to finish it") from exc
    finally:
        importer.flush()
        source.close()
    return importer.summary
