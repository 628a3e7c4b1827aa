"""Quantization: fp32 vs loopml's dynamic, static, TQT and PTQ variants vs ONNX Runtime's and torchao's own, in one run.

    .venv/bin/python benchmarks/quantization.py              # everything (about 2.5 minutes, torch.compile included)
    .venv/bin/python benchmarks/quantization.py --quick      # fewer epochs, no torch.compile: a smoke run
    .venv/bin/python benchmarks/quantization.py --only cnn --json out.json --keep   # keep the files (temp folder)

Three models, each trained here with loopml's Trainer:

- ``cnn``: the digits CNN of examples/digits_demo.py on scikit-learn's digits (1x8x8 images, 10 classes);
- ``tabular``: an MLP (standardisation inside the model, 30 -> 64 -> 64 -> 2) on breast_cancer;
- ``big``: a generated MLP 512 -> 1024 -> 1024 -> 10 on a generated teacher-labelled set (for latency).

Per model, every variant is a file the generic runtime loads (``loopml.models.runtime``),
except the in-process peers (torch eager, torch.ao FX, torchao), and each gets test accuracy,
file size and median CPU latency at batch 1 and 64 (``loopml.models.measure``, one thread):

- ``fp32 ONNX``: the baseline, ``export_onnx`` run by ONNX Runtime; ``fp32 eager``: the model in PyTorch;
- ``dynamic int8``, ``static int8``, ``TQT int8/int4``, ``PTQ int8/int4``: ``loopml.models.quantization``;
- peers: ``ORT quantize_static`` with its defaults (no pre-processing), ``torch.ao FX PTQ`` (x86 backend,
  deprecated), ``torchao int8`` (Int8DynamicActivationInt8WeightConfig, then torch.compile);
- ``ExecuTorch fp32``: the ``.pte`` (XNNPACK) at batch 1, beside eager PyTorch.

Goals (from the issue): static int8 within 0.5 points of fp32, file >= 3.5x smaller, batch-64 latency
>= 2x faster than fp32 (ONNX Runtime fp32, the same runtime); TQT int4 within 2 points of fp32 and
ahead of plain PTQ int4. Nothing here asserts: it is a program that reports, not a test.
"""

from __future__ import annotations

import os

# Before torch loads: one OpenMP thread (two shared cores; docs/benchmarks.md, "Threads").
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import contextlib
import io
import json
import logging
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _common  # benchmarks/_common.py: these run as `python benchmarks/<name>.py`
import numpy as np

SEED = 0
BATCH_SIZE = 64


@dataclass(frozen=True)
class Sizes:
    cnn_epochs: int = 20
    tabular_epochs: int = 60
    big_epochs: int = 4
    big_rows: int = 12_000
    tqt_epochs: int = 3
    calibration: int = 512
    repeats: int = 200


QUICK = Sizes(cnn_epochs=4, tabular_epochs=10, big_epochs=1, big_rows=3_000, tqt_epochs=1, repeats=30)


@dataclass
class Workload:
    key: str
    title: str
    model: Any
    train: Any
    val: Any
    test: Any


@dataclass
class Row:
    workload: str
    variant: str
    kind: str  # "file: onnx", "in-process", ...
    accuracy: float | None = None
    size: int | None = None
    b1_ms: float | None = None
    b64_ms: float | None = None
    seconds: float | None = None  # time to produce the variant
    note: str = ""
    error: str = ""


@dataclass
class Goal:
    workload: str
    goal: str
    measured: str
    met: bool | None


@dataclass
class Info:
    versions: dict[str, str]
    machine: dict[str, Any]
    commit: str
    mode: str
    load_start: float
    load_end: float = -1.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


# -- workloads -----------------------------------------------------------------


def _fit(model: Any, parts: Any, *, epochs: int, lr: float) -> Any:
    import torch

    from loopml.train import EarlyStopping, Trainer

    trainer = Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=lr), metrics=["accuracy"],
                      callbacks=[EarlyStopping(monitor="val_loss", patience=4)], seed=SEED,
                      experiment="bench-quantization")
    trainer.fit(parts.train, val=parts.val, epochs=epochs, batch_size=BATCH_SIZE)
    return model.eval()


def digits_cnn(sizes: Sizes) -> Workload:
    import torch

    from loopml import data

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    from digits_demo import DigitsCNN

    parts = data.split(data.load("digits"), val=0.15, test=0.15, seed=SEED)
    torch.manual_seed(SEED)
    model = _fit(DigitsCNN(), parts, epochs=sizes.cnn_epochs, lr=3e-3)
    return Workload("cnn", "digits CNN (2 conv + 2 linear, 38k params), 1x8x8", model, *parts)


