"""A tabular model with its Preprocessor and gate is served from ONNX without torch (or pandas), by column name."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

import loopml
from loopml import data
from loopml.models.nets import MLP
from loopml.monitor import fit_ood
from loopml.store import TrackingStore

from .conftest import serve_process
from .test_startup import CHILD

import pandas as pd  # noqa: E402


def test_a_preprocessed_model_answers_named_records_with_gaps_without_importing_torch(
    mlp_store: TrackingStore, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    n = 600
    frame = pd.DataFrame({"age": rng.normal(40, 12, n), "plan": rng.choice(["basic", "pro"], n),
                          "spend": rng.lognormal(3, 1, n), "churn": rng.integers(0, 2, n)})
    frame.loc[::6, "age"] = np.nan
    parts = data.split(data.from_frame(frame, target="churn"), val=0.25, test=0.0, seed=0)
    torch.manual_seed(0)
    pre = data.Preprocessor().fit(parts.train)
    model = MLP(pre.n_features_out, 2, hidden=[8], preprocessing=pre.to_dict()).eval()
    v = loopml.register(model, "churn", input_example=parts.train.x[:8], class_names=["stay", "leave"],
                        formats=("onnx", "torch"))
    fit_ood(v.ref, train=parts.train, val=parts.val, target_false_abstain=0.05, vae_options={"epochs": 5})
    report = tmp_path / "modules.json"
    argv = [sys.executable, "-c", CHILD, str(report), "serve", "churn/1", "--port", "0", "--backend", "onnx"]
    with serve_process(argv) as (_, url, ready):
        assert "churn/1 ready (onnx" in ready, ready
        records = [{"age": 35.0, "plan": "pro", "spend": 20.0}, {"age": None, "plan": "basic", "spend": 12.0}]
        r = httpx.post(f"{url}/v1/models/churn/predict", json={"inputs": records}, timeout=30)
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [a["status"] for a in results] == ["ok", "ok"], results  # the gap is imputed, not "unusual"
        assert all("ood_score" in a for a in results)
        expected = loopml.load_model("churn/1").predict_proba(records)
        np.testing.assert_allclose([a["probabilities"] for a in results], expected, atol=1e-5)
    imported = json.loads(report.read_text())
    assert imported == dict.fromkeys(imported, False), f"imported while serving: {[m for m, v in imported.items() if v]}"
