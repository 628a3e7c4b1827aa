"""Graph models in the registry: a model called as ``model(x, edge_index)`` with one score row per node.

A graph model (PyTorch Geometric's convention: ``x`` float32 nodes x features,
``edge_index`` int64 2 x edges, row 0 the sources) registers with a signature of
two inputs, ``x`` of shape ``(None, F)`` and ``edge_index`` of shape ``(2, None)``,
and the marker ``kind="graph"``. Its input example is a
:class:`~loopml.data.Graph` or an ``(x, edge_index)`` pair; a graph kept with the
version (``store_graph=True`` or ``graph=``) is what transductive serving answers
node ids from. Example::

    v = loopml.models.register(model, "karate-gcn", input_example=graph, store_graph=True)
    m = loopml.load_model(v.ref)
    m(graph.x, graph.edge_index).shape          # (34, 4): one row of scores per node
    x, edge_index, node_ids = stored_graph(registry, v)

Exports: ``pt2`` (``torch.export``) and ``onnx`` (the dynamo exporter) with the
numbers of nodes and edges dynamic; each is checked against the eager model on the
example and on a random graph of another size, and one that fails is left out with
a warning that says why (measured for PyG's GCN, GraphSAGE and GAT in
docs/serving.md, "Graph models").
"""

from __future__ import annotations

import io
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError, ExportError
from ..files import atomic_path, atomic_write
from ..quiet import import_onnxruntime
from .exporting import error_summary, quiet_exporters, require_extra
from .runtime import TorchPredictor, load_program
from .signature import Signature, TensorSpec, eval_mode

if TYPE_CHECKING:
    import torch

__all__ = [
    "GRAPH",
    "GRAPH_FILE",
    "GraphPredictor",
    "check_graph",
    "export_graph",
    "graph_example",
    "infer_graph_signature",
    "load_graph_predictor",
    "read_graph_file",
    "write_graph_file",
]

GRAPH = "graph"  # the version's files key of the stored graph, and the signature's kind
GRAPH_FILE = "graph.npz"
EXAMPLE_FILE = "input_example.npz"
_NAMES = ["x", "edge_index"]


def _tensors(x: Any, edge_index: Any) -> tuple["torch.Tensor", "torch.Tensor"]:
    import torch

    def one(value: Any, dtype: "torch.dtype", what: str) -> "torch.Tensor":
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, torch.Tensor):
            raise ArgumentTypeError(f"Argument {what} should be a torch.Tensor or numpy array; got {type(value).__name__}")
        return value.detach().cpu().to(dtype).contiguous()

    return one(x, torch.float32, "x"), one(edge_index, torch.int64, "edge_index")


def graph_example(example: Any) -> tuple["torch.Tensor", "torch.Tensor"] | None:
    """``(x, edge_index)`` when ``example`` is a graph input (a Graph, or a pair of them); None for a tensor batch."""
    if getattr(example, "kind", None) == "graph" and hasattr(example, "edge_index"):
        return _tensors(example.x, example.edge_index)
    if isinstance(example, tuple):
        if len(example) != 2:
            raise ArgumentError(
                f"Argument input_example should be a tensor batch, a Graph, or a pair (x, edge_index) for a graph model; "
                f"got a tuple of {len(example)}"
            )
        return _tensors(*example)
    return None


def is_graph(signature: Signature) -> bool:
    return signature.kind == GRAPH


