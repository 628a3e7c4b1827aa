"""Dataset records in the store (SQLite, PostgreSQL, over HTTP) and runs linked to them."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

import loopml
from loopml.data import Dataset, check, dataset_record, from_arrays, log_check, log_dataset, split
from loopml.errors import NotFound


def _assert_round_trip(st: Any, ds: Dataset) -> None:
    run = st.create_run(experiment="data")
    record = dataset_record(ds)
    st.log_dataset(run.id, record, "train")

    got = st.get_dataset(ds.fingerprint)
    assert {k: got[k] for k in record} == json.loads(json.dumps(record))
    assert isinstance(got["created_at"], float)
    assert st.run_datasets(run.id) == {"train": ds.fingerprint}


def test_store_round_trip(store: Any, digits: Dataset) -> None:
    _assert_round_trip(store, digits)


def test_round_trip_through_the_server(remote: Any, digits: Dataset) -> None:
    _assert_round_trip(remote, digits)


def test_profiles_with_missing_values_are_stored_as_null(store: Any) -> None:
    ds = from_arrays(np.array([[np.nan, 1.0], [np.nan, np.inf]]), [0, 1], name="holes")
    run = store.create_run(experiment="data")
    store.log_dataset(run.id, dataset_record(ds), "eval")
    feature = store.get_dataset(ds.fingerprint)["profile"]["features"]["x0"]
    assert feature["mean"] is None and feature["missing"] == 2


def test_same_content_is_one_record_and_roles_relink(store: Any, iris: Dataset) -> None:
    parts = split(iris, seed=0)
    run = store.create_run(experiment="data")
    for role, ds in zip(("train", "val", "test"), parts):
        store.log_dataset(run.id, dataset_record(ds), role)
    other = store.create_run(experiment="data")
    store.log_dataset(other.id, dataset_record(parts.train), "train")
    store.log_dataset(run.id, dataset_record(iris), "train")  # a later call for a role replaces the link

    assert store.run_datasets(run.id) == {"test": parts.test.fingerprint, "train": iris.fingerprint,  # type: ignore[union-attr]
                                          "val": parts.val.fingerprint}  # type: ignore[union-attr]
    assert store.run_datasets(other.id) == {"train": parts.train.fingerprint}
    assert store.get_dataset(parts.train.fingerprint)["name"] == "iris-train"


def test_unknown_things_are_not_found(store: Any) -> None:
    with pytest.raises(NotFound, match="Dataset '0{64}' does not exist"):
        store.get_dataset("0" * 64)
    with pytest.raises(NotFound, match="Run 'nope' does not exist"):
        store.run_datasets("nope")
    with pytest.raises(NotFound, match="Run 'nope' does not exist"):
        store.log_dataset("nope", dataset_record(from_arrays(np.zeros((2, 1)), [0, 1])), "train")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"fingerprint": "abc"}, r"Argument fingerprint should be 64 lowercase hex digits"),
        ({"task": "ranking"}, r"Argument record\['task'\] should be one of"),
        ({"profile": {"mean": float("nan")}}, r"Argument record\['profile'\] should be JSON"),
        ({"n_rows": -1}, r"Argument record\['n_rows'\] should be a non-negative integer"),
    ],
)
def test_bad_records_are_refused(store: Any, change: dict, match: str) -> None:
    run = store.create_run(experiment="data")
    record = {**dataset_record(from_arrays(np.zeros((2, 1)), [0, 1])), **change}
    with pytest.raises(ValueError, match=match):
        store.log_dataset(run.id, record, "train")
    with pytest.raises(ValueError, match=r"Argument role should be 1 to 16 lowercase letters"):
        store.log_dataset(run.id, dataset_record(from_arrays(np.zeros((2, 1)), [0, 1])), "Training Set")


def test_bad_records_are_refused_over_http(remote: Any) -> None:
    from loopml.tracking.remote import RemoteValueError

    run = remote.create_run(experiment="data")
    with pytest.raises(RemoteValueError, match=r"Argument role should be"):
        remote.log_dataset(run.id, dataset_record(from_arrays(np.zeros((2, 1)), [0, 1])), "BAD ROLE")
    with pytest.raises(NotFound):
        remote.get_dataset("f" * 64)


def _log_split_and_check(digits: Dataset) -> str:
    parts = split(digits, seed=0)
    with loopml.start_run(experiment="data") as run:
        fps = {role: log_dataset(run, ds, role=role) for role, ds in zip(("train", "val", "test"), parts)}
        log_check(run, check(parts))
    assert fps == parts.fingerprints
    return run.id


def _assert_logged(run_id: str, digits: Dataset, backend: Any) -> None:
    parts = split(digits, seed=0)
    run = loopml.get_run(run_id)
    assert backend.run_datasets(run_id) == parts.fingerprints
    assert run.tags["dataset.train"] == parts.train.fingerprint
    assert run.tags["data_check"] == "ok: 0 errors, 3 warnings"
    reference = f"datasets/{parts.train.fingerprint}.reference.npz"  # the train part's drift reference, at any size
    assert [a.path for a in run.artifacts()] == ["data_check.json", reference]  # the rows are not the run's
    for fp in parts.fingerprints.values():  # each part's rows, kept by content (<= 32 MiB)
        assert backend.get_dataset(fp)["stored_path"] == f"_datasets/{fp}.npz"
    from loopml.data.sources import stored

    back = stored(backend, parts.val.fingerprint, run_ids=[run_id])
    assert back.fingerprint == parts.val.fingerprint and back.class_names == parts.val.class_names


def test_log_dataset_links_the_run(use_store: str, digits: Dataset) -> None:
    from loopml.tracking.api import backend_for

    run_id = _log_split_and_check(digits)
    _assert_logged(run_id, digits, backend_for())


def test_log_dataset_over_http(use_server: Any, digits: Dataset) -> None:
    from loopml.tracking.api import backend_for

    run_id = _log_split_and_check(digits)
    _assert_logged(run_id, digits, backend_for())


def test_log_dataset_wants_a_run(digits: Dataset) -> None:
    with pytest.raises(TypeError, match="Argument run should be a loopml Run"):
        log_dataset("run-id", digits)  # type: ignore[arg-type]
