"""The OOD gate of a model of any class: fitted from the live module at registration, from the
pt2 program afterwards, on small validation sets, and never failing the registration."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

import loopml
from loopml import data
from loopml.errors import LoopMLWarning
from loopml.monitor import fit_ood, load_gate
from loopml.monitor.ood import fit_gate
from tests.deps import need

need("onnxruntime", extra="export")  # the gate's parts are stored as ONNX
need("sklearn", extra="data")

torch.set_num_threads(1)
VAE = {"epochs": 15}  # as in test_ood.py: enough on digits


@pytest.fixture(scope="module")
def parts() -> data.Split:
    return data.split(data.load("digits"), val=0.15, test=0.15, seed=0)


@pytest.fixture(scope="module")
def cnn(parts: data.Split) -> nn.Sequential:
    """The user's own CNN, built in code: nothing can rebuild its class from a state dict."""
    from loopml.train import Trainer

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(8 * 16, 32), nn.ReLU(), nn.Linear(32, 10),
    )
    Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3), seed=0, track=False).fit(
        parts.train, epochs=5, batch_size=64, check_data=False
    )
    return model.eval()


@pytest.fixture(autouse=True)
def _fresh_store() -> Iterator[None]:
    """Each test registers into the SQLite store of its own LOOPML_HOME (the gate does not depend on the engine)."""
    from loopml.tracking import api

    yield
    api.close_all()


def _register(model: nn.Module, parts: data.Split, **kw: object) -> tuple[loopml.models.ModelVersion, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v = loopml.register(model, "cnn", input_example=parts.train.x[:8], **kw)  # type: ignore[arg-type]
    ours = [w for w in caught if issubclass(w.category, LoopMLWarning)]
    assert all(w.filename == __file__ for w in ours)  # each names the caller's line, not loopml's
    return v, [str(w.message) for w in ours]


def _outside(parts: data.Split) -> np.ndarray:
    x = parts.test.x.numpy()
    return np.concatenate([1 - x[:40], np.random.default_rng(0).uniform(0, 1, (40, *x.shape[1:])).astype(np.float32)])


def test_register_fits_the_gate_of_a_sequential_from_the_live_module(cnn: nn.Sequential, parts: data.Split) -> None:
    v, said = _register(cnn, parts, ood={"train": parts.train, "val": parts.val, "vae_options": VAE})
    assert len(said) == 1 and "the 'torch' format was left out" in said[0]  # nothing about the gate
    assert "torch" not in v.files
    # what serving needs, in formats without the model's code: the joint model+features ONNX file
    assert {"ood_gate", "ood_vae", "ood_mahalanobis", "ood_features", "ood_joint"} <= set(v.files)
    details = v.files["ood_gate"].details
    assert details["detectors"] == ["mahalanobis", "vae"]
    assert details["target_false_abstain"] == details["requested_false_abstain"] == 0.01
    assert details["val_rows"] == len(parts.val.x) and "note" not in details
    gate = load_gate(v.ref)
    assert gate.joint is not None
    inside = gate.abstain(parts.test.x.numpy()).mean()
    outside = gate.abstain(_outside(parts)).mean()
    assert inside <= 0.05 and outside >= 0.9, (inside, outside)
    # the stored parts give what the live module gives
    live = fit_gate(cnn, train=parts.train, val=parts.val, vae_options=VAE)
    x = np.concatenate([parts.test.x.numpy(), _outside(parts)])
    np.testing.assert_allclose(gate.score(x), live.score(x), rtol=1e-4, atol=1e-5)
    out, feats = gate.joint(x[:16])
    with torch.no_grad():
        np.testing.assert_allclose(out, cnn(torch.from_numpy(x[:16])).numpy(), rtol=1e-4, atol=1e-4)
    assert feats.shape == (16, 32)


def test_the_live_module_keeps_its_mode(parts: data.Split) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).train()
    _register(model, parts, ood={"train": parts.train, "val": parts.val, "detectors": ["mahalanobis"]})
    assert model.training


def test_a_small_validation_set_is_calibrated_at_the_strictest_rate_it_supports(
    cnn: nn.Sequential, parts: data.Split
) -> None:
    val = (parts.val.x[:85], parts.val.y[:85])
    v, said = _register(cnn, parts, ood={"train": parts.train, "val": val, "vae_options": VAE})
    gate_said = [s for s in said if "OOD gate" in s]
    assert len(gate_said) == 1
    assert "has 85 rows, too few to calibrate a false-abstain rate of 0.01 (that needs 99)" in gate_said[0]
    assert "calibrated at 0.0117" in gate_said[0]
    details = v.files["ood_gate"].details
    assert details["requested_false_abstain"] == 0.01 and details["target_false_abstain"] == 0.0117
    assert details["val_rows"] == 85 and "85 validation rows support no stricter rate" in details["note"]
    assert details["val_false_abstain"] <= 0.0117
    assert load_gate(v.ref).target_false_abstain == 0.0117


