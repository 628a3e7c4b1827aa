"""Experiment tracking: loopml beside MLflow, on the same machine, in one run.

    .venv/bin/python benchmarks/tracking.py            # everything (a few minutes)
    .venv/bin/python benchmarks/tracking.py --quick    # small sizes, a smoke run
    .venv/bin/python benchmarks/tracking.py --only 1,3 --json out.json

Needs MLflow (``make bench`` installs the ``bench`` extra). Both systems write
to SQLite files in one temporary folder; the servers listen on 127.0.0.1 only
and are stopped at the end. Each goal prints both figures, the ratio (how
many times better loopml is: a rate divided by a rate, or a time divided by a
time) and whether the goal is met. Nothing here asserts: it is a program that
reports, not a test.

Goals (ratios are loopml over MLflow):

1. single-point logging until durable         >= 1,000x  ``mlflow.log_metric``
2. 100 metrics per step until durable          >= 20x     ``MlflowClient.log_batch``
3. read a 100,000-point history                >= 50x     and loopml under 0.1 s
4. search 1,000 runs (metric + param filter)   >= 20x     ``mlflow.search_runs``
5. (1) and (3) through the tracking servers    >= 100x    ``mlflow server``
6. import time and first use                   reported (no goal)
7. MLflow's own client (``MlflowClient``) against ``loopml server`` and
   ``mlflow server``, same client code, retries off:
   a. log_metric, 1 point per call             >= 10x
   b. log_batch of 100 metrics                 >= 10x
   c. search 1,000 runs (metric + param filter) >= 10x     answers checked equal
   d. get_metric_history of 100,000 points     >= 10x     every point checked
"""

from __future__ import annotations

import os

# Before anything imports numpy/torch: one OpenMP thread (two shared cores).
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
# MLflow 3 sends usage telemetry unless told not to; keep the network out of the timings.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

import argparse
import gc
import importlib.util
import io
import json
import logging
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _common  # benchmarks/_common.py: these run as `python benchmarks/<name>.py`

PY = sys.executable
LOOP_BUDGET_S = 180.0  # no timed loop runs longer than this; a cut loop says so
SERVER_START_S = 120.0  # MLflow's server builds its schema on first start (several seconds)


# -- sizes -------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    log_calls: int = 10_000  # goal 1, loopml
    mlflow_log_calls: int = 300  # goal 1, MLflow (rate-normalised)
    batch_steps: int = 1_000  # goal 2, loopml: steps of 100 metrics
    mlflow_batch_steps: int = 200  # goal 2, MLflow (rate-normalised)
    batch_keys: int = 100
    history_points: int = 100_000  # goal 3 and 5b
    search_runs: int = 1_000  # goal 4
    server_log_calls: int = 10_000  # goal 5a, loopml
    mlflow_server_log_calls: int = 100  # goal 5a, MLflow (rate-normalised)
    repeats: int = 3  # medians of this many where a repeat is cheap
    read_repeats: int = 5
    import_repeats: int = 5
    first_use_repeats: int = 3
    client_log_calls: int = 500  # goal 7a, each server
    client_batch_calls: int = 100  # goal 7b, each server


QUICK = Sizes(
    log_calls=2_000,
    mlflow_log_calls=30,
    batch_steps=200,
    mlflow_batch_steps=20,
    history_points=10_000,
    search_runs=100,
    server_log_calls=2_000,
    mlflow_server_log_calls=20,
    repeats=1,
    read_repeats=3,
    import_repeats=3,
    first_use_repeats=1,
    client_log_calls=50,
    client_batch_calls=10,
)


# -- results -----------------------------------------------------------------


@dataclass
class Result:
    goal: str  # "1", "5a", ...
    name: str
    unit: str  # "points/s" (higher is better) or "s" (lower is better)
    loopml: float | None
    mlflow: float | None
    goal_ratio: float | None  # None: reported, no goal
    max_loopml_s: float | None = None  # an absolute bound as well (goal 3)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        if not self.loopml or not self.mlflow:
            return None
        return self.loopml / self.mlflow if self.unit == "points/s" else self.mlflow / self.loopml

    @property
    def met(self) -> bool | None:
        if self.goal_ratio is None or self.error is not None:
            return None if self.error is None else False
        ratio = self.ratio
        if ratio is None:
            return False
        ok = ratio >= self.goal_ratio
        if self.max_loopml_s is not None and self.loopml is not None:
            ok = ok and self.loopml < self.max_loopml_s
        return ok

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        d["met"] = self.met
        return d


def fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "points/s":
        return f"{v:,.0f} pts/s" if v >= 100 else f"{v:,.1f} pts/s"
    if v < 0.01:
        return f"{v * 1000:.2f} ms"
    if v < 1:
        return f"{v * 1000:.0f} ms"
    return f"{v:.2f} s"


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return "-"
    return f"{r:,.0f}x" if r >= 100 else f"{r:,.1f}x"


def fmt_goal(res: Result) -> str:
    if res.goal_ratio is None:
        return "none (report)"
    text = f">= {res.goal_ratio:,.0f}x"
    if res.max_loopml_s is not None:
        text += f", loopml < {res.max_loopml_s:g} s"
    return text


def fmt_met(res: Result) -> str:
    return {True: "PASS", False: "MISS", None: "-"}[res.met]


# -- helpers -----------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def values(n: int, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [rng.random() for _ in range(n)]


def deadline_after(seconds: float) -> float:
    return time.perf_counter() + seconds


def report_cut(done: int, wanted: int, what: str) -> None:
    if done < wanted:
        print(f"   ({what}: stopped after {done:,} of {wanted:,} calls at the {LOOP_BUDGET_S:.0f} s budget)")


def settle() -> None:
    """Collect garbage before a timed section, for both systems alike.

    MLflow's import leaves ~200,000 objects on the heap; without this, the
    first timed loop after it pays for a full collection (measured: 126 ms
    inside a 15 ms loop) whichever system it belongs to.
    """
    gc.collect()


@contextmanager
def section(title: str) -> Iterator[None]:
    print(f"-- {title} ...", flush=True)
    t0 = time.perf_counter()
    yield
    print(f"   done in {time.perf_counter() - t0:.1f} s", flush=True)


free_port = _common.free_port


