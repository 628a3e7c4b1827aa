"""Multivariate drift (a classifier two-sample test): the joint change per-column tests miss, calibration, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp, kstest, mannwhitneyu

from loopml.errors import ArgumentError, ArgumentTypeError
from loopml.monitor import multivariate_drift
from loopml.monitor.multivariate import MAX_CATEGORIES, TEST
from tests.deps import need

need("sklearn", extra="data")

ALPHA = 0.01


def correlated(n: int, rho: float, rng: np.random.Generator, noise_columns: int = 3) -> np.ndarray:
    """Two standard normal columns with correlation ``rho``, then independent standard normal columns."""
    a, b = rng.standard_normal(n), rng.standard_normal(n)
    pair = np.column_stack([a, rho * a + np.sqrt(1 - rho**2) * b])  # both N(0, 1) whatever rho is
    return np.column_stack([pair, rng.standard_normal((n, noise_columns))])


def table(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Mixed columns: skewed, bimodal, integer, boolean and text, two of them dependent."""
    x = rng.lognormal(0, 0.7, n)
    return pd.DataFrame({
        "skewed": x,
        "follows": 2 * x + rng.normal(0, 0.5, n),
        "bimodal": np.where(rng.random(n) < 0.4, rng.normal(-2, 0.5, n), rng.normal(2, 0.5, n)),
        "count": rng.poisson(3, n),
        "flag": rng.random(n) < 0.3,
        "city": rng.choice(np.array(["oslo", "lima", "pune", "kobe"], dtype=object), n, p=[0.4, 0.3, 0.2, 0.1]),
    })


# -- what it catches --------------------------------------------------------------------------


def test_a_flipped_correlation_at_20000_rows_a_side_is_caught_where_per_column_ks_finds_nothing() -> None:
    n = 20_000
    ref = correlated(n, 0.8, np.random.default_rng(0))
    cur = correlated(n, -0.8, np.random.default_rng(1))
    ks = [ks_2samp(ref[:, j], cur[:, j]).pvalue for j in range(ref.shape[1])]
    assert min(ks) > ALPHA, ks  # every marginal is the same: no per-column test can see the change

    result = multivariate_drift(ref, cur, alpha=ALPHA)
    assert result["drifted"] is True and result["enough_data"] is True
    assert result["test"] == TEST and result["statistic_name"] == "auc"
    # the classifier separates the sides well (measured 0.90: where both signs of a*b agree with one side)
    assert result["statistic"] > 0.85 and result["p_value"] < 1e-100
    assert result["rows"] == (n, n) == result["rows_used"]
    assert result["train_rows"] == (10_000, 10_000) and result["test_rows"] == (10_000, 10_000)
    assert result["columns"] == ["0", "1", "2", "3", "4"] and result["categorical"] == [] and result["left_out"] == {}


def test_the_statistic_and_p_value_are_mann_whitney_of_the_held_out_scores() -> None:
    # oracle: the AUC of the held-out scores is U / (n_ref * n_cur); a weaker change has a smaller AUC
    ref = correlated(4_000, 0.8, np.random.default_rng(2))
    strong = multivariate_drift(ref, correlated(4_000, -0.8, np.random.default_rng(3)))
    weak = multivariate_drift(ref, correlated(4_000, 0.6, np.random.default_rng(3)))
    assert 0.5 < weak["statistic"] < strong["statistic"] <= 1
    assert strong["p_value"] < weak["p_value"] < ALPHA
    u = mannwhitneyu([3.0, 4.0, 5.0], [1.0, 2.0, 3.0], alternative="greater")
    assert u.statistic / 9 == pytest.approx(8.5 / 9)  # the identity the module relies on (ties count half)


def test_a_change_in_how_a_category_relates_to_a_number_is_caught() -> None:
    rng = np.random.default_rng(4)
    ref, cur = table(5_000, rng), table(5_000, rng)
    # in the reference the numbers do not depend on the city; in the current data the rows' number
    # pairs (skewed, follows) are dealt out in order of city name: every column's marginal and the
    # pair's joint stay the same, only the city-number relation changes
    by_city = np.argsort(cur["city"].to_numpy().astype(str), kind="stable")
    pairs = cur[["skewed", "follows"]].to_numpy()
    cur.loc[by_city, ["skewed", "follows"]] = pairs[np.argsort(pairs[:, 0])]
    assert ks_2samp(ref["skewed"], cur["skewed"]).pvalue > ALPHA
    result = multivariate_drift(ref, cur)
    assert result["drifted"] and result["categorical"] == ["city"]
    assert "flag" in result["columns"] and "count" in result["columns"]


