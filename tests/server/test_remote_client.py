"""The whole client API (loopml.start_run, run.log, loopml.runs, ...) through a real server.

Every test runs against SQLite and PostgreSQL behind the server. RemoteStore's own
methods are checked against the TrackingStore's by the contract suite
(tests/contracts/test_tracking_backend.py).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import httpx
import numpy as np
import pytest

import loopml
from loopml.errors import ArtifactPathError, FilterError, NotFound
from loopml.store import TrackingStore
from loopml.tracking.remote import RemoteStore

from .conftest import LiveServer


def _bits(a: np.ndarray) -> list[int]:
    return np.asarray(a, dtype=np.float64).view(np.int64).tolist()


def test_run_lifecycle_through_the_server(use_server: LiveServer, store: TrackingStore, tmp_path: Path) -> None:
    model = tmp_path / "model.bin"
    model.write_bytes(b"\x00weights\xff" * 100)
    plots = tmp_path / "plots"
    (plots / "sub").mkdir(parents=True)
    (plots / "loss.svg").write_text("<svg/>")
    (plots / "sub" / "acc.svg").write_text("<svg></svg>")

    with loopml.start_run(experiment="digits", name="first", params={"lr": 0.01}, tags={"stage": "dev"}) as run:
        for step in range(50):
            run.log({"loss": 1.0 / (step + 1), "acc": step / 50}, step=step)
        run.log_params({"epochs": 50})
        run.set_tags({"stage": "tuned", "owner": "ana"})
        loopml.log({"loss": 0.001})  # the module API acts on this thread's run: step 50
        run.log_artifact(model)
        run.log_artifact(plots, name="figures")
        assert run.status == "RUNNING"

    assert run.status == "FINISHED"
    # what the server wrote is in the server's store
    rec = store.get_run(run.id)
    assert rec.status == "FINISHED" and rec.end_time is not None
    assert rec.params == {"lr": "0.01", "epochs": "50"}
    assert rec.tags == {"stage": "tuned", "owner": "ana"}
    assert rec.metrics["loss"].step == 50 and rec.metrics["loss"].count == 51

    again = loopml.get_run(run.id)
    assert again.params == rec.params and again.tags == rec.tags
    assert again.metrics == {"loss": 0.001, "acc": 49 / 50}
    h = again.history("loss")
    np.testing.assert_array_equal(h.steps, np.arange(51))
    assert h.values.tolist() == [1.0 / (s + 1) for s in range(50)] + [0.001]
    assert h.steps.dtype == np.int64 and h.values.dtype == np.float64
    assert again.metric_keys() == ["acc", "loss"]

    paths = [a.path for a in again.artifacts()]
    assert paths == ["figures/loss.svg", "figures/sub/acc.svg", "model.bin"]
    assert [a.path for a in again.artifacts("figures/sub")] == ["figures/sub/acc.svg"]
    got = again.download_artifact("model.bin", tmp_path / "down")
    assert got == tmp_path / "down" / "model.bin" and got.read_bytes() == model.read_bytes()
    assert [p.name for p in (tmp_path / "down").iterdir()] == ["model.bin"]  # no temporary file left behind

    exps = loopml.experiments()
    assert [(e.name, e.run_count) for e in exps] == [("digits", 1)]


def test_runs_search_and_count(use_server: LiveServer) -> None:
    for i, lr in enumerate(["0.1", "0.01", "0.001"]):
        with loopml.start_run(experiment="sweep", params={"lr": lr}) as run:
            run.log({"acc": 0.5 + i / 10}, step=0)
    with loopml.start_run(experiment="other") as run:
        run.log({"acc": 0.99})

    df = loopml.runs("sweep", filter="metrics.acc > 0.55", order_by=["metrics.acc DESC"])
    assert df["params.lr"].tolist() == ["0.001", "0.01"]
    assert df["metrics.acc"].tolist() == pytest.approx([0.7, 0.6])
    assert set(df["status"]) == {"FINISHED"}
    assert len(loopml.runs()) == 4
    assert len(loopml.runs(["sweep", "other"], limit=2)) == 2
    assert len(loopml.runs(["sweep", "other"], limit=2, offset=3)) == 1

    backend = RemoteStore(use_server.url)
    assert backend.count_runs() == 4
    assert backend.count_runs(experiments="sweep", filter="params.lr = '0.01'") == 1
    assert backend.count_runs(experiments=[]) == 0 and backend.search_runs(experiments=[]) == []
    backend.close()


def test_filter_errors_keep_their_caret_lines(use_server: LiveServer) -> None:
    with pytest.raises(FilterError, match=r"(?s)metrics\.acc >> 1\n\s+\^"):
        loopml.runs(filter="metrics.acc >> 1")


def test_nonfinite_values_round_trip_exactly(use_server: LiveServer) -> None:
    # (-0.0 is left out: SQLite itself stores it as 0.0; the wire keeps it, see test_wire.py)
    values = [math.nan, math.inf, -math.inf, 0.0, 5e-324, -1.7976931348623157e308, 0.1, 1 / 3]
    with loopml.start_run(experiment="edge") as run:
        for i, v in enumerate(values):
            run.log({"v": v}, step=i)
        run.log({"only_nan": math.nan}, step=0)
        run.log({"big_step": 1.0}, step=2**63 - 1)
        run.log({"big_step": 2.0}, step=-(2**63))

    h = loopml.get_run(run.id).history("v")
    assert np.isnan(h.values[0])
    assert _bits(h.values[1:]) == _bits(np.array(values[1:]))  # subnormals and extremes bit for bit
    assert loopml.get_run(run.id).history("big_step").steps.tolist() == [-(2**63), 2**63 - 1]

    rec = loopml.get_run(run.id).record
    assert rec.metrics["v"].value == 1 / 3
    assert rec.metrics["v"].min == -math.inf and rec.metrics["v"].max == math.inf
    assert math.isnan(rec.metrics["only_nan"].value) and math.isnan(rec.metrics["only_nan"].min)

    # the JSON form of the history spells non-finite values as strings
    r = httpx.get(f"{use_server.url}/api/v1/runs/{run.id}/history", params={"key": "v"})
    assert r.status_code == 200
    assert r.json()["values"][:5] == ["NaN", "Infinity", "-Infinity", 0.0, 5e-324]
    # the binary form is the documented layout
    b = httpx.get(f"{use_server.url}/api/v1/runs/{run.id}/history", params={"key": "v", "format": "binary"})
    assert b.headers["content-type"] == "application/octet-stream"
    assert struct.unpack_from("<4sIQ", b.content) == (b"LMLH", 1, len(values))


def test_an_exception_marks_the_run_failed(use_server: LiveServer, store: TrackingStore) -> None:
    with pytest.raises(RuntimeError, match="diverged"), loopml.start_run(experiment="crash") as run:
        run.log({"loss": 1.0})
        raise RuntimeError("diverged")
    assert store.get_run(run.id).status == "FAILED"
    assert store.history(run.id, "loss").values.tolist() == [1.0]
    assert loopml.runs("crash")["status"].tolist() == ["FAILED"]


def test_resume_a_run(use_server: LiveServer) -> None:
    with loopml.start_run(experiment="resume") as run:
        run.log({"loss": 3.0}, step=0)
        run.log({"loss": 2.0}, step=1)
    with loopml.start_run(run_id=run.id, tags={"resumed": True}) as again:
        again.log({"loss": 1.0})  # continues at step 2
    h = loopml.get_run(run.id).history("loss")
    assert h.steps.tolist() == [0, 1, 2]
    assert loopml.get_run(run.id).tags == {"resumed": "True"}


def test_errors_come_back_as_loopml_errors(use_server: LiveServer, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        loopml.get_run("0" * 32)
    with pytest.raises(NotFound, match="Parent run"):
        loopml.start_run(experiment="x", parent="f" * 32)
    with loopml.start_run(experiment="x", params={"lr": 0.1}) as run:
        with pytest.raises(ValueError, match="params cannot change"):
            run.log_params({"lr": 0.2})
        (tmp_path / "f.txt").write_text("x")
        with pytest.raises(ArtifactPathError, match="should not contain '..'"):
            run.log_artifact(tmp_path / "f.txt", name="../escape")
        with pytest.raises(NotFound, match="no such file"):
            run.log_artifact(tmp_path / "missing.txt")
        with pytest.raises(NotFound, match="has no artifact"):
            run.download_artifact("nothing.bin", tmp_path)
    with pytest.raises(ValueError, match=r"limit should be an integer from 1 to 10000"):
        loopml.runs(limit=10_001)


def test_long_histories_come_in_pages(remote: RemoteStore, store: TrackingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from loopml.tracking import wire

    run = store.create_run(experiment="pages")
    store.log_metrics([(run.id, "x", i, float(i), i * 0.5) for i in range(25)])
    monkeypatch.setattr(wire, "MAX_HISTORY_POINTS", 7)  # the server's cap and the client's page size

    h = remote.history(run.id, "x")
    assert h.steps.tolist() == list(range(25)) and h.values.tolist() == [i * 0.5 for i in range(25)]
    part = remote.history(run.id, "x", offset=3, limit=10)
    assert part.steps.tolist() == list(range(3, 13))
    assert store.history(run.id, "x", offset=20).steps.tolist() == [20, 21, 22, 23, 24]

    response = httpx.get(
        f"{remote.uri}/api/v1/runs/{run.id}/history", params={"key": "x", "limit": 8}  # over the cap
    )
    assert response.status_code == 400 and "limit" in response.json()["error"]["message"]
