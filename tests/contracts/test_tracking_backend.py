"""The TrackingBackend contract: one behaviour suite, run against every implementation.

``backend`` (tests/contracts/conftest.py) is a TrackingStore on SQLite and on
PostgreSQL, and a RemoteStore talking to a live loopml server: what a Run, the
background writer and ``loopml.start_run`` rely on holds for each of them.
"""

from __future__ import annotations

import math
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from loopml.errors import ArtifactPathError, FilterError, NotFound
from loopml.store.protocols import TrackingBackend


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


# -- experiments ---------------------------------------------------------------


def test_get_or_create_experiment_is_idempotent(backend: TrackingBackend) -> None:
    first = backend.get_or_create_experiment("digits")
    again = backend.get_or_create_experiment("digits")
    other = backend.get_or_create_experiment("mnist")

    assert again == first
    assert other.id != first.id
    assert [e.name for e in backend.list_experiments()] == ["digits", "mnist"]


def test_list_experiments_counts_runs_and_last_activity(backend: TrackingBackend) -> None:
    backend.get_or_create_experiment("empty")
    a = backend.create_run(experiment="busy", start_time=1000.0)
    backend.create_run(experiment="busy", start_time=2000.0)
    backend.set_status(a.id, "FINISHED", end_time=5000.0)

    by_name = {e.name: e for e in backend.list_experiments()}

    assert by_name["busy"].run_count == 2
    assert by_name["busy"].last_activity == 5000.0  # newest of end_time / heartbeat
    assert by_name["empty"].run_count == 0
    assert by_name["empty"].last_activity == by_name["empty"].created_at


# -- runs ----------------------------------------------------------------------


def test_run_keeps_every_field(backend: TrackingBackend) -> None:
    parent = backend.create_run(experiment="digits")
    now = time.time() - 1.5
    run = backend.create_run(
        experiment="digits",
        name="child-1",
        parent_id=parent.id,
        params={"lr": 0.01, "epochs": 3},
        tags={"stage": "dev"},
        git_commit="a" * 40,
        git_dirty=True,
        host="box-7",
        user="ada",
        command="python train.py --lr 0.01",
        start_time=now,
    )

    got = backend.get_run(run.id)

    assert len(got.id) == 32 and int(got.id, 16) >= 0
    assert (got.experiment, got.name, got.parent_id) == ("digits", "child-1", parent.id)
    assert (got.git_commit, got.git_dirty, got.host, got.user) == ("a" * 40, True, "box-7", "ada")
    assert got.command == "python train.py --lr 0.01"
    assert (got.status, got.start_time, got.heartbeat_at, got.end_time) == ("RUNNING", now, now, None)
    assert got.params == {"lr": "0.01", "epochs": "3"}
    assert got.tags == {"stage": "dev"}
    assert run.params == got.params and run.start_time == now
    assert backend.create_run(experiment="digits").name.startswith("run-")
    chosen = backend.create_run(experiment="digits", run_id="c" * 32)
    assert backend.get_run("c" * 32).id == chosen.id


def test_create_run_with_missing_parent_is_not_found(backend: TrackingBackend) -> None:
    with pytest.raises(NotFound, match="Parent run 'f+' does not exist"):
        backend.create_run(experiment="digits", parent_id="f" * 32)


@pytest.mark.parametrize("status", ["FINISHED", "FAILED", "KILLED"])
def test_set_status_ends_the_run(backend: TrackingBackend, status: str) -> None:
    run = backend.create_run(experiment="digits")
    backend.set_status(run.id, status, end_time=run.start_time + 7)

    got = backend.get_run(run.id)

    assert got.status == status
    assert got.end_time == run.start_time + 7
    assert got.duration == 7


def test_set_status_checks_status_and_run(backend: TrackingBackend) -> None:
    run = backend.create_run(experiment="digits")
    with pytest.raises(ValueError, match="RUNNING, FINISHED, FAILED, KILLED"):
        backend.set_status(run.id, "DONE")
    with pytest.raises(NotFound, match="Run 'nope' does not exist"):
        backend.set_status("nope", "FINISHED")
    with pytest.raises(NotFound, match="Run 'nope' does not exist"):
        backend.get_run("nope")