def tabular_mlp(sizes: Sizes) -> Workload:
    import torch
    from torch import nn

    from loopml import data

    class Standardize(nn.Module):
        def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
            super().__init__()
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x - self.mean) / self.std

    parts = data.split(data.load("breast_cancer"), val=0.15, test=0.3, seed=SEED)
    x = parts.train.x
    torch.manual_seed(SEED)
    model = nn.Sequential(Standardize(x.mean(0), x.std(0) + 1e-6), nn.Linear(30, 64), nn.ReLU(),
                          nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    model = _fit(model, parts, epochs=sizes.tabular_epochs, lr=1e-3)
    return Workload("tabular", "MLP 30-64-64-2 on breast_cancer (569 rows)", model, *parts)


def big_mlp(sizes: Sizes) -> Workload:
    import torch
    from torch import nn

    from loopml import data

    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(sizes.big_rows, 512, generator=g)
    teacher = torch.randn(512, 10, generator=g) / 512**0.5  # a linear teacher with a little label noise
    y = (3 * x @ teacher + 0.5 * torch.randn(sizes.big_rows, 10, generator=g)).argmax(1)
    parts = data.split(data.from_arrays(x, y, name="generated-512"), val=0.1, test=0.1, seed=SEED)
    torch.manual_seed(SEED)
    model = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    model = _fit(model, parts, epochs=sizes.big_epochs, lr=1e-3)
    return Workload("big", "generated MLP 512-1024-1024-10 (1.6M params)", model, *parts)


WORKLOADS: dict[str, Callable[[Sizes], Workload]] = {"cnn": digits_cnn, "tabular": tabular_mlp, "big": big_mlp}


# -- variants ------------------------------------------------------------------


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The exporters and quantizers print progress and warnings; keep the table readable."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def torch_predict(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return predict


def measure_row(row: Row, predict: Callable[[np.ndarray], Any], w: Workload, sizes: Sizes, *,
                accuracy_predict: Callable[[np.ndarray], Any] | None = None) -> Row:
    from loopml.models import measure

    row.accuracy = measure.accuracy(accuracy_predict or predict, w.test.x, w.test.y)
    lat = measure.latency(predict, w.test.x, batch_sizes=(1, 64), repeats=sizes.repeats, warmup=10,
                          max_seconds=5.0)
    row.b1_ms, row.b64_ms = lat[1], lat[64]
    return row


def loopml_variant(w: Workload, sizes: Sizes, out: Path, method: str, bits: int, label: str,
                   init: str | None = None) -> Row:
    from loopml.models import measure
    from loopml.models.quantization import quantize

    started = time.perf_counter()
    with quiet():
        q = quantize(w.model, method=method, bits=bits, example=w.train.x[:8],
                     calibration=w.train.x[:sizes.calibration], train=w.train, val=w.val, epochs=sizes.tqt_epochs,
                     lr=1e-4, out_dir=out / f"{w.key}-{method}{bits}{init or ''}", seed=SEED, init=init,
                     experiment="bench-quantization")
    row = Row(w.key, label, "file: onnx", size=measure.file_size(q.files["onnx"]),
              seconds=time.perf_counter() - started)
    if method == "tqt":
        row.note = (f"{q.details['thresholds_changed']} pow-2 thresholds changed, mean |d log2 t| "
                    f"{q.details['log2_t_mean_abs_change']:.2f}; run {str(q.details['run_id'])[:8]}")
    return measure_row(row, q.predictor(), w, sizes)


def fp32_rows(w: Workload, sizes: Sizes, out: Path) -> list[Row]:
    from loopml.models import measure
    from loopml.models.exporting import export_onnx
    from loopml.models.runtime import load_predictor

    started = time.perf_counter()
    with quiet():
        path = export_onnx(w.model, w.train.x[:8], out / f"{w.key}-fp32.onnx")
    onnx_row = Row(w.key, "fp32 ONNX (baseline)", "file: onnx", size=measure.file_size(path),
                   seconds=time.perf_counter() - started)
    rows = [measure_row(onnx_row, load_predictor("onnx", path), w, sizes)]
    buf = io.BytesIO()
    import torch

    torch.save(w.model.state_dict(), buf)
    rows.append(measure_row(Row(w.key, "fp32 eager PyTorch", "in-process", size=len(buf.getvalue()),
                                note="size: state_dict"), torch_predict(w.model), w, sizes))
    return rows


def ort_defaults_peer(w: Workload, sizes: Sizes, out: Path) -> Row:
    """ONNX Runtime's quantize_static as its docs' first example calls it: defaults, no pre-processing."""
    import onnxruntime.quantization as ortq

    from loopml.models import measure
    from loopml.models.quantization import _Reader
    from loopml.models.runtime import load_predictor

    started = time.perf_counter()
    target = out / f"{w.key}-ort-static-defaults.onnx"
    with quiet():
        ortq.quantize_static(str(out / f"{w.key}-fp32.onnx"), str(target),
                             _Reader("x", w.train.x[:sizes.calibration].numpy()))
    row = Row(w.key, "peer: ORT quantize_static, defaults", "file: onnx", size=measure.file_size(target),
              seconds=time.perf_counter() - started, note="QDQ, s8s8 per-tensor, min/max")
    return measure_row(row, load_predictor("onnx", target), w, sizes)


def fx_peer(w: Workload, sizes: Sizes) -> Row:
    """PyTorch's own static int8 (torch.ao FX, x86 backend): in-process, needs the model's code."""
    import copy

    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    started = time.perf_counter()
    with quiet():
        prepared = prepare_fx(copy.deepcopy(w.model).eval(), get_default_qconfig_mapping("x86"),
                              (w.train.x[:8],))
        with torch.no_grad():
            prepared(w.train.x[:sizes.calibration])
        model = convert_fx(prepared)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    row = Row(w.key, "peer: torch.ao FX PTQ (x86)", "in-process", size=len(buf.getvalue()),
              seconds=time.perf_counter() - started, note="deprecated API; size: state_dict")
    return measure_row(row, torch_predict(model), w, sizes)


def torchao_peer(w: Workload, sizes: Sizes) -> Row:
    """torchao's int8 dynamic-activation int8-weight on Linear layers, then torch.compile (docs/quantization.md: int8 is faster only compiled)."""
    import copy

    import torch
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    started = time.perf_counter()
    model = copy.deepcopy(w.model).eval()
    with quiet():
        quantize_(model, Int8DynamicActivationInt8WeightConfig())
        compiled = torch.compile(model, dynamic=False)
        for b in (1, 64):  # compile both shapes before timing
            torch_predict(compiled)(np.ascontiguousarray(np.resize(w.test.x.numpy(), (b, *w.test.x.shape[1:]))))
    row = Row(w.key, "peer: torchao int8 + torch.compile", "in-process", seconds=time.perf_counter() - started,
              note="Linear layers only; accuracy from the uncompiled model")
    with quiet():
        return measure_row(row, torch_predict(compiled), w, sizes, accuracy_predict=torch_predict(model))


def executorch_row(w: Workload, sizes: Sizes, out: Path) -> Row:
    from loopml.models import measure
    from loopml.models.exporting import export_executorch
    from loopml.models.runtime import load_predictor

    started = time.perf_counter()
    with quiet():
        path = export_executorch(w.model, w.train.x[:8], out / f"{w.key}-fp32.pte")
    predict = load_predictor("pte", path)
    row = Row(w.key, "ExecuTorch fp32 (XNNPACK)", "file: pte", size=measure.file_size(path),
              seconds=time.perf_counter() - started, note="batch 1 is the point; batch 64 runs as the file allows")
    row.accuracy = measure.accuracy(predict, w.test.x, w.test.y)
    lat = measure.latency(predict, w.test.x, batch_sizes=(1,), repeats=sizes.repeats, warmup=10, max_seconds=5.0)
    row.b1_ms = lat[1]
    return row


def guarded(rows: list[Row], w: Workload, label: str, fn: Callable[[], Row | list[Row]]) -> None:
    print(f"   {w.key}: {label} ...", end="", flush=True)
    started = time.perf_counter()
    try:
        got = fn()
    except Exception as exc:  # noqa: BLE001 - a failing peer is reported in the table, the others still run
        rows.append(Row(w.key, label, "-", error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))
        print(" error", flush=True)
        return
    rows.extend(got if isinstance(got, list) else [got])
    print(f" {time.perf_counter() - started:.1f}s", flush=True)


def run_workload(w: Workload, sizes: Sizes, out: Path, *, compile_peer: bool) -> list[Row]:
    rows: list[Row] = []
    guarded(rows, w, "fp32", lambda: fp32_rows(w, sizes, out))
    for method, bits, label, init in (
            ("dynamic", 8, "loopml dynamic int8", None), ("static", 8, "loopml static int8", None),
            ("tqt", 8, "loopml TQT int8", None), ("ptq", 8, "loopml PTQ int8 (min/max, pow-2)", None),
            ("tqt", 4, "loopml TQT int4", None), ("ptq", 4, "loopml PTQ int4 (min/max, pow-2)", None),
            ("ptq", 4, "ablation: PTQ int4, TQT's MSE init, no training", "mse")):
        guarded(rows, w, label, lambda m=method, b=bits, lab=label, i=init: loopml_variant(w, sizes, out, m, b, lab, i))
    guarded(rows, w, "peer: ORT quantize_static, defaults", lambda: ort_defaults_peer(w, sizes, out))
    guarded(rows, w, "peer: torch.ao FX PTQ (x86)", lambda: fx_peer(w, sizes))
    if compile_peer:
        guarded(rows, w, "peer: torchao int8 + torch.compile", lambda: torchao_peer(w, sizes))
    guarded(rows, w, "ExecuTorch fp32 (XNNPACK)", lambda: executorch_row(w, sizes, out))
    return rows


# -- goals and the table -------------------------------------------------------


def goals_for(key: str, rows: list[Row]) -> list[Goal]:
    by = {r.variant: r for r in rows if r.workload == key and not r.error}
    base, static = by.get("fp32 ONNX (baseline)"), by.get("loopml static int8")
    tqt4, ptq4 = by.get("loopml TQT int4"), by.get("loopml PTQ int4 (min/max, pow-2)")
    out: list[Goal] = []
    if base and static and base.accuracy is not None and static.accuracy is not None:
        d = (static.accuracy - base.accuracy) * 100
        out.append(Goal(key, "static int8 accuracy within 0.5 points", f"{d:+.2f} points", d >= -0.5))
        if base.size and static.size:
            r = base.size / static.size
            out.append(Goal(key, "static int8 file >= 3.5x smaller", f"{r:.2f}x", r >= 3.5))
        if base.b64_ms and static.b64_ms:
            r = base.b64_ms / static.b64_ms
            out.append(Goal(key, "static int8 batch-64 >= 2x faster", f"{r:.2f}x", r >= 2.0))
    if base and tqt4 and base.accuracy is not None and tqt4.accuracy is not None:
        d = (tqt4.accuracy - base.accuracy) * 100
        out.append(Goal(key, "TQT int4 within 2 points of fp32", f"{d:+.2f} points", d >= -2.0))
        if ptq4 and ptq4.accuracy is not None:
            out.append(Goal(key, "TQT int4 ahead of PTQ int4", f"{tqt4.accuracy:.2%} vs {ptq4.accuracy:.2%}",
                            tqt4.accuracy > ptq4.accuracy))
    return out


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f} us" if v < 1 else f"{v:.2f} ms"


