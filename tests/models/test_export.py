"""Exports (ONNX, .pt2) against eager PyTorch, on real files (.pte: test_export_pte.py, the edge extra).

Tolerance: every exported format must match eager fp32 within ATOL = 1e-4
(max absolute difference over all outputs); measured differences are ~1e-7.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.deps import need

need("onnx", extra="export")
need("onnxruntime", extra="export")
need("onnxscript", extra="export")

from loopml.errors import ExportError
from loopml.models.exporting import (
    FILE_NAMES,
    FORMATS,
    export_onnx,
    export_pt2,
    verify,
)
from loopml.models.runtime import load_predictor
from loopml.models.signature import Signature, infer_signature, random_inputs

from .nets import MLP, export_example

torch.set_num_threads(1)

ATOL = 1e-4
EXPORTERS: dict[str, Callable[..., Path]] = {"onnx": export_onnx, "pt2": export_pt2}


@dataclass
class Exported:
    model: torch.nn.Module
    example: torch.Tensor
    signature: Signature
    paths: dict[str, Path]


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    model, example = export_example(request.param)
    out = tmp_path_factory.mktemp(request.param)
    paths = {fmt: EXPORTERS[fmt](model, example, out / FILE_NAMES[fmt]) for fmt in EXPORTERS}
    return Exported(model, example, infer_signature(model, example), paths)


def test_format_constants() -> None:
    assert FORMATS == ("torch", "pt2", "onnx", "pte")
    assert set(FILE_NAMES) == set(FORMATS)


def test_files_are_written_atomically(exported: Exported) -> None:
    folder = exported.paths["onnx"].parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILE_NAMES[f] for f in EXPORTERS)


def test_onnx_passes_checker_with_a_dynamic_batch(exported: Exported) -> None:
    import onnx

    onnx.checker.check_model(str(exported.paths["onnx"]), full_check=True)
    graph = onnx.load(str(exported.paths["onnx"])).graph
    assert [i.name for i in graph.input] == ["x"] and [o.name for o in graph.output] == ["output"]
    batch = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")


@pytest.mark.parametrize("fmt", list(EXPORTERS))
def test_predictor_matches_eager(exported: Exported, fmt: str) -> None:
    predict = load_predictor(fmt, exported.paths[fmt])
    assert predict.format == fmt
    assert verify(predict, exported.model, exported.example.numpy(), atol=ATOL) <= ATOL
    inputs = random_inputs(exported.signature, 100, like=exported.example, seed=0)
    assert inputs.shape[0] == 100
    assert verify(predict, exported.model, inputs, atol=ATOL) <= ATOL


@pytest.mark.parametrize("fmt", list(EXPORTERS))
def test_any_batch_size(exported: Exported, fmt: str) -> None:
    predict = load_predictor(fmt, exported.paths[fmt])
    for n in (1, 7, 64):
        x = random_inputs(exported.signature, n, like=exported.example, seed=n)
        got = predict(x)
        assert got.shape == (n, 10)
        with torch.no_grad():
            want = exported.model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


def test_non_contiguous_input(exported: Exported) -> None:
    x = random_inputs(exported.signature, 6, like=exported.example)
    strided = np.concatenate([x, x], axis=0)[::2]  # not C-contiguous
    assert not strided.flags.c_contiguous
    for fmt in EXPORTERS:
        np.testing.assert_allclose(load_predictor(fmt, exported.paths[fmt])(strided),
                                   load_predictor(fmt, exported.paths[fmt])(np.ascontiguousarray(strided)),
                                   rtol=0, atol=ATOL)


def test_verify_raises_when_outputs_differ(exported: Exported) -> None:
    predict = load_predictor("onnx", exported.paths["onnx"])
    x = exported.example.numpy()
    with pytest.raises(ExportError, match=r"differs from eager PyTorch by .* > atol=0.0001") as info:
        verify(lambda a: predict(a) + 1e-2, exported.model, x, atol=ATOL)
    assert info.value.max_abs_diff == pytest.approx(1e-2, rel=1e-3)
    with pytest.raises(ExportError, match="returned shape"):
        verify(lambda a: predict(a)[:, :5], exported.model, x)


class DataDependent(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow does not trace
            return x * 2
        return x


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_untraceable_model_raises_export_error(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(ExportError, match="DataDependent"):
        EXPORTERS[fmt](DataDependent(), torch.ones(2, 3), tmp_path / FILE_NAMES[fmt])
    assert list(tmp_path.iterdir()) == [], "a failed export must leave no file behind"


def test_export_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="single torch.Tensor"):
        export_pt2(MLP(), (torch.ones(2, 64),), tmp_path / "m.pt2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Argument model should be a torch.nn.Module"):
        export_pt2(lambda x: x, torch.ones(2, 64), tmp_path / "m.pt2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Argument opset should be an int >= 18"):
        export_onnx(MLP(), torch.ones(2, 64), tmp_path / "m.onnx", opset=11)


class FakeQuantLinear(torch.nn.Module):
    """int8 fake quantization of the input, as quantization-aware training leaves it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)
        self.register_buffer("scale", torch.tensor([0.05]))
        self.register_buffer("zero_point", torch.tensor([0], dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, -128, 127))


def test_onnx_export_keeps_training_mode_and_handles_fake_quant(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = FakeQuantLinear().train(), torch.rand(3, 4)
    path = export_onnx(model, x, tmp_path / "fq.onnx")
    assert model.training, "export must restore the model's mode"
    assert verify(load_predictor("onnx", path), model.eval(), x.numpy(), atol=ATOL) <= ATOL


def test_torch_ao_fake_quantize_module_gives_a_clear_error(tmp_path: Path) -> None:
    # FakeQuantize branches on its fake_quant_enabled buffer, which torch.export cannot trace
    model = torch.nn.Sequential(torch.ao.quantization.FakeQuantize(), torch.nn.Linear(4, 2)).eval()
    with pytest.raises(ExportError, match="ONNX export of Sequential failed"):
        export_onnx(model, torch.rand(3, 4), tmp_path / "fq.onnx")