def test_heartbeat_keeps_a_run_running(backend: TrackingBackend) -> None:
    run = backend.create_run(experiment="digits")
    backend.heartbeat([run.id])
    backend.heartbeat([])  # nothing to do

    got = backend.get_run(run.id)

    assert got.status == "RUNNING" and got.heartbeat_at >= run.start_time


# -- params and tags -----------------------------------------------------------


def test_params_are_write_once(backend: TrackingBackend) -> None:
    run = backend.create_run(experiment="digits", params={"lr": 0.01})
    backend.log_params(run.id, {"lr": "0.01", "batch": 32})  # the same value again is fine

    with pytest.raises(ValueError, match=r"Param 'lr' of run [0-9a-f]{32} is already '0.01'.*got '0.02'"):
        backend.log_params(run.id, {"batch": 32, "lr": 0.02})

    assert backend.get_run(run.id).params == {"lr": "0.01", "batch": "32"}


def test_tags_are_mutable(backend: TrackingBackend) -> None:
    run = backend.create_run(experiment="digits", tags={"stage": "dev", "owner": "ada"})
    backend.set_tags(run.id, {"stage": "prod", "note": "best"})
    backend.delete_tag(run.id, "owner")

    assert backend.get_run(run.id).tags == {"stage": "prod", "note": "best"}


def test_params_and_tags_need_an_existing_run(backend: TrackingBackend) -> None:
    with pytest.raises(NotFound, match="Run 'nope' does not exist"):
        backend.log_params("nope", {"lr": 1})
    with pytest.raises(NotFound, match="Run 'nope' does not exist"):
        backend.set_tags("nope", {"a": "b"})


BAD_KEYS = [
    ("", "should be a non-empty string"),
    ("k" * 251, "should be at most 250 characters, got 251"),
    ("a..b", r"should not contain '\.\.', got 'a\.\.b'"),
    ("a\nb", r"should not contain control characters, got 'a\\nb'"),
    ("a\x00b", r"should not contain control characters, got 'a\\x00b'"),
    ("a\x1bb", r"should not contain control characters, got 'a\\x1bb'"),
]


@pytest.mark.parametrize(("key", "message"), BAD_KEYS)
def test_bad_keys_are_refused_and_nothing_is_stored(backend: TrackingBackend, key: str, message: str) -> None:
    run = backend.create_run(experiment="digits", params={"ok": 1}, tags={"ok": "1"})

    with pytest.raises(ValueError, match=f"Argument param key {message}"):
        backend.log_params(run.id, {"fine": 1, key: 1})
    with pytest.raises(ValueError, match=f"Argument tag key {message}"):
        backend.set_tags(run.id, {"fine": "1", key: "1"})
    with pytest.raises(ValueError, match=f"Argument param key {message}"):
        backend.create_run(experiment="digits", params={key: 1})
    with pytest.raises(ValueError, match=f"Argument experiment {message}"):
        backend.get_or_create_experiment(key)

    got = backend.get_run(run.id)
    assert (got.params, got.tags) == ({"ok": "1"}, {"ok": "1"})
    assert [e.name for e in backend.list_experiments()] == ["digits"]
    assert backend.count_runs() == 1


def test_non_string_key_is_a_type_error(backend: TrackingBackend) -> None:
    run = backend.create_run(experiment="digits")
    with pytest.raises(TypeError, match="Argument param key should be a string, got int: 3"):
        backend.log_params(run.id, {3: "x"})


def test_param_value_with_nul_is_refused(backend: TrackingBackend) -> None:
    run = backend.create_run(experiment="digits")
    with pytest.raises(ValueError, match="The param 'note' should not contain NUL characters"):
        backend.log_params(run.id, {"note": "a\x00b"})


# -- metrics -------------------------------------------------------------------

EXTREMES = [float("nan"), float("inf"), -float("inf"), 5e-324, -5e-324, 1.7976931348623157e308, -1.7976931348623157e308, 0.1, 0.0]


