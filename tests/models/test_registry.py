"""The registry end to end on a real store: register, aliases, load, delete, integrity, sources."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import torch

import loopml
from loopml.errors import ArtifactPathError, Conflict, ExportError, IntegrityError, NotFound
from loopml.models import registry as R
from loopml.store.registry import RegistryStore, parse_ref

from tests.roots import keys_under, overwrite, stored_bytes

from .nets import MLP

torch.set_num_threads(1)
CLASSES = [str(i) for i in range(10)]


@pytest.fixture
def mlp() -> MLP:
    torch.manual_seed(0)
    return MLP(hidden=16)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(8, 64, generator=torch.Generator().manual_seed(1))


def _register(model: MLP, x: torch.Tensor, name: str = "mlp", **kw: object) -> R.ModelVersion:
    kw.setdefault("formats", ("torch",))
    with loopml.start_run(experiment="reg") as run:
        run.log({"val_accuracy": 0.9, "loss": float("nan")})
        return R.register(model, name, input_example=x, class_names=CLASSES, init_args={"hidden": 16}, **kw)  # type: ignore[arg-type]


def test_register_holds_signature_example_metrics_lineage(use_store: str, mlp: MLP, x: torch.Tensor) -> None:
    v = _register(mlp, x, formats=("pt2", "torch"), tags={"team": "vision"}, description="first")
    assert v.ref == "mlp/1"
    assert set(v.files) == {"pt2", "torch", "input_example"}
    assert v.signature["inputs"] == [{"name": "x", "dtype": "float32", "shape": [None, 64]}]
    assert v.signature["outputs"][0]["shape"] == [None, 10]
    assert v.signature["class_names"] == CLASSES
    assert v.model_spec == {"class_path": "tests.models.nets:MLP", "init_args": {"hidden": 16}}
    assert v.metrics == {"val_accuracy": 0.9}  # NaN left out: JSON has no place for it
    assert v.lineage["run_id"] == v.run_id and v.lineage["experiment"] == "reg"
    assert v.tags == {"team": "vision"} and v.description == "first"
    np.testing.assert_array_equal(R.input_example("mlp/1"), x.numpy())
    assert all(f.size > 0 and len(f.sha256) == 64 for f in v.files.values())
    v2 = _register(mlp, x)
    assert v2.version == 2 and [m.latest_version for m in R.list_models()] == [2]


def test_register_without_a_run_makes_one(use_store: str, mlp: MLP, x: torch.Tensor) -> None:
    v = R.register(mlp, "solo", input_example=x, formats=("torch",), init_args={"hidden": 16})
    run = loopml.get_run(v.run_id or "")
    assert run.name == "register solo" and run.status == "FINISHED"


def test_profile_of_the_runs_train_dataset_is_the_reference(use_store: str) -> None:
    from loopml import data

    ds = data.load("iris")
    model = MLP(n_in=4, hidden=16, n_out=3)
    with loopml.start_run(experiment="reg") as run:
        data.log_dataset(run, ds, role="train")
        v = R.register(model, "iris", input_example=ds.x[:4], formats=("torch",), init_args={"n_in": 4, "hidden": 16, "n_out": 3})
    assert v.profile is not None and v.profile == json.loads(json.dumps(data.profile(ds)))
    assert v.lineage["datasets"] == {"train": data.fingerprint(ds)}


def test_aliases_move_and_are_recorded(use_store: str, mlp: MLP, x: torch.Tensor) -> None:
    _register(mlp, x)
    _register(mlp, x)
    R.set_alias("mlp", "production", 1)
    R.set_alias("mlp", "production", 2)
    R.delete_alias("mlp", "production")
    events = R.alias_history("mlp")
    assert [(e.alias, e.from_version, e.to_version) for e in events] == [
        ("production", None, 1), ("production", 1, 2), ("production", 2, None),
    ]
    assert all(e.at > 0 and e.by for e in events)
    with pytest.raises(NotFound, match="has no alias 'production'"):
        R.load_model("mlp@production")


@pytest.mark.parametrize("ref, expected", [("mlp@production", 1), ("mlp/2", 2), ("mlp@2", 2), ("mlp@latest", 2), ("mlp", 2)])
def test_load_by_reference(use_store: str, mlp: MLP, x: torch.Tensor, ref: str, expected: int) -> None:
    _register(mlp, x)
    _register(mlp, x)
    R.set_alias("mlp", "production", 1)
    model = R.load_model(ref)
    assert model.version.version == expected
    np.testing.assert_allclose(model(x.numpy()), mlp(x).detach().numpy(), atol=1e-6)
    assert model.predict(x.numpy()).tolist() == mlp(x).argmax(1).tolist()
    np.testing.assert_allclose(model.predict_proba(x.numpy()).sum(1), 1.0, atol=1e-9)


@pytest.mark.parametrize("ref", ["", "a b", "../x", "x/0", "x/one", "x@Prod!", "x@", "-x"])
def test_bad_references_are_refused(ref: str) -> None:
    with pytest.raises(ValueError):
        parse_ref(ref)


def test_bad_register_arguments(use_store: str, mlp: MLP, x: torch.Tensor) -> None:
    with pytest.raises(TypeError, match="torch.nn.Module"):
        R.register("not a model", "m", input_example=x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Argument name"):
        R.register(mlp, "../etc", input_example=x)
    with pytest.raises(ValueError, match="Argument formats"):
        R.register(mlp, "m", input_example=x, formats=("tflite",))
    with pytest.raises(ValueError, match="does not rebuild this model"):
        R.register(mlp, "m", input_example=x, formats=("torch",), init_args={"hidden": 99})
    with pytest.raises(ValueError, match="reserved"):
        R.set_alias("m", "latest", 1)
    assert R.list_models() == []  # nothing half-registered


def test_delete_refused_while_an_alias_points(use_store: str, mlp: MLP, x: torch.Tensor) -> None:
    v1 = _register(mlp, x)
    _register(mlp, x)
    R.set_alias("mlp", "production", 1)
    R.set_alias("mlp", "staging", 1)
    with pytest.raises(Conflict, match=r"alias @production, @staging points at it"):
        R.delete_version("mlp/1")
    assert R.load_model("mlp/1").version.version == 1  # still there, files too
    R.set_alias("mlp", "production", 2)
    R.set_alias("mlp", "staging", 2)
    store = loopml.tracking.api.backend_for()
    files = {f.path for f in v1.files.values()}
    folder = files.pop().rpartition("/")[0]
    assert set(keys_under(store, folder)) == {f.path for f in v1.files.values()}
    R.delete_version("mlp/1")
    assert keys_under(store, folder) == []  # the local folder or the S3 keys
    with pytest.raises(NotFound, match="has no version 1"):
        R.get_version("mlp/1")
    assert R.get_version("mlp").version == 2
    assert v1.version == 1 and _register(mlp, x).version == 3  # numbers are never reused


def test_version_outlives_its_run(use_store: str, tmp_path: Path, mlp: MLP, x: torch.Tensor) -> None:
    v = _register(mlp, x)
    store = loopml.tracking.api.backend_for()
    assert store.artifacts.remove(v.run_id or "")
    with store.engine.begin() as conn:  # there is no run delete in the API yet: do what one would do
        conn.execute(sa.text("DELETE FROM runs WHERE id = :id"), {"id": v.run_id})
    model = R.load_model("mlp/1")
    np.testing.assert_allclose(model(x.numpy()), mlp(x).detach().numpy(), atol=1e-6)


def test_tampered_file_refuses_to_load(use_store: str, mlp: MLP, x: torch.Tensor) -> None:
    v = _register(mlp, x)
    store = loopml.tracking.api.backend_for()
    data = bytearray(stored_bytes(store, v.files["torch"].path) or b"")
    data[-20] ^= 0xFF
    overwrite(store, v.files["torch"].path, bytes(data))
    with pytest.raises(IntegrityError, match="does not match the sha256 recorded"):
        R.load_model("mlp/1", format="torch")


def test_loading_never_unpickles(use_store: str, tmp_path: Path, x: torch.Tensor) -> None:
    """A state dict file that is a pickle running code: registered (sha and all), it still does not run."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "state_dict.pt"
    torch.save({"net.0.weight": Evil()}, bad)
    store = loopml.tracking.api.backend_for()
    RegistryStore(store).create_version(
        "evil", files={"torch": (bad, {})}, signature={"inputs": [], "outputs": []},
        model_spec={"class_path": "tests.models.nets:MLP", "init_args": {}},
    )
    with pytest.raises(ExportError):
        R.load_model("evil/1", format="torch")
    assert not marker.exists()


