"""Training: a hand-written PyTorch loop, loopml (eager, tracked, compiled) and Lightning, in one run.

    .venv/bin/python benchmarks/training.py            # everything (about 3.5 minutes, torch.compile included)
    .venv/bin/python benchmarks/training.py --quick    # fewer epochs, a smaller MLP set: a smoke run (about 1 minute)
    .venv/bin/python benchmarks/training.py --only mlp --no-compile --json out.json

The comparison of execution modes that a Keras/eager/graph timing table on
MNIST makes (Keras 2 s, eager 10 s, graph 1.4 s per epoch there), re-done on
this machine: the same model on the same data, one epoch per measurement,

- ``hand loop``: a plain PyTorch loop (DataLoader, forward, loss, zero_grad, backward, step, ``loss.item()``);
- ``loopml eager``: ``Trainer(model, track=False).fit((x, y), epochs=1)``, no callbacks (no progress bar);
- ``loopml eager, tracking on``: the same with ``track=True`` (the default), to a SQLite store in a temp folder:
  each one-epoch fit opens, and finishes, a run of its own;
- ``loopml eager, tracking into an open run``: ``Tracking(run=run)`` into one run opened before the first
  epoch, as in a fit of many epochs: what tracking costs per epoch;
- ``loopml compiled``: ``Trainer(mode="compile")``; its first epoch (compilation) is shown apart;
- ``Lightning``: ``lightning.Trainer(max_epochs=1, accelerator="cpu")`` with logger, checkpointing,
  progress bar and model summary off.

Every contender gets a copy of one model (same initial weights), the same
tensors, batch size 64, Adam(lr=1e-3), shuffling seeded with 0, and one
intra-op thread. Each runs one untimed warm-up epoch; then the contenders take
turns, one epoch each, in a rotating order, and each figure is the median of
its epochs. Nothing here asserts: it is a program that reports, not a test.

Goals (from the issue):

- loopml eager within 5% of the hand loop (epoch time ratio <= 1.05);
- tracking on within 3% of tracking off (ratio <= 1.03);
- Lightning's overhead and the compiled speed-up: reported (no goal).
"""

from __future__ import annotations

import os

# Before torch loads: one OpenMP thread (two shared cores; docs/benchmarks.md, "Threads").
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import copy
import gc
import json
import logging
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import _common  # benchmarks/_common.py: these run as `python benchmarks/<name>.py`

BATCH_SIZE = 64
LR = 1e-3
SEED = 0


# -- sizes -------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    digits_epochs: int = 21  # timed epochs per contender (a digits epoch is short: more of them)
    mlp_epochs: int = 11
    mlp_rows: int = 50_000
    mlp_features: int = 64


QUICK = Sizes(digits_epochs=3, mlp_epochs=2, mlp_rows=10_000)


# -- workloads ---------------------------------------------------------------


@dataclass
class Workload:
    key: str
    title: str
    x: Any
    y: Any
    make_model: Callable[[], Any]
    epochs: int


def digits_cnn(sizes: Sizes) -> Workload:
    """scikit-learn's digits (1,797 images of 8x8) and the Keras MNIST example's CNN, scaled to 8x8."""
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.tensor(d.target, dtype=torch.int64)

    def make() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * 4 * 4, 128), nn.ReLU(),
            nn.Linear(128, 10),
        )  # fmt: skip

    return Workload("digits", f"CNN on digits ({len(x):,} x 1x8x8)", x, y, make, sizes.digits_epochs)


