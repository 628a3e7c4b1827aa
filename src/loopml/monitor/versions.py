"""A registered version's OOD gate: fit it on the version's data, store its files with the version.

The gate itself (:class:`~loopml.monitor.ood.OODGate`, :func:`~loopml.monitor.ood.fit_gate`)
knows nothing of the registry; this module is the glue between the two. It reads a
version (its data, its model as a torch module) through :mod:`loopml.models` and adds
the gate's files to it (formats ``ood_vae``, ``ood_mahalanobis``,
``ood_features``/``ood_joint`` and ``ood_gate``, last, so a half-stored gate is never
found)::

    from loopml.monitor import fit_ood, load_gate

    fit_ood("digits/1", train=parts.train, val=parts.val)   # stored with digits/1
    load_gate("digits@production").abstain(x)

:func:`fit_version_gate` is the one implementation, on a given registry; ``fit_ood``
(a reference and ``tracking_uri=``) and ``loopml.Client.fit_ood`` are its public faces,
and ``loopml.register(..., ood=...)`` calls it once the model is registered.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError, LoopMLError
from ..models.evaldata import check_shape, version_data
from ..models.registry import EXAMPLE, load_version, registry_for, resolve_version
from ..models.runtime import program_module
from ..store.registry import ModelVersion, local_registry
from .ood import DETECTORS, OODGate, fit_gate, load_version_gate

if TYPE_CHECKING:
    import torch

    from ..store.protocols import Registry
    from ..store.registry import RegistryStore

__all__ = ["fit_ood", "fit_version_gate", "gate_options", "load_gate", "store_version_gate"]

# the keys of register's ood= mapping: fit_version_gate's data and options
GATE_OPTIONS = ("train", "val", "detectors", "target_false_abstain", "mode", "vae_options")


def gate_options(ood: Any) -> dict[str, Any] | None:
    """``register``'s ``ood=`` as :func:`fit_version_gate`'s keyword arguments, checked before anything is stored.

    >>> sorted(gate_options((x_train, x_val)))
    ['train', 'val']
    >>> gate_options({"train": x_train, "val": x_val, "target_false_abstain": 0.05})["target_false_abstain"]
    0.05
    """
    if ood is None:
        return None
    example = "ood=(train, val) or ood={'train': train, 'val': val, 'target_false_abstain': 0.05}"
    if isinstance(ood, Mapping):
        keys = sorted(map(str, ood))
        if set(keys) - set(GATE_OPTIONS) or "train" not in ood or "val" not in ood:
            raise ArgumentError(
                f"Argument ood should name train and val, and optionally {', '.join(GATE_OPTIONS[2:])}, e.g. {example}; "
                f"got keys {keys}"
            )
        options = dict(ood)
    elif isinstance(ood, (tuple, list)) and len(ood) == 2:
        options = {"train": ood[0], "val": ood[1]}
    else:
        raise ArgumentTypeError(f"Argument ood should be a (train, val) pair or a mapping, e.g. {example}; got {type(ood).__name__}")
    rate = options.get("target_false_abstain", 0.01)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < 0.5:
        raise ArgumentError(
            f"Argument ood['target_false_abstain'] should be a fraction above 0 and below 0.5, e.g. 0.05; got {rate!r}"
        )
    return options


def fit_ood(
    ref_or_model: "str | ModelVersion | torch.nn.Module",
    *,
    train: Any = None,
    val: Any = None,
    data: Any = None,
    target: str | None = None,
    seed: int = 0,
    detectors: Sequence[str] = DETECTORS,
    target_false_abstain: float = 0.01,
    mode: str = "class",
    vae_options: Mapping[str, Any] | None = None,
    model: "torch.nn.Module | None" = None,
    tracking_uri: str | None = None,
) -> OODGate:
    """Fit and calibrate an OOD gate; for a registered version (``"digits/1"``) store it with the version.

    With a torch module the gate is returned and nothing is stored (that is
    :func:`~loopml.monitor.ood.fit_gate`). With a reference (or a
    :class:`~loopml.models.ModelVersion`) the gate is fitted on ``train``, calibrated on ``val``, and its files
    added to the version (formats ``ood_vae``, ``ood_mahalanobis``,
    ``ood_features``/``ood_joint`` and ``ood_gate``, last), the model's parts as
    ONNX (else a ``.pt2`` program), so serving needs no model code. The model is
    ``model`` (the live module, whatever its class) when given, else the version's
    ``torch`` format (its class importable), else its ``pt2`` program, unflattened
    to find the input of its last ``nn.Linear``. The data of a reference:
    ``train`` and ``val`` when given; else ``data`` (a Dataset, Split, ``(x, y)``,
    a ``.npz`` / ``.csv`` / ``.parquet`` file with ``target``, a stored
    fingerprint, or a bundled set by name, split with ``seed``); else the datasets
    logged with the version's run (:func:`loopml.models.evaldata.version_data`),
    checked against its signature before any work. The gate's details record its
    thresholds, the rate asked for and the one calibrated (see
    :func:`~loopml.monitor.ood.fit_gate`), the validation false-abstain rate and
    whether ``train``'s fingerprint matches the version's training data.

    ``loopml.Client(uri).fit_ood(ref, ...)`` is the same on a given store.

    >>> gate = fit_ood("digits/1")          # on the train and val rows logged with digits/1's run
    >>> sorted(loopml.models.get_version("digits/1").files)
    [..., 'ood_gate', ...]
    >>> load_gate("digits/1").score(x[:3])   # per row: its largest score / threshold
    array([...])
    """
    import torch

    if isinstance(ref_or_model, torch.nn.Module):
        if model is not None:
            raise ArgumentError("Argument model is for a version reference, e.g. fit_ood('digits/1', model=net, ...); "
                             "with a module as the first argument leave it out")
        if train is None or val is None:
            raise ArgumentError("Arguments train and val should be given for a torch module, e.g. "
                             "fit_ood(model, train=parts.train, val=parts.val); a registered version can use data=")
        return fit_gate(ref_or_model, train=train, val=val, detectors=detectors,
                        target_false_abstain=target_false_abstain, mode=mode, vae_options=vae_options)
    if not isinstance(ref_or_model, (str, ModelVersion)):
        raise ArgumentTypeError(
            f"Argument ref_or_model should be a model reference such as 'digits/1' or a torch.nn.Module; got {type(ref_or_model).__name__}"
        )
    return fit_version_gate(registry_for(tracking_uri), ref_or_model, model, train=train, val=val, data=data,
                            target=target, seed=seed, detectors=detectors, target_false_abstain=target_false_abstain,
                            mode=mode, vae_options=vae_options)


def fit_version_gate(
    registry: "Registry",
    version: "str | ModelVersion",
    model: "torch.nn.Module | None" = None,
    *,
    train: Any = None,
    val: Any = None,
    data: Any = None,
    target: str | None = None,
    seed: int = 0,
    detectors: Sequence[str] = DETECTORS,
    target_false_abstain: float = 0.01,
    mode: str = "class",
    vae_options: Mapping[str, Any] | None = None,
    layer: str | None = None,
) -> OODGate:
    """:func:`fit_ood` of a version (a reference or a resolved one) on a given registry: fit, calibrate, store.

    What ``fit_ood``, ``loopml.Client.fit_ood`` and ``loopml.register(..., ood=...)``
    call. ``model`` (the live module) is left in the train/eval mode it came in. Example::

        registry = loopml.models.registry.registry_for()
        fit_version_gate(registry, "digits/1", net, train=parts.train, val=parts.val)
    """
    import torch

    if model is not None and not isinstance(model, torch.nn.Module):
        raise ArgumentTypeError(f"Argument model should be the version's torch.nn.Module; got {type(model).__name__}")
    resolved = resolve_version(registry, version)
    local = local_registry(registry, "fit_ood")  # refused over HTTP before any work
    train, val = _version_parts(registry, resolved, train, val, data, target, seed)
    if model is None:
        model, layer = _version_module(registry, resolved, detectors)
    was_training = model.training if model is not None else False
    try:
        gate = fit_gate(model, train=train, val=val, detectors=detectors, target_false_abstain=target_false_abstain,
                        mode=mode, vae_options=vae_options, layer=layer)
        store_version_gate(local, resolved, gate, train)
    finally:
        if model is not None:
            model.train(was_training)
    return gate


def _version_parts(registry: "Registry", version: ModelVersion, train: Any, val: Any, data: Any, target: str | None,
                   seed: int) -> tuple[Any, Any]:
    """``train``/``val`` for a version's gate (see :func:`fit_ood`), checked against its signature before any work."""
    if train is not None and val is not None:
        if hasattr(train, "x") and hasattr(val, "x"):  # loopml Datasets
            from ..data.split import Split

            check_shape(version, Split(train=train, val=val, test=None, indices={}),
                        example=f"e.g. fit_ood({version.ref!r}, train=parts.train, val=parts.val)")
        return train, val
    if train is not None or val is not None:
        raise ArgumentError("Arguments train and val should be given together (or neither, to use data=)")
    parts = version_data(
        registry, version, data, target=target, seed=seed,
        example=f"e.g. loopml monitor fit-ood {version.ref} --data train.npz (arrays x and y), or "
                f"fit_ood({version.ref!r}, data=(x, y))",
    )
    if parts.val is None:
        raise ArgumentError(f"Argument data should have a validation part to calibrate {version.ref}'s gate on; "
                         "pass a single dataset (it is split) or a Split with val")
    return parts.train, parts.val