def wait_http(url: str, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    """Poll ``url`` until it answers 200 (or ``proc`` exits, or ``timeout`` passes)."""
    import httpx

    end = time.monotonic() + timeout
    delay = 0.02
    last: str = "no answer"
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before answering {url}")
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}"
        time.sleep(delay)  # polling interval of a readiness loop, not a fixed wait
        delay = min(delay * 1.5, 0.5)
    raise RuntimeError(f"{url} did not become ready in {timeout:.0f} s ({last})")


def stop_process(proc: subprocess.Popen[Any] | None) -> None:
    """Stop a server started here and its children (it leads its own process group)."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the group outlives a leader that already exited
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def quiet_mlflow() -> None:
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


# -- the two systems -----------------------------------------------------------


class Bench:
    """State shared by the benchmarks: the temp folder and both local stores."""

    def __init__(self, tmp: Path, sizes: Sizes) -> None:
        self.tmp = tmp
        self.sizes = sizes
        self.loopml_uri = f"sqlite:///{tmp / 'loopml.db'}"
        self.mlflow_uri = f"sqlite:///{tmp / 'mlflow.db'}"

    # Each system's first use (creating its schema) happens here, outside any timing.
    def loopml_ready(self) -> None:
        import loopml

        with loopml.start_run("warmup", tracking_uri=self.loopml_uri) as run:
            for i in range(100):
                run.log({"warmup": float(i)}, step=i)

    def mlflow_experiment(self, name: str = "bench", uri: str | None = None) -> str:
        import mlflow

        mlflow.set_tracking_uri(uri or self.mlflow_uri)
        quiet_mlflow()
        art = self.tmp / "mlflow-artifacts" / name
        exp = mlflow.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        return str(mlflow.create_experiment(name, artifact_location=art.as_uri()))


# -- 1. single-point logging -------------------------------------------------------


def loopml_log_loop(uri: str, n: int, vals: list[float], experiment: str) -> tuple[int, float]:
    """n single-key ``run.log`` calls, timed until ``flush`` returns (all committed)."""
    import loopml

    run = loopml.start_run(experiment, tracking_uri=uri)
    settle()
    deadline = deadline_after(LOOP_BUDGET_S)
    done = 0
    t0 = time.perf_counter()
    for i in range(n):
        run.log({"loss": vals[i]}, step=i)
        done += 1
        if i & 255 == 0 and time.perf_counter() > deadline:
            break
    if not run.flush(timeout=LOOP_BUDGET_S):
        raise RuntimeError(f"loopml did not make {done} points durable in {LOOP_BUDGET_S:.0f} s")
    elapsed = time.perf_counter() - t0
    run.finish()
    report_cut(done, n, "loopml")
    return done, elapsed


def mlflow_log_loop(n: int, vals: list[float], experiment_id: str) -> tuple[int, float]:
    """n ``mlflow.log_metric`` calls (synchronous: each is committed when it returns)."""
    import mlflow

    with mlflow.start_run(experiment_id=experiment_id):
        for i in range(5):  # warm-up, not timed: first calls set up MLflow's client and store
            mlflow.log_metric("warmup", 0.0, step=i)
        settle()
        deadline = deadline_after(LOOP_BUDGET_S)
        done = 0
        t0 = time.perf_counter()
        for i in range(n):
            mlflow.log_metric("loss", vals[i], step=i)
            done += 1
            if time.perf_counter() > deadline:
                break
        elapsed = time.perf_counter() - t0
    report_cut(done, n, "MLflow")
    return done, elapsed


def bench_log_single(b: Bench) -> list[Result]:
    s = b.sizes
    vals = values(max(s.log_calls, s.mlflow_log_calls))
    res = Result("1", "log 1 metric per call, until durable", "points/s", None, None, 1000.0)
    with section(f"1. loopml: {s.log_calls:,} run.log calls + flush, {s.repeats} repeat(s)"):
        b.loopml_ready()
        rates = []
        for _ in range(s.repeats):
            done, dt = loopml_log_loop(b.loopml_uri, s.log_calls, vals, "log-single")
            rates.append(done / dt)
        res.loopml = median(rates)
    with section(f"1. MLflow: {s.mlflow_log_calls:,} mlflow.log_metric calls, {s.repeats} repeat(s)"):
        exp = b.mlflow_experiment("log-single")
        rates, per_call = [], []
        for _ in range(s.repeats):
            done, dt = mlflow_log_loop(s.mlflow_log_calls, vals, exp)
            rates.append(done / dt)
            per_call.append(dt / done)
        res.mlflow = median(rates)
    res.notes.append(
        f"loopml: {s.log_calls:,} run.log calls then run.flush(); MLflow: {s.mlflow_log_calls:,} "
        f"mlflow.log_metric calls ({median(per_call) * 1000:.1f} ms/call), rate-normalised to points/s; "
        f"medians of {s.repeats}"
    )
    return [res]


# -- 2. many metrics per step --------------------------------------------------------


def bench_log_batch(b: Bench) -> list[Result]:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    import loopml

    s = b.sizes
    keys = [f"metric_{k:03d}" for k in range(s.batch_keys)]
    vals = values(s.batch_keys, seed=2)
    res = Result("2", f"log {s.batch_keys} metrics per step, until durable", "points/s", None, None, 20.0)
    with section(f"2. loopml: {s.batch_steps:,} steps x {s.batch_keys} metrics + flush, {s.repeats} repeat(s)"):
        b.loopml_ready()
        rates = []
        for _ in range(s.repeats):
            run = loopml.start_run("log-batch", tracking_uri=b.loopml_uri)
            settle()
            deadline = deadline_after(LOOP_BUDGET_S)
            steps = 0
            t0 = time.perf_counter()
            for i in range(s.batch_steps):
                run.log({k: v + i for k, v in zip(keys, vals, strict=True)}, step=i)
                steps += 1
                if time.perf_counter() > deadline:
                    break
            if not run.flush(timeout=LOOP_BUDGET_S):
                raise RuntimeError("loopml did not make the points durable in time")
            dt = time.perf_counter() - t0
            run.finish()
            report_cut(steps, s.batch_steps, "loopml")
            rates.append(steps * s.batch_keys / dt)
        res.loopml = median(rates)
    with section(
        f"2. MLflow: {s.mlflow_batch_steps:,} log_batch calls of {s.batch_keys} metrics, {s.repeats} repeat(s)"
    ):
        exp = b.mlflow_experiment("log-batch")
        client = MlflowClient(tracking_uri=b.mlflow_uri)
        rates = []
        for _ in range(s.repeats):
            run_id = client.create_run(exp).info.run_id
            client.log_batch(run_id, metrics=[Metric("warmup", 0.0, 0, 0)])
            settle()
            deadline = deadline_after(LOOP_BUDGET_S)
            steps = 0
            t0 = time.perf_counter()
            for i in range(s.mlflow_batch_steps):
                ts = int(time.time() * 1000)
                client.log_batch(run_id, metrics=[Metric(k, v + i, ts, i) for k, v in zip(keys, vals, strict=True)])
                steps += 1
                if time.perf_counter() > deadline:
                    break
            dt = time.perf_counter() - t0
            client.set_terminated(run_id)
            report_cut(steps, s.mlflow_batch_steps, "MLflow")
            rates.append(steps * s.batch_keys / dt)
        res.mlflow = median(rates)
    res.notes.append(
        f"loopml: {s.batch_steps:,} run.log calls of {s.batch_keys} keys then flush; MLflow: "
        f"{s.mlflow_batch_steps:,} MlflowClient.log_batch calls of {s.batch_keys} metrics, rate-normalised; "
        f"medians of {s.repeats}"
    )
    return [res]


# -- 3. reading a history --------------------------------------------------------------


def loopml_history_run(uri: str, n: int, experiment: str) -> str:
    """A finished run with ``n`` points of "loss" (setup, not timed)."""
    import loopml

    vals = values(n, seed=3)
    with loopml.start_run(experiment, tracking_uri=uri) as run:
        for i in range(n):
            run.log({"loss": vals[i]}, step=i)
    return run.id


def loopml_read_history(uri: str, run_id: str, n: int, repeats: int) -> float:
    import loopml

    times = []
    for _ in range(repeats):
        settle()
        t0 = time.perf_counter()
        h = loopml.get_run(run_id, tracking_uri=uri).history("loss")
        times.append(time.perf_counter() - t0)
        if len(h.values) != n:
            raise RuntimeError(f"loopml returned {len(h.values)} points, expected {n}")
    return median(times)


def mlflow_history_run(client: Any, experiment_id: str, n: int) -> str:
    """A run with ``n`` points of "loss", written with log_batch of 1,000 (setup, not timed)."""
    from mlflow.entities import Metric

    vals = values(n, seed=3)
    run_id = client.create_run(experiment_id).info.run_id
    ts = int(time.time() * 1000)
    for start in range(0, n, 1000):
        client.log_batch(run_id, metrics=[Metric("loss", vals[i], ts, i) for i in range(start, min(start + 1000, n))])
    client.set_terminated(run_id)
    return run_id


def mlflow_read_history(client: Any, run_id: str, n: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        settle()
        t0 = time.perf_counter()
        points = client.get_metric_history(run_id, "loss")
        times.append(time.perf_counter() - t0)
        if len(points) != n:
            raise RuntimeError(f"MLflow returned {len(points)} points, expected {n}")
    return median(times)


def bench_history(b: Bench) -> list[Result]:
    from mlflow import MlflowClient

    s = b.sizes
    n = s.history_points
    res = Result("3", f"read a {n:,}-point history", "s", None, None, 50.0, max_loopml_s=0.1)
    with section(f"3. loopml: write {n:,} points, read them {s.read_repeats} times"):
        b.loopml_ready()
        run_id = loopml_history_run(b.loopml_uri, n, "history")
        res.loopml = loopml_read_history(b.loopml_uri, run_id, n, s.read_repeats)
    with section(f"3. MLflow: write {n:,} points with log_batch, read them {s.repeats} time(s)"):
        exp = b.mlflow_experiment("history")
        client = MlflowClient(tracking_uri=b.mlflow_uri)
        run_id = mlflow_history_run(client, exp, n)
        res.mlflow = mlflow_read_history(client, run_id, n, s.repeats)
    res.notes.append(
        f"loopml: loopml.get_run(id).history('loss') -> NumPy arrays, median of {s.read_repeats}; "
        f"MLflow: MlflowClient.get_metric_history -> list of Metric, median of {s.repeats}; "
        "both checked to return every point"
    )
    return [res]


# -- 4. searching runs --------------------------------------------------------------------

FILTER = "metrics.acc > 0.5 and params.lr = '0.01'"
ORDER = ["metrics.acc DESC"]


def search_data(n: int) -> list[tuple[dict[str, str], dict[str, float]]]:
    """n runs: 4 params (lr one of 3 values), 3 metrics (acc uniform on [0, 1))."""
    rng = random.Random(4)
    out = []
    for _ in range(n):
        params = {
            "lr": rng.choice(["0.1", "0.01", "0.001"]),
            "batch_size": rng.choice(["32", "64", "128"]),
            "optimizer": rng.choice(["adam", "sgd"]),
            "epochs": "10",
        }
        acc = rng.random()
        metrics = {"acc": acc, "loss": 1.0 - acc + rng.random() * 0.1, "val_acc": acc * 0.95}
        out.append((params, metrics))
    return out


def time_search(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        settle()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return median(times), out


def compare_frames(df_l: Any, df_m: Any, expected: int) -> str | None:
    if not (len(df_l) == len(df_m) == expected):
        return f"row counts differ: loopml {len(df_l)}, MLflow {len(df_m)}, expected {expected}"
    if list(df_l["metrics.acc"]) != list(df_m["metrics.acc"]):
        return "the two systems returned the runs in different orders"
    return None


def bench_search(b: Bench) -> list[Result]:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    import loopml

    s = b.sizes
    n = s.search_runs
    data = search_data(n)
    res = Result("4", f"search {n:,} runs: metric + param filter, ordered", "s", None, None, 20.0)
    every = Result("4b", f"search {n:,} runs: no filter, ordered, all returned", "s", None, None, None)

    def loopml_search(flt: str | None) -> Any:
        return loopml.runs("search", filter=flt, order_by=ORDER, tracking_uri=b.loopml_uri)

    def mlflow_search(flt: str | None) -> Any:
        return mlflow.search_runs(experiment_ids=[exp], filter_string=flt or "", order_by=ORDER)

    with section(f"4. loopml: create {n:,} runs, search {s.read_repeats} times"):
        b.loopml_ready()
        t0 = time.perf_counter()
        for params, metrics in data:
            with loopml.start_run("search", params=params, tracking_uri=b.loopml_uri) as run:
                run.log(metrics, step=0)
        print(f"   (setup: {n:,} runs in {time.perf_counter() - t0:.1f} s)")
        res.loopml, df_l = time_search(lambda: loopml_search(FILTER), s.read_repeats)
        every.loopml, all_l = time_search(lambda: loopml_search(None), s.read_repeats)
    with section(f"4. MLflow: create {n:,} runs (create_run + log_batch), search {s.repeats} time(s)"):
        exp = b.mlflow_experiment("search")
        client = MlflowClient(tracking_uri=b.mlflow_uri)
        t0 = time.perf_counter()
        ts = int(time.time() * 1000)
        for params, metrics in data:
            run_id = client.create_run(exp).info.run_id
            client.log_batch(
                run_id,
                metrics=[Metric(k, v, ts, 0) for k, v in metrics.items()],
                params=[Param(k, v) for k, v in params.items()],
            )
        print(f"   (setup: {n:,} runs in {time.perf_counter() - t0:.1f} s)")
        res.mlflow, df_m = time_search(lambda: mlflow_search(FILTER), s.repeats)
        every.mlflow, all_m = time_search(lambda: mlflow_search(None), s.repeats)
    expected = sum(1 for p, m in data if m["acc"] > 0.5 and p["lr"] == "0.01")
    res.error = compare_frames(df_l, df_m, expected)
    every.error = compare_frames(all_l, all_m, n)
    res.notes.append(
        f"filter {FILTER!r}, order {ORDER}; {n:,} runs of 4 params and 3 metrics, {expected} match; both "
        "return a pandas DataFrame (params.*, metrics.*, tags.* columns), checked equal in count and order; "
        f"loopml median of {s.read_repeats}, MLflow median of {s.repeats}"
    )
    every.notes.append("the same search without the filter: every run comes back (shows the per-run cost)")
    return [res, every]


# -- 5. through the tracking servers --------------------------------------------------------


def start_loopml_server(b: Bench) -> tuple[subprocess.Popen[str], str]:
    """``loopml server --port 0``: read the URL it prints, then poll it until it answers."""
    exe = Path(PY).with_name("loopml")
    cmd = [str(exe) if exe.exists() else PY, *([] if exe.exists() else ["-m", "loopml"])]
    cmd += ["server", "--host", "127.0.0.1", "--port", "0", "--store", f"sqlite:///{b.tmp / 'loopml-server.db'}"]
    env = dict(os.environ, LOOPML_HOME=str(b.tmp / "loopml-server-home"))
    env.pop("LOOPML_TRACKING_URI", None)
    proc = subprocess.Popen(
        cmd,
        cwd=b.tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    found: list[str] = []
    lines: list[str] = []
    ready = threading.Event()

    def drain() -> None:  # keep reading so that the server never blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            if len(lines) < 200:
                lines.append(line.rstrip())
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            if m and not found:
                found.append(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(SERVER_START_S) or not found:
        stop_process(proc)
        raise RuntimeError("loopml server printed no URL: " + " | ".join(lines[-5:]))
    url = found[0]
    wait_http(url + LOOPML_HEALTH_PATH, SERVER_START_S, proc)
    return proc, url


# The loopml server's readiness endpoint (answers 200 once the store is open).
LOOPML_HEALTH_PATH = "/health"


def start_mlflow_server(b: Bench) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    art = b.tmp / "mlflow-server-artifacts"
    cmd = [
        str(Path(PY).with_name("mlflow")),
        "server",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
        "--backend-store-uri", f"sqlite:///{b.tmp / 'mlflow-server.db'}",
        "--default-artifact-root", art.as_uri(),
        "--artifacts-destination", art.as_uri(),
    ]  # fmt: skip
    # The job runner (huey consumers: GenAI scorers and periodic tasks) serves no tracking call; off, it
    # leaves MLflow's request handling the whole machine.
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = open(b.tmp / "mlflow-server.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, cwd=b.tmp, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", SERVER_START_S, proc)
    except RuntimeError:
        stop_process(proc)
        tail = (b.tmp / "mlflow-server.log").read_text(errors="replace")[-800:]
        raise RuntimeError(f"mlflow server did not start: {tail}") from None
    return proc, url


def bench_server(b: Bench) -> list[Result]:
    import mlflow
    from mlflow import MlflowClient

    s = b.sizes
    n = s.history_points
    log_res = Result("5a", "(1) through the server: log 1 metric per call", "points/s", None, None, 100.0)
    hist_res = Result("5b", f"(3) through the server: read {n:,} points", "s", None, None, 100.0)
    vals = values(max(s.server_log_calls, s.mlflow_server_log_calls))
    # One server at a time, so that neither competes with the other's idle work for the two cores.
    proc: subprocess.Popen[Any] | None = None
    try:
        with section("5. loopml server on 127.0.0.1"):
            t0 = time.perf_counter()
            proc, url = start_loopml_server(b)
            print(f"   {url}, ready in {time.perf_counter() - t0:.1f} s")
        with section(f"5a. loopml via server: {s.server_log_calls:,} run.log calls + flush, {s.repeats} repeat(s)"):
            loopml_log_loop(url, 100, vals, "server-warmup")
            rates = []
            for _ in range(s.repeats):
                done, dt = loopml_log_loop(url, s.server_log_calls, vals, "server-log")
                rates.append(done / dt)
            log_res.loopml = median(rates)
        with section(f"5b. loopml via server: write {n:,} points, read {s.read_repeats} times"):
            run_id = loopml_history_run(url, n, "server-history")
            hist_res.loopml = loopml_read_history(url, run_id, n, s.read_repeats)
    finally:
        stop_process(proc)
        proc = None
    # MLflow prints "View run ... at http://..." when a run on a server ends (outside the timings)
    mlflow_chatter = io.StringIO()
    per_call: list[float] = []
    try:
        with section("5. mlflow server on 127.0.0.1"):
            t0 = time.perf_counter()
            proc, url = start_mlflow_server(b)
            print(f"   {url}, ready in {time.perf_counter() - t0:.1f} s")
        with section(
            f"5a. MLflow via server: {s.mlflow_server_log_calls} mlflow.log_metric calls, {s.repeats} repeat(s)"
        ):
            with redirect_stdout(mlflow_chatter):
                exp = b.mlflow_experiment("server-log", uri=url)
                rates = []
                for _ in range(s.repeats):
                    done, dt = mlflow_log_loop(s.mlflow_server_log_calls, vals, exp)
                    rates.append(done / dt)
                    per_call.append(dt / done)
            log_res.mlflow = median(rates)
        with (
            section(f"5b. MLflow via server: write {n:,} points with log_batch, read once"),
            redirect_stdout(mlflow_chatter),
        ):
            exp = b.mlflow_experiment("server-history", uri=url)
            client = MlflowClient(tracking_uri=url)
            run_id = mlflow_history_run(client, exp, n)
            hist_res.mlflow = mlflow_read_history(client, run_id, n, 1)
    finally:
        stop_process(proc)
        mlflow.set_tracking_uri(b.mlflow_uri)  # back to the local store
    ms = f" ({median(per_call) * 1000:.0f} ms/call)" if per_call else ""
    log_res.notes.append(
        f"loopml: {s.server_log_calls:,} run.log calls then flush (points go in batches over HTTP; flush "
        f"returns once the server has committed them); MLflow: {s.mlflow_server_log_calls} mlflow.log_metric "
        f"calls{ms}, rate-normalised; medians of {s.repeats}. Each server alone on the machine, SQLite, "
        "127.0.0.1, one process (mlflow server --workers 1, its job runner off)"
    )
    hist_res.notes.append(
        f"loopml: get_run(id).history over HTTP, median of {s.read_repeats}; MLflow: "
        "MlflowClient.get_metric_history over REST, 1 read; both checked to return every point"
    )
    return [log_res, hist_res]


# -- 7. MLflow's own client against both servers -------------------------------------------------

# Set while goal 7 runs: a failed call shows at once (the client retries every 5xx seven times with
# backoff by default), and set_terminated prints no "View run at" line
CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "120",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
CLIENT_TS0 = 1_700_000_000_000  # fixed timestamps (ms): the answers are compared point by point


@contextmanager
def environment(extra: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def history_problem(points: Sequence[tuple[int, int, float]], expected: Sequence[float]) -> str | None:
    """What is wrong with a history read back, as ``(step, timestamp, value)`` triples, or None.

    Point ``i`` was logged with step ``i``, timestamp ``CLIENT_TS0 + i`` and value ``expected[i]``;
    the order the server returns them in is free (MLflow's is by timestamp, then step).
    """
    if len(points) != len(expected):
        return f"{len(points):,} points came back, {len(expected):,} were logged"
    for i, (step, ts, value) in enumerate(sorted(points)):
        if (step, ts, value) != (i, CLIENT_TS0 + i, expected[i]):
            got, logged = f"step {step}, timestamp {ts}, value {value!r}", f"{i}, {CLIENT_TS0 + i}, {expected[i]!r}"
            return f"point {i}: got {got}; logged {logged}"
    return None


def search_answer(runs: Sequence[Any]) -> list[tuple[float, str, str, str]]:
    """The part of a search's answer both servers must agree on, in the order returned (run ids differ)."""
    return [
        (r.data.metrics.get("acc"), r.data.params.get("lr"), r.data.params.get("batch_size"),
         r.data.params.get("optimizer"))
        for r in runs
    ]  # fmt: skip


def search_problem(answers: dict[str, list[tuple[float, str, str, str]]], expected: int) -> str | None:
    """Whether each server's search answer has ``expected`` rows, ordered by acc descending, and both agree."""
    for server, rows in answers.items():
        if len(rows) != expected:
            return f"{server} returned {len(rows):,} runs, {expected:,} match"
        accs = [r[0] for r in rows]
        if accs != sorted(accs, reverse=True):
            return f"{server} returned the runs out of order (order_by metrics.acc DESC)"
    if len({tuple(rows) for rows in answers.values()}) > 1:
        return "the servers returned different runs: " + ", ".join(f"{k}: {v[:2]}..." for k, v in answers.items())
    return None


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of group ``pgid`` (a server and its workers).

    Read from /proc rather than timed: on a loaded machine a request's wall time is mostly waiting for a
    core, but the CPU each server spends per call does not depend on the load.
    """
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # a process that exited meanwhile
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ..., utime (11), stime (12)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class CpuClock:
    """This process's CPU and the server's, read together around a timed section."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid

    def read(self) -> tuple[float, float, float]:
        return time.perf_counter(), time.process_time(), group_cpu_s(self.pgid)


def as_triples(metrics: Sequence[Any]) -> list[tuple[int, int, float]]:
    return [(m.step, m.timestamp, m.value) for m in metrics]


@dataclass
class ClientFigures:
    """One server's figures under MLflow's client: seconds or points/s, and the client's own CPU per call."""

    server: str
    clock: CpuClock
    figure: dict[str, float] = field(default_factory=dict)
    client_cpu: dict[str, float] = field(default_factory=dict)  # s of this process's CPU per call or read
    server_cpu: dict[str, float] = field(default_factory=dict)  # s of the server's CPU per call or read
    search: dict[str, list[tuple[float, str, str, str]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def client_log_metric(client: Any, exp: str, n: int, repeats: int, out: ClientFigures) -> None:
    vals = values(n, seed=7)
    rates, cpus, server_cpus = [], [], []
    for _ in range(repeats):
        run_id = client.create_run(exp).info.run_id
        for i in range(5):  # warm-up, not timed: the first calls open the connection, the server imports lazily
            client.log_metric(run_id, "warmup", 0.0, timestamp=CLIENT_TS0, step=i)
        settle()
        deadline = deadline_after(LOOP_BUDGET_S)
        done = 0
        t0, c0, s0 = out.clock.read()
        for i in range(n):
            client.log_metric(run_id, "loss", vals[i], timestamp=CLIENT_TS0 + i, step=i)
            done += 1
            if time.perf_counter() > deadline:
                break
        t1, c1, s1 = out.clock.read()
        dt, cpu = t1 - t0, c1 - c0
        server_cpus.append((s1 - s0) / done)
        report_cut(done, n, f"log_metric to {out.server}")
        problem = history_problem(as_triples(client.get_metric_history(run_id, "loss")), vals[:done])
        if problem:
            raise RuntimeError(f"log_metric, read back: {problem}")
        client.set_terminated(run_id)
        rates.append(done / dt)
        cpus.append(cpu / done)
    out.figure["log"], out.client_cpu["log"], out.server_cpu["log"] = median(rates), median(cpus), median(server_cpus)


def client_log_batch(client: Any, exp: str, calls: int, n_keys: int, repeats: int, out: ClientFigures) -> None:
    from mlflow.entities import Metric

    keys = [f"metric_{k:03d}" for k in range(n_keys)]
    base = values(n_keys, seed=8)
    rates, cpus, server_cpus = [], [], []
    for _ in range(repeats):
        run_id = client.create_run(exp).info.run_id
        client.log_batch(run_id, metrics=[Metric("warmup", 0.0, CLIENT_TS0, 0)])
        settle()
        deadline = deadline_after(LOOP_BUDGET_S)
        done = 0
        t0, c0, s0 = out.clock.read()
        for i in range(calls):
            metrics = [Metric(k, v + i, CLIENT_TS0 + i, i) for k, v in zip(keys, base, strict=True)]
            client.log_batch(run_id, metrics=metrics)
            done += 1
            if time.perf_counter() > deadline:
                break
        t1, c1, s1 = out.clock.read()
        dt, cpu = t1 - t0, c1 - c0
        server_cpus.append((s1 - s0) / done)
        report_cut(done, calls, f"log_batch to {out.server}")
        for k in (0, n_keys - 1):
            got = as_triples(client.get_metric_history(run_id, keys[k]))
            problem = history_problem(got, [base[k] + i for i in range(done)])
            if problem:
                raise RuntimeError(f"log_batch, {keys[k]} read back: {problem}")
        latest = client.get_run(run_id).data.metrics
        if len(latest) != n_keys + 1 or latest[keys[-1]] != base[-1] + done - 1:
            raise RuntimeError(f"log_batch: the run has {len(latest)} latest metrics, {n_keys + 1} were logged")
        client.set_terminated(run_id)
        rates.append(done * n_keys / dt)
        cpus.append(cpu / done)
    out.figure["batch"], out.client_cpu["batch"] = median(rates), median(cpus)
    out.server_cpu["batch"] = median(server_cpus)


def client_search(client: Any, exp: str, n: int, repeats: int, out: ClientFigures) -> None:
    from mlflow.entities import Metric, Param

    t0 = time.perf_counter()
    for params, metrics in search_data(n):  # goal 4's runs
        run_id = client.create_run(exp).info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, CLIENT_TS0, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
        )
    print(f"   (setup: {n:,} runs through the server in {time.perf_counter() - t0:.1f} s)")
    for key, flt in (("search", FILTER), ("search_all", "")):
        times, cpus, runs = [], [], []
        server_start = out.clock.read()[2]
        for _ in range(repeats):
            settle()
            t0, c0, _s = out.clock.read()
            runs = client.search_runs([exp], filter_string=flt, order_by=ORDER, max_results=n)
            t1, c1, _s = out.clock.read()
            times.append(t1 - t0)
            cpus.append(c1 - c0)
        # the server's CPU over all repeats: /proc counts in ticks of 10 ms, longer than one search
        out.server_cpu[key] = (out.clock.read()[2] - server_start) / repeats
        out.figure[key], out.client_cpu[key] = median(times), median(cpus)
        out.search[key] = search_answer(runs)


def client_history(client: Any, exp: str, n: int, repeats: int, out: ClientFigures) -> None:
    from mlflow.entities import Metric

    vals = values(n, seed=3)
    run_id = client.create_run(exp).info.run_id
    t0 = time.perf_counter()
    for start in range(0, n, 1000):  # MLflow's limit: 1,000 metrics per log_batch
        client.log_batch(
            run_id, metrics=[Metric("loss", vals[i], CLIENT_TS0 + i, i) for i in range(start, min(start + 1000, n))]
        )
    client.set_terminated(run_id)
    print(f"   (setup: {n:,} points through the server in {time.perf_counter() - t0:.1f} s)")
    times, cpus, server_cpus = [], [], []
    for _ in range(repeats):
        settle()
        t0, c0, s0 = out.clock.read()
        points = client.get_metric_history(run_id, "loss")
        t1, c1, s1 = out.clock.read()
        times.append(t1 - t0)
        cpus.append(c1 - c0)
        server_cpus.append(s1 - s0)  # a read of 100,000 points spans many of /proc's 10 ms ticks
        problem = history_problem(as_triples(points), vals)
        if problem:
            raise RuntimeError(f"get_metric_history: {problem}")
    out.figure["history"], out.client_cpu["history"], out.server_cpu["history"] = (
        median(times), median(cpus), median(server_cpus))  # fmt: skip


def client_suite(url: str, server: str, pgid: int, b: Bench) -> ClientFigures:
    """Goal 7's four measurements with MLflow's client against one server; a failed step is recorded, not raised."""
    from mlflow import MlflowClient

    s = b.sizes
    out = ClientFigures(server, CpuClock(pgid))
    client = MlflowClient(tracking_uri=url)
    steps: list[tuple[str, Callable[[str], None]]] = [
        ("log", lambda exp: client_log_metric(client, exp, s.client_log_calls, s.repeats, out)),
        ("batch", lambda exp: client_log_batch(client, exp, s.client_batch_calls, s.batch_keys, s.repeats, out)),
        ("search", lambda exp: client_search(client, exp, s.search_runs, s.read_repeats, out)),
        ("history", lambda exp: client_history(client, exp, s.history_points, s.repeats, out)),
    ]
    for key, step in steps:
        with section(f"7. MLflow's client -> {server} server: {key}"):
            try:
                step(client.create_experiment(f"client-{key}"))
            # the other steps and the other server still run; the table shows the error
            except Exception as exc:  # noqa: BLE001
                out.errors[key] = f"{type(exc).__name__}: {str(exc)[:400]}"
                print(f"   {server} server, {key}: {out.errors[key]}")
    return out


def bench_mlflow_client(b: Bench) -> list[Result]:
    s = b.sizes
    n, nh = s.search_runs, s.history_points
    res = {
        "log": Result("7a", "MLflow's client: log_metric, 1 point per call", "points/s", None, None, 10.0),
        "batch": Result("7b", f"MLflow's client: log_batch of {s.batch_keys} metrics", "points/s", None, None, 10.0),
        "search": Result("7c", f"MLflow's client: search {n:,} runs, metric + param filter", "s", None, None, 10.0),
        "history": Result("7d", f"MLflow's client: get_metric_history, {nh:,} points", "s", None, None, 10.0),
        "search_all": Result("7e", f"MLflow's client: search {n:,} runs, no filter, all", "s", None, None, None),
    }
    runs: dict[str, ClientFigures] = {}
    # One server at a time, as in goal 5; the same client code against each
    with environment(CLIENT_ENV):
        for server, start in (("loopml", start_loopml_server), ("mlflow", start_mlflow_server)):
            proc: subprocess.Popen[Any] | None = None
            try:
                with section(f"7. {server} server on 127.0.0.1"):
                    t0 = time.perf_counter()
                    proc, url = start(b)
                    print(f"   {url}, ready in {time.perf_counter() - t0:.1f} s")
                runs[server] = client_suite(url, server, proc.pid, b)
            finally:
                stop_process(proc)
    lm, mf = runs["loopml"], runs["mlflow"]
    for key, r in res.items():
        step = "search" if key == "search_all" else key
        r.loopml, r.mlflow = lm.figure.get(key), mf.figure.get(key)
        errors = [f"{f.server} server: {f.errors[step]}" for f in (lm, mf) if step in f.errors]
        r.error = "; ".join(errors) or None
    expected = sum(1 for p, m in search_data(n) if m["acc"] > 0.5 and p["lr"] == "0.01")
    for key, count in (("search", expected), ("search_all", n)):
        answers = {f.server: f.search[key] for f in (lm, mf) if key in f.search}
        if res[key].error is None:
            res[key].error = search_problem(answers, count)

    def cpu(key: str, per: str) -> str:
        """CPU per call on each side: the load hardly changes it, while the wall time above waits for a core."""
        both = [f for f in (lm, mf) if key in f.client_cpu]
        if not both:
            return ""
        text = f"CPU {per} (client + server): " + ", ".join(
            f"{f.server} server {f.client_cpu[key] * 1000:.2f} + {f.server_cpu[key] * 1000:.2f} ms" for f in both
        )
        if len(both) == 2:
            total = [f.client_cpu[key] + f.server_cpu[key] for f in both]
            text += f", {total[1] / total[0]:,.1f}x less CPU with loopml"
        # The client's CPU is a floor under any server's time (the same client code runs against both), so
        # MLflow's time over it is the most any server can show with this client.
        floor = min(f.client_cpu[key] for f in both)
        if floor and key in mf.figure:
            per_call = {"log": 1.0, "batch": float(s.batch_keys)}
            mlflow_s = per_call[key] / mf.figure[key] if key in per_call else mf.figure[key]
            text += f"; MLflow's time over the client's CPU: {mlflow_s / floor:,.1f}x, the most any server can show"
        return text

    res["log"].notes.append(
        f"{s.client_log_calls:,} MlflowClient.log_metric calls per repeat after 5 untimed ones, each checked read "
        f"back point by point; medians of {s.repeats}; {cpu('log', 'per call')}"
    )
    res["batch"].notes.append(
        f"{s.client_batch_calls:,} MlflowClient.log_batch calls of {s.batch_keys} metrics per repeat, two keys' "
        f"histories and the latest values checked; medians of {s.repeats}; {cpu('batch', 'per call')}"
    )
    res["search"].notes.append(
        f"goal 4's {n:,} runs, logged through each server (create_run + log_batch); MlflowClient.search_runs(filter "
        f"{FILTER!r}, order_by {ORDER}), {expected} runs, checked equal (acc, lr, batch_size, optimizer, in order) "
        f"between the servers; medians of {s.read_repeats}; {cpu('search', 'per search')}"
    )
    res["history"].notes.append(
        f"{nh:,} points logged through each server (log_batch of 1,000), read with MlflowClient.get_metric_history "
        f"(pages of 25,000), every step, timestamp and value checked; medians of {s.repeats}; "
        f"{cpu('history', 'per read')}"
    )
    res["search_all"].notes.append(f"7c without the filter: every run comes back; {cpu('search_all', 'per search')}")
    res["log"].notes.append(
        "Both servers as in goal 5 (SQLite, 127.0.0.1, one process, one at a time); the same MlflowClient code "
        "against each with MLFLOW_HTTP_REQUEST_MAX_RETRIES=0. Client CPU: this process's; server CPU: the server's "
        "process group's, from /proc (10 ms ticks)"
    )
    return list(res.values())


# -- 6. import and first use ---------------------------------------------------------------------

LOOPML_FIRST = """
import json, time
t0 = time.perf_counter()
import loopml
t1 = time.perf_counter()
loopml.start_run
t2 = time.perf_counter()
with loopml.start_run("first", tracking_uri={uri!r}) as run:
    run.log({{"loss": 1.0}}, step=0)
t3 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t0, t3 - t0]))
"""

MLFLOW_FIRST = """
import json, logging, time
t0 = time.perf_counter()
import mlflow
t1 = time.perf_counter()
mlflow.start_run
t2 = time.perf_counter()
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)
mlflow.set_tracking_uri({uri!r})
exp = mlflow.create_experiment("first", artifact_location={art!r})
with mlflow.start_run(experiment_id=exp):
    mlflow.log_metric("loss", 1.0, step=0)
t3 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t0, t3 - t0]))
"""

IMPORT_ONLY = """
import json, time
t0 = time.perf_counter()
import {mod}
print(json.dumps([time.perf_counter() - t0]))
"""


def run_snippet(b: Bench, code: str) -> list[float]:
    env = dict(os.environ, LOOPML_HOME=str(b.tmp / "first-home"))
    env.pop("LOOPML_TRACKING_URI", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([PY, "-c", code], cwd=b.tmp, env=env, capture_output=True, text=True, timeout=300, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"snippet failed: {out.stderr[-800:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_import(b: Bench) -> list[Result]:
    s = b.sizes
    imp = Result("6a", "import time (fresh interpreter)", "s", None, None, None)
    attr = Result("6b", "import + resolve start_run (loopml imports lazily)", "s", None, None, None)
    first = Result("6c", "import + first run on a new SQLite store (1 point)", "s", None, None, None)
    with section(f"6. import loopml / import mlflow, {s.import_repeats} fresh interpreters each"):
        for mod, attr_name in (("loopml", "loopml"), ("mlflow", "mlflow")):
            ts = [run_snippet(b, IMPORT_ONLY.format(mod=mod))[0] for _ in range(s.import_repeats)]
            setattr(imp, attr_name, median(ts))
    with section(f"6. first use on a new store, {s.first_use_repeats} fresh interpreter(s) each"):
        lm, mf = [], []
        for r in range(s.first_use_repeats):
            lm.append(run_snippet(b, LOOPML_FIRST.format(uri=f"sqlite:///{b.tmp / f'first-loopml-{r}.db'}")))
            art = (b.tmp / f"first-mlflow-art-{r}").as_uri()
            mf.append(run_snippet(b, MLFLOW_FIRST.format(uri=f"sqlite:///{b.tmp / f'first-mlflow-{r}.db'}", art=art)))
        attr.loopml = median([x[1] for x in lm])
        attr.mlflow = median([x[1] for x in mf])
        first.loopml = median([x[2] for x in lm])
        first.mlflow = median([x[2] for x in mf])
    imp.notes.append(f"time of the import statement in `python -c`, median of {s.import_repeats}")
    attr.notes.append(
        "`import loopml` defers its API: the first access to loopml.start_run imports the tracking "
        "client (NumPy and the records; SQLAlchemy loads when a database store is opened); mlflow.start_run is there after `import mlflow`"
    )
    first.notes.append(
        "import, open a store that does not exist yet (schema created: Alembic migrations for both), "
        f"start a run, log 1 point, end it; median of {s.first_use_repeats}"
    )
    return [imp, attr, first]


# -- main ----------------------------------------------------------------------------------------

# goal number -> (title, function, goal ratio for the table when the whole goal fails)
BENCHES: dict[int, tuple[str, Callable[[Bench], list[Result]], float | None]] = {
    1: ("single-point logging", bench_log_single, 1000.0),
    2: ("100 metrics per step", bench_log_batch, 20.0),
    3: ("history read", bench_history, 50.0),
    4: ("search runs", bench_search, 20.0),
    5: ("through the servers", bench_server, 100.0),
    6: ("import and first use", bench_import, None),
    7: ("MLflow's client against both servers", bench_mlflow_client, 10.0),
}


def versions() -> dict[str, str]:
    return _common.versions("loopml", "mlflow", "sqlalchemy", "pandas", "numpy")


def print_table(results: list[Result], info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 150)
    v, m = info["versions"], info["machine"]
    table = Table(
        title="Experiment tracking: loopml vs MLflow (same machine, same run)",
        caption=(
            f"loopml {v['loopml']}, MLflow {v['mlflow']}, Python {v['python']}, SQLAlchemy {v['sqlalchemy']}; "
            f"{m['cpus']} CPUs, {m['memory_gib']} GiB; {info['mode']} sizes; load average "
            f"{info['load_start']} at the start, {info.get('load_end', '?')} at the end"
        ),
    )
    for col, just in (("#", "left"), ("benchmark", "left"), ("loopml", "right"), ("MLflow", "right"),
                      ("ratio", "right"), ("goal", "left"), ("met", "center")):  # fmt: skip
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in results:
        met = fmt_met(r)
        style = {"PASS": "green", "MISS": "bold red"}.get(met, "")
        table.add_row(
            r.goal, r.name, fmt_value(r.loopml, r.unit), fmt_value(r.mlflow, r.unit),
            fmt_ratio(r.ratio), fmt_goal(r), f"[{style}]{met}[/]" if style else met,
        )  # fmt: skip
    console.print(table)
    console.print("How each figure is measured:")
    for r in results:
        for note in r.notes:
            console.print(f"  {r.goal}. {note}", highlight=False)
        if r.error:
            console.print(f"  {r.goal}. [bold red]error:[/] {r.error}", highlight=False)
    console.print(
        "  Durable: loopml's flush() returns once the points are committed (SQLite WAL, synchronous=FULL); "
        "MLflow's calls return after their own commit (SQLite, default synchronous=FULL).",
        highlight=False,
    )


def parse_only(text: str | None) -> list[int]:
    if not text:
        return sorted(BENCHES)
    try:
        picked = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise SystemExit(f"--only should be goal numbers separated by commas, e.g. --only 1,3; got {text!r}") from None
    bad = [x for x in picked if x not in BENCHES]
    if bad:
        raise SystemExit(f"--only: no goal {bad}; goals are {', '.join(map(str, BENCHES))}")
    return picked


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every goal")
    parser.add_argument("--only", metavar="N,N", help="run only these goals, e.g. --only 1,3,5")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = parser.parse_args(argv)
    picked = parse_only(args.only)
    json_path = Path(args.json).resolve() if args.json else None
    sizes = QUICK if args.quick else Sizes()

    # find_spec, not import: MLflow's import is measured (goal 6) and weighs on the heap of this process
    if importlib.util.find_spec("mlflow") is None:
        print("MLflow is not installed: run `make bench` (installs the bench extra: pip install 'loopml[bench]')")
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="loopml-bench-"))
    # loopml's artifacts and anything MLflow writes relative to the working directory stay in tmp.
    os.environ["LOOPML_HOME"] = str(tmp / "loopml-home")
    os.environ.pop("LOOPML_TRACKING_URI", None)
    os.environ.pop("LOOPML_ARTIFACT_ROOT", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    cwd = os.getcwd()
    os.chdir(tmp)
    info: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "versions": versions(),
        "machine": _common.machine(),
        "sizes": asdict(sizes),
    }
    info["load_start"] = _common.load_average()
    print(f"loopml vs MLflow, {info['mode']} sizes, goals {picked}, temp folder {tmp}", flush=True)
    if info["load_start"] > 0.5 * (os.cpu_count() or 1):
        print(f"note: load average {info['load_start']} on {os.cpu_count()} CPUs: other work will skew the figures")
    b = Bench(tmp, sizes)
    results: list[Result] = []
    t_all = time.perf_counter()
    try:
        for goal in picked:
            title, fn, goal_ratio = BENCHES[goal]
            try:
                results.extend(fn(b))
            except Exception as exc:  # report the failure in the table and go on with the next goal
                logging.getLogger(__name__).exception("goal %s failed", goal)
                err = f"{type(exc).__name__}: {exc}"
                results.append(Result(str(goal), title, "s", None, None, goal_ratio, error=err))
    finally:
        os.chdir(cwd)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    info["total_s"] = round(time.perf_counter() - t_all, 1)
    info["load_end"] = _common.load_average()
    print()
    print_table(results, info)
    print(f"total {info['total_s']} s")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({**info, "results": [r.to_json() for r in results]}, indent=2))
        print(f"wrote {json_path}")
    # a missed goal is a finding, not a failure; a goal that could not be measured is
    return 1 if any(r.error and r.loopml is None and r.mlflow is None for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
