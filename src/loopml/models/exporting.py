"""Export a PyTorch model to files that run without its code, and check them against eager.

Formats (:data:`FORMATS`), each with its file name in :data:`FILE_NAMES`:

- ``torch``: a ``state_dict`` saved with ``torch.save``; loading needs the model's class importable
- ``pt2``: a ``torch.export`` program (``torch.export.save``); needs torch, not the model code
- ``onnx``: an ONNX graph (opset 18+) run by ONNX Runtime; needs ``pip install 'loopml[export]'``
- ``pte``: an ExecuTorch program lowered to XNNPACK; needs ``pip install 'loopml[edge]'``

Every file has a dynamic batch dimension except ``pte`` when the model does not
lower with one (see :data:`PTE_FIXED_BATCH` and :func:`export_executorch`).
Files are written to a temporary file in the target directory, then renamed, so a
crash never leaves a half-written model. Example::

    from loopml.models.exporting import export_onnx, verify
    from loopml.models.runtime import load_predictor

    path = export_onnx(model, x[:8], "out/model.onnx")
    predict = load_predictor("onnx", path)
    verify(predict, model, x[:100].numpy(), atol=1e-4)
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loopml.errors import ExportError

from ..errors import ArgumentError, ArgumentTypeError
from ..files import atomic_path, atomic_write
from .signature import eval_mode

if TYPE_CHECKING:
    import torch

__all__ = [
    "FILE_NAMES",
    "FORMATS",
    "PTE_FIXED_BATCH",
    "PTE_MAX_BATCH",
    "export_executorch",
    "export_onnx",
    "export_pt2",
    "verify",
]

FORMATS: tuple[str, ...] = ("torch", "pt2", "onnx", "pte")
"""The stored formats of a model:

- ``torch``: ``state_dict`` weights; loading imports the model's class (``class_path``)
- ``pt2``: ``torch.export`` program, runs with torch alone
- ``onnx``: ONNX graph, runs with ONNX Runtime (``loopml[export]``)
- ``pte``: ExecuTorch program with XNNPACK kernels, runs with ``loopml[edge]``
"""

FILE_NAMES: dict[str, str] = {
    "torch": "state_dict.pt",
    "pt2": "model.pt2",
    "onnx": "model.onnx",
    "pte": "model.pte",
}

PTE_MAX_BATCH = 1024
"""The largest batch a ``.pte`` is lowered for.

ExecuTorch plans its memory ahead of time, so a dynamic batch has an upper bound;
the planner may choose a smaller one (it chose 15 rows for the 1x8x8 CNN in the
tests). The ``pte`` predictor of :mod:`loopml.models.runtime` reads the planned
capacity from the program and splits larger batches into chunks, so callers may
pass any batch size.
"""

PTE_FIXED_BATCH = 1
"""The batch size a ``.pte`` is lowered with when a dynamic batch does not lower.

The ``pte`` predictor then runs the rows one at a time.
"""

INPUT_NAME = "x"
OUTPUT_NAME = "output"
# torch.export refuses a dynamic dim whose example size is 0 or 1 (it specialises them)
_MIN_TRACE_BATCH = 2


def _require(module: str, extra: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"{what} needs {exc.name}: pip install 'loopml[{extra}]'") from exc


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' warnings and log lines (e.g. "torchvision is not installed")."""
    import logging

    # torchao (imported by executorch) warns for each CUDA kernel library it cannot load on a CPU machine
    names = ("torch", "torch.onnx", "torch.export", "torch._export", "torch.utils._pytree", "torch.fx", "torch._dynamo",
             "torchao")
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            # the libraries' own warnings, but not those raised from loopml's lines: a deprecated call of
            # ours must show (the test suite turns them into errors, docs/testing.md)
            warnings.filterwarnings("ignore", module=r"(?!loopml\.)")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _check_example(model: Any, example: Any) -> torch.Tensor:
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ArgumentTypeError(f"Argument model should be a torch.nn.Module; got {type(model).__name__}")
    if isinstance(example, np.ndarray):
        example = torch.from_numpy(np.ascontiguousarray(example))
    if not isinstance(example, torch.Tensor):
        raise ArgumentError(
            "Argument example should be a single torch.Tensor with a batch dimension "
            f"(loopml supports single-input models); got {type(example).__name__}"
        )
    if example.ndim < 1 or example.shape[0] < 1:
        raise ArgumentError(
            f"Argument example should have a batch dimension with at least one row; got shape {tuple(example.shape)}"
        )
    return example.detach().contiguous()


