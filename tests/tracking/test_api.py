"""The module-level client API: runs(), experiments(), the per-thread active run, threads."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

import loopml
from loopml.errors import ConfigError, LoopMLError
from loopml.store import MAX_PAGE_SIZE
from loopml.tracking import api


@pytest.fixture
def client(use_store: str) -> Iterator[str]:
    """use_store, plus: forget this test's backends and writers, so the next test's
    fresh database (PostgreSQL reuses one URL) is not served by a stale cached store."""
    yield use_store
    api.close_all()


def run_threads(n: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` in ``n`` threads; re-raise the first error any of them hit."""
    errors: list[BaseException] = []

    def wrapped(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.fixture
def digits_runs(client: str) -> dict[str, str]:
    """Five runs: four in 'digits', one in 'other'. Returns name -> run id."""
    spec = {
        "a": ("digits", "0.01", [0.2, 0.95], {"team": "x"}),
        "b": ("digits", "0.01", [0.97], {}),
        "c": ("digits", "0.1", [0.99], {}),
        "d": ("digits", "0.01", [0.5], {}),
        "e": ("other", "0.01", [0.99], {}),
    }
    ids = {}
    for name, (exp, lr, accs, tags) in spec.items():
        with loopml.start_run(experiment=exp, name=name, params={"lr": lr}, tags=tags) as run:
            for acc in accs:
                run.log({"val_acc": acc})
        ids[name] = run.id
    return ids


FILTER = "metrics.val_acc > 0.9 and params.lr = '0.01'"


def test_runs_filters_orders_and_limits(digits_runs: dict[str, str]) -> None:
    df = loopml.runs(experiment="digits", filter=FILTER, order_by=["metrics.val_acc DESC"])

    assert isinstance(df, pd.DataFrame)
    assert {"run_id", "status", "params.lr", "metrics.val_acc", "tags.team"} <= set(df.columns)
    assert df["run_id"].tolist() == [digits_runs["b"], digits_runs["a"]]
    assert df["name"].tolist() == ["b", "a"]
    assert df["metrics.val_acc"].tolist() == [0.97, 0.95]  # the newest value, not the first
    assert df["params.lr"].tolist() == ["0.01", "0.01"]
    assert df["status"].tolist() == ["FINISHED", "FINISHED"]
    assert df["tags.team"].tolist()[1] == "x" and pd.isna(df["tags.team"].tolist()[0])

    asc = loopml.runs("digits", filter=FILTER, order_by=["metrics.val_acc ASC"])
    assert asc["run_id"].tolist() == [digits_runs["a"], digits_runs["b"]]
    top = loopml.runs("digits", filter=FILTER, order_by="metrics.val_acc DESC", limit=1)
    assert top["run_id"].tolist() == [digits_runs["b"]]
    page2 = loopml.runs("digits", filter=FILTER, order_by="metrics.val_acc DESC", limit=1, offset=1)
    assert page2["run_id"].tolist() == [digits_runs["a"]]


def test_runs_across_experiments(digits_runs: dict[str, str]) -> None:
    everything = loopml.runs(filter="metrics.val_acc >= 0.99", order_by=["name"])
    assert everything["run_id"].tolist() == [digits_runs["c"], digits_runs["e"]]
    assert everything["experiment"].tolist() == ["digits", "other"]
    assert len(loopml.runs()) == 5
    assert len(loopml.runs(["digits", "other"])) == 5

    empty = loopml.runs("nope")
    assert empty.empty and {"run_id", "status"} <= set(empty.columns)


def test_runs_limit_is_capped(digits_runs: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=f"Argument limit should be an integer from 1 to {MAX_PAGE_SIZE}, got {MAX_PAGE_SIZE + 1}"):
        loopml.runs(limit=MAX_PAGE_SIZE + 1)
    with pytest.raises(ValueError, match="Argument limit should be an integer from 1"):
        loopml.runs(limit=0)
    assert len(loopml.runs(limit=MAX_PAGE_SIZE)) == 5


def test_experiments_lists_run_counts(digits_runs: dict[str, str]) -> None:
    counts = {e.name: e.run_count for e in loopml.experiments()}
    assert counts == {"digits": 4, "other": 1}


def test_get_run_sees_points_of_an_open_run(client: str) -> None:
    with loopml.start_run(experiment="digits") as run:
        run.log({"loss": 0.25}, step=4)
        got = loopml.get_run(run.id)  # flushes the writer first
        assert got.metrics == {"loss": 0.25} and got.status == "RUNNING"
        assert got.record.metrics["loss"].step == 4


def test_tracking_uri(client: str) -> None:
    assert loopml.get_tracking_uri() == client
    with pytest.raises(ConfigError, match="Tracking URI 'mysql://x' is not supported"):
        loopml.set_tracking_uri("mysql://x")


# -- the active run is per thread ---------------------------------------------


def test_no_active_run_explains_how_to_open_one(client: str) -> None:
    assert loopml.active_run() is None
    example = r"No open run in this thread\. Open one first:\n    with loopml\.start_run\(experiment='demo'\) as run:"
    with pytest.raises(LoopMLError, match=example):
        loopml.log({"loss": 0.3})
    with pytest.raises(LoopMLError, match=example):
        loopml.log_params({"lr": 1})
    with pytest.raises(LoopMLError, match=example):
        loopml.set_tags({"a": "b"})
    with pytest.raises(LoopMLError, match=example):
        loopml.log_artifact("x.txt")


def test_module_functions_act_on_the_innermost_run(client: str, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with loopml.start_run(experiment="nest", name="outer") as outer:
        loopml.log({"x": 1.0})
        with loopml.start_run(experiment="nest", name="inner", parent=outer) as inner:
            assert loopml.active_run() is inner
            loopml.log({"x": 2.0})
            loopml.log_params({"depth": 2})
            loopml.set_tags({"level": "inner"})
            loopml.log_artifact(tmp_path / "notes.txt")
        assert loopml.active_run() is outer
        loopml.log({"x": 3.0})

    got_outer, got_inner = loopml.get_run(outer.id), loopml.get_run(inner.id)
    assert got_outer.history("x").values.tolist() == [1.0, 3.0]
    assert got_inner.history("x").values.tolist() == [2.0]
    assert got_inner.record.parent_id == outer.id
    assert (got_inner.params, got_inner.tags) == ({"depth": "2"}, {"level": "inner"})
    assert [a.path for a in got_inner.artifacts()] == ["notes.txt"]
    assert got_outer.params == {} and got_outer.artifacts() == []


def test_each_thread_logs_to_its_own_run(client: str) -> None:
    both_open = threading.Barrier(3)
    done = threading.Barrier(3)
    ids: dict[int, str] = {}

    def worker(i: int) -> None:
        with loopml.start_run(experiment="threads", name=f"w{i}") as run:
            ids[i] = run.id
            both_open.wait(timeout=60)
            for step in range(200):
                loopml.log({"who": float(i)}, step=step)
            assert loopml.active_run() is run
            done.wait(timeout=60)

    def bystander(_: int) -> None:
        both_open.wait(timeout=60)
        try:
            assert loopml.active_run() is None  # other threads' runs are not this thread's
            with pytest.raises(LoopMLError, match="No open run in this thread"):
                loopml.log({"who": -1.0})
        finally:
            done.wait(timeout=60)

    run_threads(3, lambda i: worker(i) if i < 2 else bystander(i))

    for i in (0, 1):
        h = loopml.get_run(ids[i]).history("who")
        assert h.steps.tolist() == list(range(200))
        assert set(h.values.tolist()) == {float(i)}
    assert {e.name: e.run_count for e in loopml.experiments()} == {"threads": 2}


def test_many_threads_logging_to_one_run_lose_nothing(client: str) -> None:
    n_threads, n_points = 4, 5_000
    start = threading.Barrier(n_threads)
    with loopml.start_run(experiment="threads") as run:

        def worker(i: int) -> None:
            start.wait(timeout=60)
            for s in range(n_points):
                # a key of its own, and a shared key at steps no other thread uses
                run.log({f"t{i}": float(s), "shared": float(s)}, step=i * n_points + s)

        run_threads(n_threads, worker)
        assert run.flush(timeout=120)

    got = loopml.get_run(run.id)
    for i in range(n_threads):
        h = got.history(f"t{i}")
        assert len(h.values) == n_points and h.values.sum() == sum(range(n_points))
        assert got.record.metrics[f"t{i}"].count == n_points
    shared = got.history("shared")
    assert shared.steps.tolist() == list(range(n_threads * n_points))
    assert shared.values.sum() == n_threads * sum(range(n_points))
    summary = got.record.metrics["shared"]
    assert (summary.count, summary.step, summary.value) == (n_threads * n_points, n_threads * n_points - 1, n_points - 1.0)
    assert not math.isnan(summary.min) and (summary.min, summary.max) == (0.0, n_points - 1.0)


def test_a_run_finished_by_another_thread_is_no_longer_active(client: str) -> None:
    run = loopml.start_run("threads")
    finisher = threading.Thread(target=run.finish)
    finisher.start()
    finisher.join(timeout=60)

    assert loopml.active_run() is None
    with pytest.raises(LoopMLError, match="No open run in this thread"):
        loopml.log({"x": 1.0})