def test_a_category_never_seen_in_the_reference_counts_as_drift() -> None:
    rng = np.random.default_rng(5)
    ref, cur = table(3_000, rng), table(3_000, rng)
    assert not multivariate_drift(ref, cur)["drifted"]
    cur.loc[cur.index[:300], "city"] = "nuuk"  # 10% of rows: a city the reference never had
    result = multivariate_drift(ref, cur)
    # 10% of current rows are certainly current: the best AUC is 0.5 + 0.1 / 2 = 0.55 (measured 0.5555)
    assert result["drifted"] and result["statistic"] > 0.53


def test_penultimate_features_of_an_image_model_drift_when_the_digits_are_rotated() -> None:
    torch = need("torch", extra="torch")
    from loopml import data
    from loopml.models.nets import DigitsCNN
    from loopml.monitor import MahalanobisDetector
    from loopml.train import Trainer

    torch.set_num_threads(1)
    parts = data.split(data.load("digits"), val=0.15, test=0.15, seed=0)
    torch.manual_seed(0)
    model = DigitsCNN(channels=8)
    Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3), seed=0, track=False).fit(
        parts.train, epochs=4, batch_size=64, check_data=False
    )
    embed = MahalanobisDetector(model.eval()).embed  # the features the OOD gate exports
    # validation vs test rows: both unseen in training, so the same distribution of features
    ref, cur = embed(parts.val.x.numpy()), embed(parts.test.x.numpy())
    rotated = embed(np.ascontiguousarray(np.rot90(parts.test.x.numpy(), 1, axes=(2, 3))))
    assert ref.ndim == 2 and ref.shape[1] > 10
    assert not multivariate_drift(ref, cur)["drifted"]
    result = multivariate_drift(ref, rotated)
    assert result["drifted"] and result["statistic"] > 0.9
    with pytest.raises(ArgumentError, match=r"2-D array .*penultimate features.*got shape \(270, 1, 8, 8\)"):
        multivariate_drift(parts.val.x.numpy(), parts.test.x.numpy())


# -- no false alarms ----------------------------------------------------------------------------


def test_no_false_alarm_on_no_drift_tables_over_ten_seeds() -> None:
    p_values = []
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        result = multivariate_drift(table(5_000, rng), table(5_000, rng), seed=seed)
        assert not result["drifted"], (seed, result)
        assert 0.5 - 0.05 < result["statistic"] < 0.5 + 0.05  # held-out AUC near chance (2,500 x 2,500: SE 0.008)
        p_values.append(result["p_value"])
    assert min(p_values) > ALPHA


def test_p_values_with_no_drift_are_uniform_so_the_false_alarm_rate_is_alpha() -> None:
    # the held-out rows are exchangeable with no drift, so the p-value is uniform: over 60 small
    # no-drift comparisons a KS test against uniform does not reject, and the share below 0.1 is near 0.1
    p = np.array([
        multivariate_drift(correlated(300, 0.5, rng), correlated(300, 0.5, rng), seed=seed)["p_value"]
        for seed, rng in ((s, np.random.default_rng(1000 + s)) for s in range(60))
    ])
    assert kstest(p, "uniform").pvalue > 0.01
    assert np.mean(p < 0.1) <= 0.2  # at most 12 of 60 (Binomial(60, 0.1): P(>= 13) = 0.002)


def test_unequal_sides_with_no_drift_are_not_a_false_alarm() -> None:
    rng = np.random.default_rng(6)
    result = multivariate_drift(correlated(6_000, 0.5, rng), correlated(600, 0.5, rng))
    assert not result["drifted"]
    assert result["train_rows"] == (300, 300) and result["test_rows"] == (5_700, 300)


def test_the_same_seed_gives_the_same_result_and_tensors_work() -> None:
    torch = need("torch", extra="torch")
    ref = correlated(2_000, 0.8, np.random.default_rng(7))
    cur = correlated(2_000, 0.2, np.random.default_rng(8))
    first = multivariate_drift(ref, cur, seed=3)
    assert first == multivariate_drift(ref, cur, seed=3)
    assert first == multivariate_drift(torch.from_numpy(ref).requires_grad_(), torch.from_numpy(cur), seed=3)
    assert first["drifted"]


def test_max_train_rows_caps_the_training_half() -> None:
    rng = np.random.default_rng(9)
    result = multivariate_drift(correlated(3_000, 0.8, rng), correlated(3_000, -0.8, rng), max_train_rows=500)
    assert result["train_rows"] == (500, 500) and result["test_rows"] == (2_500, 2_500)
    assert result["drifted"]