def test_extreme_metric_values_round_trip_exactly(backend: TrackingBackend) -> None:
    run = backend.create_run(experiment="digits")
    backend.log_metrics([(run.id, "x", step, 1000.0 + step, v) for step, v in enumerate(EXTREMES)])
    backend.log_metrics([(run.id, "big_step", 2**63 - 1, 1.0, 1.0), (run.id, "big_step", -(2**63), 1.0, 2.0)])

    h = backend.history(run.id, "x")

    assert h.values.dtype.name == "float64" and h.steps.dtype.name == "int64"
    assert h.steps.tolist() == list(range(len(EXTREMES)))
    assert h.timestamps.tolist() == [1000.0 + s for s in range(len(EXTREMES))]
    for want, got in zip(EXTREMES, h.values.tolist()):
        # NaN is stored as NULL, so its payload is not kept: any NaN reads back as NaN.
        assert math.isnan(got) if math.isnan(want) else bits(got) == bits(want)
    assert backend.history(run.id, "big_step").steps.tolist() == [-(2**63), 2**63 - 1]


def test_latest_metrics_summary(backend: TrackingBackend) -> None:
    run = backend.create_run(experiment="digits")
    # Steps out of order across batches: the newest value is the one of the highest step.
    backend.log_metrics([(run.id, "loss", 5, 50.0, 0.5), (run.id, "loss", 1, 10.0, float("nan"))])
    backend.log_metrics([(run.id, "loss", 3, 30.0, -2.0), (run.id, "loss", 9, 90.0, 0.25)])
    backend.log_metrics([(run.id, "loss", 2, 20.0, 7.0), (run.id, "acc", 0, 1.0, float("nan"))])

    m = backend.get_run(run.id).metrics

    assert (m["loss"].step, m["loss"].timestamp, m["loss"].value) == (9, 90.0, 0.25)
    assert (m["loss"].min, m["loss"].max, m["loss"].count) == (-2.0, 7.0, 5)  # NaN ignored
    assert math.isnan(m["acc"].value) and math.isnan(m["acc"].min) and math.isnan(m["acc"].max)
    assert m["acc"].count == 1
    assert backend.metric_keys(run.id) == ["acc", "loss"]
    assert backend.history(run.id, "loss").steps.tolist() == [1, 2, 3, 5, 9]
    assert backend.history(run.id, "missing").values.size == 0


def test_newest_value_is_nan_when_the_last_step_is_nan(backend: TrackingBackend) -> None:
    run = backend.create_run(experiment="digits")
    backend.log_metrics([(run.id, "loss", 0, 1.0, 1.0)])
    backend.log_metrics([(run.id, "loss", 1, 2.0, float("nan"))])

    summary = backend.get_run(run.id).metrics["loss"]

    assert math.isnan(summary.value) and (summary.min, summary.max, summary.count) == (1.0, 1.0, 2)


def test_history_pages_with_offset_and_limit(backend: TrackingBackend) -> None:
    run = backend.create_run(experiment="digits")
    backend.log_metrics([(run.id, "x", i, float(i), i * 0.5) for i in range(25)])

    assert backend.history(run.id, "x").values.tolist() == [i * 0.5 for i in range(25)]
    assert backend.history(run.id, "x", offset=3, limit=10).steps.tolist() == list(range(3, 13))
    assert backend.history(run.id, "x", offset=20).steps.tolist() == [20, 21, 22, 23, 24]


# -- search --------------------------------------------------------------------