def _trace_example(example: torch.Tensor) -> torch.Tensor:
    """The example, repeated to at least two rows so that the batch dim can stay dynamic."""
    if example.shape[0] >= _MIN_TRACE_BATCH:
        return example
    reps = (_MIN_TRACE_BATCH + example.shape[0] - 1) // example.shape[0]
    return example.repeat(reps, *([1] * (example.ndim - 1)))[:_MIN_TRACE_BATCH].contiguous()


def _batch_dim(max_batch: int | None = None) -> Any:
    import torch

    if max_batch is None:
        return torch.export.Dim("batch", min=1)
    return torch.export.Dim("batch", min=1, max=max_batch)


def _torch_export(
    model: torch.nn.Module, example: torch.Tensor, *, dynamic: bool, max_batch: int | None = None
) -> Any:
    import torch

    shapes = ({0: _batch_dim(max_batch)},) if dynamic else None
    try:
        with eval_mode(model), _quiet(), torch.no_grad():
            return torch.export.export(model, (example,), dynamic_shapes=shapes)
    except Exception as exc:  # torch raises many types (UserError, Unsupported, RuntimeError, ...)
        raise ExportError(f"torch.export could not trace {type(model).__name__}: {_summary(exc)}") from exc


def export_onnx(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: str | Path,
    *,
    opset: int | None = None,
    outputs: Sequence[str] = (OUTPUT_NAME,),
) -> Path:
    """Write ``model`` as an ONNX file with a dynamic batch axis; return the path.

    Uses the dynamo exporter (``torch.onnx.export(..., dynamo=True)``). The input is
    named ``"x"`` and the output ``"output"`` (a model returning a tuple of tensors
    names them with ``outputs``); weights are stored inside the file.
    An example with one row is repeated to two for tracing (a dynamic dim cannot be
    traced from size 1). The written file passes ``onnx.checker.check_model``.
    Needs ``pip install 'loopml[export]'``. Example::

        path = export_onnx(model, torch.randn(4, 64), tmp / "model.onnx")

    Raises :class:`loopml.errors.ExportError` when the model does not export.
    """
    import torch

    onnx = _require("onnx", "export", "ONNX export")
    _require("onnxscript", "export", "ONNX export")
    example = _trace_example(_check_example(model, example))
    path = Path(path)
    if opset is not None and (not isinstance(opset, int) or opset < 18):
        raise ArgumentError(f"Argument opset should be an int >= 18 (the dynamo exporter's minimum); got {opset!r}")
    # no_grad: the graph is for inference, and ops then trace through their inference kernels
    with atomic_path(path) as tmp, eval_mode(model), torch.no_grad():
        try:
            _onnx_dynamo(model, example, tmp, opset, list(outputs))
        except Exception as exc:
            # torch.ao fake-quant ops (torch.fake_quantize_per_tensor_affine, as QAT leaves
            # them) have no meta kernel, so torch.export cannot trace them; the TorchScript
            # exporter turns them into QuantizeLinear/DequantizeLinear. Only for those: it
            # traces by running the model, which would silently bake in data-dependent branches.
            if not _mentions(exc, "fake_quantize"):
                raise ExportError(f"ONNX export of {type(model).__name__} failed: {_summary(exc)}") from exc
            try:
                _onnx_torchscript(model, example, tmp, opset)
            except Exception as legacy_exc:
                raise ExportError(
                    f"ONNX export of {type(model).__name__} failed: {_summary(exc)} "
                    f"(the TorchScript exporter failed too: {_summary(legacy_exc)})"
                ) from exc
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as exc:
            raise ExportError(f"The exported ONNX model does not pass onnx.checker: {_summary(exc)}") from exc
    return path


def _onnx_dynamo(model: torch.nn.Module, example: torch.Tensor, tmp: Path, opset: int | None,
                 outputs: list[str] | None = None) -> None:
    import torch

    with tempfile.TemporaryDirectory() as artifacts, _quiet():
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=outputs or [OUTPUT_NAME],
            dynamic_shapes=({0: _batch_dim()},),
            opset_version=opset,
            external_data=False,
            artifacts_dir=artifacts,
            verbose=False,
        )
        if program is None:  # pragma: no cover - only the legacy exporter returns None
            raise RuntimeError("torch.onnx.export returned no program")
        program.save(str(tmp), external_data=False)


def _onnx_torchscript(model: torch.nn.Module, example: torch.Tensor, tmp: Path, opset: int | None) -> None:
    import torch

    with _quiet(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated, and it is the deliberate fallback for what the
        # torch.export-based one cannot export (fake_quantize ops of quantization-aware training): the
        # notice gives the user nothing to do, so this one message, and only it, is not shown.
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset or 18,
        )


