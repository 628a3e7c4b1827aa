"""Data quality checks: ``check(ds)`` returns a :class:`CheckReport`.

===================== ======== ==================================================================
code                  severity triggers when
===================== ======== ==================================================================
``missing_values``    error    an input is NaN (a categorical value is missing), or a target is NaN
``non_finite``        error    an input or a regression target is +inf or -inf
``conflicting_labels`` error   identical inputs carry different labels (classification)
``single_class``      error    a classification dataset has fewer than two classes present
``leakage``           error    the same input occurs in two of train / val / test
``constant_features`` warning  a feature (or pixel) has one value in every row
``duplicate_rows``    warning  a row (inputs and label) occurs more than once
``class_imbalance``   warning  the rarest present class has < ``imbalance_ratio`` x the rows of the
                               most common one, or a named class has no rows
===================== ======== ==================================================================

A :class:`~loopml.data.graph.Graph` (alone, with its masks, as a
:class:`~loopml.data.split.NodeSplit`, or as train / val / test
:class:`~loopml.data.graph.Nodes`) gets ``missing_values`` and ``non_finite``
for its node features, ``leakage`` for a node in two of train / val / test
(a test node in the train mask), and these:

===================== ======== ==================================================================
code                  severity triggers when
===================== ======== ==================================================================
``missing_nodes``     error    an edge points at a node the graph does not have (below 0, or N up)
``no_train_labels``   error    no node of train (the train mask or set; all nodes when there is
                               none) has a label
``unlabeled_classes`` warning  a class has no labeled train node: the model cannot learn it (as
                               ``class_imbalance`` warns of a named class with no rows)
``few_labels``        warning  a class has fewer than ``min_labels`` labeled train nodes
``self_loops``        warning  an edge joins a node to itself
``duplicate_edges``   warning  an edge repeats an earlier one
``isolated_nodes``    warning  a node has no edge (self-loops aside): only its own features reach it
``directed``          warning  an edge's reverse is missing (GNNs read an undirected graph as one
                               that lists each edge both ways: ``from_edges(..., undirected=True)``)
===================== ======== ==================================================================

Errors stop training (``report.raise_if_errors()``); warnings are printed and
logged. Any code can be ignored: ``check(ds, ignore=["duplicate_rows"])``
moves its findings to ``report.ignored``.

>>> from loopml.data import check, load
>>> report = check(load("digits"))
>>> report.ok, [i.code for i in report.warnings]
(True, ['constant_features'])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError, DataError
from .dataset import Dataset
from .fingerprint import canonical_bytes
from .graph import Graph, Nodes
from .split import NodeSplit, Split

if TYPE_CHECKING:
    from .dataset import Dataset
    from .split import Split

__all__ = ["CODES", "CheckReport", "Issue", "check"]

CODES = {
    "missing_values": "error",
    "non_finite": "error",
    "conflicting_labels": "error",
    "single_class": "error",
    "leakage": "error",
    "constant_features": "warning",
    "duplicate_rows": "warning",
    "class_imbalance": "warning",
    "missing_nodes": "error",
    "no_train_labels": "error",
    "unlabeled_classes": "warning",
    "few_labels": "warning",
    "self_loops": "warning",
    "duplicate_edges": "warning",
    "isolated_nodes": "warning",
    "directed": "warning",
}


@dataclass(frozen=True)
class Issue:
    """One finding: ``code`` (see :data:`CODES`), ``severity``, the ``dataset`` it is in, a message, details."""

    code: str
    severity: str
    dataset: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckReport:
    """What :func:`check` found. ``ok`` is True when there are no errors."""

    issues: list[Issue]
    datasets: dict[str, dict[str, Any]]
    ignored: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "datasets": self.datasets,
            "issues": [i.to_dict() for i in self.issues],
            "ignored": [i.to_dict() for i in self.ignored],
        }

    def __str__(self) -> str:
        parts = ", ".join(f"{k} ({v['n_rows']} rows)" for k, v in self.datasets.items())
        head = f"data check of {parts}: {len(self.errors)} errors, {len(self.warnings)} warnings"
        lines = [head]
        lines += [f"  {i.severity.upper():7} {i.code} [{i.dataset}]: {i.message}" for i in self.issues]
        lines += [f"  ignored {i.code} [{i.dataset}]: {i.message}" for i in self.ignored]
        return "\n".join(lines)

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(title=str(self).splitlines()[0], show_lines=False)
        for col in ("severity", "check", "dataset", "finding"):
            table.add_column(col)
        style = {"error": "bold red", "warning": "yellow"}
        for i in self.issues:
            table.add_row(f"[{style.get(i.severity, '')}]{i.severity}[/]", i.code, i.dataset, i.message)
        return table

    def raise_if_errors(self, override_hint: str | None = None) -> None:
        """Raise :class:`~loopml.errors.DataError` naming every error, and how to go on anyway."""
        if self.ok:
            return
        codes = sorted({i.code for i in self.errors})
        hint = override_hint or f"fix the data, or skip these checks with check(..., ignore={codes!r})"
        lines = [f"The data has {len(self.errors)} error(s):"]
        lines += [f"  {i.code} [{i.dataset}]: {i.message}" for i in self.errors]
        lines.append(f"To go on anyway: {hint}")
        raise DataError("\n".join(lines), report=self)


def _row_keys(x: np.ndarray) -> np.ndarray:
    """One opaque, comparable value per row: the row's canonical bytes."""
    flat = canonical_bytes(x.reshape(len(x), -1))
    return flat.view(np.dtype((np.void, flat.dtype.itemsize * max(flat.shape[1], 1)))).reshape(len(x))


