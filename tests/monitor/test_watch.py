"""Scheduled monitoring (loopml.monitor.watch): one cycle over a served version's log, stored, alerts checked.

A 6-column table classifier is registered from a run that logged its training and
validation rows (the drift reference and the calibration of the label-free
estimate), served for real on 127.0.0.1 with a tiny OOD gate, sent requests with
one shifted column and a few out-of-range rows, and labelled through the server's
feedback route. A cycle must store the three kinds with the payloads the UI reads,
and fire the rules whose metric crossed its line; a window without enough data
must store "not enough data" and fire nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from loopml.errors import NotFound
from loopml.store import TrackingStore
from loopml.store.monitoring import MonitorLog
from loopml.store.predictions import PredictionLog
from loopml.tracking.api import backend_for

FEATURES = 6


class RangeGate:
    """Abstains on a row whose largest absolute value is above 6 (the test's out-of-range rows are 9)."""

    threshold = 6.0

    def score(self, x: np.ndarray) -> np.ndarray:
        return np.abs(np.asarray(x)).max(axis=1)


def _register(with_data: bool = True) -> None:
    import torch

    import loopml
    from loopml import data
    from loopml.models import registry as R
    from loopml.models.nets import MLP

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, FEATURES)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    parts = data.split(data.from_arrays(x, y, name="tab"), val=0.2, test=0.1, seed=0)
    torch.manual_seed(0)
    model = MLP(FEATURES, 2, hidden=8)
    kwargs: dict[str, Any] = dict(input_example=parts.train.x[:4], class_names=["no", "yes"],
                                  init_args={"n_in": FEATURES, "n_out": 2, "hidden": 8}, formats=("torch",))
    if with_data:
        with loopml.start_run(experiment="tab") as run:
            data.log_dataset(run, parts.train, role="train")
            data.log_dataset(run, parts.val, role="val")
            version = R.register(model, "tab", **kwargs)
    else:
        version = R.register(model, "tab", **kwargs)
    loopml.models.set_alias("tab", "production", version.version)


@pytest.fixture
def served(use_store: str) -> Iterator[tuple[TrackingStore, Any]]:
    """``tab`` v1 registered with its data and served (the RangeGate, every input logged)."""
    from loopml.serve import ModelServer

    _register()
    store = backend_for()
    assert isinstance(store, TrackingStore)
    server = ModelServer("tab@production", store=store, port=0, gate=RangeGate(), inline=True).start().wait_ready(60)
    try:
        yield store, server
    finally:
        server.stop()


def _send(server: Any, x: np.ndarray, per_request: int) -> list[dict[str, Any]]:
    answers = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i in range(0, len(x), per_request):
            r = client.post("/v1/models/tab/predict", json={"inputs": x[i : i + per_request].tolist()})
            assert r.status_code == 200, r.text
            answers.append(r.json())
    assert server.requestlog.flush(10)
    return answers


