"""A dataset's drift reference (:class:`~loopml.store.reference.DriftReference`), kept with the run that logs it.

:func:`loopml.data.log_dataset` keeps the reference of a ``train`` dataset with the
run, as the artifact ``datasets/<fingerprint>.reference.npz``, whatever the data's
size (the rows themselves are kept only up to 32 MiB), so a version registered from
that run stores it without the rows (:func:`loopml.register`).

>>> ref = reference_of(parts.train)          # digits: 1 x 8 x 8 images -> per-image mean and sd
>>> list(ref.columns), ref.n_rows
(['c0_mean', 'c0_std'], 1257)
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ArgumentTypeError, DataError, NotFound
from ..store.reference import POINTS, DriftReference, inputs_table
from .dataset import Dataset
from .sources import stored

if TYPE_CHECKING:
    from ..store.protocols import TrackingBackend
    from ..tracking.run import Run

__all__ = ["FILE", "details", "logged_reference", "reference_artifact", "reference_of", "registration_reference",
           "save_reference"]

FILE = "drift_reference.npz"
"""The reference's file name among a registered version's files (format ``drift_reference``)."""


def reference_of(ds: Dataset, feature_names: Sequence[str] | None = None, *, points: int = POINTS) -> DriftReference:
    """The drift reference of ``ds``'s inputs as the model sees them (category codes as numbers, images summarised).

    ``feature_names``: the columns' names (default: the dataset's, for tabular data);
    the request log's rows are named the same way, by the version's signature.
    """
    if not isinstance(ds, Dataset):
        raise ArgumentTypeError(f"Argument ds should be a loopml.data.Dataset, got {type(ds).__name__}")
    x = ds.x.numpy()
    names = feature_names if feature_names is not None else (ds.feature_names if x.ndim == 2 else None)
    ref = DriftReference.build(inputs_table(x, names, "ds"), points=points, sample=x)
    ref.meta = {"dataset": ds.fingerprint, "name": ds.name}
    return ref


def reference_artifact(fingerprint: str) -> str:
    """The run artifact that holds a dataset's drift reference: ``datasets/<fingerprint>.reference.npz``."""
    return f"datasets/{fingerprint}.reference.npz"


def save_reference(run: "Run", ds: Dataset) -> str:
    """Keep ``ds``'s drift reference with ``run`` (see :func:`reference_artifact`); returns the artifact path."""
    name = reference_artifact(ds.fingerprint)
    with tempfile.TemporaryDirectory(prefix="loopml-reference-") as tmp:
        path = reference_of(ds).save(Path(tmp) / "reference.npz")
        run.log_artifact(path, name=name)
    return name


def logged_reference(backend: "TrackingBackend", fingerprint: str, run_id: str) -> DriftReference | None:
    """The drift reference of a dataset logged with ``run_id``: its reference artifact, else built from its kept rows.

    None when the run keeps neither (a dataset logged before references were kept, larger than 32 MiB).
    """
    name = reference_artifact(fingerprint)
    try:
        present = any(a.path == name for a in backend.list_artifacts(run_id, "datasets"))
    except NotFound:
        present = False
    if present:
        with tempfile.TemporaryDirectory(prefix="loopml-reference-") as tmp:
            return DriftReference.load(backend.download_artifact(run_id, name, Path(tmp)))
    try:
        ds = stored(backend, fingerprint, run_ids=[run_id])
    except (DataError, NotFound):
        return None
    return reference_of(ds)


def details(ref: DriftReference) -> dict[str, Any]:
    """What a version's file entry says of its reference: rows, columns, sketched columns, points."""
    return {"rows": ref.n_rows, "columns": len(ref.columns), "sketched": len(ref.sketched), "points": ref.points}


def registration_reference(backend: "TrackingBackend", run_id: str, train_data: Any,
                           feature_names: Sequence[str] | None) -> DriftReference | None:
    """The reference :func:`loopml.register` stores: of ``train_data`` (a Dataset), else of the run's logged
    train dataset (:func:`logged_reference`); None when there is neither."""
    if isinstance(train_data, Dataset):
        return reference_of(train_data, feature_names if train_data.x.ndim == 2 else None)
    try:
        fingerprint = backend.run_datasets(run_id).get("train")
    except NotFound:
        return None
    return logged_reference(backend, fingerprint, run_id) if fingerprint else None
