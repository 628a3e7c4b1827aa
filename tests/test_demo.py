"""`make demo` runs examples/digits_demo.py: it must train, log a run and say where to look."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deps import need

ROOT = Path(__file__).resolve().parents[1]

need("sklearn", extra="data")

# lines a third-party library writes: ONNX Runtime ("2026-... [W:onnxruntime:...]"), torchao ("Failed to load
# .../torchao/_C_mxfp8....so"), ExecuTorch / XNNPACK's CPU probe ("[cpuinfo_utils.cpp:71] ..."), torch's glog-style
# log lines ("W1202 05:48:01.709000 ... _pytree.py:630]"), and Python warnings ("file.py:12: UserWarning: ...")
NOISE = re.compile(r"onnxruntime|torchao|executorch|cpuinfo|\[[WE]:|^[WE]\d{4} \d\d:\d\d|\w+Warning: ", re.IGNORECASE)


def noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if NOISE.search(line)]


def test_demo_trains_and_logs_a_run(tmp_path: Path) -> None:
    env = {**os.environ, "LOOPML_HOME": str(tmp_path / "home"), "LOOPML_DEMO_EPOCHS": "2", "OMP_NUM_THREADS": "1"}
    env.pop("LOOPML_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "digits_demo.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    # the demo's output is loopml's alone: no library noise on either stream, nothing at all on stderr
    assert noise(proc.stdout) == [] and noise(proc.stderr) == [], proc.stderr
    assert proc.stderr == "", proc.stderr
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
    paths = {a.path for a in store.list_artifacts(run.id)}
    assert {"checkpoints/best.pt", "data_check.json", "data_check_split.json"} <= paths
    assert {"models/digits/loopml-model.json", "models/digits/model.pt2", "models/digits/model.onnx"} <= paths

    # registered, exported and quantized: fp32 @production, static int8 and TQT int4 variants, all measured
    from loopml.store.registry import RegistryStore

    versions = {v.version: v for v in RegistryStore(store).list_versions("digits")}
    assert sorted(versions) == [1, 2, 3]
    assert versions[1].aliases == ("production",) and versions[1].run_id == run.id
    assert {"pt2", "torch", "onnx", "pte"} <= set(versions[1].files)
    assert [(v.tags["quantization.method"], v.tags["quantization.bits"], v.parent_version) for v in (versions[2], versions[3])] == [
        ("static", "8", 1), ("tqt", "4", 1)
    ]
    for v in versions.values():
        m = v.measurements
        assert 0 <= m["accuracy"] <= 1 and m["size_bytes"] > 0 and set(m["latency_ms"]) == {"1", "64"}
    assert versions[2].measurements["size_bytes"] < versions[1].measurements["size_bytes"]
    (tqt_run,) = store.search_runs(experiments=["quantize digits"])
    assert tqt_run.status == "FINISHED" and versions[3].run_id == tqt_run.id
    assert "versions" in proc.stdout and "tqt int4" in proc.stdout and "loopml models show digits" in proc.stdout
    # served with its OOD gate: noise and rotated digits abstain, normal digits are answered
    assert "ood_gate" in versions[1].files
    lines = {line.split("│")[1].strip(): line for line in proc.stdout.splitlines() if line.count("│") >= 4}
    def counts(name: str) -> tuple[int, int]:
        cells = [c.strip() for c in lines[name].split("│")[1:-1]]
        return int(cells[1]), int(cells[2])
    answered, abstained = counts("normal test digits")
    assert answered + abstained == 270 and abstained <= 15  # about 1% by calibration; a 2-epoch model is rougher
    assert counts("Gaussian noise") == (0, 270)
    store.close()