def test_search_filter_order_count_and_keys(backend: TrackingBackend) -> None:
    for i, lr in enumerate(["0.1", "0.01", "0.001"]):
        run = backend.create_run(experiment="sweep", params={"lr": lr}, tags={"i": i})
        backend.log_metrics([(run.id, "acc", 0, 1.0, 0.5 + i / 10)])
    other = backend.create_run(experiment="other", params={"seed": 1})
    backend.log_metrics([(other.id, "loss", 0, 1.0, 0.1)])

    found = backend.search_runs(experiments="sweep", filter="metrics.acc > 0.55", order_by=["metrics.acc DESC"])
    assert [r.params["lr"] for r in found] == ["0.001", "0.01"]
    assert found[0].metrics["acc"].value == pytest.approx(0.7)
    assert len(backend.search_runs()) == 4
    assert len(backend.search_runs(experiments=["sweep", "other"], limit=2)) == 2
    assert len(backend.search_runs(experiments=["sweep", "other"], limit=2, offset=3)) == 1
    assert backend.search_runs(experiments=[]) == [] and backend.count_runs(experiments=[]) == 0
    assert backend.count_runs() == 4
    assert backend.count_runs(experiments="sweep", filter="params.lr = '0.01'") == 1
    assert backend.run_keys(experiments="sweep") == {"params": ["lr"], "metrics": ["acc"], "tags": ["i"]}
    assert backend.run_keys() == {"params": ["lr", "seed"], "metrics": ["acc", "loss"], "tags": ["i"]}


def test_bad_filters_and_pages_are_refused(backend: TrackingBackend) -> None:
    with pytest.raises(FilterError, match=r"(?s)metrics\.acc >> 1\n\s+\^"):
        backend.search_runs(filter="metrics.acc >> 1")
    with pytest.raises(FilterError):
        backend.count_runs(filter="nonsense ===")
    with pytest.raises(ValueError, match=r"limit should be an integer from 1 to 10000"):
        backend.search_runs(limit=10_001)


# -- artifacts -----------------------------------------------------------------


def test_artifacts_log_list_download_delete(backend: TrackingBackend, tmp_path: Path) -> None:
    model = tmp_path / "model.bin"
    model.write_bytes(b"\x00weights\xff" * 100)
    plots = tmp_path / "plots"
    (plots / "sub").mkdir(parents=True)
    (plots / "loss.svg").write_text("<svg/>")
    (plots / "sub" / "acc.svg").write_text("<svg></svg>")
    run = backend.create_run(experiment="digits")

    logged = backend.log_artifact(run.id, model)
    backend.log_artifact(run.id, str(plots), name="figures")
    info = backend.put_artifact_bytes(run.id, "notes/readme.txt", b"hello")

    assert [(i.path, i.size) for i in logged] == [("model.bin", 900)]
    assert (info.path, info.size) == ("notes/readme.txt", 5) and len(info.sha256) == 64
    listed = backend.list_artifacts(run.id)
    assert [a.path for a in listed] == ["figures/loss.svg", "figures/sub/acc.svg", "model.bin", "notes/readme.txt"]
    assert [a.path for a in backend.list_artifacts(run.id, "figures/sub")] == ["figures/sub/acc.svg"]
    assert {a.path: a.sha256 for a in listed}["model.bin"] == logged[0].sha256
    got = backend.download_artifact(run.id, "model.bin", tmp_path / "down")
    assert got == tmp_path / "down" / "model.bin" and got.read_bytes() == model.read_bytes()
    assert backend.download_artifact(run.id, "figures/sub/acc.svg", str(tmp_path / "down")).read_text() == "<svg></svg>"

    backend.delete_artifact(run.id, "figures")
    assert [a.path for a in backend.list_artifacts(run.id)] == ["model.bin", "notes/readme.txt"]


def test_artifact_errors(backend: TrackingBackend, tmp_path: Path) -> None:
    run = backend.create_run(experiment="digits")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ArtifactPathError, match="should not contain '..'"):
        backend.log_artifact(run.id, tmp_path / "f.txt", name="../escape")
    with pytest.raises(ArtifactPathError):
        backend.put_artifact_bytes(run.id, "/etc/passwd", b"x")
    with pytest.raises(NotFound, match="no such file"):
        backend.log_artifact(run.id, tmp_path / "missing.txt")
    with pytest.raises(NotFound, match="has no artifact"):
        backend.download_artifact(run.id, "nothing.bin", tmp_path)
    with pytest.raises(NotFound):
        backend.put_artifact_bytes("0" * 32, "x.txt", b"x")
    assert backend.list_artifacts(run.id) == []


# -- datasets ------------------------------------------------------------------

RECORD = {
    "fingerprint": "ab" * 32,
    "name": "iris",
    "task": "classification",
    "n_rows": 150,
    "schema": {"features": 4},
    "profile": {"rows": 150},
    "source": "bundled:iris",
}


