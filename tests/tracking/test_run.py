"""The Run object through the public client API, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

import loopml
from loopml.errors import LoopMLError
from loopml.tracking import api


@pytest.fixture
def client(use_store: str) -> Iterator[str]:
    """use_store, plus: forget this test's backends and writers, so the next test's
    fresh database (PostgreSQL reuses one URL) is not served by a stale cached store."""
    yield use_store
    api.close_all()


def test_context_manager_finishes_the_run(client: str) -> None:
    with loopml.start_run(experiment="digits", name="r1", params={"lr": 0.01}, tags={"stage": "dev"}) as run:
        assert run.status == "RUNNING" and run.is_open
        assert loopml.active_run() is run
        run.log({"loss": 0.5, "acc": 0.8}, step=0)

    assert loopml.active_run() is None
    assert run.status == "FINISHED" and not run.is_open
    got = loopml.get_run(run.id)
    assert (got.status, got.name, got.experiment) == ("FINISHED", "r1", "digits")
    assert got.record.end_time is not None and got.record.end_time >= got.record.start_time
    assert got.params == {"lr": "0.01"} and got.tags == {"stage": "dev"}
    assert got.metrics == {"loss": 0.5, "acc": 0.8}
    assert got.record.host and got.record.command  # who ran it, and how


def test_exception_in_block_fails_the_run_and_is_reraised(client: str) -> None:
    with pytest.raises(RuntimeError, match="diverged"):
        with loopml.start_run(experiment="digits") as run:
            run.log({"loss": float("nan")})
            raise RuntimeError("diverged")

    got = loopml.get_run(run.id)
    assert got.status == "FAILED"
    assert math.isnan(got.metrics["loss"])  # points logged before the error are kept
    assert loopml.active_run() is None


def test_keyboard_interrupt_kills_the_run(client: str) -> None:
    with pytest.raises(KeyboardInterrupt):
        with loopml.start_run(experiment="digits") as run:
            raise KeyboardInterrupt

    assert loopml.get_run(run.id).status == "KILLED"


@pytest.mark.parametrize("status", ["FINISHED", "FAILED", "KILLED"])
def test_finish_with_a_status(client: str, status: str) -> None:
    run = loopml.start_run(experiment="digits")
    run.finish(status=status)
    run.finish()  # a second finish is a no-op

    assert run.status == status and loopml.get_run(run.id).status == status


def test_finish_checks_the_status(client: str) -> None:
    with loopml.start_run(experiment="digits") as run:
        with pytest.raises(ValueError, match="Argument status should be one of FINISHED, FAILED, KILLED, got 'RUNNING'"):
            run.finish("RUNNING")


def test_history_is_in_step_order(client: str) -> None:
    with loopml.start_run(experiment="digits") as run:
        for step in (3, 0, 2, 1):
            run.log({"loss": 1.0 / (step + 1)}, step=step, timestamp=1000.0 + step)

        h = run.history("loss")  # flushes first: readable while the run is open

    assert h.steps.dtype == np.int64 and h.timestamps.dtype == np.float64 and h.values.dtype == np.float64
    assert h.steps.tolist() == [0, 1, 2, 3]
    assert h.timestamps.tolist() == [1000.0, 1001.0, 1002.0, 1003.0]
    np.testing.assert_array_equal(h.values, [1.0, 0.5, 1 / 3, 0.25])
    assert loopml.get_run(run.id).history("loss").steps.tolist() == [0, 1, 2, 3]


def test_default_step_increments(client: str) -> None:
    with loopml.start_run(experiment="digits") as run:
        run.log({"a": 1.0})
        run.log({"a": 2.0})
        run.log({"a": 3.0}, step=10)
        run.log({"a": 4.0})

    assert run.history("a").steps.tolist() == [0, 1, 10, 11]


def test_logging_to_a_finished_run_says_how_to_resume(client: str) -> None:
    with loopml.start_run(experiment="digits") as run:
        run.log({"a": 1.0})

    resume = rf"Resume it with loopml\.start_run\(run_id='{run.id}'\)"
    with pytest.raises(LoopMLError, match=rf"Run {run.id} is FINISHED, not open for logging\. {resume}"):
        run.log({"a": 2.0})
    with pytest.raises(LoopMLError, match=resume):
        loopml.get_run(run.id).log({"a": 2.0})
    with pytest.raises(LoopMLError, match=resume):
        run.log_params({"b": 1})


def test_resume_continues_steps(client: str) -> None:
    with loopml.start_run(experiment="digits", params={"lr": 0.1}) as first:
        for _ in range(3):
            first.log({"loss": 1.0})

    with loopml.start_run(run_id=first.id, params={"lr": 0.1}, tags={"resumed": "yes"}) as again:
        assert again.id == first.id and loopml.get_run(first.id).status == "RUNNING"
        again.log({"loss": 0.5})

    got = loopml.get_run(first.id)
    assert got.status == "FINISHED" and got.tags == {"resumed": "yes"}
    assert got.history("loss").steps.tolist() == [0, 1, 2, 3]


def test_params_cannot_change_but_tags_can(client: str) -> None:
    with loopml.start_run(experiment="digits", params={"lr": 0.01}) as run:
        run.log_params({"lr": 0.01, "epochs": 3})
        with pytest.raises(ValueError, match=r"Param 'lr' .* is already '0\.01'"):
            run.log_params({"lr": 0.02})
        run.set_tags({"stage": "a"})
        run.set_tags({"stage": "b"})

    got = loopml.get_run(run.id)
    assert got.params == {"lr": "0.01", "epochs": "3"} and got.tags == {"stage": "b"}


# -- bad input fails at the call; nothing of that call is stored ----------------

BAD_KEYS = [
    ("", r"Argument metric key should be a non-empty string"),
    ("k" * 251, r"Argument metric key should be at most 250 characters, got 251: 'kkkk"),
    ("a..b", r"Argument metric key should not contain '\.\.', got 'a\.\.b'"),
    ("a\nb", r"Argument metric key should not contain control characters, got 'a\\nb'"),
    ("a\x00b", r"Argument metric key should not contain control characters, got 'a\\x00b'"),
    ("a\x1bb", r"Argument metric key should not contain control characters, got 'a\\x1bb'"),
]
BAD_VALUES = [
    ("abc", r"Metric 'bad' should have a numeric value, got 'abc'"),
    (None, r"Metric 'bad' should have a numeric value, got NoneType: None"),
    ([1], r"Metric 'bad' should have a numeric value, got list: \[1\]"),
    ({}, r"Metric 'bad' should have a numeric value, got dict: \{\}"),
    (True, r"Metric 'bad' should have a numeric value, got True"),
    (b"1", r"Metric 'bad' should have a numeric value, got b'1'"),
]
BAD_STEPS = [
    (1.5, r"Argument step should be an integer \(int64\), got float: 1\.5"),
    ("3", r"Argument step should be an integer \(int64\), got str: '3'"),
    (True, r"Argument step should be an integer \(int64\), got bool: True"),
    (2**63, r"Argument step should be an integer \(int64\), got int: 9223372036854775808"),
]


def _assert_only_good_points(run: loopml.Run) -> None:
    run.flush()
    assert run.metric_keys() == ["good"]
    assert run.history("good").steps.tolist() == [0]
    assert run.history("good").values.tolist() == [1.0]


@pytest.mark.parametrize(("key", "message"), BAD_KEYS)
def test_bad_metric_key_fails_at_the_call(client: str, key: str, message: str) -> None:
    with loopml.start_run(experiment="digits") as run:
        run.log({"good": 1.0}, step=0)
        with pytest.raises(ValueError, match=message):
            run.log({"good": 2.0, key: 1.0}, step=1)
        _assert_only_good_points(run)


@pytest.mark.parametrize(("value", "message"), BAD_VALUES)
def test_bad_metric_value_fails_at_the_call(client: str, value: object, message: str) -> None:
    with loopml.start_run(experiment="digits") as run:
        run.log({"good": 1.0}, step=0)
        with pytest.raises(ValueError, match=message):
            run.log({"good": 2.0, "bad": value}, step=1)
        _assert_only_good_points(run)


@pytest.mark.parametrize(("step", "message"), BAD_STEPS)
def test_bad_step_fails_at_the_call(client: str, step: object, message: str) -> None:
    with loopml.start_run(experiment="digits") as run:
        run.log({"good": 1.0}, step=0)
        with pytest.raises(ValueError, match=message):
            run.log({"good": 2.0}, step=step)  # type: ignore[arg-type]
        _assert_only_good_points(run)


def test_default_step_past_int64_fails_at_the_call(client: str) -> None:
    with loopml.start_run(experiment="digits") as run:
        run.log({"good": 1.0}, step=2**63 - 1)
        with pytest.raises(ValueError, match="Argument step should be an integer"):
            run.log({"good": 2.0})
        run.flush()
        assert run.history("good").steps.tolist() == [2**63 - 1]


def test_metrics_must_be_a_mapping(client: str) -> None:
    with loopml.start_run(experiment="digits") as run:
        with pytest.raises(TypeError, match=r"Argument metrics should be a mapping of names to numbers, e\.g\. \{'loss': 0\.3\}, got list"):
            run.log([("loss", 0.3)])  # type: ignore[arg-type]


def test_numpy_scalars_and_extremes_are_logged(client: str) -> None:
    values = {"np32": np.float32(0.5), "np64": np.float64(-1.25), "int": np.int64(7), "inf": float("inf"), "ninf": -float("inf")}
    with loopml.start_run(experiment="digits") as run:
        run.log(values, step=0)

    got = loopml.get_run(run.id).metrics
    assert got == {"np32": 0.5, "np64": -1.25, "int": 7.0, "inf": float("inf"), "ninf": -float("inf")}
