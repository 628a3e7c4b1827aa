"""An artifact root in an S3-compatible object store (AWS S3, MinIO, Ceph, SeaweedFS, ...).

``LOOPML_ARTIFACT_ROOT=s3://bucket/prefix`` keeps run artifacts under
``prefix/<run id>/``, model files under ``prefix/_models/`` and dataset rows
under ``prefix/_datasets/``, written through boto3 (the ``s3`` extra:
``pip install 'loopml[s3]'``). Credentials and region come from boto3's own
chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``,
``AWS_DEFAULT_REGION``, an instance role); the endpoint of a store that is not
AWS from ``LOOPML_S3_ENDPOINT_URL`` (path-style addressing) or boto3's own
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``.

- Uploads: a file under the multipart threshold (8 MiB) goes in one PUT with
  its sha256 in ``x-amz-checksum-sha256``, which S3 checks against the bytes it
  received; a larger one goes in parts (boto3's ``TransferConfig``), hashed as
  it is read, and is deleted again if those bytes differ from the file's hash
  taken first (the file changed while it was uploaded). Every object carries
  its sha256 in its metadata.
- Downloads stream into a local cache, content-addressed
  (``$LOOPML_HOME/cache/s3/<sha256>/<file name>``), hashed on the way in:
  a copy whose hash differs from the one the store recorded is refused
  (:class:`~loopml.errors.IntegrityError`). The cache may be deleted at any time.
- Keys: every path is checked with :func:`~loopml.store.artifacts.safe_relpath`
  and a run's keys must stay under ``prefix/<run id>/`` (hex run ids only).
- A missing boto3, a bucket that does not exist and refused credentials are
  :class:`~loopml.errors.ConfigError` saying what to set; an unreachable endpoint
  is a transient :class:`~loopml.errors.StoreError`.

Used through a store (``LOOPML_ARTIFACT_ROOT``), or by hand::

    root = S3Root("s3://team-bucket/loopml")
    [info] = root.put(run_id, "model.pt", "weights/model.pt")
    root.open_path(run_id, "weights/model.pt", sha256=info.sha256)   # a checked copy in the local cache
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .. import config
from ..errors import (
    ArtifactPathError,
    ConfigError,
    IntegrityError,
    NotFound,
    StoreError,
)
from .artifacts import (
    ObjectChanged,
    ObjectMissing,
    Staging,
    check_run_id,
    files_to_log,
    safe_relpath,
    sha256_file,
)
from .records import ArtifactInfo

__all__ = ["MULTIPART_THRESHOLD", "S3Root", "parse_s3_uri"]

MULTIPART_THRESHOLD = 8 << 20  # boto3's own default; S3's smallest part is 5 MiB
_MIN_PART = 5 << 20
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # S3's bucket naming rules
_CHUNK = 1 << 20
_REFUSED = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken",
    "InvalidClientTokenId", "AuthorizationHeaderMalformed", "403",
}
_MISSING = {"NoSuchKey", "404", "NotFound"}
_INSTALL = "pip install 'loopml[s3]'"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``"s3://bucket/a/b"`` → ("bucket", "a/b"); the prefix is checked like any artifact path (may be empty)."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ConfigError(f"An S3 artifact root should read s3://bucket/prefix, got {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(
            f"The bucket of artifact root {uri!r} should be an S3 bucket name (3 to 63 lowercase letters, digits, "
            "'.' or '-'), e.g. s3://team-artifacts/loopml"
        )
    prefix = prefix.strip("/")
    if prefix:
        try:
            prefix = safe_relpath(prefix)
        except ArtifactPathError as exc:
            raise ConfigError(f"The prefix of artifact root {uri!r} is not a clean key prefix: {exc}") from None
    return bucket, prefix


_LOADER: Any = None
_LOADER_LOCK = threading.Lock()


def _loader() -> Any:
    """botocore's data loader, one per process (it caches the service models it has parsed)."""
    global _LOADER
    with _LOADER_LOCK:
        if _LOADER is None:
            from botocore.loaders import create_loader

            _LOADER = create_loader()
        return _LOADER


