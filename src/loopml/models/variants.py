"""Quantized variants of a registered version, each a new version with measured accuracy, size and latency.

``loopml quantize mlp/1 --method static --data train.npz`` (or :func:`quantize`)
loads the fp32 version, quantizes it with :mod:`loopml.models.quantization`
(calibrating on the training part, fine-tuning through the Trainer for
``tqt``), measures the variant and its parent on the test part (accuracy,
file size, CPU latency at batch 1 and 64) and registers the variant as the
next version of the same model, tagged ``quantization.method`` /
``quantization.bits`` and linked to its parent::

    v = loopml.models.quantize("digits/1", method="tqt", bits=4, data=parts)
    v.measurements   # {'accuracy': 0.972, 'size_bytes': 31544, 'latency_ms': {'1': 0.05, '64': 0.4}, ...}

The data (:func:`loopml.models.evaldata.version_data`): ``data`` when given (a
Dataset or Split, ``(x, y)``, a ``.npz`` / ``.csv`` / ``.parquet`` file with
``target``, a stored dataset's fingerprint, or a bundled set named explicitly
such as ``"digits"``); otherwise the datasets logged with the version's run
when the store keeps their rows; otherwise an error saying what to pass. The
inputs are checked against the version's signature first. The variant is
measured on the test part (the validation part when there is no test part;
``measurements["measured_on"]`` says which). When the training part's
fingerprint matches the one in the version's lineage, the variant records
that it was calibrated on the very training data of its parent
(``details.data_matches_lineage``).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArgumentError, IntegrityError
from ..store.registry import ModelVersion, local_registry
from ..tracking.api import start_run
from . import measure
from .evaldata import version_data
from .quantization import METHODS, fitting_onnx
from .quantization import quantize as run_quantize
from .registry import (
    EXAMPLE,
    load_version,
    registry_for,
    resolve_version,
    source_module,
    version_example,
)
from .remote import RemoteRegistry

if TYPE_CHECKING:
    from ..data.split import Split
    from ..store.protocols import Registry

__all__ = ["measure_version", "quantize"]

CALIBRATION_ROWS = 512


def _arrays(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    return ds.x.numpy().astype(np.float32, copy=False), ds.y.numpy()


def _held_out(parts: "Split", ref: str, example: str) -> tuple[str, Any]:
    if parts.test is not None:
        return "test", parts.test
    if parts.val is not None:
        return "val", parts.val
    raise ArgumentError(f"Argument data should hold rows to measure {ref} on (a test or validation part); {example}")


def _example(ref: str, method: str) -> str:
    return (f"e.g. loopml quantize {ref} --method {method} --data train.npz (arrays x and y), --data table.csv "
            f"--target label, or quantize({ref!r}, method={method!r}, data=(x, y))")


def measure_version(registry: "Registry", version: ModelVersion, parts: "Split", fmt: str | None = None) -> dict[str, Any]:
    """Accuracy on the test part (else the validation part), file size and batch-1 / batch-64 latency of a version."""
    loaded = load_version(registry, version, format=fmt)
    role, held_out = _held_out(parts, version.ref, _example(version.ref, "static"))
    x, y = _arrays(held_out)
    predict = loaded.predictor
    path = registry.file_path(version.name, version.version, loaded.format, verify=False)
    lat = measure.latency(predict, x, batch_sizes=(1, 64))
    out: dict[str, Any] = {
        "format": loaded.format,
        "size_bytes": measure.file_size(path),
        "latency_ms": {str(k): float(v) for k, v in lat.items()},
        "measured_on": role,
    }
    if loaded.signature.is_classifier:
        out["accuracy"] = float(measure.accuracy(predict, x, y))
    return out


def quantize(
    ref: "str | ModelVersion",
    *,
    method: str,
    bits: int = 8,
    data: Any = None,
    target: str | None = None,
    seed: int = 0,
    epochs: int | None = None,
    tracking_uri: str | None = None,
) -> ModelVersion:
    """Quantize the version ``ref`` and register the variant as the next version (see the module docstring).

    ``data``: what to calibrate, fine-tune and measure on (default: the datasets
    logged with the version's run); ``target``: the label column of a table file;
    ``seed``: the split of a single dataset and the calibration sample.

    >>> v = loopml.models.quantize("digits/1", method="static")   # on the datasets logged with its run
    >>> v.ref, sorted(v.measurements)[:3]
    ('digits/2', ['accuracy', 'format', 'latency_ms'])

    ``loopml.Client(uri).quantize(ref, ...)`` is the same on a given store.
    """
    return quantize_version(registry_for(tracking_uri), ref, method=method, bits=bits, data=data, target=target,
                            seed=seed, epochs=epochs)


def server_data(data: str) -> bool:
    """Whether a loopml server may take ``data`` by name: a bundled set or a stored fingerprint (or the prefix
    ``loopml models show`` prints), never a path."""
    import re

    from ..data.loaders import NAMES

    return data in NAMES or re.fullmatch(r"[0-9a-f]{8,64}", data) is not None


def quantize_version(
    registry: "Registry",
    ref: "str | ModelVersion",
    *,
    method: str,
    bits: int = 8,
    data: Any = None,
    target: str | None = None,
    seed: int = 0,
    epochs: int | None = None,
) -> ModelVersion:
    """:func:`quantize` on a given registry: the one implementation behind ``quantize``,
    ``loopml.Client.quantize`` and the tracking server's quantize route.

    A registry over HTTP hands the work to its server, which quantizes with its own copy of the files and data.
    """
    import torch

    from ..data.dataset import fingerprint

    if isinstance(registry, RemoteRegistry):  # a loopml server: it quantizes with its own copy of the files and data
        if data is not None and not (isinstance(data, str) and server_data(data)):
            raise ArgumentError(
                "Against a loopml server, data should be None (the version's logged datasets), a stored dataset's "
                "fingerprint or a bundled set's name such as 'iris'; a file or arrays cannot travel with the call: "
                "log them with loopml.data.log_dataset(run, ds) first, or quantize against the store itself"
            )
        ref = ref.ref if isinstance(ref, ModelVersion) else ref
        return registry.quantize(ref, method=method, bits=bits, data=data, seed=seed, epochs=epochs)
    local = local_registry(registry, "quantize")
    if method not in METHODS:
        raise ArgumentError(f"Argument method should be one of {', '.join(METHODS)}; got {method!r}")
    parent = resolve_version(registry, ref)
    if parent.parent_version is not None and "quantization.method" in parent.tags:
        raise ArgumentError(f"{parent.ref} is already a quantized variant; quantize its fp32 parent {parent.name}/{parent.parent_version}")
    parts = version_data(registry, parent, data, target=target, seed=seed, example=_example(parent.ref, method))
    _held_out(parts, parent.ref, _example(parent.ref, method))
    train_fp = fingerprint(parts.train)
    lineage_fp = (parent.lineage.get("datasets") or {}).get("train")
    fp32_onnx = None
    if method in ("dynamic", "static") and "onnx" in parent.files:
        # the parent's own fp32 export, its sha256 checked: quantized as it is, without loading the model
        # (a pt2 program takes seconds to load) or exporting it again
        with contextlib.suppress(IntegrityError):
            fp32_onnx = fitting_onnx(registry.file_path(parent.name, parent.version, "onnx"))
    module = source_module(registry, parent) if fp32_onnx is None else None
    if method in ("tqt", "ptq") and type(module).__name__ == "_Program":
        raise ArgumentError(
            f"{method} rewrites the model's Linear/Conv2d layers, so it needs {parent.ref}'s torch format "
            "(its class importable, e.g. from loopml.models.nets or your package); this version has only an exported program"
        )
    x_train, _ = _arrays(parts.train)
    rng = np.random.default_rng(seed)
    calib = x_train[rng.permutation(len(x_train))[:CALIBRATION_ROWS]]
    example = version_example(registry, parent)
    if "latency_ms" not in parent.measurements:  # measured once, on the same test split, to compare against
        registry.set_measurements(parent.name, parent.version, measure_version(registry, parent, parts))
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="loopml-quantize-"))
        kwargs: dict[str, Any] = {}
        if epochs is not None:
            kwargs["epochs"] = epochs
        if fp32_onnx is not None:
            kwargs["fp32_onnx"] = fp32_onnx
        if method == "tqt":
            # the fine-tuning is a run in the registry's own store, next to the versions it produces

            stack.enter_context(
                start_run(experiment=f"quantize {parent.name}", name=f"tqt int{bits} of {parent.ref}",
                          tracking_uri=local.store.uri, tags={"parent": parent.ref})
            )
        result = run_quantize(
            module,
            method=method,
            bits=bits,
            example=torch.from_numpy(example),
            calibration=calib,
            train=parts.train,
            val=parts.val,
            out_dir=Path(tmp),
            seed=seed,
            **kwargs,
        )
        files: dict[str, tuple[Path, dict[str, Any]]] = {
            fmt: (Path(path), {"method": method, "bits": bits}) for fmt, path in result.files.items()
        }
        files[EXAMPLE] = (registry.file_path(parent.name, parent.version, EXAMPLE), {"rows": int(example.shape[0])})
        details = dict(result.details)
        details.update(
            calibration_rows=int(len(calib)),
            data_fingerprint=train_fp,
            data_matches_lineage=bool(lineage_fp == train_fp) if lineage_fp else None,
        )
        variant = local.create_version(
            parent.name,
            files=files,
            signature=parent.signature,
            model_spec=None,  # a quantized graph is rebuilt from its file, not from the fp32 class
            metrics=parent.metrics,
            lineage={**parent.lineage, "parent": parent.ref, "quantization": details},
            profile=parent.profile,
            tags={**parent.tags, "quantization.method": method, "quantization.bits": str(bits), "parent": parent.ref},
            description=f"{method} int{bits} variant of {parent.ref}",
            run_id=details.get("run_id") or parent.run_id,
            parent_version=parent.version,
            created_by=parent.created_by,
        )
    measured = measure_version(registry, variant, parts)
    return registry.set_measurements(variant.name, variant.version, measured)
