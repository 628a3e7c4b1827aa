"""The model server: routes, validation, answers, and the loop that runs them.

``ModelServer`` serves one registered model over HTTP (see docs/serving.md)::

    server = ModelServer("digits@production", store=TrackingStore(...), port=8080)
    server.start()              # listens at once; loads and warms the model in the background
    server.wait_ready()
    ...
    server.stop()

or ``server.run()`` in the main thread (``loopml serve``). The request path
is written for speed: a prediction is parsed with orjson, checked with
:meth:`~loopml.models.signature.Signature.validate` (NumPy), queued in the
:class:`~loopml.serve.batcher.Batcher` and answered from the batch output;
the request log and metrics cost a deque append and a few integer updates.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import io
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from ..access import HostAllowList, bearer_ok
from ..errors import LoopMLError, NotFound, StoreError
from .backends import BACKENDS, Backend, load_backend
from .batcher import Batcher, Gate, Job
from .http import JSON, Connection, Limits, Request
from .metrics import Metrics
from .openapi import DOCS_HTML, document
from .requestlog import CHUNK, RequestLog

if TYPE_CHECKING:
    from ..store.registry import ModelVersion
    from ..store.tracking import TrackingStore

__all__ = ["ModelServer"]

log = logging.getLogger("loopml.serve")

NPY = b"application/x-npy"
TEXT = b"text/plain; version=0.0.4; charset=utf-8"
_OPTS = orjson.OPT_SERIALIZE_NUMPY
_RETRY = ((b"retry-after", b"1"),)


def _error(status: int, code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


class _Bad(Exception):
    """A request the server refuses: status, code and message for the one JSON error shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ModelServer:
    """An HTTP server for one registered model (see the module docstring and docs/serving.md).

    ``ref``: ``NAME@ALIAS`` (followed: a moved alias is hot-swapped),
    ``NAME`` (the newest version, followed) or ``NAME/VER`` (fixed).
    ``store``: a TrackingStore or database URI (default: the configured store).
    ``gate``: an OOD gate with ``score(batch) -> scores`` and ``threshold``;
    rows scoring above it are answered ``{"status": "abstain", ...}``.
    ``use_stored_gate``: without ``gate``, use the gate stored with each version
    served (``loopml monitor fit-ood``), reloaded with it on a hot swap.
    ``log_inputs``: the fraction of requests whose inputs are kept in the request log.
    ``log_buffer``: records the request log holds while its writer catches up;
    past it records are dropped and counted (the log never slows an answer).
    ``sock``: an already bound listening socket (``--workers`` shares one).
    ``header_timeout``: seconds a client has to send a request's line and headers (from its
    first byte, or from connecting); a slower one gets 408 and is closed (slowloris).
    """

    def __init__(
        self,
        ref: str,
        *,
        store: "TrackingStore | str | None" = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        backend: str = "auto",
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        max_queue: int = 1024,
        max_body: int = 16 * 1024 * 1024,
        auth_token: str | None = None,
        allowed_hosts: Sequence[str] = (),
        gate: Gate | None = None,
        use_stored_gate: bool = True,
        log_inputs: float = 1.0,
        log_buffer: int = 8192,
        poll_interval: float = 5.0,
        inline: bool | None = None,
        threads: int = 1,
        sock: socket.socket | None = None,
        header_timeout: float = 10.0,
    ) -> None:
        from ..store.registry import parse_ref

        self.name, _ = parse_ref(ref)
        if backend not in BACKENDS:
            raise ValueError(f"Argument backend should be one of {', '.join(BACKENDS)}; got {backend!r}")
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"Argument max_batch should be an int >= 1; got {max_batch!r}")
        if not 0.0 <= float(log_inputs) <= 1.0:
            raise ValueError(f"Argument log_inputs should be a fraction between 0 and 1; got {log_inputs!r}")
        if not isinstance(log_buffer, int) or log_buffer < 1:
            raise ValueError(f"Argument log_buffer should be an int >= 1 (records); got {log_buffer!r}")
        if auth_token is not None and (not isinstance(auth_token, str) or not auth_token.strip()):
            raise ValueError("Argument auth_token should be a non-empty string, or None for no token")
        if isinstance(header_timeout, bool) or not isinstance(header_timeout, (int, float)) or not header_timeout > 0:
            raise ValueError(f"Argument header_timeout should be a number of seconds > 0, like 10.0; got {header_timeout!r}")
        if gate is not None:
            _check_gate(gate)
        self.ref = ref
        self.host, self.port = host, port
        self.backend_name = backend
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000.0, max_queue
        self._overloaded = _error(503, "overloaded", f"The server is at capacity ({max_queue} requests queued); retry after 1 s")
        self.limits = Limits(max_body=max_body, header_timeout=float(header_timeout))
        self.gate = gate
        self.use_stored_gate = use_stored_gate
        self.log_inputs = float(log_inputs)
        self.log_buffer = log_buffer
        self.poll_interval = poll_interval
        self.inline = inline
        self.threads = threads
        self._sock = sock
        self._token = auth_token.encode() if auth_token else None
        self._hosts = HostAllowList(allowed_hosts)
        self._host_cache: dict[bytes, bool] = {}
        self._own_store = not hasattr(store, "engine")
        self._store_arg = store
        self.store: "TrackingStore | None" = None
        self.metrics = Metrics(model=self.name)
        self.backend: Backend | None = None
        self.version_info: "ModelVersion | None" = None
        self.load_error: str | None = None
        self.url = ""
        self._prefix = uuid.uuid4().hex[:12] + "-"
        self._counter = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        self._ready = threading.Event()
        self._own_process = False  # run() (the CLI): this process is the server, not a host application
        self._stopped: asyncio.Event | None = None
        self._start_error: BaseException | None = None
        self._connections: set[Connection] = set()

    # -- lifecycle --------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> "ModelServer":
        """Serve from a background thread; returns once the server listens (the model loads after)."""
        self._thread = threading.Thread(target=self._thread_main, name="loopml-serve", daemon=True)
        self._thread.start()
        if not self._listening.wait(timeout):
            raise LoopMLError(f"The model server did not start within {timeout} s")
        if self._start_error is not None:
            raise self._start_error
        return self

    def wait_ready(self, timeout: float = 120.0) -> "ModelServer":
        """Block until the model is loaded and warmed up; raises with the load error otherwise."""
        if not self._ready.wait(timeout):
            raise LoopMLError(f"{self.ref} was not ready within {timeout} s" + (f": {self.load_error}" if self.load_error else ""))
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop listening, answer nothing more, write the request log and join the thread."""
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopped.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self, *, announce: bool = True) -> None:
        """Serve in this thread until SIGINT/SIGTERM (the CLI)."""
        self._announce = announce
        self._own_process = True
        self._run_loop(install_signals=True)

    def _thread_main(self) -> None:
        self._announce = False
        self._run_loop(install_signals=False)

    def _run_loop(self, *, install_signals: bool) -> None:
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ModuleNotFoundError:  # works without it, ~20% slower
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._main(install_signals))
        except BaseException as exc:
            self._start_error = exc
            self._listening.set()
            if install_signals:
                raise
        finally:
            loop.close()

    async def _main(self, install_signals: bool) -> None:
        from ..models.registry import registry_of
        from ..store.predictions import PredictionLog
        from .swap import Follower

        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._stopped.set)
        self.store = self._open_store()
        registry = registry_of(self.store)
        self.batcher = Batcher(loop, max_batch=self.max_batch, max_wait=self.max_wait, max_queue=self.max_queue,
                               on_batch=self.metrics.batch)
        self.batcher.gate = self.gate
        self.requestlog = RequestLog(functools.partial(PredictionLog(self.store).insert_rows, chunk=CHUNK), max_buffer=self.log_buffer)
        self.predictions = PredictionLog(self.store)
        Connection.registry = None

        def factory() -> Connection:
            conn = Connection(self._handle, self.limits, _error)
            self._connections.add(conn)
            return conn

        if self._sock is not None:
            server = await loop.create_server(factory, sock=self._sock, backlog=2048)
        else:
            server = await loop.create_server(factory, self.host, self.port, backlog=2048, reuse_address=True)
        port = server.sockets[0].getsockname()[1]
        host = self.host if ":" not in self.host else f"[{self.host}]"
        self.url = f"http://{host}:{port}"
        self.port = port
        if self._announce:
            print(f"loopml serve listening on {self.url} (loading {self.ref})", flush=True)
        self._listening.set()

        def install(backend: Backend) -> None:
            loop.call_soon_threadsafe(self._install, backend)

        def on_version(version: "ModelVersion") -> None:
            self.version_info = version

        def on_error(exc: BaseException) -> None:
            self.load_error = f"{type(exc).__name__}: {exc}"

        self.follower = Follower(
            registry,
            self.ref,
            load=lambda v: self._load(registry, v),
            install=install,
            interval=self.poll_interval,
            on_version=on_version,
            on_error=on_error,
        )
        self.follower.start()
        sweeper = loop.create_task(self._sweep())
        try:
            await self._stopped.wait()
        finally:
            sweeper.cancel()
            server.close()
            for conn in list(self._connections):
                if conn.transport is not None:
                    conn.transport.close()
            await asyncio.sleep(0)  # let the transports close
            self.follower._stop.set()
            self.follower._poke.set()
            self.batcher.close()
            await loop.run_in_executor(None, self._close_store)

    def _close_store(self) -> None:
        self.follower.stop()
        self.requestlog.close(timeout=10.0)
        if self._own_store and self.store is not None:
            self.store.close()

    def _open_store(self) -> "TrackingStore":
        from .. import config
        from ..store.tracking import TrackingStore

        store = self._store_arg
        if store is not None and not isinstance(store, str):
            return store
        settings = config.settings()
        uri = config.check_tracking_uri(store) if store else settings.tracking_uri
        if uri.startswith(("http://", "https://")):
            raise LoopMLError(
                f"loopml serve reads the registry and writes the request log in a database, not through a server: "
                f"got {uri!r}; use --store sqlite:///path/to/loopml.db or postgresql+psycopg://..."
            )
        return TrackingStore(uri, artifact_root=settings.artifact_root)

    def _load(self, registry: Any, version: "ModelVersion") -> Backend:
        backend = load_backend(registry, version, backend=self.backend_name, max_batch=self.max_batch,
                               threads=self.threads, inline=self.inline)
        if self.gate is None and self.use_stored_gate and "ood_gate" in version.files:
            from ..monitor.ood import load_version_gate

            backend.gate = load_version_gate(registry, version, threads=self.threads)
            _check_gate(backend.gate)
            if self.backend_name in ("auto", "onnx"):  # a runtime named by --backend is the one that runs
                backend.joint = backend.gate.joint
            example = np.ascontiguousarray(backend.signature.validate(_example(registry, version)))
            backend.gate.score(example)  # warm up
            if backend.joint is not None:
                backend.joint(example)
        return backend

    def _install(self, backend: Backend) -> None:
        if self.backend is not None:
            self.metrics.swaps += 1
        # swapped together with the model it was fitted on
        self.batcher.gate = self.gate if self.gate is not None else backend.gate
        swapped = self.backend is not None
        self.backend = backend
        self.load_error = None
        if self._own_process:
            _freeze_heap(swapped)
        if self._announce:
            mode = "in the event loop" if backend.inline else "in a worker thread"
            print(f"loopml serve: {backend.version.ref} ready ({backend.format}, {mode})", flush=True)
        self._ready.set()

    async def _sweep(self) -> None:
        # a quarter of the header timeout, so a stalled client is closed within 1.25x of it (at most every 5 s)
        every = min(5.0, self.limits.header_timeout / 4)
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for conn in list(self._connections):
                if conn.closing:
                    self._connections.discard(conn)
                else:
                    conn.close_if_idle(now)

    # -- routing ------------------------------------------------------------------

    def _host_ok(self, value: bytes | None) -> bool:
        if self._hosts.any:
            return True
        if value is None:
            return False
        ok = self._host_cache.get(value)
        if ok is None:
            ok = self._hosts.allows(value.decode("latin-1"))
            if len(self._host_cache) < 1024:
                self._host_cache[value] = ok
        return ok

    def _handle(self, req: Request, conn: Connection) -> None:
        try:
            headers = req.headers
            if not self._host_ok(headers.get(b"host")):
                host = (headers.get(b"host") or b"").decode("latin-1")
                raise _Bad(400, "invalid_host", f"This server does not answer to Host {host!r}; start it with --allowed-host {host or 'NAME'}")
            if self._token is not None:
                if not bearer_ok(headers.get(b"authorization"), self._token):
                    self._respond(conn, 401, _error(401, "unauthorized", "This model server needs a token: send 'Authorization: Bearer <token>'"),
                                  headers=((b"www-authenticate", b"Bearer"),))
                    return
            if req.too_large:
                raise _Bad(413, "payload_too_large", f"A request body should be at most {self.limits.max_body} bytes; send smaller batches")
            path = req.path
            if req.method == "POST":
                if path.startswith("/v1/models/") and path.endswith("/predict"):
                    self._predict(req, conn, path[11:-8])
                    return
                if path == "/v1/feedback":
                    self._feedback(req, conn)
                    return
            elif req.method == "GET":
                route = self._gets.get(path)
                if route is not None:
                    status, body, ctype = route(self)
                    self._respond(conn, status, body, ctype)
                    return
                if path.startswith("/v1/models/") and "/" not in path[11:]:
                    self._respond(conn, 200, self._model_info(path[11:]))
                    return
            self._not_routed(req)
        except _Bad as bad:
            headers_out = _RETRY if bad.status == 503 else ()
            self._respond(conn, bad.status, _error(bad.status, bad.code, str(bad)), headers=headers_out)
        except Exception:  # a bug: the traceback goes to the log, the client gets the one error shape
            log.exception("loopml serve: internal error on %s %s", req.method, req.path)
            self._respond(conn, 500, _error(500, "internal_error", "Internal server error; the server log has the details"))

    def _respond(self, conn: Connection, status: int, body: bytes, ctype: bytes = JSON,
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.metrics.request(status)
        conn.respond(status, body, ctype, headers)

    def _not_routed(self, req: Request) -> None:
        path = req.path
        known_post = (path.startswith("/v1/models/") and path.endswith("/predict")) or path == "/v1/feedback"
        known_get = path in self._gets or (path.startswith("/v1/models/") and "/" not in path[11:])
        if known_post or known_get:
            allowed = "POST" if known_post else "GET"
            raise _Bad(405, "method_not_allowed", f"Method {req.method} is not allowed on {path}; use {allowed}")
        raise _Bad(404, "not_found", f"No route {req.method} {path}; the API is described at /docs")

    # -- GET routes -----------------------------------------------------------------

    def _health(self) -> tuple[int, bytes, bytes]:
        return 200, b'{"status":"ok"}', JSON

    def _ready_route(self) -> tuple[int, bytes, bytes]:
        b = self.backend
        if b is None:
            msg = f"{self.ref} is loading" + (f"; the last attempt failed: {self.load_error}" if self.load_error else "")
            raise _Bad(503, "not_ready", msg)
        return 200, orjson.dumps({"status": "ready", "model": b.name, "version": b.number, "format": b.format}), JSON

    def _metrics_route(self) -> tuple[int, bytes, bytes]:
        b = self.backend
        rl = self.requestlog
        text = self.metrics.render(queue_depth=self.batcher.depth, version=b.number if b else None,
                                   dropped=rl.dropped, written=rl.written, ready=b is not None)
        return 200, text.encode(), TEXT

    def _models_route(self) -> tuple[int, bytes, bytes]:
        return 200, orjson.dumps({"models": [self._describe()]}), JSON

    def _openapi_route(self) -> tuple[int, bytes, bytes]:
        sig = self.backend.signature if self.backend is not None else None
        shape = sig.input.shape if sig is not None else None
        names = list(sig.feature_names) if sig is not None and sig.feature_names else None
        return 200, orjson.dumps(document(self.name, list(shape) if shape else None, names)), JSON

    def _docs_route(self) -> tuple[int, bytes, bytes]:
        return 200, DOCS_HTML, b"text/html; charset=utf-8"

    _gets = {
        "/health": _health,
        "/ready": _ready_route,
        "/metrics": _metrics_route,
        "/v1/models": _models_route,
        "/openapi.json": _openapi_route,
        "/docs": _docs_route,
    }

    def _describe(self) -> dict[str, Any]:
        b = self.backend
        info = self.version_info
        out: dict[str, Any] = {"name": self.name, "ref": self.ref, "ready": b is not None}
        if b is not None:
            out.update(version=b.number, format=b.format, inline=b.inline, signature=b.signature.to_dict(),
                       aliases=list(info.aliases) if info is not None and info.version == b.number else list(b.version.aliases))
        out.update(max_batch=self.max_batch, max_wait_ms=self.max_wait * 1000, gate=self.batcher.gate is not None if hasattr(self, "batcher") else self.gate is not None)
        return out

    def _model_info(self, name: str) -> bytes:
        if name != self.name:
            raise _Bad(404, "not_found", f"This server serves the model {self.name!r}, not {name!r}")
        if self.backend is None:
            raise _Bad(503, "not_ready", f"{self.ref} is loading")
        return orjson.dumps(self._describe())

    # -- predict ----------------------------------------------------------------------

    def _predict(self, req: Request, conn: Connection, name: str) -> None:
        backend = self.backend
        if name != self.name:
            raise _Bad(404, "not_found", f"This server serves the model {self.name!r}, not {name!r}: POST /v1/models/{self.name}/predict")
        if backend is None:
            raise _Bad(503, "not_ready", f"{self.ref} is still loading; try again shortly")
        if not self.batcher.admit():  # before parsing: a refusal must cost far less than an answer
            self._respond(conn, 503, self._overloaded, headers=_RETRY)
            return
        ctype = req.headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        include = False
        if ctype == JSON:
            try:
                body = orjson.loads(req.body)
            except orjson.JSONDecodeError as exc:
                raise _Bad(400, "invalid_json", f"The request body is not valid JSON: {exc}") from None
            if type(body) is not dict or "inputs" not in body:
                raise _Bad(422, "invalid_request",
                           'The body should be a JSON object with "inputs": one row or a list of rows, '
                           'e.g. {"inputs": [[0.1, 0.2, ...]]}, or records by column name, '
                           'e.g. {"inputs": {"age": 41, "income": 52000.0}}' + ("" if type(body) is dict else f"; got {type(body).__name__}"))
            if len(body) > 1:
                extra = set(body) - {"inputs", "include_prediction"}
                if extra:
                    raise _Bad(422, "invalid_request", f"Unknown fields {sorted(extra)}; expected inputs and optionally include_prediction")
                include = body.get("include_prediction", False)
                if type(include) is not bool:
                    raise _Bad(422, "invalid_request", f"include_prediction should be true or false; got {include!r}")
            raw = body["inputs"]
        elif ctype == NPY:
            try:
                raw = np.load(io.BytesIO(req.body), allow_pickle=False)
            except Exception as exc:  # numpy raises ValueError, OSError, EOFError, ... for a bad file
                raise _Bad(400, "invalid_npy", f"The body is not a .npy array without objects ({type(exc).__name__}: {exc})") from None
            include = "include_prediction=true" in req.query
        else:
            raise _Bad(415, "unsupported_media_type",
                       f"POST {req.path} should send Content-Type: application/json or application/x-npy; got {ctype.decode('latin-1') or 'none'!r}")
        sig = backend.signature
        try:
            x, single = sig.parse(raw)  # rows, or records by column name (see Signature.validate)
        except ValueError as exc:
            raise _Bad(422, "invalid_input", str(exc)) from None
        except (TypeError, OverflowError) as exc:
            raise _Bad(422, "invalid_input", f"input {sig.input.name!r} should be numbers in shape {sig.input.shape}: {exc}") from None
        self._counter += 1
        request_id = self._prefix + format(self._counter, "x")
        job = Job(backend, x, req.t0,
                  lambda out, scores: self._answer(conn, req, backend, request_id, x, single, include, out, scores),
                  lambda exc: self._failed(conn, req, backend, exc))
        if not self.batcher.submit(job):
            raise _Bad(503, "overloaded", f"The server is at capacity ({self.max_queue} requests queued); retry after 1 s")

    def _answer(self, conn: Connection, req: Request, backend: Backend, request_id: str, x: np.ndarray, single: bool,
                include: bool, out: np.ndarray, scores: np.ndarray | None) -> None:
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
        head = {"request_id": request_id, "model": backend.name, "version": backend.number}
        if single:
            head.update(results[0])
            doc = head
        else:
            head["results"] = results
            doc = head
        body = orjson.dumps(doc, option=_OPTS)
        now = time.perf_counter()
        latency = now - req.t0
        self.metrics.request(200, latency)
        if abstained:
            self.metrics.abstentions += abstained
        conn.respond(200, body)
        keep = self.log_inputs >= 1.0 or (self.log_inputs > 0.0 and random.random() < self.log_inputs)
        top = None if scores is None else float(scores.max())
        self.requestlog.add((request_id, backend.name, backend.number, time.time(), "abstain" if abstained else "ok", len(out),
                             latency * 1000.0, top, backend.npy_bytes(x) if keep else None, body.decode()))

    def _failed(self, conn: Connection, req: Request, backend: Backend, exc: BaseException) -> None:
        log.error("loopml serve: %s failed on a batch: %s: %s", backend.version.ref, type(exc).__name__, exc)
        self._respond(conn, 500, _error(500, "internal_error", f"The model failed on this batch ({type(exc).__name__}); the server log has the details"))

    # -- feedback ------------------------------------------------------------------------

    def _feedback(self, req: Request, conn: Connection) -> None:
        ctype = req.headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if ctype != JSON:
            raise _Bad(415, "unsupported_media_type", f"POST /v1/feedback should send Content-Type: application/json; got {ctype.decode('latin-1') or 'none'!r}")
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError as exc:
            raise _Bad(400, "invalid_json", f"The request body is not valid JSON: {exc}") from None
        if type(body) is not dict or set(body) != {"request_id", "label"}:
            raise _Bad(422, "invalid_request", 'The body should be {"request_id": "...", "label": ...} with exactly those fields')
        request_id, label = body["request_id"], body["label"]
        if not isinstance(request_id, str) or not 0 < len(request_id) <= 64:
            raise _Bad(422, "invalid_request", f"request_id should be the id a prediction answered with (a string); got {request_id!r}")
        if label is None:
            raise _Bad(422, "invalid_request", "label should be the true label (a class name, number or list), not null")
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, self._store_feedback, request_id, label)

        def done(f: "asyncio.Future[dict[str, Any]]") -> None:
            exc = f.exception()
            if exc is None:
                self._respond(conn, 200, orjson.dumps(f.result()))
            elif isinstance(exc, NotFound):
                self._respond(conn, 404, _error(404, "not_found", str(exc)))
            elif isinstance(exc, ValueError):
                self._respond(conn, 422, _error(422, "invalid_request", str(exc)))
            elif isinstance(exc, StoreError):
                self._respond(conn, 503, _error(503, "store_unavailable", "The store could not save the label; retry later"), headers=_RETRY)
            else:
                log.error("loopml serve: feedback failed: %s: %s", type(exc).__name__, exc)
                self._respond(conn, 500, _error(500, "internal_error", "Internal server error; the server log has the details"))

        fut.add_done_callback(done)

    def _store_feedback(self, request_id: str, label: Any) -> dict[str, Any]:
        if request_id.startswith(self._prefix) and not self.predictions.exists(request_id):
            self.requestlog.flush(timeout=10.0)  # answered moments ago: its record may still be buffered
        return self.predictions.add_feedback(request_id, label)


def _example(registry: Any, version: "ModelVersion") -> np.ndarray:
    from ..models.registry import EXAMPLE

    return np.asarray(np.load(registry.file_path(version.name, version.version, EXAMPLE), allow_pickle=False))


def _check_gate(gate: Any) -> None:
    score = getattr(gate, "score", None)
    threshold = getattr(gate, "threshold", None)
    if not callable(score) or not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
        raise TypeError(
            "Argument gate should have score(batch) -> one score per row and a float threshold, e.g. "
            "class Gate:\n    threshold = 3.0\n    def score(self, x): return np.abs(x).max(axis=1)"
        )


def _freeze_heap(swapped: bool) -> None:
    """Move every object alive now out of the garbage collector's reach (``gc.freeze``).

    torch, ONNX Runtime, SQLAlchemy and the model leave about a million
    long-lived objects, and each full collection walked them all: 170-210 ms
    with the loop stopped, every few seconds under load (the p99 of an
    overload run with 1,024 connections was those pauses). Frozen, a full
    collection walks only what requests left behind. After a hot swap the
    heap is thawed and collected once (one such pause, so the old version's
    reference cycles are freed), then frozen again.
    """
    if swapped:
        gc.unfreeze()
    gc.collect()
    gc.freeze()


def serve(ref: str, *, workers: int = 1, **kwargs: Any) -> None:
    """Run ``loopml serve``: ``workers`` processes share one listening socket (each loads the model)."""
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"Argument workers should be an int >= 1; got {workers!r}")
    if workers == 1:
        ModelServer(ref, **kwargs).run()
        return
    host, port = kwargs.pop("host", "127.0.0.1"), kwargs.pop("port", 8080)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    children = []
    for i in range(workers):
        pid = os.fork()
        if pid == 0:  # the child: its own loop, model, batcher and request log
            try:
                ModelServer(ref, sock=sock, host=host, port=port, **kwargs).run(announce=i == 0)
            finally:
                os._exit(0)
        children.append(pid)

    def forward(signum: int, _frame: Any) -> None:
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for pid in children:
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
