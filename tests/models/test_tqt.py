"""TQT: the quantizer against a NumPy reference and the paper's gradients; training; the QDQ ONNX file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from loopml.models import tqt
from loopml.models.runtime import load_predictor
from tests.deps import need


def reference(x: np.ndarray, log2_t: float, bits: int, signed: bool) -> np.ndarray:
    """q(x) = clip(round(x/s), n, p) * s, s = 2^ceil(log2 t) / 2^(b-1) (signed) or / 2^b (unsigned)."""
    n, p = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    s = 2.0 ** math.ceil(log2_t) / 2 ** (bits - 1 if signed else bits)
    return np.clip(np.round(x / s), n, p) * s  # np.round: half to even, like torch.round and QuantizeLinear


@pytest.mark.parametrize(("bits", "signed", "log2_t"), [(8, True, 0.3), (8, False, -1.5), (4, True, 1.0),
                                                        (4, False, 2.7)])
def test_forward_equals_numpy_reference(bits: int, signed: bool, log2_t: float) -> None:
    x = np.random.default_rng(0).normal(0, 2, size=500).astype(np.float32)
    x[:4] = [0.125, -0.375, 100.0, -100.0]  # ties and far outside the range
    q = tqt.TQTQuantizer(bits=bits, signed=signed, log2_t=log2_t)
    got = q(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, reference(x, log2_t, bits, signed), rtol=0, atol=1e-7)
    assert q.threshold == 2.0 ** math.ceil(log2_t)


def test_gradients_are_the_papers() -> None:
    # bits=4 signed, log2_t=0.3 -> ceil 1 -> t=2, s=2/8=0.25, n=-8, p=7
    x = torch.tensor([-3.0, -0.3, 0.26, 0.9, 5.0], requires_grad=True)
    q = tqt.TQTQuantizer(bits=4, signed=True, log2_t=0.3)
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    q(x).backward(g)
    # x/s = [-12, -1.2, 1.04, 3.6, 20]; round = [-12, -1, 1, 4, 20]: below, in, in, in, above
    assert x.grad is not None
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 0.0]
    # d q / d log2_t = s ln2 * [n, round(x/s) - x/s (inside), p]
    local = [-8.0, -1.0 - (-1.2), 1.0 - 1.04, 4.0 - 3.6, 7.0]
    expected = 0.25 * math.log(2) * sum(gi * li for gi, li in zip(g.tolist(), local))
    assert q.log2_t.grad is not None
    assert float(q.log2_t.grad) == pytest.approx(expected, rel=1e-5)


def test_unsigned_gradient_below_range_is_zero_times_n() -> None:
    x = torch.tensor([-1.0, 0.3, 9.0], requires_grad=True)
    q = tqt.TQTQuantizer(bits=4, signed=False, log2_t=0.0)  # s = 1/16, n=0, p=15
    q(x).sum().backward()
    assert x.grad is not None and x.grad.tolist() == [0.0, 1.0, 0.0]
    inside = round(0.3 * 16) - 0.3 * 16
    assert float(q.log2_t.grad) == pytest.approx(math.log(2) / 16 * (0 + inside + 15), rel=1e-5)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()


def test_prepare_wraps_layers_and_calibrates() -> None:
    model = _mlp()
    x, _ = _data()
    q = tqt.prepare_tqt(model, bits=8, calibration=x, init="max")
    layers = dict(tqt.tqt_layers(q))
    assert set(layers) == {"0", "2"}
    assert layers["0"].input_q.signed and not layers["2"].input_q.signed  # after the ReLU: unsigned
    w_max = float(model[0].weight.detach().abs().max())
    assert float(layers["0"].weight_q.log2_t.detach()) == pytest.approx(math.log2(w_max))
    assert float(layers["0"].input_q.log2_t.detach()) == pytest.approx(math.log2(float(x.abs().max())), rel=1e-5)
    assert isinstance(model[0], nn.Linear)  # the original is untouched


def test_mse_init_picks_the_power_of_two_with_least_error() -> None:
    x, _ = _data()
    q = tqt.prepare_tqt(_mlp(), bits=4, calibration=x, init="mse")
    quantizer = dict(tqt.tqt_layers(q))["0"].input_q
    k = float(quantizer.log2_t.detach()) + 0.5  # started mid-way in the ceil interval of 2^k
    assert k.is_integer()
    errors = {j: float(((tqt.TQTFunction.apply(x, torch.tensor(float(j)), 4, True) - x) ** 2).mean())
              for j in range(int(k) - 3, int(k) + 4)}
    assert min(errors, key=errors.__getitem__) == k


def test_finetune_moves_thresholds_to_powers_of_two(use_store: str) -> None:
    import loopml

    x, y = _data()
    q = tqt.prepare_tqt(_mlp(), bits=4, calibration=x)
    before = [float(p.detach()) for p in tqt.quantizer_parameters(q)]
    run_id = tqt.finetune(q, (x, y), epochs=1, lr=1e-3, threshold_lr=0.05, batch_size=32)
    after = [float(p.detach()) for p in tqt.quantizer_parameters(q)]
    assert all(a != b for a, b in zip(after, before))
    for layer in tqt.thresholds(q).values():
        for quantizer in layer.values():
            assert math.log2(quantizer["threshold"]).is_integer()
            assert math.log2(quantizer["scale"]).is_integer()
    assert run_id is not None
    run = loopml.get_run(run_id)
    assert float(run.params["lr"]) == pytest.approx(1e-3)
    assert "train_loss" in run.metrics


@pytest.mark.parametrize("bits", [8, 4])
def test_onnx_file_has_power_of_two_qdq_and_matches_torch(bits: int, tmp_path: Path) -> None:
    onnx = need("onnx", extra="export")  # the other TQT tests need torch alone
    ort = need("onnxruntime", extra="export")
    x, _ = _data()
    q = tqt.prepare_tqt(_mlp(), bits=bits, calibration=x).eval()
    path = tqt.to_onnx(q, x[:4], tmp_path / "model.onnx")
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    scales = [inits[n.input[1]] for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
              and n.input[0].endswith(".weight_quantized")]
    assert len(scales) == 2
    for n in proto.graph.node:
        if n.op_type == "QuantizeLinear" or n.input[0].endswith(".weight_quantized"):
            assert math.log2(float(inits[n.input[1]])).is_integer()
    wtype = {i.name: i.data_type for i in proto.graph.initializer}["0.weight_quantized"]
    assert wtype == (onnx.TensorProto.INT8 if bits == 8 else onnx.TensorProto.INT4)
    with torch.no_grad():
        expected = q(x).numpy()
    # Exact: with graph optimisations off ONNX Runtime runs DQ -> float Gemm -> Q, and with power-of-two
    # scales every product and partial sum is exact in float32, so it equals the torch simulation bit for
    # bit on any CPU (measured: max diff 0.0 with AVX-512 VNNI, and with AVX2 under qemu-x86_64 -cpu Haswell).
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    reference = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(reference.run(None, {"x": x.numpy()})[0], expected)

    # What serving runs: ORT fuses DQ -> Gemm [-> Relu] -> Q into QGemm kernels (integer products,
    # int8 input shifted to uint8). On x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) MLAS multiplies
    # with vpmaddubsw, which adds each pair of uint8 x int8 products in int16 *with saturation*; a pair
    # above 32767 is clipped. Measured on this test's data under qemu-x86_64 -cpu Haswell (and on an AMD
    # EPYC with AVX2): one pair saturated in row 7 of layer 1, its ReLU output came out one quantization
    # step lower, and that step times layer 2's weights moved 3 of 768 outputs by at most 0.00214 (a
    # NumPy emulation of the int16 pair sums reproduces exactly these 3 values). With VNNI (vpdpbusd:
    # int32 sums) the fused kernels are exact too. So the tolerance, in quantization steps: at most one
    # step of a hidden activation, seen through the largest layer-2 weight, on at most 1% of the rows.
    fused = load_predictor("onnx", path)(x.numpy())
    hidden = tqt.thresholds(q)["2"]
    layer2 = dict(tqt.tqt_layers(q))["2"]
    with torch.no_grad():
        w2 = layer2.weight_q(layer2.layer.weight).abs().max().item()
    one_step = hidden["input"]["scale"] * w2
    diff = np.abs(fused - expected)
    assert diff.max() <= one_step * (1 + 1e-6), f"max diff {diff.max()} > one hidden step through layer 2 {one_step}"
    rows = np.nonzero((diff > 1e-6).any(axis=1))[0]
    assert len(rows) <= 0.01 * len(x), f"rows {rows.tolist()} differ from the simulation"


def test_bad_arguments() -> None:
    x, _ = _data()
    with pytest.raises(ValueError, match="Argument bits should be one of"):
        tqt.prepare_tqt(_mlp(), bits=3, calibration=x)
    with pytest.raises(ValueError, match="Argument init should be one of"):
        tqt.prepare_tqt(_mlp(), bits=8, calibration=x, init="kl")
    with pytest.raises(ValueError, match="Argument calibration should be a batch"):
        tqt.prepare_tqt(_mlp(), bits=8, calibration=[1, 2])
    with pytest.raises(ValueError, match="Argument model should contain Linear or Conv2d"):
        tqt.prepare_tqt(nn.Sequential(nn.ReLU()), bits=8, calibration=x)
    with pytest.raises(ValueError, match="Argument qmodel should come from prepare_tqt"):
        tqt.finetune(_mlp(), _data())
