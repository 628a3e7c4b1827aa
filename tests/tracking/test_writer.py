"""BatchWriter: bounded memory, no lost point, flush semantics, over a real store."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from loopml.errors import StoreError
from loopml.store import TrackingStore
from loopml.tracking.writer import BatchWriter


class GatedStore(TrackingStore):
    """A real store whose ``log_metrics`` waits until the test opens the gate."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[int] = []

    def log_metrics(self, points: Sequence[tuple]) -> None:  # type: ignore[override]
        self.batches.append(len(points))
        self.entered.set()
        if not self.gate.wait(timeout=120):
            raise RuntimeError("the test never opened the gate")
        super().log_metrics(points)


class FlakyStore(TrackingStore):
    """A real store whose first ``fail`` writes raise StoreError, as a locked database would."""

    def __init__(self, *args, fail: int, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.fail = fail

    def log_metrics(self, points: Sequence[tuple]) -> None:  # type: ignore[override]
        if self.fail > 0:
            self.fail -= 1
            raise StoreError("database is locked", transient=True)
        super().log_metrics(points)


@pytest.fixture
def gated(db_uri: str, tmp_path: Path) -> Iterator[GatedStore]:
    st = GatedStore(db_uri, artifact_root=tmp_path / "artifacts")
    yield st
    st.gate.set()
    st.close()


def wait_until(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Readiness polling: return once ``predicate()`` holds (no fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.001)


def test_add_blocks_at_max_pending_and_resumes(gated: GatedStore) -> None:
    run = gated.create_run(experiment="writer")
    writer = BatchWriter(gated, max_pending=10, batch_size=5, flush_interval=60.0, heartbeat_interval=60.0)
    total = 100
    accepted: list[int] = []

    def produce() -> None:
        for step in range(total):
            writer.add([(run.id, "loss", step, 1.0, float(step))])
            accepted.append(step)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        assert gated.entered.wait(timeout=60)
        # One batch (5) is stuck in the store; the buffer holds at most max_pending (10)
        # more. Once max_pending points are pending, the producer's next add waits.
        wait_until(lambda: writer.pending >= 10)
        producer.join(timeout=0.2)  # room to (wrongly) run through all 100 points
        assert producer.is_alive()
        assert gated.batches == [5]
        assert 10 <= len(accepted) == writer.pending <= 10 + 5
        assert len(writer._buf) <= 10
        assert writer.flush(timeout=0.05) is False  # still blocked: flush gives up and says so
    finally:
        gated.gate.set()
    producer.join(timeout=60)

    assert not producer.is_alive() and len(accepted) == total
    assert writer.flush(timeout=60) is True and writer.pending == 0
    assert all(n <= 5 for n in gated.batches) and sum(gated.batches) == total
    h = gated.history(run.id, "loss")
    assert h.steps.tolist() == list(range(total)) and h.values.tolist() == [float(s) for s in range(total)]
    assert writer.close() is True


def test_a_big_add_waits_for_an_empty_buffer_instead_of_being_refused(gated: GatedStore) -> None:
    run = gated.create_run(experiment="writer")
    writer = BatchWriter(gated, max_pending=10, batch_size=5, flush_interval=60.0, heartbeat_interval=60.0)
    writer.add([(run.id, "x", s, 1.0, 1.0) for s in range(5)])
    assert gated.entered.wait(timeout=60)

    big = threading.Thread(target=writer.add, args=([(run.id, "x", s, 1.0, 1.0) for s in range(5, 30)],))
    big.start()
    wait_until(lambda: writer.pending == 30)  # more than max_pending at once: let in whole
    gated.gate.set()
    big.join(timeout=60)

    assert writer.flush(timeout=60)
    assert gated.history(run.id, "x").steps.tolist() == list(range(30))
    writer.close()


def test_flush_writes_a_partial_batch(store: TrackingStore) -> None:
    run = store.create_run(experiment="writer")
    writer = BatchWriter(store, batch_size=1000, max_pending=1000, flush_interval=60.0)
    writer.add([(run.id, "acc", 0, 1.0, 0.5), (run.id, "acc", 1, 2.0, 0.75)])

    assert writer.flush() is True
    assert store.history(run.id, "acc").values.tolist() == [0.5, 0.75]
    assert writer.close() is True


def test_transient_store_errors_are_retried_without_loss(db_uri: str, tmp_path: Path) -> None:
    st = FlakyStore(db_uri, artifact_root=tmp_path / "a", fail=3)
    try:
        run = st.create_run(experiment="writer")
        writer = BatchWriter(st, batch_size=10, max_pending=100, flush_interval=60.0, max_backoff=0.01)
        writer.add([(run.id, "x", s, 1.0, float(s)) for s in range(25)])

        assert writer.flush(timeout=60) is True
        assert writer.retries == 3
        assert st.history(run.id, "x").values.sum() == sum(range(25))
        writer.close()
    finally:
        st.close()


def test_permanent_errors_surface_at_flush(store: TrackingStore) -> None:
    run = store.create_run(experiment="writer")
    writer = BatchWriter(store, batch_size=10, max_pending=100, flush_interval=60.0)
    writer.add([(run.id, "x", 0, 1.0, object())])  # type: ignore[list-item]  # not a number: refused

    with pytest.raises(TypeError, match="float"):  # a refusal, not a retryable failure: no endless retry
        writer.flush(timeout=60)
    assert writer.flush(timeout=60) is True  # reported once
    writer.close()


def test_closed_writer_refuses_points(store: TrackingStore) -> None:
    writer = BatchWriter(store, batch_size=10, max_pending=100)
    assert writer.close() is True
    with pytest.raises(Exception, match="The loopml writer is closed"):
        writer.add([("r", "x", 0, 1.0, 1.0)])


def test_max_pending_below_batch_size_is_refused(store: TrackingStore) -> None:
    with pytest.raises(ValueError, match=r"Argument max_pending should be >= batch_size \(50\), got 10"):
        BatchWriter(store, max_pending=10, batch_size=50)


def test_a_leaked_writer_lock_does_not_hang_an_interrupted_program(use_store: str) -> None:
    """A Ctrl-C between a `with cond:`'s acquire and its block can leave the lock held
    (CPython bpo-29988); finish("KILLED") and close must still return."""
    import threading

    import loopml
    from loopml.tracking import api

    run = loopml.start_run("interrupted")
    run.log({"x": 1.0}, step=0)
    run.flush()
    writer = run._writer
    assert writer is not None
    taken = threading.Event()
    threading.Thread(target=lambda: (writer._cond.acquire(), taken.set()), daemon=True).start()
    assert taken.wait(10)  # the lock is now held by a thread that never releases it
    run.killed_flush_timeout = 0.2

    finisher = threading.Thread(target=run.finish, args=("KILLED",), daemon=True)
    finisher.start()
    finisher.join(timeout=60)  # a regression hangs here: fail instead of hanging the suite
    assert not finisher.is_alive(), "finish('KILLED') hung on the leaked lock"

    assert loopml.get_run(run.id).status == "KILLED"
    assert loopml.get_run(run.id).history("x").values.tolist() == [1.0]
    assert writer.close(timeout=0.2) is False
    with api._lock:  # the stuck writer must not be reused by the next test
        api._writers.clear()
        api._backends.clear()
