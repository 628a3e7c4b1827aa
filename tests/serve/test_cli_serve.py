"""``loopml serve`` as a user runs it: a subprocess, two workers sharing the port, SIGTERM to stop."""

from __future__ import annotations

import os
import subprocess
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


def test_loopml_serve_explain_budget(mlp_store: TrackingStore) -> None:
    from loopml.explanations import DEFAULT_BUDGET

    help_text = subprocess.run([sys.executable, "-m", "loopml", "serve", "--help"], capture_output=True, text=True,
                               env={**os.environ, "COLUMNS": "200"}, check=True).stdout
    assert "--explain-budget" in help_text and f"Default {DEFAULT_BUDGET:,}." in help_text, help_text
    assert "loopml serve digits@production --explain-budget" in help_text, help_text
    argv = [sys.executable, "-m", "loopml", "serve", "mlp@production", "--port", "0", "--explain-budget", "100"]
    with serve_process(argv) as (_, url, _ready):
        r = httpx.post(f"{url}/v1/models/mlp/explain", json={"inputs": rows(1).tolist(), "method": "ig"}, timeout=30)
        assert r.status_code == 422 and r.json()["error"]["code"] == "over_budget", r.text
        assert "over the budget of 100;" in r.json()["error"]["message"], r.text
