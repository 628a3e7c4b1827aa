"""What the trainer accepts as data, turned into a DataLoader."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..data import check
from ..data.dataset import Dataset as LoopMLDataset  # torch's Dataset is `Dataset` here
from ..data.graph import Nodes
from ..data.preprocess import find_preprocessor
from ..errors import ArgumentError, ArgumentTypeError

__all__ = ["as_loader", "data_fingerprint", "run_data_check"]

_EXAMPLE = "e.g. trainer.fit((x_train, y_train), val=(x_val, y_val), epochs=5, batch_size=64)"


def as_loader(
    data: Any, *, name: str, batch_size: int, shuffle: bool, generator: torch.Generator | None = None,
    sampler: Callable[[Dataset[Any]], Iterable[int]] | None = None,
) -> DataLoader[Any] | tuple[Any, ...]:
    """A DataLoader from a DataLoader (as is), a map-style Dataset of (x, y), or an (x, y) tuple.

    ``sampler``, a function of the dataset, picks the indices instead (a rank's shard). A graph's
    :class:`~loopml.data.Nodes` gives its own batches (one full-graph batch is a one-item tuple).
    """
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Nodes):  # a graph's nodes: full-graph batches, or sampled subgraphs
        return data.loader(batch_size=batch_size, shuffle=shuffle, generator=generator)
    if isinstance(data, (tuple, list)) and len(data) in (1, 2):
        try:
            tensors = [torch.as_tensor(t) for t in data]
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ArgumentTypeError(f"Argument {name} should be an (x, y) tuple of tensors or arrays, {_EXAMPLE}") from exc
        if len({len(t) for t in tensors}) != 1:
            raise ArgumentError(
                f"Argument {name} should have as many targets as inputs, got "
                f"{' and '.join(str(len(t)) for t in tensors)} rows"
            )
        data = TensorDataset(*tensors)
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        if sampler is not None:
            return DataLoader(data, batch_size=batch_size, sampler=sampler(data))
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator)
    raise ArgumentTypeError(
        f"Argument {name} should be a torch Dataset returning (x, y), an (x, y) tuple of tensors, "
        f"or a DataLoader, got {type(data).__name__}; {_EXAMPLE}"
    )


def data_fingerprint(data: Any) -> str | None:
    """The dataset's ``fingerprint`` (attribute or method), if it has one."""
    fp = getattr(data, "fingerprint", None)
    if callable(fp):
        fp = fp()
    return None if fp is None else str(fp)


def run_data_check(train: Any, val: Any = None, *, model: torch.nn.Module | None = None) -> Any:
    """Run ``loopml.data.check`` on loopml datasets (train, val and leakage between them); stop on errors.

    Returns the report (the tracking callback logs it), or None for other data.
    Missing input values are no error (they are listed in ``report.ignored``) when ``model`` holds a
    :class:`~loopml.data.Preprocessor` that imputes every column that has them.
    A graph's :class:`~loopml.data.Nodes`: its graph (edges to missing nodes, features, labels per
    class in the train set) and leakage between the train and val nodes.
    """
    if data_fingerprint(train) is None:  # only loopml datasets carry a fingerprint
        return None
    if isinstance(train, Nodes):
        report = check(train, val=val if isinstance(val, Nodes) else None)
        report.raise_if_errors(override_hint="fix the graph, or pass check_data=False to fit()")
        return report
    if not isinstance(train, LoopMLDataset):
        return None
    val = val if isinstance(val, LoopMLDataset) else None
    ignore = ["missing_values"] if _imputed_in_model(model, [train, val]) else []
    report = check(train, val=val, ignore=ignore)
    report.raise_if_errors(override_hint="fix the data, or pass check_data=False to fit()")
    return report


def _imputed_in_model(model: torch.nn.Module | None, parts: list[Any]) -> bool:
    """Whether the model's Preprocessor imputes every input column with a missing value (and no target is missing)."""
    try:
        pre = find_preprocessor(model) if model is not None else None
    except ValueError:  # several Preprocessors: which one reads the rows is not known
        return False
    if pre is None:
        return False
    imputed = set(pre.imputed_columns)
    for ds in parts:
        if ds is None:
            continue
        if ds.kind != "tabular" or list(ds.feature_names) != pre.feature_names:
            return False
        gaps = torch.isnan(ds.x).any(dim=0).tolist()
        if any(gap and name not in imputed for gap, name in zip(gaps, ds.feature_names)):
            return False
        if ds.y.is_floating_point() and bool(torch.isnan(ds.y).any()):
            return False
    return True
