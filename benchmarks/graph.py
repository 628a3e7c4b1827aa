"""Graph neural networks: what the graph buys (GCN, GraphSAGE, GAT against an MLP and label propagation),
and loopml's Trainer against a plain PyTorch Geometric loop on the same GCN, in one run.

    .venv/bin/python benchmarks/graph.py                  # accuracy (3 seeds) and timing (5 repeats a side)
    .venv/bin/python benchmarks/graph.py --quick          # one seed, fewer epochs, 2 repeats: a smoke run
    .venv/bin/python benchmarks/graph.py --only timing --repeats 9 --json out.json

Accuracy. Two graphs, each split with 1, 5 and 20 labels per class:

- ``digits``: scikit-learn's digits (``loopml.data.load("digits")``, 1,797 images of 8x8, pixels
  in [0, 1]) as a k-nearest-neighbour graph over the pixels (k = 10, made undirected);
- ``sbm``: a stochastic block model of 10 blocks x 100 nodes (edge probability 0.05 inside a
  block, 0.002 between blocks) whose node features are the block's centre in 16 dimensions
  plus Gaussian noise, noisy enough that a model that reads the features alone stays imperfect.

On each split (seeded: the labeled nodes are drawn per class, then a validation set of 20% and
a test set of 50% of the nodes from the rest), GCN, GraphSAGE and GAT (2 layers, hidden 64,
dropout 0.5) and an MLP of the same size that ignores the edges are trained by ``loopml.train.Trainer``
full batch on the labeled nodes only, with Adam (lr 0.01, weight decay 5e-4) for a fixed number
of epochs: the same settings for every model, no early stopping and no model selection (the
validation set is not used for the accuracy figures). Label propagation spreads the same labels
over the edges. The figure is the test accuracy, mean (and spread) over the seeds.

Timing. The same GCN (same initial weights, same graph and split, same epochs, full batch, Adam)
trained

- by a plain PyG loop: ``optimizer.zero_grad()``, ``out = model(x, edge_index)``, cross-entropy on
  the train mask, ``backward``, ``step``, ``loss.item()``, then the loss and accuracy on the
  validation mask under ``no_grad`` every epoch (what ``Trainer.fit(..., val=...)`` does);
- by ``Trainer(model, track=False).fit(split.train, val=split.val, epochs=E)``;
- by the same with ``track=True`` (the default, as users run it), into a SQLite store in a temp
  folder: each fit opens and finishes a run of its own.

The contenders take turns in a rotating order, after one untimed warm-up fit each; each figure is the
median of ``--repeats`` fits. Besides wall time, each fit's CPU time (less sensitive to other work on
the machine) and minor page faults (glibc returning freed tensor memory to the OS and faulting it back)
are read. The fit's wall time is split into the epochs (the first epoch's start to
the last epoch's end, read by a two-line callback / around the plain loop) and the rest (the
Trainer's set-up, the run, the dataset records). Nothing here asserts: it is a program that
reports, not a test.

Goals (issue 17): a GNN at least 10 points above the MLP at 5 labels per class on the digits graph;
loopml's Trainer at most 5% slower than the plain PyG loop.
"""

from __future__ import annotations

import os

# Before torch loads: one OpenMP thread (two shared cores; docs/benchmarks.md, "Threads").
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
import argparse
import copy
import json
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common  # benchmarks/_common.py: these run as `python benchmarks/<name>.py`
import numpy as np

SEED = 0
K = 10  # neighbours per node of the digits graph
LABELS_PER_CLASS = (1, 5, 20)
VAL, TEST = 0.2, 0.5  # of all nodes, drawn from those not labeled for training
SBM_BLOCKS, SBM_BLOCK_SIZE, SBM_P_IN, SBM_P_OUT = 10, 100, 0.05, 0.002
SBM_FEATURES, SBM_NOISE = 16, 2.0
HIDDEN, LAYERS, DROPOUT = 64, 2, 0.5
LR, WEIGHT_DECAY = 0.01, 5e-4
EPOCHS = 200
MODELS = ("GCN", "GraphSAGE", "GAT", "MLP", "label propagation")
GNNS = ("GCN", "GraphSAGE", "GAT")


