"""``loopml serve`` as a user runs it: a subprocess, two workers sharing the port, SIGTERM to stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import numpy as np

from loopml.store import TrackingStore

from .conftest import rows


def test_loopml_serve_with_two_workers(mlp_store: TrackingStore) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopml", "serve", "mlp@production", "--port", "0", "--workers", "2", "--no-gate"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the server listens (or the process dies: then '')
        assert "loopml serve listening on http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.stderr else "")
        url = line.split(" on ", 1)[1].split()[0]
        assert "ready" in proc.stdout.readline()  # worker 0 has loaded and warmed the model
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
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