def test_register_takes_the_target_rate(cnn: nn.Sequential, parts: data.Split) -> None:
    val = (parts.val.x[:85], parts.val.y[:85])
    with warnings.catch_warnings():
        warnings.simplefilter("error", LoopMLWarning)  # 85 rows support 5%: nothing to say about the gate
        v = loopml.register(cnn, "cnn", input_example=parts.train.x[:8], formats=("pt2", "onnx"),
                            ood={"train": parts.train, "val": val, "target_false_abstain": 0.05, "detectors": ["mahalanobis"]})
    details = v.files["ood_gate"].details
    assert details["target_false_abstain"] == details["requested_false_abstain"] == 0.05
    assert details["detectors"] == ["mahalanobis"] and details["val_false_abstain"] <= 0.05


def test_a_gate_that_cannot_be_fitted_never_fails_the_registration(cnn: nn.Sequential, parts: data.Split) -> None:
    one_row = (parts.val.x[:1], parts.val.y[:1])
    v, said = _register(cnn, parts, ood=(parts.train, one_row))
    gate_said = [s for s in said if "OOD gate" in s]
    assert len(gate_said) == 1
    assert f"{v.ref} is registered without an OOD gate" in gate_said[0]
    assert "Argument val should have at least 2 rows" in gate_said[0]
    assert f"loopml monitor fit-ood {v.ref}" in gate_said[0]  # how to fit it later
    assert "ood_gate" not in v.files and "pt2" in v.files
    assert loopml.load_model(v.ref)(parts.test.x[:4].numpy()).shape == (4, 10)


def test_fit_ood_on_a_version_with_only_a_pt2_program(cnn: nn.Sequential, parts: data.Split) -> None:
    with pytest.warns(LoopMLWarning, match="the 'torch' format was left out"):
        v = loopml.register(cnn, "cnn", input_example=parts.train.x[:8])
    assert set(v.files) == {"pt2", "input_example"}
    gate = fit_ood(v.ref, train=parts.train, val=parts.val, vae_options=VAE)
    stored = loopml.models.get_version(v.ref)
    assert {"ood_gate", "ood_mahalanobis", "ood_joint"} <= set(stored.files)
    # the program's last nn.Linear is the live module's: the same features, so the same scores
    live = fit_gate(cnn, train=parts.train, val=parts.val, vae_options=VAE)
    x = np.concatenate([parts.test.x.numpy(), _outside(parts)])
    np.testing.assert_allclose(load_gate(v.ref).score(x), live.score(x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gate.score(x), live.score(x), rtol=1e-4, atol=1e-5)


def test_fit_ood_without_a_module_says_what_to_pass(cnn: nn.Sequential, parts: data.Split) -> None:
    with pytest.warns(LoopMLWarning, match="The version keeps onnx"):
        v = loopml.register(cnn, "cnn", input_example=parts.train.x[:8], formats=("torch", "onnx"))
    with pytest.raises(ValueError, match=r"needs cnn/1 as a torch module.*pass the live module: "
                                         r"loopml.monitor.fit_ood\('cnn/1', model=model"):
        fit_ood(v.ref, train=parts.train, val=parts.val)
    with pytest.raises(ValueError, match="Argument model is for a version reference"):
        fit_ood(cnn, model=cnn, train=parts.train, val=parts.val)
    fit_ood(v.ref, model=cnn, train=parts.train, val=parts.val, detectors=["mahalanobis"])
    assert "ood_gate" in loopml.models.get_version(v.ref).files


def test_the_tabular_first_hour_registers_an_mlp_with_its_gate() -> None:
    """The issue's case: breast_cancer's 15% validation split has 85 rows, and loopml's MLP needs no init_args."""
    from loopml.models.nets import MLP

    split = data.split(data.load("breast_cancer"), val=0.15, test=0.15, seed=0)
    assert len(split.val.x) == 85
    torch.manual_seed(0)
    model = MLP(30, 2, hidden=[64])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v = loopml.register(model, "tabular", input_example=split.train.x[:8], class_names=["malignant", "benign"],
                            ood={"train": split.train, "val": split.val, "vae_options": {"variational": False, "epochs": 10}})
    said = [str(w.message) for w in caught if issubclass(w.category, LoopMLWarning)]
    assert len(said) == 1 and "calibrated at 0.0117, the strictest rate 85 rows support" in said[0]  # nothing about torch
    assert v.model_spec == {"class_path": "loopml.models.nets:MLP", "init_args": {"n_in": 30, "n_out": 2, "hidden": [64]}}
    assert {"pt2", "torch", "ood_gate"} <= set(v.files)
    assert v.files["ood_gate"].details["target_false_abstain"] == 0.0117
    x = split.test.x.numpy()
    with torch.no_grad():
        np.testing.assert_allclose(loopml.load_model(v.ref, format="torch")(x), model(torch.from_numpy(x)).numpy(), rtol=0, atol=0)
    assert load_gate(v.ref).abstain(x * 50).mean() >= 0.9  # rows 50x outside the training range are refused