def _dataset_issues(ds: "Dataset", label: str, imbalance_ratio: float, max_examples: int) -> list[Issue]:
    out: list[Issue] = []
    x = ds.x.numpy()
    y = ds.y.numpy()
    n = len(ds)
    names = ds.feature_names if ds.kind == "tabular" else None

    def where(cols: np.ndarray) -> list[Any]:
        idx = [int(c) for c in cols[:max_examples]]
        if names:
            return [names[c] for c in idx]
        return [[int(v) for v in np.unravel_index(c, x.shape[1:])] for c in idx]  # (channel, row, column)

    def issue(code: str, message: str, **details: Any) -> None:
        out.append(Issue(code, CODES[code], label, message, details))

    flat = x.reshape(n, -1)
    nan_cols = np.isnan(flat).sum(axis=0)
    if nan_cols.any():
        cols = np.flatnonzero(nan_cols)
        issue("missing_values", f"{int(nan_cols.sum())} missing input values in {cols.size} feature(s), e.g. "
              f"{where(cols)}", count=int(nan_cols.sum()), features=where(cols))
    inf_cols = np.isinf(flat).sum(axis=0)
    if inf_cols.any():
        cols = np.flatnonzero(inf_cols)
        issue("non_finite", f"{int(inf_cols.sum())} infinite input values in {cols.size} feature(s), e.g. {where(cols)}",
              count=int(inf_cols.sum()), features=where(cols))
    if ds.task == "regression":
        if np.isnan(y).any():
            issue("missing_values", f"{int(np.isnan(y).sum())} missing targets", count=int(np.isnan(y).sum()),
                  features=["<target>"])
        if np.isinf(y).any():
            issue("non_finite", f"{int(np.isinf(y).sum())} infinite targets", count=int(np.isinf(y).sum()),
                  features=["<target>"])
    if n > 1:
        with np.errstate(invalid="ignore"):
            same = np.all((flat == flat[0]) | (np.isnan(flat) & np.isnan(flat[0])), axis=0)
        if same.any():
            cols = np.flatnonzero(same)
            issue("constant_features", f"{cols.size} feature(s) have one value in every row, e.g. {where(cols)}",
                  count=int(cols.size), features=where(cols))
    if n:
        keys = _row_keys(x)
        ykeys = canonical_bytes(y)
        pairs = np.empty(n, dtype=[("x", keys.dtype), ("y", ykeys.dtype)])
        pairs["x"], pairs["y"] = keys, ykeys
        _, first, counts = np.unique(pairs, return_index=True, return_counts=True)
        dups = int((counts - 1).sum())
        if dups:
            rows = sorted(int(r) for r in first[counts > 1])[:max_examples]
            issue("duplicate_rows", f"{dups} row(s) repeat an earlier row exactly, e.g. copies of rows {rows}",
                  count=dups, rows=rows)
        if ds.task == "classification":
            _, inv = np.unique(keys, return_inverse=True)
            # groups of identical inputs whose labels differ
            order = np.lexsort((y, inv))
            inv_s, y_s = inv[order], y[order]
            bad_groups = np.unique(inv_s[1:][(inv_s[1:] == inv_s[:-1]) & (y_s[1:] != y_s[:-1])])
            if bad_groups.size:
                groups = [sorted(int(r) for r in np.flatnonzero(inv == g)) for g in bad_groups[:max_examples]]
                issue("conflicting_labels", f"{bad_groups.size} input(s) occur with different labels, e.g. rows {groups}",
                      count=int(bad_groups.size), rows=groups)
    if ds.task == "classification":
        counts = np.bincount(y, minlength=len(ds.class_names or [])) if n else np.zeros(0, dtype=np.int64)
        present = counts[counts > 0]
        if present.size < 2:
            issue("single_class", f"only {present.size} class(es) have rows; a classifier needs at least two",
                  classes=int(present.size))
        else:
            ratio = float(present.min() / present.max())
            empty = [ds.class_names[i] for i in np.flatnonzero(counts == 0)] if ds.class_names else []
            if ratio < imbalance_ratio or empty:
                names_ = ds.class_names or []
                rare = names_[int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))]
                common = names_[int(np.argmax(counts))]
                msg = f"class {rare!r} has {int(present.min())} rows, class {common!r} {int(present.max())} " \
                      f"(ratio {ratio:.3f} < {imbalance_ratio})" if ratio < imbalance_ratio else ""
                if empty:
                    msg = (msg + "; " if msg else "") + f"classes without rows: {empty[:max_examples]}"
                issue("class_imbalance", msg, ratio=ratio, empty_classes=empty)
    return out


