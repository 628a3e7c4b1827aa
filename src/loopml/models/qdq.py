"""The ONNX QDQ rewrite: a float ONNX graph becomes a quantized one at given per-tensor scales.

A model exported in fp32 (:func:`loopml.models.exporting.export_onnx`) is rewritten
in place: each quantized ``Conv``/``Gemm``/``MatMul`` gets its weight as an int8
(or int4, ONNX opset 21, packed two per byte) initializer behind a
``DequantizeLinear``, its bias as int32 at ``s_x * s_w``, and a
QuantizeLinear/DequantizeLinear pair at ``s_x`` on its input. ONNX Runtime fuses
the int8 pairs into QLinearConv / QGemm kernels. The scales come from the caller:
:func:`loopml.models.tqt.to_onnx` passes a TQT model's trained power-of-2 scales.
At 4 bits, activations pass a ``Clip`` to the 4-bit range and an 8-bit pair with
the same scale (the same values): ONNX Runtime 1.31 propagates an INT4/UINT4 pair
across MaxPool and then rejects the uint4 MaxPool.

>>> import onnx
>>> from loopml.models.exporting import export_onnx
>>> path = export_onnx(torch.nn.Sequential(torch.nn.Linear(4, 2)), torch.randn(3, 4), "float.onnx")
>>> proto = onnx.load(str(path))
>>> rewrite_qdq(proto, {"0.weight": LayerScales(input_scale=2**-5, input_signed=True, weight_scale=2**-8)}, bits=8)
1
>>> sorted({n.op_type for n in proto.graph.node})
['DequantizeLinear', 'Gemm', 'QuantizeLinear']
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..errors import ArgumentError
from ..files import atomic_path
from .exporting import export_onnx

if TYPE_CHECKING:
    import torch

__all__ = ["BITS", "LayerScales", "compact", "qrange", "rewrite_qdq", "write_qdq_onnx"]

BITS = (4, 8)


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """The integer range ``(n, p)`` of a ``bits``-bit quantizer.

    >>> qrange(8, True), qrange(4, False)
    ((-128, 127), (0, 15))
    """
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


class LayerScales(NamedTuple):
    """The per-tensor scales of one quantized layer: its input's (and whether the input is signed) and its weight's."""

    input_scale: float
    input_signed: bool
    weight_scale: float


_PASS_THROUGH = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity")
_QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")


def _onnx() -> Any:
    try:
        import onnx
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"QDQ ONNX files need {exc.name}: pip install 'loopml[quantize]'") from exc
    return onnx


def _int_type(onnx: Any, bits: int, signed: bool) -> tuple[int, Any]:
    """The ONNX element type and NumPy dtype of a ``bits``-bit quantized tensor."""
    tp = onnx.TensorProto
    if bits == 8:
        return (tp.INT8, np.int8) if signed else (tp.UINT8, np.uint8)
    return (tp.INT4, np.int8) if signed else (tp.UINT4, np.uint8)


def rewrite_qdq(proto: Any, layers: Mapping[str, LayerScales], bits: int) -> int:
    """Insert Q/DQ pairs into the float ONNX graph ``proto`` in place; return the number of layers quantized.

    ``layers`` maps the ONNX name of a ``Conv``/``Gemm``/``MatMul`` weight initializer to its
    layer's scales; nodes whose weight is not in ``layers`` stay fp32. Each listed weight is
    stored as a ``bits``-bit integer initializer behind a ``DequantizeLinear`` (int4 packed two
    per byte), its bias as int32 at ``input_scale * weight_scale``, and its input passes a
    QuantizeLinear/DequantizeLinear pair at ``input_scale`` (at 8 bits also before a chain of
    MaxPool/Reshape-like ops feeding it, which commute with the quantizer).
    """
    if bits not in BITS:
        raise ArgumentError(f"Argument bits should be one of {BITS}, got {bits!r}")
    onnx = _onnx()
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: node for node in graph.node for o in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for i in node.input:
            consumers[i] = consumers.get(i, 0) + 1
    new_inits: list[Any] = []
    inserted: dict[tuple[str, float, bool], str] = {}
    before: dict[int, list[Any]] = {}  # node index -> Q/DQ nodes that go before it
    order = {id(node): k for k, node in enumerate(graph.node)}
    dropped: set[str] = set()

    def const(name: str, array: np.ndarray, dtype: int | None = None) -> str:
        if dtype is None:
            new_inits.append(numpy_helper.from_array(array, name))
        else:  # int4 / uint4: two values per byte, the first in the low nibble (ONNX spec)
            flat = array.astype(np.uint8).reshape(-1) & 0x0F
            if flat.size % 2:
                flat = np.concatenate([flat, np.zeros(1, dtype=np.uint8)])
            packed = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)
            new_inits.append(helper.make_tensor(name, dtype, list(array.shape), packed.tobytes(), raw=True))
        return name

    def qdq(tensor: str, scale: float, signed: bool, at: int) -> str:
        key = (tensor, scale, signed)
        if key in inserted:
            return inserted[key]
        base = f"{tensor}_tqt{len(inserted)}"
        s = const(f"{base}_scale", np.array(scale, dtype=np.float32))
        nodes = []
        if bits == 8:
            qtype, npdt = _int_type(onnx, bits, signed)
            z = const(f"{base}_zp", np.zeros((), dtype=npdt), qtype)
        else:
            # 4-bit activations travel in 8-bit Q/DQ after a Clip to the 4-bit range (same values): ONNX
            # Runtime 1.31 propagates an INT4/UINT4 pair across MaxPool and then rejects the uint4 MaxPool
            z = const(f"{base}_zp", np.zeros((), dtype=np.int8 if signed else np.uint8))
            n, p = qrange(bits, signed)
            lo = const(f"{base}_lo", np.array(n * scale, dtype=np.float32))
            hi = const(f"{base}_hi", np.array(p * scale, dtype=np.float32))
            nodes.append(helper.make_node("Clip", [tensor, lo, hi], [f"{base}_clip"], name=f"{base}_Clip"))
            tensor = f"{base}_clip"
        nodes += [helper.make_node("QuantizeLinear", [tensor, s, z], [f"{base}_q"], name=f"{base}_Q"),
                  helper.make_node("DequantizeLinear", [f"{base}_q", s, z], [f"{base}_dq"], name=f"{base}_DQ")]
        before.setdefault(at, []).extend(nodes)
        inserted[key] = f"{base}_dq"
        return inserted[key]

    def quantize_input(node: Any, idx: int, scale: float, signed: bool) -> None:
        """Q/DQ on ``node.input[idx]`` and, through a chain of pass-through ops, before them too (QDQ
        around MaxPool/Reshape lets ONNX Runtime keep the tensor in int8; they commute with q)."""
        tensor = node.input[idx]
        node.input[idx] = qdq(tensor, scale, signed, order[id(node)])
        prev = producers.get(tensor)
        # (not at 4 bits: ORT 1.31 then drops the pair and hands MaxPool a uint4 tensor, which it rejects)
        while bits == 8 and prev is not None and prev.op_type in _PASS_THROUGH and consumers.get(tensor, 0) == 1 \
                and prev.input and prev.input[0] not in inits:
            tensor = prev.input[0]
            prev.input[0] = qdq(tensor, scale, signed, order[id(prev)])
            if consumers.get(tensor, 0) != 1:
                break
            prev = producers.get(tensor)

    done = 0
    for node in list(graph.node):
        if node.op_type not in _QUANTIZED_OPS or len(node.input) < 2 or node.input[1] not in layers:
            continue
        scales = layers[node.input[1]]
        w_name = node.input[1]
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        sw, sx = float(scales.weight_scale), float(scales.input_scale)
        n, p = qrange(bits, True)
        qtype, npdt = _int_type(onnx, bits, True)
        wq = np.clip(np.round(w / sw), n, p).astype(npdt)
        w_int = const(f"{w_name}_quantized", wq, None if bits == 8 else qtype)
        w_s = const(f"{w_name}_scale", np.array(sw, dtype=np.float32))
        w_z = const(f"{w_name}_zp", np.zeros((), dtype=npdt), None if bits == 8 else qtype)
        deq = helper.make_node("DequantizeLinear", [w_int, w_s, w_z], [f"{w_name}_dq"], name=f"{w_name}_DQ")
        before.setdefault(order[id(node)], []).append(deq)
        node.input[1] = f"{w_name}_dq"
        dropped.add(w_name)
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2] in inits:
            b_name = node.input[2]
            b = numpy_helper.to_array(inits[b_name]).astype(np.float64)
            bq = np.clip(np.round(b / (sx * sw)), -(2**31), 2**31 - 1).astype(np.int32)
            b_int = const(f"{b_name}_quantized", bq)
            b_s = const(f"{b_name}_scale", np.array(sx * sw, dtype=np.float32))
            b_z = const(f"{b_name}_zp", np.zeros((), dtype=np.int32))
            before[order[id(node)]].append(
                helper.make_node("DequantizeLinear", [b_int, b_s, b_z], [f"{b_name}_dq"], name=f"{b_name}_DQ"))
            node.input[2] = f"{b_name}_dq"
            dropped.add(b_name)
        quantize_input(node, 0, sx, bool(scales.input_signed))
        done += 1
    nodes = list(graph.node)
    del graph.node[:]
    for k, node in enumerate(nodes):
        graph.node.extend(before.get(k, []))
        graph.node.append(node)
    still_used = {i for node in graph.node for i in node.input}
    kept = [i for i in graph.initializer if i.name not in dropped or i.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    return done


def compact(proto: Any) -> None:
    """Drop the exporter's per-node debug metadata (stack traces, FX node text) and doc strings in place:
    they do not change what the graph computes, and they are 10-30% of a small model's file."""
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    proto.graph.doc_string = ""


