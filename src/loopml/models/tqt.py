"""Trained Quantization Thresholds (TQT): quantization-aware fine-tuning with power-of-2 scales.

The method of Jain et al., *Trained Quantization Thresholds for Accurate and
Efficient Fixed-Point Inference of Deep Neural Networks* (MLSys 2020; Xilinx
Graffitist). Every weight tensor and every input of a ``Linear``/``Conv2d`` gets
a per-tensor quantizer whose only parameter is ``log2_t``, the base-2 log of
its clipping threshold ``t``. With ``b`` bits:

- signed (weights; activations that can be negative): ``n = -2^(b-1)``, ``p = 2^(b-1) - 1``,
  ``s = 2^ceil(log2 t) / 2^(b-1)``
- unsigned (activations that calibration saw >= 0, e.g. after a ReLU): ``n = 0``, ``p = 2^b - 1``,
  ``s = 2^ceil(log2 t) / 2^b``

Forward (paper eq. 1-3)::

    q(x; s) = clip(round(x / s), n, p) * s            # round half to even, like QuantizeLinear

Backward (paper eq. 6-7; ``ceil`` and ``round`` pass gradients straight through)::

    dq/dx        = 1                           if n <= round(x/s) <= p, else 0
    dq/d(log2 t) = s ln2 * (round(x/s) - x/s)  if n <= round(x/s) <= p
                   s ln2 * n                   if round(x/s) < n
                   s ln2 * p                   if round(x/s) > p

Thresholds start from calibration (``init``). The default, ``"mse"``, picks for
every weight and input the power-of-2 threshold whose quantizer has the least
squared error on the calibration values (the paper calibrates activations with a
KL-divergence search and weights at their maximum or 3 sigma; the MSE search is
our stand-in, cheap and good at 4 bits where outliers make max thresholds coarse).
``"percentile"`` uses a percentile of ``|x|`` and ``max|w|``; ``"max"`` is plain
min/max calibration: the PTQ baseline.
Fine-tuning (:func:`finetune`) runs through :class:`loopml.train.Trainer` with
Adam, the weights at a low learning rate and the thresholds (log-domain) at
their own, as in the paper. BatchNorm is not folded: quantize models without it,
or fold it first.

The trained model is deployed as ONNX (:func:`to_onnx`, through the rewrite in
:mod:`loopml.models.qdq`): the fp32 graph from
:func:`loopml.models.exporting.export_onnx` with QuantizeLinear/DequantizeLinear
pairs inserted at the learned power-of-2 scales, weights stored as int8 (or
int4, ONNX opset 21) initializers and biases as int32 at ``s_x * s_w``. ONNX
Runtime fuses the int8 pairs into QLinearConv / QGemm kernels.

>>> qmodel = prepare_tqt(model, bits=8, calibration=x_train[:256])
>>> run_id = finetune(qmodel, (x_train, y_train), epochs=1, lr=1e-4)
>>> to_onnx(qmodel, x_train[:8], "out/model.onnx")
PosixPath('out/model.onnx')
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ArgumentError, ArgumentTypeError
from ..train import Trainer
from ..train.autolog import Tracking
from .qdq import BITS, LayerScales, compact, qrange, write_qdq_onnx

__all__ = [
    "TQTFunction",
    "TQTLayer",
    "TQTQuantizer",
    "compact",
    "finetune",
    "layer_scales",
    "prepare_tqt",
    "qrange",
    "quantizer_parameters",
    "strip_tqt",
    "thresholds",
    "to_onnx",
    "tqt_layers",
]

LN2 = math.log(2.0)


def _scale(log2_t: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    return torch.exp2(torch.ceil(log2_t)) / float(2 ** (bits - 1) if signed else 2**bits)


class TQTFunction(torch.autograd.Function):
    """``q(x) = clip(round(x/s), n, p) * s`` with the paper's gradients for ``x`` and ``log2_t``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, log2_t: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
        n, p = qrange(bits, signed)
        s = _scale(log2_t.detach(), bits, signed).to(x.dtype)
        xs = x / s
        r = torch.round(xs)
        ctx.save_for_backward(xs, r, s)
        ctx.range = (n, p)
        ctx.log2_shape = log2_t.shape
        return r.clamp(n, p) * s

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> Any:
        (g,) = grads
        xs, r, s = ctx.saved_tensors
        n, p = ctx.range
        below, above = r < n, r > p
        inside = ~(below | above)
        grad_x = g * inside.to(g.dtype)
        local = torch.where(inside, r - xs, torch.where(below, torch.full_like(xs, n), torch.full_like(xs, p)))
        grad_log2_t = (g * local).sum() * s * LN2
        return grad_x, grad_log2_t.reshape(ctx.log2_shape), None, None


