"""A store with two real registered models and their request logs, for the explanation routes and pages.

``digits`` 1: the CNN on 1x8x8 images (torch format, class names 0-9), ``shop`` 1: an MLP on
table rows of 5 named features (3 classes). Each has one-row requests logged as the model
server logs them (inputs as .npy, its answer's JSON), every 4th without its inputs, and a
labelled one; ``digits`` also a 3-row batch.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import loopml
from loopml.store import TrackingStore
from loopml.store.predictions import PredictionLog
from loopml.store.registry import RegistryStore

DIGITS = [str(i) for i in range(10)]
SHOP_CLASSES = ["stays", "leaves", "upgrades"]
SHOP_FEATURES = ["age", "fee", "visits", "tenure", "<b>bold</b>"]
N_LOGGED = 12


def images(n: int, seed: int) -> np.ndarray:
    """Digit-like 8x8 images: a bright bar on a dark ground (so that the heat map has somewhere to be)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 8, 8), dtype=np.float32) * 0.2
    for i in range(n):
        x[i, 0, 1:7, 2 + i % 4] += 0.8
    return x


def npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(x, dtype=np.float32))
    return buf.getvalue()


def _records(model: str, module: Any, x: np.ndarray, classes: list[str], t0: float) -> list[dict[str, Any]]:
    import torch

    with torch.no_grad():
        out = module(torch.from_numpy(x)).softmax(dim=1).numpy()
    records = []
    for i in range(len(x)):
        p = out[i]
        answer = {"request_id": f"{model}-{i:03d}", "model": model, "version": 1, "status": "ok",
                  "prediction": classes[int(p.argmax())], "probabilities": [round(float(v), 6) for v in p]}
        records.append({"request_id": answer["request_id"], "model": model, "version": 1, "created_at": t0 + i,
                        "status": "ok", "rows": 1, "latency_ms": 0.4, "ood_score": round(0.1 * i, 3),
                        "inputs": None if i % 4 == 3 else npy(x[i : i + 1]), "outputs": json.dumps(answer)})
    return records


class Explained:
    """The store (``uri``, ``store``), the live modules, and the logged inputs by request id."""

    def __init__(self, root: Path) -> None:
        import torch

        from tests.models.nets import CNN, MLP

        torch.manual_seed(0)
        self.cnn = CNN().eval()
        torch.manual_seed(1)
        self.mlp = MLP(n_in=len(SHOP_FEATURES), hidden=12, n_out=len(SHOP_CLASSES)).eval()
        self.uri = f"sqlite:///{(root / 'loopml.db').as_posix()}"
        self.images = images(N_LOGGED, seed=3)
        self.rows = np.random.default_rng(4).normal(size=(N_LOGGED, len(SHOP_FEATURES))).astype(np.float32)
        with pytest.MonkeyPatch.context() as mp:  # the store is opened (and cached by URI) with this artifact root
            mp.setenv("LOOPML_ARTIFACT_ROOT", str(root / "artifacts"))
            client = loopml.Client(self.uri)
            client.register(self.cnn, "digits", input_example=self.images[:4], class_names=DIGITS, formats=["torch"])
            client.register(self.mlp, "shop", input_example=self.rows[:4], class_names=SHOP_CLASSES,
                            feature_names=SHOP_FEATURES, formats=["torch"],
                            init_args={"n_in": len(SHOP_FEATURES), "hidden": 12, "n_out": len(SHOP_CLASSES)})
        self.store = TrackingStore(self.uri, artifact_root=root / "artifacts")
        self.registry = RegistryStore(self.store)
        t0 = time.time() - 3600
        log = PredictionLog(self.store)
        self.records = {r["request_id"]: r for r in _records("digits", self.cnn, self.images, DIGITS, t0)}
        self.shop_records = {r["request_id"]: r for r in _records("shop", self.mlp, self.rows, SHOP_CLASSES, t0)}
        batch = self.images[:3]
        self.batch_id = "digits-batch"
        self.records[self.batch_id] = {"request_id": self.batch_id, "model": "digits", "version": 1, "created_at": t0 - 60,
                                       "status": "ok", "rows": 3, "latency_ms": 0.9, "ood_score": None,
                                       "inputs": npy(batch), "outputs": json.dumps({"results": [{"status": "ok", "prediction": "1"}] * 3})}
        log.insert_many(list(self.records.values()))
        log.insert_many(list(self.shop_records.values()))
        log.add_feedback("digits-001", "7", annotator="ann")

    def logged(self, request_id: str) -> np.ndarray:
        from loopml.store.predictions import inputs_array

        rec = (self.records | self.shop_records)[request_id]
        assert rec["inputs"] is not None
        return inputs_array(rec["inputs"])

    def close(self) -> None:
        from loopml.tracking import api

        self.store.close()
        api.close_all()
