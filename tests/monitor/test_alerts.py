"""Alert rules: stored per target, fired once per cooldown on the version they watch, sent to a webhook."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopml.errors import ArgumentError, Conflict, NotFound
from loopml.monitor import alerts
from loopml.store import TrackingStore
from loopml.store.monitoring import MonitorLog
from loopml.store.registry import RegistryStore
from tests.monitor.test_webhooks import _Receiver


@pytest.fixture
def digits(use_store: str, tmp_path: Path) -> Iterator[RegistryStore]:
    """A store (SQLite or PostgreSQL) with digits/1 and digits/2, @production on 2."""
    from loopml.tracking.api import backend_for

    store = backend_for()
    assert isinstance(store, TrackingStore)
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"weights")
    reg = RegistryStore(store)
    for _ in range(2):
        reg.create_version("digits", files={"torch": (weights, {})}, signature={"inputs": [], "outputs": []})
    reg.set_alias("digits", "production", 2)
    yield reg


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.close()


def test_a_rule_fires_on_the_version_its_alias_points_at_and_is_stored(digits: RegistryStore, receiver: _Receiver) -> None:
    rule = alerts.add_rule("digits@production", "accuracy-floor", metric="accuracy", below=0.9,
                           webhook=receiver.url("/loopml"), allow=["127.0.0.1"])
    assert [r.name for r in alerts.rules("digits@production")] == ["accuracy-floor"] and rule.op == "<"

    assert alerts.evaluate("digits", 1, {"accuracy": 0.5}, at=1000.0) == []  # version 1 is not @production
    assert alerts.evaluate("digits", 2, {"accuracy": 0.95}, at=1000.0) == []  # above the floor
    fired = alerts.evaluate("digits", 2, {"accuracy": 0.84}, at=1000.0)
    assert len(fired) == 1 and fired[0].delivered is True and fired[0].value == 0.84
    assert "digits/2 (digits@production): accuracy 0.84 is below 0.9 [accuracy-floor]" == fired[0].message

    sent = json.loads(receiver.received[0][2])
    assert sent["alert"] == "accuracy-floor" and sent["version"] == 2 and sent["value"] == 0.84 and sent["op"] == "<"
    assert [(a.rule, a.version, a.value, a.delivered) for a in alerts.history("digits")] == [("accuracy-floor", 2, 0.84, True)]


def test_a_persisting_condition_fires_once_per_cooldown(digits: RegistryStore) -> None:
    alerts.add_rule("digits/2", "drift", metric="drift", above=0.0)
    assert len(alerts.evaluate("digits", 2, {"drift": 0.1}, at=1000.0)) == 1
    assert alerts.evaluate("digits", 2, {"drift": 0.2}, at=1000.0 + 1800) == []  # within the hour
    assert len(alerts.evaluate("digits", 2, {"drift": 0.2}, at=1000.0 + 3601)) == 1
    assert len(alerts.history("digits")) == 2


def test_not_enough_data_fires_nothing(digits: RegistryStore) -> None:
    alerts.add_rule("digits", "abstain", metric="abstention_rate", above=0.2)
    assert alerts.evaluate("digits", 1, {"abstention_rate": float("nan")}) == []
    assert alerts.evaluate("digits", 1, {}) == []
    assert len(alerts.evaluate("digits", 1, {"abstention_rate": 0.5})) == 1  # "digits" watches every version


def test_a_failed_delivery_is_stored_with_its_reason_not_raised(digits: RegistryStore, receiver: _Receiver) -> None:
    receiver.status = 503
    alerts.add_rule("digits@production", "floor", metric="estimated_accuracy", below=0.9,
                    webhook=receiver.url(), allow=["127.0.0.1"])
    fired = alerts.evaluate("digits", 2, {"estimated_accuracy": 0.7})
    assert fired[0].delivered is False and fired[0].delivery_error == "the receiver answered HTTP 503"
    assert alerts.history()[0].delivery_error == "the receiver answered HTTP 503"


def test_a_webhook_to_a_private_address_is_refused_when_the_rule_is_saved(digits: RegistryStore) -> None:
    with pytest.raises(ArgumentError, match="link-local"):
        alerts.add_rule("digits@production", "x", metric="accuracy", below=0.9, webhook="http://169.254.169.254/latest")
    with pytest.raises(ArgumentError, match="loopback"):
        alerts.add_rule("digits@production", "x", metric="accuracy", below=0.9, webhook="http://localhost:8080/hook")
    assert alerts.rules() == []  # nothing stored


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"metric": "latency", "below": 1.0}, "metric should be one of drift, accuracy"),
        ({"metric": "accuracy"}, "exactly one of below= or above="),
        ({"metric": "accuracy", "below": 0.9, "above": 0.1}, "exactly one of below= or above="),
        ({"metric": "accuracy", "below": float("nan")}, "finite number"),
        ({"metric": "accuracy", "below": "0.9"}, "finite number"),
    ],
)
def test_bad_rules_are_refused_with_what_to_pass(digits: RegistryStore, kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(ArgumentError, match=says):
        alerts.add_rule("digits@production", "r", **kwargs)  # type: ignore[arg-type]


def test_rule_names_are_unique_per_target_and_deleting_takes_the_alerts(digits: RegistryStore) -> None:
    alerts.add_rule("digits@production", "floor", metric="accuracy", below=0.9)
    with pytest.raises(Conflict, match="already has an alert rule named 'floor'"):
        alerts.add_rule("digits@production", "floor", metric="accuracy", below=0.8)
    alerts.evaluate("digits", 2, {"accuracy": 0.1})
    alerts.delete_rule("digits@production", "floor")
    assert alerts.rules() == [] and alerts.history() == []
    with pytest.raises(NotFound, match="no alert rule named 'floor'"):
        alerts.delete_rule("digits@production", "floor")


def test_bad_targets_and_values_are_refused(digits: RegistryStore) -> None:
    with pytest.raises(ArgumentError, match="should end in a version number"):
        alerts.add_rule("digits/latest", "r", metric="accuracy", below=0.9)
    with pytest.raises(ArgumentError, match="should use the metrics"):
        alerts.evaluate("digits", 2, {"acc": 0.5})


def test_monitor_results_are_stored_per_window(store: TrackingStore) -> None:
    log = MonitorLog(store)
    log.save_result("digits", 2, "drift", window=(0.0, 60.0), rows=500, flagged=False, payload={"features": 3})
    log.save_result("digits", 2, "drift", window=(60.0, 120.0), rows=480, flagged=True, payload={"features": 3, "<b>": "x"})
    log.save_result("digits", 2, "performance", window=(0.0, 120.0), rows=90, flagged=None, payload={"accuracy": 0.9})
    got = log.results("digits", 2, "drift")
    assert [(r["window_end"], r["flagged"], r["payload"]) for r in got] == [
        (60.0, False, {"features": 3}), (120.0, True, {"features": 3, "<b>": "x"})]
    assert [r["kind"] for r in log.results("digits", since=100.0)] == ["drift", "performance"]
    with pytest.raises(ArgumentError, match=r"window should be \(start, end\)"):
        log.save_result("digits", 2, "drift", window=(5.0, 1.0), rows=1, flagged=None, payload={})
    with pytest.raises(ArgumentError, match="payload should be JSON"):
        log.save_result("digits", 2, "drift", window=(0.0, 1.0), rows=1, flagged=None, payload={"x": float("inf")})


def test_the_cli_adds_lists_shows_and_deletes_rules(digits: RegistryStore) -> None:
    from typer.testing import CliRunner

    from loopml.cli import app

    run = CliRunner().invoke
    added = run(app, ["monitor", "alert", "add", "digits@production", "floor", "--metric", "accuracy", "--below", "0.9"])
    assert added.exit_code == 0, added.output
    assert added.output.strip() == "rule 'floor' on digits@production: fires when accuracy is below 0.9"
    listed = run(app, ["monitor", "alert", "list", "--json"])
    assert [(r["name"], r["op"], r["threshold"]) for r in json.loads(listed.output)] == [("floor", "<", 0.9)]
    alerts.evaluate("digits", 2, {"accuracy": 0.5})
    shown = run(app, ["monitor", "alert", "history", "digits", "--json"])
    assert [(a["rule"], a["version"], a["value"]) for a in json.loads(shown.output)] == [("floor", 2, 0.5)]
    table = run(app, ["monitor", "alert", "history"])
    assert "digits/2" in table.output and "floor" in table.output
    bad = run(app, ["monitor", "alert", "add", "digits@production", "x", "--metric", "accuracy", "--below", "0.9",
                    "--webhook", "http://169.254.169.254/"])
    assert bad.exit_code == 2 and bad.output.startswith("error: Argument url should be a webhook on a public address")
    gone = run(app, ["monitor", "alert", "delete", "digits@production", "floor"])
    assert gone.exit_code == 0 and json.loads(run(app, ["monitor", "alert", "list", "--json"]).output) == []
    missing = run(app, ["monitor", "alert", "delete", "digits@production", "floor"])
    assert missing.exit_code == 2 and "no alert rule named 'floor'" in missing.output
