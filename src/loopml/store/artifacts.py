"""Files under an artifact root that no path can escape: a local folder or an S3 bucket.

An artifact root holds one sub-folder (key prefix) of artifacts per run, the
registry's model files under ``_models/`` and stored dataset rows under
``_datasets/``. The root's scheme picks the implementation: a path is a
:class:`LocalRoot`, ``s3://bucket/prefix`` an
:class:`~loopml.store.s3.S3Root` (boto3, the ``s3`` extra) (:func:`loopml.store.roots.open_root`). Both satisfy
:class:`ArtifactRoot`; what needs a file on this machine (loading a model,
``np.load`` of rows, a download) gets one from :meth:`ArtifactRoot.local_file`,
which for S3 is a sha256-checked copy in a local, content-addressed cache.

Every artifact path goes through :func:`safe_relpath` once, on write, read,
list and delete alike: it decodes percent-encoding repeatedly (so
``%252e%252e`` is caught, not just ``%2e%2e``), turns backslashes into
slashes, and refuses absolute paths, drive letters, ``..`` segments and
control characters. The resolved path must still lie under the run's folder
after symlinks are followed, so a symlink planted inside the root cannot lead
out of it either. S3 has no symlinks; there every key is built from a checked
path under the run's prefix and checked to stay under it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote

from ..errors import ArgumentError, ArgumentTypeError, ArtifactPathError, IntegrityError, NotFound
from ..files import atomic_path, atomic_write
from .records import ArtifactInfo

__all__ = [
    "ArtifactRoot",
    "LocalRoot",
    "ObjectChanged",
    "ObjectMissing",
    "Staging",
    "check_run_id",
    "files_to_log",
    "safe_relpath",
    "sha256_file",
]

# run ids are uuid4().hex (and MLflow's, imported, are too): anything else never names a folder or key
_RUN_ID = re.compile(r"^[0-9a-f]{1,64}$")

_MAX_DECODE = 4


def safe_relpath(path: str) -> str:
    """Return ``path`` as a clean relative POSIX path, or raise ArtifactPathError."""
    if not isinstance(path, str):
        raise ArgumentTypeError(f"Argument path should be a string, got {type(path).__name__}")
    decoded = path
    for _ in range(_MAX_DECODE):  # decode until stable, so double encoding cannot hide '..'
        nxt = unquote(decoded)
        if nxt == decoded:
            break
        decoded = nxt
    else:
        raise ArtifactPathError(f"Artifact path {path!r} is encoded too many times")
    cleaned = decoded.replace("\\", "/")
    if not cleaned or cleaned.strip() == "":
        raise ArtifactPathError("Artifact path should not be empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in cleaned):
        raise ArtifactPathError(f"Artifact path {path!r} should not contain control characters")
    if cleaned.startswith("/") or (len(cleaned) > 1 and cleaned[1] == ":") or cleaned.startswith("~"):
        raise ArtifactPathError(f"Artifact path {path!r} should be relative, e.g. 'plots/loss.png'")
    parts = [p for p in cleaned.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ArtifactPathError(f"Artifact path {path!r} should not contain '..'")
    if not parts:
        raise ArtifactPathError(f"Artifact path {path!r} names no file")
    return "/".join(parts)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks (artifacts, model files, OOD gates)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def files_to_log(local_path: str | os.PathLike[str], name: str | None = None) -> list[tuple[Path, str]]:
    """The (local file, checked artifact path) pairs that logging ``local_path`` as ``name`` makes.

    A folder gives each file below it under ``name/``; symlinks inside a folder
    are refused (only regular files are copied); every path is checked before
    anything is written or uploaded.
    """
    src = Path(local_path)
    if not src.exists():
        raise NotFound(f"Cannot log artifact {str(src)!r}: no such file or folder")
    dest = name if name is not None else src.name
    if src.is_dir():
        pairs = []
        for f in sorted(p for p in src.rglob("*") if p.is_file() or p.is_symlink()):
            if f.is_symlink():
                raise ArtifactPathError(
                    f"Folder {str(src)!r} contains a symlink {str(f.relative_to(src))!r}; "
                    "loopml copies regular files only"
                )
            pairs.append((f, f"{dest}/{f.relative_to(src).as_posix()}"))
    else:
        pairs = [(src.resolve(), dest)]
    return [(f, safe_relpath(rel)) for f, rel in pairs]


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is hex (what run ids are), else ArtifactPathError: it becomes a folder or key prefix."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise ArtifactPathError(f"Run id {run_id!r} is not a run id (hex digits, e.g. '3fa2...')")
    return run_id


class ObjectMissing(NotFound):
    """A file the store recorded is not in the artifact root (callers say which file of what)."""


class ObjectChanged(IntegrityError):
    """A stored file's bytes no longer hash to the sha256 recorded for them."""

    def __init__(self, message: str, *, found: str) -> None:
        super().__init__(message)
        self.found = found


