"""The stored drift reference: exact where it keeps values, within its recorded bounds where it sketches, mergeable,
a file that refuses tampering, written at registration and read by drift("NAME@ALIAS")."""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from loopml.errors import ArgumentError, IntegrityError, NotFound
from loopml.monitor import stats
from loopml.monitor.multivariate import multivariate_drift
from loopml.monitor.univariate import drift
from loopml.store.reference import POINTS, DriftReference, NumericColumn, merge
from tests.roots import overwrite, stored_bytes

COMPARED = ["feature", "kind", "test", "n_reference", "n_current", "drifted", "new_categories"]
NUMBERS = ["statistic", "p_value", "effect", "missing_reference", "missing_p_value", "new_rate", "new_p_value"]


def _table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f = pd.DataFrame({
        "age": rng.normal(40, 10, n),                       # continuous: KS
        "visits": rng.poisson(3, n).astype(np.float64),     # few values: chi-square on the counts
        "plan": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2]),
        "active": rng.random(n) < 0.7,
    })
    f.loc[rng.random(n) < 0.02, "age"] = np.nan
    f.loc[rng.random(n) < 0.01, "plan"] = None
    return f


def _assert_same_rows(a: pd.DataFrame, b: pd.DataFrame, rtol: float = 1e-9) -> None:
    pd.testing.assert_frame_equal(a[COMPARED], b[COMPARED])
    for col in NUMBERS:  # the same arithmetic in another order: rounding only
        np.testing.assert_allclose(a[col].to_numpy(np.float64), b[col].to_numpy(np.float64), rtol=rtol, atol=1e-12,
                                   equal_nan=True, err_msg=col)


def test_a_reference_that_keeps_the_values_gives_the_report_of_the_rows_themselves() -> None:
    ref_rows, cur = _table(3000, 0), _table(2000, 1)
    cur["age"] += 2.0
    cur.loc[:40, "plan"] = "new"
    stored = DriftReference.build(ref_rows)
    assert stored.sketched == [] and stored.n_rows == 3000
    exact = drift(ref_rows, cur, multivariate=False)
    against = drift(stored, cur)
    _assert_same_rows(exact.features, against.features)
    assert against.multivariate is not None and against.n_reference == 3000
    assert against.histograms == exact.histograms
    # and SciPy, on the rows, is the oracle of the numbers
    a, b = ref_rows["age"].dropna().to_numpy(), cur["age"].dropna().to_numpy()
    row = against.features.set_index("feature").loc["age"]
    ks = sps.ks_2samp(a, b)
    assert row["statistic"] == pytest.approx(ks.statistic, abs=1e-12) and row["p_value"] == pytest.approx(ks.pvalue, rel=1e-9)
    assert row["effect"] == pytest.approx(sps.wasserstein_distance(a, b) / a.std(ddof=1), rel=1e-9)
    visits = against.features.set_index("feature").loc["visits"]
    assert visits["test"] == "chi2"
    # the row sample (all 3,000 rows here) reads back as the table, categories included
    back = stored.sample_table()
    assert back is not None and len(back) == 3000
    np.testing.assert_array_equal(back["age"].to_numpy(np.float64), ref_rows["age"].to_numpy(np.float32).astype(np.float64))
    assert back["plan"].tolist() == ref_rows["plan"].where(ref_rows["plan"].notna(), None).tolist()
    assert drift(stored, cur, multivariate=True).multivariate == multivariate_drift(back, cur, missing="keep")
    with pytest.raises(ArgumentError, match="multivariate=True needs reference rows"):
        drift(DriftReference.build(ref_rows, sample_rows=0), cur, multivariate=True)


