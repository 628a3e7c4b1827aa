"""The out-of-distribution gate on digits: detection, calibration, oracles, persistence, the registry, the CLI."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

import loopml
from loopml import data
from loopml.errors import ExportError, IntegrityError, NotFound
from loopml.models.nets import DigitsCNN
from loopml.monitor import MahalanobisDetector, OODGate, VAEDetector, fit_ood, load_gate
from loopml.monitor.ood import calibrated_threshold
from loopml.store.registry import local_registry
from tests.roots import tamper_model_file

torch.set_num_threads(1)
VAE_EPOCHS = 15  # enough on digits: the full 40 of the benchmark changes no AUROC below by more than 0.01


@pytest.fixture(scope="module")
def parts() -> data.Split:
    return data.split(data.load("digits"), val=0.15, test=0.15, seed=0)


@pytest.fixture(scope="module")
def cnn(parts: data.Split) -> DigitsCNN:
    from loopml.train import Trainer

    torch.manual_seed(0)
    model = DigitsCNN(channels=8)
    Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3), seed=0, track=False).fit(
        parts.train, epochs=6, batch_size=64, check_data=False
    )
    return model.eval()


@pytest.fixture(scope="module")
def gate(parts: data.Split, cnn: DigitsCNN) -> OODGate:
    x, y = parts.train.x.numpy(), parts.train.y.numpy()
    return OODGate({
        "vae": VAEDetector(epochs=VAE_EPOCHS).fit(x),
        "mahalanobis": MahalanobisDetector(cnn).fit(x, y),
    }).calibrate(parts.val.x.numpy(), target_false_abstain=0.01)


def _auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    return float(roc_auc_score(np.r_[np.zeros(len(inside)), np.ones(len(outside))], np.r_[inside, outside]))


# -- detection and calibration ------------------------------------------------------


def test_gate_tells_noise_and_inverted_digits_from_digits(parts: data.Split, gate: OODGate) -> None:
    x_test = parts.test.x.numpy()
    rng = np.random.default_rng(0)
    noise = np.clip(rng.normal(x_test.mean(), x_test.std(), size=x_test.shape), 0, 1).astype(np.float32)
    inside = gate.score(x_test)
    # measured 1.000 for both (benchmarks/ood.py); 0.9 leaves a margin of 0.1 for other seeds and library versions
    assert _auroc(inside, gate.score(noise)) >= 0.9
    assert _auroc(inside, gate.score(1 - x_test)) >= 0.9
    for name, det in gate.detectors.items():  # each detector alone, too
        assert _auroc(det.score(x_test), det.score(1 - x_test)) >= 0.9, name
    assert gate.abstain(1 - x_test).mean() > 0.9
    reasons = gate.explain(1 - x_test[:3])
    assert all(r.split(":")[0] in ("vae", "mahalanobis") and "x its threshold" in r for r in reasons)
    assert gate.explain(x_test[:1])[0].startswith("in distribution (vae ")


def test_calibrated_false_abstain_on_held_out_digits(parts: data.Split, gate: OODGate) -> None:
    assert gate.threshold == 1.0 and gate.target_false_abstain == 0.01
    assert gate.val_false_abstain is not None and gate.val_false_abstain <= 0.01  # split-conformal: at most the target on val
    rate = float(gate.abstain(parts.test.x.numpy()).mean())
    # 270 test rows: one row is 0.37%; the binomial sd at 1% is 0.6%, so 3 sd above the target is 2.8%
    assert rate <= 0.028


def test_calibration_meets_the_target_on_many_rows() -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal(200_000)
    for target in (0.01, 0.05):
        rates = [np.mean(scores[1000:] > calibrated_threshold(rng.standard_normal(1000), target)) for _ in range(50)]
        # expected false abstain of the split-conformal threshold: (n + 1 - ceil((n + 1)(1 - a))) / (n + 1) <= a
        assert target * 0.7 <= np.mean(rates) <= target * 1.05


def test_nan_rows_abstain(gate: OODGate, parts: data.Split) -> None:
    x = parts.test.x.numpy()[:4].copy()
    x[1, 0, 3, 3] = np.nan
    assert gate.abstain(x)[1]
    assert np.isinf(gate.score(x)[1])


def test_vae_numpy_scoring_matches_the_torch_module(gate: OODGate, parts: data.Split) -> None:
    vae = gate.detectors["vae"]
    assert isinstance(vae, VAEDetector)
    x = np.concatenate([parts.test.x.numpy(), 1 - parts.test.x.numpy()[:10]])
    np.testing.assert_allclose(vae.score(x), vae.score_torch(x), rtol=1e-4, atol=1e-6)  # float32 matmuls, two libraries
    with_kl = VAEDetector.from_state({**vae.config(), "kl_weight": 0.5}, vae.state_dict())
    np.testing.assert_allclose(with_kl.score(x), with_kl.score_torch(x), rtol=1e-4, atol=1e-6)
    assert (with_kl.score(x) > vae.score(x)).all()


# -- Mahalanobis against NumPy / SciPy ---------------------------------------------


def test_mahalanobis_matches_scipy_class_conditional_with_ledoit_wolf() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 40)
    means = np.array([[0, 0, 0, 0], [3, 1, 0, -1], [-2, 4, 1, 0]], dtype=np.float64)
    x = (means[y] + rng.normal(size=(120, 4)) @ np.diag([1, 2, 0.5, 1])).astype(np.float32)
    det = MahalanobisDetector(features=lambda t: t, mode="class").fit(x, y)
    class_means = np.stack([x[y == c].astype(np.float64).mean(0) for c in range(3)])
    vi = LedoitWolf(assume_centered=True).fit(x - class_means[y]).precision_
    queries = rng.normal(size=(7, 4)).astype(np.float32) * 3
    expected = [min(mahalanobis(q, m, vi) for m in class_means) for q in queries.astype(np.float64)]
    np.testing.assert_allclose(det.score(queries), expected, rtol=1e-5)  # float32 features in, float64 distances


def test_mahalanobis_single_gaussian_with_pinv_matches_scipy() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 3)).astype(np.float32) @ np.array([[1, 0.5, 0], [0, 1, 0.2], [0, 0, 0.3]], dtype=np.float32)
    det = MahalanobisDetector(features=lambda t: t, mode="single", shrinkage="pinv").fit(x)
    x64 = x.astype(np.float64)
    vi = np.linalg.pinv(np.cov(x64, rowvar=False, bias=True))
    q = rng.normal(size=(5, 3)).astype(np.float32)
    expected = [mahalanobis(row, x64.mean(0), vi) for row in q.astype(np.float64)]
    np.testing.assert_allclose(det.score(q), expected, rtol=1e-5)


def test_mahalanobis_uses_the_input_of_the_last_linear(cnn: DigitsCNN, parts: data.Split) -> None:
    det = MahalanobisDetector(cnn, mode="single")
    assert det.layer == "head.3"
    x = parts.test.x[:5]
    with torch.no_grad():
        expected = cnn.head[2](cnn.head[1](cnn.head[0](cnn.features(x))))
    np.testing.assert_allclose(det.embed(x.numpy()), expected.numpy(), rtol=1e-6)


# -- bad arguments -------------------------------------------------------------------


def test_bad_arguments_raise_value_errors(cnn: DigitsCNN, gate: OODGate, parts: data.Split) -> None:
    x = parts.train.x.numpy()
    with pytest.raises(ValueError, match="Argument latent should be a whole number >= 1"):
        VAEDetector(latent=0)
    with pytest.raises(ValueError, match="Pass exactly one of model="):
        MahalanobisDetector()
    with pytest.raises(ValueError, match="Argument mode should be 'class'"):
        MahalanobisDetector(cnn, mode="per-class")
    with pytest.raises(ValueError, match="Argument layer should name a submodule"):
        MahalanobisDetector(cnn, layer="head.9")
    with pytest.raises(ValueError, match="Argument y should hold the class of each row"):
        MahalanobisDetector(cnn).fit(x)
    with pytest.raises(ValueError, match="Argument target_false_abstain should be a fraction"):
        gate.calibrate(parts.val.x.numpy(), target_false_abstain=0.7)
    with pytest.raises(ValueError, match="should have at least 99 rows to calibrate"):
        gate.calibrate(parts.val.x.numpy()[:50], target_false_abstain=0.01)
    with pytest.raises(ValueError, match=r"rows of shape \(1, 8, 8\)"):
        gate.score(np.zeros((2, 64), dtype=np.float32))
    with pytest.raises(ValueError, match="should use the names vae, mahalanobis"):
        OODGate({"knn": gate.detectors["vae"]})
    with pytest.raises(ValueError, match="not calibrated"):
        OODGate({"vae": VAEDetector(epochs=1).fit(x[:64])}).score(x[:2])
    with pytest.raises(ValueError, match="not fitted"):
        VAEDetector().score(x[:2])
    with pytest.raises(TypeError, match="should be a numpy array or torch tensor"):
        gate.score([[0.0] * 64])


# -- persistence ---------------------------------------------------------------------


def test_save_load_round_trip_scores_the_same(gate: OODGate, parts: data.Split, tmp_path: Path) -> None:
    path = gate.save(tmp_path / "gate", example=parts.train.x.numpy()[:8])
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "ood_features.onnx", "ood_gate.json", "ood_joint.onnx", "ood_mahalanobis.npz", "ood_vae.npz",
    ]
    doc = json.loads(path.read_text())
    assert doc["detectors"]["mahalanobis"]["config"]["layer"] == "head.3"
    loaded = OODGate.load(tmp_path / "gate")  # no model: the features come from the stored ONNX graph
    x = np.concatenate([parts.test.x.numpy(), 1 - parts.test.x.numpy()[:20]])
    assert loaded.thresholds == gate.thresholds
    # the autoencoder is rebuilt from its tensors: the same arithmetic, the same bits
    np.testing.assert_array_equal(loaded.detectors["vae"].score(x), gate.detectors["vae"].score(x))
    # the feature extractor runs as a torch.export program: equal up to float32 rounding
    np.testing.assert_allclose(loaded.score(x), gate.score(x), rtol=1e-5, atol=1e-6)
    assert (loaded.abstain(x) == gate.abstain(x)).all()
    with_model = OODGate.load(tmp_path / "gate", model=DigitsCNN(channels=8))  # model= replaces the program
    assert with_model.detectors["mahalanobis"].layer == "head.3"
    assert with_model.joint is None  # the joint file belongs to the stored model, not to one passed in


def test_the_joint_file_gives_the_model_output_and_the_same_scores_in_one_pass(
    gate: OODGate, cnn: DigitsCNN, parts: data.Split, tmp_path: Path
) -> None:
    gate.save(tmp_path / "gate", example=parts.train.x.numpy()[:8])
    loaded = OODGate.load(tmp_path / "gate")
    assert loaded.joint is not None
    x = np.concatenate([parts.test.x.numpy(), 1 - parts.test.x.numpy()[:20]])
    out, features = loaded.joint(x)
    with torch.inference_mode():
        np.testing.assert_allclose(out, cnn(torch.from_numpy(x)).numpy(), atol=1e-4)
    assert features.shape == (len(x), cnn.head[3].in_features)
    # scored from the joint pass's features, the gate says what it says from the inputs alone
    np.testing.assert_allclose(loaded.score(x, features=features), loaded.score(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.score(x, features=features), gate.score(x), rtol=1e-5, atol=1e-6)


def test_a_changed_file_refuses_to_load(gate: OODGate, parts: data.Split, tmp_path: Path) -> None:
    folder = tmp_path / "gate"
    gate.save(folder)
    vae = folder / "ood_vae.npz"
    raw = bytearray(vae.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one byte of the weights
    vae.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="ood_vae.npz does not match the sha256 recorded"):
        OODGate.load(folder)


def test_a_pickle_that_runs_code_is_not_loaded_even_with_a_matching_sha256(gate: OODGate, tmp_path: Path) -> None:
    folder = tmp_path / "gate"
    gate.save(folder)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    (folder / "ood_mahalanobis.pt").write_bytes(pickle.dumps({"means": Evil()}, protocol=2))
    doc = json.loads((folder / "ood_gate.json").read_text())
    from loopml.store.artifacts import sha256_file as _sha256

    doc["detectors"]["mahalanobis"]["file"] = "ood_mahalanobis.pt"  # as in a gate saved before the .npz files
    doc["detectors"]["mahalanobis"]["sha256"] = _sha256(folder / "ood_mahalanobis.pt")
    (folder / "ood_gate.json").write_text(json.dumps(doc))
    with pytest.raises(ExportError, match="not a plain tensor file"):
        OODGate.load(folder)
    assert not marker.exists()


# -- with the registry ---------------------------------------------------------------


def test_fit_ood_stores_the_gate_with_the_version(use_store: str, cnn: DigitsCNN, parts: data.Split) -> None:
    with loopml.start_run(experiment="ood") as run:
        data.log_dataset(run, parts.train, role="train")
        v = loopml.register(cnn, "digits", input_example=parts.train.x[:8], init_args={"channels": 8})
    with pytest.raises(NotFound, match="has no OOD gate; fit one with: loopml monitor fit-ood digits/1"):
        load_gate("digits/1")
    gate = fit_ood("digits@latest", train=parts.train, val=parts.val, vae_options={"epochs": VAE_EPOCHS})
    version = loopml.models.get_version(v.ref)
    assert {"ood_gate", "ood_vae", "ood_mahalanobis", "ood_features"} <= set(version.files)
    details = version.files["ood_gate"].details
    assert details["data_matches_lineage"] is True and details["detectors"] == ["mahalanobis", "vae"]
    assert details["val_false_abstain"] <= 0.01
    x = np.concatenate([parts.test.x.numpy(), 1 - parts.test.x.numpy()[:10]])
    loaded = load_gate("digits/1")
    np.testing.assert_allclose(loaded.score(x), gate.score(x), rtol=1e-5, atol=1e-6)
    assert loaded.abstain(x)[-10:].all()
    assert loopml.load_model("digits/1").format == "pt2"  # the gate's files do not change how the model loads

    from loopml.models.registry import registry_for

    tamper_model_file(local_registry(registry_for(), "tamper"), "digits", 1, "ood_vae")
    with pytest.raises(IntegrityError, match="The ood_vae file of digits/1"):
        load_gate("digits/1")


def test_cli_fit_ood(use_store: str, cnn: DigitsCNN, parts: data.Split) -> None:
    from loopml.cli_monitor import monitor_app

    loopml.register(cnn, "digits", input_example=parts.train.x[:8], init_args={"channels": 8})
    runner = CliRunner()
    result = runner.invoke(monitor_app, ["fit-ood", "digits/1", "--data", "digits", "--detector", "vae", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["detectors"] == ["vae"] and summary["val_false_abstain"] <= 0.01
    assert load_gate("digits/1").detectors.keys() == {"vae"}
    bad = runner.invoke(monitor_app, ["fit-ood", "digits/1", "--data", "digits", "--target-false-abstain", "2"])
    assert bad.exit_code == 2 and "Argument target_false_abstain should be a fraction" in bad.output


def test_importing_loopml_monitor_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, loopml.monitor; print('torch' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
