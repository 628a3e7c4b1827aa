"""The model server's HTTP API: its routes, their answers and the one JSON error shape.

:class:`Routes` answers the requests a :class:`~loopml.serve.server.ModelServer` has
let in (Host and token checked)::

    POST /v1/models/{name}/predict   parse (JSON or .npy), validate, queue, answer (OOD abstain); a graph model's
                                     nodes (a graph in the body, or node ids of its stored graph: serve/graphs.py)
    POST /v1/models/{name}/explain   the prediction and its attributions (saliency at once, the rest in a worker)
    GET  /v1/predictions/{id}/explanation   the attributions of a logged request, by the version that answered it
    POST /v1/feedback                the true label of a past prediction (optionally of one row, by an annotator)
    GET  /health /ready /metrics /v1/models /v1/models/{name} /openapi.json /docs

Every refusal is one JSON shape, ``{"error": {"code": ..., "message": ...}}``;
:func:`error_status` is the one place that maps an exception to its HTTP status
and code. The predict path is written for speed: the body is parsed with
orjson, checked with :meth:`~loopml.models.signature.Signature.parse` (NumPy),
queued in the :class:`~loopml.serve.batcher.Batcher` and answered from the
batch output; the request log and metrics cost a deque append and a few integer
updates. Example (what the server does once its loop runs)::

    routes = Routes(name="digits", ref="digits@production", metrics=Metrics(model="digits"), batcher=batcher,
                    requestlog=requestlog, predictions=PredictionLog(store))
    routes.install(backend)                  # each version the server loads, hot swaps included
    routes.dispatch(request, connection)     # answers now, or once the request's batch has run
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from ..errors import ArgumentError, LoopMLError, NotFound, StoreError, http_answer
from ..explanations import Explainer, Explanation
from ..models.signature import Signature
from .batcher import Batcher, Gate, Job
from .explaining import Explanations, answer_body, check_request, json_options, query_options
from .http import JSON, Connection, Request
from .metrics import Metrics
from .openapi import DOCS_HTML, document
from .requestlog import RequestLog

if TYPE_CHECKING:
    from ..store.predictions import PredictionLog
    from ..store.registry import ModelVersion
    from .backends import Backend

    Explain = Callable[[Explainer], Explanation]

__all__ = ["NPY", "RETRY", "TEXT", "Refused", "Routes", "error_body", "error_status", "json_body", "npy_body"]

log = logging.getLogger("loopml.serve")

NPY = b"application/x-npy"
TEXT = b"text/plain; version=0.0.4; charset=utf-8"
RETRY = ((b"retry-after", b"1"),)
FEEDBACK_FIELDS = frozenset({"request_id", "label", "row", "annotator", "kind", "seconds"})
EXPLAIN_FIELDS = ("inputs", "include_prediction", "method", "target", "baseline", "steps", "samples", "stdevs", "window",
                  "stride", "feature_groups", "seed", "check")
"""The header every 503 carries: the server is loading or at capacity, try again in a second."""
_OPTS = orjson.OPT_SERIALIZE_NUMPY
_INTERNAL = "Internal server error; the server log has the details"

Answer = tuple[int, bytes, bytes]
"""A GET route's answer: status, body, content type."""


def error_body(status: int, code: str, message: str) -> bytes:
    """The one JSON error shape, ``{"error": {"code": ..., "message": ...}}`` (``status`` goes in the status line)."""
    return orjson.dumps({"error": {"code": code, "message": message}})