# -- loopml's graph API, or the benchmark's stand-ins until it lands ---------------------------------
#
# Helpers A (data) and B (models) of issue 17 build these in parallel. The stand-ins below do what
# the plan says the real ones do, with PyG and scikit-learn; the table names which side ran.


def _real(module: str, name: str) -> Any:
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _knn_graph(ds: Any, k: int) -> Any:
    """Stand-in for loopml.data.knn_graph: scikit-learn's exact k-NN over the flattened rows, both directions."""
    from sklearn.neighbors import kneighbors_graph

    from loopml.data.graph import Graph

    x = ds.x.reshape(len(ds.x), -1).numpy()
    adj = kneighbors_graph(x, k, mode="connectivity", include_self=False)
    adj = ((adj + adj.T) > 0).tocoo()
    return Graph(x, np.vstack([adj.row, adj.col]).astype(np.int64), ds.y.numpy(), class_names=ds.class_names,
                 name=f"{ds.name}-knn{k}", source=f"knn_graph({ds.name}, k={k})")


def _sbm(seed: int) -> Any:
    """Stand-in for loopml.data.sbm: PyG's stochastic_blockmodel_graph, features = block centre + noise."""
    import torch
    from torch_geometric.utils import stochastic_blockmodel_graph

    from loopml.data.graph import Graph

    torch.manual_seed(seed)
    probs = torch.full((SBM_BLOCKS, SBM_BLOCKS), SBM_P_OUT)
    probs.fill_diagonal_(SBM_P_IN)
    edge_index = stochastic_blockmodel_graph([SBM_BLOCK_SIZE] * SBM_BLOCKS, probs, directed=False)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(SBM_BLOCKS), SBM_BLOCK_SIZE)
    centres = rng.normal(size=(SBM_BLOCKS, SBM_FEATURES))
    x = centres[y] + SBM_NOISE * rng.normal(size=(len(y), SBM_FEATURES))
    return Graph(x.astype(np.float32), edge_index, y, name="sbm", source="sbm")


@dataclass
class _Split:
    graph: Any
    train: Any
    val: Any
    test: Any


def _split_nodes(graph: Any, *, per_class: int, val: float, test: float, seed: int) -> _Split:
    """Stand-in for loopml.data.split_nodes: ``per_class`` labeled nodes of each class, then val and test."""
    rng = np.random.default_rng(seed)
    y = graph.y.numpy()
    train = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y[y >= 0])])
    rest = rng.permutation(np.setdiff1d(np.arange(len(y)), train))
    n_val, n_test = round(val * len(y)), round(test * len(y))
    for name, idx in (("train", train), ("val", rest[:n_val]), ("test", rest[n_val:n_val + n_test])):
        graph.set_mask(name, np.sort(idx))
    return _Split(graph, graph.nodes("train"), graph.nodes("val"), graph.nodes("test"))