def test_datasets_are_kept_once_and_linked_by_role(backend: TrackingBackend) -> None:
    a = backend.create_run(experiment="data")
    b = backend.create_run(experiment="data")
    backend.log_dataset(a.id, RECORD, "train")
    backend.log_dataset(b.id, RECORD, role="val")

    got = backend.get_dataset(RECORD["fingerprint"])  # type: ignore[arg-type]
    assert {k: got[k] for k in RECORD} == RECORD
    assert backend.run_datasets(a.id) == {"train": RECORD["fingerprint"]}
    assert backend.run_datasets(b.id) == {"val": RECORD["fingerprint"]}
    with pytest.raises(NotFound):
        backend.get_dataset("cd" * 32)
    with pytest.raises(NotFound):
        backend.run_datasets("0" * 32)
    with pytest.raises(ValueError):
        backend.log_dataset(a.id, RECORD, role="not a role!")


def test_dataset_rows_are_stored_once_with_lineage_both_ways(backend: TrackingBackend, tmp_path: Path) -> None:
    from loopml.data import from_arrays
    from loopml.data.lineage import dataset_record
    from loopml.data.rows import read_rows, write_rows

    ds = from_arrays(np.arange(12, dtype=np.float32).reshape(4, 3), [0, 1, 0, 1], name="tiny")
    fp = ds.fingerprint
    backend.put_dataset(dataset_record(ds), origin={"kind": "labels", "model": "m", "version": 1},
                        predictions=[("r1", 0), ("r1", 1), ("r2", 0), ("r1", 0)])
    backend.put_dataset(dataset_record(ds), origin={"kind": "other"})  # the first origin stays
    rows = write_rows(tmp_path / "rows.npz", ds)
    first = backend.put_dataset_rows(fp, rows)
    again = backend.put_dataset_rows(fp, rows)  # the same content: nothing written
    assert first["created"] and not again["created"]
    assert again["stored_sha256"] == first["stored_sha256"] and first["stored_path"] == f"_datasets/{fp}.npz"

    got = backend.get_dataset(fp)
    assert got["origin"] == {"kind": "labels", "model": "m", "version": 1} and got["stored_size"] == rows.stat().st_size
    x, y = read_rows(backend.download_dataset_rows(fp, tmp_path / "back"), fp)
    assert x.tolist() == ds.x.tolist() and y.tolist() == [0, 1, 0, 1]
    assert [d["fingerprint"] for d in backend.list_datasets(prefix=fp[:12])] == [fp]
    assert backend.list_datasets(prefix="f" * 12 if not fp.startswith("f" * 12) else "0" * 12) == []

    run = backend.create_run(experiment="data")
    backend.log_dataset(run.id, dataset_record(ds), role="val")
    lineage = backend.dataset_lineage(fp)
    assert [(r["run_id"], r["role"], r["experiment"]) for r in lineage["runs"]] == [(run.id, "val", "data")]
    assert lineage["predictions"] == {"rows": 3, "request_ids": ["r1", "r2"], "truncated": False}
    assert lineage["origin"]["kind"] == "labels" and lineage["stored"] is True and lineage["versions"] == []
    assert [(d["fingerprint"], d["rows"]) for d in backend.datasets_of_request("r1")] == [(fp, [0, 1])]
    assert backend.datasets_of_request("nobody") == []

    backend.put_dataset(RECORD)  # a record without rows
    with pytest.raises(NotFound, match="record only"):
        backend.download_dataset_rows(RECORD["fingerprint"], tmp_path)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        backend.put_dataset_rows("cd" * 32, rows)  # no such record
    with pytest.raises(NotFound):
        backend.dataset_lineage("cd" * 32)
    with pytest.raises(ValueError, match="origin"):
        backend.put_dataset(RECORD, origin={"bad": float("nan")})
    with pytest.raises(ValueError, match="predictions"):
        backend.put_dataset(RECORD, predictions=[("r1", -1)])
    with pytest.raises(ValueError):
        backend.list_datasets(prefix="not hex")
