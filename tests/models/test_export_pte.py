"""ExecuTorch .pte exports (the ``edge`` extra) against eager PyTorch, on real files.

Tolerance: as in test_export.py, ATOL = 1e-4 (max absolute difference over all
outputs) against eager fp32; measured differences are ~1e-7.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.deps import need

need("executorch", extra="edge")

from loopml.errors import ExportError
from loopml.models.exporting import FILE_NAMES, export_executorch, export_pt2, verify
from loopml.models.runtime import pte_batch_capacity
from loopml.models.runtime import load_predictor
from loopml.models.signature import Signature, infer_signature, random_inputs

from .nets import export_example

torch.set_num_threads(1)

ATOL = 1e-4


@dataclass
class Exported:
    model: torch.nn.Module
    example: torch.Tensor
    signature: Signature
    path: Path


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    model, example = export_example(request.param)
    path = export_executorch(model, example, tmp_path_factory.mktemp(request.param) / FILE_NAMES["pte"])
    return Exported(model, example, infer_signature(model, example), path)


def test_predictor_matches_eager(exported: Exported) -> None:
    predict = load_predictor("pte", exported.path)
    assert predict.format == "pte"
    assert verify(predict, exported.model, exported.example.numpy(), atol=ATOL) <= ATOL
    inputs = random_inputs(exported.signature, 100, like=exported.example, seed=0)
    assert verify(predict, exported.model, inputs, atol=ATOL) <= ATOL


def test_any_batch_size(exported: Exported) -> None:
    predict = load_predictor("pte", exported.path)
    for n in (1, 7, 64):
        x = random_inputs(exported.signature, n, like=exported.example, seed=n)
        got = predict(x)
        assert got.shape == (n, 10)
        with torch.no_grad():
            want = exported.model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


def test_pte_batch_capacity(exported: Exported) -> None:
    # ExecuTorch plans memory for a bounded dynamic batch; the predictor chunks larger ones
    assert pte_batch_capacity(exported.path) >= 1


def test_non_contiguous_input(exported: Exported) -> None:
    # unusual strides broke the XNNPACK CNN at run time (NOTES.md): the predictor makes inputs contiguous
    x = random_inputs(exported.signature, 6, like=exported.example)
    strided = np.concatenate([x, x], axis=0)[::2]
    assert not strided.flags.c_contiguous
    predict = load_predictor("pte", exported.path)
    np.testing.assert_allclose(predict(strided), predict(np.ascontiguousarray(strided)), rtol=0, atol=ATOL)


class BatchSpecialised(torch.nn.Module):
    """Branches on the batch size, so torch.export cannot keep the batch dynamic."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 5:  # the example's batch: tracing specialises the batch to 5
            return self.fc(x)
        return self.fc(x.contiguous())


def test_pte_falls_back_to_a_fixed_batch_of_one(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = BatchSpecialised().eval(), torch.rand(5, 4)
    path = export_executorch(model, x, tmp_path / "model.pte")
    assert pte_batch_capacity(path) == 1
    predict = load_predictor("pte", path)
    assert verify(predict, model, np.random.default_rng(0).random((7, 4), dtype=np.float32), atol=ATOL) <= ATOL
    with pytest.raises(ExportError, match="torch.export could not trace BatchSpecialised"):
        export_pt2(model, x, tmp_path / "model.pt2")
