"""Storing datasets with runs: ``log_dataset(run, ds, role="train")`` and ``log_check(run, report)``.

A dataset's record (:func:`dataset_record`) is its fingerprint, name, task,
row count, schema, profile and source; the store keeps one record per
fingerprint and links each run to the datasets it used, by role::

    with loopml.start_run(experiment="digits") as run:
        parts = split(load("digits"))
        for role, ds in zip(("train", "val", "test"), parts):
            log_dataset(run, ds, role=role)
        log_check(run, check(parts))

The link also becomes the run tag ``dataset.<role>`` (the fingerprint), so
runs can be searched by data: ``loopml.runs(filter="tags.`dataset.train` = '...'")``.

Rows up to :data:`loopml.data.sources.KEEP_ROWS_BYTES` (32 MiB of ``x`` and
``y``) are also kept, by content (:func:`loopml.data.store_dataset`: the file
``_datasets/<fingerprint>.npz`` under the artifact root, once however many runs
log them), so that quantizing or fitting the OOD gate of a version registered from the run
later finds its data without being told (:func:`loopml.data.sources.stored`). A
``train`` dataset's drift reference (:mod:`loopml.data.reference`) is kept at any size.

A :class:`~loopml.data.graph.Graph` is a dataset too: its record holds its graph
profile (:func:`loopml.data.profile`), its rows the file of
:meth:`~loopml.data.graph.Graph.save` (``x``, ``edge_index``, ``y``, masks) under
the same ``_datasets/<fingerprint>.npz``, read back by :func:`loopml.data.stored_graph`.
``log_dataset(run, nodes, role="train")`` with a graph's :class:`~loopml.data.graph.Nodes`
(what ``Trainer.fit`` logs) links the graph and tags the set's size:
``dataset.<role>.nodes`` and ``dataset.<role>.labeled``. A graph keeps no drift reference.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ArgumentTypeError
from ..tracking.run import Run
from .checks import CheckReport
from .dataset import Dataset
from .graph import Graph, Nodes
from .profile import profile
from .reference import save_reference
from .rows import store_rows
from .sources import KEEP_ROWS_BYTES

if TYPE_CHECKING:
    from ..store.protocols import TrackingBackend
    from ..tracking.run import Run

__all__ = ["dataset_record", "log_check", "log_dataset"]


def dataset_record(ds: Dataset | Graph) -> dict[str, Any]:
    """The JSON-ready record the store keeps for ``ds`` (a Dataset or a Graph)."""
    if not isinstance(ds, (Dataset, Graph)):
        raise ArgumentTypeError(f"Argument ds should be a loopml.data.Dataset or Graph, got {type(ds).__name__}")
    return {
        "fingerprint": ds.fingerprint,
        "name": ds.name,
        "task": ds.task,
        "n_rows": len(ds),
        "schema": ds.schema(),
        "profile": profile(ds),
        "source": ds.source,
    }


def _backend(run: "Run") -> "TrackingBackend":
    if not isinstance(run, Run):
        raise ArgumentTypeError(f"Argument run should be a loopml Run (from loopml.start_run), got {type(run).__name__}")
    return run.backend


def log_dataset(run: "Run", ds: Dataset | Graph | Nodes, role: str = "train", *, keep_rows: bool | None = None) -> str:
    """Store ``ds``'s record and link it to ``run`` as ``role``; returns the fingerprint.

    ``keep_rows``: also keep the rows, by content (``_datasets/<fingerprint>.npz``
    under the artifact root, stored once); default: when ``x`` and ``y`` take at most 32 MiB. A ``train`` dataset's drift
    reference is kept whatever its size (``datasets/<fingerprint>.reference.npz``,
    :mod:`loopml.data.reference`): a version registered from the run stores it.
    A Graph, or a graph's Nodes (their graph, and their size as tags), see the module docstring.

    >>> with loopml.start_run(experiment="digits") as run:
    ...     log_dataset(run, parts.train, role="train")
    '701273ed113105829dae267939703c6b49303ef68aaf384f73ed6dc3c1fb7704'
    """
    backend = _backend(run)
    if keep_rows is not None and not isinstance(keep_rows, bool):
        raise ArgumentTypeError(f"Argument keep_rows should be True, False or None (keep up to 32 MiB), got {keep_rows!r}")
    nodes = ds if isinstance(ds, Nodes) else None
    data = ds.graph if isinstance(ds, Nodes) else ds
    record = dataset_record(data)
    backend.log_dataset(run.id, record, role)
    size = data.x.nbytes + data.y.nbytes + (data.edge_index.nbytes if isinstance(data, Graph) else 0)
    if keep_rows or (keep_rows is None and size <= KEEP_ROWS_BYTES):
        store_rows(backend, data)
    if role == "train" and isinstance(data, Dataset):
        save_reference(run, data)
    tags: dict[str, Any] = {f"dataset.{role}": record["fingerprint"]}
    if nodes is not None:
        tags.update({f"dataset.{role}.nodes": len(nodes), f"dataset.{role}.labeled": nodes.labeled})
    run.set_tags(tags)
    return str(record["fingerprint"])


def log_check(run: "Run", report: CheckReport, *, name: str = "data_check.json") -> None:
    """Keep ``report`` with the run: the artifact ``name`` (its ``to_dict()``) and the tag ``data_check``."""
    _backend(run)
    if not isinstance(report, CheckReport):
        raise ArgumentTypeError(f"Argument report should be a loopml.data.CheckReport, got {type(report).__name__}")
    with tempfile.TemporaryDirectory(prefix="loopml-check-") as tmp:
        path = Path(tmp) / "report.json"
        path.write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False))
        run.log_artifact(path, name=name)
    summary = "ok" if report.ok else "errors"
    run.set_tags({"data_check": f"{summary}: {len(report.errors)} errors, {len(report.warnings)} warnings"})
