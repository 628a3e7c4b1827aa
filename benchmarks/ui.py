"""The web UI: loopml beside the MLflow UI, in the same headless Chromium, in one run.

    .venv/bin/python benchmarks/ui.py               # 10,000 runs, a 100,000-point history (a few minutes)
    .venv/bin/python benchmarks/ui.py --quick       # 1,000 runs: a smoke run
    .venv/bin/python benchmarks/ui.py --json out.json

Both stores hold the same data (SQLite files in one temporary folder): one
experiment of N runs with 4 params and 3 metrics each, and one more run whose
``loss`` has 100,000 points. Both servers listen on 127.0.0.1 and are stopped
at the end; one runs at a time. Each figure is the median over ``--reps``
page loads, each in a fresh browser context (an empty cache), from the start
of the navigation to:

1. the runs table: the newest run's name is visible in the first page of the
   table (loopml ``/ui/runs?experiment=``, 100 rows; MLflow
   ``#/experiments/<id>/runs``, its "Model training" runs table, 100 rows);
2. the 100,000-point chart: the metric's line is drawn (loopml
   ``/ui/run?id=``; MLflow's run page, "Model metrics" tab,
   ``#/experiments/<id>/runs/<run>/model-metrics``). Both UIs draw with
   plotly.js: the figure is ready when a line path of plotly's scatter layer
   holds a drawn curve. (MLflow 3's older ``#/metric/<key>`` page answers
   "invalid URL" for the runs of this store, so the run page's chart is what
   MLflow users look at.)

Goal: loopml at least 5x faster for both. Needs MLflow (``make bench``) and
Debian's chromium. Nothing here asserts: it reports.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

import argparse
import json
import logging
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import _common
from tracking import (  # the servers, as benchmark 5 starts them
    free_port,
    start_loopml_server,
    stop_process,
    wait_http,
)

PY = sys.executable
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"]
PARAMS = ("lr", "batch_size", "optimizer", "seed")
METRICS = ("loss", "acc", "f1")
HISTORY_POINTS = 100_000
GOAL = 5.0
PAGE_TIMEOUT_MS = 120_000


class _Tmp:
    """What start_loopml_server of benchmarks/tracking.py reads: a folder."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp


def run_values(i: int, rng: random.Random) -> tuple[dict[str, str], dict[str, float]]:
    params = {"lr": str([0.1, 0.01, 0.001][i % 3]), "batch_size": str([32, 64, 128][i % 3]),
              "optimizer": ["adam", "sgd"][i % 2], "seed": str(i)}  # fmt: skip
    return params, {k: rng.random() for k in METRICS}


def fill_loopml(db: Path, n_runs: int, history: list[float]) -> str:
    from loopml.store import TrackingStore

    store = TrackingStore(f"sqlite:///{db}", artifact_root=db.parent / "loopml-artifacts")
    rng = random.Random(0)
    t0 = time.time() - n_runs - 10
    points = []
    for i in range(n_runs):
        params, metrics = run_values(i, rng)
        r = store.create_run(experiment="sweep", name=f"run-{i:05d}", params=params, start_time=t0 + i)
        points += [(r.id, k, 0, t0 + i, v) for k, v in metrics.items()]
        store.set_status(r.id, "FINISHED", end_time=t0 + i + 1)
    store.log_metrics(points)
    long = store.create_run(experiment="long", name="long-run", start_time=t0)
    store.log_metrics([(long.id, "loss", s, t0 + s / 1000, v) for s, v in enumerate(history)])
    store.set_status(long.id, "FINISHED")
    store.close()
    return long.id


