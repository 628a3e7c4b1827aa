"""Artifacts: files and folders copied with size and sha256; no path escapes the artifact root.

Each test runs on SQLite with a local folder and on PostgreSQL with an S3 root
(tests/conftest.py); the symlink tests are about folders and run on the local root only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopml.errors import ArtifactPathError, NotFound
from loopml.store import TrackingStore
from loopml.store.artifacts import LocalRoot
from tests.roots import keys_under, stored_bytes

ESCAPES = ["../../x", "..\\..\\x", "%2e%2e/x", "%252e%252e/x", "/etc/passwd", "C:\\x", "a/../../x", "~/x"]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root``: file contents, None for folders (the SQLite files left out)."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        for name in dirnames:
            out[str((d / name).relative_to(root))] = None
        for name in filenames:
            if name.startswith("loopml.db"):
                continue  # the database and its WAL change on every read
            p = d / name
            out[str(p.relative_to(root))] = b"<link>" if p.is_symlink() else p.read_bytes()
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def run_id(store: TrackingStore) -> str:
    return store.create_run(experiment="digits").id


def test_log_a_file(store: TrackingStore, run_id: str, tmp_path: Path) -> None:
    src = tmp_path / "model.pt"
    src.write_bytes(b"\x00weights" * 1000)

    [info] = store.log_artifact(run_id, src, name="weights/model.pt")

    assert stored_bytes(store, f"{run_id}/weights/model.pt") == src.read_bytes()
    assert (info.path, info.size, info.sha256) == ("weights/model.pt", 8000, sha(src.read_bytes()))
    assert store.list_artifacts(run_id) == [info]
    local = store.artifact_path(run_id, "weights/model.pt")  # the file itself, or S3's checked copy
    assert local.read_bytes() == src.read_bytes() and local.name == "model.pt"
    if isinstance(store.artifacts, LocalRoot):
        assert local == store.artifacts.root / run_id / "weights" / "model.pt"

    dest = store.download_artifact(run_id, "weights/model.pt", tmp_path / "down")
    assert dest == tmp_path / "down" / "model.pt" and dest.read_bytes() == src.read_bytes()


def test_log_a_folder_recursively(store: TrackingStore, run_id: str, tmp_path: Path) -> None:
    src = tmp_path / "plots"
    (src / "sub").mkdir(parents=True)
    files = {"a.txt": b"alpha", "sub/b.bin": os.urandom(3000), "sub/empty": b""}
    for rel, data in files.items():
        (src / rel).write_bytes(data)

    infos = store.log_artifact(run_id, src)

    assert [(i.path, i.size, i.sha256) for i in infos] == [
        (f"plots/{rel}", len(data), sha(data)) for rel, data in sorted(files.items())
    ]
    for rel, data in files.items():
        assert stored_bytes(store, f"{run_id}/plots/{rel}") == data
    assert [i.path for i in store.list_artifacts(run_id, "plots/sub")] == ["plots/sub/b.bin", "plots/sub/empty"]
    assert store.list_artifacts(run_id, "plot") == []  # a prefix is a whole path segment


def test_put_bytes_overwrites_and_records_the_new_hash(store: TrackingStore, run_id: str) -> None:
    store.put_artifact_bytes(run_id, "notes/readme.md", b"v1")
    info = store.put_artifact_bytes(run_id, "notes/readme.md", b"version two")

    assert (info.size, info.sha256) == (11, sha(b"version two"))
    assert store.list_artifacts(run_id) == [info]
    assert store.artifact_path(run_id, "notes/readme.md").read_bytes() == b"version two"


def test_delete_removes_file_folder_and_records(store: TrackingStore, run_id: str) -> None:
    store.put_artifact_bytes(run_id, "d/one", b"1")
    store.put_artifact_bytes(run_id, "d/two", b"2")
    store.put_artifact_bytes(run_id, "keep", b"k")

    store.delete_artifact(run_id, "d")

    assert [i.path for i in store.list_artifacts(run_id)] == ["keep"]
    assert keys_under(store, run_id) == [f"{run_id}/keep"]
    with pytest.raises(NotFound, match=f"Run {run_id} has no artifact 'd'"):
        store.delete_artifact(run_id, "d")
    with pytest.raises(NotFound, match=f"Run {run_id} has no artifact 'missing'"):
        store.artifact_path(run_id, "missing")


def test_missing_source_and_unknown_run(store: TrackingStore, run_id: str, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="Cannot log artifact .*nothing-here.*: no such file or folder"):
        store.log_artifact(run_id, tmp_path / "nothing-here")
    with pytest.raises(NotFound, match="Run 'f+' does not exist"):
        store.put_artifact_bytes("f" * 32, "x", b"x")


@pytest.mark.parametrize("path", ESCAPES)
def test_escaping_paths_are_refused_everywhere(store: TrackingStore, run_id: str, tmp_path: Path, path: str) -> None:
    src = tmp_path / "src.txt"
    src.write_bytes(b"payload")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "f").write_bytes(b"payload")
    store.put_artifact_bytes(run_id, "x", b"inside")
    before = tree(tmp_path)
    before_root = keys_under(store, "")

    attempts = {
        "log_artifact file": lambda: store.log_artifact(run_id, src, name=path),
        "log_artifact folder": lambda: store.log_artifact(run_id, folder, name=path),
        "put_artifact_bytes": lambda: store.put_artifact_bytes(run_id, path, b"evil"),
        "artifact_path": lambda: store.artifact_path(run_id, path),
        "download_artifact": lambda: store.download_artifact(run_id, path, tmp_path / "down"),
        "list_artifacts": lambda: store.list_artifacts(run_id, path),
        "delete_artifact": lambda: store.delete_artifact(run_id, path),
    }
    for what, attempt in attempts.items():
        with pytest.raises(ArtifactPathError, match="Artifact path .*(relative|'\\.\\.')"):
            attempt()
            pytest.fail(f"{what} accepted {path!r}")

    after = tree(tmp_path)
    assert after == before  # nothing written, moved or deleted anywhere under tmp_path
    assert keys_under(store, "") == before_root == [f"{run_id}/x"]  # nor in the bucket
    assert [i.path for i in store.list_artifacts(run_id)] == ["x"]


@pytest.mark.parametrize("bad_run", ["..", "../other", "a/b", "", "ABC", "run1"])
def test_run_ids_cannot_walk_the_root(store: TrackingStore, bad_run: str) -> None:
    with pytest.raises(ArtifactPathError, match="is not a run id"):
        store.artifact_path(bad_run, "x")
    with pytest.raises(ArtifactPathError, match="is not a run id"):
        store.artifacts.put_bytes(bad_run, "x", b"x")


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[TrackingStore]:
    """SQLite with a local folder: symlinks are a folder's trouble (S3 has none)."""
    st = TrackingStore(f"sqlite:///{(tmp_path / 'local.db').as_posix()}", artifact_root=tmp_path / "artifacts")
    yield st
    st.close()


