"""What ``loopml serve --monitor`` costs the requests: the same load with and without the scheduled monitor.

The model: an MLP 20 -> 64 -> 10 registered from a run that logged its 5,000 training rows and
1,000 validation rows, so every monitor cycle does the full work: it reads the window's logged
inputs and answers, runs the per-feature drift tests and the multivariate classifier test against
the training rows, the accuracy and the label-free estimate, stores three results and checks a rule.
``loopml serve tab@production`` runs without and with ``--monitor --monitor-every 2s`` (a cycle
every 2 s, so that several run in each load window; the default is 5m), interleaved
(off, on, on, off, ...), under the closed loop of benchmarks/serving_peers/loadgen.py (aiohttp,
C clients on keep-alive connections on 127.0.0.1, single-row JSON requests, warm-up unrecorded,
then a recorded window). Medians over the rounds are printed with the ratio on / off, the monitor
cycles that completed inside the recorded windows, and the monitor process's CPU seconds.

Goal (issue 13): the monitor does not slow requests: with it, throughput >= 0.9x and p99 <= 1.2x
of the server alone.

    .venv/bin/python benchmarks/monitor_overhead.py                 # 3 rounds of 10 s at c=8 (~2 min)
    .venv/bin/python benchmarks/monitor_overhead.py --rounds 1 --duration 5 --json out.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one intra-op thread on 2 shared cores: docs/benchmarks.md, "Threads"

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # benchmarks/_common.py: these run as `python benchmarks/<name>.py`

HERE = Path(__file__).resolve().parent
for _var in ("LOOPML_TRACKING_URI", "LOOPML_ARTIFACT_ROOT", "LOOPML_SERVER_TOKEN"):  # the temporary store only
    os.environ.pop(_var, None)
sys.path.insert(0, str(HERE / "serving_peers"))
import loadgen  # noqa: E402

FEATURES, CLASSES = 20, 10


free_port = _common.free_port


def prepare(home: Path) -> None:
    """Register ``tab`` (with its training and validation rows logged) and point ``production`` at it."""
    code = f"""
import numpy as np, torch, loopml
from loopml import data
from loopml.models.nets import MLP
torch.set_num_threads(1)
rng = np.random.default_rng(0)
x = rng.normal(size=(7000, {FEATURES})).astype(np.float32)
y = (np.abs(x[:, :{CLASSES}]).argmax(axis=1)).astype(np.int64)
parts = data.split(data.from_arrays(x, y, name="tab"), val=1000 / 7000, test=1000 / 7000, seed=0)
torch.manual_seed(0)
with loopml.start_run(experiment="tab") as run:
    data.log_dataset(run, parts.train, role="train")
    data.log_dataset(run, parts.val, role="val")
    v = loopml.register(MLP({FEATURES}, {CLASSES}, hidden=64), "tab", input_example=parts.train.x[:8],
                        class_names=[str(i) for i in range({CLASSES})],
                        init_args={{"n_in": {FEATURES}, "n_out": {CLASSES}, "hidden": 64}}, formats=("onnx", "torch"))