class Refused(LoopMLError):
    """A request the server refuses on purpose: ``http_status``, ``code`` and the message for the client.

    A :class:`~loopml.errors.LoopMLError` whose status and code are given where it is raised
    (the server's own refusals: a body over the limit, a wrong content type, a bad field);
    ``headers`` go with the answer (a 503 always carries ``Retry-After``).
    Example: ``raise Refused(404, "not_found", "No route GET /nope; the API is described at /docs")``.
    """

    def __init__(self, http_status: int, code: str, message: str, *, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.error_code = self.code = code
        self.headers = headers


def error_status(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and error code a request that raised ``exc`` is answered with (the one place that decides).

    A loopml error answers with its class's (or, for :class:`Refused`, its own) ``http_status``
    and ``error_code``, as in the tracking server (:func:`loopml.errors.http_answer`); any other
    exception, a ``ValueError`` or ``TypeError`` from loopml's own code included, is a bug: 500.

    >>> error_status(Refused(413, "payload_too_large", "..."))
    (413, 'payload_too_large')
    >>> error_status(NotFound("no prediction 'x'")), error_status(ArgumentError("Argument label should be ..."))
    ((404, 'not_found'), (400, 'bad_request'))
    >>> error_status(StoreError("database is locked", transient=True)), error_status(ValueError("a bug"))
    ((503, 'store_unavailable'), (500, 'internal_error'))
    """
    status, code, _ = http_answer(exc)
    return status, code


def json_body(req: Request) -> Any:
    """The request's JSON body; a 400 ``invalid_json`` that says where it broke."""
    try:
        return orjson.loads(req.body)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, "invalid_json", f"The request body is not valid JSON: {exc}") from None


def npy_body(req: Request) -> np.ndarray:
    """The request's ``.npy`` body (no pickled objects); a 400 ``invalid_npy`` otherwise."""
    try:
        return np.asarray(np.load(io.BytesIO(req.body), allow_pickle=False))
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError, ... for a bad file
        raise Refused(400, "invalid_npy", f"The body is not a .npy array without objects ({type(exc).__name__}: {exc})") from None


class Routes:
    """The routes of one model server (see the module docstring).

    ``batcher``, ``requestlog`` and ``predictions`` are the server's, made once its loop
    runs; ``gate`` is the gate given to the server (None: each version's stored gate, if any);
    ``log_inputs`` is the fraction of requests whose inputs the request log keeps;
    ``explanations`` is the server's explanation worker (None: the explain routes answer 404).
    ``backend`` is the version being served (None while the first one loads), set by
    :meth:`install`; ``load_error`` says why the last load failed, ``version_info`` is
    what the followed reference resolved to last.
    """

    def __init__(
        self,
        *,
        name: str,
        ref: str,
        metrics: Metrics,
        batcher: Batcher,
        requestlog: RequestLog,
        predictions: "PredictionLog",
        gate: Gate | None = None,
        log_inputs: float = 1.0,
        explanations: Explanations | None = None,
    ) -> None:
        self.name, self.ref = name, ref
        self.explanations = explanations
        self.metrics = metrics
        self.batcher = batcher
        self.requestlog = requestlog
        self.predictions = predictions
        self.gate = gate
        self.log_inputs = log_inputs
        self.backend: Backend | None = None
        self.version_info: ModelVersion | None = None
        self.load_error: str | None = None
        # request ids: unique across restarts (the prefix), cheap per request (the counter)
        self.prefix = uuid.uuid4().hex[:12] + "-"
        self._counter = 0
        self._overloaded = error_body(503, "overloaded", f"The server is at capacity ({batcher.max_queue} requests queued); retry after 1 s")
        self.gets: dict[str, Callable[[], Answer]] = {
            "/health": self.health,
            "/ready": self.ready,
            "/metrics": self.metrics_text,
            "/v1/models": self.models,
            "/openapi.json": self.openapi,
            "/docs": self.docs,
        }

    def install(self, backend: "Backend") -> bool:
        """Serve ``backend`` from the next batch on, with its stored gate unless the server was given one.

        Returns True when it replaced another version (a hot swap).
        """
        swapped = self.backend is not None
        if swapped:
            self.metrics.swaps += 1
            if self.backend.graph is not None:  # type: ignore[union-attr]
                self.backend.graph.close()  # type: ignore[union-attr]
        # swapped together with the model it was fitted on
        self.batcher.gate = self.gate if self.gate is not None else backend.gate
        self.backend = backend
        self.load_error = None
        return swapped

    # -- dispatch --------------------------------------------------------------------

    def dispatch(self, req: Request, conn: Connection) -> None:
        """Answer ``req`` (let in by the server): now, or from the loop once its batch has run.

        Raises :class:`Refused` (or any other exception) for :meth:`fail` to answer.
        """
        path = req.path
        if req.method == "POST":
            if path.startswith("/v1/models/") and path.endswith("/predict"):
                self.predict(req, conn, path[11:-8])
                return
            if path.startswith("/v1/models/") and path.endswith("/explain"):
                self.explain(req, conn, path[11:-8])
                return
            if path == "/v1/feedback":
                self.feedback(req, conn)
                return
        elif req.method == "GET":
            route = self.gets.get(path)
            if route is not None:
                status, body, ctype = route()
                self.respond(conn, status, body, ctype)
                return
            if path.startswith("/v1/models/") and "/" not in path[11:]:
                self.respond(conn, 200, self.model_info(path[11:]))
                return
            if _logged_explanation(path):
                self.logged_explanation(req, conn, path[16:-12])
                return
        self._not_routed(req)

    def respond(self, conn: Connection, status: int, body: bytes, ctype: bytes = JSON,
                headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        """Send an answer other than a prediction's (counted in the metrics by status)."""
        self.metrics.request(status)
        conn.respond(status, body, ctype, headers)

    def fail(self, conn: Connection, req: Request, exc: BaseException) -> None:
        """Answer a request that raised ``exc`` in the one JSON error shape (status and code: :func:`error_status`).

        A 500 (a bug) tells the client only that; its traceback goes to the server log.
        """
        status, code = error_status(exc)
        if status == 500:
            log.error("loopml serve: internal error on %s %s", req.method, req.path, exc_info=exc)
            message = _INTERNAL
        elif isinstance(exc, StoreError) and not isinstance(exc, NotFound):  # only feedback writes to the store
            message = "The store could not save the label; retry later"
        else:
            message = str(exc)
        headers = exc.headers if isinstance(exc, Refused) else ()
        self.respond(conn, status, error_body(status, code, message), headers=headers or (RETRY if status == 503 else ()))

    def _not_routed(self, req: Request) -> None:
        path = req.path
        known_post = (path.startswith("/v1/models/") and path.endswith(("/predict", "/explain"))) or path == "/v1/feedback"
        known_get = path in self.gets or (path.startswith("/v1/models/") and "/" not in path[11:]) or _logged_explanation(path)
        if known_post or known_get:
            allowed = "POST" if known_post else "GET"
            raise Refused(405, "method_not_allowed", f"Method {req.method} is not allowed on {path}; use {allowed}")
        raise Refused(404, "not_found", f"No route {req.method} {path}; the API is described at /docs")

    # -- GET routes -----------------------------------------------------------------

    def health(self) -> Answer:
        return 200, b'{"status":"ok"}', JSON

    def ready(self) -> Answer:
        b = self.backend
        if b is None:
            msg = f"{self.ref} is loading" + (f"; the last attempt failed: {self.load_error}" if self.load_error else "")
            raise Refused(503, "not_ready", msg)
        return 200, orjson.dumps({"status": "ready", "model": b.name, "version": b.number, "format": b.format}), JSON

    def metrics_text(self) -> Answer:
        b = self.backend
        rl = self.requestlog
        text = self.metrics.render(queue_depth=self.batcher.depth, version=b.number if b else None,
                                   dropped=rl.dropped, written=rl.written, ready=b is not None)
        return 200, text.encode(), TEXT

    def models(self) -> Answer:
        return 200, orjson.dumps({"models": [self.describe()]}), JSON

    def openapi(self) -> Answer:
        sig = self.backend.signature if self.backend is not None else None
        if sig is not None and sig.is_graph:
            stored = self.backend.graph.scores is not None  # type: ignore[union-attr]
            return 200, orjson.dumps(document(self.name, graph=(sig.inputs[0].shape[1], stored))), JSON
        shape = sig.input.shape if sig is not None else None
        names = list(sig.feature_names) if sig is not None and sig.feature_names else None
        return 200, orjson.dumps(document(self.name, list(shape) if shape else None, names)), JSON

    def docs(self) -> Answer:
        return 200, DOCS_HTML, b"text/html; charset=utf-8"

    def describe(self) -> dict[str, Any]:
        """The served model as ``/v1/models`` lists it: version, format, aliases, signature, batching, gate."""
        b = self.backend
        info = self.version_info
        out: dict[str, Any] = {"name": self.name, "ref": self.ref, "ready": b is not None}
        if b is not None:
            out.update(version=b.number, format=b.format, inline=b.inline, signature=b.signature.to_dict(),
                       aliases=list(info.aliases) if info is not None and info.version == b.number else list(b.version.aliases))
            if b.graph is not None:
                out["graph"] = b.graph.describe()
        batcher = self.batcher
        out.update(max_batch=batcher.max_batch, max_wait_ms=batcher.max_wait * 1000, gate=batcher.gate is not None)
        return out

    def model_info(self, name: str) -> bytes:
        if name != self.name:
            raise Refused(404, "not_found", f"This server serves the model {self.name!r}, not {name!r}")
        if self.backend is None:
            raise Refused(503, "not_ready", f"{self.ref} is loading")
        return orjson.dumps(self.describe())

    # -- predict ----------------------------------------------------------------------

    def predict(self, req: Request, conn: Connection, name: str) -> None:
        """``POST /v1/models/{name}/predict``: parse and validate the rows, queue them; the batch answers."""
        backend = self.backend
        if name != self.name:
            raise Refused(404, "not_found", f"This server serves the model {self.name!r}, not {name!r}: POST /v1/models/{self.name}/predict")
        if backend is None:
            raise Refused(503, "not_ready", f"{self.ref} is still loading; try again shortly")
        if not self.batcher.admit():  # before parsing: a refusal must cost far less than an answer
            self.respond(conn, 503, self._overloaded, headers=RETRY)
            return
        if backend.graph is not None:  # a graph model: its own body and path (loopml.serve.graphs)
            self.predict_graph(req, conn, backend)
            return
        ctype = req.headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        include = False
        if ctype == JSON:
            body = json_body(req)
            if type(body) is not dict or "inputs" not in body:
                raise Refused(422, "invalid_request",
                              'The body should be a JSON object with "inputs": one row or a list of rows, '
                              'e.g. {"inputs": [[0.1, 0.2, ...]]}, or records by column name, '
                              'e.g. {"inputs": {"age": 41, "income": 52000.0}}' + ("" if type(body) is dict else f"; got {type(body).__name__}"))
            if len(body) > 1:
                extra = set(body) - {"inputs", "include_prediction"}
                if extra:
                    raise Refused(422, "invalid_request", f"Unknown fields {sorted(extra)}; expected inputs and optionally include_prediction")
                include = body.get("include_prediction", False)
                if type(include) is not bool:
                    raise Refused(422, "invalid_request", f"include_prediction should be true or false; got {include!r}")
            raw = body["inputs"]
        elif ctype == NPY:
            raw = npy_body(req)
            include = "include_prediction=true" in req.query
        else:
            raise Refused(415, "unsupported_media_type",
                          f"POST {req.path} should send Content-Type: application/json or application/x-npy; got {ctype.decode('latin-1') or 'none'!r}")
        sig = backend.signature
        try:
            x, single = sig.parse(raw)  # rows, or records by column name (see Signature.validate)
        except ValueError as exc:
            raise Refused(422, "invalid_input", str(exc)) from None
        except (TypeError, OverflowError) as exc:
            raise Refused(422, "invalid_input", f"input {sig.input.name!r} should be numbers in shape {sig.input.shape}: {exc}") from None
        self._counter += 1
        request_id = self.prefix + format(self._counter, "x")
        job = Job(backend, x, req.t0,
                  lambda out, scores: self._answer(conn, req, backend, request_id, x, single, include, out, scores),
                  lambda exc: self._failed(conn, backend, exc))
        if not self.batcher.submit(job):
            raise Refused(503, "overloaded", f"The server is at capacity ({self.batcher.max_queue} requests queued); retry after 1 s")

    def predict_graph(self, req: Request, conn: Connection, backend: "Backend") -> None:
        """A graph version's predict: node ids of its stored graph (answered from the cache at once), or a graph in
        the body (run in the graph worker thread); one result per node (:mod:`~loopml.serve.graphs`)."""
        ctype = req.headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if ctype != JSON:
            raise Refused(415, "unsupported_media_type",
                          f"{self.name} is a graph model: POST {req.path} should send Content-Type: application/json "
                          f"with x and edge_index, or nodes; got {ctype.decode('latin-1') or 'none'!r}")
        serving = backend.graph
        try:
            x, edge_index, rows, ids = serving.parse(json_body(req))
        except ArgumentError as exc:
            raise Refused(422, "invalid_input", str(exc)) from None
        self._counter += 1
        request_id = self.prefix + format(self._counter, "x")
        if x is None:  # transductive: the stored graph's answers, computed when the version loaded
            self._graph_answer(conn, req, backend, request_id, ids, serving.scores[rows], serving.x[rows])
            return
        if serving.pending >= self.batcher.max_queue:
            raise Refused(503, "overloaded", f"The server is at capacity ({serving.pending} graphs queued); retry after 1 s",
                          headers=RETRY)
        serving.pending += 1
        fut = asyncio.get_running_loop().run_in_executor(serving.pool, serving.run, x, edge_index)

        def done(f: "asyncio.Future[np.ndarray]") -> None:
            serving.pending -= 1
            if f.cancelled():  # the server is stopping
                return
            exc = f.exception()
            if exc is not None:
                self._failed(conn, backend, exc)
                return
            try:
                out = f.result()
                picked = (out, x) if rows is None else (out[rows], x[rows])
                self._graph_answer(conn, req, backend, request_id, ids, *picked)
            except Exception as err:  # a bug: answered 500 and logged
                self.fail(conn, req, err)

        fut.add_done_callback(done)

    def _graph_answer(self, conn: Connection, req: Request, backend: "Backend", request_id: str, ids: list[Any],
                      out: np.ndarray, features: np.ndarray) -> None:
        """Answer a graph request, one result per node, and log it as rows of the nodes' features (what drift reads)."""
        names = backend.class_names
        if names is not None:
            results = [{"node": node, "status": "ok", "prediction": names[int(row.argmax())], "probabilities": row}
                       for node, row in zip(ids, out)]
        else:
            results = [{"node": node, "status": "ok", "prediction": row} for node, row in zip(ids, out)]
        body = orjson.dumps({"request_id": request_id, "model": backend.name, "version": backend.number, "results": results},
                            option=_OPTS)
        latency = time.perf_counter() - req.t0
        self.metrics.request(200, latency)
        conn.respond(200, body)
        self._log(backend, request_id, np.ascontiguousarray(features), out, None, 0, latency, body)

    def _answer(self, conn: Connection, req: Request, backend: "Backend", request_id: str, x: np.ndarray, single: bool,
                include: bool, out: np.ndarray, scores: np.ndarray | None) -> None:
        results, abstained = self._rows(backend, x, include, out, scores)
        head = {"request_id": request_id, "model": backend.name, "version": backend.number}
        if single:
            head.update(results[0])
            doc = head
        else:
            head["results"] = results
            doc = head
        body = orjson.dumps(doc, option=_OPTS)
        latency = time.perf_counter() - req.t0
        self.metrics.request(200, latency)
        conn.respond(200, body)
        self._log(backend, request_id, x, out, scores, abstained, latency, body)

    def _log(self, backend: "Backend", request_id: str, x: np.ndarray, out: np.ndarray, scores: np.ndarray | None,
             abstained: int, latency: float, body: bytes) -> None:
        if abstained:
            self.metrics.abstentions += abstained
        keep = self.log_inputs >= 1.0 or (self.log_inputs > 0.0 and random.random() < self.log_inputs)
        top = None if scores is None else float(scores.max())
        self.requestlog.add((request_id, backend.name, backend.number, time.time(), "abstain" if abstained else "ok", len(out),
                             latency * 1000.0, top, backend.npy_bytes(x) if keep else None, body.decode()))

    def _rows(self, backend: "Backend", x: np.ndarray, include: bool, out: np.ndarray,
              scores: np.ndarray | None) -> tuple[list[dict[str, Any]], int]:
        """Each row's answer (status, prediction, probabilities, OOD score) and how many abstained."""
        gate = self.batcher.gate
        threshold = gate.threshold if gate is not None and scores is not None else None
        names = backend.class_names
        results = []
        abstained = 0
        for i in range(len(out)):
            row = out[i]
            item: dict[str, Any] = {"status": "ok"}
            if names is not None:
                item["prediction"] = names[int(row.argmax())]
                item["probabilities"] = row
            else:
                item["prediction"] = row
            if threshold is not None:
                s = float(scores[i])  # type: ignore[index]
                item["ood_score"] = s
                if s > threshold:
                    abstained += 1
                    item["status"] = "abstain"
                    item["reason"] = f"the input looks out of distribution: OOD score {s:.4g} is above the threshold {threshold:.4g}"
                    explain = getattr(gate, "explain", None)
                    if explain is not None:  # a stored gate names the detector that fired (abstaining rows only)
                        try:
                            item["reason"] += f" ({explain(x[i : i + 1])[0]})"
                        except Exception:  # the explanation is a courtesy; the answer stands without it
                            pass
                    if not include:
                        item["prediction"] = None
                        item.pop("probabilities", None)
            results.append(item)
        return results, abstained

    def _failed(self, conn: Connection, backend: "Backend", exc: BaseException) -> None:
        log.error("loopml serve: %s failed on a batch: %s: %s", backend.version.ref, type(exc).__name__, exc)
        self.respond(conn, 500, error_body(500, "internal_error", f"The model failed on this batch ({type(exc).__name__}); the server log has the details"))

    # -- explanations ------------------------------------------------------------------

    def _explanations(self) -> Explanations:
        if self.explanations is None:
            raise Refused(404, "not_found", "This server does not explain its predictions")
        return self.explanations

    def explain(self, req: Request, conn: Connection, name: str) -> None:
        """``POST /v1/models/{name}/explain``: the predict body plus ``method`` and its options; answers the prediction
        (through the batcher, like predict, and logged like it) and the attributions (:mod:`~loopml.serve.explaining`)."""
        ex = self._explanations()
        backend = self.backend
        if name != self.name:
            raise Refused(404, "not_found", f"This server serves the model {self.name!r}, not {name!r}: POST /v1/models/{self.name}/explain")
        if backend is None:
            raise Refused(503, "not_ready", f"{self.ref} is still loading; try again shortly")
        if backend.graph is not None:
            raise Refused(422, "cannot_explain", f"{backend.version.ref} is a graph model; the explain routes explain models "
                                                 "of one input, not node predictions")
        if not self.batcher.admit():
            self.respond(conn, 503, self._overloaded, headers=RETRY)
            return
        ctype = req.headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        sig = backend.signature
        try:
            if ctype == JSON:
                body = json_body(req)
                if type(body) is not dict or "inputs" not in body:
                    raise Refused(422, "invalid_request",
                                  'The body should be a JSON object with "inputs" (as for predict) and "method", e.g. '
                                  '{"inputs": [[0.1, 0.2, ...]], "method": "integrated_gradients", "steps": 50}')
                extra = set(body) - set(EXPLAIN_FIELDS)
                if extra:
                    raise Refused(422, "invalid_request", f"Unknown fields {sorted(extra)}; expected {', '.join(EXPLAIN_FIELDS)}")
                include = body.get("include_prediction", False)
                opts = json_options(body)
                raw = body["inputs"]
            elif ctype == NPY:
                raw = npy_body(req)
                opts = query_options(req.query, extra=("include_prediction",), class_names=sig.class_names)
                include = opts.pop("include_prediction", "false")
                include = {"true": True, "false": False}.get(include, include)
            else:
                raise Refused(415, "unsupported_media_type",
                              f"POST {req.path} should send Content-Type: application/json or application/x-npy; got {ctype.decode('latin-1') or 'none'!r}")
            if type(include) is not bool:
                raise Refused(422, "invalid_request", f"include_prediction should be true or false; got {include!r}")
            try:
                x, single = sig.parse(raw)
            except ValueError as exc:
                raise Refused(422, "invalid_input", str(exc)) from None
            except (TypeError, OverflowError) as exc:
                raise Refused(422, "invalid_input", f"input {sig.input.name!r} should be numbers in shape {sig.input.shape}: {exc}") from None
            method, kwargs, cost = check_request(opts, tuple(x.shape), backend.version, ex.budget, sig.feature_names)
        except ArgumentError as exc:
            raise Refused(422, "invalid_request", str(exc)) from None
        cheap = ex.inline(method, cost)
        if not cheap and not ex.reserve():  # before the prediction runs: a refusal costs nothing
            raise Refused(503, "overloaded", f"{ex.max_pending} explanations are queued or running; retry later",
                          headers=RETRY)
        self._counter += 1
        request_id = self.prefix + format(self._counter, "x")
        budget = ex.budget

        def work(explainer: Explainer) -> Explanation:
            return explainer.explain(x, budget=budget, **kwargs)

        def predicted(out: np.ndarray, scores: np.ndarray | None) -> None:
            try:
                results, abstained = self._rows(backend, x, include, out, scores)
                latency = time.perf_counter() - req.t0
                head = {"request_id": request_id, "model": backend.name, "version": backend.number}
                logged = orjson.dumps({**head, **results[0]} if single else {**head, "results": results}, option=_OPTS)
                self._log(backend, request_id, x, out, scores, abstained, latency, logged)
            except Exception as exc:  # a bug: answered 500 (logged), and the place in the queue given back
                if not cheap:
                    ex.release()
                self.fail(conn, req, exc)
                return
            self._explain_now(conn, req, backend.version.ref, work, head, results, single, cheap=cheap, reserved=not cheap)

        def failed(exc: BaseException) -> None:
            if not cheap:
                ex.release()
            self._failed(conn, backend, exc)

        if not self.batcher.submit(Job(backend, x, req.t0, predicted, failed)):
            if not cheap:
                ex.release()
            raise Refused(503, "overloaded", f"The server is at capacity ({self.batcher.max_queue} requests queued); retry after 1 s")

    def _explain_now(self, conn: Connection, req: Request, ref: str, work: "Explain", head: dict[str, Any],
                     items: list[dict[str, Any]] | None, single: bool, *, cheap: bool, reserved: bool) -> None:
        """Answer with ``work``'s explanation: at once on the loop for a cheap method whose explainer is loaded and
        free, else from the worker thread (in the place ``reserved`` for it, or one taken now)."""
        ex = self._explanations()
        if not reserved:
            explainer = ex.ready(ref) if cheap else None
            if explainer is not None:  # a cheap method, its model loaded and idle: one forward and backward pass here
                try:
                    ex.torch_threads()
                    body = answer_body(head, items, work(explainer), single)
                except Exception as exc:
                    self._explain_failed(conn, req, exc)
                    return
                self.respond(conn, 200, body)
                return
            if not ex.reserve():
                self.respond(conn, 503, error_body(503, "overloaded", f"{ex.max_pending} explanations are queued or running; retry later"),
                             headers=RETRY)
                return
        fut = ex.submit(ref, lambda explainer: answer_body(head, items, work(explainer), single))

        def done(f: "asyncio.Future[bytes]") -> None:
            if f.cancelled():  # the server is stopping
                return
            exc = f.exception()
            if exc is None:
                self.respond(conn, 200, f.result())
            else:
                self._explain_failed(conn, req, exc)

        fut.add_done_callback(done)

    def _explain_failed(self, conn: Connection, req: Request, exc: BaseException) -> None:
        # a bad option the explainer found (a baseline's shape, a target): 422 as for the others; ExplainError is a 422
        if isinstance(exc, ArgumentError):
            exc = Refused(422, "invalid_request", str(exc))
        elif isinstance(exc, ModuleNotFoundError):  # torch or Captum not installed here: the server cannot explain at all
            exc = Refused(501, "explain_unavailable", f"This server cannot explain: {exc}")
        elif isinstance(exc, StoreError) and not isinstance(exc, NotFound):  # reading the registry or the request log
            status, code = error_status(exc)
            exc = Refused(status, code, "The store could not be read; retry later", headers=RETRY if status == 503 else ())
        self.fail(conn, req, exc)

    def logged_explanation(self, req: Request, conn: Connection, request_id: str) -> None:
        """``GET /v1/predictions/{request_id}/explanation?method=...&row=...``: a logged request's attributions, by the
        version that answered it (read from the store in a thread, explained in the worker)."""
        ex = self._explanations()
        if not 0 < len(request_id) <= 64:
            raise Refused(404, "not_found", f"No prediction has request id {request_id!r}")
        class_names = self.backend.signature.class_names if self.backend is not None else None
        try:
            opts = query_options(req.query, extra=("row",), class_names=class_names)
        except ArgumentError as exc:
            raise Refused(422, "invalid_request", str(exc)) from None
        row = opts.pop("row", None)
        if row is not None and row < 0:
            raise Refused(422, "invalid_request", f"row should be a row of the request's batch (0, 1, ...); got {row}")
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, self._read_logged, request_id)

        def read(f: "asyncio.Future[tuple[dict[str, Any], np.ndarray, ModelVersion]]") -> None:
            if f.cancelled():  # the server is stopping
                return
            try:
                record, logged, version = f.result()
                total = len(logged)
                if row is not None and row >= total:
                    raise Refused(422, "invalid_request", f"row should be a row of the request's batch, 0 to {total - 1}; got {row}")
                rows = list(range(total)) if row is None else [row]
                x = logged[rows]
                sig = Signature.from_dict(version.signature)
                if sig.is_graph:
                    raise Refused(422, "cannot_explain", f"{version.ref} is a graph model; its logged requests are not explained")
                try:
                    method, kwargs, cost = check_request(opts, tuple(x.shape), version, ex.budget, sig.feature_names)
                except ArgumentError as exc:
                    raise Refused(422, "invalid_request", str(exc)) from None
            except Exception as exc:
                self._explain_failed(conn, req, exc)
                return
            head = {"request_id": request_id, "model": version.name, "version": version.version}
            from ..store.predictions import answered_rows  # the store's module (SQLAlchemy) only once a log is read

            items = answered_rows(record.get("outputs"), rows, total)
            budget = ex.budget

            def work(explainer: Explainer) -> Explanation:
                return explainer.explain(x, budget=budget, **kwargs)

            self._explain_now(conn, req, version.ref, work, head, items, row is not None, cheap=ex.inline(method, cost), reserved=False)

        fut.add_done_callback(read)

    def _read_logged(self, request_id: str) -> tuple[dict[str, Any], np.ndarray, "ModelVersion"]:
        """The logged record, its inputs and the version that answered it (in a thread: the store may be slow)."""
        from ..store.predictions import inputs_array

        if request_id.startswith(self.prefix) and not self.predictions.exists(request_id):
            self.requestlog.flush(timeout=10.0)  # answered moments ago: its record may still be buffered
        record = self.predictions.get(request_id)
        if record["model"] != self.name:
            raise Refused(404, "not_found", f"Request {request_id!r} was answered by the model {record['model']!r}; "
                                            f"this server explains {self.name!r}")
        if record["inputs"] is None:
            raise Refused(409, "no_inputs", f"The inputs of request {request_id!r} were not logged (the server keeps a "
                                            "--log-inputs fraction of them), so it cannot be explained; send them to "
                                            f"POST /v1/models/{self.name}/explain instead")
        x = inputs_array(bytes(record["inputs"]))
        registry = self._explanations().registry
        version = registry.get_version(self.name, int(record["version"]))
        return record, x, version

    # -- feedback ------------------------------------------------------------------------

    def feedback(self, req: Request, conn: Connection) -> None:
        """``POST /v1/feedback``: store the true label of a past prediction (in a thread: the store may be slow)."""
        ctype = req.headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if ctype != JSON:
            raise Refused(415, "unsupported_media_type", f"POST /v1/feedback should send Content-Type: application/json; got {ctype.decode('latin-1') or 'none'!r}")
        body = json_body(req)
        if type(body) is not dict or not {"request_id", "label"} <= set(body) or set(body) - FEEDBACK_FIELDS:
            raise Refused(422, "invalid_request", 'The body should be {"request_id": "...", "label": ...} with exactly those fields, '
                          'and optionally "row" (the row of a batch), "annotator", "kind" ("label", "skip" or "none") and "seconds"')
        request_id, label = body["request_id"], body["label"]
        if not isinstance(request_id, str) or not 0 < len(request_id) <= 64:
            raise Refused(422, "invalid_request", f"request_id should be the id a prediction answered with (a string); got {request_id!r}")
        kind = body.get("kind", "label")
        if kind not in ("label", "skip", "none"):
            raise Refused(422, "invalid_request", f'kind should be "label", "skip" or "none" (none of these classes); got {kind!r}')
        if label is None and kind == "label":
            raise Refused(422, "invalid_request", "label should be the true label (a class name, number or list), not null")
        row = body.get("row")
        if row is not None and (type(row) is not int or row < 0):
            raise Refused(422, "invalid_request", f"row should be the row of the request's batch (0, 1, ...) or null; got {row!r}")
        annotator = body.get("annotator")
        if annotator is not None and (not isinstance(annotator, str) or not annotator.strip() or len(annotator) > 250):
            raise Refused(422, "invalid_request", f"annotator should be a name of 1 to 250 characters or null; got {annotator!r}")
        seconds = body.get("seconds")
        if seconds is not None and (type(seconds) not in (int, float) or not math.isfinite(seconds) or seconds < 0):
            raise Refused(422, "invalid_request", f"seconds should be the time taken, a number >= 0, or null; got {seconds!r}")
        extra = {"row": row, "annotator": annotator, "kind": kind, "seconds": seconds}
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, self._store_feedback, request_id, label, extra)

        def done(f: "asyncio.Future[dict[str, Any]]") -> None:
            exc = f.exception()
            if exc is None:
                self.respond(conn, 200, orjson.dumps(f.result()))
            else:
                self.fail(conn, req, exc)

        fut.add_done_callback(done)

    def _store_feedback(self, request_id: str, label: Any, extra: dict[str, Any]) -> dict[str, Any]:
        if request_id.startswith(self.prefix) and not self.predictions.exists(request_id):
            self.requestlog.flush(timeout=10.0)  # answered moments ago: its record may still be buffered
        return self.predictions.add_feedback(request_id, label, source="http", **extra)


def _logged_explanation(path: str) -> bool:
    """``/v1/predictions/{request_id}/explanation``."""
    return path.startswith("/v1/predictions/") and path.endswith("/explanation") and "/" not in path[16:-12] and len(path) > 28
