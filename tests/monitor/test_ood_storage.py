"""A saved gate is NumPy arrays and ONNX graphs: it loads and scores without torch, and runs no pickle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from loopml.errors import ExportError
from loopml.monitor.detectors import VAEDetector
from loopml.monitor.ood import OODGate, fit_gate

from ..models.nets import MLP


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).normal(0, 3, size=(10, 64))
    y = rng.integers(0, 10, size=n)
    return (centers[y] + rng.normal(0, 1, size=(n, 64))).astype(np.float32), y


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[OODGate, Path]:
    torch.manual_seed(0)
    x, y = _blobs(400, seed=1)
    x_val, _ = _blobs(120, seed=2)
    model = MLP(hidden=16).eval()
    gate = fit_gate(model, train=(x, y), val=x_val, vae_options={"epochs": 3})
    folder = tmp_path_factory.mktemp("gate")
    gate.save(folder, example=x[:8])
    return gate, folder


def test_a_saved_gate_loads_and_scores_in_a_process_without_torch(saved: tuple[OODGate, Path], tmp_path: Path) -> None:
    gate, folder = saved
    x = np.concatenate([_blobs(30, seed=3)[0], np.full((2, 64), 25.0, dtype=np.float32)])
    np.save(tmp_path / "x.npy", x)
    child = (
        "import json, sys, numpy as np\n"
        "from loopml.monitor.ood import OODGate\n"
        f"gate = OODGate.load({str(folder)!r})\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        "out, features = gate.joint(x)\n"
        f"np.save({str(tmp_path / 'scores.npy')!r}, np.stack([gate.score(x), gate.score(x, features=features)]))\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'explain': gate.explain(x[-1:])}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["torch"] is False
    assert report["explain"][0].split(":")[0] in ("vae", "mahalanobis")  # an abstaining row names its detector
    scores = np.load(tmp_path / "scores.npy")
    # the same weights; the features come from ONNX Runtime instead of torch: equal up to float32 rounding
    np.testing.assert_allclose(scores[0], gate.score(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores[1], scores[0], rtol=1e-5, atol=1e-6)
    assert (scores[0][-2:] > gate.threshold).all() and (scores[0][:30] <= gate.threshold).mean() > 0.9


def test_an_npz_with_pickled_objects_is_refused_and_runs_nothing(saved: tuple[OODGate, Path], tmp_path: Path) -> None:
    import shutil

    from loopml.store.artifacts import sha256_file

    folder = tmp_path / "gate"
    shutil.copytree(saved[1], folder)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, ...]:
            return (Path.touch, (marker,))

    evil = np.empty(1, dtype=object)
    evil[0] = Evil()
    np.savez(folder / "ood_vae.npz", mean=evil)  # allow_pickle defaults to True when saving
    doc = json.loads((folder / "ood_gate.json").read_text())
    doc["detectors"]["vae"]["sha256"] = sha256_file(folder / "ood_vae.npz")  # as if the document were forged too
    (folder / "ood_gate.json").write_text(json.dumps(doc))
    with pytest.raises(ExportError, match="ood_vae.npz is not a plain array file; loopml does not load it"):
        OODGate.load(folder)
    assert not marker.exists()


def test_weights_that_do_not_fit_the_config_are_refused(saved: tuple[OODGate, Path]) -> None:
    vae = saved[0].detectors["vae"]
    assert isinstance(vae, VAEDetector)
    arrays = vae.state_arrays()
    arrays["mu.weight"] = arrays["mu.weight"][:, :-1]
    with pytest.raises(ExportError, match=r"do not match its config \(entries mu.weight\)"):
        VAEDetector.from_state(vae.config(), arrays)
    del arrays["mu.weight"]
    with pytest.raises(ExportError, match=r"do not match its config \(entries mu.weight\)"):
        VAEDetector.from_state(vae.config(), arrays)
    # torch tensors (state_dict) and NumPy arrays (state_arrays) rebuild the same detector
    x = _blobs(10, seed=4)[0]
    from_tensors = VAEDetector.from_state(vae.config(), vae.state_dict())
    np.testing.assert_array_equal(from_tensors.score(x), vae.score(x))
    # NumPy and torch order the float32 sums differently: 3e-8 relative measured, 1e-6 allowed
    np.testing.assert_allclose(from_tensors.score_torch(x), vae.score(x), rtol=1e-6)


def test_from_arrays_builds_the_fitted_detectors_and_refuses_arrays_that_do_not_fit(saved: tuple[OODGate, Path]) -> None:
    from loopml.monitor.detectors import MahalanobisDetector

    gate = saved[0]
    vae, maha = gate.detectors["vae"], gate.detectors["mahalanobis"]
    assert isinstance(vae, VAEDetector) and isinstance(maha, MahalanobisDetector)
    x = _blobs(10, seed=5)[0]
    twin = VAEDetector.from_arrays(vae.state_arrays(), input_shape=(64,), threshold=vae.threshold, epochs=3)
    np.testing.assert_array_equal(twin.score(x), vae.score(x))
    assert twin.threshold == vae.threshold and twin.config() == vae.config()
    state = maha.state_arrays()
    maha_twin = MahalanobisDetector.from_arrays(state["means"], state["whiten"], state["classes"], input_shape=(64,),
                                                features=maha.features, layer=maha.layer, threshold=maha.threshold)
    np.testing.assert_array_equal(maha_twin.score(x), maha.score(x))
    assert maha_twin.config() == maha.config()

    with pytest.raises(ValueError, match=r"Argument state should hold the autoencoder's tensors for input_shape=\(32,\)"):
        VAEDetector.from_arrays(vae.state_arrays(), input_shape=(32,))
    with pytest.raises(ValueError, match=r"Arguments means, whiten and classes should be K x D, D x D and K arrays"):
        MahalanobisDetector.from_arrays(state["means"], state["whiten"][:, :-1], state["classes"], input_shape=(64,),
                                        features=maha.features)
    with pytest.raises(ValueError, match="Argument threshold should be a finite number or None"):
        VAEDetector.from_arrays(vae.state_arrays(), input_shape=(64,), threshold=float("nan"))


def test_every_detector_calibrates_the_one_way_of_the_base(saved: tuple[OODGate, Path]) -> None:
    from loopml.monitor.detectors import CalibratedDetector, calibrated_threshold

    x_val = _blobs(199, seed=6)[0]
    for det in saved[0].detectors.values():
        assert isinstance(det, CalibratedDetector) and type(det).calibrate is CalibratedDetector.calibrate
        extra = {"features": det.features} if hasattr(det, "features") else {}  # Mahalanobis: the model's features
        twin = type(det).from_state(det.config(), det.state_arrays(), **extra)
        assert twin.calibrate(x_val, target_false_abstain=0.05) == calibrated_threshold(det.score(x_val), 0.05)
