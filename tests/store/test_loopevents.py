"""The loop's journal (``loop_events``) on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from loopml.errors import ArgumentError
from loopml.store import TrackingStore
from loopml.store.loopevents import LoopEvents


def test_events_are_kept_in_order_with_their_cause(store: TrackingStore) -> None:
    events = LoopEvents(store)
    first = events.record("digits@production", "digits", 4, "retrain", "done", cause={"alert": 12},
                          details={"parent": 3, "labels": 120})
    events.record("digits@production", "digits", 4, "compare", "done", cause={"command": "loopml compare"})
    events.record("digits@production", "digits", 4, "promote", "skipped", details={"refused": "keep"})
    events.record("other@production", "other", None, "rollback", "failed")
    kept = events.events("digits@production")
    assert [e["step"] for e in kept] == ["retrain", "compare", "promote"]
    assert kept[0]["id"] == first and kept[0]["cause"] == {"alert": 12} and kept[0]["details"]["labels"] == 120
    assert kept[2]["cause"] == {} and kept[2]["status"] == "skipped"
    assert [e["step"] for e in events.events(model="other")] == ["rollback"]
    assert events.events(model="other")[0]["version"] is None
    assert [e["step"] for e in events.events(model="digits", step="compare")] == ["compare"]
    assert [e["step"] for e in events.events("digits@production", limit=1)] == ["promote"], "the newest"


def test_bad_events_are_refused(store: TrackingStore) -> None:
    events = LoopEvents(store)
    with pytest.raises(ArgumentError, match="Argument step should be one of monitor, queue, retrain"):
        events.record("d@p", "d", 1, "deploy", "done")
    with pytest.raises(ArgumentError, match="Argument status should be one of done, skipped, failed"):
        events.record("d@p", "d", 1, "retrain", "ok")
    with pytest.raises(ArgumentError, match="Argument details should be a JSON mapping"):
        events.record("d@p", "d", 1, "retrain", "done", details={"x": float("nan")})
    assert events.events("d@p") == []
