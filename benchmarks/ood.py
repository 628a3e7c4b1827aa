"""Out-of-distribution gate: loopml's VAE and Mahalanobis detectors vs alibi-detect's, in one run.

    .venv/bin/python benchmarks/ood.py                 # everything (about 3 minutes)
    .venv/bin/python benchmarks/ood.py --quick         # fewer epochs: a smoke run
    .venv/bin/python benchmarks/ood.py --no-peers      # loopml only
    .venv/bin/python benchmarks/ood.py --json out.json

Data: scikit-learn's digits (1x8x8, 0..1) split by ``loopml.data.split(val=0.15, test=0.15, seed=0)``.
The digits CNN (``loopml.models.nets.DigitsCNN``) is trained on the training split with loopml's Trainer;
the detectors are fitted on the training split and calibrated on the validation split for a 1%
false-abstain target (``OODGate.calibrate``). In-distribution rows are the test split; the shifts:

- ``noise``: Gaussian-noise images, each pixel N(mean, std) of the training pixels, clipped to 0..1;
- ``rot90``: the test digits rotated by 90 degrees;
- ``invert``: the test digits inverted (1 - x);
- ``held-out``: a second classifier and set of detectors trained on digits 0-7 only (train/val rows of
  0-7); in-distribution = test rows of 0-7, out-of-distribution = test rows of 8 and 9.

Reported per detector: AUROC per shift (scikit-learn's ``roc_auc_score``, OOD = positive), the
false-abstain rate on the in-distribution test split at the calibrated threshold, fit time and the
scoring cost per row at batch 1 and 64 (one thread, median).

Peers, run in a separate virtualenv (``.venv-alibi``: alibi-detect[tensorflow], no torch) as a
subprocess that reads the same arrays from a ``.npz``: alibi-detect's ``OutlierVAE`` (an MLP
encoder/decoder of the same widths as loopml's, its ``elbo`` loss, ``score_type="mse"``) on the pixels,
and alibi-detect's ``Mahalanobis`` (its defaults: online, 3 principal components) on the same CNN
penultimate features that loopml's detector uses; their thresholds by ``infer_threshold(val, 99)``.

Goals (from the issue): AUROC >= 0.95 on every shift except held-out classes (reported), false abstain
<= 1.5% on the in-distribution test split. Nothing here asserts: it is a program that reports.
"""

from __future__ import annotations

import os

# Before torch / TensorFlow load: one thread (two shared cores; docs/benchmarks.md, "Threads").
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import _common  # benchmarks/_common.py: these run as `python benchmarks/<name>.py`
import numpy as np

SEED = 0
SHIFTS = ("noise", "rot90", "invert", "held-out")
ROOT = Path(__file__).resolve().parent.parent
PEER_VENV = ROOT / ".venv-alibi"


@dataclass(frozen=True)
class Sizes:
    cnn_epochs: int = 20
    vae_epochs: int = 40
    peer_epochs: int = 40
    repeats: int = 300
    resplits: int = 200


QUICK = Sizes(cnn_epochs=5, vae_epochs=8, peer_epochs=5, repeats=30, resplits=20)


@dataclass
class Row:
    detector: str
    who: str  # "loopml" or the peer's name
    auroc: dict[str, float] = field(default_factory=dict)
    false_abstain: float | None = None  # on the in-distribution test split (all ten classes)
    false_abstain_heldout: float | None = None  # on test rows of 0-7, detectors fitted on 0-7
    fit_s: float | None = None
    us_b1: float | None = None  # scoring cost per row
    us_b64: float | None = None
    note: str = ""
    error: str = ""


# -- data ------------------------------------------------------------------------