def test_a_cycle_stores_three_kinds_and_fires_the_rules_that_crossed(served: tuple[TrackingStore, Any]) -> None:
    from loopml.monitor import alerts
    from loopml.monitor.watch import check

    store, server = served
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, FEATURES)).astype(np.float32)
    x[:, 2] += 1.5  # a drift the reference never saw
    x[::50] = 9.0  # 6 rows out of range: the gate abstains on them
    answers = _send(server, x, per_request=10)
    labels = (x[:, 0] > 0).astype(int)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i, a in enumerate(answers):  # every request labelled, a list per batch
            names = ["yes" if v else "no" for v in labels[i * 10 : i * 10 + 10]]
            assert client.post("/v1/feedback", json={"request_id": a["request_id"], "label": names}).status_code == 200
    results = [r for a in answers for r in a["results"]]
    answered = [(r, lab) for r, lab in zip(results, labels) if r["status"] == "ok"]
    abstained = sum(r["status"] == "abstain" for r in results)
    right = sum(r["prediction"] == ("yes" if lab else "no") for r, lab in answered)

    alerts.add_rule("tab@production", "abstaining", metric="abstention_rate", above=0.0)
    alerts.add_rule("tab@production", "drifting", metric="drift", above=0.1)
    alerts.add_rule("tab@production", "accuracy-floor", metric="accuracy", below=0.0)  # cannot fire
    result = check("tab@production", window="1h", min_rows=50, multivariate=False)

    assert (result.model, result.version, result.requests, result.rows) == ("tab", 1, 30, 300)
    assert abstained == 6 and result.values["abstention_rate"] == pytest.approx(6 / 300)
    assert result.values["accuracy"] == pytest.approx(right / len(answered))
    assert 0.0 <= result.values["estimated_accuracy"] <= 1.0  # type: ignore[operator]
    assert result.values["drift"] == pytest.approx(1 / FEATURES)  # x2 alone
    assert sorted(a.rule for a in result.alerts) == ["abstaining", "drifting"]

    stored = {r["kind"]: r for r in MonitorLog(store).results("tab", 1)}
    assert sorted(stored) == ["drift", "performance", "predictions"]
    assert {r["id"] for r in stored.values()} == set(result.stored.values())
    assert len({(r["window_start"], r["window_end"]) for r in stored.values()}) == 1  # one window for the three
    drift = stored["drift"]
    assert drift["flagged"] is True and drift["rows"] == 300
    assert drift["payload"]["status"] == "ok" and drift["payload"]["drifted_features"] == ["x2"]
    assert drift["payload"]["share_drifted"] == pytest.approx(1 / FEATURES) and "histograms" not in drift["payload"]
    assert [f["feature"] for f in drift["payload"]["features"]] == [f"x{i}" for i in range(FEATURES)]
    perf = stored["performance"]["payload"]
    assert stored["performance"]["flagged"] is None
    assert {"accuracy", "accuracy_low", "accuracy_high", "labelled", "estimated_accuracy", "abstention_rate"} <= set(perf)
    assert perf["labelled"] == 300 and perf["accuracy"] == pytest.approx(right / len(answered))
    assert perf["accuracy_low"] < perf["accuracy"] < perf["accuracy_high"]
    assert perf["abstention_rate"] == pytest.approx(6 / 300) and perf["estimated_accuracy"] == result.values["estimated_accuracy"]
    preds = stored["predictions"]["payload"]
    assert preds["requests"] == 30 and preds["abstained"] == 6 and stored["predictions"]["rows"] == 300
    # the answers' confidences tested against the validation split's (the calibration's reference)
    assert isinstance(preds["confidence_drifted"], bool) and 0.0 <= preds["confidence_drift_p"] <= 1.0

    again = check("tab@production", window="1h", min_rows=50, multivariate=False)  # within the rules' cooldown
    assert again.alerts == [] and len(MonitorLog(store).results("tab", 1, "drift")) == 2

    newest = check("tab@production", last=5, min_rows=50, multivariate=False)  # the newest 5 requests: 50 rows
    assert newest.requests == 5 and newest.rows == 50
    times = sorted(r["created_at"] for r in PredictionLog(store).answers("tab", 1))
    assert newest.window == (times[-5], times[-1])


def test_not_enough_data_is_stored_as_such_and_fires_nothing(served: tuple[TrackingStore, Any]) -> None:
    from loopml.monitor import alerts
    from loopml.monitor.watch import check

    store, server = served
    for metric in ("drift", "abstention_rate", "estimated_accuracy"):
        alerts.add_rule("tab@production", f"any-{metric}", metric=metric, above=-1.0)  # fires on any value
    alerts.add_rule("tab@production", "any-accuracy", metric="accuracy", below=2.0)
    empty = check("tab@production", window="1h")
    _send(server, np.full((3, FEATURES), 9.0, dtype=np.float32), per_request=1)  # 3 rows, all abstained
    few = check("tab@production", window="1h")

    for result, rows in ((empty, 0), (few, 3)):
        assert result.alerts == [] and set(result.values.values()) == {None}
        drift = MonitorLog(store).results("tab", 1, "drift")[-1 if rows else 0]
        assert drift["flagged"] is None and drift["rows"] == rows
        assert drift["payload"] == {"status": "not enough data", "sampled": rows, "of": rows,
                                    "reason": f"{rows} logged input rows in the window, at least 100 needed"}
    preds = MonitorLog(store).results("tab", 1, "predictions")
    assert [p["payload"]["requests"] for p in preds] == [0, 3] and preds[1]["payload"]["abstention_rate"] == 1.0
    assert "fewer than 100 rows" in few.notes["abstention_rate"]
    assert alerts.history("tab") == []


