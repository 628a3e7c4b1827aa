"""loopml.Client: the public API bound to one store, on real SQLite files and a real tracking server."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import loopml
from loopml.errors import LoopMLError, LoopMLWarning, NotFound
from loopml.store import TrackingStore
from tests.deps import need

from .models.nets import MLP

torch.set_num_threads(1)
CLASSES = [str(i) for i in range(10)]


@pytest.fixture(autouse=True)
def _forget_backends() -> Iterator[None]:
    from loopml.tracking import api

    yield
    loopml.set_tracking_uri(None)
    api.close_all()


@pytest.fixture
def uris(tmp_path: Path) -> tuple[str, str]:
    """Two SQLite stores."""
    return tuple(f"sqlite:///{(tmp_path / name / 'loopml.db').as_posix()}" for name in ("a", "b"))  # type: ignore[return-value]


@pytest.fixture
def mlp() -> MLP:
    torch.manual_seed(0)
    return MLP(hidden=16).eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(8, 64, generator=torch.Generator().manual_seed(1))


def _register(c: loopml.Client, model: MLP, x: torch.Tensor, name: str = "mlp", **kw: object) -> loopml.models.ModelVersion:
    with c.start_run(experiment="reg") as run:
        run.log({"val_accuracy": 0.9})
        return c.register(model, name, input_example=x, class_names=CLASSES, formats=("torch",), **kw)  # type: ignore[arg-type]


def test_the_uri_is_resolved_once_at_construction(uris: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPML_TRACKING_URI", uris[0])
    c = loopml.Client()
    loopml.set_tracking_uri(uris[1])  # later changes of the current URI do not move the client
    assert c.tracking_uri == uris[0] and loopml.Client().tracking_uri == uris[1]
    with c.start_run(experiment="e", params={"lr": 0.1}) as run:
        run.log({"loss": 0.5})
    assert list(loopml.runs(tracking_uri=uris[0])["run_id"]) == [run.id]
    assert loopml.runs().empty  # the current store, uris[1], has none
    assert list(c.runs("e")["params.lr"]) == ["0.1"]
    assert c.get_run(run.id).metrics == {"loss": 0.5}
    assert [e.name for e in c.experiments()] == ["e"]


def test_two_clients_see_nothing_of_each_others_runs_and_models(uris: tuple[str, str], mlp: MLP, x: torch.Tensor) -> None:
    a, b = loopml.Client(uris[0]), loopml.Client(uris[1])
    va = _register(a, mlp, x, name="in-a")
    vb = _register(b, mlp, x, name="in-b")
    assert [m.name for m in a.list_models()] == ["in-a"] and [m.name for m in b.list_models()] == ["in-b"]
    assert set(a.runs()["run_id"]) == {va.run_id} and set(b.runs()["run_id"]) == {vb.run_id}
    with pytest.raises(NotFound):
        b.get_version("in-a/1")
    with pytest.raises(NotFound):
        a.load_model(vb)  # a ModelVersion of b is not in a
    with pytest.raises(NotFound):
        a.get_run(vb.run_id)  # type: ignore[arg-type]


def test_two_stores_keep_their_own_files_of_a_model_of_the_same_name(uris: tuple[str, str], mlp: MLP,
                                                                     x: torch.Tensor) -> None:
    # both databases keep their artifacts under the one default root ($LOOPML_HOME/artifacts): b's m/1
    # must neither replace a's files nor, deleted, take them along
    a, b = loopml.Client(uris[0]), loopml.Client(uris[1])
    _register(a, mlp, x, name="m")
    _register(b, MLP(hidden=8), x, name="m", init_args={"hidden": 8})
    np.testing.assert_allclose(a.load_model("m/1")(x.numpy()), mlp(x).detach().numpy(), atol=1e-6)
    assert a.registry.model_dir("m", 1) != b.registry.model_dir("m", 1)  # type: ignore[attr-defined]
    b.delete_version("m/1")
    np.testing.assert_allclose(a.load_model("m/1")(x.numpy()), mlp(x).detach().numpy(), atol=1e-6)
    assert a.registry.model_dir("m", 1).is_dir()  # type: ignore[attr-defined]


def test_a_version_object_of_another_store_is_refused_not_confused(uris: tuple[str, str], mlp: MLP, x: torch.Tensor) -> None:
    # both stores hold an "mlp/1"; b's object must not load a's version of that name
    a, b = loopml.Client(uris[0]), loopml.Client(uris[1])
    _register(a, mlp, x, name="mlp")
    vb = _register(b, MLP(hidden=8), x, name="mlp", init_args={"hidden": 8})
    with pytest.raises(ValueError, match=r"should be a version of this client's store .*comes from another store"):
        a.load_model(vb)
    assert b.load_model(vb).version.model_spec == {"class_path": "tests.models.nets:MLP", "init_args": {"hidden": 8}}
    with pytest.raises(TypeError, match="Argument version should be a model reference"):
        a.load_model(3)  # type: ignore[arg-type]


def test_module_functions_and_client_methods_agree(uris: tuple[str, str], mlp: MLP, x: torch.Tensor,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    need("onnxruntime", extra="export")
    monkeypatch.setenv("LOOPML_TRACKING_URI", uris[0])
    c = loopml.Client(uris[0])
    v = _register(c, mlp, x)
    # reading: the module-level functions on the current store give the same answers as the client
    assert loopml.models.list_models() == c.list_models()
    assert loopml.models.list_versions("mlp") == c.list_versions("mlp")
    assert loopml.models.get_version("mlp/1") == c.get_version("mlp/1") == c.get_version("mlp")
    np.testing.assert_array_equal(loopml.models.input_example("mlp/1"), c.input_example(v))
    want = mlp(x).detach().numpy()
    np.testing.assert_allclose(loopml.load_model("mlp/1")(x.numpy()), want, atol=1e-6)
    np.testing.assert_allclose(c.load_model(v)(x.numpy()), want, atol=1e-6)
    np.testing.assert_allclose(loopml.load_model(v, tracking_uri=uris[0])(x.numpy()), want, atol=1e-6)
    # writing through one is seen by the other
    event = c.set_alias("mlp", "production", v)
    assert (event.from_version, event.to_version) == (None, 1)
    assert loopml.models.get_version("mlp@production").version == 1
    loopml.models.set_alias("mlp", "staging", 1)
    assert c.alias_history("mlp") == loopml.models.alias_history("mlp")
    assert [e.alias for e in c.alias_history("mlp")] == ["production", "staging"]
    c.delete_alias("mlp", "staging")
    assert c.get_version("mlp/1").aliases == ("production",)
    exported = c.export("mlp@production", ["onnx"])
    assert "onnx" in exported.files and exported.files["onnx"].details["max_abs_diff"] <= 1e-4
    assert loopml.models.get_version("mlp/1").files == exported.files
    np.testing.assert_allclose(c.load_model("mlp/1", format="onnx")(x.numpy()), want, atol=1e-4)
    with pytest.raises(ValueError, match="Name the version to delete by number"):
        c.delete_version("mlp@production")
    v2 = _register(c, mlp, x)
    c.delete_version(v2)
    assert [m.version for m in loopml.models.list_versions("mlp")] == [1]


def test_register_with_ood_through_the_client_stores_the_gate(uris: tuple[str, str], mlp: MLP) -> None:
    need("onnxruntime", extra="export")
    rng = np.random.default_rng(0)
    x_train = rng.normal(size=(200, 64)).astype(np.float32)
    x_val = rng.normal(size=(60, 64)).astype(np.float32)
    c = loopml.Client(uris[0])
    v = c.register(mlp, "gated", input_example=x_train[:8], init_args={"hidden": 16},
                   ood={"train": x_train, "val": x_val, "detectors": ["mahalanobis"], "mode": "single",
                        "target_false_abstain": 0.05})
    assert {"ood_gate", "ood_mahalanobis"} <= set(v.files)
    assert v.files["ood_gate"].details["requested_false_abstain"] == 0.05
    far = x_val * 50
    gate = c.load_gate(v)
    np.testing.assert_allclose(gate.score(far), loopml.monitor.load_gate("gated/1", tracking_uri=uris[0]).score(far))
    assert gate.abstain(far).all() and gate.abstain(x_val).mean() < 0.2
    # the gate of a version already registered, fitted through the client
    v2 = c.register(mlp, "gated", input_example=x_train[:8], init_args={"hidden": 16})
    assert "ood_gate" not in v2.files
    c.fit_ood("gated/2", train=x_train, val=x_val, detectors=["mahalanobis"], mode="single", target_false_abstain=0.05)
    np.testing.assert_allclose(c.load_gate("gated/2").score(far), gate.score(far), rtol=1e-5)
    with pytest.raises(TypeError, match="for a module that is not registered use loopml.monitor.ood.fit_gate"):
        c.fit_ood(mlp, train=x_train, val=x_val)  # type: ignore[arg-type]


def test_a_gate_that_cannot_be_fitted_never_fails_the_registration(uris: tuple[str, str], mlp: MLP, x: torch.Tensor) -> None:
    c = loopml.Client(uris[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v = c.register(mlp, "m", input_example=x, formats=("torch",), init_args={"hidden": 16},
                       ood=(x.numpy(), x.numpy()[:1]))  # one validation row calibrates nothing
    ours = [w for w in caught if issubclass(w.category, LoopMLWarning)]
    assert len(ours) == 1 and ours[0].filename == __file__  # names the caller's line
    assert "m/1 is registered without an OOD gate" in str(ours[0].message)
    assert "at least 2 rows" in str(ours[0].message)
    assert "ood_gate" not in v.files and c.get_version("m/1").files.keys() == v.files.keys()


def test_bad_ood_fails_before_anything_is_stored_and_models_register_points_up(uris: tuple[str, str], mlp: MLP,
                                                                               x: torch.Tensor) -> None:
    c = loopml.Client(uris[0])
    with pytest.raises(ValueError, match=r"Argument ood should name train and val"):
        c.register(mlp, "m", input_example=x, ood={"train": x})
    assert c.list_models() == [] and c.runs().empty
    # the registry layer registers the model only: ood= lives one layer up
    with pytest.raises(TypeError, match=r"Argument ood is taken by loopml.register and loopml.Client.register"):
        loopml.models.register(mlp, "m", input_example=x, ood=(x, x), tracking_uri=uris[0])  # type: ignore[arg-type]
    assert c.list_models() == []


def test_register_files_the_version_under_a_run_of_the_clients_store(uris: tuple[str, str], mlp: MLP, x: torch.Tensor) -> None:
    a, b = loopml.Client(uris[0]), loopml.Client(uris[1])
    with a.start_run(experiment="train") as run_a:
        # the active run logs to a: b files its version under a short run of its own, in b
        vb = b.register(mlp, "m", input_example=x, formats=("torch",), init_args={"hidden": 16})
        assert b.get_run(vb.run_id).name == "register m"  # type: ignore[arg-type]
        va = a.register(mlp, "m", input_example=x, formats=("torch",), init_args={"hidden": 16})
        assert va.run_id == run_a.id  # a's own active run
        with pytest.raises(ValueError, match=r"Argument run should be a run of this client's store"):
            b.register(mlp, "m", input_example=x, run=run_a, formats=("torch",))
        # the module-level function: an explicit tracking_uri is not overruled by another store's active run
        vm = loopml.register(mlp, "m", input_example=x, formats=("torch",), init_args={"hidden": 16},
                             tracking_uri=uris[1])
        assert vm.ref == "m/2" and vm.run_id != run_a.id
        # and with a run given, the version lives in that run's store, as it always did
        vr = loopml.register(mlp, "m", input_example=x, formats=("torch",), init_args={"hidden": 16}, run=run_a)
        assert vr.ref == "m/2" and vr.run_id == run_a.id
    assert [v.version for v in a.list_versions("m")] == [2, 1] and [v.version for v in b.list_versions("m")] == [2, 1]


def test_leaving_the_block_finishes_the_runs_it_started_and_closes_the_client(uris: tuple[str, str]) -> None:
    with loopml.Client(uris[0]) as c:
        left_open = c.start_run(experiment="e")
        left_open.log({"loss": 1.0})
        with c.start_run(experiment="e") as done:
            pass
    assert (left_open.status, done.status) == ("FINISHED", "FINISHED")
    assert loopml.get_run(left_open.id, tracking_uri=uris[0]).metrics == {"loss": 1.0}
    with pytest.raises(LoopMLError, match=r"is closed; make a new one: loopml.Client\('sqlite:///"):
        c.list_models()
    with pytest.raises(RuntimeError, match="boom"):
        with loopml.Client(uris[0]) as c2:
            failed = c2.start_run(experiment="e")
            raise RuntimeError("boom")
    assert failed.status == "FAILED"
    assert loopml.Client(uris[0]).list_models() == []  # the store stays usable: only the client closed


def test_bad_uris_and_repr() -> None:
    with pytest.raises(loopml.ConfigError, match="Tracking URI 'mysql://x' is not supported"):
        loopml.Client("mysql://x")
    with pytest.raises(TypeError, match="Argument tracking_uri should be a string"):
        loopml.Client(Path("loopml.db"))  # type: ignore[arg-type]
    from loopml.client import _shown

    assert _shown("postgresql+psycopg://ana:s3cret@db:5432/loopml") == "postgresql+psycopg://ana:***@db:5432/loopml"
    assert repr(loopml.Client("http://127.0.0.1:1")) == "Client('http://127.0.0.1:1')"


def test_the_client_against_a_live_tracking_server(tmp_path: Path, mlp: MLP, x: torch.Tensor) -> None:
    need("onnxruntime", extra="export")
    from loopml.server import create_app

    from .server.conftest import LiveServer, forget_http_backends

    db = f"sqlite:///{(tmp_path / 'server' / 'loopml.db').as_posix()}"
    store = TrackingStore(db, artifact_root=tmp_path / "server" / "artifacts")
    server = LiveServer(create_app(store))
    try:
        with loopml.Client(server.url) as c:
            v = _register(c, mlp, x)  # the run logs over HTTP; the files go up to the server
            assert v.ref == "mlp/1" and list(c.runs("reg")["metrics.val_accuracy"]) == [0.9]
            np.testing.assert_allclose(c.load_model("mlp/1")(x.numpy()), mlp(x).detach().numpy(), atol=1e-6)
            c.set_alias("mlp", "production", v)
            assert "onnx" in c.export(v, ["onnx"]).files  # the server exports with its own copy
            with pytest.raises(ValueError, match="run it where the store is"):
                c.fit_ood(v, train=x.numpy(), val=x.numpy())
            with pytest.warns(LoopMLWarning, match="mlp/2 is registered without an OOD gate.*run it where the store is"):
                v2 = c.register(mlp, "mlp", input_example=x, formats=("torch",), init_args={"hidden": 16},
                                ood=(x.numpy(), x.numpy()))
            assert "ood_gate" not in v2.files
            with pytest.raises(ValueError, match="needs the store itself, not a loopml server"):
                c.version_data(v)
        # the server's own database holds what the remote client wrote
        local = loopml.Client(db)
        assert local.get_version("mlp@production").version == 1 and set(local.get_version("mlp/1").files) >= {"onnx"}
    finally:
        forget_http_backends()
        server.stop()
        store.close()


def test_monitoring_through_the_client_stays_in_its_store(uris: tuple[str, str], mlp: MLP, x: torch.Tensor) -> None:
    a, b = loopml.Client(uris[0]), loopml.Client(uris[1])
    _register(a, mlp, x, name="m")
    rule = a.add_alert_rule("m@production", "floor", metric="accuracy", below=0.9)
    assert [r.name for r in a.alert_rules()] == ["floor"] and rule.op == "<"
    assert b.alert_rules() == [] and b.alert_history() == []  # the other store has none
    assert a.prediction_windows("m", 1).empty  # nothing served yet: no windows, no error
    rng = np.random.default_rng(0)
    report = a.drift(rng.normal(size=(500, 3)), rng.normal(size=(500, 3)) + [0, 0, 1.0], multivariate=False)
    assert report.drifted_features == ["x2"]
    a.delete_alert_rule("m@production", "floor")
    assert a.alert_rules() == []
    a.close()
    with pytest.raises(loopml.LoopMLError, match="is closed"):
        a.alert_rules()
