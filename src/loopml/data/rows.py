"""A dataset's rows as one compact, reproducible ``.npz`` file: what the store keeps once per content.

The file is a zip (deflate) of two NumPy arrays, ``x.npy`` and ``y.npy``, in
the dtypes a :class:`~loopml.data.Dataset` holds (``x`` float32, ``y`` int64
or float32), little-endian, every NaN the canonical one, so that the same
content always gives the same bytes: :func:`numpy.savez_compressed` stamps
each member with the clock, which would make two writers of one dataset
disagree on the file's sha256. ``numpy.load`` reads it as any ``.npz``.

:func:`store_rows` hands such a file to the store (unless it keeps the rows
already); :func:`load_stored` reads it back through any
:class:`~loopml.store.protocols.TrackingBackend`, checked against the fingerprint.

>>> ds = loopml.data.load("iris")
>>> write_rows("rows.npz", ds)
PosixPath('rows.npz')
>>> x, y = read_rows("rows.npz", ds.fingerprint)    # checked against the fingerprint
>>> x.shape, y.dtype
((150, 4), dtype('int64'))
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError, IntegrityError, NotFound
from ..files import atomic_path
from .dataset import Dataset
from .fingerprint import canonical_bytes, fingerprint_arrays, fingerprint_graph

if TYPE_CHECKING:
    from ..store.protocols import TrackingBackend
    from .graph import Graph

__all__ = ["load_stored", "read_rows", "rebuild", "store_rows", "write_arrays", "write_rows"]

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date: a fixed stamp, so the bytes depend on content only


def write_rows(path: str | os.PathLike[str], ds: Dataset) -> Path:
    """Write ``ds``'s ``x`` and ``y`` to ``path`` (whole or not at all); returns the path."""
    return write_arrays(path, {"x": ds.x.detach().cpu().numpy(), "y": ds.y.detach().cpu().numpy()})


def write_arrays(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` as a reproducible ``.npz`` (the same content, the same bytes), whole or not at all."""
    target = Path(path)
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3  # the same header on every platform
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, canonical_bytes(arr), allow_pickle=False)
    return target


def read_rows(path: str | os.PathLike[str], fingerprint: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The arrays ``x`` and ``y`` of a rows file (no pickle); with ``fingerprint``, checked against it.

    Raises :class:`~loopml.errors.DataError` when the file is not an archive of
    ``x`` and ``y``, or its content does not have ``fingerprint``.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile) or {"x", "y"} - set(archive.files):
                raise DataError(f"{Path(path).name} should be an .npz with the arrays x and y")
            x, y = archive["x"], archive["y"]
            # a graph's file (Graph.save) also holds its edges, which are part of its fingerprint
            edges = archive["edge_index"] if "edge_index" in archive.files else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{Path(path).name} does not read as an .npz of the arrays x and y: {exc}") from exc
    if fingerprint is not None:
        got = fingerprint_arrays(x, y) if edges is None else fingerprint_graph(x, edges, y)
        if got != fingerprint:
            raise DataError(f"The rows in {Path(path).name} have the fingerprint {got[:12]}..., not {fingerprint[:12]}...")
    return x, y


def store_rows(backend: "TrackingBackend", ds: "Dataset | Graph") -> dict[str, Any]:
    """Keep ``ds``'s rows (its record must be stored); nothing is written when they already are.

    A :class:`~loopml.data.graph.Graph` keeps its file of :meth:`~loopml.data.graph.Graph.save`.
    """
    try:
        record = backend.get_dataset(ds.fingerprint)
    except NotFound:
        record = {}
    if record.get("stored_sha256"):
        return {k: record[k] for k in ("stored_path", "stored_size", "stored_sha256")} | {"created": False}
    with tempfile.TemporaryDirectory(prefix="loopml-rows-") as tmp:
        target = Path(tmp) / f"{ds.fingerprint}.npz"
        path = write_rows(target, ds) if isinstance(ds, Dataset) else ds.save(target)
        return backend.put_dataset_rows(ds.fingerprint, path)


def rebuild(record: Mapping[str, Any], x: Any, y: Any) -> Dataset:
    """The Dataset of a stored record's rows (names, classes and categories from its schema)."""
    schema = record.get("schema") or {}
    return Dataset(
        x, y, feature_names=schema.get("feature_names") if x.ndim == 2 else None,
        class_names=schema.get("class_names"), task=schema.get("task"), name=record.get("name") or "dataset",
        source=record.get("source") or "stored", categories=schema.get("categories"),
    )


def load_stored(backend: "TrackingBackend", record: Mapping[str, Any]) -> Dataset:
    """The content-addressed rows of ``record``, checked (sha256 by the store, then the fingerprint)."""
    fingerprint = str(record["fingerprint"])
    if (record.get("schema") or {}).get("kind") == "graph":
        raise DataError(f"Dataset {fingerprint[:12]}... ({record.get('name')}) is a graph, not rows of x and y; "
                        "read it with loopml.data.stored_graph(fingerprint)")
    with tempfile.TemporaryDirectory(prefix="loopml-rows-") as tmp:
        local = backend.download_dataset_rows(fingerprint, Path(tmp))
        try:
            x, y = read_rows(local, fingerprint)
        except DataError as exc:  # the file is whole (its sha256 matched) but does not hold these rows
            raise IntegrityError(f"The stored rows of dataset {fingerprint[:12]}... do not match its fingerprint: {exc}") from exc
    ds = rebuild(record, x, y)
    if ds.fingerprint != fingerprint:
        raise IntegrityError(f"The stored rows of dataset {fingerprint[:12]}... no longer match its fingerprint")
    return ds
