"""Drift from the model server's own request log: what a served version saw against what it was trained on.

``loopml.monitor.drift`` is :func:`drift` here: given two datasets it compares them
(:func:`loopml.monitor.univariate.drift`); given a version alone it reads both sides
from the store, with no glue::

    loopml.monitor.drift("digits@production", since="1h")      # the last hour of requests
    loopml.monitor.drift("digits/3", last=10_000)               # the newest 10,000 requests
    loopml.monitor.drift(reference_frame, current_frame)        # any two tables

The pieces:

- :func:`logged_inputs`: the input rows the model server's request log kept for a
  version (``loopml serve --log-inputs``, every request by default), in a window
  of time (``since``) or the newest ``last`` requests;
- :func:`version_reference`: what the version was trained on: the drift reference
  stored with it at registration (:mod:`loopml.models.reference`: exact values or a
  quantile sketch per column, at any data size), else, for a version registered
  before references were stored, its run's logged training rows
  (:func:`reference_inputs`: kept with the run when they fit in 32 MiB).

Example::

    x, missing = logged_inputs("digits", 3, since="1h")
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError, DataError, NotFound
from ..models.evaldata import version_data
from ..models.reference import load_reference
from ..models.signature import Signature
from ..store.predictions import PredictionLog, stack_inputs
from ..store.reference import DriftReference, inputs_table
from ..store.registry import RegistryStore
from ..tracking.api import database_for
from .multivariate import multivariate_drift
from .ood import load_version_gate
from .univariate import DriftReport
from .univariate import drift as compare
from .windows import parse_duration

if TYPE_CHECKING:
    from ..store.registry import ModelVersion

__all__ = ["drift", "logged_inputs", "reference_inputs", "resolve_version", "version_drift", "version_reference"]


def resolve_version(ref: str, *, tracking_uri: str | None = None) -> tuple[RegistryStore, "ModelVersion"]:
    """The registry and the version ``ref`` names (``digits@production``, ``digits/3``)."""
    registry = RegistryStore(database_for(tracking_uri, "Reading the request log"))
    return registry, registry.resolve(ref)


def logged_inputs(model: str, version: int | None = None, *, since: float | str | None = None, last: int | None = None,
                  tracking_uri: str | None = None) -> tuple[np.ndarray, int]:
    """The logged input rows, stacked oldest first, and the number of requests whose inputs were not kept.

    ``since``: a time (epoch seconds) or a duration back from now (``"1h"``);
    ``last``: the newest ``last`` requests. Raises :class:`~loopml.errors.NotFound`
    when the window holds no logged inputs.
    """
    if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
        raise ArgumentError(f"Argument last should be a number of requests >= 1, like 10000; got {last!r}")
    start = time.time() - parse_duration(since, "since") if isinstance(since, str) else since
    batches, missing = PredictionLog(database_for(tracking_uri, "Reading the request log")).logged_inputs(model, version, since=start, last=last)
    if not batches:
        which = f"{model}/{version}" if version is not None else model
        raise NotFound(
            f"The request log holds no inputs of {which} in that window ({missing} requests without inputs); "
            "serve with --log-inputs above 0 (1.0 keeps every request), or widen --since / --last"
        )
    return stack_inputs(batches), missing


def reference_inputs(registry: RegistryStore, version: "ModelVersion") -> np.ndarray:
    """The inputs ``version`` was trained on (its run's logged train split)."""
    try:
        parts = version_data(registry, version, example="register with the run that logged its training data")
    except (ArgumentError, DataError, NotFound) as exc:
        raise NotFound(
            f"{version.ref} has no stored training data to compare with ({exc}); pass the reference yourself: "
            "loopml.monitor.drift(reference_rows, current_rows)"
        ) from None
    return np.asarray(parts.train.x.numpy() if hasattr(parts.train.x, "numpy") else parts.train.x)


def version_reference(registry: RegistryStore, version: "ModelVersion") -> "DriftReference | np.ndarray":
    """What ``version``'s request log is compared with: its stored reference, else its run's training inputs.

    Raises :class:`~loopml.errors.NotFound` when it has neither, and
    :class:`~loopml.errors.IntegrityError` when the stored reference changed after it was written.
    """
    stored = load_reference(registry, version)
    if stored is not None:
        return stored
    try:
        return reference_inputs(registry, version)
    except NotFound as exc:
        raise NotFound(f"{exc}; or store its reference from its training data: "
                       f"loopml.models.store_reference({version.ref!r}, data=...)") from None


def drift(reference: Any, current: Any = None, *, since: float | str | None = None, last: int | None = None,
          tracking_uri: str | None = None, **options: Any) -> DriftReport:
    """Data drift: of ``current`` against ``reference``, or of a version's request log against its training data.

    With two datasets (DataFrames, arrays, loopml Datasets, ``.csv``/``.parquet``/``.npz``
    paths) this is :func:`loopml.monitor.univariate.drift`. With a version reference
    alone (``"digits@production"``, ``"digits/3"``), ``current`` is the input rows the
    request log kept for that version in the window (``since``: a duration such as
    ``"1h"`` or an epoch time; ``last``: the newest N requests; default: every logged
    request), and ``reference`` the version's training inputs. ``options`` go to the
    comparison (``alpha``, ``columns``, ``multivariate``, ``min_effect``, ...).
    """
    if current is not None:
        if since is not None or last is not None:
            raise ArgumentError("since= and last= pick a window of a version's request log: pass a version alone, "
                                "e.g. drift('digits@production', since='1h')")
        return compare(reference, current, **options)
    if not isinstance(reference, str):
        raise ArgumentTypeError(
            "Argument reference should be a version reference like 'digits@production' when no current data is given "
            f"(or pass both: drift(reference, current)); got {type(reference).__name__}"
        )
    registry, version = resolve_version(reference, tracking_uri=tracking_uri)
    rows, _ = logged_inputs(version.name, version.version, since=since, last=last, tracking_uri=tracking_uri)
    return version_drift(registry, version, rows, **options)


def version_drift(registry: RegistryStore, version: "ModelVersion", rows: np.ndarray,
                  train: "DriftReference | np.ndarray | None" = None, **options: Any) -> DriftReport:
    """``rows`` (inputs from ``version``'s request log) against ``train`` (default: :func:`version_reference`).

    What :func:`drift` does once it has read the log; the scheduled monitor
    (:mod:`loopml.monitor.watch`) reads its windows itself and calls this.
    """
    if train is None:
        train = version_reference(registry, version)
    names = Signature.from_dict(version.signature).feature_names if version.signature else None
    if isinstance(train, DriftReference):
        current = inputs_table(rows, names, "current")
        if list(current.columns) != list(train.columns) and current.shape[1] == len(train.columns) and rows.ndim == 2:
            current.columns = list(train.columns)  # a reference built before the version's columns had names
        if list(current.columns) != list(train.columns):
            raise ArgumentError(
                f"{version.ref}'s stored reference has columns {list(train.columns)[:8]} but its request log's rows "
                f"(shape {rows.shape[1:]}) give {list(current.columns)[:8]}; rebuild it with "
                f"loopml.models.store_reference({version.ref!r}, data=...)"
            )
        sample = train.rows
        if rows.ndim < 3:  # a table: the joint test runs on the reference's row sample, inside compare
            return compare(train, current, **options)
        report = compare(train, current, **{**options, "multivariate": False})
    else:
        if train.shape[1:] != rows.shape[1:]:
            raise ArgumentError(
                f"{version.ref}'s training inputs have shape {train.shape[1:]} per row but its request log holds "
                f"{rows.shape[1:]}; compare them yourself with drift(reference, current)"
            )
        if rows.ndim < 3:
            return compare(inputs_table(train, names, "reference"), inputs_table(rows, names, "current"), **options)
        sample = train
        report = compare(inputs_table(train, names, "reference"), inputs_table(rows, names, "current"),
                         **{**options, "multivariate": False})
    if options.get("multivariate") is not False and sample is not None and sample.shape[1:] == rows.shape[1:]:
        report.multivariate = _image_joint(registry, version, sample, rows, seed=options.get("seed", 0))
    return report


def _image_joint(registry: RegistryStore, version: "ModelVersion", reference: np.ndarray, current: np.ndarray, *,
                 seed: int) -> dict[str, Any]:
    """The multivariate test of images: on the model's penultimate features when the version has an OOD gate
    with them (what the model sees; pixels are a poor space for a classifier test), else on the pixels."""
    if len(current) > len(reference):  # as many current rows as reference rows (seeded), as for tables
        pick = np.sort(np.random.default_rng(seed).choice(len(current), size=len(reference), replace=False))
        current = current[pick]
    embed = None
    if "ood_gate" in version.files:
        detector = load_version_gate(registry, version).detectors.get("mahalanobis")
        embed = getattr(detector, "embed", None)
    if embed is not None:
        result = multivariate_drift(embed(reference.astype(np.float32)), embed(current.astype(np.float32)), seed=seed)
        result["on"] = "penultimate features"
    else:
        result = multivariate_drift(reference.reshape(len(reference), -1), current.reshape(len(current), -1), seed=seed)
        result["on"] = "pixels"
    return result
