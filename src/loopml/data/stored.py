"""Datasets stored by content: the rows themselves, once per fingerprint, with their lineage both ways.

:func:`store_dataset` keeps a dataset's record (schema, profile) and its rows,
as the file ``_datasets/<fingerprint>.npz`` under the artifact root
(:mod:`loopml.data.rows`: a compact, reproducible ``.npz``). The same content
is stored once, however many runs or calls store it; the file is checked
against its sha256 and the fingerprint whenever it is read
(:func:`loopml.data.sources.stored`), so an altered file raises
:class:`~loopml.errors.IntegrityError` instead of training on other data.

``origin`` says how the dataset was made (a JSON object, e.g. ``{"kind":
"labels", "model": "digits", "version": 3}``) and ``predictions`` which logged
predictions its rows came from (``(request_id, row)`` pairs), so that
:func:`lineage` answers both ways: which runs and model versions used a
dataset, and which predictions made it; :func:`datasets_of_request` the reverse.

>>> from loopml.data.sources import stored
>>> from loopml.tracking.api import backend_for
>>> fp = store_dataset(parts.train, origin={"kind": "split", "of": "digits"})
>>> stored(backend_for(None), fp).fingerprint == fp
True
>>> sorted(lineage(fp))
['fingerprint', 'origin', 'predictions', 'runs', 'stored', 'versions']
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    ArgumentError,
    ArgumentTypeError,
    DataError,
    IntegrityError,
    NotFound,
)
from ..files import atomic_path
from ..tracking.api import backend_for
from .dataset import Dataset
from .graph import Graph
from .lineage import dataset_record
from .rows import store_rows, write_rows
from .sources import stored

if TYPE_CHECKING:
    from ..store.protocols import TrackingBackend

__all__ = [
    "EXPORT_SUFFIXES",
    "datasets_of_request",
    "export_dataset",
    "lineage",
    "resolve_prefix",
    "store_dataset",
    "stored_graph",
]

EXPORT_SUFFIXES = (".npz", ".csv", ".parquet")

MIN_PREFIX = 12  # hex digits of a fingerprint that name one dataset, as `loopml data list` prints them


def _backend(backend: "TrackingBackend | None", tracking_uri: str | None = None) -> "TrackingBackend":
    return backend if backend is not None else backend_for(tracking_uri)


def store_dataset(
    ds: Dataset | Graph,
    *,
    origin: Mapping[str, Any] | None = None,
    predictions: Sequence[tuple[str, int]] | None = None,
    backend: "TrackingBackend | None" = None,
) -> str:
    """Store ``ds``'s record and rows by content; returns its fingerprint.

    ``origin``: how it was made, a JSON object (the first origin recorded stays).
    ``predictions``: the ``(request_id, row)`` pairs of the logged predictions its
    rows came from. ``backend``: the store (default: the current tracking URI's).
    A Graph keeps its :meth:`~loopml.data.graph.Graph.save` file; :func:`stored_graph` reads it.

    >>> store_dataset(parts.train, origin={"kind": "split", "of": "digits", "seed": 0})
    '701273ed113105829dae267939703c6b49303ef68aaf384f73ed6dc3c1fb7704'
    """
    if not isinstance(ds, (Dataset, Graph)):
        raise ArgumentTypeError(f"Argument ds should be a loopml.data.Dataset or Graph, got {type(ds).__name__}")
    b = _backend(backend)
    try:  # known content: its record stands (profiling large data again would take seconds)
        record = b.get_dataset(ds.fingerprint)
    except NotFound:
        record = dataset_record(ds)
    b.put_dataset(record, origin=origin, predictions=predictions)
    store_rows(b, ds)
    return ds.fingerprint


def stored_graph(fingerprint: str, *, backend: "TrackingBackend | None" = None) -> Graph:
    """The graph stored as ``fingerprint`` (by :func:`store_dataset` or ``log_dataset``), checked against it.

    ``fingerprint`` may be a unique prefix of 12+ hex digits. Its name, source and masks are those
    stored with it (the first store of the content). Raises :class:`~loopml.errors.DataError` when the
    dataset is not a graph, :class:`~loopml.errors.NotFound` when its rows are not stored,
    :class:`~loopml.errors.IntegrityError` when the file no longer matches.

    Example::

        fp = store_dataset(karate_club())
        stored_graph(fp[:12]).num_nodes        # 34
    """
    b = _backend(backend)
    fp = resolve_prefix(b, fingerprint)
    record = b.get_dataset(fp)
    if (record.get("schema") or {}).get("kind") != "graph":
        raise DataError(f"Dataset {fp[:12]}... ({record.get('name')}) is not a graph; read it with "
                        "loopml.data.sources.stored(backend, fingerprint)")
    with tempfile.TemporaryDirectory(prefix="loopml-graph-") as tmp:
        local = b.download_dataset_rows(fp, Path(tmp))
        try:
            return Graph.load(local, fingerprint=fp, name=record.get("name"), source=record.get("source"))
        except DataError as exc:  # whole (its sha256 matched) but not this graph
            raise IntegrityError(f"The stored graph {fp[:12]}... does not match its fingerprint: {exc}") from exc


def resolve_prefix(backend: "TrackingBackend", fp_or_prefix: str) -> str:
    """The whole fingerprint that ``fp_or_prefix`` (64 hex digits, or a unique prefix of 12 or more) names."""
    import re

    if not isinstance(fp_or_prefix, str) or not re.fullmatch(r"[0-9a-f]{12,64}", fp_or_prefix):
        raise ArgumentError(
            f"Argument fingerprint should be a dataset's fingerprint or its first {MIN_PREFIX}+ lowercase hex digits "
            f"(as `loopml data list` prints it), got {fp_or_prefix!r}"
        )
    matches = [r["fingerprint"] for r in backend.list_datasets(prefix=fp_or_prefix, limit=2)]
    if not matches:
        raise NotFound(f"No dataset's fingerprint starts with {fp_or_prefix!r}; `loopml data list` shows the stored ones")
    if len(matches) > 1:
        raise ArgumentError(
            f"Argument fingerprint {fp_or_prefix!r} names more than one dataset ({matches[0][:16]}..., {matches[1][:16]}...); "
            "give more of its hex digits"
        )
    return str(matches[0])


def lineage(fingerprint: str, *, backend: "TrackingBackend | None" = None, limit: int = 100) -> dict[str, Any]:
    """Where a dataset came from and where it went.

    ``{"fingerprint", "origin", "stored", "runs": [{"run_id", "role", "run_name",
    "experiment", "start_time"}], "versions": [{"name", "version", "roles"}],
    "predictions": {"rows", "request_ids", "truncated"}}``: the runs that used it by
    role, the model versions whose lineage records it, and the logged predictions
    its rows came from (their count, and at most ``limit`` request ids).
    ``fingerprint`` may be a unique prefix of 12+ hex digits.

    >>> "train" in {r["role"] for r in lineage(parts.train.fingerprint[:12])["runs"]}
    True
    """
    b = _backend(backend)
    return b.dataset_lineage(resolve_prefix(b, fingerprint), limit=limit)


def datasets_of_request(request_id: str, *, backend: "TrackingBackend | None" = None) -> list[dict[str, Any]]:
    """The datasets whose rows came from the logged request ``request_id``: ``[{"fingerprint", "name", "origin", "rows"}]``.

    >>> fp = store_dataset(parts.test.subset([0, 1]), predictions=[("3f2a9c", 0), ("77b1e0", 0)])
    >>> [d["rows"] for d in datasets_of_request("3f2a9c")]
    [[0]]
    """
    return _backend(backend).datasets_of_request(request_id)


def export_dataset(
    fingerprint: str,
    out: str | os.PathLike[str],
    *,
    target: str = "label",
    backend: "TrackingBackend | None" = None,
) -> Path:
    """Write a stored dataset's rows to ``out``: ``.npz`` (arrays ``x`` and ``y``), or for a table
    ``.csv`` / ``.parquet`` (its columns, then the label column ``target``: class names, or the
    regression target). ``fingerprint`` may be a unique prefix of 12+ hex digits. Each form reads
    back with :func:`loopml.data.read_file` (``target=`` for a table).

    >>> export_dataset(parts.train.fingerprint[:12], "train.npz")
    PosixPath('train.npz')
    """
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise ArgumentError(f"Argument out should end in .npz, .csv or .parquet, got {str(path)!r}; e.g. --out train.npz")
    b = _backend(backend)
    ds = stored(b, resolve_prefix(b, fingerprint))
    if suffix == ".npz":
        return write_rows(path, ds)
    if ds.x.ndim != 2:
        raise ArgumentError(f"Argument out should be an .npz for images ({tuple(ds.x.shape)}); a table (.csv, .parquet) holds 2-D rows only")
    if not isinstance(target, str) or not target or target in ds.feature_names:
        raise ArgumentError(f"Argument target should name a new column for the labels (not a feature), got {target!r}")
    import pandas as pd

    frame = pd.DataFrame(ds.x.numpy(), columns=ds.feature_names)
    y = ds.y.numpy()
    names = ds.class_names
    frame[target] = [names[i] for i in y] if names is not None else y  # classes by name; a regression's targets
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401  # pandas writes parquet through pyarrow
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError("Writing .parquet files needs pyarrow: pip install 'loopml[parquet]'") from exc
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    return path