def infer_graph_signature(
    model: "torch.nn.Module", x: "torch.Tensor", edge_index: "torch.Tensor", *, class_names: Sequence[str] | None = None
) -> Signature:
    """Run ``model(x, edge_index)`` once (eval, no grad) and record its graph signature.

    The output must have one row per node. Example::

        sig = infer_graph_signature(model, graph.x, graph.edge_index, class_names=graph.class_names)
        [s.shape for s in sig.inputs]     # [(None, 34), (2, None)]
    """
    import torch

    check_arrays(x.numpy(), edge_index.numpy(), width=None)
    try:
        with eval_mode(model), torch.no_grad():
            out = model(x, edge_index)
    except Exception as exc:  # the user's model: say how it was called
        raise ArgumentError(
            f"The graph model {type(model).__name__} failed when called as model(x, edge_index) on the example "
            f"({x.shape[0]} nodes, {edge_index.shape[1]} edges): {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(out, torch.Tensor):
        raise ArgumentError(f"The graph model returned {type(out).__name__}, not a tensor of scores per node")
    if out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise ArgumentError(
            f"The graph model's output should have one row per node ({x.shape[0]}), nodes x classes; got shape {tuple(out.shape)}"
        )
    names: tuple[str, ...] | None = None
    if class_names is not None:
        if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
            raise ArgumentError(f"Argument class_names should be a list of strings; got {class_names!r}")
        names = tuple(class_names)
        if len(names) != out.shape[1] or len(set(names)) != len(names):
            raise ArgumentError(
                f"Argument class_names should have one distinct name per output column ({out.shape[1]}); got {list(names)}"
            )
    return Signature(
        inputs=(TensorSpec("x", "float32", (None, int(x.shape[1]))), TensorSpec("edge_index", "int64", (2, None))),
        outputs=(TensorSpec("output", str(out.detach().numpy().dtype), (None, int(out.shape[1]))),),
        class_names=names,
        kind=GRAPH,
    )


def check_arrays(x: np.ndarray, edge_index: np.ndarray, *, width: int | None) -> None:
    """Raise ``ArgumentError`` (what is wrong, what to send) for a bad graph; the arrays are already numeric."""
    if x.ndim != 2 or x.shape[0] < 1:
        raise ArgumentError(f"x should be nodes x features, at least one node; got shape {x.shape}")
    if width is not None and x.shape[1] != width:
        raise ArgumentError(f"x should have {width} features per node (the model's input width); got {x.shape[1]}")
    if not np.isfinite(x).all():
        raise ArgumentError("x should hold finite numbers; got NaN or infinity")
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        raise ArgumentError(
            f"edge_index should have shape (2, edges): sources in row 0, targets in row 1; got shape {edge_index.shape}"
        )
    if edge_index.size:
        low, high = int(edge_index.min()), int(edge_index.max())
        if low < 0:
            raise ArgumentError(f"edge_index should hold node numbers 0..{x.shape[0] - 1}; got {low} (negative)")
        if high >= x.shape[0]:
            raise ArgumentError(
                f"edge_index names node {high}, out of range: the graph has {x.shape[0]} nodes (0..{x.shape[0] - 1})"
            )


def check_graph(signature: Signature, x: Any, edge_index: Any) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (float32) and ``edge_index`` (int64) checked against a graph signature; ``ArgumentError`` says what is wrong.

    Takes arrays, tensors or nested lists (a JSON body's). Refused: ragged or non-numeric
    values, a wrong width, NaN, an edge index that is not whole numbers, not 2 x edges,
    negative or past the last node. Example::

        x, ei = check_graph(sig, [[0.1, 0.2]], [[0], [0]])
    """
    width = signature.inputs[0].shape[1]
    xa = _numbers(x, "x", "floats")
    if xa.dtype.kind == "b":
        raise ArgumentError("x should hold numbers, not booleans")
    ea = _numbers(edge_index, "edge_index", "integers")
    if ea.size == 0:
        ea = ea.reshape(2, 0) if ea.ndim != 2 or ea.shape[0] != 2 else ea
    elif ea.dtype.kind not in "iu":
        raise ArgumentError(f"edge_index should hold whole node numbers (integers); got values of dtype {ea.dtype}")
    check_arrays(xa, ea, width=width)
    return np.ascontiguousarray(xa, dtype=np.float32), np.ascontiguousarray(ea, dtype=np.int64)


def _numbers(value: Any, what: str, kind: str) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    except (ValueError, OverflowError) as exc:  # ragged lists; an integer past int64
        raise ArgumentError(f"{what} should be a rectangular array of {kind}; {exc}") from None
    if arr.dtype.kind not in "biuf" or (arr.dtype.kind == "b" and arr.size):
        raise ArgumentError(f"{what} should hold {kind}; got values of dtype {arr.dtype}")
    return arr


# -- files -----------------------------------------------------------------------------


def write_graph_file(path: Path, x: np.ndarray, edge_index: np.ndarray, node_ids: Any = None) -> dict[str, Any]:
    """Write a graph as ``.npz`` (``x``, ``edge_index``, ``node_ids`` if any; no pickles); return its file details."""
    arrays: dict[str, np.ndarray] = {"x": np.ascontiguousarray(x, dtype=np.float32),
                                     "edge_index": np.ascontiguousarray(edge_index, dtype=np.int64)}
    if node_ids is not None:
        ids = np.asarray(node_ids)
        if ids.ndim != 1 or len(ids) != len(x) or ids.dtype.kind not in "iuU":
            raise ArgumentError(f"The graph's node ids should be one int or string per node ({len(x)}); got {ids.dtype} {ids.shape}")
        if len(set(ids.tolist())) != len(ids):
            raise ArgumentError("The graph's node ids should be distinct")
        arrays["node_ids"] = ids
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types the first keyword as allow_pickle
    return {"nodes": int(len(x)), "edges": int(arrays["edge_index"].shape[1]), "node_ids": node_ids is not None}


def read_graph_file(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(x, edge_index, node_ids or None)`` from a file of :func:`write_graph_file` (read without pickle)."""
    with np.load(path, allow_pickle=False) as data:
        ids = data["node_ids"] if "node_ids" in data.files else None
        return np.asarray(data["x"]), np.asarray(data["edge_index"]), ids


def graph_of(graph: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(x, edge_index, node_ids)`` of what ``graph=`` gave: a Graph (its ``node_ids``, if it has them), a pair
    ``(x, edge_index)``, or a triple ``(x, edge_index, node_ids)``."""
    if isinstance(graph, tuple) and len(graph) == 3:
        x, edge_index = _tensors(graph[0], graph[1])
        return x.numpy(), edge_index.numpy(), graph[2]
    pair = graph_example(graph)
    if pair is None:
        raise ArgumentTypeError(f"Argument graph should be a loopml.data.Graph or a pair (x, edge_index); got {type(graph).__name__}")
    return pair[0].numpy(), pair[1].numpy(), getattr(graph, "node_ids", None)


# -- export ----------------------------------------------------------------------------


def _dims() -> tuple[dict[int, Any], dict[int, Any]]:
    import torch

    # any number of nodes (>= 1) and of edges (0 included: a graph of isolated nodes)
    return {0: torch.export.Dim("nodes", min=1)}, {1: torch.export.Dim("edges", min=0)}


def _trace_pair(x: "torch.Tensor", edge_index: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """The example, grown to 2+ nodes and 2+ edges: torch.export specialises a dimension traced at size 0 or 1."""
    import torch

    if x.shape[0] >= 2 and edge_index.shape[1] >= 2:
        return x, edge_index
    xx = x.repeat(2, 1) if x.shape[0] < 2 else x
    extra = torch.tensor([[0, 1], [1, 0]], dtype=torch.int64)
    return xx, torch.cat([edge_index, extra], dim=1)


def random_graph(width: int, nodes: int = 23, edges: int = 61, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random graph (standard normal features) to check an export on another size than the example's."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((nodes, width)).astype(np.float32), rng.integers(0, nodes, (2, edges)).astype(np.int64)


def export_graph(fmt: str, model: "torch.nn.Module", x: "torch.Tensor", edge_index: "torch.Tensor", path: Path) -> dict[str, Any]:
    """Write ``model`` in ``fmt`` (``pt2`` or ``onnx``) with dynamic nodes and edges, checked against eager.

    The file is loaded back and compared with the eager model on the example and on a
    random graph of another size (max abs difference <= 1e-4). Returns the file's details;
    raises :class:`~loopml.errors.ExportError` with the exporter's reason when it fails.
    """
    import torch

    tx, tei = _trace_pair(x, edge_index)
    shapes = _dims()
    path = Path(path)
    try:
        with eval_mode(model), torch.no_grad():
            if fmt == "pt2":
                with quiet_exporters():
                    program = torch.export.export(model, (tx, tei), dynamic_shapes=shapes)
                buffer = io.BytesIO()  # a buffer, so that the archive's root folder is not named after a temp file
                with quiet_exporters():
                    torch.export.save(program, buffer)
                atomic_write(path, buffer.getvalue())
            elif fmt == "onnx":
                require_extra("onnx", "export", "ONNX export")
                require_extra("onnxscript", "export", "ONNX export")
                with atomic_path(path) as tmp, tempfile.TemporaryDirectory() as artifacts, quiet_exporters():
                    onnx_program = torch.onnx.export(
                        model, (tx, tei), dynamo=True, input_names=_NAMES, output_names=["output"],
                        dynamic_shapes=shapes, external_data=False, artifacts_dir=artifacts, verbose=False,
                    )
                    if onnx_program is None:  # pragma: no cover - only the legacy exporter returns None
                        raise RuntimeError("torch.onnx.export returned no program")
                    onnx_program.save(str(tmp), external_data=False)
            else:
                raise ArgumentError(f"Graph models export to pt2 or onnx; got {fmt!r}")
    except (ArgumentError, ModuleNotFoundError):
        raise
    except Exception as exc:  # torch raises many types (UserError, Unsupported, RuntimeError, ...)
        raise ExportError(f"{fmt} export of the graph model {type(model).__name__} failed: {error_summary(exc)}") from exc
    predictor = load_graph_predictor(fmt, path)
    diff = 0.0
    for gx, gei in ((x.numpy(), edge_index.numpy()), random_graph(int(x.shape[1]))):
        with eval_mode(model), torch.no_grad():
            want = model(torch.from_numpy(gx), torch.from_numpy(gei)).float().numpy()
        got = predictor(gx, gei)
        if got.shape != want.shape:
            raise ExportError(f"The {fmt} graph model returned shape {got.shape} for {len(gx)} nodes; eager gave {want.shape}")
        diff = max(diff, float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0)
    if not diff <= 1e-4:
        raise ExportError(f"The {fmt} graph model differs from eager PyTorch by {diff:.3g} (max abs) > 1e-4", max_abs_diff=diff)
    return {"dynamic_nodes": True, "dynamic_edges": True, "max_abs_diff": diff}


# -- running ---------------------------------------------------------------------------


class GraphPredictor:
    """A loaded graph model: ``predict(x, edge_index)`` (float32 N x F, int64 2 x E) -> scores per node (NumPy).

    ``format`` is the stored format; ``model`` the torch module for ``torch`` and ``pt2``.
    Torch's thread count is set in each thread that calls it, as for the other predictors.
    """

    def __init__(self, fmt: str, run: Any, model: Any = None, threads: int = 1) -> None:
        self.format = fmt
        self._run = run
        self.model = model
        self.threads = threads
        self._local = threading.local()

    def __call__(self, x: np.ndarray, edge_index: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        edge_index = np.ascontiguousarray(edge_index, dtype=np.int64)
        if self.format == "onnx":
            try:
                return np.asarray(self._run(None, {"x": x, "edge_index": edge_index})[0])
            except Exception as exc:  # onnxruntime's own exception types
                raise ExportError(f"ONNX Runtime failed on a graph of {len(x)} nodes: {str(exc).splitlines()[0]}") from exc
        import torch

        if not getattr(self._local, "done", False):
            torch.set_num_threads(self.threads)
            self._local.done = True
        try:
            with torch.inference_mode():
                out = self._run(torch.from_numpy(x), torch.from_numpy(edge_index))
        except Exception as exc:
            raise ExportError(f"The {self.format} graph model failed on a graph of {len(x)} nodes: {type(exc).__name__}: {exc}") from exc
        if isinstance(out, (tuple, list)) and len(out) == 1:
            out = out[0]
        return np.asarray(out.detach().numpy())


def load_graph_predictor(fmt: str, path: str | Path, *, threads: int = 1,
                         model_spec: Mapping[str, Any] | None = None) -> GraphPredictor:
    """Load a graph model file (``torch``, ``pt2`` or ``onnx``) as a :class:`GraphPredictor`.

    Each goes through the same safe loaders as single-input models
    (:mod:`loopml.models.runtime`). Example::

        predict = load_graph_predictor("pt2", "model.pt2")
        predict(x, edge_index).argmax(axis=1)
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"No {fmt} model file at {path}")
    if fmt == "torch":
        module = TorchPredictor(path, threads=threads, model_spec=model_spec).model
        return GraphPredictor(fmt, module, module, threads)
    if fmt == "pt2":
        program = load_program(path)
        module = program.module()
        return GraphPredictor(fmt, module, module, threads)
    if fmt == "onnx":
        try:
            ort = import_onnxruntime()
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(f"Loading an ONNX model needs {exc.name}: pip install 'loopml[export]'") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ExportError(f"ONNX Runtime could not load {path}: {str(exc).splitlines()[0]}") from exc
        names = [i.name for i in session.get_inputs()]
        if names != _NAMES:
            raise ExportError(f"{path} takes inputs {names}; a loopml graph model takes {_NAMES}")
        return GraphPredictor(fmt, session.run, None, threads)
    raise ArgumentError(f"Graph models are stored as torch, pt2 or onnx; got format {fmt!r}")
