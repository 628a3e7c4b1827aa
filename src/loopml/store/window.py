"""The request log's window: a query limited to one model (one version, or all) and a span of time.

Shared by the request log (:mod:`loopml.store.predictions`) and the labels read from it
(:mod:`loopml.store.labels`).
"""

from __future__ import annotations

from typing import Any

from . import schema as s

__all__ = ["in_window"]


def in_window(q: Any, model: str, version: int | None, since: float | None, until: float | None) -> Any:
    """``q`` limited to ``model`` (one ``version``, or all) and ``since <= created_at < until``."""
    p = s.predictions
    q = q.where(p.c.model == model)
    if version is not None:
        q = q.where(p.c.version == int(version))
    if since is not None:
        q = q.where(p.c.created_at >= float(since))
    if until is not None:
        q = q.where(p.c.created_at < float(until))
    return q