def test_min_auc_keeps_a_significant_but_small_change_from_counting() -> None:
    rng = np.random.default_rng(10)
    ref, cur = correlated(20_000, 0.5, rng), correlated(20_000, 0.5, rng)
    cur[:, 2] += 0.2  # a 0.2 sd shift in one column: significant at these sizes, AUC measured 0.539
    small = multivariate_drift(ref, cur)
    assert small["drifted"] and small["statistic"] < 0.56
    assert not multivariate_drift(ref, cur, min_auc=0.6)["drifted"]


# -- columns of a DataFrame ---------------------------------------------------------------------


def test_frame_columns_identifiers_and_dates_are_left_out_and_said_so() -> None:
    rng = np.random.default_rng(11)
    ref, cur = table(2_000, rng), table(2_000, rng)
    for frame in (ref, cur):
        frame["id"] = [f"row-{i}" for i in range(len(frame))]  # more than MAX_CATEGORIES values
        frame["when"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(len(frame)), unit="s")
    result = multivariate_drift(ref, cur)
    assert set(result["left_out"]) == {"id", "when"} and str(MAX_CATEGORIES) in result["left_out"]["id"]
    assert "datetime64" in result["left_out"]["when"]
    assert result["columns"] == ["skewed", "follows", "bimodal", "count", "flag", "city"]
    assert not result["drifted"]
    picked = multivariate_drift(ref, cur[list(reversed(cur.columns))], columns=["skewed", "city"])
    assert picked["columns"] == ["skewed", "city"] and picked["categorical"] == ["city"]


def test_missing_values_are_an_error_unless_told_to_drop_or_keep() -> None:
    rng = np.random.default_rng(12)
    ref, cur = table(2_000, rng), table(2_000, rng)
    cur.loc[cur.index[:40], "bimodal"] = np.nan
    cur.loc[cur.index[:5], "city"] = None
    with pytest.raises(ArgumentError, match=r"Argument current should have no missing values .*missing='drop'.*"
                                            r"got 40 row\(s\) with one, 40 in column 'bimodal'"):
        multivariate_drift(ref, cur)
    dropped = multivariate_drift(ref, cur, missing="drop")
    assert dropped["rows"] == (2_000, 2_000) and dropped["rows_used"] == (2_000, 1_960)
    assert not dropped["drifted"]
    # kept, the gaps themselves are the change: 30% of current rows have one, no reference row does
    cur.loc[cur.index[:600], "bimodal"] = np.nan
    assert multivariate_drift(ref, cur, missing="keep")["drifted"]


# -- bad input ----------------------------------------------------------------------------------


def test_too_few_rows_is_not_enough_data_never_a_false_alarm() -> None:
    ref = correlated(500, 0.8, np.random.default_rng(13))
    for cur in (ref[:99], ref[:0]):
        result = multivariate_drift(ref, cur)
        assert result["enough_data"] is False and result["drifted"] is False
        assert result["p_value"] is None and result["statistic"] is None
        assert result["note"] == f"not enough data: current has {len(cur)} rows, at least 100 are needed (min_rows)"
    few = multivariate_drift(ref, correlated(40, -0.8, np.random.default_rng(14)), min_rows=50)
    assert few["enough_data"] is False and few["drifted"] is False
    gaps = ref.copy()
    gaps[50:, 0] = np.nan
    dropped = multivariate_drift(ref, gaps, missing="drop")
    assert dropped["note"].startswith("not enough data: current has 50 rows after dropping rows with missing values")
    assert multivariate_drift(ref[:20], ref[20:40], min_rows=10)["enough_data"] is True


