"""Fixtures for the trainer tests: digits (flattened), a tiny MLP, a SQLite store for tracking."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # tiny models: more threads are 30-50x slower on shared cores (docs/benchmarks.md, "Threads")


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    x_tr, x_val, y_tr, y_val = train_test_split(x, d.target, test_size=0.25, stratify=d.target, random_state=0)
    return tuple(torch.from_numpy(a) for a in (x_tr, y_tr.astype(np.int64), x_val, y_val.astype(np.int64)))  # type: ignore[return-value]


def mlp(seed: int = 0, hidden: int = 32, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 10))


@pytest.fixture
def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """loopml.start_run writes to a fresh SQLite file; everything is closed afterwards."""
    from loopml.tracking import api

    uri = f"sqlite:///{(tmp_path / 'store' / 'loopml.db').as_posix()}"
    monkeypatch.setenv("LOOPML_TRACKING_URI", uri)
    monkeypatch.setenv("LOOPML_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    yield uri
    api.close_all()
