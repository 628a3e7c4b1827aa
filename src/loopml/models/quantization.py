"""Quantized variants of a float model, each written as an ONNX file the generic runtime loads.

========  ======  ==================================================================================
method    bits    what it does
========  ======  ==================================================================================
dynamic   8       int8 weights, activations quantized at run time: ONNX Runtime ``quantize_dynamic`` on
                  MatMul/Gemm only (on convolutions it is ~9x slower here); convolutions stay fp32
static    8       post-training int8 QDQ: ONNX Runtime ``quantize_static`` after ``quant_pre_process``,
                  min/max calibration on ``calibration``, per-channel int8 weights, uint8 activations;
                  convolutions with < 4 input channels stay fp32 (ORT's int8 kernel is slower there)
tqt       8, 4    Trained Quantization Thresholds (:mod:`loopml.models.tqt`): power-of-2 per-tensor
                  scales whose log2-thresholds are fine-tuned with the weights through the Trainer
ptq       8, 4    the TQT fake-quant structure with min/max thresholds and no training: the baseline
========  ======  ==================================================================================

Why ONNX Runtime QDQ for ``static``: measured on this machine it gives int8 kernels
(QLinearConv, QGemm) that run 2-3.5x faster than fp32 and a 4x smaller file with the
model's code gone; PyTorch's eager/FX PTQ needs the model's code and is deprecated, its
PT2E flow moved to torchao, and torchao's int8 beats fp32 only after ``torch.compile``
(which a stored file cannot carry). docs/quantization.md has the figures.

>>> q = quantize(model, method="static", example=x[:8], calibration=x_train[:512], out_dir="int8")
>>> q.files["onnx"], q.details["calibration_samples"]
(PosixPath('int8/model.onnx'), 512)
>>> q.predictor()(x_test[:4]).shape
(4, 10)
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError
from ..files import atomic_path
from ..quiet import import_onnxruntime, ort_errors_only
from .exporting import INPUT_NAME, OUTPUT_NAME, export_onnx
from .qdq import compact
from .runtime import load_predictor

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .runtime import Predictor

__all__ = ["METHODS", "QuantizedModel", "fitting_onnx", "quantize"]

METHODS: dict[str, tuple[int, ...]] = {"dynamic": (8,), "static": (8,), "tqt": (8, 4), "ptq": (8, 4)}
"""Each method and the bit widths it supports."""

_EXAMPLE = ("e.g. quantize(model, method='tqt', bits=4, example=x[:8], calibration=x_train[:512], "
            "train=(x_train, y_train), out_dir=Path('out'))")


@dataclass
class QuantizedModel:
    """A quantized variant: ``files`` maps a format of :mod:`loopml.models.exporting` to its file.

    ``details`` is JSON-safe: the method's settings, calibration size, thresholds
    (TQT/PTQ), the run id of a TQT fine-tuning, ...
    """

    method: str
    bits: int
    files: dict[str, Path]
    details: dict[str, Any] = field(default_factory=dict)

    def predictor(self, *, threads: int = 1) -> Predictor:
        """Load the variant with :func:`loopml.models.runtime.load_predictor` (ONNX first)."""
        fmt = "onnx" if "onnx" in self.files else next(iter(self.files))
        return load_predictor(fmt, self.files[fmt], threads=threads)


def _require_ort() -> Any:
    try:
        import onnx  # noqa: F401

        import_onnxruntime()
        import onnxruntime.quantization as ortq
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"Quantization needs {exc.name}: pip install 'loopml[quantize]'") from exc
    return ortq


def _check(method: Any, bits: Any, epochs: Any, lr: Any, seed: Any) -> None:
    if method not in METHODS:
        raise ArgumentError(f"Argument method should be one of {', '.join(METHODS)}, got {method!r}; {_EXAMPLE}")
    allowed = METHODS[method]
    if bits not in allowed:
        combos = ", ".join(f"{m} ({'/'.join(map(str, b))} bits)" for m, b in METHODS.items())
        raise ArgumentError(f"Argument bits should be one of {allowed} for method={method!r}, got {bits!r}; "
                         f"allowed: {combos}")
    if type(epochs) is not int or epochs < 1:
        raise ArgumentError(f"Argument epochs should be an integer >= 1, got {epochs!r}")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not (lr > 0 and math.isfinite(lr)):
        raise ArgumentError(f"Argument lr should be a number > 0, got {lr!r}")
    if type(seed) is not int or seed < 0:
        raise ArgumentError(f"Argument seed should be an integer >= 0, got {seed!r}")


def _as_array(data: Any, what: str) -> np.ndarray:
    if hasattr(data, "x") and hasattr(data, "y") and hasattr(data, "fingerprint"):  # a loopml Dataset
        data = data.x
    if hasattr(data, "detach"):
        data = data.detach().cpu().numpy()
    if not isinstance(data, np.ndarray) or data.ndim < 2 or len(data) == 0:
        raise ArgumentError(f"Argument {what} should be a batch of inputs (N x ...), a tensor, array or loopml "
                         f"Dataset, got {type(data).__name__}; {_EXAMPLE}")
    return np.ascontiguousarray(data, dtype=np.float32)


def quantize(
    model: nn.Module | None,
    *,
    method: str,
    bits: int = 8,
    example: torch.Tensor,
    calibration: np.ndarray | torch.Tensor,
    out_dir: str | os.PathLike[str],
    train: Any = None,
    val: Any = None,
    epochs: int = 2,
    lr: float = 1e-4,
    threshold_lr: float = 1e-2,
    batch_size: int = 64,
    init: str | None = None,
    seed: int = 0,
    loss: Any = None,
    metrics: Sequence[str] = ("accuracy",),
    experiment: str = "quantize",
    track: bool = True,
    fp32_onnx: str | os.PathLike[str] | None = None,
) -> QuantizedModel:
    """Quantize ``model`` with ``method`` at ``bits`` and write the result under ``out_dir``.

    ``example``: an input batch (its shape is the model's signature); ``calibration``: N
    input rows from the training split (thresholds and activation ranges come from them).
    ``init``: how ``tqt``/``ptq`` thresholds start (:func:`loopml.models.tqt.prepare_tqt`): default
    ``"mse"`` for ``tqt`` and ``"max"`` (min/max calibration, the baseline) for ``ptq``. ``train``/``val`` (``tqt`` only): loopml Datasets or ``(x, y)`` arrays for the
    fine-tuning, which runs ``epochs`` epochs of :class:`loopml.train.Trainer` (Adam:
    weights at ``lr``, thresholds at ``threshold_lr``), tracked to the active run or a
    new one in ``experiment``. ``fp32_onnx`` (``dynamic``/``static``): an ONNX file of ``model`` as
    :func:`loopml.models.exporting.export_onnx` wrote it (e.g. a registered version's ``model.onnx``),
    quantized instead of exporting ``model`` again; a file with other input/output names, a fixed batch
    or an opset below 18 is not used (``model`` is exported; ``model`` may be None only when the file
    fits, see :func:`fitting_onnx`). ``model`` is not changed. Example::

        q = quantize(model, method="tqt", bits=4, example=x[:8], calibration=x_train[:512],
                     train=parts.train, val=parts.val, epochs=3, out_dir=Path("out/tqt4"))
        q.details["run_id"], q.files["onnx"]
    """
    import torch

    _check(method, bits, epochs, lr, seed)
    fp32 = fitting_onnx(fp32_onnx) if fp32_onnx is not None and method in ("dynamic", "static") else None
    if not isinstance(model, torch.nn.Module) and not (model is None and fp32 is not None):
        raise ArgumentTypeError(f"Argument model should be a torch.nn.Module, got {type(model).__name__}; {_EXAMPLE}")
    if not isinstance(example, torch.Tensor):
        raise ArgumentTypeError(f"Argument example should be a torch.Tensor batch, got {type(example).__name__}; {_EXAMPLE}")
    calib = _as_array(calibration, "calibration")
    if method == "tqt" and train is None:
        raise ArgumentError(f"Argument train should be the fine-tuning data for method='tqt' (a loopml Dataset or "
                         f"an (x, y) tuple), got None; {_EXAMPLE}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    details: dict[str, Any] = {"method": method, "bits": bits, "calibration_samples": len(calib)}
    if method in ("dynamic", "static"):
        path = _ort_quantize(model, method, example, calib, out / "model.onnx", details, fp32)
    else:
        assert model is not None  # checked above: only dynamic/static take a file instead
        path = _tqt_quantize(model, method, bits, example, calib, out / "model.onnx", details, train=train,
                             val=val, epochs=epochs, lr=lr, threshold_lr=threshold_lr, batch_size=batch_size,
                             init=init, seed=seed, loss=loss, metrics=metrics, experiment=experiment,
                             track=track)
    return QuantizedModel(method=method, bits=bits, files={"onnx": path}, details=details)


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over an array, in batches."""

    def __init__(self, name: str, x: np.ndarray, batch_size: int = 64) -> None:
        self._batches = iter([{name: x[i:i + batch_size]} for i in range(0, len(x), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def fitting_onnx(path: str | os.PathLike[str]) -> Path | None:
    """``path`` when it is an fp32 ONNX file the quantizers can take as :func:`export_onnx` writes it (one input
    ``x`` with a dynamic batch, one output ``output``, opset >= 18); else None (the model is exported)."""
    try:
        import onnx
        from onnx.external_data_helper import uses_external_data
    except ModuleNotFoundError:  # quantizing says which extra to install
        return None
    path = Path(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - missing or unreadable: onnx raises several types; export instead
        return None
    graph = proto.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if ([i.name for i in inputs] != [INPUT_NAME] or [o.name for o in graph.output] != [OUTPUT_NAME]
            or opset < 18 or any(uses_external_data(i) for i in graph.initializer)):
        return None
    dims = inputs[0].type.tensor_type.shape.dim
    if not dims or dims[0].HasField("dim_value"):  # a fixed batch: the calibration batches would not fit
        return None
    return path


def _ort_quantize(model: nn.Module | None, method: str, example: torch.Tensor, calib: np.ndarray, path: Path,
                  details: dict[str, Any], fp32_onnx: Path | None = None) -> Path:
    import onnx

    ortq = _require_ort()
    # the quantizers' own calibration sessions and root-logger warnings are noise to the user; errors still raise
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp, ort_errors_only():
        # the export is the costliest step after calibration (torch.export + the ONNX translation, ~2-8 s):
        # an existing export of the same model is quantized as it is
        if fp32_onnx is not None:
            fp32, details["fp32_onnx"] = fp32_onnx, "given"
        else:
            assert model is not None  # quantize() checked: a model, or a fitting fp32_onnx
            fp32, details["fp32_onnx"] = export_onnx(model, example, Path(tmp) / "float.onnx"), "exported"
        prepped = Path(tmp) / "prepped.onnx"
        try:
            ortq.quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
        except Exception as exc:  # noqa: BLE001 - pre-processing is an optimisation; quantize the plain export
            details["pre_process"] = f"skipped: {type(exc).__name__}: {str(exc)[:200]}"
            prepped = fp32
        # the exporter's value_info records initializer shapes; the quantizers transpose Gemm weights and
        # their shape inference then fails on the stale entries ("Inferred shape and existing shape differ")
        proto = onnx.load(str(prepped))
        del proto.graph.value_info[:]
        prepped = Path(tmp) / "input.onnx"
        onnx.save(proto, str(prepped))
        staged = Path(tmp) / "model.onnx"
        if method == "dynamic":
            ops = ["MatMul", "Gemm"]
            ortq.quantize_dynamic(str(prepped), str(staged), op_types_to_quantize=ops,
                                  weight_type=ortq.QuantType.QInt8)
            details.update({"backend": "onnxruntime.quantize_dynamic", "op_types": ops, "weights": "int8"})
        else:
            exclude = _thin_convs(proto)
            ortq.quantize_static(
                str(prepped), str(staged), _Reader(INPUT_NAME, calib), quant_format=ortq.QuantFormat.QDQ,
                per_channel=True, activation_type=ortq.QuantType.QUInt8, weight_type=ortq.QuantType.QInt8,
                calibrate_method=ortq.CalibrationMethod.MinMax, nodes_to_exclude=exclude,
            )
            details.update({"backend": "onnxruntime.quantize_static", "format": "QDQ", "calibration": "minmax",
                            "weights": "int8 per-channel", "activations": "uint8 per-tensor",
                            "kept_fp32": exclude})
        proto = onnx.load(str(staged))
        compact(proto)
        details["ops"] = sorted({n.op_type for n in proto.graph.node})
        with atomic_path(path) as out:
            onnx.save(proto, str(out))
    return path


def _thin_convs(proto: Any) -> list[str]:
    """Conv nodes with fewer than 4 input channels per group: ONNX Runtime's int8 convolution is slower than
    its fp32 one there (measured on the digits CNN's 1-channel first conv: 200 us vs 89 us at batch 64,
    while the 16-channel second conv ran 2.8x faster in int8), so they stay fp32."""
    shapes = {i.name: list(i.dims) for i in proto.graph.initializer}
    return [n.name for n in proto.graph.node if n.op_type == "Conv" and len(n.input) > 1
            and len(shapes.get(n.input[1], [])) == 4 and shapes[n.input[1]][1] < 4]


def _tqt_quantize(model: nn.Module, method: str, bits: int, example: torch.Tensor, calib: np.ndarray, path: Path,
                  details: dict[str, Any], *, train: Any, val: Any, epochs: int, lr: float, threshold_lr: float,
                  batch_size: int, init: str | None, seed: int, loss: Any, metrics: Sequence[str],
                  experiment: str, track: bool) -> Path:
    import torch

    from . import tqt

    torch.manual_seed(seed)
    if init is None:
        init = "max" if method == "ptq" else "mse"
    qmodel = tqt.prepare_tqt(model, bits=bits, calibration=torch.from_numpy(calib), init=init)
    before = tqt.thresholds(qmodel)
    details.update({"backend": "loopml.models.tqt", "scales": "per-tensor powers of 2", "init": init})
    if method == "tqt":
        run_id = tqt.finetune(qmodel, train, val, epochs=epochs, lr=lr, threshold_lr=threshold_lr,
                              batch_size=batch_size, seed=seed, loss=loss, metrics=metrics, experiment=experiment,
                              track=track)
        after = tqt.thresholds(qmodel)
        moved = sum(before[k][r]["threshold"] != after[k][r]["threshold"] for k in after for r in after[k])
        shifts = [abs(after[k][r]["log2_t"] - before[k][r]["log2_t"]) for k in after for r in after[k]]
        details.update({"run_id": run_id, "epochs": epochs, "lr": lr, "threshold_lr": threshold_lr,
                        "thresholds_changed": int(moved), "thresholds_initial": before,
                        "log2_t_mean_abs_change": round(float(np.mean(shifts)), 4) if shifts else 0.0})
    details["thresholds"] = tqt.thresholds(qmodel)
    qmodel.eval()
    return tqt.to_onnx(qmodel, example, path)
