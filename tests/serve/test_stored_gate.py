"""The gate stored with a version (loopml monitor fit-ood) is what ``loopml serve`` uses, and it swaps with the model."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import numpy as np

from loopml.monitor import fit_ood
from loopml.serve import ModelServer
from loopml.store import TrackingStore

from .conftest import rows


def _post(server: ModelServer, body: object) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/mlp/predict", json=body, timeout=30)


def test_server_uses_the_versions_stored_gate(serve: Callable[..., ModelServer], mlp_store: TrackingStore) -> None:
    rng = np.random.default_rng(0)
    train, val = rng.normal(size=(600, 64)).astype(np.float32), rng.normal(size=(300, 64)).astype(np.float32)
    fit_ood("mlp/1", train=(train, None), val=(val, None), detectors=("vae",), vae_options={"epochs": 5})

    server = serve()
    normal = _post(server, {"inputs": rows(1, seed=5)[0].tolist()}).json()
    far = _post(server, {"inputs": (np.full(64, 40.0)).tolist()}).json()
    assert normal["status"] == "ok"
    assert far["status"] == "abstain" and far["prediction"] is None and "vae" in far["reason"]
    assert httpx.get(f"{server.url}/v1/models/mlp").json()["gate"] is True

    plain = serve(use_stored_gate=False)
    assert _post(plain, {"inputs": (np.full(64, 40.0)).tolist()}).json()["status"] == "ok"
