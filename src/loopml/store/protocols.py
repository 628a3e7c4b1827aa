"""The seams between loopml's parts, as ``typing.Protocol``s: what a tracking backend, a registry
and an artifact store offer, whichever implementation is behind them.

- :class:`ArtifactStore` and :class:`TrackingBackend`: :class:`~loopml.store.TrackingStore`
  (the database) and :class:`~loopml.tracking.remote.RemoteStore` (a ``loopml server``);
- :class:`Registry`: :class:`~loopml.store.registry.RegistryStore` (the database) and
  :class:`~loopml.models.remote.RemoteRegistry` (a ``loopml server``).

``loopml.start_run``, :class:`~loopml.tracking.Run`, the background writer, data
lineage and the model registry client are typed against these, never against one
implementation; mypy (strict, ``[tool.mypy]`` in pyproject.toml) checks that both
implementations satisfy them, and ``tests/contracts/`` runs one behaviour suite
against each.

Where the two sides differ, it is said here:

- :meth:`TrackingBackend.heartbeat`: ``at`` is the local store's clock; a server
  stamps its own (a client's clock cannot keep a dead run alive).
- Only on the database: ``TrackingStore.artifact_path`` and
  ``TrackingStore.dataset_rows_path`` (files on this machine's disk; over HTTP use
  :meth:`ArtifactStore.download_artifact` and :meth:`TrackingBackend.download_dataset_rows`), and the
  registry's file writers ``RegistryStore.create_version`` / ``add_file`` /
  ``model_dir`` / ``versions_of_run``: a server only registers versions from a
  run's artifacts (:meth:`Registry.create_version_from_run`) and adds formats
  itself (``loopml.models.export``, ``loopml.models.quantize``), so callers that
  write files get the local registry from
  :func:`loopml.store.registry.local_registry`, which refuses a remote one with
  an error that says where to run instead.
- Only over HTTP: ``RemoteRegistry.export`` / ``quantize`` ask the server to do the
  work next to its files; on the database ``loopml.models.export`` /
  ``loopml.models.quantize`` do it in-process.

This module imports no SQLAlchemy and no HTTP client: it is types only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .records import ArtifactInfo, Experiment, History, RunRecord
    from .registry import AliasEvent, ModelInfo, ModelVersion

__all__ = ["ArtifactStore", "MetricPoint", "Registry", "TrackingBackend"]

# (run_id, key, step, timestamp, value)
MetricPoint = tuple[str, str, int, float, float]


@runtime_checkable
class ArtifactStore(Protocol):
    """A run's files: log, list, fetch and delete them by path relative to the run.

    Paths are checked (:func:`loopml.store.artifacts.safe_relpath`): ``..``,
    absolute paths and control characters raise
    :class:`~loopml.errors.ArtifactPathError`; a missing artifact raises
    :class:`~loopml.errors.NotFound`.
    """

    def log_artifact(self, run_id: str, local_path: str | os.PathLike[str], name: str | None = None) -> list[ArtifactInfo]:
        """Store a file, or a folder's files, as ``name`` (default: the base name)."""
        ...

    def put_artifact_bytes(self, run_id: str, path: str, data: bytes) -> ArtifactInfo:
        """Store ``data`` as the artifact ``path``."""
        ...

    def list_artifacts(self, run_id: str, prefix: str | None = None) -> list[ArtifactInfo]:
        """The run's artifacts (under ``prefix``), sorted by path."""
        ...

    def download_artifact(self, run_id: str, path: str, dest: str | os.PathLike[str]) -> Path:
        """Copy one artifact file into the folder ``dest``; returns the new file's path."""
        ...

    def delete_artifact(self, run_id: str, path: str) -> None:
        """Delete an artifact file, or every artifact under a folder path."""
        ...


