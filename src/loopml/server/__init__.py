"""The tracking server (``loopml server``): a REST API over a store, and later the web UI.

Needs the ``server`` extra (``pip install 'loopml[server]'``). The wire
formats in :mod:`loopml.server.wire` need only NumPy and orjson, so the
tracking client imports them without pulling in the web framework; the
names below are imported on first use for the same reason.

>>> from loopml.server import create_app, serve   # doctest: +SKIP
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