def _leakage(parts: Mapping[str, "Dataset"], max_examples: int) -> list[Issue]:
    out = []
    keys = {name: _row_keys(ds.x.numpy()) for name, ds in parts.items() if len(ds)}
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared, ia, ib = np.intersect1d(keys[a], keys[b], return_indices=True)
            if shared.size:
                pairs = [[int(p), int(q)] for p, q in zip(ia[:max_examples], ib[:max_examples])]
                out.append(Issue("leakage", "error", f"{a}+{b}",
                                 f"{shared.size} input(s) of {a} also occur in {b}, e.g. rows ({a}, {b}) {pairs}",
                                 {"count": int(shared.size), "rows": pairs}))
    return out


def check(
    data: "Dataset | Split | Graph | NodeSplit | Nodes",
    *,
    val: "Dataset | Nodes | None" = None,
    test: "Dataset | Nodes | None" = None,
    ignore: Iterable[str] = (),
    imbalance_ratio: float = 0.1,
    min_labels: int = 5,
    max_examples: int = 5,
    verbose: bool = False,
) -> CheckReport:
    """Check a dataset, or the parts of a split (each part, and leakage between them); or a graph.

    ``check(split)`` and ``check(train, val=val, test=test)`` are the same.
    A graph: ``check(graph)`` (its masks ``train``, ``val``, ``test`` are the node sets),
    ``check(node_split)``, or ``check(train_nodes, val=val_nodes)``.
    ``ignore``: codes whose findings go to ``report.ignored`` instead.
    ``min_labels``: fewer labeled train nodes in a class is a ``few_labels`` warning.
    ``verbose``: print the report's summary (rich, when a terminal shows it).

    >>> from loopml.data import load
    >>> report = check(load("iris"))
    >>> report.ok
    True
    """
    ignore = set(ignore)
    unknown = ignore - set(CODES)
    if unknown:
        raise ArgumentError(f"Argument ignore should name checks among {sorted(CODES)}, got {sorted(unknown)}")
    if not (isinstance(imbalance_ratio, (int, float)) and 0 <= imbalance_ratio <= 1):
        raise ArgumentError(f"Argument imbalance_ratio should be a number from 0 to 1, got {imbalance_ratio!r}")
    if isinstance(min_labels, bool) or not isinstance(min_labels, int) or min_labels < 0:
        raise ArgumentError(f"Argument min_labels should be an integer >= 0, got {min_labels!r}")
    if isinstance(data, (Graph, NodeSplit, Nodes)):
        report = _check_graph(data, val, test, ignore, min_labels, max_examples)
    else:
        report = _check_datasets(data, val, test, ignore, float(imbalance_ratio), max_examples)
    if verbose:
        from rich.console import Console

        Console().print(report)
    return report