def _pyg_model(kind: str) -> Callable[..., Any]:
    def make(in_features: int, classes: int, *, hidden: int = HIDDEN, layers: int = LAYERS,
             dropout: float = DROPOUT) -> Any:
        """Stand-in for loopml.models.GCN / GraphSAGE / GAT: PyG's basic GNN in a module of (x, edge_index)."""
        from torch import nn
        from torch_geometric.nn import models

        class Stand(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = getattr(models, kind)(in_features, hidden, layers, classes, dropout=dropout)

            def forward(self, x: Any, edge_index: Any) -> Any:
                return self.net(x, edge_index)

        return Stand()
    return make


def _node_mlp(in_features: int, classes: int, *, hidden: int = HIDDEN, layers: int = LAYERS,
              dropout: float = DROPOUT) -> Any:
    """Stand-in for loopml.models.NodeMLP: the same width and depth, edges ignored."""
    from torch import nn

    class Stand(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            parts: list[nn.Module] = []
            width = in_features
            for _ in range(layers - 1):
                parts += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
                width = hidden
            self.net = nn.Sequential(*parts, nn.Linear(width, classes))

        def forward(self, x: Any, edge_index: Any = None) -> Any:
            return self.net(x)

    return Stand()


def _propagate_labels(graph: Any, train: Any) -> Any:
    """Stand-in for loopml.models.propagate_labels: PyG's LabelPropagation (50 steps, alpha 0.9); N x C scores."""
    import torch
    from torch_geometric.nn.models import LabelPropagation

    mask = torch.zeros(graph.num_nodes, dtype=torch.bool)
    mask[train.index] = True
    y = graph.y.clamp(min=0)
    return LabelPropagation(num_layers=50, alpha=0.9)(y, graph.edge_index, mask=mask)


@dataclass
class Api:
    knn_graph: Callable[..., Any]
    sbm: Callable[[int], Any]
    split_nodes: Callable[..., Any]
    models: dict[str, Callable[..., Any]]
    propagate_labels: Callable[..., Any]
    sources: dict[str, str] = field(default_factory=dict)


def api() -> Api:
    """loopml's public graph API where it is importable, else the stand-ins; ``sources`` says which ran."""
    src: dict[str, str] = {}

    def pick(module: str, name: str, stand: Any) -> Any:
        real = _real(module, name)
        src[name] = f"{module}.{name}" if real is not None else "benchmark stand-in"
        return real if real is not None else stand

    knn = pick("loopml.data", "knn_graph", _knn_graph)
    src["sbm"] = "benchmark stand-in"  # switched to loopml.data.sbm when it lands (its signature is not known yet)
    split = pick("loopml.data", "split_nodes", _split_nodes)
    models = {kind: pick("loopml.models", name, _pyg_model(name))
              for kind, name in (("GCN", "GCN"), ("GraphSAGE", "GraphSAGE"), ("GAT", "GAT"))}
    models["MLP"] = pick("loopml.models", "NodeMLP", _node_mlp)
    prop = pick("loopml.models", "propagate_labels", _propagate_labels)
    return Api(knn, _sbm, split, models, prop, src)


# -- accuracy -----------------------------------------------------------------------------------------


def graphs(a: Api, names: Sequence[str]) -> dict[str, Any]:
    from loopml import data

    out = {}
    if "digits" in names:
        out["digits"] = a.knn_graph(data.load("digits"), k=K)
    if "sbm" in names:
        out["sbm"] = a.sbm(SEED)
    return out


def homophily(graph: Any) -> float:
    """The share of edges whose two ends have the same label: how much a neighbour's label says."""
    src, dst = graph.edge_index
    return float((graph.y[src] == graph.y[dst]).float().mean())


def train_and_test(a: Api, kind: str, split: Any, epochs: int, seed: int) -> float:
    import torch

    from loopml.train import Trainer

    g = split.train.graph
    if kind == "label propagation":
        scores = a.propagate_labels(g, split.train)
        idx = split.test.index
        return float((scores[idx].argmax(1) == g.y[idx]).float().mean())
    torch.manual_seed(seed)
    model = a.models[kind](g.num_features, g.num_classes, hidden=HIDDEN, layers=LAYERS, dropout=DROPOUT)
    trainer = Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY),
                      metrics=["accuracy"], track=False, seed=seed)
    trainer.fit(split.train, epochs=epochs)
    return float(trainer.evaluate(split.test)["accuracy"])


def accuracy(a: Api, gs: dict[str, Any], seeds: int, epochs: int) -> list[dict[str, Any]]:
    rows = []
    for gname, g in gs.items():
        for per_class in LABELS_PER_CLASS:
            accs: dict[str, list[float]] = {m: [] for m in MODELS}
            for seed in range(seeds):
                split = a.split_nodes(g, per_class=per_class, val=VAL, test=TEST, seed=seed)
                for kind in MODELS:
                    accs[kind].append(train_and_test(a, kind, split, epochs, seed))
            row = {"graph": gname, "labels_per_class": per_class, "labeled": per_class * g.num_classes,
                   **{k: {"mean": statistics.fmean(v), "min": min(v), "max": max(v), "runs": v} for k, v in accs.items()}}
            best = max(GNNS, key=lambda k: row[k]["mean"])
            row["best_gnn"], row["gnn_minus_mlp_points"] = best, (row[best]["mean"] - row["MLP"]["mean"]) * 100
            rows.append(row)
            print(f"   {gname:6s} {per_class:2d}/class: " + ", ".join(
                f"{k} {row[k]['mean'] * 100:.1f}%" for k in MODELS), flush=True)
    return rows


# -- timing -------------------------------------------------------------------------------------------