def test_planted_symlink_cannot_lead_outside(local_store: TrackingStore, tmp_path: Path) -> None:
    store = local_store
    run_id = store.create_run(experiment="digits").id
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"top secret")
    assert isinstance(store.artifacts, LocalRoot)
    run_dir = store.artifacts.root / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "link").symlink_to(outside, target_is_directory=True)
    (run_dir / "file-link").symlink_to(outside / "secret")
    src = tmp_path / "src.txt"
    src.write_bytes(b"payload")
    before_outside = tree(outside)

    refused = "leads outside the run's artifact folder"
    with pytest.raises(ArtifactPathError, match=refused):
        store.put_artifact_bytes(run_id, "link/new", b"evil")
    with pytest.raises(ArtifactPathError, match=refused):
        store.put_artifact_bytes(run_id, "link/secret", b"evil")
    with pytest.raises(ArtifactPathError, match=refused):
        store.log_artifact(run_id, src, name="link/deeper/new.txt")
    with pytest.raises(ArtifactPathError, match=refused):
        store.artifact_path(run_id, "link/secret")
    with pytest.raises(ArtifactPathError, match=refused):
        store.artifact_path(run_id, "file-link")
    with pytest.raises(ArtifactPathError, match=refused):
        store.download_artifact(run_id, "link/secret", tmp_path / "down")
    with pytest.raises(ArtifactPathError, match=refused):
        store.delete_artifact(run_id, "link/secret")
    with pytest.raises(ArtifactPathError, match=refused):
        store.delete_artifact(run_id, "link")
    # Listing reads the database only: the planted files were never recorded.
    assert store.list_artifacts(run_id, "link") == []

    assert tree(outside) == before_outside
    assert not (tmp_path / "down").exists()
    assert (run_dir / "link").is_symlink() and (run_dir / "file-link").is_symlink()


def test_folder_with_a_symlink_is_refused(store: TrackingStore, run_id: str, tmp_path: Path) -> None:
    # the symlink is in the folder being logged: refused before anything reaches either root
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "ok.txt").write_bytes(b"ok")
    (src / "sneaky").symlink_to("/etc/passwd")

    with pytest.raises(ArtifactPathError, match="contains a symlink 'sneaky'; loopml copies regular files only"):
        store.log_artifact(run_id, src)

    assert store.list_artifacts(run_id) == []
    assert keys_under(store, f"{run_id}/ckpt") == []