def test_the_row_sample_lets_the_joint_test_see_what_every_column_misses() -> None:
    rng = np.random.default_rng(5)
    ref = pd.DataFrame(rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], size=30_000), columns=["a", "b"])
    flipped = pd.DataFrame(rng.multivariate_normal([0, 0], [[1, -0.8], [-0.8, 1]], size=5_000), columns=["a", "b"])
    same = pd.DataFrame(rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], size=5_000), columns=["a", "b"])
    stored = DriftReference.build(ref)
    assert stored.rows is not None and stored.rows.shape == (20_000, 2) and stored.rows.dtype == np.float32
    report = drift(stored, flipped)
    assert report.drifted_features == [] and report.multivariate is not None and report.multivariate["drifted"]
    assert report.drifted  # the data as a whole drifted, though no column did
    assert not drift(stored, same).multivariate["drifted"]
    assert drift(stored, flipped, multivariate=False).multivariate is None
    # more current rows than the sample: as many of them (seeded), so the held-out sides are balanced
    many = pd.DataFrame(rng.multivariate_normal([0, 0], [[1, -0.8], [-0.8, 1]], size=50_000), columns=["a", "b"])
    balanced = drift(stored, many).multivariate
    assert balanced is not None and balanced["rows"] == (20_000, 20_000) and balanced["drifted"]
    assert balanced == drift(stored, many).multivariate
    # a uniform sample: each row of the 30,000 kept at most once, in order, seeded
    assert np.array_equal(stored.rows, DriftReference.build(ref).rows)
    assert len(np.unique(stored.rows, axis=0)) == 20_000


def test_the_row_sample_is_bounded_in_bytes_saved_and_merged_in_proportion(tmp_path: Path) -> None:
    from loopml.store.reference import SAMPLE_BYTES

    images = np.random.default_rng(6).random((3_000, 3, 32, 32)).astype(np.float32)  # 12 KiB a row
    stored = DriftReference.build(images)
    assert stored.rows is not None and stored.rows.shape == (SAMPLE_BYTES // (4 * 3 * 32 * 32), 3, 32, 32)
    assert stored.sample_table() is None  # images: the joint test runs on them, not on the summary columns

    rng = np.random.default_rng(7)
    big, small = rng.normal(size=(30_000, 2)), rng.normal(10, 1, size=(10_000, 2))
    whole = merge(DriftReference.build(big), DriftReference.build(small))
    assert whole.rows is not None and len(whole.rows) == 20_000
    # category codes are renumbered by the merged categories: "b" is the commonest of the union, not of part one
    one = DriftReference.build(pd.DataFrame({"c": ["a"] * 30 + ["b"] * 10}))
    two = DriftReference.build(pd.DataFrame({"c": ["b"] * 50 + [None] * 5}))
    both = merge(one, two).sample_table()
    assert both is not None and both["c"].fillna("-").tolist() == ["a"] * 30 + ["b"] * 60 + ["-"] * 5
    from_small = int((whole.rows[:, 0] > 5).sum())
    assert from_small == 5_000  # 10,000 of 40,000 rows: a quarter of the sample
    back = DriftReference.load(whole.save(tmp_path / "ref.npz"))
    assert np.array_equal(back.rows, whole.rows)
    assert DriftReference.build(big, sample_rows=0).rows is None
    with pytest.raises(ArgumentError, match="sample_rows"):
        DriftReference.build(big, sample_rows=-1)


def test_images_are_summarised_as_drift_summarises_them() -> None:
    rng = np.random.default_rng(2)
    ref_images = rng.random((500, 3, 6, 6)).astype(np.float32)
    cur_images = (rng.random((400, 3, 6, 6)) * 1.1).astype(np.float32)
    stored = DriftReference.build(ref_images)
    assert list(stored.columns) == [f"c{c}_{s}" for c in range(3) for s in ("mean", "std")]
    _assert_same_rows(drift(ref_images, cur_images, multivariate=False).features, drift(stored, cur_images).features)


def _big(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"normal": rng.normal(0, 1, n), "skewed": rng.lognormal(0, 1, n), "uniform": rng.random(n)})