loopml.models.set_alias("tab", "production", v.version)
"""
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "LOOPML_HOME": str(home)})


def cpu_seconds(pid: int) -> float:
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    return sum(int(v) for v in s[s.rfind(")") + 2 :].split()[11:13]) / os.sysconf("SC_CLK_TCK")


def monitor_cycles(home: Path, t0: float, t1: float) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{home / 'loopml.db'}")
    with engine.connect() as conn:
        # 'performance' is the last result a cycle stores (after the calibration of the label-free estimate, which the
        # first cycle fits): a cycle has finished when it is there
        n = conn.execute(sa.text("SELECT count(*) FROM monitor_results WHERE kind = 'performance' AND created_at >= :a "
                                 "AND created_at < :b"), {"a": t0, "b": t1}).scalar()
    engine.dispose()
    return int(n or 0)


def run_once(home: Path, monitor: bool, a: argparse.Namespace, bodies: list[bytes]) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "loopml", "serve", "tab@production", "--port", str(port), "--no-gate"]
    if monitor:
        cmd += ["--monitor", "--monitor-every", a.every]
    log = open(home / f"serve-{'on' if monitor else 'off'}.log", "ab")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env={**os.environ, "LOOPML_HOME": str(home)},
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        for _ in range(2):  # "listening", then "ready"
            line = proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"loopml serve exited; see {log.name}")
        children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        url = f"http://127.0.0.1:{port}/v1/models/tab/predict"
        if monitor:  # the monitor's first cycle (imports, calibration) before the load: steady state is measured
            began = time.time()
            deadline = began + 120
            while monitor_cycles(home, began, time.time() + 1) == 0 and time.time() < deadline:
                asyncio.run(loadgen.closed_loop(url, bodies, 2, 0.0, 0.5, proc.pid))
        cpu0 = sum(cpu_seconds(c) for c in children)
        t0 = time.time() + a.warmup
        r = asyncio.run(loadgen.closed_loop(url, bodies, a.conc, a.warmup, a.duration, proc.pid))
        t1 = t0 + a.duration
        r["monitor_cpu_s"] = sum(cpu_seconds(c) for c in children) - cpu0
        time.sleep(0.5)  # a cycle that ended with the window is stored
        r["cycles"] = monitor_cycles(home, t0, t1) if monitor else 0
        return r
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="recorded seconds per run")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--conc", type=int, default=8, help="concurrent clients")
    p.add_argument("--every", default="2s", help="--monitor-every of the monitored server")
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args()
    import random

    rnd = random.Random(1234)
    bodies = [json.dumps({"inputs": [round(rnd.gauss(0, 1), 5) for _ in range(FEATURES)]}).encode() for _ in range(256)]
    load_start = _common.load_average()
    with tempfile.TemporaryDirectory(prefix="loopml-monitor-bench-") as tmp:
        home = Path(tmp)
        prepare(home)
        runs: dict[str, list[dict]] = {"off": [], "on": []}
        for i in range(a.rounds):
            for mode in (("off", "on") if i % 2 == 0 else ("on", "off")):
                r = run_once(home, mode == "on", a, bodies)
                runs[mode].append(r)
                print(f"round {i + 1} monitor {mode:3s}: {r['rps']:7.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms"
                      f"  errors {r['errors']}" + (f"  cycles {r['cycles']}  monitor CPU {r['monitor_cpu_s']:.2f} s" if mode == "on" else ""),
                      flush=True)
        lines = [ln for ln in (home / "serve-on.log").read_text(errors="replace").splitlines() if "requests (" in ln]
        print(f"the monitor's last cycle ({len(lines)} in all): {lines[-1] if lines else '-'}")
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms", "cycles", "monitor_cpu_s")}
           for m, rs in runs.items()}
    ratio = {"rps": med["on"]["rps"] / med["off"]["rps"], "p50": med["on"]["p50_ms"] / med["off"]["p50_ms"],
             "p99": med["on"]["p99_ms"] / med["off"]["p99_ms"]}
    ok = ratio["rps"] >= 0.9 and ratio["p99"] <= 1.2
    print()
    print(f"loopml serve, c={a.conc}, {a.duration:g} s windows, medians of {a.rounds} rounds "
          f"(load average {load_start} -> {_common.load_average()}, {_common.machine()['cpus']} CPUs)")
    print(f"{'':22s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s}")
    print(f"{'without --monitor':22s} {med['off']['rps']:8.0f} {med['off']['p50_ms']:8.2f} {med['off']['p99_ms']:8.2f}")
    print(f"{'with --monitor ' + a.every:22s} {med['on']['rps']:8.0f} {med['on']['p50_ms']:8.2f} {med['on']['p99_ms']:8.2f}")
    print(f"{'ratio (with / without)':22s} {ratio['rps']:8.2f} {ratio['p50']:8.2f} {ratio['p99']:8.2f}")
    print(f"monitor cycles completed per {a.duration:g} s window: {med['on']['cycles']:.0f}; "
          f"monitor CPU {med['on']['monitor_cpu_s']:.2f} s per window")
    print(f"goal: throughput >= 0.9x and p99 <= 1.2x with the monitor: {'PASS' if ok else 'MISS'}")
    if a.json:
        Path(a.json).write_text(json.dumps({"runs": runs, "median": med, "ratio": ratio, "pass": ok,
                                            "versions": _common.versions("torch", "onnxruntime"), "machine": _common.machine(),
                                            "load_average": load_start}, indent=2))


if __name__ == "__main__":
    main()
