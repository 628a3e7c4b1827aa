"""What explanations cost the predictions: the same predict load with and without integrated-gradients traffic.

The model: the digits CNN (loopml.models.nets.DigitsCNN, 1x8x8 -> 10), trained for a few
epochs on generated digit-like images (ten seeded blob templates plus noise; nothing is
downloaded), registered with its onnx and torch formats. ``loopml serve digits@production``
answers predictions with ONNX Runtime on its event loop and explains with the torch model in
its one explanation thread.

Load: benchmarks/serving_peers/loadgen.py's closed loop (aiohttp, ``--conc`` clients on
keep-alive connections on 127.0.0.1, single-row JSON predict requests, warm-up unrecorded,
then a recorded window). With explanations, ``--explainers`` more clients send
``POST /v1/models/digits/explain`` (integrated gradients, 50 steps, ``--explain-rows`` rows)
in a closed loop of their own through the same window, so that the explanation thread is
busy throughout. Runs are interleaved (off, on, on, off, ...) and medians over the rounds
are printed with the ratio on / off.

    .venv/bin/python benchmarks/explain_load.py                    # 3 rounds of 10 s at c=8 (~2 min)
    .venv/bin/python benchmarks/explain_load.py --rounds 1 --duration 5 --json out.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one intra-op thread on 2 shared cores: docs/benchmarks.md, "Threads"

import argparse
import asyncio
import json
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


free_port = _common.free_port


def images(n: int, seed: int) -> tuple["object", "object"]:
    """Digit-like 8x8 images: ten fixed templates (seed 0) with per-image noise (``seed``), and their classes."""
    import numpy as np

    templates = np.random.default_rng(0).uniform(0, 16, size=(10, 1, 8, 8)).astype(np.float32)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, size=n)
    x = np.clip(templates[y] + rng.normal(0, 3, size=(n, 1, 8, 8)), 0, 16).astype(np.float32)
    return x, y


PREPARE = """
import sys
sys.path.insert(0, {here!r})
import numpy as np, torch, loopml
from loopml.models.nets import DigitsCNN
from explain_load import images
torch.set_num_threads(1)
x, y = images(2000, seed=1)
torch.manual_seed(0)
model = DigitsCNN()
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
xt, yt = torch.from_numpy(x), torch.from_numpy(y)
for epoch in range(3):
    for i in range(0, len(x), 64):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt[i:i + 64]), yt[i:i + 64]).backward()
        opt.step()
