"""Per-feature drift (loopml.monitor.drift): statistics against SciPy, the flags, bad input, the HTML page.

Tolerances: loopml's KS statistic is the same difference of empirical CDFs as SciPy's,
written ``c1 * (1/n) - c2 * (1/m)`` instead of ``c1/n - c2/m``, so the two differ by at most
an ulp or two (measured: <= 2.3e-16); the p-values come from the same ``kstwo.sf`` /
``chi2.sf`` calls on those statistics, so ``rtol=1e-12`` holds them; the Wasserstein sums add
the same terms in another order (``np.dot`` against a sum), measured within 1e-15 relative.
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon
from typer.testing import CliRunner

from loopml.cli import app
from loopml.errors import ArgumentError, ArgumentTypeError
from loopml.monitor import DriftReport, drift, stats
from loopml.monitor.univariate import COLUMNS

RTOL = 1e-12
per_feature = partial(drift, multivariate=False)  # the joint test has its own tests (test_multivariate.py)
# Above 10,000 rows a side the KS p-value is Kolmogorov's limit with Stephens' correction, not
# ks_2samp's finite-n kstwo (costly at large n): measured within 1.9e-3 at en = 5,000, 6.1e-4 at
# 50,000, 1.9e-4 at 500,000 over z = sqrt(en) D in 0.3..3 (stats.ks_pvalues).
KS_P_ATOL = 2e-3


# -- the statistics against SciPy ---------------------------------------------


@pytest.mark.parametrize("n, m, ties", [(20_000, 15_000, False), (12_000, 30_001, True), (300, 450, True)])
def test_ks_and_wasserstein_equal_scipy(n: int, m: int, ties: bool) -> None:
    rng = np.random.default_rng(n)
    a, b = rng.normal(0, 1, n), rng.normal(0.05, 1.1, m)
    if ties:  # rounded values: many ties, where the CDFs must be read after the last tied value
        a, b = np.round(a, 1), np.round(b, 1)
    d, w = stats.ks_wasserstein(stats.merge(a, b))
    ref = sps.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(float(ref.statistic), rel=RTOL, abs=1e-15)
    assert w == pytest.approx(sps.wasserstein_distance(a, b), rel=RTOL)
    p = stats.ks_pvalues(np.array([d]), np.array([n]), np.array([m]))[0]
    assert p == pytest.approx(float(ref.pvalue), abs=KS_P_ATOL)


def test_merged_counts_and_shares_equal_numpys() -> None:
    rng = np.random.default_rng(9)
    a, b = rng.integers(0, 7, 1000).astype(float), rng.integers(2, 9, 800).astype(float)
    merged = stats.merge(a, b)
    values, ca, cb = merged.counts_at_ends()
    both = np.union1d(a, b)
    np.testing.assert_array_equal(values, both)
    np.testing.assert_array_equal(ca, [np.sum(a == v) for v in both])
    np.testing.assert_array_equal(cb, [np.sum(b == v) for v in both])
    edges = np.linspace(0, 8, 6)
    ref, cur = merged.shares_below(edges)
    np.testing.assert_allclose(ref, np.histogram(a, edges)[0] / len(a), rtol=1e-12)
    np.testing.assert_allclose(cur, np.histogram(b, edges)[0] / len(b), rtol=1e-12)


def test_ks_pvalues_are_vectorised_and_near_scipys_finite_n_distribution() -> None:
    n, m = np.array([20_000, 10**5, 2 * 10**4, 10**5]), np.array([10_000, 5 * 10**4, 10**4, 10**5])
    en = np.round(n * m / (n + m))
    for z in (0.4, 0.8, 1.2, 1.6, 2.0, 3.0):
        d = z / np.sqrt(en)
        expected = [sps.kstwo.sf(di, e) for di, e in zip(d, en)]
        np.testing.assert_allclose(stats.ks_pvalues(d, n, m), expected, atol=KS_P_ATOL)
    assert stats.ks_pvalues(np.array([0.5]), np.array([10**6]), np.array([10**6]))[0] == 0.0


def test_drift_reports_scipy_ks_and_chi2_per_column() -> None:
    rng = np.random.default_rng(3)
    n = 12_000  # above 10,000 a side: the asymptotic p-value, computed by loopml for all columns at once
    ref = pd.DataFrame({"x": rng.normal(size=n), "small": rng.normal(size=n), "c": rng.choice(list("abcd"), n, p=[.4, .3, .2, .1])})
    cur = pd.DataFrame({"x": rng.normal(0.05, 1, n), "small": rng.normal(size=n), "c": rng.choice(list("abcd"), n, p=[.35, .3, .2, .15])})
    report = per_feature(ref, cur)
    f = report.features.set_index("feature")
    for col in ("x", "small"):
        res = sps.ks_2samp(ref[col], cur[col])
        assert f.loc[col, "test"] == "ks"
        assert f.loc[col, "statistic"] == pytest.approx(float(res.statistic), rel=RTOL)
        assert f.loc[col, "p_value"] == pytest.approx(float(res.pvalue), abs=KS_P_ATOL)
        assert f.loc[col, "effect"] == pytest.approx(sps.wasserstein_distance(ref[col], cur[col]) / ref[col].std(), rel=1e-9)
    table = pd.crosstab(np.r_[np.zeros(n), np.ones(n)], np.r_[ref["c"], cur["c"]])
    chi2, p, _, _ = sps.chi2_contingency(table.to_numpy(), correction=False)
    assert (f.loc["c", "test"], f.loc["c", "statistic"]) == ("chi2", pytest.approx(chi2, rel=RTOL))
    assert f.loc["c", "p_value"] == pytest.approx(p, rel=RTOL, abs=1e-300)
    counts = table.to_numpy()
    assert f.loc["c", "effect"] == pytest.approx(jensenshannon(counts[0] / n, counts[1] / n, base=2), rel=1e-9)


def test_ks_and_wasserstein_skip_nan_and_infinite_values_like_scipy_on_the_finite_ones() -> None:
    rng = np.random.default_rng(8)
    n, m = 11_000, 10_500  # above 10,000 a side: loopml's own KS statistic, not ks_2samp's
    a, b = np.round(rng.normal(size=n), 2), np.round(rng.normal(0.03, 1, m), 2)  # ties within and across
    a[::97], a[::101], b[::89] = np.nan, np.inf, -np.inf
    f = per_feature(pd.DataFrame({"x": a}), pd.DataFrame({"x": b})).features.iloc[0]
    fa, fb = a[np.isfinite(a)], b[np.isfinite(b)]
    assert f["test"] == "ks"
    assert (f["missing_reference"], f["missing_current"]) == (pytest.approx(1 - len(fa) / n), pytest.approx(1 - len(fb) / m))
    assert f["statistic"] == pytest.approx(float(sps.ks_2samp(fa, fb).statistic), rel=RTOL)
    assert f["effect"] == pytest.approx(sps.wasserstein_distance(fa, fb) / fa.std(ddof=1), rel=1e-9)


def test_small_samples_use_scipys_exact_ks() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=200), rng.normal(0.4, 1, 150)
    f = per_feature(pd.DataFrame({"x": a}), pd.DataFrame({"x": b})).features.iloc[0]
    res = sps.ks_2samp(a, b)  # method="auto": exact below 10,000 a side
    assert (f["statistic"], f["p_value"]) == (pytest.approx(float(res.statistic)), pytest.approx(float(res.pvalue), rel=RTOL))


def test_chi2_homogeneity_equals_scipy_and_pools_rare_cells() -> None:
    ref, cur = np.array([500, 300, 150, 50]), np.array([450, 330, 160, 60])
    stat, dof, pooled = stats.chi2_homogeneity(ref, cur)
    chi2, _, sdof, _ = sps.chi2_contingency(np.vstack([ref, cur]), correction=False)
    assert (stat, dof, pooled) == (pytest.approx(chi2, rel=RTOL), sdof, 0)
    # two cells expected under 5: pooled into one, which is then large enough
    ref, cur = np.array([500, 300, 4, 3]), np.array([450, 330, 2, 5])
    stat, dof, pooled = stats.chi2_homogeneity(ref, cur)
    chi2, _, sdof, _ = sps.chi2_contingency(np.array([[500, 300, 7], [450, 330, 7]]), correction=False)
    assert (stat, dof, pooled) == (pytest.approx(chi2, rel=RTOL), sdof, 2)
    # a pooled cell still too small (expected 4.9) joins the smallest other cell
    ref, cur = np.array([500, 300, 3, 2]), np.array([450, 330, 1, 4])
    chi2, _, sdof, _ = sps.chi2_contingency(np.array([[500, 305], [450, 335]]), correction=False)
    assert stats.chi2_homogeneity(ref, cur) == (pytest.approx(chi2, rel=RTOL), sdof, 3)
    # one cell left after pooling: nothing to test
    assert stats.chi2_homogeneity(np.array([40, 1]), np.array([40, 0]))[1] == 0


def test_wasserstein_from_counts_and_jensen_shannon_equal_scipy() -> None:
    values, ref, cur = np.array([0.0, 1, 2, 5, 9]), np.array([10, 40, 30, 15, 5]), np.array([5, 35, 35, 15, 10])
    assert stats.wasserstein_counts(values, ref, cur) == pytest.approx(sps.wasserstein_distance(values, values, ref, cur), rel=RTOL)
    assert stats.jensen_shannon(ref, cur) == pytest.approx(jensenshannon(ref, cur, base=2), rel=1e-12)
    assert stats.jensen_shannon(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)


def test_two_proportions_equals_the_2x2_chi_square() -> None:
    p = stats.two_proportions(np.array([30, 0]), np.array([1000, 500]), np.array([55, 0]), np.array([1200, 400]))
    _, expected, _, _ = sps.chi2_contingency(np.array([[30, 970], [55, 1145]]), correction=False)
    assert p[0] == pytest.approx(expected, rel=1e-12)
    assert p[1] == 1.0


def test_holm_by_its_definition() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    got = stats.holm(np.array([0.01, 0.04, 0.03, 0.005, np.nan]))
    np.testing.assert_allclose(got[:4], [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    assert math.isnan(got[4])
    assert stats.holm(np.array([0.5, 0.9]))[1] == 1.0


def test_new_category_pvalue_is_the_binomial_tail() -> None:
    assert stats.new_category_pvalue(12, 1000, 3, 2000) == pytest.approx(float(sps.binom.sf(11, 1000, 3 / 2000)))
    assert stats.new_category_pvalue(0, 1000, 3, 2000) == 1.0


# -- what gets flagged --------------------------------------------------------


def _tables(n: int, seed: int, shifted: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    def one(rng: np.random.Generator, drift_: bool) -> pd.DataFrame:
        cols = {f"n{i}": rng.normal(i, 1 + i / 10, n) for i in range(10)}
        cols["counts"] = rng.poisson(3, n).astype(float)
        cols["flag"] = rng.random(n) < 0.3
        cols["plan"] = rng.choice(["basic", "pro", "team", "edu"], n, p=[.5, .3, .15, .05])
        if drift_:
            cols["n3"] = cols["n3"] + 0.2 * 1.3  # 0.2 sd
            cols["counts"] = rng.poisson(3.3, n).astype(float)
            cols["plan"] = rng.choice(["basic", "pro", "team", "edu"], n, p=[.45, .3, .15, .10])
        return pd.DataFrame(cols)

    return one(np.random.default_rng([seed, 1]), False), one(np.random.default_rng([seed, 2]), shifted)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_drifts_are_found_and_nothing_else(seed: int) -> None:
    ref, cur = _tables(20_000, seed, shifted=True)
    report = per_feature(ref, cur)
    assert sorted(report.drifted_features) == ["counts", "n3", "plan"]
    assert report.drifted
    kinds = dict(zip(report.features["feature"], report.features["kind"]))
    assert (kinds["n0"], kinds["counts"], kinds["flag"], kinds["plan"]) == ("numeric", "discrete", "boolean", "categorical")
    clean = per_feature(*_tables(20_000, seed, shifted=False))
    assert not clean.drifted and clean.drifted_features == []


def test_significant_but_tiny_changes_are_not_flagged() -> None:
    rng = np.random.default_rng(0)
    n = 400_000  # a 0.02 sd shift is highly significant at this size, and below the 0.05 minimum
    ref, cur = pd.DataFrame({"x": rng.normal(size=n)}), pd.DataFrame({"x": rng.normal(0.02, 1, n)})
    f = per_feature(ref, cur).features.iloc[0]
    assert f["p_adjusted"] < 1e-6 and f["effect"] < 0.05 and not f["drifted"]
    f = per_feature(ref, cur, min_effect={"wasserstein/sd": 0.01}).features.iloc[0]
    assert f["drifted"]


def test_missing_rate_and_new_categories_drift_on_their_own() -> None:
    rng = np.random.default_rng(5)
    n = 5000
    x_ref, x_cur = rng.normal(size=n), rng.normal(size=n)
    x_cur[rng.random(n) < 0.05] = np.nan  # 5% missing in current only, the rest unchanged
    c_ref = rng.choice(list("abc"), n).astype(object)
    c_cur = rng.choice(list("abc"), n).astype(object)
    c_cur[:150] = "zz-new"  # 3% of rows in a category the reference never saw
    report = per_feature(pd.DataFrame({"x": x_ref, "c": c_ref}), pd.DataFrame({"x": x_cur, "c": c_cur}))
    f = report.features.set_index("feature")
    assert f.loc["x", "missing_drifted"] and not f.loc["x", "distribution_drifted"] and f.loc["x", "drifted"]
    assert f.loc["x", "missing_current"] == pytest.approx(np.isnan(x_cur).mean())
    assert (f.loc["c", "new_categories"], f.loc["c", "new_rate"]) == (1, pytest.approx(0.03))
    assert f.loc["c", "new_drifted"] and f.loc["c", "drifted"]


def test_the_multivariate_test_runs_by_default_and_counts_in_drifted() -> None:
    rng = np.random.default_rng(11)
    n = 4000
    x_ref, x_cur = rng.normal(size=n), rng.normal(size=n)
    ref = pd.DataFrame({"x": x_ref, "y": x_ref + rng.normal(0, 0.3, n)})
    cur = pd.DataFrame({"x": x_cur, "y": -x_cur + rng.normal(0, 0.3, n)})  # the correlation flips, the margins do not
    report = drift(ref, cur)
    assert report.drifted_features == [] and report.multivariate is not None
    assert report.multivariate["drifted"] and report.drifted
    assert report.to_dict()["multivariate"]["columns"] == ["x", "y"]
    assert drift(ref, cur, multivariate=False).drifted is False


def test_threads_do_not_change_the_result() -> None:
    ref, cur = _tables(3000, 2, shifted=True)
    pd.testing.assert_frame_equal(per_feature(ref, cur, threads=1).features, per_feature(ref, cur, threads=3).features)
    with pytest.raises(ArgumentError, match="Argument threads should be a positive integer, got 0"):
        per_feature(ref, cur, threads=0)


def test_features_frame_has_the_documented_columns_and_dict_is_json() -> None:
    report = per_feature(*_tables(2000, 0, shifted=True))
    assert list(report.features.columns) == COLUMNS
    assert isinstance(report, DriftReport) and report.multivariate is None  # multivariate=False
    out = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert out["drifted"] is report.drifted and len(out["features"]) == 13
    assert out["features"][0]["missing_p_value"] is None  # NaN (no test) becomes null


# -- inputs -------------------------------------------------------------------


def test_arrays_datasets_and_images() -> None:
    rng = np.random.default_rng(6)
    report = per_feature(rng.normal(size=(500, 2)), rng.normal(size=(400, 2)) + [0, 1])
    assert report.drifted_features == ["x1"]
    images = per_feature(rng.random((300, 1, 8, 8)), rng.random((300, 1, 8, 8)) * 0.5)  # darker images
    assert list(images.features["feature"]) == ["c0_mean", "c0_std"] and images.drifted_features == ["c0_mean", "c0_std"]
    from loopml.data import from_frame

    frame = pd.DataFrame({"a": rng.normal(size=400), "c": rng.choice(["u", "v"], 400), "y": rng.integers(0, 2, 400)})
    other = frame.assign(c=rng.choice(["v", "w"], 400))  # codes differ between the datasets: compared by name
    ds_report = per_feature(from_frame(frame, target="y"), from_frame(other, target="y"))
    f = ds_report.features.set_index("feature")
    assert f.loc["c", "kind"] == "categorical" and f.loc["c", "new_categories"] == 1 and f.loc["c", "drifted"]
    assert not f.loc["a", "drifted"]


def test_mismatched_columns_and_types_are_clear_errors() -> None:
    a = pd.DataFrame({"x": [1.0, 2.0], "y": [1, 2]})
    with pytest.raises(ArgumentError, match=r"Argument current should have the columns of reference: missing \['y'\]; extra \['z'\]"):
        per_feature(a, pd.DataFrame({"x": [1.0], "z": [1]}))
    with pytest.raises(ArgumentTypeError, match=r"reference's type in column 'x': numeric in reference, categorical in current"):
        per_feature(a, pd.DataFrame({"x": ["a", "b"], "y": [1, 2]}))
    with pytest.raises(ArgumentTypeError, match="Argument reference should be a pandas DataFrame, a NumPy array"):
        per_feature({"x": 1}, a)
    with pytest.raises(ArgumentError, match="Argument alpha should be a number between 0 and 1"):
        per_feature(a, a, alpha=5)
    with pytest.raises(ArgumentError, match="Argument columns should name columns of reference; it has no"):
        per_feature(a, a, columns=["nope"])
    with pytest.raises(ArgumentTypeError, match="convert times to numbers"):
        per_feature(pd.DataFrame({"t": pd.to_datetime(["2024-01-01"])}), pd.DataFrame({"t": pd.to_datetime(["2024-01-02"])}))
    with pytest.raises(ArgumentError, match="Argument min_effect should have keys among"):
        per_feature(a, a, min_effect={"psi": 0.1})
    assert per_feature(a, pd.DataFrame({"x": [1.0], "z": [1]}), columns=["x"]).features["feature"].tolist() == ["x"]


def test_too_few_rows_and_all_missing_columns_are_not_enough_data_never_alarms() -> None:
    rng = np.random.default_rng(7)
    ref = pd.DataFrame({"x": rng.normal(size=10), "c": rng.choice(list("ab"), 10)})
    cur = pd.DataFrame({"x": rng.normal(50, 1, 10), "c": ["b"] * 10})
    report = per_feature(ref, cur)
    assert not report.drifted
    assert set(report.features["test"]) == {"none"}
    assert report.features["note"].str.startswith("not enough data: 10 values in reference, 10 in current").all()
    n = 1000
    ref = pd.DataFrame({"gone": rng.normal(size=n), "never": [None] * n, "x": rng.normal(size=n)})
    cur = pd.DataFrame({"gone": [np.nan] * n, "never": [None] * n, "x": rng.normal(size=n)})
    f = per_feature(ref, cur).features.set_index("feature")
    assert f.loc["gone", "missing_drifted"] and f.loc["gone", "test"] == "none"  # a column that stopped arriving
    assert not f.loc["never", "drifted"] and f.loc["never", "note"].startswith("not enough data")
    assert not f.loc["x", "drifted"]


# -- the HTML page ------------------------------------------------------------


def test_html_is_standalone_and_escapes_hostile_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    hostile = "<script>alert(1)</script>"
    ref = pd.DataFrame({hostile: rng.normal(size=300), "c": rng.choice(["<img src=x onerror=alert(2)>", "ok"], 300)})
    cur = pd.DataFrame({hostile: rng.normal(1, 1, 300), "c": rng.choice(["<img src=x onerror=alert(2)>", "ok", "</td>&"], 300)})
    path = per_feature(ref, cur).to_html(tmp_path / "drift.html")
    page = path.read_text()
    assert "<script" not in page and "<img" not in page and "</td>&<" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    for fetch in ("src=\"", "href=", "@import", "url(", "<link", "//cdn"):
        assert fetch not in page, fetch
    assert page.count("<svg") == 2 and "drifted" in page


# -- the command line ---------------------------------------------------------


def test_cli_compares_files_in_every_format(tmp_path: Path) -> None:
    ref, cur = _tables(3000, 1, shifted=True)
    ref["label"], cur["label"] = 0, 1
    ref.to_parquet(tmp_path / "ref.parquet")
    cur.to_csv(tmp_path / "cur.csv", index=False)
    runner = CliRunner()
    result = runner.invoke(app, ["monitor", "drift", "--reference", str(tmp_path / "ref.parquet"), "--current",
                                 str(tmp_path / "cur.csv"), "--target", "label", "--json", "--html", str(tmp_path / "d.html")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert sorted(out["drifted_features"]) == ["counts", "n3", "plan"] and "label" not in [f["feature"] for f in out["features"]]
    assert (tmp_path / "d.html").read_text().startswith("<!DOCTYPE html>")
    result = runner.invoke(app, ["monitor", "drift", "--reference", str(tmp_path / "ref.parquet"), "--current",
                                 str(tmp_path / "cur.csv"), "--target", "label"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "drifted: 3 of 13 features (n3, counts, plan)" in result.stdout
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", x=rng.normal(size=(500, 3)), y=np.zeros(500))
    np.savez(tmp_path / "b.npz", x=rng.normal(size=(500, 3)), y=np.ones(500))
    result = runner.invoke(app, ["monitor", "drift", "--reference", str(tmp_path / "a.npz"), "--current", str(tmp_path / "b.npz"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["drifted"] is False


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    pd.DataFrame({"a": [1.0, 2.0]}).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame({"b": [1.0, 2.0]}).to_csv(tmp_path / "b.csv", index=False)
    runner = CliRunner()
    result = runner.invoke(app, ["monitor", "drift", "--reference", str(tmp_path / "a.csv"), "--current", str(tmp_path / "b.csv")])
    assert result.exit_code == 2
    assert result.output.startswith("error: Argument current should have the columns of reference: missing ['a']")
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["monitor", "drift", "--reference", str(tmp_path / "a.txt"), "--current", str(tmp_path / "b.csv")])
    assert result.exit_code == 2 and "should be a DataFrame, an array, a loopml Dataset or a .csv/.parquet/.npz path" in result.output
    result = runner.invoke(app, ["monitor", "drift", "--reference", str(tmp_path / "none.csv"), "--current", str(tmp_path / "b.csv")])
    assert result.exit_code == 2 and "does not exist" in result.output
