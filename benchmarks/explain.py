"""What loopml's explanations cost beside Captum called directly: the library, a registered version, the server.

Two models, trained here in a few seconds with fixed seeds (no download):

- ``digits``: loopml.models.nets.DigitsCNN on scikit-learn's digits as 1x8x8 images (values / 16);
- ``cancer``: loopml.models.nets.MLP (30 -> 64 -> 2) on scikit-learn's breast cancer table, standardised
  with the training rows' mean and standard deviation.

Both are registered (``torch`` and ``pt2`` formats) in a temporary store. For each method (saliency,
integrated gradients, GradientSHAP, DeepLIFT, occlusion, feature ablation), model and batch (1 and 32
held-out rows), three calls run interleaved, one of each per round in a rotating order:

- **Captum**: the predicted classes (one forward pass without gradients, as loopml's default target), then
  ``captum.attr.<Method>(module).attribute(...)`` with the same baseline (zeros) and options loopml uses
  (IG 50 steps; GradientSHAP 20 samples, seeded as loopml seeds it; occlusion's window and stride;
  occlusion and feature ablation with loopml's ``perturbations_per_eval``), from a NumPy batch to NumPy
  attributions;
- **loopml**: ``loopml.explain(module, x, method=...)`` on the live module;
- **version**: ``Explainer.for_version(registry, "NAME@production").explain(x, method=...)`` (loaded once,
  as a server keeps it; the signature checks the inputs).

The three must give the same numbers (checked on every configuration before timing). Medians of the
rounds are printed; loopml's overhead over Captum is the median of the rounds' ratios (each pair ran back
to back, so a load that comes and goes on a shared machine moves both). Goal (issue 15): **at most 10%**
in the library.

The server: ``loopml serve NAME@production`` (a real process on 127.0.0.1, one model at a time), and
``POST /v1/models/NAME/explain`` with ``{"inputs": ..., "method": ...}`` on one keep-alive connection,
interleaved with the same Captum call in this process. Overhead = the request's median latency minus
Captum's median for the same work; goal: **at most 1 ms** plus the computation. The answer's own
``seconds`` (the explanation's time inside the server) is printed beside it.

One intra-op thread for torch everywhere (``torch.set_num_threads(1)``; the server's worker sets its own):
on 2 shared cores more threads only add noise (docs/benchmarks.md, "Threads").

    .venv/bin/python benchmarks/explain.py                  # about 4 minutes
    .venv/bin/python benchmarks/explain.py --quick          # a smoke run: few rounds, a few configurations
    .venv/bin/python benchmarks/explain.py --no-server --seconds 3 --json out.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # NOTES.md: one intra-op thread on 2 shared cores

import argparse
import functools
import gc
import http.client
import json
import math
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common  # benchmarks/_common.py: these run as `python benchmarks/<name>.py`
import numpy as np

for _var in ("LOOPML_TRACKING_URI", "LOOPML_ARTIFACT_ROOT", "LOOPML_SERVER_TOKEN", "LOOPML_HOME"):  # a temporary store only
    os.environ.pop(_var, None)

METHODS = ("saliency", "integrated_gradients", "gradient_shap", "deeplift", "occlusion", "feature_ablation")
SHORT = {"saliency": "saliency", "integrated_gradients": "IG", "gradient_shap": "GradientSHAP",
         "deeplift": "DeepLIFT", "occlusion": "occlusion", "feature_ablation": "ablation"}
BATCHES = (1, 32)
LIB_GOAL = 0.10  # at most 10% over Captum
SERVER_GOAL_MS = 1.0  # at most 1 ms over the computation
# Same module weights, same floats, same Captum call with the same options: in this process the results are
# identical bit for bit, except DeepLIFT on the CNN (largest difference 1.2e-6: its hooks run the convolutions on
# an input and baseline batch whose layout can make oneDNN sum in another order). The tolerance lets a kernel sum
# in another order, as it may too in the server's process (another thread, another memory layout): a gradient
# attribution then moves by a few float32 ulps of itself, within 1e-6 + 1e-5 x its size. Occlusion's and feature
# ablation's attributions and the completeness deltas are differences of two outputs (logits up to ~20 here, whose
# float32 ulp is ~2e-6), so one ulp of a logit moves them by ~2e-6 (measured through the server: 2.9e-6): 1e-5 there.
ATOL, RTOL = 1e-6, 1e-5
OUTPUT_ATOL = 1e-5
PERTURBATION = ("occlusion", "feature_ablation")


# -- models and data -------------------------------------------------------------------------------------------


def train(module: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, batch: int, lr: float, seed: int) -> None:
    """A few epochs of Adam: a model that answers like a trained one (its attributions have structure)."""
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    module.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(batch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(module(xt[idx]), yt[idx]).backward()
            opt.step()
    module.eval()


def accuracy(module: Any, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        return float((module(torch.from_numpy(x)).argmax(dim=1).numpy() == y).mean())


def models() -> dict[str, dict[str, Any]]:
    """``{name: {module, x (held-out rows), classes, features, accuracy}}``, trained with fixed seeds."""
    import torch
    from sklearn.datasets import load_breast_cancer, load_digits

    from loopml.models.nets import MLP, DigitsCNN

    out: dict[str, dict[str, Any]] = {}
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    tr, te = order[:1400], order[1400:]
    torch.manual_seed(0)
    cnn = DigitsCNN()
    train(cnn, x[tr], y[tr], epochs=4, batch=64, lr=3e-3, seed=0)
    out["digits"] = {"module": cnn, "x": np.ascontiguousarray(x[te]), "train": x[tr],
                     "classes": [str(i) for i in range(10)], "features": None, "accuracy": accuracy(cnn, x[te], y[te])}
    c = load_breast_cancer()
    xc, yc = c.data.astype(np.float32), c.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(xc))
    tr, te = order[:400], order[400:]
    mean, std = xc[tr].mean(axis=0), xc[tr].std(axis=0) + 1e-6
    xc = ((xc - mean) / std).astype(np.float32)
    torch.manual_seed(0)
    mlp = MLP(xc.shape[1], 2, hidden=64)
    train(mlp, xc[tr], yc[tr], epochs=30, batch=32, lr=1e-3, seed=0)
    out["cancer"] = {"module": mlp, "x": np.ascontiguousarray(xc[te]), "train": xc[tr],
                     "classes": [str(n) for n in c.target_names],
                     "features": [str(f) for f in c.feature_names], "accuracy": accuracy(mlp, xc[te], yc[te])}
    return out


def register(spec: dict[str, dict[str, Any]]) -> None:
    """Each model as ``NAME/1`` with ``production`` pointing at it, in the current LOOPML_HOME."""
    import loopml

    for name, m in spec.items():
        v = loopml.register(m["module"], name, input_example=m["x"][:8], class_names=m["classes"],
                            feature_names=m["features"], formats=("torch", "pt2"))
        loopml.models.set_alias(name, "production", v.version)


# -- the three calls -------------------------------------------------------------------------------------------


def captum_call(method: str, module: Any, x: np.ndarray, options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """Captum called directly, as a user would to get what loopml answers: the predicted class explained against
    a zero baseline, with ``options`` (loopml's, read from its answer) and the perturbations per forward pass
    loopml uses; NumPy in, NumPy out."""
    import captum.attr as ca
    import torch

    xt = torch.from_numpy(x)
    with torch.no_grad():
        target = module(xt).argmax(dim=1).tolist()
    base = torch.zeros_like(xt)
    delta = None
    if method == "saliency":
        attr = ca.Saliency(module).attribute(xt.requires_grad_(), target=target)
    elif method == "integrated_gradients":
        attr, delta = ca.IntegratedGradients(module).attribute(
            xt.requires_grad_(), baselines=base, target=target, n_steps=options["steps"], return_convergence_delta=True)
    elif method == "gradient_shap":
        np.random.seed(options["seed"])  # Captum draws the points on each path with np.random.uniform
        torch.default_generator.manual_seed(options["seed"])  # and the noise with torch's generator
        n = options["samples"]
        attr, delta = ca.GradientShap(module).attribute(
            xt.requires_grad_(), baselines=base[:1], target=target, n_samples=n, stdevs=options["stdevs"],
            return_convergence_delta=True)
        delta = delta.reshape(len(x), n).mean(dim=1)
    elif method == "deeplift":
        with warnings.catch_warnings():  # "Setting forward, backward hooks ... on non-linear activations", as loopml does
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks", category=UserWarning)
            attr, delta = ca.DeepLift(module).attribute(xt.requires_grad_(), baselines=base, target=target,
                                                        return_convergence_delta=True)
    elif method == "occlusion":
        window, stride = tuple(options["window"]), tuple(options["stride"])
        evals = math.prod(math.ceil((d - w) / s) + 1 for d, w, s in zip(x.shape[1:], window, stride)) + 1
        attr = ca.Occlusion(module).attribute(xt, sliding_window_shapes=window, strides=stride, baselines=base,
                                              target=target, perturbations_per_eval=per_eval(evals, len(x)))
    else:
        evals = math.prod(x.shape[1:]) + 1
        attr = ca.FeatureAblation(module).attribute(xt, baselines=base, target=target,
                                                    perturbations_per_eval=per_eval(evals, len(x)))
    return attr.detach().numpy(), None if delta is None else delta.detach().numpy()


def per_eval(evaluations: int, rows: int) -> int:
    """loopml's perturbations per forward pass (``loopml.explanations.methods.ROWS_PER_FORWARD`` rows at most)."""
    from loopml.explanations.methods import ROWS_PER_FORWARD

    return max(1, min(evaluations, ROWS_PER_FORWARD // max(1, rows)))


def same(a: np.ndarray, b: np.ndarray, what: str, atol: float = ATOL) -> float:
    """The largest absolute difference; exits with a message when over the tolerance (not the same numbers)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or not np.allclose(a, b, atol=atol, rtol=RTOL):
        sys.exit(f"{what}: not Captum's numbers (shapes {a.shape} vs {b.shape}, "
                 f"largest difference {np.abs(a - b).max() if a.shape == b.shape else 'n/a'})")
    return float(np.abs(a - b).max()) if a.size else 0.0


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def interleave(calls: dict[str, Callable[[], Any]], *, seconds: float, min_rounds: int, max_rounds: int) -> dict[str, list[float]]:
    """Milliseconds of each call over rounds, one call of each per round in a rotating order, until ``seconds``
    have passed (at least ``min_rounds``, at most ``max_rounds``); one unrecorded round first (warm-up)."""
    names = list(calls)
    for n in names:
        calls[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    gc.collect()
    start = time.perf_counter()
    r = 0
    while r < max_rounds and (r < min_rounds or time.perf_counter() - start < seconds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            times[n].append(timed(calls[n]))
        r += 1
    return times


def paired(a: list[float], b: list[float]) -> float:
    """The median of the rounds' ratios a/b: each pair ran back to back, so a load that comes and goes moves both
    (the ratio of two medians would compare calls made at different times)."""
    return statistics.median(x / y for x, y in zip(a, b))


def library(spec: dict[str, dict[str, Any]], a: argparse.Namespace) -> list[dict[str, Any]]:
    import loopml
    from loopml.explanations import Explainer
    from loopml.models.registry import registry_for

    registry = registry_for()
    rows: list[dict[str, Any]] = []
    for name, m in spec.items():
        module = m["module"]
        explainer = Explainer.for_version(registry, f"{name}@production")
        assert explainer.format == "torch", explainer.format
        for method in a.methods:
            for batch in a.batches:
                x = np.ascontiguousarray(m["x"][:batch])
                e = loopml.explain(module, x, method=method)
                opts = {**e.options, "seed": e.options.get("seed", 0)}
                want, delta = captum_call(method, module, x, opts)
                tol = OUTPUT_ATOL if method in PERTURBATION else ATOL
                diff = same(e.attributions, want, f"{method} {name} batch {batch}: loopml.explain", tol)
                ev = explainer.explain(x, method=method)
                diff = max(diff, same(ev.attributions, want, f"{method} {name} batch {batch}: the registered version", tol))
                if delta is not None:
                    same(e.delta, delta, f"{method} {name} batch {batch}: loopml's delta", OUTPUT_ATOL)
                    same(ev.delta, delta, f"{method} {name} batch {batch}: the version's delta", OUTPUT_ATOL)
                t = interleave({
                    "captum": functools.partial(captum_call, method, module, x, opts),
                    "loopml": functools.partial(loopml.explain, module, x, method=method),
                    "version": functools.partial(explainer.explain, x, method=method),
                }, seconds=a.seconds, min_rounds=a.min_rounds, max_rounds=a.max_rounds)
                med = {k: statistics.median(v) for k, v in t.items()}
                row = {"method": method, "model": name, "batch": batch, "rounds": len(t["captum"]),
                       "captum_ms": med["captum"], "loopml_ms": med["loopml"], "version_ms": med["version"],
                       "loopml_overhead": paired(t["loopml"], t["captum"]) - 1,
                       "version_overhead": paired(t["version"], t["captum"]) - 1,
                       "evaluations": e.evaluations, "max_abs_diff": diff}
                rows.append(row)
                print(f"  {SHORT[method]:12s} {name:7s} {batch:3d}  Captum {row['captum_ms']:8.3f} ms  "
                      f"loopml {row['loopml_ms']:8.3f} ms ({row['loopml_overhead']:+6.1%})  "
                      f"version {row['version_ms']:8.3f} ms ({row['version_overhead']:+6.1%})  "
                      f"{row['rounds']} rounds", flush=True)
    return rows


# -- the server ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"loopml serve exited ({proc.returncode}); see {log}:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.05)  # polling a process that is starting: not waiting for a result
    sys.exit(f"loopml serve was not ready in {timeout:.0f} s; see {log}")


class Client:
    """One keep-alive connection; the body encoded once, outside the timed call."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        r = self.conn.getresponse()
        return r.status, r.read()


def ask(client: Client, path: str, body: bytes, seconds: list[float]) -> None:
    """One explain request; the answer's own ``seconds`` (the explanation inside the server) kept in ms."""
    status, raw = client.post(path, body)
    if status != 200:
        raise RuntimeError(f"{status}: {raw[:300]!r}")
    seconds.append(float(json.loads(raw)["seconds"]) * 1000.0)


def server(spec: dict[str, dict[str, Any]], a: argparse.Namespace, home: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, m in spec.items():
        module = m["module"]
        port = free_port()
        log = home / f"serve-{name}.log"
        with open(log, "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "loopml", "serve", f"{name}@production", "--port", str(port), "--no-gate"],
                stdout=subprocess.DEVNULL, stderr=err, env=os.environ.copy(), start_new_session=True)
        try:
            wait_ready(port, proc, log)
            client = Client(port)
            path = f"/v1/models/{name}/explain"
            for method in a.methods:
                for batch in a.batches:
                    x = np.ascontiguousarray(m["x"][:batch])
                    body = json.dumps({"inputs": x.tolist(), "method": method}).encode()
                    status, raw = client.post(path, body)
                    if status != 200:
                        sys.exit(f"POST {path} ({method}, batch {batch}) answered {status}: {raw[:500]!r}")
                    answer = json.loads(raw)
                    results = answer.get("results", [answer])
                    got = np.array([r["attributions"] for r in results], dtype=np.float32)
                    opts = {"steps": 50, "samples": 20, "stdevs": 0.0, "seed": 0, **answer.get("options", {})}
                    if method == "occlusion" and "window" not in opts:
                        from loopml.explanations import Options

                        o = Options.make(method, x.shape[1:])
                        opts.update(window=list(o.window or ()), stride=list(o.stride or ()))
                    want, _ = captum_call(method, module, x, opts)
                    diff = same(got, want, f"{method} {name} batch {batch}: the server",
                                OUTPUT_ATOL if method in PERTURBATION else ATOL)
                    seconds: list[float] = []
                    t = interleave({"captum": functools.partial(captum_call, method, module, x, opts),
                                    "server": functools.partial(ask, client, path, body, seconds)},
                                   seconds=a.seconds, min_rounds=a.min_rounds, max_rounds=a.max_rounds)
                    med = {k: statistics.median(v) for k, v in t.items()}
                    inside = statistics.median(seconds[1:]) if len(seconds) > 1 else float("nan")
                    row = {"method": method, "model": name, "batch": batch, "rounds": len(t["captum"]),
                           "captum_ms": med["captum"], "server_ms": med["server"], "inside_ms": inside,
                           "overhead_ms": med["server"] - med["captum"], "http_ms": med["server"] - inside,
                           "max_abs_diff": diff}
                    rows.append(row)
                    print(f"  {SHORT[method]:12s} {name:7s} {batch:3d}  Captum {row['captum_ms']:8.3f} ms  "
                          f"server {row['server_ms']:8.3f} ms (+{row['overhead_ms']:.3f} ms; its own explanation "
                          f"{inside:.3f} ms)  {row['rounds']} rounds", flush=True)
        finally:
            _common.stop_process(proc)
    return rows


# -- the report ------------------------------------------------------------------------------------------------


def report(lib: list[dict[str, Any]], srv: list[dict[str, Any]], load: tuple[float, float]) -> dict[str, bool]:
    print()
    print(f"Explanations, medians of interleaved rounds (load average {load[0]} -> {load[1]}, "
          f"{_common.machine()['cpus']} CPUs, 1 torch thread)")
    print(f"{'method':12s} {'model':7s} {'batch':>5s} {'Captum ms':>10s} {'loopml ms':>10s} {'overhead':>9s} "
          f"{'version ms':>11s} {'overhead':>9s}")
    for r in lib:
        print(f"{SHORT[r['method']]:12s} {r['model']:7s} {r['batch']:5d} {r['captum_ms']:10.3f} {r['loopml_ms']:10.3f} "
              f"{r['loopml_overhead']:+9.1%} {r['version_ms']:11.3f} {r['version_overhead']:+9.1%}")
    met: dict[str, bool] = {}
    diffs = [r["max_abs_diff"] for r in lib + srv]
    if diffs:
        print(f"largest difference from Captum's attributions: library {max((r['max_abs_diff'] for r in lib), default=0):.2g}, "
              f"server {max((r['max_abs_diff'] for r in srv), default=0):.2g}")
    if lib:
        worst = max(lib, key=lambda r: max(r["loopml_overhead"], r["version_overhead"]))
        w = max(worst["loopml_overhead"], worst["version_overhead"])
        met["library"] = w <= LIB_GOAL
        print(f"goal: loopml at most {LIB_GOAL:.0%} over Captum: {'PASS' if met['library'] else 'MISS'} "
              f"(the largest: {w:+.1%}, {SHORT[worst['method']]} {worst['model']} batch {worst['batch']})")
    if srv:
        print()
        print(f"{'method':12s} {'model':7s} {'batch':>5s} {'Captum ms':>10s} {'server ms':>10s} {'over Captum':>12s} "
              f"{'inside ms':>10s} {'HTTP+JSON':>10s}")
        for r in srv:
            print(f"{SHORT[r['method']]:12s} {r['model']:7s} {r['batch']:5d} {r['captum_ms']:10.3f} {r['server_ms']:10.3f} "
                  f"{r['overhead_ms']:+9.3f} ms {r['inside_ms']:10.3f} {r['http_ms']:+7.3f} ms")
        worst = max(srv, key=lambda r: r["overhead_ms"])
        met["server"] = worst["overhead_ms"] <= SERVER_GOAL_MS
        print(f"goal: the server at most {SERVER_GOAL_MS:g} ms over Captum's time: {'PASS' if met['server'] else 'MISS'} "
              f"(the largest: {worst['overhead_ms']:+.3f} ms, {SHORT[worst['method']]} {worst['model']} batch {worst['batch']})")
    return met


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 methods, few rounds, half a second each")
    p.add_argument("--seconds", type=float, default=None, help="seconds of rounds per configuration (default 4)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    p.add_argument("--no-server", action="store_true", help="the library only")
    p.add_argument("--no-library", action="store_true", help="the server only")
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args()
    a.methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    unknown = sorted(set(a.methods) - set(METHODS))
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    if a.quick:
        a.methods = [m for m in a.methods if m in ("saliency", "integrated_gradients")] or a.methods[:1]
    a.batches = BATCHES
    a.seconds = a.seconds if a.seconds is not None else (0.3 if a.quick else 4.0)
    a.min_rounds, a.max_rounds = (3, 20) if a.quick else (15, 2000)

    import torch

    torch.set_num_threads(1)
    load_start = _common.load_average()
    with tempfile.TemporaryDirectory(prefix="loopml-explain-bench-") as tmp:
        home = Path(tmp)
        os.environ["LOOPML_HOME"] = str(home)
        t0 = time.perf_counter()
        spec = models()
        register(spec)
        print(f"models trained and registered in {time.perf_counter() - t0:.1f} s: "
              + ", ".join(f"{n} held-out accuracy {m['accuracy']:.3f}" for n, m in spec.items()), flush=True)
        if not a.no_library:
            print("library (loopml.explain on the live module; Explainer.for_version on NAME@production):", flush=True)
        lib = [] if a.no_library else library(spec, a)
        srv: list[dict[str, Any]] = []
        if not a.no_server:
            print("server (POST /v1/models/NAME/explain on loopml serve):", flush=True)
            srv = server(spec, a, home)
        from loopml.tracking import api

        api.close_all()
    load = (load_start, _common.load_average())
    met = report(lib, srv, load)
    if a.json:
        Path(a.json).write_text(json.dumps({"library": lib, "server": srv, "goals_met": met, "load_average": list(load),
                                            "versions": _common.versions("torch", "captum"), "machine": _common.machine(),
                                            "quick": a.quick}, indent=2))


if __name__ == "__main__":
    main()
