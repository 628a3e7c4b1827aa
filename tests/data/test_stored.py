"""Datasets stored by content (loopml.data.store_dataset): one file per fingerprint, checked on read,
lineage both ways, the Trainer's store_data, registration's record of them, and `loopml data`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import loopml
from loopml import data
from loopml.cli import app
from loopml.data import Dataset
from loopml.data.sources import save_rows, stored
from loopml.errors import IntegrityError, NotFound
from loopml.tracking.api import backend_for
from tests.roots import keys_under, overwrite, stored_bytes, written_at


def test_same_rows_stored_once_read_back_checked(use_store: str, tmp_path: Path, iris: Dataset) -> None:
    for _ in range(2):  # two runs log the same content: one record, one file
        with loopml.start_run(experiment="data") as run:
            data.log_dataset(run, iris, role="train")
    fp = data.store_dataset(iris, origin={"kind": "file", "path": "iris.csv"}, predictions=[("req-1", 3), ("req-2", 0)])
    assert fp == iris.fingerprint
    backend = backend_for()
    key = f"_datasets/{fp}.npz"
    assert keys_under(backend, "_datasets") == [key]  # in the local folder or the S3 bucket
    before = written_at(backend, key)
    data.store_dataset(iris)  # stored: not written again
    assert written_at(backend, key) == before

    back = stored(backend, fp)
    assert back.fingerprint == fp and back.class_names == iris.class_names and back.feature_names == iris.feature_names
    assert torch.equal(back.x, iris.x) and torch.equal(back.y, iris.y)

    seen = data.lineage(fp[:12])
    assert [r["role"] for r in seen["runs"]] == ["train", "train"] and seen["origin"]["kind"] == "file"
    assert seen["predictions"]["request_ids"] == ["req-1", "req-2"]
    assert [(d["fingerprint"], d["rows"]) for d in data.datasets_of_request("req-1")] == [(fp, [3])]

    overwrite(backend, key, (stored_bytes(backend, key) or b"")[:-8] + b"tampered")  # altered after it was stored
    with pytest.raises(IntegrityError, match="changed after it was stored"):
        stored(backend, fp)
    assert backend.artifacts.remove(key)
    with pytest.raises(IntegrityError, match="missing"):
        stored(backend, fp)


def test_same_content_gives_the_same_bytes(tmp_path: Path, iris: Dataset) -> None:
    from loopml.data.rows import write_rows

    a = write_rows(tmp_path / "a.npz", iris).read_bytes()
    b = write_rows(tmp_path / "b.npz", data.from_arrays(iris.x.numpy().copy(), iris.y.numpy())).read_bytes()
    assert a == b  # no clock in the archive: two writers of one dataset agree on its sha256
    with np.load(tmp_path / "a.npz") as archive:  # a plain .npz for NumPy
        assert archive["x"].shape == (150, 4)


def test_rows_kept_by_earlier_loopml_are_still_read(use_store: str, iris: Dataset) -> None:
    with loopml.start_run(experiment="data") as run:
        data.log_dataset(run, iris, role="train", keep_rows=False)  # the record only
        save_rows(run, iris)  # how loopml kept rows before 0006: a run artifact
    backend = backend_for()
    assert backend.get_dataset(iris.fingerprint)["stored_path"] is None
    assert stored(backend, iris.fingerprint).fingerprint == iris.fingerprint


def test_round_trip_through_a_server(use_server: Any, iris: Dataset, tmp_path: Path) -> None:
    from loopml.data.lineage import dataset_record
    from loopml.data.rows import write_rows

    fp = data.store_dataset(iris, origin={"kind": "labels", "model": "m", "version": 2}, predictions=[("r", 0)])
    backend = backend_for()
    assert stored(backend, fp).fingerprint == fp
    assert data.lineage(fp)["origin"] == {"kind": "labels", "model": "m", "version": 2}

    other = data.from_arrays(np.zeros((3, 2), dtype=np.float32), [0, 1, 0], name="other")
    backend.put_dataset(dataset_record(other))
    wrong = write_rows(tmp_path / "wrong.npz", iris)  # iris's rows under other's fingerprint
    with pytest.raises(ValueError, match="fingerprint"):
        backend.put_dataset_rows(other.fingerprint, wrong)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="does not read as an .npz"):
        backend.put_dataset_rows(other.fingerprint, tmp_path / "junk.npz")
    assert backend.get_dataset(other.fingerprint)["stored_path"] is None  # nothing was kept

    server_store, key = use_server.app.state.store, f"_datasets/{fp}.npz"  # in a folder or an S3 bucket
    overwrite(server_store, key, b"x" + (stored_bytes(server_store, key) or b"")[1:])
    with pytest.raises(IntegrityError):
        stored(backend, fp)


def test_trainer_stores_its_data_unless_told_not_to(use_store: str) -> None:
    from loopml.models import registry as R
    from loopml.train import Trainer
    from tests.models.nets import MLP

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=120)
    parts = data.split(data.from_arrays(x, y, name="noise"), val=0.25, test=0.0, seed=0)
    torch.manual_seed(0)
    model = MLP(64, 8, 10)
    with loopml.start_run(experiment="fit") as run:
        Trainer(model, experiment="fit", seed=0).fit(parts.train, parts.val, epochs=1, batch_size=60, check_data=False)
        version = R.register(model, "noise-mlp", input_example=parts.train.x[:2], formats=("torch",),
                             init_args={"n_in": 64, "hidden": 8, "n_out": 10})
    backend = backend_for()
    for ds in (parts.train, parts.val):
        assert backend.get_dataset(ds.fingerprint)["stored_path"] == f"_datasets/{ds.fingerprint}.npz"
    assert version.lineage["stored"] == ["train", "val"]
    assert version.lineage["datasets"] == {"train": parts.train.fingerprint, "val": parts.val.fingerprint}
    assert stored(backend, version.lineage["datasets"]["val"]).fingerprint == parts.val.fingerprint
    assert [(v["name"], v["roles"]) for v in data.lineage(parts.train.fingerprint)["versions"]] == [("noise-mlp", ["train"])]

    big = data.from_arrays(x[:40] + 1, y[:40], name="large")
    Trainer(MLP(64, 8, 10), experiment="fit", seed=0).fit(big, epochs=1, batch_size=40, check_data=False, store_data=False)
    record = backend.get_dataset(big.fingerprint)  # the record, not the rows
    assert record["n_rows"] == 40 and record["stored_path"] is None
    with pytest.raises(TypeError, match="store_data"):
        Trainer(MLP(64, 8, 10), track=False).fit(big, epochs=1, store_data="no")  # type: ignore[arg-type]


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


def test_cli_list_show_export_and_bad_input(use_store: str, tmp_path: Path, iris: Dataset) -> None:
    fp = data.store_dataset(iris, origin={"kind": "file"})
    with loopml.start_run(experiment="data") as run:
        data.log_dataset(run, iris, role="test")
    listed = _cli("data", "list")
    assert listed.exit_code == 0, listed.output
    assert fp[:12] in listed.output and "iris" in listed.output and "kind=file" in listed.output
    shown = _cli("data", "show", fp[:12])
    assert shown.exit_code == 0, shown.output
    assert fp in shown.output and run.id in shown.output and "test" in shown.output

    for suffix in (".npz", ".csv"):
        out = tmp_path / f"iris{suffix}"
        done = _cli("data", "export", fp[:12], "--out", str(out))
        assert done.exit_code == 0, done.output
        back = data.read_file(out, target="label" if suffix == ".csv" else None)
        assert len(back) == 150 and np.allclose(back.x.numpy(), iris.x.numpy())
    assert data.read_file(tmp_path / "iris.npz").fingerprint == fp

    bad = _cli("data", "export", fp[:12], "--out", str(tmp_path / "iris.txt"))
    assert bad.exit_code == 2 and ".npz, .csv or .parquet" in bad.output
    unknown = _cli("data", "show", "0" * 12 if not fp.startswith("0" * 12) else "1" * 12)
    assert unknown.exit_code == 2 and "loopml data list" in unknown.output
    short = _cli("data", "show", fp[:6])
    assert short.exit_code == 2 and "12+" in short.output
    assert "Traceback" not in unknown.output + short.output + bad.output


def test_an_ambiguous_prefix_is_refused(store: Any) -> None:
    from loopml.data.stored import resolve_prefix

    prefix = "abcdef012345"
    for tail in ("0", "1"):  # two records whose fingerprints share 12 hex digits
        store.put_dataset({"fingerprint": prefix + tail * 52, "name": "d", "task": "classification", "n_rows": 1,
                           "schema": {}, "profile": {}})
    with pytest.raises(ValueError, match="more than one dataset"):
        resolve_prefix(store, prefix)
    assert resolve_prefix(store, prefix + "1") == prefix + "1" * 52  # unique
    with pytest.raises(NotFound):
        resolve_prefix(store, "0" * 12)


def test_rows_routes_need_the_token_a_known_host_and_a_fingerprint(live_server: Any, iris: Dataset, tmp_path: Path) -> None:
    import httpx

    from loopml.data.rows import write_rows
    from loopml.server import create_app
    from loopml.store import TrackingStore
    from loopml.tracking.remote import RemoteStore

    sqlite_store = TrackingStore(f"sqlite:///{tmp_path / 'loopml.db'}", artifact_root=tmp_path / "artifacts")
    srv = live_server(create_app(sqlite_store, auth_token="s3cret"))
    fp = data.store_dataset(iris, backend=sqlite_store)
    body = write_rows(tmp_path / "rows.npz", iris).read_bytes()
    url = f"{srv.url}/api/v1/datasets/{fp}/rows"
    octet = {"Content-Type": "application/octet-stream"}
    assert httpx.get(url).status_code == 401
    assert httpx.put(url, content=body, headers=octet).status_code == 401
    token = {"Authorization": "Bearer s3cret"}
    assert httpx.get(url, headers={**token, "Host": "evil.example"}).status_code == 400  # DNS rebinding
    bad = httpx.get(f"{srv.url}/api/v1/datasets/{'..%2F' * 3}etc/rows", headers=token)
    assert bad.status_code in (400, 404) and bad.json()["error"]["code"] in ("bad_request", "not_found")
    assert httpx.put(url, content=body, headers={**token, "Content-Type": "application/json"}).status_code == 415
    with RemoteStore(srv.url, token="s3cret") as remote:
        assert stored(remote, fp).fingerprint == fp
        assert remote.put_dataset_rows(fp, tmp_path / "rows.npz")["created"] is False  # stored once
    sqlite_store.close()