class _HashingReader:
    """A file read front to back once, hashed as it goes.

    Not seekable on purpose: boto3 then reads it in order, part after part, so the
    hash is of exactly the bytes that were sent.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self.hash.update(data)
        return data

    def seekable(self) -> bool:
        return False


class S3Root:
    """An artifact root in an S3 bucket (see the module docstring for the rules).

    ``endpoint_url`` (default ``LOOPML_S3_ENDPOINT_URL``), ``cache_dir`` (default
    ``$LOOPML_HOME/cache/s3``) and ``multipart_threshold`` (bytes, at least 5 MiB)
    are keyword-only; the boto3 client is built once, on first use::

        store = TrackingStore("postgresql+psycopg://...", artifact_root=S3Root("s3://team/loopml"))
    """

    def __init__(
        self,
        uri: str,
        *,
        endpoint_url: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        multipart_threshold: int = MULTIPART_THRESHOLD,
    ) -> None:
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        if isinstance(multipart_threshold, bool) or not isinstance(multipart_threshold, int) or multipart_threshold < _MIN_PART:
            raise ConfigError(
                f"Argument multipart_threshold should be a number of bytes of at least {_MIN_PART} (S3's smallest "
                f"part), e.g. {MULTIPART_THRESHOLD}; got {multipart_threshold!r}"
            )
        self.multipart_threshold = multipart_threshold
        settings = None if endpoint_url is not None and cache_dir is not None else config.settings()
        self.endpoint_url = endpoint_url if endpoint_url is not None else (settings.s3_endpoint_url if settings else None)
        home = settings.home if settings else Path(".")
        self.cache_dir = Path(cache_dir if cache_dir is not None else home / "cache" / "s3").expanduser()
        try:  # at construction: a missing extra is reported when the store is opened, not at the first upload
            import boto3  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"LOOPML_ARTIFACT_ROOT is {self.uri}: an S3 artifact root needs boto3; install it with: {_INSTALL}"
            ) from None
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Root({self.uri!r})"

    # -- the client and its errors ----------------------------------------------

    @property
    def client(self) -> Any:
        """The boto3 S3 client, built once, on first use."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import boto3
                    import botocore.session
                    from botocore.config import Config

                    # a session of its own (credentials are read from the environment now, not cached
                    # from an earlier root) with the process's one loader: parsing botocore's S3 model
                    # again made each client cost ~100 ms, with the shared loader ~10 ms
                    core = botocore.session.Session()
                    core.register_component("data_loader", _loader())
                    # an S3-compatible store on its own host name has no per-bucket DNS names: path style
                    s3_options = {"addressing_style": "path"} if self.endpoint_url else {}
                    cfg = Config(retries={"max_attempts": 5, "mode": "standard"}, s3=s3_options)
                    session = boto3.session.Session(botocore_session=core)
                    self._client = session.client("s3", endpoint_url=self.endpoint_url, config=cfg)
        return self._client

    def _where(self) -> str:
        return f"{self.uri} (endpoint {self.endpoint_url or 'AWS, or AWS_ENDPOINT_URL'})"

    def _error(self, exc: Exception, what: str) -> Exception:
        """A boto3/botocore error as a loopml error that says what to set."""
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return ConfigError(
                f"No AWS credentials for the artifact root {self._where()}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            )
        if isinstance(exc, EndpointConnectionError):
            return StoreError(
                f"Cannot reach the S3 endpoint of the artifact root {self._where()}: {exc}. Is it up? Set "
                "LOOPML_S3_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) to the store's URL", transient=True,
            )
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            message = err.get("Message", "")
            if code == "NoSuchBucket":
                return ConfigError(
                    f"The bucket {self.bucket!r} of the artifact root {self._where()} does not exist: create it "
                    f"(e.g. aws s3 mb s3://{self.bucket}) or set LOOPML_ARTIFACT_ROOT to one that does"
                )
            if code in _REFUSED:
                return ConfigError(
                    f"S3 refused the credentials for {what} in the artifact root {self._where()} ({code}: {message}); "
                    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to a key that may read and "
                    f"write s3://{self.bucket}/{self.prefix}"
                )
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return StoreError(
                f"S3 failed {what} in the artifact root {self._where()}: {code}: {message}", transient=status >= 500
            )
        return StoreError(f"S3 failed {what} in the artifact root {self._where()}: {type(exc).__name__}: {exc}",
                          transient=True)

    def _call(self, what: str, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, what) from exc

    @staticmethod
    def _missing(exc: BaseException) -> bool:
        from botocore.exceptions import ClientError

        return isinstance(exc, ClientError) and str(exc.response.get("Error", {}).get("Code", "")) in _MISSING

    # -- keys -------------------------------------------------------------------

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _run_key(self, run_id: str, path: str) -> tuple[str, str]:
        """The checked relative path and the object key of a run's artifact; the key stays under the run's prefix."""
        rel = safe_relpath(path)
        base = self._key(check_run_id(run_id)) + "/"
        key = base + rel
        if not key.startswith(base) or any(p in ("", ".", "..") for p in key[len(base) :].split("/")):
            raise ArtifactPathError(f"Artifact path {path!r} leads outside the run's artifact folder")
        return rel, key

    def check(self, run_id: str, path: str) -> str:
        return self._run_key(run_id, path)[0]

    # -- writing ----------------------------------------------------------------

    def _upload(self, key: str, src: Path) -> tuple[int, str]:
        size = src.stat().st_size
        if size < self.multipart_threshold:
            return self._put_object(key, src.read_bytes())
        from boto3.s3.transfer import TransferConfig

        # boto3 cannot size the parts of a stream it cannot seek, and S3 takes at most 10,000 parts:
        # parts grow with the file (8 MiB parts reach 80 GB, larger files get larger parts)
        part = max(self.multipart_threshold, -(-size // 9_000 // _CHUNK) * _CHUNK)
        transfer = TransferConfig(multipart_threshold=self.multipart_threshold, multipart_chunksize=part)
        expected = sha256_file(src)
        with open(src, "rb") as f:
            reader = _HashingReader(f)
            self._call(
                f"the upload of {src.name}", self.client.upload_fileobj, Fileobj=reader, Bucket=self.bucket, Key=key,
                ExtraArgs={"Metadata": {"sha256": expected}}, Config=transfer,
            )
        sent = reader.hash.hexdigest()
        if sent != expected:
            self._call("the removal of a changed upload", self.client.delete_object, Bucket=self.bucket, Key=key)
            raise IntegrityError(f"{src} changed while it was uploaded to s3://{self.bucket}/{key}; log it again")
        return size, expected

    def _put_object(self, key: str, data: bytes) -> tuple[int, str]:
        digest = hashlib.sha256(data)
        self._call(
            f"the upload of {key.rsplit('/', 1)[-1]}", self.client.put_object, Bucket=self.bucket, Key=key, Body=data,
            ChecksumSHA256=base64.b64encode(digest.digest()).decode(), Metadata={"sha256": digest.hexdigest()},
        )
        return len(data), digest.hexdigest()

    def put(self, run_id: str, local_path: str | os.PathLike[str], name: str | None = None) -> list[ArtifactInfo]:
        """Upload a file, or a folder recursively, under ``name`` (default: its base name)."""
        pairs = files_to_log(local_path, name)
        keys = [(f, *self._run_key(run_id, rel)) for f, rel in pairs]  # every key checked before any upload
        out = []
        for f, rel, key in keys:
            size, sha = self._upload(key, f)
            out.append(ArtifactInfo(path=rel, size=size, sha256=sha, created_at=time.time()))
        return out

    def put_bytes(self, run_id: str, path: str, data: bytes) -> ArtifactInfo:
        rel, key = self._run_key(run_id, path)
        size, sha = self._put_object(key, data)
        return ArtifactInfo(path=rel, size=size, sha256=sha, created_at=time.time())

    def put_file(self, key: str, src: Path) -> tuple[int, str]:
        return self._upload(self._key(safe_relpath(key)), Path(src))

    # -- reading ----------------------------------------------------------------

    def _download(self, key: str, name: str, expected: str | None, verify: bool) -> Path:
        """Stream ``key`` into the cache, hashing it on the way; the cached file's path."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            if self._missing(exc):
                raise ObjectMissing(f"{key} is missing from the artifact root {self.uri}") from None
            raise self._error(exc, f"the download of {name}") from exc
        if expected is None:
            expected = resp.get("Metadata", {}).get("sha256")
        h = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=self.cache_dir, prefix=".part-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    for chunk in resp["Body"].iter_chunks(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                except (BotoCoreError, OSError) as exc:
                    raise StoreError(f"The download of s3://{self.bucket}/{key} broke off: {exc}", transient=True) from exc
            found = h.hexdigest()
            if verify and expected is not None and found != expected:
                raise ObjectChanged(f"{key} changed after it was stored", found=found)
            target = self.cache_dir / found / name
            target.parent.mkdir(exist_ok=True)
            os.replace(tmp, target)
            return target
        finally:
            tmp.unlink(missing_ok=True)

    def local_file(self, key: str, *, sha256: str | None = None, verify: bool = True) -> Path:
        """A local copy of ``key``: from the cache when it holds ``sha256``'s bytes, else downloaded and checked."""
        rel = safe_relpath(key)
        name = rel.rsplit("/", 1)[-1]
        if sha256 is not None:
            cached = self.cache_dir / sha256 / name
            if cached.is_file() and (not verify or sha256_file(cached) == sha256):
                return cached
        return self._download(self._key(rel), name, sha256, verify)

    def open_path(self, run_id: str, path: str, *, sha256: str | None = None) -> Path:
        """A checked local copy of a run's artifact (``sha256``: what the store recorded; else the object's own)."""
        rel, key = self._run_key(run_id, path)
        name = rel.rsplit("/", 1)[-1]
        try:
            if sha256 is not None:
                cached = self.cache_dir / sha256 / name
                if cached.is_file() and sha256_file(cached) == sha256:
                    return cached
            return self._download(key, name, sha256, True)
        except ObjectMissing:
            raise NotFound(f"Run {run_id} has no artifact {path!r}") from None
        except ObjectChanged as exc:
            raise IntegrityError(
                f"Artifact {rel!r} of run {run_id} does not match the sha256 recorded when it was logged "
                f"(found {exc.found[:12]}...): it was changed in s3://{self.bucket}/{key}"
            ) from None

    def stored_sha256(self, key: str) -> str | None:
        """The sha256 an object carries in its metadata, None when there is no such object."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(safe_relpath(key)))
        except (BotoCoreError, ClientError) as exc:
            if self._missing(exc):
                return None
            raise self._error(exc, f"reading {key}") from exc
        sha = head.get("Metadata", {}).get("sha256")
        return sha if isinstance(sha, str) else None

    # -- removing ---------------------------------------------------------------

    def _keys_under(self, key: str) -> Iterator[str]:
        """``key`` itself and every key in the folder ``key/`` (not ``keyfoo``)."""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call(f"the listing of {key}", lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=key)))
        for page in pages:
            for obj in page.get("Contents", ()):
                k = obj["Key"]
                if k == key or k.startswith(key + "/"):
                    yield k

    def _remove_key(self, key: str) -> bool:
        keys = list(self._keys_under(key))
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            resp = self._call(f"the removal of {key}", self.client.delete_objects, Bucket=self.bucket,
                              Delete={"Objects": batch, "Quiet": True})
            if resp.get("Errors"):
                e = resp["Errors"][0]
                raise StoreError(f"S3 did not remove {e.get('Key')} from {self.uri}: {e.get('Code')}: {e.get('Message')}")
        return bool(keys)

    def delete(self, run_id: str, path: str) -> None:
        _rel, key = self._run_key(run_id, path)
        if not self._remove_key(key):
            raise NotFound(f"Run {run_id} has no artifact {path!r}")

    def remove(self, key: str) -> bool:
        """Remove the object ``key`` or everything under ``key/``; False when there was nothing."""
        return self._remove_key(self._key(safe_relpath(key)))

    def staging(self, prefix: str) -> Staging:
        return _S3Staging(self, safe_relpath(prefix))


class _S3Staging:
    """A version's files uploaded straight to ``<prefix>/<random>/``: S3 has no rename, so they stay there."""

    def __init__(self, root: S3Root, prefix: str) -> None:
        self.root = root
        self.folder = f"{prefix}/{uuid.uuid4().hex}"

    def put(self, src: Path) -> tuple[int, str]:
        return self.root.put_file(f"{self.folder}/{src.name}", src)

    def final(self, version: int) -> str:
        return self.folder

    def commit(self) -> None:
        pass

    def discard(self) -> None:
        self.root.remove(self.folder)