@pytest.mark.parametrize(
    ("reference", "current", "error", "message"),
    [
        (np.zeros((200, 3)), np.zeros((200, 4)), ArgumentError,
         r"Argument current should have as many columns as the reference \(3\), got 4"),
        (np.zeros(200), np.zeros(200), ArgumentError, r"Argument reference should be a 2-D array \(rows x features\), got shape \(200,\)"),
        (np.zeros((200, 0)), np.zeros((200, 0)), ArgumentError, r"at least one column"),
        (np.array([["a", "b"]] * 200), np.zeros((200, 2)), ArgumentTypeError,
         r"Argument reference should be a 2-D numeric array or a DataFrame \(for text columns\), got an array of dtype <U1"),
        (np.zeros((200, 2)), [[1, 2], [3]], ArgumentTypeError, r"Argument current should be a 2-D numeric array"),
        (np.zeros((200, 2)), np.full((200, 2), np.inf), ArgumentError,
         r"Argument current should hold finite numbers, got 200 infinite value\(s\) in column '0'"),
        (np.full((200, 2), np.nan), np.zeros((200, 2)), ArgumentError, r"Argument reference should have no missing values"),
        (pd.DataFrame({"a": range(200)}), np.zeros((200, 1)), ArgumentTypeError,
         r"Argument current should be a DataFrame like the other side, got ndarray"),
        (pd.DataFrame({"a": range(200), "b": 1.0}), pd.DataFrame({"a": range(200), "c": 1.0}), ArgumentError,
         r"Argument current should have the reference's columns \(or pass columns=\[...\]\), got missing \['b'\] \(1\); extra \['c'\] \(1\)"),
        (pd.DataFrame({"a": range(200)}), pd.DataFrame({"a": ["x"] * 200}), ArgumentTypeError,
         r"in 'a': numeric \(int64\) in the reference, got categorical"),
        (pd.DataFrame({"a": [[1]] * 200}), pd.DataFrame({"a": [[1]] * 200}), ArgumentTypeError,
         r"should hold numbers or categories in column 'a'"),
        (pd.DataFrame({"when": pd.date_range("2026-01-01", periods=200)}),
         pd.DataFrame({"when": pd.date_range("2026-01-01", periods=200)}), ArgumentError,
         r"should have a numeric or categorical column to compare"),
    ],
)
def test_bad_input_is_a_clear_error(reference: object, current: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        multivariate_drift(reference, current)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"alpha": 0}, r"Argument alpha should be a number between 0 and 1 \(exclusive\), got 0"),
        ({"alpha": 1.5}, r"Argument alpha should be"),
        ({"seed": -1}, r"Argument seed should be an integer >= 0, got -1"),
        ({"seed": 1.5}, r"Argument seed should be an integer"),
        ({"min_rows": 2}, r"Argument min_rows should be an integer >= 10, got 2"),
        ({"max_train_rows": 0}, r"Argument max_train_rows should be an integer >= 10"),
        ({"missing": "ignore"}, r"Argument missing should be one of 'error', 'drop', 'keep', got 'ignore'"),
        ({"min_auc": 0.4}, r"Argument min_auc should be a number from 0.5"),
        ({"columns": ["a"]}, r"Argument columns should be None for arrays"),
    ],
)
def test_bad_options_are_a_clear_error(options: dict[str, object], message: str) -> None:
    x = np.zeros((200, 2))
    with pytest.raises(ArgumentError, match=message):
        multivariate_drift(x, x, **options)  # type: ignore[arg-type]


def test_bad_frame_columns_are_a_clear_error() -> None:
    frame = pd.DataFrame({"a": range(200), "b": 1.0})
    with pytest.raises(ArgumentError, match=r"Argument columns should name columns of both frames; reference lacks \['z'\]"):
        multivariate_drift(frame, frame, columns=["z"])
    with pytest.raises(ArgumentTypeError, match=r"Argument columns should be a list of column names, got 'a'"):
        multivariate_drift(frame, frame, columns="a")  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=r"unique column names"):
        multivariate_drift(pd.DataFrame([[1, 2]] * 200, columns=["a", "a"]), frame)


def test_constant_data_and_the_most_categories_kept_work() -> None:
    same = multivariate_drift(np.ones((500, 3)), np.ones((400, 3)))
    assert same["drifted"] is False and same["p_value"] == 1.0 and same["statistic"] == 0.5  # nothing to learn
    rng = np.random.default_rng(15)
    levels = np.array([f"c{i}" for i in range(MAX_CATEGORIES)], dtype=object)
    ref = pd.DataFrame({"c": rng.choice(levels, 5_000), "n": pd.array(rng.integers(0, 9, 5_000), dtype="Int64")})
    cur = pd.DataFrame({"c": rng.choice(levels, 5_000), "n": pd.array(rng.integers(0, 9, 5_000), dtype="Int64")})
    result = multivariate_drift(ref, cur)
    assert result["categorical"] == ["c"] and result["left_out"] == {} and not result["drifted"]
    cur.loc[cur.index[:1_000], "c"] = "new"  # the code after the reference's 250: still within the classifier's bins
    assert multivariate_drift(ref, cur)["drifted"]
    ref["c"] = np.append(levels, rng.choice(levels, 5_000 - MAX_CATEGORIES))
    ref.loc[0, "c"] = "one too many"
    assert "c" in multivariate_drift(ref, cur)["left_out"]
