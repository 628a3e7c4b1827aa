"""Persistence: schema, migrations, the tracking store and artifacts, and the Protocols
(:mod:`loopml.store.protocols`) that the database and HTTP implementations share.

The store imports no stage of the loop; every stage writes through it. Names
load on first use, so that a client of a remote server (which needs only the
records) does not import SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_LAZY = {
    "ArtifactStore": "loopml.store.protocols",
    "MAX_PAGE_SIZE": "loopml.store.tracking",
    "Registry": "loopml.store.protocols",
    "TrackingBackend": "loopml.store.protocols",
    "TrackingStore": "loopml.store.tracking",
    "ArtifactInfo": "loopml.store.records",
    "Experiment": "loopml.store.records",
    "History": "loopml.store.records",
    "MetricSummary": "loopml.store.records",
    "RunRecord": "loopml.store.records",
    "current_revision": "loopml.store.engine",
    "migrate": "loopml.store.engine",
    "open_engine": "loopml.store.engine",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from .engine import current_revision, migrate, open_engine
    from .protocols import ArtifactStore, Registry, TrackingBackend
    from .records import ArtifactInfo, Experiment, History, MetricSummary, RunRecord
    from .tracking import MAX_PAGE_SIZE, TrackingStore


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
