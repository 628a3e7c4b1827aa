"""TrackingStore on a real SQLite file and a real PostgreSQL: entities, metrics, bad input."""

from __future__ import annotations

import math
import struct
import time

import pytest

from loopml.errors import NotFound
from loopml.store import TrackingStore


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


# -- experiments ---------------------------------------------------------------


def test_get_or_create_experiment_is_idempotent(store: TrackingStore) -> None:
    first = store.get_or_create_experiment("digits")
    again = store.get_or_create_experiment("digits")
    other = store.get_or_create_experiment("mnist")

    assert again.id == first.id and again.created_at == first.created_at
    assert other.id != first.id
    assert [e.name for e in store.list_experiments()] == ["digits", "mnist"]


def test_list_experiments_counts_runs_and_last_activity(store: TrackingStore) -> None:
    store.get_or_create_experiment("empty")
    a = store.create_run(experiment="busy", start_time=1000.0)
    b = store.create_run(experiment="busy", start_time=2000.0)
    store.set_status(a.id, "FINISHED", end_time=5000.0)
    store.heartbeat([b.id], at=3000.0)

    by_name = {e.name: e for e in store.list_experiments()}

    assert by_name["busy"].run_count == 2
    assert by_name["busy"].last_activity == 5000.0  # newest of end_time / heartbeat
    assert by_name["empty"].run_count == 0
    assert by_name["empty"].last_activity == by_name["empty"].created_at


# -- runs ----------------------------------------------------------------------