def fill_mlflow(db: Path, n_runs: int, history: list[float]) -> tuple[str, str, str]:
    """MLflow's own SQLAlchemy store, with SQLite's fsync off while filling (filling is not measured)."""
    import sqlalchemy as sa
    from mlflow.entities import Metric, Param, RunStatus
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    store = SqlAlchemyStore(f"sqlite:///{db}", (db.parent / "mlflow-artifacts").as_uri())

    @sa.event.listens_for(store.engine, "connect")
    def _no_fsync(dbapi: Any, _record: Any) -> None:
        dbapi.execute("PRAGMA synchronous=OFF")

    store.engine.dispose()
    rng = random.Random(0)
    exp = store.create_experiment("sweep")
    t0 = int((time.time() - n_runs - 10) * 1000)
    for i in range(n_runs):
        params, metrics = run_values(i, rng)
        r = store.create_run(exp, "bench", t0 + i * 1000, [], f"run-{i:05d}")
        store.log_batch(
            r.info.run_id,
            metrics=[Metric(k, v, t0 + i * 1000, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
            tags=[],
        )
        store.update_run_info(r.info.run_id, RunStatus.FINISHED, t0 + i * 1000 + 1000, None)
    long_exp = store.create_experiment("long")
    long = store.create_run(long_exp, "bench", t0, [], "long-run")
    for start in range(0, len(history), 1000):  # log_batch takes at most 1,000 metrics
        chunk = history[start : start + 1000]
        store.log_batch(long.info.run_id, [Metric("loss", v, t0 + start + j, start + j) for j, v in enumerate(chunk)], [], [])
    store.update_run_info(long.info.run_id, RunStatus.FINISHED, t0 + 1, None)
    store.engine.dispose()
    return exp, long_exp, long.info.run_id


def start_mlflow(tmp: Path, db: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    art = tmp / "mlflow-artifacts"
    cmd = [str(Path(PY).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{db}", "--default-artifact-root", art.as_uri()]  # fmt: skip
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = open(tmp / "mlflow-server.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", 120, proc)
    return proc, url


def timed_load(browser: Any, url: str, ready_js: str, reps: int, warmup: int = 1) -> list[float]:
    """Seconds from navigation to ``ready_js`` returning true, each load in a fresh context (empty cache)."""
    times = []
    for rep in range(warmup + reps):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        t0 = time.perf_counter()
        page.goto(url, wait_until="commit", timeout=PAGE_TIMEOUT_MS)
        page.wait_for_function(ready_js, timeout=PAGE_TIMEOUT_MS, polling="raf")
        elapsed = time.perf_counter() - t0
        if rep >= warmup:
            times.append(elapsed)
        context.close()
    return times


# "ready" conditions; plotly draws each line as an SVG path with class js-line in both UIs
def table_ready(name: str) -> str:
    return ("() => [...document.querySelectorAll('a, span, div, td')].some(e => e.childElementCount === 0 && "
            f"e.textContent.trim() === {json.dumps(name)} && e.getBoundingClientRect().height > 0)")  # fmt: skip


CHART_READY = "() => [...document.querySelectorAll('.scatterlayer path.js-line')].some(p => (p.getAttribute('d') || '').length > 200)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1,000 runs instead of 10,000")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    n_runs = args.runs or (1_000 if args.quick else 10_000)
    from playwright.sync_api import sync_playwright

    print("versions", _common.versions("loopml", "mlflow", "plotly", "playwright"))
    print("machine", _common.machine(), "load", _common.load_average(), flush=True)
    rng = random.Random(1)
    walk, history = 0.0, []
    for _ in range(HISTORY_POINTS):
        walk += rng.gauss(0, 1)
        history.append(walk)
    newest = f"run-{n_runs - 1:05d}"
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="loopml-bench-ui-") as tmp_name:
        tmp = Path(tmp_name)
        t = time.perf_counter()
        long_id = fill_loopml(tmp / "loopml-server.db", n_runs, history)
        print(f"loopml store filled in {time.perf_counter() - t:.1f} s", flush=True)
        t = time.perf_counter()
        exp_id, long_exp, mlflow_long = fill_mlflow(tmp / "mlflow.db", n_runs, history)
        print(f"MLflow store filled in {time.perf_counter() - t:.1f} s", flush=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
            proc, url = start_loopml_server(_Tmp(tmp))
            try:
                # which plotly.js the UI serves: npm's basic bundle (make js) or the plotly package's full one
                with urllib.request.urlopen(f"{url}/ui/vendor/plotly.min.js") as resp:
                    bundle = f"{resp.headers.get('X-Loopml-Plotly')} ({len(resp.read()) / 1e6:.1f} MB)"
                print("loopml serves plotly.js:", bundle, flush=True)
                results["table"] = {"loopml": statistics.median(timed_load(
                    browser, f"{url}/ui/runs?experiment=sweep", table_ready(newest), args.reps))}
                results["chart"] = {"loopml": statistics.median(timed_load(
                    browser, f"{url}/ui/run?id={long_id}", CHART_READY, args.reps))}
            finally:
                stop_process(proc)
            proc, url = start_mlflow(tmp, tmp / "mlflow.db")
            try:
                # workflowType: MLflow 3 opens experiments on its GenAI overview otherwise
                table_url = f"{url}/#/experiments/{exp_id}/runs?workflowType=machine_learning"
                results["table"]["mlflow"] = statistics.median(timed_load(browser, table_url, table_ready(newest), args.reps))
                metric_url = f"{url}/#/experiments/{long_exp}/runs/{mlflow_long}/model-metrics?workflowType=machine_learning"
                results["chart"]["mlflow"] = statistics.median(timed_load(browser, metric_url, CHART_READY, args.reps))
            finally:
                stop_process(proc)
            browser.close()
    print("\n| goal | loopml | MLflow | ratio | goal | met |\n| --- | ---: | ---: | ---: | --- | :---: |")
    labels = {"table": f"runs table rendered ({n_runs:,} runs, first page)",
              "chart": f"{HISTORY_POINTS:,}-point chart rendered"}  # fmt: skip
    for key, label in labels.items():
        r = results[key]
        ratio = r["mlflow"] / r["loopml"]
        r["ratio"] = ratio
        print(f"| {label} | {r['loopml'] * 1000:.0f} ms | {r['mlflow'] * 1000:.0f} ms | {ratio:.1f}x | >= {GOAL:.0f}x | "
              f"{'PASS' if ratio >= GOAL else '**MISS**'} |")
    print("load at the end", _common.load_average())
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": n_runs, "plotly": bundle, "results": results}, indent=2))


if __name__ == "__main__":
    main()