# Function.apply is untyped in torch (a C++ classmethod): give it its signature once, here.
_tqt: Callable[[torch.Tensor, torch.Tensor, int, bool], torch.Tensor] = TQTFunction.apply


class TQTQuantizer(nn.Module):
    """A per-tensor power-of-2 quantizer with a trained ``log2_t``.

    >>> q = TQTQuantizer(bits=8, signed=True, log2_t=0.0)    # threshold 1, scale 2^-7
    >>> q(torch.tensor([0.3, -2.0]))
    tensor([ 0.2969, -1.0000], grad_fn=<TQTFunctionBackward>)
    """

    def __init__(self, *, bits: int = 8, signed: bool = True, log2_t: float = 0.0) -> None:
        super().__init__()
        if bits not in BITS:
            raise ArgumentError(f"Argument bits should be one of {BITS}, got {bits!r}")
        self.bits, self.signed = bits, bool(signed)
        self.log2_t = nn.Parameter(torch.tensor(float(log2_t)))

    @property
    def scale(self) -> float:
        """The power-of-2 scale ``s`` in use now."""
        return float(_scale(self.log2_t.detach(), self.bits, self.signed))

    @property
    def threshold(self) -> float:
        """The effective threshold ``2^ceil(log2_t)`` (a power of two)."""
        return float(2.0 ** math.ceil(float(self.log2_t.detach())))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _tqt(x, self.log2_t, self.bits, self.signed)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, log2_t={float(self.log2_t.detach()):.3f}"


class TQTLayer(nn.Module):
    """A ``Linear`` or ``Conv2d`` whose input and weight pass through TQT quantizers.

    The bias is rounded to the int32 grid ``s_x * s_w`` that the int8 kernels use (no trained threshold).
    """

    def __init__(self, layer: nn.Linear | nn.Conv2d, *, input_q: TQTQuantizer, weight_q: TQTQuantizer) -> None:
        super().__init__()
        self.layer, self.input_q, self.weight_q = layer, input_q, weight_q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, w, b = self.input_q(x), self.weight_q(self.layer.weight), self.layer.bias
        if b is not None:  # int32 at s_x * s_w, as deployed; the gradient passes straight through
            sb = _scale(self.input_q.log2_t.detach(), self.input_q.bits, self.input_q.signed) * \
                _scale(self.weight_q.log2_t.detach(), self.weight_q.bits, True)
            b = b + (torch.round(b / sb) * sb - b).detach()
        if isinstance(self.layer, nn.Conv2d):
            out: torch.Tensor = self.layer._conv_forward(x, w, b)  # Conv2d's padding modes with our weight
            return out
        return F.linear(x, w, b)


def _targets(model: nn.Module) -> list[tuple[str, nn.Linear | nn.Conv2d]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _as_tensor(data: Any, what: str) -> torch.Tensor:
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, torch.Tensor) or data.ndim < 2 or len(data) < 1:
        raise ArgumentError(f"Argument {what} should be a batch of inputs (tensor or NumPy array, N x ...), "
                         f"got {type(data).__name__}; e.g. {what}=x_train[:256]")
    return data.detach().float()


INITS = ("mse", "percentile", "max")
_SAMPLE = 200_000  # values per tensor that the threshold search looks at