def test_a_version_without_training_data_has_no_reference(use_store: str) -> None:
    from loopml.monitor.watch import check

    _register(with_data=False)
    result = check("tab/1", window="1h", min_rows=1)
    drift = MonitorLog(backend_for()).results("tab", 1, "drift")[0]  # type: ignore[arg-type]
    assert drift["payload"]["status"] == "not enough data" and drift["flagged"] is None
    assert "no confidence calibration for tab/1" in result.notes["estimated_accuracy"]
    assert result.values == {"drift": None, "accuracy": None, "estimated_accuracy": None, "abstention_rate": None}


def test_watch_survives_a_failing_cycle_and_stops_when_asked(use_store: str) -> None:
    import loopml
    from loopml.monitor.watch import watch

    _register(with_data=False)
    seen: list[str] = []
    stop = threading.Event()

    def on_result(result: Any) -> None:
        seen.append("ok")
        if len(seen) == 1:
            loopml.models.delete_alias("tab", "production")  # the next cycle cannot resolve the alias
        else:
            stop.set()

    def on_error(exc: BaseException) -> None:
        seen.append(type(exc).__name__)
        loopml.models.set_alias("tab", "production", 1)

    summary = watch("tab@production", every=0.01, window="1h", stop=stop, on_result=on_result, on_error=on_error)
    assert seen == ["ok", "NotFound", "ok"]
    assert (summary.cycles, summary.failures, summary.interrupted) == (3, 1, False)
    with pytest.raises(NotFound, match="has no alias 'staging'"):
        watch("tab@staging", every="5m")
    with pytest.raises(ValueError, match="Argument every should be a duration"):
        watch("tab@production", every="5 minutes")


