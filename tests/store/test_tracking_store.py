"""TrackingStore on a real SQLite file and a real PostgreSQL: what only the database does.

The behaviour every tracking backend shares (runs, params, tags, metrics, artifacts,
datasets, errors) is the contract suite, tests/contracts/test_tracking_backend.py,
run against this store and RemoteStore alike.
"""

from __future__ import annotations

import struct
import time

from loopml.store import TrackingStore


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def test_heartbeat_at_is_the_last_activity(store: TrackingStore) -> None:
    """The database takes the heartbeat's time from the caller (a server stamps its own)."""
    a = store.create_run(experiment="busy", start_time=1000.0)
    b = store.create_run(experiment="busy", start_time=2000.0)
    store.set_status(a.id, "FINISHED", end_time=5000.0)
    store.heartbeat([b.id], at=6000.0)

    assert store.get_run(b.id).heartbeat_at == 6000.0
    assert {e.name: e for e in store.list_experiments()}["busy"].last_activity == 6000.0


def test_stale_heartbeat_reads_as_killed_until_the_next_beat(db_uri: str, tmp_path) -> None:
    st = TrackingStore(db_uri, artifact_root=tmp_path / "a", heartbeat_timeout=60.0)
    try:
        old = time.time() - 3600
        run = st.create_run(experiment="digits", start_time=old)
        stale = st.get_run(run.id)
        assert stale.status == "KILLED"
        assert stale.end_time == old  # a killed run ends at its last heartbeat

        st.heartbeat([run.id])
        fresh = st.get_run(run.id)
        assert fresh.status == "RUNNING" and fresh.end_time is None and fresh.heartbeat_at > old
    finally:
        st.close()


def test_negative_zero_keeps_its_sign(store: TrackingStore) -> None:
    run = store.create_run(experiment="digits")
    store.log_metrics([(run.id, "z", 0, 1.0, -0.0)])

    assert bits(store.history(run.id, "z").values[0]) == bits(-0.0)  # points are stored bit-exactly
    latest = store.get_run(run.id).metrics["z"].value
    if "sqlite" in store.uri:
        # the summary is a REAL column: SQLite writes integral values as integers, dropping the sign
        assert latest == 0.0
    else:
        assert bits(latest) == bits(-0.0)