def generated_mlp(sizes: Sizes) -> Workload:
    """A generated set (Gaussian inputs, labels from a random linear teacher) and a 3-layer MLP."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(sizes.mlp_rows, sizes.mlp_features, generator=g)
    teacher = torch.randn(sizes.mlp_features, 10, generator=g)
    y = (x @ teacher + 0.5 * torch.randn(sizes.mlp_rows, 10, generator=g)).argmax(dim=1)

    def make() -> nn.Module:
        f = sizes.mlp_features
        return nn.Sequential(nn.Linear(f, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))

    title = f"MLP on a generated set ({sizes.mlp_rows:,} x {sizes.mlp_features})"
    return Workload("mlp", title, x, y, make, sizes.mlp_epochs)


# -- contenders: each is a callable that trains one epoch ----------------------


def base_model(w: Workload) -> Any:
    import torch

    torch.manual_seed(SEED)
    return w.make_model()


def hand_loop(w: Workload, model: Any) -> Callable[[], None]:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)

    def epoch() -> None:
        loader = DataLoader(TensorDataset(w.x, w.y), batch_size=BATCH_SIZE, shuffle=True, generator=gen)
        model.train()
        total, seen = 0.0, 0
        for xb, yb in loader:
            out = model(xb)
            loss = loss_fn(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, seen = total + loss.item() * len(yb), seen + len(yb)

    return epoch


def loopml_trainer(w: Workload, model: Any, *, mode: str = "eager", track: bool = False) -> Callable[[], None]:
    import torch

    from loopml.train import Trainer

    trainer = Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=LR), mode=mode, track=track,
                      seed=SEED, experiment="bench-training")  # fmt: skip

    def epoch() -> None:
        trainer.fit((w.x, w.y), epochs=1, batch_size=BATCH_SIZE)

    return epoch


OPEN_RUNS: list[Any] = []  # runs opened by the benchmark itself, finished before the temp folder goes


def loopml_tracked_open_run(w: Workload, model: Any) -> Callable[[], None]:
    """Tracking into one run opened before the first epoch, as a multi-epoch fit does: the per-epoch cost."""
    import torch

    import loopml
    from loopml.train import Tracking, Trainer

    # Opened from another thread: start_run makes a run its thread's active run, and the other
    # tracked contender (track=True) would then log into this one instead of opening its own.
    opener = threading.Thread(target=lambda: OPEN_RUNS.append(loopml.start_run("bench-training")))
    opener.start()
    opener.join()
    run = OPEN_RUNS[-1]
    trainer = Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=LR), seed=SEED,
                      callbacks=[Tracking(run=run)])  # fmt: skip

    def epoch() -> None:
        trainer.fit((w.x, w.y), epochs=1, batch_size=BATCH_SIZE)

    return epoch


def lightning_trainer(w: Workload, model: Any) -> Callable[[], None]:
    import lightning as L
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.loss_fn = nn.CrossEntropyLoss()
            self.opt: torch.optim.Optimizer | None = None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            xb, yb = batch
            return self.loss_fn(self.model(xb), yb)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            if self.opt is None:  # one Adam across epochs, as the other contenders keep theirs
                self.opt = torch.optim.Adam(self.parameters(), lr=LR)
            return self.opt

    module = Module()
    gen = torch.Generator().manual_seed(SEED)

    def epoch() -> None:
        loader = DataLoader(TensorDataset(w.x, w.y), batch_size=BATCH_SIZE, shuffle=True, generator=gen)
        trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
        trainer.fit(module, loader)

    return epoch


# -- measuring -----------------------------------------------------------------


@dataclass
class Row:
    workload: str
    contender: str
    times: list[float] = field(default_factory=list)  # seconds per timed epoch (wall clock)
    cpu: list[float] = field(default_factory=list)  # CPU seconds of this process per timed epoch
    first: float | None = None  # the untimed warm-up epoch (compilation, for mode="compile")
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu else None


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    """Wall and CPU seconds of ``fn()``: CPU time (every thread of this process, the tracking writer's
    included) moves less than wall time when other work shares the two cores."""
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def measure(w: Workload, contenders: dict[str, Callable[[Any], Callable[[], None]]]) -> dict[str, Row]:
    """Warm each contender up (one epoch, timed apart), then take turns: one epoch each, rotating the order."""
    rows = {name: Row(w.key, name) for name in contenders}
    epochs: dict[str, Callable[[], None]] = {}
    base = base_model(w)
    for name, build in contenders.items():
        row = rows[name]
        try:
            epochs[name] = build(copy.deepcopy(base))
            print(f"   {name}: warm-up epoch ...", end="", flush=True)
            row.first = timed(epochs[name])[0]
            print(f" {fmt_s(row.first)}", flush=True)
        except Exception as exc:  # report it in the table and go on with the others
            logging.getLogger(__name__).exception("%s / %s failed", w.key, name)
            row.error = f"{type(exc).__name__}: {str(exc)[:200]}"
            epochs.pop(name, None)
    names = list(epochs)
    for r in range(w.epochs):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            try:
                wall, cpu = timed(epochs[name])
                rows[name].times.append(wall)
                rows[name].cpu.append(cpu)
            except Exception as exc:  # noqa: BLE001 - as above
                rows[name].error = f"{type(exc).__name__}: {str(exc)[:200]}"
        print(f"   round {r + 1}/{w.epochs}: " + ", ".join(f"{n} {fmt_s(rows[n].times[-1])}" for n in names
                                                            if rows[n].times), flush=True)  # fmt: skip
    return rows


# -- results -------------------------------------------------------------------


@dataclass
class Result:
    workload: str
    contender: str
    epoch_s: float | None  # median wall time
    cpu_s: float | None  # median CPU time
    spread: tuple[float, float] | None
    vs_hand: float | None  # epoch time / hand loop's
    goal: str
    measured: str  # the figure the goal is about
    met: bool | None  # None: reported, no goal
    epochs: int
    first_s: float | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def results_for(w: Workload, rows: dict[str, Row]) -> list[Result]:
    hand = rows["hand loop"].median
    eager = rows.get("loopml eager")
    out: list[Result] = []
    for name, row in rows.items():
        med = row.median
        vs = ratio(med, hand)
        goal, measured, met = "reference", "-", None
        if name == "loopml eager":
            cpu = ratio(row.cpu_median, rows["hand loop"].cpu_median)
            goal, measured = "<= 1.05x hand loop", f"{fmt_x(vs)} (CPU {fmt_x(cpu)})"
            met = None if vs is None else vs <= 1.05
        elif name.startswith("loopml eager, tracking"):
            r = ratio(med, eager.median if eager else None)
            cpu = ratio(row.cpu_median, eager.cpu_median if eager else None)
            goal, measured = "<= 1.03x tracking off", f"{fmt_x(r)} (CPU {fmt_x(cpu)})"
            met = None if r is None else r <= 1.03
        elif name == "loopml compiled":
            speedup = ratio(eager.median if eager else None, med)
            goal, measured = "reported", f"speed-up {fmt_x(speedup)} over eager"
        elif name == "Lightning":
            goal, measured = "reported", "overhead " + (f"{(vs - 1) * 100:+.1f}%" if vs else "-")
        spread = (min(row.times), max(row.times)) if row.times else None
        out.append(Result(w.key, name, med, row.cpu_median, spread, vs, goal, measured, met, len(row.times),
                          row.first, row.error))  # fmt: skip
        if name == "loopml compiled" and row.first is not None:
            compile_s = row.first - med if med else None
            out.append(Result(w.key, "loopml compiled: first epoch", row.first, None, None, ratio(row.first, hand),
                              "reported", f"compilation ~{fmt_s(compile_s)}", None, 1))  # fmt: skip
    for res in out:
        if res.error and res.goal.startswith("<="):
            res.met = False  # a goal that could not be measured is not met
    return out


def fmt_s(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def fmt_x(r: float | None) -> str:
    return "-" if r is None else f"{r:.3f}x"


def versions() -> dict[str, str]:
    return _common.versions("loopml", "torch", "lightning", "numpy", "scikit-learn")


def print_table(results: list[Result], info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 150)
    v, m = info["versions"], info["machine"]
    table = Table(
        title="Training: one epoch, hand loop vs loopml vs Lightning (same machine, same run)",
        caption=(
            f"loopml {v['loopml']} ({info['commit']}), torch {v['torch']}, Lightning {v['lightning']}, "
            f"Python {v['python']}; {m['cpus']} CPUs, 1 torch thread; batch {BATCH_SIZE}, Adam; {info['mode']} "
            f"sizes; load average {info['load_start']} at the start, {info.get('load_end', '?')} at the end"
        ),
    )
    for col, just in (("workload", "left"), ("contender", "left"), ("epoch (median)", "right"),
                      ("min-max", "right"), ("CPU (median)", "right"), ("vs hand loop", "right"), ("goal", "left"), ("measured", "left"),
                      ("met", "center")):  # fmt: skip
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    last = None
    for r in results:
        met = {True: "PASS", False: "MISS", None: "-"}[r.met]
        style = {"PASS": "green", "MISS": "bold red"}.get(met, "")
        spread = f"{fmt_s(r.spread[0])}-{fmt_s(r.spread[1])}" if r.spread else "-"
        if last is not None and r.workload != last:
            table.add_section()
        last = r.workload
        table.add_row(
            r.workload, r.contender, fmt_s(r.epoch_s) if not r.error else "[bold red]error[/]", spread,
            fmt_s(r.cpu_s), fmt_x(r.vs_hand), r.goal, r.measured, f"[{style}]{met}[/]" if style else met,
        )  # fmt: skip
    console.print(table)
    for w in info["workloads"]:
        console.print(f"  {w['key']}: {w['title']}; median of {w['epochs']} epochs per contender after a warm-up "
                      f"epoch; {w['batches']} batches of {BATCH_SIZE}", highlight=False)  # fmt: skip
    for r in results:
        if r.error:
            console.print(f"  {r.workload} / {r.contender}: [bold red]error:[/] {r.error}", highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer epochs and a smaller MLP set: a smoke run")
    parser.add_argument("--only", choices=("digits", "mlp"), help="run one workload")
    parser.add_argument("--no-compile", action="store_true", help="leave out loopml compiled (saves 30-60 s)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    json_path = Path(args.json).resolve() if args.json else None
    sizes = QUICK if args.quick else Sizes()

    import importlib.util

    if importlib.util.find_spec("lightning") is None:
        print("Lightning is not installed: run `make bench` (installs the bench extra: pip install 'loopml[bench]')")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="loopml-bench-training-"))
    # An empty Inductor cache: the compile time shown is a cold compile, as on a first run, not a cache hit
    # left by an earlier run (measured: 25 s cold, 3 s warm for the CNN).
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / "inductor-cache")
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", module=r"lightning\..*")  # "the dataloader does not have many workers", ...
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    import lightning  # noqa: F401 - its loggers exist once it is imported

    for name in list(logging.root.manager.loggerDict):  # "GPU available: False ..." and a tip on every fit
        if name.startswith(("lightning", "pytorch_lightning")):
            logging.getLogger(name).setLevel(logging.WARNING)

    import loopml

    os.environ["LOOPML_HOME"] = str(tmp / "loopml-home")  # artifacts of the tracked runs stay in tmp
    os.environ.pop("LOOPML_TRACKING_URI", None)
    loopml.set_tracking_uri(f"sqlite:///{tmp / 'loopml.db'}")
    cwd = os.getcwd()
    os.chdir(tmp)  # anything written relative to the working directory (Lightning's default_root_dir) stays in tmp

    workloads = [wl(sizes) for key, wl in (("digits", digits_cnn), ("mlp", generated_mlp))
                 if args.only in (None, key)]  # fmt: skip
    info: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "versions": versions(),
        "machine": _common.machine(),
        "commit": _common.commit("src/loopml/train"),
        "sizes": sizes.__dict__,
        "batch_size": BATCH_SIZE,
        "workloads": [{"key": w.key, "title": w.title, "epochs": w.epochs,
                       "batches": -(-len(w.x) // BATCH_SIZE)} for w in workloads],
        "load_start": _common.load_average(),
    }
    print(f"training: hand loop, loopml, Lightning; {info['mode']} sizes; temp folder {tmp}", flush=True)
    if info["load_start"] > 0.5 * (os.cpu_count() or 1):
        print(f"note: load average {info['load_start']} on {os.cpu_count()} CPUs: other work will skew the figures")
    results: list[Result] = []
    t_all = time.perf_counter()
    try:
        for w in workloads:
            contenders: dict[str, Callable[[Any], Callable[[], None]]] = {
                "hand loop": partial(hand_loop, w),
                "loopml eager": partial(loopml_trainer, w),
                "loopml eager, tracking on": partial(loopml_trainer, w, track=True),
                "loopml eager, tracking into an open run": partial(loopml_tracked_open_run, w),
                "Lightning": partial(lightning_trainer, w),
            }
            if not args.no_compile:
                contenders["loopml compiled"] = partial(loopml_trainer, w, mode="compile")
            print(f"-- {w.title}: {len(contenders)} contenders, 1 warm-up + {w.epochs} epochs each", flush=True)
            t0 = time.perf_counter()
            results.extend(results_for(w, measure(w, contenders)))
            print(f"   done in {time.perf_counter() - t0:.1f} s", flush=True)
    finally:
        for run in OPEN_RUNS:
            run.finish()
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)
    info["threads"] = torch.get_num_threads()  # still 1: no contender changed it
    info["total_s"] = round(time.perf_counter() - t_all, 1)
    info["load_end"] = _common.load_average()
    print()
    print_table(results, info)
    print(f"total {info['total_s']} s; torch threads at the end: {info['threads']}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({**info, "results": [r.to_json() for r in results]}, indent=2))
        print(f"wrote {json_path}")
    return 1 if any(r.error and r.epoch_s is None for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