@runtime_checkable
class Staging(Protocol):
    """The files of one registry version on their way in, before its rows are committed.

    ``folder`` is where :meth:`put` writes now; :meth:`final` names the folder the rows
    record (the local root renames the staging folder there in :meth:`commit`; S3 has no
    rename, so its files are written where they stay); :meth:`discard` removes them all
    when the transaction fails.
    """

    folder: str

    def put(self, src: Path) -> tuple[int, str]: ...

    def final(self, version: int) -> str: ...

    def commit(self) -> None: ...

    def discard(self) -> None: ...


@runtime_checkable
class ArtifactRoot(Protocol):
    """Where a database store keeps files: run artifacts, model files, dataset rows.

    Run artifacts are addressed by ``(run_id, path)``; the registry's and the
    datasets' files by a key relative to the root (``_models/digits/...``). Every
    path is checked with :func:`safe_relpath`. Two implementations:
    :class:`LocalRoot` (a folder) and :class:`~loopml.store.s3.S3Root`::

        root = open_root("s3://team-bucket/loopml")      # or a folder
        [info] = root.put(run_id, "model.pt", "weights/model.pt")
        np.load(root.open_path(run_id, "weights/model.pt", sha256=info.sha256))
    """

    uri: str  # what LOOPML_ARTIFACT_ROOT says to reach the same root from another process

    def check(self, run_id: str, path: str) -> str: ...

    def put(self, run_id: str, local_path: str | os.PathLike[str], name: str | None = None) -> list[ArtifactInfo]: ...

    def put_bytes(self, run_id: str, path: str, data: bytes) -> ArtifactInfo: ...

    def open_path(self, run_id: str, path: str, *, sha256: str | None = None) -> Path: ...

    def delete(self, run_id: str, path: str) -> None: ...

    def put_file(self, key: str, src: Path) -> tuple[int, str]: ...

    def local_file(self, key: str, *, sha256: str | None = None, verify: bool = True) -> Path: ...

    def stored_sha256(self, key: str) -> str | None: ...

    def remove(self, key: str) -> bool: ...

    def staging(self, prefix: str) -> Staging: ...


