"""Reading what a served version saw (the request log's inputs) and what it was trained on."""

from __future__ import annotations

import io
from pathlib import Path
import json

import numpy as np
import pytest

from loopml.errors import ArgumentError, NotFound
from loopml.monitor.fromlog import logged_inputs
from loopml.store import TrackingStore
from loopml.store.predictions import PredictionLog
from loopml.tracking.api import backend_for


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return buf.getvalue()


def test_logged_inputs_are_stacked_oldest_first_and_requests_without_inputs_counted(use_store: str) -> None:
    store = backend_for()
    assert isinstance(store, TrackingStore)
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, 3)).astype(np.float32) for n in (1, 2, 1, 3)]
    records = []
    for i, x in enumerate(batches):
        records.append({"request_id": f"r{i}", "model": "m", "version": 1, "created_at": 1000.0 + i, "status": "ok",
                        "rows": len(x), "latency_ms": 0.3, "ood_score": None,
                        "inputs": None if i == 2 else _npy(x), "outputs": json.dumps({"prediction": 0})})
    PredictionLog(store).insert_many(records)

    x, missing = logged_inputs("m", 1)
    np.testing.assert_array_equal(x, np.concatenate([batches[0], batches[1], batches[3]]))
    assert missing == 1
    x_last, missing_last = logged_inputs("m", 1, last=2)  # the newest two requests: one kept none
    np.testing.assert_array_equal(x_last, batches[3])
    assert missing_last == 1
    with pytest.raises(NotFound, match="holds no inputs of m/2 in that window"):
        logged_inputs("m", 2)
    with pytest.raises(ArgumentError, match="Argument last should be a number of requests"):
        logged_inputs("m", 1, last=0)


def _log_rows(store: TrackingStore, x: np.ndarray, *, version: int = 1, t0: float = 5000.0, per_request: int = 10,
              model: str = "tab") -> None:
    records = []
    for i in range(0, len(x), per_request):
        batch = x[i : i + per_request]
        records.append({"request_id": f"q{t0}-{i}", "model": model, "version": version, "created_at": t0 + i,
                        "status": "ok", "rows": len(batch), "latency_ms": 0.3, "ood_score": None,
                        "inputs": _npy(batch), "outputs": json.dumps({"results": []})})
    PredictionLog(store).insert_many(records)


def test_drift_of_a_version_reads_its_request_log_against_its_training_data(use_store: str) -> None:
    # a 6-column table model registered from a run that logged its training rows; the server's log
    # (written here as the server writes it) first holds the same distribution, then one shifted column
    import torch

    import loopml
    from loopml import data
    from loopml.models import registry as R
    from loopml.models.nets import MLP
    from loopml.monitor import drift

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    parts = data.split(data.from_arrays(x, y, name="tab"), val=0.15, test=0.15, seed=0)
    with loopml.start_run(experiment="tab") as run:
        data.log_dataset(run, parts.train, role="train")
        torch.manual_seed(0)
        R.register(MLP(6, 2, hidden=8), "tab", input_example=parts.train.x[:4], class_names=["no", "yes"],
                   init_args={"n_in": 6, "n_out": 2, "hidden": 8})
    store = backend_for()
    assert isinstance(store, TrackingStore)
    same = rng.normal(size=(2000, 6)).astype(np.float32)
    _log_rows(store, same, t0=10_000.0)
    calm = drift("tab/1", since=10_000.0, multivariate=False)
    assert calm.n_reference == len(parts.train) and calm.n_current == 2000
    assert not calm.drifted and list(calm.features["feature"]) == [f"x{i}" for i in range(6)]

    shifted = rng.normal(size=(2000, 6)).astype(np.float32)
    shifted[:, 2] += 0.5
    _log_rows(store, shifted, t0=20_000.0)
    report = drift("tab/1", last=200, multivariate=False)  # the newest 200 requests: the shifted 2,000 rows
    assert report.n_current == 2000 and report.drifted_features == ["x2"]
    with pytest.raises(ArgumentError, match="pick a window of a version's request log"):
        drift(x, same, since="1h")
    with pytest.raises(TypeError, match="should be a version reference like 'digits@production'"):
        drift(x)
    with pytest.raises(NotFound, match="holds no inputs of tab/1"):
        drift("tab/1", since=30_000.0)


def test_the_cli_reads_a_version_s_log_or_two_files_never_both(use_store: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from loopml.cli import app

    run = CliRunner().invoke
    both = run(app, ["monitor", "drift", "tab/1", "--reference", "a.csv", "--current", "b.csv"])
    assert both.exit_code == 2 and "not both" in both.output
    neither = run(app, ["monitor", "drift"])
    assert neither.exit_code == 2 and "Give a version" in neither.output
    missing = run(app, ["monitor", "drift", "nothing/1", "--since", "1h"])
    assert missing.exit_code == 2 and missing.output.startswith("error:") and "Traceback" not in missing.output


# SQLite only: the joint test on the model's features does not depend on the store; reading the request log and
# a stored reference without rows run on both (above, and tests/monitor/test_reference.py)
@pytest.mark.parametrize("db_uri", ["sqlite"], indirect=True)
def test_images_drift_jointly_on_the_model_s_own_features(use_store: str) -> None:
    # mirrored digits keep every image's mean and sd (what the per-feature tests compare), so only the joint
    # test can see them; it runs on the penultimate features of the version's OOD gate
    import torch

    import loopml
    from loopml import data
    from loopml.models import registry as R
    from loopml.models.nets import DigitsCNN
    from loopml.monitor import drift, fit_ood

    parts = data.split(data.load("digits"), val=0.15, test=0.3, seed=0)
    with loopml.start_run(experiment="digits") as run:
        data.log_dataset(run, parts.train, role="train", keep_rows=False)  # the stored reference's sample only
        torch.manual_seed(0)
        v = R.register(DigitsCNN(), "digits", input_example=parts.train.x[:4])
    fit_ood(v.ref, train=parts.train, val=parts.val, detectors=("mahalanobis",))
    store = backend_for()
    assert isinstance(store, TrackingStore)
    test_x = parts.test.x.numpy()
    _log_rows(store, test_x, t0=10_000.0, model="digits")
    calm = drift("digits/1", since=10_000.0)
    assert calm.multivariate is not None and calm.multivariate["on"] == "penultimate features"
    assert not calm.drifted
    _log_rows(store, np.ascontiguousarray(test_x[..., ::-1]), t0=20_000.0, model="digits")
    mirrored = drift("digits/1", since=20_000.0)
    assert mirrored.drifted_features == [] and mirrored.multivariate["drifted"] and mirrored.drifted
    assert drift("digits/1", since=20_000.0, multivariate=False).multivariate is None
