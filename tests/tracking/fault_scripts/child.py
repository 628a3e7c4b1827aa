"""Standalone child programs for tests/tracking/test_faults.py.

Run as ``python child.py MODE [ARGS]``; the store comes from the environment
(``LOOPML_TRACKING_URI`` and friends), exactly as a user's training script
would get it. Every mode talks to the parent through stdout lines, flushed
at once, and (where it must wait) reads lines from stdin:

- ``burst EXPERIMENT INDEX N``: print ``ready``, wait for ``go`` on stdin
  (the parent's barrier), open a run, log N points of ``x`` (value
  ``INDEX * 1e6 + step``), flush every 1,000, finish, print ``done RUN_ID``.
- ``stream EXPERIMENT``: open a run (``with`` block), print ``run RUN_ID``, log
  ``x = step`` without end, flushing every 1,000 points and printing
  ``flushed N`` after each flush. For SIGKILL and SIGINT.
- ``idle EXPERIMENT``: open a run, log 10 points, print ``run RUN_ID``, wait
  for a line on stdin without logging, then finish and print ``finished``.
- ``fail EXPERIMENT``: log 100 points in a ``with`` block, then raise.
- ``no_finish EXPERIMENT N``: ``start_run`` without ``with``, log N points,
  print ``run RUN_ID`` and return; the atexit hook must finish the run.
- ``raise_open EXPERIMENT``: ``start_run`` without ``with``, log 100 points,
  then raise: the atexit hook must finish the run FAILED.
- ``hold_lock DB_PATH SECONDS``: take SQLite's write lock on the raw file
  (``BEGIN IMMEDIATE``), print ``locked``, hold it SECONDS, COMMIT, print
  ``released``.
"""

from __future__ import annotations

import signal
import sqlite3
import sys
import time


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def burst(experiment: str, index: int, n: int) -> None:
    import loopml

    say("ready")
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected 'go' on stdin")
    base = index * 1_000_000.0
    with loopml.start_run(experiment, name=f"worker-{index}", params={"index": index}) as run:
        for step in range(n):
            run.log({"x": base + step}, step=step)
            if (step + 1) % 1_000 == 0:
                run.flush()
    say(f"done {run.id}")


def stream(experiment: str) -> None:
    import loopml

    with loopml.start_run(experiment) as run:
        say(f"run {run.id}")
        step = 0
        while True:
            run.log({"x": float(step)}, step=step)
            step += 1
            if step % 1_000 == 0:
                run.flush()
                say(f"flushed {step}")


def stream_open(experiment: str) -> None:
    """Like stream, without a with block: the exit hook has to end the run."""
    import loopml

    run = loopml.start_run(experiment)
    say(f"run {run.id}")
    step = 0
    while True:
        run.log({"x": float(step)}, step=step)
        step += 1
        if step % 1_000 == 0:
            run.flush()
            say(f"flushed {step}")


def idle(experiment: str) -> None:
    import loopml

    run = loopml.start_run(experiment)
    for step in range(10):
        run.log({"x": float(step)}, step=step)
    run.flush()
    say(f"run {run.id}")
    sys.stdin.readline()  # a long training step: no logging, only the writer's heartbeat
    run.finish()
    say("finished")


def fail(experiment: str) -> None:
    import loopml

    with loopml.start_run(experiment) as run:
        say(f"run {run.id}")
        for step in range(100):
            run.log({"x": float(step)}, step=step)
        raise RuntimeError("boom in the training loop")


def no_finish(experiment: str, n: int) -> None:
    import loopml

    run = loopml.start_run(experiment)
    for step in range(n):
        run.log({"x": float(step)}, step=step)
    say(f"run {run.id}")


def raise_open(experiment: str) -> None:
    import loopml

    run = loopml.start_run(experiment)
    say(f"run {run.id}")
    for step in range(100):
        run.log({"x": float(step)}, step=step)
    raise RuntimeError("boom outside any with block")


def hold_lock(db_path: str, seconds: float) -> None:
    conn = sqlite3.connect(db_path, timeout=60, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE experiments SET description = 'locked' WHERE 0")
    say("locked")
    time.sleep(seconds)  # holding the lock for a while is the behaviour under test
    conn.execute("COMMIT")
    conn.close()
    say("released")


def main(argv: list[str]) -> None:
    # A process started in the background by a shell without job control
    # inherits SIGINT ignored; a user's script at a terminal has Python's handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    mode, args = argv[0], argv[1:]
    if mode == "burst":
        burst(args[0], int(args[1]), int(args[2]))
    elif mode == "stream":
        stream(args[0])
    elif mode == "stream_open":
        stream_open(args[0])
    elif mode == "idle":
        idle(args[0])
    elif mode == "fail":
        fail(args[0])
    elif mode == "no_finish":
        no_finish(args[0], int(args[1]))
    elif mode == "raise_open":
        raise_open(args[0])
    elif mode == "hold_lock":
        hold_lock(args[0], float(args[1]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
