"""What only the S3 artifact root does: multipart uploads, the checked cache, its errors.

Everything else about artifacts and registry files runs on S3 through the
``postgres`` set-up of tests/store/test_artifacts.py and tests/models/test_registry.py.
These tests use SQLite beside S3: the database is not what they are about.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopml.errors import ConfigError, IntegrityError, NotFound
from loopml.store import TrackingStore
from loopml.store.registry import RegistryStore
from loopml.store.roots import open_root
from loopml.store.s3 import S3Root, parse_s3_uri
from tests.roots import keys_under, overwrite

MiB = 1 << 20


@pytest.fixture
def s3_store(s3_root: str, tmp_path: Path) -> Iterator[TrackingStore]:
    # the smallest threshold S3 allows, so that an 11 MiB file goes in three parts
    root = S3Root(s3_root, multipart_threshold=5 * MiB)
    st = TrackingStore(f"sqlite:///{(tmp_path / 'loopml.db').as_posix()}", artifact_root=root)
    yield st
    st.close()


def _root(store: TrackingStore) -> S3Root:
    assert isinstance(store.artifacts, S3Root)
    return store.artifacts


def test_a_large_file_goes_in_parts_and_comes_back_checked(s3_store: TrackingStore, tmp_path: Path) -> None:
    run_id = s3_store.create_run(experiment="s3").id
    src = tmp_path / "weights.bin"
    src.write_bytes(os.urandom(11 * MiB))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()

    [info] = s3_store.log_artifact(run_id, src, "ckpt/weights.bin")

    root = _root(s3_store)
    head = root.client.head_object(Bucket=root.bucket, Key=root._key(f"{run_id}/ckpt/weights.bin"))
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload of three parts
    assert (info.size, info.sha256, head["Metadata"]["sha256"]) == (11 * MiB, digest, digest)
    local = s3_store.artifact_path(run_id, "ckpt/weights.bin")
    assert local == root.cache_dir / digest / "weights.bin" and local.read_bytes() == src.read_bytes()


def test_a_changed_object_is_refused_and_a_changed_cache_copy_is_fetched_again(
    s3_store: TrackingStore, tmp_path: Path
) -> None:
    run_id = s3_store.create_run(experiment="s3").id
    info = s3_store.put_artifact_bytes(run_id, "notes/a.txt", b"original bytes")
    cached = s3_store.artifact_path(run_id, "notes/a.txt")
    assert cached.read_bytes() == b"original bytes"

    cached.write_bytes(b"changed on this disk")  # the cache is checked before it is used
    assert s3_store.artifact_path(run_id, "notes/a.txt").read_bytes() == b"original bytes"

    overwrite(s3_store, f"{run_id}/notes/a.txt", b"changed in the bucket")  # and drops the cache
    with pytest.raises(IntegrityError, match="does not match the sha256 recorded when it was logged"):
        s3_store.artifact_path(run_id, "notes/a.txt")
    assert not (_root(s3_store).cache_dir / info.sha256).exists()
    with pytest.raises(NotFound, match=f"Run {run_id} has no artifact 'notes/b.txt'"):
        s3_store.artifact_path(run_id, "notes/b.txt")


def test_a_failed_registration_leaves_no_keys(s3_store: TrackingStore, tmp_path: Path) -> None:
    src = tmp_path / "model.pt"
    src.write_bytes(b"weights")
    registry = RegistryStore(s3_store)
    with pytest.raises(NotFound, match="no version 7 to be the parent"):  # inside the transaction, after the upload
        registry.create_version("m", files={"torch": (src, {})}, signature={}, parent_version=7)
    assert keys_under(s3_store, "_models") == []
    v = registry.create_version("m", files={"torch": (src, {})}, signature={})
    assert registry.file_path("m", v.version, "torch").read_bytes() == b"weights"
    with pytest.raises(ValueError, match="not in a folder on this machine"):
        registry.model_dir("m", v.version)
    registry.delete_version("m", v.version)
    assert keys_under(s3_store, "_models") == []


@pytest.mark.parametrize("uri", ["s3://", "s3://ab/x", "s3://Upper/x", "s3://bucket/a/../b", "s3://bucket/%2e%2e/b"])
def test_bad_s3_uris_say_what_works(uri: str) -> None:
    with pytest.raises(ConfigError, match="s3://|key prefix"):
        parse_s3_uri(uri)


def test_missing_bucket_and_credentials_are_config_errors(
    s3_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = "loopml-no-such-bucket"
    root = S3Root(f"s3://{bucket}/p")
    with pytest.raises(ConfigError, match=f"bucket '{bucket}' .* does not exist: create it"):
        root.put_bytes("ab12", "x.txt", b"x")

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role lookup on this machine
    with pytest.raises(ConfigError, match="No AWS credentials .* set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        S3Root(s3_root).put_bytes("ab12", "x.txt", b"x")

    from botocore.exceptions import ClientError

    refused = ClientError({"Error": {"Code": "InvalidAccessKeyId", "Message": "no such key"}}, "PutObject")
    error = root._error(refused, "the upload of x.txt")
    assert isinstance(error, ConfigError) and "S3 refused the credentials" in str(error)


def test_without_boto3_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # what `import boto3` meets when it is not installed
    with pytest.raises(ConfigError, match=r"needs boto3; install it with: pip install 'loopml\[s3\]'"):
        open_root("s3://team-bucket/loopml")
    with pytest.raises(ConfigError, match="s3://bucket/prefix"):
        open_root("gs://team-bucket/loopml")
