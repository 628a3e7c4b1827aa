"""The tracking server: a FastAPI app over a :class:`~loopml.store.TrackingStore`, and ``serve``.

>>> from loopml.store import TrackingStore
>>> from loopml.server import create_app
>>> app = create_app(TrackingStore("sqlite:///./.loopml/loopml.db", artifact_root="./.loopml/artifacts"))

or from a shell (binds 127.0.0.1 unless told otherwise)::

    loopml server --port 5000 --store sqlite:///./.loopml/loopml.db
    LOOPML_TRACKING_URI=http://127.0.0.1:5000 python train.py

What is where:

- ``/api/v1/...``: the tracking API (:mod:`loopml.server.routes_tracking`),
  datasets and lineage (:mod:`loopml.server.routes_datasets`), the model
  registry (:mod:`loopml.server.routes_models`) and explanations of versions
  and logged requests (:mod:`loopml.server.routes_explain`).
- ``/api/2.0/mlflow/...``: MLflow's REST API for MLflow's own clients, over the
  same store (:mod:`loopml.server.mlflow_tracking`: experiments, runs, metric
  histories; docs/mlflow.md).
- ``/ui/...``: the web UI (:mod:`loopml.server.ui`); its pages and static
  files are the only routes that answer without the token (they hold no data).
- ``/health``: ``{"status": "ok"}`` for readiness checks.
- ``/docs`` and ``/openapi.json``: the API's description.
- Every route, these included, is behind the checks of
  :mod:`loopml.server.security` (Host header, bearer token when one is set,
  JSON content type on writes) and answers errors in the one shape of
  :mod:`loopml.server.errors`.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI
from starlette.responses import Response

from .. import __version__, config
from ..access import read_token_file
from ..errors import ArgumentError, ConfigError
from ..explanations import DEFAULT_BUDGET
from ..store.tracking import TrackingStore
from .errors import install_error_handlers, json_response
from .mlflow_artifacts import router as mlflow_artifacts_router
from .mlflow_models import router as mlflow_models_router
from .mlflow_tracking import router as mlflow_tracking_router
from .mlflow_wire import ARTIFACTS_PREFIX, MlflowErrorShape
from .mlflow_wire import PREFIX as MLFLOW_PREFIX
from .routes_datasets import ROWS_UPLOAD
from .routes_datasets import router as datasets_router
from .routes_explain import router as explain_router
from .routes_labels import router as labels_router
from .routes_models import router as models_router
from .routes_tracking import ARTIFACT_UPLOAD
from .routes_tracking import router as tracking_router
from .security import SecurityMiddleware, check_allowed_hosts, is_loopback
from .ui import public_paths as ui_public_paths
from .ui import router as ui_router

__all__ = ["create_app", "serve"]

_meta = APIRouter(tags=["server"])


@_meta.get("/health", summary="Readiness check (behind the token like every route)")
def health() -> Response:
    return json_response({"status": "ok", "version": __version__})


def create_app(
    store: TrackingStore,
    *,
    auth_token: str | None = None,
    allowed_hosts: Sequence[str] = (),
    max_json_body: int | None = None,
    explain_budget: int | None = DEFAULT_BUDGET,
) -> FastAPI:
    """The server's ASGI app over ``store``.

    ``auth_token``: every request must send ``Authorization: Bearer <token>``.
    ``allowed_hosts``: Host header values accepted besides the loopback names
    (``"name"``, ``"name:port"``, or ``"*"`` for any).
    ``max_json_body``: largest JSON body in bytes (default 64 MiB).
    ``explain_budget``: the most one explanation may cost (evaluations x rows x input
    size, :mod:`loopml.explanations`); over it the explain routes answer 422
    ``over_budget``. None: no limit.

    >>> from loopml.store import TrackingStore
    >>> store = TrackingStore("sqlite:///loopml.db", artifact_root="artifacts")
    >>> app = create_app(store, auth_token="s3cret", allowed_hosts=["tracking.internal"])
    """
    if auth_token is not None and (not isinstance(auth_token, str) or not auth_token.strip()):
        raise ArgumentError("Argument auth_token should be a non-empty string, or None for no token")
    check_allowed_hosts(allowed_hosts)  # fail here, not at the first request
    if explain_budget is not None and (isinstance(explain_budget, bool) or not isinstance(explain_budget, int) or explain_budget < 1):
        raise ArgumentError(f"Argument explain_budget should be an int >= 1 or None for no limit, got {explain_budget!r}")
    app = FastAPI(
        title="loopml tracking server",
        version=__version__,
        description="Experiments, runs, params, tags, metrics and artifacts. "
        'Every error answers {"error": {"code": ..., "message": ...}}.',
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.store = store
    app.state.known_runs = set()
    app.state.explain_budget = explain_budget
    install_error_handlers(app)
    app.include_router(_meta)
    app.include_router(tracking_router)
    app.include_router(datasets_router)
    app.include_router(models_router)
    app.include_router(labels_router)  # the labeling queue and labels (docs/loop.md)
    app.include_router(explain_router)  # explanations of versions and logged requests (docs/explain.md)
    app.include_router(mlflow_tracking_router)  # MLflow's tracking REST API (docs/mlflow.md)
    app.include_router(mlflow_models_router)  # MLflow's logged models and registry (docs/mlflow.md)
    app.include_router(mlflow_artifacts_router)  # MLflow's proxied artifacts (docs/mlflow.md)
    app.include_router(ui_router)  # the web UI (docs/ui.md): /ui pages, /ui/api data
    extra: dict[str, Any] = {} if max_json_body is None else {"max_json_body": max_json_body}
    app.add_middleware(
        SecurityMiddleware,
        auth_token=auth_token,
        allowed_hosts=list(allowed_hosts),
        binary_uploads=[ARTIFACT_UPLOAD, ROWS_UPLOAD],
        # MLflow's client: uploads with the file's guessed type, DELETEs of artifacts and tags without a body
        any_media_uploads=[ARTIFACTS_PREFIX + "/artifacts/.+", MLFLOW_PREFIX + "/logged-models/[^/]+/tags/.+"],
        public_paths=ui_public_paths(),  # the UI's pages and scripts only: they hold no data
        **extra,
    )
    app.add_middleware(MlflowErrorShape)  # added last, so outermost: it sees the security checks' answers too
    return app


_read_token = read_token_file  # the name the CLI and tests used


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    host: str = "127.0.0.1",
    port: int = 5000,
    store: str | TrackingStore | None = None,
    auth_token_file: str | Path | None = None,
    allowed_hosts: Sequence[str] = (),
    *,
    artifact_root: str | Path | None = None,
    log_level: str = "warning",
    announce_ui: bool = False,
    explain_budget: int | None = DEFAULT_BUDGET,
) -> None:
    """Run the server until interrupted; prints ``loopml server listening on http://HOST:PORT`` once it listens.

    ``store``: a database URI (default: ``LOOPML_TRACKING_URI`` or
    ``./.loopml/loopml.db``) or an open TrackingStore. ``port=0`` picks a
    free port. The token comes from ``auth_token_file`` or
    ``LOOPML_SERVER_TOKEN``. Binding to all interfaces (``0.0.0.0``, ``::``)
    needs ``allowed_hosts``: the names clients use to reach the server.
    ``announce_ui``: also print ``loopml UI at http://HOST:PORT/ui/``.
    ``explain_budget``: see :func:`create_app`.

    >>> serve(port=0, store="sqlite:///./.loopml/loopml.db")  # doctest: +SKIP
    loopml server listening on http://127.0.0.1:43121
    """
    settings = config.settings()
    token = _read_token(auth_token_file) if auth_token_file else settings.server_token
    allowed = list(allowed_hosts)
    if not is_loopback(host):
        if host in ("0.0.0.0", "::", ""):
            if not allowed:
                raise ConfigError(
                    f"Binding to {host or 'all interfaces'} answers any network: name the host clients use, "
                    "e.g. --allowed-host tracking.internal (or --allowed-host '*' to accept any Host header)"
                )
        else:
            allowed.append(host)
        if token is None:
            print(
                f"warning: loopml server on {host} has no auth token; anyone who can reach it can read and "
                "write runs (use --auth-token-file or LOOPML_SERVER_TOKEN)",
                file=sys.stderr,
            )
    if isinstance(store, TrackingStore):
        tracking_store = store
    else:
        uri = config.check_tracking_uri(store) if store else settings.tracking_uri
        if uri.startswith(("http://", "https://")):
            raise ConfigError(
                f"The server writes to a database, not to another server: got {uri!r}; "
                "use --store sqlite:///path/to/loopml.db or postgresql+psycopg://..."
            )
        tracking_store = TrackingStore(
            uri,
            artifact_root=artifact_root if artifact_root is not None else settings.artifact_root,
            heartbeat_timeout=settings.heartbeat_timeout,
        )
    app = create_app(tracking_store, auth_token=token, allowed_hosts=allowed, explain_budget=explain_budget)
    server = _AnnouncingServer(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            # longer than clients keep idle connections, so a client never
            # sends on a connection the server is closing
            timeout_keep_alive=75,
        )
    )
    server.announce_ui = announce_ui
    try:
        server.run()
    except SystemExit as exc:
        if not server.started:
            raise ConfigError(
                f"The server could not listen on {_url(host, port)} (see the error above); try --port 0"
            ) from exc
        raise
    finally:
        if tracking_store is not store:
            tracking_store.close()


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that prints the address it listens on (tests and scripts parse the line)."""

    announce_ui = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1]
            print(f"loopml server listening on {_url(self.config.host, port)}", flush=True)
            if self.announce_ui:
                print(f"loopml UI at {_url(self.config.host, port)}/ui/", flush=True)