def test_the_cli_runs_once_refuses_bad_input_and_stops_on_ctrl_c(use_store: str) -> None:
    from typer.testing import CliRunner

    from loopml.cli import app

    _register(with_data=False)
    run = CliRunner().invoke
    once = run(app, ["monitor", "watch", "tab@production", "--once", "--json", "--window", "1h"])
    assert once.exit_code == 0, once.output
    doc = json.loads(once.output)
    assert doc["model"] == "tab" and sorted(doc["stored"]) == ["drift", "performance", "predictions"]
    for argv, message in ((["tab@nowhere", "--once"], "has no alias 'nowhere'"),
                          (["tab@production", "--every", "soon"], "should be a duration"),
                          (["nothing@production", "--once"], "nothing"),
                          (["tab@production", "--window", "1h", "--last", "5"], "not both"),
                          (["tab@production", "--once", "--min-rows", "0"], "Argument min_rows should be"),
                          (["tab@production", "--once", "--max-requests", "0"], "Argument max_requests should be")):
        bad = run(app, ["monitor", "watch", *argv])
        assert bad.exit_code == 2 and message in bad.output and "Traceback" not in bad.output, bad.output

    if not use_store.startswith("sqlite"):
        return  # the loop's Ctrl-C below is the CLI's, not the store's: once is enough
    # Ctrl-C: the loop ends with exit 0 and a one-line summary
    # Ctrl-C's own handler first: a test run started in the background (`make test &`) hands its children SIGINT
    # ignored, and a Python started so keeps ignoring it, as a nohup'ed program should
    child = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv = ['loopml', *sys.argv[1:]]; runpy.run_module('loopml', run_name='__main__', alter_sys=True)")
    proc = subprocess.Popen([sys.executable, "-c", child, "monitor", "watch", "tab@production", "--every", "1h"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().startswith("watching tab@production every 1h")
        assert "tab/1: 0 requests" in proc.stdout.readline()  # the first cycle runs at once
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.strip() == "stopped after 1 cycle (0 failed), 0 alerts fired" and "Traceback" not in err


def test_a_cycle_counts_the_whole_window_and_decodes_a_seeded_uniform_sample(served: tuple[TrackingStore, Any]) -> None:
    """A window three times the sample: counts exact (SQL), drift found on the sample, sampled/of stored."""
    from scipy.stats import chisquare

    from loopml.monitor.watch import check, sample_window

    store, server = served
    rng = np.random.default_rng(2)
    single = rng.normal(size=(300, FEATURES)).astype(np.float32)
    single[:, 2] += 1.5  # the planted shift
    single[::25] = 9.0  # 12 single-row requests abstained
    batches = rng.normal(size=(30, 3, FEATURES)).astype(np.float32)
    batches[:, 2, 2] += 1.5
    batches[:, 0] = 9.0  # one abstained row in each of 30 batches
    _send(server, single, per_request=1)
    _send(server, batches.reshape(-1, FEATURES), per_request=3)

    result = check("tab@production", window="1h", min_rows=50, multivariate=False, max_requests=110)
    assert (result.requests, result.rows) == (330, 390)  # every request, not the sample's
    assert result.values["abstention_rate"] == pytest.approx(42 / 390)  # 12 + 30, exact
    stored = {r["kind"]: r for r in MonitorLog(store).results("tab", 1)}
    preds = stored["predictions"]["payload"]
    assert (preds["requests"], preds["rows"], preds["abstained"], preds["abstained_exact"]) == (330, 390, 42, True)
    assert (preds["sampled"], preds["of"]) == (110, 330) and sum(preds["classes"].values()) <= 110 * 3
    drift = stored["drift"]
    assert (drift["payload"]["sampled"], drift["payload"]["of"]) == (110, 330)
    assert drift["flagged"] is True and "x2" in drift["payload"]["drifted_features"]  # the shift, seen on the sample
    assert 110 <= drift["rows"] < 390
    perf = stored["performance"]["payload"]
    assert (perf["sampled"], perf["of"]) == (110, 330) and 0 < perf["estimated_rows"] <= 110 * 3

    # more abstaining batches than the sample: their abstained rows estimated from 20 of them (one each here: exact)
    few = check("tab@production", window="1h", min_rows=10, multivariate=False, max_requests=20)
    assert few.values["abstention_rate"] == pytest.approx(42 / 390)
    assert MonitorLog(store).results("tab", 1, "predictions")[-1]["payload"]["abstained_exact"] is False

    log = PredictionLog(store)
    ids = log.window_ids("tab", 1)
    assert len(ids) == 330 and log.window_counts("tab", 1)["input_rows"] == 390

    def drawn(seed: int) -> list[str]:
        return [r["request_id"] for r in sample_window(log, "tab", 1, since=None, until=None, max_requests=110,
                                                      seed=seed).answers]

    assert drawn(0) == drawn(0) and drawn(0) != drawn(1)  # deterministic by seed
    hits = np.zeros(len(ids))
    position = {rid: i for i, rid in enumerate(ids)}
    for seed in range(60):
        hits[[position[rid] for rid in drawn(seed)]] += 1
    # uniform: each request drawn 60 * 110 / 330 = 20 times in expectation; a first-N or stride pick would fail
    assert chisquare(hits).pvalue > 0.001 and hits.min() > 0


def test_the_drift_sample_is_drawn_from_the_requests_that_kept_their_inputs(use_store: str) -> None:
    """--log-inputs below 1.0: the drift sample comes from the requests with inputs, not from every request."""
    import random

    from loopml.monitor.watch import check
    from loopml.serve import ModelServer

    _register()
    store = backend_for()
    assert isinstance(store, TrackingStore)
    random.seed(0)  # the in-process server draws which requests keep their inputs
    server = ModelServer("tab@production", store=store, port=0, inline=True, log_inputs=0.5).start().wait_ready(60)
    try:
        _send(server, np.random.default_rng(3).normal(size=(400, FEATURES)).astype(np.float32), per_request=1)
    finally:
        server.stop()
    kept, missing = PredictionLog(store).logged_inputs("tab", 1)
    assert 100 < len(kept) < 300 and len(kept) + missing == 400

    check("tab@production", window="1h", min_rows=20, multivariate=False, max_requests=100)
    stored = {r["kind"]: r for r in MonitorLog(store).results("tab", 1)}
    assert (stored["predictions"]["payload"]["sampled"], stored["predictions"]["payload"]["of"]) == (100, 400)
    drift = stored["drift"]
    assert (drift["payload"]["sampled"], drift["payload"]["of"]) == (100, len(kept))
    assert drift["rows"] == 100 and drift["payload"]["status"] == "ok"  # 100 sampled requests, each with its row
