"""What a model version costs and how good it is: file size, accuracy, CPU latency.

The registry stores these figures with every version (a quantized variant beside
its fp32 parent) and ``benchmarks/quantization.py`` prints them. ``predict`` is
any callable from a NumPy float32 batch to NumPy outputs (class scores), such as
a :func:`loopml.models.runtime.load_predictor` predictor::

    from loopml.models import measure
    predict = load_predictor("onnx", "model.onnx")
    measure.file_size("model.onnx")                 # bytes
    measure.accuracy(predict, x_test, y_test)       # 0.0 .. 1.0
    measure.latency(predict, x_test)                # {1: 0.05, 64: 0.9}: median ms per call

Latency runs with one torch intra-op thread (small models on shared cores are
30-50x slower with more; docs/benchmarks.md, "Threads"), and restores the previous setting.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from ..errors import ArgumentError, ArgumentTypeError

__all__ = ["accuracy", "file_size", "latency", "serving_latency"]

Predict = Callable[[np.ndarray], Any]


def file_size(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of a model file, or of every file under a model folder.

    >>> torch.save(model.state_dict(), "model.pt")
    >>> file_size("model.pt")
    156337
    """
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    raise FileNotFoundError(f"Argument path should be a model file or folder, {str(p)!r} does not exist")


def _numpy(value: Any, what: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(f"Argument {what} should be a NumPy array or a tensor, got {type(value).__name__}") from exc


def _outputs(out: Any) -> np.ndarray:
    if isinstance(out, (list, tuple)):
        out = out[0]
    return _numpy(out, "predict's output")


def accuracy(predict: Predict, x: Any, y: Any, *, batch_size: int = 256) -> float:
    """The share of rows whose highest output is the label ``y`` (class indices), in ``[0, 1]``.

    >>> predict = loopml.load_model("digits/1", format="onnx")
    >>> accuracy(predict, x_test, y_test)
    0.9...
    """
    if not callable(predict):
        raise ArgumentTypeError(f"Argument predict should be callable on a NumPy batch, got {type(predict).__name__}")
    xa = np.ascontiguousarray(_numpy(x, "x"), dtype=np.float32)
    ya = _numpy(y, "y").reshape(-1)
    if len(xa) != len(ya) or len(xa) == 0:
        raise ArgumentError(f"Argument y should have one label per row of x (x has {len(xa)} rows, y has {len(ya)})")
    if type(batch_size) is not int or batch_size < 1:
        raise ArgumentError(f"Argument batch_size should be an integer >= 1, got {batch_size!r}")
    hits = 0
    for start in range(0, len(xa), batch_size):
        out = _outputs(predict(xa[start:start + batch_size]))
        if out.ndim != 2:
            raise ArgumentError(f"Argument predict should return class scores of shape (batch, classes), "
                             f"got shape {out.shape}")
        hits += int((out.argmax(axis=1) == ya[start:start + batch_size]).sum())
    return hits / len(xa)


def _batch(x: np.ndarray, size: int) -> np.ndarray:
    reps = -(-size // len(x))
    rows = np.concatenate([x] * reps) if reps > 1 else x
    return np.ascontiguousarray(rows[:size])


def latency(predict: Predict, x: Any, *, batch_sizes: Iterable[int] = (1, 64), repeats: int = 50,
            warmup: int = 5, max_seconds: float = 10.0) -> dict[int, float]:
    """Median milliseconds per ``predict`` call at each batch size (rows of ``x``, repeated if short).

    Each size gets ``warmup`` untimed calls, then up to ``repeats`` timed ones (fewer if they pass
    ``max_seconds``). Torch runs with one intra-op thread while timing.

    >>> predict = loopml.load_model("digits/1", format="onnx")
    >>> latency(predict, x_test, batch_sizes=(1, 64), repeats=20)    # milliseconds
    {1: ..., 64: ...}
    """
    if not callable(predict):
        raise ArgumentTypeError(f"Argument predict should be callable on a NumPy batch, got {type(predict).__name__}")
    for name, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if type(value) is not int or value < low:
            raise ArgumentError(f"Argument {name} should be an integer >= {low}, got {value!r}")
    sizes = list(batch_sizes)
    if not sizes or any(type(b) is not int or b < 1 for b in sizes):
        raise ArgumentError(f"Argument batch_sizes should be integers >= 1, got {batch_sizes!r}; e.g. (1, 64)")
    xa = np.ascontiguousarray(_numpy(x, "x"), dtype=np.float32)
    if xa.ndim < 1 or len(xa) == 0:
        raise ArgumentError("Argument x should hold at least one row")
    threads = _set_torch_threads(1)
    try:
        out: dict[int, float] = {}
        for size in sizes:
            batch = _batch(xa, size)
            for _ in range(warmup):
                predict(batch)
            times: list[float] = []
            deadline = time.perf_counter() + max_seconds
            while len(times) < repeats and (not times or time.perf_counter() < deadline):
                started = time.perf_counter()
                predict(batch)
                times.append((time.perf_counter() - started) * 1000.0)
            out[size] = statistics.median(times)
        return out
    finally:
        _set_torch_threads(threads)


def serving_latency(predict: Predict, x: Any) -> dict[str, float]:
    """A short :func:`latency` run at batch 1 and 64, as stored in a model file's details (``latency_ms``).

    ``loopml serve --backend auto`` compares these stored figures to pick a runtime
    without loading every runtime at start (see :mod:`loopml.serve.backends`); keys
    are strings, as in JSON. About 20 calls per size (at most 0.5 s each).

    >>> serving_latency(loopml.load_model("digits/1", format="onnx"), x[:8])    # milliseconds per call
    {'1': ..., '64': ...}
    """
    lat = latency(predict, x, batch_sizes=(1, 64), repeats=20, warmup=3, max_seconds=0.5)
    return {str(k): round(float(v), 5) for k, v in lat.items()}


def _set_torch_threads(n: int | None) -> int | None:
    """Set torch's intra-op threads if torch is already imported; return the previous count."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or n is None:
        return None
    before = int(torch.get_num_threads())
    torch.set_num_threads(n)
    return before
