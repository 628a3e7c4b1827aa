"""Serving a graph model's node predictions: a graph in the request, or node ids of the version's stored graph.

A graph version (signature ``kind="graph"``, :mod:`loopml.models.graphs`) answers
``POST /v1/models/{name}/predict`` with one result per node asked for::

    {"x": [[...], ...], "edge_index": [[0, 1, ...], [1, 2, ...]], "nodes": [0, 5]}   # inductive; nodes optional (all)
    {"nodes": [0, 5]}          # transductive: node ids of the graph stored with the version

Transductive answers come from a cache: the stored graph is predicted once when the
version loads (and again for each version a hot swap loads), so a request is a
lookup. An inductive request runs the model on its graph in this module's worker
thread (a graph's cost is not known before it arrives, so it never runs in the event
loop), one graph at a time. Graphs are not batched together, and the OOD gate does
not apply to them (it scores rows of a single input).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArgumentError, LoopMLError, NotFound
from ..models.graphs import GRAPH, check_graph, load_graph_predictor, read_graph_file

if TYPE_CHECKING:
    from ..models.graphs import GraphPredictor
    from ..models.signature import Signature
    from ..store.protocols import Registry
    from ..store.registry import ModelVersion

__all__ = ["GRAPH_FIELDS", "GraphServing", "load_graph_parts"]

GRAPH_FIELDS = frozenset({"x", "edge_index", "nodes"})
GRAPH_ORDER = ("onnx", "torch", "pt2")  # ONNX Runtime first, as for single-input models; the program loads slowest


class GraphServing:
    """What a graph version serves with: its predictor, the stored graph and its cached answers, the worker thread.

    ``scores`` is the stored graph's answer per node (probabilities for a classifier), None without a stored graph.
    """

    def __init__(self, predictor: "GraphPredictor", signature: "Signature", stored: tuple[np.ndarray, np.ndarray, Any] | None,
                 finish: Any) -> None:
        self.predictor = predictor
        self.signature = signature
        self.finish = finish
        self.ids: dict[Any, int] | None = None
        self.scores: np.ndarray | None = None
        self.nodes = self.edges = 0
        self.x = np.zeros((0, signature.inputs[0].shape[1] or 0), dtype=np.float32)  # the stored graph's features (logged)
        if stored is not None:
            x, edge_index, node_ids = stored
            self.nodes, self.edges = int(len(x)), int(edge_index.shape[1])
            self.x = x
            self.ids = None if node_ids is None else {v: i for i, v in enumerate(node_ids.tolist())}
            self.scores = finish(predictor(x, edge_index))
        self.pending = 0
        # one graph at a time: torch's thread count holds per thread, and two large graphs at once only compete
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="loopml-serve-graph")

    def close(self) -> None:
        """Let the worker thread end once the graphs queued on it are answered (a hot swap, the server stopping)."""
        self.pool.shutdown(wait=False)

    def describe(self) -> dict[str, Any]:
        if self.scores is None:
            return {"stored": False}
        return {"stored": True, "nodes": self.nodes, "edges": self.edges, "node_ids": self.ids is not None}

    def parse(self, body: Any) -> tuple[np.ndarray | None, np.ndarray | None, list[int] | None, list[Any]]:
        """A request body checked: ``(x, edge_index, rows, ids)``; x is None for a transductive request.

        ``rows`` are node numbers (None: every node of the request's graph); ``ids`` what each
        result names as its ``node``. Raises ``ArgumentError`` with what to send.
        """
        if type(body) is not dict or not body or set(body) - GRAPH_FIELDS:
            extra = sorted(set(body) - GRAPH_FIELDS) if type(body) is dict else []
            raise ArgumentError(
                "This is a graph model: the body should be {\"x\": [[...], ...], \"edge_index\": [[sources...], [targets...]], "
                "\"nodes\": [optional node numbers]} (a graph in the request), or {\"nodes\": [ids]} (nodes of the graph "
                "stored with the version)" + (f"; unknown fields {extra}" if extra else "")
            )
        has_x, has_edges = "x" in body, "edge_index" in body
        if has_x != has_edges:
            raise ArgumentError("A graph in the request needs both x (node features) and edge_index (2 x edges)")
        nodes = body.get("nodes")
        if has_x:
            x, edge_index = check_graph(self.signature, body["x"], body["edge_index"])
            if nodes is None:
                return x, edge_index, None, list(range(len(x)))
            rows = self._numbers(nodes, len(x))
            return x, edge_index, rows, rows
        if self.scores is None:
            raise ArgumentError(
                "This version has no stored graph, so it cannot answer node ids alone: send the graph as x and "
                "edge_index, or register the model with store_graph=True (or graph=...)"
            )
        if nodes is None:
            raise ArgumentError("nodes should list the node ids to predict, e.g. {\"nodes\": [0, 5]}")
        if self.ids is None:
            rows = self._numbers(nodes, self.nodes)
            return None, None, rows, rows
        if type(nodes) is not list or not nodes:
            raise ArgumentError(f"nodes should be a non-empty list of node ids; got {_shown(nodes)}")
        rows = []
        for node in nodes:
            row = self.ids.get(node) if type(node) in (int, str) else None
            if row is None:
                raise ArgumentError(f"nodes names {node!r}, which is not a node id of the stored graph ({self.nodes} nodes)")
            rows.append(row)
        return None, None, rows, list(nodes)

    @staticmethod
    def _numbers(nodes: Any, count: int) -> list[int]:
        if type(nodes) is not list or not nodes:
            raise ArgumentError(f"nodes should be a non-empty list of node numbers 0..{count - 1}; got {_shown(nodes)}")
        for node in nodes:
            if type(node) is not int:
                raise ArgumentError(f"nodes should be node numbers (integers) 0..{count - 1}; got {node!r}")
            if not 0 <= node < count:
                raise ArgumentError(f"nodes names node {node}, out of range: the graph has {count} nodes (0..{count - 1})")
        return list(nodes)

    def run(self, x: np.ndarray, edge_index: np.ndarray) -> np.ndarray:
        """The answer per node of a request's graph (in the worker thread)."""
        return np.asarray(self.finish(self.predictor(x, edge_index)))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def load_graph_parts(registry: "Registry", version: "ModelVersion", *, backend: str,
                     threads: int) -> tuple["GraphPredictor", tuple[np.ndarray, np.ndarray, Any] | None]:
    """A graph version's predictor (the first of onnx, torch, pt2 that ``backend`` allows and that loads), warmed up on
    its example graph, and its stored graph (None without one); :func:`~loopml.serve.backends.load_backend` builds
    the backend and the :class:`GraphServing` that predicts the stored graph once."""
    from ..models.registry import EXAMPLE

    allowed = {"auto": GRAPH_ORDER, "torch": ("torch", "pt2"), "onnx": ("onnx",), "executorch": ()}[backend]
    candidates = [f for f in allowed if f in version.files]
    if not candidates:
        have = ", ".join(f for f in sorted(version.files) if f not in (EXAMPLE, GRAPH)) or "none"
        raise NotFound(f"{version.ref} is a graph model with no file for the {backend!r} backend (it has: {have}); "
                       "graph models are served from onnx, torch or pt2")
    x, edge_index, _ = read_graph_file(registry.file_path(version.name, version.version, EXAMPLE))
    errors = []
    for fmt in candidates:
        try:
            predictor = load_graph_predictor(fmt, registry.file_path(version.name, version.version, fmt), threads=threads,
                                             model_spec=version.model_spec)
            predictor(x, edge_index)  # warm-up: first calls allocate and plan
        except (LoopMLError, ModuleNotFoundError) as exc:
            errors.append(f"{fmt}: {exc}")
            continue
        stored = read_graph_file(registry.file_path(version.name, version.version, GRAPH)) if GRAPH in version.files else None
        return predictor, stored
    raise LoopMLError(f"No runtime could load {version.ref}: " + "; ".join(errors))
