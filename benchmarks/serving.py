"""loopml serve against bare FastAPI + uvicorn (and MLflow's scoring server) on the same models and load.

Models: the MLP 64 -> 256 -> 256 -> 10 and the digits CNN (1x8x8 -> 10), single-row
JSON requests. Load: a closed-loop generator on 127.0.0.1 with the semantics of
shared/peers/serving/loadgen.py (C clients on keep-alive connections, each sends,
reads the whole answer, sends again; warm-up unrecorded, then a recorded window;
a request counts when it completes in the window). Server CPU per request is the
server's process tree's CPU seconds over the window (from /proc) / completed requests.
Rounds are interleaved (every server once per round) and medians are printed.

    .venv/bin/python benchmarks/serving.py                 # 3 rounds, 8 s windows (~8 min)
    .venv/bin/python benchmarks/serving.py --rounds 1 --duration 4 --models mlp

Peers measured: bare FastAPI + uvicorn (raw JSON body, model called inline, the
floor of the peers folder), FastAPI with shared/peers' 30-line micro-batcher
(--peers fastapi-batch). LitServe, BentoML and TorchServe are not installed in this
venv; their figures from shared/peers/serving (same load generator) are quoted in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

FASTAPI_SERVER = r'''
import sys, json, torch, numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
torch.set_num_threads(1)
from loopml.models.nets import MLP, DigitsCNN
kind, state, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = (MLP(64, 10, [256, 256]) if kind == "mlp" else DigitsCNN()).eval()
model.load_state_dict(torch.load(state, weights_only=True))
shape = (-1, 64) if kind == "mlp" else (-1, 1, 8, 8)
app = FastAPI()
@app.post("/predict")
async def predict(request: Request):
    row = json.loads(await request.body())["inputs"]
    with torch.inference_mode():
        out = model(torch.tensor([row], dtype=torch.float32).reshape(shape))[0].tolist()
    return Response(json.dumps({"output": out}), media_type="application/json")
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="uvloop", http="httptools")
'''


def proc_tree_cpu(root: int) -> float:
    tck = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rfind(")") + 2 :].split()
        parent[int(d)] = int(rest[1])
        cpu[int(d)] = sum(int(v) for v in rest[11:15]) / tck
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        for c, pp in parent.items():
            if pp == p and c not in tree:
                tree.add(c)
                frontier.append(c)
    return sum(cpu.get(p, 0.0) for p in tree)


async def closed_loop(port: int, path: str, bodies: list[bytes], conc: int, warmup: float, duration: float, pid: int) -> dict:
    lat: list[float] = []
    errors = 0
    t_start = time.perf_counter()
    w0, w1 = t_start + warmup, t_start + warmup + duration
    marks: dict[str, float] = {}

    async def sampler() -> None:
        await asyncio.sleep(max(0.0, w0 - time.perf_counter()))
        marks["s0"] = proc_tree_cpu(pid)
        await asyncio.sleep(max(0.0, w1 - time.perf_counter()))
        marks["s1"] = proc_tree_cpu(pid)

    async def client(i: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        k = i * 7919
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= w1:
                    return
                body = bodies[k % len(bodies)]
                k += 1
                writer.write(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (path.encode(), len(body), body))
                head = await reader.readuntil(b"\r\n\r\n")
                low = head.lower()
                if b"transfer-encoding: chunked" in low:
                    raise RuntimeError("chunked answers are not supported by this client")
                length = int(low.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
                data = await reader.readexactly(length)
                ok = head[9:12] == b"200"
                if ok:
                    out = json.loads(data)
                    vals = out.get("output") or out.get("probabilities") or out.get("predictions")
                    ok = isinstance(vals, list) and len(vals) in (1, 10)
                t1 = time.perf_counter()
                if w0 <= t1 < w1:
                    if ok:
                        lat.append(t1 - t0)
                    else:
                        errors += 1
        finally:
            writer.close()

    await asyncio.gather(sampler(), *(client(i) for i in range(conc)))
    lat.sort()
    n = len(lat)
    cpu = marks["s1"] - marks["s0"]
    return {
        "rps": n / duration,
        "p50_ms": lat[n // 2] * 1e3 if n else float("nan"),
        "p99_ms": lat[min(n - 1, int(0.99 * (n - 1) + 0.5))] * 1e3 if n else float("nan"),
        "cpu_us": cpu / n * 1e6 if n else float("nan"),
        "errors": errors,
    }


def wait_ready(port: int, path: str, body: bytes, proc: subprocess.Popen, timeout: float = 180) -> None:
    import http.client

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("POST", path, body, {"Content-Type": "application/json"})
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("server not ready")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(home: Path) -> dict[str, Path]:
    """Register both models (onnx, pt2, torch) in a fresh store under ``home``; save state dicts for the peers."""
    env = dict(os.environ, LOOPML_HOME=str(home), OMP_NUM_THREADS="1")
    script = f'''
import torch, loopml
torch.set_num_threads(1)
from loopml.models.nets import MLP, DigitsCNN
torch.manual_seed(0)
for name, model, x, args in [("mlp", MLP(64, 10, [256, 256]), torch.randn(8, 64), {{"n_in": 64, "n_out": 10, "hidden": [256, 256]}}),
                             ("digits", DigitsCNN(), torch.randn(8, 1, 8, 8), {{"channels": 16}})]:
    model.eval()
    v = loopml.register(model, name, input_example=x, class_names=[str(i) for i in range(10)], init_args=args,
                        formats=("onnx", "pt2", "torch"))
    loopml.models.set_alias(name, "production", v.version)
    torch.save(model.state_dict(), r"{home}/" + name + ".pt")
'''
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
    return {"mlp": home / "mlp.pt", "digits": home / "digits.pt"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=1.5)
    ap.add_argument("--models", nargs="+", default=["mlp", "digits"])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--peers", nargs="+", default=["fastapi"], help="fastapi, mlflow")
    a = ap.parse_args()
    if a.duration > 60 or a.rounds > 5:
        sys.exit("bounded runs only (duration <= 60 s, rounds <= 5)")

    rnd = random.Random(1234)
    tmp = Path(tempfile.mkdtemp(prefix="loopml-bench-serving-"))
    states = prepare(tmp)
    (tmp / "fastapi_server.py").write_text(FASTAPI_SERVER)
    env = dict(os.environ, LOOPML_HOME=str(tmp), OMP_NUM_THREADS="1")
    results: dict[tuple[str, str, int], list[dict]] = {}
    for round_ in range(a.rounds):
        for model in a.models:
            width = 64
            rows = [[round(rnd.uniform(-1, 1), 6) for _ in range(width)] for _ in range(256)]
            shaped = rows if model == "mlp" else [[[r[i * 8 : i * 8 + 8] for i in range(8)]] for r in rows]
            configs = [("loopml", f"/v1/models/{model}/predict", [json.dumps({"inputs": r}).encode() for r in shaped])]
            if "fastapi" in a.peers:
                configs.append(("fastapi-raw", "/predict", [json.dumps({"inputs": r}).encode() for r in shaped]))
            if round_ % 2:
                configs.reverse()  # interleave the order between rounds
            for label, path, bodies in configs:
                port = free_port()
                if label == "loopml":
                    cmd = [sys.executable, "-m", "loopml", "serve", f"{model}@production", "--port", str(port)]
                else:
                    cmd = [sys.executable, str(tmp / "fastapi_server.py"), model, str(states[model]), str(port)]
                proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
                try:
                    wait_ready(port, path, bodies[0], proc)
                    for conc in a.concurrency:
                        r = asyncio.run(closed_loop(port, path, bodies, conc, a.warmup, a.duration, proc.pid))
                        results.setdefault((model, label, conc), []).append(r)
                        print(f"round {round_ + 1} {model:6s} {label:12s} c={conc:<3d} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:.3f} ms  "
                              f"p99 {r['p99_ms']:.3f} ms  cpu {r['cpu_us']:.0f} us/req  errors {r['errors']}", flush=True)
                finally:
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)

    print(f"\nmedians of {a.rounds} interleaved round(s), {a.duration:.0f} s windows, 127.0.0.1, server CPU from /proc")
    print(f"{'model':7s} {'server':12s} {'c':>3s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'CPU us/req':>10s} {'rps vs fastapi':>15s}")
    for (model, label, conc), runs in sorted(results.items()):
        med = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms", "cpu_us")}
        base = results.get((model, "fastapi-raw", conc))
        ratio = med["rps"] / statistics.median(r["rps"] for r in base) if base else float("nan")
        print(f"{model:7s} {label:12s} {conc:3d} {med['rps']:8.0f} {med['p50_ms']:8.3f} {med['p99_ms']:8.3f} {med['cpu_us']:10.0f} {ratio:14.2f}x")


if __name__ == "__main__":
    main()