def test_manifest_cannot_point_outside_the_run_folder(use_store: str, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "loopml-model.json").write_text(json.dumps({"files": {"torch": {"file": "../../../../etc/passwd"}}}))
    with loopml.start_run(experiment="reg") as run:
        run.log_artifact(folder, "model")
    with pytest.raises(ArtifactPathError):
        RegistryStore(loopml.tracking.api.backend_for()).create_version_from_run("m", f"runs:/{run.id}/model")


def test_load_in_a_fresh_interpreter_without_the_model_code(use_store: str, tmp_path: Path, x: torch.Tensor) -> None:
    """The model's module exists only in a folder the loading interpreter does not have on its path."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "hidden_net.py").write_text(Path(__file__).with_name("nets.py").read_text())
    sys.path.insert(0, str(code))
    try:
        import hidden_net  # type: ignore[import-not-found]

        torch.manual_seed(0)
        model = hidden_net.MLP(hidden=16)
        with loopml.start_run(experiment="reg"):
            R.register(model, "hidden", input_example=x, formats=("pt2", "torch"), init_args={"hidden": 16})
        expected = model(x).detach().numpy()
    finally:
        sys.path.remove(str(code))
        sys.modules.pop("hidden_net", None)
    np.save(tmp_path / "x.npy", x.numpy())
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        from loopml.models import registry as R
        try:
            import hidden_net
            sys.exit("the model code should not be importable here")
        except ImportError:
            pass
        out = R.load_model("hidden/1")(np.load({str(tmp_path / 'x.npy')!r}))
        np.save({str(tmp_path / 'out.npy')!r}, out)
        try:
            R.load_model("hidden/1", format="torch")
        except Exception as exc:
            print(type(exc).__name__, exc)
        """
    )
    env = {**os.environ, "LOOPML_TRACKING_URI": use_store, "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)
    assert "ExportError" in result.stdout and "hidden_net" in result.stdout and "pt2" in result.stdout


def test_export_adds_checked_formats(use_store: str, mlp: MLP, x: torch.Tensor) -> None:
    _register(mlp, x, formats=("pt2",))
    v = R.export("mlp/1", ["onnx"])
    assert v.files["onnx"].details["max_abs_diff"] <= 1e-4
    onnx_model = R.load_model("mlp/1", format="onnx")
    np.testing.assert_allclose(onnx_model(x.numpy()), mlp(x).detach().numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="Argument formats"):
        R.export("mlp/1", ["tflite"])