def test_run_keeps_every_field(store: TrackingStore) -> None:
    parent = store.create_run(experiment="digits")
    now = time.time() - 1.5
    run = store.create_run(
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

    got = store.get_run(run.id)

    assert len(got.id) == 32 and int(got.id, 16) >= 0
    assert (got.experiment, got.name, got.parent_id) == ("digits", "child-1", parent.id)
    assert (got.git_commit, got.git_dirty, got.host, got.user) == ("a" * 40, True, "box-7", "ada")
    assert got.command == "python train.py --lr 0.01"
    assert (got.status, got.start_time, got.heartbeat_at, got.end_time) == ("RUNNING", now, now, None)
    assert got.params == {"lr": "0.01", "epochs": "3"}
    assert got.tags == {"stage": "dev"}
    assert store.create_run(experiment="digits").name.startswith("run-")


def test_create_run_with_missing_parent_is_not_found(store: TrackingStore) -> None:
    with pytest.raises(NotFound, match="Parent run 'f+' does not exist"):
        store.create_run(experiment="digits", parent_id="f" * 32)


@pytest.mark.parametrize("status", ["FINISHED", "FAILED", "KILLED"])
def test_set_status_ends_the_run(store: TrackingStore, status: str) -> None:
    run = store.create_run(experiment="digits")
    store.set_status(run.id, status, end_time=run.start_time + 7)

    got = store.get_run(run.id)

    assert got.status == status
    assert got.end_time == run.start_time + 7
    assert got.duration == 7


def test_set_status_checks_status_and_run(store: TrackingStore) -> None:
    run = store.create_run(experiment="digits")
    with pytest.raises(ValueError, match="Argument status should be one of RUNNING, FINISHED, FAILED, KILLED, got 'DONE'"):
        store.set_status(run.id, "DONE")
    with pytest.raises(NotFound, match="Run 'nope' does not exist"):
        store.set_status("nope", "FINISHED")
    with pytest.raises(NotFound, match="Run 'nope' does not exist"):
        store.get_run("nope")


def test_stale_heartbeat_reads_as_killed_until_the_next_beat(db_uri: str, tmp_path) -> None:
    st = TrackingStore(db_uri, artifact_root=tmp_path / "a", heartbeat_timeout=60.0)
    try:
        old = time.time() - 3600
        run = st.create_run(experiment="digits", start_time=old)
        stale = st.get_run(run.id)
        assert stale.status == "KILLED"
        assert stale.end_time == old  # a killed run ends at its last heartbeat

        st.heartbeat([run.id])
        fresh = st.get_run(run.id)
        assert fresh.status == "RUNNING" and fresh.end_time is None and fresh.heartbeat_at > old
    finally:
        st.close()


# -- params and tags -----------------------------------------------------------


def test_params_are_write_once(store: TrackingStore) -> None:
    run = store.create_run(experiment="digits", params={"lr": 0.01})
    store.log_params(run.id, {"lr": "0.01", "batch": 32})  # the same value again is fine

    with pytest.raises(ValueError, match=r"Param 'lr' of run [0-9a-f]{32} is already '0.01'.*got '0.02'"):
        store.log_params(run.id, {"batch": 32, "lr": 0.02})

    assert store.get_run(run.id).params == {"lr": "0.01", "batch": "32"}


def test_tags_are_mutable(store: TrackingStore) -> None:
    run = store.create_run(experiment="digits", tags={"stage": "dev", "owner": "ada"})
    store.set_tags(run.id, {"stage": "prod", "note": "best"})
    store.delete_tag(run.id, "owner")

    assert store.get_run(run.id).tags == {"stage": "prod", "note": "best"}


def test_params_and_tags_need_an_existing_run(store: TrackingStore) -> None:
    with pytest.raises(NotFound, match="Run 'nope' does not exist"):
        store.log_params("nope", {"lr": 1})
    with pytest.raises(NotFound, match="Run 'nope' does not exist"):
        store.set_tags("nope", {"a": "b"})


# -- metrics -------------------------------------------------------------------

EXTREMES = [float("nan"), float("inf"), -float("inf"), 5e-324, -5e-324, 1.7976931348623157e308, -1.7976931348623157e308, 0.1, 0.0]


def test_extreme_metric_values_round_trip_exactly(store: TrackingStore) -> None:
    run = store.create_run(experiment="digits")
    store.log_metrics([(run.id, "x", step, 1000.0 + step, v) for step, v in enumerate(EXTREMES)])

    h = store.history(run.id, "x")

    assert h.values.dtype.name == "float64" and h.steps.dtype.name == "int64"
    assert h.steps.tolist() == list(range(len(EXTREMES)))
    assert h.timestamps.tolist() == [1000.0 + s for s in range(len(EXTREMES))]
    for want, got in zip(EXTREMES, h.values.tolist()):
        # NaN is stored as NULL, so its payload is not kept: any NaN reads back as NaN.
        assert math.isnan(got) if math.isnan(want) else bits(got) == bits(want)


def test_negative_zero_keeps_its_sign(store: TrackingStore) -> None:
    run = store.create_run(experiment="digits")
    store.log_metrics([(run.id, "z", 0, 1.0, -0.0)])

    assert bits(store.history(run.id, "z").values[0]) == bits(-0.0)  # points are stored bit-exactly
    latest = store.get_run(run.id).metrics["z"].value
    if "sqlite" in store.uri:
        # the summary is a REAL column: SQLite writes integral values as integers, dropping the sign
        assert latest == 0.0
    else:
        assert bits(latest) == bits(-0.0)


def test_latest_metrics_summary(store: TrackingStore) -> None:
    run = store.create_run(experiment="digits")
    # Steps out of order across batches: the newest value is the one of the highest step.
    store.log_metrics([(run.id, "loss", 5, 50.0, 0.5), (run.id, "loss", 1, 10.0, float("nan"))])
    store.log_metrics([(run.id, "loss", 3, 30.0, -2.0), (run.id, "loss", 9, 90.0, 0.25)])
    store.log_metrics([(run.id, "loss", 2, 20.0, 7.0), (run.id, "acc", 0, 1.0, float("nan"))])

    m = store.get_run(run.id).metrics

    assert (m["loss"].step, m["loss"].timestamp, m["loss"].value) == (9, 90.0, 0.25)
    assert (m["loss"].min, m["loss"].max, m["loss"].count) == (-2.0, 7.0, 5)  # NaN ignored
    assert math.isnan(m["acc"].value) and math.isnan(m["acc"].min) and math.isnan(m["acc"].max)
    assert m["acc"].count == 1
    assert store.metric_keys(run.id) == ["acc", "loss"]
    assert store.history(run.id, "loss").steps.tolist() == [1, 2, 3, 5, 9]
    assert store.history(run.id, "missing").values.size == 0


def test_newest_value_is_nan_when_the_last_step_is_nan(store: TrackingStore) -> None:
    run = store.create_run(experiment="digits")
    store.log_metrics([(run.id, "loss", 0, 1.0, 1.0)])
    store.log_metrics([(run.id, "loss", 1, 2.0, float("nan"))])

    summary = store.get_run(run.id).metrics["loss"]

    assert math.isnan(summary.value) and (summary.min, summary.max, summary.count) == (1.0, 1.0, 2)


# -- bad input -----------------------------------------------------------------

BAD_KEYS = [
    ("", "should be a non-empty string"),
    ("k" * 251, "should be at most 250 characters, got 251"),
    ("a..b", r"should not contain '\.\.', got 'a\.\.b'"),
    ("a\nb", r"should not contain control characters, got 'a\\nb'"),
    ("a\x00b", r"should not contain control characters, got 'a\\x00b'"),
    ("a\x1bb", r"should not contain control characters, got 'a\\x1bb'"),
]


@pytest.mark.parametrize(("key", "message"), BAD_KEYS)
def test_bad_keys_are_refused_and_nothing_is_stored(store: TrackingStore, key: str, message: str) -> None:
    run = store.create_run(experiment="digits", params={"ok": 1}, tags={"ok": "1"})

    with pytest.raises(ValueError, match=f"Argument param key {message}"):
        store.log_params(run.id, {"fine": 1, key: 1})
    with pytest.raises(ValueError, match=f"Argument tag key {message}"):
        store.set_tags(run.id, {"fine": "1", key: "1"})
    with pytest.raises(ValueError, match=f"Argument param key {message}"):
        store.create_run(experiment="digits", params={key: 1})
    with pytest.raises(ValueError, match=f"Argument experiment {message}"):
        store.get_or_create_experiment(key)

    got = store.get_run(run.id)
    assert (got.params, got.tags) == ({"ok": "1"}, {"ok": "1"})
    assert [e.name for e in store.list_experiments()] == ["digits"]


def test_non_string_key_is_a_type_error(store: TrackingStore) -> None:
    run = store.create_run(experiment="digits")
    with pytest.raises(TypeError, match="Argument param key should be a string, got int: 3"):
        store.log_params(run.id, {3: "x"})


def test_param_value_with_nul_is_refused(store: TrackingStore) -> None:
    run = store.create_run(experiment="digits")
    with pytest.raises(ValueError, match="The param 'note' should not contain NUL characters"):
        store.log_params(run.id, {"note": "a\x00b"})
