"""The request log per window: counts, abstentions, confidence and drift of the predicted classes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import chisquare

from loopml.errors import ArgumentError
from loopml.monitor.windows import parse_duration, prediction_windows
from loopml.store import TrackingStore
from loopml.store.monitoring import MonitorLog
from loopml.store.predictions import PredictionLog
from loopml.store.registry import RegistryStore
from loopml.tracking.api import backend_for

CLASSES = ["cat", "dog", "owl"]


def _answer(rng: np.random.Generator, p: list[float], abstain: float) -> dict[str, object]:
    if rng.random() < abstain:
        return {"status": "abstain", "prediction": None, "ood_score": 9.0}
    k = int(rng.choice(3, p=p))
    probs = [0.1, 0.1, 0.1]
    probs[k] = 0.8
    return {"status": "ok", "prediction": CLASSES[k], "probabilities": probs}


def _log(store: TrackingStore, *, t0: float, n: int, p: list[float], abstain: float = 0.0, seed: int = 0,
         version: int = 1, batch: bool = False) -> None:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        if batch:
            items = [_answer(rng, p, abstain) for _ in range(2)]
            doc: dict[str, object] = {"request_id": f"r{seed}-{i}", "model": "pets", "version": version, "results": items}
            rows, status = 2, "abstain" if any(it["status"] == "abstain" for it in items) else "ok"
        else:
            item = _answer(rng, p, abstain)
            doc = {"request_id": f"r{seed}-{i}", "model": "pets", "version": version, **item}
            rows, status = 1, str(item["status"])
        records.append({"request_id": f"r{seed}-{i}", "model": "pets", "version": version, "created_at": t0 + i * (3600 / n),
                        "status": status, "rows": rows, "latency_ms": 0.4, "ood_score": None, "inputs": None,
                        "outputs": json.dumps(doc)})
    PredictionLog(store).insert_many(records)


@pytest.fixture
def pets(use_store: str, tmp_path: Path) -> TrackingStore:
    """pets/1, trained on a balanced set of three classes (its stored profile says so)."""
    store = backend_for()
    assert isinstance(store, TrackingStore)
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"w")
    profile = {"target": {"type": "classification", "counts": dict.fromkeys(CLASSES, 100),
                          "fractions": dict.fromkeys(CLASSES, 1 / 3)}}
    RegistryStore(store).create_version("pets", files={"torch": (weights, {})}, signature={}, profile=profile)
    return store


def test_windows_count_requests_abstentions_and_confidence(pets: TrackingStore) -> None:
    t0 = 1_000_000.0
    _log(pets, t0=t0, n=600, p=[1 / 3] * 3, abstain=0.1, seed=1)
    _log(pets, t0=t0 + 3600, n=600, p=[1 / 3] * 3, abstain=0.3, seed=2, batch=True)
    w = prediction_windows("pets", 1, every="1h", since=t0)
    assert list(w["requests"]) == [600, 600] and list(w["rows"]) == [600, 1200]
    assert list(w["window_start"]) == [t0, t0 + 3600]
    assert w["abstention_rate"].iloc[0] == pytest.approx(0.1, abs=0.03)  # 600 draws: 3 sd of a 10% rate is 0.037
    assert w["abstention_rate"].iloc[1] == pytest.approx(0.3, abs=0.04)
    assert w["mean_confidence"].iloc[0] == pytest.approx(0.8)
    assert sum(w["classes"].iloc[0].values()) + w["abstained"].iloc[0] == 600
    assert list(w["prediction_drifted"]) == [False, False]


def test_a_shift_in_the_predicted_classes_is_drift_and_the_test_is_scipy_s(pets: TrackingStore) -> None:
    t0 = 2_000_000.0
    _log(pets, t0=t0, n=900, p=[1 / 3] * 3, seed=3)
    _log(pets, t0=t0 + 3600, n=900, p=[0.6, 0.2, 0.2], seed=4)
    w = prediction_windows("pets", 1, every=3600, since=t0)
    assert list(w["prediction_drifted"]) == [False, True]
    counts = w["classes"].iloc[1]
    observed = [counts.get(c, 0) for c in CLASSES]
    expected = [sum(observed) / 3] * 3
    assert w["prediction_drift_p"].iloc[1] == pytest.approx(chisquare(observed, expected).pvalue, rel=1e-9)
    assert w["prediction_drift_js"].iloc[1] > 0.1


def test_a_small_window_is_not_enough_data_not_an_alarm(pets: TrackingStore) -> None:
    _log(pets, t0=3_000_000.0, n=40, p=[1.0, 0.0, 0.0], seed=5)  # all one class, but only 40 rows
    w = prediction_windows("pets", 1, size=1000)
    assert len(w) == 1 and w["prediction_drifted"].iloc[0] is None and math.isnan(w["prediction_drift_p"].iloc[0])


def test_windows_by_count_are_stored_for_the_ui_and_alerts(pets: TrackingStore) -> None:
    _log(pets, t0=4_000_000.0, n=500, p=[1 / 3] * 3, seed=6)
    w = prediction_windows("pets", 1, size=200, store=True)
    assert list(w["requests"]) == [200, 200, 100]
    saved = MonitorLog(pets).results("pets", 1, "predictions")
    assert [r["rows"] for r in saved] == [200, 200, 100] and saved[0]["payload"]["classes"] == w["classes"].iloc[0]


def test_bad_arguments_are_refused_with_what_to_pass(pets: TrackingStore) -> None:
    with pytest.raises(ArgumentError, match="Argument every should be a duration like"):
        prediction_windows("pets", 1, every="hourly")
    with pytest.raises(ArgumentError, match="Argument size should be a number of requests"):
        prediction_windows("pets", 1, size=0)
    with pytest.raises(ArgumentError, match="positive duration"):
        parse_duration("0s", "since")
    assert prediction_windows("nobody", 1).empty  # no requests logged: no windows, no error


def test_the_window_s_confidences_drift_against_the_validation_split_s() -> None:
    from scipy.stats import ks_2samp, wasserstein_distance

    from loopml.monitor.performance import ConfidenceCalibration
    from loopml.monitor.windows import summarize_answers

    rng = np.random.default_rng(3)

    def probabilities(n: int, sharpness: float) -> np.ndarray:
        p1 = 1 / (1 + np.exp(-sharpness * rng.normal(size=n)))
        return np.stack([1 - p1, p1], axis=1)

    val = probabilities(2000, 3.0)
    cal = ConfidenceCalibration.fit(val, (val[:, 1] > rng.random(2000)).astype(np.int64))
    assert cal.confidences is not None and np.array_equal(cal.confidences, np.sort(val.max(axis=1)))

    def records(p: np.ndarray) -> list[dict[str, Any]]:  # one-row answers as the server logs them
        return [{"rows": 1, "outputs": json.dumps({"status": "ok", "prediction": str(int(r.argmax())),
                                                   "probabilities": r.tolist()})} for r in p]

    same = summarize_answers(records(probabilities(1000, 3.0)), reference=None, scores=cal.confidences)
    assert same["confidence_drifted"] is False
    unsure = probabilities(1000, 1.0)  # the model is less sure of what it is served: its inputs moved
    shifted = summarize_answers(records(unsure), reference=None, scores=cal.confidences)
    top = unsure.max(axis=1)
    assert shifted["confidence_drifted"] is True
    assert shifted["confidence_drift_p"] == pytest.approx(ks_2samp(top, cal.confidences, method="asymp").pvalue)
    assert shifted["confidence_drift_effect"] == pytest.approx(wasserstein_distance(top, cal.confidences) / np.std(cal.confidences, ddof=1))
    few = summarize_answers(records(unsure[:50]), reference=None, scores=cal.confidences)
    assert few["confidence_drifted"] is None and math.isnan(few["confidence_drift_p"])  # not enough data
    assert summarize_answers(records(unsure), reference=None)["confidence_drifted"] is None  # no reference
