"""How fast `loopml serve` starts and how much memory it holds, beside a bare FastAPI + ONNX Runtime server.

The model: the digits CNN (loopml.models.nets.DigitsCNN, 1x8x8 -> 10), trained briefly on scikit-learn's
digits and registered with onnx, pt2 and torch files and its OOD gate (VAE + Mahalanobis, fitted at
registration with ``ood=(train, val)``). Servers, each started fresh in every round:

- ``loopml serve digits@production`` (the default: ``--backend auto``, the gate on);
- ``loopml serve digits@production --backend onnx`` (the gate on);
- ``loopml serve digits@production --backend onnx --no-gate``;
- the peer: bare FastAPI + uvicorn loading the version's ONNX file with ONNX Runtime
  (benchmarks/serving_peers/server_fastapi_onnx.py; no gate, no validation, no request log).

Ready: wall time from starting the process to the first ``GET /ready`` answered 200, polled every 10 ms
on a new connection. Memory: PSS of the process (``/proc/PID/smaps_rollup``) after 20 predictions, with
USS (its private pages: PSS also falls when other processes map the same libraries) and RSS beside it.
Servers run with compiled bytecode (``PYTHONPYCACHEPREFIX`` under the temporary folder), as an installed
package has; one unrecorded start of each comes first, so every file is in the page cache.
``torch`` says whether libtorch was mapped into the process. Rounds are interleaved (every server once
per round, the order reversed every other round) and medians are printed.

Goals (issue 11), printed PASS or MISS for the default command: ready within 1.5 s and PSS at most
150 MB with the gate on.

    .venv/bin/python benchmarks/serve_startup.py                 # 5 rounds (~1 min after ~20 s of preparation)
    .venv/bin/python benchmarks/serve_startup.py --rounds 3 --json out.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # NOTES.md: one intra-op thread on 2 shared cores

import argparse
import http.client
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # benchmarks/_common.py: these run as `python benchmarks/<name>.py`

HERE = Path(__file__).resolve().parent
PEER = HERE / "serving_peers" / "server_fastapi_onnx.py"
READY_GOAL_S = 1.5
PSS_GOAL_MB = 150.0
CONFIGS = {
    "loopml serve (auto, gate on)": [],
    "loopml serve --backend onnx (gate on)": ["--backend", "onnx"],
    "loopml serve --backend onnx --no-gate": ["--backend", "onnx", "--no-gate"],
    "FastAPI + ONNX Runtime (peer)": None,
}
DEFAULT = "loopml serve (auto, gate on)"
PEER_LABEL = "FastAPI + ONNX Runtime (peer)"


def prepare(home: Path) -> None:
    """Train and register the digits CNN with its gate in the store under ``home`` (runs in a child process)."""
    import numpy as np
    import torch

    import loopml
    from loopml import data
    from loopml.models.nets import DigitsCNN
    from loopml.models.registry import registry_for
    from loopml.train import Trainer

    torch.set_num_threads(1)
    parts = data.split(data.load("digits"), val=0.15, test=0.15, stratify=True, seed=0)
    torch.manual_seed(0)
    cnn = DigitsCNN()
    Trainer(cnn, optimizer=torch.optim.Adam(cnn.parameters(), lr=3e-3), seed=0, track=False).fit(
        parts.train, epochs=8, batch_size=64
    )
    cnn.eval()
    v = loopml.register(cnn, "digits", input_example=parts.train.x[:8], class_names=[str(d) for d in range(10)],
                        init_args={"channels": 16}, formats=("onnx", "pt2", "torch"), ood=(parts.train, parts.val))
    loopml.models.set_alias("digits", "production", v.version)
    registry = registry_for(None)
    (home / "prepared.json").write_text(json.dumps({
        "ref": v.ref, "formats": sorted(v.files), "onnx": str(registry.file_path("digits", v.version, "onnx")),
        "rows": np.asarray(parts.test.x[:20]).tolist(),
    }))


free_port = _common.free_port


def _request(port: int, method: str, path: str, body: bytes | None = None) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, body, {"Content-Type": "application/json"} if body else {})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def memory_mb(pid: int) -> dict[str, float]:
    """PSS, USS (private pages) and RSS of a process, in MB (MiB), from /proc/PID/smaps_rollup.

    PSS counts a shared page by its share: it drops when other processes on the machine map the same
    libraries (other Python processes of the same virtualenv), so USS is printed beside it.
    """
    kb = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        kb[key] = int(rest.split()[0])
    return {"pss_mb": kb["Pss"] / 1024, "uss_mb": (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024, "rss_mb": kb["Rss"] / 1024}


def torch_mapped(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def one_start(label: str, prepared: dict, env: dict[str, str], logs: Path) -> dict:
    """Start one server, time it to /ready, send 20 predictions, read its PSS, stop it."""
    port = free_port()
    extra = CONFIGS[label]
    if extra is None:
        cmd = [sys.executable, str(PEER), "--onnx", prepared["onnx"], "--port", str(port)]
        path, key = "/predict", "input"
    else:
        cmd = [sys.executable, "-m", "loopml", "serve", "digits@production", "--port", str(port), *extra]
        path, key = "/v1/models/digits/predict", "inputs"
    log = open(logs / f"{label.split()[0]}-{port}.log", "wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{label} exited with {proc.returncode}; log: {log.name}")
            try:
                if _request(port, "GET", "/ready") == 200:
                    break
            except OSError:
                pass
            if time.perf_counter() - t0 > 120:
                raise RuntimeError(f"{label} was not ready in 120 s; log: {log.name}")
            time.sleep(0.01)
        ready = time.perf_counter() - t0
        statuses = [_request(port, "POST", path, json.dumps({key: row}).encode()) for row in prepared["rows"]]
        if set(statuses) != {200}:
            raise RuntimeError(f"{label} answered {sorted(set(statuses))}; log: {log.name}")
        return {"ready_s": ready, **memory_mb(proc.pid), "torch": torch_mapped(proc.pid)}
    finally:
        _common.stop_process(proc)
        log.close()


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return f"load average {_common.load_average()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default="", help="write every figure here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (store, server logs)")
    ap.add_argument("--prepare", default="", help=argparse.SUPPRESS)  # internal: the child that builds the store
    a = ap.parse_args()
    if a.prepare:
        prepare(Path(a.prepare))
        return
    if not 1 <= a.rounds <= 20:
        sys.exit("Argument --rounds should be between 1 and 20")
    tmp = Path(tempfile.mkdtemp(prefix="loopml-bench-startup-"))
    (tmp / "logs").mkdir()
    env = dict(os.environ, LOOPML_HOME=str(tmp / "home"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               TMPDIR=str(tmp))
    for var in ("LOOPML_TRACKING_URI", "LOOPML_ARTIFACT_ROOT", "LOOPML_SERVER_TOKEN", "PYTHONDONTWRITEBYTECODE"):
        env.pop(var, None)
    # compiled bytecode, as an installed package has (compiling loopml's sources took ~0.1-0.3 s of every start),
    # kept under the temporary folder rather than written beside the sources
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    t0 = time.perf_counter()
    prep = subprocess.run([sys.executable, __file__, "--prepare", str(tmp)], env=env, capture_output=True, text=True)
    if prep.returncode != 0:
        sys.exit(f"preparing the store failed:\n{prep.stderr[-3000:]}")
    prepared = json.loads((tmp / "prepared.json").read_text())
    print(f"prepared {prepared['ref']} with {', '.join(prepared['formats'])} ({time.perf_counter() - t0:.0f} s)", flush=True)
    load_start, up_start = _common.load_average(), uptime()
    print(f"at start: {up_start}; machine: {_common.machine()}", flush=True)
    labels = list(CONFIGS)
    for label in labels:  # one unrecorded start each: the page cache holds every file afterwards, as on a warm machine
        one_start(label, prepared, env, tmp / "logs")
    results: dict[str, list[dict]] = {label: [] for label in labels}
    for round_ in range(a.rounds):
        for label in labels if round_ % 2 == 0 else reversed(labels):
            r = one_start(label, prepared, env, tmp / "logs")
            results[label].append(r)
            print(f"  round {round_ + 1}  {label:40s} ready {r['ready_s']:5.2f} s  PSS {r['pss_mb']:6.1f} MB  "
                  f"USS {r['uss_mb']:6.1f} MB  "
                  f"torch {'yes' if r['torch'] else 'no'}", flush=True)
    load_end, up_end = _common.load_average(), uptime()
    report(results, a.rounds, up_start, up_end)
    if a.json:
        Path(a.json).write_text(json.dumps({
            "versions": _common.versions("torch", "onnxruntime", "fastapi", "uvicorn", "sqlalchemy", "numpy"),
            "machine": _common.machine(), "load_average": [load_start, load_end], "uptime": [up_start, up_end],
            "runs": results,
        }, indent=1))
    if a.keep:
        print(f"store and server logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def report(results: dict[str, list[dict]], rounds: int, up_start: str, up_end: str) -> None:
    keys = ("ready_s", "pss_mb", "uss_mb", "rss_mb")
    med = {label: {k: statistics.median(r[k] for r in runs) for k in keys} for label, runs in results.items()}
    peer = med[PEER_LABEL]
    print(f"\nversions: {_common.versions('torch', 'onnxruntime', 'fastapi', 'uvicorn', 'sqlalchemy', 'numpy')}")
    print(f"medians of {rounds} interleaved round(s); uptime at start: {up_start}; at end: {up_end}")
    hdr = "| server | ready s (min-max) | PSS MB (min-max) | USS MB | RSS MB | torch loaded | ready vs peer | PSS vs peer |"
    print("\n" + hdr + "\n" + "|---" * (hdr.count("|") - 1) + "|")
    for label, runs in results.items():
        ready = [r["ready_s"] for r in runs]
        pss = [r["pss_mb"] for r in runs]
        torch = {r["torch"] for r in runs}
        print(f"| {label} | {med[label]['ready_s']:.2f} ({min(ready):.2f}-{max(ready):.2f}) | "
              f"{med[label]['pss_mb']:.0f} ({min(pss):.0f}-{max(pss):.0f}) | {med[label]['uss_mb']:.0f} | {med[label]['rss_mb']:.0f} | "
              f"{'yes' if torch == {True} else 'no' if torch == {False} else 'sometimes'} | "
              f"{med[label]['ready_s'] / peer['ready_s']:.2f}x | {med[label]['pss_mb'] / peer['pss_mb']:.2f}x |")
    d = med[DEFAULT]
    print("\nGoals (issue 11), `loopml serve digits@production` with its gate on:")
    print(f"  ready within {READY_GOAL_S} s: {d['ready_s']:.2f} s  {'PASS' if d['ready_s'] <= READY_GOAL_S else 'MISS'}")
    print(f"  PSS at most {PSS_GOAL_MB:.0f} MB: {d['pss_mb']:.0f} MB  {'PASS' if d['pss_mb'] <= PSS_GOAL_MB else 'MISS'}")


if __name__ == "__main__":
    main()