def write_qdq_onnx(model: "torch.nn.Module", example: "torch.Tensor", path: str | os.PathLike[str],
                   layers: Mapping[str, LayerScales], *, bits: int) -> Path:
    """Export the float ``model`` to ONNX, quantize ``layers`` (:func:`rewrite_qdq`) and write ``path`` whole; return it.

    int8: opset 20 (the exporter's default) and ONNX Runtime's int8 kernels; int4: opset 21 INT4/UINT4
    QuantizeLinear/DequantizeLinear. Every layer in ``layers`` must be found in the graph (a
    ``Conv2d``/``Linear`` called with its own weight), and the result must pass ``onnx.checker``.

    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 2))
    >>> write_qdq_onnx(net, torch.randn(3, 4), "int8/model.onnx", {"0.weight": LayerScales(2**-5, True, 2**-8)}, bits=8)
    PosixPath('int8/model.onnx')
    """
    onnx = _onnx()
    if bits not in BITS:
        raise ArgumentError(f"Argument bits should be one of {BITS}, got {bits!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        plain = export_onnx(model, example, Path(tmp) / "float.onnx", opset=21 if bits == 4 else None)
        proto = onnx.load(str(plain))
    count = rewrite_qdq(proto, layers, bits)
    if count != len(layers):
        raise ArgumentError(f"Argument layers names {len(layers)} quantized layers but only {count} were found in the "
                         f"model's ONNX graph (layers should be Conv2d or Linear called with their weight)")
    compact(proto)
    with atomic_path(path) as staged:
        onnx.save(proto, str(staged))
        onnx.checker.check_model(str(staged), full_check=True)
    return path