def loop_clock() -> Any:
    """A callback that notes when the epochs start and end: two calls a fit, after the tracker's at fit start
    (the run's creation is outside the epochs) and before it at fit end (the run's finish too)."""
    from loopml.train.callbacks import Callback

    class Clock(Callback):
        order = 30  # the Tracking callback's order is 20; fit_start and fit_end fire in the same order

        def __init__(self) -> None:
            self.start = self.end = 0.0

        def on_fit_start(self, trainer: Any) -> None:
            self.start = time.perf_counter()

        def on_fit_end(self, trainer: Any) -> None:
            self.end = time.perf_counter()

    return Clock()


@dataclass
class Fit:
    wall_s: float
    epochs_s: float
    val_accuracy: float
    cpu_s: float = 0.0  # the process's CPU time over the whole fit: other work on the machine does not count
    page_faults: int = 0  # minor page faults over the fit (glibc handing big tensors' memory back and forth)


def measured(fn: Callable[[], Fit]) -> Fit:
    import resource

    faults, cpu = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
    fit = fn()
    fit.cpu_s, fit.page_faults = time.process_time() - cpu, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return fit


def plain_pyg(model: Any, g: Any, split: Any, epochs: int) -> Fit:
    """The loop of PyG's examples (gcn.py), computing what the Trainer with metrics=["accuracy"] and val= computes
    each epoch: the training loss and accuracy, and the validation loss and accuracy under no_grad."""
    import torch
    import torch.nn.functional as F

    t0 = time.perf_counter()
    x, edge_index, y = g.x, g.edge_index, g.y
    train_mask, val_mask = g.masks["train"], g.masks["val"]
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    acc = 0.0
    t1 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        optimizer.zero_grad()
        out = model(x, edge_index)
        loss = F.cross_entropy(out[train_mask], y[train_mask])
        loss.backward()
        optimizer.step()
        loss.item()
        float((out[train_mask].detach().argmax(1) == y[train_mask]).float().mean())  # the Trainer's train_accuracy
        model.eval()
        with torch.no_grad():
            out = model(x, edge_index)
            F.cross_entropy(out[val_mask], y[val_mask]).item()
            acc = float((out[val_mask].argmax(1) == y[val_mask]).float().mean())
    t2 = time.perf_counter()
    return Fit(t2 - t0, t2 - t1, acc)


def loopml_fit(model: Any, split: Any, epochs: int, track: bool) -> Fit:
    import torch

    from loopml.train import Trainer

    t0 = time.perf_counter()
    clock = loop_clock()
    trainer = Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY),
                      metrics=["accuracy"], callbacks=[clock], track=track, experiment="graph-bench")
    trainer.fit(split.train, val=split.val, epochs=epochs)
    wall = time.perf_counter() - t0
    return Fit(wall, clock.end - clock.start, float(trainer.state.metrics["val_accuracy"]))


