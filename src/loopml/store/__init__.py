"""Persistence: schema, migrations, the tracking store and artifacts.

The store imports no stage of the loop; every stage writes through it.
"""

from __future__ import annotations

from .engine import current_revision, migrate, open_engine
from .records import ArtifactInfo, Experiment, History, MetricSummary, RunRecord
from .tracking import MAX_PAGE_SIZE, TrackingStore

__all__ = [
    "MAX_PAGE_SIZE",
    "ArtifactInfo",
    "Experiment",
    "History",
    "MetricSummary",
    "RunRecord",
    "TrackingStore",
    "current_revision",
    "migrate",
    "open_engine",
]
