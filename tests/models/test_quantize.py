"""quantize(): every method writes an ONNX file the generic runtime loads; oracles against fp32 and arguments."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.deps import need

need("onnxruntime", extra="export")
onnx = need("onnx", extra="export")
need("sklearn", extra="data")

from torch import nn

from loopml import data
from loopml.models import measure
from loopml.models.exporting import export_onnx
from loopml.models.quantization import METHODS, QuantizedModel, quantize
from loopml.models.runtime import load_predictor


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, data.Dataset, data.Dataset]:
    """A digits MLP trained for a few epochs (about a second), and its train/test parts."""
    torch.set_num_threads(1)
    parts = data.split(data.load("digits"), val=0.0, test=0.2, seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = parts.train.x, parts.train.y
    for _ in range(15):
        for i in range(0, len(x), 64):
            loss = nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), parts.train, parts.test


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _fp32_accuracy(model: nn.Module, test: data.Dataset, tmp_path: Path) -> float:
    return measure.accuracy(load_predictor("onnx", export_onnx(model, test.x[:8], tmp_path / "fp32.onnx")),
                            test.x, test.y)


def test_static_int8_is_close_to_fp32(digits: tuple[nn.Module, data.Dataset, data.Dataset], tmp_path: Path) -> None:
    model, train, test = digits
    q = quantize(model, method="static", example=train.x[:8], calibration=train.x[:256], out_dir=tmp_path / "s")
    assert isinstance(q, QuantizedModel) and (q.method, q.bits) == ("static", 8)
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(q.files["onnx"])
    fp32 = _fp32_accuracy(model, test, tmp_path)
    assert fp32 > 0.9
    assert measure.accuracy(q.predictor(), test.x, test.y) >= fp32 - 0.02  # within 2 points (360 test rows)
    assert q.details["calibration_samples"] == 256
    assert measure.file_size(q.files["onnx"]) * 2 < measure.file_size(tmp_path / "fp32.onnx")  # tiny: headers weigh
    # an existing fp32 export of the model (a registered version's model.onnx) is quantized instead of exporting
    again = quantize(None, method="static", example=train.x[:8], calibration=train.x[:256], out_dir=tmp_path / "g",
                     fp32_onnx=tmp_path / "fp32.onnx")  # no model needed then
    assert (q.details["fp32_onnx"], again.details["fp32_onnx"]) == ("exported", "given")
    assert again.files["onnx"].read_bytes() == q.files["onnx"].read_bytes()  # the same graph, the same variant


def test_dynamic_int8_quantizes_matmuls(digits: tuple[nn.Module, data.Dataset, data.Dataset],
                                        tmp_path: Path) -> None:
    model, train, test = digits
    (tmp_path / "junk.onnx").write_bytes(b"not an ONNX file")  # an fp32_onnx that does not fit: the model is exported
    q = quantize(model, method="dynamic", example=train.x[:8], calibration=train.x[:64], out_dir=tmp_path,
                 fp32_onnx=tmp_path / "junk.onnx")
    assert q.details["fp32_onnx"] == "exported"
    assert "MatMulInteger" in _ops(q.files["onnx"]) or "DynamicQuantizeMatMul" in _ops(q.files["onnx"])
    with torch.no_grad():
        expected = model(test.x).numpy()
    got = q.predictor()(test.x.numpy())
    assert np.mean(got.argmax(1) == expected.argmax(1)) > 0.97


@pytest.mark.parametrize("method", ["ptq", "tqt"])
def test_int4_tqt_and_ptq(method: str, digits: tuple[nn.Module, data.Dataset, data.Dataset], tmp_path: Path) -> None:
    model, train, test = digits
    q = quantize(model, method=method, bits=4, example=train.x[:8], calibration=train.x[:256],
                 train=train, epochs=1, out_dir=tmp_path, track=False)
    assert q.bits == 4 and q.files["onnx"].is_file()
    weights = [i for i in onnx.load(str(q.files["onnx"])).graph.initializer if i.name.endswith(".weight_quantized")]
    assert weights and all(i.data_type == onnx.TensorProto.INT4 for i in weights)
    for layer in q.details["thresholds"].values():
        assert math.log2(layer["weight"]["scale"]).is_integer()
    acc = measure.accuracy(q.predictor(), test.x, test.y)
    assert acc > 0.7  # 4 bits on a small MLP: a sanity floor; the benchmark measures the gap to fp32
    if method == "tqt":
        assert q.details["epochs"] == 1 and "thresholds_initial" in q.details


def test_tqt_fine_tuning_is_a_tracked_run(use_store: str, digits: tuple[nn.Module, data.Dataset, data.Dataset],
                                          tmp_path: Path) -> None:
    import loopml

    model, train, test = digits
    q = quantize(model, method="tqt", bits=8, example=train.x[:8], calibration=train.x[:256],
                 train=train, val=test, epochs=1, lr=1e-4, out_dir=tmp_path, experiment="quant-test")
    run = loopml.get_run(q.details["run_id"])
    assert run.status == "FINISHED"
    assert "val_accuracy" in run.metrics and "train_fingerprint" in run.params
    assert measure.accuracy(q.predictor(), test.x, test.y) >= _fp32_accuracy(model, test, tmp_path) - 0.02


def test_bad_arguments(digits: tuple[nn.Module, data.Dataset, data.Dataset], tmp_path: Path) -> None:
    model, train, _ = digits
    kw = {"example": train.x[:8], "calibration": train.x[:64], "out_dir": tmp_path}
    with pytest.raises(ValueError, match=r"Argument bits should be one of \(8,\) for method='dynamic'.*allowed"):
        quantize(model, method="dynamic", bits=4, **kw)
    with pytest.raises(ValueError, match="Argument bits should be one of"):
        quantize(model, method="static", bits=4, **kw)
    with pytest.raises(ValueError, match="Argument method should be one of dynamic, static, tqt, ptq"):
        quantize(model, method="qat", **kw)
    with pytest.raises(ValueError, match="Argument train should be the fine-tuning data"):
        quantize(model, method="tqt", **kw)
    with pytest.raises(ValueError, match="Argument calibration should be a batch"):
        quantize(model, method="ptq", example=train.x[:8], calibration=None, out_dir=tmp_path)
    with pytest.raises(ValueError, match="Argument epochs should be an integer"):
        quantize(model, method="tqt", epochs=0, train=train, **kw)
    with pytest.raises(TypeError, match="Argument model should be a torch.nn.Module"):
        quantize("model", method="ptq", **kw)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Argument model should be a torch.nn.Module"):  # no fitting file to quantize
        quantize(None, method="static", fp32_onnx=tmp_path / "missing.onnx", **kw)
    assert METHODS == {"dynamic": (8,), "static": (8,), "tqt": (8, 4), "ptq": (8, 4)}
