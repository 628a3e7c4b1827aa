"""Fixtures of the data tests: one thread for torch (docs/benchmarks.md, "Threads"), small datasets built once."""

from __future__ import annotations

import pytest
import torch

from tests.deps import need

need("sklearn", extra="data")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():  # type: ignore[no-untyped-def]
    from loopml.data import load

    return load("digits")


@pytest.fixture(scope="session")
def iris():  # type: ignore[no-untyped-def]
    from loopml.data import load

    return load("iris")


# real servers for the HTTP round trips (the same fixtures as the server tests)
from tests.server.conftest import live_server, remote, server, use_server  # noqa: E402,F401
