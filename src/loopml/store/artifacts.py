"""Files under an artifact root that no path can escape.

Every artifact path goes through :func:`safe_relpath` once, on write, read,
list and delete alike: it decodes percent-encoding repeatedly (so
``%252e%252e`` is caught, not just ``%2e%2e``), turns backslashes into
slashes, and refuses absolute paths, drive letters, ``..`` segments and
control characters. The resolved path must still lie under the run's folder
after symlinks are followed, so a symlink planted inside the root cannot lead
out of it either.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from urllib.parse import unquote

from ..errors import ArgumentTypeError, ArtifactPathError, NotFound
from ..files import atomic_path, atomic_write
from .records import ArtifactInfo

__all__ = ["ArtifactRoot", "files_to_log", "safe_relpath", "sha256_file"]

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


class ArtifactRoot:
    """A folder holding one sub-folder of artifacts per run.

    >>> torch.save(model.state_dict(), "model.pt")
    >>> root = ArtifactRoot("artifacts")
    >>> [(i.path, i.size) for i in root.put("3fa2", "model.pt", "weights/model.pt")]
    [('weights/model.pt', ...)]
    >>> root.put("3fa2", "model.pt", "../model.pt")
    Traceback (most recent call last):
    ...
    loopml.errors.ArtifactPathError: ...
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def run_dir(self, run_id: str) -> Path:
        if not run_id.isalnum():
            raise ArtifactPathError(f"Run id {run_id!r} is not a run id")
        return self.root / run_id

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

    def open_path(self, run_id: str, path: str) -> Path:
        """The local file for a stored artifact (checked, must exist and be a file)."""
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