def test_a_sketch_is_within_its_recorded_bounds_of_scipy_on_the_whole_data() -> None:
    whole = _big(300_000, 3)
    cur = _big(40_000, 4)
    cur["normal"] += 0.03  # a small shift: the statistic is near the decision, where the bound matters
    stored = DriftReference.build(whole)
    assert stored.sketched == ["normal", "skewed", "uniform"]
    report = drift(stored, cur).features.set_index("feature")
    for name in whole.columns:
        col = stored.columns[name]
        assert isinstance(col, NumericColumn) and len(col.values) <= POINTS + 1
        # the bound: sup |F_sketch - F| <= half a run of ceil(n / points) rows, over n; measured, not assumed
        assert col.eps_ks <= (math.ceil(300_000 / POINTS) // 2 + 1) / 300_000
        a, b = whole[name].to_numpy(), cur[name].to_numpy()
        d = sps.ks_2samp(a, b).statistic
        w = sps.wasserstein_distance(a, b)
        row = report.loc[name]
        assert abs(row["statistic"] - d) <= col.eps_ks + 1e-12
        assert abs(row["effect"] * col.sd - w) <= col.eps_w + 1e-12
        assert col.sd == pytest.approx(a.std(ddof=1), rel=1e-12)  # the moments are exact
        # the p-value is that of a statistic within eps_ks: drift's p-value on the rows lies between the two ends
        lo, hi = stats.ks_pvalues(np.array([row["statistic"] + col.eps_ks, row["statistic"] - col.eps_ks]),
                                  np.array([len(a)] * 2), np.array([len(b)] * 2))
        p_rows = stats.ks_pvalues(np.array([d]), np.array([len(a)]), np.array([len(b)]))[0]
        assert lo <= p_rows <= hi
        assert "reference sketch" in row["note"]
    assert report.loc["normal", "drifted"] == drift(whole, cur, multivariate=False).features.set_index("feature").loc["normal", "drifted"]


def _true_gap(col: NumericColumn, data: np.ndarray) -> tuple[float, float]:
    """sup and integral of |F_col - F_data| (both step functions: read at every value of either)."""
    data = np.sort(data[np.isfinite(data)])
    grid = np.union1d(col.values, data)
    gap = np.abs(col.cdf_counts(grid) / col.n - np.searchsorted(data, grid, side="right") / len(data))
    return float(gap.max()), float(np.dot(gap[:-1], np.diff(grid)))


def test_partitions_merge_into_the_reference_of_the_whole() -> None:
    rows = pd.concat([_table(5000, 5), _big(5000, 6)], axis=1)
    parts = [rows.iloc[:1000], rows.iloc[1000:3500], rows.iloc[3500:]]
    whole = DriftReference.build(rows, points=1024)
    merged = merge(*[DriftReference.build(p, points=1024) for p in parts])
    assert merged.n_rows == whole.n_rows and list(merged.columns) == list(whole.columns)
    for name in ("visits", "plan", "active"):  # counts: exact
        a, b = merged.columns[name], whole.columns[name]
        if isinstance(a, NumericColumn) and isinstance(b, NumericColumn):
            np.testing.assert_array_equal(a.values, b.values)
            np.testing.assert_array_equal(a.counts, b.counts)
            assert a.exact and a.sd == pytest.approx(b.sd, rel=1e-12)
        else:
            assert dict(a.counts) == dict(b.counts)  # type: ignore[union-attr]
        assert a.missing == b.missing
    for name in ("age", "normal", "skewed", "uniform"):  # more values than points: sketches, within their bounds
        col = merged.columns[name]
        assert isinstance(col, NumericColumn) and not col.exact
        sup, integral = _true_gap(col, rows[name].to_numpy())
        assert sup <= col.eps_ks + 1e-12 and integral <= col.eps_w + 1e-12
        # the parts' bounds (row-weighted) plus one cut, each at most half a run of ceil(n / points) rows
        half_run = [(math.ceil(len(p) / 1024) // 2 + 1) / len(p) for p in [*parts, rows]]
        assert col.eps_ks <= max(half_run[:-1]) + half_run[-1]
        assert col.sd == pytest.approx(rows[name].std(), rel=1e-9)
    # the report against the merged reference equals the one against the whole where both are exact
    cur = _table(800, 7)
    _assert_same_rows(drift(merged, cur, columns=["visits", "plan", "active"]).features,
                      drift(whole, cur, columns=["visits", "plan", "active"]).features)
    with pytest.raises(ArgumentError, match="same columns"):
        merge(whole, DriftReference.build(rows[["age"]]))


def test_the_file_round_trips_and_refuses_damage(tmp_path: Path) -> None:
    ref = DriftReference.build(pd.concat([_table(2000, 8), _big(6000, 9).iloc[:2000]], axis=1), points=512)
    path = ref.save(tmp_path / "ref.npz")
    back = DriftReference.load(path)
    assert list(back.columns) == list(ref.columns) and back.n_rows == ref.n_rows and back.sketched == ref.sketched
    for name, col in ref.columns.items():
        other = back.columns[name]
        if isinstance(col, NumericColumn):
            assert isinstance(other, NumericColumn)
            np.testing.assert_array_equal(col.values, other.values)
            np.testing.assert_array_equal(col.counts, other.counts)
            assert (col.mean, col.m2, col.eps_ks, col.eps_w, col.missing) == (other.mean, other.m2, other.eps_ks,
                                                                                other.eps_w, other.missing)
        else:
            assert col.counts == other.counts and col.missing == other.missing and col.kind == other.kind
    cur = _table(500, 10)
    _assert_same_rows(drift(ref, cur, columns=list(_table(1, 0).columns)).features,
                      drift(back, cur, columns=list(_table(1, 0).columns)).features)

    with zipfile.ZipFile(path) as z:  # a count changed, the header left as it was: the digest catches it
        arrays = {n[:-4]: np.load(io.BytesIO(z.read(n)), allow_pickle=False) for n in z.namelist()}
    arrays["c0"] = arrays["c0"].copy()
    arrays["c0"][0] += 1
    np.savez(tmp_path / "tampered.npz", **arrays)
    with pytest.raises(IntegrityError, match="do not match the sha256 in its header"):
        DriftReference.load(tmp_path / "tampered.npz")
    header = json.loads(arrays["header"].tobytes())
    header["format"] = "something else"
    np.savez(tmp_path / "other.npz", **{**arrays, "header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)})
    with pytest.raises(IntegrityError, match="not a drift reference"):
        DriftReference.load(tmp_path / "other.npz")
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:200])
    with pytest.raises(IntegrityError, match="not a readable drift reference"):
        DriftReference.load(tmp_path / "cut.npz")
    with pytest.raises(ArgumentError, match="does not exist"):
        DriftReference.load(tmp_path / "none.npz")
    with pytest.raises(ArgumentError, match="Argument points should be an integer of at least 256"):
        DriftReference.build(_table(10, 0), points=10)


def _requests(x: np.ndarray, t0: float) -> list[dict[str, object]]:
    """The request log's records of ``x`` in requests of 50 rows, as the model server writes them."""
    buf = []
    for i in range(0, len(x), 50):
        b = io.BytesIO()
        np.save(b, x[i:i + 50], allow_pickle=False)
        buf.append({"request_id": f"q{t0}-{i}", "model": "tab", "version": None, "created_at": t0 + i, "status": "ok",
                    "rows": len(x[i:i + 50]), "latency_ms": 0.3, "ood_score": None, "inputs": b.getvalue(),
                    "outputs": json.dumps({"results": []})})
    return buf


def test_registration_stores_the_reference_and_drift_reads_it_without_the_rows(use_store: str, tmp_path: Path) -> None:
    import torch

    import loopml
    from loopml import data
    from loopml.models import registry as R
    from loopml.models.nets import MLP
    from loopml.models.reference import store_reference
    from loopml.monitor import drift as version_drift
    from loopml.monitor.fromlog import reference_inputs, resolve_version
    from loopml.store import schema
    from loopml.store.predictions import PredictionLog
    from loopml.store.registry import RegistryStore
    from loopml.tracking.api import backend_for

    rng = np.random.default_rng(11)
    x = rng.normal(size=(4000, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    train = data.from_arrays(x, y, name="tab")
    mlp = {"n_in": 4, "n_out": 2, "hidden": 4}
    with loopml.start_run(experiment="tab") as run:
        data.log_dataset(run, train, role="train", keep_rows=False)  # as for data over 32 MiB: no rows kept
        torch.manual_seed(0)
        v1 = R.register(MLP(**mlp), "tab", input_example=train.x[:4], class_names=["no", "yes"], init_args=mlp)
    assert "drift_reference" in v1.files and v1.files["drift_reference"].details["rows"] == 4000
    torch.manual_seed(0)  # a version registered with no training data at all: no reference
    v2 = R.register(MLP(**mlp), "tab", input_example=train.x[:4], class_names=["no", "yes"], init_args=mlp)
    assert "drift_reference" not in v2.files

    store = backend_for()
    shifted = rng.normal(size=(3000, 4)).astype(np.float32)
    shifted[:, 1] += 0.4
    log = PredictionLog(store)  # type: ignore[arg-type]
    for version in (1, 2):
        log.insert_many([{**r, "version": version} for r in _requests(shifted, 10_000.0 * version)])

    registry, version = resolve_version("tab/1")
    assert isinstance(registry, RegistryStore)
    with pytest.raises(NotFound, match="no stored training data"):
        reference_inputs(registry, version)  # the rows are not kept: the stored reference is all there is
    report = version_drift("tab/1")
    assert report.drifted_features == ["x1"] and report.n_reference == 4000
    assert report.multivariate is not None and report.multivariate["drifted"]  # on the stored row sample
    oracle = drift(pd.DataFrame(x, columns=[f"x{i}" for i in range(4)]), pd.DataFrame(shifted, columns=[f"x{i}" for i in range(4)]),
                   multivariate=False)
    _assert_same_rows(report.features, oracle.features, rtol=1e-6)  # float32 rows either way; same values

    with pytest.raises(NotFound, match=r"tab/2 has no stored training data.*store_reference\('tab/2'"):
        version_drift("tab/2")
    v2 = store_reference("tab/2", data=(x, y))  # built for an existing version, no retraining
    assert v2.files["drift_reference"].details == {"rows": 4000, "columns": 4, "sketched": 0, "points": POINTS}
    from typer.testing import CliRunner

    from loopml.cli import app

    np.savez(tmp_path / "train.npz", x=x, y=y)  # and from the command line, with the same result
    out = CliRunner().invoke(app, ["models", "reference", "tab/2", "--data", str(tmp_path / "train.npz")])
    assert out.exit_code == 0 and "tab/2 drift_reference" in out.output and "4,000 rows, 4 columns" in out.output
    wrong = CliRunner().invoke(app, ["models", "reference", "tab/2", "--data", str(tmp_path / "none.npz")])
    assert wrong.exit_code == 2 and wrong.output.startswith("error:") and "Traceback" not in wrong.output
    assert version_drift("tab/2").drifted_features == ["x1"]

    # a version registered before references were stored: its run's kept rows are the reference, as before
    with loopml.start_run(experiment="tab") as run:
        data.log_dataset(run, train, role="train")
        torch.manual_seed(0)
        v3 = R.register(MLP(**mlp), "tab", input_example=train.x[:4], class_names=["no", "yes"], init_args=mlp)
    files = schema.model_files
    with registry.store.transaction() as conn:
        conn.execute(files.delete().where(files.c.name == "tab", files.c.version == v3.version,
                                          files.c.format == "drift_reference"))
    assert "drift_reference" not in registry.get_version("tab", v3.version).files
    log.insert_many([{**r, "version": 3} for r in _requests(shifted, 30_000.0)])
    legacy = version_drift("tab/3", multivariate=False)
    _assert_same_rows(legacy.features, oracle.features, rtol=1e-6)

    # the stored file is checked against its sha256 before it is read
    key = v1.files["drift_reference"].path  # in the local folder or the S3 bucket
    overwrite(registry.store, key, (stored_bytes(registry.store, key) or b"")[:-8] + b"\0" * 8)
    with pytest.raises(IntegrityError, match="drift_reference file of tab/1"):
        version_drift("tab/1")
    store_reference("tab/1")  # stored again from the reference its run kept (the run keeps no rows)
    assert version_drift("tab/1").drifted_features == ["x1"]