@runtime_checkable
class TrackingBackend(ArtifactStore, Protocol):
    """Experiments, runs, params, tags, metrics, datasets and artifacts: what a
    :class:`~loopml.tracking.Run` and ``loopml.start_run`` write through.

    Errors are loopml's on both sides: :class:`~loopml.errors.NotFound` for an
    unknown run, ``ValueError`` for a bad argument (a changed param, a bad key),
    :class:`~loopml.errors.FilterError` for a bad filter,
    :class:`~loopml.errors.StoreError` (``transient=True`` when retrying may help)
    when the store itself fails.
    """

    uri: str

    def close(self) -> None: ...

    # -- experiments
    def get_or_create_experiment(self, name: str) -> Experiment: ...

    def list_experiments(self) -> list[Experiment]: ...

    # -- runs
    def create_run(
        self,
        *,
        experiment: str,
        name: str | None = None,
        parent_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        git_commit: str | None = None,
        git_dirty: bool | None = None,
        host: str | None = None,
        user: str | None = None,
        command: str | None = None,
        start_time: float | None = None,
        run_id: str | None = None,
    ) -> RunRecord: ...

    def set_status(self, run_id: str, status: str, *, end_time: float | None = None) -> None: ...

    def heartbeat(self, run_ids: Sequence[str], at: float | None = None) -> None:
        """Mark runs alive; ``at`` is used by the database, a server stamps its own clock."""
        ...

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Params are write-once: the same value again is fine, another one is a ValueError."""
        ...

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None: ...

    def delete_tag(self, run_id: str, key: str) -> None: ...

    def get_run(self, run_id: str) -> RunRecord: ...

    def search_runs(
        self,
        *,
        experiments: Sequence[str] | str | None = None,
        filter: str | None = None,
        order_by: Sequence[str] | str | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[RunRecord]: ...

    def count_runs(self, *, experiments: Sequence[str] | str | None = None, filter: str | None = None) -> int: ...

    def run_keys(self, *, experiments: Sequence[str] | str | None = None) -> dict[str, list[str]]: ...

    # -- metrics
    def log_metrics(self, points: Sequence[MetricPoint]) -> None:
        """Store ``(run_id, key, step, timestamp, value)`` points (already validated)."""
        ...

    def history(self, run_id: str, key: str, *, offset: int = 0, limit: int | None = None) -> History: ...

    def metric_keys(self, run_id: str) -> list[str]: ...

    # -- datasets
    def log_dataset(self, run_id: str, record: Mapping[str, Any], role: str = "train") -> None: ...

    def get_dataset(self, fingerprint: str) -> dict[str, Any]: ...

    def run_datasets(self, run_id: str) -> dict[str, str]: ...

    def put_dataset(
        self,
        record: Mapping[str, Any],
        *,
        origin: Mapping[str, Any] | None = None,
        predictions: Sequence[tuple[str, int]] | None = None,
    ) -> None:
        """Store a record without a run, its ``origin`` (the first one stays) and the ``(request_id, row)`` it came from."""
        ...

    def put_dataset_rows(self, fingerprint: str, local_path: str | os.PathLike[str]) -> dict[str, Any]:
        """Keep a stored record's rows (an ``.npz``) once per content; a server checks them against the fingerprint."""
        ...

    def download_dataset_rows(self, fingerprint: str, dest: str | os.PathLike[str]) -> Path:
        """Copy the rows file into the folder ``dest``, checked against its sha256 (IntegrityError if altered)."""
        ...

    def list_datasets(self, *, prefix: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]: ...

    def dataset_lineage(self, fingerprint: str, *, limit: int = 100) -> dict[str, Any]: ...

    def datasets_of_request(self, request_id: str) -> list[dict[str, Any]]: ...


@runtime_checkable
class Registry(Protocol):
    """Named models, their immutable versions, files and aliases.

    Unknown names, versions and aliases raise :class:`~loopml.errors.NotFound`;
    deleting a version an alias points at raises :class:`~loopml.errors.Conflict`;
    a file whose sha256 no longer matches its record raises
    :class:`~loopml.errors.IntegrityError` from :meth:`file_path`.
    """

    def list_models(self) -> list[ModelInfo]: ...

    def get_model(self, name: str) -> ModelInfo: ...

    def list_versions(self, name: str) -> list[ModelVersion]: ...

    def get_version(self, name: str, version: int) -> ModelVersion: ...

    def resolve(self, ref: str) -> ModelVersion:
        """The version ``NAME``, ``NAME/VER``, ``NAME@VER``, ``NAME@ALIAS`` or ``NAME@latest`` names."""
        ...

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]: ...

    def file_path(self, name: str, version: int, fmt: str, *, verify: bool = True) -> Path:
        """A local file of one format of a version (over HTTP: downloaded once into a cache), sha256-checked."""
        ...

    def create_version_from_run(
        self,
        name: str,
        source: str,
        *,
        created_by: str | None = None,
        tags: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> ModelVersion:
        """Register what a run logged under ``source`` (``runs:/RUN_ID/PATH``) as the next version."""
        ...

    def set_alias(self, name: str, alias: str, version: int, *, by: str | None = None) -> AliasEvent: ...

    def delete_alias(self, name: str, alias: str, *, by: str | None = None) -> AliasEvent: ...

    def delete_version(self, name: str, version: int) -> None: ...

    def set_measurements(self, name: str, version: int, measurements: Mapping[str, Any]) -> ModelVersion: ...

    def set_description(self, name: str, version: int, description: str | None) -> ModelVersion: ...
