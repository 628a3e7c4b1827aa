"""The Registry contract: one behaviour suite for the registry in the database and over HTTP.

``registry`` (tests/contracts/conftest.py) is a RegistryStore over a TrackingStore on
SQLite and on PostgreSQL, and a RemoteRegistry talking to a live loopml server;
versions are registered from a run's artifacts through the same ``backend``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from loopml.errors import ArtifactPathError, Conflict, NotFound
from loopml.store.protocols import Registry, TrackingBackend
from loopml.store.registry import MANIFEST, ModelVersion

WEIGHTS = b"\x01not really weights\xfe" * 50


def _log_model(backend: TrackingBackend, tmp_path: Path, *, weights: bytes = WEIGHTS, folder: str = "model") -> str:
    """A run whose artifacts hold a model folder (a manifest and one file); returns its ``runs:/`` source."""
    local = tmp_path / f"m-{hashlib.sha256(weights).hexdigest()[:8]}"
    local.mkdir()
    (local / "weights.bin").write_bytes(weights)
    manifest = {
        "files": {"bin": {"file": "weights.bin", "details": {"rows": 3}}},
        "signature": {"inputs": [{"name": "x", "dtype": "float32", "shape": [None, 4]}], "outputs": []},
        "tags": {"team": "vision"},
        "description": "from the manifest",
    }
    (local / MANIFEST).write_text(json.dumps(manifest))
    run = backend.create_run(experiment="reg")
    backend.log_metrics([(run.id, "val_accuracy", 0, 1.0, 0.875), (run.id, "loss", 0, 1.0, float("nan"))])
    backend.log_artifact(run.id, local, folder)
    return f"runs:/{run.id}/{folder}"


def test_register_from_a_runs_artifacts(registry: Registry, backend: TrackingBackend, tmp_path: Path) -> None:
    source = _log_model(backend, tmp_path)

    v = registry.create_version_from_run("mlp", source, created_by="ana", tags={"stage": "dev"})

    assert isinstance(v, ModelVersion) and v.ref == "mlp/1" and v.created_by == "ana"
    assert v.run_id == source.split("/")[1] and v.lineage["run_id"] == v.run_id and v.lineage["experiment"] == "reg"
    assert v.tags == {"team": "vision", "stage": "dev"} and v.description == "from the manifest"
    assert v.metrics == {"val_accuracy": 0.875}  # NaN left out: JSON has no place for it
    assert v.signature["inputs"][0]["shape"] == [None, 4]
    assert set(v.files) == {"bin"} and v.files["bin"].size == len(WEIGHTS)
    assert v.files["bin"].sha256 == hashlib.sha256(WEIGHTS).hexdigest() and v.files["bin"].details == {"rows": 3}
    again = registry.create_version_from_run("mlp", source)
    assert again.version == 2
    assert registry.get_version("mlp", 1) == v


def test_read_models_versions_and_references(registry: Registry, backend: TrackingBackend, tmp_path: Path) -> None:
    source = _log_model(backend, tmp_path)
    for _ in range(2):
        registry.create_version_from_run("mlp", source)
    registry.create_version_from_run("other", source)
    registry.set_alias("mlp", "production", 1)

    assert [(m.name, m.latest_version, m.version_count) for m in registry.list_models()] == [("mlp", 2, 2), ("other", 1, 1)]
    info = registry.get_model("mlp")
    assert info.aliases == {"production": 1} and info.updated_at >= info.created_at
    assert [v.version for v in registry.list_versions("mlp")] == [2, 1]
    for ref, expected in [("mlp", 2), ("mlp@latest", 2), ("mlp/1", 1), ("mlp@2", 2), ("mlp@production", 1)]:
        assert registry.resolve(ref).version == expected, ref
    assert registry.resolve("mlp@production").aliases == ("production",)


def test_unknown_names_versions_and_aliases_are_not_found(registry: Registry, backend: TrackingBackend, tmp_path: Path) -> None:
    registry.create_version_from_run("mlp", _log_model(backend, tmp_path))
    with pytest.raises(NotFound, match="No model named 'nothing'"):
        registry.get_model("nothing")
    with pytest.raises(NotFound):
        registry.list_versions("nothing")
    with pytest.raises(NotFound, match="has no version 9"):
        registry.get_version("mlp", 9)
    with pytest.raises(NotFound, match="has no alias 'production'"):
        registry.resolve("mlp@production")
    with pytest.raises(NotFound):
        registry.set_alias("mlp", "production", 9)
    with pytest.raises(ValueError, match="reserved"):
        registry.set_alias("mlp", "latest", 1)
    with pytest.raises(ValueError, match="Argument name"):
        registry.get_model("../etc")


def test_aliases_move_and_are_recorded(registry: Registry, backend: TrackingBackend, tmp_path: Path) -> None:
    source = _log_model(backend, tmp_path)
    registry.create_version_from_run("mlp", source)
    registry.create_version_from_run("mlp", source)

    first = registry.set_alias("mlp", "production", 1, by="ana")
    registry.set_alias("mlp", "production", 2, by="bo")
    registry.set_alias("mlp", "staging", 1)
    gone = registry.delete_alias("mlp", "production", by="cy")

    assert (first.from_version, first.to_version, first.by) == (None, 1, "ana")
    assert (gone.from_version, gone.to_version, gone.by) == (2, None, "cy")
    events = registry.alias_history("mlp", "production")
    assert [(e.from_version, e.to_version, e.by) for e in events] == [(None, 1, "ana"), (1, 2, "bo"), (2, None, "cy")]
    assert all(e.at > 0 for e in events) and len(registry.alias_history("mlp")) == 4
    assert registry.get_model("mlp").aliases == {"staging": 1}
    with pytest.raises(NotFound, match="has no alias 'production'"):
        registry.delete_alias("mlp", "production")


def test_delete_version_is_refused_while_an_alias_points_at_it(registry: Registry, backend: TrackingBackend, tmp_path: Path) -> None:
    source = _log_model(backend, tmp_path)
    registry.create_version_from_run("mlp", source)
    registry.create_version_from_run("mlp", source)
    registry.set_alias("mlp", "production", 1)

    with pytest.raises(Conflict, match="@production"):
        registry.delete_version("mlp", 1)
    registry.set_alias("mlp", "production", 2)
    registry.delete_version("mlp", 1)

    with pytest.raises(NotFound, match="has no version 1"):
        registry.get_version("mlp", 1)
    assert registry.create_version_from_run("mlp", source).version == 3  # numbers are never reused


def test_file_path_gives_the_registered_bytes(registry: Registry, backend: TrackingBackend, tmp_path: Path) -> None:
    v = registry.create_version_from_run("mlp", _log_model(backend, tmp_path))

    path = registry.file_path("mlp", v.version, "bin")

    assert path.read_bytes() == WEIGHTS
    assert registry.file_path("mlp", v.version, "bin", verify=False).read_bytes() == WEIGHTS
    with pytest.raises(NotFound, match="has no 'onnx' file"):
        registry.file_path("mlp", v.version, "onnx")


def test_measurements_merge_and_description_is_set(registry: Registry, backend: TrackingBackend, tmp_path: Path) -> None:
    v = registry.create_version_from_run("mlp", _log_model(backend, tmp_path))

    registry.set_measurements("mlp", v.version, {"accuracy": 0.9, "size": 10})
    merged = registry.set_measurements("mlp", v.version, {"size": 12})
    described = registry.set_description("mlp", v.version, "the good one")

    assert merged.measurements == {"accuracy": 0.9, "size": 12}
    assert described.description == "the good one" and described.measurements == merged.measurements
    assert registry.set_description("mlp", v.version, None).description is None
    assert registry.get_version("mlp", v.version).description is None


@pytest.mark.parametrize(
    "source",
    ["/etc/passwd", "file:///etc/passwd", "runs:/0123/x", "runs:/" + "a" * 32 + "/../../../etc",
     "runs:/" + "a" * 32 + "/%2e%2e/%2e%2e/etc", "s3://bucket/model"],
)
def test_sources_outside_a_runs_artifacts_are_refused(registry: Registry, source: str) -> None:
    with pytest.raises(ArtifactPathError):
        registry.create_version_from_run("m", source)
    assert registry.list_models() == []


def test_a_source_without_a_manifest_is_refused(registry: Registry, backend: TrackingBackend, tmp_path: Path) -> None:
    run = backend.create_run(experiment="reg")
    backend.put_artifact_bytes(run.id, "model/weights.bin", b"x")
    with pytest.raises(NotFound):
        registry.create_version_from_run("m", f"runs:/{run.id}/model")
    with pytest.raises(NotFound):
        registry.create_version_from_run("m", f"runs:/{'0' * 32}/model")
    assert registry.list_models() == []


def test_a_registered_torch_model_loads_back(registry: Registry, backend: TrackingBackend) -> None:
    """loopml.register through the backend, then load_version through the registry: the same outputs."""
    from tests.deps import need

    torch = need("torch", extra="torch")
    import numpy as np

    from loopml.models.registry import load_version, register
    from loopml.tracking.run import Run
    from loopml.tracking.writer import BatchWriter
    from tests.models.nets import MLP

    torch.manual_seed(0)
    model = MLP(n_in=4, hidden=4, n_out=2)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    writer = BatchWriter(backend)
    run = Run(backend, backend.create_run(experiment="reg"), writer=writer)
    try:
        v = register(model, "tiny", input_example=x, run=run, formats=("torch",), init_args={"n_in": 4, "hidden": 4, "n_out": 2})
    finally:
        run.finish()
        writer.close()

    assert v.ref == "tiny/1" and set(v.files) == {"torch", "input_example"} and v.run_id == run.id
    loaded = load_version(registry, registry.resolve("tiny@latest"), format="torch")
    np.testing.assert_allclose(loaded(x.numpy()), model(x).detach().numpy(), atol=1e-6)


def test_writing_files_needs_the_local_registry(registry: Registry, backend: TrackingBackend) -> None:
    """create_version / add_file exist only on the database; over HTTP the refusal says where to run instead."""
    from loopml.store.registry import RegistryStore, local_registry
    from loopml.store.tracking import TrackingStore

    if isinstance(backend, TrackingStore):
        assert isinstance(local_registry(registry, "fit_ood"), RegistryStore)
    else:
        with pytest.raises(ValueError, match=r"fit_ood stores files with the version, which a loopml server does not "
                                             r"accept over HTTP yet; run it where the store is \(e.g. with --store sqlite"):
            local_registry(registry, "fit_ood")
