"""Quantized variants through the registry: a new version, measured, linked to its parent."""

from __future__ import annotations

import pytest
import torch

import loopml
from loopml import data
from loopml.models import registry as R
from loopml.models.nets import MLP
from loopml.models.variants import quantize
from loopml.store.registry import local_registry
from tests.roots import tamper_model_file

torch.set_num_threads(1)


@pytest.fixture
def wine_version(use_store: str) -> data.Split:
    parts = data.split(data.load("wine"), val=0.15, test=0.15, stratify=True, seed=0)
    torch.manual_seed(0)
    model = MLP(13, 3, hidden=32)
    from loopml.train import Trainer

    with loopml.start_run(experiment="wine"):
        Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), seed=0).fit(
            parts.train, val=parts.val, epochs=15, batch_size=32
        )
        R.register(model, "wine", input_example=parts.train.x[:4], class_names=["a", "b", "c"],
                   init_args={"n_in": 13, "n_out": 3, "hidden": 32})
    return parts


def test_dynamic_variant_is_a_measured_child_version(wine_version: data.Split) -> None:
    v = quantize("wine/1", method="dynamic", data=wine_version)
    assert v.ref == "wine/2" and v.parent_version == 1
    assert v.tags["quantization.method"] == "dynamic" and v.tags["quantization.bits"] == "8"
    assert v.lineage["parent"] == "wine/1" and v.lineage["quantization"]["data_matches_lineage"] is True
    assert v.lineage["quantization"]["fp32_onnx"] == "exported"  # wine/1 has no onnx file (pt2 and torch)
    parent = R.get_version("wine/1")
    for m in (v.measurements, parent.measurements):
        assert set(m) >= {"accuracy", "size_bytes", "latency_ms"} and set(m["latency_ms"]) == {"1", "64"}
    assert abs(v.measurements["accuracy"] - parent.measurements["accuracy"]) <= 0.1
    loaded = R.load_model("wine/2")
    assert loaded.format == "onnx" and loaded.predict(wine_version.test.x.numpy()).shape == (len(wine_version.test),)


def test_static_variant_quantizes_the_parents_stored_onnx_file(wine_version: data.Split) -> None:
    R.export("wine/1", ["onnx"])
    v = quantize("wine/1", method="static", data=wine_version)
    assert v.lineage["quantization"]["fp32_onnx"] == "given"  # wine/1's model.onnx, not a second export
    # changed after registration: not used, the model is exported
    tamper_model_file(local_registry(R.registry_for(None), "tamper"), "wine", 1, "onnx")
    w = quantize("wine/1", method="static", data=wine_version)
    assert w.lineage["quantization"]["fp32_onnx"] == "exported"
    assert R.registry_for(None).file_path("wine", 3, "onnx").read_bytes() == R.registry_for(None).file_path(
        "wine", 2, "onnx").read_bytes()  # the same variant either way
    assert w.measurements["accuracy"] == v.measurements["accuracy"]


def test_quantize_refusals(wine_version: data.Split) -> None:
    with pytest.raises(ValueError, match="Argument method"):
        quantize("wine/1", method="magic", data=wine_version)
    with pytest.raises(ValueError, match="bits"):
        quantize("wine/1", method="dynamic", bits=4, data=wine_version)
    with pytest.raises(TypeError, match="Argument data should be a loopml Dataset or Split"):
        quantize("wine/1", method="dynamic", data=42)  # type: ignore[arg-type]
    quantize("wine/1", method="dynamic", data=wine_version)
    with pytest.raises(ValueError, match="already a quantized variant"):
        quantize("wine/2", method="static", data=wine_version)
    assert [v.version for v in R.list_versions("wine")] == [2, 1]  # nothing half-registered


def test_tqt_needs_the_torch_format(use_store: str) -> None:
    parts = data.split(data.load("wine"), val=0.15, test=0.15, stratify=True, seed=0)
    with loopml.start_run(experiment="wine"):
        R.register(MLP(13, 3), "pt2only", input_example=parts.train.x[:4], formats=("pt2",))
    with pytest.raises(ValueError, match="needs pt2only/1's torch format"):
        quantize("pt2only/1", method="tqt", bits=4, data=parts)
