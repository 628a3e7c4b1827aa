"""Partitions of a loopml Dataset into federated clients: which rows each client holds.

Four schemes (``PARTITIONS``), all seeded and reproducible:

- ``"iid"``: a random permutation cut into near-equal parts; every client sees every class.
- ``"dirichlet"``: label skew; for each class, the shares of its rows across clients are drawn
  from Dirichlet(alpha) (Hsu et al. 2019, as Flower's ``DirichletPartitioner``). A small alpha
  (0.1) gives clients that hold mostly one or two classes, a large one (100) is close to iid.
- ``"column"``: natural clients, one per distinct value of a tabular feature (a hospital, a
  site, a device).
- ``"shards"``: rows sorted by label, cut into ``clients * shards`` shards, and each client
  dealt ``shards`` of them at random (McMahan et al. 2017): a few classes per client.

>>> import numpy as np
>>> from loopml.data import from_arrays
>>> data = from_arrays(np.random.default_rng(0).random((600, 4)), np.arange(600) % 3)
>>> parts = partition(data, 5, "dirichlet", alpha=0.5, seed=1)
>>> len(parts), int(parts.sizes.sum())
(5, 600)
>>> parts.counts.shape
(5, 3)
>>> [len(d) for d in parts.subsets(data)] == parts.sizes.tolist()
True

Why not flwr-datasets: its partitioners (IidPartitioner, DirichletPartitioner, ShardPartitioner,
NaturalIdPartitioner) partition Hugging Face ``datasets.Dataset`` objects and need the
``datasets`` package with its Arrow tables; a loopml Dataset is two tensors, so the few lines of
index arithmetic are written here against NumPy instead of converting every dataset to Arrow
and adding that dependency to the ``federated`` extra.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from ..data.dataset import Dataset
from ..errors import ArgumentError, ArgumentTypeError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["PARTITIONS", "Partitions", "partition"]

PARTITIONS = ("iid", "dirichlet", "column", "shards")

# Dirichlet draws are repeated until every client has min_size rows. When that is likely
# (clients * min_size well below the rows) a few draws suffice; past this many it almost
# never happens, and the caller should change the settings rather than wait.
DIRICHLET_TRIES = 100
_ANNOTATE_CELLS = 200  # the heat map writes each count in its cell up to this many cells
_LEVELS = " ▁▂▃▄▅▆▇█"  # text(): one character per class, its height the class's share of the client


class Partitions:
    """Which rows of a Dataset each client holds, with the statistics that describe the split.

    Built by :func:`partition`. ``indices[i]`` holds client ``i``'s row indices (sorted int64);
    ``counts`` is clients x classes (None for regression). The views: :meth:`table` (a
    DataFrame), :meth:`summary` and :meth:`to_dict` (logged with the federation's run),
    :meth:`plot` (a clients x classes heat map) and :meth:`text` (the terminal's rendering).

    >>> import numpy as np
    >>> from loopml.data import from_arrays
    >>> data = from_arrays(np.zeros((8, 2)), [0, 0, 0, 0, 1, 1, 1, 1])
    >>> parts = partition(data, 2, "shards", shards=1, seed=0)
    >>> parts.counts.tolist(), parts.summary()["label_skew"]
    ([[4, 0], [0, 4]], 0.5)
    >>> parts[1].tolist()
    [4, 5, 6, 7]
    """

    def __init__(
        self,
        *,
        indices: Sequence[np.ndarray],
        how: str,
        params: dict[str, Any],
        n_rows: int,
        labels: np.ndarray | None = None,
        class_names: Sequence[str] | None = None,
        client_names: Sequence[str] | None = None,
    ) -> None:
        self.indices = [np.sort(np.asarray(i, dtype=np.int64)) for i in indices]
        if not self.indices:
            raise ArgumentError("Argument indices should hold one array of row indices per client, got none")
        self.how = how
        self.params = dict(params)
        self.n_rows = int(n_rows)
        self.sizes = np.array([len(i) for i in self.indices], dtype=np.int64)
        if (self.sizes == 0).any():  # a client with no rows would fail its first round, far from this cause
            empty = np.flatnonzero(self.sizes == 0).tolist()
            raise ArgumentError(f"Argument indices should give every client rows; clients {empty} have none")
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.client_names = (
            [f"client {i}" for i in range(len(self.indices))] if client_names is None else [str(c) for c in client_names]
        )
        if len(self.client_names) != len(self.indices):
            raise ArgumentError(
                f"Argument client_names should name each of the {len(self.indices)} clients, got {len(self.client_names)}"
            )
        self.counts: np.ndarray | None = None
        if labels is not None and self.class_names is not None:
            k = len(self.class_names)
            self.counts = np.stack([np.bincount(labels[i], minlength=k)[:k] for i in self.indices]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, client: int) -> np.ndarray:
        return self.indices[client]

    def __repr__(self) -> str:
        skew = self._label_skew()
        tail = "" if skew is None else f", label skew {skew:.2f}"
        return (
            f"<Partitions {self.how}: {len(self)} clients, rows {int(self.sizes.min())}..{int(self.sizes.max())}{tail}>"
        )

    # -- views ------------------------------------------------------------------------------

    def subsets(self, data: Dataset) -> list[Dataset]:
        """One Dataset per client, named ``"<data.name>/client-<i>"``: the rows of ``data`` it holds.

        ``data`` must be the Dataset that was partitioned (the same number of rows).
        """
        if not isinstance(data, Dataset):
            raise ArgumentTypeError(f"Argument data should be a loopml Dataset, got {type(data).__name__}")
        if len(data) != self.n_rows:
            raise ArgumentError(
                f"Argument data should be the Dataset that was partitioned ({self.n_rows} rows), got {len(data)} rows; "
                "partition this dataset with loopml.federated.partition(data, ...)"
            )
        return [data.subset(idx, name=f"{data.name}/client-{i}") for i, idx in enumerate(self.indices)]

    def table(self) -> "pd.DataFrame":
        """One row per client (indexed by its name): ``rows`` and, for classification, one column per class."""
        import pandas as pd

        frame = pd.DataFrame({"rows": self.sizes}, index=pd.Index(self.client_names, name="client"))
        if self.counts is not None and self.class_names is not None:
            for j, name in enumerate(self.class_names):
                frame[name] = self.counts[:, j]
        return frame

    def _label_skew(self) -> float | None:
        """The mean total-variation distance between each client's class distribution and the whole data's.

        0 when every client has the global mix; 1 - (the global share of its class) for a
        client that holds a single class; it grows as alpha shrinks.
        """
        if self.counts is None:
            return None
        total = self.counts.sum(axis=0)
        glob = total / max(int(total.sum()), 1)
        local = self.counts / np.maximum(self.counts.sum(axis=1, keepdims=True), 1)
        return float(np.mean(0.5 * np.abs(local - glob).sum(axis=1)))

    def summary(self) -> dict[str, Any]:
        """Client sizes (min, median, max), the label skew and the classes each client holds, JSON-ready.

        ``label_skew`` is the mean over clients of the total-variation distance between the
        client's class distribution and the whole data's (0: iid; near 1: each client holds
        one class of many). ``classes_per_client`` counts the classes with at least one row in
        each client. Both are None for regression.
        """
        skew = self._label_skew()
        held = None if self.counts is None else [int(n) for n in (self.counts > 0).sum(axis=1)]
        return {
            "clients": len(self),
            "rows": int(self.sizes.sum()),
            "sizes": {
                "min": int(self.sizes.min()),
                "median": float(np.median(self.sizes)),
                "max": int(self.sizes.max()),
            },
            "label_skew": None if skew is None else round(skew, 6),
            "classes_per_client": held,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything that describes the partition, JSON-ready: what a federation's run logs."""
        return {
            "how": self.how,
            "params": dict(self.params),
            "client_names": list(self.client_names),
            "sizes": [int(s) for s in self.sizes],
            "class_names": None if self.class_names is None else list(self.class_names),
            "counts": None if self.counts is None else self.counts.tolist(),
            "summary": self.summary(),
        }

    def plot(self, ax: "Axes | None" = None) -> "Figure":
        """A matplotlib figure: the clients x classes counts as a heat map (rows per client for regression).

        Counts are written in the cells when there are at most a few hundred of them. Draws on
        ``ax`` when given (and returns its figure), else on a new bare Figure (no pyplot, no
        global state, so any thread can draw one without a display).
        """
        try:
            from matplotlib.figure import Figure
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(f"Partitions.plot needs {exc.name}: pip install 'loopml[federated]'") from exc

        n = len(self)
        k = 0 if self.class_names is None else len(self.class_names)
        if ax is None:
            width = min(3.0 + 0.45 * max(k, 4), 16.0)
            height = min(1.5 + 0.3 * n, 14.0)
            fig = Figure(figsize=(width, height), dpi=100)
            ax = fig.add_subplot()
        else:
            owner = ax.get_figure(root=True)
            if not isinstance(owner, Figure):
                raise ArgumentError("Argument ax should be a matplotlib Axes placed on a Figure, got one without a figure")
            fig = owner
        rows = range(n)
        step = max(1, math.ceil(n / 40))  # tick every client up to 40, then thin them out
        if self.counts is None or self.class_names is None:
            ax.barh(rows, self.sizes, color="#2471a3")
            ax.invert_yaxis()
            ax.set_xlabel("rows")
        else:
            image = ax.imshow(self.counts, aspect="auto", cmap="Blues", interpolation="nearest")
            fig.colorbar(image, ax=ax, label="rows")
            if self.counts.size <= _ANNOTATE_CELLS:
                top = max(int(self.counts.max()), 1)
                for (i, j), value in np.ndenumerate(self.counts):
                    colour = "white" if value > 0.6 * top else "#222222"
                    ax.text(j, i, str(value), ha="center", va="center", fontsize=7, color=colour)
            kstep = max(1, math.ceil(k / 30))
            ax.set_xticks(range(0, k, kstep), self.class_names[::kstep], rotation=90 if k > 12 else 0)
            ax.set_xlabel("class")
        ax.set_yticks(rows[::step], self.client_names[::step])
        ax.set_ylabel("client")
        skew = self._label_skew()
        title = f"{self.how} partition, {n} clients"
        ax.set_title(title if skew is None else f"{title}, label skew {skew:.2f}", fontsize=9)
        fig.tight_layout()
        return fig

    def text(self, *, width: int = 100) -> str:
        """A compact rendering for a terminal: one line per client, its rows and one character per class.

        Each class's character rises with that class's share of the client's rows (blank: none,
        full block: all of them), so a skewed client shows a few tall characters and an iid one
        an even row of short ones.
        """
        import io

        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        skew = self._label_skew()
        lines = [f"{self.how} partition: {len(self)} clients, {int(self.sizes.sum())} rows"]
        if skew is not None:
            lines[0] += f", label skew {skew:.2f}"
        table = Table(box=None, pad_edge=False)
        table.add_column("client", no_wrap=True)
        table.add_column("rows", justify="right")
        if self.counts is not None and self.class_names is not None:
            table.add_column("classes", no_wrap=True)
            shares = self.counts / np.maximum(self.sizes[:, None], 1)
            for name, size, share in zip(self.client_names, self.sizes, shares, strict=True):
                bars = "".join(_LEVELS[0] if s == 0 else _LEVELS[max(1, round(s * (len(_LEVELS) - 1)))] for s in share)
                table.add_row(Text(name), str(int(size)), Text(bars))
        else:
            table.add_column("", no_wrap=True)
            top = max(int(self.sizes.max()), 1)
            for name, size in zip(self.client_names, self.sizes, strict=True):
                table.add_row(Text(name), str(int(size)), Text("█" * max(1, round(30 * int(size) / top))))
        out = io.StringIO()
        Console(file=out, width=width, color_system=None, force_terminal=False, highlight=False).print(table)
        lines.append(out.getvalue().rstrip())
        if self.class_names is not None:
            lines.append(f"classes, one character each (its height: the class's share of the client's rows): "
                         f"{' '.join(self.class_names)}")
        return "\n".join(line.rstrip() for text in lines for line in text.splitlines()) + "\n"


# -- building partitions ------------------------------------------------------------------


def _is_int(value: object) -> TypeGuard[numbers.Integral]:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_int(name: str, value: object, low: int, hint: str) -> int:
    if not _is_int(value):
        raise ArgumentTypeError(f"Argument {name} should be an int >= {low}, got {value!r}; {hint}")
    number = int(value)
    if number < low:
        raise ArgumentError(f"Argument {name} should be an int >= {low}, got {number}; {hint}")
    return number


def _check_clients(clients: object, n: int, how: str) -> int:
    hint = "or None for one client per value of the column" if how == "column" else "e.g. clients=10"
    count = _check_int("clients", clients, 1, hint)
    if count > n:
        raise ArgumentError(
            f"Argument clients should be at most the number of rows ({n}), got {count}; lower clients"
        )
    return count


def _too_small(how: str, sizes: np.ndarray, min_size: int, fix: str) -> ArgumentError:
    small = int((sizes < min_size).sum())
    return ArgumentError(
        f"partition(how={how!r}) left {small} of {len(sizes)} clients with fewer than min_size={min_size} rows "
        f"(smallest: {int(sizes.min())}); {fix}"
    )


def _classes(data: Dataset, how: str) -> np.ndarray:
    if data.task != "classification":
        raise ArgumentError(
            f"partition(how={how!r}) splits rows by class and needs a classification dataset; "
            f"{data.name!r} is {data.task}: use how='iid' or how='column'"
        )
    return data.y.numpy()


def _iid(n: int, clients: int, rng: np.random.Generator, min_size: int) -> list[np.ndarray]:
    parts = np.array_split(rng.permutation(n), clients)
    if n // clients < min_size:
        raise _too_small("iid", np.array([len(p) for p in parts]), min_size, "lower clients or min_size")
    return parts


def _dirichlet(y: np.ndarray, clients: int, alpha: float, rng: np.random.Generator, min_size: int) -> list[np.ndarray]:
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    sizes = np.zeros(clients, dtype=np.int64)
    for _ in range(DIRICHLET_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for rows in by_class:
            shares = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(np.int64)
            for client, piece in enumerate(np.split(rng.permutation(rows), cuts)):
                parts[client].append(piece)
        joined = [np.concatenate(p) for p in parts]
        sizes = np.array([len(p) for p in joined], dtype=np.int64)
        if sizes.min() >= min_size:
            return joined
    raise ArgumentError(
        f"partition(how='dirichlet', alpha={alpha}) gave no split with at least min_size={min_size} rows in each of "
        f"{clients} clients in {DIRICHLET_TRIES} draws (the last one's smallest client: {int(sizes.min())} rows, "
        f"from {len(y)} rows); lower clients or min_size, or raise alpha (a larger alpha spreads each class more evenly)"
    )


def _shards(y: np.ndarray, clients: int, shards: int, rng: np.random.Generator, min_size: int) -> list[np.ndarray]:
    n = len(y)
    if clients * shards > n:
        raise ArgumentError(
            f"partition(how='shards') needs clients * shards <= rows: {clients} * {shards} = {clients * shards} "
            f"shards of {n} rows; lower clients or shards"
        )
    # the permutation first, so that a class's rows are dealt in a random order (a stable sort keeps it)
    perm = rng.permutation(n)
    ordered = perm[np.argsort(y[perm], kind="stable")]
    pieces = np.array_split(ordered, clients * shards)
    dealt = rng.permutation(clients * shards).reshape(clients, shards)
    parts = [np.concatenate([pieces[s] for s in row]) for row in dealt]
    sizes = np.array([len(p) for p in parts], dtype=np.int64)
    if sizes.min() < min_size:
        raise _too_small("shards", sizes, min_size, "lower clients or min_size, or raise shards")
    return parts


def _column_index(data: Dataset, column: object) -> int:
    if data.kind != "tabular":
        raise ArgumentError(
            f"partition(how='column') reads a feature column of a table; {data.name!r} holds images: "
            "use how='iid', 'dirichlet' or 'shards'"
        )
    if isinstance(column, str):
        if column not in data.feature_names:
            raise ArgumentError(
                f"Argument column should name a feature of {data.name!r}, got {column!r}; features: {data.feature_names}"
            )
        return data.feature_names.index(column)
    if _is_int(column):
        j = int(column)
        if not 0 <= j < len(data.feature_names):
            raise ArgumentError(
                f"Argument column should be a feature index 0..{len(data.feature_names) - 1} or a feature name, got {j}"
            )
        return j
    if column is None:
        raise ArgumentError(
            "Argument column should name the feature whose values are the clients for how='column', got None; "
            f"e.g. partition(data, None, 'column', column={data.feature_names[0]!r}) (features: {data.feature_names})"
            if data.feature_names
            else "Argument column should name a feature for how='column', but the dataset has no features"
        )
    raise ArgumentTypeError(f"Argument column should be a feature name (str) or index (int), got {type(column).__name__}")


def _value_name(value: float, categories: list[str] | None) -> str:
    if categories is not None and float(value).is_integer() and 0 <= int(value) < len(categories):
        return categories[int(value)]
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _by_column(data: Dataset, column: object, clients: int | None, min_size: int) -> tuple[list[np.ndarray], list[str], str]:
    j = _column_index(data, column)
    name = data.feature_names[j]
    values = data.x[:, j].numpy()
    missing = int(np.isnan(values).sum())
    if missing:
        raise ArgumentError(
            f"partition(how='column', column={name!r}): {missing} of {len(values)} rows have no value (NaN) in "
            f"{name!r}, and a row without a value belongs to no client; drop or fill those rows first "
            "(e.g. data.subset(np.flatnonzero(~np.isnan(data.x[:, j]))))"
        )
    distinct, inverse = np.unique(values, return_inverse=True)
    if clients is not None and clients != len(distinct):
        raise ArgumentError(
            f"Argument clients should be None (one client per value) or {len(distinct)}, the number of distinct values "
            f"of column {name!r}, got {clients}"
        )
    parts = [np.flatnonzero(inverse == v) for v in range(len(distinct))]
    names = [_value_name(float(v), data.categories.get(name)) for v in distinct]
    sizes = np.array([len(p) for p in parts], dtype=np.int64)
    if sizes.min() < min_size:
        small = [names[i] for i in np.flatnonzero(sizes < min_size)[:5]]
        raise ArgumentError(
            f"partition(how='column', column={name!r}): the values {small} have fewer than min_size={min_size} rows; "
            "drop those rows or lower min_size"
        )
    return parts, names, name


def partition(
    data: Dataset,
    clients: int | None,
    how: str = "iid",
    *,
    alpha: float = 0.5,
    column: str | int | None = None,
    shards: int = 2,
    seed: int = 0,
    min_size: int = 1,
) -> Partitions:
    """Split ``data``'s rows among ``clients`` federated clients by the scheme ``how`` (see the module docstring).

    ``alpha`` (dirichlet): the concentration; smaller is more skewed. ``column`` (column): the
    feature (name or index) whose distinct values are the clients; ``clients`` may then be None.
    ``shards`` (shards): shards per client. ``seed`` makes every scheme reproducible;
    ``min_size``: each client gets at least this many rows or the call fails (Dirichlet draws
    again, up to ``DIRICHLET_TRIES`` times), so no client is ever empty.

    Example::

        parts = partition(data, 10, "dirichlet", alpha=0.5, seed=0)
        parts.table(); parts.plot(); client_data = parts.subsets(data)
    """
    if not isinstance(data, Dataset):
        raise ArgumentTypeError(
            f"Argument data should be a loopml Dataset, got {type(data).__name__}; "
            "build one with loopml.data.from_arrays(x, y) or loopml.data.load(...)"
        )
    if not isinstance(how, str) or how not in PARTITIONS:
        raise ArgumentError(f"Argument how should be one of {PARTITIONS}, got {how!r}")
    n = len(data)
    if n == 0:
        raise ArgumentError(f"Argument data should have rows to partition; {data.name!r} is empty")
    seed = _check_int("seed", seed, 0, "pass e.g. seed=0")
    min_size = _check_int("min_size", min_size, 1, "every client needs at least one row")
    shards = _check_int("shards", shards, 1, "the number of label-sorted shards dealt to each client, e.g. shards=2")
    if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool):
        raise ArgumentTypeError(f"Argument alpha should be a number > 0 (e.g. alpha=0.5), got {alpha!r}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ArgumentError(
            f"Argument alpha should be a finite number > 0, got {alpha}; "
            "small values (0.1) give skewed clients, large ones (100) nearly iid clients"
        )
    alpha = float(alpha)
    if column is not None and how != "column":
        raise ArgumentError(f"Argument column is read only by how='column', got how={how!r}; drop column= or pass how='column'")

    rng = np.random.default_rng(seed)
    params: dict[str, Any] = {"how": how, "clients": clients, "seed": seed, "min_size": min_size}
    names: list[str] | None = None
    if how == "column":
        wanted = None if clients is None else _check_clients(clients, n, how)
        parts, names, params["column"] = _by_column(data, column, wanted, min_size)
        params["clients"] = len(parts)
    else:
        count = params["clients"] = _check_clients(clients, n, how)
        if how == "iid":
            parts = _iid(n, count, rng, min_size)
        elif how == "dirichlet":
            y = _classes(data, how)
            if count * min_size > n:
                raise ArgumentError(
                    f"partition(how='dirichlet') cannot give each of {count} clients min_size={min_size} rows "
                    f"from {n} rows; lower clients or min_size"
                )
            parts = _dirichlet(y, count, alpha, rng, min_size)
            params["alpha"] = alpha
        else:
            parts = _shards(_classes(data, how), count, shards, rng, min_size)
            params["shards"] = shards
    labels = data.y.numpy() if data.task == "classification" else None
    return Partitions(
        indices=parts, how=how, params=params, n_rows=n, labels=labels, class_names=data.class_names, client_names=names
    )
