"""A registered version's drift reference: written at registration, read by drift, rebuilt without retraining.

:func:`loopml.register` stores the reference of the version's training inputs
(:class:`~loopml.store.reference.DriftReference`) among its files, as the format
``drift_reference`` with its sha256 like every other file, built from ``train_data=``
or taken from the run's logged train dataset (the reference
:func:`loopml.data.log_dataset` keeps at any size, else the rows it keeps up to 32 MiB).
:func:`loopml.monitor.drift` then compares a version's request log with it, and a
version registered before references were kept gets one from :func:`store_reference`::

    loopml.models.store_reference("digits/1")                    # from the data its run logged
    loopml.models.store_reference("churn/4", data="train.parquet", target="churned")
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ArgumentTypeError
from ..store.reference import FORMAT, DriftReference
from ..store.registry import ModelVersion, RegistryStore, local_registry
from ..tracking.api import database_for
from .evaldata import check_shape, version_data
from .signature import Signature

if TYPE_CHECKING:
    from ..store.protocols import Registry

__all__ = ["FORMAT", "load_reference", "store_reference", "store_version_reference"]


def store_version_reference(registry: "Registry", version: "ModelVersion", data: Any = None, *,
                            target: str | None = None) -> "ModelVersion":
    """Build ``version``'s reference from its training data (``data``, else its run's) and store it; returns the version."""
    from ..data.reference import FILE, details, logged_reference, reference_of
    from ..data.sources import resolve
    from ..data.split import Split

    store = local_registry(registry, "Storing a version's drift reference")
    example = "e.g. store_reference(ref, data='train.npz') (arrays x and y)"
    names = Signature.from_dict(version.signature).feature_names if version.signature else None
    fingerprint = ((version.lineage or {}).get("datasets") or {}).get("train")
    ref = None
    if data is None and fingerprint and version.run_id:  # the reference its run kept (at any size), else its rows
        ref = logged_reference(store.store, fingerprint, version.run_id)
    if ref is None:
        if data is None:
            train = version_data(store, version, example=example).train  # the error says what to pass
        else:  # the data given is the training data, whole
            given = resolve(data, target=target, backend=store.store)
            train = given.train if isinstance(given, Split) else given
            check_shape(version, Split(train=train, val=None, test=None, indices={}), example=example)
        ref = reference_of(train, names if train.x.ndim == 2 else None)
    with tempfile.TemporaryDirectory(prefix="loopml-reference-") as tmp:
        path = ref.save(Path(tmp) / FILE)
        return store.add_file(version.name, version.version, FORMAT, path, details(ref))


def store_reference(ref: "str | ModelVersion", data: Any = None, *, target: str | None = None,
                    tracking_uri: str | None = None) -> "ModelVersion":
    """(Re)build and store the drift reference of the version ``ref`` without retraining; returns the version.

    ``data``: its training data, whole, in any form :func:`loopml.data.resolve` takes (of a
    Split, its train part); default: the train dataset its run logged (the reference the
    run kept, else its rows).

    >>> store_reference("digits/1").files["drift_reference"].details
    {'columns': 2, 'points': 4096, 'rows': 1257, 'sketched': 0}
    """
    if not isinstance(ref, (str, ModelVersion)):
        raise ArgumentTypeError(f"Argument ref should be a model reference such as 'digits@production' or 'digits/3', "
                                f"or a ModelVersion; got {type(ref).__name__}")
    registry = RegistryStore(database_for(tracking_uri, "Storing a version's drift reference"))
    return store_version_reference(registry, registry.resolve(ref) if isinstance(ref, str) else ref, data, target=target)


def load_reference(registry: "Registry", version: "ModelVersion") -> DriftReference | None:
    """The reference stored with ``version`` (its sha256 checked first), or None when it has none."""
    if FORMAT not in version.files:
        return None
    return DriftReference.load(registry.file_path(version.name, version.version, FORMAT))
