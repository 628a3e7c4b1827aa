"""Load a registered version for serving: pick the runtime, warm it up, decide where it runs.

``--backend`` names a runtime: ``onnx`` (ONNX Runtime), ``torch`` (the
``torch.export`` program or the state dict), ``executorch`` (the ``.pte``
file) or ``auto``, any of the version's formats. One runtime is loaded, never
all of them: among the formats the backend allows, the one with the lowest
*stored* latency (batch-1 ms + batch-64 ms / 64, measured when the file was
registered or exported and kept in its details, see
:func:`loopml.models.measure.serving_latency`) comes first; formats without a
stored figure follow in the fixed order of :data:`PREFERENCE` (onnx > pte >
torch > pt2). A format that fails to load (e.g. its runtime is not installed)
gives way to the next. Nothing is timed to choose: loading every runtime to
time it cost seconds of start-up (importing torch alone takes 1-3 s) and the
memory of runtimes never used. For the small models this server is for, ONNX
Runtime usually wins (MLP 64-256-256-10: ~13 us at batch 1 against ~50 us eager
torch and ~180 us for the exported program, measured here).

A model whose batch-1 forward pass takes under :data:`INLINE_LIMIT_S` runs in
the event-loop thread: a thread hop costs more than such a forward pass. A
slower one runs in one worker thread (see :mod:`loopml.serve.batcher`).
Every predictor sets torch's thread count in each thread that calls it.

>>> from loopml.models.registry import registry_for
>>> registry = registry_for()                   # the registry of LOOPML_TRACKING_URI
>>> b = load_backend(registry, registry.resolve("digits@production"), backend="onnx", max_batch=64)
>>> b.format, b.inline
('onnx', True)
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArgumentError, LoopMLError, NotFound
from ..models.signature import Signature, random_inputs
from .graphs import GraphServing, load_graph_parts

if TYPE_CHECKING:
    from ..models.runtime import Predictor
    from ..models.signature import Signature
    from ..store.protocols import Registry
    from ..store.registry import ModelVersion

__all__ = ["BACKENDS", "INLINE_LIMIT_S", "PREFERENCE", "Backend", "candidate_formats", "load_backend", "stored_cost"]

BACKENDS = ("auto", "torch", "onnx", "executorch")
# Without stored latencies: ONNX Runtime first (no torch at all), then ExecuTorch; the state dict before the
# torch.export program, which took 2.1 s to load against milliseconds and ran slower at batch 1 on the digits
# CNN (0.19 against 0.10 ms, measured here); the program stays the fallback when the class cannot be imported.
# "mlflow" (a version registered through MLflow's API, loopml.models.runtime.MlflowPredictor) comes last:
# any of loopml's own formats that an export added runs without MLflow's zip being unpacked.
PREFERENCE = ("onnx", "pte", "torch", "pt2", "mlflow")
_FORMATS_FOR = {"auto": PREFERENCE, "torch": ("torch", "pt2", "mlflow"), "onnx": ("onnx",), "executorch": ("pte",)}
INLINE_LIMIT_S = 0.002


@dataclass(eq=False)
class Backend:
    """A loaded, warmed-up version: what the batcher calls and how answers are built."""

    version: "ModelVersion"
    format: str
    predictor: "Predictor"
    signature: "Signature"
    inline: bool
    batch1_s: float
    class_names: np.ndarray | None = None
    gate: Any = None  # the version's stored OOD gate, when the server uses it
    joint: Any = None  # the gate's model+features ONNX session (one forward pass for both), when used
    graph: Any = None  # a graph model's GraphServing (loopml.serve.graphs); None for every other model
    _npy_headers: dict[tuple[int, ...], bytes] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.version.name

    @property
    def number(self) -> int:
        return self.version.version

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The batch's answer: class probabilities (float32 softmax) for a classifier, else the raw output."""
        return self.finish(np.asarray(self.predictor(x)))

    def finish(self, out: np.ndarray) -> np.ndarray:
        """The model's raw output as the answer: softmax probabilities for a classifier."""
        if self.class_names is None:
            return out
        out = out.astype(np.float32, copy=True)
        out -= out.max(axis=1, keepdims=True)
        np.exp(out, out=out)
        out /= out.sum(axis=1, keepdims=True)
        return out

    def npy_bytes(self, x: np.ndarray) -> bytes:
        """``x`` as ``.npy`` bytes; the header is built once per shape (np.save costs ~10 us a call)."""
        header = self._npy_headers.get(x.shape)
        if header is None:
            buf = io.BytesIO()
            np.save(buf, np.zeros(x.shape, dtype=x.dtype), allow_pickle=False)
            header = buf.getvalue()[: -x.nbytes or None]
            if len(self._npy_headers) < 256:
                self._npy_headers[x.shape] = header
        return header + np.ascontiguousarray(x).tobytes()


def _time_it(fn: Callable[[np.ndarray], Any], x: np.ndarray, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]  # not np.median: it imports numpy.ma (~10-35 ms of start-up)


