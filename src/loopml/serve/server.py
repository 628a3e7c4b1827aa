"""The model server: its lifecycle, the loop that runs it, and who may talk to it.

``ModelServer`` serves one registered model over HTTP (see docs/serving.md)::

    server = ModelServer("digits@production", store=TrackingStore(...), port=8080)
    server.start()              # listens at once; loads and warms the model in the background
    server.wait_ready()
    ...
    server.stop()

or ``server.run()`` in the main thread (``loopml serve``; ``serve(ref, workers=N)``
runs N of them, see :mod:`loopml.serve.workers`). This module opens the store, runs
the event loop, follows the registry (:mod:`~loopml.serve.swap`), lets requests in
(the Host and token checks of :mod:`loopml.access`) and hands them to the routes
(:mod:`~loopml.serve.routes`), which answer them.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import signal
import socket
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import config
from ..access import HostAllowList, bearer_ok
from ..errors import ArgumentError, ArgumentTypeError, LoopMLError
from ..explanations import DEFAULT_BUDGET
from ..monitor.ood import load_version_gate
from .backends import BACKENDS, Backend, load_backend
from .batcher import Batcher, Gate
from .explaining import Explanations
from .http import Connection, Limits, Request
from .metrics import Metrics
from .requestlog import CHUNK, RequestLog
from .routes import Refused, Routes, error_body
from .workers import WorkerPool

if TYPE_CHECKING:
    from ..store.predictions import PredictionLog
    from ..store.protocols import Registry
    from ..store.registry import ModelVersion
    from ..store.tracking import TrackingStore
    from .swap import Follower

__all__ = ["ModelServer", "serve"]


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
    ``poll_interval``: seconds between two reads of a followed reference in the store; a move
    made by any process is hot-swapped within about this long (plus the new version's load).
    ``threads``: torch's (and ONNX Runtime's) intra-op threads for the model, and for explanations.
    ``explain_budget``: the most one explanation may cost, evaluations x rows x input size
    (:func:`loopml.explanations.cost`; None: no limit); a request over it is answered 422
    ``over_budget`` before it is queued. ``explain_queue``: explanations queued or running in
    the explanation worker thread; past it 503 with ``Retry-After`` (see :mod:`~loopml.serve.explaining`).
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
        explain_budget: int | None = DEFAULT_BUDGET,
        explain_queue: int = 8,
        allow_pickle: bool = False,
    ) -> None:
        from ..store.registry import parse_ref

        self.name, _ = parse_ref(ref)
        if backend not in BACKENDS:
            raise ArgumentError(f"Argument backend should be one of {', '.join(BACKENDS)}; got {backend!r}")
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ArgumentError(f"Argument max_batch should be an int >= 1; got {max_batch!r}")
        if not 0.0 <= float(log_inputs) <= 1.0:
            raise ArgumentError(f"Argument log_inputs should be a fraction between 0 and 1; got {log_inputs!r}")
        if not isinstance(log_buffer, int) or log_buffer < 1:
            raise ArgumentError(f"Argument log_buffer should be an int >= 1 (records); got {log_buffer!r}")
        if auth_token is not None and (not isinstance(auth_token, str) or not auth_token.strip()):
            raise ArgumentError("Argument auth_token should be a non-empty string, or None for no token")
        if isinstance(header_timeout, bool) or not isinstance(header_timeout, (int, float)) or not header_timeout > 0:
            raise ArgumentError(f"Argument header_timeout should be a number of seconds > 0, like 10.0; got {header_timeout!r}")
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)) or not poll_interval > 0:
            raise ArgumentError(f"Argument poll_interval should be a number of seconds > 0, like 5.0; got {poll_interval!r}")
        if explain_budget is not None and (isinstance(explain_budget, bool) or not isinstance(explain_budget, int) or explain_budget < 1):
            raise ArgumentError("Argument explain_budget should be an int >= 1 (evaluations x rows x input size) or None "
                                f"for no limit; got {explain_budget!r}")
        if isinstance(explain_queue, bool) or not isinstance(explain_queue, int) or explain_queue < 1:
            raise ArgumentError(f"Argument explain_queue should be an int >= 1 (explanations queued or running); got {explain_queue!r}")
        if gate is not None:
            _check_gate(gate)
        self.ref = ref
        self.host, self.port = host, port
        self.backend_name = backend
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000.0, max_queue
        self.limits = Limits(max_body=max_body, header_timeout=float(header_timeout))
        self.gate = gate
        self.use_stored_gate = use_stored_gate
        self.log_inputs = float(log_inputs)
        self.log_buffer = log_buffer
        self.poll_interval = poll_interval
        self.inline = inline
        self.threads = threads
        self.allow_pickle = allow_pickle  # MLflow versions whose module is a pickle (loopml.models.runtime)
        self.explain_budget, self.explain_queue = explain_budget, explain_queue
        self._sock = sock
        self._token = auth_token.encode() if auth_token else None
        self._hosts = HostAllowList(allowed_hosts)
        self._host_cache: dict[bytes, bool] = {}
        self._own_store = not hasattr(store, "engine")
        self._store_arg = store
        self.store: "TrackingStore | None" = None
        self.metrics = Metrics(model=self.name)
        # made once the loop runs (the batcher lives on it)
        self.routes: Routes | None = None
        self.batcher: Batcher | None = None
        self.requestlog: RequestLog | None = None
        self.predictions: "PredictionLog | None" = None
        self.explanations: Explanations | None = None
        self.follower: "Follower | None" = None
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        self._ready = threading.Event()
        self._announce = False
        self._own_process = False  # run() (the CLI): this process is the server, not a host application
        self._stopped: asyncio.Event | None = None
        self._start_error: BaseException | None = None
        self._connections: set[Connection] = set()

    # -- what it serves -------------------------------------------------------------

    @property
    def backend(self) -> Backend | None:
        """The version being served (None while the first one loads)."""
        return self.routes.backend if self.routes is not None else None

    @property
    def version_info(self) -> "ModelVersion | None":
        """What the followed reference resolved to at the last poll."""
        return self.routes.version_info if self.routes is not None else None

    @property
    def load_error(self) -> str | None:
        """Why the last attempt to load a version failed (None once one is installed)."""
        return self.routes.load_error if self.routes is not None else None

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
        self.explanations = Explanations(registry, loop, budget=self.explain_budget, threads=self.threads,
                                         max_pending=self.explain_queue)
        routes = self.routes = Routes(name=self.name, ref=self.ref, metrics=self.metrics, batcher=self.batcher,
                                      requestlog=self.requestlog, predictions=self.predictions, gate=self.gate,
                                      log_inputs=self.log_inputs, explanations=self.explanations)
        Connection.registry = None

        def factory() -> Connection:
            conn = Connection(self._handle, self.limits, error_body)
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
            routes.version_info = version

        def on_error(exc: BaseException) -> None:
            routes.load_error = f"{type(exc).__name__}: {exc}"

        follower = self.follower = Follower(
            registry,
            self.ref,
            load=lambda v: self._load(registry, v),
            install=install,
            interval=self.poll_interval,
            on_version=on_version,
            on_error=on_error,
        )
        follower.start()
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
            follower.stop(wait=False)  # the loop must not wait for a version being loaded; joined below
            self.batcher.close()
            self.explanations.close()
            if routes.backend is not None and routes.backend.graph is not None:
                routes.backend.graph.close()
            await loop.run_in_executor(None, self._close_store, follower, self.requestlog)

    def _close_store(self, follower: "Follower", requestlog: RequestLog) -> None:
        if self.explanations is not None:
            self.explanations.close(wait=True)  # the one running now answers while the loop still runs
        follower.stop()
        requestlog.close(timeout=10.0)
        if self._own_store and self.store is not None:
            self.store.close()

    def _open_store(self) -> "TrackingStore":
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

    def _load(self, registry: "Registry", version: "ModelVersion") -> Backend:
        backend = load_backend(registry, version, backend=self.backend_name, max_batch=self.max_batch,
                               threads=self.threads, inline=self.inline, allow_pickle=self.allow_pickle)
        if self.gate is None and self.use_stored_gate and "ood_gate" in version.files:
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
        assert self.routes is not None  # installs come from the follower, started after the routes
        swapped = self.routes.install(backend)
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

    # -- who may talk to it ---------------------------------------------------------

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
        # every request: Host and token checked here, then answered by the routes
        routes: Routes = self.routes  # type: ignore[assignment]  # set before the server listens
        try:
            headers = req.headers
            if not self._host_ok(headers.get(b"host")):
                host = (headers.get(b"host") or b"").decode("latin-1")
                raise Refused(400, "invalid_host", f"This server does not answer to Host {host!r}; start it with --allowed-host {host or 'NAME'}")
            if self._token is not None and not bearer_ok(headers.get(b"authorization"), self._token):
                raise Refused(401, "unauthorized", "This model server needs a token: send 'Authorization: Bearer <token>'",
                              headers=((b"www-authenticate", b"Bearer"),))
            if req.too_large:
                raise Refused(413, "payload_too_large", f"A request body should be at most {self.limits.max_body} bytes; send smaller batches")
            routes.dispatch(req, conn)
        except Exception as exc:  # a refusal, or a bug: either way the client gets the one error shape
            routes.fail(conn, req, exc)


def _example(registry: "Registry", version: "ModelVersion") -> np.ndarray:
    from ..models.registry import EXAMPLE

    return np.asarray(np.load(registry.file_path(version.name, version.version, EXAMPLE), allow_pickle=False))


def _check_gate(gate: Any) -> None:
    score = getattr(gate, "score", None)
    threshold = getattr(gate, "threshold", None)
    if not callable(score) or not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
        raise ArgumentTypeError(
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


def serve(ref: str, *, workers: int = 1, max_restarts: int = 5, restart_window: float = 60.0,
          monitor: bool = False, monitor_every: float | str = "5m", **kwargs: Any) -> None:
    """Run ``loopml serve`` until SIGINT/SIGTERM: one :class:`ModelServer`, or ``workers`` processes sharing its port.

    Each worker loads the model and has its own batcher, metrics and request log. A
    worker that dies is replaced by a fresh one; when more than ``max_restarts`` die
    within ``restart_window`` seconds, the others are stopped and :class:`LoopMLError`
    says why (``loopml serve`` exits 2). ``monitor``: also run the scheduled monitor of
    ``ref`` every ``monitor_every`` (:func:`loopml.monitor.watch.watch`) in a process of
    its own, stopped with the server (:mod:`loopml.serve.monitoring`).
    ``kwargs`` go to :class:`ModelServer`. Example::

        serve("digits@production", workers=4, port=8080, monitor=True, monitor_every="5m")
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ArgumentError(f"Argument workers should be an int >= 1; got {workers!r}")
    watcher = None
    if monitor:
        from .monitoring import MonitorProcess

        watcher = MonitorProcess(ref, every=monitor_every, store=kwargs.get("store"))  # a bad interval fails here
        ModelServer(ref, **kwargs)  # and bad server arguments before the monitor starts
        watcher.start()
    try:
        _serve(ref, workers, max_restarts, restart_window, kwargs)
    finally:
        if watcher is not None:
            watcher.stop()


def _serve(ref: str, workers: int, max_restarts: int, restart_window: float, kwargs: dict[str, Any]) -> None:
    if workers == 1:
        ModelServer(ref, **kwargs).run()
        return
    pool = WorkerPool(workers, max_restarts=max_restarts, restart_window=restart_window)  # checks its arguments
    host, port = kwargs.pop("host", "127.0.0.1"), kwargs.pop("port", 8080)
    ModelServer(ref, host=host, port=port, **kwargs)  # bad arguments fail here, not in every worker
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)

    def worker(index: int, first: bool) -> None:  # in the child: its own loop, model, batcher and request log
        ModelServer(ref, sock=sock, host=host, port=port, **kwargs).run(announce=first and index == 0)

    try:
        pool.run(worker)
    finally:
        sock.close()
