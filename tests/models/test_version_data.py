"""Which data quantize and fit_ood use: explicit data (Dataset, arrays, files, fingerprints, a named bundled set),
else the rows logged with the version's run, else a clear error; shapes checked against the signature first.

The model is a 64-input MLP on a synthetic table, not the demo's digits CNN: nothing may assume the demo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import loopml
from loopml import data
from loopml.errors import DataError
from loopml.models import registry as R
from loopml.models.evaldata import data_for
from loopml.models.nets import MLP
from loopml.models.variants import quantize
from loopml.monitor import fit_ood

torch.set_num_threads(1)

N_IN, N_OUT = 64, 3


def table(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """64 features, 3 classes that a linear layer separates (the argmax of a fixed projection)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_IN)).astype(np.float32)
    w = np.random.default_rng(99).normal(size=(N_IN, N_OUT))
    return x, (x @ w).argmax(axis=1)


def register_mlp(name: str = "mlp", *, log: bool = False, keep_rows: bool | None = None) -> data.Split:
    """Train and register the MLP; with ``log`` its run logs train/val/test (with ``keep_rows``)."""
    x, y = table()
    parts = data.split(data.from_arrays(x, y, name="synthetic"), val=0.15, test=0.15, seed=0)
    torch.manual_seed(0)
    model = MLP(N_IN, N_OUT, hidden=32)
    with loopml.start_run(experiment="mlp") as run:
        if log:
            for role, ds in zip(("train", "val", "test"), parts):
                data.log_dataset(run, ds, role=role, keep_rows=keep_rows)
        from loopml.train import Trainer

        Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), seed=0, track=False).fit(
            parts.train, val=parts.val, epochs=5, batch_size=64
        )
        R.register(model, name, input_example=parts.train.x[:4], class_names=["a", "b", "c"], init_args={"n_in": N_IN, "n_out": N_OUT, "hidden": 32})
    return parts


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    x, y = table(seed=1)
    out = {"npz": tmp_path / "train.npz", "csv": tmp_path / "train.csv", "parquet": tmp_path / "train.parquet"}
    np.savez(out["npz"], x=x, y=y)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(N_IN)]).assign(label=y)
    frame.to_csv(out["csv"], index=False)
    frame.to_parquet(out["parquet"])
    return out


def test_each_file_kind_resolves_to_the_same_rows(files: dict[str, Path]) -> None:
    x, y = table(seed=1)
    for kind, path in files.items():
        ds = data.resolve(path, target="label" if kind != "npz" else None)
        assert ds.x.shape == (600, N_IN), kind
        np.testing.assert_allclose(ds.x.numpy(), x, rtol=1e-6, atol=1e-6)  # CSV keeps ~17 digits of float32
        np.testing.assert_array_equal(ds.y.numpy(), y)
    assert data.resolve(str(files["csv"]), target="label").feature_names[:2] == ["f0", "f1"]


def test_quantize_a_64_input_mlp_from_an_npz_file(use_store: str, files: dict[str, Path]) -> None:
    register_mlp()
    v = quantize("mlp/1", method="dynamic", data=str(files["npz"]))
    assert v.ref == "mlp/2" and v.parent_version == 1 and v.measurements["measured_on"] == "test"
    assert v.measurements["accuracy"] > 0.6  # 3 linearly separable classes; chance is 0.33
    details = v.lineage["quantization"]
    assert details["data_matches_lineage"] is None and details["calibration_rows"] == 420  # 70% of 600


def test_quantize_from_csv_and_parquet_with_a_target(use_store: str, files: dict[str, Path]) -> None:
    register_mlp()
    for kind in ("csv", "parquet"):
        parts = data_for("mlp/1", str(files[kind]), target="label")
        assert (len(parts.train), len(parts.val), len(parts.test)) == (420, 90, 90), kind
    v = quantize("mlp/1", method="dynamic", data=str(files["parquet"]), target="label")
    assert v.measurements["accuracy"] > 0.6


def test_a_table_without_its_target_column_is_refused(use_store: str, files: dict[str, Path]) -> None:
    register_mlp()
    with pytest.raises(ValueError, match=r"Argument target should be a column of train.csv, got 'y'; columns: f0, f1"):
        quantize("mlp/1", method="dynamic", data=str(files["csv"]), target="y")
    with pytest.raises(ValueError, match=r"Argument target should name the label column of train.parquet .*--target label"):
        quantize("mlp/1", method="dynamic", data=str(files["parquet"]))
    assert [v.version for v in R.list_versions("mlp")] == [1]


