"""``loopml serve`` as a user runs it: a subprocess, two workers sharing the port, SIGTERM to stop."""

from __future__ import annotations

import sys

import httpx
import numpy as np

from loopml.store import TrackingStore

from .conftest import rows, serve_process


def test_loopml_serve_with_two_workers(mlp_store: TrackingStore) -> None:
    argv = [sys.executable, "-m", "loopml", "serve", "mlp@production", "--port", "0", "--workers", "2", "--no-gate"]
    with serve_process(argv) as (_, url, _ready):  # ready: worker 0 has loaded and warmed the model
        # each new connection lands on either worker: poll /ready until 20 in a row answer 200
        streak = 0
        for _ in range(20_000):
            streak = streak + 1 if httpx.get(f"{url}/ready", timeout=30).status_code == 200 else 0
            if streak == 20:
                break
        assert streak == 20
        x = rows(40, seed=3)
        answers = [httpx.post(f"{url}/v1/models/mlp/predict", json={"inputs": r.tolist()}, timeout=30).json() for r in x]
        assert {a["status"] for a in answers} == {"ok"} and {a["version"] for a in answers} == {1}
        probs = np.array([a["probabilities"] for a in answers])
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