def load_sets(sizes: Sizes) -> dict[str, Any]:
    """The split, the shifted test sets, and the held-out-classes setting."""
    from loopml import data

    parts = data.split(data.load("digits"), val=0.15, test=0.15, seed=SEED)
    xtr, ytr = parts.train.x.numpy(), parts.train.y.numpy()
    xva, yva = parts.val.x.numpy(), parts.val.y.numpy()
    xte, yte = parts.test.x.numpy(), parts.test.y.numpy()
    rng = np.random.default_rng(SEED)
    noise = np.clip(rng.normal(xtr.mean(), xtr.std(), size=xte.shape), 0, 1).astype(np.float32)
    known = lambda y: y <= 7  # noqa: E731
    return {
        "train": (xtr, ytr), "val": (xva, yva), "test": (xte, yte),
        "shifts": {
            "noise": noise,
            "rot90": np.ascontiguousarray(np.rot90(xte, 1, axes=(2, 3))),
            "invert": np.ascontiguousarray(1 - xte),
        },
        "heldout": {
            "train": (xtr[known(ytr)], ytr[known(ytr)]), "val": (xva[known(yva)], yva[known(yva)]),
            "test": xte[known(yte)], "ood": xte[~known(yte)],
        },
    }


def train_cnn(x: np.ndarray, y: np.ndarray, classes: int, epochs: int) -> Any:
    import torch

    from loopml.models.nets import DigitsCNN
    from loopml.train import Trainer

    torch.manual_seed(SEED)
    model = DigitsCNN(channels=16, classes=classes)
    trainer = Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3), seed=SEED, track=False)
    trainer.fit((torch.from_numpy(x), torch.from_numpy(y)), epochs=epochs, batch_size=64)
    return model.eval()


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    scores = np.nan_to_num(np.r_[inside, outside], posinf=np.finfo(np.float64).max)
    return float(roc_auc_score(labels, scores))


def per_row_us(score: Callable[[np.ndarray], Any], x: np.ndarray, batch: int, repeats: int, *, warmup: int = 10) -> float:
    """Median seconds per call at ``batch`` rows, in microseconds per row (numpy only: the peer subprocess uses it too)."""
    xb = np.ascontiguousarray(x[:batch])
    for _ in range(warmup):
        score(xb)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        score(xb)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) / batch * 1e6


# -- loopml ----------------------------------------------------------------------