def fmt_size(v: int | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1024:.1f} KiB" if v < 1 << 20 else f"{v / (1 << 20):.2f} MiB"


def fmt_x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def print_tables(rows: list[Row], goals: list[Goal], info: Info) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 170)
    v, m = info.versions, info.machine
    table = Table(
        title="Quantization: accuracy, size and CPU latency per variant (same machine, same run)",
        caption=(f"loopml {v['loopml']} ({info.commit}), torch {v['torch']}, onnxruntime {v['onnxruntime']}, "
                 f"onnx {v['onnx']}, torchao {v['torchao']}, executorch {v['executorch']}, Python {v['python']}; "
                 f"{m['cpus']} CPUs, 1 thread; {info.mode} sizes; load average {info.load_start} at the start, "
                 f"{info.load_end} at the end; {info.seconds:.0f} s in all"),
    )
    for col, just in (("model", "left"), ("variant", "left"), ("kind", "left"), ("test acc", "right"),
                      ("vs fp32", "right"), ("size", "right"), ("smaller", "right"), ("batch 1", "right"),
                      ("batch 64", "right"), ("b64 faster", "right"), ("note", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    last = None
    for r in rows:
        if last is not None and r.workload != last:
            table.add_section()
        last = r.workload
        base = next((b for b in rows if b.workload == r.workload and b.variant == "fp32 ONNX (baseline)"), None)
        if r.error:
            table.add_row(r.workload, r.variant, r.kind, "[bold red]error[/]", "", "", "", "", "", "", r.error)
            continue
        delta = "-" if base is None or base.accuracy is None or r.accuracy is None else \
            f"{(r.accuracy - base.accuracy) * 100:+.2f}"
        table.add_row(r.workload, r.variant, r.kind, "-" if r.accuracy is None else f"{r.accuracy:.2%}", delta,
                      fmt_size(r.size), fmt_x(ratio(base.size if base else None, r.size)), fmt_ms(r.b1_ms),
                      fmt_ms(r.b64_ms), fmt_x(ratio(base.b64_ms if base else None, r.b64_ms)), r.note)
    console.print(table)
    gt = Table(title="Goals")
    for col in ("model", "goal", "measured", "met"):
        gt.add_column(col)
    for g in goals:
        met = {True: "[green]PASS[/]", False: "[bold red]MISS[/]", None: "-"}[g.met]
        gt.add_row(g.workload, g.goal, g.measured, met)
    console.print(gt)
    eager_vs_pte = []
    for key in dict.fromkeys(r.workload for r in rows):
        eager = next((r for r in rows if r.workload == key and r.variant == "fp32 eager PyTorch"), None)
        pte = next((r for r in rows if r.workload == key and r.variant.startswith("ExecuTorch") and not r.error),
                   None)
        if eager and pte and eager.b1_ms and pte.b1_ms:
            eager_vs_pte.append(f"{key}: ExecuTorch {fmt_ms(pte.b1_ms)} vs eager {fmt_ms(eager.b1_ms)} "
                                f"({eager.b1_ms / pte.b1_ms:.2f}x)")
    if eager_vs_pte:
        console.print("  batch-1 latency, ExecuTorch .pte vs eager PyTorch: " + "; ".join(eager_vs_pte),
                      highlight=False)
    for note in info.notes:
        console.print(f"  {note}", highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats, no torch.compile")
    parser.add_argument("--only", choices=tuple(WORKLOADS), action="append", help="run some models (repeatable)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torchao + torch.compile peer")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--keep", action="store_true", help="keep the model files (printed folder) after the run")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    json_path = Path(args.json).resolve() if args.json else None
    started = time.perf_counter()
    info = Info(versions=_common.versions("loopml", "torch", "onnx", "onnxruntime", "torchao", "executorch",
                                          "numpy", "scikit-learn"),
                machine=_common.machine(), commit=_common.commit("src/loopml/models"), mode="quick" if args.quick else "full",
                load_start=_common.load_average())
    tmp = Path(tempfile.mkdtemp(prefix="loopml-bench-quantization-"))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / "inductor-cache")  # a cold compile, as on a first run
    os.environ["LOOPML_HOME"] = str(tmp / "loopml-home")
    os.environ.pop("LOOPML_TRACKING_URI", None)
    for name in ("torch._dynamo", "torch._inductor", "torch.onnx", "torch.export", "onnxruntime", "root"):
        logging.getLogger(name if name != "root" else None).setLevel(logging.ERROR)
    import torch

    import loopml

    torch.set_num_threads(1)
    loopml.set_tracking_uri(f"sqlite:///{tmp / 'loopml.db'}")
    rows: list[Row] = []
    for key in args.only or list(WORKLOADS):
        print(f"{key}: training the fp32 model ...", flush=True)
        with quiet():
            w = WORKLOADS[key](sizes)
        print(f"{key}: {w.title}; train {len(w.train)}, test {len(w.test)} rows", flush=True)
        rows.extend(run_workload(w, sizes, tmp / "models", compile_peer=not (args.quick or args.no_compile)))
    goals = [g for key in dict.fromkeys(r.workload for r in rows) for g in goals_for(key, rows)]
    info.load_end, info.seconds = _common.load_average(), time.perf_counter() - started
    info.notes.append("size ratio and batch-64 speed-up are against fp32 ONNX run by ONNX Runtime (same runtime); "
                      f"TQT fine-tunes {sizes.tqt_epochs} epochs (Adam: weights 1e-4, thresholds 1e-2); "
                      f"calibration: {sizes.calibration} training rows"
                      + (f"; files kept in {tmp}" if args.keep else ""))
    print_tables(rows, goals, info)
    if json_path is not None:
        json_path.write_text(json.dumps({"info": asdict(info), "rows": [asdict(r) for r in rows],
                                         "goals": [asdict(g) for g in goals]}, indent=2))
    if not args.keep:
        from loopml.tracking import api

        api.close_all()
        loopml.set_tracking_uri(None)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
