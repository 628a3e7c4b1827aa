"""Model servers on 127.0.0.1 with ephemeral ports over a real SQLite store with a registered model.

``mlp_store`` registers ``mlp`` v1 (64 -> 16 -> 10 classifier, onnx + torch) and points
``production`` at it; ``serve(**kwargs)`` starts a :class:`ModelServer` in a thread
and returns once it listens and the model is warmed up (no sleeping).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import loopml
from loopml.serve import ModelServer
from loopml.store import TrackingStore
from tests.deps import need

from ..models.nets import MLP

torch.set_num_threads(1)
CLASSES = [str(i) for i in range(10)]


def register_mlp(seed: int = 0, formats: tuple[str, ...] = ("onnx", "torch")) -> int:
    torch.manual_seed(seed)
    model = MLP(hidden=16).eval()
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))
    v = loopml.register(model, "mlp", input_example=x, class_names=CLASSES, init_args={"hidden": 16}, formats=formats)
    return v.version


@pytest.fixture(scope="session")
def _mlp_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with ``mlp`` v1 registered (ONNX export and checks: ~1 s) and ``production`` on it, built once.

    Artifacts are stored relative to the artifact root, so a copy of the folder is a store of its own.
    """
    from loopml.tracking import api

    root = tmp_path_factory.mktemp("mlp-template")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOPML_HOME", str(root / "home"))
        mp.setenv("LOOPML_TRACKING_URI", f"sqlite:///{(root / 'db' / 'loopml.db').as_posix()}")
        mp.setenv("LOOPML_ARTIFACT_ROOT", str(root / "artifacts"))
        version = register_mlp()
        loopml.models.set_alias("mlp", "production", version)
        loopml.set_tracking_uri(None)
        api.close_all()  # every connection closed: the SQLite file (and its WAL) is complete on disk
    return root


@pytest.fixture
def mlp_store(_mlp_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrackingStore]:
    """A fresh copy of the template store for each test: tests write predictions, versions and aliases."""
    import shutil

    from loopml.tracking import api

    for part in ("db", "artifacts"):
        shutil.copytree(_mlp_template / part, tmp_path / part)
    uri = f"sqlite:///{(tmp_path / 'db' / 'loopml.db').as_posix()}"
    monkeypatch.setenv("LOOPML_TRACKING_URI", uri)
    monkeypatch.setenv("LOOPML_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    store = TrackingStore(uri, artifact_root=tmp_path / "artifacts")
    yield store
    store.close()
    loopml.set_tracking_uri(None)
    api.close_all()


@pytest.fixture
def serve(mlp_store: TrackingStore) -> Iterator[Callable[..., ModelServer]]:
    """A factory: ``serve(ref="mlp@production", **ModelServer kwargs)``; stopped afterwards."""
    started: list[ModelServer] = []

    def start(ref: str = "mlp@production", **kwargs: Any) -> ModelServer:
        kwargs.setdefault("store", mlp_store)
        kwargs.setdefault("port", 0)
        server = ModelServer(ref, **kwargs)
        started.append(server)
        return server.start().wait_ready(60)

    yield start
    for server in started:
        server.stop()


@contextlib.contextmanager
def serve_process(argv: Sequence[str]) -> Iterator[tuple["subprocess.Popen[str]", str, str]]:
    """``loopml serve`` as a subprocess: yields (process, its URL, its "ready" line); SIGTERM and exit 0 after.

    ``argv`` runs the CLI (``[sys.executable, "-m", "loopml", "serve", ..., "--port", "0"]``);
    the server prints where it listens, then a line once the model is loaded and warmed.
    """
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = proc.stdout.readline()  # blocks until the server listens (or the process dies: then '')
        assert "loopml serve listening on http://127.0.0.1:" in line, (line, proc.stderr.read())
        ready = proc.stdout.readline()  # "NAME/VER ready (FORMAT, ...)", or '' if it died while loading
        assert "ready" in ready, (ready, proc.stderr.read())
        yield proc, line.split(" on ", 1)[1].split()[0], ready
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()


def row(value: float = 0.1) -> list[float]:
    return [value] * 64


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, 64)).astype(np.float32)


class AbsGate:
    """A tiny OOD gate: the largest absolute input value; above 5 abstains."""

    threshold = 5.0

    def __init__(self) -> None:
        self.calls = 0

    def score(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.abs(x).max(axis=1)


def parse_metrics(text: str) -> dict[str, float]:
    """``/metrics`` read by prometheus_client's parser (the oracle): ``{'name{label="v",...}': value}``.

    Labels keep the order the server wrote them in, so keys read like the exposition lines.
    """
    parser = need("prometheus_client.parser", extra="test")
    out: dict[str, float] = {}
    assert text.endswith("\n")
    for family in parser.text_string_to_metric_families(text):
        assert family.type in ("counter", "gauge", "histogram"), family
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in s.labels.items())
            out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return out
