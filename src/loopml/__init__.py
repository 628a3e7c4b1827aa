"""loopml: the whole life of a PyTorch model in one tool.

>>> import loopml
>>> with loopml.start_run(experiment="mnist", params={"lr": 0.01}) as run:
...     run.log({"loss": 0.31, "acc": 0.9}, step=0)
>>> loopml.runs("mnist", filter="metrics.acc > 0.8")[["params.lr", "metrics.acc"]]
  params.lr  metrics.acc
0      0.01          0.9

The public names below are imported on first use, so that ``import loopml``
stays fast (the store pulls in SQLAlchemy, ``runs`` pulls in pandas).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports

from .errors import (
    ArtifactPathError,
    AuthError,
    ConfigError,
    Conflict,
    DataError,
    ExportError,
    FilterError,
    IntegrityError,
    LoopMLError,
    MigrationRequired,
    NotFound,
    RemoteError,
    StoreError,
)

__version__ = "0.1.0"

_LAZY = {
    "Client": "loopml.client",
    "Run": "loopml.tracking.run",
    "active_run": "loopml.tracking.api",
    "experiments": "loopml.tracking.api",
    "get_run": "loopml.tracking.api",
    "get_tracking_uri": "loopml.tracking.api",
    "log": "loopml.tracking.api",
    "log_artifact": "loopml.tracking.api",
    "log_params": "loopml.tracking.api",
    "runs": "loopml.tracking.api",
    "set_tags": "loopml.tracking.api",
    "set_tracking_uri": "loopml.tracking.api",
    "start_run": "loopml.tracking.api",
    "History": "loopml.store.records",
    "RunRecord": "loopml.store.records",
    "Experiment": "loopml.store.records",
    "Trainer": "loopml.train.trainer",
    "load_model": "loopml.models.registry",
    "explain": "loopml.explanations",
    "register": "loopml.client",
}
# Stages reachable as attributes (``loopml.data.load``), imported on first use: they need torch.
_SUBMODULES = ("data", "federated", "models", "train")

__all__ = sorted(
    [
        "ArtifactPathError",
        "AuthError",
        "ConfigError",
        "Conflict",
        "DataError",
        "ExportError",
        "FilterError",
        "IntegrityError",
        "LoopMLError",
        "MigrationRequired",
        "NotFound",
        "RemoteError",
        "StoreError",
        "__version__",
        *_LAZY,
        *_SUBMODULES,
    ]
)

if TYPE_CHECKING:
    from .store.records import Experiment, History, RunRecord
    from .tracking.api import (
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
    from .tracking.run import Run
    from .client import Client, register
    from .models.registry import load_model
    from .explanations import explain
    from .train.trainer import Trainer
    from . import data, models, train


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__, submodules=_SUBMODULES)