class LocalRoot:
    """A folder holding one sub-folder of artifacts per run.

    >>> torch.save(model.state_dict(), "model.pt")
    >>> root = LocalRoot("artifacts")
    >>> [(i.path, i.size) for i in root.put("3fa2", "model.pt", "weights/model.pt")]
    [('weights/model.pt', ...)]
    >>> root.put("3fa2", "model.pt", "../model.pt")
    Traceback (most recent call last):
    ...
    loopml.errors.ArtifactPathError: ...
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def __repr__(self) -> str:
        return f"LocalRoot({self.uri!r})"

    def run_dir(self, run_id: str) -> Path:
        return self.root / check_run_id(run_id)

    def resolve(self, run_id: str, path: str) -> tuple[str, Path]:
        """The checked relative path and the absolute file path it maps to."""
        rel = safe_relpath(path)
        base = self.run_dir(run_id)
        target = base / rel
        # Follow symlinks of whatever exists and make sure we are still inside.
        real_base = base.resolve()
        real = target.resolve()
        if real != real_base and real_base not in real.parents:
            raise ArtifactPathError(f"Artifact path {path!r} leads outside the run's artifact folder")
        return rel, target

    def check(self, run_id: str, path: str) -> str:
        """The checked relative path of a run's artifact (ArtifactPathError if it would lead out)."""
        return self.resolve(run_id, path)[0]

    def put(self, run_id: str, local_path: str | os.PathLike[str], name: str | None = None) -> list[ArtifactInfo]:
        """Copy a file, or a folder recursively, under ``name`` (default: its base name)."""
        pairs = files_to_log(local_path, name)
        return [self._put_file(run_id, f, rel) for f, rel in pairs]

    def _put_file(self, run_id: str, src: Path, path: str) -> ArtifactInfo:
        rel, target = self.resolve(run_id, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        rel, target = self.resolve(run_id, rel)  # re-check: mkdir may have met a planted symlink
        with atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
        return ArtifactInfo(path=rel, size=target.stat().st_size, sha256=sha256_file(target), created_at=time.time())

    def put_bytes(self, run_id: str, path: str, data: bytes) -> ArtifactInfo:
        rel, target = self.resolve(run_id, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        rel, target = self.resolve(run_id, rel)
        atomic_write(target, data)
        return ArtifactInfo(
            path=rel, size=len(data), sha256=hashlib.sha256(data).hexdigest(), created_at=time.time()
        )

    def open_path(self, run_id: str, path: str, *, sha256: str | None = None) -> Path:
        """The local file for a stored artifact (checked, must exist and be a file).

        ``sha256`` (what the store recorded) is not checked here: the file is on this
        machine already, and hashing it on every download would cost a read of it.
        """
        _rel, target = self.resolve(run_id, path)
        if not target.is_file():
            raise NotFound(f"Run {run_id} has no artifact {path!r}")
        return target

    def delete(self, run_id: str, path: str) -> None:
        _rel, target = self.resolve(run_id, path)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        else:
            raise NotFound(f"Run {run_id} has no artifact {path!r}")

    # -- files by key (the registry's models, the datasets' rows) ---------------

    def _path(self, key: str) -> Path:
        """The file of a root-relative key; a planted symlink that leads out of the root is refused."""
        target = self.root / safe_relpath(key)
        real = target.resolve()
        if self.root not in real.parents:
            raise ArtifactPathError(f"{target} leads outside the artifact root {self.root}; remove the symlink")
        return target

    def put_file(self, key: str, src: Path) -> tuple[int, str]:
        """Copy ``src`` to ``key`` whole or not at all; its size and the sha256 of what was written."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        target = self._path(key)  # re-check: mkdir may have met a planted symlink
        with atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
        return target.stat().st_size, sha256_file(target)

    def local_file(self, key: str, *, sha256: str | None = None, verify: bool = True) -> Path:
        """The file of ``key``, checked against ``sha256`` when given (unless ``verify=False``)."""
        target = self._path(key)
        if target.is_symlink():
            raise ArtifactPathError(f"{target} is a symlink; loopml keeps regular files there, remove it")
        if not target.is_file():
            raise ObjectMissing(f"{key} is missing from the artifact root {self.uri}")
        if verify and sha256 is not None:
            found = sha256_file(target)
            if found != sha256:
                raise ObjectChanged(f"{key} changed after it was stored", found=found)
        return target

    def stored_sha256(self, key: str) -> str | None:
        target = self._path(key)
        return sha256_file(target) if target.is_file() and not target.is_symlink() else None

    def remove(self, key: str) -> bool:
        """Remove the file or folder ``key``; False when there was none."""
        target = self._path(key)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
            return True
        if target.exists() or target.is_symlink():
            target.unlink()
            return True
        return False

    def staging(self, prefix: str) -> Staging:
        return _LocalStaging(self, safe_relpath(prefix))


class _LocalStaging:
    """Files copied into ``<prefix>/.staging-<random>`` and renamed to ``<prefix>/<version>-<random>``."""

    def __init__(self, root: LocalRoot, prefix: str) -> None:
        self.root = root
        self.prefix = prefix
        self.folder = f"{prefix}/.staging-{uuid.uuid4().hex}"
        self._final: str | None = None
        root._path(self.folder).mkdir(parents=True)

    def put(self, src: Path) -> tuple[int, str]:
        return self.root.put_file(f"{self.folder}/{src.name}", src)

    def final(self, version: int) -> str:
        # the random part keeps two stores sharing a root from writing or deleting each other's m/1
        self._final = f"{self.prefix}/{version}-{uuid.uuid4().hex[:12]}"
        return self._final

    def commit(self) -> None:
        if self._final is None:
            raise ArgumentError("Staging.final(version) names the folder before commit()")
        self.root._path(self.folder).rename(self.root._path(self._final))

    def discard(self) -> None:
        staged = self.root._path(self.folder)
        if self._final is not None and not staged.exists():
            self.root.remove(self._final)
        shutil.rmtree(staged, ignore_errors=True)
