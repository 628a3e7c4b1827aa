"""Plain value objects the store returns (and the HTTP API sends as JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np

__all__ = ["ArtifactInfo", "Experiment", "History", "MetricSummary", "RunRecord"]


@dataclass(frozen=True, kw_only=True)
class Experiment:
    id: int
    name: str
    created_at: float
    description: str | None = None
    run_count: int = 0
    last_activity: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True, slots=True)  # not frozen: 3x faster to build, and a search builds thousands
class MetricSummary:
    """The newest point of one metric of a run, with its running min/max/count."""

    key: str
    step: int
    timestamp: float
    value: float
    min: float
    max: float
    count: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True, slots=True)
class RunRecord:
    """Everything the store knows about a run, except its metric histories."""

    id: str
    experiment_id: int
    experiment: str
    name: str
    status: str
    start_time: float
    end_time: float | None
    heartbeat_at: float
    parent_id: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    host: str | None = None
    user: str | None = None
    command: str | None = None
    deleted_at: float | None = None  # deleted (restorable); deleted runs are left out of searches by default
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, MetricSummary] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        return None if self.end_time is None else self.end_time - self.start_time

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["metrics"] = {k: m.to_dict() for k, m in self.metrics.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunRecord":
        d = dict(d)
        d["metrics"] = {k: MetricSummary(**m) for k, m in (d.get("metrics") or {}).items()}
        return cls(**d)


class History(NamedTuple):
    """One metric's points, in step order (then time order): parallel NumPy arrays."""

    steps: np.ndarray  # int64
    timestamps: np.ndarray  # float64 seconds since the epoch
    values: np.ndarray  # float64, NaN and +/-inf exactly as logged


@dataclass(frozen=True, kw_only=True)
class ArtifactInfo:
    path: str
    size: int
    sha256: str
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