def _mentions(exc: BaseException, text: str) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if text in str(cur):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _summary(exc: BaseException, limit: int = 400) -> str:
    """The first line of the root cause's message (torch's run to pages); the chain keeps the rest."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:  # the ONNX exporter wraps torch.export's error
        exc = exc.__cause__
        seen.add(id(exc))
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # ANSI colours
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def export_pt2(model: torch.nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Write ``model`` as a ``torch.export`` program (``.pt2``) with a dynamic batch; return the path.

    The file loads with ``torch.export.load(path).module()`` without the model's code.
    Example::

        path = export_pt2(model, torch.randn(4, 64), tmp / "model.pt2")

    Raises :class:`loopml.errors.ExportError` when the model does not trace.
    """
    import torch

    example = _trace_example(_check_example(model, example))
    path = Path(path)
    program = _torch_export(model, example, dynamic=True)
    buffer = io.BytesIO()  # a buffer, so that the archive's root folder is not named after the temp file
    try:
        with _quiet():
            torch.export.save(program, buffer)
    except Exception as exc:
        raise ExportError(f"Saving the .pt2 program failed: {_summary(exc)}") from exc
    atomic_write(path, buffer.getvalue())
    return path


def export_executorch(model: torch.nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Write ``model`` as an ExecuTorch program lowered to XNNPACK (``.pte``); return the path.

    Lowers with a dynamic batch of up to :data:`PTE_MAX_BATCH` rows; if that does
    not lower, with a fixed batch of :data:`PTE_FIXED_BATCH`. Either way the
    ``pte`` predictor (:func:`loopml.models.runtime.load_predictor`) takes any batch
    size; :func:`loopml.models.runtime.pte_batch_capacity` tells which one a file got. Needs
    ``pip install 'loopml[edge]'``. Example::

        path = export_executorch(model, torch.randn(4, 64), tmp / "model.pte")

    Raises :class:`loopml.errors.ExportError` when the model does not lower.
    """
    with _quiet():
        _require("executorch", "edge", "ExecuTorch export")
    with _quiet():  # importing executorch imports torchao, which logs about its CUDA kernels
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
            XnnpackPartitioner,
        )
        from executorch.exir import to_edge_transform_and_lower

    example = _check_example(model, example)
    path = Path(path)

    def lower(ex: torch.Tensor, dynamic: bool) -> bytes:
        program = _torch_export(model, ex, dynamic=dynamic, max_batch=PTE_MAX_BATCH)
        with _quiet():
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            return bytes(edge.to_executorch().buffer)

    try:
        buffer = lower(_trace_example(example), True)
    except Exception as dyn_exc:
        try:
            buffer = lower(example[:PTE_FIXED_BATCH].contiguous(), False)
        except Exception as exc:
            raise ExportError(
                f"ExecuTorch lowering of {type(model).__name__} failed "
                f"(dynamic batch: {_summary(dyn_exc)}; fixed batch of {PTE_FIXED_BATCH}: {_summary(exc)})"
            ) from exc
    atomic_write(path, buffer)
    return path


def verify(
    predict: Callable[[np.ndarray], np.ndarray],
    model: torch.nn.Module,
    inputs: np.ndarray,
    *,
    atol: float = 1e-4,
) -> float:
    """The largest absolute difference between ``predict(inputs)`` and eager ``model(inputs)``.

    Eager runs in fp32, eval mode, under ``torch.no_grad``. Raises
    :class:`loopml.errors.ExportError` (with ``max_abs_diff``) when the difference is
    above ``atol`` or the shapes differ. Example::

        diff = verify(load_predictor("onnx", path), model, random_inputs(sig, 100))
    """
    import torch

    if atol < 0:
        raise ArgumentError(f"Argument atol should be >= 0; got {atol}")
    x = np.ascontiguousarray(np.asarray(inputs, dtype=np.float32))
    with eval_mode(model), torch.no_grad():
        expected = model(torch.from_numpy(x)).detach().float().numpy()
    got = np.asarray(predict(x))
    if got.shape != expected.shape:
        raise ExportError(f"The exported model returned shape {got.shape}; eager PyTorch returned {expected.shape}")
    diff = float(np.max(np.abs(got.astype(np.float64) - expected))) if expected.size else 0.0
    if not diff <= atol:  # also catches NaN
        raise ExportError(
            f"The exported model differs from eager PyTorch by {diff:.3g} (max abs) > atol={atol:g}",
            max_abs_diff=diff,
        )
    return diff


# the graph exporter (loopml.models.graphs) quiets the exporters, names the extra and summarises errors the same way
quiet_exporters = _quiet
require_extra = _require
error_summary = _summary
