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


def test_a_mahalanobis_gate_scores_from_the_models_own_forward_pass(
    serve: Callable[..., ModelServer], mlp_store: TrackingStore
) -> None:
    from loopml.models.registry import registry_of
    from loopml.monitor.ood import load_version_gate

    rng = np.random.default_rng(1)
    train, val = rng.normal(size=(600, 64)).astype(np.float32), rng.normal(size=(300, 64)).astype(np.float32)
    fit_ood("mlp/1", train=(train, rng.integers(0, 10, 600)), val=(val, rng.integers(0, 10, 300)),
            detectors=("vae", "mahalanobis"), vae_options={"epochs": 5})
    registry = registry_of(mlp_store)
    version = registry.resolve("mlp/1")
    assert "ood_joint" in version.files
    gate = load_version_gate(registry, version)
    x = rows(40, seed=7)

    server = serve("mlp/1")
    assert server.backend is not None and server.backend.joint is not None  # one pass for prediction and features
    answer = _post(server, {"inputs": x.tolist(), "include_prediction": True}).json()["results"]
    plain = _post(serve("mlp/1", use_stored_gate=False), {"inputs": x.tolist()}).json()["results"]
    np.testing.assert_allclose([a["ood_score"] for a in answer], gate.score(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([a["probabilities"] for a in answer], [p["probabilities"] for p in plain], atol=1e-5)

    named = serve("mlp/1", backend="torch")  # a runtime named on the command line is the one that runs
    assert named.backend is not None and named.backend.joint is None
    again = _post(named, {"inputs": x.tolist()}).json()["results"]
    np.testing.assert_allclose([a["ood_score"] for a in again], gate.score(x), rtol=1e-4, atol=1e-5)