def run_loopml(sets: dict[str, Any], sizes: Sizes, cnn: Any, cnn_heldout: Any) -> tuple[list[Row], dict[str, Any]]:
    from loopml.monitor.ood import MahalanobisDetector, OODGate, VAEDetector

    xtr, ytr = sets["train"]
    xva, _ = sets["val"]
    xte, _ = sets["test"]
    ho = sets["heldout"]
    vae_opts = {"epochs": sizes.vae_epochs}

    def detectors(model: Any, x: np.ndarray, y: np.ndarray) -> tuple[dict[str, Any], dict[str, float]]:
        made: dict[str, Any] = {}
        fit_s: dict[str, float] = {}
        for label, make in (
            ("VAE (reconstruction error)", lambda: VAEDetector(**vae_opts).fit(x)),
            ("Mahalanobis, class means + shared cov.", lambda: MahalanobisDetector(model, mode="class").fit(x, y)),
            ("Mahalanobis, single Gaussian", lambda: MahalanobisDetector(model, mode="single").fit(x, y)),
        ):
            t = time.perf_counter()
            made[label] = make()
            fit_s[label] = time.perf_counter() - t
        return made, fit_s

    full, fit_s = detectors(cnn, xtr, ytr)
    held, _ = detectors(cnn_heldout, *ho["train"])
    gate_parts = ("VAE (reconstruction error)", "Mahalanobis, class means + shared cov.")
    rows: list[Row] = []

    def evaluate(label: str, full_score: Any, held_score: Any, full_thr: float, held_thr: float, fit: float) -> Row:
        s_in = full_score(xte)
        row = Row(label, "loopml", fit_s=fit)
        for shift, x in sets["shifts"].items():
            row.auroc[shift] = auroc(s_in, full_score(x))
        h_in = held_score(ho["test"])
        row.auroc["held-out"] = auroc(h_in, held_score(ho["ood"]))
        row.false_abstain = float(np.mean(s_in > full_thr))
        row.false_abstain_heldout = float(np.mean(h_in > held_thr))
        row.us_b1 = per_row_us(full_score, xte, 1, sizes.repeats)
        row.us_b64 = per_row_us(full_score, xte, 64, max(sizes.repeats // 5, 10))
        return row

    for label, det in full.items():
        thr = det.calibrate(xva, 0.01)
        hthr = held[label].calibrate(ho["val"][0], 0.01)
        rows.append(evaluate(label, det.score, held[label].score, thr, hthr, fit_s[label]))
    # the gate: recalibrated jointly (the union of both detectors meets the target, not each one)
    gate = OODGate({"vae": full[gate_parts[0]], "mahalanobis": full[gate_parts[1]]}).calibrate(xva, 0.01)
    hgate = OODGate({"vae": held[gate_parts[0]], "mahalanobis": held[gate_parts[1]]}).calibrate(ho["val"][0], 0.01)
    row = evaluate("OODGate (VAE + Mahalanobis), served", gate.score, hgate.score, gate.threshold, hgate.threshold,
                   sum(fit_s[p] for p in gate_parts))
    row.note = f"val false abstain {gate.val_false_abstain:.2%}"
    rows.append(row)
    # the test split has 270 rows (217 in the held-out setting): one row is 0.4 points, and at a true 1% rate
    # a split shows 4 or more false abstentions of 217 about one time in five. Resample val + test to see the
    # spread of the false-abstain rate that calibration gives, in both settings.
    rng = np.random.default_rng(SEED)

    def resample(g: Any, val: np.ndarray, test: np.ndarray) -> dict[str, Any]:
        pooled = np.concatenate([val, test])
        half = len(pooled) // 2
        rates = []
        for _ in range(sizes.resplits):
            order = rng.permutation(len(pooled))
            g.calibrate(pooled[order[:half]], 0.01)
            rates.append(float(g.abstain(pooled[order[half:]]).mean()))
        g.calibrate(val, 0.01)
        return {"mean": float(np.mean(rates)), "p90": float(np.percentile(rates, 90)), "n": len(rates), "rows": half}

    resampled = resample(gate, xva, xte)
    resampled["heldout"] = resample(hgate, ho["val"][0], ho["test"])
    # which detector fires on each shift: the gate's reason text
    fired = {}
    for shift, x in sets["shifts"].items():
        reasons = [r.split(":")[0] for r in gate.explain(x) if not r.startswith("in distribution")]
        fired[shift] = {name: reasons.count(name) for name in ("vae", "mahalanobis")}
    return rows, {"fired": fired, "gate_thresholds": gate.thresholds, "resampled": resampled}


# -- peers (alibi-detect, in its own virtualenv) ----------------------------------------


def peer_inputs(sets: dict[str, Any], cnn: Any, cnn_heldout: Any, path: Path) -> None:
    """The arrays the peer reads: pixels (NHWC) and the CNN's penultimate features of every set."""
    from loopml.monitor.ood import MahalanobisDetector

    emb = MahalanobisDetector(cnn, mode="single").embed
    hemb = MahalanobisDetector(cnn_heldout, mode="single").embed
    ho = sets["heldout"]
    arrays: dict[str, np.ndarray] = {}

    def put(key: str, x: np.ndarray, embed: Callable[[np.ndarray], np.ndarray]) -> None:
        arrays[f"px_{key}"] = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        arrays[f"ft_{key}"] = embed(x).astype(np.float32)

    put("train", sets["train"][0], emb)
    put("val", sets["val"][0], emb)
    put("test", sets["test"][0], emb)
    for shift, x in sets["shifts"].items():
        put(shift, x, emb)
    put("ho_train", ho["train"][0], hemb)
    put("ho_val", ho["val"][0], hemb)
    put("ho_test", ho["test"], hemb)
    put("ho_ood", ho["ood"], hemb)
    np.savez(path, **arrays)


def peer_main(npz: str, out: str, epochs: int, repeats: int) -> int:
    """Runs inside .venv-alibi: fit alibi-detect's OutlierVAE and Mahalanobis, write every set's scores."""
    import copy

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import alibi_detect
    from alibi_detect.models.tensorflow.losses import elbo
    from alibi_detect.od import Mahalanobis, OutlierVAE

    a = dict(np.load(npz))
    result: dict[str, Any] = {"versions": {"alibi-detect": alibi_detect.__version__, "tensorflow": tf.__version__}}
    layers = tf.keras.layers
    sets = ["val", "test", "noise", "rot90", "invert"]

    def vae(prefix: str, names: list[str]) -> dict[str, Any]:
        tf.random.set_seed(SEED)
        np.random.seed(SEED)
        latent = 8
        enc = tf.keras.Sequential([layers.Input(shape=(8, 8, 1)), layers.Flatten(), layers.Dense(128, activation="relu"),
                                   layers.Dense(128, activation="relu")])
        dec = tf.keras.Sequential([layers.Input(shape=(latent,)), layers.Dense(128, activation="relu"),
                                   layers.Dense(128, activation="relu"), layers.Dense(64, activation="sigmoid"),
                                   layers.Reshape((8, 8, 1))])
        od = OutlierVAE(threshold=None, score_type="mse", encoder_net=enc, decoder_net=dec, latent_dim=latent, samples=10)
        t = time.perf_counter()
        od.fit(a[f"px_{prefix}train"], loss_fn=elbo, cov_elbo=dict(sim=.05), epochs=epochs, batch_size=64, verbose=False)
        fit_s = time.perf_counter() - t
        od.infer_threshold(a[f"px_{prefix}val"], threshold_perc=99)

        def score(x: np.ndarray) -> np.ndarray:
            return od.predict(x, return_feature_score=False)["data"]["instance_score"]

        out = {"fit_s": fit_s, "threshold": float(od.threshold),
               "scores": {n: score(a[f"px_{prefix}{n}"]).tolist() for n in names}}
        if not prefix:
            out["us_b1"] = per_row_us(score, a["px_test"], 1, repeats, warmup=3)
            out["us_b64"] = per_row_us(score, a["px_test"], 64, max(repeats // 5, 10), warmup=3)
        return out

    def maha(prefix: str, names: list[str]) -> dict[str, Any]:
        od = Mahalanobis(threshold=None)
        t = time.perf_counter()
        od.score(a[f"ft_{prefix}train"])  # online: scoring the training features is how it learns them
        fit_s = time.perf_counter() - t
        fitted = copy.deepcopy(od)
        calib = copy.deepcopy(fitted)
        calib.infer_threshold(a[f"ft_{prefix}val"], threshold_perc=99)
        # each set is scored by a fresh copy of the fitted detector: scoring updates its state
        out = {"fit_s": fit_s, "threshold": float(calib.threshold),
               "scores": {n: copy.deepcopy(fitted).score(a[f"ft_{prefix}{n}"]).tolist() for n in names}}
        return out

    result["vae"] = vae("", sets)
    result["vae_ho"] = vae("ho_", ["val", "test", "ood"])
    result["maha"] = maha("", sets)
    result["maha_ho"] = maha("ho_", ["val", "test", "ood"])
    Path(out).write_text(json.dumps(result))
    return 0




def run_peers(sets: dict[str, Any], cnn: Any, cnn_heldout: Any, sizes: Sizes, tmp: Path) -> tuple[list[Row], dict[str, str]]:
    python = PEER_VENV / "bin" / "python"
    label_vae, label_maha = "OutlierVAE (pixels)", "Mahalanobis (CNN features, defaults)"
    if not python.exists():
        msg = f"no {PEER_VENV}: python3 -m venv .venv-alibi && .venv-alibi/bin/pip install -c constraints.txt 'alibi-detect[tensorflow]'"
        return [Row(label_vae, "alibi-detect", error=msg), Row(label_maha, "alibi-detect", error=msg)], {}
    npz, out = tmp / "ood-peer.npz", tmp / "ood-peer.json"
    peer_inputs(sets, cnn, cnn_heldout, npz)
    proc = subprocess.run(
        [str(python), str(Path(__file__).resolve()), "--peer", str(npz), str(out),
         "--peer-epochs", str(sizes.peer_epochs), "--peer-repeats", str(max(sizes.repeats // 10, 10))],
        capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": ""},
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return [Row(label_vae, "alibi-detect", error=tail[0]), Row(label_maha, "alibi-detect", error=tail[0])], {}
    res = json.loads(out.read_text())
    rows = []
    for key, label in (("vae", label_vae), ("maha", label_maha)):
        full, held = res[key], res[f"{key}_ho"]
        s = {n: np.asarray(v, dtype=np.float64) for n, v in full["scores"].items()}
        h = {n: np.asarray(v, dtype=np.float64) for n, v in held["scores"].items()}
        row = Row(label, "alibi-detect", fit_s=full["fit_s"], us_b1=full.get("us_b1"), us_b64=full.get("us_b64"))
        for shift in ("noise", "rot90", "invert"):
            row.auroc[shift] = auroc(s["test"], s[shift])
        row.auroc["held-out"] = auroc(h["test"], h["ood"])
        row.false_abstain = float(np.mean(s["test"] > full["threshold"]))
        row.false_abstain_heldout = float(np.mean(h["test"] > held["threshold"]))
        row.note = "threshold: infer_threshold(val, 99)"
        rows.append(row)
    return rows, res["versions"]


# -- report ----------------------------------------------------------------------


def print_report(rows: list[Row], info: dict[str, Any], goals: list[tuple[str, str, bool | None]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 190)
    v = info["versions"]
    table = Table(
        title="Out-of-distribution detection on digits: AUROC per shift, false abstain at a 1% target, cost per row",
        caption=(f"loopml {v.get('loopml')}, torch {v.get('torch')}, scikit-learn {v.get('scikit-learn')}, "
                 f"alibi-detect {v.get('alibi-detect', '-')}, tensorflow {v.get('tensorflow', '-')}, Python {v['python']}; "
                 f"{info['machine']['cpus']} CPUs, 1 thread; {info['mode']} sizes; load {info['load_start']} at the start, "
                 f"{info['load_end']} at the end; {info['seconds']:.0f} s in all"),
    )
    for col, just in (("detector", "left"), ("by", "left"), *((s, "right") for s in SHIFTS),
                      ("false abstain (test)", "right"), ("(held-out, 0-7)", "right"), ("fit", "right"),
                      ("µs/row b1", "right"), ("µs/row b64", "right"), ("note", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in rows:
        if r.error:
            table.add_row(r.detector, r.who, "[bold red]error[/]", *[""] * 8, r.error)
            continue
        table.add_row(
            r.detector, r.who, *(f"{r.auroc[s]:.4f}" for s in SHIFTS),
            _pct(r.false_abstain), _pct(r.false_abstain_heldout), f"{r.fit_s:.1f} s" if r.fit_s is not None else "-",
            _num(r.us_b1), _num(r.us_b64), r.note,
        )
    console.print(table)
    gate = next((r for r in rows if r.detector.startswith("OODGate")), None)
    peer = next((r for r in rows if r.who == "alibi-detect" and r.detector.startswith("OutlierVAE") and not r.error), None)
    if gate and peer and gate.us_b64 and peer.us_b64 and gate.us_b1 and peer.us_b1:
        console.print(f"  scoring cost, alibi-detect OutlierVAE / loopml gate: {peer.us_b1 / gate.us_b1:.1f}x at batch 1, "
                      f"{peer.us_b64 / gate.us_b64:.1f}x at batch 64", highlight=False)
    gt = Table(title="Goals")
    for col in ("goal", "measured", "met"):
        gt.add_column(col)
    for goal, measured, met in goals:
        gt.add_row(goal, measured, {True: "[green]PASS[/]", False: "[bold red]MISS[/]", None: "reported"}[met])
    console.print(gt)
    for note in info["notes"]:
        console.print(f"  {note}", highlight=False)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2%}"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def goals_for(rows: list[Row], resampled: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    gate = next(r for r in rows if r.detector.startswith("OODGate"))
    out: list[tuple[str, str, bool | None]] = []
    for shift in ("noise", "rot90", "invert"):
        out.append((f"gate AUROC >= 0.95, {shift}", f"{gate.auroc[shift]:.4f}", gate.auroc[shift] >= 0.95))
    out.append(("gate AUROC, held-out classes 8-9 (report)", f"{gate.auroc['held-out']:.4f}", None))
    fa = gate.false_abstain or 0.0
    out.append(("gate false abstain <= 1.5% (test split, 1% target)", f"{fa:.2%}", fa <= 0.015))
    out.append(("gate false abstain <= 1.5% (mean over re-splits of val + test)", f"{resampled['mean']:.2%}",
                resampled["mean"] <= 0.015))
    hfa = gate.false_abstain_heldout or 0.0
    out.append(("gate false abstain <= 1.5% (held-out setting, test 0-7)", f"{hfa:.2%}", hfa <= 0.015))
    h = resampled["heldout"]
    out.append(("gate false abstain <= 1.5% (held-out setting, mean over re-splits)", f"{h['mean']:.2%}", h["mean"] <= 0.015))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats: a smoke run")
    parser.add_argument("--no-peers", action="store_true", help="leave out alibi-detect")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--peer", nargs=2, metavar=("NPZ", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--peer-epochs", type=int, default=Sizes.peer_epochs, help=argparse.SUPPRESS)
    parser.add_argument("--peer-repeats", type=int, default=30, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer:  # inside .venv-alibi: no torch, no loopml
        return peer_main(args.peer[0], args.peer[1], args.peer_epochs, args.peer_repeats)
    sizes = QUICK if args.quick else Sizes()
    started = time.perf_counter()
    info: dict[str, Any] = {
        "versions": _common.versions("loopml", "torch", "numpy", "scikit-learn"), "machine": _common.machine(),
        "mode": "quick" if args.quick else "full", "load_start": _common.load_average(), "notes": [],
    }
    with tempfile.TemporaryDirectory(prefix="loopml-bench-ood-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["LOOPML_HOME"] = str(tmp / "home")
        import torch

        torch.set_num_threads(1)
        sets = load_sets(sizes)
        print("training the digits CNN (all classes, then 0-7) ...", flush=True)
        cnn = train_cnn(*sets["train"], classes=10, epochs=sizes.cnn_epochs)
        cnn_ho = train_cnn(*sets["heldout"]["train"], classes=8, epochs=sizes.cnn_epochs)
        with torch.inference_mode():
            acc = float((cnn(torch.from_numpy(sets["test"][0])).argmax(1).numpy() == sets["test"][1]).mean())
        print("fitting loopml's detectors ...", flush=True)
        rows, extra = run_loopml(sets, sizes, cnn, cnn_ho)
        if not args.no_peers:
            print("alibi-detect (subprocess in .venv-alibi) ...", flush=True)
            peer_rows, peer_versions = run_peers(sets, cnn, cnn_ho, sizes, tmp)
            rows += peer_rows
            info["versions"].update(peer_versions)
    info["load_end"], info["seconds"] = _common.load_average(), time.perf_counter() - started
    n = {k: len(sets[k][0]) for k in ("train", "val", "test")}
    info["notes"] += [
        f"rows: train {n['train']}, val {n['val']}, test {n['test']} (held-out setting: train {len(sets['heldout']['train'][0])}, "
        f"val {len(sets['heldout']['val'][0])}, test 0-7 {len(sets['heldout']['test'])}, OOD 8-9 {len(sets['heldout']['ood'])}); "
        f"CNN test accuracy {acc:.2%}",
        "loopml thresholds: split-conformal (1 - 1%) quantile of the validation scores; the gate scales both detectors' "
        "thresholds by one factor so that the two together meet the target",
        "gate false abstain over {n} random halvings of val + test ({rows} rows to calibrate, the rest to measure): "
        "mean {mean:.2%}, 90th percentile {p90:.2%}".format(**extra["resampled"]),
        "the same in the held-out setting ({rows} rows to calibrate): mean {mean:.2%}, 90th percentile {p90:.2%}".format(
            **extra["resampled"]["heldout"]),
        "which gate detector fired, per shift (rows above the threshold): "
        + "; ".join(f"{s}: vae {c['vae']}, mahalanobis {c['mahalanobis']}" for s, c in extra["fired"].items()),
    ]
    goals = goals_for(rows, extra["resampled"])
    print_report(rows, info, goals)
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "rows": [asdict(r) for r in rows], "goals": goals}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
