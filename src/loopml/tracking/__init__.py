"""The tracking client: ``Run``, the background writer, local and HTTP backends."""

from __future__ import annotations

from .api import (
    active_run,
    experiments,
    get_run,
    get_tracking_uri,
    log,
    log_artifact,
    log_params,
    runs,
    set_tags,
    set_tracking_uri,
    start_run,
)
from .run import Run

__all__ = [
    "Run",
    "active_run",
    "experiments",
    "get_run",
    "get_tracking_uri",
    "log",
    "log_artifact",
    "log_params",
    "runs",
    "set_tags",
    "set_tracking_uri",
    "start_run",
]