@torch.no_grad()
def _observe(model: nn.Module, calibration: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """``{layer name: its inputs over calibration, flattened (a seeded sample of at most 200k values)}``."""
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, layer in _targets(model):
        def hook(_m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            seen.setdefault(name, []).append(args[0].detach().reshape(-1).float())
        hooks.append(layer.register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(calibration), batch_size):
            model(calibration[start:start + batch_size])
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return {name: _sample(torch.cat(parts)) for name, parts in seen.items()}


def _sample(values: torch.Tensor) -> torch.Tensor:
    if values.numel() <= _SAMPLE:
        return values
    g = torch.Generator().manual_seed(0)
    keep = torch.randperm(values.numel(), generator=g)[:_SAMPLE]
    # the extremes decide min/max thresholds: keep them in the sample
    return torch.cat([values[keep], values.min().reshape(1), values.max().reshape(1)])


def _log2(value: float) -> float:
    return math.log2(max(value, 2.0**-24))  # an all-zero tensor gets a tiny threshold, not -inf


def _init_log2_t(values: torch.Tensor, bits: int, signed: bool, init: str, percentile: float) -> float:
    """The starting ``log2_t`` of a quantizer that sees ``values``.

    ``max``: ``log2 max|x|``; ``percentile``: of ``|x|``; ``mse``: the power of two (at most 12 below
    ``max|x|``'s) whose quantizer has the least squared error on ``values``, started mid-way in its
    ``ceil`` interval (``k - 0.5``) so that training can move it either way.
    """
    high = float(values.abs().max())
    if init == "max":
        return _log2(high)
    if init == "percentile":
        return _log2(float(np.percentile(values.abs().numpy(), percentile)))
    top = math.ceil(_log2(high))
    best, best_k = math.inf, top
    for k in range(top, top - 13, -1):
        q = _tqt(values, torch.tensor(float(k)), bits, signed)
        err = float(((q - values) ** 2).mean())
        if err < best:
            best, best_k = err, k
    return best_k - 0.5


def prepare_tqt(model: nn.Module, *, bits: int = 8, calibration: Any, init: str = "mse",
                percentile: float = 99.99) -> nn.Module:
    """A copy of ``model`` with TQT quantizers on the weights and inputs of every ``Linear``/``Conv2d``.

    Thresholds start from ``calibration`` (a batch of inputs) by ``init``: ``"mse"`` (default: the
    power-of-2 threshold with the least quantization error, for weights and inputs), ``"percentile"``
    (inputs at the ``percentile`` of ``|x|``, weights at ``max|w|``) or ``"max"`` (min/max
    calibration: the PTQ baseline). An input that calibration never saw negative gets an unsigned
    quantizer. ``model`` is unchanged.

    >>> qmodel = prepare_tqt(model, bits=4, calibration=x_train[:512])
    >>> sum(isinstance(m, TQTQuantizer) for m in qmodel.modules())   # weights and inputs of 4 layers
    8
    """
    if bits not in BITS:
        raise ArgumentError(f"Argument bits should be one of {BITS}, got {bits!r}")
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"Argument model should be a torch.nn.Module, got {type(model).__name__}")
    if init not in INITS:
        raise ArgumentError(f"Argument init should be one of {INITS}, got {init!r}")
    if not isinstance(percentile, (int, float)) or not 50 <= percentile <= 100:
        raise ArgumentError(f"Argument percentile should be a number in [50, 100], got {percentile!r}")
    if any(isinstance(m, TQTLayer) for m in model.modules()):
        raise ArgumentError("Argument model should be a float model; it already has TQT quantizers")
    qmodel = copy.deepcopy(model)
    if not _targets(qmodel):
        raise ArgumentError(f"Argument model should contain Linear or Conv2d layers to quantize; "
                         f"{type(model).__name__} has none")
    seen = _observe(qmodel, _as_tensor(calibration, "calibration"))
    for name, layer in _targets(qmodel):
        if name not in seen:  # a layer the forward pass never reached
            continue
        values = seen[name]
        signed = float(values.min()) < 0
        weights = layer.weight.detach().reshape(-1).float()
        wrapped = TQTLayer(
            layer,
            input_q=TQTQuantizer(bits=bits, signed=signed,
                                 log2_t=_init_log2_t(values, bits, signed, init, float(percentile))),
            weight_q=TQTQuantizer(bits=bits, signed=True,
                                  log2_t=_init_log2_t(weights, bits, True, "max" if init == "percentile" else init,
                                                      100.0)),
        )
        _set_module(qmodel, name, wrapped)
    return qmodel


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    if not name:
        raise ArgumentError("Argument model should contain Linear or Conv2d layers, not be one; "
                         "wrap it, e.g. nn.Sequential(layer)")
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def tqt_layers(model: nn.Module) -> Iterator[tuple[str, TQTLayer]]:
    """``(name, layer)`` for every :class:`TQTLayer` of a prepared model, in module order."""
    for name, m in model.named_modules():
        if isinstance(m, TQTLayer):
            yield name, m


def quantizer_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The ``log2_t`` parameters of a prepared model."""
    return [m.log2_t for m in model.modules() if isinstance(m, TQTQuantizer)]


def thresholds(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{layer: {"input": {...}, "weight": {...}}}`` with each quantizer's ``log2_t``, threshold, scale, signedness."""
    out: dict[str, dict[str, Any]] = {}
    for name, layer in tqt_layers(model):
        out[name] = {
            role: {"log2_t": round(float(q.log2_t.detach()), 6), "threshold": q.threshold, "scale": q.scale,
                   "signed": q.signed, "bits": q.bits}
            for role, q in (("input", layer.input_q), ("weight", layer.weight_q))
        }
    return out


def strip_tqt(model: nn.Module) -> nn.Module:
    """A float copy of a prepared model: every :class:`TQTLayer` replaced by its (fine-tuned) layer."""
    plain = copy.deepcopy(model)
    for name, layer in list(tqt_layers(plain)):
        _set_module(plain, name, layer.layer)
    return plain


def finetune(qmodel: nn.Module, train: Any, val: Any = None, *, epochs: int = 2, lr: float = 1e-4,
             threshold_lr: float = 1e-2, batch_size: int = 64, seed: int = 0, loss: Any = None,
             metrics: Any = ("accuracy",), experiment: str = "quantize", track: bool = True) -> str | None:
    """Fine-tune a prepared model with :class:`loopml.train.Trainer`; return the tracked run's id.

    Adam over two parameter groups: the model's weights at ``lr`` and the quantizers'
    ``log2_t`` at ``threshold_lr`` (log-domain: 1e-2 moves a threshold by ~1% per step).
    The run is the active one, or a new one in ``experiment`` (``track=False``: none).
    """
    thresholds_ = quantizer_parameters(qmodel)
    if not thresholds_:
        raise ArgumentError("Argument qmodel should come from prepare_tqt(model, bits=..., calibration=...)")
    ids = {id(p) for p in thresholds_}
    weights = [p for p in qmodel.parameters() if id(p) not in ids and p.requires_grad]
    optimizer = torch.optim.Adam([{"params": weights, "lr": lr}, {"params": thresholds_, "lr": threshold_lr}])
    trainer = Trainer(qmodel, optimizer=optimizer, loss=loss, metrics=list(metrics), seed=seed, track=track,
                      experiment=experiment)
    trainer.fit(train, val=val, epochs=epochs, batch_size=batch_size)
    for cb in trainer.callbacks:
        if isinstance(cb, Tracking) and cb.run is not None:
            return str(cb.run.id)
    return None


# -- deployment: QDQ ONNX (loopml.models.qdq) ---------------------------------


def layer_scales(model: nn.Module) -> dict[str, LayerScales]:
    """``{"<layer>.weight": LayerScales(...)}`` of a prepared model, keyed by the ONNX names of the weights
    (the float model's state names): what :func:`loopml.models.qdq.rewrite_qdq` quantizes."""
    return {f"{name}.weight": LayerScales(input_scale=layer.input_q.scale, input_signed=layer.input_q.signed,
                                          weight_scale=layer.weight_q.scale)
            for name, layer in tqt_layers(model)}


def to_onnx(qmodel: nn.Module, example: torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Write a prepared (and fine-tuned) model as a QDQ ONNX file with its power-of-2 scales; return the path.

    int8: opset 20 (the exporter's default) and ONNX Runtime's int8 kernels; int4: opset 21 INT4/UINT4
    QuantizeLinear/DequantizeLinear, weights packed two per byte (:func:`loopml.models.qdq.write_qdq_onnx`).
    """
    layers = dict(tqt_layers(qmodel))
    if not layers:
        raise ArgumentError("Argument qmodel should come from prepare_tqt(model, bits=..., calibration=...)")
    bits_set = {q.bits for layer in layers.values() for q in (layer.input_q, layer.weight_q)}
    if len(bits_set) != 1:
        raise ArgumentError(f"Argument qmodel should use one bit width, got {sorted(bits_set)}")
    return write_qdq_onnx(strip_tqt(qmodel), example, path, layer_scales(qmodel), bits=bits_set.pop())