def _version_module(registry: "Registry", version: ModelVersion, detectors: Sequence[str]) -> "tuple[torch.nn.Module | None, str | None]":
    """The version as a module for fitting, and the layer whose input are its features (None: the last nn.Linear)."""
    if "mahalanobis" not in detectors:
        return None, None  # the autoencoder needs only the data
    fix = (f"pass the live module: loopml.monitor.fit_ood({version.ref!r}, model=model, train=..., val=...), "
           "or fit the autoencoder alone (detectors=('vae',), on the CLI --detector vae)")
    if "torch" in version.files and version.model_spec:
        try:
            return load_version(registry, version, format="torch").module(), None
        except LoopMLError:
            pass  # the class is not importable here: the pt2 program needs no code
    if "pt2" not in version.files:
        raise ArgumentError(f"The mahalanobis detector needs {version.ref} as a torch module, and it has neither a pt2 "
                         f"program nor an importable torch class: {fix}")

    module, layers = program_module(registry.file_path(version.name, version.version, "pt2"))
    linear = [name for name, kind in layers if kind == "torch.nn.modules.linear.Linear"]
    if not linear:
        raise ArgumentError(f"The mahalanobis detector takes the input of the last nn.Linear as features, and {version.ref}'s "
                         f"pt2 program calls none: {fix}")
    return module, linear[-1]