def _check_datasets(data: Any, val: Any, test: Any, ignore: set[str], imbalance_ratio: float,
                    max_examples: int) -> CheckReport:
    if isinstance(data, Split):
        parts = {k: v for k, v in (("train", data.train), ("val", data.val), ("test", data.test)) if v is not None}
    elif isinstance(data, Dataset):
        parts = {"train" if (val is not None or test is not None) else data.name: data}
        parts.update({k: v for k, v in (("val", val), ("test", test)) if v is not None})
    else:
        raise ArgumentTypeError(f"Argument data should be a loopml.data.Dataset or Split (or a Graph, NodeSplit or "
                                f"Nodes), got {type(data).__name__}")
    for k, v in parts.items():
        if not isinstance(v, Dataset):
            raise ArgumentTypeError(f"Argument {k} should be a loopml.data.Dataset, got {type(v).__name__}")
    found: list[Issue] = []
    for label, ds in parts.items():
        found += _dataset_issues(ds, label, imbalance_ratio, max_examples)
    if len(parts) > 1:
        found += _leakage(parts, max_examples)
    return CheckReport(
        issues=[i for i in found if i.code not in ignore],
        datasets={k: {"name": v.name, "fingerprint": v.fingerprint, "n_rows": len(v)} for k, v in parts.items()},
        ignored=[i for i in found if i.code in ignore],
    )


def _check_graph(data: "Graph | NodeSplit | Nodes", val: Any, test: Any, ignore: set[str], min_labels: int,
                 max_examples: int) -> CheckReport:
    """The graph's own issues, then those of its node sets (train, val, test)."""
    if isinstance(data, NodeSplit):
        data = data.graph
    if isinstance(data, Graph):
        if val is not None or test is not None:
            raise ArgumentError("Arguments val and test should be None when data is a Graph: its masks 'train', 'val' "
                                "and 'test' are its node sets (or pass check(train_nodes, val=val_nodes))")
        graph = data
        sets: dict[str, np.ndarray] = {k: graph.masks[k].nonzero().reshape(-1).numpy()
                                       for k in ("train", "val", "test") if k in graph.masks}
    else:
        graph = data.graph
        sets = {"train": data.index.numpy()}
        for k, nodes in (("val", val), ("test", test)):
            if nodes is None:
                continue
            if not isinstance(nodes, Nodes):
                raise ArgumentTypeError(f"Argument {k} should be a loopml.data.Nodes like train, got {type(nodes).__name__}")
            if nodes.graph is not graph and nodes.graph.fingerprint != graph.fingerprint:
                continue  # another graph (inductive): its nodes cannot leak into this one's
            sets[k] = nodes.index.numpy()
    found = _graph_issues(graph, sets, min_labels, max_examples)
    datasets: dict[str, dict[str, Any]] = {
        graph.name: {"name": graph.name, "fingerprint": graph.fingerprint, "n_rows": graph.num_nodes,
                     "n_edges": graph.num_edges}}
    for k, index in sets.items():
        datasets[k] = {"name": f"{graph.name}/{k}", "n_rows": int(len(index)),
                       "labeled": int((graph.y.numpy()[index] >= 0).sum())}
    return CheckReport(issues=[i for i in found if i.code not in ignore], datasets=datasets,
                       ignored=[i for i in found if i.code in ignore])


