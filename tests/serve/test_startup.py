"""The model server starts small: a version with ONNX and an ONNX gate is served without torch.

``loopml serve`` runs as a subprocess (``python -m loopml serve``) over a real SQLite
store; the child reports, when it exits, which heavy modules it had imported. The
``auto`` backend picks a runtime by the latencies stored with the files, loading one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

import loopml
from loopml.models.registry import registry_for
from loopml.monitor import fit_ood
from loopml.serve.backends import PREFERENCE, candidate_formats, load_backend
from loopml.store import TrackingStore

from ..models.nets import MLP
from .conftest import CLASSES, serve_process

# runs `python -m loopml serve ...` in this process; at exit, writes which heavy modules were imported
CHILD = """
import atexit, json, runpy, sys
report, sys.argv = sys.argv[1], ["loopml", *sys.argv[2:]]
heavy = ("torch", "fastapi", "starlette", "uvicorn", "pandas", "scipy", "sklearn", "executorch", "captum", "matplotlib")
atexit.register(lambda: open(report, "w").write(json.dumps({m: m in sys.modules for m in heavy})))
runpy.run_module("loopml", run_name="__main__", alter_sys=True)
"""


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten well separated classes in 64 dimensions: a classifier and a gate fit them in seconds."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).normal(0, 3, size=(10, 64))
    y = rng.integers(0, 10, size=n)
    return (centers[y] + rng.normal(0, 1, size=(n, 64))).astype(np.float32), y


@pytest.fixture
def gated_store(mlp_store: TrackingStore) -> TrackingStore:
    """``mlp`` v2: an MLP trained on the blobs, with onnx + torch and a stored gate (VAE + Mahalanobis), at @production."""
    x, y = _blobs(600, seed=1)
    x_val, _ = _blobs(150, seed=2)
    torch.manual_seed(0)
    model = MLP(hidden=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
    model.eval()
    v = loopml.register(model, "mlp", input_example=x[:8], class_names=CLASSES, init_args={"hidden": 16},
                        formats=("onnx", "torch"))
    fit_ood(v.ref, train=(x, y), val=x_val, vae_options={"epochs": 5})
    loopml.models.set_alias("mlp", "production", v.version)
    return mlp_store


def test_loopml_serve_answers_with_its_gate_without_importing_torch(gated_store: TrackingStore, tmp_path: Path) -> None:
    version = loopml.models.get_version("mlp@production")
    assert {"onnx", "ood_gate", "ood_joint", "ood_features"} <= set(version.files)
    report = tmp_path / "modules.json"
    with serve_process([sys.executable, "-c", CHILD, str(report), "serve", "mlp@production", "--port", "0"]) as (_, url, ready):
        assert "mlp/2 ready (onnx" in ready, ready
        assert httpx.get(f"{url}/ready", timeout=30).json()["format"] == "onnx"
        inside, _ = _blobs(4, seed=3)
        answers = [httpx.post(f"{url}/v1/models/mlp/predict", json={"inputs": r.tolist()}, timeout=30).json()
                   for r in [*inside, np.full(64, 40.0)]]
        assert all("ood_score" in a for a in answers), answers  # the gate scored every answer
        assert [a["status"] for a in answers] == ["ok"] * 4 + ["abstain"], answers
        assert {a["version"] for a in answers} == {2}
    imported = json.loads(report.read_text())
    assert imported == dict.fromkeys(imported, False), f"imported while serving: {[m for m, v in imported.items() if v]}"


def test_registration_stores_the_latency_auto_chooses_by(mlp_store: TrackingStore) -> None:
    version = loopml.models.get_version("mlp/1")
    for fmt in ("onnx", "torch"):  # timed at registration: their runtimes load in milliseconds
        lat = version.files[fmt].details["latency_ms"]
        assert set(lat) == {"1", "64"} and all(v > 0 for v in lat.values()), lat
    costs = {f: version.files[f].details["latency_ms"]["1"] + version.files[f].details["latency_ms"]["64"] / 64
             for f in ("onnx", "torch")}
    assert candidate_formats(version) == sorted(costs, key=costs.__getitem__)


def test_auto_loads_the_format_with_the_lowest_stored_latency(mlp_store: TrackingStore, tmp_path: Path) -> None:
    registry = registry_for(None)
    version = registry.resolve("mlp/1")
    onnx_path = registry.file_path("mlp", 1, "onnx")
    torch_path = registry.file_path("mlp", 1, "torch")
    copies = tmp_path / "copies"
    copies.mkdir()
    # the same files again, with stored figures that make torch the faster: auto follows the figures
    for fmt, src, lat in (("onnx", onnx_path, {"1": 0.5, "64": 2.0}), ("torch", torch_path, {"1": 0.1, "64": 1.0})):
        (copies / src.name).write_bytes(src.read_bytes())
        registry.add_file("mlp", 1, fmt, copies / src.name, {"latency_ms": lat})
    version = registry.resolve("mlp/1")
    assert candidate_formats(version) == ["torch", "onnx"]
    assert load_backend(registry, version, backend="auto").format == "torch"
    assert candidate_formats(version, "onnx") == ["onnx"]  # a named runtime is the one that runs
    # without stored figures: the fixed preference, nothing timed
    for fmt, src in (("onnx", onnx_path), ("torch", torch_path)):
        registry.add_file("mlp", 1, fmt, copies / src.name, {})
    version = registry.resolve("mlp/1")
    assert candidate_formats(version) == [f for f in PREFERENCE if f in version.files] == ["onnx", "torch"]
    assert load_backend(registry, version, backend="auto").format == "onnx"
    with pytest.raises(ValueError, match="Argument backend should be one of auto, torch, onnx, executorch; got 'tf'"):
        candidate_formats(version, "tf")