def timing(a: Api, g: Any, epochs: int, repeats: int, tracked: bool) -> dict[str, Any]:
    import torch

    split = a.split_nodes(g, per_class=20, val=VAL, test=TEST, seed=SEED)
    g = split.train.graph
    torch.manual_seed(SEED)
    init = a.models["GCN"](g.num_features, g.num_classes, hidden=HIDDEN, layers=LAYERS, dropout=DROPOUT)
    contenders: dict[str, Callable[[Any], Fit]] = {
        "plain PyG loop": lambda m: plain_pyg(m, g, split, epochs),
        "loopml Trainer, track=False": lambda m: loopml_fit(m, split, epochs, False),
    }
    if tracked:
        contenders["loopml Trainer, track=True"] = lambda m: loopml_fit(m, split, epochs, True)
    for name, fn in contenders.items():  # one untimed warm-up each: first calls, imports, the store's schema
        torch.manual_seed(SEED)
        fn(copy.deepcopy(init))
    fits: dict[str, list[Fit]] = {n: [] for n in contenders}
    names = list(contenders)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # a rotating order: none always goes first
            torch.manual_seed(SEED)
            model = copy.deepcopy(init)
            fits[name].append(measured(lambda fn=contenders[name], model=model: fn(model)))
        print(f"   repeat {r + 1}/{repeats}: " + ", ".join(
            f"{n} {fits[n][-1].wall_s:.3f} s" for n in contenders), flush=True)
    plain = fits["plain PyG loop"]
    base_wall = statistics.median(f.wall_s for f in plain)
    base_epochs = statistics.median(f.epochs_s for f in plain)
    rows = []
    for name, fs in fits.items():
        wall = statistics.median(f.wall_s for f in fs)
        ep = statistics.median(f.epochs_s for f in fs)
        cpu = statistics.median(f.cpu_s for f in fs)
        rows.append({"contender": name, "wall_s": wall, "epochs_s": ep, "ms_per_epoch": ep / epochs * 1000,
                     "cpu_s": cpu, "cpu_vs_plain": cpu / statistics.median(f.cpu_s for f in plain) - 1,
                     "page_faults": statistics.median(f.page_faults for f in fs),
                     "outside_s": wall - ep, "wall_vs_plain": wall / base_wall - 1, "epochs_vs_plain": ep / base_epochs - 1,
                     "val_accuracy": statistics.median(f.val_accuracy for f in fs),
                     "walls": [f.wall_s for f in fs], "epoch_times": [f.epochs_s for f in fs]})
    return {"graph": g.name, "nodes": g.num_nodes, "edges": g.num_edges, "epochs": epochs, "repeats": repeats,
            "train_nodes": len(split.train), "val_nodes": len(split.val), "rows": rows}


# -- report -------------------------------------------------------------------------------------------


