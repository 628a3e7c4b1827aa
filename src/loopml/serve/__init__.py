"""The model server (``loopml serve``): one registered model behind HTTP on one machine.

Adaptive batching, signature validation, an optional OOD gate, a background
request log, Prometheus metrics, hot swap when the followed alias moves, and
explanations of its answers (with the ``explain`` extra).
Needs the ``serve`` extra (``pip install 'loopml[serve]'``). See docs/serving.md.
Inside: ``server`` (``ModelServer``: lifecycle, Host/token checks), ``routes`` (the
HTTP API and its one error shape), ``workers`` (``--workers N``, a dead worker
replaced), ``explaining`` (the explain routes' worker thread), ``http`` (the
HTTP/1.1 transport), ``batcher``, ``backends``, ``swap`` (hot swap), ``requestlog``,
``metrics``, ``openapi``.

>>> from loopml.serve import ModelServer
>>> import httpx
>>> server = ModelServer("digits@production", port=0).start().wait_ready()   # port=0: any free port
>>> server.url
'http://127.0.0.1:...'
>>> answer = httpx.post(f"{server.url}/v1/models/digits/predict", json={"inputs": x[:2].tolist()}).json()
>>> [r["status"] for r in answer["results"]]
['ok', 'ok']
>>> server.stop()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Gate", "ModelServer", "serve"]

if TYPE_CHECKING:
    from .batcher import Gate
    from .server import ModelServer, serve


def __getattr__(name: str) -> Any:
    if name in ("ModelServer", "serve"):
        try:
            from . import server
        except ModuleNotFoundError as exc:
            if exc.name in ("httptools", "orjson"):
                raise ModuleNotFoundError(f"loopml serve needs {exc.name}: pip install 'loopml[serve]'") from exc
            raise
        return getattr(server, name)
    if name == "Gate":
        from .batcher import Gate

        return Gate
    raise AttributeError(f"module 'loopml.serve' has no attribute {name!r}")