def store_version_gate(registry: "RegistryStore", version: ModelVersion, gate: OODGate, train: Any = None) -> ModelVersion:
    """Add a calibrated gate's files to ``version`` (``ood_gate`` last); returns the version with them.

    ``train``: the data it was fitted on, whose fingerprint (a loopml Dataset's) is
    compared with the version's lineage (``data_matches_lineage`` in the details).
    """
    example = None
    if EXAMPLE in version.files:
        example = np.load(registry.file_path(version.name, version.version, EXAMPLE), allow_pickle=False)
    fingerprint = getattr(train, "fingerprint", None)
    lineage_fp = (version.lineage.get("datasets") or {}).get("train")
    with tempfile.TemporaryDirectory(prefix="loopml-ood-") as tmp:
        folder = Path(tmp)
        gate_path = gate.save(folder, example=example)
        doc = json.loads(gate_path.read_text(encoding="utf-8"))
        for entry in doc["detectors"].values():
            for part in (entry, entry.get("features"), entry.get("joint")):
                if part:
                    registry.add_file(version.name, version.version, part["format"], folder / part["file"], {"detector": entry["config"]["kind"]})
        details = {
            "detectors": sorted(gate.detectors),
            "thresholds": gate.thresholds,
            "target_false_abstain": gate.target_false_abstain,
            "requested_false_abstain": gate.requested_false_abstain,
            "val_rows": gate.val_rows,
            "val_false_abstain": gate.val_false_abstain,
            "train_fingerprint": fingerprint if isinstance(fingerprint, str) else None,
            "data_matches_lineage": bool(isinstance(fingerprint, str) and fingerprint == lineage_fp),
        }
        if gate.requested_false_abstain is not None and gate.target_false_abstain != gate.requested_false_abstain:
            details["note"] = (f"calibrated at {gate.target_false_abstain:g}, not the {gate.requested_false_abstain:g} asked for: "
                               f"{gate.val_rows} validation rows support no stricter rate")
        return registry.add_file(version.name, version.version, "ood_gate", gate_path, details)


def load_gate(ref: "str | ModelVersion", *, threads: int = 1, tracking_uri: str | None = None) -> OODGate:
    """Load the gate stored with a registered version; each file's sha256 is checked by the registry.

    ``loopml.Client(uri).load_gate(ref)`` is the same on a given store.

    >>> gate = load_gate("digits@production")      # fit_ood stored it with the version
    >>> (gate.score(torch.rand(8, 1, 8, 8)) > gate.threshold).tolist()
    [True, True, True, True, True, True, True, True]
    """
    registry = registry_for(tracking_uri)
    return load_version_gate(registry, resolve_version(registry, ref), threads=threads)
