"""loopml.federated.partition: every row once, reproducible by seed, the skew each scheme promises, bad input."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from loopml.data import Dataset, from_arrays, from_frame
from loopml.errors import ArgumentError, ArgumentTypeError
from loopml.federated.partitions import DIRICHLET_TRIES, PARTITIONS, Partitions, partition
from tests.deps import need

SCHEMES: list[tuple[str, dict[str, Any]]] = [("iid", {}), ("dirichlet", {"alpha": 0.5}), ("shards", {"shards": 2})]


@pytest.fixture(scope="module")
def digits() -> Dataset:
    bunch = load_digits()
    return from_arrays(bunch.data, bunch.target, name="digits")


@pytest.fixture(scope="module")
def table() -> Dataset:
    """400 rows from 4 sites (one with text values), a numeric 'region' column, 3 classes."""
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({
        "site": rng.choice(["oslo", "bergen", "tromso", "bodo"], size=400),
        "region": rng.choice([3.0, 1.0, 2.0], size=400),
        "value": rng.normal(size=400),
        "label": rng.integers(0, 3, size=400),
    })
    return from_frame(frame, target="label", name="sites")


def _rows(parts: Partitions) -> np.ndarray:
    return np.concatenate(parts.indices)


@pytest.mark.parametrize(("how", "kwargs"), SCHEMES)
def test_every_row_goes_to_exactly_one_client(digits: Dataset, how: str, kwargs: dict[str, Any]) -> None:
    parts = partition(digits, 10, how, seed=3, **kwargs)
    assert len(parts) == 10 and parts.how == how
    assert int(parts.sizes.sum()) == len(digits)
    assert np.array_equal(np.sort(_rows(parts)), np.arange(len(digits)))  # none repeated, none left out
    for i, idx in enumerate(parts.indices):
        assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
        assert parts[i] is idx and len(idx) == parts.sizes[i] >= 1
    y = digits.y.numpy()
    assert parts.counts is not None and parts.counts.shape == (10, 10)
    assert np.array_equal(parts.counts, np.stack([np.bincount(y[i], minlength=10) for i in parts.indices]))
    assert np.array_equal(parts.counts.sum(axis=0), np.bincount(y))


def test_iid_gives_near_equal_parts(digits: Dataset) -> None:
    parts = partition(digits, 7, "iid", seed=0)
    assert parts.sizes.max() - parts.sizes.min() <= 1
    assert parts.client_names == [f"client {i}" for i in range(7)]
    assert parts.params == {"how": "iid", "clients": 7, "seed": 0, "min_size": 1}


@pytest.mark.parametrize(("how", "kwargs"), SCHEMES)
def test_the_seed_decides_the_split(digits: Dataset, how: str, kwargs: dict[str, Any]) -> None:
    first = partition(digits, 5, how, seed=11, **kwargs)
    again = partition(digits, 5, how, seed=11, **kwargs)
    other = partition(digits, 5, how, seed=12, **kwargs)
    assert all(np.array_equal(a, b) for a, b in zip(first.indices, again.indices, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first.indices, other.indices, strict=True))


def test_dirichlet_skew_grows_as_alpha_shrinks(digits: Dataset) -> None:
    skew = {a: partition(digits, 10, "dirichlet", alpha=a, seed=0).summary()["label_skew"] for a in (0.1, 1.0, 100.0)}
    assert skew[0.1] > skew[1.0] > skew[100.0]
    assert skew[0.1] > 0.5 and skew[100.0] < 0.1  # nearly one class per client vs nearly the global mix
    iid = partition(digits, 10, "iid", seed=0).summary()["label_skew"]
    assert iid < 0.1
    held = partition(digits, 10, "dirichlet", alpha=0.1, seed=0).summary()["classes_per_client"]
    assert np.mean(held) < 7  # measured: 4.8; at alpha=100 every client holds all 10
    assert partition(digits, 10, "dirichlet", alpha=100.0, seed=0).summary()["classes_per_client"] == [10] * 10


def test_dirichlet_draws_again_until_every_client_has_min_size(digits: Dataset) -> None:
    parts = partition(digits, 20, "dirichlet", alpha=0.1, seed=0, min_size=30)
    assert parts.sizes.min() >= 30 and int(parts.sizes.sum()) == len(digits)
    assert parts.params["alpha"] == 0.1 and parts.params["min_size"] == 30


def test_dirichlet_says_what_to_change_when_min_size_cannot_be_met(digits: Dataset) -> None:
    with pytest.raises(ArgumentError, match=rf"{DIRICHLET_TRIES} draws.*lower clients or min_size, or raise alpha"):
        partition(digits, 50, "dirichlet", alpha=0.01, seed=0, min_size=20)
    with pytest.raises(ArgumentError, match=r"cannot give each of 100 clients min_size=20 rows from 1797 rows"):
        partition(digits, 100, "dirichlet", min_size=20)


def test_shards_give_each_client_few_classes() -> None:
    # 10 classes of 100 rows, 20 shards of 50: every shard lies inside one class
    y = np.repeat(np.arange(10), 100)
    data = from_arrays(np.random.default_rng(0).random((1000, 3)), y)
    for seed in range(3):
        parts = partition(data, 10, "shards", shards=2, seed=seed)
        assert parts.counts is not None
        assert ((parts.counts > 0).sum(axis=1) <= 2).all()
        assert np.isin(parts.counts, [0, 50, 100]).all()
        assert parts.sizes.tolist() == [100] * 10


def test_shards_on_uneven_classes_straddle_at_most_one_boundary_each(digits: Dataset) -> None:
    # 10 clients x 2 or 3 shards: a shard of ~90 or ~60 rows is smaller than every digit class
    # (>= 174 rows), so it holds one class or crosses one boundary into a second
    for shards in (2, 3):
        parts = partition(digits, 10, "shards", shards=shards, seed=5)
        held = parts.summary()["classes_per_client"]
        assert max(held) <= 2 * shards
        assert parts.summary()["label_skew"] > 0.5
        assert parts.sizes.max() - parts.sizes.min() <= shards
    with pytest.raises(ArgumentError, match=r"clients \* shards <= rows.*lower clients or shards"):
        partition(from_arrays(np.zeros((10, 2)), np.arange(10) % 2), 4, "shards", shards=3)


def test_column_gives_one_client_per_value(table: Dataset) -> None:
    parts = partition(table, None, "column", column="site")
    assert parts.client_names == ["bergen", "bodo", "oslo", "tromso"]  # the text values, sorted
    j = table.feature_names.index("site")
    codes = table.x[:, j].numpy()
    for i, idx in enumerate(parts.indices):
        assert table.categories["site"][int(codes[idx][0])] == parts.client_names[i]
        assert (codes[idx] == codes[idx][0]).all()
        assert len(idx) == int((codes == codes[idx][0]).sum())
    assert parts.params == {"how": "column", "clients": 4, "seed": 0, "min_size": 1, "column": "site"}

    by_index = partition(table, 3, "column", column=table.feature_names.index("region"))
    assert by_index.client_names == ["1", "2", "3"] and by_index.params["column"] == "region"
    region = table.x[:, table.feature_names.index("region")].numpy()
    for name, idx in zip(by_index.client_names, by_index.indices, strict=True):
        assert (region[idx] == float(name)).all()
    assert int(by_index.sizes.sum()) == len(table)


def test_column_errors_say_what_to_do(table: Dataset, digits: Dataset) -> None:
    with pytest.raises(ArgumentError, match=r"None \(one client per value\) or 4.*'site', got 3"):
        partition(table, 3, "column", column="site")
    with pytest.raises(ArgumentError, match=r"should name a feature of 'sites', got 'city'; features: \['site'"):
        partition(table, None, "column", column="city")
    with pytest.raises(ArgumentError, match=r"feature index 0\.\.2 or a feature name, got 3"):
        partition(table, None, "column", column=3)
    with pytest.raises(ArgumentError, match=r"got None; e\.g\. partition\(data, None, 'column', column='site'\)"):
        partition(table, None, "column")
    with pytest.raises(ArgumentTypeError, match=r"feature name \(str\) or index \(int\), got float"):
        partition(table, None, "column", column=1.5)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=r"column is read only by how='column', got how='iid'"):
        partition(table, 4, "iid", column="site")
    with pytest.raises(ArgumentError, match=r"holds images: use how='iid'"):
        partition(from_arrays(np.zeros((6, 1, 2, 2)), [0, 1] * 3, name="imgs"), None, "column", column=0)
    x = np.random.default_rng(0).random((20, 2))
    x[[2, 5, 9], 1] = np.nan
    with pytest.raises(ArgumentError, match=r"3 of 20 rows have no value \(NaN\) in 'x1'.*drop or fill"):
        partition(from_arrays(x, np.arange(20) % 2), None, "column", column="x1")
    with pytest.raises(ArgumentError, match=r"fewer than min_size=200 rows; drop those rows or lower min_size"):
        partition(table, None, "column", column="site", min_size=200)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"clients": 0}, ArgumentError, r"clients should be an int >= 1, got 0"),
    ({"clients": 2.5}, ArgumentTypeError, r"clients should be an int >= 1, got 2\.5; e\.g\. clients=10"),
    ({"clients": True}, ArgumentTypeError, r"clients should be an int"),
    ({"clients": None}, ArgumentTypeError, r"clients should be an int >= 1, got None"),
    ({"clients": 41}, ArgumentError, r"at most the number of rows \(40\), got 41"),
    ({"how": "random"}, ArgumentError, r"how should be one of \('iid', 'dirichlet', 'column', 'shards'\), got 'random'"),
    ({"how": "dirichlet", "alpha": 0}, ArgumentError, r"alpha should be a finite number > 0, got 0; small values"),
    ({"how": "dirichlet", "alpha": -1.0}, ArgumentError, r"alpha should be a finite number > 0"),
    ({"alpha": float("nan")}, ArgumentError, r"alpha should be a finite number > 0, got nan"),
    ({"alpha": float("inf")}, ArgumentError, r"alpha should be a finite number > 0, got inf"),
    ({"alpha": "0.5"}, ArgumentTypeError, r"alpha should be a number > 0 \(e\.g\. alpha=0\.5\), got '0\.5'"),
    ({"how": "shards", "shards": 0}, ArgumentError, r"shards should be an int >= 1, got 0; the number of"),
    ({"shards": 1.5}, ArgumentTypeError, r"shards should be an int >= 1"),
    ({"seed": -1}, ArgumentError, r"seed should be an int >= 0, got -1; pass e\.g\. seed=0"),
    ({"seed": 1.0}, ArgumentTypeError, r"seed should be an int >= 0"),
    ({"min_size": 0}, ArgumentError, r"min_size should be an int >= 1, got 0; every client needs at least one row"),
    ({"min_size": 11}, ArgumentError, r"left 4 of 4 clients with fewer than min_size=11 rows.*lower clients or min_size"),
])
def test_bad_arguments_say_what_to_do(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    data = from_arrays(np.random.default_rng(0).random((40, 2)), np.arange(40) % 4, name="small")
    call: dict[str, Any] = {"clients": 4, "how": "iid", **kwargs}
    with pytest.raises(error, match=match):
        partition(data, **call)


def test_no_client_is_ever_empty() -> None:
    with pytest.raises(ArgumentError, match=r"every client rows; clients \[1\] have none"):
        Partitions(indices=[np.arange(3), np.array([], dtype=np.int64)], how="iid", params={}, n_rows=3)


def test_data_must_be_a_dataset() -> None:
    with pytest.raises(ArgumentTypeError, match=r"loopml Dataset, got ndarray; build one with loopml\.data\.from_arrays"):
        partition(np.zeros((4, 2)), 2)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=r"'empty' is empty"):
        partition(from_arrays(np.zeros((0, 2)), np.zeros(0, dtype=np.int64), name="empty"), 1)


def test_regression_partitions_by_rows_only() -> None:
    rng = np.random.default_rng(1)
    data = from_arrays(rng.random((30, 2)), rng.random(30), name="prices")
    assert data.task == "regression"
    for how in ("dirichlet", "shards"):
        with pytest.raises(ArgumentError, match=rf"how='{how}'.*'prices' is regression: use how='iid' or how='column'"):
            partition(data, 3, how)
    parts = partition(data, 3, "iid")
    assert parts.counts is None and parts.class_names is None
    assert list(parts.table().columns) == ["rows"]
    assert parts.summary()["label_skew"] is None and parts.summary()["classes_per_client"] is None
    json.dumps(parts.to_dict())
    assert "iid partition: 3 clients, 30 rows" in parts.text()


def test_subsets_are_the_clients_rows(digits: Dataset) -> None:
    parts = partition(digits, 4, "dirichlet", alpha=0.3, seed=2)
    subsets = parts.subsets(digits)
    assert [d.name for d in subsets] == [f"digits/client-{i}" for i in range(4)]
    assert parts.counts is not None
    for d, idx, row in zip(subsets, parts.indices, parts.counts, strict=True):
        assert np.array_equal(d.x.numpy(), digits.x.numpy()[idx])
        assert np.array_equal(np.bincount(d.y.numpy(), minlength=10), row)
        assert d.class_names == digits.class_names
    with pytest.raises(ArgumentError, match=r"partitioned \(1797 rows\), got 10 rows"):
        parts.subsets(digits.subset(range(10)))


def test_table_summary_and_to_dict(digits: Dataset) -> None:
    parts = partition(digits, 5, "shards", shards=2, seed=0)
    frame = parts.table()
    assert parts.counts is not None and digits.class_names is not None
    assert list(frame.index) == parts.client_names and list(frame.columns) == ["rows", *digits.class_names]
    assert frame["rows"].tolist() == parts.sizes.tolist()
    assert np.array_equal(frame[digits.class_names].to_numpy(), parts.counts)
    summary = parts.summary()
    assert summary["sizes"] == {"min": int(parts.sizes.min()), "median": float(np.median(parts.sizes)),
                                "max": int(parts.sizes.max())}
    assert summary["rows"] == len(digits) and summary["clients"] == 5
    # label skew by hand: mean total-variation distance of each client's class mix from the whole data's
    glob = np.bincount(digits.y.numpy()) / len(digits)
    local = parts.counts / parts.counts.sum(axis=1, keepdims=True)
    assert summary["label_skew"] == pytest.approx(np.mean(0.5 * np.abs(local - glob).sum(axis=1)), abs=1e-6)
    logged = json.loads(json.dumps(parts.to_dict()))
    assert logged["params"] == {"how": "shards", "clients": 5, "seed": 0, "min_size": 1, "shards": 2}
    assert logged["sizes"] == parts.sizes.tolist() and logged["counts"] == parts.counts.tolist()
    assert logged["summary"] == summary and logged["client_names"] == parts.client_names


def test_text_has_one_line_per_client(digits: Dataset) -> None:
    parts = partition(digits, 3, "shards", shards=1, seed=0)
    text = parts.text()
    assert text.splitlines()[0].startswith("shards partition: 3 clients, 1797 rows, label skew")
    for name, size in zip(parts.client_names, parts.sizes, strict=True):
        line = next(line for line in text.splitlines() if line.startswith(name))
        assert str(int(size)) in line
        assert "█" not in line or parts.summary()["classes_per_client"] == [1, 1, 1]
    assert text.rstrip().endswith("0 1 2 3 4 5 6 7 8 9")
    one_class = partition(from_arrays(np.zeros((4, 1)), [0, 0, 1, 1]), 2, "shards", shards=1, seed=0).text()
    assert "█ " in one_class or " █" in one_class  # a client holding only one class: a full block in its column


def test_plot_draws_the_clients_by_classes_picture(digits: Dataset) -> None:
    need("matplotlib", extra="federated")
    from matplotlib.figure import Figure

    parts = partition(digits, 6, "dirichlet", alpha=0.5, seed=0)
    fig = parts.plot()
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    image = ax.images[0].get_array()
    assert image is not None and image.shape == (6, 10) and parts.counts is not None
    assert np.array_equal(np.asarray(image), parts.counts)
    assert len(ax.texts) == 60  # counts written in the cells
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.getvalue().startswith(b"\x89PNG")

    mine = Figure()
    axes = mine.add_subplot()
    assert partition(digits, 3, "iid").plot(ax=axes) is mine and axes.images
    rows_only = partition(from_arrays(np.zeros((9, 1)), np.linspace(0, 1, 9)), 3).plot()
    assert len(rows_only.axes[0].patches) == 3  # one bar per client for regression


def test_the_schemes_are_public() -> None:
    import loopml.federated

    assert PARTITIONS == ("iid", "dirichlet", "column", "shards")
    assert loopml.federated.PARTITIONS is PARTITIONS and loopml.federated.Partitions is Partitions
    # the modules are named apart from the functions (partitions.py, federation.py): importing a submodule
    # binds its name on the package, which would hide a function of the same name
    assert loopml.federated.partition is partition
    import loopml.federated.federation

    assert callable(loopml.federated.fit) and loopml.federated.fit is loopml.federated.federation.fit
