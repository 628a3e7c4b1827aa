"""The tracking server (``loopml server``): a REST API over a store, and the web UI.

- :mod:`loopml.server.app`: ``create_app(store)`` (the FastAPI app) and ``serve`` (uvicorn, 127.0.0.1 by default)
- :mod:`loopml.server.routes_tracking`, :mod:`loopml.server.routes_models`,
  :mod:`loopml.server.routes_datasets`: the REST API under ``/api/v1``
- :mod:`loopml.server.security`: the bearer token and Host checks every request passes
- :mod:`loopml.server.errors`: one JSON shape for every error
- :mod:`loopml.server.ui`: the web UI under ``/ui/``

Needs the ``server`` extra (``pip install 'loopml[server]'``). The wire
formats live in :mod:`loopml.tracking.wire` and need only NumPy and orjson, so
the tracking client imports them without pulling in the web framework; the
names below are imported on first use for the same reason. The model server
(``loopml serve``) is another package, :mod:`loopml.serve`.

>>> from loopml.server import create_app, serve
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["create_app", "serve"]

if TYPE_CHECKING:
    from .app import create_app, serve


def __getattr__(name: str) -> Any:
    if name in __all__:
        try:
            from . import app
        except ModuleNotFoundError as exc:
            if exc.name in ("fastapi", "uvicorn", "starlette", "pydantic"):
                raise ModuleNotFoundError(f"The loopml server needs {exc.name}: pip install 'loopml[server]'") from exc
            raise
        return getattr(app, name)
    raise AttributeError(f"module 'loopml.server' has no attribute {name!r}")