def stored_cost(version: "ModelVersion", fmt: str) -> float | None:
    """Milliseconds per row the version's ``fmt`` file was measured at (batch-1 ms + batch-64 ms / 64), or None.

    Read from the file's details (``latency_ms``, stored at registration or export),
    else from the version's measurements when they are of that format (a quantized variant's).
    """
    info = version.files.get(fmt)
    lat = info.details.get("latency_ms") if info is not None else None
    if not isinstance(lat, dict) and version.measurements.get("format") == fmt:
        lat = version.measurements.get("latency_ms")
    if not isinstance(lat, dict):
        return None
    try:
        one = float(lat["1"])
        many = float(lat["64"]) / 64 if "64" in lat else 0.0
    except (KeyError, TypeError, ValueError):
        return None
    return one + many if one >= 0 and many >= 0 else None


def candidate_formats(version: "ModelVersion", backend: str = "auto") -> list[str]:
    """The version's formats ``backend`` may run, in the order they are tried (see the module docstring).

    >>> from loopml.models.registry import registry_for
    >>> candidate_formats(registry_for().resolve("digits@production"))   # its files: pt2, torch, onnx
    ['onnx', 'torch', 'pt2']
    """
    if backend not in BACKENDS:
        raise ArgumentError(f"Argument backend should be one of {', '.join(BACKENDS)}; got {backend!r}")
    have = [f for f in _FORMATS_FOR[backend] if f in version.files]
    costs = {f: c for f in have if (c := stored_cost(version, f)) is not None}
    return sorted(costs, key=costs.__getitem__) + [f for f in have if f not in costs]


def _warm_inputs(registry: "Registry", version: "ModelVersion", signature: "Signature", rows: int) -> np.ndarray:
    from ..models.registry import EXAMPLE

    like = None
    if EXAMPLE in version.files:
        like = np.load(registry.file_path(version.name, version.version, EXAMPLE), allow_pickle=False)
    return random_inputs(signature, rows, like=like)


def load_backend(
    registry: "Registry",
    version: "ModelVersion",
    *,
    backend: str = "auto",
    max_batch: int = 64,
    threads: int = 1,
    inline: bool | None = None,
    allow_pickle: bool = False,
) -> Backend:
    """Load ``version`` with the runtime ``backend`` asks for (one runtime: see the module docstring) and warm it up.

    ``inline``: force the forward pass into (True) or out of (False) the event-loop thread;
    default: inline when a batch-1 forward pass takes under :data:`INLINE_LIMIT_S`.
    ``allow_pickle``: load an MLflow version whose module was pickled (``loopml serve --allow-pickle``;
    see :mod:`loopml.models.runtime`).
    """
    from ..models.registry import load_version

    if backend not in BACKENDS:
        raise ArgumentError(f"Argument backend should be one of {', '.join(BACKENDS)}; got {backend!r}")
    signature = Signature.from_dict(version.signature)
    if signature.is_graph:  # two inputs, no batching: a path of its own (loopml.serve.graphs)
        graph_predictor, stored = load_graph_parts(registry, version, backend=backend, threads=threads)
        names = signature.class_names
        out = Backend(version=version, format=graph_predictor.format, predictor=graph_predictor,  # type: ignore[arg-type]
                      signature=signature, inline=False, batch1_s=0.0,
                      class_names=np.asarray(names, dtype=object) if names is not None else None)
        out.graph = GraphServing(graph_predictor, signature, stored, out.finish)  # predicts the stored graph once
        return out
    signature.input  # single input, single output: fail at load, not at the first request
    signature.output
    candidates = candidate_formats(version, backend)
    if not candidates:
        have = ", ".join(f for f in sorted(version.files) if f != "input_example") or "none"
        raise NotFound(
            f"{version.ref} has no file for the {backend!r} backend (it has: {have}); add one with "
            f"`loopml models export {version.ref} --format {'pte' if backend == 'executorch' else 'onnx'}` "
            "or pick another --backend"
        )
    big = _warm_inputs(registry, version, signature, max(1, max_batch))
    one = np.ascontiguousarray(big[:1])
    chosen: tuple[str, Any] | None = None
    errors = []
    for fmt in candidates:
        try:
            loaded = load_version(registry, version, format=fmt, threads=threads, allow_pickle=allow_pickle)
            predictor = loaded.predictor
            for x in (one, big, one):  # warm-up: first calls allocate, plan and JIT
                predictor(x)
        except (LoopMLError, ModuleNotFoundError) as exc:
            if len(candidates) == 1:
                raise
            errors.append(f"{fmt}: {exc}")
            continue
        chosen = (fmt, predictor)
        break
    if chosen is None:
        raise LoopMLError(f"No runtime could load {version.ref}: " + "; ".join(errors))
    fmt, predictor = chosen
    batch1 = _time_it(predictor, one, 20)  # where it runs: in the event loop when this is short
    names = signature.class_names
    return Backend(
        version=version,
        format=fmt,
        predictor=predictor,
        signature=signature,
        inline=(batch1 < INLINE_LIMIT_S) if inline is None else inline,
        batch1_s=batch1,
        class_names=np.asarray(names, dtype=object) if names is not None else None,
    )