def fmt(v: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{unit}"


def goals(acc: list[dict[str, Any]], tim: dict[str, Any] | None) -> list[dict[str, Any]]:
    out = []
    row = next((r for r in acc if r["graph"] == "digits" and r["labels_per_class"] == 5), None)
    gap = row["gnn_minus_mlp_points"] if row else None
    out.append({"goal": "best GNN >= MLP + 10 points, digits graph, 5 labels per class",
                "measured": f"{row['best_gnn']} {fmt(gap, '+.1f', ' points')}" if row else "-",
                "met": None if gap is None else gap >= 10.0})
    for r in (tim or {}).get("rows", [])[1:]:
        out.append({"goal": f"{r['contender']}: fit wall time <= 1.05x plain PyG loop",
                    "measured": fmt(r["wall_vs_plain"] * 100, "+.1f", "%"), "met": r["wall_vs_plain"] <= 0.05})
    return out


def print_report(acc: list[dict[str, Any]], tim: dict[str, Any] | None, info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    v = info["versions"]
    caption = (f"loopml {v['loopml']} ({info['commit']}), torch_geometric {v['torch-geometric']}, torch {v['torch']}, "
               f"Python {v['python']}; {info['machine']['cpus']} CPUs; load average {info['load_start']} at the start, "
               f"{info.get('load_end', '?')} at the end")
    if acc:
        t = Table(title=f"Test accuracy, mean over {info['seeds']} seeds (min-max): hidden {HIDDEN}, dropout {DROPOUT}, "
                        f"Adam lr {LR} wd {WEIGHT_DECAY}, {info['epochs']} epochs, no early stopping", caption=caption)
        for col in ("graph", "labels/class", *MODELS, "best GNN - MLP"):
            t.add_column(col, justify="left" if col == "graph" else "right")
        for r in acc:
            cells = [f"{r[m]['mean'] * 100:.1f}% ({r[m]['min'] * 100:.0f}-{r[m]['max'] * 100:.0f})" for m in MODELS]
            t.add_row(r["graph"], str(r["labels_per_class"]), *cells, f"{r['gnn_minus_mlp_points']:+.1f} ({r['best_gnn']})")
        console.print(t)
        for name, h in info["graphs"].items():
            console.print(f"  {name}: {h['nodes']} nodes, {h['edges']} directed edges, homophily {h['homophily']:.3f}")
    if tim:
        t = Table(title=f"GCN training on {tim['graph']} ({tim['nodes']} nodes, {tim['edges']} edges), full batch, "
                        f"{tim['epochs']} epochs, val every epoch; medians of {tim['repeats']} interleaved fits",
                  caption=caption)
        for col in ("contender", "fit wall", "epochs", "ms/epoch", "outside epochs", "wall vs plain", "epochs vs plain",
                    "CPU vs plain", "page faults", "val acc"):
            t.add_column(col, justify="left" if col == "contender" else "right")
        for r in tim["rows"]:
            t.add_row(r["contender"], f"{r['wall_s']:.3f} s", f"{r['epochs_s']:.3f} s", f"{r['ms_per_epoch']:.2f}",
                      f"{r['outside_s'] * 1000:.1f} ms", f"{r['wall_vs_plain'] * 100:+.1f}%",
                      f"{r['epochs_vs_plain'] * 100:+.1f}%", f"{r['cpu_vs_plain'] * 100:+.1f}%",
                      f"{r['page_faults']:,.0f}", f"{r['val_accuracy'] * 100:.1f}%")
        console.print(t)
    console.print(f"  API: {info['api']}", highlight=False)
    for goal in info["goals"]:
        console.print(f"  goal: {goal['goal']}: {goal['measured']} -> "
                      f"{ {True: '[green]PASS[/]', False: '[bold red]MISS[/]', None: 'not measured'}[goal['met']] }")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one seed, 50 epochs, 2 timing repeats: a smoke run")
    parser.add_argument("--only", choices=("accuracy", "timing"), help="run one part")
    parser.add_argument("--graphs", default="digits,sbm", help="accuracy on these graphs (default digits,sbm)")
    parser.add_argument("--seeds", type=int, default=3, help="splits and initialisations per setting (default 3)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs of every fit (default {EPOCHS})")
    parser.add_argument("--repeats", type=int, default=5, help="timed fits of each contender, interleaved (default 5)")
    parser.add_argument("--no-tracking", action="store_true", help="leave out the track=True contender")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    a = parser.parse_args(argv)
    if a.quick:
        a.seeds, a.epochs, a.repeats = 1, 50, 2
    if a.seeds < 1 or a.epochs < 1 or a.repeats < 1:
        parser.error("--seeds, --epochs and --repeats should be at least 1")
    names = [n.strip() for n in a.graphs.split(",") if n.strip()]
    if not set(names) <= {"digits", "sbm"}:
        parser.error(f"--graphs should name digits and/or sbm, got {a.graphs!r}")
    tmp = Path(tempfile.mkdtemp(prefix="loopml-bench-graph-"))
    os.environ["LOOPML_HOME"] = str(tmp / "loopml-home")  # tracked runs and their artifacts stay in the temp folder
    os.environ.pop("LOOPML_TRACKING_URI", None)
    os.environ.setdefault("TMPDIR", str(tmp))  # PyG writes jit templates to $TMPDIR
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import torch

    torch.set_num_threads(1)
    gapi = api()
    info: dict[str, Any] = {
        "mode": "quick" if a.quick else "full", "seeds": a.seeds, "epochs": a.epochs, "repeats": a.repeats,
        "commit": _common.commit("src/loopml"), "machine": _common.machine(), "api": gapi.sources,
        "versions": _common.versions("loopml", "torch-geometric", "torch", "numpy", "scikit-learn"),
        "load_start": _common.load_average(),
    }
    t_all = time.perf_counter()
    acc: list[dict[str, Any]] = []
    tim = None
    try:
        gs = graphs(gapi, sorted(set(names) | ({"digits"} if a.only != "accuracy" else set())))
        info["graphs"] = {n: {"nodes": g.num_nodes, "edges": g.num_edges, "homophily": homophily(g)} for n, g in gs.items()}
        if a.only != "timing":
            print(f"accuracy: {a.seeds} seeds, {a.epochs} epochs", flush=True)
            acc = accuracy(gapi, {n: g for n, g in gs.items() if n in names}, a.seeds, a.epochs)
        if a.only != "accuracy":
            print(f"timing: GCN on digits, {a.epochs} epochs, {a.repeats} repeats", flush=True)
            tim = timing(gapi, gs["digits"], a.epochs, a.repeats, not a.no_tracking)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info["total_s"] = round(time.perf_counter() - t_all, 1)
    info["load_end"] = _common.load_average()
    info["goals"] = goals(acc, tim)
    print()
    print_report(acc, tim, info)
    print(f"total {info['total_s']} s")
    if a.json:
        path = Path(a.json).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**info, "accuracy": acc, "timing": tim}, indent=2))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