def _graph_issues(graph: Graph, sets: Mapping[str, np.ndarray], min_labels: int, max_examples: int) -> list[Issue]:
    out: list[Issue] = []
    label = graph.name

    def issue(code: str, where: str, message: str, **details: Any) -> None:
        out.append(Issue(code, CODES[code], where, message, details))

    n, ei, x, y = graph.num_nodes, graph.edge_index.numpy(), graph.x.numpy(), graph.y.numpy()
    valid = (ei >= 0).all(axis=0) & (ei < n).all(axis=0)
    if not valid.all():
        bad = np.flatnonzero(~valid)
        examples = [[int(a), int(b)] for a, b in ei[:, bad[:max_examples]].T]
        issue("missing_nodes", label, f"{bad.size} edge(s) point at nodes the graph does not have (it has nodes "
              f"0..{n - 1}), e.g. {examples}", count=int(bad.size), edges=[int(e) for e in bad[:max_examples]],
              examples=examples)
    for code, mask, what in (("missing_values", np.isnan(x), "missing"), ("non_finite", np.isinf(x), "infinite")):
        if mask.any():
            cols = np.flatnonzero(mask.any(axis=0))
            rows = np.flatnonzero(mask.any(axis=1))
            names = [graph.feature_names[c] for c in cols[:max_examples]]
            issue(code, label, f"{int(mask.sum())} {what} node feature value(s) in {rows.size} node(s), features e.g. "
                  f"{names}", count=int(mask.sum()), features=names, nodes=[int(r) for r in rows[:max_examples]])
    src, dst = ei[0, valid], ei[1, valid]
    loops = src == dst
    if loops.any():
        nodes = np.unique(src[loops])
        issue("self_loops", label, f"{int(loops.sum())} edge(s) join a node to itself, e.g. nodes "
              f"{[int(v) for v in nodes[:max_examples]]}", count=int(loops.sum()),
              nodes=[int(v) for v in nodes[:max_examples]])
    codes = src.astype(np.int64) * max(n, 1) + dst
    unique_codes, first = np.unique(codes, return_index=True)
    dups = len(codes) - len(unique_codes)
    if dups:
        repeated = np.setdiff1d(np.arange(len(codes)), first)[:max_examples]
        examples = [[int(src[i]), int(dst[i])] for i in repeated]
        issue("duplicate_edges", label, f"{dups} edge(s) repeat an earlier edge, e.g. {examples}", count=int(dups),
              examples=examples)
    touched = np.zeros(n, dtype=bool)
    touched[src[~loops]] = True
    touched[dst[~loops]] = True
    if n and not touched.all():
        lonely = np.flatnonzero(~touched)
        issue("isolated_nodes", label, f"{lonely.size} node(s) have no edge, e.g. {[int(v) for v in lonely[:max_examples]]}",
              count=int(lonely.size), nodes=[int(v) for v in lonely[:max_examples]])
    one_way = ~np.isin(dst.astype(np.int64) * max(n, 1) + src, unique_codes)
    if one_way.any():
        examples = [[int(a), int(b)] for a, b in zip(src[one_way][:max_examples], dst[one_way][:max_examples])]
        issue("directed", label, f"{int(one_way.sum())} edge(s) have no reverse edge, e.g. {examples}; "
              "make the graph undirected if its relation is (from_edges(..., undirected=True))",
              count=int(one_way.sum()), examples=examples)
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = np.intersect1d(sets[a], sets[b])
            if shared.size:
                issue("leakage", f"{a}+{b}", f"{shared.size} node(s) of {a} are also in {b}, e.g. nodes "
                      f"{[int(v) for v in shared[:max_examples]]}", count=int(shared.size),
                      nodes=[int(v) for v in shared[:max_examples]])
    where = "train" if "train" in sets else label
    train_y = y[sets["train"]] if "train" in sets else y
    train_y = train_y[train_y >= 0]
    counts = np.bincount(train_y, minlength=graph.num_classes) if train_y.size else np.zeros(graph.num_classes, dtype=np.int64)
    scope = "train node" if "train" in sets else "node"
    if not train_y.size:
        issue("no_train_labels", where, f"no {scope} has a label (y is -1 everywhere): a classifier has nothing to learn",
              classes=list(graph.class_names))
    empty = [graph.class_names[c] for c in np.flatnonzero(counts == 0)]
    if empty and train_y.size:
        issue("unlabeled_classes", where, f"{len(empty)} class(es) have no labeled {scope}, e.g. {empty[:max_examples]}: "
              "the model cannot learn them", classes=empty)
    few = [(graph.class_names[c], int(counts[c])) for c in np.flatnonzero((counts > 0) & (counts < min_labels))]
    if few:
        issue("few_labels", where, f"{len(few)} class(es) have fewer than {min_labels} labeled {scope}s, e.g. "
              f"(class, labels) {few[:max_examples]}", min_labels=min_labels, classes=[c for c, _ in few],
              counts=[k for _, k in few])
    return out
