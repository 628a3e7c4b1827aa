"""The answer checks behind benchmarks/tracking.py's goal 7: a fast wrong answer must not count."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.benchmark_modules import load_benchmark



@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    yield load_benchmark("tracking")
    sys.modules.pop("benchmark_tracking", None)


def test_history_problem_checks_every_step_timestamp_and_value(bench: ModuleType) -> None:
    ts0 = bench.CLIENT_TS0
    logged = [0.5, 0.25, 0.125]
    points = [(2, ts0 + 2, 0.125), (0, ts0, 0.5), (1, ts0 + 1, 0.25)]  # any order the server likes
    assert bench.history_problem(points, logged) is None
    assert "2 points came back, 3 were logged" in bench.history_problem(points[:2], logged)
    wrong_value = [(0, ts0, 0.5), (1, ts0 + 1, 0.250001), (2, ts0 + 2, 0.125)]
    assert bench.history_problem(wrong_value, logged).startswith("point 1:")
    wrong_timestamp = [(0, ts0, 0.5), (1, ts0 + 1, 0.25), (2, ts0, 0.125)]
    assert bench.history_problem(wrong_timestamp, logged) is not None


def test_search_problem_needs_the_count_the_order_and_both_servers_to_agree(bench: ModuleType) -> None:
    rows = [(0.9, "0.01", "32", "adam"), (0.7, "0.01", "64", "sgd")]
    assert bench.search_problem({"loopml": rows, "mlflow": list(rows)}, 2) is None
    assert "loopml returned 1 runs, 2 match" in bench.search_problem({"loopml": rows[:1], "mlflow": rows}, 2)
    assert "out of order" in bench.search_problem({"loopml": rows[::-1], "mlflow": rows}, 2)
    other = [rows[0], (0.7, "0.01", "128", "sgd")]  # same metric, another run
    assert "different runs" in bench.search_problem({"loopml": other, "mlflow": rows}, 2)
    assert bench.search_problem({"mlflow": rows}, 2) is None  # one server's answer alone: count and order only