model.eval()
v = loopml.register(model, "digits", input_example=x[:8], class_names=[str(i) for i in range(10)], formats=("onnx", "torch"))
loopml.models.set_alias("digits", "production", v.version)
"""


def prepare(home: Path) -> None:
    subprocess.run([sys.executable, "-c", PREPARE.format(here=str(HERE))], check=True,
                   env={**os.environ, "LOOPML_HOME": str(home)})


async def explain_loop(url: str, bodies: list[bytes], conc: int, warmup: float, duration: float) -> dict:
    """``conc`` clients sending explanations in a closed loop; counts those answered 200 inside the window."""
    import aiohttp

    done = errors = 0
    samples: list[str] = []
    lat: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as sess:
        w_start = time.perf_counter() + warmup
        w_end = w_start + duration

        async def client(i: int) -> None:
            nonlocal done, errors
            k = i
            while time.perf_counter() < w_end:
                t0 = time.perf_counter()
                async with sess.post(url, data=bodies[k % len(bodies)], headers={"Content-Type": "application/json"}) as r:
                    data = await r.read()
                k += 1
                t1 = time.perf_counter()
                if r.status != 200:
                    errors += 1
                    if len(samples) < 3:
                        samples.append(f"{r.status}: {data[:200]!r}")
                    await asyncio.sleep(0.05)
                elif w_start <= t1 < w_end:
                    done += 1
                    lat.append(t1 - t0)

        await asyncio.gather(*(client(i) for i in range(conc)))
    lat.sort()
    return {"explanations_per_s": done / duration, "explain_p50_ms": loadgen.pct(lat, 50) * 1e3,
            "explain_errors": errors, "explain_err_samples": samples}


async def both(predict_url: str, explain_url: str, bodies: list[bytes], explain_bodies: list[bytes], a: argparse.Namespace,
               pid: int, explain: bool) -> dict:
    jobs = [loadgen.closed_loop(predict_url, bodies, a.conc, a.warmup, a.duration, pid)]
    if explain:
        jobs.append(explain_loop(explain_url, explain_bodies, a.explainers, a.warmup, a.duration))
    out = await asyncio.gather(*jobs)
    r = dict(out[0])
    if explain:
        r.update(out[1])
    return r


def run_once(home: Path, explain: bool, a: argparse.Namespace, bodies: list[bytes], explain_bodies: list[bytes]) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "loopml", "serve", "digits@production", "--port", str(port), "--no-gate"]
    log = open(home / "serve.log", "ab")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env={**os.environ, "LOOPML_HOME": str(home)},
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        for _ in range(2):  # "listening", then "ready"
            line = proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"loopml serve exited; see {log.name}")
        base = f"http://127.0.0.1:{port}/v1/models/digits"
        if explain:  # the explainer is loaded (torch, Captum) before the window: the steady state is measured
            asyncio.run(explain_loop(f"{base}/explain", explain_bodies[:1], 1, 0.0, 0.5))
        return asyncio.run(both(f"{base}/predict", f"{base}/explain", bodies, explain_bodies, a, proc.pid, explain))
    finally:
        _common.stop_process(proc)
        log.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="recorded seconds per run")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--conc", type=int, default=8, help="concurrent predict clients")
    p.add_argument("--explainers", type=int, default=2, help="concurrent explain clients (integrated gradients)")
    p.add_argument("--explain-rows", type=int, default=8, help="rows per explanation")
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args()
    x, _ = images(256, seed=2)
    bodies = [json.dumps({"inputs": row.round(3).tolist()}).encode() for row in x]
    explain_bodies = [json.dumps({"inputs": x[i:i + a.explain_rows].round(3).tolist(), "method": "integrated_gradients",
                                  "steps": 50}).encode() for i in range(0, 256 - a.explain_rows, a.explain_rows)]
    load_start = _common.load_average()
    with tempfile.TemporaryDirectory(prefix="loopml-explain-bench-") as tmp:
        home = Path(tmp)
        prepare(home)
        runs: dict[str, list[dict]] = {"off": [], "on": []}
        for i in range(a.rounds):
            for mode in (("off", "on") if i % 2 == 0 else ("on", "off")):
                r = run_once(home, mode == "on", a, bodies, explain_bodies)
                runs[mode].append(r)
                extra = (f"  explanations {r['explanations_per_s']:.1f}/s (p50 {r['explain_p50_ms']:.0f} ms, errors "
                         f"{r['explain_errors']})" if mode == "on" else "")
                print(f"round {i + 1} explanations {mode:3s}: {r['rps']:7.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                      f"p99 {r['p99_ms']:6.2f} ms  errors {r['errors']}{extra}", flush=True)
                for s in r.get("err_samples", []) + r.get("explain_err_samples", []):
                    print("   ", s)
    keys = ("rps", "p50_ms", "p99_ms")
    med = {m: {k: statistics.median(r[k] for r in rs) for k in keys} for m, rs in runs.items()}
    med["on"]["explanations_per_s"] = statistics.median(r["explanations_per_s"] for r in runs["on"])
    med["on"]["explain_p50_ms"] = statistics.median(r["explain_p50_ms"] for r in runs["on"])
    ratio = {"rps": med["on"]["rps"] / med["off"]["rps"], "p50": med["on"]["p50_ms"] / med["off"]["p50_ms"],
             "p99": med["on"]["p99_ms"] / med["off"]["p99_ms"]}
    print()
    print(f"loopml serve digits CNN (onnx), predict c={a.conc}, {a.duration:g} s windows, medians of {a.rounds} rounds "
          f"(load average {load_start} -> {_common.load_average()}, {_common.machine()['cpus']} CPUs)")
    print(f"{'':34s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s}")
    print(f"{'predictions alone':34s} {med['off']['rps']:8.0f} {med['off']['p50_ms']:8.2f} {med['off']['p99_ms']:8.2f}")
    print(f"{f'with {a.explainers} IG clients ({a.explain_rows} rows, 50 steps)':34s} {med['on']['rps']:8.0f} "
          f"{med['on']['p50_ms']:8.2f} {med['on']['p99_ms']:8.2f}")
    print(f"{'ratio (with / without)':34s} {ratio['rps']:8.2f} {ratio['p50']:8.2f} {ratio['p99']:8.2f}")
    print(f"explanations answered meanwhile: {med['on']['explanations_per_s']:.1f}/s, p50 {med['on']['explain_p50_ms']:.0f} ms")
    if a.json:
        Path(a.json).write_text(json.dumps({"runs": runs, "median": med, "ratio": ratio, "args": vars(a),
                                            "versions": _common.versions("torch", "onnxruntime", "captum"),
                                            "machine": _common.machine(), "load_average": load_start}, indent=2))


if __name__ == "__main__":
    main()
