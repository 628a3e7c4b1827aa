"""``RemoteStore``: the tracking store's interface over HTTP, talking to a ``loopml server``.

``loopml.start_run`` and friends use it when the tracking URI is
``http://host:port``. Like :class:`~loopml.store.TrackingStore` it is a
:class:`~loopml.store.protocols.TrackingBackend`, so a :class:`~loopml.tracking.run.Run`
and the background writer cannot tell the two apart (tests/contracts/ runs one
behaviour suite against both).

>>> import time
>>> store = RemoteStore(server_url)         # a loopml server's URL; token="..." if it needs one
>>> run = store.create_run(experiment="digits")
>>> store.log_metrics([(run.id, "loss", 0, time.time(), 0.5)])
>>> store.history(run.id, "loss").values
array([0.5])

Errors are translated at the boundary:

- cannot connect, timeout, 502/503/504: a transient :class:`~loopml.errors.StoreError`
  (``transient=True``), which the background writer retries, so no point is
  lost while the server or its database is down; other 5xx (a server bug, a
  store error that retrying cannot fix): a StoreError that is not transient;
- 401/403: :class:`~loopml.errors.AuthError`; 404: :class:`~loopml.errors.NotFound`;
- 400/422: :class:`~loopml.errors.FilterError`,
  :class:`~loopml.errors.ArtifactPathError` or :class:`RemoteValueError`
  (a ``ValueError``), each with the server's message;
- anything else: :class:`~loopml.errors.RemoteError`.

A metrics batch whose answer is lost (the connection drops after the server
stored it) is sent again, so points are delivered at least once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import httpx
import numpy as np
import orjson

from .. import __version__
from ..errors import (
    ArgumentError,
    ArtifactPathError,
    AuthError,
    Conflict,
    FilterError,
    IntegrityError,
    MigrationRequired,
    NotFound,
    RemoteError,
    StoreError,
)
from ..files import atomic_path
from . import wire
from ..store.artifacts import files_to_log, safe_relpath
from ..store.datasets import check_origin, check_predictions
from ..store.records import ArtifactInfo, Experiment, History, RunRecord
from ..store.validation import check_key, check_status, check_text_value

__all__ = ["RemoteStore", "RemoteValueError"]

_JSON = {"Content-Type": "application/json"}
_BINARY = {"Content-Type": "application/octet-stream"}
# bad gateway, unavailable, gateway timeout: the server (or the proxy before it) may answer later
_TRANSIENT = frozenset({502, 503, 504})


class RemoteValueError(RemoteError, ValueError):
    """The server refused an argument (HTTP 400/422); the message is the server's."""


def _q(segment: str) -> str:
    """One URL path segment, percent-encoded (a '/' in it stays inside the segment)."""
    return quote(segment, safe="")