def test_wrong_shapes_are_refused_before_any_work_naming_both_shapes(use_store: str, tmp_path: Path) -> None:
    register_mlp()
    with pytest.raises(ValueError, match=r"signature shape \(batch, 64\); its train rows have shape \(batch, 1, 8, 8\)"):
        quantize("mlp/1", method="static", data="digits")  # the demo's images, named explicitly
    np.savez(tmp_path / "narrow.npz", x=np.zeros((40, 30), np.float32), y=np.arange(40) % 2)
    with pytest.raises(ValueError, match=r"signature shape \(batch, 64\); its train rows have shape \(batch, 30\)"):
        fit_ood("mlp/1", data=str(tmp_path / "narrow.npz"), detectors=("mahalanobis",))
    version = R.get_version("mlp/1")
    assert "latency_ms" not in version.measurements and "ood_gate" not in version.files  # nothing was done
    assert [v.version for v in R.list_versions("mlp")] == [1]


def test_bad_files_say_what_is_expected(tmp_path: Path) -> None:
    np.savez(tmp_path / "only_x.npz", inputs=np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"arrays 'x' \(inputs\) and 'y' \(labels\).*has \['inputs'\]"):
        data.resolve(str(tmp_path / "only_x.npz"))
    with pytest.raises(ValueError, match="does not exist"):
        data.resolve(str(tmp_path / "missing.csv"), target="y")
    (tmp_path / "rows.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match=r"should be a \.npz, \.csv or \.parquet file"):
        data.resolve(str(tmp_path / "rows.txt"))
    with pytest.raises(ValueError, match="a bundled set by name"):
        data.resolve("mnist")
    with pytest.raises(TypeError, match="Argument data should be"):
        data.resolve(42)


def test_no_data_and_nothing_logged_is_a_clear_error(use_store: str) -> None:
    register_mlp()
    with pytest.raises(DataError, match=r"mlp/1 has no training data logged with its run, and no data was passed; "
                                        r"pass data for it, e\.g\. loopml quantize mlp/1 --method static --data train\.npz"):
        quantize("mlp/1", method="static")
    with pytest.raises(DataError, match=r"e\.g\. loopml monitor fit-ood mlp/1 --data train\.npz"):
        fit_ood("mlp/1", detectors=("mahalanobis",))


def test_logged_datasets_without_rows_say_so(use_store: str) -> None:
    register_mlp(log=True, keep_rows=False)
    with pytest.raises(DataError, match=r"mlp/1's train data \([0-9a-f]{12}\.\.\.\) is recorded with its run but its rows "
                                        r"are not stored"):
        quantize("mlp/1", method="dynamic")


def test_the_rows_logged_with_the_run_are_used_without_being_told(use_store: str) -> None:
    parts = register_mlp(log=True)  # the default keeps rows up to 32 MiB
    v = quantize("mlp/1", method="dynamic")
    assert v.lineage["quantization"]["data_matches_lineage"] is True
    assert v.measurements["measured_on"] == "test"
    gate = fit_ood("mlp/1", detectors=("mahalanobis",), target_false_abstain=0.05)
    assert R.get_version("mlp/1").files["ood_gate"].details["data_matches_lineage"] is True
    assert gate.val_false_abstain <= 0.05  # 90 validation rows: the gate's rate can only be set in steps of 1/90
    # and the fingerprint alone names the same stored rows; a version takes the 12-digit prefix `models show` prints
    again = data.resolve(parts.train.fingerprint)
    assert again.fingerprint == parts.train.fingerprint and again.feature_names == parts.train.feature_names
    val_again = data_for("mlp/1", parts.val.fingerprint[:12])  # one dataset: split 70/15/15 like any other
    assert sum(len(p) for p in val_again) == len(parts.val) == 90
    with pytest.raises(ValueError, match="should be a whole fingerprint"):
        data.resolve(parts.val.fingerprint[:12])


def test_fit_ood_from_a_file(use_store: str, files: dict[str, Path]) -> None:
    register_mlp()
    gate = fit_ood("mlp/1", data=str(files["csv"]), target="label", detectors=("mahalanobis",),
                   target_false_abstain=0.05)
    assert set(gate.detectors) == {"mahalanobis"}
    assert "ood_gate" in R.get_version("mlp/1").files
    with pytest.raises(ValueError, match="Arguments train and val should be given together"):
        fit_ood("mlp/1", train=data.resolve(str(files["npz"])))


# a real tracking server on 127.0.0.1 (the server tests' fixtures)
from tests.server.conftest import live_server, server, use_server  # noqa: E402,F401


def test_over_http_the_server_uses_the_rows_logged_with_the_run(use_server: object, files: dict[str, Path]) -> None:
    register_mlp(log=True)  # the rows travel as run artifacts to the server's store
    v = quantize("mlp/1", method="dynamic")  # the server quantizes, with the data it keeps
    assert v.ref == "mlp/2" and v.lineage["quantization"]["data_matches_lineage"] is True
    with pytest.raises(ValueError, match="a file or arrays cannot travel with the call"):
        quantize("mlp/1", method="dynamic", data=str(files["npz"]))
