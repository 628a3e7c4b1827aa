"""`make demo` runs examples/digits_demo.py: it must train, log a run and say where to look."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("torch")
pytest.importorskip("sklearn")


def test_demo_trains_and_logs_a_run(tmp_path: Path) -> None:
    env = {**os.environ, "LOOPML_HOME": str(tmp_path / "home"), "LOOPML_DEMO_EPOCHS": "2", "OMP_NUM_THREADS": "1"}
    env.pop("LOOPML_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "digits_demo.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "FINISHED" in proc.stdout and "loopml runs show" in proc.stdout and "test_accuracy" in proc.stdout

    from loopml.store import TrackingStore

    store = TrackingStore(
        f"sqlite:///{tmp_path / 'home' / 'loopml.db'}", artifact_root=tmp_path / "home" / "artifacts"
    )
    (run,) = store.search_runs(experiments=["digits-demo"])
    assert run.status == "FINISHED"
    assert run.params["epochs"] == "2" and run.params["optimizer"] == "Adam" and run.params["model"] == "DigitsCNN"
    assert {"train_loss", "val_loss", "val_accuracy", "test_accuracy", "lr", "samples_per_s"} <= set(run.metrics)
    assert run.metrics["val_accuracy"].count == 2
    assert run.tags["data_check"].startswith("ok")
    assert set(store.run_datasets(run.id)) == {"train", "val", "test"}
    assert {a.path for a in store.list_artifacts(run.id)} == {"checkpoints/best.pt", "data_check.json", "data_check_split.json"}
    store.close()