def _raise_for(response: httpx.Response, where: str) -> None:
    """Turn an error answer into the loopml error its code stands for."""
    status = response.status_code
    if status < 400:
        return
    try:
        err = orjson.loads(response.read())["error"]
        code, message = str(err["code"]), str(err["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        code = f"http_{status}"
        message = f"{where} answered HTTP {status}: {response.text[:300] or response.reason_phrase}"
    if status in (401, 403):
        raise AuthError(f"{message} (server {where})")
    if status == 404:
        raise NotFound(message)
    if status in (400, 422):
        if code == "invalid_filter":
            raise FilterError(message)
        if code == "invalid_artifact_path":
            raise ArtifactPathError(message)
        raise RemoteValueError(message, code=code, status=status)
    if status == 409:
        raise Conflict(message)
    if code == "migration_required":
        raise MigrationRequired(message)
    if code == "integrity_error":
        raise IntegrityError(message)
    if status >= 500:
        raise StoreError(f"The loopml server at {where} failed: {message}", transient=status in _TRANSIENT)
    raise RemoteError(message, code=code, status=status)


def _default_transport() -> httpx.HTTPTransport:
    return httpx.HTTPTransport(
        # repeats only a failed connect: the request never left
        retries=1,
        # idle connections are dropped before uvicorn's default 5 s keep-alive
        # ends, so a request is never sent on a connection the server is closing
        limits=httpx.Limits(max_keepalive_connections=8, keepalive_expiry=4.0),
    )


class RemoteStore:
    """A :class:`~loopml.store.protocols.TrackingBackend` over one keep-alive HTTP client.

    ``token`` is sent as ``Authorization: Bearer <token>``; ``timeout`` bounds
    every read and write (seconds), ``connect_timeout`` the connection.
    ``transport`` swaps the HTTP transport (tests, proxies). Thread-safe.
    """

    def __init__(
        self,
        uri: str,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(uri, str) or not uri.startswith(("http://", "https://")):
            raise ArgumentError(f"Argument uri should be a server URL such as 'http://127.0.0.1:5000', got {uri!r}")
        self.uri = uri.rstrip("/")
        headers = {"User-Agent": f"loopml/{__version__}", "Accept-Encoding": "identity"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            base_url=f"{self.uri}/api/v1",
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport if transport is not None else _default_transport(),
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Any) -> RemoteStore:
        return cls(settings.tracking_uri, token=settings.tracking_token)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteStore({self.uri!r})"

    # -- transport ----------------------------------------------------------

    def request(self, method: str, path: str, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        """Send one request to ``/api/v1{path}``; an error answer raises the loopml error it stands for.

        ``kwargs`` go to :meth:`httpx.Client.build_request` (``params``, ``content``,
        ``headers``); ``stream=True`` leaves the body unread (close the response).
        Cannot connect, timeouts and 502/503/504 raise a transient
        :class:`~loopml.errors.StoreError` (see the module docstring for the rest).
        """
        try:
            request = self._client.build_request(method, path, **kwargs)
            response = self._client.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise StoreError(
                f"The loopml server at {self.uri} did not answer in time ({exc.__class__.__name__})",
                transient=True,
            ) from exc
        except httpx.HTTPError as exc:
            raise StoreError(
                f"Cannot reach the loopml server at {self.uri} ({exc.__class__.__name__}: {exc}); "
                "is `loopml server` running there?",
                transient=True,
            ) from exc
        if response.status_code >= 400:
            try:
                _raise_for(response, self.uri)
            finally:
                response.close()
        return response

    def request_json(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        """:meth:`request` with a JSON body (``body``) and a JSON answer (None for an empty one).

        What :class:`~loopml.models.remote.RemoteRegistry` builds on, e.g.
        ``store.request_json("GET", "/models")["models"]``.
        """
        if body is not None:
            kwargs["content"] = orjson.dumps(body)
            kwargs["headers"] = _JSON
        elif method in ("POST", "PUT", "PATCH", "DELETE"):
            kwargs["headers"] = _JSON  # the server refuses writes without a JSON content type
        response = self.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return orjson.loads(response.content)

    # -- experiments --------------------------------------------------------

    def get_or_create_experiment(self, name: str) -> Experiment:
        check_key(name, what="experiment")
        return Experiment(**self.request_json("POST", "/experiments", {"name": name}))

    def list_experiments(self) -> list[Experiment]:
        return [Experiment(**e) for e in self.request_json("GET", "/experiments")["experiments"]]

    # -- runs ---------------------------------------------------------------

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
    ) -> RunRecord:
        body = {
            "experiment": experiment,
            "name": name,
            "parent_id": parent_id,
            # converted here as the local store would, so 'nan' and True read the same
            "params": {k: check_text_value(k, v) for k, v in (params or {}).items()},
            "tags": {k: check_text_value(k, v, what="tag") for k, v in (tags or {}).items()},
            "git_commit": git_commit,
            "git_dirty": git_dirty,
            "host": host,
            "user": user,
            "command": command,
            "start_time": start_time,
            "run_id": run_id,
        }
        return wire.run_from_json(self.request_json("POST", "/runs", body))

    def set_status(self, run_id: str, status: str, *, end_time: float | None = None) -> None:
        check_status(status)  # the store's own message, before the request
        self.request_json("POST", f"/runs/{_q(run_id)}/status", {"status": status, "end_time": end_time})

    def heartbeat(self, run_ids: Sequence[str], at: float | None = None) -> None:
        """Mark runs alive. ``at`` is ignored: the server stamps its own clock."""
        if run_ids:
            self.request_json("POST", "/heartbeat", {"run_ids": list(run_ids)})

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        vals = {check_key(k, what="param key"): check_text_value(k, v) for k, v in params.items()}
        if vals:
            self.request_json("POST", f"/runs/{_q(run_id)}/params", {"params": vals})

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        vals = {check_key(k, what="tag key"): check_text_value(k, v, what="tag") for k, v in tags.items()}
        if vals:
            self.request_json("POST", f"/runs/{_q(run_id)}/tags", {"tags": vals})

    def delete_tag(self, run_id: str, key: str) -> None:
        self.request_json("DELETE", f"/runs/{_q(run_id)}/tags/{_q(key)}")

    def get_run(self, run_id: str) -> RunRecord:
        return wire.run_from_json(self.request_json("GET", f"/runs/{_q(run_id)}"))

    @staticmethod
    def _run_query(experiments: Sequence[str] | str | None, filter: str | None) -> list[tuple[str, Any]] | None:
        """Query parameters for a run search; None when ``experiments`` is an empty list (no runs)."""
        if isinstance(experiments, str):
            experiments = [experiments]
        elif experiments is not None:
            experiments = list(experiments)
            if not experiments:
                return None  # the server reads a missing list as "every experiment"
        query: list[tuple[str, Any]] = [("experiment", e) for e in experiments or ()]
        if filter is not None:
            query.append(("filter", filter))
        return query

    def search_runs(
        self,
        *,
        experiments: Sequence[str] | str | None = None,
        filter: str | None = None,
        order_by: Sequence[str] | str | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[RunRecord]:
        query = self._run_query(experiments, filter)
        if query is None:
            return []
        if isinstance(order_by, str):
            order_by = [order_by]
        query += [("order_by", o) for o in order_by or ()]
        query += [("limit", limit), ("offset", offset)]
        return [wire.run_from_json(r) for r in self.request_json("GET", "/runs", params=query)["runs"]]

    def count_runs(self, *, experiments: Sequence[str] | str | None = None, filter: str | None = None) -> int:
        query = self._run_query(experiments, filter)
        if query is None:
            return 0
        return int(self.request_json("GET", "/runs/count", params=query)["count"])

    def run_keys(self, *, experiments: Sequence[str] | str | None = None) -> dict[str, list[str]]:
        query = self._run_query(experiments, None)
        if query is None:
            return {"params": [], "metrics": [], "tags": []}
        keys: dict[str, list[str]] = self.request_json("GET", "/runs/keys", params=query)
        return keys

    # -- metrics ------------------------------------------------------------

    def log_metrics(self, points: Sequence[tuple[str, str, int, float, float]]) -> None:
        """Send ``(run_id, key, step, timestamp, value)`` points; large batches go in several requests."""
        step = wire.MAX_BATCH_POINTS
        for start in range(0, len(points), step):
            chunk = points[start : start + step]
            self.request("POST", "/metrics", content=wire.encode_metric_batch(chunk), headers=_JSON)

    def history(self, run_id: str, key: str, *, offset: int = 0, limit: int | None = None) -> History:
        """The points of one metric, fetched in pages of at most ``wire.MAX_HISTORY_POINTS``."""
        parts: list[History] = []
        got = 0
        while True:
            want = wire.MAX_HISTORY_POINTS if limit is None else min(wire.MAX_HISTORY_POINTS, limit - got)
            params = {"key": key, "format": "binary", "offset": offset + got, "limit": want}
            page = wire.decode_history(self.request("GET", f"/runs/{_q(run_id)}/history", params=params).content)
            parts.append(page)
            got += len(page.steps)
            if len(page.steps) < want or got == limit:
                break
        if len(parts) == 1:
            return parts[0]
        return History(*(np.concatenate(columns) for columns in zip(*parts)))

    def metric_keys(self, run_id: str) -> list[str]:
        return list(self.request_json("GET", f"/runs/{_q(run_id)}/metrics")["keys"])

    # -- artifacts ----------------------------------------------------------

    def _artifact_url(self, run_id: str, path: str) -> str:
        return f"/runs/{_q(run_id)}/artifacts/{quote(safe_relpath(path), safe='/')}"

    def _upload(self, run_id: str, path: str, content: Any) -> ArtifactInfo:
        response = self.request("PUT", self._artifact_url(run_id, path), content=content, headers=_BINARY)
        return ArtifactInfo(**orjson.loads(response.content))

    def put_artifact_bytes(self, run_id: str, path: str, data: bytes) -> ArtifactInfo:
        return self._upload(run_id, path, bytes(data))

    def log_artifact(self, run_id: str, local_path: str | os.PathLike[str], name: str | None = None) -> list[ArtifactInfo]:
        """Upload a file, or a folder's files, as ``name`` (default: the base name)."""
        pairs = files_to_log(local_path, name)  # every path checked before anything is uploaded
        infos = []
        for f, rel in pairs:
            with open(f, "rb") as fh:
                infos.append(self._upload(run_id, rel, fh))
        return infos

    def list_artifacts(self, run_id: str, prefix: str | None = None) -> list[ArtifactInfo]:
        params = {"prefix": prefix} if prefix else None
        doc = self.request_json("GET", f"/runs/{_q(run_id)}/artifacts", params=params)
        return [ArtifactInfo(**a) for a in doc["artifacts"]]

    def download_artifact(self, run_id: str, path: str, dest: str | os.PathLike[str]) -> Path:
        """Copy one artifact file into the folder ``dest``; returns the new file's path."""
        url = self._artifact_url(run_id, path)
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / safe_relpath(path).rsplit("/", 1)[-1]
        response = self.request("GET", url, stream=True)
        try:
            with atomic_path(target) as tmp, open(tmp, "wb") as f:
                for chunk in response.iter_bytes():
                    f.write(chunk)
        except httpx.HTTPError as exc:
            raise StoreError(f"Downloading {path!r} from {self.uri} failed: {exc}", transient=True) from exc
        finally:
            response.close()
        return target

    def delete_artifact(self, run_id: str, path: str) -> None:
        self.request_json("DELETE", self._artifact_url(run_id, path))

    # -- datasets -----------------------------------------------------------

    def log_dataset(self, run_id: str, record: Mapping[str, Any], role: str = "train") -> None:
        self.request_json("POST", f"/runs/{_q(run_id)}/datasets", {"role": role, "dataset": dict(record)})

    def get_dataset(self, fingerprint: str) -> dict[str, Any]:
        return dict(self.request_json("GET", f"/datasets/{_q(fingerprint)}"))

    def run_datasets(self, run_id: str) -> dict[str, str]:
        return dict(self.request_json("GET", f"/runs/{_q(run_id)}/datasets")["datasets"])

    def put_dataset(
        self,
        record: Mapping[str, Any],
        *,
        origin: Mapping[str, Any] | None = None,
        predictions: Sequence[tuple[str, int]] | None = None,
    ) -> None:
        check_origin(origin)  # the same errors as the database's, NaN included (JSON would send it as null)
        links = check_predictions(predictions)
        body = {
            "dataset": dict(record),
            "origin": None if origin is None else dict(origin),
            "predictions": None if predictions is None else [[p["request_id"], p["row"]] for p in links],
        }
        self.request_json("POST", "/datasets", body)

    def put_dataset_rows(self, fingerprint: str, local_path: str | os.PathLike[str]) -> dict[str, Any]:
        """Upload the rows file; the server checks it against the fingerprint before keeping it."""
        src = Path(local_path)
        if not src.is_file():
            raise NotFound(f"Cannot store the rows of {fingerprint[:12]}...: no file {str(src)!r}")
        with open(src, "rb") as fh:
            response = self.request("PUT", f"/datasets/{_q(fingerprint)}/rows", content=fh, headers=_BINARY)
        return dict(orjson.loads(response.content))

    def download_dataset_rows(self, fingerprint: str, dest: str | os.PathLike[str]) -> Path:
        """Download the rows file into the folder ``dest``, checked here too against the recorded sha256."""
        import hashlib

        record = self.get_dataset(fingerprint)
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / f"{fingerprint}.npz"
        response = self.request("GET", f"/datasets/{_q(fingerprint)}/rows", stream=True)
        h = hashlib.sha256()
        try:
            with atomic_path(target) as tmp, open(tmp, "wb") as f:
                for chunk in response.iter_bytes():
                    h.update(chunk)
                    f.write(chunk)
                if h.hexdigest() != record.get("stored_sha256"):
                    raise IntegrityError(f"The rows of dataset {fingerprint[:12]}... downloaded from {self.uri} do not match their sha256")
        except httpx.HTTPError as exc:
            raise StoreError(f"Downloading the rows of {fingerprint[:12]}... from {self.uri} failed: {exc}", transient=True) from exc
        finally:
            response.close()
        return target

    def list_datasets(self, *, prefix: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if prefix:
            params["prefix"] = prefix
        return list(self.request_json("GET", "/datasets", params=params)["datasets"])

    def dataset_lineage(self, fingerprint: str, *, limit: int = 100) -> dict[str, Any]:
        return dict(self.request_json("GET", f"/datasets/{_q(fingerprint)}/lineage", params={"limit": limit}))

    def datasets_of_request(self, request_id: str) -> list[dict[str, Any]]:
        if not isinstance(request_id, str) or not request_id:
            raise ArgumentError(f"Argument request_id should be a logged request's id, got {request_id!r}")
        return list(self.request_json("GET", f"/requests/{_q(request_id)}/datasets")["datasets"])
