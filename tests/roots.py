"""What an artifact root holds, read and changed behind the store's back, for both kinds of root.

The store's own methods are what the tests check; these helpers look at the folder
or the bucket directly (what was written, whether it is gone) and tamper with it
(a changed file must be refused), so that one test body covers the local folder
and S3 alike::

    assert stored_bytes(store, f"{run_id}/weights/model.pt") == b"..."
    overwrite(store, v.files["torch"].path, b"tampered")
"""

from __future__ import annotations

import shutil

from loopml.store import TrackingStore
from loopml.store.artifacts import LocalRoot
from loopml.store.registry import RegistryStore
from loopml.store.s3 import S3Root


def _s3(store: TrackingStore) -> S3Root:
    root = store.artifacts
    assert isinstance(root, S3Root), root
    return root


def stored_bytes(store: TrackingStore, key: str) -> bytes | None:
    """The bytes kept under ``key`` (relative to the root), None when there are none."""
    root = store.artifacts
    if isinstance(root, LocalRoot):
        path = root.root / key
        return path.read_bytes() if path.is_file() else None
    s3 = _s3(store)
    try:
        return bytes(s3.client.get_object(Bucket=s3.bucket, Key=s3._key(key))["Body"].read())
    except s3.client.exceptions.NoSuchKey:
        return None


def keys_under(store: TrackingStore, key: str) -> list[str]:
    """The files at or under ``key`` (``""``: all of them), relative to the root, sorted."""
    root = store.artifacts
    if isinstance(root, LocalRoot):
        path = root.root / key
        if path.is_file():
            return [key]
        return sorted(p.relative_to(root.root).as_posix() for p in path.rglob("*") if p.is_file())
    s3 = _s3(store)
    base = f"{s3.prefix}/" if s3.prefix else ""
    full = base + key
    pages = s3.client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=full)
    found = [o["Key"] for page in pages for o in page.get("Contents", ())]
    return sorted(k[len(base) :] for k in found if not key or k == full or k.startswith(full + "/"))


def written_at(store: TrackingStore, key: str) -> object:
    """When ``key`` was last written (a file's mtime in ns, an object's Last-Modified): unchanged if not rewritten."""
    root = store.artifacts
    if isinstance(root, LocalRoot):
        return (root.root / key).stat().st_mtime_ns
    s3 = _s3(store)
    head = s3.client.head_object(Bucket=s3.bucket, Key=s3._key(key))
    return (head["LastModified"], head["ETag"])


def overwrite(store: TrackingStore, key: str, data: bytes) -> None:
    """Replace the bytes under ``key`` as someone with access to the folder or bucket could.

    For S3 this machine's cached copies are dropped too: the cache is content-addressed,
    so it would keep handing out the checked original; a fresh machine reads the bucket.
    """
    root = store.artifacts
    if isinstance(root, LocalRoot):
        (root.root / key).write_bytes(data)
        return
    s3 = _s3(store)
    s3.client.put_object(Bucket=s3.bucket, Key=s3._key(key), Body=data)
    shutil.rmtree(s3.cache_dir, ignore_errors=True)


def tamper_model_file(registry: RegistryStore, name: str, version: int, fmt: str) -> None:
    """Append a byte to a registered version's stored file, wherever the root keeps it."""
    key = registry.get_version(name, version).files[fmt].path
    before = stored_bytes(registry.store, key)
    assert before is not None, key
    overwrite(registry.store, key, before + b"\0")
